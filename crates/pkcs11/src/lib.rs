//! ferrohsm as a PKCS#11 3.0 module. The C ABI ([`entry`]) is a thin layer: each entry point
//! catches panics and forwards to [`api`], which converts and checks arguments ([`ffi`]),
//! maps attributes ([`attrs`]) and mechanisms ([`mech`]), and calls the engine. No panic
//! crosses the ABI; every entry point returns a `CKR_*` code. No cryptography is done here:
//! `C_Initialize` installs `ferrohsm-crypto`'s providers (raw RSA, HMAC contexts, the map of
//! the store's WAL index that makes the engine's per-operation change check free of system
//! calls) in the engine.
//!
//! Every call goes through the HSM API ([`ferrohsm_core::api::HsmApi`]): to a `ferrohsm
//! server` over its Unix socket (the default; the application then holds no key and opens no
//! file of the HSM), or to the engine in this process (`embedded`, no boundary: tests, demos,
//! single-process tools), which also keeps loaded keys between calls (the fast path).
//!
//! Configuration ([`state::Config::load`]): the file named by `FERROHSM_PKCS11_CONF`
//! (`server = "unix:/run/ferrohsm/ferrohsm.sock"`, or `server = "tls://host:1792"` with
//! `client_cert`, `client_key` and `server_fingerprint`, or `embedded = "/path/to/data"`;
//! `ped_dir`, `log`), else `FERROHSM_SERVER` (a socket), else `FERROHSM_HOME` (embedded), else the
//! default socket `/run/ferrohsm/ferrohsm.sock`. PED key files for NULL-PIN logins come from
//! `FERROHSM_PED_DIR` (default `./ped-keys`); what goes wrong is logged to `log` or
//! `FERROHSM_PKCS11_LOG`, else stderr.

pub mod api;
pub mod attrs;
#[allow(unsafe_op_in_unsafe_fn)]
pub mod entry;
pub mod ffi;
pub mod gp_mech;
pub mod mech;
pub mod state;

use cryptoki_sys::{CKR_GENERAL_ERROR, CK_RV};

/// Runs an entry point's body, turning a panic into `CKR_GENERAL_ERROR` (a panic must never
/// unwind into C).
pub fn guard(f: impl FnOnce() -> CK_RV) -> CK_RV {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(CKR_GENERAL_ERROR)
}
