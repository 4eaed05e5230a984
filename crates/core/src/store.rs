//! The store: one SQLite database per HSM, every record sealed with AES-256-GCM under a key
//! derived from the per-device key, bound to the record's identity.
//!
//! Layout of a data directory:
//! - `device.key`: the per-device key (48 bytes: magic, key, checksum), owner-only. Destroying
//!   it is what makes zeroize irreversible.
//! - `hsm.db`: SQLite in WAL mode with `secure_delete` on, so deleted rows are overwritten.
//!
//! Tamper evidence: each record's AEAD binds (kind, id); a sealed manifest counts records and
//! objects, checked at open, so rows deleted or inserted by hand are caught; a device-key
//! check value in the database catches a store or key file swapped for another HSM's. A
//! detected tamper is recorded in the event table and the store refuses to open.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{self, AuditKeys};

mod manifest;
mod objects;
mod wal_view;
use crate::crypto::{self, hkdf32, hmac_sha256};
use crate::dir_lock::{self, DirLock, LockMode};
use crate::error::{HsmError, Result};
use crate::secret::Secret32;
use manifest::{row_key, row_print, Manifest};
pub use objects::{ObjectIndex, SecretBytesRow};
use wal_view::shm_handle;
pub use wal_view::{install_shared_view, SharedView, SharedViewMaker, ShmFile, WalHeader};

const DEVICE_KEY_FILE: &str = "device.key";
const DB_FILE: &str = "hsm.db";
const DK_MAGIC: &[u8; 8] = b"FHSMDK01";
const AUDIT_KEY_FILE: &str = "audit.key";
const AK_MAGIC: &[u8; 8] = b"FHSMAK01";
const STORE_FORMAT: &str = "ferrohsm-store-1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records(kind TEXT NOT NULL, id TEXT NOT NULL, sealed BLOB NOT NULL,
    PRIMARY KEY(kind, id));
CREATE TABLE IF NOT EXISTS objects(partition INTEGER NOT NULL, handle INTEGER NOT NULL,
    class TEXT NOT NULL, label_tag BLOB NOT NULL, id_tag BLOB NOT NULL, sealed BLOB NOT NULL,
    PRIMARY KEY(partition, handle));
DROP INDEX IF EXISTS objects_by_label;
DROP INDEX IF EXISTS objects_by_id;
CREATE INDEX IF NOT EXISTS objects_by_label_handle ON objects(partition, label_tag, handle);
CREATE INDEX IF NOT EXISTS objects_by_id_handle ON objects(partition, id_tag, handle);
CREATE INDEX IF NOT EXISTS objects_by_class_handle ON objects(partition, class, handle);
";
// The lookup indexes end in `handle` so that a lookup returns its rows in handle order
// straight from the index: with (partition, label_tag) alone, SQLite prefers the primary
// key to avoid a sort and scans the whole partition.

/// One audit record as the engine emits it (`seq` is assigned when it is appended).
pub type Event = ferrohsm_audit::Record;

/// Sealed per-device key material, derived once at open.
struct Keys {
    store: Secret32,
    index: Secret32,
    device: Secret32,
}

/// Whether the data directory holds a usable device key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Key present and matching the store.
    Present,
    /// No key: never initialised, or zeroized.
    Absent,
}

/// An open store.
pub struct Store {
    dir: PathBuf,
    conn: Connection,
    /// This process's hold on the directory (shared when embedded, exclusive in a server).
    _lock: DirLock,
    keys: Option<Keys>,
    audit: Option<AuditKeys>,
    /// The state generation last read, and the connection's data version it was read at.
    seen: Option<(i64, u64)>,
    /// The WAL index (`hsm.db-shm`), read to notice commits without taking a lock. Declared
    /// after `conn` so that the connection closes first.
    shm: Option<Arc<ShmFile>>,
    /// Its header when `seen` was last confirmed.
    seen_wal: Option<WalHeader>,
    /// Set while a detected tamper is being recorded, so that a failure to record it is not
    /// itself recorded (and so on).
    noting_tamper: bool,
}

/// Moves the state generation on (in the caller's transaction, if any). It starts at a random
/// value so that a store made afresh at the same path never repeats a generation that a cache
/// elsewhere may still hold.
fn bump_generation(conn: &Connection) -> Result<()> {
    let mut b = [0u8; 8];
    crypto::fill_random(&mut b);
    let start = u64::from_le_bytes(b) >> 2;
    conn.execute(
        "INSERT INTO meta(name, value) VALUES ('generation', ?1)
         ON CONFLICT(name) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [start.to_string()],
    )?;
    Ok(())
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(crate::audit::SCHEMA)?;
    Ok(conn)
}

