//! The firewall of well-known key values: a key whose value is no secret (all zero, the
//! GlobalPlatform default key, …) does not enter a partition by unwrapping, outside the test
//! mode only its Partition SO turns on; each acceptance in test mode is audited.

mod common;

use common::*;
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism, Params};
use ferrohsm_core::object::{KeyOptions, KeyTemplate, ObjectClass};
use ferrohsm_core::{HsmError, Role};

#[test]
fn a_well_known_key_value_is_refused_outside_test_mode() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let opts = |label: &str| KeyOptions {
        label: label.into(),
        id: vec![],
        extractable: false,
    };
    // An RSA pair whose private half unwraps (and does nothing else).
    let handles = hsm
        .generate_key_with(
            &co,
            KeySpec::Rsa3072,
            &opts("unwrapper"),
            &KeyTemplate {
                unwrap: Some(true),
                decrypt: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    let (private, public) = (handles[0], handles[1]);
    let oaep = Mechanism::RsaOaep(Hash::Sha256);
    let p = Params::default();
    let unwrap = |hsm: &mut ferrohsm_core::Hsm, blob: &[u8], label: &str| {
        hsm.unwrap_key(
            &co,
            private,
            oaep,
            &p,
            blob,
            ObjectClass::SecretKey,
            None,
            &opts(label),
            &KeyTemplate::default(),
        )
    };
    let gp_default: Vec<u8> = (0x40u8..=0x4f).collect();
    for (value, label) in [(vec![0u8; 32], "zero"), (gp_default.clone(), "gp")] {
        let blob = hsm.encrypt(&co, public, oaep, &p, &value).unwrap();
        let e = unwrap(&mut hsm, &blob, label).unwrap_err();
        assert!(
            matches!(&e, HsmError::KeyUse(m) if m.contains("well known")),
            "{e}"
        );
    }
    // A random value enters.
    let mut random = [0u8; 32];
    ferrohsm_core::crypto::fill_random(&mut random);
    let blob = hsm.encrypt(&co, public, oaep, &p, &random).unwrap();
    unwrap(&mut hsm, &blob, "random").unwrap();

    // Test mode is the Partition SO's alone; in it the value enters, and the record says so.
    assert!(hsm.set_partition_policy(&co, "test-keys", "on").is_err());
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.set_partition_policy(&pso, "test-keys", "on").unwrap();
    let blob = hsm.encrypt(&co, public, oaep, &p, &gp_default).unwrap();
    unwrap(&mut hsm, &blob, "gp-test").unwrap();
    let ev = hsm.events().unwrap();
    assert!(ev.iter().any(|e| e.event == "key-unwrap"
        && e.object.as_deref() == Some("gp-test")
        && e.outcome.contains("accepted in test mode")));
    assert!(
        ev.iter()
            .filter(|e| e.event == "key-unwrap" && e.outcome.contains("well known"))
            .count()
            >= 2,
        "the refusals are recorded"
    );
    hsm.set_partition_policy(&pso, "test-keys", "off").unwrap();
    let blob = hsm.encrypt(&co, public, oaep, &p, &gp_default).unwrap();
    assert!(unwrap(&mut hsm, &blob, "gp-again").is_err());
}
