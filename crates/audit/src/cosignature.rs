//! Witness cosignatures in the C2SP `tlog-cosignature/v1` form: an Ed25519 signature over
//! `cosignature/v1`, the time of signing and the checkpoint, carried in a signed-note line as
//! the key hash, the 8-byte big-endian timestamp and the 64-byte signature. Witness keys are
//! signed-note keys of type 0x04; any witness or client that follows C2SP reads them.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{key_id, Signer, Verifier};
use zeroize::Zeroizing;

use crate::AuditError;

/// The signed-note key type of a cosignature/v1 key.
pub const KEY_TYPE: u8 = 0x04;

/// The message a cosignature/v1 signs: the header, the time and the checkpoint text.
fn message(time: u64, checkpoint: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(checkpoint);
    m
}

/// Signs checkpoints as a witness, at a given time (seconds since the Unix epoch).
pub struct CosignatureSigner {
    name: String,
    id: u32,
    key: SigningKey,
    time: u64,
}

impl Signer for CosignatureSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let sig = self.key.try_sign(&message(self.time, msg))?;
        let mut out = self.time.to_be_bytes().to_vec();
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// Checks cosignature/v1 signatures of one witness.
#[derive(Clone)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((time, sig)) = split(sig) else {
            return false;
        };
        self.key
            .verify_strict(
                &message(time, msg),
                &ed25519_dalek::Signature::from_bytes(&sig),
            )
            .is_ok()
    }
}

/// The timestamp and Ed25519 signature of a cosignature/v1 signature's bytes.
pub fn split(sig: &[u8]) -> Option<(u64, [u8; 64])> {
    if sig.len() != 72 {
        return None;
    }
    let time = u64::from_be_bytes(sig[..8].try_into().ok()?);
    Some((time, sig[8..].try_into().ok()?))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A new witness key pair: the private key (`PRIVATE+KEY+name+id+base64(0x04‖seed)`, keep it
/// secret) and the verifier key (`name+id+base64(0x04‖public key)`) to give to the Auditor.
pub fn generate(name: &str) -> Result<(Zeroizing<String>, String), AuditError> {
    if !signed_note::is_key_name_valid(name) {
        return Err(AuditError::Key(format!(
            "{name:?} is not a valid key name (no spaces or '+')"
        )));
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let public = [&[KEY_TYPE], key.verifying_key().as_bytes().as_slice()].concat();
    let id = key_id(name, &public);
    let seed = Zeroizing::new([&[KEY_TYPE], key.to_bytes().as_slice()].concat());
    let skey = Zeroizing::new(format!("PRIVATE+KEY+{name}+{id:08x}+{}", b64(&seed)));
    Ok((skey, format!("{name}+{id:08x}+{}", b64(&public))))
}

/// Splits `name+id+base64` into its parts, checking the id.
fn parts(s: &str) -> Option<(String, u32, Vec<u8>)> {
    let (name, rest) = s.trim().split_once('+')?;
    let (id16, key64) = rest.split_once('+')?;
    let id = u32::from_str_radix(id16, 16).ok()?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key64)
        .ok()?;
    (id16.len() == 8 && signed_note::is_key_name_valid(name)).then_some((name.to_string(), id, key))
}

/// A signer from a private key file's text, signing at `time`.
pub fn signer(skey: &str, time: u64) -> Result<CosignatureSigner, AuditError> {
    let bad = || {
        AuditError::Key(
            "not a cosignature/v1 witness private key (PRIVATE+KEY+name+id+…, type 0x04)".into(),
        )
    };
    let rest = skey.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
    let (name, id, seed) = parts(rest).ok_or_else(bad)?;
    let seed = Zeroizing::new(seed);
    if seed.len() != 33 || seed[0] != KEY_TYPE {
        return Err(bad());
    }
    let bytes: [u8; 32] = seed[1..].try_into().map_err(|_| bad())?;
    let key = SigningKey::from_bytes(&bytes);
    let public = [&[KEY_TYPE], key.verifying_key().as_bytes().as_slice()].concat();
    if key_id(&name, &public) != id {
        return Err(AuditError::Key(
            "the witness private key's id does not match its key".into(),
        ));
    }
    Ok(CosignatureSigner {
        name,
        id,
        key,
        time,
    })
}

/// A verifier from a witness's verifier key, if it is a cosignature/v1 key (type 0x04).
pub fn verifier(vkey: &str) -> Option<CosignatureVerifier> {
    let (name, id, key) = parts(vkey)?;
    if key.len() != 33 || key[0] != KEY_TYPE || key_id(&name, &key) != id {
        return None;
    }
    let key = VerifyingKey::from_bytes(key[1..].try_into().ok()?).ok()?;
    Some(CosignatureVerifier { name, id, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cosignature_carries_its_time_and_covers_it() {
        let (skey, vkey) = generate("witness.example/alice").unwrap();
        let s = signer(&skey, 1_700_000_000).unwrap();
        let text = b"origin\n5\nAAAA\n";
        let sig = s.sign(text).unwrap();
        assert_eq!(split(&sig).unwrap().0, 1_700_000_000);
        let v = verifier(&vkey).unwrap();
        assert_eq!(v.key_id(), s.key_id());
        assert!(v.verify(text, &sig));
        // Another time, another text, a plain signed-note signature: refused.
        let mut other_time = sig.clone();
        other_time[7] ^= 1;
        assert!(!v.verify(text, &other_time));
        assert!(!v.verify(b"origin\n6\nAAAA\n", &sig));
        assert!(!v.verify(text, &sig[8..]));
        // A standard (type 0x01) key is not a cosignature key, and the private key's text
        // with a changed id is refused.
        let (_, std_vkey) = signed_note::generate_key(&mut rand_core::OsRng, "x");
        assert!(verifier(&std_vkey).is_none());
        let wrong = skey.replace(&format!("{:08x}", s.key_id()), "00000000");
        assert!(signer(&wrong, 1).is_err());
    }
}
