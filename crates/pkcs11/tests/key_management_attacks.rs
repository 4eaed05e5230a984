//! The published PKCS#11 key-management attacks (Clulow, CHES 2003; Bortolozzo, Centenaro,
//! Focardi, Steel, CCS 2010), each performed through the `cryptoki` crate, embedded and
//! through a server. Each tries to learn a sensitive, extractable target key; each must fail,
//! with `CKR_KEY_FUNCTION_NOT_PERMITTED` at the step that would have given the key away, and
//! leave the attacker holding nothing that encrypts as the target does.

use std::sync::Mutex;

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

mod harness;
use harness::fixture::{err, fixture, rsa_pair, token};

/// The module is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

both_ways!(
    wrap_then_decrypt_with_the_same_key,
    wrap_under_a_key_the_attacker_unwrapped,
    encrypt_then_unwrap_a_key_of_known_value,
    ecdh_with_a_chosen_point_then_wrap,
    rsa_unwrap_only_key_turns_an_offline_value_into_a_wrapping_key,
    reimport_as_non_sensitive,
    wrap_under_a_weaker_key,
    wrap_under_an_extractable_key,
    wrap_under_a_public_key_whose_private_half_decrypts,
    unwrap_errors_are_one_answer,
    each_pair_template_speaks_for_its_own_half,
);

/// The block every comparison encrypts.
const PROBE: [u8; 16] = [0x5a; 16];

/// The target: an AES-256 key, sensitive and extractable (so it may legitimately leave,
/// wrapped, but never in clear).
fn target(s: &Session) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Extractable(true),
            Attribute::Sensitive(true),
            Attribute::Encrypt(true),
        ],
    )
    .unwrap()
}

/// What the target's key encrypts PROBE to (AES-ECB): the fingerprint a learnt key would
/// reproduce.
fn fingerprint(s: &Session, key: ObjectHandle) -> Vec<u8> {
    s.encrypt(&Mechanism::AesEcb, key, &PROBE).unwrap()
}

/// A key with every usage python-pkcs11 gives an AES key by default.
fn all_purpose_aes(s: &Session, bytes: u64) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(bytes.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ],
    )
    .unwrap()
}

/// A key-encryption key that does nothing else.
fn kek(s: &Session) -> ObjectHandle {
    s.generate_key(
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
    .unwrap()
}

/// A token RSA key pair whose public half may wrap; `private` are the private half's usages.
fn rsa_wrapping_pair(
    s: &Session,
    bits: u64,
    private: &[Attribute],
) -> (ObjectHandle, ObjectHandle) {
    rsa_pair(s, bits, &[Attribute::Wrap(true)], private)
}

/// RSA-OAEP with SHA-256 throughout.
fn oaep() -> PkcsOaepParams<'static> {
    PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    )
}

fn aes_template(extra: &[Attribute]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
    ];
    t.extend_from_slice(extra);
    t
}

fn objects(s: &Session) -> usize {
    s.find_objects(&[]).unwrap().len()
}

/// Clulow's attack: wrap the target under a key that may also decrypt, then C_Decrypt the
/// wrapped bytes with it. The all-purpose key is still made, and still encrypts and
/// decrypts; it only may not wrap a sensitive key.
fn wrap_then_decrypt_with_the_same_key() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let k = all_purpose_aes(&s, 32);
    let e = s.wrap_key(&Mechanism::AesKeyWrap, k, t).unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
    // What it is safe for still works.
    let ct = s.encrypt(&Mechanism::AesEcb, k, &PROBE).unwrap();
    assert_eq!(s.decrypt(&Mechanism::AesEcb, k, &ct).unwrap(), PROBE);
    // A KEK that only wraps does wrap the target: the rule is about the decrypting key.
    let good = kek(&s);
    assert!(s.wrap_key(&Mechanism::AesKeyWrap, good, t).is_ok());
}

