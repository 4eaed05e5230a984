//! `CKA_WRAP_TEMPLATE` and `CKA_UNWRAP_TEMPLATE`, as PKCS#11 defines them, through the module's
//! C functions themselves (the `cryptoki` crate has no array attributes), embedded and through
//! a server: a wrapping key wraps only keys matching its wrap template, every key an
//! unwrapping key unwraps takes its unwrap template, a caller's template saying otherwise is
//! inconsistent, and both templates read back as arrays.

use std::ptr::null_mut;
use std::sync::Mutex;

use cryptoki_sys::*;
use ferrohsm_pkcs11::entry::*;

mod harness;

/// The module (this test binary's own copy) is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

both_ways!(a_wrapping_keys_templates_decide_what_it_wraps_and_what_it_unwraps_into);

/// An attribute whose value is `v` (kept alive by the caller).
fn attr(t: CK_ATTRIBUTE_TYPE, v: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_mut_ptr() as *mut _,
        ulValueLen: v.len() as CK_ULONG,
    }
}

/// An array attribute holding `inner`.
fn array(t: CK_ATTRIBUTE_TYPE, inner: &mut [CK_ATTRIBUTE]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: inner.as_mut_ptr() as *mut _,
        ulValueLen: std::mem::size_of_val(inner) as CK_ULONG,
    }
}

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// Generates an AES key with `extra` attributes added to a token, 16-byte key template.
///
/// # Safety
/// `extra` must be valid attributes (their values alive).
unsafe fn aes(
    h: CK_SESSION_HANDLE,
    extra: &mut Vec<CK_ATTRIBUTE>,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let (mut yes, mut len) = ([1u8], ulong(16));
    let mut t = vec![attr(CKA_TOKEN, &mut yes), attr(CKA_VALUE_LEN, &mut len)];
    t.append(extra);
    let mut out = 0;
    let mut m = mech(CKM_AES_KEY_GEN);
    // SAFETY: per this function's contract; `t` and `out` are live.
    let rv = unsafe { C_GenerateKey(h, &mut m, t.as_mut_ptr(), t.len() as CK_ULONG, &mut out) };
    if rv == CKR_OK {
        Ok(out)
    } else {
        Err(rv)
    }
}

/// One boolean attribute of a key.
///
/// # Safety
/// `h` and `k` as the module handed them out.
unsafe fn flag(h: CK_SESSION_HANDLE, k: CK_OBJECT_HANDLE, t: CK_ATTRIBUTE_TYPE) -> bool {
    let mut v = [9u8];
    let mut a = attr(t, &mut v);
    // SAFETY: `a` points at a live one-byte buffer.
    assert_eq!(unsafe { C_GetAttributeValue(h, k, &mut a, 1) }, CKR_OK);
    v[0] == 1
}

