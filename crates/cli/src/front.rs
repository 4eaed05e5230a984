//! Which HSM a command talks to, through the HSM API: the server named by `--server`, else
//! the server that holds the data directory (its lock file says where it listens), else the
//! engine on the data directory itself (embedded: no boundary, for a directory no server
//! holds).

use std::path::Path;

use ferrohsm_client::Remote;
use ferrohsm_core::api::{Embedded, HsmApi, LoginId};
use ferrohsm_core::{dir_lock, HsmError, Role};

use crate::commands::key_prefix;
use crate::pedargs::Login;

type R<T> = Result<T, HsmError>;

/// Opens the API for a command.
pub fn open(dir: &Path, server: Option<&Path>) -> R<Box<dyn HsmApi>> {
    open_with(dir, server, false)
}

/// [`open`], making a new store in `dir` when the command runs on the directory and there is
/// none yet (`hsm init`, `audit init`).
pub fn open_or_create(dir: &Path, server: Option<&Path>) -> R<Box<dyn HsmApi>> {
    open_with(dir, server, true)
}

/// The TLS settings given on the command line, for `--server tls://…`.
static TLS: std::sync::OnceLock<ferrohsm_client::TlsClient> = std::sync::OnceLock::new();

/// Sets the TLS settings of this command (once).
pub fn set_tls(t: ferrohsm_client::TlsClient) {
    let _ = TLS.set(t);
}

/// This command's TLS settings, if it was given them.
pub fn tls() -> Option<&'static ferrohsm_client::TlsClient> {
    TLS.get()
}

fn open_with(dir: &Path, server: Option<&Path>, create: bool) -> R<Box<dyn HsmApi>> {
    if let Some(server) = server {
        let name = server.to_string_lossy();
        return Ok(Box::new(Remote::connect_to(&name, TLS.get())?));
    }
    if let Some((pid, socket)) = dir_lock::served_by(dir) {
        let socket = socket.ok_or_else(|| {
            HsmError::InUse(format!(
                "{} is held by ferrohsm server process {pid}, which has not said where it \
                 listens yet; try again, or name its socket with --server",
                dir.display()
            ))
        })?;
        return Ok(Box::new(Remote::connect(&socket)?));
    }
    if create {
        return Ok(Box::new(Embedded::with(
            ferrohsm_core::Hsm::open_or_create(dir)?,
            ferrohsm_core::api::Logins::new(),
        )));
    }
    Ok(Box::new(Embedded::open(dir)?))
}

/// Whether the HSM authenticates with passwords (an error when it is not initialised).
pub fn password_mode(api: &mut dyn HsmApi) -> R<bool> {
    match api.summary()?.auth_mode.as_deref() {
        Some("password") => Ok(true),
        Some(_) => Ok(false),
        None => Err(HsmError::State(
            "the HSM is not initialised; run `ferrohsm hsm init`".into(),
        )),
    }
}

/// Logs `role` in with the command's login flags: PED key files are read here and presented
/// to the HSM, which checks them.
pub fn login(
    api: &mut dyn HsmApi,
    ped_dir: &Path,
    l: &Login,
    role: Role,
    partition: Option<&str>,
) -> R<LoginId> {
    // The Auditor authenticates as it was imprinted, whatever state the HSM is in (it must
    // read the log of a zeroized or never-initialised HSM too).
    let password = match role {
        Role::Auditor => match api.info()?.auditor {
            Some(a) => a.auth == "password",
            None => {
                return Err(HsmError::State(
                    "no Auditor is imprinted; run `ferrohsm audit init`".into(),
                ))
            }
        },
        _ => password_mode(api)?,
    };
    if !password {
        // Keys an interrupted imprint left under temporary names are settled first, so that
        // the default key files are the ones the HSM accepts.
        crate::pedargs::settle_leftovers(api, ped_dir);
    }
    let prefix = key_prefix(&api.summary()?.serial, partition, role.short());
    let credential = l.credential(ped_dir, &prefix, password, &who(role, partition))?;
    api.login(role, partition, credential)
}

/// How a role is named in prompts and messages.
pub fn who(role: Role, partition: Option<&str>) -> String {
    match partition {
        Some(p) => format!("{role} of {p}"),
        None => role.to_string(),
    }
}