fn derive_keys(dk: &Secret32) -> Keys {
    Keys {
        store: hkdf32(&[], dk.expose(), &[b"ferrohsm store seal v1"]),
        index: hkdf32(&[], dk.expose(), &[b"ferrohsm store index v1"]),
        device: dk.clone(),
    }
}

fn dk_check(dk: &Secret32) -> String {
    key_check(dk, b"ferrohsm device key check v1")
}

/// A value the database keeps to recognise its key file by (reveals nothing of the key).
fn key_check(k: &Secret32, label: &[u8]) -> String {
    hex::encode(&hmac_sha256(k.expose(), &[label])[..16])
}

impl Store {
    /// Opens the store in `dir`, creating the directory and database if `create` is set.
    /// Verifies the device key against the store and the sealed manifest against the tables.
    pub fn open(dir: &Path, create: bool) -> Result<Store> {
        let db = dir.join(DB_FILE);
        if !db.exists() {
            if !create {
                return Err(HsmError::State(format!(
                    "no HSM at {}; create one with `ferrohsm hsm init`",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir).map_err(|e| HsmError::io(dir, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
                // SQLite gives its journal and index files the database's mode: make it the
                // owner's alone before SQLite creates it (a server refuses anything wider).
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&db)
                    .map_err(|e| HsmError::io(&db, e))?;
            }
        }
        let lock = dir_lock::acquire(dir, LockMode::Shared)?;
        let conn = open_conn(&db)?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            conn,
            _lock: lock,
            keys: None,
            audit: None,
            seen: None,
            shm: shm_handle(&db),
            seen_wal: None,
            noting_tamper: false,
        };
        if store.meta("format")?.is_none() {
            store.set_meta("format", STORE_FORMAT)?;
            store.set_meta("serial", &new_serial())?;
        } else if store.meta("format")?.as_deref() != Some(STORE_FORMAT) {
            return Err(HsmError::Tamper(format!(
                "{} is not a {STORE_FORMAT} database",
                db.display()
            )));
        }
        store.load_audit_key()?;
        store.load_device_key()?;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The device serial number (fixed when the data directory was made; survives zeroize).
    pub fn serial(&self) -> Result<String> {
        self.meta("serial")?
            .ok_or_else(|| HsmError::Tamper("store has no serial".into()))
    }

    /// Reads a plain metadata value.
    pub fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a plain metadata value (nothing secret goes here).
    pub fn set_meta(&mut self, name: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        self.changed()
    }

    /// Changes whenever another connection (process or thread) commits to the database.
    fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// The state generation: a number that moves on with every change to the HSM's state
    /// (records, objects, metadata, audit configuration) made through any connection in any
    /// process, and does not move when only audit records are appended. Caches keyed by it
    /// are never served after a change. Costs one `PRAGMA data_version` while nothing changed.
    pub fn generation(&mut self) -> Result<u64> {
        // Fast path: no commit at all since the generation was last confirmed (one read of
        // the WAL index, no lock). Anything else takes the locked path below.
        let wal = self.wal_header();
        if let (Some(now), Some(then), Some((_, g))) = (wal, self.seen_wal, self.seen) {
            if now == then {
                return Ok(g);
            }
        }
        self.seen_wal = wal;
        let dv = self.data_version()?;
        if let Some(shm) = &self.shm {
            shm.try_view();
        }
        if let Some((seen_dv, g)) = self.seen {
            if seen_dv == dv {
                return Ok(g);
            }
        }
        let g: Option<String> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE name = 'generation'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let g = match g {
            Some(g) => g
                .parse()
                .map_err(|_| HsmError::Tamper("the state generation is not a number".into()))?,
            None => {
                bump_generation(&self.conn)?;
                return self.generation();
            }
        };
        self.seen = Some((dv, g));
        Ok(g)
    }

    /// The WAL-index header as it is now, if it can be read.
    fn wal_header(&self) -> Option<WalHeader> {
        self.shm.as_ref()?.header()
    }

    /// The generation as last read by [`Store::generation`] on this connection (reading it
    /// when it has not been read since this connection's last change): for values that are
    /// checked once per operation already.
    pub fn last_generation(&mut self) -> Result<u64> {
        match self.seen {
            Some((_, g)) => Ok(g),
            None => self.generation(),
        }
    }

    /// Records a change made outside [`Store::write`]: moves the generation on and forgets
    /// the one seen (this connection's own commits do not change its data version).
    fn changed(&mut self) -> Result<()> {
        bump_generation(&self.conn)?;
        self.seen = None;
        self.seen_wal = None;
        Ok(())
    }

    /// Removes a plain metadata value.
    pub fn clear_meta(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE name = ?1", [name])?;
        self.changed()
    }

    /// Opens the database without loading or checking the device key: only for destroying
    /// everything in a store that failed its checks.
    pub fn open_unverified(dir: &Path) -> Result<Store> {
        let db = dir.join(DB_FILE);
        if !db.exists() {
            return Err(HsmError::State(format!("no HSM at {}", dir.display())));
        }
        let lock = dir_lock::acquire(dir, LockMode::Shared)?;
        let conn = open_conn(&db)?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            conn,
            _lock: lock,
            keys: None,
            audit: None,
            seen: None,
            shm: shm_handle(&db),
            seen_wal: None,
            noting_tamper: false,
        };
        // Keep auditing if the audit key is sound; the store itself is about to be destroyed.
        let _ = store.load_audit_key();
        Ok(store)
    }

    /// Whether a device key is loaded.
    pub fn key_state(&self) -> KeyState {
        if self.keys.is_some() {
            KeyState::Present
        } else {
            KeyState::Absent
        }
    }

    /// The device key, for deriving role-bound keys. Fails if zeroized.
    pub fn device_key(&self) -> Result<&Secret32> {
        self.keys.as_ref().map(|k| &k.device).ok_or_else(zeroized)
    }

    fn load_device_key(&mut self) -> Result<()> {
        let expected = self.meta("dk_check")?;
        let dk = match read_key_file(&self.dir.join(DEVICE_KEY_FILE), DK_MAGIC) {
            Ok(None) => {
                if expected.is_some() {
                    return Err(
                        self.tamper("the device key file is missing but the store expects one")
                    );
                }
                return Ok(());
            }
            Ok(Some(k)) => k,
            Err(KeyFileError::Damaged) => return Err(self.tamper("the device key file is damaged")),
            Err(KeyFileError::Io(e)) => return Err(e),
        };
        match expected {
            Some(c) if crypto::ct_eq(c.as_bytes(), dk_check(&dk).as_bytes()) => {}
            Some(_) => {
                let m = self.foreign(DEVICE_KEY_FILE);
                return Err(self.tamper(&m));
            }
            None => {
                return Err(self
                    .tamper("a device key is present but the store never had one (store swapped)"))
            }
        }
        self.keys = Some(derive_keys(&dk));
        self.verify_manifest()
    }

    /// Loads the audit root key and signing key, making them on first use.
    fn load_audit_key(&mut self) -> Result<()> {
        let path = self.dir.join(AUDIT_KEY_FILE);
        let root = match read_key_file(&path, AK_MAGIC) {
            Ok(Some(k)) => k,
            Ok(None) => {
                let has_signer: bool = self.conn.query_row(
                    "SELECT COUNT(*) FROM audit_state WHERE kind = 'signer'",
                    [],
                    |r| r.get::<_, i64>(0),
                )? > 0;
                if has_signer {
                    return Err(HsmError::Tamper(
                        "the audit key file is missing; the audit log cannot be extended".into(),
                    ));
                }
                let k = Secret32::random();
                write_key_file(&self.dir, &path, AK_MAGIC, &k)?;
                k
            }
            Err(KeyFileError::Damaged) => {
                return Err(HsmError::Tamper("the audit key file is damaged".into()))
            }
            Err(KeyFileError::Io(e)) => return Err(e),
        };
        // The audit key file and the database must belong together: a database copied in
        // from another HSM is named as that, not as a failed integrity check.
        let check = key_check(&root, b"ferrohsm audit key check v1");
        let known = self.meta("ak_check")?;
        if known
            .as_ref()
            .is_some_and(|c| !crypto::ct_eq(c.as_bytes(), check.as_bytes()))
        {
            let m = self.foreign(AUDIT_KEY_FILE);
            return Err(self.tamper(&m));
        }
        let serial = self.serial()?;
        // Read without the write lock: opening the store must not queue behind writers.
        let existing: Option<SignerState> = {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Deferred)?;
            audit::get_state(&tx, &root, "signer")?
        };
        // Only the very first open makes a signing key, under the write lock (and re-checks).
        let tx = self.conn.transaction_with_behavior(if existing.is_some() {
            TransactionBehavior::Deferred
        } else {
            TransactionBehavior::Immediate
        })?;
        let signer = match existing
            .map_or_else(|| audit::get_state(&tx, &root, "signer"), |s| Ok(Some(s)))?
        {
            Some(s) => s,
            None => {
                let (skey, vkey, origin) = audit::new_signing_key(&serial);
                let st = SignerState {
                    skey: skey.to_string(),
                    vkey,
                    origin,
                    prints_kept: true,
                };
                audit::ensure_state_prints(&tx, &root)?;
                audit::put_state(&tx, &root, "signer", &st)?;
                st
            }
        };
        // The audit state's fingerprint list: made once (a store from before it), and from
        // then on its removal is tamper, never a way to put older rows back unnoticed.
        let mut signer = signer;
        if !audit::has_state_prints(&tx)? {
            if signer.prints_kept {
                drop(tx);
                return Err(
                    self.tamper("the audit state's sealed list of fingerprints was removed")
                );
            }
            audit::ensure_state_prints(&tx, &root)?;
            signer.prints_kept = true;
            audit::put_state(&tx, &root, "signer", &signer)?;
        }
        tx.commit()?;
        if known.is_none() {
            // First open (or a store from before the check): the state just verified.
            self.set_meta("ak_check", &check)?;
        }
        self.audit = Some(AuditKeys::new(
            root,
            &signer.skey,
            signer.vkey.clone(),
            signer.origin.clone(),
        )?);
        Ok(())
    }

    /// The audit keys (verifier key, origin, root), if the audit key loaded.
    pub fn audit_keys(&self) -> Result<&AuditKeys> {
        audit_available(self.audit.as_ref())
    }

    /// Destroys the whole audit log and its keys, and starts a new one (factory reset only).
    pub fn reset_audit(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM audit_log; DELETE FROM audit_hashes; DELETE FROM audit_checkpoints; DELETE FROM audit_cosigned; DELETE FROM audit_state; DELETE FROM meta WHERE name = 'ak_check'; COMMIT;")?;
        let path = self.dir.join(AUDIT_KEY_FILE);
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = f.write_all(&[0u8; 48]);
            let _ = f.sync_all();
        }
        let _ = std::fs::remove_file(&path);
        self.audit = None;
        self.changed()?;
        self.conn.execute_batch("VACUUM;")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.load_audit_key()
    }

