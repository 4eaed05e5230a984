//! `ferrohsm partition clone`: carries a clone's five messages between the source partition's
//! HSM and the target's (the same HSM, or another server), with a progress line.

use std::path::Path;

use ferrohsm_core::api::{CloneSelect, HsmApi};
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

/// The target's HSM: another server, or the source's own.
fn target<'a>(
    api: &'a mut dyn HsmApi,
    other: &'a mut Option<Box<dyn HsmApi>>,
) -> &'a mut dyn HsmApi {
    match other {
        Some(o) => o.as_mut(),
        None => api,
    }
}

/// Runs the clone; prints what it did.
pub fn run(api: &mut dyn HsmApi, ped_dir: &Path, a: CloneArgs<'_>) -> Result<(), HsmError> {
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
    let mut other: Option<Box<dyn HsmApi>> = match a.to_server {
        Some(s) => Some(Box::new(ferrohsm_client::Remote::connect_to(
            &s.to_string_lossy(),
            crate::front::tls(),
        )?)),
        None => None,
    };
    let source = crate::front::login(api, ped_dir, a.login, Role::CryptoOfficer, Some(a.from))?;
    let to_login = a.to_login.as_login();
    let sink = crate::front::login(
        target(api, &mut other),
        ped_dir,
        &to_login,
        Role::CryptoOfficer,
        Some(a.to),
    )?;
    let hello_t = target(api, &mut other).clone_accept(sink)?;
    let hello_s = api.clone_offer(source, &hello_t, &select)?;
    let proof = target(api, &mut other).clone_confirm(sink, &hello_s)?;
    let total = hello_s.objects();
    eprintln!(
        "clone: {} -> {}/{}: both in one cloning domain; {total} object(s) to move",
        hello_s.partition, hello_t.serial, hello_t.partition
    );
    let mut from = 0u64;
    loop {
        let batch = api.clone_export(source, &hello_s.session, &proof, from, a.batch)?;
        from += batch.sealed.len() as u64;
        let progress = target(api, &mut other).clone_import(sink, &hello_s.session, &batch)?;
        eprint!("\rclone: {}/{} received", progress.received, progress.total);
        if let Some((added, skipped)) = progress.committed {
            eprintln!();
            println!(
                "cloned {added} object(s) from {} into {} on HSM {}{}",
                a.from,
                a.to,
                hello_t.serial,
                if skipped > 0 {
                    format!("; {skipped} already there (same unique id) left as they were")
                } else {
                    String::new()
                }
            );
            return Ok(());
        }
        if batch.sealed.is_empty() {
            eprintln!();
            return Err(HsmError::State(
                "the source sent an empty batch before the clone was complete; nothing was written"
                    .into(),
            ));
        }
    }
}
