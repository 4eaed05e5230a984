//! SCP03 (GlobalPlatform Card Specification Amendment D), S8 mode: AES session keys and
//! cryptograms from the KDF of [`crate::kdf::scp03`] over both challenges; C-MAC as AES-CMAC
//! chained over every command (the chaining value is the full 16-byte CMAC of the last one);
//! C-DECRYPTION as AES-CBC with an IV made by encrypting the command counter; R-MAC over the
//! chaining value and the response; R-ENCRYPTION with the counter's first byte set to `80`.

use zeroize::Zeroizing;

use crate::apdu::{Command, InitUpdate, Response};
use crate::block::{aes_cmac, cbc_decrypt, cbc_encrypt, ct_eq, ecb_encrypt, pad80, unpad80, Key};
use crate::channel::{KeySet, SecurityLevel};
use crate::{kdf, GpError, Result};

const ZERO16: [u8; 16] = [0; 16];

/// The session keys of one channel, and the static DEK (SCP03 encrypts keys under it).
pub struct SessionKeys {
    /// S-ENC (derivation constant 04).
    pub enc: Key,
    /// S-MAC (06).
    pub mac: Key,
    /// S-RMAC (07).
    pub rmac: Key,
    /// The static DEK.
    pub dek: Key,
}

fn derive(key: &Key, constant: u8, context: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
    if !key.kind().is_aes() {
        return Err(GpError::Key("SCP03 keys are AES keys".into()));
    }
    kdf::scp03(key, constant, context, len)
}

/// The session keys from the static keys and both challenges (host's, then card's).
pub fn session_keys(keys: &KeySet, host: &[u8], card: &[u8]) -> Result<SessionKeys> {
    let ctx = [host, card].concat();
    let k = |key: &Key, c: u8| -> Result<Key> {
        Key::new(key.kind(), &derive(key, c, &ctx, key.kind().key_len())?)
    };
    Ok(SessionKeys {
        enc: k(&keys.enc, 0x04)?,
        mac: k(&keys.mac, 0x06)?,
        rmac: k(&keys.mac, 0x07)?,
        dek: keys.dek.clone(),
    })
}

/// The card's cryptogram (constant 00) or the host's (01), eight bytes.
pub fn cryptogram(sk: &SessionKeys, constant: u8, host: &[u8], card: &[u8]) -> Result<Vec<u8>> {
    Ok(derive(&sk.mac, constant, &[host, card].concat(), 8)?.to_vec())
}

/// One side of an open SCP03 channel.
pub struct Channel {
    keys: SessionKeys,
    level: SecurityLevel,
    /// The MAC chaining value: the full CMAC of the last command.
    chain: [u8; 16],
    /// The encryption counter (incremented for every command once C-DECRYPTION is on).
    counter: u128,
}

impl Channel {
    fn new(keys: SessionKeys) -> Channel {
        Channel {
            keys,
            level: SecurityLevel::AUTHENTICATING,
            chain: ZERO16,
            counter: 0,
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
    ) -> Result<(Channel, Command)> {
        if iu.i.is_some_and(|i| i & 0x01 != 0) {
            return Err(GpError::State(
                "the card uses SCP03's S16 mode (16-byte challenges); S8 is supported".into(),
            ));
        }
        let sk = session_keys(keys, host_challenge, &iu.card_challenge)?;
        let expect = cryptogram(&sk, 0x00, host_challenge, &iu.card_challenge)?;
        if !ct_eq(&expect, &iu.card_cryptogram) {
            return Err(GpError::Auth(
                "the card's cryptogram does not verify: it does not hold these keys".into(),
            ));
        }
        let hc = cryptogram(&sk, 0x01, host_challenge, &iu.card_challenge)?;
        let level = SecurityLevel::new(level.bits(), 3)?;
        let mut ch = Channel::new(sk);
        let ea = ch.wrap(&Command::new(0x80, 0x82, level.bits(), 0x00, hc))?;
        ch.level = level;
        Ok((ch, ea))
    }

    /// Card: the channel after INITIALIZE UPDATE, waiting for EXTERNAL AUTHENTICATE.
    pub fn open_card(keys: &KeySet, host: &[u8], card: &[u8]) -> Result<Channel> {
        Ok(Channel::new(session_keys(keys, host, card)?))
    }

    /// Card: its cryptogram for INITIALIZE UPDATE.
    pub fn card_cryptogram(&self, host: &[u8], card: &[u8]) -> Result<Vec<u8>> {
        cryptogram(&self.keys, 0x00, host, card)
    }

    /// Card: checks EXTERNAL AUTHENTICATE (C-MAC and host cryptogram); sets its level.
    pub fn external_authenticate(&mut self, cmd: &Command, host: &[u8], card: &[u8]) -> Result<()> {
        let plain = self.unwrap_command(cmd)?;
        let expect = cryptogram(&self.keys, 0x01, host, card)?;
        if !ct_eq(&expect, &plain.data) {
            return Err(GpError::Auth("the host cryptogram does not verify".into()));
        }
        self.level = SecurityLevel::new(cmd.p1, 3)?;
        Ok(())
    }

    /// The IV for command (`response` false) or response data: the counter, its first byte
    /// `80` for responses, encrypted under S-ENC.
    fn iv(&self, response: bool) -> Result<Vec<u8>> {
        let mut block = self.counter.to_be_bytes();
        if response {
            block[0] = 0x80;
        }
        ecb_encrypt(&self.keys.enc, &block)
    }

    /// The C-MAC over the chaining value, the header (CLA with bit 04, Lc with the MAC) and
    /// the data as sent; moves the chaining value on.
    fn cmac(&mut self, cmd: &Command, data: &[u8]) -> Result<[u8; 8]> {
        let lc = u8::try_from(data.len() + 8)
            .map_err(|_| GpError::Malformed("the command is too long to MAC".into()))?;
        let mut m = self.chain.to_vec();
        m.extend_from_slice(&[cmd.cla | 0x04, cmd.ins, cmd.p1, cmd.p2, lc]);
        m.extend_from_slice(data);
        self.chain = aes_cmac(&self.keys.mac, &m)?;
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&self.chain[..8]);
        Ok(mac)
    }

