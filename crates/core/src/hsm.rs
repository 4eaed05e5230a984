//! The engine: one HSM over its data directory. Every front end (CLI, PKCS#11, server) goes
//! through [`Hsm`]; it checks role and policy, records an event in the same transaction as
//! the change, runs the operation and persists.

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
    /// The HSM's own cloning domain.
    Hsm,
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
    domain: Secret32,
    domain_id: String,
    boot_epoch: u64,
    next_partition: u32,
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
    domain: Option<Secret32>,
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
        self.domain = None;
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
    cache: KeyCache,
    /// Session objects (`CKA_TOKEN` false) by handle, with the PKCS#11 session owning each.
    /// Never written anywhere; dropped (and so zeroized) with their owner or the login.
    session_objects: Mutex<BTreeMap<u64, (u64, Arc<LoadedKey>)>>,
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
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
}

impl Hsm {
    /// Opens the HSM in `dir`, which must exist.
    pub fn open(dir: &Path) -> Result<Hsm> {
        Self::with_store(Store::open(dir, false)?)
    }

    /// Opens the HSM in `dir`, creating an uninitialised one if there is none.
    pub fn open_or_create(dir: &Path) -> Result<Hsm> {
        Self::with_store(Store::open(dir, true)?)
    }

    fn with_store(store: Store) -> Result<Hsm> {
        let serial = store.serial()?;
        Ok(Hsm {
            store,
            serial,
            writer: None,
            audit_cfg: None,
        })
    }

    /// The store's state generation: it moves on with every change of state made through
    /// any handle in any process (see [`Store::generation`]), so anything read from the HSM
    /// may be kept while it is unchanged.
    pub fn state_generation(&mut self) -> Result<u64> {
        self.store.generation()
    }

    /// Serial number.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// All events recorded so far, oldest first.
    pub fn events(&mut self) -> Result<Vec<Event>> {
        self.store.events()
    }

    fn ev(
        &self,
        event: &str,
        role: &str,
        partition: Option<&str>,
        object: Option<&str>,
        outcome: &str,
    ) -> Event {
        Event {
            seq: 0,
            time: now_rfc3339(),
            serial: self.serial.clone(),
            event: event.into(),
            role: role.into(),
            partition: partition.map(str::to_owned),
            object: object.map(str::to_owned),
            outcome: outcome.into(),
        }
    }

    /// Records a refusal that changes nothing else (fail closed: if it cannot be recorded,
    /// the caller gets the store error instead of the refusal).
    fn refuse(
        &mut self,
        event: &str,
        role: &str,
        partition: Option<&str>,
        err: HsmError,
    ) -> HsmError {
        let e = self.ev(event, role, partition, None, &format!("failure: {err}"));
        match self.store.event(&e) {
            Ok(()) => err,
            Err(store_err) => store_err,
        }
    }

    fn device(t: &mut Txn<'_>) -> Result<Device> {
        t.get("device", "")?.ok_or_else(|| {
            HsmError::State("the HSM is not initialised; run `ferrohsm hsm init`".into())
        })
    }

    fn partition_by_label(t: &mut Txn<'_>, label: &str) -> Result<Partition> {
        for (_, p) in t.list::<Partition>("partition")? {
            if p.label == label {
                return Ok(p);
            }
        }
        Err(HsmError::NotFound(format!(
            "no partition labelled {label:?}"
        )))
    }

    fn partition_by_id(t: &mut Txn<'_>, id: u32) -> Result<Partition> {
        t.get("partition", &pid(id))?
            .ok_or_else(|| HsmError::State("the partition of this session no longer exists".into()))
    }

    fn role_info(role: Role, a: &RoleAuth, activated: bool) -> RoleInfo {
        RoleInfo {
            role: role.short().into(),
            auth: a.describe(),
            failed_logins: a.failed,
            locked: a.locked || a.lock_until.is_some_and(|t| t > now_unix()),
            activated,
        }
    }

    /// How roles authenticate ("ped" or "password"), or `None` before initialisation: what a
    /// login needs to know, without [`Hsm::info`]'s walk over every partition and its objects.
    pub fn auth_mode(&mut self) -> Result<Option<AuthMode>> {
        if self.store.key_state() == KeyState::Absent {
            return Ok(None);
        }
        self.store.read(|t| Ok(Some(Self::device(t)?.mode)))
    }

    /// Describes the HSM without authentication (labels, states, policies; nothing secret).
    pub fn info(&mut self) -> Result<HsmInfo> {
        let serial = self.serial.clone();
        let last_zeroized = self.store.meta("zeroized")?;
        let tamper = self.store.meta("tamper")?;
        let auditor = self.store.read(|t| {
            let Some(keys) = t.audit else { return Ok(None) };
            Ok(audit::get_state::<RoleAuth>(&t.tx, &keys.root, "auditor")?
                .map(|a| Self::role_info(Role::Auditor, &a, false)))
        })?;
        if self.store.key_state() == KeyState::Absent {
            return Ok(HsmInfo {
                serial,
                state: if last_zeroized.is_some() {
                    "zeroized".into()
                } else {
                    "uninitialised".into()
                },
                label: None,
                auth_mode: None,
                policy: BTreeMap::new(),
                hsm_so: None,
                auditor,
                partitions: vec![],
                last_zeroized,
                tamper,
                boot_epoch: 0,
                next_partition_id: 0,
            });
        }
        self.store.read(|t| {
            let d = Self::device(t)?;
            let mut partitions = Vec::new();
            for (_, p) in t.list::<Partition>("partition")? {
                let eff = p.policy.effective(&d.policy);
                let mut roles = Vec::new();
                for r in [Role::PartitionSo, Role::CryptoOfficer, Role::CryptoUser] {
                    if let Some(a) = p.role(r) {
                        let live = p.activations.get(r.short()).is_some_and(|act| {
                            eff.activation && (act.epoch == d.boot_epoch || eff.auto_activation)
                        });
                        roles.push(Self::role_info(r, a, live));
                    }
                }
                partitions.push(PartitionInfo {
                    id: p.id,
                    label: p.label.clone(),
                    initialised: p.initialised.is_some(),
                    policy: eff
                        .entries()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    domain: p.domain_id.clone().map(|id| {
                        if id == d.domain_id {
                            "hsm".into()
                        } else {
                            id
                        }
                    }),
                    objects: t.count_objects(p.id)?,
                    roles,
                });
            }
            Ok(HsmInfo {
                serial,
                state: "initialised".into(),
                label: Some(d.label.clone()),
                auth_mode: Some(d.mode),
                policy: d
                    .policy
                    .entries()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                hsm_so: Some(Self::role_info(Role::HsmSo, &d.so, false)),
                auditor: auditor.clone(),
                partitions,
                last_zeroized,
                tamper,
                boot_epoch: d.boot_epoch,
                next_partition_id: d.next_partition,
            })
        })
    }

    /// Runs the imprint of a new secret and returns the authenticator and how it is made.
    fn imprint(
        &self,
        secret: NewSecret<'_>,
        t: crate::pedkey::SecretType,
        label: String,
        mode: AuthMode,
        allow_m_of_n: bool,
    ) -> Result<(AuthMethod, Secret32, Option<Imprinted>)> {
        match (secret, mode) {
            (NewSecret::Ped(ped), AuthMode::Ped) => {
                let req = ImprintRequest {
                    secret_type: t,
                    label,
                    origin_serial: self.serial.clone(),
                    allow_m_of_n,
                };
                let imp = ped.imprint(&req, Secret32::random())?;
                let pin_kdf = imp.pin.as_ref().map(|_| KdfParams::fresh());
                let auth = crypto::mix_pin(
                    &imp.secret,
                    imp.pin.as_ref(),
                    pin_kdf.as_ref().unwrap_or(&KdfParams::fresh()),
                )?;
                let method = AuthMethod::Ped {
                    secret_id: imp.secret_id.clone(),
                    origin_serial: imp.origin_serial.clone(),
                    m: imp.m,
                    n: imp.n,
                    pin_kdf,
                };
                Ok((method, auth, Some(imp)))
            }
            (NewSecret::Password(pw), AuthMode::Password) => {
                let kdf = KdfParams::fresh();
                let auth = kdf.derive(pw.expose())?;
                Ok((AuthMethod::Password { kdf }, auth, None))
            }
            (NewSecret::Ped(_), AuthMode::Password) => Err(HsmError::InvalidInput(
                "this HSM is password-authenticated; give a password, not PED keys".into(),
            )),
            (NewSecret::Password(_), AuthMode::Ped) => Err(HsmError::InvalidInput(
                "this HSM is PED-authenticated; imprint PED keys, not a password".into(),
            )),
        }
    }

    /// Imprints a cloning domain: the domain secret itself (shared by every HSM or partition
    /// in the domain) and its id.
    fn imprint_domain(
        &self,
        secret: NewSecret<'_>,
        label: String,
        mode: AuthMode,
        allow_m_of_n: bool,
    ) -> Result<(Secret32, String, Option<Imprinted>)> {
        match (secret, mode) {
            (NewSecret::Ped(ped), AuthMode::Ped) => {
                let req = ImprintRequest { secret_type: crate::pedkey::SecretType::Domain, label, origin_serial: self.serial.clone(), allow_m_of_n };
                let imp = ped.imprint(&req, Secret32::random())?;
                // A PIN on a red key protects the key, and the domain value includes it, so
                // every member HSM must be given the same PIN.
                let value = match &imp.pin {
                    Some(pin) => hkdf32(pin.expose(), imp.secret.expose(), &[b"ferrohsm domain with pin v1"]),
                    None => imp.secret.clone(),
                };
                Ok((value, imp.secret_id.clone(), Some(imp)))
            }
            (NewSecret::Password(pw), AuthMode::Password) => {
                // Deterministic, so the same domain string gives the same domain everywhere.
                let kdf = KdfParams { m_kib: 19 * 1024, t: 2, p: 1, salt: hex::encode(b"ferrohsm domain") };
                let value = kdf.derive(pw.expose())?;
                let id = hex::encode(&crypto::hmac_sha256(value.expose(), &[b"domain id"])[..16]);
                Ok((value, id, None))
            }
            _ => Err(HsmError::InvalidInput("the cloning domain must be given the way this HSM authenticates (PED key or password)".into())),
        }
    }

    /// Initialises (or re-initialises) the HSM: imprints the HSM SO and the cloning domain,
    /// makes a new device key. Re-initialising needs the current HSM SO and, if partitions
    /// exist, their labels in `confirm_destroy`. The dialogues run before anything is
    /// destroyed, so a refused or failed dialogue leaves the HSM as it was.
    pub fn init(&mut self, opts: InitOptions<'_>) -> Result<Vec<Imprinted>> {
        let label = opts.label.trim().to_string();
        if label.is_empty() || label.len() > 32 {
            return Err(HsmError::InvalidInput(
                "an HSM label is 1 to 32 characters".into(),
            ));
        }
        if self.store.key_state() == KeyState::Present {
            let Some(cred) = opts.current_so else {
                return Err(self.refuse("hsm-init", "none", None, HsmError::Refused(
                    "the HSM is already initialised; re-initialising needs the current HSM SO's key (or zeroize first)".into())));
            };
            let s = self.login(Role::HsmSo, None, cred)?;
            let existing: Vec<(String, u64)> = self.store.read(|t| {
                let mut v = Vec::new();
                for (_, p) in t.list::<Partition>("partition")? {
                    let n = t.count_objects(p.id)?;
                    v.push((p.label, n));
                }
                Ok(v)
            })?;
            let mut want: Vec<&String> = existing.iter().map(|(l, _)| l).collect();
            let mut given: Vec<&String> = opts.confirm_destroy.iter().collect();
            want.sort();
            given.sort();
            if want != given {
                let list: Vec<String> = existing
                    .iter()
                    .map(|(l, n)| format!("{l} ({n} objects)"))
                    .collect();
                return Err(self.refuse("hsm-init", s.role.short(), None, HsmError::Refused(format!(
                    "re-initialising destroys partitions {} and every key in them; confirm by naming them all: --confirm-destroy {}",
                    list.join(", "),
                    existing.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(",")
                ))));
            }
        }
        let (so_method, so_auth, so_imp) = self.imprint(
            opts.so,
            crate::pedkey::SecretType::So,
            format!("HSM SO of {}", self.serial),
            opts.mode,
            true,
        )?;
        let (domain, domain_id, dom_imp) = self.imprint_domain(
            opts.domain,
            format!("cloning domain of {}", self.serial),
            opts.mode,
            true,
        )?;

        if self.store.key_state() == KeyState::Present {
            self.store.destroy_key_material("re-initialisation")?;
        }
        self.store.new_device_key()?;
        let dk = self.store.device_key()?.clone();
        let device = Device {
            label: label.clone(),
            mode: opts.mode,
            initialised: now_rfc3339(),
            policy: Policy::hsm_default(),
            so: RoleAuth::new(&dk, &role_tag(Role::HsmSo, None), so_method, &so_auth, None),
            domain,
            domain_id,
            boot_epoch: 1,
            next_partition: 1,
        };
        let e = self.ev("hsm-init", "hsm-so", None, Some(&label), "success");
        self.store.write(|t| {
            t.put("device", "", &device)?;
            t.event(&e)
        })?;
        Ok(so_imp.into_iter().chain(dom_imp).collect())
    }

