//! The HSM API: what a front end (the PKCS#11 module, the CLI) asks of an HSM, in one trait.
//! [`Embedded`] answers it with the engine in the caller's process; the `ferrohsm-client`
//! crate answers it by asking a `ferrohsm server`, which answers with an [`Embedded`] of its
//! own. The wire protocol (`ferrohsm-proto`) is a transcription of this trait, call for call.
//!
//! A login is named by a [`LoginId`] that only the front end that made it may use; it holds
//! the partition key for the Crypto Officer and Crypto User, and ends at [`HsmApi::logout`],
//! when the front end goes away, or for everyone at zeroize and tamper.
//!
//! It covers what the PKCS#11 module needs (slots and tokens, token set-up by password,
//! logins, objects with PKCS#11 templates and session objects, every operation, wrapping,
//! derivation, random) and what the CLI's key, device-action and audit-reading commands
//! need. Public PKCS#11 sessions call with no login (`None`) and see only public objects.

mod clone_flow;
mod embedded;
mod gp_call;

pub use crate::audit::{AuditConfig, KeyUseAudit, Witness};
pub use crate::hsm::{
    AuthMode, BackupSummary, ClientInfo, CloneBatch, CloneHello, CloneProgress, CloneSelect,
    Enrollment, HsmInfo,
};
pub use crate::hsm::{GpComponent, GpKeysRef, GpSetInfo};
pub use clone_flow::{clone_between, clone_sided, CloneDone, CloneSide};
pub use embedded::{Embedded, Logins, OwnerHold};
pub use gp_call::{GpAnswer, GpCall};

use crate::error::Result;
use crate::mechanism::{KeySpec, Mechanism, Params};
use crate::object::{KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo};
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

impl From<HsmInfo> for Summary {
    fn from(i: HsmInfo) -> Summary {
        Summary {
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
        }
    }
}

