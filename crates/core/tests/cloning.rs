//! Cloning between partitions of one cloning domain: attributes and unique ids kept, another
//! domain refused before any object moves, a policy that forbids it refused, a clone cut off
//! or tampered with leaves the target as it was, both sides audited.

mod common;

use common::*;
use ferrohsm_core::hsm::{CloneBatch, CloneProgress, CloneSelect, DomainChoice};
use ferrohsm_core::mechanism::{Hash, Mechanism};
use ferrohsm_core::object::ObjectClass;
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::{Credential, Hsm, HsmError, NewSecret, Role, Session};

/// Partition `label` on `hsm` with its own Partition SO and Crypto Officer, in the cloning
/// domain held by `red` (reused), or the HSM's.
fn partition(f: &Fixture, hsm: &mut Hsm, label: &str, red: Option<&std::path::Path>) -> Session {
    let so = hsm_so(f, hsm);
    hsm.create_partition(&so, label).unwrap();
    let domain_ped = red.map(|r| {
        LocalPed::new(PedAnswers {
            keys: vec![r.to_path_buf()],
            reuse: true,
            ..Default::default()
        })
    });
    let mut dp = domain_ped;
    let mut hsm_red = ped(vec![key(f, "dom")], None);
    hsm.init_partition(
        label,
        NewSecret::Ped(&mut new_ped(
            vec![key(f, &format!("{label}-pso"))],
            1,
            1,
            None,
        )),
        match dp.as_mut() {
            Some(p) => DomainChoice::Imprint(NewSecret::Ped(p)),
            None => DomainChoice::Hsm(Credential::Ped(&mut hsm_red)),
        },
        None,
    )
    .unwrap();
    let pso = hsm
        .login(
            Role::PartitionSo,
            Some(label),
            Credential::Ped(&mut ped(vec![key(f, &format!("{label}-pso"))], None)),
        )
        .unwrap();
    hsm.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut new_ped(
            vec![key(f, &format!("{label}-co"))],
            1,
            1,
            None,
        )),
        false,
    )
    .unwrap();
    hsm.login(
        Role::CryptoOfficer,
        Some(label),
        Credential::Ped(&mut ped(vec![key(f, &format!("{label}-co"))], None)),
    )
    .unwrap()
}

/// The audit log's records, read from the database (the fixture has no Auditor).
fn records(f: &Fixture) -> Vec<ferrohsm_audit::Record> {
    audit_records(&f.data)
}

/// Runs a whole clone from (a, sa) to (b, sb) in batches of `batch`.
fn clone(
    a: &mut Hsm,
    sa: &Session,
    b: &mut Hsm,
    sb: &Session,
    select: &CloneSelect,
    batch: u32,
) -> Result<CloneProgress, HsmError> {
    let hello_t = b.clone_accept(sb, false)?;
    let hello_s = a.clone_offer(sa, &hello_t, select)?;
    let proof_t = b.clone_confirm(sb, &hello_s)?;
    let mut from = 0;
    loop {
        let batch = a.clone_export(sa, &hello_s.session, &proof_t, from, batch)?;
        from += batch.sealed.len() as u64;
        let progress = b.clone_import(sb, &hello_s.session, &batch)?;
        if progress.committed.is_some() {
            return Ok(progress);
        }
    }
}

