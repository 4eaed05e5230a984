//! The bodies of the PKCS#11 entry points. Each converts and checks its arguments, calls the
//! engine, and maps the answer to a `CKR_*` code. Raw pointers are read only through
//! [`crate::ffi`].
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::os::raw::c_void;
use std::sync::{Arc, Mutex};

use cryptoki_sys::*;
use ferrohsm_core::hsm::{HsmInfo, PartitionInfo};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, GCM_TAG_LEN};
use ferrohsm_core::object::{
    Content, KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo,
};
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, Credential, HsmError, NewSecret, Role};

use crate::attrs::{self, Attr};
use crate::entry::{CK_FUNCTION_LIST_3_0_TABLE, CK_FUNCTION_LIST_TABLE};
use crate::ffi::{self, out_bytes, padded, put, Rv};
use crate::mech;
use crate::state::{
    self, open_hsm, rv, with_module, with_module_mut, DigestOp, Login, Module, Op, Session,
};

/// The Crypto User's login type (the vendor value PED-authenticated HSMs use).
pub const CKU_CRYPTO_USER: CK_USER_TYPE = 0x8000_0001;

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
        ferrohsm_core::mechanism::install_raw_rsa(&crate::raw_rsa::AwsLcRawRsa);
        ferrohsm_core::store::install_shared_view(crate::shared_view::map);
        ferrohsm_core::mechanism::install_mac_provider(&crate::hmac_ctx::AwsLcMac);
        let mut g = state::MODULE.write().map_err(|_| CKR_GENERAL_ERROR)?;
        if let Some(m) = g.take() {
            if m.pid == state::current_pid() {
                *g = Some(m);
                return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
            }
            // A forked child: the parent's connections are not ours to close.
            std::mem::forget(m);
        }
        *g = Some(Module {
            pid: state::current_pid(),
            config: state::Config::load(),
            sessions: Default::default(),
            logins: Default::default(),
            next_handle: 1,
            control: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            tokens: Mutex::new(None),
        });
        Ok(())
    })())
}

pub unsafe fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    if !reserved.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let Ok(mut g) = state::MODULE.write() else {
        return CKR_GENERAL_ERROR;
    };
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

// ---------------------------------------------------------------- slots and tokens

/// A slot as the module shows it.
struct Slot {
    id: CK_SLOT_ID,
    partition: Option<PartitionInfo>,
    mode: AuthMode,
    serial: String,
}

fn hsm_info(m: &Module) -> Rv<Option<HsmInfo>> {
    let mut control = m.control.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    // The cached handle may be stale (another process re-initialised or zeroized the HSM):
    // on failure, try once more with a fresh one.
    for attempt in 0..2 {
        if control.is_none() {
            match open_hsm(&m.config) {
                Ok(h) => *control = Some(h),
                // No HSM at the configured place: no slots, not an error.
                Err(CKR_DEVICE_ERROR) if !m.config.data_dir.join("hsm.db").exists() => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
        let h = control.as_mut().ok_or(CKR_GENERAL_ERROR)?;
        match h.info() {
            Ok(i) => return Ok(Some(i)),
            Err(e) => {
                *control = None;
                if attempt == 1 {
                    return Err(rv(&e));
                }
            }
        }
    }
    Err(CKR_GENERAL_ERROR)
}

fn slots(m: &Module) -> Rv<Vec<Slot>> {
    let Some(info) = hsm_info(m)? else {
        return Ok(vec![]);
    };
    let Some(mode) = info.auth_mode else {
        return Ok(vec![]);
    };
    let mut out: Vec<Slot> = info
        .partitions
        .iter()
        .map(|p| Slot {
            id: p.id as CK_SLOT_ID,
            partition: Some(p.clone()),
            mode,
            serial: info.serial.clone(),
        })
        .collect();
    if mode == AuthMode::Password && info.policy.get("init-token").is_some_and(|v| v == "on") {
        // While the HSM SO allows C_InitToken: always one uninitialised token, as SoftHSMv2 shows; C_InitToken makes it a partition
        // with this same id, so the slot id never changes.
        out.push(Slot {
            id: info.next_partition_id as CK_SLOT_ID,
            partition: None,
            mode,
            serial: info.serial.clone(),
        });
    }
    Ok(out)
}

/// The label of the token in slot `id` and whether it is initialised, from a copy kept
/// until the store's state changes (so that opening a session reads nothing while nothing
/// changed).
fn token_brief(m: &Module, id: CK_SLOT_ID) -> Rv<(String, bool)> {
    let generation = {
        let mut control = m.control.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        control.as_mut().and_then(|h| h.state_generation().ok())
    };
    if let Some(g) = generation {
        let tokens = m.tokens.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        if let Some((seen, map)) = tokens.as_ref() {
            if *seen == g {
                return map.get(&id).cloned().ok_or(CKR_SLOT_ID_INVALID);
            }
        }
    }
    let all = slots(m)?;
    let map: state::TokenBriefs = all
        .into_iter()
        .map(|s| {
            let brief = s
                .partition
                .map(|p| (p.label, p.initialised))
                .unwrap_or_default();
            (s.id, brief)
        })
        .collect();
    let found = map.get(&id).cloned().ok_or(CKR_SLOT_ID_INVALID);
    // Keyed by the generation read before the slots were: a change in between only makes
    // the next call read them again.
    if let Some(g) = generation {
        *m.tokens.lock().map_err(|_| CKR_GENERAL_ERROR)? = Some((g, map));
    }
    found
}

fn slot(m: &Module, id: CK_SLOT_ID) -> Rv<Slot> {
    slots(m)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(CKR_SLOT_ID_INVALID)
}

pub unsafe fn C_GetSlotList(
    _present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    done(with_module(|m| {
        let ids: Vec<CK_SLOT_ID> = slots(m)?.iter().map(|s| s.id).collect();
        // SAFETY: out_array checks for NULL; validity per contract.
        unsafe { ffi::out_array(&ids, list, count) }
    }))
}

pub unsafe fn C_GetSlotInfo(id: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    done(with_module(|m| {
        let s = slot(m, id)?;
        let desc = match &s.partition {
            Some(p) => format!("ferrohsm {} partition {}", s.serial, p.label),
            None => format!("ferrohsm {} (new token)", s.serial),
        };
        // SAFETY: put checks for NULL.
        unsafe {
            put(
                info,
                CK_SLOT_INFO {
                    slotDescription: padded(&desc),
                    manufacturerID: padded("ferrohsm"),
                    flags: CKF_TOKEN_PRESENT,
                    hardwareVersion: LIBRARY_VERSION,
                    firmwareVersion: LIBRARY_VERSION,
                },
            )
        }
    }))
}

fn utc_time() -> [u8; 16] {
    // YYYYMMDDhhmmss00
    let t = ferrohsm_core::time::now_rfc3339();
    let digits: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    padded::<16>(&format!("{digits}00"))
}

pub unsafe fn C_GetTokenInfo(id: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    done(with_module(|m| {
        let s = slot(m, id)?;
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_CLOCK_ON_TOKEN;
        if s.mode == AuthMode::Ped {
            flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
        }
        let label = s
            .partition
            .as_ref()
            .map(|p| p.label.clone())
            .unwrap_or_default();
        if let Some(p) = &s.partition {
            if p.initialised {
                flags |= CKF_TOKEN_INITIALIZED;
            }
            if let Some(co) = p.roles.iter().find(|r| r.role == "co") {
                flags |= CKF_USER_PIN_INITIALIZED;
                if co.locked {
                    flags |= CKF_USER_PIN_LOCKED;
                } else if co.failed_logins > 0 {
                    flags |= CKF_USER_PIN_COUNT_LOW;
                }
            }
            if let Some(so) = p.roles.iter().find(|r| r.role == "so") {
                if so.failed_logins > 0 {
                    flags |= CKF_SO_PIN_COUNT_LOW;
                }
            }
        }
        let (sessions, rw) = m
            .sessions
            .values()
            .filter_map(|x| x.lock().ok().map(|x| (x.slot, x.flags)))
            .filter(|(sl, _)| *sl == id)
            .fold((0, 0), |(a, b), (_, f)| {
                (a + 1, b + ((f & CKF_RW_SESSION) != 0) as CK_ULONG)
            });
        // SAFETY: put checks for NULL.
        unsafe {
            put(
                info,
                CK_TOKEN_INFO {
                    label: padded(&label),
                    manufacturerID: padded("ferrohsm"),
                    model: padded("ferrohsm"),
                    serialNumber: padded(&format!("{}{:04}", &s.serial[2..], id % 10_000)),
                    flags,
                    ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
                    ulSessionCount: sessions,
                    ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
                    ulRwSessionCount: rw,
                    ulMaxPinLen: 255,
                    ulMinPinLen: 4,
                    ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
                    ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
                    ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
                    ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
                    hardwareVersion: LIBRARY_VERSION,
                    firmwareVersion: LIBRARY_VERSION,
                    utcTime: utc_time(),
                },
            )
        }
    }))
}

pub unsafe fn C_GetMechanismList(
    id: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    done(with_module(|m| {
        slot(m, id)?;
        let types: Vec<CK_MECHANISM_TYPE> = mech::MECHANISMS.iter().map(|(t, ..)| *t).collect();
        // SAFETY: out_array checks for NULL; validity per contract.
        unsafe { ffi::out_array(&types, list, count) }
    }))
}

pub unsafe fn C_GetMechanismInfo(
    id: CK_SLOT_ID,
    t: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    done(with_module(|m| {
        slot(m, id)?;
        let (_, min, max, flags) = mech::MECHANISMS
            .iter()
            .find(|(x, ..)| *x == t)
            .ok_or(CKR_MECHANISM_INVALID)?;
        // SAFETY: put checks for NULL.
        unsafe {
            put(
                info,
                CK_MECHANISM_INFO {
                    ulMinKeySize: *min,
                    ulMaxKeySize: *max,
                    flags: *flags,
                },
            )
        }
    }))
}

unsafe fn pin_arg(p: *const CK_UTF8CHAR, len: CK_ULONG) -> Rv<Option<Pin>> {
    if p.is_null() {
        return if len == 0 {
            Ok(None)
        } else {
            Err(CKR_ARGUMENTS_BAD)
        };
    }
    // SAFETY: valid for len bytes per contract.
    let b = unsafe { ffi::slice(p, len)? };
    let s = std::str::from_utf8(b).map_err(|_| CKR_PIN_INVALID)?;
    Pin::password(s).map(Some).map_err(|_| CKR_PIN_LEN_RANGE)
}

pub unsafe fn C_InitToken(
    id: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    done(with_module(|m| {
        if m.sessions
            .values()
            .any(|s| s.lock().map(|s| s.slot == id).unwrap_or(true))
        {
            return Err(CKR_SESSION_EXISTS);
        }
        let s = slot(m, id)?;
        if s.mode != AuthMode::Password {
            // PED-authenticated: partitions are made with PED keys by the HSM SO (the CLI).
            return Err(CKR_FUNCTION_NOT_SUPPORTED);
        }
        // SAFETY: pin_arg checks for NULL and reads `len` bytes.
        let so_pin = unsafe { pin_arg(pin, len)? }.ok_or(CKR_PIN_INCORRECT)?;
        // SAFETY: PKCS#11 fixes the label at 32 bytes; NULL is refused by slice.
        let label_bytes = unsafe { ffi::slice(label, 32)? };
        let label = std::str::from_utf8(label_bytes)
            .map_err(|_| CKR_ARGUMENTS_BAD)?
            .trim_end_matches([' ', '\0'])
            .to_string();
        let mut hsm = open_hsm(&m.config)?;
        match s.partition {
            None => {
                if label.is_empty() {
                    return Err(CKR_ARGUMENTS_BAD);
                }
                hsm.init_token(&label, so_pin).map_err(|e| rv(&e))?;
            }
            Some(p) => {
                // Re-initialisation: the SO PIN must be the current one; every key is destroyed.
                hsm.init_partition(
                    &p.label,
                    NewSecret::Password(so_pin.clone()),
                    ferrohsm_core::DomainChoice::Hsm,
                    Some(Credential::Secret(so_pin)),
                )
                .map_err(|e| rv(&e))?;
            }
        }
        Ok(())
    }))
}

fn role_of(user: CK_USER_TYPE) -> Rv<Role> {
    match user {
        CKU_SO => Ok(Role::PartitionSo),
        CKU_USER => Ok(Role::CryptoOfficer),
        CKU_CRYPTO_USER => Ok(Role::CryptoUser),
        _ => Err(CKR_USER_TYPE_INVALID),
    }
}

pub unsafe fn C_InitPIN(h: CK_SESSION_HANDLE, pin: *mut CK_UTF8CHAR, len: CK_ULONG) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let login = login.ok_or(CKR_USER_NOT_LOGGED_IN)?;
        if login.user != CKU_SO {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        if s.flags & CKF_RW_SESSION == 0 {
            return Err(CKR_SESSION_READ_ONLY);
        }
        let label = s.label.clone();
        let info = s.hsm.info().map_err(|e| rv(&e))?;
        let p = info
            .partitions
            .iter()
            .find(|p| p.label == label)
            .ok_or(CKR_DEVICE_ERROR)?;
        if info.auth_mode != Some(AuthMode::Password) {
            return Err(CKR_FUNCTION_NOT_SUPPORTED);
        }
        if p.roles.iter().any(|r| r.role == "co") {
            // Resetting the Crypto Officer would need the partition key, which the SO never
            // holds; a new Crypto Officer means new keys (`ferrohsm role init --confirm-destroy`).
            return Err(CKR_ACTION_PROHIBITED);
        }
        // SAFETY: pin_arg checks for NULL and reads `len` bytes.
        let pin = unsafe { pin_arg(pin, len)? }.ok_or(CKR_PIN_INVALID)?;
        s.hsm
            .init_role(
                &login.engine,
                Role::CryptoOfficer,
                NewSecret::Password(pin),
                false,
            )
            .map_err(|e| rv(&e))?;
        Ok(())
    })())
}

