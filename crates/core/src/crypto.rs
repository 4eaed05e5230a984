//! The crypto boundary for the engine's own key hierarchy: randomness, HKDF, HMAC, the AEAD
//! that seals everything at rest, and the memory-hard KDF for PINs and passwords.
//! Mechanisms offered to applications live in [`crate::mechanism`].

use aws_lc_rs::{aead, hkdf, hmac, rand};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{HsmError, Result};
use crate::secret::{Pin, Secret32, SecretBytes, SECRET_LEN};

/// Fills `buf` from the system CSPRNG. The process cannot continue safely without one, so a
/// failure here aborts rather than returning predictable bytes.
pub fn fill_random(buf: &mut [u8]) {
    if rand::fill(buf).is_err() {
        // No randomness means no safe key generation at all; never fall back.
        std::process::abort();
    }
}

/// `n` random bytes, hex-encoded (for identifiers, not secrets).
pub fn random_hex_id(n: usize) -> String {
    let mut b = vec![0u8; n];
    fill_random(&mut b);
    hex::encode(b)
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        SECRET_LEN
    }
}

/// HKDF-SHA256 (RFC 5869) of `ikm` with `salt`, expanded with the labelled `info` parts.
pub fn hkdf32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Secret32 {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = [0u8; SECRET_LEN];
    // Expanding 32 bytes with SHA-256 cannot exceed the 255 * HashLen limit.
    let okm = prk
        .expand(info, Len32)
        .expect("32-byte HKDF expansion is within RFC 5869 limits");
    okm.fill(&mut out)
        .expect("output length matches the requested key type");
    let s = Secret32::from_bytes(out);
    zeroize::Zeroize::zeroize(&mut out);
    s
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time equality of two byte strings of possibly different lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Seals `plaintext` with AES-256-GCM under `key`, binding `aad` (the record's identity) so a
/// sealed value moved to another place fails to open. Output: version ‖ nonce ‖ ct ‖ tag.
pub fn seal(key: &Secret32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key.expose())
        .expect("a 32-byte key is valid for AES-256-GCM");
    let k = aead::LessSafeKey::new(unbound);
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    k.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad),
        &mut body,
    )
    .expect("AES-GCM sealing of an in-memory buffer cannot fail");
    out.extend_from_slice(&body);
    body.iter_mut().for_each(|b| *b = 0);
    out
}

/// Opens a value made by [`seal`]. Any change to key, `aad` or bytes fails with `Tamper`.
pub fn open(key: &Secret32, aad: &[u8], sealed: &[u8], what: &str) -> Result<SecretBytes> {
    let bad = || HsmError::Tamper(format!("{what} failed its integrity check"));
    if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEAL_VERSION {
        return Err(bad());
    }
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key.expose()).map_err(|_| bad())?;
    let k = aead::LessSafeKey::new(unbound);
    let nonce =
        aead::Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| bad())?;
    let mut body = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
    let pt = k
        .open_in_place(nonce, aead::Aad::from(aad), &mut body)
        .map_err(|_| bad())?;
    Ok(SecretBytes::new(pt.to_vec()))
}

/// Parameters of the memory-hard KDF (Argon2id) applied to PINs, passwords and challenge
/// secrets. Stored beside each verifier so they can be raised without breaking old roles.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// Per-role random salt, hex.
    pub salt: String,
}

impl KdfParams {
    /// Fresh parameters with a new random salt: 19 MiB, 2 passes, 1 lane (OWASP's
    /// recommended Argon2id floor).
    pub fn fresh() -> Self {
        KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
            salt: random_hex_id(16),
        }
    }

    /// Runs Argon2id over `input` with these parameters.
    pub fn derive(&self, input: &[u8]) -> Result<Secret32> {
        let salt = hex::decode(&self.salt)
            .map_err(|_| HsmError::Tamper("stored KDF salt is not hex".into()))?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(SECRET_LEN))
            .map_err(|e| HsmError::Tamper(format!("stored KDF parameters invalid: {e}")))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; SECRET_LEN]);
        a.hash_password_into(input, &salt, out.as_mut())
            .map_err(|e| HsmError::Crypto(format!("Argon2id: {e}")))?;
        Ok(Secret32::from_bytes(*out))
    }
}

/// Mixes a PED secret with an optional PED PIN into the authenticator that the HSM verifies
/// and derives wrapping keys from. With a PIN, the PIN goes through Argon2id first, so the key
/// file alone cannot produce the authenticator and each PIN guess costs a memory-hard
/// derivation (and, at the HSM, a counted failed login).
pub fn mix_pin(secret: &Secret32, pin: Option<&Pin>, kdf: &KdfParams) -> Result<Secret32> {
    match pin {
        Some(pin) => {
            let stretched = kdf.derive(pin.expose())?;
            Ok(hkdf32(
                stretched.expose(),
                secret.expose(),
                &[b"ferrohsm ped secret with pin v1"],
            ))
        }
        None => Ok(hkdf32(&[], secret.expose(), &[b"ferrohsm ped secret v1"])),
    }
}

#[cfg(test)]
impl KdfParams {
    /// Parameters that derive in microseconds, for unit tests only.
    pub(crate) fn cheap_for_tests(salt: &str) -> Self {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
            salt: salt.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cheap() -> KdfParams {
        KdfParams::cheap_for_tests("00112233445566778899aabbccddeeff")
    }

    #[test]
    fn sealed_value_is_bound_to_key_and_aad() {
        let k = Secret32::random();
        let s = seal(&k, b"record/a", b"payload");
        assert_eq!(open(&k, b"record/a", &s, "t").unwrap().expose(), b"payload");
        assert!(matches!(
            open(&k, b"record/b", &s, "t"),
            Err(HsmError::Tamper(_))
        ));
        assert!(matches!(
            open(&Secret32::random(), b"record/a", &s, "t"),
            Err(HsmError::Tamper(_))
        ));
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert!(
                open(&k, b"record/a", &t, "t").is_err(),
                "flip at {i} undetected"
            );
        }
        assert!(open(&k, b"record/a", &s[..s.len() - 1], "t").is_err());
        assert!(open(&k, b"record/a", &[], "t").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn pin_mixing_depends_on_secret_and_pin(s in any::<[u8; 32]>(), a in 0u32..100_000, b in 0u32..100_000) {
            let secret = Secret32::from_bytes(s);
            let pa = Pin::ped_pin(&format!("{a:05}")).unwrap();
            let pb = Pin::ped_pin(&format!("{b:05}")).unwrap();
            let ka = mix_pin(&secret, Some(&pa), &cheap()).unwrap();
            // Deterministic for the same inputs.
            prop_assert_eq!(&ka, &mix_pin(&secret, Some(&pa), &cheap()).unwrap());
            // Different PINs give different authenticators.
            prop_assert_eq!(a == b, ka == mix_pin(&secret, Some(&pb), &cheap()).unwrap());
            // The file alone (no PIN) never gives the PIN-protected authenticator.
            prop_assert_ne!(&ka, &mix_pin(&secret, None, &cheap()).unwrap());
            // The authenticator is not the raw secret.
            prop_assert_ne!(ka.expose(), &s);
            // Another secret with the same PIN gives another authenticator.
            let mut s2 = s; s2[0] ^= 1;
            prop_assert_ne!(&ka, &mix_pin(&Secret32::from_bytes(s2), Some(&pa), &cheap()).unwrap());
        }
    }
}