    /// Says that the database and a key file of the data directory are not a pair.
    fn foreign(&self, key_file: &str) -> String {
        let serial = self.meta("serial").ok().flatten().unwrap_or_default();
        format!(
            "hsm.db in {} is from another HSM ({serial}, by the database) than its {key_file}: a database copied from another HSM, or the key file swapped; put back this HSM's own hsm.db",
            self.dir.display()
        )
    }

    /// Records a tamper event (best effort: the store may be unwritable) and returns the error.
    fn tamper(&mut self, reason: &str) -> HsmError {
        self.note_tamper(reason);
        HsmError::Tamper(format!("{reason}; the HSM refuses to use this store"))
    }

    /// Passes `r` on; a tamper it reports is first recorded: a `tamper-detected` audit record
    /// and the tamper note `hsm show` reports. When the log itself is what failed, the record
    /// cannot be written: the note and the error (on the console, in the server's log) say it.
    fn noticed<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(HsmError::Tamper(m)) = &r {
            let m = m.clone();
            self.note_tamper(&m);
        }
        r
    }

    fn note_tamper(&mut self, reason: &str) {
        if self.noting_tamper {
            return;
        }
        self.noting_tamper = true;
        let serial = self.meta("serial").ok().flatten().unwrap_or_default();
        let e = Event {
            seq: 0,
            time: crate::time::now_rfc3339(),
            serial,
            event: "tamper-detected".into(),
            role: "device".into(),
            partition: None,
            object: None,
            outcome: format!("failure: {reason}"),
        };
        // Best effort: a store this damaged may not take the record.
        let _ = self.append_events([&e]);
        let _ = self.set_meta("tamper", reason);
        self.noting_tamper = false;
    }

    /// Makes a new device key (at initialisation): writes `device.key` atomically with
    /// owner-only permissions and starts an empty sealed manifest.
    pub fn new_device_key(&mut self) -> Result<()> {
        let dk = Secret32::random();
        let path = self.dir.join(DEVICE_KEY_FILE);
        write_key_file(&self.dir, &path, DK_MAGIC, &dk)?;
        self.keys = Some(derive_keys(&dk));
        self.conn.execute("DELETE FROM records", [])?;
        self.conn.execute("DELETE FROM objects", [])?;
        self.set_meta("dk_check", &dk_check(&dk))?;
        self.conn
            .execute("DELETE FROM meta WHERE name = 'tamper'", [])?;
        self.write(|t| {
            t.force_manifest = true;
            Ok(())
        })
    }

    /// Destroys the device key and every sealed record and object, then compacts the database
    /// and truncates its write-ahead log so no old page survives in any file. The event table
    /// and the serial survive.
    pub fn destroy_key_material(&mut self, reason: &str) -> Result<()> {
        crate::login_memo::forget_all();
        let path = self.dir.join(DEVICE_KEY_FILE);
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = f.write_all(&[0u8; 48]);
            let _ = f.sync_all();
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HsmError::io(path, e)),
        }
        self.keys = None;
        self.conn.execute_batch(
            "BEGIN IMMEDIATE; DELETE FROM records; DELETE FROM objects; DELETE FROM meta WHERE name = 'dk_check'; COMMIT;",
        )?;
        self.set_meta(
            "zeroized",
            &format!("{} ({reason})", crate::time::now_rfc3339()),
        )?;
        self.conn.execute_batch("VACUUM;")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Runs `f` in one IMMEDIATE transaction: all its writes land together, or none do. The
    /// state generation moves on in the same transaction.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        self.write_inner(true, f)
    }

    fn write_inner<T>(
        &mut self,
        state_change: bool,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T>,
    ) -> Result<T> {
        self.seen = None;
        self.seen_wal = None;
        let r = (|| {
            let mut t = self.begin(TransactionBehavior::Immediate)?;
            let out = f(&mut t)?;
            if state_change {
                bump_generation(&t.tx)?;
            }
            t.finish()?;
            Ok(out)
        })();
        self.noticed(r)
    }

    /// Appends audit events in one transaction, changing no other state (the state generation
    /// stays, so caches keyed by it survive key-use auditing).
    pub fn append_events<'e>(&mut self, events: impl IntoIterator<Item = &'e Event>) -> Result<()> {
        self.write_inner(false, |t| {
            for e in events {
                t.event(e)?;
            }
            Ok(())
        })
    }

    /// Runs `f` over a consistent snapshot; nothing is written.
    pub fn read<T>(&mut self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        let r = self
            .begin(TransactionBehavior::Deferred)
            .and_then(|mut t| f(&mut t));
        self.noticed(r)
    }

    fn begin(&mut self, behavior: TransactionBehavior) -> Result<Txn<'_>> {
        let tx = self.conn.transaction_with_behavior(behavior)?;
        Ok(Txn {
            tx,
            keys: self.keys.as_ref(),
            audit: self.audit.as_ref(),
            appended: false,
            appending: Default::default(),
            d_records: 0,
            d_objects: 0,
            force_manifest: false,
            manifest: None,
            rows_changed: false,
            buckets: BTreeMap::new(),
        })
    }

    /// Appends an event in its own transaction (for refusals that change nothing else).
    pub fn event(&mut self, e: &Event) -> Result<()> {
        self.append_events([e])
    }

    /// All audit records in order.
    pub fn events(&mut self) -> Result<Vec<Event>> {
        self.read(|t| audit::records(&t.tx, 0, u64::MAX >> 1))
    }
}

