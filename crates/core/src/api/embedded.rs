//! The HSM API answered by the engine in this process: no boundary between the caller and
//! its keys (tests, demos, single-process tools); inside `ferrohsm server`, the answering
//! side of every connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    BackupSummary, CloneBatch, CloneHello, CloneProgress, CloneSelect, Enrollment, HsmApi,
    ImprintReport, InitHsm, LoginCredential, LoginId, NewCredential, PartitionDomain, PedImprint,
    StagedImprint, Summary, Unwrap, MAX_RANDOM,
};
use crate::audit::{AuditConfig, Witness};
use crate::error::{HsmError, Result};
use crate::hsm::{
    ClientInfo, Credential, DomainChoice, Hsm, HsmInfo, InitOptions, NewSecret, Session,
};
use crate::mechanism::{KeySpec, Mechanism, Params};
use crate::object::{KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo};
use crate::ped::{Imprinted, Ped, PedAnswers, PresentedPed, WirePed};
use crate::ped_stage::{self, StagedPed};
use crate::pedkey::SecretType;
use crate::role::Role;
use crate::secret::Pin;
use crate::secret::Secret32;
use ferrohsm_audit::{Export, Record, Report};
use zeroize::Zeroizing;

/// The logins of every front end served by one process, so that zeroize and tamper can end
/// them all at once. Each login belongs to an owner: the front end that made it, or every
/// front end of one client process (so that the PKCS#11 module's sessions, each with its own
/// connection, share their token's login as PKCS#11 requires). An owner's logins end when its
/// last front end goes.
#[derive(Clone, Default)]
pub struct Logins(Arc<Mutex<LoginTable>>);

/// Each login by id with its owner; how many front ends each owner has; the owner of each
/// client process.
#[derive(Default)]
struct LoginTable {
    logins: HashMap<LoginId, (u64, Arc<Session>)>,
    front_ends: HashMap<u64, usize>,
    peers: HashMap<String, u64>,
    /// Owners whose logins outlive their last front end by a lease: how long.
    leases: HashMap<u64, std::time::Duration>,
    /// Owners with no front end left, and when their lease ends.
    expiring: HashMap<u64, std::time::Instant>,
}

impl LoginTable {
    /// Ends an owner's logins and forgets it.
    fn purge(&mut self, owner: u64) {
        self.front_ends.remove(&owner);
        self.peers.retain(|_, o| *o != owner);
        self.logins.retain(|_, (o, _)| *o != owner);
        self.leases.remove(&owner);
        self.expiring.remove(&owner);
    }

    /// Ends the logins of owners whose lease ran out.
    fn expire(&mut self, now: std::time::Instant) {
        let over: Vec<u64> = self
            .expiring
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(o, _)| *o)
            .collect();
        for o in over {
            self.purge(o);
        }
    }
}

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

impl Logins {
    /// An empty registry.
    pub fn new() -> Logins {
        Logins::default()
    }

