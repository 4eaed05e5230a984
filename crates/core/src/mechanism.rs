//! Key generation and the mechanisms applications use, over aws-lc-rs. Key material goes in
//! and out only as [`SecretBytes`] (raw AES keys, PKCS#8 private keys); public keys as X.509
//! SubjectPublicKeyInfo DER. The PKCS#11 module maps its `CKM_*` numbers onto [`Mechanism`].

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{self, KeyPair as _};
use aws_lc_rs::{aead, rand::SystemRandom, rsa};
use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};
use crate::secret::SecretBytes;

/// A key to generate: algorithm and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySpec {
    /// AES, 128-bit.
    Aes128,
    /// AES, 192-bit.
    Aes192,
    /// AES, 256-bit.
    Aes256,
    /// ECDSA/ECDH on NIST P-256.
    EcP256,
    /// ECDSA/ECDH on NIST P-384.
    EcP384,
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// Ed25519.
    Ed25519,
}

const SPECS: &[(&str, KeySpec)] = &[
    ("aes-128", KeySpec::Aes128),
    ("aes-192", KeySpec::Aes192),
    ("aes-256", KeySpec::Aes256),
    ("ec-p256", KeySpec::EcP256),
    ("ec-p384", KeySpec::EcP384),
    ("rsa-2048", KeySpec::Rsa2048),
    ("rsa-3072", KeySpec::Rsa3072),
    ("rsa-4096", KeySpec::Rsa4096),
    ("ed25519", KeySpec::Ed25519),
];

impl KeySpec {
    /// Whether this is a secret (symmetric) key rather than a key pair.
    pub fn is_symmetric(self) -> bool {
        matches!(self, KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256)
    }

    /// The mechanism a bare `sign` uses with this key.
    pub fn default_sign(self) -> Option<Mechanism> {
        match self {
            KeySpec::EcP256 => Some(Mechanism::EcdsaSha256),
            KeySpec::EcP384 => Some(Mechanism::EcdsaSha384),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                Some(Mechanism::RsaPkcs1Sha256)
            }
            KeySpec::Ed25519 => Some(Mechanism::Ed25519),
            _ => None,
        }
    }

    /// The mechanism a bare `encrypt` uses with this key.
    pub fn default_encrypt(self) -> Option<Mechanism> {
        match self {
            KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => Some(Mechanism::AesGcm),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                Some(Mechanism::RsaOaepSha256)
            }
            _ => None,
        }
    }

    /// Every accepted name, for help texts.
    pub fn names() -> Vec<&'static str> {
        SPECS.iter().map(|(n, _)| *n).collect()
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = SPECS
            .iter()
            .find(|(_, s)| s == self)
            .map(|(n, _)| *n)
            .unwrap_or("?");
        f.write_str(n)
    }
}

impl FromStr for KeySpec {
    type Err = HsmError;
    fn from_str(s: &str) -> Result<Self> {
        SPECS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                HsmError::InvalidInput(format!(
                    "unknown key type {s:?}; one of: {}",
                    KeySpec::names().join(", ")
                ))
            })
    }
}

/// A mechanism: what to do with a key. Parameters that vary per call (IV, AAD) are passed to
/// the operation, never chosen by the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// RSASSA-PKCS1-v1_5 with SHA-256 hashing inside.
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    RsaPssSha256,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaepSha256,
    /// ECDSA with SHA-256; signature is raw r‖s.
    EcdsaSha256,
    /// ECDSA with SHA-384; signature is raw r‖s.
    EcdsaSha384,
    /// Ed25519 (pure).
    Ed25519,
    /// AES-GCM with the caller's 12-byte IV and AAD; 16-byte tag; output ciphertext‖tag.
    AesGcm,
}

const MECHS: &[(&str, Mechanism)] = &[
    ("rsa-pkcs1-sha256", Mechanism::RsaPkcs1Sha256),
    ("rsa-pss-sha256", Mechanism::RsaPssSha256),
    ("rsa-oaep-sha256", Mechanism::RsaOaepSha256),
    ("ecdsa-sha256", Mechanism::EcdsaSha256),
    ("ecdsa-sha384", Mechanism::EcdsaSha384),
    ("ed25519", Mechanism::Ed25519),
    ("aes-gcm", Mechanism::AesGcm),
];

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = MECHS
            .iter()
            .find(|(_, m)| m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?");
        f.write_str(n)
    }
}

