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
    /// ECDSA/ECDH on NIST P-521.
    EcP521,
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// Ed25519.
    Ed25519,
    /// A generic secret (HMAC key) of this many bytes (16 to 64).
    Generic(u8),
    /// Triple DES, three keys (24 bytes with parity), for GlobalPlatform and legacy systems.
    Des3,
}

const SPECS: &[(&str, KeySpec)] = &[
    ("aes-128", KeySpec::Aes128),
    ("aes-192", KeySpec::Aes192),
    ("aes-256", KeySpec::Aes256),
    ("ec-p256", KeySpec::EcP256),
    ("ec-p384", KeySpec::EcP384),
    ("ec-p521", KeySpec::EcP521),
    ("rsa-2048", KeySpec::Rsa2048),
    ("rsa-3072", KeySpec::Rsa3072),
    ("rsa-4096", KeySpec::Rsa4096),
    ("ed25519", KeySpec::Ed25519),
    ("des3", KeySpec::Des3),
];

impl KeySpec {
    /// Whether this is a secret (symmetric) key rather than a key pair.
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            KeySpec::Aes128
                | KeySpec::Aes192
                | KeySpec::Aes256
                | KeySpec::Generic(_)
                | KeySpec::Des3
        )
    }

    /// Whether this is an AES key.
    pub fn is_aes(self) -> bool {
        matches!(self, KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256)
    }

    /// The mechanism a bare `sign` uses with this key.
    pub fn default_sign(self) -> Option<Mechanism> {
        match self {
            KeySpec::EcP256 => Some(Mechanism::Ecdsa(Some(Hash::Sha256))),
            KeySpec::EcP384 => Some(Mechanism::Ecdsa(Some(Hash::Sha384))),
            KeySpec::EcP521 => Some(Mechanism::Ecdsa(Some(Hash::Sha512))),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                Some(Mechanism::RsaPkcs1(Hash::Sha256))
            }
            KeySpec::Ed25519 => Some(Mechanism::Ed25519),
            KeySpec::Generic(_) => Some(Mechanism::Hmac(Hash::Sha256)),
            _ => None,
        }
    }

    /// The mechanism a bare `encrypt` uses with this key.
    pub fn default_encrypt(self) -> Option<Mechanism> {
        match self {
            KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => Some(Mechanism::AesGcm),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                Some(Mechanism::RsaOaep(Hash::Sha256))
            }
            _ => None,
        }
    }

    /// Every accepted name, for help texts.
    pub fn names() -> Vec<String> {
        let mut v: Vec<String> = SPECS.iter().map(|(n, _)| n.to_string()).collect();
        v.push("generic-<128..512 bits>".into());
        v
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let KeySpec::Generic(n) = self {
            return write!(f, "generic-{}", *n as u32 * 8);
        }
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
        if let Some(bits) = s.strip_prefix("generic-") {
            return match bits.parse::<u32>() {
                Ok(b) if b % 8 == 0 && (128..=512).contains(&b) => {
                    Ok(KeySpec::Generic((b / 8) as u8))
                }
                _ => Err(HsmError::InvalidInput(
                    "a generic secret is 128 to 512 bits, in whole bytes".into(),
                )),
            };
        }
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

/// A hash function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hash {
    /// SHA-1 (digests and OAEP only; not for new signatures).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    fn alg(self) -> &'static aws_lc_rs::digest::Algorithm {
        use aws_lc_rs::digest;
        match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha224 => &digest::SHA224,
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    /// Output length in bytes.
    pub fn len(self) -> usize {
        self.alg().output_len
    }

    /// Always false; a hash has output.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(self.alg(), data)
            .as_ref()
            .to_vec()
    }

    /// The DER DigestInfo prefix that precedes a digest of this hash in PKCS#1 v1.5.
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Hash::Sha224 => &[
                0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x04, 0x05, 0x00, 0x04, 0x1c,
            ],
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// A mechanism: what to do with a key. Parameters that vary per call (IV, AAD) are passed to
/// the operation, never chosen by the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// RSASSA-PKCS1-v1_5, hashing inside (SHA-256/384/512).
    RsaPkcs1(Hash),
    /// RSASSA-PKCS1-v1_5 over a DigestInfo the caller made (`CKM_RSA_PKCS` signing).
    RsaPkcs1Raw,
    /// RSASSA-PSS, hashing inside, MGF1 with the same hash, salt as long as the hash.
    RsaPss(Hash),
    /// RSASSA-PSS over the caller's hash (`CKM_RSA_PKCS_PSS`), same MGF1 and salt rule.
    RsaPssRaw(Hash),
    /// RSAES-OAEP with the hash and MGF1 with the same hash.
    RsaOaep(Hash),
    /// ECDSA, hashing inside with the hash given, or over the caller's hash (`None`,
    /// `CKM_ECDSA`); signature is raw r‖s.
    Ecdsa(Option<Hash>),
    /// Ed25519 (pure).
    Ed25519,
    /// AES-GCM with the caller's 12-byte IV and AAD; 16-byte tag; output ciphertext‖tag.
    AesGcm,
    /// AES-ECB, whole blocks, no padding.
    AesEcb,
    /// AES-CBC with the caller's 16-byte IV, whole blocks, no padding.
    AesCbc,
    /// AES-CBC with the caller's IV and PKCS#7 padding.
    AesCbcPad,
    /// AES-CTR; the caller's 16-byte IV is the initial counter block.
    AesCtr,
    /// AES-CMAC (16-byte tag).
    AesCmac,
    /// HMAC with a generic secret.
    Hmac(Hash),
    /// Triple DES ECB, whole 8-byte blocks.
    Des3Ecb,
    /// Triple DES CBC with the caller's 8-byte IV, whole blocks.
    Des3Cbc,
    /// AES key wrap (RFC 3394, `CKM_AES_KEY_WRAP`): keys of whole 8-byte blocks.
    AesKw,
    /// AES key wrap with padding (RFC 5649, `CKM_AES_KEY_WRAP_KWP`): keys of any length.
    AesKwp,
    /// PKCS#7 padding to whole 8-byte blocks, then RFC 3394 (`CKM_AES_KEY_WRAP_PAD`).
    AesKwPkcs7,
}

