//! Device, partition and role lifecycle through the engine API.

mod common;

use common::*;
use ferrohsm_core::hsm::InitOptions;
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism};
use ferrohsm_core::object::{KeyOptions, ObjectClass};
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, Credential, DomainChoice, Hsm, HsmError, NewSecret, Role};

#[test]
fn activation_challenge_restart_and_auto_activation() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ch = Pin::password("correct horse battery").unwrap();
    hsm.activate(&co, ch.clone()).unwrap();
    // The challenge alone logs in, with the partition key (it can sign).
    let s = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Secret(ch.clone()),
        )
        .unwrap();
    let ec = hsm.find_key(&s, "ec", ObjectClass::PrivateKey).unwrap();
    hsm.sign(&s, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap();
    // But it does not replace the CO's secret: that would lock out the PED key's holder.
    let replacement = f.tmp.path().join("new-co.pedkey");
    let e = hsm
        .change_secret(
            &s,
            NewSecret::Ped(&mut new_ped(vec![replacement.clone()], 1, 1, None)),
        )
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("challenge secret")),
        "{e}"
    );
    assert!(!replacement.exists(), "no key file was written");
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
    // A wrong challenge counts as a failed login of the CO.
    let e = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Secret(Pin::password("wrong horse battery").unwrap()),
        )
        .unwrap_err();
    assert!(matches!(e, HsmError::AuthFailed { .. }), "{e}");
    // Restart without auto-activation ends it. Only the HSM SO restarts the HSM.
    assert!(matches!(hsm.restart(&s), Err(HsmError::Refused(_))));
    let so = hsm_so(&f, &mut hsm);
    hsm.restart(&so).unwrap();
    assert!(matches!(
        hsm.login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Secret(ch.clone())
        ),
        Err(HsmError::Refused(_))
    ));
    // With auto-activation, an activation survives restarts.
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.set_partition_policy(&pso, "auto-activation", "on")
        .unwrap();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    hsm.activate(&co, ch.clone()).unwrap();
    hsm.restart(&so).unwrap();
    hsm.login(
        Role::CryptoOfficer,
        Some("p"),
        Credential::Secret(ch.clone()),
    )
    .unwrap();
    // Turning activation off drops it.
    hsm.set_partition_policy(&pso, "activation", "off").unwrap();
    assert!(hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Secret(ch.clone())
        )
        .is_err());
    // Deactivation by the role.
    hsm.set_partition_policy(&pso, "activation", "on").unwrap();
    hsm.activate(&co, ch.clone()).unwrap();
    assert!(hsm.deactivate(&co, Role::CryptoOfficer).unwrap());
    assert!(hsm
        .login(Role::CryptoOfficer, Some("p"), Credential::Secret(ch))
        .is_err());
}

#[test]
fn hsm_policy_bounds_partition_policy() {
    let (f, mut hsm) = fixture();
    let so = hsm_so(&f, &mut hsm);
    hsm.set_hsm_policy(&so, "activation", "off").unwrap();
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    let e = hsm
        .set_partition_policy(&pso, "activation", "on")
        .unwrap_err();
    assert!(
        e.to_string().contains("HSM policy activation is off"),
        "{e}"
    );
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    assert!(matches!(
        hsm.activate(&co, Pin::password("some challenge").unwrap()),
        Err(HsmError::Refused(_))
    ));
    // M of N off: a split imprint is refused and nothing is written.
    hsm.set_hsm_policy(&so, "m-of-n", "off").unwrap();
    let keys = vec![key(&f, "x1"), key(&f, "x2")];
    let e = hsm
        .change_secret(&co, NewSecret::Ped(&mut new_ped(keys.clone(), 2, 2, None)))
        .unwrap_err();
    assert!(matches!(e, HsmError::Refused(_)), "{e}");
    assert!(!keys[0].exists());
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
}

