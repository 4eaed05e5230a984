//! Object attributes as PKCS#11 sees them, from the engine's object description.

use cryptoki_sys::*;
use ferrohsm_core::attr_template::{AttrTemplate, Flag};
use ferrohsm_core::mechanism::{self, KeySpec};
use ferrohsm_core::object::{Content, ObjectClass, ObjectInfo};

use crate::ffi::ulong;

/// What reading one attribute gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Attr {
    /// The value.
    Value(Vec<u8>),
    /// It exists but may not be revealed (`CKR_ATTRIBUTE_SENSITIVE`).
    Sensitive,
    /// A secret key's value that reads in clear (the key is neither sensitive nor
    /// unextractable): the engine hands it over, and records that it did.
    Clear,
    /// The object has no such attribute (`CKR_ATTRIBUTE_TYPE_INVALID`).
    Invalid,
    /// An array attribute's attributes (`CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`).
    Array(Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>),
}

/// The boolean attributes a key's attribute template may name.
const TEMPLATE_FLAGS: &[(CK_ATTRIBUTE_TYPE, Flag)] = &[
    (CKA_TOKEN, Flag::Token),
    (CKA_PRIVATE, Flag::Private),
    (CKA_SENSITIVE, Flag::Sensitive),
    (CKA_EXTRACTABLE, Flag::Extractable),
    (CKA_ENCRYPT, Flag::Encrypt),
    (CKA_DECRYPT, Flag::Decrypt),
    (CKA_SIGN, Flag::Sign),
    (CKA_VERIFY, Flag::Verify),
    (CKA_WRAP, Flag::Wrap),
    (CKA_UNWRAP, Flag::Unwrap),
    (CKA_DERIVE, Flag::Derive),
    (CKA_WRAP_WITH_TRUSTED, Flag::WrapWithTrusted),
    (CKA_COPYABLE, Flag::Copyable),
];

/// The key families of [`ferrohsm_core::attr_template::family`], by `CKK_*`.
const FAMILIES: &[(CK_KEY_TYPE, &str)] = &[
    (CKK_AES, "aes"),
    (CKK_GENERIC_SECRET, "generic-secret"),
    (CKK_DES3, "des3"),
    (CKK_RSA, "rsa"),
    (CKK_EC, "ec"),
    (CKK_EC_EDWARDS, "ec-edwards"),
];

/// The key family a `CKK_*` names, if the HSM holds such keys.
pub fn family_of(k: CK_KEY_TYPE) -> Option<&'static str> {
    FAMILIES.iter().find(|(c, _)| *c == k).map(|(_, f)| *f)
}

/// An attribute template as PKCS#11 reads it.
pub fn template_items(t: &AttrTemplate) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(c) = t.class {
        out.push((CKA_CLASS, ulong(class_code(c))));
    }
    if let Some(k) = FAMILIES
        .iter()
        .find(|(_, f)| Some(*f) == t.key_type.as_deref())
    {
        out.push((CKA_KEY_TYPE, ulong(k.0)));
    }
    for (ty, f) in TEMPLATE_FLAGS {
        if let Some(v) = t.flags.get(f) {
            out.push((*ty, vec![*v as u8]));
        }
    }
    out
}

/// The template a caller gave as an array attribute's value (in
/// [`crate::ffi::encode_nested`]'s form). Only the class, the key type and the boolean
/// attributes of [`TEMPLATE_FLAGS`] are kept by the HSM; a template naming anything else is
/// refused (`CKR_ATTRIBUTE_VALUE_INVALID`) rather than half honoured.
pub fn parse_template(v: &[u8]) -> crate::ffi::Rv<AttrTemplate> {
    let mut t = AttrTemplate::default();
    for (ty, v) in crate::ffi::decode_nested(v)? {
        match ty {
            CKA_CLASS => {
                t.class =
                    Some(class_of(crate::ffi::read_ulong(&v)?).ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?)
            }
            CKA_KEY_TYPE => {
                let f =
                    family_of(crate::ffi::read_ulong(&v)?).ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
                t.key_type = Some(f.to_string());
            }
            _ => {
                let (_, f) = TEMPLATE_FLAGS
                    .iter()
                    .find(|(c, _)| *c == ty)
                    .ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
                t.flags.insert(*f, crate::ffi::read_bool(&v)?);
            }
        }
    }
    Ok(t)
}

fn b(v: bool) -> Attr {
    Attr::Value(vec![v as u8])
}

/// `CKO_*` of an engine class.
pub fn class_code(c: ObjectClass) -> CK_OBJECT_CLASS {
    match c {
        ObjectClass::SecretKey => CKO_SECRET_KEY,
        ObjectClass::PrivateKey => CKO_PRIVATE_KEY,
        ObjectClass::PublicKey => CKO_PUBLIC_KEY,
        ObjectClass::Certificate => CKO_CERTIFICATE,
        ObjectClass::Data => CKO_DATA,
    }
}