const MECHS: &[(&str, Mechanism)] = &[
    ("rsa-pkcs1-sha1", Mechanism::RsaPkcs1(Hash::Sha1)),
    ("rsa-pkcs1-sha224", Mechanism::RsaPkcs1(Hash::Sha224)),
    ("rsa-pkcs1-sha256", Mechanism::RsaPkcs1(Hash::Sha256)),
    ("rsa-pkcs1-sha384", Mechanism::RsaPkcs1(Hash::Sha384)),
    ("rsa-pkcs1-sha512", Mechanism::RsaPkcs1(Hash::Sha512)),
    ("rsa-pkcs1", Mechanism::RsaPkcs1Raw),
    ("rsa-pss-sha1", Mechanism::RsaPss(Hash::Sha1)),
    ("rsa-pss-sha224", Mechanism::RsaPss(Hash::Sha224)),
    ("rsa-pss-sha256", Mechanism::RsaPss(Hash::Sha256)),
    ("rsa-pss-sha384", Mechanism::RsaPss(Hash::Sha384)),
    ("rsa-pss-sha512", Mechanism::RsaPss(Hash::Sha512)),
    ("rsa-pss-raw-sha1", Mechanism::RsaPssRaw(Hash::Sha1)),
    ("rsa-pss-raw-sha224", Mechanism::RsaPssRaw(Hash::Sha224)),
    ("rsa-pss-raw-sha256", Mechanism::RsaPssRaw(Hash::Sha256)),
    ("rsa-pss-raw-sha384", Mechanism::RsaPssRaw(Hash::Sha384)),
    ("rsa-pss-raw-sha512", Mechanism::RsaPssRaw(Hash::Sha512)),
    ("rsa-oaep-sha1", Mechanism::RsaOaep(Hash::Sha1)),
    ("rsa-oaep-sha256", Mechanism::RsaOaep(Hash::Sha256)),
    ("rsa-oaep-sha384", Mechanism::RsaOaep(Hash::Sha384)),
    ("rsa-oaep-sha512", Mechanism::RsaOaep(Hash::Sha512)),
    ("ecdsa", Mechanism::Ecdsa(None)),
    ("ecdsa-sha1", Mechanism::Ecdsa(Some(Hash::Sha1))),
    ("ecdsa-sha224", Mechanism::Ecdsa(Some(Hash::Sha224))),
    ("ecdsa-sha256", Mechanism::Ecdsa(Some(Hash::Sha256))),
    ("ecdsa-sha384", Mechanism::Ecdsa(Some(Hash::Sha384))),
    ("ecdsa-sha512", Mechanism::Ecdsa(Some(Hash::Sha512))),
    ("ed25519", Mechanism::Ed25519),
    ("aes-gcm", Mechanism::AesGcm),
    ("aes-ecb", Mechanism::AesEcb),
    ("aes-cbc", Mechanism::AesCbc),
    ("aes-cbc-pad", Mechanism::AesCbcPad),
    ("aes-ctr", Mechanism::AesCtr),
    ("aes-cmac", Mechanism::AesCmac),
    ("hmac-sha1", Mechanism::Hmac(Hash::Sha1)),
    ("hmac-sha224", Mechanism::Hmac(Hash::Sha224)),
    ("hmac-sha256", Mechanism::Hmac(Hash::Sha256)),
    ("hmac-sha384", Mechanism::Hmac(Hash::Sha384)),
    ("hmac-sha512", Mechanism::Hmac(Hash::Sha512)),
    ("des3-ecb", Mechanism::Des3Ecb),
    ("des3-cbc", Mechanism::Des3Cbc),
    ("aes-kw", Mechanism::AesKw),
    ("aes-kwp", Mechanism::AesKwp),
    ("aes-kw-pkcs7", Mechanism::AesKwPkcs7),
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
    /// Label (RSA-OAEP's encoding parameter); empty for none.
    pub label: Vec<u8>,
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
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
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
        KeySpec::Generic(n) => {
            if !(16..=64).contains(&n) {
                return Err(HsmError::InvalidInput(
                    "a generic secret is 16 to 64 bytes".into(),
                ));
            }
            let mut k = vec![0u8; n as usize];
            crate::crypto::fill_random(&mut k);
            Generated {
                private: SecretBytes::new(k),
                public: None,
            }
        }
        KeySpec::Des3 => {
            let mut k = vec![0u8; 24];
            crate::crypto::fill_random(&mut k);
            // DES keys carry odd parity in each byte's low bit.
            for b in k.iter_mut() {
                *b = (*b & 0xfe) | (((*b & 0xfe).count_ones() as u8 & 1) ^ 1);
            }
            Generated {
                private: SecretBytes::new(k),
                public: None,
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

/// Raw PKCS#1 v1.5 RSA (`CKM_RSA_PKCS` over bytes that are not a DigestInfo: type-1 padding
/// of the caller's data, as TLS 1.0/1.1 and some legacy signers use). aws-lc-rs's safe API
/// has no such operation, so the layer that may call AWS-LC directly (the PKCS#11 module)
/// provides it. Implementations must use a constant-time, blinded private-key operation
/// (AWS-LC's `RSA_sign_raw` is).
pub trait RawRsa: Send + Sync {
    /// Signs `data` (at most the modulus length less 11 bytes) with the PKCS#8 RSA key.
    fn sign(&self, pkcs8: &[u8], data: &[u8]) -> Option<Vec<u8>>;
    /// Whether `sig` is a type-1 padded signature of exactly `data` under the SPKI key.
    fn verify(&self, spki: &[u8], data: &[u8], sig: &[u8]) -> Option<bool>;
    /// RSASSA-PSS of a `hash` digest (MGF1 with the same hash, salt as long as the hash),
    /// for the hashes aws-lc-rs's PSS does not sign with and for caller-made digests.
    fn sign_pss(&self, pkcs8: &[u8], hash: Hash, digest: &[u8]) -> Option<Vec<u8>>;
    /// Whether `sig` is such a PSS signature of `digest`.
    fn verify_pss(&self, spki: &[u8], hash: Hash, digest: &[u8], sig: &[u8]) -> Option<bool>;
    /// The raw private operation (no padding removed) on a ciphertext of exactly the
    /// modulus length that is below the modulus; `None` otherwise. Constant time and blinded:
    /// [`crate::rsa_pkcs1_decrypt`] unpads it without branching on it.
    fn decrypt_raw(&self, pkcs8: &[u8], ciphertext: &[u8]) -> Option<SecretBytes>;
    /// PKCS#1 v1.5 type-2 encryption of `data` (at most the modulus length less 11 bytes).
    fn encrypt_pkcs1(&self, spki: &[u8], data: &[u8]) -> Option<Vec<u8>>;
}

/// The raw RSA provider, for the operations only it offers.
fn raw_rsa(what: &str) -> Result<&'static dyn RawRsa> {
    RAW_RSA.get().copied().ok_or_else(|| {
        HsmError::InvalidInput(format!(
            "{what} is not offered here (no raw RSA provider is installed)"
        ))
    })
}

static RAW_RSA: std::sync::OnceLock<&'static dyn RawRsa> = std::sync::OnceLock::new();

/// Installs the raw RSA provider (the first call wins; without one, raw `CKM_RSA_PKCS` takes
/// DigestInfo input only).
pub fn install_raw_rsa(provider: &'static dyn RawRsa) {
    let _ = RAW_RSA.set(provider);
}

/// Longest MAC any [`MacContext`] writes (HMAC-SHA-512).
pub const MAX_MAC_LEN: usize = 64;

/// An HMAC context keyed once and rewound for each MAC (AWS-LC's `HMAC_CTX` with
/// `HMAC_Init_ex` and no key): a MAC then costs its hashing and nothing else, where aws-lc-rs's
/// one-shot `hmac::sign` first copies the whole keyed context. Provided by the layer that may
/// call AWS-LC directly (the PKCS#11 module), like [`RawRsa`]. Implementations wipe the keyed
/// state when dropped.
pub trait MacContext: Send {
    /// The MAC of `data` under the context's key and hash, written to the start of `out`;
    /// its length, or `None` if the library failed.
    fn mac(&mut self, data: &[u8], out: &mut [u8; MAX_MAC_LEN]) -> Option<usize>;
}

/// Makes [`MacContext`]s.
pub trait MacProvider: Send + Sync {
    /// A context for HMAC with `hash` under `key`, or `None` if the library refused.
    fn keyed(&self, hash: Hash, key: &[u8]) -> Option<Box<dyn MacContext>>;
}

static MAC_PROVIDER: std::sync::OnceLock<&'static dyn MacProvider> = std::sync::OnceLock::new();

/// Installs the MAC context provider (the first call wins; without one, every MAC goes through
/// aws-lc-rs's one-shot API).
pub fn install_mac_provider(provider: &'static dyn MacProvider) {
    let _ = MAC_PROVIDER.set(provider);
}

/// A caller's reusable HMAC context (one per PKCS#11 session): keyed for the key and hash it
/// was last used with, and made again when either changes. It identifies the key by its
/// allocation, held weakly so that the address cannot be reused by another key meanwhile;
/// it never keeps a key alive, but its context holds the keyed state: clear it when the key
/// must leave memory (logout).
#[derive(Default)]
pub struct MacSlot(Option<(std::sync::Weak<Key>, Hash, Box<dyn MacContext>)>);

impl MacSlot {
    /// Drops the context (and its keyed state).
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl fmt::Debug for MacSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some((_, h, _)) => write!(f, "MacSlot(HMAC-{h:?}, <redacted>)"),
            None => write!(f, "MacSlot(empty)"),
        }
    }
}

/// The HMAC of `data` with `key` through `slot`'s context (made or re-keyed as needed), into
/// `out`; `Ok(None)` when this is not an HMAC of a generic secret or no provider is installed
/// (the caller then uses [`sign`]).
pub(crate) fn mac_into(
    key: &std::sync::Arc<Key>,
    mech: Mechanism,
    data: &[u8],
    slot: &mut MacSlot,
    out: &mut [u8; MAX_MAC_LEN],
) -> Result<Option<usize>> {
    let (KeySpec::Generic(_), Mechanism::Hmac(h)) = (key.spec, mech) else {
        return Ok(None);
    };
    let Some(provider) = MAC_PROVIDER.get() else {
        return Ok(None);
    };
    // Taken out while in use: a failed MAC leaves the slot empty, to be keyed afresh.
    let (for_key, mut ctx) = match slot.0.take() {
        Some((k, sh, ctx)) if sh == h && std::ptr::eq(k.as_ptr(), std::sync::Arc::as_ptr(key)) => {
            (k, ctx)
        }
        _ => (
            std::sync::Arc::downgrade(key),
            provider
                .keyed(h, key.bytes.expose())
                .ok_or_else(|| failed("HMAC"))?,
        ),
    };
    match ctx.mac(data, out) {
        Some(n) if n == h.len() => {
            slot.0 = Some((for_key, h, ctx));
            Ok(Some(n))
        }
        _ => Err(failed("HMAC")),
    }
}

/// A private or secret key unsealed and parsed once, for repeated use: what a logged-in
/// session keeps in its key cache so that an operation does not read, unseal and parse the
/// key again. Dropping it zeroizes the raw bytes; AWS-LC cleanses the parsed forms as it
/// frees them.
pub struct Key {
    spec: KeySpec,
    bytes: SecretBytes,
    parsed: Parsed,
    /// HMAC keys by hash, made on first use (an HMAC key is two hashed key blocks).
    hmac: [std::sync::OnceLock<aws_lc_rs::hmac::Key>; 5],
}

enum Parsed {
    Rsa(rsa::KeyPair),
    Ec(signature::EcdsaKeyPair),
    Ed(signature::Ed25519KeyPair),
    Aes(aead::LessSafeKey),
    /// Generic secrets and 3DES keys: used from their bytes.
    Raw,
}

impl Key {
    /// Parses key material of the given spec: PKCS#8 for private keys, raw bytes for secret
    /// keys. Material that does not parse as its spec says is tamper.
    pub fn parse(spec: KeySpec, bytes: SecretBytes) -> Result<Key> {
        let bad = |what: &str| HsmError::Tamper(format!("stored {what} key does not parse"));
        let parsed = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                Parsed::Rsa(rsa::KeyPair::from_pkcs8(bytes.expose()).map_err(|_| bad("RSA"))?)
            }
            KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => Parsed::Ec(
                signature::EcdsaKeyPair::from_pkcs8(ecdsa_alg(spec)?, bytes.expose())
                    .map_err(|_| bad("EC"))?,
            ),
            KeySpec::Ed25519 => Parsed::Ed(
                signature::Ed25519KeyPair::from_pkcs8(bytes.expose())
                    .map_err(|_| bad("Ed25519"))?,
            ),
            KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => {
                Parsed::Aes(aes_key(spec, &bytes)?)
            }
            _ => Parsed::Raw,
        };
        Ok(Key {
            spec,
            bytes,
            parsed,
            hmac: Default::default(),
        })
    }

    /// The key's algorithm and size.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The raw material (PKCS#8 or secret bytes), for wrapping it.
    pub fn material(&self) -> &SecretBytes {
        &self.bytes
    }

    fn hmac_key(&self, h: Hash) -> &aws_lc_rs::hmac::Key {
        use aws_lc_rs::hmac;
        let (i, alg) = match h {
            Hash::Sha1 => (0, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
            Hash::Sha224 => (1, hmac::HMAC_SHA224),
            Hash::Sha256 => (2, hmac::HMAC_SHA256),
            Hash::Sha384 => (3, hmac::HMAC_SHA384),
            Hash::Sha512 => (4, hmac::HMAC_SHA512),
        };
        self.hmac[i].get_or_init(|| hmac::Key::new(alg, self.bytes.expose()))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, <redacted>)", self.spec)
    }
}

