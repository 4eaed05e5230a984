//! Key objects in the store: each sealed with its partition and handle bound in, indexed by
//! blind tags of its label and id (HMACs, so the index reveals neither) and by class, and
//! fingerprinted in the sealed manifest (see `manifest.rs`).

use rusqlite::{params, OptionalExtension};

use super::Txn;
use crate::crypto::{self, hmac_sha256};
use crate::error::Result;

/// Index values for an object, in clear (class) or as blind tags (label, id).
pub struct ObjectIndex<'a> {
    /// Object class name.
    pub class: &'a str,
    /// Label (indexed as an HMAC tag).
    pub label: &'a str,
    /// CKA_ID bytes (indexed as an HMAC tag).
    pub id: &'a [u8],
}

/// An opened object record (plaintext JSON, zeroized on drop).
pub struct SecretBytesRow {
    /// Handle.
    pub handle: u64,
    /// The opened record.
    pub plaintext: crate::secret::SecretBytes,
}

fn obj_aad(partition: u32, handle: u64) -> Vec<u8> {
    format!("obj\0{partition}\0{handle}").into_bytes()
}

/// The lookup `Txn::find_handles` runs: the partition's objects with the given index
/// values, in handle order.
fn find_sql(label: bool, id: bool, class: bool) -> String {
    let mut sql = String::from("SELECT handle FROM objects WHERE partition = ?1");
    let mut n = 1;
    for (given, column) in [(label, "label_tag"), (id, "id_tag"), (class, "class")] {
        if given {
            n += 1;
            sql.push_str(&format!(" AND {column} = ?{n}"));
        }
    }
    sql.push_str(" ORDER BY handle");
    sql
}

impl Txn<'_> {
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
        self.note_object(partition, handle, Some(&sealed))?;
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
        self.check_object(partition, handle, &sealed)?;
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

    /// Handles of a partition's objects matching every given index value (label, id, class),
    /// found through the indexes.
    pub fn find_handles(
        &mut self,
        partition: u32,
        label: Option<&str>,
        id: Option<&[u8]>,
        class: Option<&str>,
    ) -> Result<Vec<u64>> {
        let mut args: Vec<rusqlite::types::Value> = vec![(partition as i64).into()];
        if let Some(l) = label {
            args.push(self.tag(partition, b"label", l.as_bytes())?.into());
        }
        if let Some(i) = id {
            args.push(self.tag(partition, b"id", i)?.into());
        }
        if let Some(c) = class {
            args.push(c.to_string().into());
        }
        let sql = find_sql(label.is_some(), id.is_some(), class.is_some());
        let mut st = self.tx.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0))?;
        let v: Vec<i64> = rows.collect::<std::result::Result<_, _>>()?;
        Ok(v.into_iter().map(|h| h as u64).collect())
    }

    /// Deletes one object.
    pub fn delete_object(&mut self, partition: u32, handle: u64) -> Result<()> {
        let n = self.tx.execute(
            "DELETE FROM objects WHERE partition = ?1 AND handle = ?2",
            params![partition, handle as i64],
        )?;
        self.d_objects -= n as i64;
        if n > 0 {
            self.note_object(partition, handle, None)?;
        }
        Ok(())
    }

    /// Deletes every object of a partition; returns how many.
    pub fn delete_partition_objects(&mut self, partition: u32) -> Result<usize> {
        let n = self.tx.execute(
            "DELETE FROM objects WHERE partition = ?1",
            params![partition],
        )?;
        self.d_objects -= n as i64;
        self.forget_partition_objects(partition)?;
        // The destroyed objects' ids go with them (`Hsm::destroyed_objects`).
        let prefix = format!("{partition:05}/");
        let gone: Vec<String> = {
            let mut st = self.tx.prepare(
                "SELECT id FROM records WHERE kind = 'destroyed' AND substr(id, 1, 6) = ?1",
            )?;
            let r = st.query_map([&prefix], |r| r.get(0))?;
            r.collect::<std::result::Result<_, _>>()?
        };
        for id in gone {
            self.delete("destroyed", &id)?;
        }
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
}

#[cfg(test)]
mod tests {
    use super::super::{open_conn, DB_FILE};
    use super::*;

    /// C_FindObjects by label, id or class must not scan the partition: every lookup the
    /// store runs is a SEARCH through an index on that value, with no sort step.
    #[test]
    fn object_lookups_search_an_index_and_never_scan() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_conn(&dir.path().join(DB_FILE)).unwrap();
        for label in [false, true] {
            for id in [false, true] {
                for class in [false, true] {
                    if !(label || id || class) {
                        continue;
                    }
                    let sql = find_sql(label, id, class);
                    let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                    let plan: Vec<String> = st
                        .query_map(
                            rusqlite::params_from_iter(std::iter::repeat_n(
                                rusqlite::types::Value::Null,
                                1 + label as usize + id as usize + class as usize,
                            )),
                            |r| r.get::<_, String>(3),
                        )
                        .unwrap()
                        .collect::<std::result::Result<_, _>>()
                        .unwrap();
                    let text = plan.join(" | ");
                    assert!(
                        text.starts_with("SEARCH objects USING ")
                            && text.contains("INDEX objects_by_")
                            && !text.contains("SCAN")
                            && !text.contains("TEMP B-TREE"),
                        "{sql}: {text}"
                    );
                }
            }
        }
    }
}
