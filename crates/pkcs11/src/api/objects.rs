//! Objects: finding them, their attributes, creating certificates, data objects and public
//! keys, relabelling and destroying.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::*;

/// The login that may see private objects: the Crypto Officer's or User's.
pub(super) fn key_session(login: &Option<Arc<Login>>) -> Option<ferrohsm_core::api::LoginId> {
    key_login(login).map(|l| l.id)
}

/// The Crypto Officer's or User's login, if that is who is logged in.
pub(super) fn key_login(login: &Option<Arc<Login>>) -> Option<&Login> {
    login.as_deref().filter(|l| l.user != CKU_SO)
}

/// Token objects change only in a read/write session; session objects in any session.
/// Whether the login is the Crypto Officer (`CKU_USER`), the one role that makes keys: a
/// refusal of anyone else is a refusal of the role, not of a policy.
pub(super) fn is_officer(login: &Option<Arc<Login>>) -> bool {
    login.as_ref().is_some_and(|l| l.user == CKU_USER)
}

pub(super) fn may_change(s: &Session, token_object: bool) -> Rv {
    if token_object && s.flags & CKF_RW_SESSION == 0 {
        return Err(CKR_SESSION_READ_ONLY);
    }
    Ok(())
}

pub(super) fn object(
    s: &mut Session,
    login: &Option<Arc<Login>>,
    h: CK_OBJECT_HANDLE,
) -> Rv<ObjectInfo> {
    let label = s.label.clone();
    s.api()
        .object_info(key_session(login), &label, h)
        .map_err(|e| match e {
            HsmError::NotFound(_) | HsmError::Refused(_) => CKR_OBJECT_HANDLE_INVALID,
            e => rv(&e),
        })
}

pub unsafe fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        if s.find.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        // SAFETY: template validity per contract; checked for NULL.
        let t = unsafe { ffi::template(tpl, n)? };
        let mut f = ObjectFilter::default();
        for (ty, v) in &t {
            match *ty {
                CKA_LABEL => {
                    f.label =
                        Some(String::from_utf8(v.clone()).unwrap_or_else(|_| "\u{fffd}".into()))
                }
                CKA_ID => f.id = Some(v.clone()),
                CKA_CLASS => match attrs::class_of(
                    ffi::read_ulong(v).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?,
                ) {
                    Some(c) => f.class = Some(c),
                    None => {
                        // A class this token holds no objects of.
                        s.find = Some(vec![]);
                        return Ok(());
                    }
                },
                _ => {}
            }
        }
        let label = s.label.clone();
        let found = s
            .api()
            .find(key_session(&login), &label, &f)
            .map_err(|e| rv(&e))?;
        let mut handles: Vec<CK_OBJECT_HANDLE> = found
            .iter()
            .filter(|o| attrs::matches(o, &t))
            .map(|o| o.handle as CK_OBJECT_HANDLE)
            .collect();
        handles.reverse(); // popped from the end, so results come in handle order
        s.find = Some(handles);
        Ok(())
    })())
}

pub unsafe fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    out: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    done((|| {
        if out.is_null() || count.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (s, _) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = s.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let mut n = 0;
        while n < max as usize {
            let Some(h) = pending.pop() else { break };
            // SAFETY: room for `max` handles per contract.
            unsafe { out.add(n).write(h) };
            n += 1;
        }
        // SAFETY: non-NULL per check.
        unsafe { *count = n as CK_ULONG };
        Ok(())
    })())
}

pub unsafe fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    done((|| {
        let (s, _) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        s.find.take().map(drop).ok_or(CKR_OPERATION_NOT_INITIALIZED)
    })())
}

