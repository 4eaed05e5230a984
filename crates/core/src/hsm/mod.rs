//! The engine: one HSM over its data directory. Every front end (CLI, PKCS#11, server) goes
//! through [`Hsm`]; it checks role and policy, records an event in the same transaction as
//! the change, runs the operation and persists.
//!
//! This file holds the types the engine shares (sessions, loaded keys, the key cache, what
//! operators are shown); [`Hsm`]'s methods are split by concept: `device` (open, info, init,
//! zeroize, factory reset, tamper, restart), `login`, `partition` (policies, partitions),
//! `roles` (imprinting, lockout resets, activation, secret changes), `keys` (generation,
//! creation, relabelling, destruction), `clear_keys` (keys in clear under policy, the trust
//! mark), `wrapping` (wrap, unwrap, ECDH), `objects` (finding,
//! loading, the key cache), `ops` (sign, verify, encrypt, decrypt) and `auditing`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditConfig, KeyUseAudit, Witness};
use crate::audit_writer::{AuditWriter, KeyUse, UseGroup};
use crate::crypto::{self, hkdf32, KdfParams};
use crate::error::{HsmError, Result};
use crate::login_memo;
use crate::mechanism::{self, KeySpec, Mechanism, Params};
use crate::object::{
    Attributes, Content, KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo,
    ObjectRecord,
};
use crate::ped::{ImprintRequest, Imprinted, Ped, PresentRequest};
use crate::policy::Policy;
use crate::role::{AuthMethod, Role, RoleAuth};
use crate::secret::{Pin, Secret32, SecretBytes};
use crate::store::{Event, KeyState, ObjectIndex, Store, Txn};
use crate::time::{now_rfc3339, now_unix};
use ferrohsm_audit::{Export, Record, Report};

mod auditing;
mod backup;
mod clear_keys;
mod clients;
mod cloning;
mod device;
mod domain;
mod gp;
mod gp_channel;
mod ha;
mod keys;
mod login;
mod objects;
mod ops;
mod partition;
mod roles;
mod wrapping;

pub use backup::{BackupSummary, BACKUP_FORMAT, BACKUP_VERSION, MAX_BACKUP_BYTES};
pub use clear_keys::ClearKey;
pub use clients::{parse_enrollment_code, ClientInfo, Enrollment, MAX_ENROLLMENT_SECONDS};
pub use cloning::{CloneBatch, CloneHello, CloneProgress, CloneSelect, MAX_CLONE_BATCH};
pub use gp::{GpComponent, GpKeysRef, GpNewSet, GpSetInfo};

/// How the HSM's roles authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// PED keys (files), optionally with PED PINs and M of N.
    Ped,
    /// Passwords (so plain PKCS#11 tools can set partitions up).
    Password,
}

/// A credential presented at login.
pub enum Credential<'a> {
    /// Read the role's PED key(s) through a PED.
    Ped(&'a mut dyn Ped),
    /// A password (password-authenticated HSM) or, on a PED-authenticated HSM, the challenge
    /// secret of an activated Crypto Officer or Crypto User.
    Secret(Pin),
}

/// A new secret to imprint.
pub enum NewSecret<'a> {
    /// Run the PED dialogue (generate, or reuse an existing key's secret).
    Ped(&'a mut dyn Ped),
    /// A password (password-authenticated HSM).
    Password(Pin),
}

