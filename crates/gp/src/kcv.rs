//! Key check values: a short value computed from a key that tells two parties they hold the
//! same key without revealing it. Conventions differ, so the method is always named with the
//! value.

use crate::block::{aes_cmac, ecb_encrypt, Key, KeyType};
use crate::{GpError, Result};

/// How a key check value is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KcvMethod {
    /// Triple DES: the key encrypts eight zero bytes; the first three bytes of the result.
    Des3Zeros,
    /// AES as GlobalPlatform defines it (Card Specification Amendment D): the key encrypts
    /// sixteen `01` bytes; the first three bytes.
    AesGp,
    /// AES "encrypt zeros": the key encrypts sixteen zero bytes; the first three bytes.
    AesZeros,
    /// AES as ANSI X9.24-1:2017 defines it: AES-CMAC of sixteen zero bytes under the key; the
    /// first five bytes.
    AesCmac,
}

impl KcvMethod {
    /// The name shown next to a value and taken by commands.
    pub fn name(self) -> &'static str {
        match self {
            KcvMethod::Des3Zeros => "des3-zeros",
            KcvMethod::AesGp => "aes-gp",
            KcvMethod::AesZeros => "aes-zeros",
            KcvMethod::AesCmac => "aes-cmac",
        }
    }

    /// Parses [`KcvMethod::name`].
    pub fn parse(s: &str) -> Result<KcvMethod> {
        Ok(match s {
            "des3-zeros" => KcvMethod::Des3Zeros,
            "aes-gp" => KcvMethod::AesGp,
            "aes-zeros" => KcvMethod::AesZeros,
            "aes-cmac" => KcvMethod::AesCmac,
            _ => {
                return Err(GpError::Key(format!(
                    "unknown KCV method {s:?} (des3-zeros, aes-gp, aes-zeros, aes-cmac)"
                )))
            }
        })
    }

    /// The method GlobalPlatform uses for a key of this type (PUT KEY, key information).
    pub fn gp_default(kind: KeyType) -> KcvMethod {
        if kind.is_aes() {
            KcvMethod::AesGp
        } else {
            KcvMethod::Des3Zeros
        }
    }

    /// Every method that applies to keys of this type.
    pub fn for_type(kind: KeyType) -> &'static [KcvMethod] {
        if kind.is_aes() {
            &[KcvMethod::AesGp, KcvMethod::AesZeros, KcvMethod::AesCmac]
        } else {
            &[KcvMethod::Des3Zeros]
        }
    }
}

/// The key check value of `key` by `method`.
pub fn kcv(key: &Key, method: KcvMethod) -> Result<Vec<u8>> {
    let wrong = || {
        GpError::Key(format!(
            "the {} KCV is not defined for a {} key",
            method.name(),
            key.kind().name()
        ))
    };
    Ok(match method {
        KcvMethod::Des3Zeros if key.kind() == KeyType::Des3 => {
            ecb_encrypt(key, &[0u8; 8])?[..3].to_vec()
        }
        KcvMethod::AesGp if key.kind().is_aes() => ecb_encrypt(key, &[1u8; 16])?[..3].to_vec(),
        KcvMethod::AesZeros if key.kind().is_aes() => ecb_encrypt(key, &[0u8; 16])?[..3].to_vec(),
        KcvMethod::AesCmac if key.kind().is_aes() => aes_cmac(key, &[0u8; 16])?[..5].to_vec(),
        _ => return Err(wrong()),
    })
}
