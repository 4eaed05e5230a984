//! The service layer: one decoded request in, one response out, through the HSM API. No
//! I/O here; the transport (`listener`) reads and writes frames.

use std::str::FromStr;

use ferrohsm_core::api::{AuthMode, HsmApi, InitHsm, PartitionDomain, Unwrap};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{KeyOptions, ObjectClass, ObjectFilter};
use ferrohsm_core::{HsmError, Result, Role};
use ferrohsm_proto::v1::{self, request::Call, response::Result as Reply};
use ferrohsm_proto::{convert, error_to_wire, Request, Response, PROTOCOL_VERSION};

/// The name of a call, for logs (never its arguments: a login carries a secret).
pub fn call_name(call: &Option<Call>) -> &'static str {
    match call {
        None => "none",
        Some(Call::Summary(_)) => "summary",
        Some(Call::Login(_)) => "login",
        Some(Call::Logout(_)) => "logout",
        Some(Call::GenerateKey(_)) => "generate-key",
        Some(Call::GenerateKeys(_)) => "generate-keys",
        Some(Call::FindObjects(_)) => "find-objects",
        Some(Call::Sign(_)) => "sign",
        Some(Call::Verify(_)) => "verify",
        Some(Call::Encrypt(_)) => "encrypt",
        Some(Call::Decrypt(_)) => "decrypt",
        Some(Call::DestroyObject(_)) => "destroy-object",
        Some(Call::Random(_)) => "random",
        Some(Call::Zeroize(_)) => "zeroize",
        Some(Call::Tamper(_)) => "tamper",
        Some(Call::Restart(_)) => "restart",
        Some(Call::AuditPublicKey(_)) => "audit-public-key",
        Some(Call::AuditRecords(_)) => "audit-records",
        Some(Call::PendingCeremonies(_)) => "pending-ceremonies",
        Some(Call::AuditCheckpoint(_)) => "audit-checkpoint",
        Some(Call::AuditCheckExtends(_)) => "audit-check-extends",
        Some(Call::CloneAccept(_)) => "clone-accept",
        Some(Call::CloneOffer(_)) => "clone-offer",
        Some(Call::CloneConfirm(_)) => "clone-confirm",
        Some(Call::CloneExport(_)) => "clone-export",
        Some(Call::CloneImport(_)) => "clone-import",
        Some(Call::BackupExport(_)) => "backup-export",
        Some(Call::BackupVerify(_)) => "backup-verify",
        Some(Call::BackupRestore(_)) => "backup-restore",
        Some(Call::HaNote(_)) => "ha-note",
        Some(Call::DestroyedObjects(_)) => "destroyed-objects",
        Some(Call::Gp(_)) => "gp",
        Some(Call::AuditExport(_)) => "audit-export",
        Some(Call::AuditVerify(_)) => "audit-verify",
        Some(Call::Info(_)) => "info",
        Some(Call::StateGeneration(_)) => "state-generation",
        Some(Call::InitToken(_)) => "init-token",
        Some(Call::ReinitToken(_)) => "reinit-token",
        Some(Call::ChangePassword(_)) => "change-password",
        Some(Call::Find(_)) => "find",
        Some(Call::ObjectInfo(_)) => "object-info",
        Some(Call::GenerateKeyWith(_)) => "generate-key-with",
        Some(Call::CreateObject(_)) => "create-object",
        Some(Call::ImportPublicKey(_)) => "import-public-key",
        Some(Call::RelabelObject(_)) => "relabel-object",
        Some(Call::CopyObject(_)) => "copy-object",
        Some(Call::DropSessionObjects(_)) => "drop-session-objects",
        Some(Call::WrappedKeyLen(_)) => "wrapped-key-len",
        Some(Call::WrapKey(_)) => "wrap-key",
        Some(Call::UnwrapKey(_)) => "unwrap-key",
        Some(Call::DeriveEcdh(_)) => "derive-ecdh",
        Some(Call::CheckLogin(_)) => "check-login",
        Some(Call::InitHsm(_)) => "init-hsm",
        Some(Call::InitPartition(_)) => "init-partition",
        Some(Call::InitRole(_)) => "init-role",
        Some(Call::ChangeSecret(_)) => "change-secret",
        Some(Call::ChangePin(_)) => "change-pin",
        Some(Call::AuditInit(_)) => "audit-init",
        Some(Call::SetHsmPolicy(_)) => "set-hsm-policy",
        Some(Call::SetPartitionPolicy(_)) => "set-partition-policy",
        Some(Call::CreatePartition(_)) => "create-partition",
        Some(Call::DeletePartition(_)) => "delete-partition",
        Some(Call::ResetRole(_)) => "reset-role",
        Some(Call::Activate(_)) => "activate",
        Some(Call::Deactivate(_)) => "deactivate",
        Some(Call::AuditConfig(_)) => "audit-config",
        Some(Call::SetAuditConfig(_)) => "set-audit-config",
        Some(Call::Witnesses(_)) => "witnesses",
        Some(Call::AddWitness(_)) => "add-witness",
        Some(Call::SubmitCosigned(_)) => "submit-cosigned",
        Some(Call::RegisterClient(_)) => "register-client",
        Some(Call::Clients(_)) => "clients",
        Some(Call::AssignClient(_)) => "assign-client",
        Some(Call::RevokeClient(_)) => "revoke-client",
        Some(Call::IssueEnrollment(_)) => "issue-enrollment",
        Some(Call::Enroll(_)) => "enroll",
        Some(Call::RekeyClient(_)) => "rekey-client",
        Some(Call::KeyValue(_)) => "key-value",
        Some(Call::ImportKey(_)) => "import-key",
        Some(Call::SetKeyTrusted(_)) => "set-key-trusted",
        Some(Call::StageImprint(_)) => "stage-imprint",
        Some(Call::SecretInUse(_)) => "secret-in-use",
    }
}