#[test]
fn clones_between_hsms_of_one_domain_keep_attributes_and_ids() {
    let (fa, mut a) = fixture();
    let (fb, mut b) = fixture();
    let sa = login(&fa, &mut a, Role::CryptoOfficer, "co");
    // B's partition joins A's cloning domain with A's red key.
    let sb = partition(&fb, &mut b, "q", Some(&key(&fa, "dom")));
    // A GlobalPlatform master key set goes too, its marker with it.
    a.gp_generate(
        &sa,
        &ferrohsm_core::hsm::GpNewSet::new("issuer", "aes-128", 1, "cards"),
    )
    .unwrap();
    let before = a.list_objects(&sa, None).unwrap();
    let progress = clone(&mut a, &sa, &mut b, &sb, &CloneSelect::default(), 2).unwrap();
    assert_eq!(progress.committed, Some((before.len() as u64, 0)));
    let after = b.list_objects(&sb, None).unwrap();
    assert_eq!(after.len(), before.len());
    for o in &before {
        let c = after
            .iter()
            .find(|c| c.attrs.unique_id == o.attrs.unique_id)
            .unwrap_or_else(|| panic!("{} did not arrive", o.attrs.label));
        assert!(!o.attrs.unique_id.is_empty());
        // Every attribute, the unique id included, and the public part.
        assert_eq!(c.attrs, o.attrs);
        assert_eq!(c.public, o.public);
    }
    // The set is the same set on B: listed with the same check values.
    let sets = b.gp_list(&sb).unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets, a.gp_list(&sa).unwrap());
    // The cloned private key signs on B what A's public key verifies: the same key.
    let ec_b = b.find_key(&sb, "ec", ObjectClass::PrivateKey).unwrap();
    let sig = b
        .sign(
            &sb,
            ec_b.handle,
            Mechanism::Ecdsa(Some(Hash::Sha256)),
            b"cloned",
        )
        .unwrap();
    let ec_pub_a = a.find_key(&sa, "ec", ObjectClass::PublicKey).unwrap();
    assert!(a
        .verify(
            &sa,
            ec_pub_a.handle,
            Mechanism::Ecdsa(Some(Hash::Sha256)),
            b"cloned",
            &sig
        )
        .unwrap());
    // A second clone of the same objects adds nothing: the unique ids are there.
    let again = clone(&mut a, &sa, &mut b, &sb, &CloneSelect::default(), 100).unwrap();
    assert_eq!(again.committed, Some((0, before.len() as u64)));
    // Both sides audited each object with the peer.
    let aud_a = records(&fa);
    let aud_b = records(&fb);
    for o in &before {
        let uid = Some(o.attrs.unique_id.clone());
        assert!(aud_a
            .iter()
            .any(|r| r.event == "clone-out" && r.object == uid && r.outcome.contains("/q")));
        assert!(aud_b
            .iter()
            .any(|r| r.event == "clone-in" && r.object == uid && r.outcome.contains("/p")));
    }
}

#[test]
fn another_domain_is_refused_before_any_object_moves() {
    let (fa, mut a) = fixture();
    let (fb, mut b) = fixture();
    let sa = login(&fa, &mut a, Role::CryptoOfficer, "co");
    let sb = login(&fb, &mut b, Role::CryptoOfficer, "co");
    let count = b.list_objects(&sb, None).unwrap().len();
    // B's partition p is in B's domain, not A's.
    let hello_t = b.clone_accept(&sb, false).unwrap();
    let hello_s = a
        .clone_offer(&sa, &hello_t, &CloneSelect::default())
        .unwrap();
    let e = b.clone_confirm(&sb, &hello_s).unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("cloning domain") && m.contains("nothing was transferred")),
        "{e}"
    );
    // And the source sends nothing to a target that cannot prove the domain.
    let e = a
        .clone_export(&sa, &hello_s.session, &"00".repeat(32), 0, 10)
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("cloning domain")),
        "{e}"
    );
    assert_eq!(b.list_objects(&sb, None).unwrap().len(), count);
    // The same on one HSM: a partition with a domain of its own.
    let (fc, mut c) = fixture();
    let sp = login(&fc, &mut c, Role::CryptoOfficer, "co");
    let red = fc.tmp.path().join("own-red.pedkey");
    let so = hsm_so(&fc, &mut c);
    c.create_partition(&so, "own").unwrap();
    c.init_partition(
        "own",
        NewSecret::Ped(&mut new_ped(vec![key(&fc, "own-pso")], 1, 1, None)),
        DomainChoice::Imprint(NewSecret::Ped(&mut new_ped(vec![red], 1, 1, None))),
        None,
    )
    .unwrap();
    let pso = c
        .login(
            Role::PartitionSo,
            Some("own"),
            Credential::Ped(&mut ped(vec![key(&fc, "own-pso")], None)),
        )
        .unwrap();
    c.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut new_ped(vec![key(&fc, "own-co")], 1, 1, None)),
        false,
    )
    .unwrap();
    let so_own = c
        .login(
            Role::CryptoOfficer,
            Some("own"),
            Credential::Ped(&mut ped(vec![key(&fc, "own-co")], None)),
        )
        .unwrap();
    let mut own = Hsm::open(&fc.data).unwrap();
    let e = clone(&mut c, &sp, &mut own, &so_own, &CloneSelect::default(), 10).unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("cloning domain")),
        "{e}"
    );
}

