//! GlobalPlatform through PKCS#11: the vendor mechanisms of [`crate::gp_mech`] on master key
//! sets (check values, set generation, ceremony import, rotation) and on secure channels to
//! cards (opened by `C_DeriveKey`, used by `C_Encrypt`/`C_Decrypt`/`C_WrapKey`, closed by
//! `C_DestroyObject`). Every computation is the HSM's `gp` call; the module keeps only which
//! channel a handle names and, between a length query and the call that follows, the answer
//! already computed (a channel's MAC chain moves on at each command, so it is computed once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrohsm_core::api::{GpAnswer, GpCall};
use ferrohsm_core::object::GpMaster;
use zeroize::Zeroizing;

use super::ops::Kind;
use super::*;
use crate::gp_mech::*;

/// Handles of secure channel objects start here: a range no HSM object uses.
const CHANNEL_BASE: CK_OBJECT_HANDLE = 0x4750_0000_0000_0000;
static NEXT_CHANNEL: AtomicU64 = AtomicU64::new(CHANNEL_BASE);

/// A session's GlobalPlatform work.
#[derive(Default)]
pub struct GpState {
    sign: Option<GpOp>,
    encrypt: Option<GpOp>,
    decrypt: Option<GpOp>,
    /// Open channels: handle → the HSM's channel id (this session's alone).
    channels: HashMap<CK_OBJECT_HANDLE, String>,
    /// A PUT KEY computed for a length query: (what was asked, the command).
    put_key: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

/// A pending single-part operation and, once computed, (its input, its output).
struct GpOp {
    call: Pending,
    done: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

enum Pending {
    Kcv(GpCall),
    Wrap(String),
    Unwrap(String),
}

impl GpState {
    fn slot(&mut self, k: Kind) -> Option<&mut Option<GpOp>> {
        match k {
            Kind::Sign => Some(&mut self.sign),
            Kind::Encrypt => Some(&mut self.encrypt),
            Kind::Decrypt => Some(&mut self.decrypt),
            Kind::Verify => None,
        }
    }

    /// Whether a GlobalPlatform operation of kind `k` is in progress.
    pub(super) fn busy(&mut self, k: Kind) -> bool {
        self.slot(k).is_some_and(|o| o.is_some())
    }

    /// Ends the operation of kind `k`.
    pub(super) fn end(&mut self, k: Kind) {
        if let Some(o) = self.slot(k) {
            *o = None;
        }
    }

    /// Ends every operation in progress and forgets the channels (the login ended: the HSM
    /// dropped its channels with it).
    pub fn end_operations(&mut self) {
        self.sign = None;
        self.encrypt = None;
        self.decrypt = None;
        self.put_key = None;
        self.channels.clear();
    }

