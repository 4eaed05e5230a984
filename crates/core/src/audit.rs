//! The audit log inside the store: records appended in the same transaction as the change
//! they describe, a Merkle tree over them (hashes stored as `tlog_tiles` lays them out), and a
//! checkpoint signed with the HSM's audit key after every transaction that appended.
//!
//! The audit root key (`audit.key`) is separate from the device key: zeroize and
//! re-initialisation destroy the device key but not the log, its signing key or the Auditor,
//! so the log stays verifiable across them. Factory reset destroys both.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use signed_note::{Note, StandardSigner};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::{self, Hash, HashReader};

use ferrohsm_audit::export::{hash_to_string, EarlierCheckpoint, Export, ExportedRecord};
use ferrohsm_audit::Record;

use crate::error::{HsmError, Result};
use crate::secret::Secret32;

/// Tables of the log (in `hsm.db`, never deleted by zeroize).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log(idx INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_hashes(idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_checkpoints(size INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_state(kind TEXT PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_cosigned(size INTEGER PRIMARY KEY);
";

/// How key use (sign, verify, encrypt, decrypt) is audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum KeyUseAudit {
    /// Not recorded.
    Off,
    /// A record per use, durable before the answer; concurrent operations share one flush.
    Strict,
    /// Every use counted, one record per role, key and operation in each window of
    /// `max_ms`, durable within it; after a failed flush every key use is refused until a
    /// flush succeeds.
    Batched {
        /// Longest a record may wait in memory.
        max_ms: u64,
    },
}

/// The Auditor's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Key-use auditing.
    pub key_use: KeyUseAudit,
    /// Witness cosignatures each ceremony-class event needs.
    pub ceremony_cosignatures: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_use: KeyUseAudit::Off,
            ceremony_cosignatures: 3,
        }
    }
}

/// A registered witness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    /// Name in the key.
    pub name: String,
    /// Signed-note verifier key.
    pub vkey: String,
    /// When registered (UTC).
    pub added: String,
}

/// The audit signing key and the log's identity, held while the store is open.
pub struct AuditKeys {
    pub(crate) root: Secret32,
    signer: StandardSigner,
    /// The signed-note verifier key of the HSM's audit key.
    pub vkey: String,
    /// The checkpoint origin line.
    pub origin: String,
}

impl AuditKeys {
    pub(crate) fn new(root: Secret32, skey: &str, vkey: String, origin: String) -> Result<Self> {
        let signer = StandardSigner::new(skey).map_err(|e| {
            HsmError::Tamper(format!("the audit signing key does not load ({e:?})"))
        })?;
        Ok(AuditKeys {
            root,
            signer,
            vkey,
            origin,
        })
    }
}

/// Makes a new audit signing key for `serial`: (private signed-note key, verifier key, origin).
pub(crate) fn new_signing_key(serial: &str) -> (zeroize::Zeroizing<String>, String, String) {
    let origin = format!("ferrohsm/{serial}/audit");
    // The key is named by the log's origin, as C2SP tlog-checkpoint asks.
    let (skey, vkey) = signed_note::generate_key(&mut rand_core::OsRng, &origin);
    (zeroize::Zeroizing::new(skey), vkey, origin)
}

struct Reader<'a>(&'a Transaction<'a>);

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog::Error> {
        read_hashes(self.0, None, indexes)
    }
}

/// What one transaction has appended so far: the log's size, and the hashes it wrote (the
/// next record's tree hashes are built from them), so that a batch of records costs no
/// reads of what it just wrote.
#[derive(Default)]
pub(crate) struct Appending {
    size: Option<u64>,
    written: std::collections::HashMap<u64, Hash>,
}

/// A reader that sees this transaction's new hashes before the table.
struct BatchReader<'a>(&'a Transaction<'a>, &'a Appending);

impl HashReader for BatchReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog::Error> {
        read_hashes(self.0, Some(self.1), indexes)
    }
}

