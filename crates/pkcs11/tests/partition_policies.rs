//! The partition policies that govern keys in clear and legacy RSA, each tried through the
//! `cryptoki` crate, embedded and through a server: non-sensitive keys (refused unless the
//! Partition SO allows them; then their value reads as PKCS#11 says), keys imported in clear
//! (`C_CreateObject`, refused unless allowed; never wrapping), `CKM_RSA_PKCS` decryption and
//! unwrapping with implicit rejection, and the Partition SO's trust mark (`CKA_TRUSTED`).

use std::sync::Mutex;

use aws_lc_rs::encoding::AsDer;
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

mod harness;
use harness::fixture::{err, fixture, rsa_pair, token};

/// The module is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

both_ways!(
    non_sensitive_keys_need_the_policy_and_then_read_in_clear,
    keys_in_clear_enter_only_under_the_import_policy_and_never_wrap,
    rsa_private_keys_enter_by_their_components,
    rsa_pkcs_decryption_answers_a_bad_padding_with_a_fixed_random_message,
    rsa_pkcs_unwrap_answers_alike_and_the_policy_turns_it_off,
    only_the_partition_so_trust_mark_lets_an_unwrapped_key_wrap,
);

const PROBE: [u8; 16] = [0x5a; 16];

fn fingerprint(s: &Session, key: ObjectHandle) -> Vec<u8> {
    s.encrypt(&Mechanism::AesEcb, key, &PROBE).unwrap()
}

fn random(s: &Session, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.generate_random_slice(&mut b).unwrap();
    b
}

fn aes_value(value: &[u8], extra: &[Attribute]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Value(value.to_vec()),
        Attribute::Encrypt(true),
    ];
    t.extend_from_slice(extra);
    t
}

/// A secret key asked to be non-sensitive is refused by default; once the Partition SO
/// allows such keys, its value reads, and it is the key's real value.
fn non_sensitive_keys_need_the_policy_and_then_read_in_clear() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let open = [
        Attribute::Token(true),
        Attribute::ValueLen(32.into()),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
    ];
    let e = s.generate_key(&Mechanism::AesKeyGen, &open).unwrap_err();
    assert_eq!(err(e), RvError::ActionProhibited);
    f.set_policy("non-sensitive-keys", "on");
    let k = s.generate_key(&Mechanism::AesKeyGen, &open).unwrap();
    let read = s
        .get_attributes(
            k,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Value,
            ],
        )
        .unwrap();
    let value = match &read[..] {
        [Attribute::Sensitive(false), Attribute::Extractable(true), Attribute::Value(v)] => {
            v.clone()
        }
        other => panic!("attributes contradict behaviour: {other:?}"),
    };
    assert_eq!(value.len(), 32);
    // The value read is the key: brought back in, it encrypts as the key does.
    f.set_policy("import-keys", "on");
    let again = s.create_object(&aes_value(&value, &[])).unwrap();
    assert_eq!(fingerprint(&s, again), fingerprint(&s, k));
    // A private key is never non-sensitive, whatever the policy.
    let e = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(harness::P256.to_vec())],
            &[Attribute::Sensitive(false)],
        )
        .unwrap_err();
    assert_eq!(err(e), RvError::ActionProhibited);
    // A sensitive key's value still does not read.
    let closed = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Extractable(true)],
        )
        .unwrap();
    let e = s.get_attributes(closed, &[AttributeType::Value]).unwrap();
    assert!(e.is_empty(), "a sensitive key's value read: {e:?}");
}

/// `C_CreateObject` of a secret key is refused until the Partition SO turns import-keys on;
/// then the key enters marked as what it is (not local, never always-sensitive or
/// never-extractable) and never wraps.
fn keys_in_clear_enter_only_under_the_import_policy_and_never_wrap() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let value = random(&s, 32);
    let e = s.create_object(&aes_value(&value, &[])).unwrap_err();
    assert_eq!(err(e), RvError::ActionProhibited);
    f.set_policy("import-keys", "on");
    // Asked to wrap, it is refused: its value is known outside.
    let e = s
        .create_object(&aes_value(&value, &[Attribute::Wrap(true)]))
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
    // A well-known value is refused as at every other entry.
    let e = s.create_object(&aes_value(&[0u8; 32], &[])).unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
    let k = s.create_object(&aes_value(&value, &[])).unwrap();
    let a = s
        .get_attributes(
            k,
            &[
                AttributeType::Local,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Sensitive,
                AttributeType::Wrap,
            ],
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Attribute::Local(false),
            Attribute::AlwaysSensitive(false),
            Attribute::NeverExtractable(false),
            Attribute::Sensitive(true),
            Attribute::Wrap(false),
        ]
    );
    // A key of the same value made again encrypts alike: the value entered as given.
    let twin = s.create_object(&aes_value(&value, &[])).unwrap();
    assert_eq!(fingerprint(&s, twin), fingerprint(&s, k));
    // An HMAC key as Java makes one (a 256-bit generic secret, a session object).
    let hmac = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Value(random(&s, 32)),
            Attribute::Sign(true),
        ])
        .unwrap();
    let mac = s.sign(&Mechanism::Sha256Hmac, hmac, b"data").unwrap();
    assert_eq!(mac.len(), 32);
}

