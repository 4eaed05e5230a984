//! Offline verification of an export against the HSM's public key.

use signed_note::{Note, StandardVerifier, Verifier as _, VerifierList};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog;

use crate::export::{hash_from_str, Export};
use crate::record::Record;
use crate::Hash;

/// Why an export failed to verify. Each names the first bad thing found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The file is not an export of this format.
    #[error("malformed export: {0}")]
    Malformed(String),
    /// The key given is not a signed-note Ed25519 verifier key, or is not the export's.
    #[error("public key: {0}")]
    Key(String),
    /// The checkpoint's HSM signature is missing or does not verify.
    #[error("checkpoint signature: {0}")]
    Signature(String),
    /// A record was changed, deleted, inserted or reordered.
    #[error("record #{seq}: {reason}")]
    Record {
        /// Sequence number of the first bad record (as expected at that position).
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Records the checkpoint covers are missing at the end.
    #[error("truncated: the checkpoint covers {size} records but the export stops after #{last}; record #{} is missing", .last + 1)]
    Truncated {
        /// Size of the checkpoint.
        size: u64,
        /// Last record present.
        last: u64,
    },
    /// Two checkpoints whose trees are inconsistent: the log was rewritten.
    #[error("fork: {0}")]
    Fork(String),
    /// A required witness cosignature is missing or bad.
    #[error("witness: {0}")]
    Witness(String),
    /// A record asked for with `prove` is not in the export.
    #[error("record #{0} is not in this export")]
    NotInExport(u64),
    /// The export holds no records at all.
    #[error("empty: the export holds no records (every record was deleted, or none was exported)")]
    Empty,
    /// A checkpoint the verifier holds cannot be checked: the export carries no consistency
    /// proof for it and not the records from #1 to compute one.
    #[error("no consistency proof: {0}")]
    MissingProof(String),
}

/// What the verifier is given besides the export.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The HSM's verifier key obtained out of band. Without it the export's own key is used,
    /// which proves integrity but not origin.
    pub public_key: Option<String>,
    /// Checkpoints the verifier held before (signed notes): the export must extend them.
    pub earlier: Vec<String>,
    /// Witness verifier keys whose cosignatures to check and report.
    pub witnesses: Vec<String>,
    /// Fail unless at least this many of `witnesses` cosigned the checkpoint.
    pub require_cosignatures: usize,
    /// A record whose inclusion to prove and report.
    pub prove: Option<u64>,
    /// Verify a part of the log starting at this record. Without it the export must start
    /// at #1: a log whose first records are missing is refused.
    pub from: Option<u64>,
}

/// What was verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The log's origin.
    pub origin: String,
    /// Checkpoint size (records in the tree).
    pub size: u64,
    /// Checkpoint root, base64.
    pub root: String,
    /// First record in the export.
    pub from: u64,
    /// Records verified.
    pub records: u64,
    /// Whether the key was pinned by the caller (otherwise taken from the export).
    pub key_pinned: bool,
    /// Sizes of earlier checkpoints proven to be extended by this one.
    pub extends: Vec<u64>,
    /// Names of the witnesses whose cosignatures verified.
    pub cosigned_by: Vec<String>,
    /// Ceremony records in the export (seq, event).
    pub ceremonies: Vec<(u64, String)>,
    /// The record proven included, if asked.
    pub proved: Option<u64>,
}

fn verifier(vkey: &str) -> Result<StandardVerifier, VerifyError> {
    StandardVerifier::new(vkey.trim()).map_err(|e| {
        VerifyError::Key(format!(
            "{vkey:?} is not a signed-note verifier key ({e:?})"
        ))
    })
}

/// Parses a checkpoint note signed by `hsm`; returns it with its parsed body.
pub fn open_checkpoint(
    note_text: &str,
    hsm: &StandardVerifier,
) -> Result<(Note, Checkpoint), VerifyError> {
    let note = Note::from_bytes(note_text.as_bytes())
        .map_err(|e| VerifyError::Signature(format!("checkpoint is not a signed note ({e:?})")))?;
    let list = VerifierList::new(vec![Box::new(hsm.clone())]);
    note.verify(&list).map_err(|e| {
        VerifyError::Signature(match e {
            signed_note::NoteError::UnverifiedNote => {
                "no signature by the HSM's key (missing, or made by another key)".to_string()
            }
            other => format!("forged or damaged ({other:?})"),
        })
    })?;
    let cp = Checkpoint::from_bytes(note.text())
        .map_err(|_| VerifyError::Malformed("checkpoint body is not a tlog checkpoint".into()))?;
    Ok((note, cp))
}

fn proof(v: &[String], what: &str) -> Result<Vec<Hash>, VerifyError> {
    v.iter()
        .map(|s| {
            hash_from_str(s).ok_or_else(|| {
                VerifyError::Malformed(format!("{what}: a proof hash is not base64 of 32 bytes"))
            })
        })
        .collect()
}