fn read_hashes(
    tx: &Transaction<'_>,
    batch: Option<&Appending>,
    indexes: &[u64],
) -> std::result::Result<Vec<Hash>, tlog::Error> {
    let mut st = tx
        .prepare_cached("SELECT hash FROM audit_hashes WHERE idx = ?1")
        .map_err(|e| tlog::Error::InvalidInput(e.to_string()))?;
    indexes
        .iter()
        .map(|&i| {
            if let Some(h) = batch.and_then(|b| b.written.get(&i)) {
                return Ok(Hash(h.0));
            }
            let b: Vec<u8> = st
                .query_row([i as i64], |r| r.get(0))
                .map_err(|e| tlog::Error::InvalidInput(format!("hash {i}: {e}")))?;
            Ok(Hash(b.try_into().map_err(|_| tlog::Error::MalformedHash)?))
        })
        .collect()
}

fn log_err(e: impl std::fmt::Display) -> HsmError {
    HsmError::Store(format!("audit log: {e}"))
}

/// Number of records in the log.
pub(crate) fn size(tx: &Transaction<'_>) -> Result<u64> {
    let n: i64 = tx.query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log", [], |r| {
        r.get(0)
    })?;
    Ok(n as u64)
}

/// The latest time any record of the log was written at (Unix seconds; 0 before the first):
/// a floor under the clock for timed lockouts, so that setting the clock back, before failing
/// or during a lockout, does not shorten them. Kept in `meta` as records are appended.
pub(crate) fn clock_floor(tx: &Transaction<'_>) -> Result<u64> {
    let v: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE name = 'clock_floor'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Raises the clock floor to a record's time.
fn raise_clock_floor(tx: &Transaction<'_>, time: &str) -> Result<()> {
    if let Some(t) = crate::time::parse_rfc3339(time) {
        tx.prepare_cached(
            "INSERT INTO meta(name, value) VALUES ('clock_floor', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value WHERE CAST(excluded.value AS INTEGER) > CAST(meta.value AS INTEGER)",
        )?
        .execute([t.to_string()])?;
    }
    Ok(())
}

/// Appends one record (its `seq` is assigned here) and the tree hashes it completes.
/// `batch` carries what earlier appends of the same transaction wrote.
pub(crate) fn append(tx: &Transaction<'_>, batch: &mut Appending, rec: &mut Record) -> Result<u64> {
    let n = match batch.size {
        Some(n) => n,
        None => size(tx)?,
    };
    rec.seq = n + 1;
    let bytes = rec.to_bytes();
    let hashes = tlog::stored_hashes(n, &bytes, &BatchReader(tx, batch)).map_err(log_err)?;
    let base = tlog::stored_hash_index(0, n);
    let mut ins = tx.prepare_cached("INSERT INTO audit_hashes(idx, hash) VALUES (?1, ?2)")?;
    for (i, h) in hashes.iter().enumerate() {
        let idx = base + i as u64;
        ins.execute(params![idx as i64, &h.0[..]])?;
        batch.written.insert(idx, Hash(h.0));
    }
    batch.size = Some(n + 1);
    tx.prepare_cached("INSERT INTO audit_log(idx, record) VALUES (?1, ?2)")?
        .execute(params![n as i64, bytes])?;
    raise_clock_floor(tx, &rec.time)?;
    Ok(rec.seq)
}

/// Signs and stores a checkpoint of the current tree.
pub(crate) fn checkpoint(tx: &Transaction<'_>, keys: &AuditKeys) -> Result<String> {
    let n = size(tx)?;
    let root = tlog::tree_hash(n, &Reader(tx)).map_err(log_err)?;
    let body = Checkpoint::new(&keys.origin, n, root, "")
        .map_err(|_| log_err("bad checkpoint"))?
        .to_bytes();
    let mut note = Note::new(&body, &[]).map_err(|e| log_err(format!("{e:?}")))?;
    note.add_sigs(&[&keys.signer])
        .map_err(|e| log_err(format!("{e:?}")))?;
    let text = String::from_utf8(note.to_bytes()).map_err(log_err)?;
    // Keep witness cosignatures already stored for this size.
    let old: Option<String> = tx
        .query_row(
            "SELECT note FROM audit_checkpoints WHERE size = ?1",
            [n as i64],
            |r| r.get(0),
        )
        .optional()?;
    if old.is_none() {
        tx.execute(
            "INSERT INTO audit_checkpoints(size, note) VALUES (?1, ?2)",
            params![n as i64, text],
        )?;
        return Ok(text);
    }
    Ok(old.unwrap_or(text))
}

/// The latest checkpoint (signed note).
pub(crate) fn latest_checkpoint(tx: &Transaction<'_>) -> Result<Option<(u64, String)>> {
    Ok(tx
        .query_row(
            "SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .optional()?)
}

/// Checks that the log extends a checkpoint signed by this HSM's audit key (kept outside the
/// data directory, or cosigned by witnesses): its size is not beyond the log, and the log's
/// tree of that size has its root. Returns the checkpoint's size; a log behind it is
/// [`HsmError::Tamper`] (a rollback), another tree of that size too (a fork).
pub(crate) fn check_extends(tx: &Transaction<'_>, keys: &AuditKeys, note: &str) -> Result<u64> {
    let hsm = signed_note::StandardVerifier::new(keys.vkey.trim())
        .map_err(|e| HsmError::Store(format!("the audit key does not load ({e:?})")))?;
    let (_, cp) = ferrohsm_audit::verify::open_checkpoint(note, &hsm)
        .map_err(|e| HsmError::InvalidInput(format!("not a checkpoint this HSM signed: {e}")))?;
    if cp.origin() != keys.origin {
        return Err(HsmError::InvalidInput(format!(
            "the checkpoint is of log {:?}, not this HSM's {:?}",
            cp.origin(),
            keys.origin
        )));
    }
    let size = latest_checkpoint(tx)?.map_or(0, |(s, _)| s);
    if cp.size() > size {
        return Err(HsmError::Tamper(format!(
            "rollback: a checkpoint this HSM signed has {} records, but its log has {size}: the data directory is an older copy",
            cp.size()
        )));
    }
    if cp.size() > 0 {
        let root = tlog::tree_hash(cp.size(), &Reader(tx)).map_err(log_err)?;
        if root != *cp.hash() {
            return Err(HsmError::Tamper(format!(
                "fork: the log's first {} records are not the ones a checkpoint this HSM signed covers",
                cp.size()
            )));
        }
    }
    Ok(cp.size())
}

/// All checkpoints, oldest first.
pub(crate) fn checkpoints(tx: &Transaction<'_>) -> Result<Vec<(u64, String)>> {
    let mut st = tx.prepare("SELECT size, note FROM audit_checkpoints ORDER BY size")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// Whether the log holds a successful record of `event` (the Auditor's imprint, say): what
/// must exist in the audit state if the log says it was made.
pub(crate) fn log_has(tx: &Transaction<'_>, event: &str) -> Result<bool> {
    let pattern = format!("%\"event\":\"{event}\"%\"outcome\":\"success%");
    Ok(tx
        .query_row(
            "SELECT 1 FROM audit_log WHERE CAST(record AS TEXT) LIKE ?1 LIMIT 1",
            [pattern],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Replaces a stored checkpoint's note (same text, more signatures).
pub(crate) fn store_cosigned(tx: &Transaction<'_>, size: u64, note: &str) -> Result<()> {
    tx.execute(
        "UPDATE audit_checkpoints SET note = ?2 WHERE size = ?1",
        params![size as i64, note],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO audit_cosigned(size) VALUES (?1)",
        [size as i64],
    )?;
    Ok(())
}

/// Records `[from, to)` (0-based indexes).
pub(crate) fn records(tx: &Transaction<'_>, from: u64, to: u64) -> Result<Vec<Record>> {
    let mut st = tx.prepare_cached(
        "SELECT idx, record FROM audit_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
    )?;
    let rows = st.query_map(params![from as i64, to as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (i, b) = row?;
        let rec = Record::from_bytes(&b)
            .map_err(|e| HsmError::Tamper(format!("audit record #{}: {e}", i + 1)))?;
        out.push(rec);
    }
    Ok(out)
}

/// Builds an export of records from `from` (1-based) to the latest checkpoint, with proofs,
/// and consistency proofs for the stored checkpoints of the sizes in `earlier`.
pub(crate) fn export(
    tx: &Transaction<'_>,
    keys: &AuditKeys,
    from: u64,
    earlier: &[u64],
) -> Result<Export> {
    let (size, note) =
        latest_checkpoint(tx)?.ok_or_else(|| HsmError::State("the audit log is empty".into()))?;
    let from = from.max(1);
    let reader = Reader(tx);
    let mut recs = Vec::new();
    for r in records(tx, from - 1, size)? {
        let proof = tlog::prove_record(size, r.seq - 1, &reader).map_err(log_err)?;
        recs.push(ExportedRecord {
            record: String::from_utf8(r.to_bytes()).map_err(log_err)?,
            proof: proof.iter().map(hash_to_string).collect(),
        });
    }
    // The newest checkpoint witnesses cosigned travels with every export, with the proof
    // that the latest extends it: cosignatures can then be counted offline.
    let cosigned: Option<i64> = tx
        .query_row(
            "SELECT size FROM audit_cosigned WHERE size < ?1 ORDER BY size DESC LIMIT 1",
            [size as i64],
            |r| r.get(0),
        )
        .optional()?;
    let mut sizes: Vec<u64> = earlier.to_vec();
    sizes.extend(cosigned.map(|s| s as u64));
    sizes.sort_unstable();
    sizes.dedup();
    let mut out_earlier = Vec::new();
    for &s in &sizes {
        if s >= size || s == 0 {
            continue;
        }
        let cp: Option<String> = tx
            .query_row(
                "SELECT note FROM audit_checkpoints WHERE size = ?1",
                [s as i64],
                |r| r.get(0),
            )
            .optional()?;
        // A size this HSM never signed gets no proof; the verifier then says what is wrong
        // with the checkpoint that named it.
        let Some(cp) = cp else { continue };
        let proof = tlog::prove_tree(size, s, &reader).map_err(log_err)?;
        out_earlier.push(EarlierCheckpoint {
            checkpoint: cp,
            consistency: proof.iter().map(hash_to_string).collect(),
        });
    }
    Ok(Export {
        format: ferrohsm_audit::export::FORMAT.into(),
        version: ferrohsm_audit::export::VERSION,
        origin: keys.origin.clone(),
        public_key: keys.vkey.clone(),
        first: from,
        checkpoint: note,
        records: recs,
        earlier: out_earlier,
    })
}

/// The audit state row that lists a fingerprint of every other row's sealed bytes (fresh at
/// every write), so that one row put back from an older copy of itself is caught.
pub(crate) const STATE_PRINTS: &str = "prints";

fn state_key(root: &Secret32) -> Secret32 {
    crate::crypto::hkdf32(&[], root.expose(), &[b"ferrohsm audit state v1"])
}

fn state_print(sealed: &[u8]) -> String {
    hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sealed).as_ref()[..12])
}

fn read_sealed_state(tx: &Transaction<'_>, kind: &str) -> Result<Option<Vec<u8>>> {
    Ok(tx
        .query_row(
            "SELECT sealed FROM audit_state WHERE kind = ?1",
            [kind],
            |r| r.get(0),
        )
        .optional()?)
}

fn write_state<T: Serialize>(
    tx: &Transaction<'_>,
    root: &Secret32,
    kind: &str,
    v: &T,
) -> Result<Vec<u8>> {
    let pt =
        zeroize::Zeroizing::new(serde_json::to_vec(v).map_err(|e| HsmError::Store(e.to_string()))?);
    let sealed = crate::crypto::seal(&state_key(root), format!("audit\0{kind}").as_bytes(), &pt);
    tx.execute("INSERT INTO audit_state(kind, sealed) VALUES (?1, ?2) ON CONFLICT(kind) DO UPDATE SET sealed = excluded.sealed", params![kind, sealed])?;
    Ok(sealed)
}

fn open_state<T: serde::de::DeserializeOwned>(
    root: &Secret32,
    kind: &str,
    sealed: &[u8],
) -> Result<T> {
    let pt = crate::crypto::open(
        &state_key(root),
        format!("audit\0{kind}").as_bytes(),
        sealed,
        &format!("audit state {kind}"),
    )?;
    serde_json::from_slice(pt.expose())
        .map_err(|e| HsmError::Tamper(format!("audit state {kind} does not decode: {e}")))
}

/// The fingerprint list, if this store keeps one.
fn state_prints(tx: &Transaction<'_>, root: &Secret32) -> Result<Option<BTreeMap<String, String>>> {
    read_sealed_state(tx, STATE_PRINTS)?
        .map(|s| open_state(root, STATE_PRINTS, &s))
        .transpose()
}

/// Whether the store keeps the fingerprint list.
pub(crate) fn has_state_prints(tx: &Transaction<'_>) -> Result<bool> {
    Ok(read_sealed_state(tx, STATE_PRINTS)?.is_some())
}

/// Makes the fingerprint list from the rows as they are (a store from before it, or a new
/// log), unless there is one.
pub(crate) fn ensure_state_prints(tx: &Transaction<'_>, root: &Secret32) -> Result<()> {
    if read_sealed_state(tx, STATE_PRINTS)?.is_some() {
        return Ok(());
    }
    let mut st = tx.prepare("SELECT kind, sealed FROM audit_state WHERE kind != ?1")?;
    let rows = st.query_map([STATE_PRINTS], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut prints = BTreeMap::new();
    for row in rows {
        let (kind, sealed) = row?;
        prints.insert(kind, state_print(&sealed));
    }
    write_state(tx, root, STATE_PRINTS, &prints)?;
    Ok(())
}

/// Seals an audit state value under the audit root (and names its fingerprint in the list).
pub(crate) fn put_state<T: Serialize>(
    tx: &Transaction<'_>,
    root: &Secret32,
    kind: &str,
    v: &T,
) -> Result<()> {
    let sealed = write_state(tx, root, kind, v)?;
    if let Some(mut prints) = state_prints(tx, root)? {
        prints.insert(kind.to_string(), state_print(&sealed));
        write_state(tx, root, STATE_PRINTS, &prints)?;
    }
    Ok(())
}

/// Opens an audit state value; one that is not the copy the fingerprint list names (an older
/// one put back) or that the list does not name (inserted by hand) is tamper.
pub(crate) fn get_state<T: serde::de::DeserializeOwned>(
    tx: &Transaction<'_>,
    root: &Secret32,
    kind: &str,
) -> Result<Option<T>> {
    let Some(sealed) = read_sealed_state(tx, kind)? else {
        return Ok(None);
    };
    if let Some(prints) = state_prints(tx, root)? {
        match prints.get(kind) {
            Some(p) if *p == state_print(&sealed) => {}
            Some(_) => {
                return Err(HsmError::Tamper(format!(
                    "audit state {kind} is not the copy the audit state's sealed list names: an older copy of it was put back, or it was replaced"
                )))
            }
            None => {
                return Err(HsmError::Tamper(format!(
                    "audit state {kind} is not in the audit state's sealed list: it was inserted by hand"
                )))
            }
        }
    }
    open_state(root, kind, &sealed).map(Some)
}