#[test]
fn reinit_needs_current_so_and_names_every_partition() {
    let (f, mut hsm) = fixture();
    let mut so = new_ped(vec![key(&f, "new-so")], 1, 1, None);
    let mut dom = new_ped(vec![key(&f, "new-dom")], 1, 1, None);
    // Without the current SO.
    let e = hsm
        .init(InitOptions {
            label: "again".into(),
            mode: AuthMode::Ped,
            so: NewSecret::Ped(&mut so),
            domain: NewSecret::Ped(&mut dom),
            current_so: None,
            confirm_destroy: vec![],
        })
        .unwrap_err();
    assert!(matches!(e, HsmError::Refused(_)), "{e}");
    // With the SO but without naming the partition.
    let mut cur = ped(vec![key(&f, "so1"), key(&f, "so3")], Some(&f.so_pin));
    let e = hsm
        .init(InitOptions {
            label: "again".into(),
            mode: AuthMode::Ped,
            so: NewSecret::Ped(&mut so),
            domain: NewSecret::Ped(&mut dom),
            current_so: Some(Credential::Ped(&mut cur)),
            confirm_destroy: vec![],
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("destroys partitions p (3 objects)"),
        "{e}"
    );
    assert!(
        !key(&f, "new-so").exists(),
        "a refused re-init must not write keys"
    );
    assert_eq!(hsm.info().unwrap().partitions.len(), 1, "state intact");
    // Named: it goes through; old keys no longer work, new ones do.
    let mut cur = ped(vec![key(&f, "so1"), key(&f, "so3")], Some(&f.so_pin));
    hsm.init(InitOptions {
        label: "again".into(),
        mode: AuthMode::Ped,
        so: NewSecret::Ped(&mut so),
        domain: NewSecret::Ped(&mut dom),
        current_so: Some(Credential::Ped(&mut cur)),
        confirm_destroy: vec!["p".into()],
    })
    .unwrap();
    assert!(hsm.info().unwrap().partitions.is_empty());
    assert!(hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(
                vec![key(&f, "so1"), key(&f, "so2")],
                Some(&f.so_pin)
            ))
        )
        .is_err());
    hsm.login(
        Role::HsmSo,
        None,
        Credential::Ped(&mut ped(vec![key(&f, "new-so")], None)),
    )
    .unwrap();
}

#[test]
fn change_pin_and_change_secret_touch_only_that_role() {
    let (f, mut hsm) = fixture();
    let so = hsm_so(&f, &mut hsm);
    // HSM SO: change the PED PIN (same keys).
    let new_pin = Pin::ped_pin("7777").unwrap();
    hsm.change_pin(
        &so,
        &mut ped(vec![key(&f, "so2"), key(&f, "so3")], Some(&f.so_pin)),
        Some(new_pin.clone()),
    )
    .unwrap();
    assert!(hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(
                vec![key(&f, "so1"), key(&f, "so2")],
                Some(&f.so_pin)
            ))
        )
        .is_err());
    hsm.login(
        Role::HsmSo,
        None,
        Credential::Ped(&mut ped(
            vec![key(&f, "so1"), key(&f, "so2")],
            Some(&new_pin),
        )),
    )
    .unwrap();
    // A wrong current PIN at change-pin is a failed login: counted and recorded. Two of them
    // and a wrong login make three: the HSM SO's third failure zeroizes.
    let so = hsm_so_with(&f, &mut hsm, &new_pin);
    let wrong = Pin::ped_pin("1111").unwrap();
    for left in [2, 1] {
        let e = hsm
            .change_pin(
                &so,
                &mut ped(vec![key(&f, "so1"), key(&f, "so2")], Some(&wrong)),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(e, HsmError::AuthFailed { remaining: Some(r), .. } if r == left),
            "{e}"
        );
    }
    // A right login clears the count (as any login does) before the CO's part below.
    hsm_so_with(&f, &mut hsm, &new_pin);
    // CO: new secret on a new key; keys stay usable.
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    hsm.change_secret(
        &co,
        NewSecret::Ped(&mut new_ped(vec![key(&f, "co-new")], 1, 1, None)),
    )
    .unwrap();
    assert!(hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "co")], None))
        )
        .is_err());
    let co = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "co-new")], None)),
        )
        .unwrap();
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    hsm.sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap();
    // Others untouched.
    login(&f, &mut hsm, Role::CryptoUser, "cu");
    login(&f, &mut hsm, Role::PartitionSo, "pso");
}