/// An RSA private key given by its components (as Java's keytool stores the keys it makes)
/// enters as the same key: its modulus reads back, and what it signs verifies under its
/// public key.
fn rsa_private_keys_enter_by_their_components() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    f.set_policy("import-keys", "on");
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
    let c = harness::rsa_components(der.as_ref());
    let private = s
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Id(vec![7]),
            Attribute::Modulus(c[0].clone()),
            Attribute::PublicExponent(c[1].clone()),
            Attribute::PrivateExponent(c[2].clone()),
            Attribute::Prime1(c[3].clone()),
            Attribute::Prime2(c[4].clone()),
            Attribute::Exponent1(c[5].clone()),
            Attribute::Exponent2(c[6].clone()),
            Attribute::Coefficient(c[7].clone()),
        ])
        .unwrap();
    let n = s
        .get_attributes(private, &[AttributeType::Modulus])
        .unwrap();
    assert_eq!(n, vec![Attribute::Modulus(c[0].clone())]);
    let public = s
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Verify(true),
            Attribute::Modulus(c[0].clone()),
            Attribute::PublicExponent(c[1].clone()),
        ])
        .unwrap();
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, private, b"a jar")
        .unwrap();
    s.verify(&Mechanism::Sha256RsaPkcs, public, b"a jar", &sig)
        .unwrap();
    // Parts that do not form a key are refused, and nothing is kept.
    let mut wrong = c[2].clone();
    wrong[10] ^= 1;
    let e = s
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(c[0].clone()),
            Attribute::PublicExponent(c[1].clone()),
            Attribute::PrivateExponent(wrong),
            Attribute::Prime1(c[3].clone()),
            Attribute::Prime2(c[4].clone()),
            Attribute::Exponent1(c[5].clone()),
            Attribute::Exponent2(c[6].clone()),
            Attribute::Coefficient(c[7].clone()),
        ])
        .unwrap_err();
    assert_eq!(err(e), RvError::AttributeValueInvalid);
}

/// An RSA pair whose public half encrypts and wraps (CKM_RSA_PKCS is on by default).
fn rsa_decrypting_pair(
    s: &Session,
    bits: u64,
    private: &[Attribute],
) -> (ObjectHandle, ObjectHandle) {
    rsa_pair(
        s,
        bits,
        &[Attribute::Encrypt(true), Attribute::Wrap(true)],
        private,
    )
}

/// PKCS#1 v1.5 decryption gives the message of a good ciphertext; a ciphertext altered so
/// that its padding is wrong gives no error, but the same unrelated message each time.
fn rsa_pkcs_decryption_answers_a_bad_padding_with_a_fixed_random_message() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let (public, private) = rsa_decrypting_pair(&s, 2048, &[Attribute::Decrypt(true)]);
    let msg = b"a premaster secret of 48 bytes, more or less...";
    let ct = s.encrypt(&Mechanism::RsaPkcs, public, msg).unwrap();
    assert_eq!(ct.len(), 256);
    assert_eq!(s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap(), msg);
    // Random ciphertexts below the modulus almost never decrypt to a well-padded block.
    for i in 0..4u8 {
        let mut bad = ct.clone();
        bad[0] = 0;
        bad[1] ^= i + 1;
        bad[100] ^= 0x40;
        let a = s.decrypt(&Mechanism::RsaPkcs, private, &bad).unwrap();
        let b = s.decrypt(&Mechanism::RsaPkcs, private, &bad).unwrap();
        assert_eq!(a, b, "the answer to a bad padding is fixed");
        assert_ne!(a, msg.to_vec());
        assert!(a.len() <= 256 - 11);
    }
    // A ciphertext of the wrong length is the caller's mistake, and says so.
    assert!(s.decrypt(&Mechanism::RsaPkcs, private, &ct[1..]).is_err());
    // The Partition SO turns the mechanism off.
    f.set_policy("rsa-pkcs-decrypt", "off");
    let e = s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap_err();
    assert_eq!(err(e), RvError::ActionProhibited);
    // OAEP still decrypts.
    let oaep = Mechanism::RsaPkcsOaep(cryptoki::mechanism::rsa::PkcsOaepParams::new(
        cryptoki::mechanism::MechanismType::SHA256,
        cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA256,
        cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
    ));
    let ct = s.encrypt(&oaep, public, msg).unwrap();
    assert_eq!(s.decrypt(&oaep, private, &ct).unwrap(), msg);
}