#[test]
fn a_partition_whose_policy_forbids_cloning_sends_nothing() {
    let (fa, mut a) = fixture();
    let sa = login(&fa, &mut a, Role::CryptoOfficer, "co");
    let mut b = Hsm::open(&fa.data).unwrap();
    let sq = partition(&fa, &mut b, "q", None);
    let pso = login(&fa, &mut a, Role::PartitionSo, "pso");
    a.set_partition_policy(&pso, "clone-private-keys", "off")
        .unwrap();
    let select = CloneSelect::default();
    let e = clone(&mut a, &sa, &mut b, &sq, &select, 10).unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("clone-private-keys")),
        "{e}"
    );
    assert!(b.list_objects(&sq, None).unwrap().is_empty());
    // Secret keys alone may still go.
    let only_aes = CloneSelect {
        classes: vec![ObjectClass::SecretKey],
        ..Default::default()
    };
    let p = clone(&mut a, &sa, &mut b, &sq, &only_aes, 10).unwrap();
    assert_eq!(p.committed, Some((1, 0)));
}

#[test]
fn a_clone_cut_off_or_tampered_with_leaves_the_target_as_it_was() {
    let (fa, mut a) = fixture();
    let sa = login(&fa, &mut a, Role::CryptoOfficer, "co");
    let mut b = Hsm::open(&fa.data).unwrap();
    let sq = partition(&fa, &mut b, "q", None);
    let total = a.list_objects(&sa, None).unwrap().len() as u64;
    assert!(total >= 3);
    // Cut off after the first batch: nothing is in the target.
    let hello_t = b.clone_accept(&sq, false).unwrap();
    let hello_s = a
        .clone_offer(&sa, &hello_t, &CloneSelect::default())
        .unwrap();
    let proof_t = b.clone_confirm(&sq, &hello_s).unwrap();
    let first = a
        .clone_export(&sa, &hello_s.session, &proof_t, 0, 1)
        .unwrap();
    let p = b.clone_import(&sq, &hello_s.session, &first).unwrap();
    assert_eq!((p.received, p.total, p.committed), (1, total, None));
    assert!(b.list_objects(&sq, None).unwrap().is_empty());
    // A flipped byte in the next batch: refused, the clone over, still nothing written.
    let mut second = a
        .clone_export(&sa, &hello_s.session, &proof_t, 1, 100)
        .unwrap();
    let mut bytes = hex::decode(&second.sealed[0]).unwrap();
    bytes[20] ^= 1;
    second.sealed[0] = hex::encode(bytes);
    assert!(b.clone_import(&sq, &hello_s.session, &second).is_err());
    assert!(b
        .clone_import(&sq, &hello_s.session, &CloneBatch::default())
        .is_err());
    assert!(b.list_objects(&sq, None).unwrap().is_empty());
    // A batch from another position is refused too (no reordering or replay).
    let hello_t = b.clone_accept(&sq, false).unwrap();
    let hello_s = a
        .clone_offer(&sa, &hello_t, &CloneSelect::default())
        .unwrap();
    let proof_t = b.clone_confirm(&sq, &hello_s).unwrap();
    let later = a
        .clone_export(&sa, &hello_s.session, &proof_t, 1, 1)
        .unwrap();
    assert!(b.clone_import(&sq, &hello_s.session, &later).is_err());
    assert!(b.list_objects(&sq, None).unwrap().is_empty());
}

#[test]
fn only_a_crypto_officer_clones_never_a_security_officer_or_the_crypto_user() {
    let (fa, mut a) = fixture();
    let co = login(&fa, &mut a, Role::CryptoOfficer, "co");
    let mut b = Hsm::open(&fa.data).unwrap();
    let sq = partition(&fa, &mut b, "q", None);
    let hello_t = b.clone_accept(&sq, false).unwrap();
    let cu = login(&fa, &mut a, Role::CryptoUser, "cu");
    let pso = login(&fa, &mut a, Role::PartitionSo, "pso");
    let so = hsm_so(&fa, &mut a);
    for (who, s) in [("cu", &cu), ("pso", &pso), ("hsm so", &so)] {
        let e = a
            .clone_offer(s, &hello_t, &CloneSelect::default())
            .unwrap_err();
        assert!(
            matches!(&e, HsmError::Refused(m) if m.contains("Crypto Officer")),
            "{who}: {e}"
        );
        assert!(a.clone_accept(s, false).is_err(), "{who} accepted a clone");
    }
    // The Crypto Officer may.
    assert!(a
        .clone_offer(&co, &hello_t, &CloneSelect::default())
        .is_ok());
}

