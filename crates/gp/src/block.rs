//! The block-cipher operations GlobalPlatform is built from: triple DES (two-key, as card
//! keys are), single DES (the retail MAC of SCP02), AES, AES-CMAC, and ISO/IEC 9797-1
//! padding method 2 (`80 00 …`). All through aws-lc-rs.

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

use crate::{GpError, Result};

/// The key types of GlobalPlatform key sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Two-key triple DES (112 bits; 16 bytes K1 K2, used as K1 K2 K1): SCP02.
    Des3,
    /// AES-128: SCP03.
    Aes128,
    /// AES-192: SCP03.
    Aes192,
    /// AES-256: SCP03.
    Aes256,
}

impl KeyType {
    /// The key's length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            KeyType::Des3 | KeyType::Aes128 => 16,
            KeyType::Aes192 => 24,
            KeyType::Aes256 => 32,
        }
    }

    /// The cipher's block length in bytes.
    pub fn block(self) -> usize {
        match self {
            KeyType::Des3 => 8,
            _ => 16,
        }
    }

    /// Whether it is an AES key.
    pub fn is_aes(self) -> bool {
        self != KeyType::Des3
    }

    /// The name used in commands and listings: `des3`, `aes-128`, `aes-192`, `aes-256`.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Des3 => "des3",
            KeyType::Aes128 => "aes-128",
            KeyType::Aes192 => "aes-192",
            KeyType::Aes256 => "aes-256",
        }
    }

    /// Parses [`KeyType::name`].
    pub fn parse(s: &str) -> Result<KeyType> {
        Ok(match s {
            "des3" | "3des" | "des3-112" => KeyType::Des3,
            "aes-128" | "aes128" => KeyType::Aes128,
            "aes-192" | "aes192" => KeyType::Aes192,
            "aes-256" | "aes256" => KeyType::Aes256,
            _ => {
                return Err(GpError::Key(format!(
                    "unknown key type {s:?} (des3, aes-128, aes-192, aes-256)"
                )))
            }
        })
    }

    /// The AES key type of `len` bytes.
    pub fn aes(len: usize) -> Result<KeyType> {
        match len {
            16 => Ok(KeyType::Aes128),
            24 => Ok(KeyType::Aes192),
            32 => Ok(KeyType::Aes256),
            n => Err(GpError::Key(format!(
                "an AES key is 16, 24 or 32 bytes, not {n}"
            ))),
        }
    }
}

/// A key value with its type; wiped on drop. Never printed (its `Debug` shows the type only).
#[derive(Clone)]
pub struct Key {
    kind: KeyType,
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}, <redacted>)", self.kind.name())
    }
}

impl Key {
    /// A key of `kind` with these bytes (their length checked).
    pub fn new(kind: KeyType, bytes: &[u8]) -> Result<Key> {
        if bytes.len() != kind.key_len() {
            return Err(GpError::Key(format!(
                "a {} key is {} bytes, not {}",
                kind.name(),
                kind.key_len(),
                bytes.len()
            )));
        }
        Ok(Key {
            kind,
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// The key's type.
    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// The key's bytes (for the engine, which keeps them sealed; never for display).
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The cipher as AWS-LC takes it (two-key 3DES as such: AWS-LC refuses K1 = K2).
    fn raw(&self) -> Raw<'_> {
        #[allow(deprecated)]
        let alg = match self.kind {
            KeyType::Des3 => &aws_lc_rs::cipher::DES_EDE_FOR_LEGACY_USE_ONLY,
            KeyType::Aes128 => &aws_lc_rs::cipher::AES_128,
            KeyType::Aes192 => &aws_lc_rs::cipher::AES_192,
            KeyType::Aes256 => &aws_lc_rs::cipher::AES_256,
        };
        Raw {
            alg,
            bytes: &self.bytes,
            kind: self.kind,
        }
    }

    /// Single DES with the first eight bytes (K1): SCP02's retail MAC and ICV encryption.
    fn single_des(&self) -> Result<Raw<'_>> {
        if self.kind != KeyType::Des3 {
            return Err(GpError::Key("single DES is taken from a 3DES key".into()));
        }
        #[allow(deprecated)]
        let alg = &aws_lc_rs::cipher::DES_FOR_LEGACY_USE_ONLY;
        Ok(Raw {
            alg,
            bytes: &self.bytes[..8],
            kind: KeyType::Des3,
        })
    }
}

/// A cipher and its key bytes, as AWS-LC takes them.
struct Raw<'a> {
    alg: &'static aws_lc_rs::cipher::Algorithm,
    bytes: &'a [u8],
    /// For the block length and messages.
    kind: KeyType,
}

