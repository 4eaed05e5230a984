//! Runs one parsed command through the HSM API (a server's, or the engine on the data
//! directory).

use std::path::Path;

use ferrohsm_core::api::{Embedded, HsmApi, InitHsm, PartitionDomain};
use ferrohsm_core::pedkey::PedKey;
use ferrohsm_core::{AuthMode, HsmError, Role};

use crate::input::{self, Kind};
use crate::{
    exit, output, AuthArg, Cli, Cmd, DomainArg, HsmCmd, HsmPolicyCmd, PartitionCmd,
    PartitionPolicyCmd, PedCmd, RoleCmd,
};
use ferrohsm_core::pedkey::SecretType;

type R<T> = Result<T, HsmError>;

/// Default key-file prefix for a role (see [`ferrohsm_core::ped::default_key_prefix`]).
pub fn key_prefix(serial: &str, partition: Option<&str>, what: &str) -> String {
    ferrohsm_core::ped::default_key_prefix(serial, partition, what)
}

pub(crate) fn done(msg: impl AsRef<str>) -> R<u8> {
    println!("{}", msg.as_ref());
    Ok(exit::OK)
}

fn need_yes(yes: bool, what: &str) -> R<()> {
    if yes || (input::interactive() && input::confirm(&format!("{what} Type yes to continue"))) {
        Ok(())
    } else {
        Err(HsmError::InvalidInput(format!("{what} Confirm with --yes")))
    }
}

/// Runs a command; returns the exit code.
pub fn run(cli: Cli) -> R<u8> {
    let Cli {
        data_dir,
        ped_dir,
        server,
        tls_cert,
        tls_key,
        server_fingerprint,
        server_ca,
        json,
        cmd,
    } = cli;
    if let (Some(cert), Some(key), true) = (
        tls_cert,
        tls_key,
        server_fingerprint.is_some() || server_ca.is_some(),
    ) {
        crate::front::set_tls(ferrohsm_client::TlsClient {
            cert,
            key,
            server_fingerprint: server_fingerprint.unwrap_or_default(),
            server_ca,
        });
    }
    // No directory and no server named: the local server, if one answers on its socket.
    let server = server.or_else(|| {
        let local = Path::new(ferrohsm_client::DEFAULT_SOCKET);
        (data_dir.is_none()
            && !matches!(cmd, Cmd::Server(_) | Cmd::Demo { .. })
            && std::os::unix::net::UnixStream::connect(local).is_ok())
        .then(|| local.to_path_buf())
    });
    let data_dir = data_dir.unwrap_or_else(|| "ferrohsm-data".into());
    match cmd {
        Cmd::Demo { dir } => crate::demo::run(dir),
        Cmd::Server(a) => crate::serve::run(a, &data_dir),
        Cmd::Ped(c) => ped(c, json),
        Cmd::Hsm(c) => hsm_cmd(c, &data_dir, server.as_deref(), &ped_dir, json),
        Cmd::Partition(c) => partition_cmd(c, &data_dir, server.as_deref(), &ped_dir, json),
        Cmd::Role(c) => role_cmd(c, &data_dir, server.as_deref(), &ped_dir, json),
        Cmd::Key(c) => crate::keys::run(c, &data_dir, server.as_deref(), &ped_dir, json),
        Cmd::Audit(c) => crate::audit::run(c, &data_dir, server.as_deref(), &ped_dir, json),
        Cmd::Client(c) => crate::clients::run(c, &data_dir, server.as_deref(), &ped_dir, json),
        Cmd::Ha(c) => crate::ha::run(c, json),
        Cmd::Gp(c) => crate::gp::run(c, &data_dir, server.as_deref(), &ped_dir, json),
        Cmd::Backup(crate::BackupCmd::Verify {
            file,
            partition,
            login,
        }) => {
            let mut api = crate::front::open(&data_dir, server.as_deref())?;
            crate::cloning::verify(api.as_mut(), &ped_dir, &partition, &file, &login)?;
            Ok(exit::OK)
        }
    }
}

