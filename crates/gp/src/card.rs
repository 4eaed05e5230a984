//! A simulated card: the card side of SCP02 or SCP03 (INITIALIZE UPDATE, EXTERNAL
//! AUTHENTICATE, protected commands and responses at every security level), PUT KEY with key
//! versions, GET DATA of its key information, and an echo command for tests. It answers
//! every input with a status word, as a card does: never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::apdu::{
    Command, InitUpdate, Response, SW_CONDITIONS, SW_INS, SW_LENGTH, SW_NOT_FOUND, SW_OK,
    SW_SECURITY, SW_WRONG_DATA,
};
use crate::block::KeyType;
use crate::channel::KeySet;
use crate::{put_key, scp02, scp03, GpError};

/// The proprietary instruction the simulated card echoes (its data back), for tests of
/// protected responses.
pub const INS_ECHO: u8 = 0xee;

enum CardChannel {
    Scp02(scp02::Channel),
    Scp03(scp03::Channel),
}

struct Pending {
    channel: CardChannel,
    version: u8,
    host: Vec<u8>,
    card: Vec<u8>,
    seq: Vec<u8>,
    authenticated: bool,
}

/// A simulated card's memory, as saved between runs.
#[derive(Clone, Serialize, Deserialize)]
pub struct SimCardState {
    /// 2 or 3.
    pub scp: u8,
    /// The protocol option.
    pub i: u8,
    /// Key diversification data (hex).
    pub kdd: String,
    /// The sequence counter.
    pub seq: u32,
    /// Key sets.
    pub sets: Vec<SavedSet>,
}

/// One key set of a simulated card.
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedSet {
    /// Version.
    pub version: u8,
    /// Key type.
    pub key_type: String,
    /// ENC, MAC, DEK (hex).
    pub keys: Vec<String>,
}

/// A card with its key sets by version.
pub struct SimCard {
    kdd: [u8; 10],
    scp: u8,
    i: u8,
    sets: BTreeMap<u8, KeySet>,
    seq: u32,
    session: Option<Pending>,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // A simulator's challenge; a failed RNG leaves zeros, which only weakens the simulation.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

impl SimCard {
    /// A card speaking SCP0`scp` (option `i`: SCP02 usually 55, SCP03 usually 70) with
    /// diversification data `kdd` and its initial key set (a manufacturer's, or issuer keys).
    pub fn new(scp: u8, i: u8, kdd: [u8; 10], initial: KeySet) -> crate::Result<SimCard> {
        let want = if scp == 2 { "3DES" } else { "AES" };
        if (scp == 2) != (initial.enc.kind() == KeyType::Des3) || !(2..=3).contains(&scp) {
            return Err(GpError::Key(format!("an SCP0{scp} card holds {want} keys")));
        }
        if scp == 3 && i & 0x01 != 0 {
            return Err(GpError::State(
                "the simulated card speaks SCP03 in S8 mode (i without bit 01)".into(),
            ));
        }
        Ok(SimCard {
            kdd,
            scp,
            i,
            sets: BTreeMap::from([(initial.version, initial)]),
            seq: 0,
            session: None,
        })
    }

    /// The key set versions the card holds.
    pub fn key_versions(&self) -> Vec<u8> {
        self.sets.keys().copied().collect()
    }

    /// Whether the card holds key set `version` with exactly these keys (a test's check).
    pub fn holds(&self, set: &KeySet) -> bool {
        self.sets.get(&set.version).is_some_and(|s| {
            s.enc.expose() == set.enc.expose()
                && s.mac.expose() == set.mac.expose()
                && s.dek.expose() == set.dek.expose()
        })
    }

    /// What the card holds, to keep it between runs (its keys in clear: a simulated card's
    /// memory, for tests and the demo, never a real card's). A channel does not survive.
    pub fn state(&self) -> SimCardState {
        SimCardState {
            scp: self.scp,
            i: self.i,
            kdd: hex::encode_upper(self.kdd),
            seq: self.seq,
            sets: self
                .sets
                .values()
                .map(|s| SavedSet {
                    version: s.version,
                    key_type: s.enc.kind().name().into(),
                    keys: [&s.enc, &s.mac, &s.dek]
                        .iter()
                        .map(|k| hex::encode_upper(k.expose()))
                        .collect(),
                })
                .collect(),
        }
    }

