//! PUT KEY (GlobalPlatform Card Specification 11.8): a new key set sent to the card, each
//! key encrypted under the channel's DEK and followed by its check value, which the card
//! checks and returns.

use crate::apdu::Command;
use crate::block::{Key, KeyType};
use crate::channel::{Channel, KeySet};
use crate::diversify::KeyRole;
use crate::kcv::{kcv, KcvMethod};
use crate::{GpError, Result};

/// Key type byte of a 3DES key in a key data field.
pub const TYPE_DES: u8 = 0x80;
/// Key type byte of an AES key.
pub const TYPE_AES: u8 = 0x88;

/// PUT KEY replacing key set `old_version` (0: adding a new set) with `new` (ENC, MAC, DEK
/// as key identifiers 1, 2, 3), each key encrypted over `channel`.
pub fn command(channel: &Channel, old_version: u8, new: &KeySet) -> Result<Command> {
    if !(1..=0x7f).contains(&new.version) {
        return Err(GpError::Key(format!(
            "a key set version is 1 to 127, not {}",
            new.version
        )));
    }
    let mut data = vec![new.version];
    for role in KeyRole::ALL {
        let k = new.get(role);
        let encrypted = channel.encrypt_key(k)?;
        let check = kcv(k, KcvMethod::gp_default(k.kind()))?;
        if k.kind().is_aes() {
            data.push(TYPE_AES);
            data.push(u8::try_from(encrypted.len() + 1).map_err(|_| long())?);
            data.push(k.kind().key_len() as u8);
        } else {
            data.push(TYPE_DES);
            data.push(u8::try_from(encrypted.len()).map_err(|_| long())?);
        }
        data.extend_from_slice(&encrypted);
        data.push(check.len() as u8);
        data.extend_from_slice(&check);
    }
    // P2: the first key's identifier, with bit 8 set for several keys in one command.
    Ok(Command::new(0x80, 0xd8, old_version, 0x81, data).expecting())
}

fn long() -> GpError {
    GpError::Malformed("a key component is too long".into())
}

/// One key of a PUT KEY's data, as the card reads it.
pub struct KeyComponent {
    /// 3DES or AES.
    pub type_byte: u8,
    /// The key's length (AES: given; 3DES: 16).
    pub key_len: usize,
    /// The encrypted key.
    pub encrypted: Vec<u8>,
    /// The check value that came with it.
    pub kcv: Vec<u8>,
}

/// Card: reads a PUT KEY's data: the new version and the three key components.
pub fn parse(data: &[u8]) -> Result<(u8, Vec<KeyComponent>)> {
    let short = || GpError::Malformed("the PUT KEY data ends early".into());
    let (&version, mut rest) = data.split_first().ok_or_else(short)?;
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let (&t, r) = rest.split_first().ok_or_else(short)?;
        let (&len, r) = r.split_first().ok_or_else(short)?;
        let (field, r) = r.split_at_checked(len as usize).ok_or_else(short)?;
        let (key_len, encrypted) = match t {
            TYPE_AES => {
                let (&kl, e) = field.split_first().ok_or_else(short)?;
                (kl as usize, e.to_vec())
            }
            TYPE_DES => (16, field.to_vec()),
            other => {
                return Err(GpError::Malformed(format!(
                    "key type {other:02X} (80 for 3DES, 88 for AES)"
                )))
            }
        };
        let (&kcv_len, r) = r.split_first().ok_or_else(short)?;
        let (kcv, r) = r.split_at_checked(kcv_len as usize).ok_or_else(short)?;
        keys.push(KeyComponent {
            type_byte: t,
            key_len,
            encrypted,
            kcv: kcv.to_vec(),
        });
        rest = r;
    }
    if keys.len() != 3 {
        return Err(GpError::Malformed(format!(
            "a key set is three keys (ENC, MAC, DEK); the command has {}",
            keys.len()
        )));
    }
    Ok((version, keys))
}

/// Card: checks a decrypted key against the check value that came with it.
pub fn check(key: &Key, component: &KeyComponent) -> Result<()> {
    let expect = kcv(key, KcvMethod::gp_default(key.kind()))?;
    let want_type = if key.kind() == KeyType::Des3 {
        TYPE_DES
    } else {
        TYPE_AES
    };
    if component.type_byte != want_type || !crate::block::ct_eq(&expect, &component.kcv) {
        return Err(GpError::Auth(
            "a key's check value does not match the key received".into(),
        ));
    }
    Ok(())
}
