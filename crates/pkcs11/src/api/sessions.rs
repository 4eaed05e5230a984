//! Sessions and logins: opening and closing sessions, `C_Login` (passwords, challenge
//! secrets, PED keys), `C_Logout`.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::*;

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
        let (opener, label, pooled) = with_module(|m| {
            let (label, initialised) = token_brief(m, id)?;
            if !initialised {
                return Err(CKR_TOKEN_NOT_RECOGNIZED);
            }
            if flags & CKF_RW_SESSION == 0 && m.logins.get(&id).is_some_and(|l| l.user == CKU_SO) {
                return Err(CKR_SESSION_READ_WRITE_SO_EXISTS);
            }
            let (pooled, opener) = state::pooled_front(m)?;
            Ok((opener, label, pooled))
        })?;
        // Each session has its own handle on the store (or connection), so sessions run in
        // parallel.
        let front = state::take_front(pooled, &opener)?;
        let handle = with_module_mut(|m| {
            let h = m.next_handle;
            m.next_handle += 1;
            let session = Session {
                slot: id,
                label,
                flags,
                front,
                find: None,
                sign: None,
                verify: None,
                encrypt: None,
                decrypt: None,
                digest: None,
                // The token's login as it is now (C_Login and C_Logout keep it current).
                login: m.logins.get(&id).cloned(),
                key_memo: Default::default(),
                remote_memo: None,
                mac: Default::default(),
                gp: Default::default(),
            };
            m.sessions.insert(h, Arc::new(Mutex::new(session)));
            Ok(h)
        })?;
        // SAFETY: non-NULL per check.
        unsafe { *ph = handle };
        Ok(())
    })())
}

pub(super) fn close(m: &mut Module, h: CK_SESSION_HANDLE) -> Rv {
    let s = m.sessions.remove(&h).ok_or(CKR_SESSION_HANDLE_INVALID)?;
    state::sessions_changed();
    let slot = s.lock().unwrap_or_else(PoisonError::into_inner).slot;
    let others = m
        .sessions
        .values()
        .any(|x| x.lock().map(|x| x.slot == slot).unwrap_or(false));
    // The last session of a token logs its user out.
    let login = match others {
        true => m.logins.get(&slot).cloned(),
        false => m.logins.remove(&slot),
    };
    {
        let mut session = s.lock().unwrap_or_else(PoisonError::into_inner);
        super::gp::close_channels(&mut session);
        if let Some(l) = &login {
            // Its session objects go with it (the login may have ended already: then they
            // went with it).
            let _ = session.api().drop_session_objects(l.id, h);
            if !others {
                end_login(&mut session, l);
            }
        }
    }
    if !others && login.is_some() {
        ferrohsm_core::login_memo::purge_expired();
    }
    // Keep its front for the next session, unless another thread still holds the session
    // (it is then dropped with the last reference).
    if let Ok(session) = Arc::try_unwrap(s) {
        let session = session.into_inner().unwrap_or_else(PoisonError::into_inner);
        state::pool_front(m, session.front)?;
    }
    Ok(())
}

/// Forgets a login the HSM has ended, on every session of its token (if it is still the
/// token's login).
fn forget_login(h: CK_SESSION_HANDLE, ended: &Arc<Login>) -> Rv {
    let (s, _) = state::session(h)?;
    let slot = s.lock().unwrap_or_else(PoisonError::into_inner).slot;
    with_module_mut(|m| {
        if m.logins.get(&slot).is_some_and(|l| Arc::ptr_eq(l, ended)) {
            m.logins.remove(&slot);
            clear_login(m, slot)?;
        }
        Ok(())
    })
}

/// Takes a token's login from its sessions. Operations in progress hold their keys: they
/// end, so that the login's keys (and, embedded, its key cache) leave memory now.
fn clear_login(m: &Module, slot: CK_SLOT_ID) -> Rv {
    for x in m.sessions.values() {
        let mut x = x.lock().unwrap_or_else(PoisonError::into_inner);
        if x.slot == slot {
            x.end_key_operations();
            x.login = None;
        }
    }
    Ok(())
}

/// Ends a login in the HSM (its keys are dropped there). One that already ended (zeroize, a
/// server restart) is no error: the module forgets it either way.
pub(super) fn end_login(s: &mut Session, login: &Login) {
    let _ = s.api().logout(login.id);
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
        Ok(())
    }))
}

