//! Witnesses: people (or services) who cosign the HSM's checkpoints with their own keys, so
//! that a rewritten log would need them to sign twice. Keys are Ed25519 signed-note keys.

use std::path::Path;

use signed_note::{Note, StandardVerifier};
use zeroize::Zeroizing;

use crate::verify::{open_checkpoint, VerifyError};
use crate::AuditError;

/// A new witness key pair (C2SP `tlog-cosignature/v1`, key type 0x04): the private key (keep
/// it secret) and the verifier key to give to the Auditor.
pub fn generate(name: &str) -> Result<(Zeroizing<String>, String), AuditError> {
    crate::cosignature::generate(name)
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

/// What a witness remembers of each log it cosigns: the size and root of the last checkpoint
/// it cosigned, by origin. Kept in a file beside the witness's key.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessState {
    /// Origin → (size, base64 root).
    pub logs: std::collections::BTreeMap<String, (u64, String)>,
}

impl WitnessState {
    /// Reads a state file; a missing file is a witness that has cosigned nothing yet.
    pub fn load(path: &Path) -> Result<WitnessState, AuditError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                AuditError::Malformed(format!("{}: not a witness state file: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WitnessState::default()),
            Err(e) => Err(AuditError::Io {
                path: path.display().to_string(),
                source: e,
            }),
        }
    }

    /// Writes the state whole or not at all (a temporary file, synced, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), AuditError> {
        use std::io::Write;
        let io = |e| AuditError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let tmp = path.with_extension("state.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(
            &serde_json::to_vec_pretty(self).map_err(|e| AuditError::Malformed(e.to_string()))?,
        )
        .map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// A checkpoint to cosign as a witness receives it: the C2SP `tlog-witness` add-checkpoint
/// body (`old SIZE`, the consistency proof from that size, a blank line, the note), or a
/// bare note (for a log the witness has not cosigned before).
pub struct CosignRequest {
    /// The size the proof starts from (0: none given).
    pub old: u64,
    /// The consistency proof, base64 hashes.
    pub proof: Vec<String>,
    /// The checkpoint note.
    pub note: String,
}

impl CosignRequest {
    /// Parses a request or a bare note.
    pub fn parse(text: &str) -> Result<CosignRequest, VerifyError> {
        let Some(rest) = text.strip_prefix("old ") else {
            return Ok(CosignRequest {
                old: 0,
                proof: vec![],
                note: text.to_string(),
            });
        };
        let (head, note) = rest.split_once("\n\n").ok_or_else(|| {
            VerifyError::Malformed(
                "a witness request has no blank line before its checkpoint".into(),
            )
        })?;
        let mut lines = head.lines();
        let old = lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| {
            VerifyError::Malformed("a witness request's old size is not a number".into())
        })?;
        Ok(CosignRequest {
            old,
            proof: lines.map(str::to_string).collect(),
            note: note.to_string(),
        })
    }

    /// The request's text (what `ferrohsm audit checkpoint --old-size` writes).
    pub fn to_text(&self) -> String {
        let mut s = format!("old {}\n", self.old);
        for p in &self.proof {
            s.push_str(p);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.note);
        s
    }
}

/// Cosigns a checkpoint as C2SP `tlog-cosignature/v1`, at `time`: checks the HSM's signature
/// first (a witness never signs what the HSM did not), then, against `state`, that the tree
/// is not smaller than the last one this witness cosigned for the log and extends it (proven
/// by the request's consistency proof). Returns the note with the cosignature added, and
/// records the new checkpoint in `state`.
pub fn cosign(
    request: &CosignRequest,
    witness_skey: &str,
    hsm_vkey: &str,
    state: &mut WitnessState,
    time: u64,
) -> Result<String, VerifyError> {
    let hsm = StandardVerifier::new(hsm_vkey.trim())
        .map_err(|e| VerifyError::Key(format!("HSM key: {e:?}")))?;
    let (mut note, cp) = open_checkpoint(&request.note, &hsm)?;
    let (size, root) = (cp.size(), *cp.hash());
    if let Some((last, last_root)) = state.logs.get(cp.origin()) {
        let last_root = crate::export::hash_from_str(last_root)
            .ok_or_else(|| VerifyError::Malformed("the witness state holds a bad root".into()))?;
        if size < *last {
            return Err(VerifyError::Fork(format!(
                "the checkpoint has {size} records, fewer than the {last} this witness cosigned: the log was rolled back"
            )));
        }
        if size == *last && root != last_root {
            return Err(VerifyError::Fork(format!(
                "a second tree of size {size}, unlike the one this witness cosigned"
            )));
        }
        if size > *last {
            if request.old != *last {
                return Err(VerifyError::MissingProof(format!(
                    "this witness last cosigned size {last}; ask for a request proving consistency from it (ferrohsm audit checkpoint --old-size {last})"
                )));
            }
            let p: Vec<crate::Hash> = request
                .proof
                .iter()
                .map(|h| crate::export::hash_from_str(h))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    VerifyError::Malformed("a proof hash is not base64 of 32 bytes".into())
                })?;
            tlog_tiles::tlog::check_tree(&p, size, root, *last, last_root).map_err(|_| {
                VerifyError::Fork(format!(
                    "the checkpoint of size {size} does not extend the one of size {last} this witness cosigned: the log was rewritten"
                ))
            })?;
        }
    }
    let signer = crate::cosignature::signer(witness_skey, time)
        .map_err(|e| VerifyError::Key(format!("witness key file: {e}")))?;
    note.add_sigs(&[&signer])
        .map_err(|e| VerifyError::Key(format!("cannot sign: {e:?}")))?;
    state.logs.insert(
        cp.origin().to_string(),
        (size, crate::export::hash_to_string(&root)),
    );
    String::from_utf8(note.to_bytes())
        .map_err(|_| VerifyError::Malformed("note is not UTF-8".into()))
}

/// A verifier for a witness key of either kind: C2SP cosignature/v1 (type 0x04) or a plain
/// signed-note Ed25519 key (type 0x01, as witnesses registered before cosignature/v1 have).
pub fn any_verifier(vkey: &str) -> Option<Box<dyn signed_note::Verifier>> {
    if let Some(v) = crate::cosignature::verifier(vkey) {
        return Some(Box::new(v));
    }
    StandardVerifier::new(vkey.trim())
        .ok()
        .map(|v| Box::new(v) as Box<dyn signed_note::Verifier>)
}

/// Witness signatures on a note that verify under `vkeys`: their names.
pub fn cosigners(note_text: &str, vkeys: &[String]) -> Vec<String> {
    let Ok(note) = Note::from_bytes(note_text.as_bytes()) else {
        return vec![];
    };
    vkeys
        .iter()
        .filter_map(|k| any_verifier(k))
        .filter_map(|v| {
            let name = v.name().to_string();
            note.verify(&signed_note::VerifierList::new(vec![v]))
                .is_ok()
                .then_some(name)
        })
        .collect()
}
