//! Secure channels to cards, computed in the HSM: opened with the keys a set names for the
//! card (its own, or diversified from its KDD), commands protected and answers checked at the
//! channel's level, PUT KEY of the card's new keys. Session keys never leave; each channel
//! belongs to the login that opened it (no other login can use it, and it ends with the
//! login), and is dropped after ten idle minutes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrohsm_gp::apdu::{Command, InitUpdate, Response};
use ferrohsm_gp::channel::{Channel, SecurityLevel};
use ferrohsm_gp::diversify::KeyRole;
use ferrohsm_gp::kcv::{kcv, KcvMethod};

use super::gp::gp_err;
use super::*;
use crate::hsm::GpKeysRef;

/// Open channels one login keeps.
const MAX_CHANNELS: usize = 256;
/// A channel unused this long is dropped.
const CHANNEL_IDLE: Duration = Duration::from_secs(600);

pub(super) struct OpenChannel {
    channel: Channel,
    kdd: [u8; 10],
    used: Instant,
    /// The last command protected on it, as it was before (an R-MAC covers it).
    last: Option<Command>,
}

/// A login's open channels, by id.
#[derive(Default)]
pub(super) struct Channels(Mutex<Vec<(String, OpenChannel)>>);

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} secure channel(s)", self.lock().len())
    }
}

impl Channels {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, OpenChannel)>> {
        // Only pushes, removals and in-place steps happen under it: a poisoned list is whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hsm {
    /// Opens a secure channel to a card: checks its INITIALIZE UPDATE answer (`iu`, to
    /// `host_challenge`) with the keys `keys` names for this card (from its KDD), and returns
    /// the channel's id and the EXTERNAL AUTHENTICATE to send. The session keys stay here.
    pub fn gp_open(
        &mut self,
        s: &Session,
        keys: &GpKeysRef,
        host_challenge: &[u8; 8],
        iu: &[u8],
        level: &str,
        scp02_i: u8,
    ) -> Result<(String, Vec<u8>)> {
        let (id, pmk) = self.key_user(s, "opening a secure channel to a card", false)?;
        let iu = InitUpdate::parse(iu).map_err(gp_err)?;
        // With no version named, the one the card says it holds, when the set has it.
        let named = GpKeysRef {
            version: keys.version.or(Some(iu.key_version)),
            ..keys.clone()
        };
        let card_keys = match self.gp_card_keys(id, &pmk, &named, &iu.kdd, Some(iu.key_version)) {
            Err(HsmError::NotFound(_)) if keys.version.is_none() => {
                self.gp_card_keys(id, &pmk, keys, &iu.kdd, Some(iu.key_version))?
            }
            other => other?,
        };
        let level = SecurityLevel::parse(level, iu.scp).map_err(gp_err)?;
        let what = format!("{} v{}", keys.set, card_keys.version);
        let card = hex::encode_upper(iu.kdd);
        let opened = Channel::open_host(&card_keys, host_challenge, &iu, level, scp02_i);
        let (channel, ea) = match opened {
            Ok(x) => x,
            Err(e) => {
                let e = HsmError::Refused(format!("card {card}: {e}"));
                return Err(self.refuse("gp-channel-open", s.role.short(), s.partition(), e));
            }
        };
        let ea = ea.to_bytes().map_err(gp_err)?;
        let sid = crypto::random_hex_id(16);
        {
            let mut all = s.gp_channels.lock();
            all.retain(|(_, c)| c.used.elapsed() < CHANNEL_IDLE);
            if all.len() >= MAX_CHANNELS {
                return Err(HsmError::Exhausted(format!(
                    "{MAX_CHANNELS} secure channels are open; close some (`gp_close`)"
                )));
            }
            all.push((
                sid.clone(),
                OpenChannel {
                    channel,
                    kdd: iu.kdd,
                    used: Instant::now(),
                    last: None,
                },
            ));
        }
        let e = self.ev(
            "gp-channel-open",
            s.role.short(),
            s.partition(),
            Some(&what),
            &format!(
                "success: card {card}, SCP0{}, level {}, keys {}",
                iu.scp,
                level.name(),
                keys.method.as_deref().unwrap_or("as stored")
            ),
        );
        self.store.event(&e)?;
        Ok((sid, ea))
    }