fn ped(c: PedCmd, json: bool) -> R<u8> {
    match c {
        PedCmd::Show { files } => {
            let mut infos = Vec::new();
            for f in &files {
                match PedKey::read(f)? {
                    Some(k) => infos.push(serde_json::json!({"file": f, "key": k.info})),
                    None => infos.push(serde_json::json!({"file": f, "key": null})),
                }
            }
            if json {
                output::json(&infos);
            } else {
                for f in &files {
                    match PedKey::read(f)? {
                        Some(k) => println!("{}: {}", f.display(), k.info.summary()),
                        None => println!("{}: blank (no key file)", f.display()),
                    }
                }
            }
            Ok(exit::OK)
        }
        PedCmd::Duplicate {
            from,
            to,
            overwrite,
        } => {
            let infos = ferrohsm_core::ped::duplicate_keys(&from, &to, overwrite)?;
            for (i, t) in infos.iter().zip(&to) {
                println!("{} <- {}", t.display(), i.summary());
            }
            Ok(exit::OK)
        }
    }
}

fn hsm_cmd(c: HsmCmd, dir: &Path, server: Option<&Path>, ped_dir: &Path, json: bool) -> R<u8> {
    match c {
        HsmCmd::Init {
            label,
            auth,
            so,
            domain,
            common,
            confirm_destroy,
            backup,
            login: l,
        } => {
            let mut api = crate::front::open_or_create(dir, server)?;
            let summary = api.summary()?;
            let serial = summary.serial.clone();
            let password = matches!(auth, AuthArg::Password);
            let mode = if password {
                AuthMode::Password
            } else {
                AuthMode::Ped
            };
            let current_so = if summary.state == "initialised" {
                Some(l.credential(
                    ped_dir,
                    &key_prefix(&serial, None, "hsm-so"),
                    summary.auth_mode.as_deref() == Some("password"),
                    "current HSM SO",
                )?)
            } else {
                None
            };
            let so = so.build(
                &common,
                ped_dir,
                &key_prefix(&serial, None, "hsm-so"),
                password,
                "HSM SO",
            )?;
            let domain = domain.build(
                &common,
                ped_dir,
                &key_prefix(&serial, None, "domain"),
                password,
                "HSM cloning domain",
            )?;
            let (so, mut pending) = so.stage(
                api.as_mut(),
                ped_dir,
                SecretType::So,
                &format!("HSM SO of {serial}"),
            )?;
            let (domain, more) = domain.stage(
                api.as_mut(),
                ped_dir,
                SecretType::Domain,
                &format!("cloning domain of {serial}"),
            )?;
            pending.join(more);
            let made = api.init_hsm(InitHsm {
                label,
                mode,
                so,
                domain,
                current_so,
                confirm_destroy,
                backup,
            });
            pending.settle(api.as_mut(), made)?;
            done(format!(
                "HSM {serial} initialised ({}{})",
                if password {
                    "password-authenticated"
                } else {
                    "PED-authenticated"
                },
                if backup {
                    "; a backup HSM: it keeps objects and never uses them"
                } else {
                    ""
                }
            ))
        }
        HsmCmd::Show => {
            let info = crate::front::open(dir, server)?.info()?;
            if json {
                output::json(&info)
            } else {
                output::hsm(&info)
            }
            Ok(exit::OK)
        }
        HsmCmd::Zeroize { yes, login: l } => {
            need_yes(
                yes,
                "Zeroize destroys every key, role and partition of this HSM irreversibly.",
            )?;
            match crate::front::open(dir, server) {
                Ok(mut api) => {
                    let so = crate::front::login(api.as_mut(), ped_dir, &l, Role::HsmSo, None)?;
                    let serial = api.summary()?.serial;
                    api.zeroize(so, "zeroize command")?;
                    done(format!("HSM {serial} zeroized: all key material destroyed"))
                }
                // A store that fails its checks can still be destroyed: that is the way out of tamper.
                Err(HsmError::Tamper(why)) => {
                    eprintln!("ferrohsm: the store failed its integrity checks ({why}); zeroizing it without reading it");
                    ferrohsm_core::Hsm::zeroize_unopenable(dir, "zeroize command")?;
                    done("HSM zeroized: all key material destroyed")
                }
                Err(e) => Err(e),
            }
        }
        HsmCmd::FactoryReset {
            yes,
            erase_audit_log,
            login: l,
        } => {
            // On the directory only: a reset of an HSM is done where it stands, by hand.
            let mut e = Embedded::open(dir)?;
            need_yes(
                yes,
                "Factory reset destroys every key, role and partition of this HSM irreversibly.",
            )?;
            let auditor = if erase_audit_log {
                let id = crate::front::login(&mut e, ped_dir, &l, Role::Auditor, None)?;
                Some(e.engine_session(id)?)
            } else {
                None
            };
            let serial = e.engine().serial().to_string();
            e.engine().factory_reset(None, auditor.as_deref())?;
            done(format!(
                "HSM {} reset to factory state; {}",
                serial,
                if auditor.is_some() {
                    "the audit log, its key and the Auditor are erased"
                } else {
                    "the audit log and the Auditor are kept"
                }
            ))
        }
        HsmCmd::Tamper { yes, login: l } => {
            let mut api = crate::front::open(dir, server)?;
            need_yes(yes, "The tamper switch zeroizes the HSM.")?;
            let so = crate::front::login(api.as_mut(), ped_dir, &l, Role::HsmSo, None)?;
            let serial = api.summary()?.serial;
            api.tamper(so)?;
            done(format!(
                "HSM {serial} tampered: zeroized, every activation and login ended"
            ))
        }
        HsmCmd::Restart { login: l } => {
            let mut api = crate::front::open(dir, server)?;
            let so = crate::front::login(api.as_mut(), ped_dir, &l, Role::HsmSo, None)?;
            let serial = api.summary()?.serial;
            let epoch = api.restart(so)?;
            done(format!(
                "HSM {serial} restarted (boot {epoch}); activations without auto-activation have ended"
            ))
        }
        HsmCmd::Policy(HsmPolicyCmd::Show) => {
            let info = crate::front::open(dir, server)?.info()?;
            if json {
                output::json(&info.policy)
            } else {
                print_policy(&info.policy);
            }
            Ok(exit::OK)
        }
        HsmCmd::Policy(HsmPolicyCmd::Set {
            name,
            value,
            login: l,
        }) => {
            let mut api = crate::front::open(dir, server)?;
            let s = crate::front::login(api.as_mut(), ped_dir, &l, Role::HsmSo, None)?;
            api.set_hsm_policy(s, &name, &value)?;
            done(format!("HSM policy {name} = {value}"))
        }
    }
}

