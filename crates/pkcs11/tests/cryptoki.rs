//! The module driven through the `cryptoki` crate (a client nobody here wrote), loading the
//! built `libferrohsm_pkcs11.so` as any application would.

use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use ferrohsm_core::hsm::InitOptions;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, Hsm, NewSecret};

/// The module is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

mod harness;
use harness::fixture::{err, fixture, fixture_with, pin, token, Fixture};
use harness::module_path;

// Every test here but the cross-process one runs embedded and against a real server.
both_ways!(
    token_from_nothing_and_stable_slot_ids,
    sign_verify_every_mechanism_and_raw_ecdsa_is_r_s,
    encrypt_decrypt_aes_gcm_and_rsa_oaep,
    attributes_find_and_privacy,
    wrong_pins_count_and_lock_and_errors_are_the_standard_ones,
    ped_authenticated_partition_challenge_and_ped_key_logins,
    symmetric_mechanisms_block_modes_macs_and_3des,
    wrap_and_unwrap_honour_extractable_and_round_trip,
    certificates_and_data_objects_create_find_read_relabel_and_destroy,
    ecdh_derive_agrees_both_ways_and_honours_cka_derive,
    session_objects_live_in_memory_and_die_with_their_session,
    public_keys_enter_in_clear_and_verify,
    concurrent_logins_and_logouts_on_two_tokens_never_deadlock,
    hmac_contexts_follow_the_key_and_hash_and_end_with_the_login,
    c_inittoken_needs_the_hsm_sos_policy,
    a_key_made_without_cka_token_is_a_session_object,
    c_copyobject_copies_keys_more_restricted_never_less,
);

fn token_from_nothing_and_stable_slot_ids() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    assert!(f.p11().get_token_info(slot).unwrap().user_pin_initialized());
    // A new spare token appears; the initialised one keeps its id.
    let slots = f.p11().get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 2);
    assert!(slots.contains(&slot));
    drop(s);
    // Reload the module: same ids.
    let mut f = f;
    f.p11.take().unwrap().finalize().unwrap();
    let p11 = Pkcs11::new(module_path()).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    f.p11 = Some(p11);
    let p11 = f.p11();
    assert_eq!(p11.get_slots_with_token().unwrap(), slots);
    assert_eq!(p11.get_token_info(slot).unwrap().label(), "tok");
    // C_SetPIN, then the old PIN fails and the new one works.
    let s = p11.open_rw_session(slot).unwrap();
    s.set_pin(&pin("user-pin-1"), &pin("user-pin-2")).unwrap();
    assert_eq!(
        err(s
            .login(UserType::User, Some(&pin("user-pin-1")))
            .unwrap_err()),
        RvError::PinIncorrect
    );
    s.login(UserType::User, Some(&pin("user-pin-2"))).unwrap();
    assert_eq!(
        err(s
            .login(UserType::User, Some(&pin("user-pin-2")))
            .unwrap_err()),
        RvError::UserAlreadyLoggedIn
    );
}

fn sign_verify_every_mechanism_and_raw_ecdsa_is_r_s() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let (rsa_pub, rsa_priv) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Verify(true),
                Attribute::Label(b"rsa".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Label(b"rsa".to_vec()),
                Attribute::Id(vec![1]),
            ],
        )
        .unwrap();
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (ec_pub, ec_priv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(p256.clone()),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Id(vec![2]),
            ],
        )
        .unwrap();
    let (ed_pub, ed_priv) = s
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
            ],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    let p521 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
    let (p521_pub, p521_priv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(p521.clone())],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    match &s
        .get_attributes(p521_pub, &[AttributeType::EcPoint])
        .unwrap()[0]
    {
        // DER OCTET STRING, long-form length, of the 133-byte uncompressed point.
        Attribute::EcPoint(v) => assert_eq!(&v[..4], &[0x04, 0x81, 0x85, 0x04]),
        other => panic!("{other:?}"),
    }
    let data = b"the quick brown fox";
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };
    let pss1 = PkcsPssParams {
        hash_alg: MechanismType::SHA1,
        mgf: PkcsMgfType::MGF1_SHA1,
        s_len: 20.into(),
    };
    let pss224 = PkcsPssParams {
        hash_alg: MechanismType::SHA224,
        mgf: PkcsMgfType::MGF1_SHA224,
        s_len: 28.into(),
    };
    let cases: Vec<(Mechanism, _, _)> = vec![
        (Mechanism::Sha1RsaPkcsPss(pss1), rsa_priv, rsa_pub),
        (Mechanism::Sha1RsaPkcs, rsa_priv, rsa_pub),
        (Mechanism::Sha224RsaPkcs, rsa_priv, rsa_pub),
        (Mechanism::Sha256RsaPkcs, rsa_priv, rsa_pub),
        (Mechanism::Sha384RsaPkcs, rsa_priv, rsa_pub),
        (Mechanism::Sha256RsaPkcsPss(pss), rsa_priv, rsa_pub),
        (Mechanism::EcdsaSha256, ec_priv, ec_pub),
        (Mechanism::EcdsaSha384, ec_priv, ec_pub),
        (Mechanism::EcdsaSha512, p521_priv, p521_pub),
        (
            Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
            )),
            ed_priv,
            ed_pub,
        ),
    ];
    for (m, sk, pk) in &cases {
        let sig = s.sign(m, *sk, data).unwrap();
        s.verify(m, *pk, data, &sig).unwrap();
        assert_eq!(
            err(s.verify(m, *pk, b"the quick brown fix", &sig).unwrap_err()),
            RvError::SignatureInvalid,
            "{m:?}"
        );
    }
    // Raw ECDSA over a SHA-256 digest: 64 bytes r||s, which verifies as ECDSA_SHA256 of the data.
    let digest = s.digest(&Mechanism::Sha256, data).unwrap();
    let sig = s.sign(&Mechanism::Ecdsa, ec_priv, &digest).unwrap();
    assert_eq!(sig.len(), 64);
    s.verify(&Mechanism::EcdsaSha256, ec_pub, data, &sig)
        .unwrap();
    // And outside the module, with the public key it exports.
    let spki = match &s
        .get_attributes(ec_pub, &[AttributeType::PublicKeyInfo])
        .unwrap()[0]
    {
        Attribute::PublicKeyInfo(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    assert!(ferrohsm_core::mechanism::verify(
        ferrohsm_core::mechanism::KeySpec::EcP256,
        &spki,
        ferrohsm_core::mechanism::Mechanism::Ecdsa(Some(ferrohsm_core::mechanism::Hash::Sha256)),
        data,
        &sig
    )
    .unwrap());
    // CKM_RSA_PKCS over a DigestInfo equals CKM_SHA256_RSA_PKCS.
    let mut di = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    di.extend_from_slice(&digest);
    assert_eq!(
        s.sign(&Mechanism::RsaPkcs, rsa_priv, &di).unwrap(),
        s.sign(&Mechanism::Sha256RsaPkcs, rsa_priv, data).unwrap()
    );
    // CKM_RSA_PKCS over bytes that are not a DigestInfo (type-1 padding of the data itself):
    // verifies, and a changed message does not.
    let raw = s
        .sign(&Mechanism::RsaPkcs, rsa_priv, b"legacy TLS handshake hash")
        .unwrap();
    assert_eq!(raw.len(), 256);
    s.verify(
        &Mechanism::RsaPkcs,
        rsa_pub,
        b"legacy TLS handshake hash",
        &raw,
    )
    .unwrap();
    assert_eq!(
        err(s
            .verify(
                &Mechanism::RsaPkcs,
                rsa_pub,
                b"legacy TLS handshake hasH",
                &raw
            )
            .unwrap_err()),
        RvError::SignatureInvalid
    );
    assert_eq!(
        err(s
            .sign(&Mechanism::RsaPkcs, rsa_priv, &[7u8; 246])
            .unwrap_err()),
        RvError::DataLenRange
    );
    // CKM_RSA_PKCS_PSS over the caller's digest verifies as PSS-with-hashing of the data.
    let sha256 = s.digest(&Mechanism::Sha256, data).unwrap();
    let raw_pss = s
        .sign(&Mechanism::RsaPkcsPss(pss), rsa_priv, &sha256)
        .unwrap();
    s.verify(&Mechanism::Sha256RsaPkcsPss(pss), rsa_pub, data, &raw_pss)
        .unwrap();
    assert!(s
        .sign(&Mechanism::RsaPkcsPss(pss), rsa_priv, &sha256[..31])
        .is_err());
    // And with SHA-224 (cryptoki names no CKM_SHA224_RSA_PKCS_PSS; the raw form covers it).
    let sha224 = s.digest(&Mechanism::Sha224, data).unwrap();
    let sig224 = s
        .sign(&Mechanism::RsaPkcsPss(pss224), rsa_priv, &sha224)
        .unwrap();
    s.verify(&Mechanism::RsaPkcsPss(pss224), rsa_pub, &sha224, &sig224)
        .unwrap();
    assert_eq!(
        err(s
            .verify(&Mechanism::RsaPkcsPss(pss224), rsa_pub, &sha224, &raw_pss)
            .unwrap_err()),
        RvError::SignatureInvalid
    );
    // PSS parameters the engine does not do are refused, not silently changed.
    let bad = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 20.into(),
    };
    assert_eq!(
        err(s
            .sign(&Mechanism::Sha256RsaPkcsPss(bad), rsa_priv, data)
            .unwrap_err()),
        RvError::MechanismParamInvalid
    );
    // A key of the wrong type for the mechanism.
    assert_eq!(
        err(s.sign(&Mechanism::EcdsaSha256, rsa_priv, data).unwrap_err()),
        RvError::KeyTypeInconsistent
    );
}

