//! Keys leaving and entering wrapped: `C_WrapKey`, `C_UnwrapKey`.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::*;

pub unsafe fn C_WrapKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    done((|| {
        // SAFETY: mech::read checks for NULL; validity per contract.
        let (code, p) = unsafe { mech::read(m)? };
        if crate::gp_mech::is_gp(code) {
            // SAFETY: forwarded; validity per contract.
            return unsafe { super::gp::put_key(h, code, &p, wrapping, key, out, out_len) };
        }
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
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
        // The wrapping key's CKA_WRAP_TEMPLATE names what it may wrap.
        if !w.attrs.wrap_template.matches(&k.attrs) {
            return Err(CKR_KEY_NOT_WRAPPABLE);
        }
        if matches!(mech, Mechanism::RsaOaep(_) | Mechanism::RsaPkcs1Raw)
            && k.attrs.class == ObjectClass::PrivateKey
        {
            // One RSA block cannot carry a whole private key.
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
            .api()
            .wrapped_key_len(es, wrapping, mech, key)
            .map_err(map)?;
        // SAFETY: out/out_len validity per contract; checked inside.
        if unsafe { ffi::length_only(need, out, out_len)? } {
            return Ok(());
        }
        let wrapped = s
            .api()
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
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut ktpl = new_key_template();
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
        let officer = is_officer(&login);
        let map = |e: HsmError| match e {
            HsmError::Crypto(_) => CKR_WRAPPED_KEY_INVALID,
            // A refusal of the role; a policy refusal (the officer's) says so as such.
            HsmError::Refused(_) if !officer => CKR_KEY_FUNCTION_NOT_PERMITTED,
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
        // What the unwrapping key's CKA_UNWRAP_TEMPLATE sets, the caller may not set otherwise.
        let ut = &u.attrs.unwrap_template;
        let kind_differs = matches!((kt, &ut.key_type), (Some(k), Some(f)) if attrs::family_of(k) != Some(f.as_str()));
        if kind_differs
            || ut
                .apply_to(class, spec, &mut ktpl.clone(), &mut opts.clone())
                .is_err()
        {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        let handle = s
            .api()
            .unwrap_key(
                es,
                ferrohsm_core::api::Unwrap {
                    unwrapper: unwrapping,
                    mech,
                    params: &params,
                    wrapped: &data,
                    class,
                    spec,
                    opts: &opts,
                    tpl: &ktpl,
                },
            )
            .map_err(map)?;
        // SAFETY: non-NULL per check.
        unsafe { *out = handle };
        Ok(())
    })())
}