pub unsafe fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        if s.flags & CKF_RW_SESSION == 0 {
            return Err(CKR_SESSION_READ_ONLY);
        }
        // SAFETY: pin_arg checks for NULL and reads the given lengths.
        let (old, new) = unsafe {
            (
                pin_arg(old, old_len)?.ok_or(CKR_PIN_INVALID)?,
                pin_arg(new, new_len)?.ok_or(CKR_PIN_INVALID)?,
            )
        };
        let role = match &login {
            Some(l) => role_of(l.user)?,
            None => Role::CryptoOfficer,
        };
        let label = s.label.clone();
        // The old PIN is checked (and counted) like any login.
        let es = s
            .hsm
            .login(role, Some(&label), Credential::Secret(old))
            .map_err(|e| rv(&e))?;
        s.hsm
            .change_secret(&es, NewSecret::Password(new))
            .map_err(|e| rv(&e))?;
        Ok(())
    })())
}

// ---------------------------------------------------------------- sessions

pub unsafe fn C_OpenSession(
    id: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut c_void,
    _notify: CK_NOTIFY,
    ph: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    done((|| {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        if ph.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (config, label, pooled) = with_module(|m| {
            let (label, initialised) = token_brief(m, id)?;
            if !initialised {
                return Err(CKR_TOKEN_NOT_RECOGNIZED);
            }
            if flags & CKF_RW_SESSION == 0 && m.logins.get(&id).is_some_and(|l| l.user == CKU_SO) {
                return Err(CKR_SESSION_READ_WRITE_SO_EXISTS);
            }
            let (pooled, config) = state::pooled_hsm(m)?;
            Ok((config, label, pooled))
        })?;
        // Each session has its own handle on the store, so sessions run in parallel.
        let hsm = match pooled {
            Some(h) => h,
            None => open_hsm(&config)?,
        };
        let handle = with_module_mut(|m| {
            let h = m.next_handle;
            m.next_handle += 1;
            let session = Session {
                slot: id,
                label,
                flags,
                hsm,
                find: None,
                sign: None,
                verify: None,
                encrypt: None,
                decrypt: None,
                digest: None,
                // The token's login as it is now (C_Login and C_Logout keep it current).
                login: m.logins.get(&id).cloned(),
                key_memo: Default::default(),
                mac: Default::default(),
            };
            m.sessions.insert(h, Arc::new(Mutex::new(session)));
            Ok(h)
        })?;
        // SAFETY: non-NULL per check.
        unsafe { *ph = handle };
        Ok(())
    })())
}

fn close(m: &mut Module, h: CK_SESSION_HANDLE) -> Rv {
    let s = m.sessions.remove(&h).ok_or(CKR_SESSION_HANDLE_INVALID)?;
    state::sessions_changed();
    let slot = s.lock().map_err(|_| CKR_GENERAL_ERROR)?.slot;
    // Its session objects go with it.
    if let Some(l) = m.logins.get(&slot) {
        l.engine.drop_session_objects(h);
    }
    // Keep its engine handle for the next session, unless another thread still holds the
    // session (it is then dropped with the last reference).
    if let Ok(session) = Arc::try_unwrap(s) {
        let session = session.into_inner().map_err(|_| CKR_GENERAL_ERROR)?;
        state::pool_hsm(m, session.hsm)?;
    }
    // The last session of a token logs its user out.
    let others = m
        .sessions
        .values()
        .any(|x| x.lock().map(|x| x.slot == slot).unwrap_or(false));
    if !others && m.logins.remove(&slot).is_some() {
        ferrohsm_core::login_memo::purge_expired();
    }
    Ok(())
}

pub unsafe fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    done(with_module_mut(|m| close(m, h)))
}

pub unsafe fn C_CloseAllSessions(id: CK_SLOT_ID) -> CK_RV {
    done(with_module_mut(|m| {
        let hs: Vec<CK_SESSION_HANDLE> = m
            .sessions
            .iter()
            .filter(|(_, s)| s.lock().map(|s| s.slot == id).unwrap_or(false))
            .map(|(h, _)| *h)
            .collect();
        for h in hs {
            close(m, h)?;
        }
        m.logins.remove(&id);
        Ok(())
    }))
}

