//! Shared setup: a PED-authenticated HSM with a partition, its roles and keys; and a
//! password-authenticated one.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ferrohsm_core::hsm::{DomainChoice, InitOptions};
use ferrohsm_core::mechanism::KeySpec;
use ferrohsm_core::object::KeyOptions;
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, Credential, Hsm, NewSecret, Role, Session};

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub peds: PathBuf,
    pub so_pin: Pin,
}

pub fn key(f: &Fixture, name: &str) -> PathBuf {
    f.peds.join(format!("{name}.pedkey"))
}

pub fn ped(keys: Vec<PathBuf>, pin: Option<&Pin>) -> LocalPed {
    LocalPed::new(PedAnswers {
        keys,
        pin: pin.cloned(),
        ..Default::default()
    })
}

pub fn new_ped(keys: Vec<PathBuf>, m: u8, n: u8, pin: Option<&Pin>) -> LocalPed {
    LocalPed::new(PedAnswers {
        keys,
        m,
        n,
        pin: pin.cloned(),
        ..Default::default()
    })
}

/// A PED-authenticated HSM: SO 2 of 3 with PIN, domain 1 of 1, partition "p" initialised,
/// CO and CU imprinted (no PIN), activation allowed, an EC key "ec" and an AES key "aes".
pub fn fixture() -> (Fixture, Hsm) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let peds = tmp.path().join("peds");
    let f = Fixture {
        data: data.clone(),
        peds,
        so_pin: Pin::ped_pin("482916").unwrap(),
        tmp,
    };
    let mut hsm = Hsm::open_or_create(&data).unwrap();
    let so_keys = vec![key(&f, "so1"), key(&f, "so2"), key(&f, "so3")];
    hsm.init(InitOptions {
        label: "test".into(),
        mode: AuthMode::Ped,
        so: NewSecret::Ped(&mut new_ped(so_keys, 2, 3, Some(&f.so_pin))),
        domain: NewSecret::Ped(&mut new_ped(vec![key(&f, "dom")], 1, 1, None)),
        current_so: None,
        confirm_destroy: vec![],
    })
    .unwrap();
    let so = hsm_so(&f, &mut hsm);
    hsm.create_partition(&so, "p").unwrap();
    hsm.init_partition(
        "p",
        NewSecret::Ped(&mut new_ped(vec![key(&f, "pso")], 1, 1, None)),
        DomainChoice::Hsm(Credential::Ped(&mut ped(vec![key(&f, "dom")], None))),
        None,
    )
    .unwrap();
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.set_partition_policy(&pso, "activation", "on").unwrap();
    hsm.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut new_ped(vec![key(&f, "co")], 1, 1, None)),
        false,
    )
    .unwrap();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    hsm.init_role(
        &co,
        Role::CryptoUser,
        NewSecret::Ped(&mut new_ped(vec![key(&f, "cu")], 1, 1, None)),
        false,
    )
    .unwrap();
    hsm.generate_key(
        &co,
        KeySpec::EcP256,
        &KeyOptions {
            label: "ec".into(),
            id: vec![1],
            extractable: false,
        },
    )
    .unwrap();
    hsm.generate_key(
        &co,
        KeySpec::Aes256,
        &KeyOptions {
            label: "aes".into(),
            id: vec![2],
            extractable: false,
        },
    )
    .unwrap();
    (f, hsm)
}

pub fn hsm_so(f: &Fixture, hsm: &mut Hsm) -> Session {
    hsm.login(
        Role::HsmSo,
        None,
        Credential::Ped(&mut ped(
            vec![key(f, "so1"), key(f, "so2")],
            Some(&f.so_pin),
        )),
    )
    .unwrap()
}

pub fn login(f: &Fixture, hsm: &mut Hsm, role: Role, keyname: &str) -> Session {
    hsm.login(
        role,
        Some("p"),
        Credential::Ped(&mut ped(vec![key(f, keyname)], None)),
    )
    .unwrap()
}

/// Every byte of every file under `dir`.
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A password-authenticated HSM in a temporary directory (kept alive by the returned guard):
/// partition "tok" in the HSM's domain, its Partition SO's password "partition-so-pw", and a
/// Crypto Officer with the password "user-pin-1234".
pub fn password_hsm() -> (tempfile::TempDir, Hsm) {
    let tmp = tempfile::tempdir().unwrap();
    let mut hsm = Hsm::open_or_create(&tmp.path().join("d")).unwrap();
    let pw = |s: &str| Pin::password(s).unwrap();
    hsm.init(InitOptions {
        label: "lab".into(),
        mode: AuthMode::Password,
        so: NewSecret::Password(pw("hsm-so-password")),
        domain: NewSecret::Password(pw("domain-string-1")),
        current_so: None,
        confirm_destroy: vec![],
    })
    .unwrap();
    let so = hsm
        .login(Role::HsmSo, None, Credential::Secret(pw("hsm-so-password")))
        .unwrap();
    hsm.create_partition(&so, "tok").unwrap();
    hsm.init_partition(
        "tok",
        NewSecret::Password(pw("partition-so-pw")),
        DomainChoice::Hsm(Credential::Secret(pw("domain-string-1"))),
        None,
    )
    .unwrap();
    let pso = hsm
        .login(
            Role::PartitionSo,
            Some("tok"),
            Credential::Secret(pw("partition-so-pw")),
        )
        .unwrap();
    hsm.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Password(pw("user-pin-1234")),
        false,
    )
    .unwrap();
    (tmp, hsm)
}

/// The audit log's records of the data directory `data`, read from its database (for
/// fixtures without an Auditor).
#[allow(dead_code)]
pub fn audit_records(data: &Path) -> Vec<ferrohsm_audit::Record> {
    let c = rusqlite::Connection::open(data.join("hsm.db")).unwrap();
    let mut st = c
        .prepare("SELECT record FROM audit_log ORDER BY idx")
        .unwrap();
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|b| ferrohsm_audit::Record::from_bytes(&b.unwrap()).unwrap())
        .collect();
    rows
}
