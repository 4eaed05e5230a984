//! What the two secure channel protocols share: key sets, security levels, and one channel
//! type over either protocol, for the host and (in the simulated card) the card.

use crate::apdu::{Command, InitUpdate, Response};
use crate::block::Key;
use crate::{scp02, scp03, GpError, Result};

/// A secure channel key set: ENC, MAC and DEK of one type, with its version on the card.
#[derive(Clone, Debug)]
pub struct KeySet {
    /// Key version number (1-127).
    pub version: u8,
    /// Secure channel encryption key.
    pub enc: Key,
    /// Secure channel MAC key.
    pub mac: Key,
    /// Data encryption key.
    pub dek: Key,
}

impl KeySet {
    /// A key set; the three keys must be of one type.
    pub fn new(version: u8, enc: Key, mac: Key, dek: Key) -> Result<KeySet> {
        if enc.kind() != mac.kind() || mac.kind() != dek.kind() {
            return Err(GpError::Key(
                "the ENC, MAC and DEK keys of a set are of one type".into(),
            ));
        }
        Ok(KeySet {
            version,
            enc,
            mac,
            dek,
        })
    }

    /// The key of `role`.
    pub fn get(&self, role: crate::diversify::KeyRole) -> &Key {
        match role {
            crate::diversify::KeyRole::Enc => &self.enc,
            crate::diversify::KeyRole::Mac => &self.mac,
            crate::diversify::KeyRole::Dek => &self.dek,
        }
    }
}

/// A security level (EXTERNAL AUTHENTICATE's P1): which protections every later command and
/// response carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityLevel(u8);

impl SecurityLevel {
    /// Commands carry a MAC.
    pub const C_MAC: u8 = 0x01;
    /// Command data is encrypted.
    pub const C_DEC: u8 = 0x02;
    /// Responses carry a MAC.
    pub const R_MAC: u8 = 0x10;
    /// Response data is encrypted (SCP03).
    pub const R_ENC: u8 = 0x20;

    /// C-MAC alone: what EXTERNAL AUTHENTICATE itself carries, before the level it sets.
    pub(crate) const AUTHENTICATING: SecurityLevel = SecurityLevel(Self::C_MAC);

    /// The level of these bits, if protocol `scp` (2 or 3) defines it: SCP02 00, 01, 03, 11,
    /// 13; SCP03 those and 33.
    pub fn new(bits: u8, scp: u8) -> Result<SecurityLevel> {
        let ok = match scp {
            2 => matches!(bits, 0x00 | 0x01 | 0x03 | 0x11 | 0x13),
            3 => matches!(bits, 0x00 | 0x01 | 0x03 | 0x11 | 0x13 | 0x33),
            _ => false,
        };
        if !ok {
            return Err(GpError::State(format!(
                "security level {bits:02X} is not one SCP0{scp} defines"
            )));
        }
        Ok(SecurityLevel(bits))
    }

    /// Parses `c-mac`, `c-mac,c-dec`, `c-mac,r-mac`, … (or `none`) for protocol `scp`.
    pub fn parse(s: &str, scp: u8) -> Result<SecurityLevel> {
        let mut bits = 0u8;
        for part in s.split([',', '+']).map(str::trim).filter(|p| !p.is_empty()) {
            bits |= match part {
                "none" => 0,
                "c-mac" => Self::C_MAC,
                "c-dec" | "c-decryption" => Self::C_DEC | Self::C_MAC,
                "r-mac" => Self::R_MAC,
                "r-enc" | "r-encryption" => Self::R_ENC,
                other => {
                    return Err(GpError::State(format!(
                        "unknown protection {other:?} (c-mac, c-dec, r-mac, r-enc)"
                    )))
                }
            };
        }
        SecurityLevel::new(bits, scp)
    }

    /// The P1 byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the level includes `bit`.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit == bit
    }

    /// `c-mac,c-dec,r-mac,r-enc` (or `none`).
    pub fn name(self) -> String {
        let names: Vec<&str> = [
            (Self::C_MAC, "c-mac"),
            (Self::C_DEC, "c-dec"),
            (Self::R_MAC, "r-mac"),
            (Self::R_ENC, "r-enc"),
        ]
        .iter()
        .filter(|(b, _)| self.has(*b))
        .map(|(_, n)| *n)
        .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

/// An open secure channel of either protocol, on the host's or the card's side.
pub enum Channel {
    /// SCP02.
    Scp02(scp02::Channel),
    /// SCP03.
    Scp03(scp03::Channel),
}

impl Channel {
    /// The host's side: checks the card's cryptogram in `iu` (the card's INITIALIZE UPDATE
    /// answer to `host_challenge`) with `keys` (the card's current keys) and returns the
    /// channel and the EXTERNAL AUTHENTICATE to send, which sets `level`. For SCP02, `i` is
    /// the implementation option (usually 15 or 55); SCP03 reads its own from `iu`.
    pub fn open_host(
        keys: &KeySet,
        host_challenge: &[u8; 8],
        iu: &InitUpdate,
        level: SecurityLevel,
        scp02_i: u8,
    ) -> Result<(Channel, Command)> {
        match iu.scp {
            2 => {
                let (c, ea) = scp02::Channel::open_host(keys, host_challenge, iu, level, scp02_i)?;
                Ok((Channel::Scp02(c), ea))
            }
            3 => {
                let (c, ea) = scp03::Channel::open_host(keys, host_challenge, iu, level)?;
                Ok((Channel::Scp03(c), ea))
            }
            n => Err(GpError::Malformed(format!("SCP0{n} is not supported"))),
        }
    }

    /// The protocol (2 or 3).
    pub fn scp(&self) -> u8 {
        match self {
            Channel::Scp02(_) => 2,
            Channel::Scp03(_) => 3,
        }
    }

    /// The security level in force.
    pub fn level(&self) -> SecurityLevel {
        match self {
            Channel::Scp02(c) => c.level(),
            Channel::Scp03(c) => c.level(),
        }
    }

    /// Host: protects a command for the card at the channel's level.
    pub fn wrap(&mut self, cmd: &Command) -> Result<Command> {
        match self {
            Channel::Scp02(c) => c.wrap(cmd),
            Channel::Scp03(c) => c.wrap(cmd),
        }
    }

    /// Host: checks and opens the card's answer to the last wrapped command (`sent` as it was
    /// before wrapping).
    pub fn unwrap(&mut self, sent: &Command, resp: &Response) -> Result<Response> {
        match self {
            Channel::Scp02(c) => c.unwrap(sent, resp),
            Channel::Scp03(c) => c.unwrap(resp),
        }
    }

    /// A new key encrypted for the card under the channel's DEK (SCP02: the session DEK;
    /// SCP03: the static DEK), as PUT KEY carries it.
    pub fn encrypt_key(&self, key: &Key) -> Result<Vec<u8>> {
        match self {
            Channel::Scp02(c) => c.encrypt_key(key),
            Channel::Scp03(c) => c.encrypt_key(key),
        }
    }
}