pub unsafe fn C_GetSessionInfo(h: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        let rw = s.flags & CKF_RW_SESSION != 0;
        let st = match (login.map(|l| l.user), rw) {
            (Some(CKU_SO), _) => CKS_RW_SO_FUNCTIONS,
            (Some(_), true) => CKS_RW_USER_FUNCTIONS,
            (Some(_), false) => CKS_RO_USER_FUNCTIONS,
            (None, true) => CKS_RW_PUBLIC_SESSION,
            (None, false) => CKS_RO_PUBLIC_SESSION,
        };
        // SAFETY: put checks for NULL.
        unsafe {
            put(
                info,
                CK_SESSION_INFO {
                    slotID: s.slot,
                    state: st,
                    flags: s.flags,
                    ulDeviceError: 0,
                },
            )
        }
    })())
}

pub unsafe fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    done((|| {
        let role = role_of(user)?;
        let (s, login) = state::session(h)?;
        if let Some(l) = login {
            return Err(if l.user == user {
                CKR_USER_ALREADY_LOGGED_IN
            } else {
                CKR_USER_ANOTHER_ALREADY_LOGGED_IN
            });
        }
        // The module lock first, never while a session is locked (see `state::MODULE`).
        let (ped_dir, (pooled, config)) =
            with_module(|m| Ok((m.config.ped_dir.clone(), state::pooled_hsm(m)?)))?;
        let (slot, label) = {
            let s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
            (s.slot, s.label.clone())
        };
        if user == CKU_SO {
            let ro = with_module(|m| {
                Ok(m.sessions.values().any(|x| {
                    x.lock()
                        .map(|x| x.slot == slot && x.flags & CKF_RW_SESSION == 0)
                        .unwrap_or(false)
                }))
            })?;
            if ro {
                return Err(CKR_SESSION_READ_ONLY_EXISTS);
            }
        }
        // SAFETY: pin_arg checks for NULL and reads `len` bytes.
        let pin = unsafe { pin_arg(pin, len) }.map_err(|e| {
            if e == CKR_PIN_LEN_RANGE {
                CKR_PIN_INCORRECT
            } else {
                e
            }
        })?;
        // The PIN derivation runs on an engine handle of its own, holding no lock: the
        // session stays free for the module's visits (other logins, logouts, closes).
        let mut hsm = match pooled {
            Some(h) => h,
            None => state::open_hsm(&config)?,
        };
        let engine = (|| {
            let mode = hsm
                .auth_mode()
                .map_err(|e| rv(&e))?
                .ok_or(CKR_DEVICE_ERROR)?;
            let result = match (mode, pin, role) {
                (AuthMode::Password, Some(p), _) => {
                    hsm.login(role, Some(&label), Credential::Secret(p))
                }
                (AuthMode::Password, None, _) => return Err(CKR_ARGUMENTS_BAD),
                // An activated Crypto Officer or User: the challenge secret as PIN.
                (AuthMode::Ped, Some(p), Role::CryptoOfficer | Role::CryptoUser) => {
                    hsm.login(role, Some(&label), Credential::Secret(p))
                }
                // Otherwise the PED: the role's key files in the configured PED directory.
                (AuthMode::Ped, _, _) => {
                    let prefix = ferrohsm_core::ped::default_key_prefix(
                        hsm.serial(),
                        Some(&label),
                        role.short(),
                    );
                    let keys = ferrohsm_core::ped::default_keys(&ped_dir, &prefix);
                    let pin = std::env::var("FERROHSM_PED_PIN")
                        .ok()
                        .and_then(|p| Pin::ped_pin(&p).ok());
                    let mut ped = LocalPed::new(PedAnswers {
                        keys,
                        pin,
                        ..Default::default()
                    });
                    hsm.login(role, Some(&label), Credential::Ped(&mut ped))
                }
            };
            result.map_err(|e| match e {
                HsmError::State(_) if role == Role::CryptoOfficer => CKR_USER_PIN_NOT_INITIALIZED,
                HsmError::Refused(_) | HsmError::InvalidInput(_) => CKR_PIN_INCORRECT,
                e => rv(&e),
            })
        })();
        with_module(|m| state::pool_hsm(m, hsm))?;
        let engine = engine?;
        with_module_mut(|m| {
            // The session may have been closed while the PIN was checked (it is not locked
            // meanwhile): a login with no session would outlive the rule that the last
            // session's close logs out.
            if !m.sessions.contains_key(&h) {
                return Err(CKR_SESSION_HANDLE_INVALID);
            }
            // Another thread's login may have landed while this one checked its PIN.
            if let Some(l) = m.logins.get(&slot) {
                return Err(if l.user == user {
                    CKR_USER_ALREADY_LOGGED_IN
                } else {
                    CKR_USER_ANOTHER_ALREADY_LOGGED_IN
                });
            }
            let login = Arc::new(Login { user, engine });
            state::share_login(m, slot, Some(&login))?;
            m.logins.insert(slot, login);
            Ok(())
        })
    })())
}

pub unsafe fn C_LoginUser(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
    _name: *mut CK_UTF8CHAR,
    _name_len: CK_ULONG,
) -> CK_RV {
    // Users are told apart by type, not name.
    // SAFETY: forwarded unchanged.
    unsafe { C_Login(h, user, pin, len) }
}

pub unsafe fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let slot = s.lock().map_err(|_| CKR_GENERAL_ERROR)?.slot;
        with_module_mut(|m| {
            let login = m.logins.remove(&slot).ok_or(CKR_USER_NOT_LOGGED_IN)?;
            // Operations in progress hold their keys: end them, so that the login's keys
            // (and its key cache, dropped with `login`) leave memory now.
            for x in m.sessions.values() {
                let mut x = x.lock().map_err(|_| CKR_GENERAL_ERROR)?;
                if x.slot == slot {
                    x.end_key_operations();
                    x.login = None;
                }
            }
            drop(login);
            ferrohsm_core::login_memo::purge_expired();
            Ok(())
        })
    })())
}

pub unsafe fn C_SessionCancel(h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        if flags & CKF_SIGN != 0 {
            s.sign = None;
        }
        if flags & CKF_VERIFY != 0 {
            s.verify = None;
        }
        if flags & CKF_ENCRYPT != 0 {
            s.encrypt = None;
        }
        if flags & CKF_DECRYPT != 0 {
            s.decrypt = None;
        }
        if flags & CKF_DIGEST != 0 {
            s.digest = None;
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            s.find = None;
        }
        Ok(())
    })())
}

// ---------------------------------------------------------------- objects

/// The engine session that may see private objects: the Crypto Officer's or User's.
fn key_session(login: &Option<Arc<Login>>) -> Option<&ferrohsm_core::Session> {
    login
        .as_ref()
        .filter(|l| l.user != CKU_SO)
        .map(|l| &l.engine)
}

/// Token objects change only in a read/write session; session objects in any session.
fn may_change(s: &Session, token_object: bool) -> Rv {
    if token_object && s.flags & CKF_RW_SESSION == 0 {
        return Err(CKR_SESSION_READ_ONLY);
    }
    Ok(())
}

fn object(s: &mut Session, login: &Option<Arc<Login>>, h: CK_OBJECT_HANDLE) -> Rv<ObjectInfo> {
    let label = s.label.clone();
    s.hsm
        .object_info(key_session(login), &label, h)
        .map_err(|e| match e {
            HsmError::NotFound(_) | HsmError::Refused(_) => CKR_OBJECT_HANDLE_INVALID,
            e => rv(&e),
        })
}

pub unsafe fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        if s.find.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        // SAFETY: template validity per contract; checked for NULL.
        let t = unsafe { ffi::template(tpl, n)? };
        let mut f = ObjectFilter::default();
        for (ty, v) in &t {
            match *ty {
                CKA_LABEL => {
                    f.label =
                        Some(String::from_utf8(v.clone()).unwrap_or_else(|_| "\u{fffd}".into()))
                }
                CKA_ID => f.id = Some(v.clone()),
                CKA_CLASS => match attrs::class_of(
                    ffi::read_ulong(v).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?,
                ) {
                    Some(c) => f.class = Some(c),
                    None => {
                        // A class this token holds no objects of.
                        s.find = Some(vec![]);
                        return Ok(());
                    }
                },
                _ => {}
            }
        }
        let label = s.label.clone();
        let found = s
            .hsm
            .find_objects(key_session(&login), &label, &f)
            .map_err(|e| rv(&e))?;
        let mut handles: Vec<CK_OBJECT_HANDLE> = found
            .iter()
            .filter(|o| attrs::matches(o, &t))
            .map(|o| o.handle as CK_OBJECT_HANDLE)
            .collect();
        handles.reverse(); // popped from the end, so results come in handle order
        s.find = Some(handles);
        Ok(())
    })())
}