    /// Whether `h` is one of this session's channels.
    pub fn is_channel(&self, h: CK_OBJECT_HANDLE) -> bool {
        self.channels.contains_key(&h)
    }
}

fn login_of(s: &Session) -> Rv<ferrohsm_core::api::LoginId> {
    key_session(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)
}

/// The marker of the set key `h`, or `not_gp` when it is no set's key.
fn master(s: &mut Session, h: CK_OBJECT_HANDLE, not_gp: CK_RV) -> Rv<GpMaster> {
    let login = s.login.clone();
    object(s, &login, h)
        .map_err(|_| not_gp)?
        .attrs
        .gp
        .ok_or(not_gp)
}

fn channel_id(s: &Session, h: CK_OBJECT_HANDLE, bad: CK_RV) -> Rv<String> {
    s.gp.channels.get(&h).cloned().ok_or(bad)
}

fn unhex(v: &str) -> Rv<Zeroizing<Vec<u8>>> {
    hex::decode(v)
        .map(Zeroizing::new)
        .map_err(|_| CKR_DEVICE_ERROR)
}

/// The bytes of an APDU answer.
fn apdu_of(a: GpAnswer) -> Rv<Zeroizing<Vec<u8>>> {
    match a {
        GpAnswer::Apdu { apdu } => unhex(&apdu),
        _ => Err(CKR_DEVICE_ERROR),
    }
}

/// `C_SignInit`/`C_EncryptInit`/`C_DecryptInit` with a GlobalPlatform mechanism.
///
/// # Safety
/// `p` is the mechanism's parameter, whose pointers are valid per the caller.
pub(super) unsafe fn op_init(
    s: &mut Session,
    code: CK_MECHANISM_TYPE,
    p: &[u8],
    key: CK_OBJECT_HANDLE,
    k: Kind,
) -> Rv {
    login_of(s)?;
    let call = match (k, code) {
        (Kind::Sign, CKM_FERROHSM_GP_KCV) => {
            let m = master(s, key, CKR_KEY_TYPE_INCONSISTENT)?;
            // SAFETY: per this function's contract.
            Pending::Kcv(unsafe { kcv_call(&m, p)? })
        }
        (Kind::Encrypt, CKM_FERROHSM_GP_CHANNEL_WRAP)
        | (Kind::Decrypt, CKM_FERROHSM_GP_CHANNEL_UNWRAP) => {
            if !p.is_empty() {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let id = channel_id(s, key, CKR_KEY_HANDLE_INVALID)?;
            if k == Kind::Encrypt {
                Pending::Wrap(id)
            } else {
                Pending::Unwrap(id)
            }
        }
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    let slot = s.gp.slot(k).ok_or(CKR_MECHANISM_INVALID)?;
    *slot = Some(GpOp { call, done: None });
    Ok(())
}

/// `C_Sign`/`C_Encrypt`/`C_Decrypt` of a GlobalPlatform operation on `data`, honouring the
/// two-call convention: the answer is computed once and kept until it is handed out.
///
/// # Safety
/// `out`/`out_len` valid per the PKCS#11 contract.
pub(super) unsafe fn finish(
    s: &mut Session,
    k: Kind,
    data: &[u8],
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    let mut op =
        s.gp.slot(k)
            .and_then(Option::take)
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    let res = (|| {
        if op.done.as_ref().is_some_and(|(input, _)| input != data) {
            // The call after a length query must carry the same data.
            return Err(CKR_DATA_INVALID);
        }
        if op.done.is_none() {
            let login = login_of(s)?;
            let result = match &op.call {
                Pending::Kcv(call) => {
                    if !data.is_empty() {
                        return Err(CKR_DATA_LEN_RANGE);
                    }
                    match s.api().gp(login, call.clone()).map_err(|e| match e {
                        HsmError::InvalidInput(_) => CKR_MECHANISM_PARAM_INVALID,
                        HsmError::NotFound(_) => CKR_KEY_HANDLE_INVALID,
                        e => rv(&e),
                    })? {
                        GpAnswer::Kcv { kcv } => unhex(&kcv)?,
                        _ => return Err(CKR_DEVICE_ERROR),
                    }
                }
                Pending::Wrap(channel) => apdu_of(
                    s.api()
                        .gp(
                            login,
                            GpCall::Wrap {
                                channel: channel.clone(),
                                command: hex::encode(data),
                            },
                        )
                        .map_err(|e| match e {
                            HsmError::InvalidInput(_) => CKR_DATA_INVALID,
                            HsmError::NotFound(_) => CKR_KEY_HANDLE_INVALID,
                            e => rv(&e),
                        })?,
                )?,
                Pending::Unwrap(channel) => apdu_of(
                    s.api()
                        .gp(
                            login,
                            GpCall::Unwrap {
                                channel: channel.clone(),
                                response: hex::encode(data),
                            },
                        )
                        .map_err(|e| match e {
                            // An R-MAC that does not verify, or a malformed answer.
                            HsmError::Refused(_) | HsmError::InvalidInput(_) => {
                                CKR_ENCRYPTED_DATA_INVALID
                            }
                            HsmError::NotFound(_) => CKR_KEY_HANDLE_INVALID,
                            // Nothing was sent on the channel to answer.
                            HsmError::State(_) => CKR_FUNCTION_REJECTED,
                            e => rv(&e),
                        })?,
                )?,
            };
            op.done = Some((data.to_vec(), result));
        }
        let (_, result) = op.done.as_ref().ok_or(CKR_GENERAL_ERROR)?;
        // SAFETY: per this function's contract.
        unsafe { out_bytes(result, out, out_len) }
    })();
    let keep = match res {
        Ok(()) => out.is_null(),
        Err(e) => e == CKR_BUFFER_TOO_SMALL,
    };
    if keep {
        if let Some(slot) = s.gp.slot(k) {
            *slot = Some(op);
        }
    }
    res
}

/// Only `CKA_CLASS` = `CKO_SECRET_KEY` and `CKA_TOKEN` = `token` may accompany a set or
/// channel mechanism: everything else about the keys is the HSM's to decide.
fn plain_template(t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)], token: bool) -> Rv {
    for (ty, v) in t {
        let ok = match *ty {
            CKA_CLASS => ffi::read_ulong(v)? == CKO_SECRET_KEY,
            CKA_TOKEN => ffi::read_bool(v)? == token,
            _ => false,
        };
        if !ok {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
    }
    Ok(())
}

/// `C_GenerateKey` with a set mechanism: the new set's ENC key.
///
/// # Safety
/// `p` is the mechanism's parameter, whose pointers are valid per the caller.
pub(super) unsafe fn generate(
    h: CK_SESSION_HANDLE,
    code: CK_MECHANISM_TYPE,
    p: &[u8],
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Rv<CK_OBJECT_HANDLE> {
    plain_template(t, true)?;
    // SAFETY: per this function's contract.
    let call = unsafe { set_call(code, p)? };
    let (s, login) = state::session(h)?;
    let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
    may_change(&s, true)?;
    let officer = is_officer(&login);
    let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    let info = match s.api().gp(es, call).map_err(|e| match e {
        HsmError::Refused(_) if !officer => CKR_USER_NOT_LOGGED_IN,
        // A mistyped component or check value, a set that exists, a bad name.
        HsmError::InvalidInput(_) => CKR_MECHANISM_PARAM_INVALID,
        // A well-known value (the one list of them).
        HsmError::KeyUse(_) => CKR_KEY_FUNCTION_NOT_PERMITTED,
        e => rv(&e),
    })? {
        GpAnswer::Set { set } => set,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let label = s.label.clone();
    let filter = ObjectFilter {
        label: Some(format!("gp:{}:v{}:enc", info.set, info.version)),
        ..Default::default()
    };
    let found = s
        .api()
        .find(Some(es), &label, &filter)
        .map_err(|e| rv(&e))?;
    found
        .iter()
        .find(|o| {
            o.attrs
                .gp
                .as_ref()
                .is_some_and(|g| g.set == info.set && g.version == info.version && g.role == "enc")
        })
        .map(|o| o.handle as CK_OBJECT_HANDLE)
        .ok_or(CKR_DEVICE_ERROR)
}

/// `C_DeriveKey` with [`CKM_FERROHSM_GP_CHANNEL_OPEN`]: a channel to the card whose answer
/// the parameter carries, opened with the keys of `base`'s set; the EXTERNAL AUTHENTICATE
/// command is written where the parameter says.
///
/// # Safety
/// `p` is the mechanism's parameter, whose pointers are valid per the caller.
pub(super) unsafe fn open_channel(
    h: CK_SESSION_HANDLE,
    code: CK_MECHANISM_TYPE,
    p: &[u8],
    base: CK_OBJECT_HANDLE,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Rv<CK_OBJECT_HANDLE> {
    if code != CKM_FERROHSM_GP_CHANNEL_OPEN {
        return Err(CKR_MECHANISM_INVALID);
    }
    plain_template(t, false)?;
    let o: CK_FERROHSM_GP_OPEN_PARAMS = mech::param(p)?;
    if o.pExternalAuthenticate.is_null() || o.pulExternalAuthenticateLen.is_null() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: non-NULL per check, valid per the caller's parameter.
    let room = unsafe { *o.pulExternalAuthenticateLen };
    if room < EXTERNAL_AUTHENTICATE_ROOM {
        // SAFETY: as above.
        unsafe { *o.pulExternalAuthenticateLen = EXTERNAL_AUTHENTICATE_ROOM };
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: pCardAnswer holds ulCardAnswerLen bytes per the caller's parameter.
    let iu = unsafe { ffi::slice(o.pCardAnswer as *const u8, o.ulCardAnswerLen) }
        .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
    let level = level_name(o.securityLevel)?;
    let i = u8::try_from(o.scp02Option).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
    let (s, _) = state::session(h)?;
    let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
    let login = login_of(&s)?;
    let m = master(&mut s, base, CKR_KEY_TYPE_INCONSISTENT)?;
    let call = GpCall::Open {
        keys: keys_of(&m, o.diversification)?,
        host_challenge: hex::encode(o.hostChallenge),
        iu: hex::encode(iu),
        level,
        scp02_i: i,
    };
    let (channel, apdu) = match s.api().gp(login, call).map_err(|e| match e {
        HsmError::InvalidInput(_) => CKR_MECHANISM_PARAM_INVALID,
        // The card's cryptogram does not verify: not these keys, or not a genuine card.
        HsmError::Refused(_) => CKR_FUNCTION_REJECTED,
        HsmError::NotFound(_) => CKR_KEY_HANDLE_INVALID,
        e => rv(&e),
    })? {
        GpAnswer::Opened { channel, apdu } => (channel, unhex(&apdu)?),
        _ => return Err(CKR_DEVICE_ERROR),
    };
    if apdu.len() as CK_ULONG > room {
        let _ = s.api().gp(login, GpCall::Close { channel });
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: the caller's buffer holds `room` >= apdu.len() bytes; the length is non-NULL.
    unsafe {
        std::ptr::copy_nonoverlapping(apdu.as_ptr(), o.pExternalAuthenticate, apdu.len());
        *o.pulExternalAuthenticateLen = apdu.len() as CK_ULONG;
    }
    let handle = NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed) as CK_OBJECT_HANDLE;
    s.gp.channels.insert(handle, channel);
    Ok(handle)
}

/// `C_WrapKey` with [`CKM_FERROHSM_GP_PUT_KEY`]: PUT KEY of `key`'s set for the card of
/// channel `wrapping`, protected on the channel.
///
/// # Safety
/// `p` is the mechanism's parameter; `out`/`out_len` valid per the PKCS#11 contract.
pub(super) unsafe fn put_key(
    h: CK_SESSION_HANDLE,
    code: CK_MECHANISM_TYPE,
    p: &[u8],
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    if code != CKM_FERROHSM_GP_PUT_KEY {
        return Err(CKR_MECHANISM_INVALID);
    }
    let (diversification, old_version, new_version) = put_key_params(p)?;
    let (s, _) = state::session(h)?;
    let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
    let login = login_of(&s)?;
    let channel = channel_id(&s, wrapping, CKR_WRAPPING_KEY_HANDLE_INVALID)?;
    let asked = [&wrapping.to_ne_bytes()[..], &key.to_ne_bytes()[..], p].concat();
    let apdu = match s.gp.put_key.take() {
        Some((a, apdu)) if a == asked => apdu,
        _ => {
            let m = master(&mut s, key, CKR_KEY_HANDLE_INVALID)?;
            let call = GpCall::PutKey {
                channel,
                keys: keys_of(&m, diversification)?,
                old_version,
                new_version,
            };
            apdu_of(s.api().gp(login, call).map_err(|e| match e {
                HsmError::InvalidInput(_) => CKR_MECHANISM_PARAM_INVALID,
                HsmError::NotFound(_) => CKR_WRAPPING_KEY_HANDLE_INVALID,
                e => rv(&e),
            })?)?
        }
    };
    // SAFETY: per this function's contract.
    let res = unsafe { out_bytes(&apdu, out, out_len) };
    if out.is_null() || res == Err(CKR_BUFFER_TOO_SMALL) {
        s.gp.put_key = Some((asked, apdu));
    }
    res
}

/// `C_DestroyObject` of a channel: closed in the HSM (its session keys dropped). `None` when
/// `obj` is no channel of this session.
pub(super) fn destroy(s: &mut Session, obj: CK_OBJECT_HANDLE) -> Option<Rv> {
    let channel = s.gp.channels.remove(&obj)?;
    Some(login_of(s).and_then(|login| {
        s.api()
            .gp(login, GpCall::Close { channel })
            .map(drop)
            .map_err(|e| rv(&e))
    }))
}

/// Closes every channel of the session (it is closing, or its login ending).
pub(super) fn close_channels(s: &mut Session) {
    let channels: Vec<String> = s.gp.channels.drain().map(|(_, c)| c).collect();
    if let Ok(login) = login_of(s) {
        for channel in channels {
            let _ = s.api().gp(login, GpCall::Close { channel });
        }
    }
}

/// An attribute of a channel object: a secret of the HSM's, in this session only.
pub(super) fn channel_attr(t: CK_ATTRIBUTE_TYPE) -> Attr {
    let b = |v: bool| Attr::Value(vec![v as u8]);
    let ulong = |v: CK_ULONG| Attr::Value(v.to_ne_bytes().to_vec());
    match t {
        CKA_CLASS => ulong(CKO_SECRET_KEY),
        CKA_KEY_TYPE => ulong(CKK_FERROHSM_GP_CHANNEL),
        CKA_TOKEN | CKA_EXTRACTABLE | CKA_MODIFIABLE | CKA_COPYABLE => b(false),
        CKA_PRIVATE | CKA_SENSITIVE | CKA_DESTROYABLE | CKA_ENCRYPT | CKA_DECRYPT | CKA_WRAP => {
            b(true)
        }
        CKA_LABEL => Attr::Value(b"gp-secure-channel".to_vec()),
        CKA_VALUE => Attr::Sensitive,
        _ => Attr::Invalid,
    }
}
