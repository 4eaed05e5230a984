//! `ferrohsm audit …`: the Auditor's commands and the witnesses' tools.

use std::path::{Path, PathBuf};

use ferrohsm_audit::tool::{run_witness, verify_file, ToolError, VerifyFiles};
use ferrohsm_core::api::{HsmApi, LoginId};
use ferrohsm_core::audit::{AuditConfig, KeyUseAudit};
use ferrohsm_core::{HsmError, Role};

use crate::commands::key_prefix;
use crate::{exit, output, AuditCmd, AuditConfigCmd, AuthArg, KeyUseArg, WitnessCmd};
use ferrohsm_core::pedkey::SecretType;

type R<T> = Result<T, HsmError>;

fn text(p: &Path) -> R<String> {
    ferrohsm_audit::tool::text(p).map_err(|e| HsmError::InvalidInput(e.to_string()))
}

fn write(p: &PathBuf, data: &[u8]) -> R<()> {
    std::fs::write(p, data).map_err(|e| HsmError::io(p, e))
}

fn auditor(api: &mut dyn HsmApi, ped_dir: &Path, l: &crate::pedargs::Login) -> R<LoginId> {
    crate::front::login(api, ped_dir, l, Role::Auditor, None)
}

/// Runs an audit command.
pub fn run(c: AuditCmd, dir: &Path, server: Option<&Path>, ped_dir: &Path, json: bool) -> R<u8> {
    match c {
        // Commands that need no HSM at all.
        AuditCmd::Witness(WitnessCmd::Tool(t)) => {
            return match run_witness(&t) {
                Ok(out) => {
                    print!("{out}");
                    Ok(exit::OK)
                }
                Err(ToolError::Failed(m)) => Err(HsmError::Refused(format!("not cosigned: {m}"))),
                Err(ToolError::Usage(m)) => Err(HsmError::InvalidInput(m)),
            };
        }
        AuditCmd::Verify {
            export: Some(file),
            public_key,
            earlier,
            witness,
            prove,
            from,
            ..
        } => {
            let files = VerifyFiles {
                public_key: public_key.as_deref(),
                earlier: &earlier,
                witnesses: &witness,
                require_cosignatures: 0,
                prove,
                from,
            };
            return match verify_file(&file, &files) {
                Ok(r) => {
                    print!("{r}");
                    Ok(exit::OK)
                }
                Err(ToolError::Failed(m)) => {
                    println!("FAILED: {m}");
                    Ok(exit::TAMPER)
                }
                Err(ToolError::Usage(m)) => Err(HsmError::InvalidInput(m)),
            };
        }
        _ => {}
    }
    // The Auditor's reading of the log goes through the HSM API: to the server that holds the
    // directory (or --server), or to the engine on it.
    if matches!(
        c,
        AuditCmd::PublicKey { .. }
            | AuditCmd::Show { .. }
            | AuditCmd::Export { .. }
            | AuditCmd::Verify { .. }
            | AuditCmd::Checkpoint { .. }
    ) {
        let mut boxed = crate::front::open(dir, server)?;
        let api = boxed.as_mut();
        return match c {
            AuditCmd::PublicKey { out } => {
                let k = api.audit_public_key()?;
                if let Some(o) = out {
                    write(&o, format!("{k}\n").as_bytes())?;
                }
                println!("{k}");
                Ok(exit::OK)
            }
            AuditCmd::Show {
                since,
                until,
                event,
                role,
                partition,
                failures,
                pending_cosignatures,
                login: l,
            } => {
                let s = crate::front::login(api, ped_dir, &l, Role::Auditor, None)?;
                let mut recs: Vec<(ferrohsm_audit::Record, Option<usize>)> = if pending_cosignatures
                {
                    api.pending_ceremonies(s)?
                        .into_iter()
                        .map(|(r, n)| (r, Some(n)))
                        .collect()
                } else {
                    api.audit_records(s)?
                        .into_iter()
                        .map(|r| (r, None))
                        .collect()
                };
                recs.retain(|(r, _)| {
                    since.as_ref().is_none_or(|t| r.time.as_str() >= t.as_str())
                        && until.as_ref().is_none_or(|t| r.time.as_str() < t.as_str())
                        && event.as_ref().is_none_or(|e| &r.event == e)
                        && role.as_ref().is_none_or(|x| &r.role == x)
                        && partition
                            .as_ref()
                            .is_none_or(|p| r.partition.as_ref() == Some(p))
                        && (!failures || r.outcome.starts_with("failure"))
                });
                if json {
                    output::json(&recs.iter().map(|(r, _)| r).collect::<Vec<_>>());
                } else {
                    for (r, n) in &recs {
                        print!(
                            "#{:<5} {} {:<18} {:<8} {:<10} {:<16} {}",
                            r.seq,
                            r.time,
                            r.event,
                            r.role,
                            r.partition.clone().unwrap_or_default(),
                            r.object.clone().unwrap_or_default(),
                            r.outcome
                        );
                        match n {
                            Some(n) => println!("  [{n} cosignature(s)]"),
                            None => println!(),
                        }
                    }
                    if pending_cosignatures && recs.is_empty() {
                        println!("every ceremony record carries the required witness cosignatures");
                    }
                }
                Ok(exit::OK)
            }
            AuditCmd::Export {
                out,
                from,
                earlier,
                login: l,
            } => {
                let s = crate::front::login(api, ped_dir, &l, Role::Auditor, None)?;
                let mut sizes = Vec::new();
                for f in &earlier {
                    sizes.push(
                        ferrohsm_audit::verify::checkpoint_size(&text(f)?).ok_or_else(|| {
                            HsmError::InvalidInput(format!("{} is not a checkpoint", f.display()))
                        })?,
                    );
                }
                let ex = api.audit_export(s, from, &sizes)?;
                // The checkpoints given are checked before anything is written: signed by
                // this HSM, and extended by its log (or it was rolled back or forked).
                if !earlier.is_empty() {
                    let opts = ferrohsm_audit::VerifyOptions {
                        public_key: Some(api.audit_public_key()?),
                        earlier: earlier.iter().map(|f| text(f)).collect::<R<_>>()?,
                        from: Some(from.max(1)),
                        ..Default::default()
                    };
                    use ferrohsm_audit::VerifyError as V;
                    match ferrohsm_audit::verify_export(&ex, &opts) {
                        Ok(_) => {}
                        Err(e @ (V::Signature(_) | V::Malformed(_) | V::Key(_))) => {
                            return Err(HsmError::InvalidInput(format!(
                                "a checkpoint given with --earlier is not one this HSM signed ({e}); nothing was exported"
                            )))
                        }
                        Err(e) => {
                            return Err(HsmError::Tamper(format!(
                                "rollback or fork: the log does not extend a checkpoint given with --earlier ({e}); nothing was exported"
                            )))
                        }
                    }
                }
                write(&out, &ex.to_bytes())?;
                println!(
                    "exported records #{}..#{} with proofs to {}",
                    from.max(1),
                    ferrohsm_audit::verify::checkpoint_size(&ex.checkpoint).unwrap_or(0),
                    out.display()
                );
                Ok(exit::OK)
            }
            AuditCmd::Verify {
                login: l, earlier, ..
            } => {
                let s = crate::front::login(api, ped_dir, &l, Role::Auditor, None)?;
                let r = api.audit_verify(s)?;
                print!("{r}");
                // The checkpoints the Auditor kept outside the HSM: the HSM checks that its
                // log extends each (a rollback or fork is tamper, which it records).
                for f in &earlier {
                    let size = api.audit_check_extends(s, &text(f)?)?;
                    println!(
                        "the log extends the checkpoint of {size} records in {}",
                        f.display()
                    );
                }
                Ok(exit::OK)
            }
            AuditCmd::Checkpoint {
                out,
                old_size,
                login: l,
            } => {
                let s = crate::front::login(api, ped_dir, &l, Role::Auditor, None)?;
                let mut cp = api.audit_checkpoint(s)?;
                if let Some(old) = old_size {
                    // The proof comes from an export of the last record only; its checkpoint
                    // is the one the proof is to.
                    let size = ferrohsm_audit::verify::checkpoint_size(&cp).unwrap_or(0);
                    if old > size {
                        return Err(HsmError::Tamper(format!(
                            "rollback or fork: the witness cosigned size {old}, but the log has {size} records"
                        )));
                    }
                    let ex = api.audit_export(s, size.max(1), &[old])?;
                    let proof = if old == 0
                        || Some(old) == ferrohsm_audit::verify::checkpoint_size(&ex.checkpoint)
                    {
                        vec![]
                    } else {
                        ex.earlier
                            .iter()
                            .find(|e| ferrohsm_audit::verify::checkpoint_size(&e.checkpoint) == Some(old))
                            .map(|e| e.consistency.clone())
                            .ok_or_else(|| {
                                HsmError::NotFound(format!(
                                    "this HSM issued no checkpoint of size {old}: the witness state is not this log's"
                                ))
                            })?
                    };
                    cp = ferrohsm_audit::witness::CosignRequest {
                        old,
                        proof,
                        note: ex.checkpoint,
                    }
                    .to_text();
                }
                write(&out, cp.as_bytes())?;
                let note = ferrohsm_audit::witness::CosignRequest::parse(&cp)
                    .map(|r| r.note)
                    .unwrap_or_default();
                let size = ferrohsm_audit::verify::checkpoint_size(&note).unwrap_or(0);
                match old_size {
                    Some(old) => println!(
                        "witness request for the checkpoint of size {size}, proven to extend size {old}, written to {}",
                        out.display()
                    ),
                    None => println!("checkpoint of size {size} written to {}", out.display()),
                }
                Ok(exit::OK)
            }
            _ => Err(HsmError::State("not a reading of the log".into())),
        };
    }
    let mut boxed = crate::front::open_or_create(dir, server)?;
    let api = boxed.as_mut();
    let serial = api.summary()?.serial;
    match c {
        AuditCmd::Init {
            auth,
            new,
            common,
            login: l,
        } => {
            let current = match api.info()?.auditor {
                Some(a) => Some(l.credential(
                    ped_dir,
                    &key_prefix(&serial, None, "auditor"),
                    a.auth == "password",
                    "current Auditor",
                )?),
                None => None,
            };
            let password = matches!(auth, AuthArg::Password);
            let secret = new.build(
                &common,
                ped_dir,
                &key_prefix(&serial, None, "auditor"),
                password,
                "Auditor",
            )?;
            let (secret, pending) = secret.stage(
                api,
                ped_dir,
                SecretType::Auditor,
                &format!("Auditor of {serial}"),
            )?;
            let made = api.audit_init(secret, current);
            pending.settle(api, made)?;
            println!(
                "Auditor of HSM {serial} imprinted ({})",
                if password {
                    "password"
                } else {
                    "white PED key"
                }
            );
            Ok(exit::OK)
        }
        AuditCmd::Config(AuditConfigCmd::Show { login: l }) => {
            let s = auditor(api, ped_dir, &l)?;
            let c = api.audit_config(s)?;
            if json {
                output::json(&c)
            } else {
                print_config(&c)
            }
            Ok(exit::OK)
        }
        AuditCmd::Config(AuditConfigCmd::Set {
            key_use,
            batch_ms,
            ceremony_cosignatures,
            login: l,
        }) => {
            let s = auditor(api, ped_dir, &l)?;
            let mut c = api.audit_config(s)?;
            if let Some(k) = key_use {
                c.key_use = match k {
                    KeyUseArg::Off => KeyUseAudit::Off,
                    KeyUseArg::Strict => KeyUseAudit::Strict,
                    KeyUseArg::Batched => KeyUseAudit::Batched { max_ms: batch_ms },
                };
            }
            if let Some(k) = ceremony_cosignatures {
                c.ceremony_cosignatures = k;
            }
            api.set_audit_config(s, c.clone())?;
            print_config(&c);
            Ok(exit::OK)
        }
        AuditCmd::Witness(WitnessCmd::Add {
            public_key,
            login: l,
        }) => {
            let s = auditor(api, ped_dir, &l)?;
            let w = api.add_witness(s, &text(&public_key)?)?;
            println!("witness {} registered", w.name);
            Ok(exit::OK)
        }
        AuditCmd::Witness(WitnessCmd::List { login: l }) => {
            let s = auditor(api, ped_dir, &l)?;
            let ws = api.witnesses(s)?;
            if json {
                output::json(&ws)
            } else {
                for w in &ws {
                    println!("{}  (since {})  {}", w.name, w.added, w.vkey);
                }
            }
            Ok(exit::OK)
        }
        AuditCmd::Witness(WitnessCmd::Submit {
            checkpoint,
            login: l,
        }) => {
            let s = auditor(api, ped_dir, &l)?;
            let names = api.submit_cosigned(s, &text(&checkpoint)?)?;
            println!("cosignatures kept: {}", names.join(", "));
            Ok(exit::OK)
        }
        // Answered above, before the HSM was opened.
        AuditCmd::PublicKey { .. }
        | AuditCmd::Show { .. }
        | AuditCmd::Export { .. }
        | AuditCmd::Verify { .. }
        | AuditCmd::Checkpoint { .. } => Err(HsmError::State("answered above".into())),
        AuditCmd::Witness(WitnessCmd::Tool(_)) => {
            Err(HsmError::State("answered without opening the HSM".into()))
        }
    }
}

fn print_config(c: &AuditConfig) {
    let ku = match c.key_use {
        KeyUseAudit::Off => "off".to_string(),
        KeyUseAudit::Strict => "strict (durable before the answer)".to_string(),
        KeyUseAudit::Batched { max_ms } => format!("batched (durable within {max_ms} ms)"),
    };
    println!("key-use auditing:        {ku}");
    println!("ceremony cosignatures:   {}", c.ceremony_cosignatures);
}