/// Verifies an export. Returns the first failure, or a report of what was verified.
pub fn verify_export(ex: &Export, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    if ex.format != crate::export::FORMAT || ex.version != crate::export::VERSION {
        return Err(VerifyError::Malformed("unknown format or version".into()));
    }
    let key = opts.public_key.as_deref().unwrap_or(&ex.public_key);
    let hsm = verifier(key)?;
    if opts.public_key.is_some()
        && verifier(&ex.public_key)
            .map(|v| (v.name().to_string(), v.key_id()))
            .ok()
            != Some((hsm.name().to_string(), hsm.key_id()))
    {
        return Err(VerifyError::Key(
            "the export names another key than the one you pinned".into(),
        ));
    }
    let (_, cp) = open_checkpoint(&ex.checkpoint, &hsm)?;
    if cp.origin() != ex.origin {
        return Err(VerifyError::Malformed(format!(
            "checkpoint origin {:?} is not the export's {:?}",
            cp.origin(),
            ex.origin
        )));
    }
    let (size, root) = (cp.size(), *cp.hash());

    // Records: consecutive from where the verifier expects them (#1 unless told), each
    // proven at its own position.
    let Some(first) = ex.records.first() else {
        return Err(VerifyError::Empty);
    };
    let from = opts.from.unwrap_or(1);
    if let Ok(r) = Record::from_bytes(first.record.as_bytes()) {
        if r.seq > from {
            let hint = if opts.from.is_none() {
                format!(
                    " (to verify only a part of the log, say where it starts: --from {})",
                    r.seq
                )
            } else {
                String::new()
            };
            return Err(VerifyError::Record {
                seq: from,
                reason: format!(
                    "missing: the export starts at #{}, so its first records were deleted{hint}",
                    r.seq
                ),
            });
        }
    }
    if ex.first != 0 && ex.first != from {
        return Err(VerifyError::Malformed(format!(
            "the export says it starts at #{} but its records are checked from #{from}",
            ex.first
        )));
    }
    if from == 0 || from > size {
        return Err(VerifyError::Record {
            seq: from,
            reason: format!("lies outside the checkpoint's {size} records"),
        });
    }
    let mut leaves: Vec<Hash> = Vec::with_capacity(ex.records.len());
    let mut expected = from;
    let mut ceremonies = Vec::new();
    for r in &ex.records {
        let rec = Record::from_bytes(r.record.as_bytes()).map_err(|e| VerifyError::Record {
            seq: expected,
            reason: format!("changed: {e}"),
        })?;
        if rec.seq != expected {
            let reason = if rec.seq > expected {
                format!("missing (the next record present is #{}): deleted", rec.seq)
            } else {
                format!(
                    "out of place: found #{} here (inserted or reordered)",
                    rec.seq
                )
            };
            return Err(VerifyError::Record {
                seq: expected,
                reason,
            });
        }
        if rec.seq > size {
            return Err(VerifyError::Record {
                seq: rec.seq,
                reason: format!("beyond the checkpoint's {size} records (inserted)"),
            });
        }
        let p = proof(&r.proof, &format!("record #{}", rec.seq))?;
        tlog::check_record(&p, size, root, rec.seq - 1, rec.leaf_hash()).map_err(|_| {
            VerifyError::Record {
                seq: rec.seq,
                reason: "does not match the signed checkpoint: changed, or its proof was".into(),
            }
        })?;
        if rec.is_ceremony() {
            ceremonies.push((rec.seq, rec.event.clone()));
        }
        leaves.push(rec.leaf_hash());
        expected += 1;
    }
    if expected != size + 1 {
        return Err(VerifyError::Truncated {
            size,
            last: expected - 1,
        });
    }

    // Earlier checkpoints carried by the export.
    let mut proven: Vec<(u64, Hash)> = Vec::new();
    for e in &ex.earlier {
        let (_, old) = open_checkpoint(&e.checkpoint, &hsm)?;
        check_extends(
            &old,
            size,
            root,
            &proof(&e.consistency, "consistency proof")?,
        )?;
        proven.push((old.size(), *old.hash()));
    }
    // Checkpoints the verifier held: each must be proven extended, by the export.
    for held in &opts.earlier {
        let (_, old) = open_checkpoint(held, &hsm)?;
        if old.size() > size {
            return Err(VerifyError::Fork(format!("you hold a checkpoint of size {} but the export's is {size}: the log was truncated or rolled back", old.size())));
        }
        if old.size() == size {
            if *old.hash() != root {
                return Err(VerifyError::Fork(format!(
                    "two checkpoints of size {size} with different trees"
                )));
            }
            continue;
        }
        match proven.iter().find(|(s, _)| *s == old.size()) {
            Some((_, h)) if h == old.hash() => {}
            Some(_) => return Err(VerifyError::Fork(format!("two checkpoints of size {} with different trees", old.size()))),
            None if old.size() == 0 => proven.push((0, *old.hash())),
            // The records from #1 are all here: the tree of the first records is computed.
            None if from == 1 => {
                if tree_root(&leaves[..old.size() as usize]) != *old.hash() {
                    return Err(VerifyError::Fork(format!(
                        "your checkpoint of size {} has another tree than records #1..#{} of the export: the log was rewritten",
                        old.size(),
                        old.size()
                    )));
                }
                proven.push((old.size(), *old.hash()));
            }
            None => return Err(VerifyError::MissingProof(format!(
                "the export starts at #{from} and carries no proof for your checkpoint of size {}: export from #1, or with --earlier that checkpoint", old.size()))),
        }
    }

    // Witnesses: a cosignature counts on the latest checkpoint, or on an earlier one the
    // latest is proven to extend (witnesses cosign a checkpoint some time after it is made).
    let mut cosigned_by = Vec::new();
    let mut cosigned_notes = vec![ex.checkpoint.clone()];
    for e in &ex.earlier {
        if let Some(s) = checkpoint_size(&e.checkpoint) {
            if proven.iter().any(|(p, _)| *p == s) {
                cosigned_notes.push(e.checkpoint.clone());
            }
        }
    }
    for w in &opts.witnesses {
        let v = crate::witness::any_verifier(w)
            .ok_or_else(|| VerifyError::Key(format!("{w:?} is not a witness verifier key")))?;
        let name = v.name().to_string();
        if cosigned_notes
            .iter()
            .any(|n| !crate::witness::cosigners(n, std::slice::from_ref(w)).is_empty())
        {
            cosigned_by.push(name);
        }
    }
    if cosigned_by.len() < opts.require_cosignatures {
        return Err(VerifyError::Witness(format!(
            "{} of the given witnesses cosigned the checkpoint; {} required",
            cosigned_by.len(),
            opts.require_cosignatures
        )));
    }
    if let Some(p) = opts.prove {
        if p < from || p >= expected {
            return Err(VerifyError::NotInExport(p));
        }
    }
    let mut extends: Vec<u64> = proven.iter().map(|(s, _)| *s).collect();
    extends.sort_unstable();
    extends.dedup();
    Ok(Report {
        origin: ex.origin.clone(),
        size,
        root: crate::export::hash_to_string(&root),
        from,
        records: expected.saturating_sub(from),
        key_pinned: opts.public_key.is_some(),
        extends,
        cosigned_by,
        ceremonies,
        proved: opts.prove,
    })
}

