//! ferrohsm as a PKCS#11 3.0 module. The C ABI ([`entry`]) is a thin layer: each entry point
//! catches panics and forwards to [`api`], which converts and checks arguments ([`ffi`]),
//! maps attributes ([`attrs`]) and mechanisms ([`mech`]), and calls the engine. No panic
//! crosses the ABI; every entry point returns a `CKR_*` code. No cryptography is done here:
//! `C_Initialize` installs `ferrohsm-crypto`'s providers (raw RSA, HMAC contexts) in the
//! engine; [`shared_view`] maps the store's WAL index so that the engine's per-operation
//! change check needs no system call.
//!
//! Configuration: the file named by `FERROHSM_PKCS11_CONF` (lines `data_dir = …` and
//! `ped_dir = …`), else `FERROHSM_HOME` and `FERROHSM_PED_DIR`, else `./ferrohsm-data` and
//! `./ped-keys`.

pub mod api;
pub mod attrs;
#[allow(unsafe_op_in_unsafe_fn)]
pub mod entry;
pub mod ffi;
pub mod mech;
pub mod shared_view;
pub mod state;

use cryptoki_sys::{CKR_GENERAL_ERROR, CK_RV};

/// Runs an entry point's body, turning a panic into `CKR_GENERAL_ERROR` (a panic must never
/// unwind into C).
pub fn guard(f: impl FnOnce() -> CK_RV) -> CK_RV {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(CKR_GENERAL_ERROR)
}
