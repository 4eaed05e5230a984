//! Partition backups as files: restored on another HSM of the domain with every attribute and
//! unique id; checked without restoring; refused — nothing written — when made in another
//! domain, changed, truncated or of another version.

mod common;

use common::*;
use ferrohsm_core::hsm::{CloneSelect, DomainChoice};
use ferrohsm_core::mechanism::{Hash, Mechanism};
use ferrohsm_core::object::ObjectClass;
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::{Credential, Hsm, HsmError, NewSecret, Role, Session};

/// Partition "q" on `hsm`, in the domain of the red key `red` (reused), with a CO logged in.
fn joined(f: &Fixture, hsm: &mut Hsm, red: &std::path::Path) -> Session {
    let so = hsm_so(f, hsm);
    hsm.create_partition(&so, "q").unwrap();
    let mut dp = LocalPed::new(PedAnswers {
        keys: vec![red.to_path_buf()],
        reuse: true,
        ..Default::default()
    });
    hsm.init_partition(
        "q",
        NewSecret::Ped(&mut new_ped(vec![key(f, "q-pso")], 1, 1, None)),
        DomainChoice::Imprint(NewSecret::Ped(&mut dp)),
        None,
    )
    .unwrap();
    let pso = hsm
        .login(
            Role::PartitionSo,
            Some("q"),
            Credential::Ped(&mut ped(vec![key(f, "q-pso")], None)),
        )
        .unwrap();
    hsm.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut new_ped(vec![key(f, "q-co")], 1, 1, None)),
        false,
    )
    .unwrap();
    hsm.login(
        Role::CryptoOfficer,
        Some("q"),
        Credential::Ped(&mut ped(vec![key(f, "q-co")], None)),
    )
    .unwrap()
}

#[test]
fn a_backup_restores_on_another_hsm_of_the_domain_and_nowhere_else() {
    let (fa, mut a) = fixture();
    let sa = login(&fa, &mut a, Role::CryptoOfficer, "co");
    let file = a.backup_export(&sa, &CloneSelect::default()).unwrap();
    let before = a.list_objects(&sa, None).unwrap();

    let (fb, mut b) = fixture();
    let sq = joined(&fb, &mut b, &key(&fa, "dom"));
    let sum = b.backup_verify(&sq, &file).unwrap();
    assert_eq!(sum.classes.values().sum::<u64>(), before.len() as u64);
    assert!(
        b.list_objects(&sq, None).unwrap().is_empty(),
        "verify restores nothing"
    );
    assert_eq!(
        b.backup_restore(&sq, &file, false).unwrap(),
        (before.len() as u64, 0, 0)
    );
    let after = b.list_objects(&sq, None).unwrap();
    for o in &before {
        let c = after
            .iter()
            .find(|c| c.attrs.unique_id == o.attrs.unique_id)
            .unwrap();
        assert_eq!((&c.attrs, &c.public), (&o.attrs, &o.public));
    }
    let ec = b.find_key(&sq, "ec", ObjectClass::PrivateKey).unwrap();
    let sig = b
        .sign(
            &sq,
            ec.handle,
            Mechanism::Ecdsa(Some(Hash::Sha256)),
            b"restored",
        )
        .unwrap();
    let pubk = a.find_key(&sa, "ec", ObjectClass::PublicKey).unwrap();
    assert!(a
        .verify(
            &sa,
            pubk.handle,
            Mechanism::Ecdsa(Some(Hash::Sha256)),
            b"restored",
            &sig
        )
        .unwrap());
    // Again: nothing new; with replace, each replaced.
    let n = before.len() as u64;
    assert_eq!(b.backup_restore(&sq, &file, false).unwrap(), (0, 0, n));
    assert_eq!(b.backup_restore(&sq, &file, true).unwrap(), (0, n, 0));
    assert_eq!(b.list_objects(&sq, None).unwrap().len(), before.len());

    // B's own partition p is in another domain: refused, nothing written.
    let sp = login(&fb, &mut b, Role::CryptoOfficer, "co");
    let count = b.list_objects(&sp, None).unwrap().len();
    for e in [
        b.backup_verify(&sp, &file).unwrap_err(),
        b.backup_restore(&sp, &file, false).unwrap_err(),
    ] {
        assert!(
            matches!(&e, HsmError::Refused(m) if m.contains("another cloning domain")),
            "{e}"
        );
    }
    assert_eq!(b.list_objects(&sp, None).unwrap().len(), count);
}

#[test]
fn a_changed_truncated_or_unknown_backup_is_refused_with_nothing_written() {
    let (f, mut a) = fixture();
    let co = login(&f, &mut a, Role::CryptoOfficer, "co");
    let file = a
        .backup_export(
            &co,
            &CloneSelect {
                labels: vec!["aes".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let mut b = Hsm::open(&f.data).unwrap();
    let sq = joined(&f, &mut b, &key(&f, "dom"));
    let json: serde_json::Value = serde_json::from_slice(&file).unwrap();
    let mutate = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json.clone();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            file[..file.len() / 2].to_vec(),
            "not a usable backup",
        ),
        (
            "another version",
            mutate(&|v| v["version"] = 2.into()),
            "version 2",
        ),
        (
            "another format",
            mutate(&|v| v["format"] = "x".into()),
            "format",
        ),
        (
            "a flipped object byte",
            mutate(&|v| {
                let s = v["objects"][0]["sealed"].as_str().unwrap().to_string();
                let flipped = if s.starts_with('0') { "1" } else { "0" };
                v["objects"][0]["sealed"] = format!("{flipped}{}", &s[1..]).into();
            }),
            "MAC",
        ),
        (
            "an object renamed",
            mutate(&|v| v["objects"][0]["class"] = "data".into()),
            "MAC",
        ),
        (
            "an object removed",
            mutate(&|v| v["objects"].as_array_mut().unwrap().clear()),
            "MAC",
        ),
        (
            "another partition named",
            mutate(&|v| v["partition"] = "other".into()),
            "MAC",
        ),
        (
            "an unknown field",
            mutate(&|v| v["extra"] = 1.into()),
            "not a usable backup",
        ),
    ];
    for (what, bytes, says) in cases {
        let e = b.backup_restore(&sq, &bytes, false).unwrap_err();
        assert!(e.to_string().contains(says), "{what}: {e}");
        assert!(b.backup_verify(&sq, &bytes).is_err(), "{what} verified");
    }
    assert!(b.list_objects(&sq, None).unwrap().is_empty());
    // The file as made restores.
    assert_eq!(b.backup_restore(&sq, &file, false).unwrap(), (1, 0, 0));
}