/// Which cloning domain a partition joins.
pub enum DomainChoice<'a> {
    /// None: the partition cannot clone (what `C_InitToken` makes).
    None,
    /// The HSM's own cloning domain, presented again (its red key, or its domain password):
    /// the HSM does not keep the domain where its device key alone would open it, so joining
    /// it takes the credential. Refused unless it is the HSM's domain.
    Hsm(Credential<'a>),
    /// A new domain, or an existing red key's (the PED dialogue's reuse answer), or a
    /// domain password on a password-authenticated HSM.
    Imprint(NewSecret<'a>),
}

/// What `hsm init` needs.
pub struct InitOptions<'a> {
    /// Label of the HSM.
    pub label: String,
    /// PED- or password-authenticated.
    pub mode: AuthMode,
    /// The HSM SO's new secret.
    pub so: NewSecret<'a>,
    /// The HSM's cloning domain.
    pub domain: NewSecret<'a>,
    /// On an initialised HSM: the current HSM SO's credential.
    pub current_so: Option<Credential<'a>>,
    /// On an initialised HSM with partitions: their labels, confirming their destruction.
    pub confirm_destroy: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Device {
    label: String,
    mode: AuthMode,
    initialised: String,
    policy: Policy,
    so: RoleAuth,
    /// The cloning domain as records before 0.9 kept it, in the clear under the device key.
    /// Read only to be moved out at [`Hsm::open`]; never written.
    #[serde(default, rename = "domain", skip_serializing)]
    legacy_domain: Option<Secret32>,
    /// The id of the HSM's cloning domain (the red key's secret id, or a hash of the domain
    /// password's value). The domain itself is not kept: partitions joining it present it.
    domain_id: String,
    /// A check value of the domain (HMAC under the domain, 16 bytes hex): what the red key or
    /// password presented at `partition init --domain hsm` is compared with.
    #[serde(default)]
    domain_check: Option<String>,
    boot_epoch: u64,
    next_partition: u32,
    /// A backup HSM: it keeps partitions' objects (cloned in and out) and never uses them.
    #[serde(default)]
    backup: bool,
}

#[derive(Clone, Serialize, Deserialize)]
struct Activation {
    kdf: KdfParams,
    auth: RoleAuth,
    epoch: u64,
    since: String,
}

#[derive(Serialize, Deserialize)]
struct Partition {
    id: u32,
    label: String,
    created: String,
    initialised: Option<String>,
    policy: Policy,
    so: Option<RoleAuth>,
    co: Option<RoleAuth>,
    cu: Option<RoleAuth>,
    /// The cloning domain as records before 0.9 kept it (in the clear under the device key);
    /// moved under the Partition SO's and the Crypto Officer's keys at their next logins.
    #[serde(default, rename = "domain", skip_serializing_if = "Option::is_none")]
    legacy_domain: Option<Secret32>,
    /// The cloning domain, sealed under a key derived from the partition master key: what a
    /// Crypto Officer's login opens to clone. The Partition SO's role key wraps it too (its
    /// `wrapped_pmk` slot), for the next Crypto Officer. The device key alone opens neither.
    #[serde(default)]
    domain_sealed: Option<String>,
    domain_id: Option<String>,
    activations: BTreeMap<String, Activation>,
    next_handle: u64,
}

impl Partition {
    fn role(&self, role: Role) -> Option<&RoleAuth> {
        match role {
            Role::PartitionSo => self.so.as_ref(),
            Role::CryptoOfficer => self.co.as_ref(),
            Role::CryptoUser => self.cu.as_ref(),
            _ => None,
        }
    }
    fn role_mut(&mut self, role: Role) -> Option<&mut RoleAuth> {
        match role {
            Role::PartitionSo => self.so.as_mut(),
            Role::CryptoOfficer => self.co.as_mut(),
            Role::CryptoUser => self.cu.as_mut(),
            _ => None,
        }
    }
    /// Back to "created": roles, domain, activations and objects gone.
    fn wipe(&mut self) {
        self.initialised = None;
        self.so = None;
        self.co = None;
        self.cu = None;
        self.legacy_domain = None;
        self.domain_sealed = None;
        self.domain_id = None;
        self.activations.clear();
    }
}

/// A logged-in role. Holds the partition master key for the Crypto Officer and Crypto User,
/// wiped on drop, and the keys this login has unsealed (its key cache, dropped with it).
/// Every operation re-checks the role; keys are served from the cache only while the
/// store's state generation is the one they were loaded at.
#[derive(Debug)]
pub struct Session {
    role: Role,
    partition: Option<u32>,
    partition_label: Option<String>,
    pmk: Option<Secret32>,
    /// The partition's cloning domain, held by a Partition SO's login (unwrapped with the
    /// Partition SO's secret) to seal it for a new Crypto Officer and re-wrap it when the
    /// Partition SO's secret changes. Wiped on drop.
    domain: Option<Secret32>,
    /// Logged in with an activated role's challenge secret rather than the role's own
    /// secret: such a login uses keys but never replaces the secret it stands in for.
    via_activation: bool,
    cache: KeyCache,
    /// Session objects (`CKA_TOKEN` false) by handle, with the PKCS#11 session owning each.
    /// Never written anywhere; dropped (and so zeroized) with their owner or the login.
    session_objects: Mutex<BTreeMap<u64, (u64, Arc<LoadedKey>)>>,
    /// Secure channels to cards this login opened, by id: theirs alone, and their session
    /// keys go (zeroized) with the login.
    gp_channels: gp_channel::Channels,
}

impl Session {
    fn session_objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (u64, Arc<LoadedKey>)>> {
        // Only inserts and removes happen under this lock; a poisoned map is still whole.
        self.session_objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Destroys every session object `owner` (a PKCS#11 session) made, as closing it must.
    pub fn drop_session_objects(&self, owner: u64) {
        self.session_objects().retain(|_, (o, _)| *o != owner);
    }

    /// The partition master key this login holds (Crypto Officer and Crypto User).
    fn pmk(&self) -> Result<&Secret32> {
        self.pmk
            .as_ref()
            .ok_or_else(|| HsmError::State("session holds no partition key".into()))
    }

    fn session_object(&self, handle: u64) -> Result<Arc<LoadedKey>> {
        self.session_objects()
            .get(&handle)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| HsmError::NotFound(format!("no object with handle {handle}")))
    }

    /// Keeps a new session object for `owner` (callers check [`Session::session_room`] before
    /// they record its creation); returns its handle.
    fn add_session_object(
        &self,
        owner: u64,
        partition: u32,
        mut attrs: Attributes,
        public: Option<Vec<u8>>,
        key: Option<mechanism::Key>,
    ) -> u64 {
        let key = key.map(Arc::new);
        let handle = NEXT_SESSION_HANDLE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        attrs.token = false;
        let info = ObjectInfo {
            handle,
            attrs,
            public,
            content: None,
        };
        let k = LoadedKey {
            info,
            partition,
            key,
        };
        self.session_objects().insert(handle, (owner, Arc::new(k)));
        handle
    }

    /// Refuses a new session object when the login holds [`MAX_SESSION_OBJECTS`] (`n` more).
    fn session_room(&self, n: usize) -> Result<()> {
        if self.session_objects().len() + n > MAX_SESSION_OBJECTS {
            return Err(HsmError::Exhausted(format!(
                "this login holds {MAX_SESSION_OBJECTS} session objects; destroy some first"
            )));
        }
        Ok(())
    }
}

/// At most this many session objects per login (a hostile or leaking application gets
/// `CKR_DEVICE_MEMORY`, not the process's memory).
pub const MAX_SESSION_OBJECTS: usize = 10_000;

/// The PKCS#11 session that is to own the session objects a call makes.
fn session_owner(tpl: &KeyTemplate) -> Result<u64> {
    tpl.session_owner.ok_or_else(|| {
        HsmError::InvalidInput("session objects need the session that owns them".into())
    })
}

/// The next session object handle (process-wide, so no two logins share one).
static NEXT_SESSION_HANDLE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(crate::object::SESSION_HANDLE_BASE);

/// Largest certificate or data object content, in bytes.
pub const MAX_OBJECT_CONTENT: usize = 1 << 20;

/// At most this many keys are kept per login; beyond it keys are loaded per operation.
const KEY_CACHE_MAX: usize = 4096;

/// The keys a login has unsealed and parsed, by handle, for one state generation of the
/// store. Any change to the HSM's state (an object created, changed or destroyed, a role,
/// partition or policy changed, a zeroize), made by any connection of any process, moves the
/// generation on, and the next lookup empties the cache, so a destroyed or changed key is
/// never served from it. Audit appends do not move the generation.
struct KeyCache {
    inner: Mutex<(u64, HashMap<u64, Arc<LoadedKey>>)>,
    /// Names the login this cache belongs to, unique in the process (see [`KeyMemo`]).
    login: u64,
}

impl Default for KeyCache {
    fn default() -> Self {
        static NEXT_LOGIN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        KeyCache {
            inner: Mutex::default(),
            login: NEXT_LOGIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The last key a caller loaded, kept by a caller that uses one key again and again (a
/// PKCS#11 session), so that finding it again touches neither the login's shared key cache
/// nor its lock. [`Hsm::load_key_memo`] serves it only to the same login at the same state
/// generation, so it is never served after a change; clear it when the login ends, so that
/// the key is not kept in memory longer than the login.
#[derive(Default)]
pub struct KeyMemo(Option<(u64, u64, Arc<LoadedKey>)>);

impl KeyMemo {
    /// Forgets the key.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl std::fmt::Debug for KeyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some((_, _, k)) => write!(f, "KeyMemo(key {})", k.info.handle),
            None => write!(f, "KeyMemo(empty)"),
        }
    }
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<u64, Arc<LoadedKey>>)> {
        // Nothing under this lock can panic half-way; a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, generation: u64, handle: u64) -> Option<Arc<LoadedKey>> {
        let mut g = self.lock();
        if g.0 != generation {
            g.1.clear();
            g.0 = generation;
            return None;
        }
        g.1.get(&handle).cloned()
    }

    /// Keeps a key loaded after `generation` was read (so it is at least that new).
    fn put(&self, generation: u64, key: Arc<LoadedKey>) {
        let mut g = self.lock();
        if g.0 == generation && g.1.len() < KEY_CACHE_MAX {
            g.1.insert(key.info.handle, key);
        }
    }

    fn len(&self) -> usize {
        self.lock().1.len()
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyCache({} keys)", self.len())
    }
}

/// A key object ready for use: what callers may see of it, and (for private and secret keys)
/// its material unsealed and parsed once. Obtained from [`Hsm::load_key`]; usable only by a
/// session of the partition it came from. Cloning shares the parsed key (no copy of it).
#[derive(Clone, Debug)]
pub struct LoadedKey {
    /// Handle, attributes and public value.
    pub info: ObjectInfo,
    partition: u32,
    /// Shared, so that relabelling a session object does not parse its key again.
    key: Option<Arc<mechanism::Key>>,
}

impl LoadedKey {
    fn material(&self) -> Result<&mechanism::Key> {
        self.key.as_deref().ok_or_else(|| {
            HsmError::InvalidInput(format!(
                "object {} holds no secret or private key",
                self.info.handle
            ))
        })
    }
}

impl Session {
    /// The role logged in.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Refuses `action` unless this is the HSM SO's login.
    pub fn require_hsm_so(&self, action: &str) -> Result<()> {
        if self.role != Role::HsmSo {
            return Err(need("HSM SO", action, self.role));
        }
        Ok(())
    }
    /// The partition's label, for partition roles.
    pub fn partition(&self) -> Option<&str> {
        self.partition_label.as_deref()
    }
}

/// A role as shown to operators.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleInfo {
    /// Role short name.
    pub role: String,
    /// "PED 2 of 3 with PED PIN", "password".
    pub auth: String,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// Locked out.
    pub locked: bool,
    /// Activated (challenge secret accepted), and whether that activation is live now.
    pub activated: bool,
}

/// A partition as shown to operators.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Stable numeric id (the PKCS#11 slot is derived from it).
    pub id: u32,
    /// Label (the PKCS#11 token label).
    pub label: String,
    /// Whether the Partition SO has initialised it.
    pub initialised: bool,
    /// Effective policies.
    pub policy: BTreeMap<String, String>,
    /// Cloning domain: "hsm", or the domain secret's id.
    pub domain: Option<String>,
    /// Number of objects.
    pub objects: u64,
    /// Initialised roles.
    pub roles: Vec<RoleInfo>,
}

/// The HSM as shown to operators. Nothing secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HsmInfo {
    /// Serial number.
    pub serial: String,
    /// "initialised", "uninitialised" or "zeroized".
    pub state: String,
    /// Label, once initialised.
    pub label: Option<String>,
    /// "ped" or "password", once initialised.
    pub auth_mode: Option<AuthMode>,
    /// HSM policies.
    pub policy: BTreeMap<String, String>,
    /// The HSM SO.
    pub hsm_so: Option<RoleInfo>,
    /// The Auditor (independent of initialisation).
    pub auditor: Option<RoleInfo>,
    /// Partitions.
    pub partitions: Vec<PartitionInfo>,
    /// When and why it was last zeroized.
    pub last_zeroized: Option<String>,
    /// A tamper event not yet cleared by re-initialisation.
    pub tamper: Option<String>,
    /// Restart counter (activations without auto-activation end at a restart).
    pub boot_epoch: u64,
    /// The id the next partition will get (a PKCS#11 module shows it as the spare,
    /// uninitialised token on password-authenticated HSMs).
    pub next_partition_id: u32,
    /// A backup HSM (`hsm init --backup`): keeps partitions' objects, never uses them.
    #[serde(default)]
    pub backup: bool,
}

