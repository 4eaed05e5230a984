//! ferrohsm's engine: one HSM's whole state behind [`hsm::Hsm`].
//!
//! - [`pedkey`] and [`ped`]: PED key files and the PED dialogue;
//! - [`shamir`]: M-of-N splitting; [`crypto`]: sealing, KDFs, PIN mixing;
//! - [`store`]: the sealed SQLite store; [`role`], [`policy`]: authentication and rules;
//! - [`object`], [`mechanism`]: keys and what applications do with them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod attr_template;
pub mod audit;
mod audit_writer;
pub mod crypto;
pub mod dir_lock;
pub mod error;
pub mod hsm;
pub mod login_memo;
pub mod mechanism;
pub mod object;
pub mod ped;
pub mod ped_stage;
pub mod pedkey;
pub mod policy;
pub mod private_parts;
pub mod role;
pub mod rsa_pkcs1_decrypt;
pub mod secret;
pub mod shamir;
pub mod store;
pub mod time;
pub mod weak_keys;
pub mod x509;

pub use error::{HsmError, Result};
pub use hsm::{AuthMode, Credential, DomainChoice, Hsm, InitOptions, NewSecret, Session};
pub use role::Role;

/// Where a test may make the process die, as a crash or `kill -9` would, between two steps
/// that must look like one: with `FERROHSM_TEST_CRASH_AT` naming the point, in debug builds
/// only (release builds compile this to nothing).
pub fn crash_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("FERROHSM_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}