    fn map(&self) -> MutexGuard<'_, LoginTable> {
        // Inserts and removes only: a poisoned map is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, owner: u64, s: Session) -> LoginId {
        let mut map = self.map();
        loop {
            let mut b = [0u8; 8];
            crate::crypto::fill_random(&mut b);
            let id = u64::from_le_bytes(b);
            if id != 0 && !map.logins.contains_key(&id) {
                map.logins.insert(id, (owner, Arc::new(s)));
                return id;
            }
        }
    }

    fn get(&self, owner: u64, id: LoginId) -> Result<Arc<Session>> {
        match self.map().logins.get(&id) {
            Some((o, s)) if *o == owner => Ok(s.clone()),
            _ => Err(not_logged_in()),
        }
    }

    /// A new owner, for front ends that share logins (one application's PKCS#11 sessions).
    pub fn new_owner() -> u64 {
        NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
    }

    /// Holds `owner`'s logins open until the hold is dropped.
    pub fn hold(&self, owner: u64) -> OwnerHold {
        *self.map().front_ends.entry(owner).or_default() += 1;
        OwnerHold {
            logins: self.clone(),
            owner,
        }
    }

    /// Holds the logins of one client, named by `peer`: every connection from one client
    /// process ("pid N" on a Unix socket: the kernel closes a process's sockets when it
    /// exits, before its pid can be reused) or one client certificate ("tls FINGERPRINT")
    /// shares one owner while any is open, and its logins end with its last connection.
    pub fn hold_peer(&self, peer: &str) -> OwnerHold {
        self.hold_peer_leased(peer, std::time::Duration::ZERO)
    }

    /// As [`Logins::hold_peer`], but the logins outlive the client's last connection by
    /// `lease`: a client that reconnects within it (a network link lost and back) finds them
    /// again; after it they end. Only for peers whose name cannot pass to another party
    /// meanwhile (a certificate key; not a process id, which the kernel reuses).
    pub fn hold_peer_leased(&self, peer: &str, lease: std::time::Duration) -> OwnerHold {
        let mut map = self.map();
        map.expire(std::time::Instant::now());
        let owner = *map
            .peers
            .entry(peer.to_string())
            .or_insert_with(Logins::new_owner);
        map.expiring.remove(&owner);
        if lease.is_zero() {
            map.leases.remove(&owner);
        } else {
            map.leases.insert(owner, lease);
        }
        *map.front_ends.entry(owner).or_default() += 1;
        OwnerHold {
            logins: self.clone(),
            owner,
        }
    }

    fn detach(&self, owner: u64) {
        let mut map = self.map();
        let left = match map.front_ends.get_mut(&owner) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            match map.leases.get(&owner).copied() {
                Some(lease) => {
                    map.front_ends.remove(&owner);
                    map.expiring
                        .insert(owner, std::time::Instant::now() + lease);
                }
                None => map.purge(owner),
            }
        }
    }

    /// Ends the logins of clients whose lease ran out (a server calls this every so often,
    /// so that no login outlives its lease by much).
    pub fn expire_leases(&self) {
        self.map().expire(std::time::Instant::now());
    }

    /// Ends every login of every front end (zeroize, tamper). Keys are dropped, and so
    /// zeroized, as soon as no operation in flight holds them.
    pub fn end_all(&self) {
        self.map().logins.clear();
    }

    /// How many logins are live.
    pub fn len(&self) -> usize {
        self.map().logins.len()
    }

    /// Whether no login is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps one owner's logins alive (see [`Logins::hold`]); the last hold's drop ends them.
pub struct OwnerHold {
    logins: Logins,
    owner: u64,
}

impl OwnerHold {
    /// The owner held.
    pub fn owner(&self) -> u64 {
        self.owner
    }
}

impl Drop for OwnerHold {
    fn drop(&mut self) {
        self.logins.detach(self.owner);
    }
}

/// A login credential as the engine takes it (PED keys presented by the front end).
enum Presented {
    Secret(Pin),
    Ped(PresentedPed),
}

impl From<LoginCredential> for Presented {
    fn from(c: LoginCredential) -> Presented {
        match c {
            LoginCredential::Secret(s) => Presented::Secret(s),
            LoginCredential::PedKeys { keys, pin } => Presented::Ped(PresentedPed::new(
                keys.into_iter().map(|(n, b)| (n.into(), b)).collect(),
                pin,
            )),
        }
    }
}

impl Presented {
    fn as_credential(&mut self) -> Credential<'_> {
        match self {
            Presented::Secret(s) => Credential::Secret(s.clone()),
            Presented::Ped(p) => Credential::Ped(p),
        }
    }
}

/// A new credential as the engine takes it: a password, or the PED dialogue of a front end
/// (the imprinted keys come back to it as files).
enum Imprinting {
    Password(Pin),
    Ped(WirePed),
    /// Keys the front end already wrote: no files come back.
    Staged(StagedPed),
}