    /// The card as [`SimCard::state`] kept it.
    pub fn from_state(st: &SimCardState) -> crate::Result<SimCard> {
        let bad = |w: &str| GpError::Malformed(format!("simulated card: {w}"));
        let kdd: [u8; 10] = hex::decode(&st.kdd)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("kdd is 10 bytes of hex"))?;
        let mut sets = BTreeMap::new();
        for s in &st.sets {
            let kind = KeyType::parse(&s.key_type)?;
            let k = |i: usize| -> crate::Result<crate::block::Key> {
                let v = s.keys.get(i).ok_or_else(|| bad("three keys per set"))?;
                let v = zeroize::Zeroizing::new(hex::decode(v).map_err(|_| bad("keys are hex"))?);
                crate::block::Key::new(kind, &v)
            };
            sets.insert(s.version, KeySet::new(s.version, k(0)?, k(1)?, k(2)?)?);
        }
        let first = sets
            .values()
            .next()
            .cloned()
            .ok_or_else(|| bad("no key set"))?;
        let mut card = SimCard::new(st.scp, st.i, kdd, first)?;
        card.sets = sets;
        card.seq = st.seq;
        Ok(card)
    }

    /// Answers one APDU (bytes in, bytes out).
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let r = match Command::parse(apdu) {
            Ok(c) => self.answer(&c),
            Err(_) => Response::status(SW_LENGTH),
        };
        r.to_bytes()
    }

    fn answer(&mut self, c: &Command) -> Response {
        match (c.cla & !0x04, c.ins) {
            (0x00, 0xa4) => {
                // SELECT (of the issuer security domain): ends any channel.
                self.session = None;
                Response::status(SW_OK)
            }
            (0x80, 0x50) => self.initialize_update(c),
            (0x80, 0x82) => self.external_authenticate(c),
            _ => self.protected(c),
        }
    }

    fn initialize_update(&mut self, c: &Command) -> Response {
        self.session = None;
        if c.data.len() != 8 {
            return Response::status(SW_LENGTH);
        }
        let version = match c.p1 {
            0 => match self.sets.keys().next() {
                Some(v) => *v,
                None => return Response::status(SW_NOT_FOUND),
            },
            v => v,
        };
        let Some(keys) = self.sets.get(&version) else {
            return Response::status(SW_NOT_FOUND);
        };
        self.seq = self.seq.wrapping_add(1);
        let made = if self.scp == 2 {
            let seq = (self.seq as u16).to_be_bytes().to_vec();
            let card = random::<6>().to_vec();
            scp02::Channel::open_card(keys, &seq, self.i).and_then(|ch| {
                let sk = scp02::session_keys(keys, &seq)?;
                let cg = scp02::card_cryptogram(&sk, &c.data, &seq, &card)?;
                Ok((CardChannel::Scp02(ch), card, seq, cg))
            })
        } else {
            let seq = if self.i & 0x10 != 0 {
                self.seq.to_be_bytes()[1..].to_vec()
            } else {
                vec![]
            };
            let card = random::<8>().to_vec();
            scp03::Channel::open_card(keys, &c.data, &card).and_then(|ch| {
                let cg = ch.card_cryptogram(&c.data, &card)?;
                Ok((CardChannel::Scp03(ch), card, seq, cg))
            })
        };
        let Ok((channel, card, seq, cg)) = made else {
            return Response::status(SW_CONDITIONS);
        };
        let mut cryptogram = [0u8; 8];
        cryptogram.copy_from_slice(&cg);
        let iu = InitUpdate {
            kdd: self.kdd,
            key_version: version,
            scp: self.scp,
            i: (self.scp == 3).then_some(self.i),
            seq: seq.clone(),
            card_challenge: card.clone(),
            card_cryptogram: cryptogram,
        };
        self.session = Some(Pending {
            channel,
            version,
            host: c.data.clone(),
            card,
            seq,
            authenticated: false,
        });
        Response::ok(iu.to_bytes())
    }

    fn external_authenticate(&mut self, c: &Command) -> Response {
        let Some(mut s) = self.session.take() else {
            return Response::status(SW_CONDITIONS);
        };
        if s.authenticated {
            return Response::status(SW_CONDITIONS);
        }
        let checked = match &mut s.channel {
            CardChannel::Scp02(ch) => ch.external_authenticate(c, &s.host, &s.seq, &s.card),
            CardChannel::Scp03(ch) => ch.external_authenticate(c, &s.host, &s.card),
        };
        match checked {
            Ok(()) => {
                s.authenticated = true;
                self.session = Some(s);
                Response::status(SW_OK)
            }
            // A failed authentication ends the attempt, as on a card.
            Err(_) => Response::status(SW_SECURITY),
        }
    }

    fn protected(&mut self, c: &Command) -> Response {
        let Some(mut s) = self.session.take() else {
            return Response::status(SW_SECURITY);
        };
        if !s.authenticated {
            return Response::status(SW_CONDITIONS);
        }
        let plain = match &mut s.channel {
            CardChannel::Scp02(ch) => ch.unwrap_command(c),
            CardChannel::Scp03(ch) => ch.unwrap_command(c),
        };
        let Ok(plain) = plain else {
            // A command that does not verify closes the channel.
            return Response::status(SW_SECURITY);
        };
        let answer = match plain.ins {
            0xd8 => self.put_key(&s, &plain),
            0xca if plain.p1 == 0x00 && plain.p2 == 0xe0 => Response::ok(self.key_information()),
            INS_ECHO => Response::ok(plain.data.clone()),
            _ => Response::status(SW_INS),
        };
        let wrapped = match &mut s.channel {
            CardChannel::Scp02(ch) => ch.wrap_response(&answer),
            CardChannel::Scp03(ch) => ch.wrap_response(&answer),
        };
        // PUT KEY replacing the set in use ends the channel with its answer.
        if self.sets.contains_key(&s.version) {
            self.session = Some(s);
        }
        wrapped.unwrap_or_else(|_| Response::status(SW_CONDITIONS))
    }

    fn put_key(&mut self, s: &Pending, c: &Command) -> Response {
        let Ok((version, comps)) = put_key::parse(&c.data) else {
            return Response::status(SW_WRONG_DATA);
        };
        if c.p1 != 0 && !self.sets.contains_key(&c.p1) {
            return Response::status(SW_NOT_FOUND);
        }
        if c.p1 == 0 && self.sets.contains_key(&version) {
            return Response::status(SW_WRONG_DATA);
        }
        let mut keys = Vec::new();
        for comp in &comps {
            let key = match &s.channel {
                CardChannel::Scp02(ch) => ch.decrypt_key(&comp.encrypted),
                CardChannel::Scp03(ch) => ch.decrypt_key(&comp.encrypted, comp.key_len),
            };
            match key.and_then(|k| put_key::check(&k, comp).map(|_| k)) {
                Ok(k) => keys.push(k),
                Err(_) => return Response::status(SW_SECURITY),
            }
        }
        let mut it = keys.into_iter();
        let (Some(enc), Some(mac), Some(dek)) = (it.next(), it.next(), it.next()) else {
            return Response::status(SW_WRONG_DATA);
        };
        let Ok(set) = KeySet::new(version, enc, mac, dek) else {
            return Response::status(SW_WRONG_DATA);
        };
        if c.p1 != 0 {
            self.sets.remove(&c.p1);
        }
        self.sets.insert(version, set);
        let mut out = vec![version];
        for comp in &comps {
            out.extend_from_slice(&comp.kcv);
        }
        Response::ok(out)
    }

    /// Key information template (tag E0): per key, C0 04 id version type length.
    fn key_information(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (v, set) in &self.sets {
            for (id, k) in [(1u8, &set.enc), (2, &set.mac), (3, &set.dek)] {
                let t = if k.kind() == KeyType::Des3 {
                    put_key::TYPE_DES
                } else {
                    put_key::TYPE_AES
                };
                body.extend_from_slice(&[0xc0, 0x04, id, *v, t, k.kind().key_len() as u8]);
            }
        }
        let mut out = vec![0xe0, body.len() as u8];
        out.extend(body);
        out
    }
}
