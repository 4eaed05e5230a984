//! The sealed manifest of the store: how many records and objects it holds, and a
//! fingerprint of every sealed record, so that rows deleted, inserted, or put back from an
//! older copy of themselves are caught (DESIGN invariant 2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Store, Txn};
use crate::error::{HsmError, Result};

#[derive(Clone, Serialize, Deserialize, Default)]
pub(super) struct Manifest {
    pub(super) records: i64,
    pub(super) objects: i64,
    /// Each record's fingerprint (a hash of its sealed bytes, fresh at every write), by
    /// `kind/id`: a row put back from an older copy of itself seals differently and is caught.
    /// Absent in stores written before it existed (filled in at the next open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) rows: Option<BTreeMap<String, String>>,
    /// Whether every object's fingerprint is kept too, in records of kind [`OBJECT_PRINTS`]
    /// (which the row fingerprints cover). False in stores written before (filled in at the
    /// next open).
    #[serde(default)]
    pub(super) objects_printed: bool,
}

/// The kind of the records that hold objects' fingerprints: one per partition and bucket
/// (`<partition>/<handle mod 64>`), so that writing an object rewrites a small record, not a
/// list of every object.
pub(super) const OBJECT_PRINTS: &str = "objprints";
const BUCKETS: u64 = 64;

fn bucket_id(partition: u32, handle: u64) -> String {
    format!("{partition}/{}", handle % BUCKETS)
}

/// Object fingerprints by handle, as one bucket record holds them.
pub(super) type Bucket = BTreeMap<u64, String>;

/// The manifest's name for a record.
pub(super) fn row_key(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

/// A record's fingerprint: the start of the SHA-256 of its sealed bytes (sealing draws a fresh
/// nonce, so every write gives a new one).
pub(super) fn row_print(sealed: &[u8]) -> String {
    hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sealed).as_ref()[..12])
}

impl Store {
    pub(super) fn verify_manifest(&mut self) -> Result<()> {
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
        // Each record is checked against the manifest's fingerprint when it is read (so a
        // row put back from an older copy is tamper at its first use, recorded, while the
        // Auditor can still open the store); a store written before fingerprints existed
        // gets them now.
        let objects_printed = m.objects_printed;
        match &m.rows {
            Some(_) => {}
            None => {
                let rows = match self.read(|t| t.all_row_prints()) {
                    Ok(r) => r,
                    Err(e) => return Err(self.tamper(&e.to_string())),
                };
                let mut m = m;
                m.rows = Some(rows);
                self.write_inner(false, |t| t.put("manifest", "", &m))?;
            }
        }
        if !objects_printed {
            self.write_inner(false, |t| t.print_all_objects())?;
        }
        Ok(())
    }
}