pub unsafe fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        // A secure channel is this session's alone and no HSM object.
        let o = match s.gp.is_channel(obj) {
            true => None,
            false => Some(object(&mut s, &login, obj)?),
        };
        if tpl.is_null() && n > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mut result = Ok(());
        for i in 0..n as usize {
            // SAFETY: `tpl` holds `n` attributes per contract (NULL refused above when n > 0).
            let a = unsafe { &mut *tpl.add(i) };
            let Some(o) = &o else {
                match super::gp::channel_attr(a.type_) {
                    Attr::Value(v) => put_value(a, &v, &mut result),
                    _ => {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        result = Err(CKR_ATTRIBUTE_TYPE_INVALID);
                    }
                }
                continue;
            };
            let value = match attrs::get(o, a.type_) {
                // A non-sensitive key's value, from the engine (which audits the read).
                Attr::Clear => match key_session(&login) {
                    Some(es) => match s.api().key_value(es, obj) {
                        Ok(v) => Attr::Value(v.to_vec()),
                        Err(HsmError::KeyUse(_)) => Attr::Sensitive,
                        Err(e) => return Err(rv(&e)),
                    },
                    None => Attr::Sensitive,
                },
                other => other,
            };
            match value {
                Attr::Value(v) => put_value(a, &v, &mut result),
                Attr::Sensitive | Attr::Clear => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(CKR_ATTRIBUTE_SENSITIVE);
                }
                Attr::Array(items) => {
                    // SAFETY: the caller's attribute (and, for an array, its elements) is
                    // valid for its stated lengths per contract.
                    if let Err(e) = unsafe { ffi::put_array(a, &items) } {
                        result = Err(e);
                    }
                }
                Attr::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(CKR_ATTRIBUTE_TYPE_INVALID);
                }
            }
        }
        result
    })())
}

/// Writes one attribute's value into the caller's attribute (or its length, or why not).
fn put_value(a: &mut CK_ATTRIBUTE, v: &[u8], result: &mut Rv) {
    if a.pValue.is_null() {
        a.ulValueLen = v.len() as CK_ULONG;
    } else if (a.ulValueLen as usize) < v.len() {
        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
        *result = Err(CKR_BUFFER_TOO_SMALL);
    } else {
        // SAFETY: pValue holds ulValueLen >= v.len() bytes per the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len()) };
        a.ulValueLen = v.len() as CK_ULONG;
    }
}

pub unsafe fn C_DestroyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> CK_RV {
    done((|| {
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(closed) = super::gp::destroy(&mut s, obj) {
            return closed;
        }
        may_change(&s, !ferrohsm_core::object::is_session_handle(obj))?;
        object(&mut s, &login, obj)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        s.remote_memo = None;
        s.api().destroy_object(es, obj).map_err(|e| rv(&e))
    })())
}

