//! SCP02 (GlobalPlatform Card Specification 2.2, Appendix E): two-key 3DES session keys from
//! the sequence counter, cryptograms as full 3DES MACs, C-MAC as the ISO/IEC 9797-1
//! algorithm 3 ("retail") MAC on the modified APDU with the previous C-MAC as ICV (encrypted
//! with single DES when the option `i` has bit `10`, as options 15 and 55 do), C-DECRYPTION
//! as 3DES-CBC with a zero IV, and R-MAC as a retail MAC over the command and the response.

use crate::apdu::{Command, InitUpdate, Response};
use crate::block::{
    cbc_decrypt, cbc_encrypt, cbc_mac, ct_eq, ecb_decrypt, ecb_encrypt, pad80, retail_mac,
    single_des_block, unpad80, Key, KeyType,
};
use crate::channel::{KeySet, SecurityLevel};
use crate::{GpError, Result};

const ZERO8: [u8; 8] = [0; 8];

/// The session keys of one channel.
pub struct SessionKeys {
    /// S-ENC (constant 0182).
    pub enc: Key,
    /// C-MAC key (0101).
    pub cmac: Key,
    /// R-MAC key (0102).
    pub rmac: Key,
    /// Session DEK (0181).
    pub dek: Key,
}

fn session_key(static_key: &Key, constant: [u8; 2], seq: &[u8]) -> Result<Key> {
    if static_key.kind() != KeyType::Des3 {
        return Err(GpError::Key("SCP02 keys are two-key 3DES".into()));
    }
    let mut d = [0u8; 16];
    d[..2].copy_from_slice(&constant);
    d[2..4].copy_from_slice(seq);
    let k = zeroize::Zeroizing::new(cbc_encrypt(static_key, &ZERO8, &d)?);
    Key::new(KeyType::Des3, &k)
}

/// The session keys from the static keys and the sequence counter (two bytes).
pub fn session_keys(keys: &KeySet, seq: &[u8]) -> Result<SessionKeys> {
    if seq.len() != 2 {
        return Err(GpError::Malformed(
            "the SCP02 sequence counter is 2 bytes".into(),
        ));
    }
    Ok(SessionKeys {
        enc: session_key(&keys.enc, [0x01, 0x82], seq)?,
        cmac: session_key(&keys.mac, [0x01, 0x01], seq)?,
        rmac: session_key(&keys.mac, [0x01, 0x02], seq)?,
        dek: session_key(&keys.dek, [0x01, 0x81], seq)?,
    })
}

/// The card's cryptogram: MAC of host challenge, sequence counter and card challenge.
pub fn card_cryptogram(sk: &SessionKeys, host: &[u8], seq: &[u8], card: &[u8]) -> Result<Vec<u8>> {
    cbc_mac(&sk.enc, &ZERO8, &pad80(&[host, seq, card].concat(), 8))
}

/// The host's cryptogram: MAC of sequence counter, card challenge and host challenge.
pub fn host_cryptogram(sk: &SessionKeys, host: &[u8], seq: &[u8], card: &[u8]) -> Result<Vec<u8>> {
    cbc_mac(&sk.enc, &ZERO8, &pad80(&[seq, card, host].concat(), 8))
}

/// One side of an open SCP02 channel.
pub struct Channel {
    keys: SessionKeys,
    level: SecurityLevel,
    /// The implementation option ("i").
    i: u8,
    /// The last C-MAC (the next command's ICV, before encryption); none before the first.
    icv: Option<[u8; 8]>,
    /// The last R-MAC (the next response's ICV).
    ricv: [u8; 8],
    /// The command an R-MAC covers, as sent before protection (card side keeps it).
    last_plain: Option<Command>,
}

impl Channel {
    fn new(keys: SessionKeys, i: u8) -> Channel {
        Channel {
            keys,
            level: SecurityLevel::AUTHENTICATING,
            i,
            icv: None,
            ricv: ZERO8,
            last_plain: None,
        }
    }

    /// The security level in force.
    pub fn level(&self) -> SecurityLevel {
        self.level
    }

