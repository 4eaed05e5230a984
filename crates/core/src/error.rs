//! Typed errors of the engine. Each variant maps to one exit code at the CLI and, later, to
//! one `CKR_*` code at the PKCS#11 boundary. No message ever carries a secret or a PIN.

use std::path::PathBuf;

/// Everything the engine can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The caller asked for something malformed (bad M/N, bad PIN format, bad label, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A PED key file is damaged, truncated, of an unknown format or tampered with.
    #[error("PED key file {path}: {reason}")]
    BadPedKey {
        /// The file that was rejected.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Authentication failed: wrong secret, wrong PIN, wrong share set. Counted as a failed
    /// login; `remaining` says how many attempts are left before the consequence.
    #[error("authentication failed for {role}: {reason}{}", remaining_note(*.remaining))]
    AuthFailed {
        /// The role that tried to log in.
        role: String,
        /// Why, without revealing anything secret.
        reason: String,
        /// Attempts left before lockout or zeroize, when known.
        remaining: Option<u32>,
    },

    /// The presented key is of the wrong colour or secret type for this role. Not counted.
    #[error("wrong PED key: {0}")]
    WrongKey(String),

    /// The role is locked out (failed-login limit reached).
    #[error("{0}")]
    Locked(String),

    /// Separation of duties or a policy forbids this action.
    #[error("refused: {0}")]
    Refused(String),

    /// This key may not be used for this (its attributes, or the key-management rules that
    /// keep keys from being learnt through wrapping, forbid it). PKCS#11:
    /// `CKR_KEY_FUNCTION_NOT_PERMITTED`.
    #[error("key use refused: {0}")]
    KeyUse(String),

    /// The device or its store has been tampered with, or is zeroized.
    #[error("tamper: {0}")]
    Tamper(String),

    /// The object, partition or role does not exist, or is not in the state needed.
    #[error("{0}")]
    State(String),

    /// Something named does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// A cryptographic operation failed (bad signature, bad ciphertext, …).
    #[error("crypto: {0}")]
    Crypto(String),

    /// A bounded resource is used up (say, a login's session objects); nothing was changed.
    #[error("resource limit: {0}")]
    Exhausted(String),

    /// The call names a login that does not exist (never made, logged out, or ended by a
    /// closed connection, zeroize or tamper).
    #[error("not logged in: {0}")]
    NotLoggedIn(String),

    /// The data directory is held by another process (a server, or embedded users when a
    /// server wants it); the message names the process.
    #[error("in use: {0}")]
    InUse(String),

    /// The store could not be read or written.
    #[error("store: {0}")]
    Store(String),

    /// A file could not be read or written.
    #[error("I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn remaining_note(remaining: Option<u32>) -> String {
    match remaining {
        Some(0) => String::new(),
        Some(n) => format!(" ({n} attempt(s) left)"),
        None => String::new(),
    }
}

impl HsmError {
    /// Shorthand for an I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HsmError::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a rejected PED key file.
    pub fn bad_key(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        HsmError::BadPedKey {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<rusqlite::Error> for HsmError {
    fn from(e: rusqlite::Error) -> Self {
        HsmError::Store(e.to_string())
    }
}

/// Result with [`HsmError`].
pub type Result<T, E = HsmError> = std::result::Result<T, E>;