fn ecdsa_alg(spec: KeySpec) -> Result<&'static signature::EcdsaSigningAlgorithm> {
    match spec {
        KeySpec::EcP256 => Ok(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        KeySpec::EcP384 => Ok(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        KeySpec::EcP521 => Ok(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
        _ => Err(HsmError::InvalidInput(format!("{spec} is not an EC key"))),
    }
}

fn mismatch(spec: KeySpec, mech: Mechanism) -> HsmError {
    HsmError::InvalidInput(format!("mechanism {mech} cannot be used with a {spec} key"))
}

fn is_rsa(spec: KeySpec) -> bool {
    matches!(spec, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
}

fn rsa_sign_encoding(mech: Mechanism) -> Option<&'static signature::RsaSignatureEncoding> {
    Some(match mech {
        Mechanism::RsaPkcs1(Hash::Sha256) => &signature::RSA_PKCS1_SHA256,
        Mechanism::RsaPkcs1(Hash::Sha384) => &signature::RSA_PKCS1_SHA384,
        Mechanism::RsaPkcs1(Hash::Sha512) => &signature::RSA_PKCS1_SHA512,
        Mechanism::RsaPss(Hash::Sha256) => &signature::RSA_PSS_SHA256,
        Mechanism::RsaPss(Hash::Sha384) => &signature::RSA_PSS_SHA384,
        Mechanism::RsaPss(Hash::Sha512) => &signature::RSA_PSS_SHA512,
        _ => return None,
    })
}

fn rsa_verify_params(mech: Mechanism) -> Option<&'static signature::RsaParameters> {
    Some(match mech {
        Mechanism::RsaPkcs1(Hash::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        Mechanism::RsaPkcs1(Hash::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        Mechanism::RsaPkcs1(Hash::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        Mechanism::RsaPss(Hash::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
        Mechanism::RsaPss(Hash::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
        Mechanism::RsaPss(Hash::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// Splits a PKCS#1 v1.5 DigestInfo into its hash and digest.
fn parse_digest_info(data: &[u8]) -> Result<(Hash, &[u8])> {
    for h in [
        Hash::Sha256,
        Hash::Sha384,
        Hash::Sha512,
        Hash::Sha224,
        Hash::Sha1,
    ] {
        let p = h.digest_info_prefix();
        if data.len() == p.len() + h.len() && data.starts_with(p) {
            return Ok((h, &data[p.len()..]));
        }
    }
    Err(HsmError::InvalidInput(
        "CKM_RSA_PKCS signing takes a DigestInfo of SHA-224, -256, -384 or -512".into(),
    ))
}

/// The digest an ECDSA key signs over: the caller's hash brought to the curve's length the
/// way ECDSA reads a hash (shorter: as the same integer, left-padded; longer: leftmost bytes).
fn ecdsa_digest(spec: KeySpec, hash: &[u8]) -> Result<aws_lc_rs::digest::Digest> {
    let alg = match spec {
        KeySpec::EcP256 => Hash::Sha256,
        KeySpec::EcP384 => Hash::Sha384,
        KeySpec::EcP521 => Hash::Sha512,
        _ => {
            return Err(HsmError::InvalidInput(format!(
                "{spec} is not an ECDSA key"
            )))
        }
    };
    let n = alg.len();
    if hash.is_empty() || hash.len() > 64 {
        return Err(HsmError::InvalidInput(
            "ECDSA takes a hash of 1 to 64 bytes".into(),
        ));
    }
    let mut v = vec![0u8; n];
    if hash.len() >= n {
        v.copy_from_slice(&hash[..n]);
    } else {
        v[n - hash.len()..].copy_from_slice(hash);
    }
    aws_lc_rs::digest::Digest::import_less_safe(&v, alg.alg()).map_err(|_| failed("digest import"))
}

fn ecdsa_input(spec: KeySpec, mech: Mechanism, data: &[u8]) -> Result<aws_lc_rs::digest::Digest> {
    match mech {
        Mechanism::Ecdsa(Some(h)) => ecdsa_digest(spec, &h.digest(data)),
        _ => ecdsa_digest(spec, data),
    }
}

/// Signs `data` with a private key, or MACs it with a secret key.
pub fn sign(key: &Key, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
    let spec = key.spec;
    match (&key.parsed, mech) {
        (Parsed::Ec(kp), Mechanism::Ecdsa(_)) => {
            let sig = kp
                .sign_digest(&ecdsa_input(spec, mech, data)?)
                .map_err(|_| failed("ECDSA signing"))?;
            Ok(sig.as_ref().to_vec())
        }
        (
            Parsed::Rsa(kp),
            Mechanism::RsaPkcs1(_)
            | Mechanism::RsaPss(_)
            | Mechanism::RsaPssRaw(_)
            | Mechanism::RsaPkcs1Raw,
        ) => {
            let mut sig = vec![0u8; kp.public_modulus_len()];
            // Raw PKCS#1 v1.5 pads whatever it is given (a DigestInfo of any hash, or other
            // bytes); without the raw provider, only DigestInfos of hashes aws-lc-rs knows.
            if let (Mechanism::RsaPkcs1Raw, Some(provider)) = (mech, RAW_RSA.get()) {
                if data.len() + 11 > kp.public_modulus_len() {
                    return Err(HsmError::InvalidInput(format!(
                        "CKM_RSA_PKCS signs at most {} bytes with this key",
                        kp.public_modulus_len() - 11
                    )));
                }
                return provider
                    .sign(key.bytes.expose(), data)
                    .ok_or_else(|| failed("raw RSA signing"));
            }
            // PSS over a caller's digest, or with SHA-1/SHA-224: through the raw provider.
            if let Mechanism::RsaPssRaw(h) | Mechanism::RsaPss(h) = mech {
                if matches!(mech, Mechanism::RsaPssRaw(_)) || rsa_sign_encoding(mech).is_none() {
                    let digest = match mech {
                        Mechanism::RsaPssRaw(_) if data.len() != h.len() => {
                            return Err(HsmError::InvalidInput(format!(
                                "CKM_RSA_PKCS_PSS with {h:?} signs a {}-byte digest",
                                h.len()
                            )))
                        }
                        Mechanism::RsaPssRaw(_) => data.to_vec(),
                        _ => h.digest(data),
                    };
                    let provider = RAW_RSA.get().ok_or_else(|| mismatch(spec, mech))?;
                    return provider
                        .sign_pss(key.bytes.expose(), h, &digest)
                        .ok_or_else(|| failed("RSA-PSS signing"));
                }
            }
            // SHA-1 and SHA-224 PKCS#1 v1.5 (legacy, still asked for): aws-lc-rs signs only
            // SHA-256 and up, so the DigestInfo is built here and padded by the raw provider.
            if let (Mechanism::RsaPkcs1(h), None, Some(provider)) =
                (mech, rsa_sign_encoding(mech), RAW_RSA.get())
            {
                let di = [h.digest_info_prefix(), &h.digest(data)].concat();
                return provider
                    .sign(key.bytes.expose(), &di)
                    .ok_or_else(|| failed("RSA signing"));
            }
            if mech == Mechanism::RsaPkcs1Raw {
                let (h, d) = parse_digest_info(data)?;
                let enc = rsa_sign_encoding(Mechanism::RsaPkcs1(h)).ok_or_else(|| {
                    HsmError::InvalidInput(format!(
                        "RSA PKCS#1 v1.5 signing with {h:?} is not supported"
                    ))
                })?;
                let digest = aws_lc_rs::digest::Digest::import_less_safe(d, h.alg())
                    .map_err(|_| failed("digest import"))?;
                kp.sign_digest(enc, &digest, &mut sig)
                    .map_err(|_| failed("RSA signing"))?;
            } else {
                let enc = rsa_sign_encoding(mech).ok_or_else(|| mismatch(spec, mech))?;
                kp.sign(enc, &SystemRandom::new(), data, &mut sig)
                    .map_err(|_| failed("RSA signing"))?;
            }
            Ok(sig)
        }
        (Parsed::Ed(kp), Mechanism::Ed25519) => Ok(kp.sign(data).as_ref().to_vec()),
        (Parsed::Aes(_) | Parsed::Raw, Mechanism::AesCmac | Mechanism::Hmac(_)) => {
            mac(key, mech, data)
        }
        _ => Err(mismatch(spec, mech)),
    }
}

/// A MAC (AES-CMAC or HMAC) under a secret key.
fn mac(key: &Key, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
    use aws_lc_rs::{cmac, hmac};
    match (key.spec, mech) {
        (s, Mechanism::AesCmac) if s.is_aes() => {
            let alg = match s {
                KeySpec::Aes128 => cmac::AES_128,
                KeySpec::Aes192 => cmac::AES_192,
                _ => cmac::AES_256,
            };
            let k = cmac::Key::new(alg, key.bytes.expose())
                .map_err(|_| HsmError::Tamper("stored AES key has a bad length".into()))?;
            Ok(cmac::sign(&k, data)
                .map_err(|_| failed("AES-CMAC"))?
                .as_ref()
                .to_vec())
        }
        (KeySpec::Generic(_), Mechanism::Hmac(h)) => {
            Ok(hmac::sign(key.hmac_key(h), data).as_ref().to_vec())
        }
        (s, _) => Err(mismatch(s, mech)),
    }
}

/// ECDH (PKCS#11 `CKM_ECDH1_DERIVE` with no KDF): the shared secret (the x coordinate)
/// of an EC private key and a peer's public point (uncompressed, `04 || x || y`).
pub fn ecdh(key: &Key, peer_point: &[u8]) -> Result<SecretBytes> {
    use aws_lc_rs::agreement;
    let alg = match key.spec {
        KeySpec::EcP256 => &agreement::ECDH_P256,
        KeySpec::EcP384 => &agreement::ECDH_P384,
        KeySpec::EcP521 => &agreement::ECDH_P521,
        s => {
            return Err(HsmError::InvalidInput(format!(
                "ECDH needs an EC P-256/P-384/P-521 key, not {s}"
            )))
        }
    };
    let private = agreement::PrivateKey::from_private_key_der(alg, key.bytes.expose())
        .map_err(|_| HsmError::Tamper("stored EC key does not parse".into()))?;
    agreement::agree(
        &private,
        agreement::UnparsedPublicKey::new(alg, peer_point),
        HsmError::InvalidInput(format!(
            "the peer's public value is not a point on {}",
            key.spec
        )),
        |shared| Ok(SecretBytes::new(shared.to_vec())),
    )
}

/// Checks a MAC (AES-CMAC or HMAC) in constant time. `Ok(false)` means a bad MAC.
pub fn verify_mac(key: &Key, mech: Mechanism, data: &[u8], mac_value: &[u8]) -> Result<bool> {
    Ok(crate::crypto::ct_eq(&mac(key, mech, data)?, mac_value))
}

/// Length of what `sign` returns for this key and mechanism.
pub fn signature_len(spec: KeySpec, mech: Mechanism) -> usize {
    match (spec, mech) {
        (_, Mechanism::AesCmac) => 16,
        (_, Mechanism::Hmac(h)) => h.len(),
        (KeySpec::Rsa2048, _) => 256,
        (KeySpec::Rsa3072, _) => 384,
        (KeySpec::Rsa4096, _) => 512,
        (KeySpec::EcP256 | KeySpec::Ed25519, _) => 64,
        (KeySpec::EcP384, _) => 96,
        (KeySpec::EcP521, _) => 132,
        _ => 0,
    }
}

/// Verifies a signature with a public key (SPKI DER). `Ok(false)` means a bad signature.
/// MACs are checked with [`verify_mac`].
pub fn verify(
    spec: KeySpec,
    public: &[u8],
    mech: Mechanism,
    data: &[u8],
    sig: &[u8],
) -> Result<bool> {
    match (spec, mech) {
        (KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521, Mechanism::Ecdsa(_)) => {
            let alg: &'static signature::EcdsaVerificationAlgorithm = match spec {
                KeySpec::EcP256 => &signature::ECDSA_P256_SHA256_FIXED,
                KeySpec::EcP384 => &signature::ECDSA_P384_SHA384_FIXED,
                _ => &signature::ECDSA_P521_SHA512_FIXED,
            };
            let digest = ecdsa_input(spec, mech, data)?;
            Ok(signature::UnparsedPublicKey::new(alg, public)
                .verify_digest(&digest, sig)
                .is_ok())
        }
        (s, Mechanism::RsaPkcs1Raw) if is_rsa(s) => {
            if let Some(p) = RAW_RSA.get() {
                return Ok(p.verify(public, data, sig).unwrap_or(false));
            }
            let (h, d) = match parse_digest_info(data) {
                Ok(x) => x,
                Err(_) => return Ok(false),
            };
            let Some(params) = rsa_verify_params(Mechanism::RsaPkcs1(h)) else {
                return Ok(false);
            };
            let digest = aws_lc_rs::digest::Digest::import_less_safe(d, h.alg())
                .map_err(|_| failed("digest import"))?;
            Ok(signature::UnparsedPublicKey::new(params, public)
                .verify_digest(&digest, sig)
                .is_ok())
        }
        (s, Mechanism::RsaPssRaw(h) | Mechanism::RsaPss(h))
            if is_rsa(s)
                && (matches!(mech, Mechanism::RsaPssRaw(_))
                    || rsa_verify_params(mech).is_none()) =>
        {
            let provider = RAW_RSA.get().ok_or_else(|| mismatch(spec, mech))?;
            let digest = match mech {
                Mechanism::RsaPssRaw(_) if data.len() != h.len() => return Ok(false),
                Mechanism::RsaPssRaw(_) => data.to_vec(),
                _ => h.digest(data),
            };
            Ok(provider
                .verify_pss(public, h, &digest, sig)
                .unwrap_or(false))
        }
        (s, Mechanism::RsaPkcs1(h)) if is_rsa(s) && rsa_verify_params(mech).is_none() => {
            let provider = RAW_RSA.get().ok_or_else(|| mismatch(spec, mech))?;
            let di = [h.digest_info_prefix(), &h.digest(data)].concat();
            Ok(provider.verify(public, &di, sig).unwrap_or(false))
        }
        (s, Mechanism::RsaPkcs1(_) | Mechanism::RsaPss(_)) if is_rsa(s) => {
            let params = rsa_verify_params(mech).ok_or_else(|| mismatch(spec, mech))?;
            Ok(signature::UnparsedPublicKey::new(params, public)
                .verify(data, sig)
                .is_ok())
        }
        (KeySpec::Ed25519, Mechanism::Ed25519) => Ok(signature::UnparsedPublicKey::new(
            &signature::ED25519,
            public,
        )
        .verify(data, sig)
        .is_ok()),
        _ => Err(mismatch(spec, mech)),
    }
}

fn oaep_alg(mech: Mechanism) -> Option<&'static rsa::OaepAlgorithm> {
    Some(match mech {
        Mechanism::RsaOaep(Hash::Sha1) => &rsa::OAEP_SHA1_MGF1SHA1,
        Mechanism::RsaOaep(Hash::Sha256) => &rsa::OAEP_SHA256_MGF1SHA256,
        Mechanism::RsaOaep(Hash::Sha384) => &rsa::OAEP_SHA384_MGF1SHA384,
        Mechanism::RsaOaep(Hash::Sha512) => &rsa::OAEP_SHA512_MGF1SHA512,
        _ => return None,
    })
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

/// Encrypts with a secret key.
pub fn encrypt(key: &Key, mech: Mechanism, p: &Params, data: &[u8]) -> Result<Vec<u8>> {
    match (&key.parsed, mech) {
        (Parsed::Aes(_), Mechanism::AesGcm) => {
            let mut buf = vec![0; data.len() + GCM_TAG_LEN];
            buf[..data.len()].copy_from_slice(data);
            let n = encrypt_in_place(key, mech, p, &mut buf, data.len())?;
            buf.truncate(n);
            Ok(buf)
        }
        (
            _,
            Mechanism::AesEcb
            | Mechanism::AesCbc
            | Mechanism::AesCbcPad
            | Mechanism::AesCtr
            | Mechanism::Des3Ecb
            | Mechanism::Des3Cbc,
        ) => block_cipher(key.spec, key.bytes.expose(), mech, p, data, true),
        _ => Err(mismatch(key.spec, mech)),
    }
}

/// AES-GCM's tag length (the only one offered).
pub const GCM_TAG_LEN: usize = 16;

/// Encrypts the first `len` bytes of `buf` where they lie, returning the ciphertext's length,
/// which must fit in `buf` (AES-GCM: `len` + [`GCM_TAG_LEN`]): for callers that own an
/// output buffer already, so that the message is not copied again. Other mechanisms than
/// AES-GCM go through [`encrypt`] and are copied back.
pub fn encrypt_in_place(
    key: &Key,
    mech: Mechanism,
    p: &Params,
    buf: &mut [u8],
    len: usize,
) -> Result<usize> {
    let too_small = || HsmError::InvalidInput("the output buffer is too small".into());
    if len > buf.len() {
        return Err(too_small());
    }
    match (&key.parsed, mech) {
        (Parsed::Aes(k), Mechanism::AesGcm) => {
            let (msg, rest) = buf.split_at_mut(len);
            let tag_out = rest.get_mut(..GCM_TAG_LEN).ok_or_else(too_small)?;
            let tag = k
                .seal_in_place_separate_tag(gcm_nonce(p)?, aead::Aad::from(&p.aad), msg)
                .map_err(|_| failed("AES-GCM encryption"))?;
            tag_out.copy_from_slice(tag.as_ref());
            Ok(len + GCM_TAG_LEN)
        }
        _ => {
            let ct = encrypt(key, mech, p, &buf[..len])?;
            buf.get_mut(..ct.len())
                .ok_or_else(too_small)?
                .copy_from_slice(&ct);
            Ok(ct.len())
        }
    }
}

/// Encrypts with an RSA public key (SPKI DER): RSA-OAEP.
pub fn encrypt_public(
    spec: KeySpec,
    public: &[u8],
    mech: Mechanism,
    p: &Params,
    data: &[u8],
) -> Result<Vec<u8>> {
    match mech {
        Mechanism::RsaOaep(_) if is_rsa(spec) => {
            let alg = oaep_alg(mech).ok_or_else(|| mismatch(spec, mech))?;
            let pk = rsa::PublicEncryptingKey::from_der(public)
                .map_err(|_| HsmError::Tamper("stored RSA public key does not parse".into()))?;
            let oaep =
                rsa::OaepPublicEncryptingKey::new(pk).map_err(|_| failed("RSA-OAEP setup"))?;
            if data.len() > oaep.max_plaintext_size(alg) {
                return Err(HsmError::InvalidInput(format!(
                    "RSA-OAEP-SHA256 with this key takes at most {} bytes",
                    oaep.max_plaintext_size(alg)
                )));
            }
            let mut out = vec![0u8; oaep.ciphertext_size()];
            let n = oaep
                .encrypt(
                    alg,
                    data,
                    &mut out,
                    (!p.label.is_empty()).then_some(p.label.as_slice()),
                )
                .map_err(|_| failed("RSA-OAEP encryption"))?
                .len();
            out.truncate(n);
            Ok(out)
        }
        Mechanism::RsaPkcs1Raw if is_rsa(spec) => {
            let max = key_bits(spec) as usize / 8 - 11;
            if data.len() > max {
                return Err(HsmError::InvalidInput(format!(
                    "RSA PKCS#1 v1.5 encryption with this key takes at most {max} bytes"
                )));
            }
            raw_rsa("CKM_RSA_PKCS encryption")?
                .encrypt_pkcs1(public, data)
                .ok_or_else(|| failed("RSA PKCS#1 v1.5 encryption"))
        }
        _ => Err(mismatch(spec, mech)),
    }
}

/// The block-cipher modes (AES ECB/CBC/CBC-PAD/CTR, 3DES ECB/CBC), both ways, with the caller's IV.
fn block_cipher(
    spec: KeySpec,
    key: &[u8],
    mech: Mechanism,
    p: &Params,
    data: &[u8],
    encrypt: bool,
) -> Result<Vec<u8>> {
    use aws_lc_rs::cipher::{
        self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
        PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
    };
    use aws_lc_rs::iv::FixedLength;
    let des = matches!(mech, Mechanism::Des3Ecb | Mechanism::Des3Cbc);
    // 3DES is offered only where a caller names it: GlobalPlatform SCP02 and card systems
    // still require it.
    #[allow(deprecated)]
    let alg = match (spec, des) {
        (KeySpec::Aes128, false) => &cipher::AES_128,
        (KeySpec::Aes192, false) => &cipher::AES_192,
        (KeySpec::Aes256, false) => &cipher::AES_256,
        (KeySpec::Des3, true) => &cipher::DES_EDE3_FOR_LEGACY_USE_ONLY,
        _ => return Err(mismatch(spec, mech)),
    };
    let block = if des { 8 } else { 16 };
    let bad_key = || HsmError::Tamper("stored key has a bad length".into());
    let unbound = || UnboundCipherKey::new(alg, key).map_err(|_| bad_key());
    let needs_iv = !matches!(mech, Mechanism::AesEcb | Mechanism::Des3Ecb);
    if needs_iv && p.iv.len() != block {
        return Err(HsmError::InvalidInput(format!(
            "{mech} needs a {block}-byte IV; got {} bytes",
            p.iv.len()
        )));
    }
    let whole_blocks = !matches!(mech, Mechanism::AesCbcPad | Mechanism::AesCtr);
    if whole_blocks && !data.len().is_multiple_of(block) {
        return Err(HsmError::InvalidInput(format!(
            "{mech} takes whole {block}-byte blocks; got {} bytes",
            data.len()
        )));
    }
    let enc_ctx = || -> Result<EncryptionContext> {
        Ok(match (needs_iv, des) {
            (false, _) => EncryptionContext::None,
            (true, false) => EncryptionContext::Iv128(FixedLength::from(
                <[u8; 16]>::try_from(&p.iv[..]).map_err(|_| failed("IV"))?,
            )),
            (true, true) => EncryptionContext::Iv64(FixedLength::from(
                <[u8; 8]>::try_from(&p.iv[..]).map_err(|_| failed("IV"))?,
            )),
        })
    };
    let dec_ctx = || -> Result<DecryptionContext> {
        Ok(match (needs_iv, des) {
            (false, _) => DecryptionContext::None,
            (true, false) => DecryptionContext::Iv128(FixedLength::from(
                <[u8; 16]>::try_from(&p.iv[..]).map_err(|_| failed("IV"))?,
            )),
            (true, true) => DecryptionContext::Iv64(FixedLength::from(
                <[u8; 8]>::try_from(&p.iv[..]).map_err(|_| failed("IV"))?,
            )),
        })
    };
    let mut buf = data.to_vec();
    if mech == Mechanism::AesCbcPad {
        if encrypt {
            let k = PaddedBlockEncryptingKey::cbc_pkcs7(unbound()?).map_err(|_| bad_key())?;
            k.less_safe_encrypt(&mut buf, enc_ctx()?)
                .map_err(|_| failed("AES-CBC encryption"))?;
            return Ok(buf);
        }
        let k = PaddedBlockDecryptingKey::cbc_pkcs7(unbound()?).map_err(|_| bad_key())?;
        let n = k
            .decrypt(&mut buf, dec_ctx()?)
            .map_err(|_| {
                HsmError::Crypto(
                    "AES-CBC-PAD decryption failed: wrong key or IV, or bad padding".into(),
                )
            })?
            .len();
        buf.truncate(n);
        return Ok(buf);
    }
    let mk_enc = |u| match mech {
        Mechanism::AesEcb | Mechanism::Des3Ecb => EncryptingKey::ecb(u),
        Mechanism::AesCtr => EncryptingKey::ctr(u),
        _ => EncryptingKey::cbc(u),
    };
    let mk_dec = |u| match mech {
        Mechanism::AesEcb | Mechanism::Des3Ecb => DecryptingKey::ecb(u),
        Mechanism::AesCtr => DecryptingKey::ctr(u),
        _ => DecryptingKey::cbc(u),
    };
    if encrypt {
        mk_enc(unbound()?)
            .map_err(|_| bad_key())?
            .less_safe_encrypt(&mut buf, enc_ctx()?)
            .map_err(|_| failed("encryption"))?;
    } else {
        mk_dec(unbound()?)
            .map_err(|_| bad_key())?
            .decrypt(&mut buf, dec_ctx()?)
            .map_err(|_| failed("decryption"))?;
    }
    Ok(buf)
}

/// Decrypts with the secret or private key. A wrong key or altered ciphertext is an error.
pub fn decrypt(key: &Key, mech: Mechanism, p: &Params, data: &[u8]) -> Result<SecretBytes> {
    let (spec, private) = (key.spec, &key.bytes);
    match (&key.parsed, mech) {
        (Parsed::Aes(k), Mechanism::AesGcm) => {
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
        (Parsed::Rsa(_), Mechanism::RsaOaep(_)) => {
            let alg = oaep_alg(mech).ok_or_else(|| mismatch(spec, mech))?;
            let k = rsa::PrivateDecryptingKey::from_pkcs8(private.expose())
                .map_err(|_| HsmError::Tamper("stored RSA key does not parse".into()))?;
            let oaep =
                rsa::OaepPrivateDecryptingKey::new(k).map_err(|_| failed("RSA-OAEP setup"))?;
            let mut out = vec![0u8; oaep.min_output_size()];
            let n = oaep
                .decrypt(
                    alg,
                    data,
                    &mut out,
                    (!p.label.is_empty()).then_some(p.label.as_slice()),
                )
                .map_err(|_| HsmError::Crypto("RSA-OAEP decryption failed".into()))?
                .len();
            out.truncate(n);
            Ok(SecretBytes::new(out))
        }
        (Parsed::Rsa(_), Mechanism::RsaPkcs1Raw) => {
            // A wrong length, or a value not below the modulus, is public knowledge; a bad
            // padding inside is not, and never shows (implicit rejection).
            let em = raw_rsa("CKM_RSA_PKCS decryption")?
                .decrypt_raw(private.expose(), data)
                .ok_or_else(|| {
                    HsmError::Crypto(
                        "RSA decryption failed: the ciphertext is not the modulus length, or not below the modulus".into(),
                    )
                })?;
            Ok(crate::rsa_pkcs1_decrypt::unpad(
                private.expose(),
                data,
                em.expose(),
            ))
        }
        (
            _,
            Mechanism::AesEcb
            | Mechanism::AesCbc
            | Mechanism::AesCbcPad
            | Mechanism::AesCtr
            | Mechanism::Des3Ecb
            | Mechanism::Des3Cbc,
        ) => block_cipher(spec, private.expose(), mech, p, data, false).map(SecretBytes::new),
        _ => Err(mismatch(spec, mech)),
    }
}

/// Wraps key material (a raw secret key or a PKCS#8 private key) under a wrapping key: AES
/// KW/KWP with a secret AES key, or RSA-OAEP with an RSA public key (SPKI).
pub fn wrap(
    wrapper_spec: KeySpec,
    wrapper: &[u8],
    mech: Mechanism,
    p: &Params,
    key: &[u8],
) -> Result<Vec<u8>> {
    use aws_lc_rs::key_wrap::{AesKek, KeyWrap, KeyWrapPadded, AES_128, AES_256};
    match mech {
        Mechanism::AesKwPkcs7 => {
            let pad = 8 - key.len() % 8;
            let mut padded = zeroize::Zeroizing::new(key.to_vec());
            padded.extend(std::iter::repeat_n(pad as u8, pad));
            wrap(wrapper_spec, wrapper, Mechanism::AesKw, p, &padded)
        }
        Mechanism::AesKw | Mechanism::AesKwp => {
            let cipher = match wrapper_spec {
                KeySpec::Aes128 => &AES_128,
                KeySpec::Aes256 => &AES_256,
                _ => return Err(mismatch(wrapper_spec, mech)),
            };
            let kek = AesKek::new(cipher, wrapper)
                .map_err(|_| HsmError::Tamper("stored AES key has a bad length".into()))?;
            let mut out = vec![0u8; key.len().div_ceil(8) * 8 + 8];
            let n = if mech == Mechanism::AesKw {
                if !key.len().is_multiple_of(8) || key.len() < 16 {
                    return Err(HsmError::InvalidInput("AES key wrap (KW) takes keys of whole 8-byte blocks, at least 16 bytes; use KWP".into()));
                }
                kek.wrap(key, &mut out)
                    .map_err(|_| failed("AES key wrap"))?
                    .len()
            } else {
                kek.wrap_with_padding(key, &mut out)
                    .map_err(|_| failed("AES key wrap"))?
                    .len()
            };
            out.truncate(n);
            Ok(out)
        }
        Mechanism::RsaOaep(_) | Mechanism::RsaPkcs1Raw => {
            encrypt_public(wrapper_spec, wrapper, mech, p, key)
        }
        _ => Err(mismatch(wrapper_spec, mech)),
    }
}

/// Unwraps what [`wrap`] made. A wrong key or altered input is an error, never wrong material.
pub fn unwrap(
    unwrapper_spec: KeySpec,
    unwrapper: &SecretBytes,
    mech: Mechanism,
    p: &Params,
    wrapped: &[u8],
) -> Result<SecretBytes> {
    use aws_lc_rs::key_wrap::{AesKek, KeyWrap, KeyWrapPadded, AES_128, AES_256};
    match mech {
        Mechanism::AesKwPkcs7 => {
            let m = unwrap(unwrapper_spec, unwrapper, Mechanism::AesKw, p, wrapped)?;
            let b = m.expose();
            let pad = b.last().copied().unwrap_or(0) as usize;
            let ok = (1..=8).contains(&pad)
                && pad <= b.len()
                && b[b.len() - pad..].iter().all(|x| *x as usize == pad);
            if !ok {
                return Err(HsmError::Crypto("unwrap failed: bad padding".into()));
            }
            Ok(SecretBytes::new(b[..b.len() - pad].to_vec()))
        }
        Mechanism::AesKw | Mechanism::AesKwp => {
            let cipher = match unwrapper_spec {
                KeySpec::Aes128 => &AES_128,
                KeySpec::Aes256 => &AES_256,
                _ => return Err(mismatch(unwrapper_spec, mech)),
            };
            let kek = AesKek::new(cipher, unwrapper.expose())
                .map_err(|_| HsmError::Tamper("stored AES key has a bad length".into()))?;
            let mut out = vec![0u8; wrapped.len()];
            let bad = || {
                HsmError::Crypto("unwrap failed: wrong key, or the wrapped key was altered".into())
            };
            let n = if mech == Mechanism::AesKw {
                kek.unwrap(wrapped, &mut out).map_err(|_| bad())?.len()
            } else {
                kek.unwrap_with_padding(wrapped, &mut out)
                    .map_err(|_| bad())?
                    .len()
            };
            out.truncate(n);
            Ok(SecretBytes::new(out))
        }
        Mechanism::RsaOaep(_) | Mechanism::RsaPkcs1Raw => decrypt(
            &Key::parse(unwrapper_spec, unwrapper.clone())?,
            mech,
            p,
            wrapped,
        ),
        _ => Err(mismatch(unwrapper_spec, mech)),
    }
}

/// The AES key type of a value `len` bytes long, if there is one.
pub fn aes_spec_for_len(len: usize) -> Option<KeySpec> {
    match len {
        16 => Some(KeySpec::Aes128),
        24 => Some(KeySpec::Aes192),
        32 => Some(KeySpec::Aes256),
        _ => None,
    }
}

/// Length of what [`wrap`] returns for `key_len` bytes of key material.
pub fn wrapped_len(wrapper_spec: KeySpec, mech: Mechanism, key_len: usize) -> usize {
    match mech {
        Mechanism::AesKw | Mechanism::AesKwp => key_len.div_ceil(8) * 8 + 8,
        Mechanism::AesKwPkcs7 => (key_len / 8 + 1) * 8 + 8,
        _ => signature_len(wrapper_spec, mech),
    }
}

/// Identifies a PKCS#8 private key this HSM can hold: its spec and public key (SPKI).
pub fn identify_private_key(pkcs8: &[u8]) -> Result<(KeySpec, Vec<u8>)> {
    if let Ok(kp) = rsa::KeyPair::from_pkcs8(pkcs8) {
        let spec = match kp.public_modulus_len() {
            256 => KeySpec::Rsa2048,
            384 => KeySpec::Rsa3072,
            512 => KeySpec::Rsa4096,
            n => {
                return Err(HsmError::InvalidInput(format!(
                    "RSA keys of {} bits are not held here",
                    n * 8
                )))
            }
        };
        let public = kp
            .public_key()
            .as_der()
            .map_err(|_| failed("RSA public key encoding"))?;
        return Ok((spec, public.as_ref().to_vec()));
    }
    for spec in [KeySpec::EcP256, KeySpec::EcP384, KeySpec::EcP521] {
        if let Ok(kp) = signature::EcdsaKeyPair::from_pkcs8(ecdsa_alg(spec)?, pkcs8) {
            let public = kp
                .public_key()
                .as_der()
                .map_err(|_| failed("EC public key encoding"))?;
            return Ok((spec, public.as_ref().to_vec()));
        }
    }
    if let Ok(kp) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
        let public = kp
            .public_key()
            .as_der()
            .map_err(|_| failed("Ed25519 public key encoding"))?;
        return Ok((KeySpec::Ed25519, public.as_ref().to_vec()));
    }
    Err(HsmError::InvalidInput(
        "the unwrapped data is not a PKCS#8 RSA, EC P-256/P-384/P-521 or Ed25519 private key"
            .into(),
    ))
}

/// A DER element: tag, definite length, content.
pub(crate) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend([0x81, n as u8]),
        _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of a big-endian unsigned value.
pub(crate) fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = match v.iter().position(|b| *b != 0) {
        Some(i) => &v[i..],
        None => &[0u8][..],
    };
    let mut c = Vec::with_capacity(v.len() + 1);
    if v[0] & 0x80 != 0 {
        c.push(0);
    }
    c.extend_from_slice(v);
    der(0x02, &c)
}

/// The SubjectPublicKeyInfo of a public key given as PKCS#11 gives it (RSA modulus and
/// exponent; EC or Edwards curve and point), checked by parsing it back for verification.
/// Returns the key's spec and the SPKI DER.
pub fn public_key_from_parts(parts: PublicParts<'_>) -> Result<(KeySpec, Vec<u8>)> {
    const RSA_ALG: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let bad = |what: &str| HsmError::InvalidInput(format!("not a valid {what} public key"));
    let bits = |k: &[u8]| {
        let mut b = vec![0u8];
        b.extend_from_slice(k);
        der(0x03, &b)
    };
    match parts {
        PublicParts::Rsa { modulus, exponent } => {
            let key = der(0x30, &[der_uint(modulus), der_uint(exponent)].concat());
            let spki = der(0x30, &[RSA_ALG.to_vec(), bits(&key)].concat());
            let parsed = rsa::PublicKey::from_der(&spki).map_err(|_| bad("RSA"))?;
            let spec = match parsed.modulus().big_endian_without_leading_zero().len() * 8 {
                2048 => KeySpec::Rsa2048,
                3072 => KeySpec::Rsa3072,
                4096 => KeySpec::Rsa4096,
                n => {
                    return Err(HsmError::InvalidInput(format!(
                        "RSA keys of 2048, 3072 or 4096 bits only, not {n}"
                    )))
                }
            };
            Ok((spec, spki))
        }
        PublicParts::Ec { params, point } => {
            let spec = spec_from_ec_params(params)
                .ok_or_else(|| HsmError::InvalidInput("unsupported curve".into()))?;
            let (alg_id, alg): (Vec<u8>, &'static dyn signature::VerificationAlgorithm) = match spec
            {
                KeySpec::Ed25519 => (
                    der(0x30, &[0x06, 0x03, 0x2b, 0x65, 0x70]),
                    &signature::ED25519,
                ),
                KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
                    let curve = ec_params(spec).ok_or_else(|| bad("EC"))?;
                    let alg: &'static dyn signature::VerificationAlgorithm = match spec {
                        KeySpec::EcP256 => &signature::ECDSA_P256_SHA256_FIXED,
                        KeySpec::EcP384 => &signature::ECDSA_P384_SHA384_FIXED,
                        _ => &signature::ECDSA_P521_SHA512_FIXED,
                    };
                    (der(0x30, &[EC_PUBLIC_KEY, curve].concat()), alg)
                }
                _ => return Err(bad("EC")),
            };
            let spki = der(0x30, &[alg_id, bits(point)].concat());
            signature::ParsedPublicKey::new(alg, &spki).map_err(|_| bad(&spec.to_string()))?;
            Ok((spec, spki))
        }
    }
}

/// A public key's parts as PKCS#11 templates carry them.
#[derive(Clone, Copy, Debug)]
pub enum PublicParts<'a> {
    /// `CKA_MODULUS`, `CKA_PUBLIC_EXPONENT`.
    Rsa {
        /// Big-endian modulus.
        modulus: &'a [u8],
        /// Big-endian public exponent.
        exponent: &'a [u8],
    },
    /// `CKA_EC_PARAMS` and the raw point (uncompressed, or the Ed25519 key).
    Ec {
        /// DER of the curve's OID (or the `edwards25519` name).
        params: &'a [u8],
        /// The point itself, without the OCTET STRING wrapping of `CKA_EC_POINT`.
        point: &'a [u8],
    },
}

/// DER of the named curve's OID, as `CKA_EC_PARAMS` carries it.
pub fn ec_params(spec: KeySpec) -> Option<&'static [u8]> {
    match spec {
        KeySpec::EcP256 => Some(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        KeySpec::EcP384 => Some(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        KeySpec::EcP521 => Some(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23]),
        KeySpec::Ed25519 => Some(&[0x06, 0x03, 0x2b, 0x65, 0x70]),
        _ => None,
    }
}

/// The key spec a `CKA_EC_PARAMS` value names (OID, or the `edwards25519` printable string).
pub fn spec_from_ec_params(params: &[u8]) -> Option<KeySpec> {
    const ED25519_NAME: &[u8] = &[
        0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
    ];
    if params == ED25519_NAME {
        return Some(KeySpec::Ed25519);
    }
    [
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::EcP521,
        KeySpec::Ed25519,
    ]
    .into_iter()
    .find(|s| ec_params(*s) == Some(params))
}

/// Bytes of a public point on the curve of `spec` (uncompressed, or the Ed25519 key).
fn point_len(spec: KeySpec) -> Option<usize> {
    match spec {
        KeySpec::EcP256 => Some(65),
        KeySpec::EcP384 => Some(97),
        KeySpec::EcP521 => Some(133),
        KeySpec::Ed25519 => Some(32),
        _ => None,
    }
}

/// A public point as PKCS#11 callers pass it (`CKA_EC_POINT`, ECDH public data): raw, or
/// wrapped in a DER OCTET STRING. The raw reading wins when the length is a raw point's,
/// since a raw point can also look like a short OCTET STRING.
pub fn point_from_pkcs11(spec: KeySpec, value: &[u8]) -> Option<&[u8]> {
    let n = point_len(spec)?;
    if value.len() == n {
        return Some(value);
    }
    let body = value.get(value.len().checked_sub(n)?..)?;
    // Exactly the OCTET STRING of those bytes, header and all.
    (der(0x04, body) == value).then_some(body)
}

/// `CKA_EC_POINT`: the public point (or Ed25519 key) as a DER OCTET STRING, from our SPKI.
pub fn ec_point(spec: KeySpec, spki: &[u8]) -> Option<Vec<u8>> {
    let n = point_len(spec)?;
    // The SPKI ends with BIT STRING { 0 unused bits, point }.
    if spki.len() < n + 3 || spki[spki.len() - n - 1] != 0 {
        return None;
    }
    // An OCTET STRING (P-521's 133-byte point takes the long length form).
    Some(der(0x04, &spki[spki.len() - n..]))
}

/// RSA `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT` (big-endian, no leading zeros) from an SPKI.
pub fn rsa_components(spki: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let k = rsa::PublicKey::from_der(spki).ok()?;
    Some((
        k.modulus().big_endian_without_leading_zero().to_vec(),
        k.exponent().big_endian_without_leading_zero().to_vec(),
    ))
}

/// Bits of an RSA modulus, or the curve size, for `CKA_MODULUS_BITS` and mechanism info.
/// A key's security strength in bits (NIST SP 800-57 part 1): what a wrapping key must at
/// least have to wrap it.
pub fn security_bits(spec: KeySpec) -> u32 {
    match spec {
        KeySpec::Aes128 | KeySpec::EcP256 | KeySpec::Ed25519 | KeySpec::Rsa3072 => 128,
        KeySpec::Aes192 | KeySpec::EcP384 => 192,
        KeySpec::Aes256 | KeySpec::EcP521 => 256,
        KeySpec::Rsa2048 | KeySpec::Des3 => 112,
        // Between 3072 (128) and 7680 (192) bits.
        KeySpec::Rsa4096 => 140,
        KeySpec::Generic(n) => (n as u32 * 8).min(256),
    }
}

/// A key's size in bits as PKCS#11 reports it.
pub fn key_bits(spec: KeySpec) -> u32 {
    match spec {
        KeySpec::Aes128 => 128,
        KeySpec::Aes192 => 192,
        KeySpec::Aes256 => 256,
        KeySpec::EcP256 => 256,
        KeySpec::EcP384 => 384,
        KeySpec::EcP521 => 521,
        KeySpec::Rsa2048 => 2048,
        KeySpec::Rsa3072 => 3072,
        KeySpec::Rsa4096 => 4096,
        KeySpec::Ed25519 => 255,
        KeySpec::Generic(n) => n as u32 * 8,
        KeySpec::Des3 => 192,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The byte-level forms the tests were written against, over the parsed-key API.
    fn key(spec: KeySpec, bytes: &[u8]) -> Key {
        Key::parse(spec, SecretBytes::new(bytes.to_vec())).unwrap()
    }
    fn sign(spec: KeySpec, private: &SecretBytes, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        super::sign(&key(spec, private.expose()), mech, data)
    }
    fn verify(spec: KeySpec, k: &[u8], mech: Mechanism, data: &[u8], sig: &[u8]) -> Result<bool> {
        if spec.is_symmetric() {
            verify_mac(&key(spec, k), mech, data, sig)
        } else {
            super::verify(spec, k, mech, data, sig)
        }
    }
    fn encrypt(
        spec: KeySpec,
        k: &[u8],
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        if spec.is_symmetric() {
            super::encrypt(&key(spec, k), mech, p, data)
        } else {
            encrypt_public(spec, k, mech, p, data)
        }
    }
    fn decrypt(
        spec: KeySpec,
        private: &SecretBytes,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<SecretBytes> {
        super::decrypt(&key(spec, private.expose()), mech, p, data)
    }

    #[test]
    fn sign_verify_round_trips_and_detects_change() {
        for spec in [
            KeySpec::EcP256,
            KeySpec::EcP384,
            KeySpec::EcP521,
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
            assert_eq!(sig.len(), signature_len(spec, m), "{spec}");
            if let Some(point) = ec_point(spec, public) {
                // DER OCTET STRING: short form up to 127 bytes, long form beyond.
                let n = point.len();
                let header = if n - 2 < 128 { 2 } else { 3 };
                assert_eq!(point[0], 0x04, "{spec}");
                assert_eq!(point[header - 1] as usize, n - header, "{spec}");
            }
        }
    }

    #[test]
    fn encrypting_in_place_gives_what_encrypting_a_copy_gives() {
        let g = generate(KeySpec::Aes256).unwrap();
        let k = key(KeySpec::Aes256, g.private.expose());
        let p = Params {
            iv: vec![9; 16],
            aad: b"hdr".to_vec(),
            ..Default::default()
        };
        let gcm = Params {
            iv: vec![9; 12],
            ..p.clone()
        };
        let msg = [0x42u8; 100];
        for (mech, p) in [(Mechanism::AesGcm, &gcm), (Mechanism::AesCbcPad, &p)] {
            let want = super::encrypt(&k, mech, p, &msg).unwrap();
            let mut buf = vec![0u8; want.len() + 5];
            buf[..msg.len()].copy_from_slice(&msg);
            let n = encrypt_in_place(&k, mech, p, &mut buf, msg.len()).unwrap();
            assert_eq!(&buf[..n], &want[..], "{mech}");
            // No room for the tag or padding: refused, not truncated.
            let mut short = msg.to_vec();
            assert!(matches!(
                encrypt_in_place(&k, mech, p, &mut short, msg.len()),
                Err(HsmError::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn encrypt_decrypt_round_trips() {
        let p = Params {
            iv: vec![7; 12],
            aad: b"hdr".to_vec(),
            ..Default::default()
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
            Mechanism::RsaOaep(Hash::Sha256),
            &Params::default(),
            b"k",
        )
        .unwrap();
        assert_eq!(
            decrypt(
                KeySpec::Rsa2048,
                &r.private,
                Mechanism::RsaOaep(Hash::Sha256),
                &Params::default(),
                &ct
            )
            .unwrap()
            .expose(),
            b"k"
        );
    }

    #[test]
    fn prehashed_and_hashed_forms_agree() {
        // CKM_ECDSA over SHA-256(m) verifies as CKM_ECDSA_SHA256 over m, and vice versa.
        let g = generate(KeySpec::EcP256).unwrap();
        let public = g.public.as_ref().unwrap();
        let h = Hash::Sha256.digest(b"msg");
        let sig = sign(KeySpec::EcP256, &g.private, Mechanism::Ecdsa(None), &h).unwrap();
        assert!(verify(
            KeySpec::EcP256,
            public,
            Mechanism::Ecdsa(Some(Hash::Sha256)),
            b"msg",
            &sig
        )
        .unwrap());
        // A SHA-1-length hash is accepted (left-padded) and a SHA-512 one (truncated).
        for hh in [Hash::Sha1, Hash::Sha512] {
            let sig = sign(
                KeySpec::EcP256,
                &g.private,
                Mechanism::Ecdsa(Some(hh)),
                b"m",
            )
            .unwrap();
            assert!(verify(
                KeySpec::EcP256,
                public,
                Mechanism::Ecdsa(None),
                &hh.digest(b"m"),
                &sig
            )
            .unwrap());
        }
        // CKM_RSA_PKCS over a DigestInfo equals CKM_SHA256_RSA_PKCS over the message.
        let r = generate(KeySpec::Rsa2048).unwrap();
        let di = [
            Hash::Sha256.digest_info_prefix(),
            &Hash::Sha256.digest(b"doc"),
        ]
        .concat();
        let s1 = sign(KeySpec::Rsa2048, &r.private, Mechanism::RsaPkcs1Raw, &di).unwrap();
        let s2 = sign(
            KeySpec::Rsa2048,
            &r.private,
            Mechanism::RsaPkcs1(Hash::Sha256),
            b"doc",
        )
        .unwrap();
        assert_eq!(s1, s2, "PKCS#1 v1.5 is deterministic");
        assert!(verify(
            KeySpec::Rsa2048,
            r.public.as_ref().unwrap(),
            Mechanism::RsaPkcs1Raw,
            &di,
            &s1
        )
        .unwrap());
        assert!(sign(
            KeySpec::Rsa2048,
            &r.private,
            Mechanism::RsaPkcs1Raw,
            b"not a digest info"
        )
        .is_err());
        // PSS and OAEP with other hashes.
        for h in [Hash::Sha384, Hash::Sha512] {
            let sig = sign(KeySpec::Rsa2048, &r.private, Mechanism::RsaPss(h), b"doc").unwrap();
            assert!(verify(
                KeySpec::Rsa2048,
                r.public.as_ref().unwrap(),
                Mechanism::RsaPss(h),
                b"doc",
                &sig
            )
            .unwrap());
        }
        for h in [Hash::Sha1, Hash::Sha512] {
            let ct = encrypt(
                KeySpec::Rsa2048,
                r.public.as_ref().unwrap(),
                Mechanism::RsaOaep(h),
                &Params::default(),
                b"k",
            )
            .unwrap();
            assert_eq!(
                decrypt(
                    KeySpec::Rsa2048,
                    &r.private,
                    Mechanism::RsaOaep(h),
                    &Params::default(),
                    &ct
                )
                .unwrap()
                .expose(),
                b"k"
            );
        }
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn symmetric_known_answers() {
        let k = h("2b7e151628aed2a6abf7158809cf4f3c");
        let m = h("6bc1bee22e409f96e93d7e117393172a");
        // RFC 4493, example 2.
        let tag = sign(
            KeySpec::Aes128,
            &SecretBytes::new(k.clone()),
            Mechanism::AesCmac,
            &m,
        )
        .unwrap();
        assert_eq!(hex::encode(&tag), "070a16b46b4d4144f79bdd9dd04a287c");
        assert!(verify(KeySpec::Aes128, &k, Mechanism::AesCmac, &m, &tag).unwrap());
        assert!(!verify(KeySpec::Aes128, &k, Mechanism::AesCmac, b"other", &tag).unwrap());
        // NIST SP 800-38A F.1.1 (ECB), F.2.1 (CBC), F.5.1 (CTR), first block.
        let ecb = encrypt(
            KeySpec::Aes128,
            &k,
            Mechanism::AesEcb,
            &Params::default(),
            &m,
        )
        .unwrap();
        assert_eq!(hex::encode(&ecb), "3ad77bb40d7a3660a89ecaf32466ef97");
        let cbc_p = Params {
            iv: h("000102030405060708090a0b0c0d0e0f"),
            ..Default::default()
        };
        let cbc = encrypt(KeySpec::Aes128, &k, Mechanism::AesCbc, &cbc_p, &m).unwrap();
        assert_eq!(hex::encode(&cbc), "7649abac8119b246cee98e9b12e9197d");
        let ctr_p = Params {
            iv: h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
            ..Default::default()
        };
        let ctr = encrypt(KeySpec::Aes128, &k, Mechanism::AesCtr, &ctr_p, &m).unwrap();
        assert_eq!(hex::encode(&ctr), "874d6191b620e3261bef6864990db6ce");
        for (mech, p, ct) in [
            (Mechanism::AesEcb, Params::default(), ecb),
            (Mechanism::AesCbc, cbc_p.clone(), cbc),
            (Mechanism::AesCtr, ctr_p, ctr),
        ] {
            assert_eq!(
                decrypt(KeySpec::Aes128, &SecretBytes::new(k.clone()), mech, &p, &ct)
                    .unwrap()
                    .expose(),
                m.as_slice()
            );
        }
        // Whole blocks only, and the IV length is the caller's business.
        assert!(encrypt(KeySpec::Aes128, &k, Mechanism::AesCbc, &cbc_p, &m[..15]).is_err());
        assert!(encrypt(
            KeySpec::Aes128,
            &k,
            Mechanism::AesCbc,
            &Params {
                iv: vec![0; 8],
                ..Default::default()
            },
            &m
        )
        .is_err());
        // CBC with padding: any length, one extra block when aligned.
        for len in [0usize, 1, 15, 16, 17, 33] {
            let pt = vec![0x5a; len];
            let ct = encrypt(KeySpec::Aes128, &k, Mechanism::AesCbcPad, &cbc_p, &pt).unwrap();
            assert_eq!(ct.len(), (len / 16 + 1) * 16);
            assert_eq!(
                decrypt(
                    KeySpec::Aes128,
                    &SecretBytes::new(k.clone()),
                    Mechanism::AesCbcPad,
                    &cbc_p,
                    &ct
                )
                .unwrap()
                .expose(),
                pt.as_slice()
            );
        }
        // RFC 4231 test case 1: HMAC-SHA-256.
        let hk = vec![0x0b; 20];
        let mac = sign(
            KeySpec::Generic(20),
            &SecretBytes::new(hk.clone()),
            Mechanism::Hmac(Hash::Sha256),
            b"Hi There",
        )
        .unwrap();
        assert_eq!(
            hex::encode(&mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert!(verify(
            KeySpec::Generic(20),
            &hk,
            Mechanism::Hmac(Hash::Sha256),
            b"Hi There",
            &mac
        )
        .unwrap());
        // 3DES: keys have odd parity; ECB and CBC with a zero IV agree on one block; round trips.
        let d = generate(KeySpec::Des3).unwrap();
        assert!(d.private.expose().iter().all(|b| b.count_ones() % 2 == 1));
        let block = h("0123456789abcdef");
        let e = encrypt(
            KeySpec::Des3,
            d.private.expose(),
            Mechanism::Des3Ecb,
            &Params::default(),
            &block,
        )
        .unwrap();
        let c = encrypt(
            KeySpec::Des3,
            d.private.expose(),
            Mechanism::Des3Cbc,
            &Params {
                iv: vec![0; 8],
                ..Default::default()
            },
            &block,
        )
        .unwrap();
        assert_eq!(e, c);
        assert_ne!(e, block);
        assert_eq!(
            decrypt(
                KeySpec::Des3,
                &d.private,
                Mechanism::Des3Ecb,
                &Params::default(),
                &e
            )
            .unwrap()
            .expose(),
            block.as_slice()
        );
        // Mechanisms refuse keys of the wrong kind.
        assert!(sign(
            KeySpec::Aes128,
            &SecretBytes::new(k.clone()),
            Mechanism::Hmac(Hash::Sha256),
            &m
        )
        .is_err());
        assert!(encrypt(
            KeySpec::Des3,
            d.private.expose(),
            Mechanism::AesCbc,
            &cbc_p,
            &m
        )
        .is_err());
    }

    #[test]
    fn key_wrap_known_answers() {
        // RFC 3394 §4.1: 128-bit KEK wraps 128 bits of key data.
        let kek = h("000102030405060708090a0b0c0d0e0f");
        let key = h("00112233445566778899aabbccddeeff");
        let w = wrap(
            KeySpec::Aes128,
            &kek,
            Mechanism::AesKw,
            &Params::default(),
            &key,
        )
        .unwrap();
        assert_eq!(
            hex::encode(&w),
            "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"
        );
        assert_eq!(
            unwrap(
                KeySpec::Aes128,
                &SecretBytes::new(kek.clone()),
                Mechanism::AesKw,
                &Params::default(),
                &w
            )
            .unwrap()
            .expose(),
            key.as_slice()
        );
        // RFC 5649 §6: 192-bit KEK is not offered here (aws-lc has 128 and 256); check KWP
        // round trips at odd lengths and that KW refuses them.
        let k256 = h("000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f");
        for len in [1usize, 7, 8, 20, 33] {
            let m = vec![0xa5; len];
            // KW-PAD needs two semiblocks after padding, so at least 8 bytes of key.
            let mechs: &[Mechanism] = if len >= 8 {
                &[Mechanism::AesKwp, Mechanism::AesKwPkcs7]
            } else {
                &[Mechanism::AesKwp]
            };
            for &mech in mechs {
                let w = wrap(KeySpec::Aes256, &k256, mech, &Params::default(), &m).unwrap();
                assert_eq!(w.len(), wrapped_len(KeySpec::Aes256, mech, len));
                assert_eq!(
                    unwrap(
                        KeySpec::Aes256,
                        &SecretBytes::new(k256.clone()),
                        mech,
                        &Params::default(),
                        &w
                    )
                    .unwrap()
                    .expose(),
                    m.as_slice()
                );
            }
            assert!(wrap(
                KeySpec::Aes256,
                &k256,
                Mechanism::AesKw,
                &Params::default(),
                &m
            )
            .is_err());
        }
    }

    #[test]
    fn public_attributes_from_spki() {
        for spec in [KeySpec::EcP256, KeySpec::EcP384, KeySpec::Ed25519] {
            let g = generate(spec).unwrap();
            let p = ec_point(spec, g.public.as_ref().unwrap()).unwrap();
            assert_eq!(p[0], 0x04);
            assert_eq!(p.len(), 2 + p[1] as usize);
            assert_eq!(spec_from_ec_params(ec_params(spec).unwrap()), Some(spec));
        }
        let r = generate(KeySpec::Rsa2048).unwrap();
        let (n, e) = rsa_components(r.public.as_ref().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        assert_eq!(e, vec![1, 0, 1]);
    }

    #[test]
    fn public_keys_rebuilt_from_their_parts_are_the_generated_ones() {
        for spec in [
            KeySpec::Rsa2048,
            KeySpec::EcP256,
            KeySpec::EcP384,
            KeySpec::EcP521,
            KeySpec::Ed25519,
        ] {
            let g = generate(spec).unwrap();
            let spki = g.public.unwrap();
            let rsa = rsa_components(&spki);
            let point = ec_point(spec, &spki);
            let parts = match (&rsa, &point) {
                (Some((n, e)), _) => PublicParts::Rsa {
                    modulus: n,
                    exponent: e,
                },
                (None, Some(p)) => PublicParts::Ec {
                    params: ec_params(spec).unwrap(),
                    point: &p[if p[1] == 0x81 { 3 } else { 2 }..],
                },
                _ => panic!("{spec} has neither RSA nor EC parts"),
            };
            let (got, rebuilt) = public_key_from_parts(parts).unwrap();
            assert_eq!(got, spec);
            assert_eq!(rebuilt, spki, "{spec}");
        }
        // A point off the curve, or a short modulus, is refused.
        let g = generate(KeySpec::EcP256).unwrap();
        let mut p = ec_point(KeySpec::EcP256, g.public.as_ref().unwrap()).unwrap();
        p[20] ^= 1;
        assert!(public_key_from_parts(PublicParts::Ec {
            params: ec_params(KeySpec::EcP256).unwrap(),
            point: &p[2..],
        })
        .is_err());
        assert!(public_key_from_parts(PublicParts::Rsa {
            modulus: &[0xc5; 128],
            exponent: &[1, 0, 1],
        })
        .is_err());
    }

    #[test]
    fn points_are_read_raw_or_der_wrapped_and_nothing_else() {
        let raw: Vec<u8> = std::iter::once(0x04)
            .chain((0u8..64).map(|_| 0x3f))
            .collect();
        // A raw point whose second byte looks like a short length is still the raw point.
        assert_eq!(point_from_pkcs11(KeySpec::EcP256, &raw), Some(&raw[..]));
        let wrapped = der(0x04, &raw);
        assert_eq!(point_from_pkcs11(KeySpec::EcP256, &wrapped), Some(&raw[..]));
        let mut lying = wrapped.clone();
        lying[1] = 0x05;
        assert_eq!(point_from_pkcs11(KeySpec::EcP256, &lying), None);
        assert_eq!(point_from_pkcs11(KeySpec::EcP256, &raw[1..]), None);
        let p521: Vec<u8> = vec![0x04; 133];
        assert_eq!(
            point_from_pkcs11(KeySpec::EcP521, &der(0x04, &p521)),
            Some(&p521[..])
        );
        assert_eq!(point_from_pkcs11(KeySpec::Aes128, &raw), None);
    }

    #[test]
    fn names_round_trip() {
        let concrete = KeySpec::names()
            .into_iter()
            .filter(|n| !n.contains('<'))
            .chain(["generic-256".to_string()]);
        for n in concrete {
            assert_eq!(n.parse::<KeySpec>().unwrap().to_string(), n);
        }
        assert!("generic-100".parse::<KeySpec>().is_err());
        assert!("generic-64".parse::<KeySpec>().is_err());
        assert!("des".parse::<KeySpec>().is_err());
        assert_eq!(
            "ecdsa-sha256".parse::<Mechanism>().unwrap(),
            Mechanism::Ecdsa(Some(Hash::Sha256))
        );
    }
}