pub unsafe fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    out: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    done((|| {
        if out.is_null() || count.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (s, _) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        let pending = s.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let mut n = 0;
        while n < max as usize {
            let Some(h) = pending.pop() else { break };
            // SAFETY: room for `max` handles per contract.
            unsafe { out.add(n).write(h) };
            n += 1;
        }
        // SAFETY: non-NULL per check.
        unsafe { *count = n as CK_ULONG };
        Ok(())
    })())
}

pub unsafe fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        s.find.take().map(drop).ok_or(CKR_OPERATION_NOT_INITIALIZED)
    })())
}

pub unsafe fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let o = object(&mut *s.lock().map_err(|_| CKR_GENERAL_ERROR)?, &login, obj)?;
        if tpl.is_null() && n > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mut result = Ok(());
        for i in 0..n as usize {
            // SAFETY: `tpl` holds `n` attributes per contract (NULL refused above when n > 0).
            let a = unsafe { &mut *tpl.add(i) };
            match attrs::get(&o, a.type_) {
                Attr::Value(v) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else if (a.ulValueLen as usize) < v.len() {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        result = Err(CKR_BUFFER_TOO_SMALL);
                    } else {
                        // SAFETY: pValue holds ulValueLen >= v.len() bytes per contract.
                        unsafe {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len())
                        };
                        a.ulValueLen = v.len() as CK_ULONG;
                    }
                }
                Attr::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(CKR_ATTRIBUTE_SENSITIVE);
                }
                Attr::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(CKR_ATTRIBUTE_TYPE_INVALID);
                }
            }
        }
        result
    })())
}

pub unsafe fn C_DestroyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        may_change(&s, !ferrohsm_core::object::is_session_handle(obj))?;
        object(&mut s, &login, obj)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        s.hsm.destroy_object(es, obj).map_err(|e| rv(&e))
    })())
}

