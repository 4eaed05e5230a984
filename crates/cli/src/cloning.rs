//! `ferrohsm partition clone`: runs a clone ([`ferrohsm_core::api::clone_between`]) between
//! the source partition's HSM and the target's (another server, or the same HSM through a
//! second front end), with a progress bar.

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
    /// Objects the target holds already (same unique id) are replaced, not left.
    pub replace: bool,
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
    let mut target: Box<dyn HsmApi> = match a.to_server {
        Some(s) => Box::new(connect(s)?),
        None => open_same()?,
    };
    transfer(api, target.as_mut(), ped_dir, a)
}

/// A server named on the command line (`tls://host:port` with this command's TLS settings,
/// or a socket).
pub fn connect(server: &Path) -> Result<ferrohsm_client::Remote, HsmError> {
    ferrohsm_client::Remote::connect_to(&server.to_string_lossy(), crate::front::tls())
}

/// The clone itself, from `api` (its Crypto Officer logs in with `a.login`) to `target`
/// (with `a.to_login`).
pub fn transfer(
    api: &mut dyn HsmApi,
    target: &mut dyn HsmApi,
    ped_dir: &Path,
    a: CloneArgs<'_>,
) -> Result<(), HsmError> {
    if !(1..=ferrohsm_core::hsm::MAX_CLONE_BATCH).contains(&a.batch) {
        return Err(HsmError::InvalidInput(format!(
            "--batch is 1 to {}",
            ferrohsm_core::hsm::MAX_CLONE_BATCH
        )));
    }
    let select = CloneSelect {
        replace: a.replace,
        ..select(a.labels, &a.ids, &a.classes)?
    };
    let source = crate::front::login(api, ped_dir, a.login, Role::CryptoOfficer, Some(a.from))?;
    let sink = crate::front::login(
        target,
        ped_dir,
        &a.to_login.as_login(),
        Role::CryptoOfficer,
        Some(a.to),
    )?;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let done = clone_between(api, source, target, sink, &select, a.batch, |s, t, p| {
        let bar = bar.get_or_insert_with(|| {
            eprintln!(
                "clone: {}/{} -> {}/{}: one cloning domain; {} object(s) to move",
                s.serial, s.partition, t.serial, t.partition, p.total
            );
            progress_bar(p.total, "received")
        });
        bar.set_position(p.received);
        if bar.is_hidden() {
            // Not a terminal: a line per batch, for logs.
            eprintln!("clone: {}/{} received", p.received, p.total);
        }
    });
    if let Some(bar) = bar {
        // Left on screen when complete; cleared when the clone failed (nothing was written).
        if done.is_ok() {
            bar.finish();
        } else {
            bar.abandon();
        }
    }
    let done = done?;
    println!(
        "cloned {} object(s) from {} into {} on HSM {}{}{}",
        done.added,
        a.from,
        a.to,
        done.target.serial,
        if done.replaced > 0 {
            format!(
                "; {} already there (same unique id) replaced",
                done.replaced
            )
        } else {
            String::new()
        },
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

/// A progress bar on stderr for `total` objects (drawn only on a terminal, so scripts and
/// logs see the summary lines alone).
pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"
    )) {
        bar.set_style(style);
    }
    bar
}

/// What `--label`, `--id HEX` and `--class` name (everything if none).
pub fn select(
    labels: Vec<String>,
    ids: &[String],
    classes: &[String],
) -> Result<CloneSelect, HsmError> {
    Ok(CloneSelect {
        labels,
        ids: ids
            .iter()
            .map(|h| {
                hex::decode(h).map_err(|_| HsmError::InvalidInput(format!("--id {h:?} is not hex")))
            })
            .collect::<Result<_, _>>()?,
        classes: classes
            .iter()
            .map(|c| ObjectClass::from_name(c))
            .collect::<Result<_, _>>()?,
        unique_ids: vec![],
        replace: false,
    })
}

/// `partition backup`: writes the file (owner-only) and says what it holds.
pub fn backup(
    api: &mut dyn HsmApi,
    ped_dir: &Path,
    partition: &str,
    out: &Path,
    select: &CloneSelect,
    login: &Login,
) -> Result<(), HsmError> {
    let s = crate::front::login(api, ped_dir, login, Role::CryptoOfficer, Some(partition))?;
    let file = api.backup_export(s, select)?;
    let objects = serde_json::from_slice::<serde_json::Value>(&file)
        .ok()
        .and_then(|v| v["objects"].as_array().map(Vec::len))
        .unwrap_or(0);
    crate::output::write_new(out, &file, 0o600)?;
    println!(
        "backed up {objects} object(s) of {partition} to {} (sealed under its cloning domain; `ferrohsm backup verify` checks it)",
        out.display()
    );
    Ok(())
}

/// `partition restore`.
pub fn restore(
    api: &mut dyn HsmApi,
    ped_dir: &Path,
    partition: &str,
    input: &Path,
    replace: bool,
    login: &Login,
) -> Result<(), HsmError> {
    let file = read_backup(input)?;
    let s = crate::front::login(api, ped_dir, login, Role::CryptoOfficer, Some(partition))?;
    let (added, replaced, skipped) = api.backup_restore(s, &file, replace)?;
    println!(
        "restored {} into {partition}: {added} added, {replaced} replaced, {skipped} already there and left as they were",
        input.display()
    );
    Ok(())
}

/// `backup verify`.
pub fn verify(
    api: &mut dyn HsmApi,
    ped_dir: &Path,
    partition: &str,
    input: &Path,
    login: &Login,
) -> Result<(), HsmError> {
    let file = read_backup(input)?;
    let s = crate::front::login(api, ped_dir, login, Role::CryptoOfficer, Some(partition))?;
    let sum = api.backup_verify(s, &file)?;
    let classes: Vec<String> = sum
        .classes
        .iter()
        .map(|(c, n)| format!("{n} {c}"))
        .collect();
    println!(
        "{}: a good backup of {}/{} made {} ({}), in the cloning domain of {partition}",
        input.display(),
        sum.serial,
        sum.partition,
        sum.created,
        if classes.is_empty() {
            "no objects".to_string()
        } else {
            classes.join(", ")
        }
    );
    Ok(())
}

fn read_backup(path: &Path) -> Result<Vec<u8>, HsmError> {
    let len = std::fs::metadata(path)
        .map_err(|e| HsmError::io(path, e))?
        .len();
    if len > ferrohsm_core::hsm::MAX_BACKUP_BYTES as u64 {
        return Err(HsmError::InvalidInput(format!(
            "{} is larger than a backup can be ({} bytes)",
            path.display(),
            ferrohsm_core::hsm::MAX_BACKUP_BYTES
        )));
    }
    std::fs::read(path).map_err(|e| HsmError::io(path, e))
}
