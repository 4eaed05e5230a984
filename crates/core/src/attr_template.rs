//! Attribute templates a wrapping key carries (`CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`), as
//! PKCS#11 defines them: a wrapping key wraps only keys whose attributes match its wrap
//! template, and every key an unwrapping key unwraps takes the attributes of its unwrap
//! template (a caller's template that says otherwise is inconsistent). The engine keeps the
//! attributes it understands; a template naming any other is refused when the key is made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};
use crate::mechanism::KeySpec;
use crate::object::{Attributes, KeyOptions, KeyTemplate, ObjectClass};

/// A boolean attribute a template may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flag {
    /// `CKA_TOKEN`.
    Token,
    /// `CKA_PRIVATE`.
    Private,
    /// `CKA_SENSITIVE`.
    Sensitive,
    /// `CKA_EXTRACTABLE`.
    Extractable,
    /// `CKA_ENCRYPT`.
    Encrypt,
    /// `CKA_DECRYPT`.
    Decrypt,
    /// `CKA_SIGN`.
    Sign,
    /// `CKA_VERIFY`.
    Verify,
    /// `CKA_WRAP`.
    Wrap,
    /// `CKA_UNWRAP`.
    Unwrap,
    /// `CKA_DERIVE`.
    Derive,
    /// `CKA_WRAP_WITH_TRUSTED`.
    WrapWithTrusted,
    /// `CKA_COPYABLE`.
    Copyable,
}

/// The key families a template's `CKA_KEY_TYPE` names.
pub fn family(spec: KeySpec) -> &'static str {
    match spec {
        KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => "aes",
        KeySpec::Generic(_) => "generic-secret",
        KeySpec::Des3 => "des3",
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => "rsa",
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => "ec",
        KeySpec::Ed25519 => "ec-edwards",
    }
}

/// A template: the class, key family and boolean attributes it names, each with its value.
/// An empty template matches every key and changes none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrTemplate {
    /// `CKA_CLASS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ObjectClass>,
    /// `CKA_KEY_TYPE`, as [`family`] names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// Boolean attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flags: BTreeMap<Flag, bool>,
}

impl AttrTemplate {
    /// Whether the template names nothing.
    pub fn is_empty(&self) -> bool {
        self.class.is_none() && self.key_type.is_none() && self.flags.is_empty()
    }

    /// The value of flag `f` of a key.
    fn of(a: &Attributes, f: Flag) -> bool {
        match f {
            Flag::Token => a.token,
            Flag::Private => a.private,
            Flag::Sensitive => a.sensitive,
            Flag::Extractable => a.extractable,
            Flag::Encrypt => a.encrypt,
            Flag::Decrypt => a.decrypt,
            Flag::Sign => a.sign,
            Flag::Verify => a.verify,
            Flag::Wrap => a.wrap,
            Flag::Unwrap => a.unwrap,
            Flag::Derive => a.derive,
            Flag::WrapWithTrusted => a.wrap_with_trusted,
            Flag::Copyable => a.copyable,
        }
    }

    /// Whether key `a` has every attribute the template names, with its value.
    pub fn matches(&self, a: &Attributes) -> bool {
        self.class.is_none_or(|c| c == a.class)
            && self
                .key_type
                .as_deref()
                .is_none_or(|t| a.spec.is_some_and(|s| family(s) == t))
            && self.flags.iter().all(|(f, v)| Self::of(a, *f) == *v)
    }

    /// Applies the template to the template and options of a key being unwrapped (class
    /// `class`, type `spec`). A caller's value that differs from the template's is
    /// inconsistent ([`HsmError::InvalidInput`]), as is a class or type the template does not
    /// allow.
    pub fn apply_to(
        &self,
        class: ObjectClass,
        spec: Option<KeySpec>,
        tpl: &mut KeyTemplate,
        opts: &mut KeyOptions,
    ) -> Result<()> {
        let inconsistent = |what: &str| {
            Err(HsmError::InvalidInput(format!(
                "the unwrapping key's CKA_UNWRAP_TEMPLATE sets {what} otherwise (template inconsistent)"
            )))
        };
        if self.class.is_some_and(|c| c != class) {
            return inconsistent("CKA_CLASS");
        }
        if let (Some(t), Some(s)) = (&self.key_type, spec) {
            if family(s) != t {
                return inconsistent("CKA_KEY_TYPE");
            }
        }
        for (f, v) in &self.flags {
            let slot = match f {
                Flag::Token => {
                    tpl.session_private = !*v;
                    continue;
                }
                Flag::Extractable => {
                    opts.extractable = *v;
                    continue;
                }
                Flag::Private => &mut tpl.private,
                Flag::Sensitive => &mut tpl.sensitive,
                Flag::Encrypt => &mut tpl.encrypt,
                Flag::Decrypt => &mut tpl.decrypt,
                Flag::Sign => &mut tpl.sign,
                Flag::Verify => &mut tpl.verify,
                Flag::Wrap => &mut tpl.wrap,
                Flag::Unwrap => &mut tpl.unwrap,
                Flag::Derive => &mut tpl.derive,
                Flag::WrapWithTrusted => &mut tpl.wrap_with_trusted,
                Flag::Copyable => &mut tpl.copyable,
            };
            if slot.is_some_and(|mine| mine != *v) {
                return inconsistent(&format!("{f:?}"));
            }
            *slot = Some(*v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Attributes {
        Attributes {
            class: ObjectClass::SecretKey,
            spec: Some(KeySpec::Aes128),
            label: "k".into(),
            id: vec![],
            token: true,
            private: true,
            sensitive: true,
            extractable: true,
            always_sensitive: true,
            never_extractable: false,
            local: true,
            modifiable: true,
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
            copyable: true,
            wrap_template: AttrTemplate::default(),
            unwrap_template: AttrTemplate::default(),
            created: String::new(),
            unique_id: String::new(),
            gp: None,
        }
    }

    #[test]
    fn a_template_matches_only_keys_with_every_value_it_names() {
        let k = key();
        assert!(AttrTemplate::default().matches(&k));
        let mut t = AttrTemplate {
            class: Some(ObjectClass::SecretKey),
            key_type: Some("aes".into()),
            ..Default::default()
        };
        t.flags.insert(Flag::Sensitive, true);
        assert!(t.matches(&k));
        t.flags.insert(Flag::Decrypt, false);
        assert!(!t.matches(&k));
        t.flags.remove(&Flag::Decrypt);
        t.key_type = Some("des3".into());
        assert!(!t.matches(&k));
    }

    #[test]
    fn an_unwrap_template_sets_what_it_names_and_refuses_a_contradiction() {
        let mut t = AttrTemplate::default();
        t.flags.insert(Flag::Decrypt, false);
        t.flags.insert(Flag::Extractable, false);
        let mut tpl = KeyTemplate::default();
        let mut opts = KeyOptions {
            label: String::new(),
            id: vec![],
            extractable: true,
        };
        t.apply_to(ObjectClass::SecretKey, None, &mut tpl, &mut opts)
            .unwrap();
        assert_eq!(tpl.decrypt, Some(false));
        assert!(!opts.extractable);
        let mut asks = KeyTemplate {
            decrypt: Some(true),
            ..Default::default()
        };
        assert!(t
            .apply_to(ObjectClass::SecretKey, None, &mut asks, &mut opts)
            .is_err());
        let only_private = AttrTemplate {
            class: Some(ObjectClass::PrivateKey),
            ..Default::default()
        };
        assert!(only_private
            .apply_to(ObjectClass::SecretKey, None, &mut tpl, &mut opts)
            .is_err());
    }
}