#[test]
fn reused_domain_and_so_keys_work_on_a_second_hsm() {
    let (f, mut hsm) = fixture();
    let dir2 = f.tmp.path().join("data2");
    let mut h2 = Hsm::open_or_create(&dir2).unwrap();
    // Reuse a red key of another type is refused, naming both types.
    let mut wrong = LocalPed::new(PedAnswers {
        keys: vec![key(&f, "dom")],
        reuse: true,
        ..Default::default()
    });
    let mut dom = new_ped(vec![key(&f, "h2dom")], 1, 1, None);
    let e = h2
        .init(InitOptions {
            label: "two".into(),
            mode: AuthMode::Ped,
            so: NewSecret::Ped(&mut wrong),
            domain: NewSecret::Ped(&mut dom),
            current_so: None,
            confirm_destroy: vec![],
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("red (cloning domain)")
            && e.to_string().contains("blue (security officer)"),
        "{e}"
    );
    // Reuse the HSM SO keys (2 of 3 + PIN) and the domain on the second HSM.
    let mut so = LocalPed::new(PedAnswers {
        keys: vec![key(&f, "so1"), key(&f, "so3")],
        reuse: true,
        pin: Some(f.so_pin.clone()),
        ..Default::default()
    });
    let mut dom = LocalPed::new(PedAnswers {
        keys: vec![key(&f, "dom")],
        reuse: true,
        ..Default::default()
    });
    h2.init(InitOptions {
        label: "two".into(),
        mode: AuthMode::Ped,
        so: NewSecret::Ped(&mut so),
        domain: NewSecret::Ped(&mut dom),
        current_so: None,
        confirm_destroy: vec![],
    })
    .unwrap();
    let so2 = h2
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(
                vec![key(&f, "so2"), key(&f, "so3")],
                Some(&f.so_pin),
            )),
        )
        .unwrap();
    h2.create_partition(&so2, "p2").unwrap();
    h2.init_partition(
        "p2",
        NewSecret::Ped(&mut new_ped(vec![key(&f, "p2so")], 1, 1, None)),
        DomainChoice::Imprint(NewSecret::Ped(&mut LocalPed::new(PedAnswers {
            keys: vec![key(&f, "dom")],
            reuse: true,
            ..Default::default()
        }))),
        None,
    )
    .unwrap();
    // The partition on HSM 2 is in the same domain as HSM 1's own domain.
    let i1 = hsm.info().unwrap();
    let i2 = h2.info().unwrap();
    assert_eq!(
        i2.partitions[0].domain.as_deref(),
        Some("hsm"),
        "reused red key = HSM 2's domain, which is HSM 1's"
    );
    assert_eq!(i1.partitions[0].domain.as_deref(), Some("hsm"));
}

#[test]
fn new_crypto_officer_needs_confirmation_and_destroys_objects() {
    let (f, mut hsm) = fixture();
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    let e = hsm
        .init_role(
            &pso,
            Role::CryptoOfficer,
            NewSecret::Ped(&mut new_ped(vec![key(&f, "co2")], 1, 1, None)),
            false,
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("destroys the partition's 3 object(s)"),
        "{e}"
    );
    assert!(!key(&f, "co2").exists());
    hsm.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut new_ped(vec![key(&f, "co2")], 1, 1, None)),
        true,
    )
    .unwrap();
    let co = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "co2")], None)),
        )
        .unwrap();
    assert!(hsm.list_objects(&co, None).unwrap().is_empty());
    assert!(
        hsm.login(
            Role::CryptoUser,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "cu")], None))
        )
        .is_err(),
        "old CU dropped"
    );
}

#[test]
fn password_authenticated_hsm_end_to_end() {
    let (_tmp, mut hsm) = password_hsm();
    let pw = |s: &str| Pin::password(s).unwrap();
    assert_eq!(hsm.info().unwrap().auth_mode, Some(AuthMode::Password));
    let e = hsm
        .login(
            Role::CryptoOfficer,
            Some("tok"),
            Credential::Secret(pw("user-pin-9999")),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            HsmError::AuthFailed {
                remaining: Some(9),
                ..
            }
        ),
        "{e}"
    );
    let co = hsm
        .login(
            Role::CryptoOfficer,
            Some("tok"),
            Credential::Secret(pw("user-pin-1234")),
        )
        .unwrap();
    hsm.generate_key(
        &co,
        KeySpec::Rsa2048,
        &KeyOptions {
            label: "r".into(),
            id: vec![],
            extractable: false,
        },
    )
    .unwrap();
    let r = hsm.find_key(&co, "r", ObjectClass::PrivateKey).unwrap();
    let sig = hsm
        .sign(&co, r.handle, Mechanism::RsaPss(Hash::Sha256), b"doc")
        .unwrap();
    let rp = hsm.find_key(&co, "r", ObjectClass::PublicKey).unwrap();
    assert!(hsm
        .verify(
            &co,
            rp.handle,
            Mechanism::RsaPss(Hash::Sha256),
            b"doc",
            &sig
        )
        .unwrap());
    // PED credentials are refused on a password HSM.
    assert!(hsm
        .login(Role::HsmSo, None, Credential::Ped(&mut ped(vec![], None)))
        .is_err());
}

