//! Partition backups as files: objects sealed under keys derived from the partition's cloning
//! domain, so that any HSM partition of the domain — and nothing else — can check or restore
//! them, on any machine.
//!
//! The file (`ferrohsm-backup`, version 1) is JSON: the source (serial, partition), when it
//! was made, a random 32-byte salt, a domain check value, each object's unique id, class and
//! sealed body, and an HMAC over all of it. From the domain secret D and the salt S:
//! `K_wrap = HKDF(salt D, ikm S, "ferrohsm backup v1 wrap")`, likewise `K_mac` ("… mac") and
//! `K_check` ("… check"). `check = HMAC(K_check, "domain")` tells a partition of another
//! domain from a damaged file; `mac = HMAC(K_mac, the canonical JSON without "mac")`; each
//! object body is AES-256-GCM under `K_wrap` with the salt, its position and its unique id as
//! associated data, holding its attributes, public part and key material (the same body a
//! clone carries). A backup reveals nothing about the domain, and the domain secret itself
//! never wraps anything.

use serde::{Deserialize, Serialize};

use super::cloning::{CloneSelect, Travelling};
use super::*;

/// The format name in every backup file.
pub const BACKUP_FORMAT: &str = "ferrohsm-backup";
/// The only version this release writes and reads.
pub const BACKUP_VERSION: u32 = 1;
/// Larger files are refused before parsing.
pub const MAX_BACKUP_BYTES: usize = 256 << 20;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct BackupObject {
    unique_id: String,
    class: String,
    sealed: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupFile {
    format: String,
    version: u32,
    serial: String,
    partition: String,
    created: String,
    salt: String,
    check: String,
    objects: Vec<BackupObject>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mac: String,
}

/// What a backup file holds, as `backup verify` reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupSummary {
    /// The HSM and partition it was made from.
    pub serial: String,
    /// The partition it was made from.
    pub partition: String,
    /// When.
    pub created: String,
    /// Objects by class.
    pub classes: BTreeMap<String, u64>,
}

struct BackupKeys {
    wrap: Secret32,
    mac: Secret32,
    check: String,
}

fn keys(domain: &Secret32, salt: &[u8]) -> BackupKeys {
    let k = |label: &[u8]| hkdf32(domain.expose(), salt, &[label]);
    let check_key = k(b"ferrohsm backup v1 check");
    BackupKeys {
        wrap: k(b"ferrohsm backup v1 wrap"),
        mac: k(b"ferrohsm backup v1 mac"),
        check: hex::encode(crypto::hmac_sha256(check_key.expose(), &[b"domain"])),
    }
}

fn aad(salt: &[u8], index: usize, uid: &str) -> Vec<u8> {
    [salt, &(index as u64).to_be_bytes(), uid.as_bytes()].concat()
}

fn bad(m: impl Into<String>) -> HsmError {
    HsmError::InvalidInput(format!("not a usable backup file: {}", m.into()))
}

impl BackupFile {
    fn mac_input(&self) -> Result<Vec<u8>> {
        let mut unmacked = self.clone();
        unmacked.mac = String::new();
        serde_json::to_vec(&unmacked).map_err(|e| HsmError::Store(e.to_string()))
    }

    /// Parses and checks a file against a partition's domain: format, version, domain, MAC.
    fn open(bytes: &[u8], domain: &Secret32) -> Result<(BackupFile, BackupKeys)> {
        if bytes.len() > MAX_BACKUP_BYTES {
            return Err(bad(format!("larger than {MAX_BACKUP_BYTES} bytes")));
        }
        let f: BackupFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if f.format != BACKUP_FORMAT {
            return Err(bad(format!("format {:?}, not {BACKUP_FORMAT:?}", f.format)));
        }
        if f.version != BACKUP_VERSION {
            return Err(bad(format!(
                "version {} (this release reads version {BACKUP_VERSION})",
                f.version
            )));
        }
        let salt = hex::decode(&f.salt).map_err(|_| bad("its salt is not hex"))?;
        if salt.len() != 32 {
            return Err(bad("its salt is not 32 bytes"));
        }
        let k = keys(domain, &salt);
        if !crypto::ct_eq(f.check.as_bytes(), k.check.as_bytes()) {
            return Err(HsmError::Refused(format!(
                "the backup of {}/{} was made in another cloning domain than this partition's; nothing was restored",
                f.serial, f.partition
            )));
        }
        let mac = hex::encode(crypto::hmac_sha256(k.mac.expose(), &[&f.mac_input()?]));
        if !crypto::ct_eq(f.mac.as_bytes(), mac.as_bytes()) {
            return Err(HsmError::Tamper(
                "the backup file was changed or damaged after it was made (its MAC does not verify); nothing was restored".into(),
            ));
        }
        Ok((f, k))
    }

