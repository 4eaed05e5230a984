//! Objects in a partition: keys with PKCS#11-style attributes, and the certificates and
//! data objects applications keep beside them. Key material is sealed under the partition
//! master key (which only the Crypto Officer, Crypto User or an activation can unwrap) and
//! the record as a whole under the store key.

use crate::attr_template::AttrTemplate;
use serde::{Deserialize, Serialize};

use crate::mechanism::KeySpec;

/// Object class (`CKA_CLASS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectClass {
    /// `CKO_SECRET_KEY`.
    SecretKey,
    /// `CKO_PRIVATE_KEY`.
    PrivateKey,
    /// `CKO_PUBLIC_KEY`.
    PublicKey,
    /// `CKO_CERTIFICATE` (X.509).
    Certificate,
    /// `CKO_DATA`.
    Data,
}

impl ObjectClass {
    /// Stable name, as indexed in the store.
    pub fn name(self) -> &'static str {
        match self {
            ObjectClass::SecretKey => "secret-key",
            ObjectClass::PrivateKey => "private-key",
            ObjectClass::PublicKey => "public-key",
            ObjectClass::Certificate => "certificate",
            ObjectClass::Data => "data",
        }
    }

    /// The class with this [`ObjectClass::name`].
    pub fn from_name(name: &str) -> crate::Result<ObjectClass> {
        [
            ObjectClass::SecretKey,
            ObjectClass::PrivateKey,
            ObjectClass::PublicKey,
            ObjectClass::Certificate,
            ObjectClass::Data,
        ]
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| crate::HsmError::InvalidInput(format!("unknown object class {name:?}")))
    }

    /// Whether objects of this class are keys (and so have a [`KeySpec`]).
    pub fn is_key(self) -> bool {
        matches!(
            self,
            ObjectClass::SecretKey | ObjectClass::PrivateKey | ObjectClass::PublicKey
        )
    }
}

/// What a certificate or data object holds (`CKA_VALUE` and its class's attributes). Never
/// secret: certificates are public, and a data object's value is readable by whoever may see
/// the object (`CKA_PRIVATE` objects only after login).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Content {
    /// An X.509 certificate (`CKC_X_509`).
    Certificate {
        /// DER of the certificate (`CKA_VALUE`).
        #[serde(with = "hex_bytes")]
        value: Vec<u8>,
        /// DER of its subject name (`CKA_SUBJECT`).
        #[serde(with = "hex_bytes")]
        subject: Vec<u8>,
        /// DER of its issuer name (`CKA_ISSUER`).
        #[serde(with = "hex_bytes")]
        issuer: Vec<u8>,
        /// DER of its serial number (`CKA_SERIAL_NUMBER`).
        #[serde(with = "hex_bytes")]
        serial: Vec<u8>,
        /// `CKA_CERTIFICATE_CATEGORY` (0 unspecified, 1 token user, 2 authority, 3 other).
        category: u8,
    },
    /// Application data (`CKO_DATA`).
    Data {
        /// `CKA_APPLICATION`.
        application: String,
        /// DER of `CKA_OBJECT_ID` (empty when not given).
        #[serde(with = "hex_bytes")]
        object_id: Vec<u8>,
        /// `CKA_VALUE`.
        #[serde(with = "hex_bytes")]
        value: Vec<u8>,
    },
}

/// A certificate or data object to create.
#[derive(Clone, Debug)]
pub struct NewObject {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// `CKA_PRIVATE`: visible only after login.
    pub private: bool,
    /// `CKA_MODIFIABLE`.
    pub modifiable: bool,
    /// `CKA_DESTROYABLE`.
    pub destroyable: bool,
    /// Its class and content.
    pub content: Content,
}

