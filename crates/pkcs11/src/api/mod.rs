//! The bodies of the PKCS#11 entry points. Each converts and checks its arguments, calls the
//! engine, and maps the answer to a `CKR_*` code. Raw pointers are read only through
//! [`crate::ffi`]. Split by concept: `tokens`, `sessions`, `objects`, `keygen`, `ops`, `digest`
//! and `wrapping`; the module's life cycle and interfaces are here.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::os::raw::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use cryptoki_sys::*;
use ferrohsm_core::api::LoginCredential;
use ferrohsm_core::hsm::{HsmInfo, PartitionInfo};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, GCM_TAG_LEN};
use ferrohsm_core::object::{
    Content, KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo,
};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, HsmError, Role};

use crate::attrs::{self, Attr};
use crate::entry::{CK_FUNCTION_LIST_3_0_TABLE, CK_FUNCTION_LIST_TABLE};
use crate::ffi::{self, out_bytes, padded, put, Rv};
use crate::mech;
use crate::state::{
    self, rv, with_module, with_module_mut, DigestOp, Front, Login, Module, Op, OpKey, Session,
};

/// The Crypto User's login type (the vendor value PED-authenticated HSMs use).
pub const CKU_CRYPTO_USER: CK_USER_TYPE = 0x8000_0001;

mod digest;
pub(crate) mod gp;
mod keygen;
mod objects;
mod ops;
mod sessions;
mod tokens;
mod wrapping;
pub use digest::*;
pub use keygen::*;
pub use objects::*;
pub use ops::*;
pub use sessions::*;
pub use tokens::*;
pub use wrapping::*;

const LIBRARY_VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

fn done(r: Rv) -> CK_RV {
    match r {
        Ok(()) => CKR_OK,
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- general

pub unsafe fn C_Initialize(args: *mut c_void) -> CK_RV {
    done((|| {
        if !args.is_null() {
            // SAFETY: non-NULL; PKCS#11 says it points to a CK_C_INITIALIZE_ARGS.
            let a = unsafe { &*(args as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(CKR_ARGUMENTS_BAD);
            }
            // Whatever the flags say, the module is thread-safe with its own locks.
        }
        state::watch_forks();
        ferrohsm_crypto::install();
        let mut g = state::MODULE
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = g.take() {
            if m.pid == state::current_pid() {
                *g = Some(m);
                return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
            }
            // A forked child: the parent's connections are not ours to close.
            std::mem::forget(m);
        }
        let config = state::Config::load().map_err(|e| {
            state::log(None, &e);
            CKR_GENERAL_ERROR
        })?;
        *g = Some(Module::new(config));
        Ok(())
    })())
}

pub unsafe fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    if !reserved.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let mut g = state::MODULE
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    state::sessions_changed();
    // Remembered logins (see `login_memo`) end with the application's use of the module.
    ferrohsm_core::login_memo::forget_all();
    match g.take() {
        Some(m) if m.pid == state::current_pid() => {
            drop(m);
            CKR_OK
        }
        Some(m) => {
            std::mem::forget(m);
            CKR_CRYPTOKI_NOT_INITIALIZED
        }
        None => CKR_CRYPTOKI_NOT_INITIALIZED,
    }
}

pub unsafe fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    done(with_module(|_| {
        // SAFETY: put checks for NULL; the caller gives room for a CK_INFO.
        unsafe {
            put(
                info,
                CK_INFO {
                    cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
                    manufacturerID: padded("ferrohsm"),
                    flags: 0,
                    libraryDescription: padded("ferrohsm software HSM"),
                    libraryVersion: LIBRARY_VERSION,
                },
            )
        }
    }))
}

pub unsafe fn C_GetFunctionList(pp: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    // The table is immutable; callers only read through the pointer.
    // SAFETY: put checks for NULL.
    done(unsafe { put(pp, &CK_FUNCTION_LIST_TABLE as *const _ as *mut _) })
}

struct Interface(CK_INTERFACE);
// SAFETY: the pointers inside point to immutable statics and are never written through.
unsafe impl Sync for Interface {}

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";
static INTERFACES: [Interface; 2] = [
    Interface(CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut _,
        pFunctionList: &CK_FUNCTION_LIST_3_0_TABLE as *const _ as *mut _,
        flags: 0,
    }),
    Interface(CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut _,
        pFunctionList: &CK_FUNCTION_LIST_TABLE as *const _ as *mut _,
        flags: 0,
    }),
];

/// The interfaces handed out by `C_GetInterface`: a writable copy, made once and never freed,
/// because some callers write into the interface they are given (OpenSC's pkcs11-spy swaps
/// in its own function list), which a static in read-only memory does not survive.
struct Handed(*mut CK_INTERFACE);
// SAFETY: the pointer is to a leaked allocation that lives for the process; the module never
// writes through it after creating it, and callers' writes are theirs to order.
unsafe impl Send for Handed {}
// SAFETY: as above.
unsafe impl Sync for Handed {}
static HANDED: std::sync::OnceLock<Handed> = std::sync::OnceLock::new();

