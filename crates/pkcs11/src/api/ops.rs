//! Operations with keys: sign, verify, encrypt and decrypt, single- and multi-part.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::*;

/// Which operation slot of a session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
}

pub(super) fn slot_of(s: &mut Session, k: Kind) -> &mut Option<Op> {
    match k {
        Kind::Sign => &mut s.sign,
        Kind::Verify => &mut s.verify,
        Kind::Encrypt => &mut s.encrypt,
        Kind::Decrypt => &mut s.decrypt,
    }
}

pub(super) unsafe fn op_init(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
    k: Kind,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().unwrap_or_else(PoisonError::into_inner);
    let s = &mut *guard;
    if slot_of(s, k).is_some() || s.gp.busy(k) {
        return Err(CKR_OPERATION_ACTIVE);
    }
    // SAFETY: mech::read checks for NULL; validity per contract.
    let (code, p) = unsafe { mech::read(m)? };
    if crate::gp_mech::is_gp(code) {
        // SAFETY: the parameter's pointers are valid per contract.
        return unsafe { super::gp::op_init(s, code, &p, key, k) };
    }
    let login = key_login(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    let key_err = |e: HsmError| match e {
        HsmError::NotFound(_) | HsmError::Refused(_) => CKR_KEY_HANDLE_INVALID,
        e => rv(&e),
    };
    // The key is looked up once, here: loaded when the engine runs here (the operation keeps
    // it until it ends), or described by the server, which loads it at the final call.
    let (op_key, a) = match (s.front.engine(), &login.engine) {
        (Some(engine), Some(es)) => {
            let loaded = engine
                .load_key_memo(es, key, &mut s.key_memo)
                .map_err(key_err)?;
            let a = loaded.info.attrs.clone();
            (OpKey::Loaded(loaded), a)
        }
        _ => match &s.remote_memo {
            Some((h, a)) if *h == key => (OpKey::Remote(key), a.clone()),
            _ => {
                let (id, label) = (login.id, s.label.clone());
                let info = s
                    .api()
                    .object_info(Some(id), &label, key)
                    .map_err(key_err)?;
                s.remote_memo = Some((key, info.attrs.clone()));
                (OpKey::Remote(key), info.attrs)
            }
        },
    };
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
        key: op_key,
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

pub(super) unsafe fn update(h: CK_SESSION_HANDLE, k: Kind, data: *const u8, len: CK_ULONG) -> Rv {
    let s = state::session_only(h)?;
    let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
    if s.gp.busy(k) {
        // The GlobalPlatform mechanisms are single-part.
        s.gp.end(k);
        return Err(CKR_FUNCTION_NOT_SUPPORTED);
    }
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
pub(super) const MAX_MULTIPART: usize = 64 << 20;

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
pub(super) fn op_data<'a>(buffer: &'a [u8], extra: Option<&'a [u8]>) -> std::borrow::Cow<'a, [u8]> {
    match extra {
        Some(x) if buffer.is_empty() => std::borrow::Cow::Borrowed(x),
        Some(x) => std::borrow::Cow::Owned([buffer, x].concat()),
        None => std::borrow::Cow::Borrowed(buffer),
    }
}

/// Signs the op's data (plus `extra`), honouring the two-call convention: a length query or
/// a short buffer leaves the operation active; anything else ends it.
pub(super) unsafe fn sign_out(
    h: CK_SESSION_HANDLE,
    extra: Option<&[u8]>,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().unwrap_or_else(PoisonError::into_inner);
    let s = &mut *guard;
    if s.gp.busy(Kind::Sign) {
        // SAFETY: out/out_len validity per contract.
        return unsafe {
            super::gp::finish(s, Kind::Sign, extra.unwrap_or_default(), out, out_len)
        };
    }
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
        let login = key_login(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let data = op_data(&op.buffer, extra);
        // Raw PKCS#1 v1.5 pads the data itself: it must leave room for the padding.
        if op.mech == Mechanism::RsaPkcs1Raw
            && data.len() + 11 > ferrohsm_core::mechanism::signature_len(op.spec, op.mech)
        {
            return Err(CKR_DATA_LEN_RANGE);
        }
        let sign_err = |e: HsmError| match e {
            HsmError::InvalidInput(_) => CKR_DATA_INVALID,
            e => rv(&e),
        };
        match (&op.key, s.front.engine(), &login.engine) {
            (OpKey::Loaded(key), Some(engine), Some(es)) => engine
                .sign_loaded_into(es, key, op.mech, &data, &mut s.mac, |sig| {
                    // SAFETY: as above.
                    unsafe { out_bytes(sig, out, out_len) }
                })
                .map_err(sign_err)??,
            (OpKey::Remote(key), ..) => {
                let sig = s
                    .front
                    .api()
                    .sign(login.id, *key, op.mech, &data)
                    .map_err(sign_err)?;
                // SAFETY: as above.
                unsafe { out_bytes(&sig, out, out_len)? }
            }
            _ => return Err(CKR_GENERAL_ERROR),
        }
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

pub(super) unsafe fn verify_with(
    h: CK_SESSION_HANDLE,
    extra: Option<&[u8]>,
    sig: *const CK_BYTE,
    sig_len: CK_ULONG,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().unwrap_or_else(PoisonError::into_inner);
    let s = &mut *guard;
    let op = s.verify.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    // SAFETY: valid for `sig_len` bytes per contract.
    let sig = unsafe { ffi::slice(sig, sig_len)? };
    if sig.len() != ferrohsm_core::mechanism::signature_len(op.spec, op.mech) {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let login = key_login(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    let data = op_data(&op.buffer, extra);
    let verified = match (&op.key, s.front.engine(), &login.engine) {
        (OpKey::Loaded(key), Some(engine), Some(es)) => {
            engine.verify_loaded(es, key, op.mech, &data, sig)
        }
        (OpKey::Remote(key), ..) => s.front.api().verify(login.id, *key, op.mech, &data, sig),
        _ => return Err(CKR_GENERAL_ERROR),
    };
    match verified {
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
                    s.lock().unwrap_or_else(PoisonError::into_inner).verify = None;
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
pub(super) unsafe fn cipher(
    h: CK_SESSION_HANDLE,
    k: Kind,
    data: *const CK_BYTE,
    len: CK_ULONG,
    final_part: bool,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    let s = state::session_only(h)?;
    let mut guard = s.lock().unwrap_or_else(PoisonError::into_inner);
    let s = &mut *guard;
    if s.gp.busy(k) {
        if final_part {
            s.gp.end(k);
            return Err(CKR_FUNCTION_NOT_SUPPORTED);
        }
        // SAFETY: valid for `len` bytes per contract; out/out_len likewise.
        return unsafe {
            let d = ffi::slice(data, len)?;
            super::gp::finish(s, k, d, out, out_len)
        };
    }
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
        let login = key_login(&s.login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let encrypt_err = |e: HsmError| match e {
            HsmError::InvalidInput(_) => CKR_DATA_LEN_RANGE,
            e => rv(&e),
        };
        let decrypt_err = |e: HsmError| match e {
            HsmError::Crypto(_) | HsmError::InvalidInput(_) => CKR_ENCRYPTED_DATA_INVALID,
            e => rv(&e),
        };
        let (key, engine, es) = match (key, s.front.engine(), &login.engine) {
            (OpKey::Loaded(key), Some(engine), Some(es)) => (key, engine, es),
            (OpKey::Remote(key), ..) => {
                let api = s.front.api();
                // A plaintext is wiped once copied out.
                let result = zeroize::Zeroizing::new(match k {
                    Kind::Encrypt => api
                        .encrypt(login.id, *key, mech, params, d)
                        .map_err(encrypt_err)?,
                    _ => api
                        .decrypt(login.id, *key, mech, params, d)
                        .map_err(decrypt_err)?,
                });
                // SAFETY: as below.
                unsafe { out_bytes(&result, out, out_len)? };
                return Ok(false);
            }
            _ => return Err(CKR_GENERAL_ERROR),
        };
        if (mech, k) == (Mechanism::AesGcm, Kind::Encrypt) {
            // Sealed where the caller wants it: one copy of the message, as a direct caller
            // of the crypto library would make.
            // SAFETY: length_only confirmed `out` holds at least `need` bytes; nothing else
            // touches it while `buf` lives.
            if let Some(buf) = unsafe { ffi::output_with(out, need, d) } {
                return match engine.encrypt_loaded_in_place(es, key, mech, params, buf, d.len()) {
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
            Kind::Encrypt => engine
                .encrypt_loaded(es, key, mech, params, d)
                .map_err(encrypt_err)?,
            _ => engine
                .decrypt_loaded(es, key, mech, params, d)
                .map_err(decrypt_err)?
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
pub(super) unsafe fn cipher_update(
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
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
