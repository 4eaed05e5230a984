//! The service layer: one decoded request in, one response out, through the HSM API. No
//! I/O here; the transport (`listener`) reads and writes frames.

use std::str::FromStr;

use ferrohsm_core::api::HsmApi;
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::KeyOptions;
use ferrohsm_core::{Result, Role};
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
        Some(Call::AuditExport(_)) => "audit-export",
        Some(Call::AuditVerify(_)) => "audit-verify",
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

/// Answers one request.
pub fn handle(api: &mut dyn HsmApi, req: Request) -> Response {
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
    let result = answer(api, call).unwrap_or_else(|e| Reply::Error(error_to_wire(&e)));
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
                .map(convert::key_options_from_wire)
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
        Call::AuditExport(a) => bytes(api.audit_export(a.login, a.from, &a.earlier)?.to_bytes()),
        Call::AuditVerify(a) => Reply::Report(convert::report_to_wire(&api.audit_verify(a.login)?)),
    })
}