/// Unwrap a key whose value the attacker chose (through a wrapping the HSM made of the
/// attacker's own extractable key), then wrap the target under it and unwrap offline.
fn wrap_under_a_key_the_attacker_unwrapped() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let good = kek(&s);
    // The attacker's key, extractable so it can travel: wrapped, then unwrapped as a key
    // that may wrap.
    let mine = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let blob = s.wrap_key(&Mechanism::AesKeyWrap, good, mine).unwrap();
    let copy = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            good,
            &blob,
            &aes_template(&[
                Attribute::Wrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ]),
        )
        .unwrap();
    let before = objects(&s);
    let e = s.wrap_key(&Mechanism::AesKeyWrap, copy, t).unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
    assert_eq!(objects(&s), before);
    let local = s.get_attributes(copy, &[AttributeType::Local]).unwrap();
    assert_eq!(local, vec![Attribute::Local(false)]);
}

/// A key that may encrypt and unwrap: encrypt bytes of the attacker's choosing, unwrap them
/// into a key of known value.
fn encrypt_then_unwrap_a_key_of_known_value() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let k = all_purpose_aes(&s, 32);
    // The attacker's chosen key value, encrypted under k (any bytes do: the unwrap is
    // refused before they are looked at).
    let chosen = s.encrypt(&Mechanism::AesEcb, k, &[0x11; 32]).unwrap();
    let before = objects(&s);
    let e = s
        .unwrap_key(&Mechanism::AesKeyWrap, k, &chosen, &aes_template(&[]))
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
    assert_eq!(objects(&s), before, "nothing was unwrapped");
}

/// ECDH with a public point the caller supplies (the caller's own, whose private scalar it
/// knows): the derived key's value is the caller's to compute, so it must not wrap.
fn ecdh_with_a_chosen_point_then_wrap() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_pub, base) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(p256)],
            &[Attribute::Token(true), Attribute::Derive(true)],
        )
        .unwrap();
    // The attacker's own P-256 key pair, made outside the HSM.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mine =
        aws_lc_rs::agreement::EphemeralPrivateKey::generate(&aws_lc_rs::agreement::ECDH_P256, &rng)
            .unwrap();
    let point = mine.compute_public_key().unwrap().as_ref().to_vec();
    let params = cryptoki::mechanism::elliptic_curve::Ecdh1DeriveParams::new(
        cryptoki::mechanism::elliptic_curve::EcKdf::null(),
        &point,
    );
    let derived = s
        .derive_key(
            &Mechanism::Ecdh1Derive(params),
            base,
            &aes_template(&[
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ]),
        )
        .unwrap();
    let e = s.wrap_key(&Mechanism::AesKeyWrap, derived, t).unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
}

/// An RSA private key allowed only to unwrap: the attacker encrypts a value of its choosing
/// to the public key offline, unwraps it into a key of known value, and wraps the target
/// under that.
fn rsa_unwrap_only_key_turns_an_offline_value_into_a_wrapping_key() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let (rpub, rpriv) = rsa_wrapping_pair(
        &s,
        2048,
        &[Attribute::Unwrap(true), Attribute::Decrypt(false)],
    );
    let oaep = oaep();
    // "Offline": the public key encrypts a value the attacker knows (the HSM's C_Encrypt
    // with the public key is the same arithmetic as doing it outside).
    // The attacker's value: random, so that it is not one of the well-known values the HSM
    // refuses anyway; known to the attacker all the same.
    let mut known = [0u8; 32];
    aws_lc_rs::rand::fill(&mut known).unwrap();
    let blob = s
        .encrypt(&Mechanism::RsaPkcsOaep(oaep), rpub, &known)
        .unwrap();
    let planted = s
        .unwrap_key(
            &Mechanism::RsaPkcsOaep(oaep),
            rpriv,
            &blob,
            &aes_template(&[
                Attribute::Wrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ]),
        )
        .unwrap();
    let e = s.wrap_key(&Mechanism::AesKeyWrap, planted, t).unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
}