/// Engine class of a `CKO_*`, if the engine has objects of it.
pub fn class_of(code: CK_OBJECT_CLASS) -> Option<ObjectClass> {
    match code {
        CKO_SECRET_KEY => Some(ObjectClass::SecretKey),
        CKO_PRIVATE_KEY => Some(ObjectClass::PrivateKey),
        CKO_PUBLIC_KEY => Some(ObjectClass::PublicKey),
        CKO_CERTIFICATE => Some(ObjectClass::Certificate),
        CKO_DATA => Some(ObjectClass::Data),
        _ => None,
    }
}

/// `CKK_*` of a key spec.
pub fn key_type(s: KeySpec) -> CK_KEY_TYPE {
    match s {
        KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => CKK_AES,
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => CKK_EC,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => CKK_RSA,
        KeySpec::Ed25519 => CKK_EC_EDWARDS,
        KeySpec::Generic(_) => CKK_GENERIC_SECRET,
        KeySpec::Des3 => CKK_DES3,
    }
}

fn keygen_mechanism(s: KeySpec) -> CK_MECHANISM_TYPE {
    match key_type(s) {
        CKK_AES => CKM_AES_KEY_GEN,
        CKK_EC => CKM_EC_KEY_PAIR_GEN,
        CKK_RSA => CKM_RSA_PKCS_KEY_PAIR_GEN,
        CKK_GENERIC_SECRET => CKM_GENERIC_SECRET_KEY_GEN,
        CKK_DES3 => CKM_DES3_KEY_GEN,
        _ => CKM_EC_EDWARDS_KEY_PAIR_GEN,
    }
}

/// Reads attribute `t` of a certificate or data object.
fn get_content(o: &ObjectInfo, content: &Content, t: CK_ATTRIBUTE_TYPE) -> Attr {
    let a = &o.attrs;
    match (t, content) {
        (CKA_CLASS, _) => Attr::Value(ulong(class_code(a.class))),
        (CKA_TOKEN, _) => b(a.token),
        (CKA_PRIVATE, _) => b(a.private),
        (CKA_MODIFIABLE, _) => b(a.modifiable),
        (CKA_COPYABLE, _) => b(false),
        (CKA_DESTROYABLE, _) => b(a.destroyable),
        (CKA_UNIQUE_ID, _) if !a.unique_id.is_empty() => {
            Attr::Value(a.unique_id.as_bytes().to_vec())
        }
        (CKA_LABEL, _) => Attr::Value(a.label.as_bytes().to_vec()),
        (CKA_VALUE, Content::Certificate { value, .. } | Content::Data { value, .. }) => {
            Attr::Value(value.clone())
        }
        (CKA_APPLICATION, Content::Data { application, .. }) => {
            Attr::Value(application.as_bytes().to_vec())
        }
        (CKA_OBJECT_ID, Content::Data { object_id, .. }) => Attr::Value(object_id.clone()),
        (CKA_CERTIFICATE_TYPE, Content::Certificate { .. }) => Attr::Value(ulong(CKC_X_509)),
        (CKA_ID, Content::Certificate { .. }) => Attr::Value(a.id.clone()),
        (CKA_SUBJECT, Content::Certificate { subject, .. }) => Attr::Value(subject.clone()),
        (CKA_ISSUER, Content::Certificate { issuer, .. }) => Attr::Value(issuer.clone()),
        (CKA_SERIAL_NUMBER, Content::Certificate { serial, .. }) => Attr::Value(serial.clone()),
        (CKA_CERTIFICATE_CATEGORY, Content::Certificate { category, .. }) => {
            Attr::Value(ulong(*category as CK_ULONG))
        }
        (CKA_TRUSTED, Content::Certificate { .. }) => b(a.trusted),
        (CKA_JAVA_MIDP_SECURITY_DOMAIN, Content::Certificate { .. }) => Attr::Value(ulong(0)),
        (
            CKA_START_DATE
            | CKA_END_DATE
            | CKA_URL
            | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
            | CKA_HASH_OF_ISSUER_PUBLIC_KEY
            | CKA_CHECK_VALUE,
            Content::Certificate { .. },
        ) => Attr::Value(vec![]),
        _ => Attr::Invalid,
    }
}