fn encrypt_decrypt_aes_gcm_and_rsa_oaep() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"aes".to_vec()),
            ],
        )
        .unwrap();
    let mut iv = [7u8; 12];
    let aad = b"header";
    let ct = s
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            aes,
            b"secret message",
        )
        .unwrap();
    assert_eq!(
        ct.len(),
        14 + 16,
        "ciphertext then tag, with the caller's IV"
    );
    let pt = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            aes,
            &ct,
        )
        .unwrap();
    assert_eq!(pt, b"secret message");
    // Outside the module: the same key cannot be read, but a tampered ciphertext is refused.
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert_eq!(
        err(s
            .decrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
                aes,
                &bad
            )
            .unwrap_err()),
        RvError::EncryptedDataInvalid
    );
    // The module does not pick its own nonce: a 96-bit tag is refused, not changed.
    assert_eq!(
        err(s
            .encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 96.into()).unwrap()),
                aes,
                b"x"
            )
            .unwrap_err()),
        RvError::MechanismParamInvalid
    );

    let (rsa_pub, rsa_priv) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::ModulusBits(2048.into()),
                Attribute::Encrypt(true),
            ],
            &[Attribute::Token(true), Attribute::Decrypt(true)],
        )
        .unwrap();
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    );
    let ct = s
        .encrypt(&Mechanism::RsaPkcsOaep(oaep), rsa_pub, b"wrapped key")
        .unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcsOaep(oaep), rsa_priv, &ct)
            .unwrap(),
        b"wrapped key"
    );
}

fn attributes_find_and_privacy() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Label(b"k1".to_vec()),
                Attribute::Id(vec![9]),
            ],
        )
        .unwrap();
    let (pk, sk) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::ModulusBits(2048.into()),
                Attribute::Label(b"signer".to_vec()),
            ],
            &[Attribute::Token(true), Attribute::Label(b"signer".to_vec())],
        )
        .unwrap();
    // Sensitive and unknown attributes, per the standard.
    let info = s
        .get_attribute_info(
            aes,
            &[
                AttributeType::Value,
                AttributeType::ValueLen,
                AttributeType::Modulus,
            ],
        )
        .unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive), "{:?}", info[0]);
    assert!(
        matches!(info[1], AttributeInfo::Available(n) if n == std::mem::size_of::<cryptoki_sys::CK_ULONG>()),
        "{:?}",
        info[1]
    );
    assert!(
        matches!(info[2], AttributeInfo::TypeInvalid),
        "{:?}",
        info[2]
    );
    let info = s
        .get_attribute_info(
            sk,
            &[AttributeType::PrivateExponent, AttributeType::Modulus],
        )
        .unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive), "{:?}", info[0]);
    assert!(
        matches!(info[1], AttributeInfo::Available(256)),
        "{:?}",
        info[1]
    );
    let a = s
        .get_attributes(
            aes,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Local,
                AttributeType::KeyType,
            ],
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::Local(true),
            Attribute::KeyType(KeyType::AES)
        ]
    );
    // Find by label, id and class.
    assert_eq!(
        s.find_objects(&[Attribute::Label(b"signer".to_vec())])
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.find_objects(&[
            Attribute::Label(b"signer".to_vec()),
            Attribute::Class(ObjectClass::PRIVATE_KEY)
        ])
        .unwrap(),
        vec![sk]
    );
    assert_eq!(
        s.find_objects(&[Attribute::Id(vec![9])]).unwrap(),
        vec![aes]
    );
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap()
        .is_empty());
    assert_eq!(s.find_objects(&[]).unwrap().len(), 3);
    // Before login, only public objects are visible.
    let public = f.p11().open_ro_session(slot).unwrap();
    s.logout().unwrap();
    assert_eq!(public.find_objects(&[]).unwrap(), vec![pk]);
    assert_eq!(
        err(public
            .get_attributes(aes, &[AttributeType::Label])
            .unwrap_err()),
        RvError::ObjectHandleInvalid
    );
    assert_eq!(
        err(public
            .sign(&Mechanism::Sha256RsaPkcs, sk, b"x")
            .unwrap_err()),
        RvError::UserNotLoggedIn
    );
    // Destroy needs a logged-in, read-write session.
    s.login(UserType::User, Some(&pin("user-pin-1"))).unwrap();
    assert_eq!(
        err(public.destroy_object(aes).unwrap_err()),
        RvError::SessionReadOnly
    );
    s.destroy_object(aes).unwrap();
    assert!(s
        .find_objects(&[Attribute::Id(vec![9])])
        .unwrap()
        .is_empty());
}

