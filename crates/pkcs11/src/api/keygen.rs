//! Key generation and derivation: templates read into the engine's terms, `C_GenerateKey`,
//! `C_GenerateKeyPair`, `C_DeriveKey` (ECDH).
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::*;

/// What a generation template asks for, beyond the algorithm.
pub(super) fn read_key_template(
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
            // Each template speaks for its own half of a pair: what a public key cannot do
            // in the public template, and what a private key cannot do in the private one,
            // are read and ignored (never applied to the other half).
            CKA_SIGN | CKA_DECRYPT | CKA_UNWRAP | CKA_DERIVE if public => {
                ffi::read_bool(v)?;
            }
            CKA_VERIFY | CKA_ENCRYPT | CKA_WRAP if class == CKO_PRIVATE_KEY => {
                ffi::read_bool(v)?;
            }
            CKA_SIGN => tpl.sign = Some(ffi::read_bool(v)?),
            CKA_VERIFY => tpl.verify = Some(ffi::read_bool(v)?),
            CKA_ENCRYPT => tpl.encrypt = Some(ffi::read_bool(v)?),
            CKA_DECRYPT => tpl.decrypt = Some(ffi::read_bool(v)?),
            CKA_WRAP => tpl.wrap = Some(ffi::read_bool(v)?),
            CKA_UNWRAP => tpl.unwrap = Some(ffi::read_bool(v)?),
            CKA_DERIVE => tpl.derive = Some(ffi::read_bool(v)?),
            CKA_WRAP_WITH_TRUSTED if !public => tpl.wrap_with_trusted = Some(ffi::read_bool(v)?),
            CKA_COPYABLE if !public => tpl.copyable = Some(ffi::read_bool(v)?),
            // A wrap template belongs to the key that wraps (secret or public), an unwrap
            // template to the one that unwraps (secret or private).
            CKA_WRAP_TEMPLATE if class != CKO_PRIVATE_KEY => {
                tpl.wrap_template = attrs::parse_template(v)?
            }
            CKA_UNWRAP_TEMPLATE if !public => tpl.unwrap_template = attrs::parse_template(v)?,
            CKA_WRAP_TEMPLATE | CKA_UNWRAP_TEMPLATE => {
                attrs::parse_template(v)?;
            }
            CKA_COPYABLE => {
                ffi::read_bool(v)?;
            }
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
            | CKA_SUBJECT | CKA_START_DATE | CKA_END_DATE | CKA_MODIFIABLE | CKA_DESTROYABLE => {}
            CKA_VALUE => return Err(CKR_TEMPLATE_INCONSISTENT),
            _ => return Err(CKR_ATTRIBUTE_TYPE_INVALID),
        }
    }
    Ok(())
}

pub(super) fn find_attr(
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ty: CK_ATTRIBUTE_TYPE,
) -> Option<&Vec<u8>> {
    t.iter().find(|(x, _)| *x == ty).map(|(_, v)| v)
}

pub(super) fn generate(
    h: CK_SESSION_HANDLE,
    spec: KeySpec,
    priv_t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    pub_t: Option<&[(CK_ATTRIBUTE_TYPE, Vec<u8>)]>,
) -> Rv<Vec<u64>> {
    let (s, login) = state::session(h)?;
    let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
    let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    let mut opts = KeyOptions {
        label: String::new(),
        id: vec![],
        extractable: false,
    };
    let mut tpl = new_key_template();
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
    let officer = is_officer(&login);
    s.api()
        .generate_key_with(es, spec, &opts, &tpl)
        .map_err(|e| match e {
            // Only the Crypto Officer makes keys; a policy refusal is the officer's.
            HsmError::Refused(_) if !officer => CKR_USER_NOT_LOGGED_IN,
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
        let ((code, p), t) = unsafe { (mech::read(m)?, ffi::template(tpl, n)?) };
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if crate::gp_mech::is_gp(code) {
            // SAFETY: the parameter's pointers are valid per contract.
            let handle = unsafe { super::gp::generate(h, code, &p, &t)? };
            // SAFETY: non-NULL per check.
            unsafe { *out = handle };
            return Ok(());
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
        if crate::gp_mech::is_gp(code) {
            // SAFETY: the parameter's pointers are valid per contract.
            let handle = unsafe { super::gp::open_channel(h, code, &p, base, &t)? };
            // SAFETY: non-NULL per check.
            unsafe { *out = handle };
            return Ok(());
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
        let mut ktpl = new_key_template();
        read_key_template(&t, false, &mut opts, &mut ktpl, CKO_SECRET_KEY, ktype)?;
        ktpl.session_owner = Some(h);
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
            .api()
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
