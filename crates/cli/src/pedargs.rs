//! Command-line flags for the PED dialogue, and how they become a [`LocalPed`].

use std::path::{Path, PathBuf};

use clap::Args;
use ferrohsm_core::api::{HsmApi, ImprintReport, LoginCredential, NewCredential, PedImprint};
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::pedkey::{PedKey, SecretType};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::HsmError;
use zeroize::Zeroizing;

use crate::input::{self, Kind};

/// How to log in: PED key files (+ PIN), a password, or an activated role's challenge secret.
#[derive(Args, Debug, Clone, Default)]
pub struct Login {
    /// PED key file(s) of the role logging in (repeat for M of N). Default: the role's files
    /// in the PED directory.
    #[arg(long = "key", value_name = "FILE")]
    pub key: Vec<PathBuf>,
    /// PED PIN for those keys: env:NAME, file:PATH, - or prompt.
    #[arg(long = "pin", value_name = "SRC")]
    pub pin: Option<String>,
    /// Password (password-authenticated HSM): env:NAME, file:PATH, - or prompt.
    #[arg(long = "password", value_name = "SRC")]
    pub password: Option<String>,
    /// Challenge secret of an activated Crypto Officer / Crypto User: env:NAME, file:PATH, - or prompt.
    #[arg(long = "challenge", value_name = "SRC", conflicts_with_all = ["key", "pin", "password"])]
    pub challenge: Option<String>,
}

/// How the Crypto Officer of the other partition of a two-sided command (a clone's target)
/// logs in: the same choices as [`Login`], with `--to-` names.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetLogin {
    /// PED key file(s) of the target partition's Crypto Officer (repeat for M of N). Default:
    /// its files in the PED directory. Example: --to-key dr-co-1.pedkey
    #[arg(long = "to-key", id = "to-key", value_name = "FILE")]
    pub key: Vec<PathBuf>,
    /// PED PIN for those keys: env:NAME, file:PATH, - or prompt. Example: --to-pin prompt
    #[arg(long = "to-pin", id = "to-pin", value_name = "SRC")]
    pub pin: Option<String>,
    /// Password of the target partition's Crypto Officer (password-authenticated HSM):
    /// env:NAME, file:PATH, - or prompt. Example: --to-password env:DR_CO_PW
    #[arg(long = "to-password", id = "to-password", value_name = "SRC")]
    pub password: Option<String>,
    /// Challenge secret of the activated target Crypto Officer: env:NAME, file:PATH, - or
    /// prompt. Example: --to-challenge env:DR_CO
    #[arg(long = "to-challenge", id = "to-challenge", value_name = "SRC", conflicts_with_all = ["to-key", "to-pin", "to-password"])]
    pub challenge: Option<String>,
}

impl TargetLogin {
    /// The same login as [`Login`] flags.
    pub fn as_login(&self) -> Login {
        Login {
            key: self.key.clone(),
            pin: self.pin.clone(),
            password: self.password.clone(),
            challenge: self.challenge.clone(),
        }
    }

    /// [`Login`] flags, as the other side's (a restore from a backup HSM, where this
    /// partition is the clone's target).
    pub fn from_login(l: &Login) -> TargetLogin {
        TargetLogin {
            key: l.key.clone(),
            pin: l.pin.clone(),
            password: l.password.clone(),
            challenge: l.challenge.clone(),
        }
    }
}

/// The PED keys for logging in as `prefix` (a role): the default files.
pub fn default_keys(ped_dir: &Path, prefix: &str) -> Vec<PathBuf> {
    ferrohsm_core::ped::default_keys(ped_dir, prefix)
}

impl Login {
    /// Whether anything was given.
    pub fn given(&self) -> bool {
        !self.key.is_empty()
            || self.pin.is_some()
            || self.password.is_some()
            || self.challenge.is_some()
    }

