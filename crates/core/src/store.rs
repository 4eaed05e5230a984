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

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, hkdf32, hmac_sha256};
use crate::error::{HsmError, Result};
use crate::secret::Secret32;

const DEVICE_KEY_FILE: &str = "device.key";
const DB_FILE: &str = "hsm.db";
const DK_MAGIC: &[u8; 8] = b"FHSMDK01";
const STORE_FORMAT: &str = "ferrohsm-store-1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records(kind TEXT NOT NULL, id TEXT NOT NULL, sealed BLOB NOT NULL,
    PRIMARY KEY(kind, id));
CREATE TABLE IF NOT EXISTS objects(partition INTEGER NOT NULL, handle INTEGER NOT NULL,
    class TEXT NOT NULL, label_tag BLOB NOT NULL, id_tag BLOB NOT NULL, sealed BLOB NOT NULL,
    PRIMARY KEY(partition, handle));
CREATE INDEX IF NOT EXISTS objects_by_label ON objects(partition, label_tag);
CREATE INDEX IF NOT EXISTS objects_by_id ON objects(partition, id_tag);
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL,
    serial TEXT NOT NULL, event TEXT NOT NULL, role TEXT NOT NULL, partition TEXT,
    object TEXT, outcome TEXT NOT NULL);
";

/// One audit event as the engine emits it. (The witnessed Merkle log builds on these.)
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Sequence number (assigned by the store).
    pub seq: i64,
    /// UTC time.
    pub time: String,
    /// HSM serial.
    pub serial: String,
    /// What happened, e.g. `login`, `partition-create`.
    pub event: String,
    /// Who did it, e.g. `hsm-so`, `co`.
    pub role: String,
    /// Partition label, if any.
    pub partition: Option<String>,
    /// Object label or id, if any.
    pub object: Option<String>,
    /// `success` or `failure: <reason>`.
    pub outcome: String,
}

/// Sealed per-device key material, derived once at open.
struct Keys {
    store: Secret32,
    index: Secret32,
    device: Secret32,
}

#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    records: i64,
    objects: i64,
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
    keys: Option<Keys>,
}