impl Txn<'_> {
    /// The manifest, read (and opened) once per transaction.
    pub(super) fn read_manifest(&mut self) -> Result<Manifest> {
        if self.manifest.is_none() {
            let m: Manifest = self
                .get("manifest", "")?
                .ok_or_else(|| HsmError::Tamper("the sealed manifest is missing".into()))?;
            self.manifest = Some(m);
        }
        self.manifest
            .clone()
            .ok_or_else(|| HsmError::Tamper("the sealed manifest is missing".into()))
    }

    /// The manifest's row fingerprints, to change (`None` in a store that has none yet, or
    /// before a device key exists).
    pub(super) fn manifest_rows(&mut self) -> Result<Option<&mut BTreeMap<String, String>>> {
        if self.keys.is_none() {
            return Ok(None);
        }
        if self.manifest.is_none() {
            match self.get::<Manifest>("manifest", "")? {
                Some(m) => self.manifest = Some(m),
                None => return Ok(None),
            }
        }
        Ok(self.manifest.as_mut().and_then(|m| m.rows.as_mut()))
    }

    /// Refuses a record whose sealed bytes are not the ones the manifest names.
    pub(super) fn check_row(&mut self, kind: &str, id: &str, sealed: &[u8]) -> Result<()> {
        let Some(rows) = self.manifest_rows()? else {
            return Ok(());
        };
        match rows.get(&row_key(kind, id)) {
            Some(p) if *p == row_print(sealed) => Ok(()),
            Some(_) => Err(HsmError::Tamper(format!(
                "record {kind}/{id} is not the one the sealed manifest names: an older copy of it was put back, or it was replaced"
            ))),
            None => Err(HsmError::Tamper(format!(
                "record {kind}/{id} is not in the sealed manifest: it was inserted by hand"
            ))),
        }
    }

    /// Every record's fingerprint as the table holds it now.
    pub(super) fn all_row_prints(&mut self) -> Result<BTreeMap<String, String>> {
        let mut st = self
            .tx
            .prepare("SELECT kind, id, sealed FROM records WHERE kind != 'manifest'")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (kind, id, sealed) = row?;
            out.insert(row_key(&kind, &id), row_print(&sealed));
        }
        Ok(out)
    }

    /// Whether this store keeps object fingerprints (and so checks them).
    fn objects_printed(&mut self) -> Result<bool> {
        if self.manifest_rows()?.is_none() {
            return Ok(false);
        }
        Ok(self.manifest.as_ref().is_some_and(|m| m.objects_printed))
    }

    /// One bucket of object fingerprints, read once per transaction.
    fn bucket(&mut self, id: &str) -> Result<&mut Bucket> {
        if !self.buckets.contains_key(id) {
            let b: Bucket = self.get(OBJECT_PRINTS, id)?.unwrap_or_default();
            self.buckets.insert(id.to_string(), (false, b));
        }
        let entry = self
            .buckets
            .get_mut(id)
            .ok_or_else(|| HsmError::Store("object fingerprint bucket vanished".into()))?;
        Ok(&mut entry.1)
    }

    /// Records an object's new sealed bytes (`Some`) or its deletion (`None`).
    pub(super) fn note_object(
        &mut self,
        partition: u32,
        handle: u64,
        sealed: Option<&[u8]>,
    ) -> Result<()> {
        if !self.objects_printed()? {
            return Ok(());
        }
        let id = bucket_id(partition, handle);
        let b = self.bucket(&id)?;
        match sealed {
            Some(s) => b.insert(handle, row_print(s)),
            None => b.remove(&handle),
        };
        if let Some(e) = self.buckets.get_mut(&id) {
            e.0 = true;
        }
        Ok(())
    }

    /// Forgets every fingerprint of a partition's objects (they are all deleted).
    pub(super) fn forget_partition_objects(&mut self, partition: u32) -> Result<()> {
        if !self.objects_printed()? {
            return Ok(());
        }
        for b in 0..BUCKETS {
            let id = format!("{partition}/{b}");
            self.buckets.remove(&id);
            self.delete(OBJECT_PRINTS, &id)?;
        }
        Ok(())
    }

    /// Refuses an object whose sealed bytes are not the ones its fingerprint names.
    pub(super) fn check_object(
        &mut self,
        partition: u32,
        handle: u64,
        sealed: &[u8],
    ) -> Result<()> {
        if !self.objects_printed()? {
            return Ok(());
        }
        match self.bucket(&bucket_id(partition, handle))?.get(&handle) {
            Some(p) if *p == row_print(sealed) => Ok(()),
            Some(_) => Err(HsmError::Tamper(format!(
                "object {handle} of partition {partition} is not the one the sealed manifest names: an older copy of it was put back, or it was replaced"
            ))),
            None => Err(HsmError::Tamper(format!(
                "object {handle} of partition {partition} is not in the sealed manifest: it was inserted by hand"
            ))),
        }
    }

    /// Writes the buckets this transaction changed (before the manifest, which covers them).
    pub(super) fn flush_object_prints(&mut self) -> Result<()> {
        let dirty: Vec<(String, Bucket)> = self
            .buckets
            .iter_mut()
            .filter(|(_, (d, _))| *d)
            .map(|(id, (d, b))| {
                *d = false;
                (id.clone(), b.clone())
            })
            .collect();
        for (id, b) in dirty {
            if b.is_empty() {
                self.delete(OBJECT_PRINTS, &id)?;
            } else {
                self.put(OBJECT_PRINTS, &id, &b)?;
            }
        }
        Ok(())
    }

    /// Fingerprints every object as the table holds it now and turns checking on (a store from
    /// before object fingerprints, at its first open).
    pub(super) fn print_all_objects(&mut self) -> Result<()> {
        let all: Vec<(u32, i64, Vec<u8>)> = {
            let mut st = self
                .tx
                .prepare("SELECT partition, handle, sealed FROM objects")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut buckets: BTreeMap<String, Bucket> = BTreeMap::new();
        for (p, h, sealed) in all {
            let h = h as u64;
            buckets
                .entry(bucket_id(p, h))
                .or_default()
                .insert(h, row_print(&sealed));
        }
        for (id, b) in buckets {
            self.put(OBJECT_PRINTS, &id, &b)?;
        }
        let _ = self.read_manifest()?;
        if let Some(m) = self.manifest.as_mut() {
            m.objects_printed = true;
        }
        self.rows_changed = true;
        Ok(())
    }
}
