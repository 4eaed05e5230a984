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
}

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
}