/// Which cloning domain [`HsmApi::init_partition`] puts a partition in.
pub enum PartitionDomain {
    /// None: the partition cannot clone (or back up) until re-initialised into one.
    None,
    /// The HSM's own domain, presented again (its red key files and PED PIN, or its domain
    /// password); refused unless it is the HSM's.
    Hsm(LoginCredential),
    /// A new domain, or another red key's or domain password's, imprinted.
    New(NewCredential),
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

impl LoginCredential {
    /// PED key files as the API takes them: each file's name and bytes, and the PED PIN. The
    /// HSM parses and checks them; nothing here reads what they hold.
    pub fn ped_key_files(files: &[std::path::PathBuf], pin: Option<Pin>) -> Result<Self> {
        let mut keys = Vec::with_capacity(files.len());
        for path in files {
            let bytes = std::fs::read(path).map_err(|e| crate::HsmError::io(path, e))?;
            keys.push((path.display().to_string(), Zeroizing::new(bytes)));
        }
        Ok(LoginCredential::PedKeys { keys, pin })
    }
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

/// A new secret for a role or a cloning domain, as the API takes it.
pub enum NewCredential {
    /// A password (password-authenticated HSM).
    Password(Pin),
    /// PED keys: the HSM makes the secret (or takes a reused one from keys the front end
    /// read) and returns the key files, which the front end writes.
    Ped(PedImprint),
    /// PED keys staged by [`HsmApi::stage_imprint`] and already written by the front end under
    /// temporary names: the stage id. The operation adopts the staged secret.
    Staged(String),
}

/// The PED dialogue's answers, as a front end sends them.
pub struct PedImprint {
    /// Names of the key files to make, one per share, as the front end will write them.
    pub keys: Vec<String>,
    /// To reuse the secret already on keys instead of making one: their names and bytes.
    pub reuse: Vec<(String, Zeroizing<Vec<u8>>)>,
    /// Shares needed.
    pub m: u8,
    /// Shares made.
    pub n: u8,
    /// The new keys' PED PIN (or the reused keys' PIN).
    pub pin: Option<Pin>,
    /// Extra copies of each key.
    pub duplicates: u8,
}

/// What an imprint made. Never the secret itself.
pub struct ImprintReport {
    /// Identifies the secret across shares, copies and HSMs.
    pub secret_id: String,
    /// The HSM that first made it.
    pub origin_serial: String,
    /// Shares needed.
    pub m: u8,
    /// Shares made.
    pub n: u8,
    /// Whether a PED PIN protects it.
    pub pin: bool,
    /// Whether an existing secret was reused.
    pub reused: bool,
    /// Key files to write: (name, bytes). Each holds a secret share: write it and drop it.
    pub files: Vec<(String, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for ImprintReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImprintReport({} {} of {}, {} file(s))",
            self.secret_id,
            self.m,
            self.n,
            self.files.len()
        )
    }
}

/// A staged PED imprint ([`HsmApi::stage_imprint`]): the key files to write under temporary
/// names, and the stage id that the operation adopting them names.
#[derive(Debug)]
pub struct StagedImprint {
    /// Names the stage in [`NewCredential::Staged`].
    pub stage: String,
    /// The keys made (or reused) and their files.
    pub report: ImprintReport,
}

/// What `hsm init` asks ([`HsmApi::init_hsm`]).
pub struct InitHsm {
    /// The HSM's label.
    pub label: String,
    /// PED- or password-authenticated.
    pub mode: AuthMode,
    /// The HSM SO's new secret.
    pub so: NewCredential,
    /// The HSM's cloning domain.
    pub domain: NewCredential,
    /// On an initialised HSM: the current HSM SO.
    pub current_so: Option<LoginCredential>,
    /// On an initialised HSM with partitions: their labels, confirming their destruction.
    pub confirm_destroy: Vec<String>,
    /// A backup HSM ([`crate::hsm::Hsm::init_as`]): keeps partitions' objects, never uses them.
    pub backup: bool,
}

/// A wrapped key to import ([`HsmApi::unwrap_key`]).
#[derive(Clone, Copy, Debug)]
pub struct Unwrap<'a> {
    /// The key that unwraps (`CKA_UNWRAP`).
    pub unwrapper: u64,
    /// How it was wrapped.
    pub mech: Mechanism,
    /// The mechanism's parameters (IV, OAEP label).
    pub params: &'a Params,
    /// The wrapped bytes.
    pub wrapped: &'a [u8],
    /// The class of the key inside (secret or private).
    pub class: ObjectClass,
    /// A secret key's type (`None`: AES sized by what unwraps); a private key's comes from
    /// its PKCS#8 encoding.
    pub spec: Option<KeySpec>,
    /// Label, id, extractability of the new key.
    pub opts: &'a KeyOptions,
    /// PKCS#11 template overrides.
    pub tpl: &'a KeyTemplate,
}

