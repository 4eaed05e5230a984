//! The operations the benchmark measures: each row a PKCS#11 operation on a target's keys and,
//! where aws-lc-rs can do the same, the raw operation beside it (`--only` picks rows by name).

use super::*;

/// A PKCS#11 operation on one target's keys.
pub(crate) type P11Op = Arc<dyn Fn(&Session, &Keys, u64) + Send + Sync>;
/// A raw aws-lc-rs operation and its per-thread state.
pub(crate) type RawSetup = Arc<dyn Fn() -> Box<dyn FnMut(u64) + Send> + Send + Sync>;

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) p11: P11Op,
    pub(crate) raw: Option<RawSetup>,
}

fn gcm_iv(n: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[4..].copy_from_slice(&n.to_be_bytes());
    iv
}

pub(crate) fn rows(only: &Option<String>) -> Vec<Row> {
    use aws_lc_rs::{aead, hmac, rand::SystemRandom, rsa, signature};
    let msg: &'static [u8] = MSG;
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };
    let rsa_raw: RawSetup = Arc::new(|| {
        let kp = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).expect("rsa");
        let rng = SystemRandom::new();
        Box::new(move |_| {
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                b"benchmark message, 32 bytes long",
                &mut sig,
            )
            .expect("sign");
        })
    });
    let pss_raw: RawSetup = Arc::new(|| {
        let kp = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).expect("rsa");
        let rng = SystemRandom::new();
        Box::new(move |_| {
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(
                &signature::RSA_PSS_SHA256,
                &rng,
                b"benchmark message, 32 bytes long",
                &mut sig,
            )
            .expect("sign");
        })
    });
    let ec_raw: RawSetup = Arc::new(|| {
        let kp = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("ec");
        let rng = SystemRandom::new();
        Box::new(move |_| {
            kp.sign(&rng, b"benchmark message, 32 bytes long")
                .expect("sign");
        })
    });
    let ed_raw: RawSetup = Arc::new(|| {
        let kp = signature::Ed25519KeyPair::generate().expect("ed");
        Box::new(move |_| {
            std::hint::black_box(kp.sign(b"benchmark message, 32 bytes long"));
        })
    });
    let rsa_v_raw: RawSetup = Arc::new(|| {
        let kp = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).expect("rsa");
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            b"benchmark message, 32 bytes long",
            &mut sig,
        )
        .expect("sign");
        let pk = kp.public_key().as_ref().to_vec();
        Box::new(move |_| {
            signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &pk)
                .verify(b"benchmark message, 32 bytes long", &sig)
                .expect("verify");
        })
    });
    let ec_v_raw: RawSetup = Arc::new(|| {
        let kp = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("ec");
        let sig = kp
            .sign(&SystemRandom::new(), b"benchmark message, 32 bytes long")
            .expect("sign")
            .as_ref()
            .to_vec();
        let pk = kp.public_key().as_ref().to_vec();
        Box::new(move |_| {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &pk)
                .verify(b"benchmark message, 32 bytes long", &sig)
                .expect("verify");
        })
    });
    let gcm_raw = |len: usize| -> RawSetup {
        Arc::new(move || {
            let k = aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, &[7u8; 32]).expect("aes"),
            );
            let data = vec![0x5au8; len];
            Box::new(move |n| {
                let mut buf = data.clone();
                k.seal_in_place_append_tag(
                    aead::Nonce::assume_unique_for_key(gcm_iv(n)),
                    aead::Aad::empty(),
                    &mut buf,
                )
                .expect("seal");
            })
        })
    };
    let hmac_raw: RawSetup = Arc::new(|| {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &[9u8; 32]);
        Box::new(move |_| {
            std::hint::black_box(hmac::sign(&k, &[0x5a; 64]));
        })
    });
    let all = vec![
        Row {
            name: "C_Sign RSA-2048 PKCS#1 v1.5 SHA-256".into(),
            raw: Some(rsa_raw),
            p11: Arc::new(move |s, k, _| {
                s.sign(&Mechanism::Sha256RsaPkcs, k.rsa.1, msg)
                    .expect("sign");
            }),
        },
        Row {
            name: "C_Sign RSA-2048 PSS SHA-256".into(),
            raw: Some(pss_raw),
            p11: Arc::new(move |s, k, _| {
                s.sign(&Mechanism::Sha256RsaPkcsPss(pss), k.rsa.1, msg)
                    .expect("sign");
            }),
        },
        // SoftHSMv2 2.6 has no CKM_ECDSA_SHA256: both modules sign the client's SHA-256 digest.
        Row {
            name: "C_Sign ECDSA P-256 (SHA-256 digest)".into(),
            raw: Some(ec_raw),
            p11: Arc::new(move |s, k, _| {
                s.sign(&Mechanism::Ecdsa, k.ec.1, &DIGEST).expect("sign");
            }),
        },
        Row {
            name: "C_Sign Ed25519".into(),
            raw: Some(ed_raw),
            p11: Arc::new(move |s, k, _| {
                if let Some(ed) = k.ed {
                    s.sign(
                        &Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                            cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                        )),
                        ed.1,
                        msg,
                    )
                    .expect("sign");
                }
            }),
        },
        Row {
            name: "C_Verify RSA-2048 PKCS#1 v1.5 SHA-256".into(),
            raw: Some(rsa_v_raw),
            p11: Arc::new(move |s, k, _| {
                s.verify(&Mechanism::Sha256RsaPkcs, k.rsa.0, msg, &k.rsa_sig)
                    .expect("verify");
            }),
        },
        Row {
            name: "C_Verify ECDSA P-256 (SHA-256 digest)".into(),
            raw: Some(ec_v_raw),
            p11: Arc::new(move |s, k, _| {
                s.verify(&Mechanism::Ecdsa, k.ec.0, &DIGEST, &k.ec_sig)
                    .expect("verify");
            }),
        },
        Row {
            name: "C_Encrypt AES-256-GCM 64 B".into(),
            raw: Some(gcm_raw(64)),
            p11: Arc::new(move |s, k, n| {
                let mut iv = gcm_iv(n);
                s.encrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).expect("gcm")),
                    k.aes,
                    &[0x5a; 64],
                )
                .expect("encrypt");
            }),
        },
        Row {
            name: "C_Encrypt AES-256-GCM 4 KiB".into(),
            raw: Some(gcm_raw(4096)),
            p11: Arc::new(move |s, k, n| {
                let mut iv = gcm_iv(n);
                s.encrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).expect("gcm")),
                    k.aes,
                    &[0x5a; 4096],
                )
                .expect("encrypt");
            }),
        },
        Row {
            name: "C_Sign HMAC-SHA-256 64 B".into(),
            raw: Some(hmac_raw),
            p11: Arc::new(move |s, k, _| {
                s.sign(&Mechanism::Sha256Hmac, k.hmac, &[0x5a; 64])
                    .expect("hmac");
            }),
        },
    ];
    all.into_iter()
        .filter(|r| only.as_ref().is_none_or(|o| r.name.contains(o.as_str())))
        .collect()
}