    /// Host: checks the card's cryptogram and makes EXTERNAL AUTHENTICATE for `level`.
    pub fn open_host(
        keys: &KeySet,
        host_challenge: &[u8; 8],
        iu: &InitUpdate,
        level: SecurityLevel,
        i: u8,
    ) -> Result<(Channel, Command)> {
        let sk = session_keys(keys, &iu.seq)?;
        let expect = card_cryptogram(&sk, host_challenge, &iu.seq, &iu.card_challenge)?;
        if !ct_eq(&expect, &iu.card_cryptogram) {
            return Err(GpError::Auth(
                "the card's cryptogram does not verify: it does not hold these keys".into(),
            ));
        }
        let hc = host_cryptogram(&sk, host_challenge, &iu.seq, &iu.card_challenge)?;
        let level = SecurityLevel::new(level.bits(), 2)?;
        let mut ch = Channel::new(sk, i);
        let ea = ch.wrap(&Command::new(0x80, 0x82, level.bits(), 0x00, hc))?;
        ch.level = level;
        Ok((ch, ea))
    }

    /// Card: the channel after INITIALIZE UPDATE (its session keys), waiting for EXTERNAL
    /// AUTHENTICATE.
    pub fn open_card(keys: &KeySet, seq: &[u8], i: u8) -> Result<Channel> {
        Ok(Channel::new(session_keys(keys, seq)?, i))
    }

    /// Card: checks EXTERNAL AUTHENTICATE (C-MAC and host cryptogram); sets its level.
    pub fn external_authenticate(
        &mut self,
        cmd: &Command,
        host_challenge: &[u8],
        seq: &[u8],
        card_challenge: &[u8],
    ) -> Result<()> {
        let plain = self.unwrap_command(cmd)?;
        let expect = host_cryptogram(&self.keys, host_challenge, seq, card_challenge)?;
        if !ct_eq(&expect, &plain.data) {
            return Err(GpError::Auth("the host cryptogram does not verify".into()));
        }
        self.level = SecurityLevel::new(cmd.p1, 2)?;
        Ok(())
    }

    /// The ICV for the next C-MAC.
    fn next_icv(&self) -> Result<Vec<u8>> {
        match self.icv {
            None => Ok(ZERO8.to_vec()),
            Some(prev) if self.i & 0x10 != 0 => single_des_block(&self.keys.cmac, &prev),
            Some(prev) => Ok(prev.to_vec()),
        }
    }

    /// The C-MAC over the modified header (CLA with bit 04, Lc counting the MAC) and data.
    fn cmac(&mut self, cmd: &Command, data: &[u8]) -> Result<[u8; 8]> {
        let icv = self.next_icv()?;
        let lc = u8::try_from(data.len() + 8)
            .map_err(|_| GpError::Malformed("the command is too long to MAC".into()))?;
        let mut m = vec![cmd.cla | 0x04, cmd.ins, cmd.p1, cmd.p2, lc];
        m.extend_from_slice(data);
        let mac = retail_mac(&self.keys.cmac, &icv, &pad80(&m, 8))?;
        self.icv = Some(mac);
        Ok(mac)
    }

    /// Host: protects a command: C-MAC over the plain data, then (C-DECRYPTION) the data
    /// encrypted.
    pub fn wrap(&mut self, cmd: &Command) -> Result<Command> {
        self.last_plain = Some(cmd.clone());
        if !self.level.has(SecurityLevel::C_MAC) {
            return Ok(cmd.clone());
        }
        let mac = self.cmac(cmd, &cmd.data)?;
        let mut data = if self.level.has(SecurityLevel::C_DEC) && !cmd.data.is_empty() {
            cbc_encrypt(&self.keys.enc, &ZERO8, &pad80(&cmd.data, 8))?
        } else {
            cmd.data.clone()
        };
        data.extend_from_slice(&mac);
        Ok(Command {
            cla: cmd.cla | 0x04,
            data,
            ..cmd.clone()
        })
    }

