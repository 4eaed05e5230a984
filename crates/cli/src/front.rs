//! Which HSM a command talks to, through the HSM API: the server named by `--server`, else
//! the server that holds the data directory (its lock file says where it listens), else the
//! engine on the data directory itself (embedded: no boundary, for a directory no server
//! holds).

use std::path::Path;

use ferrohsm_client::Remote;
use ferrohsm_core::api::{Embedded, HsmApi, LoginCredential, LoginId};
use ferrohsm_core::{dir_lock, HsmError, Role};

use crate::commands::key_prefix;
use crate::pedargs::{Login, LoginCred};

type R<T> = Result<T, HsmError>;

/// Opens the API for a command.
pub fn open(dir: &Path, server: Option<&Path>) -> R<Box<dyn HsmApi>> {
    if let Some(socket) = server {
        return Ok(Box::new(Remote::connect(socket)?));
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
    Ok(Box::new(Embedded::open(dir)?))
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
    let summary = api.summary()?;
    let password = match summary.auth_mode.as_deref() {
        Some("password") => true,
        Some(_) => false,
        None => {
            return Err(HsmError::State(
                "the HSM is not initialised; run `ferrohsm hsm init`".into(),
            ))
        }
    };
    let prefix = key_prefix(&summary.serial, partition, role.short());
    let who = match partition {
        Some(p) => format!("{role} of {p}"),
        None => role.to_string(),
    };
    let credential = match l.credential(ped_dir, &prefix, password, &who)? {
        LoginCred::Secret(pin) => LoginCredential::Secret(pin),
        LoginCred::Ped(ped) => {
            let answers = ped.answers();
            LoginCredential::ped_key_files(&answers.keys, answers.pin.clone())?
        }
    };
    api.login(role, partition, credential)
}
