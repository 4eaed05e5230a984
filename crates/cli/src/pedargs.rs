//! Command-line flags for the PED dialogue, and how they become a [`LocalPed`].

use std::path::{Path, PathBuf};

use clap::Args;
use ferrohsm_core::api::{ImprintReport, LoginCredential, NewCredential, PedImprint};
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::pedkey::PedKey;
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
    /// The new secret as the HSM API takes it. For PED keys, the target files are checked
    /// first (an occupied key is overwritten only with --overwrite or a yes), and a reused
    /// secret's key files are read; the HSM returns the new keys, [`write_imprints`] writes
    /// them.
    pub fn into_credential(self) -> Result<NewCredential, HsmError> {
        match self {
            NewSecretOwned::Password(p) => Ok(NewCredential::Password(p)),
            NewSecretOwned::Ped(mut ped) => {
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
                Ok(NewCredential::Ped(PedImprint {
                    keys: a.keys.iter().map(name).collect(),
                    reuse,
                    m: a.m,
                    n: a.n,
                    pin: a.pin,
                    duplicates: a.duplicates,
                }))
            }
        }
    }
}

/// Writes the key files the HSM imprinted (each file once, atomically, owner-only) and says
/// what was written or reused.
pub fn write_imprints(reports: &[ImprintReport]) -> Result<(), HsmError> {
    for r in reports {
        if r.reused {
            eprintln!(
                "PED: reused existing secret {} (from HSM {})",
                r.secret_id.get(..8).unwrap_or(&r.secret_id),
                r.origin_serial
            );
        }
        for (name, bytes) in &r.files {
            let path = Path::new(name);
            PedKey::from_bytes(path, bytes)?.write(path)?;
            eprintln!("PED: wrote {name}");
        }
    }
    Ok(())
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