    /// Builds the credential. `password_mode` selects a password over PED keys.
    pub fn credential(
        &self,
        ped_dir: &Path,
        prefix: &str,
        password_mode: bool,
        who: &str,
    ) -> Result<LoginCredential, HsmError> {
        if let Some(src) = &self.challenge {
            return Ok(LoginCredential::Secret(input::read(
                src,
                Kind::Password,
                &format!("challenge secret of the {who}"),
            )?));
        }
        if password_mode {
            let src = self.password.clone().unwrap_or_else(|| "prompt".into());
            return Ok(LoginCredential::Secret(input::read(
                &src,
                Kind::Password,
                &format!("password of the {who}"),
            )?));
        }
        if self.password.is_some() {
            return Err(HsmError::InvalidInput("this HSM is PED-authenticated; log in with --key (and --pin), or --challenge when activated".into()));
        }
        let keys = if self.key.is_empty() {
            default_keys(ped_dir, prefix)
        } else {
            self.key.clone()
        };
        if keys.is_empty() {
            return Err(HsmError::InvalidInput(format!(
                "no PED key for the {who}: name it with --key FILE (looked for {}/{prefix}-N.pedkey)", ped_dir.display())));
        }
        let pin = match &self.pin {
            Some(src) => Some(input::read(
                src,
                Kind::PedPin,
                &format!("PED PIN of the {who}"),
            )?),
            None => {
                // Ask only if the key says it needs one and someone is there to answer.
                let needs = PedKey::read(&keys[0])
                    .ok()
                    .flatten()
                    .is_some_and(|k| k.info.pin_protected);
                if needs && input::interactive() {
                    Some(input::prompt_secret(
                        Kind::PedPin,
                        &format!("PED PIN of the {who}"),
                    )?)
                } else {
                    None
                }
            }
        };
        // The files' bytes go to the HSM, which checks and combines them itself.
        LoginCredential::ped_key_files(&keys, pin)
    }
}

/// Generates one struct of imprint flags with a prefix (`--so-key`, `--domain-m`, …).
macro_rules! imprint_args {
    ($name:ident, $p:literal, $what:literal) => {
        #[doc = concat!("PED dialogue answers for ", $what, ".")]
        #[derive(Args, Debug, Clone, Default)]
        pub struct $name {
            // (clap reads help from literal doc comments only; these are built, so `help`.)
            #[arg(long = concat!($p, "key"), id = concat!($p, "key"), value_name = "FILE",
                help = concat!("Key file(s) to write ", $what, " on (N of them; repeat the flag), or to read it from with --", $p, "reuse. Default: <serial>-…-N.pedkey in the PED directory. Example: --", $p, "key a.pedkey --", $p, "key b.pedkey"))]
            pub key: Vec<PathBuf>,
            #[arg(long = concat!($p, "reuse"), id = concat!($p, "reuse"),
                help = concat!("Reuse the secret already on the --", $p, "key file(s) (a key of the same colour, e.g. from another HSM) instead of generating a new one. Example: --", $p, "reuse --", $p, "key old.pedkey"))]
            pub reuse: bool,
            #[doc = "M: shares needed to rebuild the secret (1-16)."]
            #[arg(long = concat!($p, "m"), id = concat!($p, "m"), value_name = "M")]
            pub m: Option<u8>,
            #[doc = "N: shares (keys) to make (M-16). M = N = 1 means no split."]
            #[arg(long = concat!($p, "n"), id = concat!($p, "n"), value_name = "N")]
            pub n: Option<u8>,
            #[doc = "PED PIN to protect the keys with (new), or of the reused keys: env:NAME, file:PATH, - or prompt."]
            #[arg(long = concat!($p, "pin"), id = concat!($p, "pin"), value_name = "SRC")]
            pub pin: Option<String>,
            #[doc = "No PED PIN (do not ask)."]
            #[arg(long = concat!($p, "no-pin"), id = concat!($p, "no-pin"), conflicts_with = concat!($p, "pin"))]
            pub no_pin: bool,
            #[doc = "Password (password-authenticated HSM): env:NAME, file:PATH, - or prompt."]
            #[arg(long = concat!($p, "password"), id = concat!($p, "password"), value_name = "SRC")]
            pub password: Option<String>,
        }

        impl $name {
            /// Turns the flags (and, at a terminal, answers to questions) into a new secret.
            pub fn build(&self, common: &ImprintCommon, ped_dir: &Path, prefix: &str, password_mode: bool, what: &str) -> Result<NewSecretOwned, HsmError> {
                imprint(&ImprintFlags {
                    key: self.key.clone(), reuse: self.reuse, m: self.m, n: self.n, pin: self.pin.clone(),
                    no_pin: self.no_pin, password: self.password.clone(),
                }, common, ped_dir, prefix, password_mode, what)
            }

            /// The same flags as a secret presented rather than imprinted: key files (the
            /// default ones of `prefix`) and PED PIN, or a password.
            pub fn presented(&self, ped_dir: &Path, prefix: &str, password_mode: bool, what: &str) -> Result<LoginCredential, HsmError> {
                Login { key: self.key.clone(), pin: self.pin.clone(), password: self.password.clone(), challenge: None }
                    .credential(ped_dir, prefix, password_mode, what)
            }
        }
    };
}