fn handed(i: usize) -> *mut CK_INTERFACE {
    let base = HANDED
        .get_or_init(|| {
            let copies: Box<[CK_INTERFACE]> =
                INTERFACES.iter().map(|i| CK_INTERFACE { ..i.0 }).collect();
            Handed(Box::leak(copies).as_mut_ptr())
        })
        .0;
    // SAFETY: `i` is 0 or 1, within the two-element allocation above.
    unsafe { base.add(i.min(INTERFACES.len() - 1)) }
}

pub unsafe fn C_GetInterfaceList(list: *mut CK_INTERFACE, count: *mut CK_ULONG) -> CK_RV {
    let list_of: Vec<CK_INTERFACE> = INTERFACES.iter().map(|i| CK_INTERFACE { ..i.0 }).collect();
    // SAFETY: out_array checks for NULL; validity per contract.
    done(unsafe { ffi::out_array(&list_of, list, count) })
}

pub unsafe fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    pp: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    done((|| {
        if pp.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if !name.is_null() {
            // SAFETY: a NUL-terminated name per PKCS#11.
            let n = unsafe { std::ffi::CStr::from_ptr(name as *const std::os::raw::c_char) };
            if n.to_bytes() != b"PKCS 11" {
                return Err(CKR_ARGUMENTS_BAD);
            }
        }
        let want = if version.is_null() {
            None
        } else {
            // SAFETY: non-NULL per check.
            Some(unsafe { *version })
        };
        if flags != 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let itf = match want {
            None | Some(CK_VERSION { major: 3, minor: 0 }) => handed(0),
            Some(CK_VERSION { major: 2, .. }) => handed(1),
            Some(_) => return Err(CKR_ARGUMENTS_BAD),
        };
        // SAFETY: non-NULL per check.
        unsafe { *pp = itf };
        Ok(())
    })())
}