/// Unwrapping with CKM_RSA_PKCS: a key wrapped under the public half comes back; a wrong
/// padding, a wrong length inside or garbage all get the one answer.
fn rsa_pkcs_unwrap_answers_alike_and_the_policy_turns_it_off() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let (public, private) = rsa_decrypting_pair(
        &s,
        3072,
        &[Attribute::Unwrap(true), Attribute::Decrypt(false)],
    );
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
    let blob = s.wrap_key(&Mechanism::RsaPkcs, public, target).unwrap();
    let tpl = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Encrypt(true),
    ];
    let back = s
        .unwrap_key(&Mechanism::RsaPkcs, private, &blob, &tpl)
        .unwrap();
    assert_eq!(fingerprint(&s, back), fingerprint(&s, target));
    // A 40-byte value, well padded: the wrong length for an AES key.
    let long = s
        .encrypt(&Mechanism::RsaPkcs, public, &random(&s, 40))
        .unwrap();
    let mut flipped = blob.clone();
    flipped[0] = 0;
    flipped[1] ^= 0x80;
    let mut garbage = random(&s, 384);
    garbage[0] = 0;
    // The well-padded wrong length is refused; a badly padded blob decrypts (implicit
    // rejection) to a pseudo-random message whose length is as often wrong (refused alike)
    // as, rarely, an AES key length: then the key made is unrelated to any wrapped one.
    let answers: Vec<Option<RvError>> = [long, flipped, garbage]
        .iter()
        .map(
            |b| match s.unwrap_key(&Mechanism::RsaPkcs, private, b, &tpl) {
                Ok(k) => {
                    assert_ne!(fingerprint(&s, k), fingerprint(&s, target));
                    None
                }
                Err(e) => Some(err(e)),
            },
        )
        .collect();
    assert_eq!(answers[0], Some(RvError::WrappedKeyInvalid));
    assert!(
        answers
            .iter()
            .flatten()
            .all(|a| *a == RvError::WrappedKeyInvalid),
        "{answers:?}"
    );
    f.set_policy("rsa-pkcs-decrypt", "off");
    let e = s
        .unwrap_key(&Mechanism::RsaPkcs, private, &blob, &tpl)
        .unwrap_err();
    assert_eq!(err(e), RvError::ActionProhibited);
}

/// A key unwrapped (so not generated inside) may not wrap, whatever its template says, until
/// the Partition SO marks it trusted; a key made CKA_WRAP_WITH_TRUSTED is wrapped only by a
/// trusted key; removing the mark takes the right away again.
fn only_the_partition_so_trust_mark_lets_an_unwrapped_key_wrap() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let transport = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .unwrap();
    let zone = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Extractable(true),
            ],
        )
        .unwrap();
    let blob = s.wrap_key(&Mechanism::AesKeyWrap, transport, zone).unwrap();
    let zone_kek = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            transport,
            &blob,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Label(b"zone-kek".to_vec()),
                Attribute::Wrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .unwrap();
    let guarded = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Extractable(true),
                Attribute::WrapWithTrusted(true),
            ],
        )
        .unwrap();
    // Not generated inside: it does not wrap, whatever its CKA_WRAP says.
    let e = s
        .wrap_key(&Mechanism::AesKeyWrap, zone_kek, zone)
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
    // A local KEK is not trusted either: the guarded key stays in.
    let e = s
        .wrap_key(&Mechanism::AesKeyWrap, transport, guarded)
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyNotWrappable);
    let out = f.as_partition_so(&["key", "trust", "--partition", "tok", "--label", "zone-kek"]);
    assert!(out.contains("trusted"), "{out}");
    let read = s
        .get_attributes(zone_kek, &[AttributeType::Trusted])
        .unwrap();
    assert_eq!(read, vec![Attribute::Trusted(true)]);
    s.wrap_key(&Mechanism::AesKeyWrap, zone_kek, guarded)
        .unwrap();
    f.as_partition_so(&[
        "key",
        "trust",
        "--partition",
        "tok",
        "--label",
        "zone-kek",
        "--remove",
    ]);
    let e = s
        .wrap_key(&Mechanism::AesKeyWrap, zone_kek, guarded)
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyNotWrappable);
    let e = s
        .wrap_key(&Mechanism::AesKeyWrap, zone_kek, zone)
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
}