#[test]
fn partition_delete_and_stable_ids() {
    let (f, mut hsm) = fixture();
    let so = hsm_so(&f, &mut hsm);
    let q = hsm.create_partition(&so, "q").unwrap();
    assert_eq!(q, 2);
    assert!(hsm.create_partition(&so, "q").is_err(), "duplicate label");
    assert_eq!(hsm.delete_partition(&so, "p").unwrap(), 3);
    let r = hsm.create_partition(&so, "r").unwrap();
    assert_eq!(r, 3, "ids are never reused");
    let info = hsm.info().unwrap();
    assert_eq!(
        info.partitions
            .iter()
            .map(|p| (p.id, p.label.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "q"), (3, "r")]
    );
}

#[test]
fn keys_generated_in_bulk_land_together_each_audited_or_not_at_all() {
    use ferrohsm_core::object::{KeyTemplate, ObjectFilter};
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let before = hsm.events().unwrap().len();
    let opts = |i: usize| KeyOptions {
        label: format!("card-{i:03}"),
        id: vec![i as u8],
        extractable: false,
    };
    let tpl = KeyTemplate {
        unique_label: true,
        ..Default::default()
    };
    let made = hsm
        .generate_keys_with(
            &co,
            KeySpec::Aes256,
            &(0..40).map(opts).collect::<Vec<_>>(),
            &tpl,
        )
        .unwrap();
    assert_eq!(made.len(), 40);
    let found = hsm
        .find_objects(
            Some(&co),
            "p",
            &ObjectFilter {
                label: Some("card-017".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].handle, made[17][0]);
    let generated = |h: &mut Hsm| {
        h.events()
            .unwrap()
            .iter()
            .filter(|e| e.event == "key-generate")
            .count()
    };
    assert_eq!(hsm.events().unwrap().len(), before + 40);
    let g = generated(&mut hsm);
    // A batch that repeats a label (or reuses one) is refused whole: no key, no record.
    let clash: Vec<KeyOptions> = [41, 42, 41].into_iter().map(opts).collect();
    let e = hsm
        .generate_keys_with(&co, KeySpec::Aes256, &clash, &tpl)
        .unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput(_)), "{e}");
    let e = hsm
        .generate_keys_with(&co, KeySpec::Aes256, &[opts(43), opts(5)], &tpl)
        .unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput(_)), "{e}");
    assert_eq!(generated(&mut hsm), g);
    assert!(hsm
        .find_objects(
            Some(&co),
            "p",
            &ObjectFilter {
                label: Some("card-043".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .is_empty());
    // Only the Crypto Officer creates keys, in bulk or not.
    let cu = login(&f, &mut hsm, Role::CryptoUser, "cu");
    let e = hsm
        .generate_keys_with(&cu, KeySpec::Aes256, &[opts(44)], &tpl)
        .unwrap_err();
    assert!(matches!(e, HsmError::Refused(_)), "{e}");
}

#[test]
fn session_objects_are_never_stored_and_go_with_their_owner() {
    use ferrohsm_core::object::{is_session_handle, KeyTemplate, ObjectFilter};
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let opts = KeyOptions {
        label: "ephemeral".into(),
        id: vec![],
        extractable: false,
    };
    let tpl = KeyTemplate {
        session_private: true,
        session_public: true,
        session_owner: Some(7),
        ..Default::default()
    };
    let hs = hsm
        .generate_key_with(&co, KeySpec::EcP256, &opts, &tpl)
        .unwrap();
    assert!(hs.iter().all(|h| is_session_handle(*h)), "{hs:?}");
    let sig = hsm
        .sign(&co, hs[0], Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap();
    assert!(hsm
        .verify(&co, hs[1], Mechanism::Ecdsa(Some(Hash::Sha256)), b"m", &sig)
        .unwrap());
    let by_label = ObjectFilter {
        label: Some("ephemeral".into()),
        ..Default::default()
    };
    assert_eq!(
        hsm.find_objects(Some(&co), "p", &by_label).unwrap().len(),
        2
    );
    // Another handle on the store (as another process would be) never sees them.
    let mut other = Hsm::open(&f.data).unwrap();
    let co2 = login(&f, &mut other, Role::CryptoOfficer, "co");
    assert!(other
        .find_objects(Some(&co2), "p", &by_label)
        .unwrap()
        .is_empty());
    // Their creation is on the record all the same.
    assert!(hsm
        .events()
        .unwrap()
        .iter()
        .any(|e| e.event == "key-generate"
            && e.object.as_deref() == Some("ephemeral (ec-p256, session object)")));
    // Closing the owner (session 7) destroys them; another owner's would stay.
    co.drop_session_objects(8);
    assert_eq!(
        hsm.find_objects(Some(&co), "p", &by_label).unwrap().len(),
        2
    );
    co.drop_session_objects(7);
    assert!(hsm
        .find_objects(Some(&co), "p", &by_label)
        .unwrap()
        .is_empty());
    let e = hsm
        .sign(&co, hs[0], Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap_err();
    assert!(matches!(e, HsmError::NotFound(_)), "{e}");
}

/// Factory reset: the HSM SO, or local access (`None`); never another role. The audit log
/// and the Auditor survive it unless the Auditor logs in to erase them.
#[test]
fn factory_reset_keeps_the_audit_log_unless_the_auditor_erases_it() {
    let pw = |s: &str| Pin::password(s).unwrap();
    let (_tmp, mut hsm) = password_hsm();
    hsm.audit_init(NewSecret::Password(pw("auditor-pass-1")), None)
        .unwrap();
    let auditor = |hsm: &mut Hsm| {
        hsm.login(
            Role::Auditor,
            None,
            Credential::Secret(pw("auditor-pass-1")),
        )
    };
    let co = hsm
        .login(
            Role::CryptoOfficer,
            Some("tok"),
            Credential::Secret(pw("user-pin-1234")),
        )
        .unwrap();
    assert!(matches!(
        hsm.factory_reset(Some(&co), None),
        Err(HsmError::Refused(_))
    ));
    let a = auditor(&mut hsm).unwrap();
    // The Auditor alone cannot reset: only erase the log as part of someone's reset.
    assert!(matches!(
        hsm.factory_reset(Some(&a), None),
        Err(HsmError::Refused(_))
    ));
    assert_eq!(hsm.info().unwrap().state, "initialised");
    let so = hsm
        .login(Role::HsmSo, None, Credential::Secret(pw("hsm-so-password")))
        .unwrap();
    // The SO cannot pass for the Auditor.
    assert!(matches!(
        hsm.factory_reset(Some(&so), Some(&so)),
        Err(HsmError::Refused(_))
    ));
    hsm.factory_reset(Some(&so), None).unwrap();
    assert_eq!(hsm.info().unwrap().state, "uninitialised");
    let a = auditor(&mut hsm).unwrap();
    let records = hsm.audit_records(&a).unwrap();
    assert!(
        records.iter().any(|r| r.event == "hsm-init"),
        "history kept"
    );
    let reset = records
        .iter()
        .rfind(|r| r.event == "factory-reset")
        .unwrap();
    assert!(
        reset.outcome.contains("audit log and Auditor kept"),
        "{}",
        reset.outcome
    );
    hsm.audit_verify(&a).unwrap();

    // Local access (no SO on an uninitialised HSM), with the Auditor: the log goes too.
    hsm.factory_reset(None, Some(&a)).unwrap();
    assert!(auditor(&mut hsm).is_err(), "the Auditor was erased");
    assert!(hsm.info().unwrap().auditor.is_none());
}

/// `C_InitToken` (Hsm::init_token) creates partitions only while the HSM SO allows it; a
/// refusal creates nothing and is audited.
#[test]
fn init_token_needs_the_hsm_policy_and_a_refusal_is_audited() {
    let pw = |s: &str| Pin::password(s).unwrap();
    let (_tmp, mut hsm) = password_hsm();
    let before = hsm.info().unwrap().partitions.len();
    let e = hsm.init_token("rogue", pw("so-pin-rogue")).unwrap_err();
    assert!(matches!(e, HsmError::Refused(_)), "{e}");
    assert!(e.to_string().contains("init-token"), "{e}");
    assert_eq!(hsm.info().unwrap().partitions.len(), before);
    assert!(hsm
        .events()
        .unwrap()
        .iter()
        .any(|e| e.event == "partition-create" && e.outcome.starts_with("failure")));
    let so = hsm
        .login(Role::HsmSo, None, Credential::Secret(pw("hsm-so-password")))
        .unwrap();
    // A partition's SO cannot grant it; only the HSM policy does.
    let pso = hsm
        .login(
            Role::PartitionSo,
            Some("tok"),
            Credential::Secret(pw("partition-so-pw")),
        )
        .unwrap();
    assert!(hsm.set_partition_policy(&pso, "init-token", "on").is_err());
    hsm.set_hsm_policy(&so, "init-token", "on").unwrap();
    hsm.init_token("app", pw("so-pin-app")).unwrap();
    assert_eq!(hsm.info().unwrap().partitions.len(), before + 1);
}

fn hsm_so_with(f: &Fixture, hsm: &mut Hsm, pin: &Pin) -> ferrohsm_core::Session {
    hsm.login(
        Role::HsmSo,
        None,
        Credential::Ped(&mut ped(vec![key(f, "so1"), key(f, "so2")], Some(pin))),
    )
    .unwrap()
}