fn partition_cmd(
    c: PartitionCmd,
    dir: &Path,
    server: Option<&Path>,
    ped_dir: &Path,
    json: bool,
) -> R<u8> {
    let mut boxed = crate::front::open(dir, server)?;
    let api = boxed.as_mut();
    match c {
        PartitionCmd::Clone {
            from,
            to,
            to_server,
            label,
            id,
            class,
            batch,
            replace,
            login,
            to_login,
        } => {
            crate::cloning::run(
                api,
                || crate::front::open(dir, server),
                ped_dir,
                crate::cloning::CloneArgs {
                    from: &from,
                    to: &to,
                    to_server: to_server.as_deref(),
                    labels: label,
                    ids: id,
                    classes: class,
                    batch,
                    replace,
                    login: &login,
                    to_login: &to_login,
                },
            )?;
            Ok(exit::OK)
        }
        PartitionCmd::Backup {
            partition,
            out,
            to_server,
            to,
            to_login,
            label,
            id,
            class,
            replace,
            login,
        } => {
            match (out, to_server) {
                (_, Some(server)) => {
                    let mut vault = crate::cloning::connect(&server)?;
                    crate::cloning::transfer(
                        api,
                        &mut vault,
                        ped_dir,
                        crate::cloning::CloneArgs {
                            from: &partition,
                            to: to.as_deref().unwrap_or(&partition),
                            to_server: Some(&server),
                            labels: label,
                            ids: id,
                            classes: class,
                            batch: 500,
                            replace,
                            login: &login,
                            to_login: &to_login,
                        },
                    )?;
                }
                (Some(out), None) => {
                    let select = crate::cloning::select(label, &id, &class)?;
                    crate::cloning::backup(api, ped_dir, &partition, &out, &select, &login)?;
                }
                (None, None) => {
                    return Err(HsmError::InvalidInput(
                        "name where the backup goes: --out FILE or --to-server SERVER".into(),
                    ))
                }
            }
            Ok(exit::OK)
        }
        PartitionCmd::Restore {
            partition,
            input,
            from_server,
            from,
            replace,
            to_login,
            login,
        } => {
            match (input, from_server) {
                (_, Some(server)) => {
                    // The backup HSM is the clone's source: its Crypto Officer logs in with
                    // the --to-… flags, this partition's with the usual ones.
                    let mut vault = crate::cloning::connect(&server)?;
                    let source = from.unwrap_or_else(|| partition.clone());
                    crate::cloning::transfer(
                        &mut vault,
                        api,
                        ped_dir,
                        crate::cloning::CloneArgs {
                            from: &source,
                            to: &partition,
                            to_server: None,
                            labels: vec![],
                            ids: vec![],
                            classes: vec![],
                            batch: 500,
                            replace,
                            login: &to_login.as_login(),
                            to_login: &crate::pedargs::TargetLogin::from_login(&login),
                        },
                    )?;
                }
                (Some(input), None) => {
                    crate::cloning::restore(api, ped_dir, &partition, &input, replace, &login)?
                }
                (None, None) => {
                    return Err(HsmError::InvalidInput(
                        "name where the backup is: --in FILE or --from-server SERVER".into(),
                    ))
                }
            }
            Ok(exit::OK)
        }
        PartitionCmd::Create { label, login: l } => {
            let s = crate::front::login(api, ped_dir, &l, Role::HsmSo, None)?;
            let id = api.create_partition(s, &label)?;
            done(format!("partition {label} created (id {id}); next: `ferrohsm partition init --partition {label}`"))
        }
        PartitionCmd::List => {
            let info = api.info()?;
            if json {
                output::json(&info.partitions);
            } else if info.partitions.is_empty() {
                println!("no partitions");
            } else {
                for p in &info.partitions {
                    println!(
                        "{:>4}  {:<20} {:<12} {} object(s)",
                        p.id,
                        p.label,
                        if p.initialised {
                            "initialised"
                        } else {
                            "created"
                        },
                        p.objects
                    );
                }
            }
            Ok(exit::OK)
        }
        PartitionCmd::Show { partition } => {
            let p = &partition_info(api, &partition)?;
            if json {
                output::json(p)
            } else {
                output::partition(p)
            }
            Ok(exit::OK)
        }
        PartitionCmd::Delete {
            partition,
            yes,
            login: l,
        } => {
            need_yes(
                yes,
                &format!("Deleting partition {partition} destroys every key in it."),
            )?;
            let s = crate::front::login(api, ped_dir, &l, Role::HsmSo, None)?;
            let n = api.delete_partition(s, &partition)?;
            done(format!("partition {partition} deleted with {n} object(s)"))
        }
        PartitionCmd::Init {
            partition,
            domain,
            so,
            domain_imprint,
            common,
            confirm_destroy,
            login: l,
        } => {
            let serial = api.summary()?.serial;
            let password = crate::front::password_mode(api)?;
            let initialised = partition_info(api, &partition)?.initialised;
            let current = if initialised {
                if !confirm_destroy {
                    return Err(HsmError::Refused(format!("partition {partition} is initialised; re-initialising destroys its keys: add --confirm-destroy and the current Partition SO's credential")));
                }
                Some(l.credential(
                    ped_dir,
                    &key_prefix(&serial, Some(&partition), "so"),
                    password,
                    &format!("Partition SO of {partition}"),
                )?)
            } else {
                None
            };
            let so = so.build(
                &common,
                ped_dir,
                &key_prefix(&serial, Some(&partition), "so"),
                password,
                &format!("Partition SO of {partition}"),
            )?;
            let (so, mut pending) = so.stage(
                api,
                ped_dir,
                SecretType::So,
                &format!("Partition SO of {partition}"),
            )?;
            let domain = match domain {
                DomainArg::None => PartitionDomain::None,
                DomainArg::Hsm => {
                    if password && domain_imprint.password.is_none() && !crate::input::interactive()
                    {
                        return Err(HsmError::InvalidInput(
                            "joining the HSM's cloning domain takes its domain password: --domain-password SRC (or --domain none, or --domain new)".into()));
                    }
                    PartitionDomain::Hsm(domain_imprint.presented(
                        ped_dir,
                        &key_prefix(&serial, None, "domain"),
                        password,
                        &format!("cloning domain of {serial}"),
                    )?)
                }
                DomainArg::New => {
                    let (d, more) = domain_imprint
                        .build(
                            &common,
                            ped_dir,
                            &key_prefix(&serial, Some(&partition), "domain"),
                            password,
                            &format!("cloning domain of {partition}"),
                        )?
                        .stage(
                            api,
                            ped_dir,
                            SecretType::Domain,
                            &format!("cloning domain of {partition}"),
                        )?;
                    pending.join(more);
                    PartitionDomain::New(d)
                }
            };
            let made = api.init_partition(&partition, so, domain, current);
            pending.settle(api, made)?;
            done(format!("partition {partition} initialised; next: `ferrohsm role init --partition {partition} --role co`"))
        }
        PartitionCmd::Policy(PartitionPolicyCmd::Show { partition }) => {
            let p = &partition_info(api, &partition)?;
            if json {
                output::json(&p.policy)
            } else {
                print_policy(&p.policy);
            }
            Ok(exit::OK)
        }
        PartitionCmd::Policy(PartitionPolicyCmd::Set {
            partition,
            name,
            value,
            login: l,
        }) => {
            let s = crate::front::login(api, ped_dir, &l, Role::PartitionSo, Some(&partition))?;
            api.set_partition_policy(s, &name, &value)?;
            done(format!("partition {partition} policy {name} = {value}"))
        }
    }
}

