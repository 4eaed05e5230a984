//! Slots and tokens: the slot list, slot and token information, mechanisms, and the token's
//! set-up (`C_InitToken`, `C_InitPIN`, `C_SetPIN`).
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::*;

/// A slot as the module shows it.
pub(super) struct Slot {
    id: CK_SLOT_ID,
    partition: Option<PartitionInfo>,
    mode: AuthMode,
    serial: String,
}

pub(super) fn hsm_info(m: &Module) -> Rv<Option<HsmInfo>> {
    let mut control = m.control.lock().unwrap_or_else(PoisonError::into_inner);
    // The kept front may be stale (another process re-initialised or zeroized the HSM, the
    // server restarted): on failure, try once more with a fresh one.
    for attempt in 0..2 {
        if control.is_none() {
            if let state::Target::Embedded(dir) = &m.config().target {
                // No HSM at the configured place: no slots, not an error.
                if !dir.join("hsm.db").exists() {
                    return Ok(None);
                }
            }
            match m.opener.open() {
                Ok(f) => *control = Some(f),
                // No server answers: no slots (the log says where the module looked).
                Err(_) if !matches!(m.config().target, state::Target::Embedded(_)) => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
        let f = control.as_mut().ok_or(CKR_GENERAL_ERROR)?;
        match f.api().info() {
            Ok(i) => return Ok(Some(i)),
            Err(e) => {
                *control = None;
                if attempt == 1 {
                    m.log(&format!("cannot read the HSM ({}): {e}", m.config().target));
                    // No server (or no member of a group) answers: no slots, as when none
                    // could be connected to.
                    if matches!(e, HsmError::Io { .. })
                        && !matches!(m.config().target, state::Target::Embedded(_))
                    {
                        return Ok(None);
                    }
                    return Err(rv(&e));
                }
            }
        }
    }
    Err(CKR_GENERAL_ERROR)
}

pub(super) fn slots(m: &Module) -> Rv<Vec<Slot>> {
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
pub(super) fn token_brief(m: &Module, id: CK_SLOT_ID) -> Rv<(String, bool)> {
    let generation = {
        let mut control = m.control.lock().unwrap_or_else(PoisonError::into_inner);
        control
            .as_mut()
            .and_then(|f| f.api().state_generation().ok())
    };
    if let Some(g) = generation {
        let tokens = m.tokens.lock().unwrap_or_else(PoisonError::into_inner);
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
        *m.tokens.lock().unwrap_or_else(PoisonError::into_inner) = Some((g, map));
    }
    found
}

pub(super) fn slot(m: &Module, id: CK_SLOT_ID) -> Rv<Slot> {
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

pub(super) fn utc_time() -> [u8; 16] {
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
            .map(|x| {
                let x = x.lock().unwrap_or_else(PoisonError::into_inner);
                (x.slot, x.flags)
            })
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

pub(super) unsafe fn pin_arg(p: *const CK_UTF8CHAR, len: CK_ULONG) -> Rv<Option<Pin>> {
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
        let (pooled, opener) = state::pooled_front(m)?;
        let mut front = state::take_front(pooled, &opener)?;
        let done = match s.partition {
            None if label.is_empty() => Err(CKR_ARGUMENTS_BAD),
            None => front
                .api()
                .init_token(&label, so_pin)
                .map(drop)
                .map_err(|e| rv(&e)),
            // Re-initialisation: the SO PIN must be the current one; every key is destroyed.
            Some(p) => front
                .api()
                .reinit_token(&p.label, so_pin)
                .map_err(|e| rv(&e)),
        };
        state::pool_front(m, front)?;
        done
    }))
}

pub(super) fn role_of(user: CK_USER_TYPE) -> Rv<Role> {
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
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        if s.flags & CKF_RW_SESSION == 0 {
            return Err(CKR_SESSION_READ_ONLY);
        }
        let label = s.label.clone();
        let info = s.api().info().map_err(|e| rv(&e))?;
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
        s.api()
            .init_role(
                login.id,
                Role::CryptoOfficer,
                ferrohsm_core::api::NewCredential::Password(pin),
                false,
            )
            .map(drop)
            .map_err(|e| rv(&e))
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
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
        s.api()
            .change_password(role, &label, old, new)
            .map_err(|e| rv(&e))
    })())
}