/// The mechanism a request names, for the metrics (never an argument that could be secret).
pub fn call_mechanism(call: &Option<Call>) -> Option<&str> {
    match call {
        Some(Call::Sign(s)) => Some(&s.mechanism),
        Some(Call::Verify(v)) => Some(&v.mechanism),
        Some(Call::Encrypt(c) | Call::Decrypt(c)) => Some(&c.mechanism),
        Some(Call::WrapKey(w) | Call::WrappedKeyLen(w)) => Some(&w.mechanism),
        Some(Call::UnwrapKey(u)) => Some(&u.mechanism),
        Some(Call::GenerateKey(g)) => Some(&g.key_type),
        Some(Call::GenerateKeyWith(g)) => Some(&g.key_type),
        _ => None,
    }
}

/// A refusal that is not an engine error (bad version, unknown call, undecodable frame).
pub fn protocol_error(id: u64, code: v1::error::Code, message: String) -> Response {
    Response {
        id,
        result: Some(Reply::Error(v1::Error {
            code: code as i32,
            message,
            remaining: None,
        })),
    }
}

/// What a connection's client may reach: everything (a local user the configuration admits),
/// only the partitions the HSM SO assigned to it (a registered network client), or nothing
/// but the redemption of an enrollment code (an unregistered network client, let through the
/// handshake while a code is outstanding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole HSM.
    All,
    /// These partitions' roles and objects, nothing of the device.
    Partitions(Vec<String>),
    /// One call: [`Call::Enroll`] for this certificate key (the one proved in the handshake).
    Enrolling(String),
}