pub unsafe fn C_GetSessionInfo(h: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
            // A login the HSM ended (zeroize, tamper, a server restart) is forgotten here
            // too, so that the application can log in again; a live one stays.
            let alive = s
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .api()
                .check_login(l.id);
            match alive {
                Err(HsmError::NotLoggedIn(_)) => forget_login(h, &l)?,
                _ => {
                    return Err(if l.user == user {
                        CKR_USER_ALREADY_LOGGED_IN
                    } else {
                        CKR_USER_ANOTHER_ALREADY_LOGGED_IN
                    })
                }
            }
        }
        // The module lock first, never while a session is locked (see `state::MODULE`).
        let (pooled, opener) = with_module(state::pooled_front)?;
        let ped_dir = opener.config.ped_dir.clone();
        let (slot, label) = {
            let s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
        // The PIN derivation runs on a front of its own, holding no lock: the session stays
        // free for the module's visits (other logins, logouts, closes).
        let mut front = state::take_front(pooled, &opener)?;
        let made = (|| {
            let api = front.api();
            let info = api.info().map_err(|e| rv(&e))?;
            let mode = info.auth_mode.ok_or(CKR_DEVICE_ERROR)?;
            let credential = match (mode, pin, role) {
                (AuthMode::Password, Some(p), _) => LoginCredential::Secret(p),
                (AuthMode::Password, None, _) => return Err(CKR_ARGUMENTS_BAD),
                // An activated Crypto Officer or User: the challenge secret as PIN.
                (AuthMode::Ped, Some(p), Role::CryptoOfficer | Role::CryptoUser) => {
                    LoginCredential::Secret(p)
                }
                // Otherwise the PED: the role's key files in the configured PED directory,
                // presented to the HSM, which checks them.
                (AuthMode::Ped, _, _) => {
                    let prefix = ferrohsm_core::ped::default_key_prefix(
                        &info.serial,
                        Some(&label),
                        role.short(),
                    );
                    let keys = ferrohsm_core::ped::default_keys(&ped_dir, &prefix);
                    if keys.is_empty() {
                        state::log(
                            opener.config.log.as_deref(),
                            &format!("no PED keys for {prefix} in {}", ped_dir.display()),
                        );
                        return Err(CKR_PIN_INCORRECT);
                    }
                    let pin = std::env::var("FERROHSM_PED_PIN")
                        .ok()
                        .and_then(|p| Pin::ped_pin(&p).ok());
                    LoginCredential::ped_key_files(&keys, pin).map_err(|e| rv(&e))?
                }
            };
            let id = api
                .login(role, Some(&label), credential)
                .map_err(|e| match e {
                    HsmError::State(_) if role == Role::CryptoOfficer => {
                        CKR_USER_PIN_NOT_INITIALIZED
                    }
                    HsmError::Refused(_) | HsmError::InvalidInput(_) => CKR_PIN_INCORRECT,
                    e => rv(&e),
                })?;
            let engine = match &front {
                Front::Embedded(e) => Some(e.engine_session(id).map_err(|e| rv(&e))?),
                Front::Remote(_) | Front::Group(_) => None,
            };
            Ok(Login { user, id, engine })
        })();
        let login = match made {
            Ok(l) => Arc::new(l),
            Err(e) => {
                with_module(|m| state::pool_front(m, front))?;
                return Err(e);
            }
        };
        let landed = with_module_mut(|m| {
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
            state::share_login(m, slot, Some(&login))?;
            m.logins.insert(slot, login.clone());
            Ok(())
        });
        if landed.is_err() {
            // Not kept: it must not stay live in the HSM either.
            let _ = front.api().logout(login.id);
        }
        with_module(|m| state::pool_front(m, front))?;
        landed
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
        let slot = s.lock().unwrap_or_else(PoisonError::into_inner).slot;
        with_module_mut(|m| {
            let login = m.logins.remove(&slot).ok_or(CKR_USER_NOT_LOGGED_IN)?;
            // The HSM drops the login's keys, session objects and secure channels now.
            let mut session = s.lock().unwrap_or_else(PoisonError::into_inner);
            super::gp::close_channels(&mut session);
            end_login(&mut session, &login);
            drop(session);
            clear_login(m, slot)?;
            drop(login);
            ferrohsm_core::login_memo::purge_expired();
            Ok(())
        })
    })())
}

pub unsafe fn C_SessionCancel(h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        if flags & CKF_SIGN != 0 {
            s.sign = None;
            s.gp.end(super::ops::Kind::Sign);
        }
        if flags & CKF_VERIFY != 0 {
            s.verify = None;
        }
        if flags & CKF_ENCRYPT != 0 {
            s.encrypt = None;
            s.gp.end(super::ops::Kind::Encrypt);
        }
        if flags & CKF_DECRYPT != 0 {
            s.decrypt = None;
            s.gp.end(super::ops::Kind::Decrypt);
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
