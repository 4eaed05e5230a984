//! `ferrohsm ha`: an HA group as the PKCS#11 module's configuration describes it, seen from
//! outside the application: each member's state and lag, and bringing members in sync now.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use ferrohsm_client::ha::{Group, GroupConfig, SyncReport};
use ferrohsm_core::api::{HsmApi, LoginCredential};
use ferrohsm_core::{HsmError, Role};

use crate::exit;
use crate::input::{self, Kind};

type R<T> = Result<T, HsmError>;

/// `ferrohsm ha …`.
#[derive(Subcommand, Debug)]
pub enum HaCmd {
    /// Each member of the group: up or down (and why), how many objects it holds, and what
    /// it still lacks (its lag). Lists every member with the Crypto Officer's login.
    #[command(
        after_help = "Example:\n  ferrohsm ha show --config /etc/ferrohsm/pkcs11.conf --password env:CO_PW"
    )]
    Show(HaArgs),
    /// Brings every reachable member up to date now: each gets what another holds and it
    /// lacks (cloned under the cloning domain). The module does this by itself in the
    /// background; this is for a member that was away while no application ran.
    #[command(
        after_help = "Example:\n  ferrohsm ha sync --config /etc/ferrohsm/pkcs11.conf --password env:CO_PW"
    )]
    Sync(HaArgs),
}

/// The group and the Crypto Officer's login.
#[derive(clap::Args, Debug)]
pub struct HaArgs {
    /// The PKCS#11 module's configuration naming the group (default: $FERROHSM_PKCS11_CONF).
    /// Example: --config /etc/ferrohsm/pkcs11.conf
    #[arg(long)]
    config: Option<PathBuf>,
    /// The Crypto Officer's password on the members: env:NAME, file:PATH, - or prompt.
    #[arg(long, value_name = "SRC")]
    password: Option<String>,
    /// Or, on PED-authenticated members, the activated Crypto Officer's challenge secret.
    #[arg(long, value_name = "SRC", conflicts_with = "password")]
    challenge: Option<String>,
}

/// Runs `ferrohsm ha`; the exit code is 0 when every member is up and in sync, else
/// [`exit::STATE`] (for `show`), so that monitoring can act on it.
pub fn run(c: HaCmd, json: bool) -> R<u8> {
    let (args, sync) = match c {
        HaCmd::Show(a) => (a, false),
        HaCmd::Sync(a) => (a, true),
    };
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("FERROHSM_PKCS11_CONF").map(PathBuf::from))
        .ok_or_else(|| {
            HsmError::InvalidInput(
                "name the module's configuration with --config (or FERROHSM_PKCS11_CONF)".into(),
            )
        })?;
    let config = GroupConfig::from_file(&path).map_err(HsmError::InvalidInput)?;
    let label = config.label.clone();
    let group = Group::without_thread(config, Arc::new(|m: &str| eprintln!("{m}")));
    let mut front = group.front();
    let secret = match (&args.challenge, &args.password) {
        (Some(src), _) => input::read(
            src,
            Kind::Password,
            "challenge secret of the Crypto Officer",
        )?,
        (None, src) => input::read(
            src.as_deref().unwrap_or("prompt"),
            Kind::Password,
            "password of the Crypto Officer",
        )?,
    };
    let login = front.login(
        Role::CryptoOfficer,
        Some(&label),
        LoginCredential::Secret(secret),
    )?;
    let report = if sync {
        front.sync_now(login)
    } else {
        front.report(login)
    };
    let _ = front.logout(login);
    let report = report?;
    print(&report, json);
    let healthy = report
        .members
        .iter()
        .all(|m| m.state == "up" && m.missing.is_empty() && m.destroyed_elsewhere.is_empty());
    Ok(if healthy { exit::OK } else { exit::STATE })
}

fn print(r: &SyncReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        );
        return;
    }
    println!(
        "HA group {}: {} object(s) on its members",
        r.group, r.objects
    );
    for m in &r.members {
        let objects = m.objects.map_or_else(|| "-".to_string(), |n| n.to_string());
        println!(
            "  {:<48} {:<4}  objects {:>6}  lag {:>6}",
            m.name,
            m.state,
            objects,
            m.missing.len()
        );
        if let Some(e) = &m.error {
            println!("      why: {e}");
        }
        for (uid, label) in m.missing.iter().take(5) {
            println!("      to sync: {uid} ({label})");
        }
        if m.missing.len() > 5 {
            println!("      … and {} more", m.missing.len() - 5);
        }
        for (uid, label) in m.destroyed_elsewhere.iter().take(5) {
            println!("      to destroy (destroyed on another member): {uid} ({label})");
        }
        if m.destroyed_elsewhere.len() > 5 {
            println!("      … and {} more", m.destroyed_elsewhere.len() - 5);
        }
    }
}