impl Scope {
    fn allows(&self, partition: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Partitions(p) => p.iter().any(|x| x == partition),
            Scope::Enrolling(_) => false,
        }
    }

    /// Refuses a call that reaches outside the scope. A call with a login id needs no check:
    /// the login was made in scope, and a login id names nothing for another client.
    fn check(&self, call: &Call) -> Result<()> {
        match (self, call) {
            (Scope::Enrolling(fp), Call::Enroll(e)) => {
                return match ferrohsm_core::x509::parse_fingerprint(&e.fingerprint) {
                    Ok(claimed) if claimed == *fp => Ok(()),
                    _ => Err(ferrohsm_core::HsmError::Refused(format!(
                        "a host enrolls the certificate it connected with (key {fp}), no other"
                    ))),
                }
            }
            (Scope::Enrolling(_), _) => {
                return Err(ferrohsm_core::HsmError::Refused(
                    "this client's certificate is not registered: it may only redeem an enrollment code (`ferrohsm client enroll`)".into(),
                ))
            }
            (_, Call::Enroll(_)) => {
                return Err(ferrohsm_core::HsmError::Refused(
                    "an enrollment code is redeemed by an unregistered host over TLS, for the certificate it connects with".into(),
                ))
            }
            (Scope::All, _) => return Ok(()),
            (Scope::Partitions(_), _) => {}
        }
        let outside = |what: &str| {
            Err(ferrohsm_core::HsmError::Refused(format!(
                "{what} is not assigned to this client (the HSM SO assigns partitions: `ferrohsm client assign`)"
            )))
        };
        let partition = |p: &str| match self.allows(p) {
            true => Ok(()),
            false => outside(&format!("partition {p:?}")),
        };
        match call {
            Call::Login(l) => match (Role::parse(&l.role)?, l.partition.as_deref()) {
                (Role::PartitionSo | Role::CryptoOfficer | Role::CryptoUser, Some(p)) => {
                    partition(p)
                }
                _ => outside("the device (its security officer and Auditor)"),
            },
            Call::InitHsm(_) | Call::InitToken(_) | Call::AuditInit(_) => outside("the device"),
            Call::ReinitToken(t) => partition(&t.label),
            Call::InitPartition(i) => partition(&i.label),
            Call::ChangePassword(c) => match Role::parse(&c.role)? {
                Role::PartitionSo | Role::CryptoOfficer | Role::CryptoUser => {
                    partition(&c.partition)
                }
                _ => outside("the device (its security officer and Auditor)"),
            },
            Call::Find(f) => partition(&f.partition),
            Call::ObjectInfo(o) => partition(&o.partition),
            _ => Ok(()),
        }
    }

    /// Leaves out of a device description the partitions outside the scope.
    fn filter(&self, reply: &mut Reply) {
        if *self == Scope::All {
            return;
        }
        match reply {
            Reply::Summary(s) => s.partitions.retain(|p| self.allows(&p.label)),
            Reply::Text(t) => {
                // `info` answers with the description as JSON: filter it the same way.
                if let Ok(mut info) = convert::info_from_wire(t.clone()) {
                    info.partitions.retain(|p| self.allows(&p.label));
                    if let Ok(filtered) = convert::info_to_wire(&info) {
                        *t = filtered;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Answers one request.
pub fn handle(api: &mut dyn HsmApi, req: Request) -> Response {
    handle_in(api, req, &Scope::All)
}

/// Answers one request of a client with `scope`.
pub fn handle_in(api: &mut dyn HsmApi, req: Request, scope: &Scope) -> Response {
    if req.version != PROTOCOL_VERSION {
        return protocol_error(
            req.id,
            v1::error::Code::Unsupported,
            format!(
                "protocol version {} is not served here (this server speaks {PROTOCOL_VERSION})",
                req.version
            ),
        );
    }
    let Some(call) = req.call else {
        return protocol_error(
            req.id,
            v1::error::Code::Unsupported,
            "the request names no call this server knows (a newer client?)".into(),
        );
    };
    let is_info = matches!(call, Call::Info(_));
    let is_summary = matches!(call, Call::Summary(_));
    let result = scope
        .check(&call)
        .and_then(|()| answer(api, call))
        .map(|mut r| {
            if is_info || is_summary {
                scope.filter(&mut r);
            }
            r
        })
        .unwrap_or_else(|e| Reply::Error(error_to_wire(&e)));
    Response {
        id: req.id,
        result: Some(result),
    }
}

fn mech(name: &str) -> Result<Mechanism> {
    Mechanism::from_str(name)
}

fn params(c: &v1::Crypt) -> Params {
    Params {
        iv: c.iv.clone(),
        aad: c.aad.clone(),
        label: c.label.clone(),
    }
}

fn bytes(value: Vec<u8>) -> Reply {
    Reply::Bytes(v1::Bytes { value })
}

fn done() -> Reply {
    Reply::Done(v1::Empty {})
}

fn number(value: u64) -> Reply {
    Reply::Number(v1::Number { value })
}

fn handle_reply(handle: u64) -> Reply {
    Reply::Handles(v1::Handles {
        handles: vec![handle],
    })
}

fn spec(name: &str) -> Result<KeySpec> {
    KeySpec::from_str(name)
}

fn class_of(name: Option<&str>) -> Result<Option<ObjectClass>> {
    name.map(ObjectClass::from_name).transpose()
}

fn wrap_params(iv: Vec<u8>, aad: Vec<u8>, label: Vec<u8>) -> Params {
    Params { iv, aad, label }
}

fn answer(api: &mut dyn HsmApi, call: Call) -> Result<Reply> {
    Ok(match call {
        Call::Summary(_) => {
            let s = api.summary()?;
            Reply::Summary(v1::SummaryReply {
                serial: s.serial,
                state: s.state,
                label: s.label,
                auth_mode: s.auth_mode,
                partitions: s
                    .partitions
                    .into_iter()
                    .map(|p| v1::PartitionInfo {
                        id: p.id,
                        label: p.label,
                        initialised: p.initialised,
                    })
                    .collect(),
                tamper: s.tamper,
            })
        }
        Call::Login(l) => {
            let role = Role::parse(&l.role)?;
            let credential = convert::credential_from_wire(l.credential)?;
            let login = api.login(role, l.partition.as_deref(), credential)?;
            Reply::Login(v1::LoginReply { login })
        }
        Call::InitHsm(i) => {
            let init = InitHsm {
                label: i.label,
                mode: match i.auth_mode.as_str() {
                    "ped" => AuthMode::Ped,
                    "password" => AuthMode::Password,
                    other => {
                        return Err(HsmError::InvalidInput(format!(
                            "authentication is ped or password, not {other:?}"
                        )))
                    }
                },
                so: convert::new_credential_from_wire(i.so)?,
                domain: convert::new_credential_from_wire(i.domain)?,
                current_so: i
                    .current_so
                    .map(|c| convert::bare_credential_from_wire(Some(c)))
                    .transpose()?,
                confirm_destroy: i.confirm_destroy,
                backup: i.backup,
            };
            Reply::Imprints(convert::imprints_to_wire(api.init_hsm(init)?))
        }
        Call::InitPartition(i) => {
            let so = convert::new_credential_from_wire(i.so)?;
            let domain =
                match (i.domain, i.hsm_domain) {
                    (None, None) => PartitionDomain::None,
                    (Some(d), None) => {
                        PartitionDomain::New(convert::new_credential_from_wire(Some(d))?)
                    }
                    (None, Some(c)) => {
                        PartitionDomain::Hsm(convert::bare_credential_from_wire(Some(c))?)
                    }
                    (Some(_), Some(_)) => return Err(HsmError::InvalidInput(
                        "a partition joins one cloning domain: a new one or the HSM's, not both"
                            .into(),
                    )),
                };
            let current = i
                .current_so
                .map(|c| convert::bare_credential_from_wire(Some(c)))
                .transpose()?;
            Reply::Imprints(convert::imprints_to_wire(
                api.init_partition(&i.label, so, domain, current)?,
            ))
        }
        Call::InitRole(i) => {
            let secret = convert::new_credential_from_wire(i.secret)?;
            let made = api.init_role(i.login, Role::parse(&i.role)?, secret, i.confirm_destroy)?;
            Reply::Imprints(convert::imprints_to_wire(made.into_iter().collect()))
        }
        Call::ChangeSecret(c) => {
            let secret = convert::new_credential_from_wire(c.secret)?;
            let made = api.change_secret(c.login, secret)?;
            Reply::Imprints(convert::imprints_to_wire(made.into_iter().collect()))
        }
        Call::ChangePin(c) => {
            let keys = convert::bare_credential_from_wire(c.keys)?;
            let pin = c.new_pin.map(convert::ped_pin_from_wire).transpose()?;
            api.change_pin(c.login, keys, pin)?;
            done()
        }
        Call::AuditInit(a) => {
            let secret = convert::new_credential_from_wire(a.secret)?;
            let current = a
                .current
                .map(|c| convert::bare_credential_from_wire(Some(c)))
                .transpose()?;
            let made = api.audit_init(secret, current)?;
            Reply::Imprints(convert::imprints_to_wire(made.into_iter().collect()))
        }
        Call::SetHsmPolicy(p) => {
            api.set_hsm_policy(p.login, &p.name, &p.value)?;
            done()
        }
        Call::SetPartitionPolicy(p) => {
            api.set_partition_policy(p.login, &p.name, &p.value)?;
            done()
        }
        Call::CreatePartition(p) => number(u64::from(api.create_partition(p.login, &p.label)?)),
        Call::DeletePartition(p) => number(api.delete_partition(p.login, &p.label)?),
        Call::ResetRole(r) => {
            api.reset_role(r.login, Role::parse(&r.role)?)?;
            done()
        }
        Call::Activate(a) => {
            let challenge = convert::password_from_wire(a.challenge, "a challenge secret")?;
            api.activate(a.login, challenge)?;
            done()
        }
        Call::Deactivate(r) => Reply::Verified(v1::Verified {
            valid: api.deactivate(r.login, Role::parse(&r.role)?)?,
        }),
        Call::AuditConfig(a) => {
            Reply::AuditConfig(convert::audit_config_to_wire(&api.audit_config(a.login)?))
        }
        Call::SetAuditConfig(c) => {
            api.set_audit_config(c.login, convert::audit_config_from_wire(c.config)?)?;
            done()
        }
        Call::Witnesses(a) => Reply::Witnesses(v1::Witnesses {
            witnesses: api
                .witnesses(a.login)?
                .into_iter()
                .map(convert::witness_to_wire)
                .collect(),
        }),
        Call::AddWitness(w) => Reply::Witnesses(v1::Witnesses {
            witnesses: vec![convert::witness_to_wire(api.add_witness(w.login, &w.vkey)?)],
        }),
        Call::SubmitCosigned(c) => Reply::Strings(v1::Strings {
            values: api.submit_cosigned(c.login, &c.note)?,
        }),
        Call::RegisterClient(r) => {
            Reply::Clients(convert::clients_to_wire(vec![api.register_client(
                r.login,
                &r.name,
                &r.fingerprint,
            )?]))
        }
        Call::Clients(c) => Reply::Clients(convert::clients_to_wire(api.clients(c.login)?)),
        Call::AssignClient(a) => {
            Reply::Clients(convert::clients_to_wire(vec![api.assign_client(
                a.login,
                &a.client,
                &a.partition,
                a.assign,
            )?]))
        }
        Call::RevokeClient(r) => Reply::Clients(convert::clients_to_wire(vec![
            api.revoke_client(r.login, &r.client)?
        ])),
        Call::RekeyClient(r) => Reply::Clients(convert::clients_to_wire(vec![api.rekey_client(
            r.login,
            &r.name,
            &r.fingerprint,
        )?])),
        Call::IssueEnrollment(i) => Reply::Enrollment(convert::enrollment_to_wire(
            api.issue_enrollment(i.login, &i.name, &i.partitions, i.valid_for_s)?,
        )),
        Call::Enroll(e) => Reply::Clients(convert::clients_to_wire(vec![
            api.enroll(&e.code, &e.fingerprint)?
        ])),
        Call::CheckLogin(l) => {
            api.check_login(l.login)?;
            done()
        }
        Call::Logout(l) => {
            api.logout(l.login)?;
            Reply::Done(v1::Empty {})
        }
        Call::GenerateKey(g) => {
            let spec = KeySpec::from_str(&g.key_type)?;
            let opts = KeyOptions {
                label: g.label,
                id: g.object_id,
                extractable: g.extractable,
            };
            Reply::Handles(v1::Handles {
                handles: api.generate_key(g.login, spec, &opts)?,
            })
        }
        Call::GenerateKeys(g) => {
            let spec = KeySpec::from_str(&g.key_type)?;
            let each: Vec<KeyOptions> = g
                .keys
                .into_iter()
                .map(|k| convert::key_options_from_wire(Some(k)))
                .collect();
            Reply::HandleSets(v1::HandleSets {
                sets: api
                    .generate_keys(g.login, spec, &each)?
                    .into_iter()
                    .map(|handles| v1::Handles { handles })
                    .collect(),
            })
        }
        Call::FindObjects(f) => Reply::Objects(v1::Objects {
            objects: api
                .find_objects(f.login, f.label.as_deref())?
                .iter()
                .map(convert::object_to_wire)
                .collect(),
        }),
        Call::Sign(s) => bytes(api.sign(s.login, s.key, mech(&s.mechanism)?, &s.data)?),
        Call::Verify(v) => Reply::Verified(v1::Verified {
            valid: api.verify(v.login, v.key, mech(&v.mechanism)?, &v.data, &v.signature)?,
        }),
        Call::Encrypt(c) => {
            let p = params(&c);
            bytes(api.encrypt(c.login, c.key, mech(&c.mechanism)?, &p, &c.data)?)
        }
        Call::Decrypt(c) => {
            let p = params(&c);
            bytes(api.decrypt(c.login, c.key, mech(&c.mechanism)?, &p, &c.data)?)
        }
        Call::DestroyObject(d) => {
            api.destroy_object(d.login, d.handle)?;
            Reply::Done(v1::Empty {})
        }
        Call::Random(r) => bytes(api.random(r.length as usize)?),
        Call::Zeroize(z) => {
            api.zeroize(z.login, &z.reason)?;
            Reply::Done(v1::Empty {})
        }
        Call::Tamper(t) => {
            api.tamper(t.login)?;
            Reply::Done(v1::Empty {})
        }
        Call::Restart(r) => Reply::Epoch(v1::Epoch {
            epoch: api.restart(r.login)?,
        }),
        Call::AuditPublicKey(_) => Reply::Text(v1::Text {
            value: api.audit_public_key()?,
        }),
        Call::AuditRecords(a) => {
            Reply::AuditRecords(convert::records_to_wire(&api.audit_records(a.login)?))
        }
        Call::PendingCeremonies(a) => Reply::Pending(v1::PendingCeremonies {
            records: api
                .pending_ceremonies(a.login)?
                .into_iter()
                .map(|(r, n)| v1::PendingRecord {
                    record: r.to_bytes(),
                    cosignatures: u32::try_from(n).unwrap_or(u32::MAX),
                })
                .collect(),
        }),
        Call::AuditCheckpoint(a) => Reply::Text(v1::Text {
            value: api.audit_checkpoint(a.login)?,
        }),
        Call::CloneAccept(c) => Reply::Text(v1::Text {
            value: convert::clone_json(&api.clone_accept(c.login, c.replace)?)?,
        }),
        Call::CloneOffer(c) => {
            let target = convert::clone_from_json(c.hello.as_bytes(), "hello")?;
            let select = convert::clone_select_from_wire(&c)?;
            Reply::Text(v1::Text {
                value: convert::clone_json(&api.clone_offer(c.login, &target, &select)?)?,
            })
        }
        Call::CloneConfirm(c) => {
            let source = convert::clone_from_json(c.hello.as_bytes(), "hello")?;
            Reply::Text(v1::Text {
                value: api.clone_confirm(c.login, &source)?,
            })
        }
        Call::CloneExport(c) => bytes(
            convert::clone_json(&api.clone_export(c.login, &c.session, &c.proof, c.from, c.max)?)?
                .into_bytes(),
        ),
        Call::CloneImport(c) => {
            let batch = convert::clone_from_json(&c.batch, "batch")?;
            Reply::Text(v1::Text {
                value: convert::clone_json(&api.clone_import(c.login, &c.session, &batch)?)?,
            })
        }
        Call::BackupExport(c) => {
            let select = convert::clone_select_from_wire(&c)?;
            bytes(api.backup_export(c.login, &select)?)
        }
        Call::BackupVerify(c) => Reply::Text(v1::Text {
            value: convert::clone_json(&api.backup_verify(c.login, &c.batch)?)?,
        }),
        Call::BackupRestore(c) => Reply::Text(v1::Text {
            value: convert::clone_json(&api.backup_restore(c.login, &c.batch, c.replace)?)?,
        }),
        Call::HaNote(n) => {
            api.ha_note(n.login, &n.group, &n.event, &n.member)?;
            Reply::Done(v1::Empty {})
        }
        Call::DestroyedObjects(a) => Reply::Text(v1::Text {
            value: convert::clone_json(&api.destroyed_objects(a.login)?)?,
        }),
        Call::Gp(mut g) => {
            let call = convert::clone_from_json(g.json.as_bytes(), "GlobalPlatform call");
            zeroize::Zeroize::zeroize(&mut g.json);
            Reply::Text(v1::Text {
                value: convert::clone_json(&api.gp(g.login, call?)?)?,
            })
        }
        Call::AuditCheckExtends(a) => Reply::Number(v1::Number {
            value: api.audit_check_extends(a.login, &a.note)?,
        }),
        Call::AuditExport(a) => bytes(api.audit_export(a.login, a.from, &a.earlier)?.to_bytes()),
        Call::AuditVerify(a) => Reply::Report(convert::report_to_wire(&api.audit_verify(a.login)?)),
        Call::Info(_) => Reply::Text(convert::info_to_wire(&api.info()?)?),
        Call::StateGeneration(_) => number(api.state_generation()?),
        Call::InitToken(t) => {
            let pin = convert::password_from_wire(t.so_password, "an SO password")?;
            number(u64::from(api.init_token(&t.label, pin)?))
        }
        Call::ReinitToken(t) => {
            let pin = convert::password_from_wire(t.so_password, "an SO password")?;
            api.reinit_token(&t.label, pin)?;
            done()
        }
        Call::ChangePassword(c) => {
            let role = Role::parse(&c.role)?;
            let old = convert::password_from_wire(c.old_password, "a password")?;
            let new = convert::password_from_wire(c.new_password, "a password")?;
            api.change_password(role, &c.partition, old, new)?;
            done()
        }
        Call::Find(f) => {
            let filter = ObjectFilter {
                label: f.label,
                id: f.object_id,
                class: class_of(f.class.as_deref())?,
            };
            Reply::Objects(v1::Objects {
                objects: api
                    .find(f.login, &f.partition, &filter)?
                    .iter()
                    .map(convert::object_to_wire)
                    .collect(),
            })
        }
        Call::ObjectInfo(o) => Reply::Objects(v1::Objects {
            objects: vec![convert::object_to_wire(&api.object_info(
                o.login,
                &o.partition,
                o.handle,
            )?)],
        }),
        Call::GenerateKeyWith(g) => Reply::Handles(v1::Handles {
            handles: api.generate_key_with(
                g.login,
                spec(&g.key_type)?,
                &convert::key_options_from_wire(g.key),
                &convert::key_template_from_wire(g.template)?,
            )?,
        }),
        Call::CreateObject(c) => {
            let login = c.login;
            handle_reply(api.create_object(login, convert::new_object_from_wire(c)?)?)
        }
        Call::ImportPublicKey(i) => handle_reply(api.import_public_key(
            i.login,
            spec(&i.key_type)?,
            &i.spki,
            &convert::key_options_from_wire(i.key),
            &convert::key_template_from_wire(i.template)?,
        )?),
        Call::KeyValue(k) => Reply::Bytes(v1::Bytes {
            value: api.key_value(k.login, k.handle)?.to_vec(),
        }),
        Call::ImportKey(mut i) => {
            let mut import = || {
                api.import_key(
                    i.login,
                    ObjectClass::from_name(&i.class)?,
                    i.key_type.as_deref().map(spec).transpose()?,
                    &i.material,
                    &convert::key_options_from_wire(i.key.clone()),
                    &convert::key_template_from_wire(i.template.clone())?,
                )
            };
            let made = import();
            // The clear key goes as soon as the engine has it.
            zeroize::Zeroize::zeroize(&mut i.material);
            handle_reply(made?)
        }
        Call::StageImprint(st) => {
            let staged = api.stage_imprint(
                convert::ped_imprint_from_wire(st.imprint.unwrap_or_default())?,
                convert::secret_type_from_wire(&st.secret_type)?,
                &st.label,
            )?;
            Reply::Staged(v1::Staged {
                stage: staged.stage,
                imprint: Some(convert::imprint_to_wire(staged.report)),
            })
        }
        Call::SecretInUse(t) => Reply::Verified(v1::Verified {
            valid: api.secret_in_use(&t.value)?,
        }),
        Call::SetKeyTrusted(t) => Reply::Number(v1::Number {
            value: api.set_key_trusted(t.login, &t.label, t.trusted)?,
        }),
        Call::CopyObject(c) => Reply::Number(v1::Number {
            value: api.copy_object(
                c.login,
                c.handle,
                &ferrohsm_core::object::CopyChanges {
                    label: c.label,
                    id: c.object_id,
                    token: c.token,
                    sensitive: c.sensitive,
                    extractable: c.extractable,
                    copyable: c.copyable,
                    session_owner: c.session_owner,
                },
            )?,
        }),
        Call::RelabelObject(r) => {
            api.relabel_object(
                r.login,
                r.handle,
                r.label.as_deref(),
                r.object_id.as_deref(),
            )?;
            done()
        }
        Call::DropSessionObjects(d) => {
            api.drop_session_objects(d.login, d.owner)?;
            done()
        }
        Call::WrappedKeyLen(w) => {
            number(api.wrapped_key_len(w.login, w.wrapper, mech(&w.mechanism)?, w.target)? as u64)
        }
        Call::WrapKey(w) => {
            let p = wrap_params(w.iv, w.aad, w.label);
            bytes(api.wrap_key(w.login, w.wrapper, mech(&w.mechanism)?, &p, w.target)?)
        }
        Call::UnwrapKey(u) => {
            let p = wrap_params(u.iv, u.aad, u.label);
            let opts = convert::key_options_from_wire(u.key);
            let tpl = convert::key_template_from_wire(u.template)?;
            handle_reply(api.unwrap_key(
                u.login,
                Unwrap {
                    unwrapper: u.unwrapper,
                    mech: mech(&u.mechanism)?,
                    params: &p,
                    wrapped: &u.wrapped,
                    class: ObjectClass::from_name(&u.class)?,
                    spec: u.key_type.as_deref().map(spec).transpose()?,
                    opts: &opts,
                    tpl: &tpl,
                },
            )?)
        }
        Call::DeriveEcdh(d) => handle_reply(api.derive_ecdh(
            d.login,
            d.base,
            &d.peer_point,
            spec(&d.key_type)?,
            &convert::key_options_from_wire(d.key),
            &convert::key_template_from_wire(d.template)?,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped() -> Scope {
        Scope::Partitions(vec!["mine".into()])
    }

    fn login(role: &str, partition: Option<&str>) -> Call {
        Call::Login(v1::Login {
            role: role.into(),
            partition: partition.map(Into::into),
            credential: None,
        })
    }

    /// A network client assigned one partition tries everything outside it; each try is
    /// refused before it reaches the HSM. Within its partition it is let through.
    #[test]
    fn a_scoped_client_reaches_nothing_outside_its_partitions() {
        let s = scoped();
        let refused = [
            login("hsm-so", None),
            login("auditor", None),
            login("co", Some("theirs")),
            login("so", Some("theirs")),
            login("co", None),
            Call::ChangePassword(v1::ChangePassword {
                role: "hsm-so".into(),
                partition: "mine".into(),
                ..Default::default()
            }),
            Call::ChangePassword(v1::ChangePassword {
                role: "co".into(),
                partition: "theirs".into(),
                ..Default::default()
            }),
            Call::InitHsm(Default::default()),
            Call::InitToken(v1::InitToken {
                label: "mine".into(),
                ..Default::default()
            }),
            Call::AuditInit(Default::default()),
            Call::ReinitToken(v1::InitToken {
                label: "theirs".into(),
                ..Default::default()
            }),
            Call::InitPartition(v1::InitPartition {
                label: "theirs".into(),
                ..Default::default()
            }),
            Call::Find(v1::Find {
                partition: "theirs".into(),
                ..Default::default()
            }),
            Call::ObjectInfo(v1::GetObject {
                partition: "theirs".into(),
                ..Default::default()
            }),
        ];
        for c in &refused {
            assert!(
                matches!(s.check(c), Err(ferrohsm_core::HsmError::Refused(_))),
                "{} was let through",
                call_name(&Some(c.clone()))
            );
            assert!(Scope::All.check(c).is_ok(), "a local client is not scoped");
        }
        for c in [
            login("co", Some("mine")),
            login("cu", Some("mine")),
            Call::Find(v1::Find {
                partition: "mine".into(),
                ..Default::default()
            }),
        ] {
            assert!(s.check(&c).is_ok());
        }
        // The slot list it gets holds only its partitions.
        let mut r = Reply::Summary(v1::SummaryReply {
            partitions: vec![
                v1::PartitionInfo {
                    id: 1,
                    label: "mine".into(),
                    initialised: true,
                },
                v1::PartitionInfo {
                    id: 2,
                    label: "theirs".into(),
                    initialised: true,
                },
            ],
            ..Default::default()
        });
        s.filter(&mut r);
        let Reply::Summary(sum) = r else {
            panic!("not a summary")
        };
        assert_eq!(sum.partitions.len(), 1);
        assert_eq!(sum.partitions[0].label, "mine");
    }

    /// An unregistered host let through the handshake to enroll may redeem a code for its
    /// own key and do nothing else; nobody else may redeem one.
    #[test]
    fn an_enrolling_host_may_only_enroll_its_own_key() {
        let mine = "11".repeat(32);
        let s = Scope::Enrolling(mine.clone());
        let enroll = |fp: &str| {
            Call::Enroll(v1::Enroll {
                code: String::new(),
                fingerprint: fp.into(),
            })
        };
        assert!(s.check(&enroll(&mine)).is_ok());
        assert!(s.check(&enroll(&mine.to_uppercase())).is_ok());
        for c in [
            enroll(&"22".repeat(32)),
            enroll("junk"),
            Call::Summary(Default::default()),
            Call::Info(Default::default()),
            Call::Random(Default::default()),
            login("co", Some("mine")),
            Call::Find(v1::Find {
                partition: "mine".into(),
                ..Default::default()
            }),
        ] {
            assert!(
                matches!(s.check(&c), Err(ferrohsm_core::HsmError::Refused(_))),
                "{} was let through",
                call_name(&Some(c.clone()))
            );
        }
        assert!(!s.allows("mine"));
        // Registered and local clients have no code to redeem.
        assert!(scoped().check(&enroll(&mine)).is_err());
        assert!(Scope::All.check(&enroll(&mine)).is_err());
    }
}
