//! Witnesses: people (or services) who cosign the HSM's checkpoints with their own keys, so
//! that a rewritten log would need them to sign twice. Keys are Ed25519 signed-note keys.

use std::path::Path;

use signed_note::{Note, StandardSigner, StandardVerifier};
use zeroize::Zeroizing;

use crate::verify::{open_checkpoint, VerifyError};
use crate::AuditError;

/// A new witness key pair: the private key (signed-note `PRIVATE+KEY+…` form, keep it secret)
/// and the verifier key to give to the Auditor.
pub fn generate(name: &str) -> Result<(Zeroizing<String>, String), AuditError> {
    if !signed_note::is_key_name_valid(name) {
        return Err(AuditError::Key(format!(
            "{name:?} is not a valid key name (no spaces or '+')"
        )));
    }
    let (skey, vkey) = signed_note::generate_key(&mut rand_core::OsRng, name);
    Ok((Zeroizing::new(skey), vkey))
}

/// Writes a private key file with owner-only permissions, refusing to overwrite.
pub fn write_private_key(path: &Path, skey: &Zeroizing<String>) -> Result<(), AuditError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |e| AuditError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(skey.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)
}

/// Cosigns a checkpoint: checks the HSM's signature first (a witness never signs what the HSM
/// did not), then adds the witness's signature. Returns the note with both.
pub fn cosign(
    checkpoint_note: &str,
    witness_skey: &str,
    hsm_vkey: &str,
) -> Result<String, VerifyError> {
    let hsm = StandardVerifier::new(hsm_vkey.trim())
        .map_err(|e| VerifyError::Key(format!("HSM key: {e:?}")))?;
    let (mut note, _) = open_checkpoint(checkpoint_note, &hsm)?;
    let signer = StandardSigner::new(witness_skey.trim())
        .map_err(|e| VerifyError::Key(format!("witness key file: {e:?}")))?;
    note.add_sigs(&[&signer])
        .map_err(|e| VerifyError::Key(format!("cannot sign: {e:?}")))?;
    String::from_utf8(note.to_bytes())
        .map_err(|_| VerifyError::Malformed("note is not UTF-8".into()))
}

/// Witness signatures on a note that verify under `vkeys`: their names.
pub fn cosigners(note_text: &str, vkeys: &[String]) -> Vec<String> {
    let Ok(note) = Note::from_bytes(note_text.as_bytes()) else {
        return vec![];
    };
    vkeys
        .iter()
        .filter_map(|k| StandardVerifier::new(k).ok())
        .filter(|v| {
            note.verify(&signed_note::VerifierList::new(vec![Box::new(v.clone())]))
                .is_ok()
        })
        .map(|v| signed_note::Verifier::name(&v).to_string())
        .collect()
}