    /// Destroys all key material irreversibly: device key, roles, partitions, objects. The
    /// serial and the event history remain. Needs the HSM SO.
    pub fn zeroize(&mut self, s: &Session, reason: &str) -> Result<()> {
        s.require_hsm_so("zeroize")?;
        self.zeroize_now(reason)
    }

    fn zeroize_now(&mut self, reason: &str) -> Result<()> {
        let e = self.ev(
            "zeroize",
            "device",
            None,
            None,
            &format!("success: {reason}"),
        );
        self.store.event(&e)?;
        self.store.destroy_key_material(reason)
    }

    /// Zeroize, and forget the zeroize and tamper notes: the HSM as delivered. Needs the HSM
    /// SO, or (`so` = `None`) direct local access to a directory no server holds, which the
    /// caller has had confirmed. The audit log, its signing key and the Auditor survive
    /// unless the Auditor also confirms by logging in (`auditor`): export the log first.
    pub fn factory_reset(&mut self, so: Option<&Session>, auditor: Option<&Session>) -> Result<()> {
        if let Some(s) = so {
            s.require_hsm_so("factory reset")?;
        }
        if let Some(a) = auditor {
            if a.role != Role::Auditor {
                return Err(need("Auditor", "erasing the audit log", a.role));
            }
        }
        let by = if so.is_some() {
            "HSM SO"
        } else {
            "local access"
        };
        self.writer = None;
        self.zeroize_now(&format!("factory reset ({by})"))?;
        let kept = if auditor.is_some() {
            self.store.reset_audit()?;
            "audit log erased by the Auditor"
        } else {
            "audit log and Auditor kept"
        };
        self.store.clear_meta("zeroized")?;
        self.store.clear_meta("tamper")?;
        let e = self.ev(
            "factory-reset",
            "device",
            None,
            None,
            &format!("success: {by}; {kept}"),
        );
        self.store.event(&e)
    }

    /// Zeroizes an HSM whose store fails its integrity checks (and so cannot be opened):
    /// the recovery a real HSM offers after tamper. Destroys the device key and every sealed
    /// record without reading them; the serial and the event history survive if readable.
    pub fn zeroize_unopenable(dir: &Path, reason: &str) -> Result<()> {
        let mut store = Store::open_unverified(dir)?;
        let serial = store.serial().unwrap_or_default();
        store.event(&Event {
            seq: 0,
            time: now_rfc3339(),
            serial,
            event: "zeroize".into(),
            role: "device".into(),
            partition: None,
            object: None,
            outcome: format!("success: {reason} (store failed its integrity checks)"),
        })?;
        store.destroy_key_material(reason)
    }

    /// The tamper switch (HSM SO): zeroize, which drops every activation with the partitions, and
    /// leave a tamper note that `hsm show` reports until the HSM is initialised again.
    pub fn tamper(&mut self, s: &Session) -> Result<()> {
        s.require_hsm_so("the tamper switch")?;
        let e = self.ev("tamper", "device", None, None, "tamper switch: zeroizing");
        self.store.event(&e)?;
        self.store.destroy_key_material("tamper")?;
        self.store
            .set_meta("tamper", &format!("tamper switch at {}", now_rfc3339()))
    }

    /// A restart of the HSM (HSM SO): activations end unless auto-activation is allowed.
    pub fn restart(&mut self, s: &Session) -> Result<u64> {
        s.require_hsm_so("restart")?;
        let e = self.ev("restart", "device", None, None, "success");
        self.store.write(|t| {
            let mut d = Self::device(t)?;
            d.boot_epoch += 1;
            t.put("device", "", &d)?;
            t.event(&e)?;
            Ok(d.boot_epoch)
        })
    }

