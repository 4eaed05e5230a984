//! Command and response APDUs (ISO/IEC 7816-4 short form), and the one card response whose
//! fields the host must read before a channel exists: INITIALIZE UPDATE's.

use crate::{GpError, Result};

/// A command APDU (short form: up to 255 data bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Class byte.
    pub cla: u8,
    /// Instruction.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Data (Lc is its length).
    pub data: Vec<u8>,
    /// Le, when a response is expected (`0` meaning up to 256).
    pub le: Option<u8>,
}

impl Command {
    /// A command without Le.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> Command {
        Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le: None,
        }
    }

    /// The same command expecting a response (Le `00`).
    pub fn expecting(mut self) -> Command {
        self.le = Some(0);
        self
    }

    /// The APDU's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let lc = u8::try_from(self.data.len()).map_err(|_| {
            GpError::Malformed(format!(
                "{} data bytes do not fit a short APDU (255 at most)",
                self.data.len()
            ))
        })?;
        let mut v = vec![self.cla, self.ins, self.p1, self.p2];
        if lc > 0 {
            v.push(lc);
            v.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            v.push(le);
        }
        Ok(v)
    }

    /// Parses a short-form command APDU (cases 1 to 4).
    pub fn parse(b: &[u8]) -> Result<Command> {
        if b.len() < 4 {
            return Err(GpError::Malformed(format!(
                "a command APDU has at least 4 bytes, not {}",
                b.len()
            )));
        }
        let (h, body) = b.split_at(4);
        let (data, le) = match body.len() {
            0 => (vec![], None),
            1 => (vec![], Some(body[0])),
            n => {
                let lc = body[0] as usize;
                if lc == 0 {
                    return Err(GpError::Malformed(
                        "extended-length APDUs are not taken".into(),
                    ));
                }
                match n - 1 {
                    x if x == lc => (body[1..].to_vec(), None),
                    x if x == lc + 1 => (body[1..=lc].to_vec(), Some(body[lc + 1])),
                    _ => {
                        return Err(GpError::Malformed(format!(
                            "Lc says {lc} data bytes, the APDU carries {}",
                            n - 1
                        )))
                    }
                }
            }
        };
        Ok(Command {
            cla: h[0],
            ins: h[1],
            p1: h[2],
            p2: h[3],
            data,
            le,
        })
    }
}

/// A response APDU: data and status word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Response data.
    pub data: Vec<u8>,
    /// SW1 SW2.
    pub sw: u16,
}

/// Success.
pub const SW_OK: u16 = 0x9000;
/// Security status not satisfied (a MAC or cryptogram that does not verify).
pub const SW_SECURITY: u16 = 0x6982;
/// Conditions of use not satisfied (a step out of order).
pub const SW_CONDITIONS: u16 = 0x6985;
/// Wrong data.
pub const SW_WRONG_DATA: u16 = 0x6a80;
/// Referenced data (a key version) not found.
pub const SW_NOT_FOUND: u16 = 0x6a88;
/// Instruction not supported.
pub const SW_INS: u16 = 0x6d00;
/// Wrong length.
pub const SW_LENGTH: u16 = 0x6700;

impl Response {
    /// A response with data and 9000.
    pub fn ok(data: Vec<u8>) -> Response {
        Response { data, sw: SW_OK }
    }

    /// A bare status word.
    pub fn status(sw: u16) -> Response {
        Response { data: vec![], sw }
    }

    /// The response's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.data.clone();
        v.extend_from_slice(&self.sw.to_be_bytes());
        v
    }

    /// Parses a response (data, then two status bytes).
    pub fn parse(b: &[u8]) -> Result<Response> {
        if b.len() < 2 {
            return Err(GpError::Malformed(format!(
                "a response APDU has at least the 2 status bytes, not {}",
                b.len()
            )));
        }
        let (d, sw) = b.split_at(b.len() - 2);
        Ok(Response {
            data: d.to_vec(),
            sw: u16::from_be_bytes([sw[0], sw[1]]),
        })
    }

    /// The data when the status is 9000; otherwise an error naming `what`.
    pub fn expect_ok(self, what: &str) -> Result<Vec<u8>> {
        if self.sw != SW_OK {
            return Err(GpError::Card {
                sw: self.sw,
                what: what.to_string(),
            });
        }
        Ok(self.data)
    }
}

/// INITIALIZE UPDATE: the host's challenge, for key version `key_version` (0: the card's
/// current keys).
pub fn initialize_update(key_version: u8, host_challenge: &[u8; 8]) -> Command {
    Command::new(0x80, 0x50, key_version, 0x00, host_challenge.to_vec()).expecting()
}

