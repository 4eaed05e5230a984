//! Reading and writing caller memory. Every raw pointer the module touches goes through here,
//! checked for NULL and paired with its length.

use cryptoki_sys::*;

/// A CK_RV-carrying result.
pub type Rv<T = ()> = Result<T, CK_RV>;

/// The most caller memory the module reads or writes in one call (data to sign or encrypt,
/// an output buffer, a template's values together). A length beyond it is refused
/// (`CKR_ARGUMENTS_BAD`) before it is trusted: an absurd length is a caller's bug or an
/// attack, never 256 MiB of data.
pub const MAX_CALLER_BYTES: usize = 256 << 20;

/// The most attributes one template may hold.
pub const MAX_TEMPLATE: CK_ULONG = 1024;

/// Borrows `len` elements at `p`. NULL is allowed only with `len == 0`; more than
/// [`MAX_CALLER_BYTES`] is refused.
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
    if n.saturating_mul(std::mem::size_of::<T>().max(1)) > MAX_CALLER_BYTES {
        return Err(CKR_ARGUMENTS_BAD);
    }
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

/// Copies `input` to the start of the caller's output buffer and borrows the buffer's first
/// `len` bytes (the rest zeroed), so that an operation can finish the output where it lies
/// instead of copying it there afterwards. `None` when `out` is NULL, `len` is shorter than
/// `input`, or the two overlap (an in-place call): the caller then takes the copying path.
///
/// # Safety
/// `out` must be NULL or valid for writes of `len` bytes, and not be accessed in any other
/// way while the borrow lives.
pub unsafe fn output_with<'a>(out: *mut CK_BYTE, len: usize, input: &[u8]) -> Option<&'a mut [u8]> {
    if out.is_null() || len < input.len() || len > MAX_CALLER_BYTES {
        return None;
    }
    let (o, i) = (out as usize, input.as_ptr() as usize);
    if o < i.checked_add(input.len())? && i < o.checked_add(len)? {
        return None;
    }
    // SAFETY: `out` is valid for `len >= input.len()` bytes and does not overlap `input`
    // (checked above). Every byte is written before the slice is formed, so the borrow covers
    // initialised memory only, whatever the caller's buffer held.
    unsafe {
        std::ptr::copy_nonoverlapping(input.as_ptr(), out, input.len());
        std::ptr::write_bytes(out.add(input.len()), 0, len - input.len());
        Some(std::slice::from_raw_parts_mut(out, len))
    }
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

/// Copies a template in from the caller: (type, value) pairs. The value of an array
/// attribute (`CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`: `CKF_ARRAY_ATTRIBUTE` set) is the
/// template it holds, copied in too and kept in [`encode_nested`]'s form; arrays do not nest
/// further.
///
/// # Safety
/// `p` must be NULL (with `n == 0`) or point to `n` attributes whose value pointers are valid
/// for their lengths (an array attribute's, for its attributes and theirs).
pub unsafe fn template(
    p: *const CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Rv<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    // SAFETY: per the caller's contract.
    unsafe { template_at(p, n, true) }
}

/// Whether an attribute's value is an array of attributes.
pub fn is_array(t: CK_ATTRIBUTE_TYPE) -> bool {
    t & CKF_ARRAY_ATTRIBUTE != 0
}

/// [`template`], with array attributes allowed (`nest`) or refused.
///
/// # Safety
/// As [`template`].
unsafe fn template_at(
    p: *const CK_ATTRIBUTE,
    n: CK_ULONG,
    nest: bool,
) -> Rv<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    if n > MAX_TEMPLATE {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: per the caller's contract.
    let attrs = unsafe { slice(p, n)? };
    let total = attrs
        .iter()
        .fold(0usize, |t, a| t.saturating_add(a.ulValueLen as usize));
    if total > MAX_CALLER_BYTES {
        return Err(CKR_ARGUMENTS_BAD);
    }
    attrs
        .iter()
        .map(|a| {
            if is_array(a.type_) {
                let size = std::mem::size_of::<CK_ATTRIBUTE>();
                let aligned =
                    (a.pValue as usize).is_multiple_of(std::mem::align_of::<CK_ATTRIBUTE>());
                if !nest || !(a.ulValueLen as usize).is_multiple_of(size) || !aligned {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                }
                let count = (a.ulValueLen as usize / size) as CK_ULONG;
                // SAFETY: an array attribute's pValue holds `count` attributes per contract
                // (its length is a whole number of them, its address aligned: checked).
                let inner = unsafe { template_at(a.pValue as *const CK_ATTRIBUTE, count, false) }
                    .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                return Ok((a.type_, encode_nested(&inner)));
            }
            // SAFETY: each attribute's pValue is valid for ulValueLen bytes per contract.
            let v = unsafe { slice(a.pValue as *const u8, a.ulValueLen) }
                .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

/// The value kept for an array attribute: each inner attribute as its type (native width),
/// its length (4 bytes) and its value. It never leaves the process.
pub fn encode_nested(items: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in items {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// The attributes [`encode_nested`] encoded.
pub fn decode_nested(mut b: &[u8]) -> Rv<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    const W: usize = std::mem::size_of::<CK_ATTRIBUTE_TYPE>();
    let bad = |_| CKR_ATTRIBUTE_VALUE_INVALID;
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < W + 4 {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        let t = CK_ATTRIBUTE_TYPE::from_le_bytes(b[..W].try_into().map_err(bad)?);
        let n = u32::from_le_bytes(b[W..W + 4].try_into().map_err(bad)?) as usize;
        let v = b.get(W + 4..W + 4 + n).ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
        out.push((t, v.to_vec()));
        b = &b[W + 4 + n..];
    }
    Ok(out)
}

/// Writes an array attribute's value out as `C_GetAttributeValue` does: with `pValue` NULL,
/// only its length; otherwise each element's type, and its value (or, where the element's
/// own `pValue` is NULL, its length).
///
/// # Safety
/// `a.pValue` must be NULL or valid for `a.ulValueLen` bytes of attributes, each with a
/// `pValue` NULL or valid for its `ulValueLen` bytes.
pub unsafe fn put_array(a: &mut CK_ATTRIBUTE, items: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Rv {
    let size = std::mem::size_of::<CK_ATTRIBUTE>();
    let need = items.len() * size;
    if a.pValue.is_null() {
        a.ulValueLen = need as CK_ULONG;
        return Ok(());
    }
    let aligned = (a.pValue as usize).is_multiple_of(std::mem::align_of::<CK_ATTRIBUTE>());
    if (a.ulValueLen as usize) < need || !aligned {
        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: pValue holds at least `items.len()` attributes (length and alignment checked),
    // per the caller's contract.
    let out = unsafe { std::slice::from_raw_parts_mut(a.pValue as *mut CK_ATTRIBUTE, items.len()) };
    let mut result = Ok(());
    for (e, (t, v)) in out.iter_mut().zip(items) {
        e.type_ = *t;
        if e.pValue.is_null() {
            e.ulValueLen = v.len() as CK_ULONG;
        } else if (e.ulValueLen as usize) < v.len() {
            e.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            result = Err(CKR_BUFFER_TOO_SMALL);
        } else {
            // SAFETY: the element's pValue holds ulValueLen >= v.len() bytes per contract.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), e.pValue as *mut u8, v.len()) };
            e.ulValueLen = v.len() as CK_ULONG;
        }
    }
    a.ulValueLen = need as CK_ULONG;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_with_copies_and_zero_fills_but_never_aliases_its_input() {
        let input = [1u8, 2, 3];
        let mut out = [0xeeu8; 6];
        // SAFETY: `out` is a live local of 6 bytes, used only through the borrow.
        let b = unsafe { output_with(out.as_mut_ptr(), 5, &input) }.unwrap();
        assert_eq!(b, &[1, 2, 3, 0, 0]);
        assert_eq!(out[5], 0xee, "nothing past the length is touched");
        // An in-place call (input inside the output) or a short output takes the other path.
        let mut buf = [0u8; 8];
        let p = buf.as_mut_ptr();
        // SAFETY: both views are of the live local `buf`; the function only compares
        // addresses before refusing.
        let (inside, over_end) = unsafe {
            (
                output_with(p, 8, std::slice::from_raw_parts(p.add(2), 3)),
                output_with(p.add(4), 4, std::slice::from_raw_parts(p, 6)),
            )
        };
        assert!(inside.is_none() && over_end.is_none());
        // SAFETY: NULL is refused before any access.
        assert!(unsafe { output_with(std::ptr::null_mut(), 5, &input) }.is_none());
        // SAFETY: refused on length before any access.
        assert!(unsafe { output_with(out.as_mut_ptr(), 2, &input) }.is_none());
    }

    #[test]
    fn nested_templates_round_trip_and_malformed_ones_are_refused() {
        let items = vec![(CKA_SENSITIVE, vec![1u8]), (CKA_LABEL, b"kek".to_vec())];
        assert_eq!(decode_nested(&encode_nested(&items)).unwrap(), items);
        let enc = encode_nested(&items);
        for cut in 1..enc.len() {
            let _ = decode_nested(&enc[..cut]);
        }
        assert!(decode_nested(&enc[..enc.len() - 1]).is_err());
        // A caller's array attribute whose length is not whole attributes is refused.
        let inner = [CK_ATTRIBUTE {
            type_: CKA_SENSITIVE,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        }];
        let outer = [CK_ATTRIBUTE {
            type_: CKA_WRAP_TEMPLATE,
            pValue: inner.as_ptr() as *mut _,
            ulValueLen: 5,
        }];
        // SAFETY: both arrays are live locals; the lengths are what is under test.
        assert_eq!(
            unsafe { template(outer.as_ptr(), 1) },
            Err(CKR_ATTRIBUTE_VALUE_INVALID)
        );
    }
}