/// A certificate or data object from a `C_CreateObject` template, checked per the standard:
/// the class and (for certificates) the value are required, certificates must be X.509,
/// attributes the class does not have are refused, and keys are never created in clear
/// (they enter by generation or unwrapping only).
fn read_object_template(t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Rv<NewObject> {
    let class = find_attr(t, CKA_CLASS)
        .ok_or(CKR_TEMPLATE_INCOMPLETE)
        .and_then(|v| ffi::read_ulong(v))?;
    let is_cert = match class {
        CKO_CERTIFICATE => true,
        CKO_DATA => false,
        // Clear secret or private key material never enters (public keys: see C_CreateObject).
        CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY => return Err(CKR_TEMPLATE_INCONSISTENT),
        _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    let bytes = |ty| find_attr(t, ty).cloned().unwrap_or_default();
    let flag = |ty, default| find_attr(t, ty).map_or(Ok(default), |v| ffi::read_bool(v));
    if !flag(CKA_TOKEN, false)? {
        // Session objects are not kept by this token.
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    for (ty, v) in t {
        let allowed = match *ty {
            CKA_CLASS | CKA_TOKEN | CKA_PRIVATE | CKA_MODIFIABLE | CKA_DESTROYABLE
            | CKA_COPYABLE | CKA_LABEL | CKA_VALUE => true,
            CKA_APPLICATION | CKA_OBJECT_ID => !is_cert,
            CKA_CERTIFICATE_TYPE
            | CKA_ID
            | CKA_SUBJECT
            | CKA_ISSUER
            | CKA_SERIAL_NUMBER
            | CKA_CERTIFICATE_CATEGORY
            | CKA_START_DATE
            | CKA_END_DATE
            | CKA_URL
            | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
            | CKA_HASH_OF_ISSUER_PUBLIC_KEY
            | CKA_JAVA_MIDP_SECURITY_DOMAIN
            | CKA_CHECK_VALUE => is_cert,
            // Only a security officer may mark a certificate trusted, and none acts here.
            CKA_TRUSTED => is_cert && !ffi::read_bool(v)?,
            _ => false,
        };
        if !allowed {
            return Err(if *ty == CKA_TRUSTED {
                CKR_ATTRIBUTE_VALUE_INVALID
            } else {
                CKR_ATTRIBUTE_TYPE_INVALID
            });
        }
    }
    if flag(CKA_COPYABLE, false)? {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let label = String::from_utf8(bytes(CKA_LABEL)).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    let content = if is_cert {
        if let Some(ct) = find_attr(t, CKA_CERTIFICATE_TYPE) {
            if ffi::read_ulong(ct)? != CKC_X_509 {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
        }
        let category = match find_attr(t, CKA_CERTIFICATE_CATEGORY) {
            Some(v) => match ffi::read_ulong(v)? {
                c @ 0..=3 => c as u8,
                _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
            },
            None => 0,
        };
        let value = find_attr(t, CKA_VALUE)
            .cloned()
            .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
        if value.is_empty() {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        Content::Certificate {
            value,
            subject: bytes(CKA_SUBJECT),
            issuer: bytes(CKA_ISSUER),
            serial: bytes(CKA_SERIAL_NUMBER),
            category,
        }
    } else {
        Content::Data {
            application: String::from_utf8(bytes(CKA_APPLICATION))
                .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?,
            object_id: bytes(CKA_OBJECT_ID),
            value: bytes(CKA_VALUE),
        }
    };
    Ok(NewObject {
        label,
        id: bytes(CKA_ID),
        // Certificates are public by default, data objects private.
        private: flag(CKA_PRIVATE, !is_cert)?,
        modifiable: flag(CKA_MODIFIABLE, true)?,
        destroyable: flag(CKA_DESTROYABLE, true)?,
        content,
    })
}

pub unsafe fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        // SAFETY: template validity per contract; checked for NULL.
        let t = unsafe { ffi::template(tpl, n)? };
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        if find_attr(&t, CKA_CLASS).map(|v| ffi::read_ulong(v)) == Some(Ok(CKO_PUBLIC_KEY)) {
            let handle = create_public_key(&mut s, &login, h, &t)?;
            // SAFETY: non-NULL per check.
            unsafe { *out = handle as CK_OBJECT_HANDLE };
            return Ok(());
        }
        let o = read_object_template(&t)?;
        // Certificates and data objects are token objects.
        may_change(&s, true)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let handle = s.hsm.create_object(es, o).map_err(|e| match e {
            HsmError::InvalidInput(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            e => rv(&e),
        })?;
        // SAFETY: non-NULL per check.
        unsafe { *out = handle as CK_OBJECT_HANDLE };
        Ok(())
    })())
}

/// `C_CreateObject` of a public key: RSA from its modulus and exponent, EC or Edwards from
/// its curve and point (`CKA_EC_POINT` DER-wrapped or raw), checked before it is kept.
fn create_public_key(
    s: &mut Session,
    login: &Option<Arc<Login>>,
    h: CK_SESSION_HANDLE,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Rv<u64> {
    use ferrohsm_core::mechanism::{public_key_from_parts, PublicParts};
    let ktype = find_attr(t, CKA_KEY_TYPE)
        .ok_or(CKR_TEMPLATE_INCOMPLETE)
        .and_then(|v| ffi::read_ulong(v))?;
    let need = |ty| find_attr(t, ty).ok_or(CKR_TEMPLATE_INCOMPLETE);
    let parts = match ktype {
        CKK_RSA => PublicParts::Rsa {
            modulus: need(CKA_MODULUS)?,
            exponent: need(CKA_PUBLIC_EXPONENT)?,
        },
        CKK_EC | CKK_EC_EDWARDS => {
            let params = need(CKA_EC_PARAMS)?;
            let spec = ferrohsm_core::mechanism::spec_from_ec_params(params)
                .ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
            let point = ferrohsm_core::mechanism::point_from_pkcs11(spec, need(CKA_EC_POINT)?)
                .ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
            PublicParts::Ec { params, point }
        }
        _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    let (spec, spki) = public_key_from_parts(parts).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    if attrs::key_type(spec) != ktype {
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    let rest: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = t
        .iter()
        .filter(|(a, _)| !matches!(*a, CKA_MODULUS | CKA_EC_POINT | CKA_PUBLIC_KEY_INFO))
        .cloned()
        .collect();
    let mut opts = KeyOptions {
        label: String::new(),
        id: vec![],
        extractable: true,
    };
    let mut tpl = KeyTemplate::default();
    read_key_template(&rest, true, &mut opts, &mut tpl, CKO_PUBLIC_KEY, ktype)?;
    may_change(s, !tpl.session_public)?;
    tpl.session_owner = Some(h);
    let es = key_session(login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    s.hsm
        .import_public_key(es, spec, spki, &opts, &tpl)
        .map_err(|e| match e {
            HsmError::InvalidInput(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            e => rv(&e),
        })
}

pub unsafe fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    done((|| {
        // SAFETY: template validity per contract; checked for NULL.
        let t = unsafe { ffi::template(tpl, n)? };
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        let o = object(&mut s, &login, obj)?;
        let (mut label, mut id) = (None, None);
        for (ty, v) in &t {
            match *ty {
                CKA_LABEL => {
                    label = Some(
                        String::from_utf8(v.clone()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?,
                    )
                }
                CKA_ID => id = Some(v.clone()),
                // Setting an attribute to the value it has is no change.
                other => match attrs::get(&o, other) {
                    Attr::Value(cur) if cur == *v => {}
                    Attr::Invalid => return Err(CKR_ATTRIBUTE_TYPE_INVALID),
                    _ => return Err(CKR_ATTRIBUTE_READ_ONLY),
                },
            }
        }
        may_change(&s, !ferrohsm_core::object::is_session_handle(obj))?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        if label.is_none() && id.is_none() {
            return Ok(());
        }
        if !o.attrs.modifiable {
            return Err(CKR_ACTION_PROHIBITED);
        }
        s.hsm
            .relabel_object(es, obj, label, id)
            .map_err(|e| match e {
                HsmError::InvalidInput(_) => CKR_ATTRIBUTE_VALUE_INVALID,
                e => rv(&e),
            })
    })())
}

pub unsafe fn C_CopyObject(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    _tpl: *mut CK_ATTRIBUTE,
    _n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        object(&mut *s.lock().map_err(|_| CKR_GENERAL_ERROR)?, &login, obj)?;
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // Every object here has CKA_COPYABLE false: a key exists once.
        Err(CKR_ACTION_PROHIBITED)
    })())
}

// ---------------------------------------------------------------- key generation

/// What a generation template asks for, beyond the algorithm.
fn read_key_template(
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    public: bool,
    opts: &mut KeyOptions,
    tpl: &mut KeyTemplate,
    class: CK_OBJECT_CLASS,
    ktype: CK_KEY_TYPE,
) -> Rv {
    for (ty, v) in t {
        match *ty {
            CKA_TOKEN => {
                let session = !ffi::read_bool(v)?;
                if public {
                    tpl.session_public = session;
                } else {
                    tpl.session_private = session;
                }
            }
            CKA_CLASS => {
                if ffi::read_ulong(v)? != class {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_KEY_TYPE => {
                if ffi::read_ulong(v)? != ktype {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_LABEL => {
                let l = String::from_utf8(v.clone()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                if public {
                    tpl.public_label = Some(l)
                } else {
                    opts.label = l
                }
            }
            CKA_ID => {
                if public {
                    tpl.public_id = Some(v.clone())
                } else {
                    opts.id = v.clone()
                }
            }
            CKA_PRIVATE => {
                let b = ffi::read_bool(v)?;
                if public {
                    if b {
                        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                    }
                } else {
                    tpl.private = Some(b);
                }
            }
            CKA_SENSITIVE if !public => tpl.sensitive = Some(ffi::read_bool(v)?),
            CKA_EXTRACTABLE if !public => opts.extractable = ffi::read_bool(v)?,
            CKA_SIGN => tpl.sign = Some(ffi::read_bool(v)?),
            CKA_VERIFY => tpl.verify = Some(ffi::read_bool(v)?),
            CKA_ENCRYPT => tpl.encrypt = Some(ffi::read_bool(v)?),
            CKA_DECRYPT => tpl.decrypt = Some(ffi::read_bool(v)?),
            // Usage flags recorded on the key (their mechanisms are offered as they land).
            CKA_WRAP => tpl.wrap = Some(ffi::read_bool(v)?),
            CKA_UNWRAP => tpl.unwrap = Some(ffi::read_bool(v)?),
            CKA_DERIVE => tpl.derive = Some(ffi::read_bool(v)?),
            CKA_WRAP_WITH_TRUSTED if !public => tpl.wrap_with_trusted = Some(ffi::read_bool(v)?),
            // Only a security officer may mark a key trusted, and they never touch keys.
            CKA_TRUSTED => {
                if ffi::read_bool(v)? {
                    return Err(CKR_ATTRIBUTE_READ_ONLY);
                }
            }
            // Capabilities not offered: false is fine, true is refused.
            CKA_SIGN_RECOVER | CKA_VERIFY_RECOVER => {
                if ffi::read_bool(v)? {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                }
            }
            // Consumed by the caller, or descriptive only.
            CKA_MODULUS_BITS | CKA_PUBLIC_EXPONENT | CKA_EC_PARAMS | CKA_VALUE_LEN
            | CKA_SUBJECT | CKA_START_DATE | CKA_END_DATE | CKA_MODIFIABLE | CKA_COPYABLE
            | CKA_DESTROYABLE => {}
            CKA_VALUE => return Err(CKR_TEMPLATE_INCONSISTENT),
            _ => return Err(CKR_ATTRIBUTE_TYPE_INVALID),
        }
    }
    Ok(())
}

fn find_attr(t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)], ty: CK_ATTRIBUTE_TYPE) -> Option<&Vec<u8>> {
    t.iter().find(|(x, _)| *x == ty).map(|(_, v)| v)
}

fn generate(
    h: CK_SESSION_HANDLE,
    spec: KeySpec,
    priv_t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    pub_t: Option<&[(CK_ATTRIBUTE_TYPE, Vec<u8>)]>,
) -> Rv<Vec<u64>> {
    let (s, login) = state::session(h)?;
    let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    let mut opts = KeyOptions {
        label: String::new(),
        id: vec![],
        extractable: false,
    };
    let mut tpl = KeyTemplate::default();
    let kt = attrs::key_type(spec);
    match pub_t {
        None => read_key_template(priv_t, false, &mut opts, &mut tpl, CKO_SECRET_KEY, kt)?,
        Some(p) => {
            read_key_template(priv_t, false, &mut opts, &mut tpl, CKO_PRIVATE_KEY, kt)?;
            let mut popts = KeyOptions {
                label: String::new(),
                id: vec![],
                extractable: true,
            };
            read_key_template(p, true, &mut popts, &mut tpl, CKO_PUBLIC_KEY, kt)?;
            // A public template without a label or id takes the private key's.
        }
    }
    may_change(
        &s,
        !tpl.session_private || (pub_t.is_some() && !tpl.session_public),
    )?;
    tpl.session_owner = Some(h);
    s.hsm
        .generate_key_with(es, spec, &opts, &tpl)
        .map_err(|e| match e {
            HsmError::Refused(_) => CKR_USER_NOT_LOGGED_IN,
            e => rv(&e),
        })
}

pub unsafe fn C_GenerateKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        // SAFETY: mech::read and ffi::template check for NULL; validity per contract.
        let ((code, _), t) = unsafe { (mech::read(m)?, ffi::template(tpl, n)?) };
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let len = || {
            find_attr(&t, CKA_VALUE_LEN)
                .ok_or(CKR_TEMPLATE_INCOMPLETE)
                .and_then(|v| ffi::read_ulong(v))
        };
        let spec = match code {
            CKM_AES_KEY_GEN => match len()? {
                16 => KeySpec::Aes128,
                24 => KeySpec::Aes192,
                32 => KeySpec::Aes256,
                _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
            },
            CKM_GENERIC_SECRET_KEY_GEN => match len()? {
                n @ 16..=64 => KeySpec::Generic(n as u8),
                _ => return Err(CKR_KEY_SIZE_RANGE),
            },
            CKM_DES3_KEY_GEN => KeySpec::Des3,
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        let handles = generate(h, spec, &t, None)?;
        // SAFETY: non-NULL per check.
        unsafe { *out = handles[0] as CK_OBJECT_HANDLE };
        Ok(())
    })())
}

pub unsafe fn C_DeriveKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        // SAFETY: mech::read and ffi::template check for NULL; validity per contract.
        let ((code, p), t) = unsafe { (mech::read(m)?, ffi::template(tpl, n)?) };
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if code != CKM_ECDH1_DERIVE {
            return Err(CKR_MECHANISM_INVALID);
        }
        let params: CK_ECDH1_DERIVE_PARAMS = mech::param(&p)?;
        if params.kdf != CKD_NULL || params.ulSharedDataLen != 0 {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        // SAFETY: pPublicData is valid for ulPublicDataLen bytes per the caller's params.
        let public = unsafe { ffi::slice(params.pPublicData as *const u8, params.ulPublicDataLen) }
            .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?
            .to_vec();
        let ktype = find_attr(&t, CKA_KEY_TYPE)
            .ok_or(CKR_TEMPLATE_INCOMPLETE)
            .and_then(|v| ffi::read_ulong(v))?;
        let len = find_attr(&t, CKA_VALUE_LEN)
            .ok_or(CKR_TEMPLATE_INCOMPLETE)
            .and_then(|v| ffi::read_ulong(v))?;
        let spec = match (ktype, len) {
            (CKK_AES, 16) => KeySpec::Aes128,
            (CKK_AES, 24) => KeySpec::Aes192,
            (CKK_AES, 32) => KeySpec::Aes256,
            (CKK_GENERIC_SECRET, n @ 16..=64) => KeySpec::Generic(n as u8),
            (CKK_AES | CKK_GENERIC_SECRET, _) => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
            _ => return Err(CKR_TEMPLATE_INCONSISTENT),
        };
        let mut opts = KeyOptions {
            label: String::new(),
            id: vec![],
            extractable: false,
        };
        let mut ktpl = KeyTemplate::default();
        read_key_template(&t, false, &mut opts, &mut ktpl, CKO_SECRET_KEY, ktype)?;
        ktpl.session_owner = Some(h);
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        may_change(&s, !ktpl.session_private)?;
        let b = object(&mut s, &login, base).map_err(|e| {
            if e == CKR_OBJECT_HANDLE_INVALID {
                CKR_KEY_HANDLE_INVALID
            } else {
                e
            }
        })?;
        if b.attrs.class != ObjectClass::PrivateKey {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        // pPublicData: the raw point, or the same DER-wrapped (both are met in the field).
        let point = ferrohsm_core::mechanism::point_from_pkcs11(
            b.attrs.spec.ok_or(CKR_KEY_HANDLE_INVALID)?,
            &public,
        )
        .ok_or(CKR_MECHANISM_PARAM_INVALID)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let handle = s
            .hsm
            .derive_ecdh(es, base, point, spec, &opts, &ktpl)
            .map_err(|e| match e {
                HsmError::Refused(_) => CKR_KEY_FUNCTION_NOT_PERMITTED,
                HsmError::InvalidInput(_) => CKR_MECHANISM_PARAM_INVALID,
                e => rv(&e),
            })?;
        // SAFETY: non-NULL per check.
        unsafe { *out = handle as CK_OBJECT_HANDLE };
        Ok(())
    })())
}

#[allow(clippy::too_many_arguments)] // the PKCS#11 signature
pub unsafe fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    pub_tpl: *mut CK_ATTRIBUTE,
    pub_n: CK_ULONG,
    priv_tpl: *mut CK_ATTRIBUTE,
    priv_n: CK_ULONG,
    pub_out: *mut CK_OBJECT_HANDLE,
    priv_out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        // SAFETY: NULL checked inside; validity per contract.
        let ((code, _), pt, vt) = unsafe {
            (
                mech::read(m)?,
                ffi::template(pub_tpl, pub_n)?,
                ffi::template(priv_tpl, priv_n)?,
            )
        };
        if pub_out.is_null() || priv_out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let spec = match code {
            CKM_RSA_PKCS_KEY_PAIR_GEN => {
                if let Some(e) = find_attr(&pt, CKA_PUBLIC_EXPONENT) {
                    let trimmed: Vec<u8> = e.iter().skip_while(|b| **b == 0).copied().collect();
                    if trimmed != [1, 0, 1] {
                        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                    }
                }
                match find_attr(&pt, CKA_MODULUS_BITS)
                    .ok_or(CKR_TEMPLATE_INCOMPLETE)
                    .and_then(|v| ffi::read_ulong(v))?
                {
                    2048 => KeySpec::Rsa2048,
                    3072 => KeySpec::Rsa3072,
                    4096 => KeySpec::Rsa4096,
                    _ => return Err(CKR_KEY_SIZE_RANGE),
                }
            }
            CKM_EC_KEY_PAIR_GEN => {
                let p = find_attr(&pt, CKA_EC_PARAMS)
                    .or_else(|| find_attr(&vt, CKA_EC_PARAMS))
                    .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                match ferrohsm_core::mechanism::spec_from_ec_params(p) {
                    Some(s @ (KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521)) => s,
                    _ => return Err(CKR_CURVE_NOT_SUPPORTED),
                }
            }
            CKM_EC_EDWARDS_KEY_PAIR_GEN => {
                if let Some(p) = find_attr(&pt, CKA_EC_PARAMS) {
                    if ferrohsm_core::mechanism::spec_from_ec_params(p) != Some(KeySpec::Ed25519) {
                        return Err(CKR_CURVE_NOT_SUPPORTED);
                    }
                }
                KeySpec::Ed25519
            }
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        let handles = generate(h, spec, &vt, Some(&pt))?;
        // SAFETY: both non-NULL per check.
        unsafe {
            *priv_out = handles[0] as CK_OBJECT_HANDLE;
            *pub_out = handles[1] as CK_OBJECT_HANDLE;
        }
        Ok(())
    })())
}

