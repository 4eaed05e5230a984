//! The key derivation function of SCP03 (GlobalPlatform Card Specification Amendment D,
//! after NIST SP 800-108): AES-CMAC in counter mode, the one-byte counter between a fixed
//! prefix and a fixed suffix.

use zeroize::Zeroizing;

use crate::block::{aes_cmac, Key};
use crate::{GpError, Result};

/// `len` bytes from `key`: CMAC(key, prefix || i || suffix) for i = 1, 2, …, concatenated.
pub fn counter_mode(
    key: &Key,
    prefix: &[u8],
    suffix: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    if len == 0 || len > 255 * 16 {
        return Err(GpError::Malformed(format!("cannot derive {len} bytes")));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut i: u8 = 1;
    while out.len() < len {
        let mut input = Vec::with_capacity(prefix.len() + 1 + suffix.len());
        input.extend_from_slice(prefix);
        input.push(i);
        input.extend_from_slice(suffix);
        out.extend_from_slice(&aes_cmac(key, &input)?);
        i = i.wrapping_add(1);
    }
    out.truncate(len);
    Ok(out)
}

/// SCP03's derivation: label (eleven zero bytes), the derivation `constant`, a zero
/// separator, the output length in bits (two bytes), the counter, then `context`.
pub fn scp03(key: &Key, constant: u8, context: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
    let bits = u16::try_from(len * 8)
        .map_err(|_| GpError::Malformed(format!("cannot derive {len} bytes")))?;
    let mut prefix = vec![0u8; 11];
    prefix.push(constant);
    prefix.push(0);
    prefix.extend_from_slice(&bits.to_be_bytes());
    counter_mode(key, &prefix, context, len)
}