/// The PED of a front end's imprint answers: it imprints into memory (the front end writes
/// the files it returns).
fn wire_ped(i: PedImprint) -> WirePed {
    WirePed::new(
        PedAnswers {
            keys: match i.reuse.is_empty() {
                true => i.keys.iter().map(PathBuf::from).collect(),
                false => i.reuse.iter().map(|(n, _)| PathBuf::from(n)).collect(),
            },
            reuse: !i.reuse.is_empty(),
            m: i.m,
            n: i.n,
            pin: i.pin,
            overwrite: true,
            duplicates: i.duplicates,
        },
        i.reuse
            .into_iter()
            .map(|(n, b)| (PathBuf::from(n), b))
            .collect(),
    )
}

impl From<NewCredential> for Imprinting {
    fn from(c: NewCredential) -> Imprinting {
        match c {
            NewCredential::Password(p) => Imprinting::Password(p),
            NewCredential::Ped(i) => Imprinting::Ped(wire_ped(i)),
            NewCredential::Staged(id) => Imprinting::Staged(StagedPed::new(id)),
        }
    }
}

impl Imprinting {
    fn as_new_secret(&mut self) -> NewSecret<'_> {
        match self {
            Imprinting::Password(p) => NewSecret::Password(p.clone()),
            Imprinting::Ped(p) => NewSecret::Ped(p),
            Imprinting::Staged(p) => NewSecret::Ped(p),
        }
    }

    fn files(&mut self) -> Vec<(PathBuf, Zeroizing<Vec<u8>>)> {
        match self {
            Imprinting::Password(_) | Imprinting::Staged(_) => Vec::new(),
            Imprinting::Ped(p) => p.take_files(),
        }
    }
}

/// Reports of what the engine imprinted, each with the key files it wrote (by name) out of
/// `files`.
fn reports(
    imprinted: Vec<Imprinted>,
    mut files: Vec<(PathBuf, Zeroizing<Vec<u8>>)>,
) -> Vec<ImprintReport> {
    imprinted
        .iter()
        .map(|i| {
            let (mine, rest): (Vec<_>, Vec<_>) =
                files.drain(..).partition(|(n, _)| i.written.contains(n));
            files = rest;
            report(i, mine)
        })
        .collect()
}

/// The report of one imprint, with the key files it wrote.
fn report(i: &Imprinted, files: Vec<(PathBuf, Zeroizing<Vec<u8>>)>) -> ImprintReport {
    ImprintReport {
        secret_id: i.secret_id.clone(),
        origin_serial: i.origin_serial.clone(),
        m: i.m,
        n: i.n,
        pin: i.pin.is_some(),
        reused: i.reused,
        files: files
            .into_iter()
            .map(|(n, b)| (n.display().to_string(), b))
            .collect(),
    }
}

fn not_logged_in() -> HsmError {
    HsmError::NotLoggedIn(
        "no such login: it ended (logout, a closed connection, zeroize or tamper); log in again"
            .into(),
    )
}

/// One front end's view of the engine: its own handle on the store, and its logins in a
/// registry shared with the other front ends of this process.
pub struct Embedded {
    hsm: Hsm,
    logins: Logins,
    owner: u64,
    // Dropped with the front end: its owner's logins end with their last front end.
    _hold: OwnerHold,
}

impl Embedded {
    /// Opens the HSM in `dir` (which must exist) with its own registry of logins.
    pub fn open(dir: &Path) -> Result<Embedded> {
        Ok(Embedded::with(Hsm::open(dir)?, Logins::new()))
    }

    /// A front end over an engine handle, with logins of its own, in a registry shared with
    /// the others of this process.
    pub fn with(hsm: Hsm, logins: Logins) -> Embedded {
        Embedded::for_owner(hsm, logins, Logins::new_owner())
    }