/// The attributes of a key object. Booleans follow PKCS#11 meanings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// `CKA_CLASS`.
    pub class: ObjectClass,
    /// Algorithm and size, for keys (`None` for certificates and data objects).
    pub spec: Option<KeySpec>,
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID`, hex in records.
    #[serde(with = "hex_bytes")]
    pub id: Vec<u8>,
    /// `CKA_TOKEN`: persists in the partition.
    pub token: bool,
    /// `CKA_PRIVATE`: visible only after login.
    pub private: bool,
    /// `CKA_SENSITIVE`: value never readable in clear.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: may leave wrapped.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: sensitive since creation.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: never extractable since creation.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated inside this HSM.
    pub local: bool,
    /// `CKA_MODIFIABLE`.
    pub modifiable: bool,
    /// `CKA_DESTROYABLE`.
    pub destroyable: bool,
    /// `CKA_SIGN`.
    pub sign: bool,
    /// `CKA_VERIFY`.
    pub verify: bool,
    /// `CKA_ENCRYPT`.
    pub encrypt: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
    /// `CKA_WRAP`.
    #[serde(default)]
    pub wrap: bool,
    /// `CKA_UNWRAP`.
    #[serde(default)]
    pub unwrap: bool,
    /// `CKA_DERIVE`.
    #[serde(default)]
    pub derive: bool,
    /// `CKA_WRAP_WITH_TRUSTED`: may be wrapped only by a trusted key.
    #[serde(default)]
    pub wrap_with_trusted: bool,
    /// `CKA_TRUSTED`: a trusted wrapping key. Never set by this HSM (only a security officer
    /// could, and security officers never touch keys), so `wrap_with_trusted` keys stay in.
    #[serde(default)]
    pub trusted: bool,
    /// `CKA_COPYABLE`: `C_CopyObject` may copy it (true unless made otherwise).
    #[serde(default = "copyable_default")]
    pub copyable: bool,
    /// `CKA_WRAP_TEMPLATE`: what a key must be for this key to wrap it.
    #[serde(default, skip_serializing_if = "AttrTemplate::is_empty")]
    pub wrap_template: AttrTemplate,
    /// `CKA_UNWRAP_TEMPLATE`: what every key this key unwraps becomes.
    #[serde(default, skip_serializing_if = "AttrTemplate::is_empty")]
    pub unwrap_template: AttrTemplate,
    /// When created (UTC).
    pub created: String,
    /// `CKA_UNIQUE_ID`: set when the object is made, never changed, the same on every HSM
    /// the object is cloned to (empty in records from before it; see [`Attributes::unique_id`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unique_id: String,
    /// A GlobalPlatform master key: which set, version and key of it. Such a key has no
    /// PKCS#11 usage (every usage flag false): only the GlobalPlatform functions use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gp: Option<GpMaster>,
}

/// What makes a secret key one of a GlobalPlatform master key set's three.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpMaster {
    /// The set's name.
    pub set: String,
    /// The set's version (1-127).
    pub version: u8,
    /// `enc`, `mac` or `dek`.
    pub role: String,
    /// `des3` (two-key), `aes-128`, `aes-192` or `aes-256`.
    pub key_type: String,
    /// The card population the set is defined for.
    pub population: String,
    /// Retired by the Crypto Officer: kept and listed, never used again.
    #[serde(default)]
    pub retired: bool,
}

impl Attributes {
    /// The object's unique id; for an object made before unique ids were kept, one derived
    /// from where it was made (its HSM, partition and handle), stable from then on.
    pub fn unique_id(&self, serial: &str, partition: u32, handle: u64) -> String {
        if self.unique_id.is_empty() {
            format!("{serial}-{partition}-{handle}")
        } else {
            self.unique_id.clone()
        }
    }
}

fn copyable_default() -> bool {
    true
}

/// What a copy of a key (`C_CopyObject`) changes. A copy may be more restricted than its
/// original, never less: `sensitive` may only turn on, `extractable` and `copyable` only
/// off.
#[derive(Clone, Debug, Default)]
pub struct CopyChanges {
    /// `CKA_LABEL`.
    pub label: Option<String>,
    /// `CKA_ID`.
    pub id: Option<Vec<u8>>,
    /// `CKA_TOKEN`: a token object (else a session object of `session_owner`).
    pub token: bool,
    /// `CKA_SENSITIVE`.
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE`.
    pub extractable: Option<bool>,
    /// `CKA_COPYABLE`.
    pub copyable: Option<bool>,
    /// The PKCS#11 session a session copy belongs to.
    pub session_owner: Option<u64>,
}

/// A key as callers see it: handle, attributes and (for public keys) the public value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Handle, stable for the object's life within its partition.
    pub handle: u64,
    /// Attributes.
    pub attrs: Attributes,
    /// SubjectPublicKeyInfo DER, for public keys.
    #[serde(with = "hex_opt")]
    pub public: Option<Vec<u8>>,
    /// What a certificate or data object holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// The one object of `class` among `found` (those labelled `label`): an error naming the
