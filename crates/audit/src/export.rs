//! The export format: a range of records with inclusion proofs against one signed checkpoint,
//! plus earlier checkpoints with proofs that the latest one extends them. Versioned JSON, so
//! it outlives releases and can be read by any tool.

use serde::{Deserialize, Serialize};

use crate::AuditError;

/// Identifies the format.
pub const FORMAT: &str = "ferrohsm-audit-export";
/// The version this release writes and reads.
pub const VERSION: u32 = 1;

/// An exported range of the audit log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// Must be [`FORMAT`].
    pub format: String,
    /// Must be [`VERSION`].
    pub version: u32,
    /// The log's origin line (names the HSM).
    pub origin: String,
    /// The HSM's audit verifier key, in signed-note form (`name+id+base64`). A careful
    /// verifier pins the key it obtained out of band instead of trusting this field.
    pub public_key: String,
    /// The first record's sequence number: the export holds records `first..=size` of the
    /// checkpoint. (0 in exports made before it was written: read from the records.)
    #[serde(default)]
    pub first: u64,
    /// The latest checkpoint as a signed note (HSM signature and any witness cosignatures).
    pub checkpoint: String,
    /// Consecutive records, each with its inclusion proof in the checkpoint's tree, up to the
    /// checkpoint's size.
    pub records: Vec<ExportedRecord>,
    /// Earlier checkpoints with consistency proofs to the latest one.
    pub earlier: Vec<EarlierCheckpoint>,
}

/// One record and its proof.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRecord {
    /// The record's canonical JSON (exactly the Merkle leaf's bytes).
    pub record: String,
    /// Inclusion proof: base64 hashes, leaf to root.
    pub proof: Vec<String>,
}

/// An earlier checkpoint and the proof that the latest tree extends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlierCheckpoint {
    /// The signed note.
    pub checkpoint: String,
    /// Consistency proof: base64 hashes.
    pub consistency: Vec<String>,
}

impl Export {
    /// Parses an export file's bytes. JSON with a key twice in one object is refused: a
    /// reader that keeps the first copy and one that keeps the last would see two logs.
    pub fn from_bytes(b: &[u8]) -> Result<Export, AuditError> {
        no_duplicate_keys(b).map_err(|e| {
            AuditError::Malformed(if e.contains("appears twice") {
                format!("not an audit export (ambiguous JSON: {e})")
            } else {
                format!("not an audit export (damaged or truncated JSON: {e})")
            })
        })?;
        let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| {
            AuditError::Malformed(format!(
                "not an audit export (damaged or truncated JSON: {e})"
            ))
        })?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(AuditError::Malformed(format!(
                "not an audit export (format is not \"{FORMAT}\")"
            )));
        }
        if v.get("version").and_then(|f| f.as_u64()) != Some(VERSION as u64) {
            return Err(AuditError::Malformed(format!(
                "audit export version is not {VERSION}"
            )));
        }
        serde_json::from_value(v)
            .map_err(|e| AuditError::Malformed(format!("malformed audit export: {e}")))
    }

    /// Serializes (pretty JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("an export always serializes");
        v.push(b'\n');
        v
    }
}

/// Walks JSON, refusing an object with a key twice (serde_json itself keeps the last).
fn no_duplicate_keys(b: &[u8]) -> Result<(), String> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

    struct Check;

    impl<'de> DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(Check)
        }
    }

    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(A::Error::custom(format!(
                        "the key {k:?} appears twice in one object"
                    )));
                }
                m.next_value_seed(Check)?;
            }
            Ok(())
        }
    }

    let mut de = serde_json::Deserializer::from_slice(b);
    Check.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// Encodes a hash for the export.
pub fn hash_to_string(h: &crate::Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h.0)
}

/// Decodes a hash from the export.
pub fn hash_from_str(s: &str) -> Option<crate::Hash> {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Some(crate::Hash(b.try_into().ok()?))
}
