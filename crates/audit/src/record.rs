//! One audit record: what happened, to what, by whom, with what outcome. Never a secret.

use serde::{Deserialize, Serialize};

/// An audit record. Its canonical encoding ([`Record::to_bytes`]) is the Merkle leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Sequence number: 1 for the first record of the log, and the record's leaf index + 1.
    pub seq: u64,
    /// UTC time, RFC 3339.
    pub time: String,
    /// HSM serial.
    pub serial: String,
    /// What happened, e.g. `login`, `partition-create`, `key-use`.
    pub event: String,
    /// Who: `hsm-so`, `so`, `co`, `cu`, `auditor`, `device`, `none`.
    pub role: String,
    /// Partition label, if any.
    pub partition: Option<String>,
    /// Object label or id, if any.
    pub object: Option<String>,
    /// `success…` or `failure: …`.
    pub outcome: String,
}

/// Events that are key ceremonies: policy may require witness cosignatures on them.
pub const CEREMONY_EVENTS: &[&str] = &[
    "hsm-init",
    "partition-create",
    "partition-init",
    "zeroize",
    "tamper",
    "factory-reset",
    "audit-init",
];

impl Record {
    /// Canonical bytes: compact JSON, fields in declaration order, one line.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serializes")
    }

    /// Parses canonical bytes; re-encoding must give the same bytes (no alternative spellings).
    pub fn from_bytes(b: &[u8]) -> Result<Record, String> {
        let r: Record =
            serde_json::from_slice(b).map_err(|e| format!("record does not parse: {e}"))?;
        if r.to_bytes() != b {
            return Err("record is not in canonical form".into());
        }
        Ok(r)
    }

    /// How many key uses a `key-use` record stands for: 1 for a record written per use
    /// (strict auditing), `n` for a record of batched auditing, whose outcome ends
    /// `x<n> until <time>`; `None` for any other record.
    pub fn key_uses(&self) -> Option<u64> {
        if self.event != "key-use" {
            return None;
        }
        let counted = self
            .outcome
            .rsplit_once(" until ")
            .and_then(|(head, _)| head.rsplit_once(" x"))
            .and_then(|(_, n)| n.parse().ok());
        Some(counted.unwrap_or(1))
    }

    /// Whether this record is a key ceremony.
    pub fn is_ceremony(&self) -> bool {
        CEREMONY_EVENTS.contains(&self.event.as_str()) && self.outcome.starts_with("success")
    }

    /// The Merkle leaf hash of this record.
    pub fn leaf_hash(&self) -> crate::Hash {
        tlog_tiles::tlog::record_hash(&self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip_and_rejects_respellings() {
        let r = Record {
            seq: 1,
            time: "2026-11-22T00:00:00Z".into(),
            serial: "FH1".into(),
            event: "login".into(),
            role: "co".into(),
            partition: Some("p".into()),
            object: None,
            outcome: "success".into(),
        };
        let b = r.to_bytes();
        assert_eq!(Record::from_bytes(&b).unwrap(), r);
        let spaced = String::from_utf8(b.clone()).unwrap().replace(",\"", ", \"");
        assert!(Record::from_bytes(spaced.as_bytes()).is_err());
    }

    #[test]
    fn key_uses_counts_strict_and_batched_records() {
        let mut r = Record {
            seq: 1,
            time: "2026-11-22T00:00:00Z".into(),
            serial: "FH1".into(),
            event: "key-use".into(),
            role: "cu".into(),
            partition: Some("p".into()),
            object: Some("signer".into()),
            outcome: "success: sign ed25519".into(),
        };
        assert_eq!(r.key_uses(), Some(1));
        r.outcome = "success: sign ed25519 x1234 until 2026-11-22T00:00:00.100Z".into();
        assert_eq!(r.key_uses(), Some(1234));
        r.event = "login".into();
        assert_eq!(r.key_uses(), None);
    }
}