/// Reads attribute `t` of object `o`.
pub fn get(o: &ObjectInfo, t: CK_ATTRIBUTE_TYPE) -> Attr {
    let a = &o.attrs;
    let spec = match (&o.content, a.spec) {
        (Some(c), _) => return get_content(o, c, t),
        (None, Some(spec)) => spec,
        // Neither a key nor content: nothing to show but that it exists.
        (None, None) => return Attr::Invalid,
    };
    let secret_or_private = a.class != ObjectClass::PublicKey;
    let public = o.public.as_deref();
    if let Some(g) = &a.gp {
        use crate::gp_mech::*;
        match t {
            CKA_FERROHSM_GP_SET => return Attr::Value(g.set.as_bytes().to_vec()),
            CKA_FERROHSM_GP_VERSION => return Attr::Value(ulong(g.version.into())),
            CKA_FERROHSM_GP_ROLE => return Attr::Value(ulong(role_code(&g.role))),
            CKA_FERROHSM_GP_POPULATION => return Attr::Value(g.population.as_bytes().to_vec()),
            CKA_FERROHSM_GP_RETIRED => return b(g.retired),
            // Two-key 3DES, held as a 16-byte secret.
            CKA_KEY_TYPE if g.key_type == "des3" => return Attr::Value(ulong(CKK_DES2)),
            _ => {}
        }
    }
    match t {
        CKA_CLASS => Attr::Value(ulong(class_code(a.class))),
        CKA_TOKEN => b(a.token),
        CKA_PRIVATE => b(a.private),
        CKA_MODIFIABLE => b(a.modifiable),
        CKA_COPYABLE => b(a.copyable),
        CKA_DESTROYABLE => b(a.destroyable),
        // The same on every HSM the object is cloned to (none kept for session objects).
        CKA_UNIQUE_ID if !a.unique_id.is_empty() => Attr::Value(a.unique_id.as_bytes().to_vec()),
        CKA_LABEL => Attr::Value(a.label.as_bytes().to_vec()),
        CKA_KEY_TYPE => Attr::Value(ulong(key_type(spec))),
        CKA_ID => Attr::Value(a.id.clone()),
        CKA_START_DATE | CKA_END_DATE => Attr::Value(vec![]),
        CKA_DERIVE => b(a.derive),
        CKA_LOCAL => b(a.local),
        CKA_KEY_GEN_MECHANISM => Attr::Value(ulong(if a.local {
            keygen_mechanism(spec)
        } else {
            CK_UNAVAILABLE_INFORMATION
        })),
        CKA_ENCRYPT if a.class != ObjectClass::PrivateKey => b(a.encrypt),
        CKA_DECRYPT if secret_or_private => b(a.decrypt),
        CKA_SIGN if secret_or_private => b(a.sign),
        CKA_VERIFY if a.class != ObjectClass::PrivateKey => b(a.verify),
        CKA_SIGN_RECOVER if secret_or_private => b(false),
        CKA_VERIFY_RECOVER if a.class != ObjectClass::PrivateKey => b(false),
        CKA_WRAP if a.class != ObjectClass::PrivateKey => b(a.wrap),
        CKA_UNWRAP if secret_or_private => b(a.unwrap),
        CKA_TRUSTED if a.class != ObjectClass::PrivateKey => b(a.trusted),
        CKA_SENSITIVE if secret_or_private => b(a.sensitive),
        CKA_EXTRACTABLE if secret_or_private => b(a.extractable),
        CKA_ALWAYS_SENSITIVE if secret_or_private => b(a.always_sensitive),
        CKA_NEVER_EXTRACTABLE if secret_or_private => b(a.never_extractable),
        CKA_WRAP_WITH_TRUSTED if secret_or_private => b(a.wrap_with_trusted),
        CKA_WRAP_TEMPLATE if a.class != ObjectClass::PrivateKey => {
            Attr::Array(template_items(&a.wrap_template))
        }
        CKA_UNWRAP_TEMPLATE if secret_or_private => Attr::Array(template_items(&a.unwrap_template)),
        CKA_ALWAYS_AUTHENTICATE if a.class == ObjectClass::PrivateKey => b(false),
        CKA_SUBJECT if a.class != ObjectClass::SecretKey => Attr::Value(vec![]),
        CKA_PUBLIC_KEY_INFO if a.class != ObjectClass::SecretKey => {
            public.map_or(Attr::Invalid, |p| Attr::Value(p.to_vec()))
        }
        // A secret key made neither sensitive nor unextractable reads, as the standard says
        // (partition policy non-sensitive-keys decides whether such keys exist); any other
        // key's value never does.
        CKA_VALUE if a.class == ObjectClass::SecretKey && !a.sensitive && a.extractable => {
            Attr::Clear
        }
        CKA_VALUE if secret_or_private => Attr::Sensitive,
        CKA_VALUE_LEN if a.class == ObjectClass::SecretKey => {
            Attr::Value(ulong(mechanism::key_bits(spec) as CK_ULONG / 8))
        }
        CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2 | CKA_EXPONENT_1 | CKA_EXPONENT_2
        | CKA_COEFFICIENT
            if a.class == ObjectClass::PrivateKey && key_type(spec) == CKK_RSA =>
        {
            Attr::Sensitive
        }
        CKA_MODULUS | CKA_PUBLIC_EXPONENT
            if key_type(spec) == CKK_RSA && a.class != ObjectClass::SecretKey =>
        {
            match public.and_then(mechanism::rsa_components) {
                Some((n, e)) => Attr::Value(if t == CKA_MODULUS { n } else { e }),
                None => Attr::Invalid,
            }
        }
        CKA_MODULUS_BITS if key_type(spec) == CKK_RSA && a.class == ObjectClass::PublicKey => {
            Attr::Value(ulong(mechanism::key_bits(spec) as CK_ULONG))
        }
        CKA_EC_PARAMS
            if matches!(key_type(spec), CKK_EC | CKK_EC_EDWARDS)
                && a.class != ObjectClass::SecretKey =>
        {
            mechanism::ec_params(spec).map_or(Attr::Invalid, |p| Attr::Value(p.to_vec()))
        }
        CKA_EC_POINT
            if matches!(key_type(spec), CKK_EC | CKK_EC_EDWARDS)
                && a.class == ObjectClass::PublicKey =>
        {
            public
                .and_then(|p| mechanism::ec_point(spec, p))
                .map_or(Attr::Invalid, Attr::Value)
        }
        _ => Attr::Invalid,
    }
}