/// Prints policies one per line, each with what it guards against.
fn print_policy(policy: &std::collections::BTreeMap<String, String>) {
    let width = policy.keys().map(|k| k.len() + 3).max().unwrap_or(0);
    for (k, v) in policy {
        let setting = format!("{k} = {v}");
        println!(
            "{setting:<w$}  # {}",
            ferrohsm_core::policy::meaning(k),
            w = width + 4
        );
    }
}

/// One partition as `hsm show` describes it.
fn partition_info(api: &mut dyn HsmApi, label: &str) -> R<ferrohsm_core::hsm::PartitionInfo> {
    api.info()?
        .partitions
        .into_iter()
        .find(|p| p.label == label)
        .ok_or_else(|| HsmError::NotFound(format!("no partition labelled {label:?}")))
}

/// A partition role named with `flag` (`--role` or `--as`): co or cu.
pub(crate) fn partition_role(s: &str, flag: &str) -> R<Role> {
    let r = Role::parse(s)?;
    if !matches!(r, Role::CryptoOfficer | Role::CryptoUser) {
        return Err(HsmError::InvalidInput(format!(
            "{flag} takes co or cu here, not {s}"
        )));
    }
    Ok(r)
}

fn role_cmd(c: RoleCmd, dir: &Path, server: Option<&Path>, ped_dir: &Path, json: bool) -> R<u8> {
    let mut boxed = crate::front::open(dir, server)?;
    let api = boxed.as_mut();
    let serial = api.summary()?.serial;
    match c {
        RoleCmd::Init {
            partition,
            role,
            new,
            common,
            confirm_destroy,
            login: l,
        } => {
            let role = partition_role(&role, "--role")?;
            let by = if role == Role::CryptoOfficer {
                Role::PartitionSo
            } else {
                Role::CryptoOfficer
            };
            let password = crate::front::password_mode(api)?;
            let s = crate::front::login(api, ped_dir, &l, by, Some(&partition))?;
            let secret = new.build(
                &common,
                ped_dir,
                &key_prefix(&serial, Some(&partition), role.short()),
                password,
                &format!("{role} of {partition}"),
            )?;
            let (secret, pending) = secret.stage(
                api,
                ped_dir,
                role.secret_type(),
                &format!("{role} of {partition}"),
            )?;
            let made = api.init_role(s, role, secret, confirm_destroy);
            pending.settle(api, made)?;
            done(format!("{role} of {partition} initialised"))
        }
        RoleCmd::Show { partition } => {
            let p = &partition_info(api, &partition)?;
            if json {
                output::json(&p.roles)
            } else {
                output::partition(p)
            }
            Ok(exit::OK)
        }
        RoleCmd::Activate {
            partition,
            role,
            set_challenge,
            login: l,
        } => {
            let role = partition_role(&role, "--role")?;
            let s = crate::front::login(api, ped_dir, &l, role, Some(&partition))?;
            let src = set_challenge.unwrap_or_else(|| "prompt".into());
            let ch = input::read_new(&src, Kind::Password, "new challenge secret")?;
            api.activate(s, ch)?;
            done(format!("{role} of {partition} activated: its challenge secret now logs it in (`--challenge`)"))
        }
        RoleCmd::Deactivate {
            partition,
            role,
            as_role,
            login: l,
        } => {
            let role = partition_role(&role, "--role")?;
            let by = match as_role {
                Some(a) => Role::parse(&a)?,
                None => role,
            };
            let s = crate::front::login(api, ped_dir, &l, by, Some(&partition))?;
            let was = api.deactivate(s, role)?;
            done(if was {
                format!("{role} of {partition} deactivated")
            } else {
                format!("{role} of {partition} was not activated")
            })
        }
        RoleCmd::Reset {
            partition,
            role,
            login: l,
        } => {
            let role = partition_role(&role, "--role")?;
            let s = crate::front::login(api, ped_dir, &l, Role::PartitionSo, Some(&partition))?;
            api.reset_role(s, role)?;
            done(format!(
                "{role} of {partition}: failed logins cleared, unlocked"
            ))
        }
        RoleCmd::ChangePin {
            role,
            partition,
            new_pin,
            remove_pin,
            login: l,
        } => {
            let role = Role::parse(&role)?;
            let s = crate::front::login(api, ped_dir, &l, role, partition.as_deref())?;
            let pin = match (new_pin, remove_pin) {
                (_, true) => None,
                (Some(src), false) => Some(input::read_new(&src, Kind::PedPin, "new PED PIN")?),
                (None, false) => Some(input::prompt_new(Kind::PedPin, "new PED PIN")?),
            };
            let who = crate::front::who(role, partition.as_deref());
            // The role's keys again, so the HSM can re-mix their secret with the new PIN.
            let keys = l.credential(
                ped_dir,
                &key_prefix(&serial, partition.as_deref(), role.short()),
                false,
                &who,
            )?;
            api.change_pin(s, keys, pin)?;
            done(format!(
                "PED PIN of the {who} changed; its keys are unchanged"
            ))
        }
        RoleCmd::ChangeSecret {
            role,
            partition,
            new,
            common,
            login: l,
        } => {
            let role = Role::parse(&role)?;
            let password = crate::front::password_mode(api)?;
            let s = crate::front::login(api, ped_dir, &l, role, partition.as_deref())?;
            let who = crate::front::who(role, partition.as_deref());
            let secret = new.build(
                &common,
                ped_dir,
                &key_prefix(&serial, partition.as_deref(), role.short()),
                password,
                &who,
            )?;
            let (secret, pending) = secret.stage(api, ped_dir, role.secret_type(), &who)?;
            let made = api.change_secret(s, secret);
            pending.settle(api, made)?;
            done(format!(
                "secret of the {who} replaced; the old keys no longer log in"
            ))
        }
    }
}