impl FromStr for Mechanism {
    type Err = HsmError;
    fn from_str(s: &str) -> Result<Self> {
        MECHS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let all: Vec<_> = MECHS.iter().map(|(n, _)| *n).collect();
                HsmError::InvalidInput(format!(
                    "unknown mechanism {s:?}; one of: {}",
                    all.join(", ")
                ))
            })
    }
}

/// Per-call parameters.
#[derive(Clone, Debug, Default)]
pub struct Params {
    /// Initialisation vector (AES-GCM: exactly 12 bytes).
    pub iv: Vec<u8>,
    /// Additional authenticated data (AES-GCM).
    pub aad: Vec<u8>,
}

/// Fresh key material.
pub struct Generated {
    /// Raw AES key or PKCS#8 private key.
    pub private: SecretBytes,
    /// SubjectPublicKeyInfo DER of the public half, for key pairs.
    pub public: Option<Vec<u8>>,
}

fn failed(what: &str) -> HsmError {
    HsmError::Crypto(format!("{what} failed"))
}

/// Generates a key inside the boundary.
pub fn generate(spec: KeySpec) -> Result<Generated> {
    Ok(match spec {
        KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => {
            let len = match spec {
                KeySpec::Aes128 => 16,
                KeySpec::Aes192 => 24,
                _ => 32,
            };
            let mut k = vec![0u8; len];
            crate::crypto::fill_random(&mut k);
            Generated {
                private: SecretBytes::new(k),
                public: None,
            }
        }
        KeySpec::EcP256 | KeySpec::EcP384 => {
            let alg = ecdsa_alg(spec)?;
            let kp =
                signature::EcdsaKeyPair::generate(alg).map_err(|_| failed("EC key generation"))?;
            let der = kp.to_pkcs8v1().map_err(|_| failed("EC key encoding"))?;
            let public = kp
                .public_key()
                .as_der()
                .map_err(|_| failed("EC public key encoding"))?;
            Generated {
                private: SecretBytes::new(der.as_ref().to_vec()),
                public: Some(public.as_ref().to_vec()),
            }
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let size = match spec {
                KeySpec::Rsa2048 => rsa::KeySize::Rsa2048,
                KeySpec::Rsa3072 => rsa::KeySize::Rsa3072,
                _ => rsa::KeySize::Rsa4096,
            };
            let kp = rsa::KeyPair::generate(size).map_err(|_| failed("RSA key generation"))?;
            let der: Pkcs8V1Der = kp.as_der().map_err(|_| failed("RSA key encoding"))?;
            let public = kp
                .public_key()
                .as_der()
                .map_err(|_| failed("RSA public key encoding"))?;
            Generated {
                private: SecretBytes::new(der.as_ref().to_vec()),
                public: Some(public.as_ref().to_vec()),
            }
        }
        KeySpec::Ed25519 => {
            let kp = signature::Ed25519KeyPair::generate()
                .map_err(|_| failed("Ed25519 key generation"))?;
            let der = kp
                .to_pkcs8v1()
                .map_err(|_| failed("Ed25519 key encoding"))?;
            let public = kp
                .public_key()
                .as_der()
                .map_err(|_| failed("Ed25519 public key encoding"))?;
            Generated {
                private: SecretBytes::new(der.as_ref().to_vec()),
                public: Some(public.as_ref().to_vec()),
            }
        }
    })
}

fn ecdsa_alg(spec: KeySpec) -> Result<&'static signature::EcdsaSigningAlgorithm> {
    match spec {
        KeySpec::EcP256 => Ok(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        KeySpec::EcP384 => Ok(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        _ => Err(HsmError::InvalidInput(format!("{spec} is not an EC key"))),
    }
}

fn mismatch(spec: KeySpec, mech: Mechanism) -> HsmError {
    HsmError::InvalidInput(format!("mechanism {mech} cannot be used with a {spec} key"))
}

/// Signs `data` with a private key.
pub fn sign(spec: KeySpec, private: &SecretBytes, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
    match (spec, mech) {
        (KeySpec::EcP256, Mechanism::EcdsaSha256) | (KeySpec::EcP384, Mechanism::EcdsaSha384) => {
            let kp = signature::EcdsaKeyPair::from_pkcs8(ecdsa_alg(spec)?, private.expose())
                .map_err(|_| HsmError::Tamper("stored EC key does not parse".into()))?;
            let sig = kp
                .sign(&SystemRandom::new(), data)
                .map_err(|_| failed("ECDSA signing"))?;
            Ok(sig.as_ref().to_vec())
        }
        (
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096,
            Mechanism::RsaPkcs1Sha256 | Mechanism::RsaPssSha256,
        ) => {
            let kp = rsa::KeyPair::from_pkcs8(private.expose())
                .map_err(|_| HsmError::Tamper("stored RSA key does not parse".into()))?;
            let pad: &'static dyn signature::RsaEncoding = if mech == Mechanism::RsaPssSha256 {
                &signature::RSA_PSS_SHA256
            } else {
                &signature::RSA_PKCS1_SHA256
            };
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(pad, &SystemRandom::new(), data, &mut sig)
                .map_err(|_| failed("RSA signing"))?;
            Ok(sig)
        }
        (KeySpec::Ed25519, Mechanism::Ed25519) => {
            let kp = signature::Ed25519KeyPair::from_pkcs8(private.expose())
                .map_err(|_| HsmError::Tamper("stored Ed25519 key does not parse".into()))?;
            Ok(kp.sign(data).as_ref().to_vec())
        }
        _ => Err(mismatch(spec, mech)),
    }
}