/// Wrap the target under a good KEK, then unwrap it again asking for CKA_SENSITIVE false,
/// and read CKA_VALUE.
fn reimport_as_non_sensitive() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let good = kek(&s);
    let blob = s.wrap_key(&Mechanism::AesKeyWrap, good, t).unwrap();
    let before = objects(&s);
    let e = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            good,
            &blob,
            &aes_template(&[Attribute::Sensitive(false), Attribute::Encrypt(true)]),
        )
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
    assert_eq!(objects(&s), before);
    // Unwrapped as it must be, it is the same key and it is sensitive.
    let back = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            good,
            &blob,
            &aes_template(&[Attribute::Encrypt(true)]),
        )
        .unwrap();
    assert_eq!(fingerprint(&s, back), fingerprint(&s, t));
    let read = s
        .get_attributes(back, &[AttributeType::Value, AttributeType::Sensitive])
        .unwrap();
    assert_eq!(read, vec![Attribute::Sensitive(true)], "the value stays in");
}

/// A key wrapped under a weaker one is as weak as the wrapper: AES-128 may not wrap
/// AES-256.
fn wrap_under_a_weaker_key() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let weak = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .unwrap();
    let e = s.wrap_key(&Mechanism::AesKeyWrap, weak, t).unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
}

/// An extractable wrapping key: wrap it out under another key the attacker holds, then use
/// it outside to open the target's wrapping.
fn wrap_under_an_extractable_key() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let leaky = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Extractable(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .unwrap();
    let e = s.wrap_key(&Mechanism::AesKeyWrap, leaky, t).unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
}

/// Wrap under an RSA public key, then C_Decrypt with its private half.
fn wrap_under_a_public_key_whose_private_half_decrypts() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = s
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
    let (rpub, _rpriv) = rsa_wrapping_pair(&s, 3072, &[Attribute::Decrypt(true)]);
    let oaep = oaep();
    let e = s
        .wrap_key(&Mechanism::RsaPkcsOaep(oaep), rpub, t)
        .unwrap_err();
    assert_eq!(err(e), RvError::KeyFunctionNotPermitted);
}

/// Unwrapping answers alike whatever is wrong with the bytes (no padding or integrity
/// oracle): a flipped byte, a truncation, garbage.
fn unwrap_errors_are_one_answer() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let t = target(&s);
    let good = kek(&s);
    let blob = s.wrap_key(&Mechanism::AesKeyWrap, good, t).unwrap();
    let mut flipped = blob.clone();
    flipped[5] ^= 0x80;
    let answers: Vec<String> = [flipped, blob[..blob.len() - 8].to_vec(), vec![0x42; 40]]
        .iter()
        .map(|b| {
            let e = s
                .unwrap_key(&Mechanism::AesKeyWrap, good, b, &aes_template(&[]))
                .unwrap_err();
            format!("{:?}", err(e))
        })
        .collect();
    assert!(
        answers.iter().all(|a| a == "WrappedKeyInvalid"),
        "{answers:?}"
    );
}

/// C_GenerateKeyPair applies each template to its own half: a public template that says
/// "derive" and "sign" does not make a private key asked to do neither do them.
fn each_pair_template_speaks_for_its_own_half() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let (_slot, s) = token(&f);
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(p256),
                Attribute::Derive(true),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Derive(false),
                Attribute::Sign(false),
            ],
        )
        .unwrap();
    let a = s
        .get_attributes(private, &[AttributeType::Derive, AttributeType::Sign])
        .unwrap();
    assert_eq!(a, vec![Attribute::Derive(false), Attribute::Sign(false)]);
    assert_eq!(
        err(s.sign(&Mechanism::Ecdsa, private, &[1; 32]).unwrap_err()),
        RvError::KeyFunctionNotPermitted
    );
    let v = s.get_attributes(public, &[AttributeType::Verify]).unwrap();
    assert_eq!(v, vec![Attribute::Verify(true)]);
}
