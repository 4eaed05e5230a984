//! The GlobalPlatform functions as one call of the HSM API ([`super::HsmApi::gp`]): a request
//! and an answer that travel as JSON, so the wire carries them without a message per step.

use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};
use crate::hsm::{GpComponent, GpKeysRef, GpNewSet, GpSetInfo, Hsm, Session};

/// What is asked (Crypto Officer, or for reads the Crypto User too).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum GpCall {
    /// The partition's master key sets.
    List,
    /// A new set generated inside.
    Generate {
        /// The set's name.
        set: String,
        /// `des3`, `aes-128`, `aes-192`, `aes-256`.
        key_type: String,
        /// 1-127.
        version: u8,
        /// The card population it serves.
        population: String,
    },
    /// A set entered from components in a key ceremony.
    Import {
        /// The set's name.
        set: String,
        /// Key type.
        key_type: String,
        /// 1-127.
        version: u8,
        /// The card population.
        population: String,
        /// At least two components per key, each with its check value.
        components: Vec<GpComponent>,
        /// Each whole key's check value (role, hex), checked when given.
        whole: Vec<(String, String)>,
    },
    /// The next version of a set, generated.
    Rotate {
        /// The set's name.
        set: String,
    },
    /// A version kept but never used again.
    Retire {
        /// The set's name.
        set: String,
        /// The version.
        version: u8,
    },
    /// A check value of a set's key or of a card key diversified from it (`kdd` given).
    Kcv {
        /// Which keys.
        keys: GpKeysRef,
        /// `enc`, `mac`, `dek`.
        role: String,
        /// `des3-zeros`, `aes-gp`, `aes-zeros`, `aes-cmac`.
        method: String,
        /// The card's KDD (hex), for a card key.
        kdd: Option<String>,
    },
    /// The check values of a card's three keys.
    Diversify {
        /// Set and method.
        keys: GpKeysRef,
        /// The card's KDD (hex).
        kdd: String,
    },
    /// Opens a channel: the card's INITIALIZE UPDATE answer to the host challenge.
    Open {
        /// The card's current keys.
        keys: GpKeysRef,
        /// Eight bytes (hex) sent in INITIALIZE UPDATE.
        host_challenge: String,
        /// The answer's data (hex).
        iu: String,
        /// `c-mac`, `c-mac,c-dec`, `c-mac,r-mac`, `c-mac,c-dec,r-mac`, `c-mac,c-dec,r-mac,r-enc`.
        level: String,
        /// SCP02's option i (ignored for SCP03).
        scp02_i: u8,
    },
    /// A command (hex) protected over a channel.
    Wrap {
        /// The channel.
        channel: String,
        /// The command APDU (hex).
        command: String,
    },
    /// A card's answer to the channel's last command, checked and opened.
    Unwrap {
        /// The channel.
        channel: String,
        /// The answer (hex, with its status word).
        response: String,
    },
    /// PUT KEY of the keys `keys` names for this channel's card.
    PutKey {
        /// The channel.
        channel: String,
        /// The new keys (usually a master set and a method).
        keys: GpKeysRef,
        /// The version replaced (0: added).
        old_version: u8,
        /// The new version.
        new_version: u8,
    },
    /// Closes a channel.
    Close {
        /// The channel.
        channel: String,
    },
}

/// What comes back.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum GpAnswer {
    /// Master key sets.
    Sets {
        /// Each set and version.
        sets: Vec<GpSetInfo>,
    },
    /// One set.
    Set {
        /// It.
        set: GpSetInfo,
    },
    /// A check value (hex).
    Kcv {
        /// The value.
        kcv: String,
    },
    /// Check values (role, method, hex).
    Kcvs {
        /// The values.
        kcvs: Vec<(String, String, String)>,
    },
    /// A channel opened, and EXTERNAL AUTHENTICATE to send (hex).
    Opened {
        /// The channel.
        channel: String,
        /// The APDU.
        apdu: String,
    },
    /// An APDU or response (hex).
    Apdu {
        /// Its bytes.
        apdu: String,
    },
    /// Done.
    Done,
}

fn unhex(what: &str, v: &str) -> Result<Vec<u8>> {
    hex::decode(v.trim()).map_err(|_| HsmError::InvalidInput(format!("{what} is not hex")))
}

/// Answers `call` for session `s` with the engine.
pub fn answer(hsm: &mut Hsm, s: &Session, call: GpCall) -> Result<GpAnswer> {
    let apdu = |b: Vec<u8>| GpAnswer::Apdu {
        apdu: hex::encode_upper(b),
    };
    Ok(match call {
        GpCall::List => GpAnswer::Sets {
            sets: hsm.gp_list(s)?,
        },
        GpCall::Generate {
            set,
            key_type,
            version,
            population,
        } => GpAnswer::Set {
            set: hsm.gp_generate(s, &GpNewSet::new(&set, &key_type, version, &population))?,
        },
        GpCall::Import {
            set,
            key_type,
            version,
            population,
            components,
            whole,
        } => GpAnswer::Set {
            set: hsm.gp_import(
                s,
                &GpNewSet::new(&set, &key_type, version, &population),
                &components,
                &whole,
            )?,
        },
        GpCall::Rotate { set } => GpAnswer::Set {
            set: hsm.gp_rotate(s, &set)?,
        },
        GpCall::Retire { set, version } => {
            hsm.gp_retire(s, &set, version)?;
            GpAnswer::Done
        }
        GpCall::Kcv {
            keys,
            role,
            method,
            kdd,
        } => {
            let kdd = kdd.map(|k| unhex("the KDD", &k)).transpose()?;
            GpAnswer::Kcv {
                kcv: hsm.gp_kcv(s, &keys, &role, &method, kdd.as_deref())?,
            }
        }
        GpCall::Diversify { keys, kdd } => GpAnswer::Kcvs {
            kcvs: hsm.gp_diversify(s, &keys, &unhex("the KDD", &kdd)?)?,
        },
        GpCall::Open {
            keys,
            host_challenge,
            iu,
            level,
            scp02_i,
        } => {
            let hc: [u8; 8] = unhex("the host challenge", &host_challenge)?
                .try_into()
                .map_err(|_| HsmError::InvalidInput("the host challenge is 8 bytes".into()))?;
            let (channel, ea) = hsm.gp_open(
                s,
                &keys,
                &hc,
                &unhex("the card's answer", &iu)?,
                &level,
                scp02_i,
            )?;
            GpAnswer::Opened {
                channel,
                apdu: hex::encode_upper(ea),
            }
        }
        GpCall::Wrap { channel, command } => {
            apdu(hsm.gp_wrap(s, &channel, &unhex("the command", &command)?)?)
        }
        GpCall::Unwrap { channel, response } => {
            apdu(hsm.gp_unwrap(s, &channel, &unhex("the response", &response)?)?)
        }
        GpCall::PutKey {
            channel,
            keys,
            old_version,
            new_version,
        } => apdu(hsm.gp_put_key(s, &channel, &keys, old_version, new_version)?),
        GpCall::Close { channel } => {
            hsm.gp_close(s, &channel)?;
            GpAnswer::Done
        }
    })
}