    /// Runs `f` on the login's open channel `sid`.
    fn gp_with<T>(
        &mut self,
        s: &Session,
        sid: &str,
        f: impl FnOnce(&mut OpenChannel) -> Result<T>,
    ) -> Result<T> {
        self.partition_role(s, "using a secure channel", false)?;
        let mut all = s.gp_channels.lock();
        all.retain(|(_, c)| c.used.elapsed() < CHANNEL_IDLE);
        let c = all
            .iter_mut()
            .find(|(k, _)| k == sid)
            .map(|(_, c)| c)
            .ok_or_else(|| {
                HsmError::NotFound(format!("no open secure channel {sid} in this login"))
            })?;
        c.used = Instant::now();
        f(c)
    }

    /// Protects a command for the card over channel `sid`.
    pub fn gp_wrap(&mut self, s: &Session, sid: &str, command: &[u8]) -> Result<Vec<u8>> {
        let cmd = Command::parse(command).map_err(gp_err)?;
        self.gp_with(s, sid, |c| {
            let w = c
                .channel
                .wrap(&cmd)
                .and_then(|w| w.to_bytes())
                .map_err(gp_err)?;
            c.last = Some(cmd);
            Ok(w)
        })
    }

    /// Checks and opens the card's answer to the last command protected on channel `sid`
    /// (this one or PUT KEY). An answer whose R-MAC does not verify is refused.
    pub fn gp_unwrap(&mut self, s: &Session, sid: &str, response: &[u8]) -> Result<Vec<u8>> {
        let resp = Response::parse(response).map_err(gp_err)?;
        self.gp_with(s, sid, |c| {
            let sent = c
                .last
                .take()
                .ok_or_else(|| HsmError::State("no command was sent on this channel".into()))?;
            c.channel
                .unwrap(&sent, &resp)
                .map(|r| r.to_bytes())
                .map_err(gp_err)
        })
    }

    /// PUT KEY for the card of channel `sid`: the keys `new` names for this card (diversified
    /// with its KDD), as version `new_version`, replacing `old_version` (0: added), encrypted
    /// for the card and protected over the channel. Audited with the new keys' check values.
    pub fn gp_put_key(
        &mut self,
        s: &Session,
        sid: &str,
        new: &GpKeysRef,
        old_version: u8,
        new_version: u8,
    ) -> Result<Vec<u8>> {
        let (id, pmk) = self.key_user(s, "sending keys to a card", false)?;
        let kdd = self.gp_with(s, sid, |c| Ok(c.kdd))?;
        let keys = self.gp_card_keys(id, &pmk, new, &kdd, Some(new_version))?;
        let m = KcvMethod::gp_default(keys.enc.kind());
        let kcvs: Vec<String> = KeyRole::ALL
            .into_iter()
            .map(|r| kcv(keys.get(r), m).map(hex::encode_upper))
            .collect::<std::result::Result<_, _>>()
            .map_err(gp_err)?;
        let wrapped = self.gp_with(s, sid, |c| {
            let cmd =
                ferrohsm_gp::put_key::command(&c.channel, old_version, &keys).map_err(gp_err)?;
            let w = c
                .channel
                .wrap(&cmd)
                .and_then(|w| w.to_bytes())
                .map_err(gp_err)?;
            c.last = Some(cmd);
            Ok(w)
        })?;
        let e = self.ev(
            "gp-put-key",
            s.role.short(),
            s.partition(),
            Some(&format!("{} v{}", new.set, new_version)),
            &format!(
                "success: card {}, keys {} from {}, replacing version {old_version}; KCV ({}) ENC {} MAC {} DEK {}",
                hex::encode_upper(kdd),
                new.method.as_deref().unwrap_or("as stored"),
                new.set,
                m.name(),
                kcvs[0],
                kcvs[1],
                kcvs[2]
            ),
        );
        self.store.event(&e)?;
        Ok(wrapped)
    }

    /// Closes channel `sid` (its session keys dropped).
    pub fn gp_close(&mut self, s: &Session, sid: &str) -> Result<()> {
        self.partition_role(s, "closing a secure channel", false)?;
        s.gp_channels.lock().retain(|(k, _)| k != sid);
        Ok(())
    }
}