// ---------------------------------------------------------------- crypto

/// Which operation slot of a session.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
}

fn slot_of(s: &mut Session, k: Kind) -> &mut Option<Op> {
    match k {
        Kind::Sign => &mut s.sign,
        Kind::Verify => &mut s.verify,
        Kind::Encrypt => &mut s.encrypt,
        Kind::Decrypt => &mut s.decrypt,
    }
}

unsafe fn op_init(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
    k: Kind,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    let s = &mut *guard;
    if slot_of(s, k).is_some() {
        return Err(CKR_OPERATION_ACTIVE);
    }
    // SAFETY: mech::read checks for NULL; validity per contract.
    let (code, p) = unsafe { mech::read(m)? };
    let es = key_session(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    // The key is looked up once, here; the operation keeps it until it ends.
    let loaded = s
        .hsm
        .load_key_memo(es, key, &mut s.key_memo)
        .map_err(|e| match e {
            HsmError::NotFound(_) | HsmError::Refused(_) => CKR_KEY_HANDLE_INVALID,
            e => rv(&e),
        })?;
    let a = &loaded.info.attrs;
    let Some(spec) = a.spec else {
        return Err(CKR_KEY_HANDLE_INVALID);
    };
    let (allowed, class_ok) = match k {
        // Secret keys sign and verify with MAC mechanisms (checked with the mechanism below).
        Kind::Sign => (a.sign, a.class != ObjectClass::PublicKey),
        Kind::Verify => (a.verify, a.class != ObjectClass::PrivateKey),
        Kind::Encrypt => (a.encrypt, a.class != ObjectClass::PrivateKey),
        Kind::Decrypt => (a.decrypt, a.class != ObjectClass::PublicKey),
    };
    if !class_ok {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    }
    if !allowed {
        return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
    }
    let (mech, params, ctr_bits) = match k {
        Kind::Sign | Kind::Verify => (
            mech::sign_mechanism(code, &p, spec)?,
            Default::default(),
            128,
        ),
        Kind::Encrypt | Kind::Decrypt => mech::cipher_mechanism(code, &p, spec)?,
    };
    *slot_of(s, k) = Some(Op {
        mech,
        spec,
        key: loaded,
        params,
        buffer: vec![],
        ctr_bits,
    });
    Ok(())
}

pub unsafe fn C_SignInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: forwarded pointers; checked inside.
    done(unsafe { op_init(h, m, key, Kind::Sign) })
}
pub unsafe fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: forwarded pointers; checked inside.
    done(unsafe { op_init(h, m, key, Kind::Verify) })
}
pub unsafe fn C_EncryptInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: forwarded pointers; checked inside.
    done(unsafe { op_init(h, m, key, Kind::Encrypt) })
}
pub unsafe fn C_DecryptInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: forwarded pointers; checked inside.
    done(unsafe { op_init(h, m, key, Kind::Decrypt) })
}

unsafe fn update(h: CK_SESSION_HANDLE, k: Kind, data: *const u8, len: CK_ULONG) -> Rv {
    let s = state::session_only(h)?;
    let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    let op = slot_of(&mut s, k)
        .as_mut()
        .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    // SAFETY: valid for `len` bytes per contract; NULL refused unless len == 0.
    match unsafe { ffi::slice(data, len) } {
        Ok(d) if op.buffer.len() + d.len() <= MAX_MULTIPART => {
            op.buffer.extend_from_slice(d);
            Ok(())
        }
        Ok(_) => {
            *slot_of(&mut s, k) = None;
            Err(CKR_DATA_LEN_RANGE)
        }
        Err(e) => {
            *slot_of(&mut s, k) = None;
            Err(e)
        }
    }
}

/// Most data a multi-part operation gathers (its parts are processed at the final call).
const MAX_MULTIPART: usize = 64 << 20;

pub unsafe fn C_SignUpdate(h: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { update(h, Kind::Sign, data, len) })
}
pub unsafe fn C_VerifyUpdate(h: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { update(h, Kind::Verify, data, len) })
}

/// The data of a single-part call, or of a multi-part operation plus `extra`, without copying
/// in the single-part case.
fn op_data<'a>(buffer: &'a [u8], extra: Option<&'a [u8]>) -> std::borrow::Cow<'a, [u8]> {
    match extra {
        Some(x) if buffer.is_empty() => std::borrow::Cow::Borrowed(x),
        Some(x) => std::borrow::Cow::Owned([buffer, x].concat()),
        None => std::borrow::Cow::Borrowed(buffer),
    }
}