fn wrong_pins_count_and_lock_and_errors_are_the_standard_ones() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    s.logout().unwrap();
    // A wrong PIN does not make the next right one fail.
    assert_eq!(
        err(s
            .login(UserType::User, Some(&pin("wrong-pin")))
            .unwrap_err()),
        RvError::PinIncorrect
    );
    s.login(UserType::User, Some(&pin("user-pin-1"))).unwrap();
    s.logout().unwrap();
    for _ in 0..9 {
        assert_eq!(
            err(s
                .login(UserType::User, Some(&pin("wrong-pin")))
                .unwrap_err()),
            RvError::PinIncorrect
        );
    }
    assert_eq!(
        err(s
            .login(UserType::User, Some(&pin("wrong-pin")))
            .unwrap_err()),
        RvError::PinLocked
    );
    assert_eq!(
        err(s
            .login(UserType::User, Some(&pin("user-pin-1")))
            .unwrap_err()),
        RvError::PinLocked
    );
    assert!(f.p11().get_token_info(slot).unwrap().user_pin_locked());
    // Bad handles and mechanisms.
    assert_eq!(
        err(f
            .p11()
            .get_token_info(Slot::try_from(999u64).unwrap())
            .unwrap_err()),
        RvError::SlotIdInvalid
    );
    let mech = f.p11().get_mechanism_list(slot).unwrap();
    assert!(
        mech.contains(&MechanismType::AES_GCM)
            && mech.contains(&MechanismType::ECDSA)
            && mech.contains(&MechanismType::EDDSA)
    );
    let mi = f
        .p11()
        .get_mechanism_info(slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN)
        .unwrap();
    assert_eq!(mi.min_key_size(), 2048);
    // Generic secrets are sized in bits, as the standard says (Java reads them so).
    let mi = f
        .p11()
        .get_mechanism_info(slot, MechanismType::GENERIC_SECRET_KEY_GEN)
        .unwrap();
    assert_eq!((mi.min_key_size(), mi.max_key_size()), (128, 512));
    assert!(s.generate_random_vec(32).unwrap() != vec![0u8; 32]);
}

fn ped_authenticated_partition_challenge_and_ped_key_logins() {
    use ferrohsm_core::ped::{LocalPed, PedAnswers};
    use ferrohsm_core::{Credential, DomainChoice, Role};
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let peds = tmp.path().join("peds");
    let mut hsm = Hsm::open_or_create(&data).unwrap();
    let serial = hsm.serial().to_string();
    let key = |name: &str| peds.join(format!("{serial}-{name}-1.pedkey"));
    let ped = |k: std::path::PathBuf| {
        LocalPed::new(PedAnswers {
            keys: vec![k],
            ..Default::default()
        })
    };
    hsm.init(InitOptions {
        label: "ped".into(),
        mode: AuthMode::Ped,
        so: NewSecret::Ped(&mut ped(key("hsm-so"))),
        domain: NewSecret::Ped(&mut ped(key("domain"))),
        current_so: None,
        confirm_destroy: vec![],
    })
    .unwrap();
    let so = hsm
        .login(Role::HsmSo, None, Credential::Ped(&mut ped(key("hsm-so"))))
        .unwrap();
    hsm.create_partition(&so, "app").unwrap();
    hsm.init_partition(
        "app",
        NewSecret::Ped(&mut ped(key("app-so"))),
        DomainChoice::Hsm(Credential::Ped(&mut ped(key("domain")))),
        None,
    )
    .unwrap();
    let pso = hsm
        .login(
            Role::PartitionSo,
            Some("app"),
            Credential::Ped(&mut ped(key("app-so"))),
        )
        .unwrap();
    hsm.set_partition_policy(&pso, "activation", "on").unwrap();
    hsm.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut ped(key("app-co"))),
        false,
    )
    .unwrap();
    let co = hsm
        .login(
            Role::CryptoOfficer,
            Some("app"),
            Credential::Ped(&mut ped(key("app-co"))),
        )
        .unwrap();
    hsm.activate(&co, Pin::password("app-challenge").unwrap())
        .unwrap();
    drop(hsm);

    std::env::set_var("FERROHSM_PED_DIR", &peds);
    let server = harness::reach(&data);
    let p11 = Pkcs11::new(module_path()).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let f = Fixture {
        _server: server,
        _tmp: tmp,
        p11: Some(p11),
    };
    let slots = f.p11().get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1, "a PED HSM shows no spare token");
    let info = f.p11().get_token_info(slots[0]).unwrap();
    assert!(info.protected_authentication_path());
    assert!(info.user_pin_initialized());
    // No C_InitToken on a PED-authenticated HSM: partitions are made with PED keys.
    assert_eq!(
        err(f
            .p11()
            .init_token(slots[0], &pin("whatever"), "x")
            .unwrap_err()),
        RvError::FunctionNotSupported
    );
    let s = f.p11().open_rw_session(slots[0]).unwrap();
    // The challenge secret as PIN.
    assert_eq!(
        err(s
            .login(UserType::User, Some(&pin("not-the-challenge")))
            .unwrap_err()),
        RvError::PinIncorrect
    );
    s.login(UserType::User, Some(&pin("app-challenge")))
        .unwrap();
    let (_, k) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    s.sign(&Mechanism::EcdsaSha256, k, b"m").unwrap();
    s.logout().unwrap();
    // A NULL PIN: the PED, which reads the role's key file from the PED directory.
    s.login(UserType::User, None).unwrap();
    s.sign(&Mechanism::EcdsaSha256, k, b"m").unwrap();
    s.logout().unwrap();
    s.login(UserType::So, None).unwrap();
    // The SO never uses partition keys.
    assert_eq!(
        err(s.sign(&Mechanism::EcdsaSha256, k, b"m").unwrap_err()),
        RvError::UserNotLoggedIn
    );
    std::env::remove_var("FERROHSM_PED_DIR");
}