    /// Host: protects a command: data encrypted (C-DECRYPTION), then the C-MAC over it.
    pub fn wrap(&mut self, cmd: &Command) -> Result<Command> {
        let mut data = cmd.data.clone();
        if self.level.has(SecurityLevel::C_DEC) {
            self.counter += 1;
            if !data.is_empty() {
                data = cbc_encrypt(&self.keys.enc, &self.iv(false)?, &pad80(&data, 16))?;
            }
        }
        if !self.level.has(SecurityLevel::C_MAC) {
            return Ok(cmd.clone());
        }
        let mac = self.cmac(cmd, &data)?;
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
            return Ok(cmd.clone());
        }
        if cmd.cla & 0x04 == 0 || cmd.data.len() < 8 {
            return Err(GpError::Auth("the command carries no C-MAC".into()));
        }
        let (body, mac) = cmd.data.split_at(cmd.data.len() - 8);
        let expect = self.cmac(cmd, body)?;
        if !ct_eq(&expect, mac) {
            return Err(GpError::Auth("the command's C-MAC does not verify".into()));
        }
        let mut data = body.to_vec();
        if self.level.has(SecurityLevel::C_DEC) {
            self.counter += 1;
            if !data.is_empty() {
                let d = cbc_decrypt(&self.keys.enc, &self.iv(false)?, &data)?;
                data = unpad80(&d)?.to_vec();
            }
        }
        Ok(Command {
            cla: cmd.cla & !0x04,
            data,
            ..cmd.clone()
        })
    }

    /// The R-MAC over the chaining value, the response data as sent and the status.
    fn rmac(&self, data: &[u8], sw: u16) -> Result<[u8; 8]> {
        let mut m = self.chain.to_vec();
        m.extend_from_slice(data);
        m.extend_from_slice(&sw.to_be_bytes());
        let full = aes_cmac(&self.keys.rmac, &m)?;
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&full[..8]);
        Ok(mac)
    }

    /// Card: encrypts the response data (R-ENCRYPTION), then adds the R-MAC.
    pub fn wrap_response(&mut self, resp: &Response) -> Result<Response> {
        let mut data = resp.data.clone();
        if self.level.has(SecurityLevel::R_ENC) && !data.is_empty() {
            data = cbc_encrypt(&self.keys.enc, &self.iv(true)?, &pad80(&data, 16))?;
        }
        if self.level.has(SecurityLevel::R_MAC) {
            let mac = self.rmac(&data, resp.sw)?;
            data.extend_from_slice(&mac);
        }
        Ok(Response { data, sw: resp.sw })
    }

    /// Host: checks a response's R-MAC, then decrypts its data (R-ENCRYPTION).
    pub fn unwrap(&mut self, resp: &Response) -> Result<Response> {
        let mut data = resp.data.clone();
        if self.level.has(SecurityLevel::R_MAC) {
            if data.len() < 8 {
                return Err(GpError::Auth("the response carries no R-MAC".into()));
            }
            let (body, mac) = data.split_at(data.len() - 8);
            if !ct_eq(&self.rmac(body, resp.sw)?, mac) {
                return Err(GpError::Auth("the response's R-MAC does not verify".into()));
            }
            data = body.to_vec();
        }
        if self.level.has(SecurityLevel::R_ENC) && !data.is_empty() {
            let d = cbc_decrypt(&self.keys.enc, &self.iv(true)?, &data)?;
            data = unpad80(&d)?.to_vec();
        }
        Ok(Response { data, sw: resp.sw })
    }

    /// A new AES key encrypted under the static DEK (AES-CBC, zero IV), padded with random
    /// bytes to whole blocks, for PUT KEY.
    pub fn encrypt_key(&self, key: &Key) -> Result<Vec<u8>> {
        if !key.kind().is_aes() {
            return Err(GpError::Key("SCP03 carries AES keys".into()));
        }
        let mut p = Zeroizing::new(key.expose().to_vec());
        let pad = (16 - p.len() % 16) % 16;
        let mut r = vec![0u8; pad];
        aws_lc_rs::rand::fill(&mut r).map_err(|_| GpError::Key("no randomness".into()))?;
        p.extend_from_slice(&r);
        cbc_encrypt(&self.keys.dek, &ZERO16, &p)
    }

    /// Card: a key of `len` bytes from PUT KEY, decrypted with the static DEK.
    pub fn decrypt_key(&self, encrypted: &[u8], len: usize) -> Result<Key> {
        let d = cbc_decrypt(&self.keys.dek, &ZERO16, encrypted)?;
        if len > d.len() {
            return Err(GpError::Malformed(
                "the key is longer than its cryptogram".into(),
            ));
        }
        Key::new(crate::block::KeyType::aes(len)?, &d[..len])
    }
}
