//! Reading and writing caller memory. Every raw pointer the module touches goes through here,
//! checked for NULL and paired with its length.

use cryptoki_sys::*;

/// A CK_RV-carrying result.
pub type Rv<T = ()> = Result<T, CK_RV>;

/// Borrows `len` elements at `p`. NULL is allowed only with `len == 0`.
///
/// # Safety
/// `p` must point to `len` valid, initialised `T` for the duration of the borrow, or be NULL.
pub unsafe fn slice<'a, T>(p: *const T, len: CK_ULONG) -> Rv<&'a [T]> {
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(CKR_ARGUMENTS_BAD)
        };
    }
    let n = usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?;
    // SAFETY: non-NULL and, per the caller's contract, valid for `n` elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Writes `v` through `p`.
///
/// # Safety
/// `p` must be NULL or valid for a write of `T`.
pub unsafe fn put<T>(p: *mut T, v: T) -> Rv {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL and writable per the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// The two-call length convention for byte output: a NULL buffer asks for the length; a
/// short buffer gets `CKR_BUFFER_TOO_SMALL` and the length; otherwise the bytes are copied.
///
/// # Safety
/// `len` must be NULL or valid for read and write; `out` NULL or valid for `*len` bytes.
pub unsafe fn out_bytes(data: &[u8], out: *mut CK_BYTE, len: *mut CK_ULONG) -> Rv {
    if len.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, valid per contract.
    let have = unsafe { *len };
    let need = data.len() as CK_ULONG;
    // SAFETY: as above.
    unsafe { *len = need };
    if out.is_null() {
        return Ok(());
    }
    if have < need {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `out` holds at least `have >= need` bytes per contract; regions cannot overlap
    // since `data` is our own memory.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), out, data.len()) };
    Ok(())
}

/// The two-call length convention for an array of values (slot ids, mechanism types,
/// interfaces): a NULL array asks for the count; a short one gets `CKR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `count` must be NULL or valid for read and write; `out` NULL or valid for `*count` items.
pub unsafe fn out_array<T: Copy>(items: &[T], out: *mut T, count: *mut CK_ULONG) -> Rv {
    if count.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, valid per contract.
    let have = unsafe { *count };
    // SAFETY: as above.
    unsafe { *count = items.len() as CK_ULONG };
    if out.is_null() {
        return Ok(());
    }
    if (have as usize) < items.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `out` holds `have >= len` items per contract, and is not our memory.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), out, items.len()) };
    Ok(())
}

/// Whether a two-call output is a length query or too small, answering it if so, before any
/// work is done. Returns `Ok(true)` when the caller must stop here (answered).
///
/// # Safety
/// As for [`out_bytes`].
pub unsafe fn length_only(need: usize, out: *mut CK_BYTE, len: *mut CK_ULONG) -> Rv<bool> {
    if len.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL per check; valid per contract.
    let have = unsafe { *len };
    if out.is_null() {
        // SAFETY: as above.
        unsafe { *len = need as CK_ULONG };
        return Ok(true);
    }
    if (have as usize) < need {
        // SAFETY: as above.
        unsafe { *len = need as CK_ULONG };
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    Ok(false)
}

/// A blank-padded fixed-width field, as PKCS#11 info structures use.
pub fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let b = s.as_bytes();
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// A `CK_ULONG` attribute value.
pub fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Reads a `CK_ULONG` attribute value.
pub fn read_ulong(v: &[u8]) -> Rv<CK_ULONG> {
    let a: [u8; std::mem::size_of::<CK_ULONG>()] =
        v.try_into().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    Ok(CK_ULONG::from_ne_bytes(a))
}

/// Reads a `CK_BBOOL` attribute value.
pub fn read_bool(v: &[u8]) -> Rv<bool> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(CKR_ATTRIBUTE_VALUE_INVALID),
    }
}

/// Copies a template in from the caller: (type, value) pairs.
///
/// # Safety
/// `p` must be NULL (with `n == 0`) or point to `n` attributes whose value pointers are valid
/// for their lengths.
pub unsafe fn template(
    p: *const CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Rv<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    // SAFETY: per the caller's contract.
    let attrs = unsafe { slice(p, n)? };
    attrs
        .iter()
        .map(|a| {
            // SAFETY: each attribute's pValue is valid for ulValueLen bytes per contract.
            let v = unsafe { slice(a.pValue as *const u8, a.ulValueLen) }
                .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}
