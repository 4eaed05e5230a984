//! GlobalPlatform card keys as an HSM computes them: key check values in the conventions
//! people meet ([`kcv`]), the derivation of one card's keys from a master key set and the
//! card's key diversification data ([`diversify`]), the host side of the SCP02 and SCP03
//! secure channels ([`scp02`], [`scp03`], behind [`channel`]), PUT KEY ([`put_key`]), and a
//! simulated card for tests and the demo ([`card`]).
//!
//! Every function takes key bytes and returns bytes; nothing here stores, logs or prints a
//! key. The engine (`ferrohsm-core`) holds the master keys and calls these inside its
//! boundary. Free of I/O; `unsafe` is forbidden.
#![forbid(unsafe_code)]

pub mod apdu;
pub mod block;
pub mod card;
pub mod channel;
pub mod diversify;
pub mod kcv;
pub mod kdf;
pub mod put_key;
pub mod scp02;
pub mod scp03;

pub use block::{Key, KeyType};

/// What can go wrong in a GlobalPlatform computation or exchange.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpError {
    /// A key of the wrong length or type for what was asked.
    #[error("key: {0}")]
    Key(String),
    /// Input that is malformed: a short response, a bad length, bad padding.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A cryptogram or MAC that does not verify.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A step out of order, or a security level the channel does not offer.
    #[error("state: {0}")]
    State(String),
    /// A status word other than 9000 from the card, with what was asked.
    #[error("the card answered {sw:04X} to {what}")]
    Card {
        /// The status word.
        sw: u16,
        /// The command.
        what: String,
    },
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, GpError>;