    /// Logs a role in. PED credentials rebuild the role's secret from its keys (and PIN);
    /// a secret is a password, or an activated role's challenge secret. Failed attempts are
    /// counted and persisted before this returns; reaching the limit zeroizes the HSM (HSM SO,
    /// 3), zeroizes the partition (Partition SO, 10), locks the role until the Partition SO
    /// resets it (Crypto Officer and User, 10 or the policy's limit) or locks it out for ten
    /// minutes (Auditor, 3).
    pub fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        cred: Credential<'_>,
    ) -> Result<Session> {
        if role.in_partition() != partition.is_some() {
            return Err(HsmError::InvalidInput(if role.in_partition() {
                format!("the {role} logs in to a partition; name it with --partition")
            } else {
                format!("the {role} is not a partition role; do not name a partition")
            }));
        }
        let who = match partition {
            Some(p) => format!("{role} of {p}"),
            None => role.to_string(),
        };
        // Read what is needed to compute the authenticator, outside the write lock.
        struct Pre {
            mode: AuthMode,
            part_id: Option<u32>,
            auth: Option<RoleAuth>,
            activation: Option<Activation>,
            policy: Option<Policy>,
        }
        let pre = self.store.read(|t| {
            if role == Role::Auditor {
                let root = &t.audit_keys()?.root;
                let a: Option<RoleAuth> = audit::get_state(&t.tx, root, "auditor")?;
                let mode = match a.as_ref().map(|a| &a.method) {
                    Some(AuthMethod::Password { .. }) => AuthMode::Password,
                    _ => AuthMode::Ped,
                };
                return Ok(Pre {
                    mode,
                    part_id: None,
                    auth: a,
                    activation: None,
                    policy: None,
                });
            }
            let d = Self::device(t)?;
            match partition {
                None => Ok(Pre {
                    mode: d.mode,
                    part_id: None,
                    auth: Some(d.so.clone()),
                    activation: None,
                    policy: None,
                }),
                Some(l) => {
                    let p = Self::partition_by_label(t, l)?;
                    let eff = p.policy.effective(&d.policy);
                    let act = p.activations.get(role.short()).cloned().filter(|a| {
                        eff.activation && (a.epoch == d.boot_epoch || eff.auto_activation)
                    });
                    Ok(Pre {
                        mode: d.mode,
                        part_id: Some(p.id),
                        auth: p.role(role).cloned(),
                        activation: act,
                        policy: Some(eff),
                    })
                }
            }
        })?;
        let Some(auth_state) = pre.auth else {
            let e = HsmError::State(format!("the {who} is not initialised"));
            return Err(self.refuse("login", role.short(), partition, e));
        };
        if let Err(e) = auth_state.check_not_locked(&who, now_unix()) {
            return Err(self.refuse("login", role.short(), partition, e));
        }
        let tag = role_tag(role, pre.part_id);

        // Compute the candidate authenticator, and whether it is checked against an activation.
        // An application role's password or challenge secret may be served by the login memo.
        let memo_ttl = match role {
            Role::CryptoOfficer | Role::CryptoUser => {
                pre.policy.as_ref().map_or(0, |p| p.login_cache_seconds)
            }
            _ => 0,
        };
        let mut memo: Option<(&KdfParams, &[u8])> = None;
        let mut via_activation = false;
        let mut other_secret: Option<String> = None;
        let candidate = match cred {
            Credential::Ped(ped) => {
                if pre.mode != AuthMode::Ped {
                    return Err(HsmError::InvalidInput(format!(
                        "the {who} logs in with a password, not PED keys"
                    )));
                }
                let presented = match ped.present(&PresentRequest {
                    secret_type: role.secret_type(),
                    role: who.clone(),
                }) {
                    Ok(p) => p,
                    Err(e) => return Err(self.refuse("login", role.short(), partition, e)),
                };
                let AuthMethod::Ped {
                    secret_id, pin_kdf, ..
                } = &auth_state.method
                else {
                    return Err(HsmError::Tamper(
                        "role method disagrees with its mode".into(),
                    ));
                };
                if &presented.secret_id != secret_id {
                    // Still checked (and so counted) like any wrong secret; only the message
                    // is more helpful.
                    other_secret = Some(format!(
                        "the presented key holds another secret (\"{}\", from HSM {})",
                        presented.label, presented.origin_serial
                    ));
                }
                match (pin_kdf, &presented.pin) {
                    (Some(_), None) => {
                        return Err(HsmError::InvalidInput(format!(
                            "the {who} key is protected by a PED PIN; give it with --pin"
                        )))
                    }
                    (Some(k), Some(pin)) => crypto::mix_pin(&presented.secret, Some(pin), k)?,
                    (None, _) => crypto::mix_pin(&presented.secret, None, &KdfParams::fresh())?,
                }
            }
            Credential::Secret(ref pw) => match (&auth_state.method, pre.mode) {
                (AuthMethod::Password { kdf }, AuthMode::Password) => {
                    memo = Some((kdf, pw.expose()));
                    login_memo::derive(kdf, pw.expose(), memo_ttl)?.0
                }
                (_, AuthMode::Ped) => {
                    if !matches!(role, Role::CryptoOfficer | Role::CryptoUser) {
                        return Err(HsmError::InvalidInput(format!(
                            "the {who} logs in with PED keys, not a secret"
                        )));
                    }
                    let Some(act) = &pre.activation else {
                        let off = pre.policy.as_ref().is_some_and(|p| !p.activation);
                        let e = HsmError::Refused(format!(
                            "the {who} is not activated{}; log in with the PED key, or activate first",
                            if off { " (partition policy activation is off)" } else { "" }));
                        return Err(self.refuse("login", role.short(), partition, e));
                    };
                    via_activation = true;
                    memo = Some((&act.kdf, pw.expose()));
                    login_memo::derive(&act.kdf, pw.expose(), memo_ttl)?.0
                }
                _ => {
                    return Err(HsmError::Tamper(
                        "role method disagrees with its mode".into(),
                    ))
                }
            },
        };

        // Check and count under the write lock, against freshly read state.
        let dk = match role {
            Role::Auditor => self.store.audit_keys()?.root.clone(),
            _ => self.store.device_key()?.clone(),
        };
        let act_tag = format!("{tag}/activation");
        let co_cu_limit = pre
            .policy
            .as_ref()
            .map_or(crate::policy::MAX_FAILED_LOGINS, |p| p.failed_login_limit);
        let part_id = pre.part_id;
        let who2 = who.clone();
        let mut ev = self.ev("login", role.short(), partition, None, "");
        let outcome = self.store.write(|t| {
            let mut dev = if role == Role::Auditor { None } else { Some(Self::device(t)?) };
            let mut part = match part_id { Some(id) => Some(Self::partition_by_id(t, id)?), None => None };
            let state = match (role, &dev, &part) {
                (Role::Auditor, _, _) => audit::get_state::<RoleAuth>(&t.tx, &dk, "auditor")?,
                (_, _, Some(p)) => p.role(role).cloned(),
                (_, Some(d), None) => Some(d.so.clone()),
                _ => None,
            }.ok_or_else(|| HsmError::State(format!("the {who2} is not initialised")))?;
            state.check_not_locked(&who2, now_unix())?;
            let (ok, pmk) = if via_activation {
                let act = part.as_ref().and_then(|p| p.activations.get(role.short()))
                    .ok_or_else(|| HsmError::Refused(format!("the {who2} is no longer activated")))?;
                let ok = act.auth.matches(&dk, &act_tag, &candidate);
                (ok, if ok { act.auth.unwrap_pmk(&dk, &act_tag, &candidate)? } else { None })
            } else {
                let ok = state.matches(&dk, &tag, &candidate);
                (ok, if ok { state.unwrap_pmk(&dk, &tag, &candidate)? } else { None })
            };
            let limit = role.failed_login_limit(co_cu_limit);
            // A success on a role with no failures to clear changes no state: only its audit
            // record is written (and key caches keyed on the state generation stay valid).
            let state_changes = !ok || state.failed != 0 || state.lock_until.is_some();
            let mut new_state = state.clone();
            let mut zeroize_hsm = false;
            let result = if ok {
                new_state.failed = 0;
                new_state.lock_until = None;
                ev.outcome = if via_activation { "success (challenge secret)".into() } else { "success".into() };
                Ok(pmk)
            } else {
                new_state.failed += 1;
                let reason = match &other_secret {
                    Some(r) => r.clone(),
                    None if via_activation => "wrong challenge secret".to_string(),
                    None => "wrong PED key, PED PIN or password".to_string(),
                };
                ev.outcome = format!("failure: {reason} ({} of {limit})", new_state.failed);
                let reached = new_state.failed >= limit;
                Err(match role {
                    _ if !reached => HsmError::AuthFailed { role: who2.clone(), reason, remaining: Some(limit - new_state.failed) },
                    Role::HsmSo => {
                        zeroize_hsm = true;
                        HsmError::Locked(format!("{limit} failed HSM SO logins: the HSM has been zeroized"))
                    }
                    Role::PartitionSo => {
                        if let Some(p) = &mut part {
                            t.delete_partition_objects(p.id)?;
                            p.wipe();
                        }
                        HsmError::Locked(format!("{limit} failed Partition SO logins: partition {} has been zeroized", partition.unwrap_or_default()))
                    }
                    Role::Auditor => {
                        new_state.lock_until = Some(now_unix() + AUDITOR_LOCKOUT_S);
                        HsmError::Locked(format!("{reason}: the Auditor is locked out for {} minutes after {limit} failed logins", AUDITOR_LOCKOUT_S / 60))
                    }
                    Role::CryptoOfficer | Role::CryptoUser => {
                        new_state.locked = true;
                        HsmError::Locked(format!("{reason}: the {who2} is now locked after {limit} failed logins; the Partition SO must reset it"))
                    }
                })
            };
            match (role, &mut dev, &mut part) {
                _ if !state_changes => {}
                (Role::Auditor, _, _) => audit::put_state(&t.tx, &dk, "auditor", &new_state)?,
                (_, _, Some(p)) => {
                    if let Some(r) = p.role_mut(role) {
                        *r = new_state;
                    }
                    t.put("partition", &pid(p.id), p)?;
                }
                (_, Some(d), None) => {
                    d.so = new_state;
                    t.put("device", "", d)?;
                }
                _ => {}
            }
            t.event(&ev)?;
            Ok(result.map_err(|e| (e, zeroize_hsm)))
        })?;
        match outcome {
            Ok(pmk) => {
                if let Some((kdf, input)) = memo {
                    login_memo::remember(kdf, input, &candidate, memo_ttl);
                }
                Ok(Session {
                    role,
                    partition: part_id,
                    partition_label: partition.map(str::to_owned),
                    pmk,
                    cache: KeyCache::default(),
                    session_objects: Mutex::new(BTreeMap::new()),
                })
            }
            Err((e, zeroize_hsm)) => {
                if zeroize_hsm {
                    self.store.destroy_key_material("3 failed HSM SO logins")?;
                }
                Err(e)
            }
        }
    }

    /// Sets an HSM policy (HSM SO only).
    pub fn set_hsm_policy(&mut self, s: &Session, name: &str, value: &str) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if s.role != Role::HsmSo {
            return Err(self.refuse(
                "hsm-policy",
                s.role.short(),
                s.partition(),
                need("HSM SO", "changing HSM policy", s.role),
            ));
        }
        let e = self.ev(
            "hsm-policy",
            "hsm-so",
            None,
            Some(&format!("{name}={value}")),
            "success",
        );
        self.store.write(|t| {
            let mut d = Self::device(t)?;
            d.policy.set(name, value)?;
            t.put("device", "", &d)?;
            t.event(&e)
        })
    }

    /// Sets a policy of the session's partition (Partition SO only). A value the HSM policy
    /// forbids is refused, naming the HSM policy.
    pub fn set_partition_policy(&mut self, s: &Session, name: &str, value: &str) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if s.role != Role::PartitionSo {
            return Err(self.refuse(
                "partition-policy",
                s.role.short(),
                s.partition(),
                need("Partition SO", "changing partition policy", s.role),
            ));
        }
        if name == "init-token" {
            return Err(HsmError::InvalidInput(
                "init-token is an HSM policy (`ferrohsm hsm policy set init-token on`)".into(),
            ));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let e = self.ev(
            "partition-policy",
            "so",
            s.partition(),
            Some(&format!("{name}={value}")),
            "success",
        );
        self.store.write(|t| {
            let d = Self::device(t)?;
            let mut p = Self::partition_by_id(t, id)?;
            p.policy.set(name, value)?;
            let over = p.policy.exceeds(&d.policy);
            if over.contains(&name) {
                return Err(HsmError::Refused(format!(
                    "HSM policy {name} is off; the HSM SO must allow it first"
                )));
            }
            if !p.policy.activation {
                p.activations.clear();
            }
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })
    }

    /// Creates a partition (HSM SO only). Its id is the next free number and never changes.
    pub fn create_partition(&mut self, s: &Session, label: &str) -> Result<u32> {
        if s.role != Role::HsmSo {
            return Err(self.refuse(
                "partition-create",
                s.role.short(),
                s.partition(),
                need("HSM SO", "creating a partition", s.role),
            ));
        }
        self.insert_partition(label, "hsm-so")
    }

    /// `C_InitToken` on the spare token of a password-authenticated HSM: creates the partition
    /// labelled `label` (with the next id) and makes `so_password` its Partition SO's password,
    /// in the HSM's cloning domain. Refused on PED-authenticated HSMs, where partitions are
    /// created by the HSM SO with PED keys.
    pub fn init_token(&mut self, label: &str, so_password: Pin) -> Result<u32> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let (mode, allowed) = self.store.read(|t| {
            let d = Self::device(t)?;
            Ok((d.mode, d.policy.init_token))
        })?;
        if mode == AuthMode::Password && !allowed {
            return Err(self.refuse("partition-create", "none", Some(label), HsmError::Refused(
                "C_InitToken may not create partitions on this HSM: the HSM SO allows it with `ferrohsm hsm policy set init-token on`, or creates partitions with `ferrohsm partition create`".into())));
        }
        if mode != AuthMode::Password {
            return Err(self.refuse("partition-create", "none", Some(label), HsmError::Refused(
                "tokens of a PED-authenticated HSM are created by the HSM SO (`ferrohsm partition create`)".into())));
        }
        let id = self.insert_partition(label, "none")?;
        self.init_partition(
            label,
            NewSecret::Password(so_password),
            DomainChoice::Hsm,
            None,
        )?;
        Ok(id)
    }

    fn insert_partition(&mut self, label: &str, by: &str) -> Result<u32> {
        let label = label.trim();
        if label.is_empty() || label.len() > 32 {
            return Err(HsmError::InvalidInput(
                "a partition label is 1 to 32 characters (it becomes the PKCS#11 token label)"
                    .into(),
            ));
        }
        let e = self.ev("partition-create", by, Some(label), None, "success");
        self.store.write(|t| {
            let mut d = Self::device(t)?;
            if t.list::<Partition>("partition")?
                .iter()
                .any(|(_, p)| p.label == label)
            {
                return Err(HsmError::InvalidInput(format!(
                    "a partition labelled {label:?} exists already"
                )));
            }
            let id = d.next_partition;
            d.next_partition += 1;
            let p = Partition {
                id,
                label: label.to_string(),
                created: now_rfc3339(),
                initialised: None,
                policy: Policy::partition_default(),
                so: None,
                co: None,
                cu: None,
                domain: None,
                domain_id: None,
                activations: BTreeMap::new(),
                next_handle: 1,
            };
            t.put("partition", &pid(id), &p)?;
            t.put("device", "", &d)?;
            t.event(&e)?;
            Ok(id)
        })
    }

    /// Deletes a partition and every object in it (HSM SO only).
    pub fn delete_partition(&mut self, s: &Session, label: &str) -> Result<u64> {
        if s.role != Role::HsmSo {
            return Err(self.refuse(
                "partition-delete",
                s.role.short(),
                s.partition(),
                need("HSM SO", "deleting a partition", s.role),
            ));
        }
        let e = self.ev("partition-delete", "hsm-so", Some(label), None, "success");
        self.store.write(|t| {
            let p = Self::partition_by_label(t, label)?;
            let n = t.delete_partition_objects(p.id)?;
            t.delete("partition", &pid(p.id))?;
            t.event(&e)?;
            Ok(n as u64)
        })
    }

    /// Initialises a created partition: imprints its Partition SO and joins a cloning domain.
    /// Re-initialising an initialised partition needs its current Partition SO and destroys
    /// its roles and objects.
    pub fn init_partition(
        &mut self,
        label: &str,
        so: NewSecret<'_>,
        domain: DomainChoice<'_>,
        current_so: Option<Credential<'_>>,
    ) -> Result<Vec<Imprinted>> {
        let (mode, hsm_policy, initialised, hsm_domain) = self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_label(t, label)?;
            Ok((
                d.mode,
                d.policy.clone(),
                p.initialised.is_some(),
                (d.domain.clone(), d.domain_id.clone()),
            ))
        })?;
        if initialised {
            let Some(cred) = current_so else {
                return Err(self.refuse("partition-init", "none", Some(label), HsmError::Refused(format!(
                    "partition {label} is initialised; re-initialising it needs its current Partition SO and destroys its keys"))));
            };
            self.login(Role::PartitionSo, Some(label), cred)?;
        }
        let (so_method, so_auth, so_imp) = self.imprint(
            so,
            crate::pedkey::SecretType::So,
            format!("Partition SO of {label}"),
            mode,
            hsm_policy.m_of_n,
        )?;
        let (dom, dom_id, dom_imp) = match domain {
            DomainChoice::Hsm => (hsm_domain.0, hsm_domain.1, None),
            DomainChoice::Imprint(secret) => self.imprint_domain(
                secret,
                format!("cloning domain of {label}"),
                mode,
                hsm_policy.m_of_n,
            )?,
        };
        let dk = self.store.device_key()?.clone();
        let e = self.ev("partition-init", "so", Some(label), None, "success");
        self.store.write(|t| {
            let mut p = Self::partition_by_label(t, label)?;
            t.delete_partition_objects(p.id)?;
            p.wipe();
            p.so = Some(RoleAuth::new(
                &dk,
                &role_tag(Role::PartitionSo, Some(p.id)),
                so_method,
                &so_auth,
                None,
            ));
            p.domain = Some(dom);
            p.domain_id = Some(dom_id);
            p.initialised = Some(now_rfc3339());
            t.put("partition", &pid(p.id), &p)?;
            t.event(&e)
        })?;
        Ok(so_imp.into_iter().chain(dom_imp).collect())
    }

    /// Initialises the Crypto Officer (by the Partition SO) or the Crypto User (by the Crypto
    /// Officer). A new Crypto Officer gets a new partition master key, so re-initialising it
    /// destroys the partition's objects and needs `confirm_destroy`.
    pub fn init_role(
        &mut self,
        s: &Session,
        role: Role,
        secret: NewSecret<'_>,
        confirm_destroy: bool,
    ) -> Result<Option<Imprinted>> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let action = format!("initialising the {role}");
        match (role, s.role) {
            (Role::CryptoOfficer, Role::PartitionSo) | (Role::CryptoUser, Role::CryptoOfficer) => {}
            (Role::CryptoOfficer, have) => {
                return Err(self.refuse(
                    "role-init",
                    have.short(),
                    s.partition(),
                    need("Partition SO", &action, have),
                ))
            }
            (Role::CryptoUser, have) => {
                return Err(self.refuse(
                    "role-init",
                    have.short(),
                    s.partition(),
                    need("Crypto Officer", &action, have),
                ))
            }
            _ => {
                return Err(HsmError::InvalidInput(format!(
                    "{role} is not initialised with `role init`"
                )))
            }
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let (mode, allow_mofn, exists, objects) = self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_id(t, id)?;
            let n = t.count_objects(id)?;
            Ok((
                d.mode,
                p.policy.effective(&d.policy).m_of_n,
                p.role(role).is_some(),
                n,
            ))
        })?;
        if role == Role::CryptoOfficer && exists && !confirm_destroy {
            return Err(self.refuse("role-init", s.role.short(), s.partition(), HsmError::Refused(format!(
                "the Crypto Officer exists; a new one gets a new partition key, which destroys the partition's {objects} object(s) and its Crypto User: confirm with --confirm-destroy"))));
        }
        let label = s.partition_label.clone().unwrap_or_default();
        let (method, auth, imp) = self.imprint(
            secret,
            role.secret_type(),
            format!("{role} of {label}"),
            mode,
            allow_mofn,
        )?;
        let dk = self.store.device_key()?.clone();
        let pmk = match role {
            Role::CryptoOfficer => Secret32::random(),
            _ => s
                .pmk
                .clone()
                .ok_or_else(|| HsmError::State("session holds no partition key".into()))?,
        };
        let e = self.ev(
            "role-init",
            s.role.short(),
            s.partition(),
            Some(role.short()),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let ra = RoleAuth::new(&dk, &role_tag(role, Some(id)), method, &auth, Some(&pmk));
            if role == Role::CryptoOfficer {
                t.delete_partition_objects(id)?;
                p.cu = None;
                p.activations.clear();
                p.co = Some(ra);
            } else {
                p.activations.remove(role.short());
                p.cu = Some(ra);
            }
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })?;
        Ok(imp)
    }

    /// Clears a Crypto Officer's or Crypto User's lockout (Partition SO only).
    pub fn reset_role(&mut self, s: &Session, role: Role) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if s.role != Role::PartitionSo {
            return Err(self.refuse(
                "role-reset",
                s.role.short(),
                s.partition(),
                need("Partition SO", "resetting a lockout", s.role),
            ));
        }
        if !matches!(role, Role::CryptoOfficer | Role::CryptoUser) {
            return Err(HsmError::InvalidInput(
                "only the Crypto Officer or Crypto User can be reset".into(),
            ));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let e = self.ev(
            "role-reset",
            "so",
            s.partition(),
            Some(role.short()),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let r = p
                .role_mut(role)
                .ok_or_else(|| HsmError::State(format!("the {role} is not initialised")))?;
            r.failed = 0;
            r.locked = false;
            r.lock_until = None;
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })
    }

    /// Activates the session's Crypto Officer or Crypto User: caches its PED secret inside the
    /// HSM so that `challenge` alone logs it in, until deactivation, a policy change, a restart
    /// (unless auto-activation) or zeroize.
    pub fn activate(&mut self, s: &Session, challenge: Pin) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if !matches!(s.role, Role::CryptoOfficer | Role::CryptoUser) {
            return Err(self.refuse("activate", s.role.short(), s.partition(), HsmError::Refused(format!(
                "activation is for the Crypto Officer or Crypto User; you are logged in as the {}", s.role))));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let pmk = s
            .pmk
            .clone()
            .ok_or_else(|| HsmError::State("session holds no partition key".into()))?;
        let (mode, eff, epoch) = self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_id(t, id)?;
            Ok((d.mode, p.policy.effective(&d.policy), d.boot_epoch))
        })?;
        if mode != AuthMode::Ped {
            return Err(HsmError::Refused("activation applies to PED-authenticated HSMs; on this HSM the password is the login".into()));
        }
        if !eff.activation {
            return Err(self.refuse("activate", s.role.short(), s.partition(), HsmError::Refused(
                "partition policy activation is off; the Partition SO must allow it (`ferrohsm partition policy set activation on`)".into())));
        }
        let kdf = KdfParams::fresh();
        let auth = kdf.derive(challenge.expose())?;
        let dk = self.store.device_key()?.clone();
        let tag = format!("{}/activation", role_tag(s.role, Some(id)));
        let act = Activation {
            kdf: kdf.clone(),
            auth: RoleAuth::new(&dk, &tag, AuthMethod::Password { kdf }, &auth, Some(&pmk)),
            epoch,
            since: now_rfc3339(),
        };
        let e = self.ev("activate", s.role.short(), s.partition(), None, "success");
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            p.activations.insert(s.role.short().to_string(), act);
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })
    }

    /// Ends an activation (by the role itself or the Partition SO).
    pub fn deactivate(&mut self, s: &Session, role: Role) -> Result<bool> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let allowed = s.role == Role::PartitionSo || s.role == role;
        if !allowed || !matches!(role, Role::CryptoOfficer | Role::CryptoUser) {
            return Err(self.refuse("deactivate", s.role.short(), s.partition(), HsmError::Refused(format!(
                "deactivating the {role} needs that role or the Partition SO; you are logged in as the {}", s.role))));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let e = self.ev(
            "deactivate",
            s.role.short(),
            s.partition(),
            Some(role.short()),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let was = p.activations.remove(role.short()).is_some();
            t.put("partition", &pid(id), &p)?;
            t.event(&e)?;
            Ok(was)
        })
    }

    /// Replaces the session role's secret (the `changepw` of PED HSMs): a new secret through
    /// the PED dialogue (or a new password). Other roles are untouched.
    pub fn change_secret(
        &mut self,
        s: &Session,
        secret: NewSecret<'_>,
    ) -> Result<Option<Imprinted>> {
        let (mode, allow) = self.store.read(|t| {
            let d = Self::device(t)?;
            let allow = match s.partition {
                Some(id) => {
                    Self::partition_by_id(t, id)?
                        .policy
                        .effective(&d.policy)
                        .m_of_n
                }
                None => d.policy.m_of_n,
            };
            Ok((d.mode, allow))
        })?;
        let label = match &s.partition_label {
            Some(l) => format!("{} of {l}", s.role),
            None => format!("{} of {}", s.role, self.serial),
        };
        let (method, auth, imp) = self.imprint(secret, s.role.secret_type(), label, mode, allow)?;
        self.replace_auth(s, method, &auth, "role-change-secret")?;
        Ok(imp)
    }

    /// Changes (sets or removes) the PED PIN of the session's role, keeping its secret. The
    /// caller presents the role's keys again so the secret can be re-mixed with the new PIN.
    pub fn change_pin(
        &mut self,
        s: &Session,
        ped: &mut dyn Ped,
        new_pin: Option<Pin>,
    ) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let who = s.role.to_string();
        let presented = ped.present(&PresentRequest {
            secret_type: s.role.secret_type(),
            role: who.clone(),
        })?;
        let (method, dk) = {
            let cur = self.current_auth(s)?;
            (cur.method, self.store.device_key()?.clone())
        };
        let AuthMethod::Ped {
            secret_id,
            origin_serial,
            m,
            n,
            pin_kdf,
        } = method
        else {
            return Err(HsmError::Refused(
                "PED PINs apply to PED-authenticated HSMs".into(),
            ));
        };
        if presented.secret_id != secret_id {
            return Err(HsmError::WrongKey(format!(
                "the presented key holds another secret than the {who}'s"
            )));
        }
        // Prove the old PIN before replacing it.
        let old = crypto::mix_pin(
            &presented.secret,
            if pin_kdf.is_some() {
                presented.pin.as_ref()
            } else {
                None
            },
            pin_kdf.as_ref().unwrap_or(&KdfParams::fresh()),
        )?;
        let cur = self.current_auth(s)?;
        let tag = role_tag(s.role, s.partition);
        if !cur.matches(&dk, &tag, &old) {
            return Err(HsmError::AuthFailed {
                role: who,
                reason: "the current PED PIN is wrong".into(),
                remaining: None,
            });
        }
        let new_kdf = new_pin.as_ref().map(|_| KdfParams::fresh());
        let auth = crypto::mix_pin(
            &presented.secret,
            new_pin.as_ref(),
            new_kdf.as_ref().unwrap_or(&KdfParams::fresh()),
        )?;
        let method = AuthMethod::Ped {
            secret_id,
            origin_serial,
            m,
            n,
            pin_kdf: new_kdf,
        };
        self.replace_auth(s, method, &auth, "role-change-pin")
    }

    fn current_auth(&mut self, s: &Session) -> Result<RoleAuth> {
        self.store.read(|t| match s.partition {
            None => Ok(Self::device(t)?.so),
            Some(id) => Self::partition_by_id(t, id)?
                .role(s.role)
                .cloned()
                .ok_or_else(|| HsmError::State(format!("the {} is not initialised", s.role))),
        })
    }

    fn replace_auth(
        &mut self,
        s: &Session,
        method: AuthMethod,
        auth: &Secret32,
        event: &str,
    ) -> Result<()> {
        login_memo::forget_all();
        let dk = self.store.device_key()?.clone();
        let tag = role_tag(s.role, s.partition);
        let ra = RoleAuth::new(&dk, &tag, method, auth, s.pmk.as_ref());
        let e = self.ev(event, s.role.short(), s.partition(), None, "success");
        self.store.write(|t| {
            match s.partition {
                None => {
                    let mut d = Self::device(t)?;
                    d.so = ra;
                    t.put("device", "", &d)?;
                }
                Some(id) => {
                    let mut p = Self::partition_by_id(t, id)?;
                    let slot = p.role_mut(s.role).ok_or_else(|| {
                        HsmError::State(format!("the {} is not initialised", s.role))
                    })?;
                    *slot = ra;
                    t.put("partition", &pid(id), &p)?;
                }
            }
            t.event(&e)
        })
    }

    // ---- objects ----

    fn key_user(&mut self, s: &Session, action: &str, write: bool) -> Result<(u32, Secret32)> {
        let id = self.key_role(s, action, write)?;
        Ok((id, s.pmk()?.clone()))
    }

    /// Checks that the session may use (or, with `write`, create) keys; its partition's id.
    fn key_role(&mut self, s: &Session, action: &str, write: bool) -> Result<u32> {
        let ok = match s.role {
            Role::CryptoOfficer => true,
            Role::CryptoUser => !write,
            _ => false,
        };
        if !ok {
            let msg = match s.role {
                Role::CryptoUser => format!("{action} needs the Crypto Officer; the Crypto User may only use existing keys"),
                Role::PartitionSo | Role::HsmSo => format!("{action} needs the Crypto Officer{}; security officers never use partition keys", if write { "" } else { " or Crypto User" }),
                other => format!("{action} needs the Crypto Officer; you are logged in as the {other}"),
            };
            return Err(self.refuse(
                if write { "key-create" } else { "key-use" },
                s.role.short(),
                s.partition(),
                HsmError::Refused(msg),
            ));
        }
        s.partition
            .ok_or_else(|| HsmError::State("no partition".into()))
    }

    fn material_aad(partition: u32, handle: u64) -> Vec<u8> {
        format!("keymat\0{partition}\0{handle}").into_bytes()
    }

    /// Generates a key (secret key, or private and public key pair) in the session's partition
    /// (Crypto Officer only). Returns the handles made.
    pub fn generate_key(
        &mut self,
        s: &Session,
        spec: KeySpec,
        opts: &KeyOptions,
    ) -> Result<Vec<u64>> {
        self.generate_key_with(
            s,
            spec,
            opts,
            &KeyTemplate {
                unique_label: true,
                ..Default::default()
            },
        )
    }

    /// Generates a key with PKCS#11 template overrides (usages, sensitivity, privacy, a
    /// different public label or id). Returns the handles made: the secret key, or the
    /// private key then the public key.
    pub fn generate_key_with(
        &mut self,
        s: &Session,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        if tpl.session_private || tpl.session_public {
            return self.generate_with_session_objects(s, spec, opts, tpl);
        }
        let mut made = self.generate_keys_with(s, spec, std::slice::from_ref(opts), tpl)?;
        made.pop()
            .ok_or_else(|| HsmError::State("no key was generated".into()))
    }

    /// Generates one key per entry of `each` (same spec and template) in one transaction:
    /// all are made, each with its own audit record, or none is. For provisioning many keys
    /// at once (card issuance batches); at most 100,000 per call. Returns each key's handles.
    pub fn generate_keys_with(
        &mut self,
        s: &Session,
        spec: KeySpec,
        each: &[KeyOptions],
        tpl: &KeyTemplate,
    ) -> Result<Vec<Vec<u64>>> {
        let (id, pmk) = self.key_user(s, "creating keys", true)?;
        if each.is_empty() || each.len() > 100_000 {
            return Err(HsmError::InvalidInput(
                "generate 1 to 100000 keys at a time".into(),
            ));
        }
        for opts in each {
            if opts.label.len() > 128 || (tpl.unique_label && opts.label.is_empty()) {
                return Err(HsmError::InvalidInput(
                    "a key label is 1 to 128 characters".into(),
                ));
            }
        }
        let mut made = Vec::with_capacity(each.len());
        for opts in each {
            let g = mechanism::generate(spec)?;
            let (attrs, public_attrs) = Self::key_attributes(spec, opts, tpl, true);
            let e = self.ev(
                "key-generate",
                s.role.short(),
                s.partition(),
                Some(&format!("{} ({spec})", opts.label)),
                "success",
            );
            made.push((opts, g, attrs, public_attrs, e));
        }
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let mut out = Vec::with_capacity(made.len());
            let mut labels = std::collections::HashSet::new();
            for (opts, g, attrs, public_attrs, e) in made {
                if tpl.unique_label
                    && (!labels.insert(opts.label.clone())
                        || !t.object_handles(id, Some(&opts.label))?.is_empty())
                {
                    return Err(HsmError::InvalidInput(format!(
                        "a key labelled {:?} exists already in {}",
                        opts.label, p.label
                    )));
                }
                let mut handles = vec![Self::put_key(
                    t,
                    &mut p,
                    &pmk,
                    attrs,
                    g.public.clone(),
                    Some(&g.private),
                )?];
                if let Some(pa) = public_attrs {
                    handles.push(Self::put_key(t, &mut p, &pmk, pa, g.public.clone(), None)?);
                }
                t.event(&e)?;
                out.push(handles);
            }
            t.put("partition", &pid(id), &p)?;
            Ok(out)
        })
    }

    /// [`Hsm::generate_key_with`] where one half or both are session objects: those stay in
    /// the login's memory (the creation is still audited); any token half is stored.
    fn generate_with_session_objects(
        &mut self,
        s: &Session,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        let (id, pmk) = self.key_user(s, "creating keys", true)?;
        let owner = session_owner(tpl)?;
        s.session_room(2)?;
        if opts.label.len() > 128 {
            return Err(HsmError::InvalidInput(
                "a key label is at most 128 characters".into(),
            ));
        }
        let g = mechanism::generate(spec)?;
        let (mut attrs, public_attrs) = Self::key_attributes(spec, opts, tpl, true);
        attrs.token = !tpl.session_private;
        let public_attrs = public_attrs.map(|mut a| {
            a.token = !tpl.session_public;
            a
        });
        let e = self.ev(
            "key-generate",
            s.role.short(),
            s.partition(),
            Some(&format!("{} ({spec}, session object)", opts.label)),
            "success",
        );
        let parsed = mechanism::Key::parse(spec, g.private.clone())?;
        let mut halves = vec![(attrs, Some(parsed))];
        if let Some(pa) = public_attrs {
            halves.push((pa, None));
        }
        let any_token = halves.iter().any(|(a, _)| a.token);
        let token_handles = if any_token {
            self.store.write(|t| {
                let mut p = Self::partition_by_id(t, id)?;
                let mut hs = Vec::new();
                for (a, key) in &halves {
                    if a.token {
                        let secret = key.as_ref().map(|_| &g.private);
                        hs.push(Self::put_key(
                            t,
                            &mut p,
                            &pmk,
                            a.clone(),
                            g.public.clone(),
                            secret,
                        )?);
                    }
                }
                t.put("partition", &pid(id), &p)?;
                t.event(&e)?;
                Ok(hs)
            })?
        } else {
            // Nothing stored, so no state changes: only the audit record is written.
            self.store.event(&e)?;
            Vec::new()
        };
        let mut token_handles = token_handles.into_iter();
        let mut out = Vec::new();
        for (a, key) in halves {
            let h = if a.token {
                token_handles
                    .next()
                    .ok_or_else(|| HsmError::State("a stored half went missing".into()))?
            } else {
                s.add_session_object(owner, id, a, g.public.clone(), key)
            };
            out.push(h);
        }
        Ok(out)
    }

    /// Stores a public key brought from outside (Crypto Officer): a token object, or a session
    /// object when `tpl.session_public` is set. Public keys are not secret, so they may enter
    /// in clear; they verify and encrypt (never wrap: a trusted wrapping key is an SO's call).
    pub fn import_public_key(
        &mut self,
        s: &Session,
        spec: KeySpec,
        spki: Vec<u8>,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "importing public keys", true)?;
        if opts.label.len() > 128 {
            return Err(HsmError::InvalidInput(
                "a key label is at most 128 characters".into(),
            ));
        }
        let (_, public) = Self::key_attributes(spec, opts, tpl, false);
        let mut a =
            public.ok_or_else(|| HsmError::InvalidInput(format!("{spec} has no public key")))?;
        a.wrap = false;
        a.token = !tpl.session_public;
        let e = self.ev(
            "key-import",
            s.role.short(),
            s.partition(),
            Some(&format!(
                "{} ({spec} public key{})",
                a.label,
                if a.token { "" } else { ", session object" }
            )),
            "success",
        );
        if a.token {
            return self.store.write(|t| {
                let mut p = Self::partition_by_id(t, id)?;
                let h = Self::put_key(t, &mut p, &pmk, a, Some(spki), None)?;
                t.put("partition", &pid(id), &p)?;
                t.event(&e)?;
                Ok(h)
            });
        }
        let owner = session_owner(tpl)?;
        s.session_room(1)?;
        self.store.event(&e)?;
        Ok(s.add_session_object(owner, id, a, Some(spki), None))
    }

    /// The attributes of a new key (and, for a key pair, of its public half) from its spec,
    /// options and template. `local` keys were generated here; others (unwrapped) were not,
    /// so they are never "always sensitive" or "never extractable".
    fn key_attributes(
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
        local: bool,
    ) -> (Attributes, Option<Attributes>) {
        let sensitive = tpl.sensitive.unwrap_or(true);
        let base = Attributes {
            class: ObjectClass::SecretKey,
            spec: Some(spec),
            label: opts.label.clone(),
            id: opts.id.clone(),
            token: true,
            private: tpl.private.unwrap_or(true),
            sensitive,
            extractable: opts.extractable,
            always_sensitive: local && sensitive,
            never_extractable: local && !opts.extractable,
            local,
            modifiable: true,
            destroyable: true,
            sign: false,
            verify: false,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            derive: false,
            wrap_with_trusted: tpl.wrap_with_trusted.unwrap_or(false),
            trusted: false,
            created: now_rfc3339(),
        };
        if spec.is_symmetric() {
            // A generic secret is for MACs; AES and 3DES keys are for encryption.
            let mac_key = matches!(spec, KeySpec::Generic(_));
            let a = Attributes {
                encrypt: tpl.encrypt.unwrap_or(!mac_key),
                decrypt: tpl.decrypt.unwrap_or(!mac_key),
                sign: tpl.sign.unwrap_or(mac_key),
                verify: tpl.verify.unwrap_or(mac_key),
                wrap: tpl.wrap.unwrap_or(false),
                unwrap: tpl.unwrap.unwrap_or(false),
                derive: tpl.derive.unwrap_or(false),
                ..base
            };
            return (a, None);
        }
        let can_encrypt = spec.default_encrypt().is_some();
        let public = Attributes {
            class: ObjectClass::PublicKey,
            label: tpl
                .public_label
                .clone()
                .unwrap_or_else(|| base.label.clone()),
            id: tpl.public_id.clone().unwrap_or_else(|| base.id.clone()),
            private: false,
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
            verify: tpl.verify.unwrap_or(true),
            encrypt: tpl.encrypt.unwrap_or(can_encrypt),
            wrap: tpl.wrap.unwrap_or(false),
            derive: tpl.derive.unwrap_or(false),
            wrap_with_trusted: false,
            ..base.clone()
        };
        let private = Attributes {
            class: ObjectClass::PrivateKey,
            sign: tpl.sign.unwrap_or(true),
            decrypt: tpl.decrypt.unwrap_or(can_encrypt),
            unwrap: tpl.unwrap.unwrap_or(false),
            derive: tpl.derive.unwrap_or(false),
            ..base
        };
        (private, Some(public))
    }

    /// Seals and stores one key object; returns its handle.
    fn put_key(
        t: &mut Txn<'_>,
        p: &mut Partition,
        pmk: &Secret32,
        attrs: Attributes,
        public: Option<Vec<u8>>,
        secret: Option<&SecretBytes>,
    ) -> Result<u64> {
        let id = p.id;
        let h = p.next_handle;
        p.next_handle += 1;
        let material = secret.map(|m| crypto::seal(pmk, &Self::material_aad(id, h), m.expose()));
        Self::put_record(
            t,
            id,
            h,
            &ObjectRecord {
                attrs,
                public,
                material,
                content: None,
            },
        )?;
        Ok(h)
    }

    /// Seals and stores an object record under `handle`, with its index.
    fn put_record(t: &mut Txn<'_>, partition: u32, handle: u64, rec: &ObjectRecord) -> Result<()> {
        let pt = zeroize::Zeroizing::new(
            serde_json::to_vec(rec).map_err(|e| HsmError::Store(e.to_string()))?,
        );
        t.put_object(
            partition,
            handle,
            &ObjectIndex {
                class: rec.attrs.class.name(),
                label: &rec.attrs.label,
                id: &rec.attrs.id,
            },
            &pt,
        )
    }

    /// Stores a certificate or data object in the session's partition (Crypto Officer).
    /// Returns its handle.
    pub fn create_object(&mut self, s: &Session, o: NewObject) -> Result<u64> {
        let (id, _) = self.key_user(s, "creating objects", true)?;
        if o.label.len() > 128 || o.id.len() > 128 {
            return Err(HsmError::InvalidInput(
                "an object label or id is at most 128 bytes".into(),
            ));
        }
        let (class, size) = match &o.content {
            Content::Certificate {
                value,
                subject,
                issuer,
                serial,
                ..
            } => (
                ObjectClass::Certificate,
                value.len() + subject.len() + issuer.len() + serial.len(),
            ),
            Content::Data {
                application,
                object_id,
                value,
            } => (
                ObjectClass::Data,
                value.len() + application.len() + object_id.len(),
            ),
        };
        if size > MAX_OBJECT_CONTENT {
            return Err(HsmError::InvalidInput(format!(
                "an object holds at most {MAX_OBJECT_CONTENT} bytes; this one has {size}"
            )));
        }
        let attrs = Attributes {
            class,
            spec: None,
            label: o.label,
            id: o.id,
            token: true,
            private: o.private,
            sensitive: false,
            extractable: false,
            always_sensitive: false,
            never_extractable: false,
            local: false,
            modifiable: o.modifiable,
            destroyable: o.destroyable,
            sign: false,
            verify: false,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            derive: false,
            wrap_with_trusted: false,
            trusted: false,
            created: now_rfc3339(),
        };
        let e = self.ev(
            "object-create",
            s.role.short(),
            s.partition(),
            Some(&format!("{} ({})", attrs.label, class.name())),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let h = p.next_handle;
            p.next_handle += 1;
            Self::put_record(
                t,
                id,
                h,
                &ObjectRecord {
                    attrs,
                    public: None,
                    material: None,
                    content: Some(o.content),
                },
            )?;
            t.put("partition", &pid(id), &p)?;
            t.event(&e)?;
            Ok(h)
        })
    }

    /// Changes an object's label and/or id (Crypto Officer), if it is modifiable
    /// (`CKA_MODIFIABLE`). Nothing else about an object changes after it is made.
    pub fn relabel_object(
        &mut self,
        s: &Session,
        handle: u64,
        label: Option<String>,
        object_id: Option<Vec<u8>>,
    ) -> Result<()> {
        let (id, _) = self.key_user(s, "changing objects", true)?;
        if label.as_ref().is_some_and(|l| l.len() > 128)
            || object_id.as_ref().is_some_and(|i| i.len() > 128)
        {
            return Err(HsmError::InvalidInput(
                "an object label or id is at most 128 bytes".into(),
            ));
        }
        if crate::object::is_session_handle(handle) {
            let k = s.session_object(handle)?;
            if !k.info.attrs.modifiable {
                return Err(HsmError::Refused(format!(
                    "{:?} is not modifiable (CKA_MODIFIABLE is false)",
                    k.info.attrs.label
                )));
            }
            let mut info = k.info.clone();
            if let Some(l) = label {
                info.attrs.label = l;
            }
            if let Some(i) = object_id {
                info.attrs.id = i;
            }
            let renamed = LoadedKey {
                info,
                partition: k.partition,
                key: k.key.clone(),
            };
            // Operations already started keep the old entry; new lookups see the new one.
            if let Some(entry) = s.session_objects().get_mut(&handle) {
                entry.1 = Arc::new(renamed);
            }
            return Ok(());
        }
        let role = s.role.short().to_string();
        let part = s.partition_label.clone();
        let serial = self.serial.clone();
        self.store.write(|t| {
            let mut rec = Self::load(t, id, handle)?;
            if !rec.attrs.modifiable {
                return Err(HsmError::Refused(format!(
                    "{:?} is not modifiable (CKA_MODIFIABLE is false)",
                    rec.attrs.label
                )));
            }
            let before = rec.attrs.label.clone();
            if let Some(l) = label {
                rec.attrs.label = l;
            }
            if let Some(i) = object_id {
                rec.attrs.id = i;
            }
            Self::put_record(t, id, handle, &rec)?;
            t.event(&Event {
                seq: 0,
                time: now_rfc3339(),
                serial,
                event: "object-modify".into(),
                role,
                partition: part,
                object: Some(before),
                outcome: format!(
                    "success: now labelled {:?}, id {}",
                    rec.attrs.label,
                    hex::encode(&rec.attrs.id)
                ),
            })
        })
    }

    /// Checks that `target` may be wrapped by `wrapper` and returns both records: the target
    /// must be extractable (`CKA_EXTRACTABLE`), the wrapper allowed to wrap (`CKA_WRAP`), and a
    /// `CKA_WRAP_WITH_TRUSTED` target needs a trusted wrapper.
    fn wrap_check(
        &mut self,
        s: &Session,
        wrapper: u64,
        target: u64,
    ) -> Result<(Arc<LoadedKey>, Arc<LoadedKey>)> {
        let w = self.load_key(s, wrapper)?;
        let k = self.load_key(s, target)?;
        match Self::wrap_refusal(&w.info.attrs, &k.info.attrs) {
            None => Ok((w, k)),
            // A refused export is recorded like any refusal.
            Some(e) => Err(self.refuse("key-wrap", s.role.short(), s.partition(), e)),
        }
    }

    fn wrap_refusal(w: &Attributes, k: &Attributes) -> Option<HsmError> {
        if k.class == ObjectClass::PublicKey {
            return Some(HsmError::InvalidInput(
                "a public key is not wrapped; read it instead".into(),
            ));
        }
        if !k.extractable {
            return Some(HsmError::Refused(format!(
                "key {:?} is not extractable (CKA_EXTRACTABLE is false): it never leaves the HSM",
                k.label
            )));
        }
        if k.wrap_with_trusted && !w.trusted {
            return Some(HsmError::Refused(format!(
                "key {:?} may be wrapped only by a trusted key (CKA_WRAP_WITH_TRUSTED)",
                k.label
            )));
        }
        Self::require_usage(w.wrap, &w.label, "wrap", "CKA_WRAP").err()
    }

    /// Length of what [`Hsm::wrap_key`] would return (for the two-call convention).
    pub fn wrapped_key_len(
        &mut self,
        s: &Session,
        wrapper: u64,
        mech: Mechanism,
        target: u64,
    ) -> Result<usize> {
        let (w, k) = self.wrap_check(s, wrapper, target)?;
        let m = k.material()?.material();
        Ok(mechanism::wrapped_len(
            w.info.attrs.key_spec()?,
            mech,
            m.len(),
        ))
    }

    /// Exports a secret or private key wrapped under another key of the partition (AES KW/KWP,
    /// or RSA-OAEP for secret keys), when the attributes allow it. Always audited, durably,
    /// before the wrapped key is returned. Either key may be a session object.
    pub fn wrap_key(
        &mut self,
        s: &Session,
        wrapper: u64,
        mech: Mechanism,
        p: &Params,
        target: u64,
    ) -> Result<Vec<u8>> {
        let (w, k) = self.wrap_check(s, wrapper, target)?;
        let m = k.material()?.material();
        let wrapping_key: &[u8] = if w.info.attrs.class == ObjectClass::SecretKey {
            w.material()?.material().expose()
        } else {
            w.info.public.as_deref().ok_or_else(|| {
                HsmError::InvalidInput("the wrapping key has no public value".into())
            })?
        };
        let out = mechanism::wrap(w.info.attrs.key_spec()?, wrapping_key, mech, p, m.expose())?;
        let e = self.ev(
            "key-wrap",
            s.role.short(),
            s.partition(),
            Some(&k.info.attrs.label),
            &format!(
                "success: wrapped under {:?} with {mech}",
                w.info.attrs.label
            ),
        );
        self.store.event(&e)?;
        Ok(out)
    }

    /// Imports a wrapped key as a new object (Crypto Officer). `spec` names the key type for a
    /// secret key (`None`: AES, sized by what unwraps); a private key's type comes from its
    /// PKCS#8 encoding. The new key is not
    /// local, not always sensitive and not never extractable, as PKCS#11 requires.
    #[allow(clippy::too_many_arguments)]
    pub fn unwrap_key(
        &mut self,
        s: &Session,
        unwrapper: u64,
        mech: Mechanism,
        p: &Params,
        wrapped: &[u8],
        class: ObjectClass,
        spec: Option<KeySpec>,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "unwrapping keys", true)?;
        let u = self.load_key(s, unwrapper)?;
        let attrs = &u.info.attrs;
        Self::require_usage(attrs.unwrap, &attrs.label, "unwrap", "CKA_UNWRAP")?;
        let m = mechanism::unwrap(
            attrs.key_spec()?,
            u.material()?.material(),
            mech,
            p,
            wrapped,
        )?;
        let (spec, public) = match class {
            ObjectClass::PrivateKey => {
                let (spec, public) = mechanism::identify_private_key(m.expose())?;
                (spec, Some(public))
            }
            ObjectClass::SecretKey => {
                let spec = match spec {
                    Some(sp) if sp.is_symmetric() => sp,
                    Some(sp) => {
                        return Err(HsmError::InvalidInput(format!(
                            "{sp} is not a secret key type"
                        )))
                    }
                    // None: an AES key, sized by what unwraps.
                    None => match m.len() {
                        16 => KeySpec::Aes128,
                        24 => KeySpec::Aes192,
                        32 => KeySpec::Aes256,
                        n => {
                            return Err(HsmError::InvalidInput(format!(
                                "the unwrapped key is {n} bytes, not an AES key"
                            )))
                        }
                    },
                };
                if m.len() * 8 != mechanism::key_bits(spec) as usize {
                    return Err(HsmError::InvalidInput(format!(
                        "the unwrapped key is {} bytes, not a {spec} key",
                        m.len()
                    )));
                }
                (spec, None)
            }
            ObjectClass::PublicKey | ObjectClass::Certificate | ObjectClass::Data => {
                return Err(HsmError::InvalidInput(format!(
                    "only secret and private keys are unwrapped, not {} objects",
                    class.name()
                )))
            }
        };
        let (a, _) = Self::key_attributes(spec, opts, tpl, false);
        let a = Attributes { class, ..a };
        let e = self.ev(
            "key-unwrap",
            s.role.short(),
            s.partition(),
            Some(&opts.label),
            &format!("success: {spec} unwrapped with {:?} ({mech})", attrs.label),
        );
        if tpl.session_private {
            return self.keep_session_key(s, tpl, id, a, public, spec, m, &e);
        }
        self.store.write(|t| {
            let mut part = Self::partition_by_id(t, id)?;
            let h = Self::put_key(t, &mut part, &pmk, a, public, Some(&m))?;
            t.put("partition", &pid(id), &part)?;
            t.event(&e)?;
            Ok(h)
        })
    }

    fn load(t: &mut Txn<'_>, partition: u32, handle: u64) -> Result<ObjectRecord> {
        let row = t
            .get_object(partition, handle)?
            .ok_or_else(|| HsmError::NotFound(format!("no object with handle {handle}")))?;
        let rec: ObjectRecord = serde_json::from_slice(row.plaintext.expose())
            .map_err(|e| HsmError::Tamper(format!("object {handle} does not decode: {e}")))?;
        Ok(rec)
    }

    /// Lists the session's partition's objects (Crypto Officer or Crypto User), optionally
    /// only those with a label (found through the index, not by scanning).
    pub fn list_objects(&mut self, s: &Session, label: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let (id, _) = self.key_user(s, "listing keys", false)?;
        self.store.read(|t| {
            let mut out = Vec::new();
            for h in t.object_handles(id, label)? {
                let rec = Self::load(t, id, h)?;
                if label.is_some_and(|l| l != rec.attrs.label) {
                    return Err(HsmError::Tamper(format!(
                        "object {h}'s index does not match its sealed label"
                    )));
                }
                out.push(ObjectInfo {
                    handle: h,
                    attrs: rec.attrs,
                    public: rec.public,
                    content: rec.content,
                });
            }
            Ok(out)
        })
    }

    /// Finds objects through the indexes. With a Crypto Officer or Crypto User session, every
    /// object of its partition; with `None` (a public PKCS#11 session), only objects with
    /// `CKA_PRIVATE` false of the partition labelled `public_partition`.
    pub fn find_objects(
        &mut self,
        s: Option<&Session>,
        public_partition: &str,
        f: &ObjectFilter,
    ) -> Result<Vec<ObjectInfo>> {
        let (id, only_public) = match s {
            Some(s) => (self.key_user(s, "finding keys", false)?.0, false),
            None => (
                self.store
                    .read(|t| Self::partition_by_label(t, public_partition))?
                    .id,
                true,
            ),
        };
        let mut found = self.store.read(|t| {
            let mut out = Vec::new();
            for h in t.find_handles(
                id,
                f.label.as_deref(),
                f.id.as_deref(),
                f.class.map(ObjectClass::name),
            )? {
                let rec = Self::load(t, id, h)?;
                // The index is a hint; the sealed record is the truth.
                if f.label.as_ref().is_some_and(|l| *l != rec.attrs.label)
                    || f.id.as_ref().is_some_and(|i| *i != rec.attrs.id)
                    || f.class.is_some_and(|c| c != rec.attrs.class)
                {
                    return Err(HsmError::Tamper(format!(
                        "object {h}'s index does not match its sealed record"
                    )));
                }
                if only_public && rec.attrs.private {
                    continue;
                }
                out.push(ObjectInfo {
                    handle: h,
                    attrs: rec.attrs,
                    public: rec.public,
                    content: rec.content,
                });
            }
            Ok(out)
        })?;
        // Then the login's session objects that match (never visible without a login).
        if let Some(s) = s {
            for (_, k) in s.session_objects().values() {
                let a = &k.info.attrs;
                if f.label.as_ref().is_none_or(|l| *l == a.label)
                    && f.id.as_ref().is_none_or(|i| *i == a.id)
                    && f.class.is_none_or(|c| c == a.class)
                {
                    found.push(k.info.clone());
                }
            }
        }
        Ok(found)
    }

    /// One object's public description (attributes, public value), for a session that may see it.
    pub fn object_info(
        &mut self,
        s: Option<&Session>,
        public_partition: &str,
        handle: u64,
    ) -> Result<ObjectInfo> {
        let (id, only_public) = match s {
            Some(s) => (self.key_user(s, "reading keys", false)?.0, false),
            None => (
                self.store
                    .read(|t| Self::partition_by_label(t, public_partition))?
                    .id,
                true,
            ),
        };
        if crate::object::is_session_handle(handle) {
            let s =
                s.ok_or_else(|| HsmError::NotFound(format!("no object with handle {handle}")))?;
            return Ok(s.session_object(handle)?.info.clone());
        }
        let rec = self.store.read(|t| Self::load(t, id, handle))?;
        if only_public && rec.attrs.private {
            return Err(HsmError::NotFound(format!(
                "no object with handle {handle}"
            )));
        }
        Ok(ObjectInfo {
            handle,
            attrs: rec.attrs,
            public: rec.public,
            content: rec.content,
        })
    }

    /// Finds the one key with `label` of `class`.
    pub fn find_key(&mut self, s: &Session, label: &str, class: ObjectClass) -> Result<ObjectInfo> {
        let found: Vec<ObjectInfo> = self
            .list_objects(s, Some(label))?
            .into_iter()
            .filter(|o| o.attrs.class == class)
            .collect();
        match found.len() {
            0 => Err(HsmError::NotFound(format!(
                "no {} labelled {label:?}",
                class.name()
            ))),
            1 => Ok(found.into_iter().next().expect("one element")),
            n => Err(HsmError::InvalidInput(format!(
                "{n} {}s are labelled {label:?}; use a handle",
                class.name()
            ))),
        }
    }

    /// Unseals the key material of an already loaded object (no second store read).
    fn open_material(
        id: u32,
        pmk: &Secret32,
        handle: u64,
        rec: &ObjectRecord,
    ) -> Result<SecretBytes> {
        let sealed = rec.material.as_ref().ok_or_else(|| {
            HsmError::InvalidInput(format!("object {handle} holds no secret or private key"))
        })?;
        crypto::open(
            pmk,
            &Self::material_aad(id, handle),
            sealed,
            &format!("key material of object {handle}"),
        )
    }

    /// The refusal when a key's usage attribute (`CKA_SIGN`, …) does not allow `op`.
    fn require_usage(allowed: bool, label: &str, op: &str, attribute: &str) -> Result<()> {
        if allowed {
            return Ok(());
        }
        Err(HsmError::Refused(format!(
            "key {label:?} may not {op} ({attribute} is false)"
        )))
    }

    /// The key object `handle` ready for use (Crypto Officer or Crypto User): from the
    /// session's key cache while the store has not changed since it was loaded, otherwise
    /// read, unsealed and parsed now (and cached). Operations started with it use it as it
    /// was at this call.
    pub fn load_key(&mut self, s: &Session, handle: u64) -> Result<Arc<LoadedKey>> {
        self.load_key_via(s, handle, None)
    }

    /// [`Hsm::load_key`], first trying the caller's memo of the last key it loaded (and
    /// leaving this key there).
    pub fn load_key_memo(
        &mut self,
        s: &Session,
        handle: u64,
        memo: &mut KeyMemo,
    ) -> Result<Arc<LoadedKey>> {
        self.load_key_via(s, handle, Some(memo))
    }

    fn load_key_via(
        &mut self,
        s: &Session,
        handle: u64,
        memo: Option<&mut KeyMemo>,
    ) -> Result<Arc<LoadedKey>> {
        let id = self.key_role(s, "using keys", false)?;
        if crate::object::is_session_handle(handle) {
            return s.session_object(handle);
        }
        let generation = self.store.generation()?;
        if let Some((login, g, k)) = memo.as_ref().and_then(|m| m.0.as_ref()) {
            if *login == s.cache.login && *g == generation && k.info.handle == handle {
                return Ok(k.clone());
            }
        }
        let k = match s.cache.get(generation, handle) {
            Some(k) => k,
            None => {
                // A miss: the partition key is needed to unseal the key.
                let pmk = s.pmk()?;
                let rec = self.store.read(|t| Self::load(t, id, handle))?;
                let key = match rec.material {
                    Some(_) => Some(Arc::new(mechanism::Key::parse(
                        rec.attrs.key_spec()?,
                        Self::open_material(id, pmk, handle, &rec)?,
                    )?)),
                    None => None,
                };
                let k = Arc::new(LoadedKey {
                    info: ObjectInfo {
                        handle,
                        attrs: rec.attrs,
                        public: rec.public,
                        content: rec.content,
                    },
                    partition: id,
                    key,
                });
                s.cache.put(generation, k.clone());
                k
            }
        };
        let Some(memo) = memo else {
            return Ok(k);
        };
        // The memo gets its own handle on the key (sharing the parsed material), so that the
        // reference counting of each operation touches memory of this caller only, not the
        // count every session of the login would otherwise update at once.
        let own = Arc::new(LoadedKey::clone(&k));
        memo.0 = Some((s.cache.login, generation, own.clone()));
        Ok(own)
    }

    /// Derives a secret key by ECDH (no KDF) from the EC private key `base` and a peer's
    /// public point (Crypto Officer; `base` must allow it, `CKA_DERIVE`). The key value is
    /// the shared secret's rightmost bytes, as many as `spec` needs. The new key is not local,
    /// and is always sensitive and never extractable only if the base key was too.
    pub fn derive_ecdh(
        &mut self,
        s: &Session,
        base: u64,
        peer_point: &[u8],
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "deriving keys", true)?;
        let k = self.load_key(s, base)?;
        self.may_use(s, &k, "derive", k.info.attrs.derive, "CKA_DERIVE")?;
        if !spec.is_symmetric() || spec == KeySpec::Des3 {
            return Err(HsmError::InvalidInput(format!(
                "ECDH derives AES or generic secret keys, not {spec}"
            )));
        }
        let shared = mechanism::ecdh(k.material()?, peer_point)?;
        let n = mechanism::key_bits(spec) as usize / 8;
        let value = shared.expose().len().checked_sub(n).ok_or_else(|| {
            HsmError::InvalidInput(format!(
                "the shared secret has {} bytes; a {spec} key needs {n}",
                shared.expose().len()
            ))
        })?;
        let material = SecretBytes::new(shared.expose()[value..].to_vec());
        let (mut a, _) = Self::key_attributes(spec, opts, tpl, false);
        a.always_sensitive = k.info.attrs.always_sensitive && a.sensitive;
        a.never_extractable = k.info.attrs.never_extractable && !a.extractable;
        let e = self.ev(
            "key-derive",
            s.role.short(),
            s.partition(),
            Some(&format!("{} ({spec})", opts.label)),
            &format!("success: ECDH with {:?}", k.info.attrs.label),
        );
        if tpl.session_private {
            return self.keep_session_key(s, tpl, id, a, None, spec, material, &e);
        }
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let h = Self::put_key(t, &mut p, &pmk, a, None, Some(&material))?;
            t.put("partition", &pid(id), &p)?;
            t.event(&e)?;
            Ok(h)
        })
    }

    /// Keeps a new secret or private key as a session object of `tpl.session_owner`, after
    /// recording its creation (`e`). Returns its handle.
    #[allow(clippy::too_many_arguments)]
    fn keep_session_key(
        &mut self,
        s: &Session,
        tpl: &KeyTemplate,
        partition: u32,
        attrs: Attributes,
        public: Option<Vec<u8>>,
        spec: KeySpec,
        material: SecretBytes,
        e: &Event,
    ) -> Result<u64> {
        let owner = session_owner(tpl)?;
        s.session_room(1)?;
        let key = mechanism::Key::parse(spec, material)?;
        self.store.event(e)?;
        Ok(s.add_session_object(owner, partition, attrs, public, Some(key)))
    }

    /// Checks that `s` may use `k` for `op` (role, partition, the usage attribute).
    fn may_use(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        op: &str,
        allowed: bool,
        attribute: &str,
    ) -> Result<()> {
        let id = self.key_role(s, "using keys", false)?;
        if k.partition != id {
            return Err(HsmError::NotFound(format!(
                "no object with handle {} in this partition",
                k.info.handle
            )));
        }
        Self::require_usage(allowed, &k.info.attrs.label, op, attribute)
    }

    /// Signs with a private key, or MACs with a secret key (Crypto Officer or Crypto User).
    pub fn sign(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let k = self.load_key(s, handle)?;
        self.sign_loaded(s, &k, mech, data)
    }

    /// [`Hsm::sign`] with a key already loaded.
    pub fn sign_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        // No slot: one-shot MACs (a context made for one MAC would cost more than it saves).
        self.sign_with(s, k, mech, data, None, <[u8]>::to_vec)
    }

    /// [`Hsm::sign_loaded`] for a caller that keeps a [`mechanism::MacSlot`] (a PKCS#11
    /// session): HMACs go through the slot's reusable context when a provider is installed,
    /// and the result is handed to `out` (after the use is audited) instead of returned, so a
    /// MAC needs no allocation.
    pub fn sign_loaded_into<R>(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
        slot: &mut mechanism::MacSlot,
        out: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.sign_with(s, k, mech, data, Some(slot), out)
    }

    fn sign_with<R>(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
        slot: Option<&mut mechanism::MacSlot>,
        out: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.may_use(s, k, "sign", k.info.attrs.sign, "CKA_SIGN")?;
        let mut buf = [0u8; mechanism::MAX_MAC_LEN];
        let mac = match (&k.key, slot) {
            (Some(key), Some(slot)) => mechanism::mac_into(key, mech, data, slot, &mut buf)?,
            _ => None,
        };
        match mac {
            Some(n) => {
                self.audit_key_use(s, k, KeyUse::Sign(mech))?;
                Ok(out(&buf[..n]))
            }
            None => {
                let sig = mechanism::sign(k.material()?, mech, data)?;
                self.audit_key_use(s, k, KeyUse::Sign(mech))?;
                Ok(out(&sig))
            }
        }
    }

    /// Verifies with a public key, or a MAC with a secret key (Crypto Officer or Crypto User).
    /// `Ok(false)`: bad signature.
    pub fn verify(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        data: &[u8],
        sig: &[u8],
    ) -> Result<bool> {
        let k = self.load_key(s, handle)?;
        self.verify_loaded(s, &k, mech, data, sig)
    }

    /// [`Hsm::verify`] with a key already loaded.
    pub fn verify_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
        sig: &[u8],
    ) -> Result<bool> {
        self.may_use(s, k, "verify", k.info.attrs.verify, "CKA_VERIFY")?;
        let ok = if k.info.attrs.class == ObjectClass::SecretKey {
            mechanism::verify_mac(k.material()?, mech, data, sig)?
        } else {
            let public = k
                .info
                .public
                .as_ref()
                .ok_or_else(|| HsmError::InvalidInput("not a public key".into()))?;
            mechanism::verify(k.info.attrs.key_spec()?, public, mech, data, sig)?
        };
        self.audit_key_use(s, k, KeyUse::Verify(mech, ok))?;
        Ok(ok)
    }

    /// Encrypts with a secret key or an RSA public key (Crypto Officer or Crypto User).
    pub fn encrypt(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let k = self.load_key(s, handle)?;
        self.encrypt_loaded(s, &k, mech, p, data)
    }

    /// [`Hsm::encrypt`] with a key already loaded.
    pub fn encrypt_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.may_use(s, k, "encrypt", k.info.attrs.encrypt, "CKA_ENCRYPT")?;
        let ct = if k.info.attrs.class == ObjectClass::SecretKey {
            mechanism::encrypt(k.material()?, mech, p, data)?
        } else {
            let public = k
                .info
                .public
                .as_ref()
                .ok_or_else(|| HsmError::InvalidInput("key has no public value".into()))?;
            mechanism::encrypt_public(k.info.attrs.key_spec()?, public, mech, p, data)?
        };
        self.audit_key_use(s, k, KeyUse::Encrypt(mech))?;
        Ok(ct)
    }

    /// [`Hsm::encrypt_loaded`] with a secret key, over the first `len` bytes of `buf` where
    /// they lie (see [`mechanism::encrypt_in_place`]); returns the ciphertext's length.
    pub fn encrypt_loaded_in_place(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        p: &Params,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize> {
        self.may_use(s, k, "encrypt", k.info.attrs.encrypt, "CKA_ENCRYPT")?;
        if k.info.attrs.class != ObjectClass::SecretKey {
            return Err(HsmError::InvalidInput(
                "only secret keys encrypt in place".into(),
            ));
        }
        let n = mechanism::encrypt_in_place(k.material()?, mech, p, buf, len)?;
        self.audit_key_use(s, k, KeyUse::Encrypt(mech))?;
        Ok(n)
    }

    /// Decrypts with a secret or private key (Crypto Officer or Crypto User).
    pub fn decrypt(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<SecretBytes> {
        let k = self.load_key(s, handle)?;
        self.decrypt_loaded(s, &k, mech, p, data)
    }

    /// [`Hsm::decrypt`] with a key already loaded.
    pub fn decrypt_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<SecretBytes> {
        self.may_use(s, k, "decrypt", k.info.attrs.decrypt, "CKA_DECRYPT")?;
        let pt = mechanism::decrypt(k.material()?, mech, p, data)?;
        self.audit_key_use(s, k, KeyUse::Decrypt(mech))?;
        Ok(pt)
    }

    /// Destroys an object (Crypto Officer only).
    pub fn destroy_object(&mut self, s: &Session, handle: u64) -> Result<()> {
        let (id, _) = self.key_user(s, "deleting keys", true)?;
        if crate::object::is_session_handle(handle) {
            let k = s.session_object(handle)?;
            if !k.info.attrs.destroyable {
                return Err(HsmError::Refused(format!(
                    "key {:?} is not destroyable (CKA_DESTROYABLE is false)",
                    k.info.attrs.label
                )));
            }
            let e = self.ev(
                "key-delete",
                s.role.short(),
                s.partition(),
                Some(&format!("{} (session object)", k.info.attrs.label)),
                "success",
            );
            self.store.event(&e)?;
            s.session_objects().remove(&handle);
            return Ok(());
        }
        let serial = self.serial.clone();
        let role = s.role.short().to_string();
        let part = s.partition_label.clone();
        self.store.write(|t| {
            let rec = Self::load(t, id, handle)?;
            if !rec.attrs.destroyable {
                return Err(HsmError::Refused(format!(
                    "key {:?} is not destroyable (CKA_DESTROYABLE is false)",
                    rec.attrs.label
                )));
            }
            t.delete_object(id, handle)?;
            t.event(&Event {
                seq: 0,
                time: now_rfc3339(),
                serial,
                event: "key-delete".into(),
                role,
                partition: part,
                object: Some(rec.attrs.label.clone()),
                outcome: "success".into(),
            })
        })
    }

    // ---- audit ----

    fn auditor_only(&mut self, s: &Session, action: &str) -> Result<()> {
        if s.role == Role::Auditor {
            return Ok(());
        }
        Err(self.refuse(
            "audit",
            s.role.short(),
            s.partition(),
            need("Auditor", action, s.role),
        ))
    }

    /// Imprints the Auditor (white PED key(s), or a password). Possible before `hsm init`;
    /// survives re-initialisation and zeroize. Re-imprinting needs the current Auditor.
    pub fn audit_init(
        &mut self,
        secret: NewSecret<'_>,
        current: Option<Credential<'_>>,
    ) -> Result<Option<Imprinted>> {
        let (exists, allow_mofn) = self.store.read(|t| {
            let root = &t.audit_keys()?.root;
            let exists = audit::get_state::<RoleAuth>(&t.tx, root, "auditor")?.is_some();
            let allow = if t.get::<Device>("device", "").ok().flatten().is_some() {
                Self::device(t)?.policy.m_of_n
            } else {
                true
            };
            Ok((exists, allow))
        })?;
        if exists {
            let Some(cred) = current else {
                return Err(self.refuse("audit-init", "none", None, HsmError::Refused(
                    "the Auditor exists; re-imprinting it needs the current Auditor's key or password".into())));
            };
            self.login(Role::Auditor, None, cred)?;
        }
        let mode = match secret {
            NewSecret::Ped(_) => AuthMode::Ped,
            NewSecret::Password(_) => AuthMode::Password,
        };
        let (method, auth, imp) = self.imprint(
            secret,
            crate::pedkey::SecretType::Auditor,
            format!("Auditor of {}", self.serial),
            mode,
            allow_mofn,
        )?;
        let root = self.store.audit_keys()?.root.clone();
        let ra = RoleAuth::new(&root, &role_tag(Role::Auditor, None), method, &auth, None);
        let e = self.ev("audit-init", "auditor", None, None, "success");
        self.store.write(|t| {
            audit::put_state(&t.tx, &root, "auditor", &ra)?;
            if audit::get_state::<AuditConfig>(&t.tx, &root, "config")?.is_none() {
                audit::put_state(&t.tx, &root, "config", &AuditConfig::default())?;
            }
            t.event(&e)
        })?;
        Ok(imp)
    }

    /// The HSM's audit verifier key (signed-note form). Public: anyone may have it.
    pub fn audit_public_key(&self) -> Result<String> {
        Ok(self.store.audit_keys()?.vkey.clone())
    }

    fn read_audit_config(&mut self) -> Result<AuditConfig> {
        // Key use asks on every operation, which has just read the state generation (when it
        // loaded its key): read the configuration again only when the generation moved on.
        let version = self.store.last_generation()?;
        if let Some((v, c)) = &self.audit_cfg {
            if *v == version {
                return Ok(c.clone());
            }
        }
        let c = self.store.read(|t| {
            let root = &t.audit_keys()?.root;
            Ok(audit::get_state::<AuditConfig>(&t.tx, root, "config")?.unwrap_or_default())
        })?;
        self.audit_cfg = Some((version, c.clone()));
        Ok(c)
    }

    /// The audit configuration (Auditor only).
    pub fn audit_config(&mut self, s: &Session) -> Result<AuditConfig> {
        self.auditor_only(s, "reading the audit configuration")?;
        self.read_audit_config()
    }

    /// Changes the audit configuration (Auditor only).
    pub fn set_audit_config(&mut self, s: &Session, cfg: AuditConfig) -> Result<()> {
        self.auditor_only(s, "configuring the audit log")?;
        if let KeyUseAudit::Batched { max_ms } = cfg.key_use {
            if !(1..=60_000).contains(&max_ms) {
                return Err(HsmError::InvalidInput(
                    "batched key-use auditing takes 1 to 60000 ms".into(),
                ));
            }
        }
        if cfg.ceremony_cosignatures > 16 {
            return Err(HsmError::InvalidInput(
                "at most 16 witness cosignatures can be required".into(),
            ));
        }
        let root = self.store.audit_keys()?.root.clone();
        let e = self.ev(
            "audit-config",
            "auditor",
            None,
            Some(&format!(
                "{:?}, ceremony cosignatures {}",
                cfg.key_use, cfg.ceremony_cosignatures
            )),
            "success",
        );
        self.audit_cfg = None;
        self.store.write(|t| {
            audit::put_state(&t.tx, &root, "config", &cfg)?;
            t.event(&e)
        })
    }

    /// Every record of the log (Auditor only).
    pub fn audit_records(&mut self, s: &Session) -> Result<Vec<Record>> {
        self.auditor_only(s, "reading the audit log")?;
        self.flush_key_use()?;
        self.store.events()
    }

    /// The latest signed checkpoint (Auditor only).
    pub fn audit_checkpoint(&mut self, s: &Session) -> Result<String> {
        self.auditor_only(s, "reading the audit log")?;
        self.flush_key_use()?;
        self.store
            .read(|t| audit::latest_checkpoint(&t.tx))?
            .map(|(_, n)| n)
            .ok_or_else(|| HsmError::State("the audit log is empty".into()))
    }

    /// Exports records from `from` (1-based) to the latest checkpoint with their proofs, and
    /// consistency proofs for the earlier checkpoints of the given sizes plus every checkpoint
    /// a witness cosigned (Auditor only).
    pub fn audit_export(&mut self, s: &Session, from: u64, earlier: &[u64]) -> Result<Export> {
        self.auditor_only(s, "exporting the audit log")?;
        self.flush_key_use()?;
        let witnesses = self.witness_keys()?;
        let e = self.ev(
            "audit-export",
            "auditor",
            None,
            Some(&format!("from #{from}")),
            "success",
        );
        self.store.write(|t| t.event(&e))?;
        self.store.read(|t| {
            let keys = t.audit_keys()?;
            let mut sizes: Vec<u64> = earlier.to_vec();
            for (size, note) in audit::checkpoints(&t.tx)? {
                if !ferrohsm_audit::witness::cosigners(&note, &witnesses).is_empty() {
                    sizes.push(size);
                }
            }
            sizes.sort_unstable();
            sizes.dedup();
            audit::export(&t.tx, keys, from, &sizes)
        })
    }

    /// Verifies the whole live log with the HSM's own key, and that every checkpoint it ever
    /// signed is consistent with the latest (Auditor only).
    pub fn audit_verify(&mut self, s: &Session) -> Result<Report> {
        self.auditor_only(s, "verifying the audit log")?;
        self.flush_key_use()?;
        let (ex, all) = self.store.read(|t| {
            let keys = t.audit_keys()?;
            let all: Vec<(u64, String)> = audit::checkpoints(&t.tx)?;
            let sizes: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
            Ok((audit::export(&t.tx, keys, 1, &sizes)?, all))
        })?;
        let opts = ferrohsm_audit::VerifyOptions {
            public_key: Some(self.audit_public_key()?),
            earlier: all.into_iter().map(|(_, n)| n).collect(),
            ..Default::default()
        };
        ferrohsm_audit::verify_export(&ex, &opts)
            .map_err(|e| HsmError::Tamper(format!("audit log: {e}")))
    }

    fn witness_keys(&mut self) -> Result<Vec<String>> {
        Ok(self.read_witnesses()?.into_iter().map(|w| w.vkey).collect())
    }

    fn read_witnesses(&mut self) -> Result<Vec<Witness>> {
        self.store.read(|t| {
            let root = &t.audit_keys()?.root;
            Ok(audit::get_state::<Vec<Witness>>(&t.tx, root, "witnesses")?.unwrap_or_default())
        })
    }

    /// Registered witnesses (Auditor only).
    pub fn witnesses(&mut self, s: &Session) -> Result<Vec<Witness>> {
        self.auditor_only(s, "listing witnesses")?;
        self.read_witnesses()
    }

    /// Registers a witness by its signed-note verifier key (Auditor only).
    pub fn add_witness(&mut self, s: &Session, vkey: &str) -> Result<Witness> {
        self.auditor_only(s, "registering witnesses")?;
        let vkey = vkey.trim();
        let v = signed_note::StandardVerifier::new(vkey).map_err(|e| {
            HsmError::InvalidInput(format!("not a signed-note Ed25519 verifier key ({e:?})"))
        })?;
        let w = Witness {
            name: signed_note::Verifier::name(&v).to_string(),
            vkey: vkey.to_string(),
            added: now_rfc3339(),
        };
        let root = self.store.audit_keys()?.root.clone();
        let e = self.ev("witness-add", "auditor", None, Some(&w.name), "success");
        self.store.write(|t| {
            let mut list: Vec<Witness> =
                audit::get_state(&t.tx, &root, "witnesses")?.unwrap_or_default();
            if list.iter().any(|x| x.name == w.name) {
                return Err(HsmError::InvalidInput(format!(
                    "a witness named {} is registered already",
                    w.name
                )));
            }
            list.push(w.clone());
            audit::put_state(&t.tx, &root, "witnesses", &list)?;
            t.event(&e)
        })?;
        Ok(w)
    }

    /// Takes a checkpoint cosigned by witnesses and keeps the registered witnesses'
    /// signatures on the stored checkpoint. Returns the names of the witnesses whose
    /// cosignatures verified (Auditor only).
    pub fn submit_cosigned(&mut self, s: &Session, note: &str) -> Result<Vec<String>> {
        self.auditor_only(s, "submitting cosignatures")?;
        let vkey = self.audit_public_key()?;
        let hsm = signed_note::StandardVerifier::new(&vkey)
            .map_err(|e| HsmError::Store(format!("{e:?}")))?;
        let (_, cp) = ferrohsm_audit::verify::open_checkpoint(note, &hsm)
            .map_err(|e| HsmError::InvalidInput(e.to_string()))?;
        let witnesses = self.witness_keys()?;
        let names = ferrohsm_audit::witness::cosigners(note, &witnesses);
        if names.is_empty() {
            return Err(HsmError::InvalidInput(
                "the checkpoint carries no cosignature from a registered witness".into(),
            ));
        }
        let size = cp.size();
        let e = self.ev(
            "witness-cosign",
            "auditor",
            None,
            Some(&format!("checkpoint {size}: {}", names.join(", "))),
            "success",
        );
        self.store.write(|t| {
            let stored: Vec<(u64, String)> = audit::checkpoints(&t.tx)?;
            let (_, mine) = stored
                .into_iter()
                .find(|(s, _)| *s == size)
                .ok_or_else(|| {
                    HsmError::InvalidInput(format!("this HSM issued no checkpoint of size {size}"))
                })?;
            let merged = merge_signatures(&mine, note)?;
            audit::store_cosigned(&t.tx, size, &merged)?;
            t.event(&e)
        })?;
        Ok(names)
    }

    /// Ceremony records not yet covered by a checkpoint carrying the configured number of
    /// registered witness cosignatures, with the best count they have (Auditor only).
    pub fn pending_ceremonies(&mut self, s: &Session) -> Result<Vec<(Record, usize)>> {
        self.auditor_only(s, "reading the audit log")?;
        let need = self.read_audit_config()?.ceremony_cosignatures as usize;
        let witnesses = self.witness_keys()?;
        let (records, cps) = self.store.read(|t| {
            Ok((
                audit::records(&t.tx, 0, u64::MAX >> 1)?,
                audit::checkpoints(&t.tx)?,
            ))
        })?;
        let counted: Vec<(u64, usize)> = cps
            .iter()
            .map(|(size, n)| {
                (
                    *size,
                    ferrohsm_audit::witness::cosigners(n, &witnesses).len(),
                )
            })
            .collect();
        Ok(records
            .into_iter()
            .filter(|r| r.is_ceremony())
            .filter_map(|r| {
                let best = counted
                    .iter()
                    .filter(|(size, _)| *size >= r.seq)
                    .map(|(_, c)| *c)
                    .max()
                    .unwrap_or(0);
                (best < need).then_some((r, best))
            })
            .collect())
    }

    /// Records a key use as the Auditor configured: not at all, durably before returning
    /// (strict: a record per use), or within the configured delay (batched: a record per
    /// role, key and operation in each window, counting its uses).
    fn audit_key_use(&mut self, s: &Session, k: &LoadedKey, what: KeyUse) -> Result<()> {
        let mode = self.read_audit_config()?.key_use;
        if mode == KeyUseAudit::Off {
            return Ok(());
        }
        if self.writer.as_ref().map(|(m, _)| *m) != Some(mode) {
            self.writer = None;
            let wait = match mode {
                KeyUseAudit::Batched { max_ms } => std::time::Duration::from_millis(max_ms),
                _ => std::time::Duration::ZERO,
            };
            self.writer = Some((
                mode,
                AuditWriter::start(self.store.dir().to_path_buf(), wait)?,
            ));
        }
        let object = k.info.attrs.label.as_str();
        let (_, w) = self.writer.as_ref().expect("writer started above");
        match mode {
            KeyUseAudit::Strict => w.strict(self.ev(
                "key-use",
                s.role.short(),
                s.partition(),
                Some(object),
                &format!("success: {what}"),
            )),
            _ => w.batched(
                UseGroup {
                    role: s.role,
                    partition: s.partition,
                    handle: k.info.handle,
                    what,
                },
                || self.ev("key-use", s.role.short(), s.partition(), Some(object), ""),
            ),
        }
    }

    /// Makes every queued key-use record durable now.
    pub fn flush_key_use(&mut self) -> Result<()> {
        let healthy = self.writer.as_ref().is_none_or(|(_, w)| w.healthy());
        self.writer = None; // joins the thread after its last commit
        if healthy {
            Ok(())
        } else {
            Err(HsmError::Store("the last audit flush failed".into()))
        }
    }
}

/// Adds the signatures of `cosigned` (same checkpoint text) that `mine` lacks.
fn merge_signatures(mine: &str, cosigned: &str) -> Result<String> {
    let a = signed_note::Note::from_bytes(mine.as_bytes())
        .map_err(|e| HsmError::Tamper(format!("stored checkpoint: {e:?}")))?;
    let b = signed_note::Note::from_bytes(cosigned.as_bytes())
        .map_err(|e| HsmError::InvalidInput(format!("cosigned checkpoint: {e:?}")))?;
    if a.text() != b.text() {
        return Err(HsmError::InvalidInput(
            "the cosigned checkpoint is not the one this HSM signed".into(),
        ));
    }
    let text = String::from_utf8(a.to_bytes())
        .map_err(|_| HsmError::Tamper("stored checkpoint is not UTF-8".into()))?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let extra = String::from_utf8(b.to_bytes())
        .map_err(|_| HsmError::InvalidInput("cosigned checkpoint is not UTF-8".into()))?;
    let body_len = a.text().split(|&c| c == b'\n').count();
    for l in extra.lines().skip(body_len) {
        if l.starts_with('\u{2014}') && !lines.iter().any(|x| x == l) {
            lines.push(l.to_owned());
        }
    }
    let merged = lines.join("\n") + "\n";
    signed_note::Note::from_bytes(merged.as_bytes())
        .map_err(|e| HsmError::InvalidInput(format!("merged checkpoint: {e:?}")))?;
    Ok(merged)
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
            created: String::new(),
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
            cache: KeyCache::default(),
            session_objects: Mutex::new(full),
        };
        assert!(matches!(s.session_room(1), Err(HsmError::Exhausted(_))));
        s.drop_session_objects(1);
        assert!(s.session_room(2).is_ok());
    }
}