fn symmetric_mechanisms_block_modes_macs_and_3des() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .unwrap();
    let iv = [0x42u8; 16];
    let p: Vec<u8> = (0u8..48).collect();
    // CBC semantics, checked with the token's own ECB: C1 = E(P1 xor IV), C2 = E(P2 xor C1).
    let cbc = s.encrypt(&Mechanism::AesCbc(iv), aes, &p).unwrap();
    // Multi-part gives what single-part gives, whatever the parts; and back again.
    s.encrypt_init(&Mechanism::AesCbc(iv), aes).unwrap();
    let mut parts = Vec::new();
    for chunk in [&p[..5], &p[5..16], &p[16..]] {
        parts.extend(s.encrypt_update(chunk).unwrap());
    }
    parts.extend(s.encrypt_final().unwrap());
    assert_eq!(parts, cbc);
    s.decrypt_init(&Mechanism::AesCbc(iv), aes).unwrap();
    let mut back = s.decrypt_update(&cbc[..20]).unwrap();
    back.extend(s.decrypt_update(&cbc[20..]).unwrap());
    back.extend(s.decrypt_final().unwrap());
    assert_eq!(back, p);
    // A multi-part operation in progress blocks another until its final part.
    s.encrypt_init(&Mechanism::AesCbc(iv), aes).unwrap();
    s.encrypt_update(&p[..16]).unwrap();
    assert_eq!(
        err(s.encrypt(&Mechanism::AesCbc(iv), aes, &p).unwrap_err()),
        RvError::OperationActive
    );
    assert_eq!(s.encrypt_final().unwrap(), cbc[..16]);
    let x1: Vec<u8> = p[..16].iter().zip(iv).map(|(a, b)| a ^ b).collect();
    assert_eq!(s.encrypt(&Mechanism::AesEcb, aes, &x1).unwrap(), cbc[..16]);
    let x2: Vec<u8> = p[16..32]
        .iter()
        .zip(&cbc[..16])
        .map(|(a, b)| a ^ b)
        .collect();
    assert_eq!(
        s.encrypt(&Mechanism::AesEcb, aes, &x2).unwrap(),
        cbc[16..32]
    );
    assert_eq!(s.decrypt(&Mechanism::AesCbc(iv), aes, &cbc).unwrap(), p);
    assert_eq!(
        err(s
            .encrypt(&Mechanism::AesCbc(iv), aes, &p[..20])
            .unwrap_err()),
        RvError::DataLenRange
    );
    // CBC with padding: any length.
    for len in [0usize, 5, 16, 31] {
        let ct = s
            .encrypt(&Mechanism::AesCbcPad(iv), aes, &p[..len])
            .unwrap();
        assert_eq!(ct.len(), (len / 16 + 1) * 16);
        assert_eq!(
            s.decrypt(&Mechanism::AesCbcPad(iv), aes, &ct).unwrap(),
            &p[..len]
        );
    }
    // AES-CMAC: verifies, and a changed byte does not.
    let tag = s.sign(&Mechanism::AesCMac, aes, b"message").unwrap();
    assert_eq!(tag.len(), 16);
    s.verify(&Mechanism::AesCMac, aes, b"message", &tag)
        .unwrap();
    assert_eq!(
        err(s
            .verify(&Mechanism::AesCMac, aes, b"messagE", &tag)
            .unwrap_err()),
        RvError::SignatureInvalid
    );
    // HMAC with a generic secret, which is sensitive like any secret key.
    let hk = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[Attribute::Token(true), Attribute::ValueLen(32.into())],
        )
        .unwrap();
    // Every HMAC the module offers, at its own length.
    for (m, n) in [
        (Mechanism::Sha1Hmac, 20),
        (Mechanism::Sha224Hmac, 28),
        (Mechanism::Sha384Hmac, 48),
        (Mechanism::Sha512Hmac, 64),
    ] {
        let t = s.sign(&m, hk, b"data").unwrap();
        assert_eq!(t.len(), n, "{m:?}");
        s.verify(&m, hk, b"data", &t).unwrap();
    }
    let mac = s.sign(&Mechanism::Sha256Hmac, hk, b"data").unwrap();
    assert_eq!(mac.len(), 32);
    s.verify(&Mechanism::Sha256Hmac, hk, b"data", &mac).unwrap();
    assert_eq!(
        err(s
            .verify(&Mechanism::Sha256Hmac, hk, b"datA", &mac)
            .unwrap_err()),
        RvError::SignatureInvalid
    );
    assert!(matches!(
        s.get_attribute_info(hk, &[AttributeType::Value]).unwrap()[0],
        AttributeInfo::Sensitive
    ));
    assert_eq!(
        s.get_attributes(hk, &[AttributeType::KeyType]).unwrap(),
        vec![Attribute::KeyType(KeyType::GENERIC_SECRET)]
    );
    // HMAC needs a generic secret; CMAC an AES key.
    assert_eq!(
        err(s.sign(&Mechanism::Sha256Hmac, aes, b"x").unwrap_err()),
        RvError::KeyTypeInconsistent
    );
    assert_eq!(
        err(s.sign(&Mechanism::AesCMac, hk, b"x").unwrap_err()),
        RvError::KeyTypeInconsistent
    );
    // A generic secret encrypts nothing unless asked to.
    assert_eq!(
        err(s.encrypt(&Mechanism::AesEcb, hk, &[0; 16]).unwrap_err()),
        RvError::KeyFunctionNotPermitted
    );
    // 3DES.
    let des = s
        .generate_key(&Mechanism::Des3KeyGen, &[Attribute::Token(true)])
        .unwrap();
    let ct = s
        .encrypt(&Mechanism::Des3Cbc([7; 8]), des, &p[..16])
        .unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::Des3Cbc([7; 8]), des, &ct).unwrap(),
        &p[..16]
    );
    let e = s.encrypt(&Mechanism::Des3Ecb, des, &p[..8]).unwrap();
    assert_eq!(s.decrypt(&Mechanism::Des3Ecb, des, &e).unwrap(), &p[..8]);
}

