//! The HSM API answered by the engine in this process: no boundary between the caller and
//! its keys (tests, demos, single-process tools); inside `ferrohsm server`, the answering
//! side of every connection.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{HsmApi, LoginCredential, LoginId, PartitionSummary, Summary, MAX_RANDOM};
use crate::error::{HsmError, Result};
use crate::hsm::{AuthMode, Credential, Hsm, Session};
use crate::mechanism::{KeySpec, Mechanism, Params};
use crate::object::{KeyOptions, KeyTemplate, ObjectInfo};
use crate::ped::PresentedPed;
use crate::role::Role;
use ferrohsm_audit::{Export, Record, Report};

/// The logins of every front end served by one process, so that zeroize and tamper can end
/// them all at once. Each login belongs to the front end (owner) that made it.
#[derive(Clone, Default)]
pub struct Logins(Arc<Mutex<LoginTable>>);

/// Each login by id, with the front end that owns it.
type LoginTable = HashMap<LoginId, (u64, Arc<Session>)>;

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
            if id != 0 && !map.contains_key(&id) {
                map.insert(id, (owner, Arc::new(s)));
                return id;
            }
        }
    }

    fn get(&self, owner: u64, id: LoginId) -> Result<Arc<Session>> {
        match self.map().get(&id) {
            Some((o, s)) if *o == owner => Ok(s.clone()),
            _ => Err(not_logged_in()),
        }
    }

    /// Ends every login of one front end (its connection closed).
    pub fn end_owner(&self, owner: u64) {
        self.map().retain(|_, (o, _)| *o != owner);
    }

    /// Ends every login of every front end (zeroize, tamper). Keys are dropped, and so
    /// zeroized, as soon as no operation in flight holds them.
    pub fn end_all(&self) {
        self.map().clear();
    }

    /// How many logins are live.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no login is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}

impl Embedded {
    /// Opens the HSM in `dir` (which must exist) with its own registry of logins.
    pub fn open(dir: &Path) -> Result<Embedded> {
        Ok(Embedded::with(Hsm::open(dir)?, Logins::new()))
    }

    /// A front end over an engine handle, sharing `logins` with the others of this process.
    pub fn with(hsm: Hsm, logins: Logins) -> Embedded {
        Embedded {
            hsm,
            logins,
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn session(&self, login: LoginId) -> Result<Arc<Session>> {
        self.logins.get(self.owner, login)
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.logins.end_owner(self.owner);
    }
}

impl HsmApi for Embedded {
    fn summary(&mut self) -> Result<Summary> {
        let i = self.hsm.info()?;
        Ok(Summary {
            serial: i.serial,
            state: i.state,
            label: i.label,
            auth_mode: i.auth_mode.map(|m| {
                match m {
                    AuthMode::Ped => "ped",
                    AuthMode::Password => "password",
                }
                .to_string()
            }),
            partitions: i
                .partitions
                .into_iter()
                .map(|p| PartitionSummary {
                    id: p.id,
                    label: p.label,
                    initialised: p.initialised,
                })
                .collect(),
            tamper: i.tamper,
        })
    }

    fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        credential: LoginCredential,
    ) -> Result<LoginId> {
        let s = match credential {
            LoginCredential::Secret(secret) => {
                self.hsm
                    .login(role, partition, Credential::Secret(secret))?
            }
            LoginCredential::PedKeys { keys, pin } => {
                let keys = keys.into_iter().map(|(n, b)| (n.into(), b)).collect();
                let mut ped = PresentedPed::new(keys, pin);
                self.hsm.login(role, partition, Credential::Ped(&mut ped))?
            }
        };
        Ok(self.logins.insert(self.owner, s))
    }

    fn logout(&mut self, login: LoginId) -> Result<()> {
        self.session(login)?;
        self.logins.map().remove(&login);
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

    fn audit_export(&mut self, login: LoginId, from: u64, earlier: &[u64]) -> Result<Export> {
        let s = self.session(login)?;
        self.hsm.audit_export(&s, from, earlier)
    }

    fn audit_verify(&mut self, login: LoginId) -> Result<Report> {
        let s = self.session(login)?;
        self.hsm.audit_verify(&s)
    }
}