fn zeroized() -> HsmError {
    HsmError::State(
        "the HSM holds no key material (never initialised, or zeroized); run `ferrohsm hsm init`"
            .into(),
    )
}

fn new_serial() -> String {
    let mut b = [0u8; 8];
    crypto::fill_random(&mut b);
    format!("FH{:010}", u64::from_le_bytes(b) % 10_000_000_000)
}

/// A transaction over the store.
pub struct Txn<'a> {
    pub(crate) tx: rusqlite::Transaction<'a>,
    keys: Option<&'a Keys>,
    pub(crate) audit: Option<&'a AuditKeys>,
    appended: bool,
    appending: audit::Appending,
    d_records: i64,
    d_objects: i64,
    force_manifest: bool,
    /// The manifest as this transaction sees it (read once), and whether its row
    /// fingerprints changed.
    manifest: Option<Manifest>,
    rows_changed: bool,
    /// Buckets of object fingerprints read by this transaction, each with whether it changed.
    buckets: BTreeMap<String, (bool, manifest::Bucket)>,
}

/// The audit keys, or the error every caller reports when the audit key did not load.
fn audit_available(keys: Option<&AuditKeys>) -> Result<&AuditKeys> {
    keys.ok_or_else(|| HsmError::Store("the audit log is unavailable".into()))
}

