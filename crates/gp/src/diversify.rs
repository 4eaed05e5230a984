//! One card's keys from a master key set and the card's key diversification data (KDD, the
//! first ten bytes of its INITIALIZE UPDATE response), by the methods issuers use.

use zeroize::Zeroizing;

use crate::block::{ecb_encrypt, Key, KeyType};
use crate::{kdf, GpError, Result};

/// The three keys of a secure channel key set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyRole {
    /// Secure channel encryption key (ENC).
    Enc,
    /// Secure channel MAC key (MAC).
    Mac,
    /// Data encryption key (DEK, also called KEK): encrypts keys sent to the card.
    Dek,
}

impl KeyRole {
    /// All three, in key-set order (key identifiers 1, 2, 3).
    pub const ALL: [KeyRole; 3] = [KeyRole::Enc, KeyRole::Mac, KeyRole::Dek];

    /// The key identifier within the set (1, 2, 3), which the methods also use.
    pub fn id(self) -> u8 {
        match self {
            KeyRole::Enc => 1,
            KeyRole::Mac => 2,
            KeyRole::Dek => 3,
        }
    }

    /// `enc`, `mac`, `dek`.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Enc => "enc",
            KeyRole::Mac => "mac",
            KeyRole::Dek => "dek",
        }
    }
}

/// A diversification method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// VISA2 (3DES masters): KDD bytes 0-1 and 4-7 with `F0`/`0F` and the key's id.
    Visa2,
    /// EMV CPS 1.1 (3DES masters): KDD bytes 4-9 with `F0`/`0F` and the key's id.
    EmvCps11,
    /// KDF3 (AES masters): SCP03's AES-CMAC counter-mode KDF with the key's id and the KDD.
    Kdf3,
}

impl Method {
    /// `visa2`, `emv-cps11`, `kdf3`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Visa2 => "visa2",
            Method::EmvCps11 => "emv-cps11",
            Method::Kdf3 => "kdf3",
        }
    }

    /// Parses [`Method::name`].
    pub fn parse(s: &str) -> Result<Method> {
        Ok(match s {
            "visa2" => Method::Visa2,
            "emv-cps11" | "emv" | "cps11" => Method::EmvCps11,
            "kdf3" => Method::Kdf3,
            _ => {
                return Err(GpError::Malformed(format!(
                    "unknown diversification method {s:?} (visa2, emv-cps11, kdf3)"
                )))
            }
        })
    }
}

/// Key diversification data: ten bytes.
pub const KDD_LEN: usize = 10;

fn check_kdd(kdd: &[u8]) -> Result<()> {
    if kdd.len() != KDD_LEN {
        return Err(GpError::Malformed(format!(
            "key diversification data is {KDD_LEN} bytes, not {}",
            kdd.len()
        )));
    }
    Ok(())
}

/// The 16-byte block VISA2 or EMV CPS 1.1 encrypts: six KDD bytes, `F0`, the key id, the same
/// six bytes, `0F`, the key id.
fn two_halves(six: &[u8], role: KeyRole) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..6].copy_from_slice(six);
    d[6] = 0xf0;
    d[7] = role.id();
    d[8..14].copy_from_slice(six);
    d[14] = 0x0f;
    d[15] = role.id();
    d
}

/// The card key for `role` from `master` and the card's `kdd` by `method`. The result has
/// the master's type.
pub fn diversify(method: Method, master: &Key, role: KeyRole, kdd: &[u8]) -> Result<Key> {
    check_kdd(kdd)?;
    let need = |t: &str| {
        GpError::Key(format!(
            "{} diversifies {t} master keys, not {}",
            method.name(),
            master.kind().name()
        ))
    };
    match method {
        Method::Visa2 | Method::EmvCps11 => {
            if master.kind() != KeyType::Des3 {
                return Err(need("3DES"));
            }
            let six: Vec<u8> = match method {
                Method::Visa2 => kdd[0..2].iter().chain(&kdd[4..8]).copied().collect(),
                _ => kdd[4..10].to_vec(),
            };
            let card = Zeroizing::new(ecb_encrypt(master, &two_halves(&six, role))?);
            Key::new(KeyType::Des3, &card)
        }
        Method::Kdf3 => {
            if !master.kind().is_aes() {
                return Err(need("AES"));
            }
            let mut suffix = vec![0, 0, 0, role.id(), 0];
            suffix.extend_from_slice(kdd);
            let card = kdf::counter_mode(master, &[], &suffix, master.kind().key_len())?;
            Key::new(master.kind(), &card)
        }
    }
}