fn a_wrapping_keys_templates_decide_what_it_wraps_and_what_it_unwraps_into() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    harness::password_hsm(&data, true);
    let _server = harness::reach(&data);
    // SAFETY (whole test): every pointer passed is to a live local of the stated length, as
    // the PKCS#11 contract asks of callers.
    unsafe {
        let (_, h) = harness::c_officer_session("tok");

        // The KEK: wraps only sensitive, extractable AES keys that do not derive; what it
        // unwraps is unextractable and encrypts but never decrypts.
        let (mut yes, mut no, mut aes_type) = ([1u8], [0u8], ulong(CKK_AES));
        let (mut yes2, mut no2, mut no3, mut yes3, mut no4) = ([1u8], [0u8], [0u8], [1u8], [0u8]);
        let mut wrap_tpl = vec![
            attr(CKA_KEY_TYPE, &mut aes_type),
            attr(CKA_EXTRACTABLE, &mut yes),
            attr(CKA_DERIVE, &mut no),
        ];
        let mut unwrap_tpl = vec![
            attr(CKA_EXTRACTABLE, &mut no2),
            attr(CKA_DECRYPT, &mut no3),
            attr(CKA_ENCRYPT, &mut yes3),
        ];
        let (mut w, mut u, mut e, mut d) = ([1u8], [1u8], [0u8], [0u8]);
        let mut kek_extra = vec![
            attr(CKA_WRAP, &mut w),
            attr(CKA_UNWRAP, &mut u),
            attr(CKA_ENCRYPT, &mut e),
            attr(CKA_DECRYPT, &mut d),
            array(CKA_WRAP_TEMPLATE, &mut wrap_tpl),
            array(CKA_UNWRAP_TEMPLATE, &mut unwrap_tpl),
        ];
        let kek = aes(h, &mut kek_extra).unwrap();

        // Both templates read back as arrays: length first, then types and values.
        let mut probe = CK_ATTRIBUTE {
            type_: CKA_WRAP_TEMPLATE,
            pValue: null_mut(),
            ulValueLen: 0,
        };
        assert_eq!(C_GetAttributeValue(h, kek, &mut probe, 1), CKR_OK);
        let count = probe.ulValueLen as usize / std::mem::size_of::<CK_ATTRIBUTE>();
        assert_eq!(count, 3);
        let mut bufs = vec![[0u8; 8]; count];
        let mut elems: Vec<CK_ATTRIBUTE> = bufs
            .iter_mut()
            .map(|b| CK_ATTRIBUTE {
                type_: 0,
                pValue: b.as_mut_ptr() as *mut _,
                ulValueLen: 8,
            })
            .collect();
        let mut whole = array(CKA_WRAP_TEMPLATE, &mut elems);
        assert_eq!(C_GetAttributeValue(h, kek, &mut whole, 1), CKR_OK);
        let read: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = elems
            .iter()
            .zip(&bufs)
            .map(|(e, b)| (e.type_, b[..e.ulValueLen as usize].to_vec()))
            .collect();
        assert!(read.contains(&(CKA_KEY_TYPE, ulong(CKK_AES))), "{read:?}");
        assert!(read.contains(&(CKA_EXTRACTABLE, vec![1])));
        assert!(read.contains(&(CKA_DERIVE, vec![0])));

        // A key matching the wrap template is wrapped; one that derives is not.
        let mut plain = vec![attr(CKA_EXTRACTABLE, &mut yes2), attr(CKA_DERIVE, &mut no4)];
        let target = aes(h, &mut plain).unwrap();
        let (mut y5, mut y6) = ([1u8], [1u8]);
        let mut deriving = vec![attr(CKA_EXTRACTABLE, &mut y5), attr(CKA_DERIVE, &mut y6)];
        let outsider = aes(h, &mut deriving).unwrap();
        let mut m = mech(CKM_AES_KEY_WRAP);
        let mut blob = vec![0u8; 64];
        let mut blob_len = blob.len() as CK_ULONG;
        assert_eq!(
            C_WrapKey(h, &mut m, kek, outsider, blob.as_mut_ptr(), &mut blob_len),
            CKR_KEY_NOT_WRAPPABLE
        );
        blob_len = blob.len() as CK_ULONG;
        assert_eq!(
            C_WrapKey(h, &mut m, kek, target, blob.as_mut_ptr(), &mut blob_len),
            CKR_OK
        );
        blob.truncate(blob_len as usize);

        // Unwrapped, the key is what the unwrap template says.
        let (mut class, mut kt, mut tok) = (ulong(CKO_SECRET_KEY), ulong(CKK_AES), [1u8]);
        let mut tpl = vec![
            attr(CKA_CLASS, &mut class),
            attr(CKA_KEY_TYPE, &mut kt),
            attr(CKA_TOKEN, &mut tok),
        ];
        let mut back = 0;
        assert_eq!(
            C_UnwrapKey(
                h,
                &mut m,
                kek,
                blob.as_mut_ptr(),
                blob.len() as CK_ULONG,
                tpl.as_mut_ptr(),
                tpl.len() as CK_ULONG,
                &mut back
            ),
            CKR_OK
        );
        assert!(!flag(h, back, CKA_EXTRACTABLE));
        assert!(!flag(h, back, CKA_DECRYPT));
        assert!(flag(h, back, CKA_ENCRYPT));
        // A caller asking for what the unwrap template forbids is inconsistent.
        let mut wants = [1u8];
        tpl.push(attr(CKA_DECRYPT, &mut wants));
        assert_eq!(
            C_UnwrapKey(
                h,
                &mut m,
                kek,
                blob.as_mut_ptr(),
                blob.len() as CK_ULONG,
                tpl.as_mut_ptr(),
                tpl.len() as CK_ULONG,
                &mut back
            ),
            CKR_TEMPLATE_INCONSISTENT
        );

        // A template naming an attribute the HSM does not keep in templates is refused when
        // the key is made, not half honoured.
        let mut name = *b"kek";
        let mut odd = vec![attr(CKA_LABEL, &mut name)];
        let mut odd_extra = vec![array(CKA_WRAP_TEMPLATE, &mut odd)];
        assert_eq!(aes(h, &mut odd_extra), Err(CKR_ATTRIBUTE_VALUE_INVALID));
        // Nor may an array attribute's length be anything but whole attributes.
        let mut bad = array(CKA_WRAP_TEMPLATE, &mut odd);
        bad.ulValueLen -= 1;
        let mut bad_extra = vec![bad];
        assert_eq!(aes(h, &mut bad_extra), Err(CKR_ATTRIBUTE_VALUE_INVALID));

        assert_eq!(C_CloseSession(h), CKR_OK);
        assert_eq!(C_Finalize(null_mut()), CKR_OK);
    }
}