/// Index values for an object, in clear (class) or as blind tags (label, id).
pub struct ObjectIndex<'a> {
    /// Object class name.
    pub class: &'a str,
    /// Label (indexed as an HMAC tag).
    pub label: &'a str,
    /// CKA_ID bytes (indexed as an HMAC tag).
    pub id: &'a [u8],
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
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
    hex::encode(&hmac_sha256(dk.expose(), &[b"ferrohsm device key check v1"])[..16])
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
            }
        }
        let conn = open_conn(&db)?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            conn,
            keys: None,
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
    pub fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// Removes a plain metadata value.
    pub fn clear_meta(&self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Opens the database without loading or checking the device key: only for destroying
    /// everything in a store that failed its checks.
    pub fn open_unverified(dir: &Path) -> Result<Store> {
        let db = dir.join(DB_FILE);
        if !db.exists() {
            return Err(HsmError::State(format!("no HSM at {}", dir.display())));
        }
        let conn = open_conn(&db)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            conn,
            keys: None,
        })
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
        let path = self.dir.join(DEVICE_KEY_FILE);
        let expected = self.meta("dk_check")?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if expected.is_some() {
                    return Err(
                        self.tamper("the device key file is missing but the store expects one")
                    );
                }
                return Ok(());
            }
            Err(e) => return Err(HsmError::io(path, e)),
        };
        if bytes.len() != 48 || &bytes[..8] != DK_MAGIC {
            return Err(self.tamper("the device key file is damaged"));
        }
        let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes[..40]);
        if !crypto::ct_eq(&sum.as_ref()[..8], &bytes[40..48]) {
            return Err(self.tamper("the device key file is damaged"));
        }
        let dk = Secret32::from_slice(&bytes[8..40])?;
        match expected {
            Some(c) if crypto::ct_eq(c.as_bytes(), dk_check(&dk).as_bytes()) => {}
            Some(_) => {
                return Err(self.tamper(
                    "the device key does not belong to this store (store or key file swapped)",
                ))
            }
            None => {
                return Err(self
                    .tamper("a device key is present but the store never had one (store swapped)"))
            }
        }
        self.keys = Some(derive_keys(&dk));
        self.verify_manifest()
    }

    fn verify_manifest(&mut self) -> Result<()> {
        let m: Manifest = match self.read(|t| t.get("manifest", "")) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(self.tamper("the sealed manifest is missing")),
            Err(e) => return Err(self.tamper(&e.to_string())),
        };
        let records: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM records WHERE kind != 'manifest'",
            [],
            |r| r.get(0),
        )?;
        let objects: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM objects", [], |r| r.get(0))?;
        if records != m.records || objects != m.objects {
            return Err(self.tamper(&format!(
                "the store holds {records} records and {objects} objects but its sealed manifest says {} and {}: rows were deleted or inserted by hand",
                m.records, m.objects
            )));
        }
        Ok(())
    }

    /// Records a tamper event (best effort: the store may be unwritable) and returns the error.
    fn tamper(&self, reason: &str) -> HsmError {
        let serial = self.meta("serial").ok().flatten().unwrap_or_default();
        let _ = self.conn.execute(
            "INSERT INTO events(time, serial, event, role, outcome) VALUES (?1, ?2, 'tamper-detected', 'device', ?3)",
            params![crate::time::now_rfc3339(), serial, format!("failure: {reason}")],
        );
        let _ = self.set_meta("tamper", reason);
        HsmError::Tamper(format!("{reason}; the HSM refuses to use this store"))
    }

    /// Makes a new device key (at initialisation): writes `device.key` atomically with
    /// owner-only permissions and starts an empty sealed manifest.
    pub fn new_device_key(&mut self) -> Result<()> {
        let dk = Secret32::random();
        let mut bytes = Zeroizing::new(Vec::with_capacity(48));
        bytes.extend_from_slice(DK_MAGIC);
        bytes.extend_from_slice(dk.expose());
        let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        bytes.extend_from_slice(&sum.as_ref()[..8]);
        let path = self.dir.join(DEVICE_KEY_FILE);
        let tmp = self.dir.join(".device.key.tmp");
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
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        res.map_err(|e| HsmError::io(&path, e))?;
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

    /// Runs `f` in one IMMEDIATE transaction: all its writes land together, or none do.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut t = Txn {
            tx,
            keys: self.keys.as_ref(),
            d_records: 0,
            d_objects: 0,
            force_manifest: false,
        };
        let out = f(&mut t)?;
        t.finish()?;
        Ok(out)
    }

    /// Runs `f` over a consistent snapshot; nothing is written.
    pub fn read<T>(&mut self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let mut t = Txn {
            tx,
            keys: self.keys.as_ref(),
            d_records: 0,
            d_objects: 0,
            force_manifest: false,
        };
        let out = f(&mut t)?;
        drop(t);
        Ok(out)
    }

    /// Appends an event in its own transaction (for refusals that change nothing else).
    pub fn event(&mut self, e: &Event) -> Result<()> {
        self.write(|t| t.event(e))
    }

    /// All events in order.
    pub fn events(&self) -> Result<Vec<Event>> {
        let mut st = self.conn.prepare(
            "SELECT seq, time, serial, event, role, partition, object, outcome FROM events ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Event {
                seq: r.get(0)?,
                time: r.get(1)?,
                serial: r.get(2)?,
                event: r.get(3)?,
                role: r.get(4)?,
                partition: r.get(5)?,
                object: r.get(6)?,
                outcome: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
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
    tx: rusqlite::Transaction<'a>,
    keys: Option<&'a Keys>,
    d_records: i64,
    d_objects: i64,
    force_manifest: bool,
}

fn rec_aad(kind: &str, id: &str) -> Vec<u8> {
    [b"rec\0".as_slice(), kind.as_bytes(), b"\0", id.as_bytes()].concat()
}

fn obj_aad(partition: u32, handle: u64) -> Vec<u8> {
    format!("obj\0{partition}\0{handle}").into_bytes()
}

impl Txn<'_> {
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
        Ok(())
    }

    /// Blind index tag of a value within a partition.
    fn tag(&self, partition: u32, what: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        Ok(hmac_sha256(
            self.keys()?.index.expose(),
            &[&partition.to_be_bytes(), what, b"\0", value],
        )[..16]
            .to_vec())
    }

    /// Seals and writes an object record with its index.
    pub fn put_object(
        &mut self,
        partition: u32,
        handle: u64,
        idx: &ObjectIndex<'_>,
        plaintext: &[u8],
    ) -> Result<()> {
        let sealed = crypto::seal(&self.keys()?.store, &obj_aad(partition, handle), plaintext);
        let lt = self.tag(partition, b"label", idx.label.as_bytes())?;
        let it = self.tag(partition, b"id", idx.id)?;
        let n = self.tx.execute(
            "INSERT INTO objects(partition, handle, class, label_tag, id_tag, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(partition, handle) DO NOTHING",
            params![partition, handle as i64, idx.class, lt, it, sealed],
        )?;
        if n == 1 {
            self.d_objects += 1;
        } else {
            self.tx.execute(
                "UPDATE objects SET class = ?3, label_tag = ?4, id_tag = ?5, sealed = ?6 WHERE partition = ?1 AND handle = ?2",
                params![partition, handle as i64, idx.class, lt, it, sealed],
            )?;
        }
        Ok(())
    }

    /// Opens one object's sealed record.
    pub fn get_object(&mut self, partition: u32, handle: u64) -> Result<Option<SecretBytesRow>> {
        let sealed: Option<Vec<u8>> = self
            .tx
            .query_row(
                "SELECT sealed FROM objects WHERE partition = ?1 AND handle = ?2",
                params![partition, handle as i64],
                |r| r.get(0),
            )
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let pt = crypto::open(
            &self.keys()?.store,
            &obj_aad(partition, handle),
            &sealed,
            &format!("object {handle}"),
        )?;
        Ok(Some(SecretBytesRow {
            handle,
            plaintext: pt,
        }))
    }

    /// Handles of a partition's objects, optionally only those with a label (by index).
    pub fn object_handles(&mut self, partition: u32, label: Option<&str>) -> Result<Vec<u64>> {
        let rows: Vec<i64> = match label {
            Some(l) => {
                let t = self.tag(partition, b"label", l.as_bytes())?;
                let mut st = self.tx.prepare_cached("SELECT handle FROM objects WHERE partition = ?1 AND label_tag = ?2 ORDER BY handle")?;
                let r = st.query_map(params![partition, t], |r| r.get(0))?;
                r.collect::<std::result::Result<_, _>>()?
            }
            None => {
                let mut st = self.tx.prepare_cached(
                    "SELECT handle FROM objects WHERE partition = ?1 ORDER BY handle",
                )?;
                let r = st.query_map(params![partition], |r| r.get(0))?;
                r.collect::<std::result::Result<_, _>>()?
            }
        };
        Ok(rows.into_iter().map(|h| h as u64).collect())
    }

    /// Deletes one object.
    pub fn delete_object(&mut self, partition: u32, handle: u64) -> Result<()> {
        let n = self.tx.execute(
            "DELETE FROM objects WHERE partition = ?1 AND handle = ?2",
            params![partition, handle as i64],
        )?;
        self.d_objects -= n as i64;
        Ok(())
    }

    /// Deletes every object of a partition; returns how many.
    pub fn delete_partition_objects(&mut self, partition: u32) -> Result<usize> {
        let n = self.tx.execute(
            "DELETE FROM objects WHERE partition = ?1",
            params![partition],
        )?;
        self.d_objects -= n as i64;
        Ok(n)
    }

    /// Counts a partition's objects.
    pub fn count_objects(&mut self, partition: u32) -> Result<u64> {
        let n: i64 = self.tx.query_row(
            "SELECT COUNT(*) FROM objects WHERE partition = ?1",
            [partition],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Appends an event in this transaction, so it lands with the change it describes.
    pub fn event(&mut self, e: &Event) -> Result<()> {
        self.tx.execute(
            "INSERT INTO events(time, serial, event, role, partition, object, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![e.time, e.serial, e.event, e.role, e.partition, e.object, e.outcome],
        )?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.d_records != 0 || self.d_objects != 0 || self.force_manifest {
            let mut m: Manifest = if self.force_manifest {
                Manifest::default()
            } else {
                self.get("manifest", "")?
                    .ok_or_else(|| HsmError::Tamper("the sealed manifest is missing".into()))?
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
        self.tx.commit()?;
        Ok(())
    }
}

/// An opened object record (plaintext JSON, zeroized on drop).
pub struct SecretBytesRow {
    /// Handle.
    pub handle: u64,
    /// The opened record.
    pub plaintext: crate::secret::SecretBytes,
}