    /// Every object, opened (each must open and belong where it is).
    fn objects(&self, k: &BackupKeys) -> Result<Vec<Travelling>> {
        let salt = hex::decode(&self.salt).map_err(|_| bad("its salt is not hex"))?;
        self.objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let sealed =
                    hex::decode(&o.sealed).map_err(|_| bad(format!("object {i} is not hex")))?;
                let pt = crypto::open(
                    &k.wrap,
                    &aad(&salt, i, &o.unique_id),
                    &sealed,
                    &format!("backed-up object {i}"),
                )?;
                let t: Travelling = serde_json::from_slice(pt.expose())
                    .map_err(|e| bad(format!("object {i} does not decode: {e}")))?;
                if t.attrs.unique_id != o.unique_id || t.attrs.class.name() != o.class {
                    return Err(HsmError::Tamper(format!(
                        "backed-up object {i} is not the object its entry names"
                    )));
                }
                Ok(t)
            })
            .collect()
    }

    fn summary(&self) -> BackupSummary {
        let mut classes = BTreeMap::new();
        for o in &self.objects {
            *classes.entry(o.class.clone()).or_insert(0u64) += 1;
        }
        BackupSummary {
            serial: self.serial.clone(),
            partition: self.partition.clone(),
            created: self.created.clone(),
            classes,
        }
    }
}

impl Hsm {
    /// Writes a backup of what `select` names in the session's partition (its Crypto
    /// Officer), under the partition's cloning domain, with the clone policies checked.
    pub fn backup_export(&mut self, s: &Session, select: &CloneSelect) -> Result<Vec<u8>> {
        let (id, label, domain, policy) = self.clone_party(s, "backing up a partition")?;
        let records = self.selected(s, id, &label, &policy, select, "backup-out")?;
        let pmk = s.pmk()?.clone();
        let mut salt = [0u8; 32];
        crypto::fill_random(&mut salt);
        let k = keys(&domain, &salt);
        let mut objects = Vec::with_capacity(records.len());
        let mut events = Vec::with_capacity(records.len());
        let handles: Vec<u64> = records.iter().map(|(h, _)| *h).collect();
        let loaded = self.load_all(id, &handles)?;
        for (i, ((h, class), rec)) in records.iter().zip(&loaded).enumerate() {
            let (uid, pt) = self.travelling(id, &pmk, *h, rec)?;
            objects.push(BackupObject {
                unique_id: uid.clone(),
                class: class.name().into(),
                sealed: hex::encode(crypto::seal(&k.wrap, &aad(&salt, i, &uid), &pt)),
            });
            events.push(self.ev(
                "backup-out",
                s.role.short(),
                s.partition(),
                Some(&uid),
                "success: to a backup file",
            ));
        }
        let mut f = BackupFile {
            format: BACKUP_FORMAT.into(),
            version: BACKUP_VERSION,
            serial: self.serial.clone(),
            partition: label,
            created: now_rfc3339(),
            salt: hex::encode(salt),
            check: k.check.clone(),
            objects,
            mac: String::new(),
        };
        f.mac = hex::encode(crypto::hmac_sha256(k.mac.expose(), &[&f.mac_input()?]));
        self.store
            .write(|t| events.iter().try_for_each(|e| t.event(e)))?;
        serde_json::to_vec_pretty(&f).map_err(|e| HsmError::Store(e.to_string()))
    }

    /// Checks a backup file without restoring anything: its format, that it was made in this
    /// partition's cloning domain, its MAC, and that every object opens (Crypto Officer of a
    /// partition of the domain). Audited.
    pub fn backup_verify(&mut self, s: &Session, bytes: &[u8]) -> Result<BackupSummary> {
        let (_, _, domain, _) = self.clone_party(s, "checking a backup")?;
        let checked = BackupFile::open(bytes, &domain).and_then(|(f, k)| {
            f.objects(&k)?;
            Ok(f.summary())
        });
        let outcome = match &checked {
            Ok(sum) => format!(
                "success: {} object(s) from {}/{}",
                sum.classes.values().sum::<u64>(),
                sum.serial,
                sum.partition
            ),
            Err(e) => format!("failure: {e}"),
        };
        let e = self.ev(
            "backup-verify",
            s.role.short(),
            s.partition(),
            None,
            &outcome,
        );
        self.store.event(&e)?;
        checked
    }

    /// Restores a backup file into the session's partition, all or nothing: each object is
    /// checked as [`Hsm::backup_verify`] does before anything is written; objects the
    /// partition already holds (same unique id) stay, or with `replace` are replaced.
    /// Returns (added, replaced, skipped).
    pub fn backup_restore(
        &mut self,
        s: &Session,
        bytes: &[u8],
        replace: bool,
    ) -> Result<(u64, u64, u64)> {
        let (_, label, domain, policy) = self.clone_party(s, "restoring a backup")?;
        let (f, k) = BackupFile::open(bytes, &domain)?;
        let objects = f.objects(&k)?;
        if let Some((class, why)) = objects.iter().find_map(|o| {
            super::cloning::class_allowed(&policy, o.attrs.class).map(|w| (o.attrs.class, w))
        }) {
            let e = HsmError::Refused(format!(
                "partition {label}'s policy {why} is off: it does not take {} objects from a backup; nothing was restored",
                class.name()
            ));
            return Err(self.refuse("backup-in", s.role.short(), s.partition(), e));
        }
        self.commit_objects(
            s,
            &objects,
            "backup-in",
            &format!(
                "from a backup of {}/{} made {}",
                f.serial, f.partition, f.created
            ),
            replace,
        )
    }
}
