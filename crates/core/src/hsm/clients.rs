//! Registered clients: the application hosts a network HSM serves, each known by its
//! certificate's SubjectPublicKeyInfo fingerprint and assigned the partitions it may use. The
//! HSM SO registers, assigns and revokes them; every change is audited.

use super::*;

/// A registered client. Nothing secret: a fingerprint names a public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The operator's name for the host.
    pub name: String,
    /// SHA-256 of its certificate's SubjectPublicKeyInfo, lower-case hex.
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
        let fingerprint = crate::x509::parse_fingerprint(fingerprint)?;
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
            t.put("client", &c.fingerprint, &c)?;
            t.event(&e)
        })?;
        Ok(c)
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

    /// The live (registered, not revoked) client with this key, for a server deciding whom
    /// it serves. No login: a fingerprint names a public key.
    pub fn client_by_fingerprint(&mut self, fingerprint: &str) -> Result<Option<ClientInfo>> {
        let fp = crate::x509::parse_fingerprint(fingerprint)?;
        Ok(self
            .store
            .read(|t| t.get::<ClientInfo>("client", &fp))?
            .filter(|c| c.revoked.is_none()))
    }
}