/// label when there is none, or more than one.
pub fn one_labelled(
    found: Vec<ObjectInfo>,
    label: &str,
    class: ObjectClass,
) -> crate::Result<ObjectInfo> {
    let mut of_class: Vec<ObjectInfo> = found
        .into_iter()
        .filter(|o| o.attrs.class == class)
        .collect();
    match of_class.len() {
        0 => Err(crate::HsmError::NotFound(format!(
            "no {} labelled {label:?}",
            class.name()
        ))),
        1 => Ok(of_class.remove(0)),
        n => Err(crate::HsmError::InvalidInput(format!(
            "{n} {}s are labelled {label:?}; use a handle",
            class.name()
        ))),
    }
}

impl Attributes {
    /// The key's algorithm and size; an error for objects that are not keys.
    pub fn key_spec(&self) -> crate::Result<KeySpec> {
        self.spec
            .ok_or_else(|| crate::HsmError::InvalidInput(format!("{:?} is not a key", self.label)))
    }
}

/// What is stored per object (opened from the store).
#[derive(Serialize, Deserialize)]
pub(crate) struct ObjectRecord {
    pub attrs: Attributes,
    #[serde(with = "hex_opt")]
    pub public: Option<Vec<u8>>,
    /// Key material sealed under the partition master key.
    #[serde(with = "hex_opt")]
    pub material: Option<Vec<u8>>,
    /// What a certificate or data object holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// Options when generating a key.
#[derive(Clone, Debug)]
pub struct KeyOptions {
    /// Label.
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// May the key leave the HSM wrapped (`CKA_EXTRACTABLE`)? Defaults to no.
    pub extractable: bool,
}

/// PKCS#11-style overrides for a generated key; `None` keeps the default (private,
/// sensitive, and the usages natural to the key type).
#[derive(Clone, Debug, Default)]
pub struct KeyTemplate {
    /// `CKA_PRIVATE` of the private or secret key.
    pub private: Option<bool>,
    /// `CKA_SENSITIVE` of the private or secret key.
    pub sensitive: Option<bool>,
    /// `CKA_SIGN`.
    pub sign: Option<bool>,
    /// `CKA_VERIFY`.
    pub verify: Option<bool>,
    /// `CKA_ENCRYPT`.
    pub encrypt: Option<bool>,
    /// `CKA_DECRYPT`.
    pub decrypt: Option<bool>,
    /// `CKA_WRAP`.
    pub wrap: Option<bool>,
    /// `CKA_UNWRAP`.
    pub unwrap: Option<bool>,
    /// `CKA_DERIVE`.
    pub derive: Option<bool>,
    /// `CKA_WRAP_WITH_TRUSTED`.
    pub wrap_with_trusted: Option<bool>,
    /// `CKA_COPYABLE`.
    pub copyable: Option<bool>,
    /// `CKA_WRAP_TEMPLATE` of the secret or public key.
    pub wrap_template: AttrTemplate,
    /// `CKA_UNWRAP_TEMPLATE` of the secret or private key.
    pub unwrap_template: AttrTemplate,
    /// Label of the public key, if it differs from the private key's.
    pub public_label: Option<String>,
    /// `CKA_ID` of the public key, if it differs.
    pub public_id: Option<Vec<u8>>,
    /// Refuse a label already used in the partition (the CLI names keys by label).
    pub unique_label: bool,
    /// Make the private or secret key a session object (`CKA_TOKEN` false): kept in the
    /// login's memory only, gone when its owner session closes or the login ends.
    pub session_private: bool,
    /// Make the public key a session object.
    pub session_public: bool,
    /// The PKCS#11 session that owns this call's session objects.
    pub session_owner: Option<u64>,
}

/// Handles at or above this are session objects (never stored).
pub const SESSION_HANDLE_BASE: u64 = 1 << 48;

/// Whether `handle` names a session object.
pub fn is_session_handle(handle: u64) -> bool {
    handle >= SESSION_HANDLE_BASE
}

/// What to look objects up by; each given field narrows through an index, never a scan.
#[derive(Clone, Debug, Default)]
pub struct ObjectFilter {
    /// `CKA_LABEL`.
    pub label: Option<String>,
    /// `CKA_ID`.
    pub id: Option<Vec<u8>>,
    /// `CKA_CLASS`.
    pub class: Option<ObjectClass>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| hex::decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