/// Whether `o` matches every (type, value) of a search template.
pub fn matches(o: &ObjectInfo, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
    template
        .iter()
        .all(|(t, v)| matches!(get(o, *t), Attr::Value(x) if x == *v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrohsm_core::object::Attributes;

    fn obj(class: ObjectClass, sensitive: bool) -> ObjectInfo {
        ObjectInfo {
            handle: 1,
            attrs: Attributes {
                class,
                spec: Some(KeySpec::Aes256),
                label: "k".into(),
                id: vec![1],
                token: true,
                private: true,
                sensitive,
                extractable: !sensitive,
                always_sensitive: sensitive,
                never_extractable: sensitive,
                local: true,
                modifiable: false,
                destroyable: true,
                sign: false,
                verify: false,
                encrypt: true,
                decrypt: true,
                wrap: false,
                unwrap: false,
                derive: false,
                wrap_with_trusted: false,
                trusted: false,
                wrap_template: Default::default(),
                unwrap_template: Default::default(),
                copyable: true,
                created: String::new(),
                unique_id: "1f2e".into(),
                gp: None,
            },
            public: None,
            content: None,
        }
    }

    #[test]
    fn the_unique_id_reads_as_kept_and_searches_match_it() {
        let mut o = obj(ObjectClass::SecretKey, true);
        assert_eq!(get(&o, CKA_UNIQUE_ID), Attr::Value(b"1f2e".to_vec()));
        assert!(matches(&o, &[(CKA_UNIQUE_ID, b"1f2e".to_vec())]));
        assert!(!matches(&o, &[(CKA_UNIQUE_ID, b"other".to_vec())]));
        o.attrs.unique_id.clear();
        assert_eq!(get(&o, CKA_UNIQUE_ID), Attr::Invalid);
    }

    #[test]
    fn secret_values_read_only_when_neither_sensitive_nor_unextractable() {
        for s in [true, false] {
            let mut o = obj(ObjectClass::SecretKey, s);
            o.attrs.extractable = false;
            assert_eq!(get(&o, CKA_VALUE), Attr::Sensitive);
        }
        let mut sensitive_extractable = obj(ObjectClass::SecretKey, true);
        sensitive_extractable.attrs.extractable = true;
        assert_eq!(get(&sensitive_extractable, CKA_VALUE), Attr::Sensitive);
        let mut open = obj(ObjectClass::SecretKey, false);
        open.attrs.extractable = true;
        assert_eq!(get(&open, CKA_VALUE), Attr::Clear);
        open.attrs.class = ObjectClass::PrivateKey;
        assert_eq!(get(&open, CKA_VALUE), Attr::Sensitive);
        assert_eq!(
            get(&obj(ObjectClass::SecretKey, true), CKA_MODULUS),
            Attr::Invalid
        );
        assert_eq!(
            get(&obj(ObjectClass::SecretKey, true), CKA_VALUE_LEN),
            Attr::Value(ulong(32))
        );
        assert!(matches(
            &obj(ObjectClass::SecretKey, true),
            &[
                (CKA_LABEL, b"k".to_vec()),
                (CKA_CLASS, ulong(CKO_SECRET_KEY))
            ]
        ));
        assert!(!matches(
            &obj(ObjectClass::SecretKey, true),
            &[(CKA_VALUE, vec![0; 32])]
        ));
    }
}