/// Signs the op's data (plus `extra`), honouring the two-call convention: a length query or
/// a short buffer leaves the operation active; anything else ends it.
unsafe fn sign_out(
    h: CK_SESSION_HANDLE,
    extra: Option<&[u8]>,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    let s = &mut *guard;
    let op = s.sign.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    let res = (|| {
        // SAFETY: out/out_len validity per contract; checked for NULL inside.
        if unsafe {
            ffi::length_only(
                ferrohsm_core::mechanism::signature_len(op.spec, op.mech),
                out,
                out_len,
            )?
        } {
            return Ok(true);
        }
        let es = key_session(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let data = op_data(&op.buffer, extra);
        // Raw PKCS#1 v1.5 pads the data itself: it must leave room for the padding.
        if op.mech == Mechanism::RsaPkcs1Raw
            && data.len() + 11 > ferrohsm_core::mechanism::signature_len(op.spec, op.mech)
        {
            return Err(CKR_DATA_LEN_RANGE);
        }
        s.hsm
            .sign_loaded_into(es, &op.key, op.mech, &data, &mut s.mac, |sig| {
                // SAFETY: as above.
                unsafe { out_bytes(sig, out, out_len) }
            })
            .map_err(|e| match e {
                HsmError::InvalidInput(_) => CKR_DATA_INVALID,
                e => rv(&e),
            })??;
        Ok(false)
    })();
    match res {
        Ok(true) | Err(CKR_BUFFER_TOO_SMALL) => {}
        _ => s.sign = None,
    }
    res.map(drop)
}

pub unsafe fn C_Sign(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    done((|| {
        // SAFETY: valid for `len` bytes per contract.
        let d = unsafe { ffi::slice(data, len) }?;
        // SAFETY: forwarded; checked inside.
        unsafe { sign_out(h, Some(d), sig, sig_len) }
    })())
}

pub unsafe fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { sign_out(h, None, sig, sig_len) })
}

unsafe fn verify_with(
    h: CK_SESSION_HANDLE,
    extra: Option<&[u8]>,
    sig: *const CK_BYTE,
    sig_len: CK_ULONG,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    let s = &mut *guard;
    let op = s.verify.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    // SAFETY: valid for `sig_len` bytes per contract.
    let sig = unsafe { ffi::slice(sig, sig_len)? };
    if sig.len() != ferrohsm_core::mechanism::signature_len(op.spec, op.mech) {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let es = key_session(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    let data = op_data(&op.buffer, extra);
    match s.hsm.verify_loaded(es, &op.key, op.mech, &data, sig) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CKR_SIGNATURE_INVALID),
        Err(HsmError::InvalidInput(_)) => Err(CKR_DATA_INVALID),
        Err(e) => Err(rv(&e)),
    }
}

pub unsafe fn C_Verify(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    done((|| {
        // SAFETY: valid for `len` bytes per contract.
        let d = match unsafe { ffi::slice(data, len) } {
            Ok(d) => d,
            Err(e) => {
                if let Ok((s, _)) = state::session(h) {
                    if let Ok(mut s) = s.lock() {
                        s.verify = None;
                    }
                }
                return Err(e);
            }
        };
        // SAFETY: forwarded; checked inside.
        unsafe { verify_with(h, Some(d), sig, sig_len) }
    })())
}

pub unsafe fn C_VerifyFinal(h: CK_SESSION_HANDLE, sig: *mut CK_BYTE, sig_len: CK_ULONG) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { verify_with(h, None, sig, sig_len) })
}

/// Encrypts or decrypts `data` (single-part), or what `C_*Update` gathered (`data` NULL with
/// `final_part`), honouring the two-call convention.
unsafe fn cipher(
    h: CK_SESSION_HANDLE,
    k: Kind,
    data: *const CK_BYTE,
    len: CK_ULONG,
    final_part: bool,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    let s = &mut *guard;
    let op = match k {
        Kind::Encrypt => s.encrypt.as_ref(),
        _ => s.decrypt.as_ref(),
    }
    .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    let (mech, key, params, ctr_bits, spec) = (op.mech, &op.key, &op.params, op.ctr_bits, op.spec);
    let res = (|| {
        let d: &[u8] = if final_part {
            &op.buffer
        } else if !op.buffer.is_empty() {
            // C_Encrypt does not end a multi-part operation; C_EncryptFinal does.
            return Err(CKR_OPERATION_ACTIVE);
        } else {
            // SAFETY: valid for `len` bytes per contract.
            unsafe { ffi::slice(data, len)? }
        };
        let need = match (mech, k) {
            (Mechanism::AesGcm, Kind::Encrypt) => d.len() + GCM_TAG_LEN,
            (Mechanism::AesGcm, _) => d
                .len()
                .checked_sub(GCM_TAG_LEN)
                .ok_or(CKR_ENCRYPTED_DATA_LEN_RANGE)?,
            (Mechanism::AesCbcPad, Kind::Encrypt) => (d.len() / 16 + 1) * 16,
            (Mechanism::AesCbcPad, _) => {
                if d.is_empty() || !d.len().is_multiple_of(16) {
                    return Err(CKR_ENCRYPTED_DATA_LEN_RANGE);
                }
                d.len()
            }
            (
                Mechanism::AesEcb | Mechanism::AesCbc | Mechanism::Des3Ecb | Mechanism::Des3Cbc,
                _,
            ) => {
                let block = if matches!(mech, Mechanism::Des3Ecb | Mechanism::Des3Cbc) {
                    8
                } else {
                    16
                };
                if !d.len().is_multiple_of(block) {
                    return Err(if k == Kind::Encrypt {
                        CKR_DATA_LEN_RANGE
                    } else {
                        CKR_ENCRYPTED_DATA_LEN_RANGE
                    });
                }
                d.len()
            }
            (Mechanism::AesCtr, _) => {
                if mech::ctr_would_wrap(&params.iv, ctr_bits, d.len()) {
                    return Err(CKR_DATA_LEN_RANGE);
                }
                d.len()
            }
            _ => ferrohsm_core::mechanism::signature_len(spec, mech),
        };
        // SAFETY: out/out_len validity per contract; checked inside.
        if unsafe { ffi::length_only(need, out, out_len)? } {
            return Ok(true);
        }
        let es = key_session(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let encrypt_err = |e: HsmError| match e {
            HsmError::InvalidInput(_) => CKR_DATA_LEN_RANGE,
            e => rv(&e),
        };
        if (mech, k) == (Mechanism::AesGcm, Kind::Encrypt) {
            // Sealed where the caller wants it: one copy of the message, as a direct caller
            // of the crypto library would make.
            // SAFETY: length_only confirmed `out` holds at least `need` bytes; nothing else
            // touches it while `buf` lives.
            if let Some(buf) = unsafe { ffi::output_with(out, need, d) } {
                return match s
                    .hsm
                    .encrypt_loaded_in_place(es, key, mech, params, buf, d.len())
                {
                    Ok(n) => {
                        // SAFETY: out_len is valid per contract (checked by length_only).
                        unsafe { ffi::put(out_len, n as CK_ULONG)? };
                        Ok(false)
                    }
                    Err(e) => {
                        // Leave no copy of the message behind in the output.
                        buf.fill(0);
                        Err(encrypt_err(e))
                    }
                };
            }
        }
        let result = match k {
            Kind::Encrypt => s
                .hsm
                .encrypt_loaded(es, key, mech, params, d)
                .map_err(encrypt_err)?,
            _ => s
                .hsm
                .decrypt_loaded(es, key, mech, params, d)
                .map_err(|e| match e {
                    HsmError::Crypto(_) | HsmError::InvalidInput(_) => CKR_ENCRYPTED_DATA_INVALID,
                    e => rv(&e),
                })?
                .expose()
                .to_vec(),
        };
        // SAFETY: as above.
        unsafe { out_bytes(&result, out, out_len)? };
        Ok(false)
    })();
    match res {
        Ok(true) | Err(CKR_BUFFER_TOO_SMALL) => {}
        _ => *slot_of(s, k) = None,
    }
    res.map(drop)
}

pub unsafe fn C_Encrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { cipher(h, Kind::Encrypt, data, len, false, out, out_len) })
}

/// `C_EncryptUpdate`/`C_DecryptUpdate`: gathers the part; the output comes at the final
/// call (the standard allows a part to produce no output).
unsafe fn cipher_update(
    h: CK_SESSION_HANDLE,
    k: Kind,
    data: *const CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    if out_len.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // A NULL output asks only how much this part would produce, and consumes nothing.
    if !out.is_null() {
        // SAFETY: forwarded; checked inside.
        unsafe { update(h, k, data, len)? };
    } else {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        slot_of(&mut s, k)
            .as_ref()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    }
    // SAFETY: non-NULL per check.
    unsafe { *out_len = 0 };
    Ok(())
}

pub unsafe fn C_EncryptUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { cipher_update(h, Kind::Encrypt, data, len, out, out_len) })
}

pub unsafe fn C_EncryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { cipher(h, Kind::Encrypt, std::ptr::null(), 0, true, out, out_len) })
}

pub unsafe fn C_DecryptUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { cipher_update(h, Kind::Decrypt, data, len, out, out_len) })
}

pub unsafe fn C_DecryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { cipher(h, Kind::Decrypt, std::ptr::null(), 0, true, out, out_len) })
}

pub unsafe fn C_Decrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { cipher(h, Kind::Decrypt, data, len, false, out, out_len) })
}

// ---------------------------------------------------------------- digest and random