/// Verifies a signature with a public key (SPKI DER). `Ok(false)` means a bad signature.
pub fn verify(
    spec: KeySpec,
    public: &[u8],
    mech: Mechanism,
    data: &[u8],
    sig: &[u8],
) -> Result<bool> {
    let alg: &'static dyn signature::VerificationAlgorithm = match (spec, mech) {
        (KeySpec::EcP256, Mechanism::EcdsaSha256) => &signature::ECDSA_P256_SHA256_FIXED,
        (KeySpec::EcP384, Mechanism::EcdsaSha384) => &signature::ECDSA_P384_SHA384_FIXED,
        (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, Mechanism::RsaPkcs1Sha256) => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, Mechanism::RsaPssSha256) => {
            &signature::RSA_PSS_2048_8192_SHA256
        }
        (KeySpec::Ed25519, Mechanism::Ed25519) => &signature::ED25519,
        _ => return Err(mismatch(spec, mech)),
    };
    Ok(signature::UnparsedPublicKey::new(alg, public)
        .verify(data, sig)
        .is_ok())
}

fn aes_key(spec: KeySpec, key: &SecretBytes) -> Result<aead::LessSafeKey> {
    let alg = match spec {
        KeySpec::Aes128 => &aead::AES_128_GCM,
        KeySpec::Aes192 => &aead::AES_192_GCM,
        KeySpec::Aes256 => &aead::AES_256_GCM,
        _ => return Err(mismatch(spec, Mechanism::AesGcm)),
    };
    let k = aead::UnboundKey::new(alg, key.expose())
        .map_err(|_| HsmError::Tamper("stored AES key has a bad length".into()))?;
    Ok(aead::LessSafeKey::new(k))
}

fn gcm_nonce(p: &Params) -> Result<aead::Nonce> {
    aead::Nonce::try_assume_unique_for_key(&p.iv).map_err(|_| {
        HsmError::InvalidInput(format!(
            "AES-GCM needs a 12-byte IV; got {} bytes",
            p.iv.len()
        ))
    })
}

/// Encrypts. Symmetric mechanisms take the secret key; RSA-OAEP takes the public key (SPKI).
pub fn encrypt(
    spec: KeySpec,
    key: &[u8],
    mech: Mechanism,
    p: &Params,
    data: &[u8],
) -> Result<Vec<u8>> {
    match mech {
        Mechanism::AesGcm => {
            let k = aes_key(spec, &SecretBytes::new(key.to_vec()))?;
            let mut buf = data.to_vec();
            k.seal_in_place_append_tag(gcm_nonce(p)?, aead::Aad::from(&p.aad), &mut buf)
                .map_err(|_| failed("AES-GCM encryption"))?;
            Ok(buf)
        }
        Mechanism::RsaOaepSha256
            if matches!(spec, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096) =>
        {
            let pk = rsa::PublicEncryptingKey::from_der(key)
                .map_err(|_| HsmError::Tamper("stored RSA public key does not parse".into()))?;
            let oaep =
                rsa::OaepPublicEncryptingKey::new(pk).map_err(|_| failed("RSA-OAEP setup"))?;
            if data.len() > oaep.max_plaintext_size(&rsa::OAEP_SHA256_MGF1SHA256) {
                return Err(HsmError::InvalidInput(format!(
                    "RSA-OAEP-SHA256 with this key takes at most {} bytes",
                    oaep.max_plaintext_size(&rsa::OAEP_SHA256_MGF1SHA256)
                )));
            }
            let mut out = vec![0u8; oaep.ciphertext_size()];
            let n = oaep
                .encrypt(&rsa::OAEP_SHA256_MGF1SHA256, data, &mut out, None)
                .map_err(|_| failed("RSA-OAEP encryption"))?
                .len();
            out.truncate(n);
            Ok(out)
        }
        _ => Err(mismatch(spec, mech)),
    }
}

