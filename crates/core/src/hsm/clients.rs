//! Registered clients: the application hosts a network HSM serves, each known by its
//! certificate's SubjectPublicKeyInfo fingerprint and assigned the partitions it may use. The
//! HSM SO registers, assigns and revokes them, or invites a host with a one-time enrollment
//! code with which the host registers its own certificate; every change is audited.

use super::*;

/// The longest an enrollment code may stay valid.
pub const MAX_ENROLLMENT_SECONDS: u64 = 20 * 60;

/// The characters of an enrollment code: Crockford's base 32 (no I, L, O, U), so a code
/// read aloud or copied by hand survives.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 16 characters of 5 bits: 80 bits, far beyond guessing within a code's 20 minutes.
const CODE_CHARS: usize = 16;

/// A one-time enrollment code as issued: the code itself (shown once, to the HSM SO; the
/// HSM keeps only its hash) and what redeeming it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The code, grouped `XXXX-XXXX-XXXX-XXXX`. Empty wherever it is listed after issue.
    pub code: String,
    /// The name the host will be registered under.
    pub name: String,
    /// The partitions it will be assigned.
    pub partitions: Vec<String>,
    /// When the code stops working (Unix seconds).
    pub expires: u64,
}

/// What the HSM keeps of an issued code.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredEnrollment {
    name: String,
    partitions: Vec<String>,
    issued: String,
    expires: u64,
    /// The fingerprint that redeemed it; a code works once.
    redeemed: Option<String>,
}

/// An enrollment code as a person types it, normalised to its 16 characters: case, dashes
/// and spaces do not matter, and O, I and L read as 0, 1 and 1. An error for anything else.
pub fn parse_enrollment_code(s: &str) -> Result<String> {
    let mut out = String::with_capacity(CODE_CHARS);
    for c in s.trim().chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !CODE_ALPHABET.contains(&(c as u8)) || out.len() == CODE_CHARS {
            return Err(HsmError::InvalidInput(
                "an enrollment code is 16 letters and digits, as the HSM SO was given it (XXXX-XXXX-XXXX-XXXX)".into(),
            ));
        }
        out.push(c);
    }
    if out.len() != CODE_CHARS {
        return Err(HsmError::InvalidInput(format!(
            "an enrollment code is 16 letters and digits; this one has {}",
            out.len()
        )));
    }
    Ok(out)
}

/// The key an issued code is stored under: its hash, so that reading the store does not
/// give anyone a usable code.
fn code_id(normalised: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        normalised.as_bytes(),
    ))
}

/// A client's identity as an operator gives it: a certificate key's fingerprint (hex, any
/// case, colons allowed), or `uid:N` / `gid:N` for a local user or group; normalised.
pub fn parse_client_identity(s: &str) -> Result<String> {
    for kind in ["uid", "gid"] {
        if let Some(n) = s
            .trim()
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix(':'))
        {
            return n
                .parse::<u32>()
                .map(|n| format!("{kind}:{n}"))
                .map_err(|_| {
                    HsmError::InvalidInput(format!("{kind}:{n} is not a {kind} (a number)"))
                });
        }
    }
    crate::x509::parse_fingerprint(s)
}

fn check_client_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(HsmError::InvalidInput(format!(
            "a client name is 1-64 letters, digits, '-', '_' or '.', not {name:?}"
        )));
    }
    Ok(())
}

/// Adds a client, refusing a name or key already registered (revoked ones included).
fn insert_client(t: &mut Txn<'_>, c: &ClientInfo) -> Result<()> {
    for (_, other) in t.list::<ClientInfo>("client")? {
        if other.name == c.name || other.fingerprint == c.fingerprint {
            return Err(HsmError::Refused(format!(
                "client {:?} (key {}) is already registered{}",
                other.name,
                other.fingerprint,
                if other.revoked.is_some() {
                    ", and revoked"
                } else {
                    ""
                }
            )));
        }
    }
    t.put("client", &c.fingerprint, c)
}