/// How long the Auditor is locked out after 3 failed logins.
pub const AUDITOR_LOCKOUT_S: u64 = 600;

fn pid(id: u32) -> String {
    format!("{id:05}")
}

fn role_tag(role: Role, partition: Option<u32>) -> String {
    match partition {
        Some(p) => format!("p{p}/{}", role.short()),
        None => role.short().to_string(),
    }
}

fn need(role_needed: &str, action: &str, have: Role) -> HsmError {
    HsmError::Refused(format!(
        "{action} needs the {role_needed}; you are logged in as the {have}"
    ))
}

/// One HSM.
pub struct Hsm {
    store: Store,
    serial: String,
    writer: Option<(KeyUseAudit, AuditWriter)>,
    /// The audit configuration and the state generation it was read at.
    audit_cfg: Option<(u64, AuditConfig)>,
    /// Whether this is a backup HSM, and the state generation it was read at.
    backup_role: Option<(u64, bool)>,
}

impl Drop for Hsm {
    fn drop(&mut self) {
        // Commit queued key-use records before the process goes.
        self.writer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A login's session objects are bounded: past the limit a new one is refused with a
    /// resource error (CKR_DEVICE_MEMORY through PKCS#11), and nothing is added.
    #[test]
    fn session_objects_are_bounded_per_login() {
        let attrs = Attributes {
            class: ObjectClass::PublicKey,
            spec: Some(KeySpec::EcP256),
            label: String::new(),
            id: vec![],
            token: false,
            private: false,
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
            local: false,
            modifiable: true,
            destroyable: true,
            sign: false,
            verify: true,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            derive: false,
            wrap_with_trusted: false,
            trusted: false,
            wrap_template: Default::default(),
            unwrap_template: Default::default(),
            copyable: true,
            created: String::new(),
            unique_id: String::new(),
            gp: None,
        };
        let one = Arc::new(LoadedKey {
            info: ObjectInfo {
                handle: 0,
                attrs,
                public: None,
                content: None,
            },
            partition: 1,
            key: None,
        });
        let full: BTreeMap<u64, (u64, Arc<LoadedKey>)> = (0..MAX_SESSION_OBJECTS as u64)
            .map(|h| (crate::object::SESSION_HANDLE_BASE + h, (1, one.clone())))
            .collect();
        let s = Session {
            role: Role::CryptoOfficer,
            partition: Some(1),
            partition_label: None,
            pmk: None,
            domain: None,
            via_activation: false,
            cache: KeyCache::default(),
            session_objects: Mutex::new(full),
            gp_channels: Default::default(),
        };
        assert!(matches!(s.session_room(1), Err(HsmError::Exhausted(_))));
        s.drop_session_objects(1);
        assert!(s.session_room(2).is_ok());
    }
}