    /// A front end whose logins are `owner`'s, shared with its other front ends
    /// ([`Logins::new_owner`], [`Logins::hold_peer`]).
    pub fn for_owner(hsm: Hsm, logins: Logins, owner: u64) -> Embedded {
        let hold = logins.hold(owner);
        Embedded {
            hsm,
            logins,
            owner,
            _hold: hold,
        }
    }

    fn session(&self, login: LoginId) -> Result<Arc<Session>> {
        self.logins.get(self.owner, login)
    }

    fn sessions(&self, login: Option<LoginId>) -> Result<Option<Arc<Session>>> {
        login.map(|l| self.session(l)).transpose()
    }

    /// The engine itself: the in-process fast path of a front end that runs it anyway (the
    /// PKCS#11 module in embedded mode keeps loaded keys between calls).
    pub fn engine(&mut self) -> &mut Hsm {
        &mut self.hsm
    }

    /// The engine's session behind a login (the fast path's companion to [`Embedded::engine`]).
    pub fn engine_session(&self, login: LoginId) -> Result<Arc<Session>> {
        self.session(login)
    }
}

impl HsmApi for Embedded {
    fn info(&mut self) -> Result<HsmInfo> {
        self.hsm.info()
    }

    fn state_generation(&mut self) -> Result<u64> {
        self.hsm.state_generation()
    }

    fn init_token(&mut self, label: &str, so_password: Pin) -> Result<u32> {
        self.hsm.init_token(label, so_password)
    }

    fn reinit_token(&mut self, label: &str, so_password: Pin) -> Result<()> {
        // The current password is checked as the re-initialisation's authority, and stays.
        self.hsm
            .init_partition(
                label,
                NewSecret::Password(so_password.clone()),
                DomainChoice::None,
                Some(Credential::Secret(so_password)),
            )
            .map(drop)
    }

    fn change_password(&mut self, role: Role, partition: &str, old: Pin, new: Pin) -> Result<()> {
        // The old password is checked (and counted) like any login.
        let s = self
            .hsm
            .login(role, Some(partition), Credential::Secret(old))?;
        self.hsm
            .change_secret(&s, NewSecret::Password(new))
            .map(drop)
    }

    fn stage_imprint(
        &mut self,
        imprint: PedImprint,
        secret_type: SecretType,
        label: &str,
    ) -> Result<StagedImprint> {
        let req = self.hsm.stage_request(secret_type, label)?;
        let mut ped = wire_ped(imprint);
        let imprinted = ped.imprint(&req, Secret32::random())?;
        let report = report(&imprinted, ped.take_files());
        let stage = ped_stage::keep(secret_type, imprinted)?;
        Ok(StagedImprint { stage, report })
    }

    fn secret_in_use(&mut self, secret_id: &str) -> Result<bool> {
        self.hsm.secret_in_use(secret_id)
    }

    fn init_hsm(&mut self, init: InitHsm) -> Result<Vec<ImprintReport>> {
        let (mut so, mut domain) = (Imprinting::from(init.so), Imprinting::from(init.domain));
        let mut current = init.current_so.map(Presented::from);
        let imprinted = self.hsm.init_as(
            InitOptions {
                label: init.label,
                mode: init.mode,
                so: so.as_new_secret(),
                domain: domain.as_new_secret(),
                current_so: current.as_mut().map(Presented::as_credential),
                confirm_destroy: init.confirm_destroy,
            },
            init.backup,
        )?;
        let mut files = so.files();
        files.extend(domain.files());
        Ok(reports(imprinted, files))
    }