fn rec_aad(kind: &str, id: &str) -> Vec<u8> {
    [b"rec\0".as_slice(), kind.as_bytes(), b"\0", id.as_bytes()].concat()
}

impl<'a> Txn<'a> {
    /// The audit keys of this store; an error when the audit key did not load.
    pub(crate) fn audit_keys(&self) -> Result<&'a AuditKeys> {
        audit_available(self.audit)
    }

    fn keys(&self) -> Result<&Keys> {
        self.keys.ok_or_else(zeroized)
    }

    /// Reads and opens a sealed record.
    pub fn get<T: DeserializeOwned>(&mut self, kind: &str, id: &str) -> Result<Option<T>> {
        let sealed: Option<Vec<u8>> = self
            .tx
            .query_row(
                "SELECT sealed FROM records WHERE kind = ?1 AND id = ?2",
                params![kind, id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        if kind != "manifest" {
            self.check_row(kind, id, &sealed)?;
        }
        let pt = crypto::open(
            &self.keys()?.store,
            &rec_aad(kind, id),
            &sealed,
            &format!("record {kind}/{id}"),
        )?;
        serde_json::from_slice(pt.expose())
            .map(Some)
            .map_err(|e| HsmError::Tamper(format!("record {kind}/{id} does not decode: {e}")))
    }

    /// Every record of a kind, in id order.
    pub fn list<T: DeserializeOwned>(&mut self, kind: &str) -> Result<Vec<(String, T)>> {
        let ids: Vec<String> = {
            let mut st = self
                .tx
                .prepare("SELECT id FROM records WHERE kind = ?1 ORDER BY id")?;
            let r = st.query_map([kind], |r| r.get(0))?;
            r.collect::<std::result::Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = self.get(kind, &id)? {
                out.push((id, v));
            }
        }
        Ok(out)
    }

    /// Seals and writes a record.
    pub fn put<T: Serialize>(&mut self, kind: &str, id: &str, value: &T) -> Result<()> {
        let pt =
            Zeroizing::new(serde_json::to_vec(value).map_err(|e| HsmError::Store(e.to_string()))?);
        let sealed = crypto::seal(&self.keys()?.store, &rec_aad(kind, id), &pt);
        if kind != "manifest" {
            if let Some(rows) = self.manifest_rows()? {
                rows.insert(row_key(kind, id), row_print(&sealed));
                self.rows_changed = true;
            }
        }
        let n = self.tx.execute(
            "INSERT INTO records(kind, id, sealed) VALUES (?1, ?2, ?3) ON CONFLICT(kind, id) DO NOTHING",
            params![kind, id, sealed],
        )?;
        if n == 1 {
            if kind != "manifest" {
                self.d_records += 1;
            }
        } else {
            self.tx.execute(
                "UPDATE records SET sealed = ?3 WHERE kind = ?1 AND id = ?2",
                params![kind, id, sealed],
            )?;
        }
        Ok(())
    }

    /// Deletes a record (no error if absent).
    pub fn delete(&mut self, kind: &str, id: &str) -> Result<()> {
        let n = self.tx.execute(
            "DELETE FROM records WHERE kind = ?1 AND id = ?2",
            params![kind, id],
        )?;
        self.d_records -= n as i64;
        if n > 0 {
            if let Some(rows) = self.manifest_rows()? {
                rows.remove(&row_key(kind, id));
                self.rows_changed = true;
            }
        }
        Ok(())
    }

    /// Appends an audit record in this transaction, so it lands with the change it describes
    /// (or not at all). Fails, and so fails the transaction, if the log is unavailable.
    pub fn event(&mut self, e: &Event) -> Result<()> {
        if self.audit.is_none() {
            return Err(HsmError::Store(
                "the audit log is unavailable; refusing to act unrecorded".into(),
            ));
        }
        let mut r = e.clone();
        audit::append(&self.tx, &mut self.appending, &mut r)?;
        self.appended = true;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush_object_prints()?;
        if self.d_records != 0 || self.d_objects != 0 || self.force_manifest || self.rows_changed {
            let mut m: Manifest = if self.force_manifest {
                // A new device key: the tables are empty, so every object (none) is printed.
                Manifest {
                    rows: Some(self.all_row_prints()?),
                    objects_printed: true,
                    ..Manifest::default()
                }
            } else {
                self.read_manifest()?
            };
            if self.force_manifest {
                m.records = self.tx.query_row(
                    "SELECT COUNT(*) FROM records WHERE kind != 'manifest'",
                    [],
                    |r| r.get(0),
                )?;
                m.objects = self
                    .tx
                    .query_row("SELECT COUNT(*) FROM objects", [], |r| r.get(0))?;
            } else {
                m.records += self.d_records;
                m.objects += self.d_objects;
            }
            self.put("manifest", "", &m)?;
        }
        if self.appended {
            if let Some(keys) = self.audit {
                audit::checkpoint(&self.tx, keys)?;
            }
        }
        self.tx.commit()?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct SignerState {
    skey: String,
    vkey: String,
    origin: String,
    /// Whether the audit state keeps its fingerprint list (absent in older stores).
    #[serde(default)]
    prints_kept: bool,
}

impl Drop for SignerState {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.skey);
    }
}

enum KeyFileError {
    Damaged,
    Io(HsmError),
}

/// Reads a 48-byte key file (magic, key, checksum). `Ok(None)` if absent.
fn read_key_file(
    path: &Path,
    magic: &[u8; 8],
) -> std::result::Result<Option<Secret32>, KeyFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyFileError::Io(HsmError::io(path, e))),
    };
    if bytes.len() != 48 || &bytes[..8] != magic {
        return Err(KeyFileError::Damaged);
    }
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes[..40]);
    if !crypto::ct_eq(&sum.as_ref()[..8], &bytes[40..48]) {
        return Err(KeyFileError::Damaged);
    }
    Secret32::from_slice(&bytes[8..40])
        .map(Some)
        .map_err(|_| KeyFileError::Damaged)
}