fn wrap_and_unwrap_honour_extractable_and_round_trip() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let kek = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                // A key-encryption key does nothing else (key separation).
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .unwrap();
    let target = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let stuck = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(true), Attribute::ValueLen(16.into())],
        )
        .unwrap();
    // Not extractable: never leaves.
    assert_eq!(
        err(s
            .wrap_key(&Mechanism::AesKeyWrapPad, kek, stuck)
            .unwrap_err()),
        RvError::KeyUnextractable
    );
    // A key without CKA_WRAP cannot wrap, even an extractable key.
    assert_eq!(
        err(s
            .wrap_key(&Mechanism::AesKeyWrapPad, stuck, target)
            .unwrap_err()),
        RvError::KeyFunctionNotPermitted
    );
    for m in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
        let wrapped = s.wrap_key(&m, kek, target).unwrap();
        // KW: 16 + 8; KW-PAD: a whole padding block more.
        assert_eq!(
            wrapped.len(),
            if matches!(m, Mechanism::AesKeyWrap) {
                24
            } else {
                32
            }
        );
        let back = s
            .unwrap_key(
                &m,
                kek,
                &wrapped,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(true),
                    Attribute::Encrypt(true),
                ],
            )
            .unwrap();
        // Same key: the same ECB block out.
        assert_eq!(
            s.encrypt(&Mechanism::AesEcb, back, &[9; 16]).unwrap(),
            s.encrypt(&Mechanism::AesEcb, target, &[9; 16]).unwrap()
        );
        let a = s
            .get_attributes(
                back,
                &[
                    AttributeType::Local,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .unwrap();
        assert_eq!(
            a,
            vec![
                Attribute::Local(false),
                Attribute::AlwaysSensitive(false),
                Attribute::NeverExtractable(false)
            ]
        );
        let mut bad = wrapped.clone();
        bad[0] ^= 1;
        assert_eq!(
            err(s
                .unwrap_key(
                    &m,
                    kek,
                    &bad,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(true)
                    ]
                )
                .unwrap_err()),
            RvError::WrappedKeyInvalid
        );
    }
    // RSA-OAEP wraps a secret key; the RSA private key unwraps it. RSA-3072 (128-bit
    // strength) for an AES-128 key; its private half unwraps and does not decrypt.
    let (rpub, rpriv) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::ModulusBits(3072.into()),
                Attribute::Wrap(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Unwrap(true),
                Attribute::Decrypt(false),
            ],
        )
        .unwrap();
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    );
    let w = s
        .wrap_key(&Mechanism::RsaPkcsOaep(oaep), rpub, target)
        .unwrap();
    assert_eq!(w.len(), 384);
    let back = s
        .unwrap_key(
            &Mechanism::RsaPkcsOaep(oaep),
            rpriv,
            &w,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    assert_eq!(
        s.encrypt(&Mechanism::AesEcb, back, &[1; 16]).unwrap(),
        s.encrypt(&Mechanism::AesEcb, target, &[1; 16]).unwrap()
    );
    // An extractable EC private key travels under KWP and still signs for its public key.
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (ecpub, ecpriv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(p256)],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Extractable(true),
            ],
        )
        .unwrap();
    let w = s.wrap_key(&Mechanism::AesKeyWrapPad, kek, ecpriv).unwrap();
    let back = s
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &w,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(true),
                Attribute::Sign(true),
            ],
        )
        .unwrap();
    let sig = s.sign(&Mechanism::EcdsaSha256, back, b"moved").unwrap();
    s.verify(&Mechanism::EcdsaSha256, ecpub, b"moved", &sig)
        .unwrap();
    // CKA_TRUSTED is the security officer's, and they never touch keys.
    assert_eq!(
        err(s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::ValueLen(16.into()),
                    Attribute::Trusted(true)
                ]
            )
            .unwrap_err()),
        RvError::AttributeReadOnly
    );
}

fn certificates_and_data_objects_create_find_read_relabel_and_destroy() {
    use cryptoki::object::CertificateType;
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    // Any DER will do for the token (it stores and serves, it does not judge).
    let cert_der = vec![0x30, 0x03, 0x02, 0x01, 0x07];
    let cert = s
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(b"signer cert".to_vec()),
            Attribute::Id(vec![0xc1]),
            Attribute::Subject(vec![0x30, 0x00]),
            Attribute::Value(cert_der.clone()),
        ])
        .unwrap();
    let data = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"config".to_vec()),
            Attribute::Application(b"issuer-app".to_vec()),
            Attribute::Value(b"not a secret".to_vec()),
        ])
        .unwrap();
    let found = s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap();
    assert_eq!(found, vec![cert]);
    let v = s
        .get_attributes(
            cert,
            &[
                AttributeType::Value,
                AttributeType::CertificateType,
                AttributeType::Private,
            ],
        )
        .unwrap();
    assert!(v.contains(&Attribute::Value(cert_der.clone())));
    assert!(v.contains(&Attribute::CertificateType(CertificateType::X_509)));
    assert!(v.contains(&Attribute::Private(false)));
    // Key attributes do not exist on a certificate.
    let info = s
        .get_attribute_info(cert, &[AttributeType::KeyType, AttributeType::Sign])
        .unwrap();
    assert!(info.iter().all(|i| matches!(i, AttributeInfo::TypeInvalid)));
    // Relabel: found under the new label only.
    s.update_attributes(cert, &[Attribute::Label(b"renamed".to_vec())])
        .unwrap();
    assert_eq!(
        s.find_objects(&[Attribute::Label(b"renamed".to_vec())])
            .unwrap(),
        vec![cert]
    );
    assert!(s
        .find_objects(&[Attribute::Label(b"signer cert".to_vec())])
        .unwrap()
        .is_empty());
    // An object made unmodifiable keeps its label.
    let fixed = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Modifiable(false),
            Attribute::Label(b"fixed".to_vec()),
        ])
        .unwrap();
    assert_eq!(
        err(s
            .update_attributes(fixed, &[Attribute::Label(b"moved".to_vec())])
            .unwrap_err()),
        RvError::ActionProhibited
    );
    s.destroy_object(fixed).unwrap();
    // Changing what a key can do is refused; copying anything is.
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(true), Attribute::ValueLen(16.into())],
        )
        .unwrap();
    assert_eq!(
        err(s
            .update_attributes(aes, &[Attribute::Sensitive(false)])
            .unwrap_err()),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        err(s.copy_object(cert, &[]).unwrap_err()),
        RvError::ActionProhibited
    );
    // Bad templates get the standard's codes, and create nothing.
    let before = s.find_objects(&[]).unwrap().len();
    for (tpl, want) in [
        (vec![Attribute::Token(true)], RvError::TemplateIncomplete),
        (
            vec![
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Token(true),
            ],
            RvError::TemplateIncomplete,
        ),
        (
            // A key in clear, where the partition's policy import-keys is off (the default).
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Value(vec![0x3c; 16]),
            ],
            RvError::ActionProhibited,
        ),
        (
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
                Attribute::Value(vec![0x3c; 16]),
            ],
            RvError::TemplateIncomplete,
        ),
        (
            vec![
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Sign(true),
            ],
            RvError::AttributeTypeInvalid,
        ),
        (
            vec![
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Token(true),
                Attribute::Trusted(true),
                Attribute::Value(cert_der.clone()),
            ],
            RvError::AttributeValueInvalid,
        ),
    ] {
        assert_eq!(err(s.create_object(&tpl).unwrap_err()), want, "{tpl:?}");
    }
    assert_eq!(s.find_objects(&[]).unwrap().len(), before);
    // Public certificates are visible before login; private data objects are not.
    let ro = f.p11().open_ro_session(slot).unwrap();
    s.logout().unwrap();
    let visible = ro.find_objects(&[]).unwrap();
    assert!(
        visible.contains(&cert) && !visible.contains(&data),
        "{visible:?}"
    );
    assert_eq!(
        err(ro
            .create_object(&[Attribute::Class(ObjectClass::DATA), Attribute::Token(true)])
            .unwrap_err()),
        RvError::SessionReadOnly
    );
    s.login(UserType::User, Some(&pin("user-pin-1"))).unwrap();
    s.destroy_object(data).unwrap();
    s.destroy_object(cert).unwrap();
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap()
        .is_empty());
}