impl Raw<'_> {
    fn unbound(&self) -> Result<UnboundCipherKey> {
        UnboundCipherKey::new(self.alg, self.bytes)
            .map_err(|_| GpError::Key(format!("AWS-LC refused the {} key", self.kind.name())))
    }

    fn ecb_encrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        whole_blocks(self.kind, data)?;
        let mut buf = data.to_vec();
        EncryptingKey::ecb(self.unbound()?)
            .map_err(|_| refused(self.kind))?
            .less_safe_encrypt(&mut buf, EncryptionContext::None)
            .map_err(|_| failed("ECB encryption"))?;
        Ok(buf)
    }

    fn cbc_encrypt(&self, iv: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        whole_blocks(self.kind, data)?;
        let mut buf = data.to_vec();
        EncryptingKey::cbc(self.unbound()?)
            .map_err(|_| refused(self.kind))?
            .less_safe_encrypt(&mut buf, enc_ctx(self.kind, Some(iv))?)
            .map_err(|_| failed("CBC encryption"))?;
        Ok(buf)
    }
}

/// AWS-LC refuses weak and semi-weak DES keys and 3DES keys whose halves are equal.
fn refused(kind: KeyType) -> GpError {
    GpError::Key(format!(
        "the {} key is refused: a weak or semi-weak DES part, or equal halves",
        kind.name()
    ))
}

fn whole_blocks(kind: KeyType, data: &[u8]) -> Result<()> {
    if !data.len().is_multiple_of(kind.block()) {
        return Err(GpError::Malformed(format!(
            "{} bytes are not whole {}-byte blocks",
            data.len(),
            kind.block()
        )));
    }
    Ok(())
}

fn enc_ctx(kind: KeyType, iv: Option<&[u8]>) -> Result<EncryptionContext> {
    let bad = || {
        GpError::Malformed(format!(
            "an IV for {} is {} bytes",
            kind.name(),
            kind.block()
        ))
    };
    Ok(match (iv, kind.block()) {
        (None, _) => EncryptionContext::None,
        (Some(iv), 8) => EncryptionContext::Iv64(FixedLength::from(
            <[u8; 8]>::try_from(iv).map_err(|_| bad())?,
        )),
        (Some(iv), _) => EncryptionContext::Iv128(FixedLength::from(
            <[u8; 16]>::try_from(iv).map_err(|_| bad())?,
        )),
    })
}

fn dec_ctx(kind: KeyType, iv: Option<&[u8]>) -> Result<DecryptionContext> {
    let bad = || {
        GpError::Malformed(format!(
            "an IV for {} is {} bytes",
            kind.name(),
            kind.block()
        ))
    };
    Ok(match (iv, kind.block()) {
        (None, _) => DecryptionContext::None,
        (Some(iv), 8) => DecryptionContext::Iv64(FixedLength::from(
            <[u8; 8]>::try_from(iv).map_err(|_| bad())?,
        )),
        (Some(iv), _) => DecryptionContext::Iv128(FixedLength::from(
            <[u8; 16]>::try_from(iv).map_err(|_| bad())?,
        )),
    })
}

fn failed(what: &str) -> GpError {
    GpError::Key(format!("{what} failed"))
}

/// ECB encryption of whole blocks.
pub fn ecb_encrypt(key: &Key, data: &[u8]) -> Result<Vec<u8>> {
    key.raw().ecb_encrypt(data)
}

/// ECB decryption of whole blocks.
pub fn ecb_decrypt(key: &Key, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    whole_blocks(key.kind, data)?;
    let mut buf = Zeroizing::new(data.to_vec());
    DecryptingKey::ecb(key.raw().unbound()?)
        .map_err(|_| refused(key.kind))?
        .decrypt(&mut buf, dec_ctx(key.kind, None)?)
        .map_err(|_| failed("ECB decryption"))?;
    Ok(buf)
}

/// CBC encryption of whole blocks with `iv`.
pub fn cbc_encrypt(key: &Key, iv: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    key.raw().cbc_encrypt(iv, data)
}

