//! `ferrohsm client …`: the hosts a network HSM serves. The HSM SO registers each by its
//! certificate key's fingerprint (or invites it with a one-time code it redeems with
//! `enroll`), assigns it partitions and revokes it; `keygen` makes a key and a self-signed
//! certificate for a host that has none.

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
    /// Register a host by its certificate (or its key's fingerprint), or a local user or
    /// group of the server's machine by uid or gid (HSM SO login). A registered client
    /// reaches only the partitions assigned to it.
    #[command(
        after_help = "Examples:\n  ferrohsm client register --name app1 --cert app1.crt --password prompt\n  ferrohsm client register --name batch --uid 1001 --password prompt"
    )]
    Register {
        /// The client's name.
        #[arg(long)]
        name: String,
        /// Its certificate (PEM or DER); the fingerprint of its key is registered.
        #[arg(long, group = "who")]
        cert: Option<PathBuf>,
        /// Or the SHA-256 fingerprint of its certificate's SubjectPublicKeyInfo (hex).
        #[arg(long, group = "who")]
        fingerprint: Option<String>,
        /// Or a local user (Unix socket): its connections are admitted and scoped.
        #[arg(long, group = "who")]
        uid: Option<u32>,
        /// Or a local group (its members' primary group).
        #[arg(long, group = "who")]
        gid: Option<u32>,
        #[command(flatten)]
        login: Login,
    },
    /// Give a host a new certificate key (HSM SO login): its name and partitions stay; the
    /// old key is refused from then on. The server keeps running.
    #[command(
        after_help = "Example:\n  ferrohsm client rekey --client app1 --cert app1-2027.crt --password prompt"
    )]
    Rekey {
        /// The host's name or current fingerprint.
        #[arg(long)]
        client: String,
        /// Its new certificate (PEM or DER).
        #[arg(
            long,
            conflicts_with = "fingerprint",
            required_unless_present = "fingerprint"
        )]
        cert: Option<PathBuf>,
        /// Or the new key's fingerprint (hex).
        #[arg(long)]
        fingerprint: Option<String>,
        #[command(flatten)]
        login: Login,
    },
    /// Issue a one-time enrollment code with which a host registers its own certificate
    /// (HSM SO login). The code is shown once; it works once, until it expires.
    #[command(
        after_help = "Example:\n  ferrohsm client invite --name app2 --partition payments --valid-for 10m --password prompt\n\nOn the host, within that time:\n  ferrohsm --server tls://hsm1:1792 --tls-cert app2.crt --tls-key app2.key --server-fingerprint HEX \\\n      client enroll --code prompt"
    )]
    Invite {
        /// The name the host will be registered under.
        #[arg(long)]
        name: String,
        /// A partition to assign it (repeatable).
        #[arg(long = "partition", value_name = "LABEL")]
        partitions: Vec<String>,
        /// How long the code works: seconds, or with a unit (90s, 10m); at most 20m.
        #[arg(long, default_value = "20m", value_parser = parse_validity)]
        valid_for: u64,
        #[command(flatten)]
        login: Login,
    },
    /// Register this host's certificate (--tls-cert) with an enrollment code from the HSM
    /// SO, over TLS (--server tls://…, --tls-key, --server-fingerprint).
    #[command(
        after_help = "Example:\n  ferrohsm --server tls://hsm1:1792 --tls-cert app2.crt --tls-key app2.key --server-fingerprint HEX \\\n      client enroll --code prompt"
    )]
    Enroll {
        /// The code: env:NAME, file:PATH, - (standard input) or prompt.
        #[arg(long, default_value = "prompt")]
        code: String,
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

/// The fingerprint named by a certificate file or given as hex.
fn cert_or_fingerprint(cert: Option<PathBuf>, fingerprint: Option<String>) -> R<String> {
    match (cert, fingerprint) {
        (Some(c), _) => fingerprint_of(&c),
        (None, Some(f)) => Ok(f),
        (None, None) => Err(HsmError::InvalidInput(
            "name the host's certificate (--cert) or fingerprint".into(),
        )),
    }
}

/// A validity: `90`, `90s`, `10m`.
fn parse_validity(s: &str) -> Result<u64, String> {
    let (n, unit) = match s.strip_suffix('m') {
        Some(n) => (n, 60),
        None => (s.strip_suffix('s').unwrap_or(s), 1),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s or 10m"))?;
    let secs = n.saturating_mul(unit);
    if !(1..=ferrohsm_core::hsm::MAX_ENROLLMENT_SECONDS).contains(&secs) {
        return Err(format!("{s}: a code is valid for 1 second to 20 minutes"));
    }
    Ok(secs)
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
            crate::output::write_new(&key, pem.as_bytes(), 0o600)?;
            crate::output::write_new(&cert, made.pem().as_bytes(), 0o644)?;
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
    if let ClientCmd::Enroll { code } = &c {
        let tls = match (server, crate::front::tls()) {
            (Some(s), Some(t)) if s.to_string_lossy().starts_with("tls://") => t,
            _ => {
                return Err(HsmError::InvalidInput(
                    "a host enrolls over TLS: give --server tls://HOST:PORT with --tls-cert, --tls-key and --server-fingerprint".into(),
                ))
            }
        };
        let fp = fingerprint_of(&tls.cert)?;
        let code = crate::input::read(code, crate::input::Kind::Password, "enrollment code")?;
        let code = std::str::from_utf8(code.expose())
            .map_err(|_| HsmError::InvalidInput("the enrollment code is not text".into()))?;
        let mut api = crate::front::open(dir, server)?;
        let c = api.enroll(code, &fp)?;
        println!(
            "this host is registered as {} (key {}); partitions: {}",
            c.name,
            c.fingerprint,
            if c.partitions.is_empty() {
                "none yet (the HSM SO assigns them)".to_string()
            } else {
                c.partitions.join(",")
            }
        );
        return Ok(exit::OK);
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
            uid,
            gid,
            login,
        } => {
            let fp = match (uid, gid) {
                (Some(u), _) => format!("uid:{u}"),
                (None, Some(g)) => format!("gid:{g}"),
                (None, None) => cert_or_fingerprint(cert, fingerprint)?,
            };
            let s = so(api, &login)?;
            let c = api.register_client(s, &name, &fp)?;
            println!(
                "client {} registered (key {}); next: `ferrohsm client assign --client {} --partition …`",
                c.name, c.fingerprint, c.name
            );
        }
        ClientCmd::Rekey {
            client,
            cert,
            fingerprint,
            login,
        } => {
            let fp = cert_or_fingerprint(cert, fingerprint)?;
            let s = so(api, &login)?;
            let c = api.rekey_client(s, &client, &fp)?;
            println!(
                "client {} now has key {}; its old key is refused from now on",
                c.name, c.fingerprint
            );
        }
        ClientCmd::Invite {
            name,
            partitions,
            valid_for,
            login,
        } => {
            let s = so(api, &login)?;
            let e = api.issue_enrollment(s, &name, &partitions, valid_for)?;
            if json {
                output::json(&e);
            } else {
                // The code is for the host's operator; it is shown here once and nowhere else.
                println!("enrollment code for {}: {}", e.name, e.code);
                println!(
                    "valid until {} (once); partitions: {}",
                    ferrohsm_core::time::rfc3339(e.expires),
                    if e.partitions.is_empty() {
                        "none".to_string()
                    } else {
                        e.partitions.join(",")
                    }
                );
            }
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
        ClientCmd::Fingerprint { .. } | ClientCmd::Keygen { .. } | ClientCmd::Enroll { .. } => {}
    }
    Ok(exit::OK)
}