imprint_args!(NewImprint, "new-", "the new secret");
imprint_args!(SoImprint, "so-", "the SO secret (blue)");
imprint_args!(DomainImprint, "domain-", "the cloning domain (red)");

/// Flags shared by every imprint in one command.
#[derive(Args, Debug, Clone, Default)]
pub struct ImprintCommon {
    /// Write over key files that already hold a secret (otherwise refused, or asked at a terminal).
    #[arg(long)]
    pub overwrite: bool,
    /// Also write this many copies of each new key (`<name>.copyK.pedkey`).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub duplicates: u8,
}

struct ImprintFlags {
    key: Vec<PathBuf>,
    reuse: bool,
    m: Option<u8>,
    n: Option<u8>,
    pin: Option<String>,
    no_pin: bool,
    password: Option<String>,
}

/// Owns what a [`NewSecret`] borrows.
pub enum NewSecretOwned {
    /// PED dialogue.
    Ped(LocalPed),
    /// Password.
    Password(Pin),
}

impl NewSecretOwned {
    /// Readies the new secret for its operation. For PED keys, the target files are checked
    /// first (an occupied key is overwritten only with --overwrite or a yes), the HSM stages
    /// the imprint ([`HsmApi::stage_imprint`]) and its key files are written under temporary
    /// names; [`PendingKeys::settle`] puts them in place once the operation has committed.
    pub fn stage(
        self,
        api: &mut dyn HsmApi,
        ped_dir: &Path,
        secret_type: SecretType,
        label: &str,
    ) -> Result<(NewCredential, PendingKeys), HsmError> {
        match self {
            NewSecretOwned::Password(p) => Ok((NewCredential::Password(p), PendingKeys::default())),
            NewSecretOwned::Ped(mut ped) => {
                settle_leftovers(api, ped_dir);
                ped.check_targets()?;
                let a = ped.answers().clone();
                let name = |p: &PathBuf| p.display().to_string();
                let mut reuse = Vec::new();
                if a.reuse {
                    for k in &a.keys {
                        let bytes = std::fs::read(k).map_err(|e| HsmError::io(k, e))?;
                        reuse.push((name(k), Zeroizing::new(bytes)));
                    }
                }
                let staged = api.stage_imprint(
                    PedImprint {
                        keys: a.keys.iter().map(name).collect(),
                        reuse,
                        m: a.m,
                        n: a.n,
                        pin: a.pin,
                        duplicates: a.duplicates,
                    },
                    secret_type,
                    label,
                )?;
                let mut pending = PendingKeys::default();
                pending.write(staged.report)?;
                Ok((NewCredential::Staged(staged.stage), pending))
            }
        }
    }
}

/// The suffix of a key file written ahead of the operation that adopts its secret.
const PENDING: &str = ".pending";

fn pending_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(PENDING);
    PathBuf::from(p)
}

/// Key files written under temporary names (`<name>.pending`) while their operation runs.
/// Dropped unsettled (a refused or failed step before the operation), they are removed.
#[derive(Default)]
pub struct PendingKeys {
    /// Final names, each with its file waiting at `<name>.pending`.
    files: Vec<PathBuf>,
    /// The secrets the files hold.
    secret_ids: Vec<String>,
    /// What to say once they are in place.
    notes: Vec<String>,
}