fn ecdh_derive_agrees_both_ways_and_honours_cka_derive() {
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let pair = |derive: bool| {
        s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(p256.clone())],
            &[Attribute::Token(true), Attribute::Derive(derive)],
        )
        .unwrap()
    };
    let point = |pk| match &s.get_attributes(pk, &[AttributeType::EcPoint]).unwrap()[0] {
        // CKA_EC_POINT is the DER OCTET STRING; the raw point follows its 2-byte header.
        Attribute::EcPoint(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    let (a_pub, a_priv) = pair(true);
    let (b_pub, b_priv) = pair(true);
    let (a_point, b_point) = (point(a_pub), point(b_pub));
    let aes_tpl = [
        Attribute::Token(true),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    // A derives with B's raw point; B with A's point as DER (both encodings are accepted).
    let ka = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &b_point[2..])),
            a_priv,
            &aes_tpl,
        )
        .unwrap();
    let kb = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &a_point)),
            b_priv,
            &aes_tpl,
        )
        .unwrap();
    let (mut iv1, mut iv2) = ([3u8; 12], [3u8; 12]);
    let ct = s
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv1, &[], 128.into()).unwrap()),
            ka,
            b"agreed",
        )
        .unwrap();
    let pt = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv2, &[], 128.into()).unwrap()),
            kb,
            &ct,
        )
        .unwrap();
    assert_eq!(pt, b"agreed");
    // Derived keys are not local; from a never-extractable base they stay never extractable.
    let v = s
        .get_attributes(ka, &[AttributeType::Local, AttributeType::NeverExtractable])
        .unwrap();
    assert!(v.contains(&Attribute::Local(false)), "{v:?}");
    assert!(v.contains(&Attribute::NeverExtractable(true)), "{v:?}");
    // A key without CKA_DERIVE does not derive; a point off the curve is refused.
    let (_c_pub, c_priv) = pair(false);
    assert_eq!(
        err(s
            .derive_key(
                &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &a_point)),
                c_priv,
                &aes_tpl,
            )
            .unwrap_err()),
        RvError::KeyFunctionNotPermitted
    );
    let mut bad = b_point[2..].to_vec();
    bad[10] ^= 0x55;
    assert_eq!(
        err(s
            .derive_key(
                &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &bad)),
                a_priv,
                &aes_tpl,
            )
            .unwrap_err()),
        RvError::MechanismParamInvalid
    );
}

fn session_objects_live_in_memory_and_die_with_their_session() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, rw) = token(&f);
    // A read-only session may make session objects (not token objects).
    let ro = f.p11().open_ro_session(slot).unwrap();
    let aes = ro
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"ephemeral".to_vec()),
            ],
        )
        .unwrap();
    assert_eq!(
        err(ro
            .generate_key(
                &Mechanism::AesKeyGen,
                &[Attribute::Token(true), Attribute::ValueLen(32.into())],
            )
            .unwrap_err()),
        RvError::SessionReadOnly
    );
    let v = ro.get_attributes(aes, &[AttributeType::Token]).unwrap();
    assert_eq!(v, vec![Attribute::Token(false)]);
    // A session object's label and id change like a token object's.
    ro.update_attributes(aes, &[Attribute::Id(vec![0x5e])])
        .unwrap();
    assert_eq!(
        ro.find_objects(&[Attribute::Id(vec![0x5e])]).unwrap(),
        vec![aes]
    );
    let iv = [1u8; 16];
    let ct = ro
        .encrypt(&Mechanism::AesCbcPad(iv), aes, b"short lived")
        .unwrap();
    assert_eq!(
        ro.decrypt(&Mechanism::AesCbcPad(iv), aes, &ct).unwrap(),
        b"short lived"
    );
    // Other sessions of the application see it (the engine's tests show it is never stored).
    let found = rw
        .find_objects(&[Attribute::Label(b"ephemeral".to_vec())])
        .unwrap();
    assert_eq!(found, vec![aes]);
    // A session key pair: signs, and can be destroyed from a read-only session.
    let (pk, sk) = ro
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .unwrap();
    let sig = ro.sign(&Mechanism::EcdsaSha256, sk, b"m").unwrap();
    ro.verify(&Mechanism::EcdsaSha256, pk, b"m", &sig).unwrap();
    ro.destroy_object(pk).unwrap();
    assert_eq!(
        err(ro
            .verify(&Mechanism::EcdsaSha256, pk, b"m", &sig)
            .unwrap_err()),
        RvError::KeyHandleInvalid
    );
    // Session keys wrap and unwrap like token keys: an extractable session key leaves under a
    // token key, and comes back as a session object (in a read-only session) that decrypts
    // what the original encrypted.
    let kek = rw
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                // A key-encryption key does nothing else (key separation).
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .unwrap();
    let eph = ro
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(16.into()),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    let ct2 = ro
        .encrypt(&Mechanism::AesCbcPad(iv), eph, b"round trip")
        .unwrap();
    let wrapped = ro.wrap_key(&Mechanism::AesKeyWrap, kek, eph).unwrap();
    let back = ro
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    assert_eq!(
        ro.get_attributes(back, &[AttributeType::Token]).unwrap(),
        vec![Attribute::Token(false)]
    );
    assert_eq!(
        ro.decrypt(&Mechanism::AesCbcPad(iv), back, &ct2).unwrap(),
        b"round trip"
    );
    // Closing the session that made them destroys the rest.
    drop(ro);
    assert!(rw
        .find_objects(&[Attribute::Label(b"ephemeral".to_vec())])
        .unwrap()
        .is_empty());
    assert_eq!(
        err(rw.sign(&Mechanism::EcdsaSha256, sk, b"m").unwrap_err()),
        RvError::KeyHandleInvalid
    );
}