/// The RFC 6962 tree hash of `leaves` (record hashes).
fn tree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        // (Only ever asked for a non-empty prefix: a held checkpoint of size 0 is extended
        // by every log.)
        0 => Hash([0; 32]),
        1 => leaves[0],
        n => {
            // The largest power of two below n splits the tree.
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            tlog::node_hash(tree_root(&leaves[..k]), tree_root(&leaves[k..]))
        }
    }
}

fn check_extends(
    old: &Checkpoint,
    size: u64,
    root: Hash,
    p: &Vec<Hash>,
) -> Result<(), VerifyError> {
    if old.size() > size {
        return Err(VerifyError::Fork(format!(
            "an earlier checkpoint has {} records, more than the latest's {size}",
            old.size()
        )));
    }
    if old.size() == size {
        return if *old.hash() == root {
            Ok(())
        } else {
            Err(VerifyError::Fork(format!(
                "two checkpoints of size {size} with different trees"
            )))
        };
    }
    tlog::check_tree(p, size, root, old.size(), *old.hash())
        .map_err(|_| VerifyError::Fork(format!("the checkpoint of size {size} does not extend the one of size {}: the log was rewritten", old.size())))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "verified: log {} at size {} (root {})",
            self.origin, self.size, self.root
        )?;
        writeln!(
            f,
            "  checkpoint signed by the HSM's key ({})",
            if self.key_pinned {
                "the key given"
            } else {
                "taken from the export: pin it with --public-key to prove origin"
            }
        )?;
        if self.records > 0 {
            writeln!(
                f,
                "  records #{}..#{}: {} verified, consecutive, each proven in the tree",
                self.from, self.size, self.records
            )?;
        }
        match self.extends.as_slice() {
            [] => {}
            [one] => writeln!(
                f,
                "  extends the earlier checkpoint of size {one} (consistency proven)"
            )?,
            many => writeln!(
                f,
                "  extends {} earlier checkpoints, sizes {} to {} (consistency proven for each)",
                many.len(),
                many[0],
                many[many.len() - 1]
            )?,
        }
        if !self.cosigned_by.is_empty() {
            writeln!(f, "  cosigned by: {}", self.cosigned_by.join(", "))?;
        }
        for (seq, ev) in &self.ceremonies {
            writeln!(f, "  ceremony #{seq}: {ev}")?;
        }
        if let Some(p) = self.proved {
            writeln!(
                f,
                "  record #{p} is included in the tree of size {}",
                self.size
            )?;
        }
        Ok(())
    }
}

/// The size a checkpoint note claims (not verified).
pub fn checkpoint_size(note_text: &str) -> Option<u64> {
    let note = Note::from_bytes(note_text.as_bytes()).ok()?;
    Checkpoint::from_bytes(note.text()).ok().map(|c| c.size())
}
