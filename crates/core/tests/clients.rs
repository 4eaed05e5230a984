//! The client registry: only the HSM SO registers, assigns and revokes hosts (the other roles
//! try and are refused, audited); names and keys are unique; a revoked host is no longer
//! served and cannot be given partitions; every change is an audit record.

mod common;

use common::*;
use ferrohsm_core::{Credential, HsmError, NewSecret, Role};

const FP1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const FP2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn only_the_hsm_so_registers_assigns_and_revokes_clients() {
    let (f, mut hsm) = fixture();
    hsm.audit_init(
        NewSecret::Ped(&mut new_ped(vec![key(&f, "aud")], 1, 1, None)),
        None,
    )
    .unwrap();
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    // Every other role tries, and is refused before anything changes.
    for s in [&pso, &co] {
        assert!(matches!(
            hsm.register_client(s, "rogue", FP1),
            Err(HsmError::Refused(_))
        ));
        assert!(hsm.clients(s).is_err());
    }
    let so = hsm_so(&f, &mut hsm);
    assert!(hsm.clients(&so).unwrap().is_empty());

    let c = hsm
        .register_client(&so, "app1", &FP1.to_uppercase())
        .unwrap();
    assert_eq!(c.fingerprint, FP1, "fingerprints are kept in one form");
    // The same key or the same name twice is refused; so is nonsense.
    assert!(matches!(
        hsm.register_client(&so, "app2", FP1),
        Err(HsmError::Refused(_))
    ));
    assert!(matches!(
        hsm.register_client(&so, "app1", FP2),
        Err(HsmError::Refused(_))
    ));
    assert!(matches!(
        hsm.register_client(&so, "app2", "not-hex"),
        Err(HsmError::InvalidInput(_))
    ));
    assert!(matches!(
        hsm.register_client(&so, "bad name!", FP2),
        Err(HsmError::InvalidInput(_))
    ));

    // Partitions are assigned by label; an unknown one is refused.
    let c = hsm.assign_client(&so, "app1", "p", true).unwrap();
    assert_eq!(c.partitions, vec!["p".to_string()]);
    assert!(hsm.assign_client(&so, "app1", "nope", true).is_err());
    assert!(hsm.assign_client(&co, "app1", "p", false).is_err());
    assert_eq!(
        hsm.client_by_fingerprint(FP1).unwrap().unwrap().partitions,
        vec!["p".to_string()]
    );
    assert!(hsm.client_by_fingerprint(FP2).unwrap().is_none());

    // Revoked: no longer served, no partitions given, still listed; its key cannot come back
    // under another name.
    assert!(hsm.revoke_client(&co, "app1").is_err());
    let c = hsm.revoke_client(&so, FP1).unwrap();
    assert!(c.revoked.is_some());
    assert!(hsm.client_by_fingerprint(FP1).unwrap().is_none());
    assert!(hsm.assign_client(&so, "app1", "p", true).is_err());
    assert!(hsm.register_client(&so, "app1-again", FP1).is_err());
    assert_eq!(hsm.clients(&so).unwrap().len(), 1);

    // Each change and each refusal is in the log.
    let aud = hsm
        .login(
            Role::Auditor,
            None,
            Credential::Ped(&mut ped(vec![key(&f, "aud")], None)),
        )
        .unwrap();
    let recs = hsm.audit_records(&aud).unwrap();
    let count = |ev: &str, outcome: &str| {
        recs.iter()
            .filter(|r| r.event == ev && r.outcome.starts_with(outcome))
            .count()
    };
    assert_eq!(count("client-register", "success"), 1);
    assert_eq!(
        count("client-register", "failure"),
        2,
        "the two roles' attempts"
    );
    assert_eq!(count("client-assign", "success"), 1);
    assert_eq!(count("client-unassign", "failure"), 1);
    assert_eq!(count("client-revoke", "success"), 1);
    assert_eq!(count("client-revoke", "failure"), 1);
}