/// Writes a key file atomically, owner-only, and syncs the directory.
fn write_key_file(dir: &Path, path: &Path, magic: &[u8; 8], key: &Secret32) -> Result<()> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(48));
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(key.expose());
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    bytes.extend_from_slice(&sum.as_ref()[..8]);
    let tmp = path.with_extension("tmp");
    let res = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    res.map_err(|e| HsmError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store from before object fingerprints gets them at its next open, and checks them
    /// from then on.
    #[test]
    fn a_store_without_object_prints_gets_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ObjectIndex {
            class: "secret-key",
            label: "k",
            id: b"",
        };
        {
            let mut st = Store::open(dir.path(), true).unwrap();
            st.new_device_key().unwrap();
            st.write(|t| {
                t.put_object(1, 7, &idx, b"first")?;
                t.put_object(1, 8, &idx, b"second")
            })
            .unwrap();
            // Back to the older form: no buckets, the manifest not marking objects printed.
            st.write(|t| {
                t.forget_partition_objects(1)?;
                let mut m = t.read_manifest()?;
                m.objects_printed = false;
                t.manifest = Some(m.clone());
                t.rows_changed = true;
                Ok(())
            })
            .unwrap();
            let m: Manifest = st.read(|t| t.read_manifest()).unwrap();
            assert!(!m.objects_printed);
        }
        let old_row: Vec<u8> = {
            let c = open_conn(&dir.path().join(DB_FILE)).unwrap();
            c.query_row("SELECT sealed FROM objects WHERE handle = 7", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        let mut st = Store::open(dir.path(), false).unwrap();
        assert!(st.read(|t| t.read_manifest()).unwrap().objects_printed);
        assert!(st.read(|t| t.get_object(1, 7)).unwrap().is_some());
        // From now on an older copy put back is caught.
        st.write(|t| t.put_object(1, 7, &idx, b"changed")).unwrap();
        open_conn(&dir.path().join(DB_FILE))
            .unwrap()
            .execute(
                "UPDATE objects SET sealed = ?1 WHERE handle = 7",
                [&old_row],
            )
            .unwrap();
        assert!(matches!(
            st.read(|t| t.get_object(1, 7)),
            Err(HsmError::Tamper(_))
        ));
    }
}