pub unsafe fn C_GetFunctionStatus(_h: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

pub unsafe fn C_CancelFunction(_h: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

/// A key template before the caller's attributes are read: the standard's defaults where
/// they differ from the engine's. `CKA_TOKEN` is false unless asked for, so a key made without
/// it is a session object (gone with its session), as PKCS#11 says and as clients expect.
pub(super) fn new_key_template() -> KeyTemplate {
    KeyTemplate {
        session_private: true,
        session_public: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrohsm_core::hsm::InitOptions;
    use ferrohsm_core::secret::Pin;
    use ferrohsm_core::{AuthMode, Hsm, NewSecret};

    /// A thread's memo of its last session must never answer for a closed session, nor for
    /// one of a finalized module; a session closed during its own login leaves no login.
    #[test]
    fn closed_sessions_are_refused_and_leave_no_login_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut hsm = Hsm::open_or_create(&data).unwrap();
        hsm.init(InitOptions {
            label: "memo".into(),
            mode: AuthMode::Password,
            so: NewSecret::Password(Pin::password("hsm-so-pw").unwrap()),
            domain: NewSecret::Password(Pin::password("domain-pw").unwrap()),
            current_so: None,
            confirm_destroy: vec![],
        })
        .unwrap();
        let so = hsm
            .login(
                ferrohsm_core::Role::HsmSo,
                None,
                ferrohsm_core::Credential::Secret(Pin::password("hsm-so-pw").unwrap()),
            )
            .unwrap();
        hsm.set_hsm_policy(&so, "init-token", "on").unwrap();
        drop(hsm);
        std::env::set_var("FERROHSM_HOME", &data);
        std::env::remove_var("FERROHSM_PKCS11_CONF");
        // SAFETY (whole test): every pointer passed is to a live local of the right type and
        // length, as the PKCS#11 contract asks of callers.
        unsafe {
            assert_eq!(C_Initialize(std::ptr::null_mut()), CKR_OK);
            let mut slots = [0 as CK_SLOT_ID; 4];
            let mut n = slots.len() as CK_ULONG;
            assert_eq!(C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n), CKR_OK);
            let slot = slots[0];
            let mut pin = *b"so-pin-1";
            let mut label = [b' '; 32];
            label[..3].copy_from_slice(b"tok");
            assert_eq!(
                C_InitToken(slot, pin.as_mut_ptr(), 8, label.as_mut_ptr()),
                CKR_OK
            );
            let open = || {
                let mut h: CK_SESSION_HANDLE = 0;
                let rv =
                    C_OpenSession(slot, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut h);
                assert_eq!(rv, CKR_OK);
                h
            };
            let mut mech = CK_MECHANISM {
                mechanism: CKM_ECDSA,
                pParameter: std::ptr::null_mut(),
                ulParameterLen: 0,
            };
            // Found (then refused for want of a login): the session is this thread's memo now.
            let h = open();
            assert_eq!(C_SignInit(h, &mut mech, 1), CKR_USER_NOT_LOGGED_IN);
            assert_eq!(C_CloseSession(h), CKR_OK);
            assert_eq!(C_SignInit(h, &mut mech, 1), CKR_SESSION_HANDLE_INVALID);
            // The same while another thread's operation still holds the closed session.
            let h = open();
            assert_eq!(C_SignInit(h, &mut mech, 1), CKR_USER_NOT_LOGGED_IN);
            let in_flight = state::session_only(h).unwrap();
            assert_eq!(C_CloseSession(h), CKR_OK);
            assert_eq!(C_SignInit(h, &mut mech, 1), CKR_SESSION_HANDLE_INVALID);
            drop(in_flight);
            // Across finalize and initialize, handles start again: the old memo must not
            // answer for the new module.
            let h = open();
            assert_eq!(C_SignInit(h, &mut mech, 1), CKR_USER_NOT_LOGGED_IN);
            assert_eq!(C_Finalize(std::ptr::null_mut()), CKR_OK);
            assert_eq!(C_SignInit(h, &mut mech, 1), CKR_CRYPTOKI_NOT_INITIALIZED);
            assert_eq!(C_Initialize(std::ptr::null_mut()), CKR_OK);
            assert_eq!(C_SignInit(h, &mut mech, 1), CKR_SESSION_HANDLE_INVALID);

            // A login checks its PIN without holding its session, so the session can be
            // closed meanwhile. Whatever the interleaving, no login may outlive the token's
            // last session.
            let rw = || {
                let mut h: CK_SESSION_HANDLE = 0;
                let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
                let rv = C_OpenSession(slot, flags, std::ptr::null_mut(), None, &mut h);
                assert_eq!(rv, CKR_OK);
                h
            };
            for _ in 0..3 {
                let h = rw();
                let login = std::thread::spawn(move || {
                    let mut pin = *b"so-pin-1";
                    C_Login(h, CKU_SO, pin.as_mut_ptr(), 8)
                });
                // Most likely while the PIN is being derived (which takes milliseconds); the
                // assertions below hold for any interleaving.
                std::thread::sleep(std::time::Duration::from_millis(5));
                assert_eq!(C_CloseSession(h), CKR_OK);
                let rv = login.join().unwrap();
                assert!(rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID, "{rv:#x}");
                let h2 = rw();
                let mut info: CK_SESSION_INFO = std::mem::zeroed();
                assert_eq!(C_GetSessionInfo(h2, &mut info), CKR_OK);
                assert_eq!(info.state, CKS_RW_PUBLIC_SESSION, "nobody is logged in");
                assert_eq!(C_CloseSession(h2), CKR_OK);
            }
            // Absurd lengths and counts from the caller are refused before they are trusted
            // (each buffer here is far smaller than its claimed length: trusting one would
            // read or write past it).
            let h = open();
            let mut small = [0u8; 4];
            assert_eq!(
                C_GenerateRandom(h, small.as_mut_ptr(), CK_ULONG::MAX),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(small, [0; 4], "nothing was written");
            let mut attr = CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: small.as_mut_ptr() as *mut _,
                ulValueLen: 4,
            };
            assert_eq!(C_FindObjectsInit(h, &mut attr, 1 << 40), CKR_ARGUMENTS_BAD);
            attr.ulValueLen = CK_ULONG::MAX / 2;
            assert_eq!(C_FindObjectsInit(h, &mut attr, 1), CKR_ARGUMENTS_BAD);
            assert_eq!(
                C_DigestInit(
                    h,
                    &mut CK_MECHANISM {
                        mechanism: CKM_SHA256,
                        pParameter: std::ptr::null_mut(),
                        ulParameterLen: 0,
                    }
                ),
                CKR_OK
            );
            let (mut out, mut out_len) = ([0u8; 32], 32 as CK_ULONG);
            assert_eq!(
                C_Digest(
                    h,
                    small.as_mut_ptr(),
                    CK_ULONG::MAX,
                    out.as_mut_ptr(),
                    &mut out_len
                ),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(C_CloseSession(h), CKR_OK);
            // A panic while the module's lock is held (a bug; caught at the boundary and
            // answered CKR_GENERAL_ERROR) must not leave every later call answering
            // CKR_GENERAL_ERROR: the lock is poisoned, the next calls go on regardless.
            let held = std::thread::spawn(|| {
                let _w = state::MODULE
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                panic!("a bug while holding the module lock");
            })
            .join();
            assert!(held.is_err() && state::MODULE.is_poisoned());
            let h = open();
            let mut info: CK_SESSION_INFO = std::mem::zeroed();
            assert_eq!(C_GetSessionInfo(h, &mut info), CKR_OK);
            assert_eq!(C_CloseSession(h), CKR_OK);
            assert_eq!(C_Finalize(std::ptr::null_mut()), CKR_OK);
            assert_eq!(C_Initialize(std::ptr::null_mut()), CKR_OK);
            assert_eq!(C_Finalize(std::ptr::null_mut()), CKR_OK);
        }
    }
}
