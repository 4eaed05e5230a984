//! Secret values in memory: wiped on drop, compared in constant time, never printed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{HsmError, Result};

/// Length of every role secret, authenticator and wrapping key, in bytes.
pub const SECRET_LEN: usize = 32;

/// A 32-byte secret (role secret, authenticator, key-encryption key). Zeroized on drop; its
/// `Debug` output is redacted; equality is constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; SECRET_LEN]);

impl Secret32 {
    /// Wraps bytes the caller already holds.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Secret32(bytes)
    }

    /// Copies from a slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; SECRET_LEN] = bytes
            .try_into()
            .map_err(|_| HsmError::InvalidInput(format!("secret must be {SECRET_LEN} bytes")))?;
        Ok(Secret32(arr))
    }

    /// A fresh secret from the system's cryptographic random source.
    pub fn random() -> Self {
        let mut b = [0u8; SECRET_LEN];
        crate::crypto::fill_random(&mut b);
        Secret32(b)
    }

    /// The bytes, for use inside the boundary only.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl PartialEq for Secret32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for Secret32 {}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

/// A variable-length secret (key material, PKCS#8 encodings, sealed-record plaintexts).
/// Zeroized on drop, redacted in `Debug`. Serialized as hex only inside sealed records.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of bytes.
    pub fn new(v: Vec<u8>) -> Self {
        SecretBytes(v)
    }
    /// The bytes, for use inside the boundary only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let h = Zeroizing::new(hex::encode(&self.0));
        s.serialize_str(&h)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("hex string")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<SecretBytes, E> {
                hex::decode(v)
                    .map(SecretBytes)
                    .map_err(|_| E::custom("bad hex in secret field"))
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Secret32 {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let h = Zeroizing::new(hex::encode(self.0));
        s.serialize_str(&h)
    }
}

impl<'de> Deserialize<'de> for Secret32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let b = SecretBytes::deserialize(d)?;
        Secret32::from_slice(b.expose()).map_err(serde::de::Error::custom)
    }
}

/// A PED PIN or a password typed by a person. Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pin(String);

impl Pin {
    /// A PED PIN: 4 to 16 decimal digits.
    pub fn ped_pin(s: &str) -> Result<Self> {
        let s = s.trim_end_matches(['\r', '\n']);
        if !(4..=16).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HsmError::InvalidInput(
                "a PED PIN is 4 to 16 digits (0-9)".into(),
            ));
        }
        Ok(Pin(s.to_owned()))
    }

    /// A password, PKCS#11 PIN or challenge secret: 4 to 255 printable characters. Short
    /// values are allowed as for smart-card PINs: each guess costs an Argon2id derivation and
    /// counts against the failed-login limit.
    pub fn password(s: &str) -> Result<Self> {
        let s = s.trim_end_matches(['\r', '\n']);
        if !(4..=255).contains(&s.chars().count()) || s.chars().any(|c| c.is_control()) {
            return Err(HsmError::InvalidInput(
                "a password or challenge secret is 4 to 255 printable characters".into(),
            ));
        }
        Ok(Pin(s.to_owned()))
    }

    /// The characters, for mixing inside the boundary only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_bytes() {
        let s = Secret32::from_bytes([0xAB; 32]);
        let d = format!("{s:?}");
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        let b = SecretBytes::new(vec![0xCD; 40]);
        assert!(!format!("{b:?}").to_lowercase().contains("cd"));
        let p = Pin::ped_pin("13579").unwrap();
        assert!(!format!("{p:?}").contains("13579"));
    }

    #[test]
    fn pin_rules() {
        assert!(Pin::ped_pin("123").is_err());
        assert!(Pin::ped_pin("12a4").is_err());
        assert!(Pin::ped_pin("1234").is_ok());
        assert!(Pin::ped_pin("12345678901234567").is_err());
        assert!(Pin::password("abc").is_err());
        assert!(Pin::password("1234").is_ok());
        assert!(Pin::password("long enough").is_ok());
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(Secret32::from_bytes([1; 32]), Secret32::from_bytes([1; 32]));
        assert_ne!(Secret32::from_bytes([1; 32]), Secret32::from_bytes([2; 32]));
    }
}