fn public_keys_enter_in_clear_and_verify() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (ec_pub, ec_priv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(p256.clone())],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    let (rsa_pub, rsa_priv) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::Token(true), Attribute::ModulusBits(2048.into())],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    let get = |o, t| s.get_attributes(o, &[t]).unwrap().remove(0);
    let Attribute::EcPoint(point) = get(ec_pub, AttributeType::EcPoint) else {
        panic!("no EC point")
    };
    let Attribute::Modulus(n) = get(rsa_pub, AttributeType::Modulus) else {
        panic!("no modulus")
    };
    // The EC key as a session object made in a read-only session; the RSA key as a token object.
    let ro = f.p11().open_ro_session(slot).unwrap();
    let ec_in = ro
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::EcParams(p256.clone()),
            Attribute::EcPoint(point.clone()),
            Attribute::Verify(true),
        ])
        .unwrap();
    let rsa_in = s
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Label(b"partner".to_vec()),
            Attribute::Modulus(n.clone()),
            Attribute::PublicExponent(vec![1, 0, 1]),
        ])
        .unwrap();
    for (m, sk, pk) in [
        (Mechanism::EcdsaSha256, ec_priv, ec_in),
        (Mechanism::Sha256RsaPkcs, rsa_priv, rsa_in),
    ] {
        let sig = s.sign(&m, sk, b"from outside").unwrap();
        s.verify(&m, pk, b"from outside", &sig).unwrap();
        assert_eq!(
            err(s.verify(&m, pk, b"from outsidE", &sig).unwrap_err()),
            RvError::SignatureInvalid
        );
    }
    // The imported keys read back as they went in, and are not local.
    assert_eq!(
        get(ec_in, AttributeType::EcPoint),
        Attribute::EcPoint(point.clone())
    );
    assert_eq!(get(rsa_in, AttributeType::Local), Attribute::Local(false));
    // Bad parts are refused with the standard's codes.
    let mut off_curve = point.clone();
    off_curve[10] ^= 0x40;
    for (tpl, want) in [
        (
            vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(false),
                Attribute::EcParams(p256.clone()),
                Attribute::EcPoint(off_curve),
            ],
            RvError::AttributeValueInvalid,
        ),
        (
            vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Token(false),
                Attribute::EcParams(p256.clone()),
                Attribute::EcPoint(point.clone()),
            ],
            RvError::TemplateIncomplete,
        ),
        (
            vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(true),
                Attribute::Modulus(n.clone()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            RvError::SessionReadOnly,
        ),
    ] {
        assert_eq!(err(ro.create_object(&tpl).unwrap_err()), want, "{tpl:?}");
    }
}

/// The other process of the test below: logs in through the engine, destroys one object and
/// exits. Runs only when the parent test starts it.
#[test]
#[ignore = "helper process for a_key_destroyed_by_another_process_is_refused_at_once"]
fn helper_destroy_object_in_child_process() {
    let (Some(dir), Some(handle)) = (
        std::env::var_os("FH_P11_TEST_DATA"),
        std::env::var("FH_P11_TEST_HANDLE").ok(),
    ) else {
        return;
    };
    let mut hsm = Hsm::open(std::path::Path::new(&dir)).unwrap();
    let co = hsm
        .login(
            ferrohsm_core::Role::CryptoOfficer,
            Some("tok"),
            ferrohsm_core::Credential::Secret(Pin::password("user-pin-1").unwrap()),
        )
        .unwrap();
    hsm.destroy_object(&co, handle.parse().unwrap()).unwrap();
}

/// The module notices commits by other processes through its map of the store's WAL index;
/// a key destroyed elsewhere must be refused by the very next operation, even though this
/// session has the key loaded and remembered from the operations before.
#[test]
fn a_key_destroyed_by_another_process_is_refused_at_once() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_, ec_priv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(p256)],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    for _ in 0..3 {
        s.sign(&Mechanism::Ecdsa, ec_priv, &[7u8; 32]).unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_destroy_object_in_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "FH_P11_TEST_DATA",
            std::env::var_os("FERROHSM_HOME").unwrap(),
        )
        .env("FH_P11_TEST_HANDLE", ec_priv.handle().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        err(s.sign(&Mechanism::Ecdsa, ec_priv, &[7u8; 32]).unwrap_err()),
        RvError::KeyHandleInvalid
    );
}

/// Two threads logging in and out of two tokens at once (found by the benchmark: a login
/// took the module lock while holding its session, a logout held the module lock while
/// visiting every session, and the two waited on each other for ever). A watchdog turns a
/// deadlock into a failure instead of a hung run.
fn concurrent_logins_and_logouts_on_two_tokens_never_deadlock() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    s.logout().unwrap();
    drop(s);
    let spare = *f
        .p11()
        .get_slots_with_token()
        .unwrap()
        .iter()
        .find(|x| !f.p11().get_token_info(**x).unwrap().token_initialized())
        .expect("a spare token");
    f.p11().init_token(spare, &pin("so-pin-2"), "tok2").unwrap();
    let s2 = f.p11().open_rw_session(spare).unwrap();
    s2.login(UserType::So, Some(&pin("so-pin-2"))).unwrap();
    s2.init_pin(&pin("user-pin-2")).unwrap();
    s2.logout().unwrap();
    drop(s2);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for (slot, user_pin) in [(slot, "user-pin-1"), (spare, "user-pin-2")] {
        let p11 = f.p11().clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let s = p11.open_rw_session(slot).unwrap();
            for _ in 0..15 {
                s.login(UserType::User, Some(&pin(user_pin))).unwrap();
                s.logout().unwrap();
            }
            done.send(()).unwrap();
        });
    }
    for _ in 0..2 {
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_err()
        {
            // The module's locks are stuck for good: unwinding would hang in C_Finalize, and
            // so would every later test in this process. Fail the whole run loudly instead.
            eprintln!("DEADLOCK: concurrent C_Login/C_Logout on two tokens never finished");
            std::process::abort();
        }
    }
}

