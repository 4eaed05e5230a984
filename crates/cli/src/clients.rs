//! `ferrohsm client …`: the hosts a network HSM serves. The HSM SO registers each by its
//! certificate key's fingerprint, assigns it partitions and revokes it; `keygen` makes a key
//! and a self-signed certificate for a host that has none.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ferrohsm_core::api::ClientInfo;
use ferrohsm_core::{x509, HsmError, Role};

use crate::pedargs::Login;
use crate::{exit, output};

type R<T> = Result<T, HsmError>;

/// `ferrohsm client` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Register a host by its certificate (or its key's fingerprint) (HSM SO login).
    #[command(
        after_help = "Example:\n  ferrohsm client register --name app1 --cert app1.crt --password prompt"
    )]
    Register {
        /// The host's name.
        #[arg(long)]
        name: String,
        /// Its certificate (PEM or DER); the fingerprint of its key is registered.
        #[arg(
            long,
            conflicts_with = "fingerprint",
            required_unless_present = "fingerprint"
        )]
        cert: Option<PathBuf>,
        /// Or the SHA-256 fingerprint of its certificate's SubjectPublicKeyInfo (hex).
        #[arg(long)]
        fingerprint: Option<String>,
        #[command(flatten)]
        login: Login,
    },
    /// List registered hosts, revoked ones included (HSM SO login).
    #[command(after_help = "Example:\n  ferrohsm client list --password prompt")]
    List {
        #[command(flatten)]
        login: Login,
    },
    /// Let a host use a partition (HSM SO login).
    #[command(
        after_help = "Example:\n  ferrohsm client assign --client app1 --partition payments --password prompt"
    )]
    Assign(Assignment),
    /// Stop a host using a partition (HSM SO login).
    #[command(
        after_help = "Example:\n  ferrohsm client unassign --client app1 --partition payments --password prompt"
    )]
    Unassign(Assignment),
    /// Revoke a host: refused from then on (HSM SO login).
    #[command(after_help = "Example:\n  ferrohsm client revoke --client app1 --password prompt")]
    Revoke {
        /// The host's name or fingerprint.
        #[arg(long)]
        client: String,
        #[command(flatten)]
        login: Login,
    },
    /// Print the fingerprint of a certificate's key (what `register` records).
    #[command(after_help = "Example:\n  ferrohsm client fingerprint --cert app1.crt")]
    Fingerprint {
        /// The certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
    },
    /// Make a key (P-256) and a self-signed certificate for a host that has none.
    #[command(
        after_help = "Example:\n  ferrohsm client keygen --name app1 --key app1.key --cert app1.crt"
    )]
    Keygen {
        /// The host's name (the certificate's subject).
        #[arg(long)]
        name: String,
        /// Where to write the private key (PEM, owner-only; an existing file is refused).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
    },
}

/// A host and a partition.
#[derive(Args, Debug)]
pub struct Assignment {
    /// The host's name or fingerprint.
    #[arg(long)]
    client: String,
    /// The partition's label.
    #[arg(long)]
    partition: String,
    #[command(flatten)]
    login: Login,
}

/// The fingerprint of the key in a certificate file.
fn fingerprint_of(cert: &Path) -> R<String> {
    let bytes = std::fs::read(cert).map_err(|e| HsmError::io(cert, e))?;
    let der = x509::certificate_der(&bytes)?;
    Ok(x509::spki_fingerprint(x509::spki_of(&der)?))
}

fn show(c: &ClientInfo) {
    println!(
        "{:<20} {}  {}{}",
        c.name,
        c.fingerprint,
        if c.partitions.is_empty() {
            "(no partitions)".to_string()
        } else {
            c.partitions.join(",")
        },
        match &c.revoked {
            Some(t) => format!("  REVOKED {t}"),
            None => String::new(),
        }
    );
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> R<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| HsmError::io(path, e))?;
    f.write_all(data).map_err(|e| HsmError::io(path, e))
}

/// Runs a client command.
pub fn run(c: ClientCmd, dir: &Path, server: Option<&Path>, ped_dir: &Path, json: bool) -> R<u8> {
    let keygen_err = |e: rcgen::Error| HsmError::Crypto(format!("making the certificate: {e}"));
    match c {
        ClientCmd::Fingerprint { cert } => {
            println!("{}", fingerprint_of(&cert)?);
            return Ok(exit::OK);
        }
        ClientCmd::Keygen { name, key, cert } => {
            let pair =
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(keygen_err)?;
            let made = rcgen::CertificateParams::new(vec![name.clone()])
                .and_then(|p| p.self_signed(&pair))
                .map_err(keygen_err)?;
            let pem = zeroize::Zeroizing::new(pair.serialize_pem());
            write_new(&key, pem.as_bytes(), 0o600)?;
            write_new(&cert, made.pem().as_bytes(), 0o644)?;
            println!(
                "key {} and certificate {} for {name}; fingerprint {}",
                key.display(),
                cert.display(),
                fingerprint_of(&cert)?
            );
            return Ok(exit::OK);
        }
        _ => {}
    }
    let mut boxed = crate::front::open(dir, server)?;
    let api = boxed.as_mut();
    let so = |api: &mut dyn ferrohsm_core::api::HsmApi, l: &Login| {
        crate::front::login(api, ped_dir, l, Role::HsmSo, None)
    };
    match c {
        ClientCmd::Register {
            name,
            cert,
            fingerprint,
            login,
        } => {
            let fp = match (cert, fingerprint) {
                (Some(c), _) => fingerprint_of(&c)?,
                (None, Some(f)) => f,
                (None, None) => {
                    return Err(HsmError::InvalidInput(
                        "name the host's certificate (--cert) or fingerprint".into(),
                    ))
                }
            };
            let s = so(api, &login)?;
            let c = api.register_client(s, &name, &fp)?;
            println!(
                "client {} registered (key {}); next: `ferrohsm client assign --client {} --partition …`",
                c.name, c.fingerprint, c.name
            );
        }
        ClientCmd::List { login } => {
            let s = so(api, &login)?;
            let all = api.clients(s)?;
            if json {
                output::json(&all);
            } else if all.is_empty() {
                println!("no clients registered");
            } else {
                all.iter().for_each(show);
            }
        }
        ClientCmd::Assign(a) => {
            let s = so(api, &a.login)?;
            show(&api.assign_client(s, &a.client, &a.partition, true)?);
        }
        ClientCmd::Unassign(a) => {
            let s = so(api, &a.login)?;
            show(&api.assign_client(s, &a.client, &a.partition, false)?);
        }
        ClientCmd::Revoke { client, login } => {
            let s = so(api, &login)?;
            let c = api.revoke_client(s, &client)?;
            println!("client {} revoked", c.name);
        }
        ClientCmd::Fingerprint { .. } | ClientCmd::Keygen { .. } => {}
    }
    Ok(exit::OK)
}