/// Decrypts with the secret or private key. A wrong key or altered ciphertext is an error.
pub fn decrypt(
    spec: KeySpec,
    private: &SecretBytes,
    mech: Mechanism,
    p: &Params,
    data: &[u8],
) -> Result<SecretBytes> {
    match mech {
        Mechanism::AesGcm => {
            let k = aes_key(spec, private)?;
            let mut buf = data.to_vec();
            let n = k
                .open_in_place(gcm_nonce(p)?, aead::Aad::from(&p.aad), &mut buf)
                .map_err(|_| {
                    HsmError::Crypto(
                        "AES-GCM decryption failed: wrong key, IV, AAD or altered ciphertext"
                            .into(),
                    )
                })?
                .len();
            buf.truncate(n);
            Ok(SecretBytes::new(buf))
        }
        Mechanism::RsaOaepSha256
            if matches!(spec, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096) =>
        {
            let k = rsa::PrivateDecryptingKey::from_pkcs8(private.expose())
                .map_err(|_| HsmError::Tamper("stored RSA key does not parse".into()))?;
            let oaep =
                rsa::OaepPrivateDecryptingKey::new(k).map_err(|_| failed("RSA-OAEP setup"))?;
            let mut out = vec![0u8; oaep.min_output_size()];
            let n = oaep
                .decrypt(&rsa::OAEP_SHA256_MGF1SHA256, data, &mut out, None)
                .map_err(|_| HsmError::Crypto("RSA-OAEP decryption failed".into()))?
                .len();
            out.truncate(n);
            Ok(SecretBytes::new(out))
        }
        _ => Err(mismatch(spec, mech)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trips_and_detects_change() {
        for spec in [
            KeySpec::EcP256,
            KeySpec::EcP384,
            KeySpec::Rsa2048,
            KeySpec::Ed25519,
        ] {
            let g = generate(spec).unwrap();
            let m = spec.default_sign().unwrap();
            let sig = sign(spec, &g.private, m, b"hello").unwrap();
            let public = g.public.as_ref().unwrap();
            assert!(verify(spec, public, m, b"hello", &sig).unwrap(), "{spec}");
            assert!(!verify(spec, public, m, b"hellO", &sig).unwrap(), "{spec}");
            if spec == KeySpec::EcP256 {
                assert_eq!(sig.len(), 64, "ECDSA signatures are raw r||s");
            }
        }
    }

    #[test]
    fn encrypt_decrypt_round_trips() {
        let p = Params {
            iv: vec![7; 12],
            aad: b"hdr".to_vec(),
        };
        let g = generate(KeySpec::Aes256).unwrap();
        let ct = encrypt(
            KeySpec::Aes256,
            g.private.expose(),
            Mechanism::AesGcm,
            &p,
            b"secret data",
        )
        .unwrap();
        assert_eq!(ct.len(), 11 + 16);
        assert_eq!(
            decrypt(KeySpec::Aes256, &g.private, Mechanism::AesGcm, &p, &ct)
                .unwrap()
                .expose(),
            b"secret data"
        );
        let bad = Params {
            aad: b"other".to_vec(),
            ..p.clone()
        };
        assert!(decrypt(KeySpec::Aes256, &g.private, Mechanism::AesGcm, &bad, &ct).is_err());
        let short = Params {
            iv: vec![1; 8],
            ..p
        };
        assert!(encrypt(
            KeySpec::Aes256,
            g.private.expose(),
            Mechanism::AesGcm,
            &short,
            b"x"
        )
        .is_err());

        let r = generate(KeySpec::Rsa2048).unwrap();
        let ct = encrypt(
            KeySpec::Rsa2048,
            r.public.as_ref().unwrap(),
            Mechanism::RsaOaepSha256,
            &Params::default(),
            b"k",
        )
        .unwrap();
        assert_eq!(
            decrypt(
                KeySpec::Rsa2048,
                &r.private,
                Mechanism::RsaOaepSha256,
                &Params::default(),
                &ct
            )
            .unwrap()
            .expose(),
            b"k"
        );
    }

    #[test]
    fn names_round_trip() {
        for n in KeySpec::names() {
            assert_eq!(n.parse::<KeySpec>().unwrap().to_string(), n);
        }
        assert!("des".parse::<KeySpec>().is_err());
        assert_eq!(
            "ecdsa-sha256".parse::<Mechanism>().unwrap(),
            Mechanism::EcdsaSha256
        );
    }
}