/// What applications and operators ask of an HSM. Every call checks role and policy inside
/// the HSM; errors are the engine's own ([`crate::HsmError`]), carried unchanged over the wire.
pub trait HsmApi {
    /// The device, its state and its partitions.
    fn summary(&mut self) -> Result<Summary>;
    /// Everything an operator may see of the device (`ferrohsm hsm show`): partitions, roles,
    /// policies, counters. Nothing secret.
    fn info(&mut self) -> Result<HsmInfo>;
    /// A number that moves whenever the device's partitions, roles or state change, so that
    /// a front end may keep its slot list until it does.
    fn state_generation(&mut self) -> Result<u64>;
    /// Makes a new partition from the spare PKCS#11 token (`C_InitToken`), with `so_password`
    /// as its Partition SO's password; only while the HSM SO's `init-token` policy is on.
    /// Returns the partition's id.
    fn init_token(&mut self, label: &str, so_password: Pin) -> Result<u32>;
    /// Re-initialises a password-authenticated partition (`C_InitToken` on an initialised
    /// token): `so_password` must be its current Partition SO password; every object goes.
    fn reinit_token(&mut self, label: &str, so_password: Pin) -> Result<()>;
    /// Replaces a role's password after checking (and counting) the old one (`C_SetPIN`).
    fn change_password(&mut self, role: Role, partition: &str, old: Pin, new: Pin) -> Result<()>;
    /// Runs a PED imprint dialogue ahead of the operation that will adopt it: makes (or, to
    /// reuse, rebuilds) a secret of `secret_type`, returns its key files, labelled `label`,
    /// and keeps the secret for one operation naming the stage ([`NewCredential::Staged`]).
    /// Nothing is stored; the front end writes the files under temporary names and puts them
    /// in place once the operation has committed ([`crate::ped_stage`]).
    fn stage_imprint(
        &mut self,
        imprint: PedImprint,
        secret_type: crate::pedkey::SecretType,
        label: &str,
    ) -> Result<StagedImprint>;
    /// Whether any role or cloning domain of this HSM is the PED secret `secret_id` (what a
    /// front end asks to settle key files an interrupted imprint left). Reveals only that.
    fn secret_in_use(&mut self, secret_id: &str) -> Result<bool>;
    /// Initialises (or, with the current HSM SO, re-initialises) the HSM.
    fn init_hsm(&mut self, init: InitHsm) -> Result<Vec<ImprintReport>>;
    /// Initialises a partition: its Partition SO, and its cloning domain. Re-initialising
    /// needs the current Partition SO and destroys its objects.
    fn init_partition(
        &mut self,
        label: &str,
        so: NewCredential,
        domain: PartitionDomain,
        current_so: Option<LoginCredential>,
    ) -> Result<Vec<ImprintReport>>;
    /// Initialises a Crypto Officer (Partition SO) or Crypto User (Crypto Officer).
    fn init_role(
        &mut self,
        login: LoginId,
        role: Role,
        secret: NewCredential,
        confirm_destroy: bool,
    ) -> Result<Option<ImprintReport>>;
    /// Replaces the login's role's secret.
    fn change_secret(
        &mut self,
        login: LoginId,
        secret: NewCredential,
    ) -> Result<Option<ImprintReport>>;
    /// Sets or removes the PED PIN of the login's role, presenting its keys again.
    fn change_pin(
        &mut self,
        login: LoginId,
        keys: LoginCredential,
        new_pin: Option<Pin>,
    ) -> Result<()>;
    /// Imprints the Auditor (re-imprinting needs the current one).
    fn audit_init(
        &mut self,
        secret: NewCredential,
        current: Option<LoginCredential>,
    ) -> Result<Option<ImprintReport>>;
    /// Sets an HSM policy (HSM SO).
    fn set_hsm_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()>;
    /// Sets a policy of the login's partition (Partition SO).
    fn set_partition_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()>;
    /// Creates a partition (HSM SO); returns its id.
    fn create_partition(&mut self, login: LoginId, label: &str) -> Result<u32>;
    /// Deletes a partition and its objects (HSM SO); returns how many objects went.
    fn delete_partition(&mut self, login: LoginId, label: &str) -> Result<u64>;
    /// Clears a Crypto Officer's or User's failed logins and lockout (Partition SO).
    fn reset_role(&mut self, login: LoginId, role: Role) -> Result<()>;
    /// Activates the login's role with a challenge secret.
    fn activate(&mut self, login: LoginId, challenge: Pin) -> Result<()>;
    /// Deactivates a role; whether it was activated.
    fn deactivate(&mut self, login: LoginId, role: Role) -> Result<bool>;
    /// The Auditor's configuration (Auditor).
    fn audit_config(&mut self, login: LoginId) -> Result<AuditConfig>;
    /// Changes the Auditor's configuration (Auditor).
    fn set_audit_config(&mut self, login: LoginId, config: AuditConfig) -> Result<()>;
    /// The registered witnesses (Auditor).
    fn witnesses(&mut self, login: LoginId) -> Result<Vec<Witness>>;
    /// Registers a witness by its verifier key (Auditor).
    fn add_witness(&mut self, login: LoginId, vkey: &str) -> Result<Witness>;
    /// Hands in a checkpoint cosigned by witnesses (Auditor); returns who cosigned.
    fn submit_cosigned(&mut self, login: LoginId, note: &str) -> Result<Vec<String>>;
    /// Registers a client host by its certificate key's fingerprint (HSM SO).
    fn register_client(
        &mut self,
        login: LoginId,
        name: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo>;
    /// Every registered client, revoked ones included (HSM SO).
    fn clients(&mut self, login: LoginId) -> Result<Vec<ClientInfo>>;
    /// Assigns a partition to a client, or (`assign` false) takes it away (HSM SO).
    fn assign_client(
        &mut self,
        login: LoginId,
        client: &str,
        partition: &str,
        assign: bool,
    ) -> Result<ClientInfo>;
    /// Revokes a client (HSM SO).
    fn revoke_client(&mut self, login: LoginId, client: &str) -> Result<ClientInfo>;
    /// Gives a client a new certificate key, keeping its name and partitions (HSM SO).
    fn rekey_client(
        &mut self,
        login: LoginId,
        client: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo>;
    /// Issues a one-time enrollment code valid for `valid_for_s` seconds (at most 20
    /// minutes) with which a host registers its own certificate under `name` (HSM SO).
    fn issue_enrollment(
        &mut self,
        login: LoginId,
        name: &str,
        partitions: &[String],
        valid_for_s: u64,
    ) -> Result<Enrollment>;
    /// Redeems an enrollment code for the certificate key `fingerprint`. A server takes
    /// this only from an unregistered TLS client, and only for the key that client proved
    /// in its handshake.
    fn enroll(&mut self, code: &str, fingerprint: &str) -> Result<ClientInfo>;
    /// Logs a role in (counted and audited like every login).
    fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        credential: LoginCredential,
    ) -> Result<LoginId>;
    /// `Ok` while the login lives; [`crate::HsmError::NotLoggedIn`] once it ended (logout,
    /// zeroize, tamper, a restart of the server), so that a front end may forget it.
    fn check_login(&mut self, login: LoginId) -> Result<()>;
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
    /// Objects matching `filter`: with a Crypto Officer's or User's login, every object of
    /// its partition and its session objects; with none, the public objects of `partition`.
    fn find(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        filter: &ObjectFilter,
    ) -> Result<Vec<ObjectInfo>>;
    /// One object's attributes and public value, for a caller that may see it.
    fn object_info(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        handle: u64,
    ) -> Result<ObjectInfo>;
    /// Generates a key with PKCS#11 template overrides (usages, sensitivity, session
    /// objects owned by `tpl.session_owner`); returns the handles made.
    fn generate_key_with(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>>;
    /// Stores a certificate or data object (Crypto Officer).
    fn create_object(&mut self, login: LoginId, object: NewObject) -> Result<u64>;
    /// Stores a public key brought from outside (Crypto Officer).
    fn import_public_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        spki: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64>;
    /// Changes a modifiable object's label and/or id (Crypto Officer).
    fn relabel_object(
        &mut self,
        login: LoginId,
        handle: u64,
        label: Option<&str>,
        object_id: Option<&[u8]>,
    ) -> Result<()>;
    /// The value of a secret key made neither sensitive nor unextractable (`CKA_VALUE`;
    /// Crypto Officer or User), audited. Any other key is refused
    /// ([`crate::HsmError::KeyUse`]).
    fn key_value(&mut self, login: LoginId, handle: u64) -> Result<Zeroizing<Vec<u8>>>;
    /// Stores a secret key (raw value) or private key (PKCS#8) given in clear (Crypto
    /// Officer), if the partition's `import-keys` policy allows it; such a key never wraps.
    /// `spec` names a secret key's type (`None`: AES, sized by the value).
    fn import_key(
        &mut self,
        login: LoginId,
        class: ObjectClass,
        spec: Option<KeySpec>,
        material: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64>;
    /// Marks the secret or public key labelled `label` trusted (`CKA_TRUSTED`) or not
    /// (Partition SO); the key's handle.
    fn set_key_trusted(&mut self, login: LoginId, label: &str, trusted: bool) -> Result<u64>;
    /// Copies a key within the login's partition (`C_CopyObject`); the copy's handle. A copy
    /// may only be more restricted than its original.
    fn copy_object(
        &mut self,
        login: LoginId,
        handle: u64,
        changes: &crate::object::CopyChanges,
    ) -> Result<u64>;
    /// Destroys the session objects `owner` (a PKCS#11 session) made, as closing it must.
    fn drop_session_objects(&mut self, login: LoginId, owner: u64) -> Result<()>;
    /// How long [`HsmApi::wrap_key`]'s answer would be (the two-call convention).
    fn wrapped_key_len(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        target: u64,
    ) -> Result<usize>;
    /// A key wrapped under another, when both keys' attributes allow it (audited).
    fn wrap_key(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        params: &Params,
        target: u64,
    ) -> Result<Vec<u8>>;
    /// Imports a wrapped key as a new object (Crypto Officer).
    fn unwrap_key(&mut self, login: LoginId, u: Unwrap<'_>) -> Result<u64>;
    /// Derives a secret key by ECDH from an EC private key and a peer's point.
    fn derive_ecdh(
        &mut self,
        login: LoginId,
        base: u64,
        peer_point: &[u8],
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64>;
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
    /// Cloning, step 1 on the target ([`crate::hsm::Hsm::clone_accept`]; its Crypto Officer);
    /// with `replace`, objects it holds already are replaced by the ones that come.
    fn clone_accept(&mut self, login: LoginId, replace: bool) -> Result<CloneHello>;
    /// Cloning, step 2 on the source ([`crate::hsm::Hsm::clone_offer`]).
    fn clone_offer(
        &mut self,
        login: LoginId,
        target: &CloneHello,
        select: &CloneSelect,
    ) -> Result<CloneHello>;
    /// Cloning, step 3 on the target ([`crate::hsm::Hsm::clone_confirm`]): its proof.
    fn clone_confirm(&mut self, login: LoginId, source: &CloneHello) -> Result<String>;
    /// Cloning, step 4 on the source ([`crate::hsm::Hsm::clone_export`]).
    fn clone_export(
        &mut self,
        login: LoginId,
        session: &str,
        target_proof: &str,
        from: u64,
        max: u32,
    ) -> Result<CloneBatch>;
    /// Cloning, step 5 on the target ([`crate::hsm::Hsm::clone_import`]).
    fn clone_import(
        &mut self,
        login: LoginId,
        session: &str,
        batch: &CloneBatch,
    ) -> Result<CloneProgress>;
    /// A backup file of what `select` names in the login's partition
    /// ([`crate::hsm::Hsm::backup_export`]; Crypto Officer).
    fn backup_export(&mut self, login: LoginId, select: &CloneSelect) -> Result<Vec<u8>>;
    /// Checks a backup file without restoring it ([`crate::hsm::Hsm::backup_verify`]).
    fn backup_verify(&mut self, login: LoginId, file: &[u8]) -> Result<BackupSummary>;
    /// Restores a backup file, all or nothing ([`crate::hsm::Hsm::backup_restore`]): (added,
    /// replaced, skipped).
    fn backup_restore(
        &mut self,
        login: LoginId,
        file: &[u8],
        replace: bool,
    ) -> Result<(u64, u64, u64)>;
    /// Checks that the log extends `note`, a checkpoint this HSM signed that the Auditor kept
    /// outside it (Auditor); returns its size. A rollback or fork is tamper, recorded.
    fn audit_check_extends(&mut self, login: LoginId, note: &str) -> Result<u64>;
    /// Records from `from` with inclusion proofs and consistency proofs to the `earlier`
    /// checkpoint sizes (Auditor).
    fn audit_export(&mut self, login: LoginId, from: u64, earlier: &[u64]) -> Result<Export>;
    /// The live log verified inside the HSM against every checkpoint it signed (Auditor).
    fn audit_verify(&mut self, login: LoginId) -> Result<Report>;
    /// Records an HA group's membership change in the log ([`crate::hsm::Hsm::ha_note`];
    /// Crypto Officer).
    fn ha_note(&mut self, login: LoginId, group: &str, event: &str, member: &str) -> Result<()>;
    /// The unique ids of token objects destroyed in the login's partition and not brought
    /// back since ([`crate::hsm::Hsm::destroyed_objects`]): what an HA group's sync destroys
    /// on every member instead of cloning it back from one that was away.
    fn destroyed_objects(&mut self, login: LoginId) -> Result<Vec<String>>;
    /// GlobalPlatform master key sets and secure channels to cards ([`GpCall`]); keys,
    /// card keys and session keys stay in the HSM.
    fn gp(&mut self, login: LoginId, call: GpCall) -> Result<GpAnswer>;
}

/// Most random bytes one call returns.
pub const MAX_RANDOM: usize = 1 << 20;