    /// Card: checks a protected command's C-MAC and decrypts its data.
    pub fn unwrap_command(&mut self, cmd: &Command) -> Result<Command> {
        if !self.level.has(SecurityLevel::C_MAC) {
            self.last_plain = Some(cmd.clone());
            return Ok(cmd.clone());
        }
        if cmd.cla & 0x04 == 0 || cmd.data.len() < 8 {
            return Err(GpError::Auth("the command carries no C-MAC".into()));
        }
        let (body, mac) = cmd.data.split_at(cmd.data.len() - 8);
        let data = if self.level.has(SecurityLevel::C_DEC) && !body.is_empty() {
            let d = cbc_decrypt(&self.keys.enc, &ZERO8, body)?;
            unpad80(&d)?.to_vec()
        } else {
            body.to_vec()
        };
        let plain = Command {
            cla: cmd.cla & !0x04,
            data,
            ..cmd.clone()
        };
        let expect = self.cmac(&plain, &plain.data)?;
        if !ct_eq(&expect, mac) {
            return Err(GpError::Auth("the command's C-MAC does not verify".into()));
        }
        self.last_plain = Some(plain.clone());
        Ok(plain)
    }

    /// The R-MAC over the plain command (CLA without its secure messaging bits) and the
    /// response data and status.
    fn rmac(&mut self, sent: &Command, data: &[u8], sw: u16) -> Result<[u8; 8]> {
        let mut m = vec![sent.cla & !0x07, sent.ins, sent.p1, sent.p2];
        m.push(
            u8::try_from(sent.data.len()).map_err(|_| GpError::Malformed("long command".into()))?,
        );
        m.extend_from_slice(&sent.data);
        m.push(u8::try_from(data.len()).map_err(|_| GpError::Malformed("long response".into()))?);
        m.extend_from_slice(data);
        m.extend_from_slice(&sw.to_be_bytes());
        let mac = retail_mac(&self.keys.rmac, &self.ricv, &pad80(&m, 8))?;
        self.ricv = mac;
        Ok(mac)
    }

    /// Card: adds the R-MAC to a response when the level asks for it.
    pub fn wrap_response(&mut self, resp: &Response) -> Result<Response> {
        if !self.level.has(SecurityLevel::R_MAC) {
            return Ok(resp.clone());
        }
        let sent = self
            .last_plain
            .clone()
            .ok_or_else(|| GpError::State("no command to answer".into()))?;
        let mac = self.rmac(&sent, &resp.data, resp.sw)?;
        let mut data = resp.data.clone();
        data.extend_from_slice(&mac);
        Ok(Response { data, sw: resp.sw })
    }

    /// Host: checks a response's R-MAC (`sent`: the command before protection).
    pub fn unwrap(&mut self, sent: &Command, resp: &Response) -> Result<Response> {
        if !self.level.has(SecurityLevel::R_MAC) {
            return Ok(resp.clone());
        }
        if resp.data.len() < 8 {
            return Err(GpError::Auth("the response carries no R-MAC".into()));
        }
        let (data, mac) = resp.data.split_at(resp.data.len() - 8);
        let expect = self.rmac(sent, data, resp.sw)?;
        if !ct_eq(&expect, mac) {
            return Err(GpError::Auth("the response's R-MAC does not verify".into()));
        }
        Ok(Response {
            data: data.to_vec(),
            sw: resp.sw,
        })
    }

    /// A new 3DES key encrypted under the session DEK (3DES-ECB), for PUT KEY.
    pub fn encrypt_key(&self, key: &Key) -> Result<Vec<u8>> {
        if key.kind() != KeyType::Des3 {
            return Err(GpError::Key("SCP02 carries 3DES keys".into()));
        }
        ecb_encrypt(&self.keys.dek, key.expose())
    }

    /// Card: a key from PUT KEY, decrypted with the session DEK.
    pub fn decrypt_key(&self, encrypted: &[u8]) -> Result<Key> {
        let k = ecb_decrypt(&self.keys.dek, encrypted)?;
        Key::new(KeyType::Des3, &k)
    }
}
