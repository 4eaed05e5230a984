//! Digests and random bytes.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::*;

pub unsafe fn C_DigestInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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

pub(super) unsafe fn digest_out(
    h: CK_SESSION_HANDLE,
    extra: Option<&[u8]>,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv {
    let (s, _) = state::session(h)?;
    let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
        let (s, _) = state::session(h)?;
        if out.is_null() && len > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if len == 0 {
            return Ok(());
        }
        let n = usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?;
        if n > ffi::MAX_CALLER_BYTES {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: `out` holds `len` bytes per contract (NULL refused above); the length is
        // bounded above.
        let buf = unsafe { std::slice::from_raw_parts_mut(out, n) };
        // The HSM's generator (the server's, through one), at most its limit per call.
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        for chunk in buf.chunks_mut(ferrohsm_core::api::MAX_RANDOM) {
            let r = s.api().random(chunk.len()).map_err(|e| rv(&e))?;
            if r.len() != chunk.len() {
                return Err(CKR_DEVICE_ERROR);
            }
            chunk.copy_from_slice(&r);
        }
        Ok(())
    })())
}