impl PendingKeys {
    /// Writes a staged imprint's files under their temporary names.
    fn write(&mut self, r: ImprintReport) -> Result<(), HsmError> {
        if r.reused {
            self.notes.push(format!(
                "PED: reused existing secret {} (from HSM {})",
                r.secret_id.get(..8).unwrap_or(&r.secret_id),
                r.origin_serial
            ));
        }
        self.secret_ids.push(r.secret_id);
        for (name, bytes) in &r.files {
            let path = PathBuf::from(name);
            PedKey::from_bytes(&path, bytes)?.write(&pending_path(&path))?;
            self.files.push(path);
            ferrohsm_core::crash_point("imprint-staged-file");
        }
        Ok(())
    }

    /// Adds another imprint's pending files (a command that imprints twice).
    pub fn join(&mut self, mut other: PendingKeys) {
        self.files.append(&mut other.files);
        self.secret_ids.append(&mut other.secret_ids);
        self.notes.append(&mut other.notes);
    }

    /// Settles the files after their operation answered `result`: in place when the HSM
    /// adopted their secrets (also when the answer is an error but the HSM committed first,
    /// say a connection lost after the commit), removed when it did not, and left waiting
    /// (settled by a later command, [`settle_leftovers`]) when the HSM cannot say.
    pub fn settle<T>(
        mut self,
        api: &mut dyn HsmApi,
        result: Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let e = match result {
            Ok(v) => {
                ferrohsm_core::crash_point("imprint-committed");
                self.put_in_place()?;
                return Ok(v);
            }
            Err(e) => e,
        };
        if self.files.is_empty() {
            return Err(e);
        }
        let adopted: Result<Vec<bool>, HsmError> = self
            .secret_ids
            .iter()
            .map(|id| api.secret_in_use(id))
            .collect();
        match adopted {
            Ok(a) if a.contains(&true) => {
                self.put_in_place()?;
                eprintln!(
                    "PED: the HSM adopted the new keys before the error below; they are in place"
                );
            }
            Ok(_) => self.discard(),
            Err(_) => {
                eprintln!(
                    "PED: the new keys wait as <name>.pending beside {}: the HSM could not say whether it adopted them; the next command that logs in settles them",
                    self.files.first().map(|f| f.display().to_string()).unwrap_or_default()
                );
                self.files.clear();
            }
        }
        Err(e)
    }

    fn put_in_place(&mut self) -> Result<(), HsmError> {
        for n in std::mem::take(&mut self.notes) {
            eprintln!("{n}");
        }
        for (i, path) in std::mem::take(&mut self.files).into_iter().enumerate() {
            if i > 0 {
                ferrohsm_core::crash_point("imprint-renaming");
            }
            put_in_place(&pending_path(&path), &path)?;
            eprintln!("PED: wrote {}", path.display());
        }
        Ok(())
    }

    fn discard(&mut self) {
        for path in std::mem::take(&mut self.files) {
            let _ = std::fs::remove_file(pending_path(&path));
        }
    }
}