    fn init_partition(
        &mut self,
        label: &str,
        so: NewCredential,
        domain: PartitionDomain,
        current_so: Option<LoginCredential>,
    ) -> Result<Vec<ImprintReport>> {
        let mut so = Imprinting::from(so);
        let (mut domain, mut hsm_domain) = match domain {
            PartitionDomain::None => (None, None),
            PartitionDomain::Hsm(c) => (None, Some(Presented::from(c))),
            PartitionDomain::New(n) => (Some(Imprinting::from(n)), None),
        };
        let mut current = current_so.map(Presented::from);
        let choice = match (domain.as_mut(), hsm_domain.as_mut()) {
            (Some(d), _) => DomainChoice::Imprint(d.as_new_secret()),
            (None, Some(c)) => DomainChoice::Hsm(c.as_credential()),
            (None, None) => DomainChoice::None,
        };
        let imprinted = self.hsm.init_partition(
            label,
            so.as_new_secret(),
            choice,
            current.as_mut().map(Presented::as_credential),
        )?;
        let mut files = so.files();
        if let Some(d) = domain.as_mut() {
            files.extend(d.files());
        }
        Ok(reports(imprinted, files))
    }

    fn init_role(
        &mut self,
        login: LoginId,
        role: Role,
        secret: NewCredential,
        confirm_destroy: bool,
    ) -> Result<Option<ImprintReport>> {
        let s = self.session(login)?;
        let mut secret = Imprinting::from(secret);
        let imprinted = self
            .hsm
            .init_role(&s, role, secret.as_new_secret(), confirm_destroy)?;
        Ok(reports(imprinted.into_iter().collect(), secret.files()).pop())
    }

    fn change_secret(
        &mut self,
        login: LoginId,
        secret: NewCredential,
    ) -> Result<Option<ImprintReport>> {
        let s = self.session(login)?;
        let mut secret = Imprinting::from(secret);
        let imprinted = self.hsm.change_secret(&s, secret.as_new_secret())?;
        Ok(reports(imprinted.into_iter().collect(), secret.files()).pop())
    }

    fn change_pin(
        &mut self,
        login: LoginId,
        keys: LoginCredential,
        new_pin: Option<Pin>,
    ) -> Result<()> {
        let s = self.session(login)?;
        let LoginCredential::PedKeys { keys, pin } = keys else {
            return Err(HsmError::InvalidInput(
                "changing a PED PIN takes the role's PED keys".into(),
            ));
        };
        let mut ped =
            PresentedPed::new(keys.into_iter().map(|(n, b)| (n.into(), b)).collect(), pin);
        self.hsm.change_pin(&s, &mut ped, new_pin)
    }

    fn audit_init(
        &mut self,
        secret: NewCredential,
        current: Option<LoginCredential>,
    ) -> Result<Option<ImprintReport>> {
        let mut secret = Imprinting::from(secret);
        let mut current = current.map(Presented::from);
        let imprinted = self.hsm.audit_init(
            secret.as_new_secret(),
            current.as_mut().map(Presented::as_credential),
        )?;
        Ok(reports(imprinted.into_iter().collect(), secret.files()).pop())
    }

    fn register_client(
        &mut self,
        login: LoginId,
        name: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo> {
        let s = self.session(login)?;
        self.hsm.register_client(&s, name, fingerprint)
    }

    fn clients(&mut self, login: LoginId) -> Result<Vec<ClientInfo>> {
        let s = self.session(login)?;
        self.hsm.clients(&s)
    }

    fn assign_client(
        &mut self,
        login: LoginId,
        client: &str,
        partition: &str,
        assign: bool,
    ) -> Result<ClientInfo> {
        let s = self.session(login)?;
        self.hsm.assign_client(&s, client, partition, assign)
    }

    fn revoke_client(&mut self, login: LoginId, client: &str) -> Result<ClientInfo> {
        let s = self.session(login)?;
        self.hsm.revoke_client(&s, client)
    }

    fn rekey_client(
        &mut self,
        login: LoginId,
        client: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo> {
        let s = self.session(login)?;
        self.hsm.rekey_client(&s, client, fingerprint)
    }

    fn issue_enrollment(
        &mut self,
        login: LoginId,
        name: &str,
        partitions: &[String],
        valid_for_s: u64,
    ) -> Result<Enrollment> {
        let s = self.session(login)?;
        self.hsm.issue_enrollment(&s, name, partitions, valid_for_s)
    }

    fn enroll(&mut self, code: &str, fingerprint: &str) -> Result<ClientInfo> {
        self.hsm.redeem_enrollment(code, fingerprint)
    }

    fn set_hsm_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.set_hsm_policy(&s, name, value)
    }

    fn set_partition_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.set_partition_policy(&s, name, value)
    }