pub unsafe fn C_DigestInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        if s.digest.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        // SAFETY: mech::read checks for NULL.
        let (code, _) = unsafe { mech::read(m)? };
        let hash = mech::hash_of(code).ok_or(CKR_MECHANISM_INVALID)?;
        s.digest = Some(DigestOp {
            hash,
            buffer: vec![],
        });
        Ok(())
    })())
}

unsafe fn digest_out(
    h: CK_SESSION_HANDLE,
    extra: Option<&[u8]>,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    let (s, _) = state::session(h)?;
    let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
    let op = s.digest.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    // SAFETY: validity per contract; checked inside.
    match unsafe { ffi::length_only(op.hash.len(), out, out_len) } {
        Ok(true) => return Ok(()),
        Err(CKR_BUFFER_TOO_SMALL) => return Err(CKR_BUFFER_TOO_SMALL),
        Err(e) => {
            s.digest = None;
            return Err(e);
        }
        Ok(false) => {}
    }
    let op = s.digest.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    let mut data = op.buffer;
    if let Some(x) = extra {
        data.extend_from_slice(x);
    }
    // SAFETY: as above.
    unsafe { out_bytes(&op.hash.digest(&data), out, out_len) }
}

pub unsafe fn C_Digest(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    done((|| {
        // SAFETY: valid for `len` bytes per contract.
        let d = unsafe { ffi::slice(data, len) }?.to_vec();
        // SAFETY: forwarded; checked inside.
        unsafe { digest_out(h, Some(&d), out, out_len) }
    })())
}

pub unsafe fn C_DigestUpdate(h: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        // SAFETY: valid for `len` bytes per contract.
        let d = unsafe { ffi::slice(data, len)? };
        s.digest
            .as_mut()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?
            .buffer
            .extend_from_slice(d);
        Ok(())
    })())
}

pub unsafe fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: forwarded; checked inside.
    done(unsafe { digest_out(h, None, out, out_len) })
}

pub unsafe fn C_SeedRandom(h: CK_SESSION_HANDLE, _seed: *mut CK_BYTE, _len: CK_ULONG) -> CK_RV {
    done(state::session(h).and(Err(CKR_RANDOM_SEED_NOT_SUPPORTED)))
}

pub unsafe fn C_GenerateRandom(h: CK_SESSION_HANDLE, out: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    done((|| {
        state::session(h)?;
        if out.is_null() && len > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `out` holds `len` bytes per contract (NULL refused above).
        let buf = unsafe { std::slice::from_raw_parts_mut(out, len as usize) };
        ferrohsm_core::crypto::fill_random(buf);
        Ok(())
    })())
}

// ---------------------------------------------------------------- wrapping

pub unsafe fn C_WrapKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        // SAFETY: mech::read checks for NULL; validity per contract.
        let (code, p) = unsafe { mech::read(m)? };
        let w = object(&mut s, &login, wrapping).map_err(|_| CKR_WRAPPING_KEY_HANDLE_INVALID)?;
        let k = object(&mut s, &login, key).map_err(|_| CKR_KEY_HANDLE_INVALID)?;
        if k.attrs.class == ObjectClass::PublicKey {
            return Err(CKR_KEY_NOT_WRAPPABLE);
        }
        let (mech, params) = mech::wrap_mechanism(
            code,
            &p,
            w.attrs.spec.ok_or(CKR_WRAPPING_KEY_HANDLE_INVALID)?,
        )?;
        if matches!(mech, Mechanism::RsaOaep(_)) && k.attrs.class == ObjectClass::PrivateKey {
            // RSA-OAEP cannot carry a whole private key.
            return Err(CKR_KEY_NOT_WRAPPABLE);
        }
        let map = |e: HsmError| match e {
            HsmError::Refused(m) if m.contains("not extractable") => CKR_KEY_UNEXTRACTABLE,
            HsmError::Refused(m) if m.contains("trusted") => CKR_KEY_NOT_WRAPPABLE,
            HsmError::Refused(m) if m.contains("CKA_WRAP") => CKR_KEY_FUNCTION_NOT_PERMITTED,
            HsmError::InvalidInput(_) => CKR_KEY_SIZE_RANGE,
            e => rv(&e),
        };
        let need = s
            .hsm
            .wrapped_key_len(es, wrapping, mech, key)
            .map_err(map)?;
        // SAFETY: out/out_len validity per contract; checked inside.
        if unsafe { ffi::length_only(need, out, out_len)? } {
            return Ok(());
        }
        let wrapped = s
            .hsm
            .wrap_key(es, wrapping, mech, &params, key)
            .map_err(map)?;
        // SAFETY: as above.
        unsafe { out_bytes(&wrapped, out, out_len) }
    })())
}

#[allow(clippy::too_many_arguments)] // the PKCS#11 signature
pub unsafe fn C_UnwrapKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: CK_ULONG,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (s, login) = state::session(h)?;
        let mut s = s.lock().map_err(|_| CKR_GENERAL_ERROR)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        // SAFETY: NULL checks inside; validity per contract.
        let ((code, p), data, t) = unsafe {
            (
                mech::read(m)?,
                ffi::slice(wrapped, wrapped_len)?.to_vec(),
                ffi::template(tpl, n)?,
            )
        };
        let u =
            object(&mut s, &login, unwrapping).map_err(|_| CKR_UNWRAPPING_KEY_HANDLE_INVALID)?;
        let (mech, params) = mech::wrap_mechanism(
            code,
            &p,
            u.attrs.spec.ok_or(CKR_UNWRAPPING_KEY_HANDLE_INVALID)?,
        )
        .map_err(|e| {
            if e == CKR_WRAPPING_KEY_TYPE_INCONSISTENT {
                CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT
            } else {
                e
            }
        })?;
        let class_code = find_attr(&t, CKA_CLASS)
            .ok_or(CKR_TEMPLATE_INCOMPLETE)
            .and_then(|v| ffi::read_ulong(v))?;
        let class = match attrs::class_of(class_code) {
            Some(c @ (ObjectClass::SecretKey | ObjectClass::PrivateKey)) => c,
            _ => return Err(CKR_TEMPLATE_INCONSISTENT),
        };
        let kt = find_attr(&t, CKA_KEY_TYPE)
            .map(|v| ffi::read_ulong(v))
            .transpose()?;
        // A secret key's type (length below); a private key's type is read from what it unwraps to.
        let spec = match (class, kt) {
            (ObjectClass::SecretKey, Some(CKK_AES | CKK_GENERIC_SECRET)) => None,
            (ObjectClass::SecretKey, Some(CKK_DES3)) => Some(KeySpec::Des3),
            (ObjectClass::SecretKey, _) => return Err(CKR_TEMPLATE_INCOMPLETE),
            _ => None,
        };
        let mut opts = KeyOptions {
            label: String::new(),
            id: vec![],
            extractable: false,
        };
        let mut ktpl = KeyTemplate::default();
        let mut t2: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = t
            .iter()
            .filter(|(a, _)| *a != CKA_CLASS && *a != CKA_KEY_TYPE)
            .cloned()
            .collect();
        t2.retain(|(a, _)| *a != CKA_VALUE_LEN);
        read_key_template(
            &t2,
            false,
            &mut opts,
            &mut ktpl,
            class_code,
            kt.unwrap_or(0),
        )?;
        may_change(&s, !ktpl.session_private)?;
        ktpl.session_owner = Some(h);
        // An AES key is sized by what unwraps unless CKA_VALUE_LEN names it.
        let want_len = find_attr(&t, CKA_VALUE_LEN)
            .map(|v| ffi::read_ulong(v))
            .transpose()?;
        let map = |e: HsmError| match e {
            HsmError::Crypto(_) => CKR_WRAPPED_KEY_INVALID,
            HsmError::Refused(_) => CKR_KEY_FUNCTION_NOT_PERMITTED,
            HsmError::InvalidInput(_) => CKR_WRAPPED_KEY_INVALID,
            e => rv(&e),
        };
        let spec = match (class, kt) {
            (ObjectClass::SecretKey, Some(CKK_GENERIC_SECRET)) => {
                match want_len.ok_or(CKR_TEMPLATE_INCOMPLETE)? {
                    n @ 16..=64 => Some(KeySpec::Generic(n as u8)),
                    _ => return Err(CKR_KEY_SIZE_RANGE),
                }
            }
            // AES: sized by what unwraps, unless CKA_VALUE_LEN names it.
            (ObjectClass::SecretKey, Some(CKK_AES)) => match want_len {
                None => None,
                Some(16) => Some(KeySpec::Aes128),
                Some(24) => Some(KeySpec::Aes192),
                Some(32) => Some(KeySpec::Aes256),
                Some(_) => return Err(CKR_TEMPLATE_INCONSISTENT),
            },
            _ => spec,
        };
        let handle = s
            .hsm
            .unwrap_key(
                es, unwrapping, mech, &params, &data, class, spec, &opts, &ktpl,
            )
            .map_err(map)?;
        // SAFETY: non-NULL per check.
        unsafe { *out = handle };
        Ok(())
    })())
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
            assert_eq!(C_Finalize(std::ptr::null_mut()), CKR_OK);
        }
    }
}
