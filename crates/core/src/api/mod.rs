//! The HSM API: what a front end (the PKCS#11 module, the CLI) asks of an HSM, in one trait.
//! [`Embedded`] answers it with the engine in the caller's process; the `ferrohsm-client`
//! crate answers it by asking a `ferrohsm server`, which answers with an [`Embedded`] of its
//! own. The wire protocol (`ferrohsm-proto`) is a transcription of this trait, call for call.
//!
//! A login is named by a [`LoginId`] that only the front end that made it may use; it holds
//! the partition key for the Crypto Officer and Crypto User, and ends at [`HsmApi::logout`],
//! when the front end goes away, or for everyone at zeroize and tamper.
//!
//! This is the API's first version: device summary, logins by password, challenge secret or
//! PED keys, key generation, finding, signing, verifying, encryption, destruction, random, the
//! destructive device actions (which need the HSM SO) and the Auditor's reading of the log. It
//! grows call by call until the PKCS#11 module and the CLI are written against it alone.

mod embedded;

pub use embedded::{Embedded, Logins};

use crate::error::Result;
use crate::mechanism::{KeySpec, Mechanism, Params};
use crate::object::{KeyOptions, ObjectInfo};
use crate::role::Role;
use crate::secret::Pin;
use ferrohsm_audit::{Export, Record, Report};
use zeroize::Zeroizing;

/// Names one login of one front end. Random, so a guess names nothing.
pub type LoginId = u64;

/// A partition as a front end sees it (the PKCS#11 module shows one slot per partition).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionSummary {
    /// Stable id (the PKCS#11 slot id).
    pub id: u32,
    /// Label (the token label).
    pub label: String,
    /// Whether its Partition SO has initialised it.
    pub initialised: bool,
}

/// The device as a front end sees it. Nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Serial number.
    pub serial: String,
    /// "initialised", "uninitialised" or "zeroized".
    pub state: String,
    /// Label, once initialised.
    pub label: Option<String>,
    /// "ped" or "password", once initialised.
    pub auth_mode: Option<String>,
    /// Partitions.
    pub partitions: Vec<PartitionSummary>,
    /// A tamper event not yet cleared.
    pub tamper: Option<String>,
}

/// How a role proves itself through the API.
pub enum LoginCredential {
    /// A password (password-authenticated HSM) or an activated role's challenge secret.
    Secret(Pin),
    /// PED keys read by the front end: each file's name (for messages) and bytes, and the PED
    /// PIN typed with them. The HSM parses, checks and combines them itself.
    PedKeys {
        /// (name, file bytes), one per key presented.
        keys: Vec<(String, Zeroizing<Vec<u8>>)>,
        /// The PED PIN, for PIN-protected keys.
        pin: Option<Pin>,
    },
}

impl std::fmt::Debug for LoginCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginCredential::Secret(_) => f.write_str("Secret(<redacted>)"),
            LoginCredential::PedKeys { keys, pin } => write!(
                f,
                "PedKeys({} key(s), {})",
                keys.len(),
                if pin.is_some() { "PIN" } else { "no PIN" }
            ),
        }
    }
}

/// What applications and operators ask of an HSM. Every call checks role and policy inside
/// the HSM; errors are the engine's own ([`crate::HsmError`]), carried unchanged over the wire.
pub trait HsmApi {
    /// The device, its state and its partitions.
    fn summary(&mut self) -> Result<Summary>;
    /// Logs a role in (counted and audited like every login).
    fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        credential: LoginCredential,
    ) -> Result<LoginId>;
    /// Ends a login; its keys are dropped.
    fn logout(&mut self, login: LoginId) -> Result<()>;
    /// Generates a key in the login's partition (Crypto Officer); returns the handles made
    /// (the secret key, or the private key then the public key).
    fn generate_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
    ) -> Result<Vec<u64>>;
    /// Generates one key per entry of `each` in one transaction (all or none, each audited):
    /// provisioning batches. Returns each key's handles.
    fn generate_keys(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        each: &[KeyOptions],
    ) -> Result<Vec<Vec<u64>>>;
    /// The login's partition's objects, or those with a label: attributes and public values,
    /// never a secret.
    fn find_objects(&mut self, login: LoginId, label: Option<&str>) -> Result<Vec<ObjectInfo>>;
    /// Signs (or MACs) inside the HSM.
    fn sign(&mut self, login: LoginId, key: u64, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>>;
    /// Verifies a signature or MAC; `Ok(false)` for a bad one.
    fn verify(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool>;
    /// Encrypts inside the HSM.
    fn encrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>>;
    /// Decrypts inside the HSM.
    fn decrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>>;
    /// Destroys an object (Crypto Officer).
    fn destroy_object(&mut self, login: LoginId, handle: u64) -> Result<()>;
    /// Random bytes from the HSM's generator, at most [`MAX_RANDOM`].
    fn random(&mut self, len: usize) -> Result<Vec<u8>>;
    /// Zeroizes the HSM (HSM SO): every key in the store and every login, everywhere, at once.
    fn zeroize(&mut self, login: LoginId, reason: &str) -> Result<()>;
    /// The tamper switch (HSM SO): zeroize and leave a tamper note.
    fn tamper(&mut self, login: LoginId) -> Result<()>;
    /// A restart (HSM SO): activations end unless auto-activation is on; returns the boot count.
    fn restart(&mut self, login: LoginId) -> Result<u64>;
    /// The audit log's public key (a signed-note verifier key); no login.
    fn audit_public_key(&mut self) -> Result<String>;
    /// Every audit record, oldest first (Auditor).
    fn audit_records(&mut self, login: LoginId) -> Result<Vec<Record>>;
    /// Ceremony records still short of their witness cosignatures, with how many they have
    /// (Auditor).
    fn pending_ceremonies(&mut self, login: LoginId) -> Result<Vec<(Record, usize)>>;
    /// The latest signed checkpoint (Auditor).
    fn audit_checkpoint(&mut self, login: LoginId) -> Result<String>;
    /// Records from `from` with inclusion proofs and consistency proofs to the `earlier`
    /// checkpoint sizes (Auditor).
    fn audit_export(&mut self, login: LoginId, from: u64, earlier: &[u64]) -> Result<Export>;
    /// The live log verified inside the HSM against every checkpoint it signed (Auditor).
    fn audit_verify(&mut self, login: LoginId) -> Result<Report>;
}

/// Most random bytes one call returns.
pub const MAX_RANDOM: usize = 1 << 20;