#[test]
fn enrollment_codes_are_the_hsm_sos_to_issue_and_work_once() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let so = hsm_so(&f, &mut hsm);
    // Only the HSM SO invites; the validity is 1 s to 20 minutes; partitions must exist.
    assert!(matches!(
        hsm.issue_enrollment(&co, "app1", &[], 60),
        Err(HsmError::Refused(_))
    ));
    assert!(hsm.issue_enrollment(&so, "app1", &[], 20 * 60 + 1).is_err());
    assert!(hsm.issue_enrollment(&so, "app1", &[], 0).is_err());
    assert!(hsm
        .issue_enrollment(&so, "app1", &["nope".to_string()], 60)
        .is_err());
    assert!(
        !hsm.enrollment_open().unwrap(),
        "a refused issue left a code"
    );

    let e = hsm
        .issue_enrollment(&so, "app1", &["p".to_string()], 60)
        .unwrap();
    assert!(hsm.enrollment_open().unwrap());
    let other = hsm.issue_enrollment(&so, "app2", &[], 60).unwrap();
    assert_ne!(e.code, other.code, "codes are random");
    // Redeemed for the key that presents it, with the invitation's name and partitions.
    let c = hsm.redeem_enrollment(&e.code, FP1).unwrap();
    assert_eq!((c.name.as_str(), c.fingerprint.as_str()), ("app1", FP1));
    assert_eq!(c.partitions, vec!["p".to_string()]);
    assert!(hsm.client_by_fingerprint(FP1).unwrap().is_some());
    // Once.
    assert!(matches!(
        hsm.redeem_enrollment(&e.code, FP2),
        Err(HsmError::Refused(m)) if m.contains("already used")
    ));
    // A registered key cannot take a second name; the code stays unused then.
    assert!(hsm.redeem_enrollment(&other.code, FP1).is_err());
    let c2 = hsm.redeem_enrollment(&other.code, FP2).unwrap();
    assert_eq!(c2.name, "app2");
    assert!(!hsm.enrollment_open().unwrap());
}

#[test]
fn enrollment_codes_are_read_as_people_type_them() {
    use ferrohsm_core::hsm::parse_enrollment_code as parse;
    assert_eq!(parse("abcd-efgh-jkmn-pqrs").unwrap(), "ABCDEFGHJKMNPQRS");
    assert_eq!(parse(" ABCD EFGH JKMN PQRS ").unwrap(), "ABCDEFGHJKMNPQRS");
    // O, I and L are read as the digits they look like.
    assert_eq!(parse("oooo-iiii-llll-0000").unwrap(), "0000111111110000");
    for bad in [
        "",
        "ABCD-EFGH-JKMN-PQR",
        "ABCD-EFGH-JKMN-PQRST",
        "ABCD-EFGH-JKMN-PQRU",
        "ABCD-EFGH-JKMN-PQR\u{e9}",
        "ABCD_EFGH_JKMN_PQRS",
    ] {
        assert!(parse(bad).is_err(), "{bad:?} was taken");
    }
}

#[test]
fn a_rekeyed_client_keeps_its_name_and_partitions_and_its_old_key_is_refused() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let so = hsm_so(&f, &mut hsm);
    hsm.register_client(&so, "app1", FP1).unwrap();
    hsm.assign_client(&so, "app1", "p", true).unwrap();
    assert!(matches!(
        hsm.rekey_client(&co, "app1", FP2),
        Err(HsmError::Refused(_))
    ));
    assert!(hsm.rekey_client(&so, "app1", FP1).is_err(), "the same key");
    let c = hsm.rekey_client(&so, "app1", FP2).unwrap();
    assert_eq!((c.name.as_str(), c.fingerprint.as_str()), ("app1", FP2));
    assert_eq!(c.partitions, vec!["p".to_string()]);
    assert!(hsm.client_by_fingerprint(FP1).unwrap().is_none());
    assert!(hsm.client_by_fingerprint(FP2).unwrap().is_some());
    // The old key stays on record, revoked: it cannot be registered again.
    assert!(hsm.register_client(&so, "app9", FP1).is_err());
    let all = hsm.clients(&so).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .any(|c| c.fingerprint == FP1 && c.revoked.is_some()));
}