    fn create_partition(&mut self, login: LoginId, label: &str) -> Result<u32> {
        let s = self.session(login)?;
        self.hsm.create_partition(&s, label)
    }

    fn delete_partition(&mut self, login: LoginId, label: &str) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm.delete_partition(&s, label)
    }

    fn reset_role(&mut self, login: LoginId, role: Role) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.reset_role(&s, role)
    }

    fn activate(&mut self, login: LoginId, challenge: Pin) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.activate(&s, challenge)
    }

    fn deactivate(&mut self, login: LoginId, role: Role) -> Result<bool> {
        let s = self.session(login)?;
        self.hsm.deactivate(&s, role)
    }

    fn audit_config(&mut self, login: LoginId) -> Result<AuditConfig> {
        let s = self.session(login)?;
        self.hsm.audit_config(&s)
    }

    fn set_audit_config(&mut self, login: LoginId, config: AuditConfig) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.set_audit_config(&s, config)
    }

    fn witnesses(&mut self, login: LoginId) -> Result<Vec<Witness>> {
        let s = self.session(login)?;
        self.hsm.witnesses(&s)
    }

    fn add_witness(&mut self, login: LoginId, vkey: &str) -> Result<Witness> {
        let s = self.session(login)?;
        self.hsm.add_witness(&s, vkey)
    }

    fn submit_cosigned(&mut self, login: LoginId, note: &str) -> Result<Vec<String>> {
        let s = self.session(login)?;
        self.hsm.submit_cosigned(&s, note)
    }

    fn find(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        filter: &ObjectFilter,
    ) -> Result<Vec<ObjectInfo>> {
        let s = self.sessions(login)?;
        self.hsm.find_objects(s.as_deref(), partition, filter)
    }

    fn object_info(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        handle: u64,
    ) -> Result<ObjectInfo> {
        let s = self.sessions(login)?;
        self.hsm.object_info(s.as_deref(), partition, handle)
    }

    fn generate_key_with(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        let s = self.session(login)?;
        self.hsm.generate_key_with(&s, spec, opts, tpl)
    }

    fn create_object(&mut self, login: LoginId, object: NewObject) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm.create_object(&s, object)
    }

    fn import_public_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        spki: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm
            .import_public_key(&s, spec, spki.to_vec(), opts, tpl)
    }

    fn key_value(&mut self, login: LoginId, handle: u64) -> Result<Zeroizing<Vec<u8>>> {
        let s = self.session(login)?;
        let v = self.hsm.key_value(&s, handle)?;
        Ok(Zeroizing::new(v.expose().to_vec()))
    }

    fn import_key(
        &mut self,
        login: LoginId,
        class: ObjectClass,
        spec: Option<KeySpec>,
        material: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let s = self.session(login)?;
        let key = crate::hsm::ClearKey {
            class,
            spec,
            material: crate::secret::SecretBytes::new(material.to_vec()),
        };
        self.hsm.import_key(&s, key, opts, tpl)
    }

    fn set_key_trusted(&mut self, login: LoginId, label: &str, trusted: bool) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm.set_key_trusted(&s, label, trusted)
    }

    fn copy_object(
        &mut self,
        login: LoginId,
        handle: u64,
        changes: &crate::object::CopyChanges,
    ) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm.copy_object(&s, handle, changes)
    }

    fn relabel_object(
        &mut self,
        login: LoginId,
        handle: u64,
        label: Option<&str>,
        object_id: Option<&[u8]>,
    ) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.relabel_object(
            &s,
            handle,
            label.map(str::to_string),
            object_id.map(<[u8]>::to_vec),
        )
    }

    fn drop_session_objects(&mut self, login: LoginId, owner: u64) -> Result<()> {
        self.session(login)?.drop_session_objects(owner);
        Ok(())
    }

    fn wrapped_key_len(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        target: u64,
    ) -> Result<usize> {
        let s = self.session(login)?;
        self.hsm.wrapped_key_len(&s, wrapper, mech, target)
    }

    fn wrap_key(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        params: &Params,
        target: u64,
    ) -> Result<Vec<u8>> {
        let s = self.session(login)?;
        self.hsm.wrap_key(&s, wrapper, mech, params, target)
    }

    fn unwrap_key(&mut self, login: LoginId, u: Unwrap<'_>) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm.unwrap_key(
            &s,
            u.unwrapper,
            u.mech,
            u.params,
            u.wrapped,
            u.class,
            u.spec,
            u.opts,
            u.tpl,
        )
    }

    fn derive_ecdh(
        &mut self,
        login: LoginId,
        base: u64,
        peer_point: &[u8],
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm.derive_ecdh(&s, base, peer_point, spec, opts, tpl)
    }

    fn summary(&mut self) -> Result<Summary> {
        Ok(Summary::from(self.hsm.info()?))
    }

    fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        credential: LoginCredential,
    ) -> Result<LoginId> {
        let mut credential = Presented::from(credential);
        let s = self
            .hsm
            .login(role, partition, credential.as_credential())?;
        Ok(self.logins.insert(self.owner, s))
    }

    fn check_login(&mut self, login: LoginId) -> Result<()> {
        self.session(login).map(drop)
    }

    fn logout(&mut self, login: LoginId) -> Result<()> {
        self.session(login)?;
        self.logins.map().logins.remove(&login);
        Ok(())
    }

    fn generate_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
    ) -> Result<Vec<u64>> {
        let s = self.session(login)?;
        self.hsm.generate_key(&s, spec, opts)
    }

    fn generate_keys(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        each: &[KeyOptions],
    ) -> Result<Vec<Vec<u64>>> {
        let s = self.session(login)?;
        let tpl = KeyTemplate {
            unique_label: true,
            ..Default::default()
        };
        self.hsm.generate_keys_with(&s, spec, each, &tpl)
    }

    fn find_objects(&mut self, login: LoginId, label: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let s = self.session(login)?;
        self.hsm.list_objects(&s, label)
    }

    fn sign(&mut self, login: LoginId, key: u64, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        let s = self.session(login)?;
        self.hsm.sign(&s, key, mech, data)
    }

    fn verify(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        let s = self.session(login)?;
        self.hsm.verify(&s, key, mech, data, signature)
    }

    fn encrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let s = self.session(login)?;
        self.hsm.encrypt(&s, key, mech, params, data)
    }

    fn decrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let s = self.session(login)?;
        Ok(self
            .hsm
            .decrypt(&s, key, mech, params, data)?
            .expose()
            .to_vec())
    }

    fn destroy_object(&mut self, login: LoginId, handle: u64) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.destroy_object(&s, handle)
    }

    fn random(&mut self, len: usize) -> Result<Vec<u8>> {
        if len > MAX_RANDOM {
            return Err(HsmError::InvalidInput(format!(
                "at most {MAX_RANDOM} random bytes per call; asked for {len}"
            )));
        }
        let mut b = vec![0u8; len];
        crate::crypto::fill_random(&mut b);
        Ok(b)
    }

    fn zeroize(&mut self, login: LoginId, reason: &str) -> Result<()> {
        let so = self.session(login)?;
        // Checked before anything ends (the CO cannot end everyone's logins this way); then
        // the logins end first, so that no call starts with a key once zeroize has begun.
        so.require_hsm_so("zeroize")?;
        self.logins.end_all();
        self.hsm.zeroize(&so, reason)
    }

    fn tamper(&mut self, login: LoginId) -> Result<()> {
        let so = self.session(login)?;
        so.require_hsm_so("the tamper switch")?;
        self.logins.end_all();
        self.hsm.tamper(&so)
    }

    fn restart(&mut self, login: LoginId) -> Result<u64> {
        let so = self.session(login)?;
        let epoch = self.hsm.restart(&so)?;
        // Activations may have ended; logins made before the restart end with them.
        self.logins.end_all();
        Ok(epoch)
    }

    fn audit_public_key(&mut self) -> Result<String> {
        self.hsm.audit_public_key()
    }

    fn audit_records(&mut self, login: LoginId) -> Result<Vec<Record>> {
        let s = self.session(login)?;
        self.hsm.audit_records(&s)
    }

    fn pending_ceremonies(&mut self, login: LoginId) -> Result<Vec<(Record, usize)>> {
        let s = self.session(login)?;
        self.hsm.pending_ceremonies(&s)
    }

    fn audit_checkpoint(&mut self, login: LoginId) -> Result<String> {
        let s = self.session(login)?;
        self.hsm.audit_checkpoint(&s)
    }

    fn clone_accept(&mut self, login: LoginId, replace: bool) -> Result<CloneHello> {
        let s = self.session(login)?;
        self.hsm.clone_accept(&s, replace)
    }

    fn clone_offer(
        &mut self,
        login: LoginId,
        target: &CloneHello,
        select: &CloneSelect,
    ) -> Result<CloneHello> {
        let s = self.session(login)?;
        self.hsm.clone_offer(&s, target, select)
    }

    fn clone_confirm(&mut self, login: LoginId, source: &CloneHello) -> Result<String> {
        let s = self.session(login)?;
        self.hsm.clone_confirm(&s, source)
    }

    fn clone_export(
        &mut self,
        login: LoginId,
        session: &str,
        target_proof: &str,
        from: u64,
        max: u32,
    ) -> Result<CloneBatch> {
        let s = self.session(login)?;
        self.hsm.clone_export(&s, session, target_proof, from, max)
    }

    fn clone_import(
        &mut self,
        login: LoginId,
        session: &str,
        batch: &CloneBatch,
    ) -> Result<CloneProgress> {
        let s = self.session(login)?;
        self.hsm.clone_import(&s, session, batch)
    }

    fn backup_export(&mut self, login: LoginId, select: &CloneSelect) -> Result<Vec<u8>> {
        let s = self.session(login)?;
        self.hsm.backup_export(&s, select)
    }

    fn backup_verify(&mut self, login: LoginId, file: &[u8]) -> Result<BackupSummary> {
        let s = self.session(login)?;
        self.hsm.backup_verify(&s, file)
    }

    fn backup_restore(
        &mut self,
        login: LoginId,
        file: &[u8],
        replace: bool,
    ) -> Result<(u64, u64, u64)> {
        let s = self.session(login)?;
        self.hsm.backup_restore(&s, file, replace)
    }

    fn audit_check_extends(&mut self, login: LoginId, note: &str) -> Result<u64> {
        let s = self.session(login)?;
        self.hsm.audit_check_extends(&s, note)
    }

    fn gp(&mut self, login: LoginId, call: super::GpCall) -> Result<super::GpAnswer> {
        let s = self.session(login)?;
        super::gp_call::answer(&mut self.hsm, &s, call)
    }

    fn destroyed_objects(&mut self, login: LoginId) -> Result<Vec<String>> {
        let s = self.session(login)?;
        self.hsm.destroyed_objects(&s)
    }

    fn ha_note(&mut self, login: LoginId, group: &str, event: &str, member: &str) -> Result<()> {
        let s = self.session(login)?;
        self.hsm.ha_note(&s, group, event, member)
    }

    fn audit_export(&mut self, login: LoginId, from: u64, earlier: &[u64]) -> Result<Export> {
        let s = self.session(login)?;
        self.hsm.audit_export(&s, from, earlier)
    }

    fn audit_verify(&mut self, login: LoginId) -> Result<Report> {
        let s = self.session(login)?;
        self.hsm.audit_verify(&s)
    }
}