#[test]
fn a_clone_by_unique_id_moves_just_those_objects() {
    let (fa, mut a) = fixture();
    let (fb, mut b) = fixture();
    let sa = login(&fa, &mut a, Role::CryptoOfficer, "co");
    let sb = partition(&fb, &mut b, "q", Some(&key(&fa, "dom")));
    let before = a.list_objects(&sa, None).unwrap();
    assert!(before.len() >= 2);
    let chosen = before[1].attrs.unique_id.clone();
    let select = CloneSelect {
        unique_ids: vec![chosen.clone()],
        ..Default::default()
    };
    let progress = clone(&mut a, &sa, &mut b, &sb, &select, 10).unwrap();
    assert_eq!(progress.committed, Some((1, 0)));
    let after = b.list_objects(&sb, None).unwrap();
    assert_eq!(
        after
            .iter()
            .map(|o| o.attrs.unique_id.clone())
            .collect::<Vec<_>>(),
        vec![chosen]
    );
    // An id the partition does not hold selects nothing: refused, nothing sent.
    let none = CloneSelect {
        unique_ids: vec!["no-such-object".into()],
        ..Default::default()
    };
    assert!(matches!(
        clone(&mut a, &sa, &mut b, &sb, &none, 10),
        Err(HsmError::NotFound(_))
    ));
}

#[test]
fn an_ha_note_records_only_the_membership_events_and_only_for_the_crypto_officer() {
    let (fa, mut a) = fixture();
    let co = login(&fa, &mut a, Role::CryptoOfficer, "co");
    a.ha_note(&co, "pay", "member-down", "tls://hsm2:1792/p")
        .unwrap();
    let recs = records(&fa);
    assert!(recs.iter().any(|r| r.event == "ha-member-down"
        && r.outcome == "success: group pay, member tls://hsm2:1792/p"));
    // Free text, other event names and control characters never reach the log.
    for (event, member) in [
        ("key-use", "m"),
        ("member-down\nforged", "m"),
        ("member-down", "m\nha-member-rejoined"),
        ("member-down", ""),
    ] {
        let n = records(&fa).len();
        assert!(
            matches!(
                a.ha_note(&co, "pay", event, member),
                Err(HsmError::InvalidInput(_))
            ),
            "{event:?} {member:?}"
        );
        assert_eq!(records(&fa).len(), n);
    }
    // Not the Crypto User nor a Security Officer.
    let cu = login(&fa, &mut a, Role::CryptoUser, "cu");
    let pso = login(&fa, &mut a, Role::PartitionSo, "pso");
    for s in [&cu, &pso] {
        assert!(matches!(
            a.ha_note(s, "pay", "member-down", "m"),
            Err(HsmError::Refused(_))
        ));
    }
}

/// A destroyed token object's unique id is kept (what an HA group's sync reads on each
/// member), dropped when the object is brought back deliberately, and with the partition's
/// objects when its Crypto Officer is re-initialised.
#[test]
fn destroyed_objects_are_remembered_until_brought_back() {
    let (f, mut a) = fixture();
    let co = login(&f, &mut a, Role::CryptoOfficer, "co");
    assert!(a.destroyed_objects(&co).unwrap().is_empty());
    let before = a.list_objects(&co, None).unwrap();
    let file = a.backup_export(&co, &CloneSelect::default()).unwrap();
    let victim = before.iter().find(|o| o.attrs.token).unwrap();
    a.destroy_object(&co, victim.handle).unwrap();
    assert_eq!(
        a.destroyed_objects(&co).unwrap(),
        vec![victim.attrs.unique_id.as_str()]
    );
    // Security officers never read a partition's objects, this list included.
    let pso = login(&f, &mut a, Role::PartitionSo, "pso");
    assert!(a.destroyed_objects(&pso).is_err());
    // Restored from the backup: it is back, and no longer listed as destroyed.
    let (added, _, _) = a.backup_restore(&co, &file, false).unwrap();
    assert_eq!(added, 1);
    assert!(a.destroyed_objects(&co).unwrap().is_empty());
    // Destroyed again, then a new Crypto Officer (which destroys every object): the list
    // goes with the objects.
    let again = a
        .list_objects(&co, None)
        .unwrap()
        .into_iter()
        .find(|o| o.attrs.unique_id == victim.attrs.unique_id)
        .unwrap();
    a.destroy_object(&co, again.handle).unwrap();
    assert_eq!(a.destroyed_objects(&co).unwrap().len(), 1);
    a.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut new_ped(vec![key(&f, "co2")], 1, 1, None)),
        true,
    )
    .unwrap();
    let co = login(&f, &mut a, Role::CryptoOfficer, "co2");
    assert!(a.destroyed_objects(&co).unwrap().is_empty());
}