/// A certificate or data object from a `C_CreateObject` template, checked per the standard:
/// the class and (for certificates) the value are required, certificates must be X.509,
/// attributes the class does not have are refused, and keys are never created in clear
/// (they enter by generation or unwrapping only).
pub(super) fn read_object_template(t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Rv<NewObject> {
    let class = find_attr(t, CKA_CLASS)
        .ok_or(CKR_TEMPLATE_INCOMPLETE)
        .and_then(|v| ffi::read_ulong(v))?;
    let is_cert = match class {
        CKO_CERTIFICATE => true,
        CKO_DATA => false,
        // Clear secret or private key material never enters (public keys: see C_CreateObject).
        CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY => return Err(CKR_TEMPLATE_INCONSISTENT),
        _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    let bytes = |ty| find_attr(t, ty).cloned().unwrap_or_default();
    let flag = |ty, default| find_attr(t, ty).map_or(Ok(default), |v| ffi::read_bool(v));
    if !flag(CKA_TOKEN, false)? {
        // Session objects are not kept by this token.
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    for (ty, v) in t {
        let allowed = match *ty {
            CKA_CLASS | CKA_TOKEN | CKA_PRIVATE | CKA_MODIFIABLE | CKA_DESTROYABLE
            | CKA_COPYABLE | CKA_LABEL | CKA_VALUE => true,
            CKA_APPLICATION | CKA_OBJECT_ID => !is_cert,
            CKA_CERTIFICATE_TYPE
            | CKA_ID
            | CKA_SUBJECT
            | CKA_ISSUER
            | CKA_SERIAL_NUMBER
            | CKA_CERTIFICATE_CATEGORY
            | CKA_START_DATE
            | CKA_END_DATE
            | CKA_URL
            | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
            | CKA_HASH_OF_ISSUER_PUBLIC_KEY
            | CKA_JAVA_MIDP_SECURITY_DOMAIN
            | CKA_CHECK_VALUE => is_cert,
            // Only a security officer may mark a certificate trusted, and none acts here.
            CKA_TRUSTED => is_cert && !ffi::read_bool(v)?,
            _ => false,
        };
        if !allowed {
            return Err(if *ty == CKA_TRUSTED {
                CKR_ATTRIBUTE_VALUE_INVALID
            } else {
                CKR_ATTRIBUTE_TYPE_INVALID
            });
        }
    }
    if flag(CKA_COPYABLE, false)? {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let label = String::from_utf8(bytes(CKA_LABEL)).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    let content = if is_cert {
        if let Some(ct) = find_attr(t, CKA_CERTIFICATE_TYPE) {
            if ffi::read_ulong(ct)? != CKC_X_509 {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
        }
        let category = match find_attr(t, CKA_CERTIFICATE_CATEGORY) {
            Some(v) => match ffi::read_ulong(v)? {
                c @ 0..=3 => c as u8,
                _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
            },
            None => 0,
        };
        let value = find_attr(t, CKA_VALUE)
            .cloned()
            .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
        if value.is_empty() {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        Content::Certificate {
            value,
            subject: bytes(CKA_SUBJECT),
            issuer: bytes(CKA_ISSUER),
            serial: bytes(CKA_SERIAL_NUMBER),
            category,
        }
    } else {
        Content::Data {
            application: String::from_utf8(bytes(CKA_APPLICATION))
                .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?,
            object_id: bytes(CKA_OBJECT_ID),
            value: bytes(CKA_VALUE),
        }
    };
    Ok(NewObject {
        label,
        id: bytes(CKA_ID),
        // Certificates are public by default, data objects private.
        private: flag(CKA_PRIVATE, !is_cert)?,
        modifiable: flag(CKA_MODIFIABLE, true)?,
        destroyable: flag(CKA_DESTROYABLE, true)?,
        content,
    })
}

pub unsafe fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        // SAFETY: template validity per contract; checked for NULL.
        let t = unsafe { ffi::template(tpl, n)? };
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        let class = find_attr(&t, CKA_CLASS).map(|v| ffi::read_ulong(v));
        let key = match class {
            Some(Ok(CKO_PUBLIC_KEY)) => Some(create_public_key(&mut s, &login, h, &t)?),
            Some(Ok(CKO_SECRET_KEY | CKO_PRIVATE_KEY)) => {
                Some(create_clear_key(&mut s, &login, h, &t)?)
            }
            _ => None,
        };
        if let Some(handle) = key {
            // SAFETY: non-NULL per check.
            unsafe { *out = handle as CK_OBJECT_HANDLE };
            return Ok(());
        }
        let o = read_object_template(&t)?;
        // Certificates and data objects are token objects.
        may_change(&s, true)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let handle = s.api().create_object(es, o).map_err(|e| match e {
            HsmError::InvalidInput(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            e => rv(&e),
        })?;
        // SAFETY: non-NULL per check.
        unsafe { *out = handle as CK_OBJECT_HANDLE };
        Ok(())
    })())
}

/// `C_CreateObject` of a public key: RSA from its modulus and exponent, EC or Edwards from
/// its curve and point (`CKA_EC_POINT` DER-wrapped or raw), checked before it is kept.
pub(super) fn create_public_key(
    s: &mut Session,
    login: &Option<Arc<Login>>,
    h: CK_SESSION_HANDLE,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Rv<u64> {
    use ferrohsm_core::mechanism::{public_key_from_parts, PublicParts};
    let ktype = find_attr(t, CKA_KEY_TYPE)
        .ok_or(CKR_TEMPLATE_INCOMPLETE)
        .and_then(|v| ffi::read_ulong(v))?;
    let need = |ty| find_attr(t, ty).ok_or(CKR_TEMPLATE_INCOMPLETE);
    let parts = match ktype {
        CKK_RSA => PublicParts::Rsa {
            modulus: need(CKA_MODULUS)?,
            exponent: need(CKA_PUBLIC_EXPONENT)?,
        },
        CKK_EC | CKK_EC_EDWARDS => {
            let params = need(CKA_EC_PARAMS)?;
            let spec = ferrohsm_core::mechanism::spec_from_ec_params(params)
                .ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
            let point = ferrohsm_core::mechanism::point_from_pkcs11(spec, need(CKA_EC_POINT)?)
                .ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
            PublicParts::Ec { params, point }
        }
        _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    let (spec, spki) = public_key_from_parts(parts).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    if attrs::key_type(spec) != ktype {
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    let rest: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = t
        .iter()
        .filter(|(a, _)| !matches!(*a, CKA_MODULUS | CKA_EC_POINT | CKA_PUBLIC_KEY_INFO))
        .cloned()
        .collect();
    let mut opts = KeyOptions {
        label: String::new(),
        id: vec![],
        extractable: true,
    };
    let mut tpl = new_key_template();
    read_key_template(&rest, true, &mut opts, &mut tpl, CKO_PUBLIC_KEY, ktype)?;
    may_change(s, !tpl.session_public)?;
    tpl.session_owner = Some(h);
    let es = key_session(login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    s.api()
        .import_public_key(es, spec, &spki, &opts, &tpl)
        .map_err(|e| match e {
            HsmError::InvalidInput(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            e => rv(&e),
        })
}

/// `C_CreateObject` of a secret key (`CKA_VALUE`) or private key (RSA by its components, EC
/// by its scalar) given in clear, as Java's keytool stores keys it made in software. The
/// engine decides (partition policy `import-keys`, off by default); such a key never wraps.
pub(super) fn create_clear_key(
    s: &mut Session,
    login: &Option<Arc<Login>>,
    h: CK_SESSION_HANDLE,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Rv<u64> {
    use ferrohsm_core::private_parts::{pkcs8_from_parts, PrivateParts};
    let class = find_attr(t, CKA_CLASS)
        .ok_or(CKR_TEMPLATE_INCOMPLETE)
        .and_then(|v| ffi::read_ulong(v))?;
    let ktype = find_attr(t, CKA_KEY_TYPE)
        .ok_or(CKR_TEMPLATE_INCOMPLETE)
        .and_then(|v| ffi::read_ulong(v))?;
    let need = |ty| {
        find_attr(t, ty)
            .map(|v| v.as_slice())
            .ok_or(CKR_TEMPLATE_INCOMPLETE)
    };
    const RSA_PARTS: [CK_ATTRIBUTE_TYPE; 8] = [
        CKA_MODULUS,
        CKA_PUBLIC_EXPONENT,
        CKA_PRIVATE_EXPONENT,
        CKA_PRIME_1,
        CKA_PRIME_2,
        CKA_EXPONENT_1,
        CKA_EXPONENT_2,
        CKA_COEFFICIENT,
    ];
    let (engine_class, spec, material) = match (class, ktype) {
        (CKO_SECRET_KEY, CKK_AES | CKK_GENERIC_SECRET | CKK_DES3) => {
            let value = need(CKA_VALUE)?;
            let spec = match ktype {
                CKK_AES => None,
                CKK_DES3 => Some(KeySpec::Des3),
                _ => match value.len() {
                    n @ 16..=64 => Some(KeySpec::Generic(n as u8)),
                    _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
                },
            };
            (
                ObjectClass::SecretKey,
                spec,
                zeroize::Zeroizing::new(value.to_vec()),
            )
        }
        (CKO_PRIVATE_KEY, CKK_RSA | CKK_EC) => {
            let parts = if ktype == CKK_RSA {
                let mut c: [&[u8]; 8] = [&[]; 8];
                for (slot, ty) in c.iter_mut().zip(RSA_PARTS) {
                    *slot = need(ty)?;
                }
                PrivateParts::Rsa(c)
            } else {
                PrivateParts::Ec {
                    params: need(CKA_EC_PARAMS)?,
                    scalar: need(CKA_VALUE)?,
                }
            };
            let (pkcs8, spec, _) =
                pkcs8_from_parts(parts).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            if attrs::key_type(spec) != ktype {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            (
                ObjectClass::PrivateKey,
                None,
                zeroize::Zeroizing::new(pkcs8.expose().to_vec()),
            )
        }
        _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    // What remains describes the key, read as a generation template reads it.
    let rest: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = t
        .iter()
        .filter(|(a, _)| {
            !RSA_PARTS.contains(a)
                && !matches!(
                    *a,
                    CKA_VALUE | CKA_EC_PARAMS | CKA_PUBLIC_KEY_INFO | CKA_EC_POINT
                )
        })
        .cloned()
        .collect();
    let mut opts = KeyOptions {
        label: String::new(),
        id: vec![],
        extractable: false,
    };
    let mut tpl = new_key_template();
    read_key_template(&rest, false, &mut opts, &mut tpl, class, ktype)?;
    may_change(s, !tpl.session_private)?;
    tpl.session_owner = Some(h);
    let es = key_session(login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
    s.api()
        .import_key(es, engine_class, spec, &material, &opts, &tpl)
        .map_err(|e| match e {
            HsmError::InvalidInput(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            e => rv(&e),
        })
}

pub unsafe fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    done((|| {
        // SAFETY: template validity per contract; checked for NULL.
        let t = unsafe { ffi::template(tpl, n)? };
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        let o = object(&mut s, &login, obj)?;
        let (mut label, mut id) = (None, None);
        for (ty, v) in &t {
            match *ty {
                CKA_LABEL => {
                    label = Some(
                        String::from_utf8(v.clone()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?,
                    )
                }
                CKA_ID => id = Some(v.clone()),
                // Setting an attribute to the value it has is no change.
                other => match attrs::get(&o, other) {
                    Attr::Value(cur) if cur == *v => {}
                    Attr::Invalid => return Err(CKR_ATTRIBUTE_TYPE_INVALID),
                    _ => return Err(CKR_ATTRIBUTE_READ_ONLY),
                },
            }
        }
        may_change(&s, !ferrohsm_core::object::is_session_handle(obj))?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        if label.is_none() && id.is_none() {
            return Ok(());
        }
        if !o.attrs.modifiable {
            return Err(CKR_ACTION_PROHIBITED);
        }
        s.api()
            .relabel_object(es, obj, label.as_deref(), id.as_deref())
            .map_err(|e| match e {
                HsmError::InvalidInput(_) => CKR_ATTRIBUTE_VALUE_INVALID,
                e => rv(&e),
            })
    })())
}

pub unsafe fn C_CopyObject(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    tpl: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    done((|| {
        // SAFETY: NULL checked inside; validity per contract.
        let t = unsafe { ffi::template(tpl, n)? };
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (s, login) = state::session(h)?;
        let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
        let original = object(&mut s, &login, obj)?;
        // The standard's attributes a copy may set; a copy is a token object only if asked.
        let mut c = ferrohsm_core::object::CopyChanges {
            token: original.attrs.token,
            session_owner: Some(h),
            ..Default::default()
        };
        for (ty, v) in &t {
            match *ty {
                CKA_TOKEN => c.token = ffi::read_bool(v)?,
                CKA_LABEL => {
                    c.label = Some(
                        String::from_utf8(v.clone()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?,
                    )
                }
                CKA_ID => c.id = Some(v.clone()),
                CKA_SENSITIVE => c.sensitive = Some(ffi::read_bool(v)?),
                CKA_EXTRACTABLE => c.extractable = Some(ffi::read_bool(v)?),
                CKA_COPYABLE => c.copyable = Some(ffi::read_bool(v)?),
                // As they are: fine; anything else is not the copy's to change.
                CKA_PRIVATE if ffi::read_bool(v)? == original.attrs.private => {}
                CKA_MODIFIABLE if ffi::read_bool(v)? == original.attrs.modifiable => {}
                CKA_DESTROYABLE if ffi::read_bool(v)? == original.attrs.destroyable => {}
                CKA_CLASS if ffi::read_ulong(v)? == attrs::class_code(original.attrs.class) => {}
                _ => return Err(CKR_ATTRIBUTE_READ_ONLY),
            }
        }
        may_change(&s, c.token)?;
        let es = key_session(&login).ok_or(CKR_USER_NOT_LOGGED_IN)?;
        let copy = s.api().copy_object(es, obj, &c).map_err(|e| match e {
            HsmError::KeyUse(m) if m.contains("CKA_COPYABLE") => CKR_ACTION_PROHIBITED,
            HsmError::KeyUse(_) => CKR_TEMPLATE_INCONSISTENT,
            HsmError::InvalidInput(_) => CKR_ACTION_PROHIBITED,
            e => rv(&e),
        })?;
        // SAFETY: non-NULL per check.
        unsafe { *out = copy as CK_OBJECT_HANDLE };
        Ok(())
    })())
}