/// A session keeps one keyed HMAC context (`hmac_ctx.rs`) for the last key and hash it MACed
/// with: switching key or hash, multi-part MACs and a logout in between must each give the MAC
/// that the engine's independent verification (aws-lc-rs) accepts, and no other.
fn hmac_contexts_follow_the_key_and_hash_and_end_with_the_login() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let gen = || {
        s.generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .unwrap()
    };
    let (a, b) = (gen(), gen());
    let msg = [0x5a; 64];
    let sha256 = Mechanism::Sha256Hmac;
    let a1 = s.sign(&sha256, a, &msg).unwrap();
    let b1 = s.sign(&sha256, b, &msg).unwrap();
    assert_ne!(a1, b1, "another key, another MAC");
    let a2 = s.sign(&sha256, a, &msg).unwrap();
    assert_eq!(a1, a2, "back to the first key");
    s.verify(&sha256, a, &msg, &a1).unwrap();
    s.verify(&sha256, b, &msg, &b1).unwrap();
    assert_eq!(
        err(s.verify(&sha256, b, &msg, &a1).unwrap_err()),
        RvError::SignatureInvalid
    );
    // Another hash on the same key; then the first hash again; each message from scratch.
    let a512 = s.sign(&Mechanism::Sha512Hmac, a, &msg).unwrap();
    assert_eq!(a512.len(), 64);
    s.verify(&Mechanism::Sha512Hmac, a, &msg, &a512).unwrap();
    for m in [&b""[..], b"x", &msg[..], b"x"] {
        let t = s.sign(&sha256, a, m).unwrap();
        s.verify(&sha256, a, m, &t).unwrap();
    }
    // Multi-part equals single-part.
    s.sign_init(&sha256, a).unwrap();
    s.sign_update(&msg[..10]).unwrap();
    s.sign_update(&msg[10..]).unwrap();
    assert_eq!(s.sign_final().unwrap(), a1);
    // After a logout the key is refused; after a new login it gives the same MAC.
    s.logout().unwrap();
    assert!(s.sign(&sha256, a, &msg).is_err());
    s.login(UserType::User, Some(&pin("user-pin-1"))).unwrap();
    assert_eq!(s.sign(&sha256, a, &msg).unwrap(), a1);
}

/// Without the HSM SO's leave (HSM policy init-token, off by default) an application cannot
/// make itself a partition: no spare token is offered.
fn c_inittoken_needs_the_hsm_sos_policy() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture_with(false);
    assert!(f.p11().get_slots_with_token().unwrap().is_empty());
    assert!(f.p11().get_all_slots().unwrap().is_empty());
}

/// `CKA_TOKEN` defaults to false: a key made without it is a session object, gone with the
/// session that made it (Java, python-pkcs11 and others rely on it).
fn a_key_made_without_cka_token_is_a_session_object() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    let k = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"fleeting".to_vec()),
            ],
        )
        .unwrap();
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (pubk, privk) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(p256),
                Attribute::Label(b"fleeting".to_vec()),
            ],
            &[Attribute::Label(b"fleeting".to_vec())],
        )
        .unwrap();
    for h in [k, pubk, privk] {
        assert_eq!(
            s.get_attributes(h, &[AttributeType::Token]).unwrap(),
            vec![Attribute::Token(false)]
        );
    }
    // The application's other sessions see it while its session lives; it goes with it.
    let other = f.p11().open_rw_session(slot).unwrap();
    let label = [Attribute::Label(b"fleeting".to_vec())];
    assert_eq!(other.find_objects(&label).unwrap().len(), 3);
    drop(s);
    assert!(other.find_objects(&label).unwrap().is_empty());
}

/// `C_CopyObject` copies a key within its token as the standard says: a session key kept as a
/// token object (Java's `KeyStore.setEntry` does exactly this), the same key with its history,
/// more restricted if asked, never less; `CKA_COPYABLE` false stops it.
fn c_copyobject_copies_keys_more_restricted_never_less() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (slot, s) = token(&f);
    let k = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    assert_eq!(
        s.get_attributes(k, &[AttributeType::Copyable]).unwrap(),
        vec![Attribute::Copyable(true)]
    );
    let kept = s
        .copy_object(
            k,
            &[
                Attribute::Token(true),
                Attribute::Label(b"kept".to_vec()),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    let probe = [7u8; 16];
    assert_eq!(
        s.encrypt(&Mechanism::AesEcb, kept, &probe).unwrap(),
        s.encrypt(&Mechanism::AesEcb, k, &probe).unwrap(),
        "the same key"
    );
    assert_eq!(
        s.get_attributes(
            kept,
            &[
                AttributeType::Token,
                AttributeType::Local,
                AttributeType::Extractable
            ]
        )
        .unwrap(),
        vec![
            Attribute::Token(true),
            Attribute::Local(true),
            Attribute::Extractable(false)
        ]
    );
    // Never less restricted than the original.
    assert_eq!(
        err(s
            .copy_object(kept, &[Attribute::Extractable(true)])
            .unwrap_err()),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        err(s
            .copy_object(k, &[Attribute::Sensitive(false)])
            .unwrap_err()),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        err(s.copy_object(k, &[Attribute::Encrypt(false)]).unwrap_err()),
        RvError::AttributeReadOnly
    );
    let fixed = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(16.into()), Attribute::Copyable(false)],
        )
        .unwrap();
    assert_eq!(
        s.get_attributes(fixed, &[AttributeType::Copyable]).unwrap(),
        vec![Attribute::Copyable(false)]
    );
    assert_eq!(
        err(s.copy_object(fixed, &[Attribute::Token(true)]).unwrap_err()),
        RvError::ActionProhibited
    );
    // The token copy outlives the session that made the original.
    drop(s);
    let s2 = f.p11().open_rw_session(slot).unwrap();
    s2.login(UserType::User, Some(&pin("user-pin-1"))).unwrap();
    let found = s2
        .find_objects(&[Attribute::Label(b"kept".to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1);
}
