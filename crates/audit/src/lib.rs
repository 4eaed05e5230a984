//! ferrohsm's audit log, as outsiders see it: the record format, the Merkle tree over
//! records (RFC 6962 hashing via `tlog_tiles`), checkpoints in the C2SP `tlog-checkpoint`
//! form signed as C2SP signed notes (`signed_note`), witness cosignatures, the export format
//! and the offline verifier. Nothing here links the engine: an auditor verifies with the HSM's
//! public key alone.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cosignature;
pub mod export;
pub mod record;
pub mod tool;
pub mod verify;
pub mod witness;

pub use export::Export;
pub use record::Record;
pub use verify::{verify_export, Report, VerifyError, VerifyOptions};

/// Hash of a tree, or of a record, as `tlog_tiles` defines it.
pub use tlog_tiles::tlog::Hash;

/// Errors of this crate other than verification failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Input that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// A key that does not parse or does not fit.
    #[error("key: {0}")]
    Key(String),
    /// File trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Reads a file, naming it in the error.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, AuditError> {
    std::fs::read(path).map_err(|e| AuditError::Io {
        path: path.display().to_string(),
        source: e,
    })
}
