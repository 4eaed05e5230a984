//! `ferrohsm partition clone`: runs a clone ([`ferrohsm_core::api::clone_between`]) between
//! the source partition's HSM and the target's (another server, or the same HSM through a
//! second front end), with a progress line.

use std::path::Path;

use ferrohsm_core::api::{clone_between, CloneSelect, HsmApi};
use ferrohsm_core::object::ObjectClass;
use ferrohsm_core::{HsmError, Role};

use crate::pedargs::{Login, TargetLogin};

/// What `partition clone` was asked.
pub struct CloneArgs<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub to_server: Option<&'a Path>,
    pub labels: Vec<String>,
    pub ids: Vec<String>,
    pub classes: Vec<String>,
    pub batch: u32,
    pub login: &'a Login,
    pub to_login: &'a TargetLogin,
}

/// Runs the clone; prints what it did. `open_same` opens another front end on the source's HSM
/// (for a target partition on the same HSM).
pub fn run(
    api: &mut dyn HsmApi,
    open_same: impl FnOnce() -> Result<Box<dyn HsmApi>, HsmError>,
    ped_dir: &Path,
    a: CloneArgs<'_>,
) -> Result<(), HsmError> {
    if a.to_server.is_none() && a.from == a.to {
        return Err(HsmError::InvalidInput(
            "--from and --to name the same partition of the same HSM".into(),
        ));
    }
    if !(1..=ferrohsm_core::hsm::MAX_CLONE_BATCH).contains(&a.batch) {
        return Err(HsmError::InvalidInput(format!(
            "--batch is 1 to {}",
            ferrohsm_core::hsm::MAX_CLONE_BATCH
        )));
    }
    let select = CloneSelect {
        labels: a.labels,
        ids: a
            .ids
            .iter()
            .map(|h| {
                hex::decode(h).map_err(|_| HsmError::InvalidInput(format!("--id {h:?} is not hex")))
            })
            .collect::<Result<_, _>>()?,
        classes: a
            .classes
            .iter()
            .map(|c| ObjectClass::from_name(c))
            .collect::<Result<_, _>>()?,
    };
    let mut target: Box<dyn HsmApi> = match a.to_server {
        Some(s) => Box::new(ferrohsm_client::Remote::connect_to(
            &s.to_string_lossy(),
            crate::front::tls(),
        )?),
        None => open_same()?,
    };
    let source = crate::front::login(api, ped_dir, a.login, Role::CryptoOfficer, Some(a.from))?;
    let sink = crate::front::login(
        target.as_mut(),
        ped_dir,
        &a.to_login.as_login(),
        Role::CryptoOfficer,
        Some(a.to),
    )?;
    let mut said = false;
    let done = clone_between(
        api,
        source,
        target.as_mut(),
        sink,
        &select,
        a.batch,
        |s, t, p| {
            if !said {
                eprintln!(
                    "clone: {}/{} -> {}/{}: one cloning domain; {} object(s) to move",
                    s.serial, s.partition, t.serial, t.partition, p.total
                );
                said = true;
            }
            eprint!("\rclone: {}/{} received", p.received, p.total);
        },
    );
    if said {
        eprintln!();
    }
    let done = done?;
    println!(
        "cloned {} object(s) from {} into {} on HSM {}{}",
        done.added,
        a.from,
        a.to,
        done.target.serial,
        if done.skipped > 0 {
            format!(
                "; {} already there (same unique id) left as they were",
                done.skipped
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