/// What a card answers to INITIALIZE UPDATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitUpdate {
    /// Key diversification data (ten bytes).
    pub kdd: [u8; 10],
    /// The version of the key set the card uses.
    pub key_version: u8,
    /// The secure channel protocol: 2 or 3.
    pub scp: u8,
    /// SCP03's "i" parameter (from the response); SCP02's is not in it.
    pub i: Option<u8>,
    /// The sequence counter: two bytes (SCP02) or three (SCP03 with a pseudo-random
    /// challenge), or none.
    pub seq: Vec<u8>,
    /// The card's challenge: six bytes (SCP02) or eight (SCP03).
    pub card_challenge: Vec<u8>,
    /// The card's cryptogram (eight bytes).
    pub card_cryptogram: [u8; 8],
}

impl InitUpdate {
    /// Parses the response data of INITIALIZE UPDATE (status already checked): 28 bytes
    /// for SCP02, 29 or 32 for SCP03 (S8 mode).
    pub fn parse(d: &[u8]) -> Result<InitUpdate> {
        if d.len() < 12 {
            return Err(GpError::Malformed(format!(
                "an INITIALIZE UPDATE response is 28 to 32 bytes, not {}",
                d.len()
            )));
        }
        let mut kdd = [0u8; 10];
        kdd.copy_from_slice(&d[..10]);
        let (key_version, scp) = (d[10], d[11]);
        let mut cryptogram = [0u8; 8];
        match (scp, d.len()) {
            (0x02, 28) => {
                cryptogram.copy_from_slice(&d[20..28]);
                Ok(InitUpdate {
                    kdd,
                    key_version,
                    scp: 2,
                    i: None,
                    seq: d[12..14].to_vec(),
                    card_challenge: d[14..20].to_vec(),
                    card_cryptogram: cryptogram,
                })
            }
            (0x03, 29 | 32) => {
                cryptogram.copy_from_slice(&d[21..29]);
                Ok(InitUpdate {
                    kdd,
                    key_version,
                    scp: 3,
                    i: Some(d[12]),
                    seq: d[29..].to_vec(),
                    card_challenge: d[13..21].to_vec(),
                    card_cryptogram: cryptogram,
                })
            }
            (0x02 | 0x03, n) => Err(GpError::Malformed(format!(
                "an SCP0{scp} INITIALIZE UPDATE response of {n} bytes (SCP02: 28; SCP03: 29 or 32)"
            ))),
            (other, _) => Err(GpError::Malformed(format!(
                "the card offers secure channel protocol {other:02X}; SCP02 and SCP03 are supported"
            ))),
        }
    }

    /// The response data (what a card sends).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.kdd.to_vec();
        v.push(self.key_version);
        v.push(self.scp);
        if self.scp == 2 {
            v.extend_from_slice(&self.seq);
            v.extend_from_slice(&self.card_challenge);
            v.extend_from_slice(&self.card_cryptogram);
        } else {
            v.push(self.i.unwrap_or(0));
            v.extend_from_slice(&self.card_challenge);
            v.extend_from_slice(&self.card_cryptogram);
            v.extend_from_slice(&self.seq);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_lengths_are_refused() {
        for c in [
            Command::new(0x80, 0x50, 0, 0, vec![1; 8]).expecting(),
            Command::new(0x84, 0x82, 3, 0, vec![2; 16]),
            Command::new(0x00, 0xa4, 4, 0, vec![]).expecting(),
            Command::new(0x00, 0xa4, 4, 0, vec![]),
        ] {
            assert_eq!(Command::parse(&c.to_bytes().unwrap()).unwrap(), c);
        }
        assert!(Command::parse(&[0x80, 0x50, 0]).is_err());
        assert!(Command::parse(&[0x80, 0x50, 0, 0, 5, 1, 2]).is_err());
        assert!(Command::parse(&[0x80, 0x50, 0, 0, 0, 1, 2]).is_err());
        assert!(Command::new(0, 0, 0, 0, vec![0; 256]).to_bytes().is_err());
        assert!(Response::parse(&[0x90]).is_err());
    }

    #[test]
    fn initialize_update_responses_of_the_wrong_shape_are_refused() {
        let mut scp02 = vec![0u8; 28];
        scp02[11] = 2;
        let iu = InitUpdate::parse(&scp02).unwrap();
        assert_eq!(iu.to_bytes(), scp02);
        for bad in [&scp02[..27], &[0u8; 5][..]] {
            assert!(InitUpdate::parse(bad).is_err());
        }
        let mut scp01 = scp02.clone();
        scp01[11] = 1;
        assert!(InitUpdate::parse(&scp01).is_err());
        let mut scp03 = vec![0u8; 32];
        scp03[11] = 3;
        let iu = InitUpdate::parse(&scp03).unwrap();
        assert_eq!((iu.seq.len(), iu.to_bytes()), (3, scp03));
    }
}