/// A registered client. Nothing secret: a fingerprint names a public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The operator's name for the host.
    pub name: String,
    /// Who it is: for a network client, SHA-256 of its certificate's SubjectPublicKeyInfo
    /// (lower-case hex); for a local one, `uid:N` or `gid:N` (its Unix user or group).
    pub fingerprint: String,
    /// Labels of the partitions it may use.
    pub partitions: Vec<String>,
    /// When it was registered (UTC).
    pub registered: String,
    /// When it was revoked, if it was. A revoked client stays listed, refused.
    pub revoked: Option<String>,
}

impl Hsm {
    fn client_change(&mut self, s: &Session, event: &str, action: &str) -> Result<()> {
        if s.role != Role::HsmSo {
            return Err(self.refuse(
                event,
                s.role.short(),
                s.partition(),
                need("HSM SO", action, s.role),
            ));
        }
        Ok(())
    }

    fn client_named(t: &mut Txn<'_>, name: &str) -> Result<ClientInfo> {
        t.list::<ClientInfo>("client")?
            .into_iter()
            .map(|(_, c)| c)
            .find(|c| c.name == name || c.fingerprint == name)
            .ok_or_else(|| HsmError::NotFound(format!("no client named {name:?}")))
    }

    /// Registers a client by its key's fingerprint (HSM SO). Names and fingerprints are
    /// unique; a revoked client's fingerprint cannot come back under another name.
    pub fn register_client(
        &mut self,
        s: &Session,
        name: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo> {
        self.client_change(s, "client-register", "registering a client")?;
        let fingerprint = parse_client_identity(fingerprint)?;
        check_client_name(name)?;
        let c = ClientInfo {
            name: name.into(),
            fingerprint: fingerprint.clone(),
            partitions: vec![],
            registered: crate::time::now_rfc3339(),
            revoked: None,
        };
        let e = self.ev(
            "client-register",
            "hsm-so",
            None,
            Some(name),
            &format!("success: key {fingerprint}"),
        );
        self.store.write(|t| {
            insert_client(t, &c)?;
            t.event(&e)
        })?;
        Ok(c)
    }

    /// Gives a client a new certificate key (HSM SO): its name and partitions stay; the old
    /// key is refused from then on (its open connections close) and cannot be registered
    /// again. How a host's certificate rotates without the server restarting.
    pub fn rekey_client(
        &mut self,
        s: &Session,
        client: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo> {
        self.client_change(s, "client-rekey", "changing a client's key")?;
        let fp = parse_client_identity(fingerprint)?;
        let e = self.ev(
            "client-rekey",
            "hsm-so",
            None,
            Some(client),
            &format!("success: new key {fp}"),
        );
        self.store.write(|t| {
            let old = Self::client_named(t, client)?;
            if old.revoked.is_some() {
                return Err(HsmError::Refused(format!(
                    "client {:?} is revoked",
                    old.name
                )));
            }
            if old.fingerprint == fp {
                return Err(HsmError::Refused(format!(
                    "key {fp} is already client {:?}'s",
                    old.name
                )));
            }
            let new = ClientInfo {
                fingerprint: fp.clone(),
                ..old.clone()
            };
            // The old key stays on record, revoked, so that it cannot come back.
            let retired = ClientInfo {
                name: format!(
                    "{}~{}",
                    old.name,
                    old.fingerprint.get(..16).unwrap_or(&old.fingerprint)
                ),
                revoked: Some(now_rfc3339()),
                ..old.clone()
            };
            t.delete("client", &old.fingerprint)?;
            insert_client(t, &new)?;
            t.put("client", &retired.fingerprint, &retired)?;
            t.event(&e)?;
            Ok(new)
        })
    }

    /// Issues a one-time enrollment code (HSM SO): the host that presents it within
    /// `valid_for_s` seconds (at most 20 minutes) is registered under `name` with its own
    /// certificate's key, and assigned `partitions`. The code is returned once; the HSM
    /// keeps only its hash.
    pub fn issue_enrollment(
        &mut self,
        s: &Session,
        name: &str,
        partitions: &[String],
        valid_for_s: u64,
    ) -> Result<Enrollment> {
        self.client_change(s, "client-invite", "issuing enrollment codes")?;
        check_client_name(name)?;
        if !(1..=MAX_ENROLLMENT_SECONDS).contains(&valid_for_s) {
            return Err(HsmError::InvalidInput(format!(
                "an enrollment code is valid for 1 second to 20 minutes, not {valid_for_s} s"
            )));
        }
        let mut raw = [0u8; CODE_CHARS];
        crypto::fill_random(&mut raw);
        let code: String = raw
            .iter()
            .map(|b| CODE_ALPHABET[(b & 31) as usize] as char)
            .collect();
        let now = now_unix();
        let stored = StoredEnrollment {
            name: name.into(),
            partitions: partitions.to_vec(),
            issued: now_rfc3339(),
            expires: now + valid_for_s,
            redeemed: None,
        };
        let e = self.ev(
            "client-invite",
            "hsm-so",
            None,
            Some(name),
            &format!(
                "success: valid until {}, partitions [{}]",
                crate::time::rfc3339(stored.expires),
                partitions.join(",")
            ),
        );
        self.store.write(|t| {
            for p in partitions {
                Self::partition_by_label(t, p)?;
            }
            for (_, other) in t.list::<ClientInfo>("client")? {
                if other.name == name {
                    return Err(HsmError::Refused(format!(
                        "a client named {name:?} is already registered"
                    )));
                }
            }
            t.put("enrollment", &code_id(&code), &stored)?;
            t.event(&e)
        })?;
        let grouped = code
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        Ok(Enrollment {
            code: grouped,
            name: name.into(),
            partitions: partitions.to_vec(),
            expires: stored.expires,
        })
    }

    /// Whether any enrollment code could still be redeemed: only then does a server let an
    /// unregistered certificate through its handshake (to redeem a code and nothing else).
    pub fn enrollment_open(&mut self) -> Result<bool> {
        let now = now_unix();
        Ok(self
            .store
            .read(|t| t.list::<StoredEnrollment>("enrollment"))?
            .into_iter()
            .any(|(_, e)| e.redeemed.is_none() && e.expires > now))
    }

    /// Redeems an enrollment code for the certificate key `fingerprint` (the one the host
    /// proved in its TLS handshake): registers it under the code's name with its partitions.
    /// No login: the code is the HSM SO's authority, once, until it expires. Every attempt,
    /// refused ones included, is audited (never with the code).
    pub fn redeem_enrollment(&mut self, code: &str, fingerprint: &str) -> Result<ClientInfo> {
        // Only a certificate key enrolls (a local user is registered by the HSM SO).
        let fp = crate::x509::parse_fingerprint(fingerprint)?;
        let outcome = parse_enrollment_code(code).and_then(|code| {
            let id = code_id(&code);
            let now = now_unix();
            self.store.write(|t| {
                let mut stored =
                    t.get::<StoredEnrollment>("enrollment", &id)?
                        .ok_or_else(|| {
                            HsmError::Refused("no such enrollment code was issued".into())
                        })?;
                if stored.redeemed.is_some() {
                    return Err(HsmError::Refused(
                        "this enrollment code was already used".into(),
                    ));
                }
                if stored.expires <= now {
                    return Err(HsmError::Refused(format!(
                        "this enrollment code expired at {}",
                        crate::time::rfc3339(stored.expires)
                    )));
                }
                let c = ClientInfo {
                    name: stored.name.clone(),
                    fingerprint: fp.clone(),
                    partitions: stored.partitions.clone(),
                    registered: now_rfc3339(),
                    revoked: None,
                };
                insert_client(t, &c)?;
                stored.redeemed = Some(fp.clone());
                t.put("enrollment", &id, &stored)?;
                Ok(c)
            })
        });
        let (name, result) = match &outcome {
            Ok(c) => (
                c.name.clone(),
                format!("success: key {fp}, partitions [{}]", c.partitions.join(",")),
            ),
            Err(e) => (format!("key {fp}"), format!("failure: {e}")),
        };
        let e = self.ev("client-enroll", "client", None, Some(&name), &result);
        self.store.event(&e)?;
        outcome
    }

    /// Every registered client, revoked ones included (HSM SO).
    pub fn clients(&mut self, s: &Session) -> Result<Vec<ClientInfo>> {
        s.require_hsm_so("listing clients")?;
        let mut v: Vec<ClientInfo> = self
            .store
            .read(|t| t.list::<ClientInfo>("client"))?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Lets a client use a partition (`assign`), or stops it (HSM SO).
    pub fn assign_client(
        &mut self,
        s: &Session,
        client: &str,
        partition: &str,
        assign: bool,
    ) -> Result<ClientInfo> {
        let event = if assign {
            "client-assign"
        } else {
            "client-unassign"
        };
        self.client_change(s, event, "assigning partitions to clients")?;
        let e = self.ev(event, "hsm-so", Some(partition), Some(client), "success");
        self.store.write(|t| {
            let mut c = Self::client_named(t, client)?;
            if c.revoked.is_some() {
                return Err(HsmError::Refused(format!("client {:?} is revoked", c.name)));
            }
            Self::partition_by_label(t, partition)?;
            c.partitions.retain(|p| p != partition);
            if assign {
                c.partitions.push(partition.into());
                c.partitions.sort();
            }
            t.put("client", &c.fingerprint, &c)?;
            t.event(&e)?;
            Ok(c)
        })
    }

    /// Revokes a client (HSM SO): refused from then on; it stays listed.
    pub fn revoke_client(&mut self, s: &Session, client: &str) -> Result<ClientInfo> {
        self.client_change(s, "client-revoke", "revoking clients")?;
        let e = self.ev("client-revoke", "hsm-so", None, Some(client), "success");
        self.store.write(|t| {
            let mut c = Self::client_named(t, client)?;
            if c.revoked.is_none() {
                c.revoked = Some(crate::time::now_rfc3339());
                t.put("client", &c.fingerprint, &c)?;
            }
            t.event(&e)?;
            Ok(c)
        })
    }

    /// Records a client's connection (`admitted`) or its refusal, durably, before the server
    /// serves or closes it (fail closed: an error here means the connection is not served).
    /// `peer` says who it was (user and process ids, or a certificate's fingerprint); `why`
    /// says why a refusal was made.
    pub fn record_connection(&mut self, peer: &str, admitted: bool, why: &str) -> Result<()> {
        let (event, outcome) = match admitted {
            true => ("connection", "success".to_string()),
            false => ("connection-refused", format!("failure: {why}")),
        };
        let e = self.ev(event, "client", None, Some(peer), &outcome);
        self.store.event(&e)
    }

    /// The registration of a local peer: its user's, else its group's; revoked ones
    /// included (the server refuses those). `None`: not registered (a user the server's
    /// configuration admits then reaches the whole HSM, as before registration existed).
    pub fn local_client(&mut self, uid: u32, gid: u32) -> Result<Option<ClientInfo>> {
        self.store.read(|t| {
            Ok(
                match t.get::<ClientInfo>("client", &format!("uid:{uid}"))? {
                    Some(c) => Some(c),
                    None => t.get::<ClientInfo>("client", &format!("gid:{gid}"))?,
                },
            )
        })
    }

    /// The live (registered, not revoked) client with this key, for a server deciding whom
    /// it serves. No login: a fingerprint names a public key.
    pub fn client_by_fingerprint(&mut self, fingerprint: &str) -> Result<Option<ClientInfo>> {
        let fp = parse_client_identity(fingerprint)?;
        Ok(self
            .store
            .read(|t| t.get::<ClientInfo>("client", &fp))?
            .filter(|c| c.revoked.is_none()))
    }
}
