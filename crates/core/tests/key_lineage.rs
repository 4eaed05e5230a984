//! Property: whatever sequence of generate, copy, wrap-and-unwrap and derive a Crypto Officer
//! runs, with whatever templates, no key that comes of another is less sensitive or more
//! extractable than the key it came from, nor claims a history (`CKA_LOCAL`,
//! `CKA_ALWAYS_SENSITIVE`, `CKA_NEVER_EXTRACTABLE`) it does not have.

mod common;

use common::*;
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{Attributes, CopyChanges, KeyOptions, KeyTemplate, ObjectClass};
use ferrohsm_core::{Hsm, Role, Session};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// One step: which key it starts from (an index into the keys made so far) and the template
/// flags it asks for (`None`: the default).
#[derive(Clone, Debug)]
enum Step {
    Generate {
        sensitive: Option<bool>,
        extractable: bool,
    },
    Copy {
        from: usize,
        sensitive: Option<bool>,
        extractable: Option<bool>,
    },
    WrapUnwrap {
        from: usize,
        sensitive: Option<bool>,
        extractable: bool,
    },
    Derive {
        sensitive: Option<bool>,
        extractable: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let flag = || proptest::option::of(any::<bool>());
    prop_oneof![
        (flag(), any::<bool>()).prop_map(|(sensitive, extractable)| Step::Generate {
            sensitive,
            extractable
        }),
        (any::<usize>(), flag(), flag()).prop_map(|(from, sensitive, extractable)| Step::Copy {
            from,
            sensitive,
            extractable
        }),
        (any::<usize>(), flag(), any::<bool>()).prop_map(|(from, sensitive, extractable)| {
            Step::WrapUnwrap {
                from,
                sensitive,
                extractable,
            }
        }),
        (flag(), any::<bool>()).prop_map(|(sensitive, extractable)| Step::Derive {
            sensitive,
            extractable
        }),
    ]
}

fn attrs(hsm: &mut Hsm, s: &Session, h: u64) -> Attributes {
    hsm.load_key(s, h).unwrap().info.attrs.clone()
}

/// Checks `child` against `origin`; `made_here` says whether the child was generated inside.
fn never_weaker(origin: &Attributes, child: &Attributes, how: &str) {
    assert!(
        !origin.sensitive || child.sensitive,
        "{how}: a sensitive key gave a non-sensitive one"
    );
    assert!(
        origin.extractable || !child.extractable,
        "{how}: an unextractable key gave an extractable one"
    );
    assert!(
        !child.always_sensitive || origin.always_sensitive,
        "{how}: claims always-sensitive"
    );
    assert!(
        !child.never_extractable || origin.never_extractable,
        "{how}: claims never-extractable"
    );
    assert!(!child.local || origin.local, "{how}: claims to be local");
}

#[test]
fn no_sequence_of_key_operations_yields_a_weaker_key() {
    let (f, mut hsm) = fixture();
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    // Non-sensitive keys allowed, so that the search also starts from them.
    hsm.set_partition_policy(&pso, "non-sensitive-keys", "on")
        .unwrap();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let opts = |extractable: bool| KeyOptions {
        label: String::new(),
        id: vec![],
        extractable,
    };
    let kek = hsm
        .generate_key_with(
            &co,
            KeySpec::Aes256,
            &opts(false),
            &KeyTemplate {
                wrap: Some(true),
                unwrap: Some(true),
                encrypt: Some(false),
                decrypt: Some(false),
                ..Default::default()
            },
        )
        .unwrap()[0];
    // The ECDH base key and a peer's point (of a second key pair).
    let ec = |hsm: &mut Hsm, extractable: bool, sensitive: Option<bool>| {
        hsm.generate_key_with(
            &co,
            KeySpec::EcP256,
            &opts(extractable),
            &KeyTemplate {
                derive: Some(true),
                sensitive,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let base = ec(&mut hsm, false, None);
    let peer = ec(&mut hsm, false, None);
    let spki = hsm
        .load_key(&co, peer[1])
        .unwrap()
        .info
        .public
        .clone()
        .unwrap();
    // CKA_EC_POINT is the point in an OCTET STRING (two bytes of header for P-256).
    let point = ferrohsm_core::mechanism::ec_point(KeySpec::EcP256, &spki).unwrap()[2..].to_vec();
    let base_attrs = attrs(&mut hsm, &co, base[0]);

    // The runner takes a shared closure; each case borrows the HSM in turn.
    let hsm = std::cell::RefCell::new(hsm);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(step(), 1..8), |steps| {
            let mut hsm = hsm.borrow_mut();
            let mut keys: Vec<u64> = Vec::new();
            for st in steps {
                let pick = |from: usize, keys: &[u64]| keys.get(from % keys.len().max(1)).copied();
                match st {
                    Step::Generate {
                        sensitive,
                        extractable,
                    } => {
                        let tpl = KeyTemplate {
                            sensitive,
                            ..Default::default()
                        };
                        let h = hsm
                            .generate_key_with(&co, KeySpec::Aes128, &opts(extractable), &tpl)
                            .unwrap()[0];
                        let a = attrs(&mut hsm, &co, h);
                        assert_eq!(a.sensitive, sensitive.unwrap_or(true));
                        assert_eq!(a.always_sensitive, a.sensitive);
                        assert_eq!(a.never_extractable, !a.extractable);
                        keys.push(h);
                    }
                    Step::Copy {
                        from,
                        sensitive,
                        extractable,
                    } => {
                        let Some(k) = pick(from, &keys) else { continue };
                        let origin = attrs(&mut hsm, &co, k);
                        let changes = CopyChanges {
                            label: None,
                            id: None,
                            token: true,
                            sensitive,
                            extractable,
                            copyable: None,
                            session_owner: None,
                        };
                        if let Ok(h) = hsm.copy_object(&co, k, &changes) {
                            never_weaker(&origin, &attrs(&mut hsm, &co, h), "copy");
                            keys.push(h);
                        }
                    }
                    Step::WrapUnwrap {
                        from,
                        sensitive,
                        extractable,
                    } => {
                        let Some(k) = pick(from, &keys) else { continue };
                        let origin = attrs(&mut hsm, &co, k);
                        let p = Params::default();
                        let Ok(blob) = hsm.wrap_key(&co, kek, Mechanism::AesKwp, &p, k) else {
                            assert!(!origin.extractable, "an extractable key did not wrap");
                            continue;
                        };
                        let tpl = KeyTemplate {
                            sensitive,
                            encrypt: Some(true),
                            ..Default::default()
                        };
                        let back = hsm.unwrap_key(
                            &co,
                            kek,
                            Mechanism::AesKwp,
                            &p,
                            &blob,
                            ObjectClass::SecretKey,
                            None,
                            &opts(extractable),
                            &tpl,
                        );
                        match back {
                            Ok(h) => {
                                let child = attrs(&mut hsm, &co, h);
                                never_weaker(&origin, &child, "unwrap");
                                assert!(child.sensitive, "an unwrapped key is sensitive");
                                keys.push(h);
                            }
                            Err(_) => assert_eq!(sensitive, Some(false)),
                        }
                    }
                    Step::Derive {
                        sensitive,
                        extractable,
                    } => {
                        let tpl = KeyTemplate {
                            sensitive,
                            ..Default::default()
                        };
                        match hsm.derive_ecdh(
                            &co,
                            base[0],
                            &point,
                            KeySpec::Aes128,
                            &opts(extractable),
                            &tpl,
                        ) {
                            Ok(h) => {
                                never_weaker(&base_attrs, &attrs(&mut hsm, &co, h), "derive");
                                keys.push(h);
                            }
                            Err(e) => assert!(
                                sensitive == Some(false) || extractable,
                                "derive refused: {e}"
                            ),
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