impl Drop for PendingKeys {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Renames a pending key file to its final name, durably.
fn put_in_place(pending: &Path, path: &Path) -> Result<(), HsmError> {
    std::fs::rename(pending, path).map_err(|e| HsmError::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the directory is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Settles key files an interrupted imprint left in the PED directory: each whose secret the
/// HSM uses is put in place (the operation committed; only the rename was lost); each the HSM
/// does not use and that is older than a stage lives is removed (it can never be adopted).
/// Younger ones may belong to an imprint still running, and stay.
pub fn settle_leftovers(api: &mut dyn HsmApi, ped_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(ped_dir) else {
        return;
    };
    for e in entries.flatten() {
        let pending = e.path();
        let Some(name) = pending.to_str().and_then(|n| n.strip_suffix(PENDING)) else {
            continue;
        };
        if !name.ends_with(".pedkey") {
            continue;
        }
        let path = PathBuf::from(name);
        let id = match PedKey::read(&pending) {
            Ok(Some(k)) => k.info.secret_id,
            _ => {
                eprintln!(
                    "PED: {} is not a readable key file; left alone",
                    pending.display()
                );
                continue;
            }
        };
        match api.secret_in_use(&id) {
            Ok(true) => match put_in_place(&pending, &path) {
                Ok(()) => eprintln!(
                    "PED: finished an interrupted imprint: {} is in place",
                    path.display()
                ),
                Err(e) => eprintln!("PED: could not finish an interrupted imprint: {e}"),
            },
            Ok(false) => {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ferrohsm_core::ped_stage::STAGE_LIFETIME);
                if old && std::fs::remove_file(&pending).is_ok() {
                    eprintln!(
                        "PED: removed {}, left by an imprint the HSM never adopted",
                        pending.display()
                    );
                }
            }
            Err(_) => {}
        }
    }
}

fn imprint(
    f: &ImprintFlags,
    common: &ImprintCommon,
    ped_dir: &Path,
    prefix: &str,
    password_mode: bool,
    what: &str,
) -> Result<NewSecretOwned, HsmError> {
    if password_mode {
        let src = f.password.clone().unwrap_or_else(|| "prompt".into());
        return Ok(NewSecretOwned::Password(input::read_new(
            &src,
            Kind::Password,
            &format!("new password of the {what}"),
        )?));
    }
    if f.password.is_some() {
        return Err(HsmError::InvalidInput(
            "this HSM is PED-authenticated; imprint PED keys, not a password".into(),
        ));
    }
    let tty = input::interactive();
    let reuse = f.reuse
        || (tty
            && f.key.is_empty()
            && f.m.is_none()
            && input::confirm(&format!("PED: reuse an existing {what} key?")));
    let (m, n) = if reuse {
        (1, 1)
    } else {
        let m = match f.m {
            Some(m) => m,
            None if tty => input::ask_number(
                &format!("PED: M (keys needed to rebuild the {what})"),
                1,
                1,
                16,
            )?,
            None => 1,
        };
        let n = match f.n {
            Some(n) => n,
            None if tty && f.m.is_none() => input::ask_number("PED: N (keys to make)", m, m, 16)?,
            None => m.max(1),
        };
        (m, n)
    };
    let keys = if !f.key.is_empty() {
        f.key.clone()
    } else if reuse {
        default_keys(ped_dir, prefix)
    } else {
        (1..=n)
            .map(|i| ped_dir.join(format!("{prefix}-{i}.pedkey")))
            .collect()
    };
    let pin = match (&f.pin, f.no_pin) {
        // A new PIN, or the PIN of keys reused (a typo there would become the PIN the new
        // HSM accepts): typed twice at a terminal.
        (Some(src), _) => Some(input::read_new(
            src,
            Kind::PedPin,
            &format!("PED PIN for the {what}"),
        )?),
        (None, true) => None,
        (None, false) if tty && !reuse => {
            if input::confirm(&format!("PED: protect the {what} with a PED PIN?")) {
                Some(input::prompt_new(Kind::PedPin, "new PED PIN")?)
            } else {
                None
            }
        }
        (None, false) if tty && reuse => {
            let needs = keys
                .first()
                .and_then(|k| PedKey::read(k).ok().flatten())
                .is_some_and(|k| k.info.pin_protected);
            if needs {
                Some(input::prompt_new(
                    Kind::PedPin,
                    "PED PIN of the reused key",
                )?)
            } else {
                None
            }
        }
        (None, false) => None,
    };
    let ped = LocalPed::new(PedAnswers {
        keys,
        reuse,
        m,
        n,
        pin,
        overwrite: common.overwrite,
        duplicates: common.duplicates,
    });
    let ped = if tty && !common.overwrite {
        ped.with_confirm(Box::new(|path, info| {
            input::confirm(&format!(
                "PED: {} holds {}. Overwrite?",
                path.display(),
                info.summary()
            ))
        }))
    } else {
        ped
    };
    Ok(NewSecretOwned::Ped(ped))
}