/// CBC decryption of whole blocks with `iv`.
pub fn cbc_decrypt(key: &Key, iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    whole_blocks(key.kind, data)?;
    let mut buf = Zeroizing::new(data.to_vec());
    DecryptingKey::cbc(key.raw().unbound()?)
        .map_err(|_| refused(key.kind))?
        .decrypt(&mut buf, dec_ctx(key.kind, Some(iv))?)
        .map_err(|_| failed("CBC decryption"))?;
    Ok(buf)
}

/// The last block of a CBC encryption with a zero IV: the "full triple DES" MAC of SCP02's
/// cryptograms (ISO/IEC 9797-1 MAC algorithm 1), over data already padded.
pub fn cbc_mac(key: &Key, iv: &[u8], padded: &[u8]) -> Result<Vec<u8>> {
    let c = cbc_encrypt(key, iv, padded)?;
    Ok(c[c.len() - key.kind.block()..].to_vec())
}

/// ISO/IEC 9797-1 MAC algorithm 3 (the "retail MAC") with a 3DES key and an ICV: single DES
/// (K1) CBC over every block but the last, triple DES on the last. `padded` is whole blocks.
pub fn retail_mac(key: &Key, icv: &[u8], padded: &[u8]) -> Result<[u8; 8]> {
    whole_blocks(KeyType::Des3, padded)?;
    if padded.is_empty() {
        return Err(GpError::Malformed("a MAC of nothing".into()));
    }
    let (head, last) = padded.split_at(padded.len() - 8);
    let chain = if head.is_empty() {
        icv.to_vec()
    } else {
        let c = key.single_des()?.cbc_encrypt(icv, head)?;
        c[c.len() - 8..].to_vec()
    };
    let out = cbc_encrypt(key, &chain, last)?;
    let mut mac = [0u8; 8];
    mac.copy_from_slice(&out);
    Ok(mac)
}

/// Single DES (K1 of a 3DES key) ECB of one block: SCP02's ICV encryption.
pub fn single_des_block(key: &Key, block: &[u8]) -> Result<Vec<u8>> {
    key.single_des()?.ecb_encrypt(block)
}

/// AES-CMAC (NIST SP 800-38B), 16 bytes.
pub fn aes_cmac(key: &Key, data: &[u8]) -> Result<[u8; 16]> {
    use aws_lc_rs::cmac;
    let alg = match key.kind {
        KeyType::Aes128 => cmac::AES_128,
        KeyType::Aes192 => cmac::AES_192,
        KeyType::Aes256 => cmac::AES_256,
        KeyType::Des3 => return Err(GpError::Key("AES-CMAC takes an AES key".into())),
    };
    let k = cmac::Key::new(alg, key.expose()).map_err(|_| failed("CMAC"))?;
    let tag = cmac::sign(&k, data).map_err(|_| failed("CMAC"))?;
    let mut out = [0u8; 16];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// ISO/IEC 9797-1 padding method 2: `80`, then zeros to a whole block (always at least `80`).
pub fn pad80(data: &[u8], block: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.push(0x80);
    while !v.len().is_multiple_of(block) {
        v.push(0);
    }
    v
}

/// Removes [`pad80`] padding; an error when it is not there.
pub fn unpad80(data: &[u8]) -> Result<&[u8]> {
    let end = data
        .iter()
        .rposition(|b| *b != 0)
        .ok_or_else(|| GpError::Malformed("no 80 padding (all zeros)".into()))?;
    if data[end] != 0x80 {
        return Err(GpError::Malformed("no 80 padding".into()));
    }
    Ok(&data[..end])
}

/// Constant-time equality of two MACs or cryptograms.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips_and_bad_padding_is_refused() {
        assert_eq!(pad80(&[1, 2], 8), [1, 2, 0x80, 0, 0, 0, 0, 0]);
        assert_eq!(pad80(&[0; 8], 8).len(), 16);
        assert_eq!(unpad80(&pad80(&[1, 2], 8)).unwrap(), [1, 2]);
        assert!(unpad80(&[1, 2, 0, 0]).is_err());
        assert!(unpad80(&[0, 0]).is_err());
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        assert!(Key::new(KeyType::Des3, &[1; 24]).is_err());
        assert!(Key::new(KeyType::Aes192, &[1; 16]).is_err());
        assert!(format!("{:?}", Key::new(KeyType::Aes128, &[7; 16]).unwrap()).contains("redacted"));
    }
}
