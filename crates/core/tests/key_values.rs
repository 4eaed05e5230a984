//! The firewall of well-known key values: a key whose value is no secret (every kind on the
//! list: all zero, the GlobalPlatform default key, …) does not enter a partition by unwrapping
//! or by import in clear, outside the test mode only its Partition SO turns on; each
//! acceptance in test mode is audited. (The GlobalPlatform ceremony import is tried in
//! `gp.rs`, and through PKCS#11 in the module's tests.)

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
    // Unwrapped as a secret key of type `spec` (none: AES, sized by the value).
    let unwrap_as =
        |hsm: &mut ferrohsm_core::Hsm, blob: &[u8], spec: Option<KeySpec>, label: &str| {
            hsm.unwrap_key(
                &co,
                private,
                oaep,
                &p,
                blob,
                ObjectClass::SecretKey,
                spec,
                &opts(label),
                &KeyTemplate::default(),
            )
        };
    let unwrap =
        |hsm: &mut ferrohsm_core::Hsm, blob: &[u8], label: &str| unwrap_as(hsm, blob, None, label);
    let gp_default: Vec<u8> = (0x40u8..=0x4f).collect();
    // Every kind on the list, by unwrapping and by import in clear (the partition allows
    // clear import: only the list stops them). Two-key 3DES enters as three-key (K3 = K1).
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.set_partition_policy(&pso, "import-keys", "on").unwrap();
    let mut tried = 0;
    for (spec, mut value) in ferrohsm_core::weak_keys::samples() {
        if spec == KeySpec::Des3 {
            let k1 = value[..8].to_vec();
            value.extend(k1);
        }
        let blob = hsm.encrypt(&co, public, oaep, &p, &value).unwrap();
        let e = unwrap_as(&mut hsm, &blob, Some(spec), "weak").unwrap_err();
        assert!(
            matches!(&e, HsmError::KeyUse(m) if m.contains("well known")),
            "unwrap {spec:?} {value:02x?}: {e}"
        );
        let clear = ferrohsm_core::hsm::ClearKey {
            class: ObjectClass::SecretKey,
            spec: Some(spec),
            material: ferrohsm_core::secret::SecretBytes::new(value.clone()),
        };
        let e = hsm
            .import_key(&co, clear, &opts("weak"), &KeyTemplate::default())
            .unwrap_err();
        assert!(
            matches!(&e, HsmError::KeyUse(m) if m.contains("well known")),
            "import {spec:?} {value:02x?}: {e}"
        );
        tried += 1;
    }
    assert!(tried >= 10);
    // A random value enters.
    let mut random = [0u8; 32];
    ferrohsm_core::crypto::fill_random(&mut random);
    let blob = hsm.encrypt(&co, public, oaep, &p, &random).unwrap();
    unwrap(&mut hsm, &blob, "random").unwrap();

    // Test mode is the Partition SO's alone; in it the value enters, and the record says so.
    assert!(hsm.set_partition_policy(&co, "test-keys", "on").is_err());
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
