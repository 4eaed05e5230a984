//! Partitions and policies: HSM and partition policies, creating, initialising and deleting
//! partitions (and `C_InitToken`'s path, which the HSM policy gates).

use super::*;

impl Hsm {
    /// Sets an HSM policy (HSM SO only).
    pub fn set_hsm_policy(&mut self, s: &Session, name: &str, value: &str) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if s.role != Role::HsmSo {
            return Err(self.refuse(
                "hsm-policy",
                s.role.short(),
                s.partition(),
                need("HSM SO", "changing HSM policy", s.role),
            ));
        }
        let e = self.ev(
            "hsm-policy",
            "hsm-so",
            None,
            Some(&format!("{name}={value}")),
            "success",
        );
        self.store.write(|t| {
            let mut d = Self::device(t)?;
            d.policy.set(name, value)?;
            t.put("device", "", &d)?;
            t.event(&e)
        })
    }

    /// Sets a policy of the session's partition (Partition SO only). A value the HSM policy
    /// forbids is refused, naming the HSM policy.
    pub fn set_partition_policy(&mut self, s: &Session, name: &str, value: &str) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if s.role != Role::PartitionSo {
            return Err(self.refuse(
                "partition-policy",
                s.role.short(),
                s.partition(),
                need("Partition SO", "changing partition policy", s.role),
            ));
        }
        if name == "init-token" {
            return Err(HsmError::InvalidInput(
                "init-token is an HSM policy (`ferrohsm hsm policy set init-token on`)".into(),
            ));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let e = self.ev(
            "partition-policy",
            "so",
            s.partition(),
            Some(&format!("{name}={value}")),
            "success",
        );
        self.store.write(|t| {
            let d = Self::device(t)?;
            let mut p = Self::partition_by_id(t, id)?;
            p.policy.set(name, value)?;
            let over = p.policy.exceeds(&d.policy);
            if over.contains(&name) {
                return Err(HsmError::Refused(format!(
                    "HSM policy {name} is off; the HSM SO must allow it first"
                )));
            }
            if !p.policy.activation {
                p.activations.clear();
            }
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })
    }

    /// Creates a partition (HSM SO only). Its id is the next free number and never changes.
    pub fn create_partition(&mut self, s: &Session, label: &str) -> Result<u32> {
        if s.role != Role::HsmSo {
            return Err(self.refuse(
                "partition-create",
                s.role.short(),
                s.partition(),
                need("HSM SO", "creating a partition", s.role),
            ));
        }
        self.insert_partition(label, "hsm-so")
    }

    /// `C_InitToken` on the spare token of a password-authenticated HSM: creates the partition
    /// labelled `label` (with the next id) and makes `so_password` its Partition SO's password,
    /// in no cloning domain. Refused on PED-authenticated HSMs, where partitions are
    /// created by the HSM SO with PED keys.
    pub fn init_token(&mut self, label: &str, so_password: Pin) -> Result<u32> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let (mode, allowed) = self.store.read(|t| {
            let d = Self::device(t)?;
            Ok((d.mode, d.policy.init_token))
        })?;
        if mode == AuthMode::Password && !allowed {
            return Err(self.refuse("partition-create", "none", Some(label), HsmError::Refused(
                "C_InitToken may not create partitions on this HSM: the HSM SO allows it with `ferrohsm hsm policy set init-token on`, or creates partitions with `ferrohsm partition create`".into())));
        }
        if mode != AuthMode::Password {
            return Err(self.refuse("partition-create", "none", Some(label), HsmError::Refused(
                "tokens of a PED-authenticated HSM are created by the HSM SO (`ferrohsm partition create`)".into())));
        }
        let id = self.insert_partition(label, "none")?;
        // No credential here opens a cloning domain: such a token clones only once its
        // Partition SO re-initialises it into one (`ferrohsm partition init`).
        self.init_partition(
            label,
            NewSecret::Password(so_password),
            DomainChoice::None,
            None,
        )?;
        Ok(id)
    }

    pub(super) fn insert_partition(&mut self, label: &str, by: &str) -> Result<u32> {
        let label = label.trim();
        if label.is_empty() || label.len() > 32 {
            return Err(HsmError::InvalidInput(
                "a partition label is 1 to 32 characters (it becomes the PKCS#11 token label)"
                    .into(),
            ));
        }
        let e = self.ev("partition-create", by, Some(label), None, "success");
        self.store.write(|t| {
            let mut d = Self::device(t)?;
            if t.list::<Partition>("partition")?
                .iter()
                .any(|(_, p)| p.label == label)
            {
                return Err(HsmError::InvalidInput(format!(
                    "a partition labelled {label:?} exists already"
                )));
            }
            let id = d.next_partition;
            d.next_partition += 1;
            let p = Partition {
                id,
                label: label.to_string(),
                created: now_rfc3339(),
                initialised: None,
                policy: Policy::partition_default(),
                so: None,
                co: None,
                cu: None,
                legacy_domain: None,
                domain_sealed: None,
                domain_id: None,
                activations: BTreeMap::new(),
                next_handle: 1,
            };
            t.put("partition", &pid(id), &p)?;
            t.put("device", "", &d)?;
            t.event(&e)?;
            Ok(id)
        })
    }

    /// Deletes a partition and every object in it (HSM SO only).
    pub fn delete_partition(&mut self, s: &Session, label: &str) -> Result<u64> {
        if s.role != Role::HsmSo {
            return Err(self.refuse(
                "partition-delete",
                s.role.short(),
                s.partition(),
                need("HSM SO", "deleting a partition", s.role),
            ));
        }
        let e = self.ev("partition-delete", "hsm-so", Some(label), None, "success");
        self.store.write(|t| {
            let p = Self::partition_by_label(t, label)?;
            let n = t.delete_partition_objects(p.id)?;
            t.delete("partition", &pid(p.id))?;
            t.event(&e)?;
            Ok(n as u64)
        })
    }

    /// Initialises a created partition: imprints its Partition SO and joins a cloning domain.
    /// Re-initialising an initialised partition needs its current Partition SO and destroys
    /// its roles and objects.
    pub fn init_partition(
        &mut self,
        label: &str,
        so: NewSecret<'_>,
        domain: DomainChoice<'_>,
        current_so: Option<Credential<'_>>,
    ) -> Result<Vec<Imprinted>> {
        let (mode, hsm_policy, initialised) = self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_label(t, label)?;
            Ok((d.mode, d.policy.clone(), p.initialised.is_some()))
        })?;
        if initialised {
            let Some(cred) = current_so else {
                return Err(self.refuse("partition-init", "none", Some(label), HsmError::Refused(format!(
                    "partition {label} is initialised; re-initialising it needs its current Partition SO and destroys its keys"))));
            };
            self.login(Role::PartitionSo, Some(label), cred)?;
        }
        let (so_method, so_auth, so_imp) = self.imprint(
            so,
            crate::pedkey::SecretType::So,
            format!("Partition SO of {label}"),
            mode,
            hsm_policy.m_of_n,
        )?;
        let (dom, dom_imp) = match domain {
            DomainChoice::None => (None, None),
            DomainChoice::Hsm(cred) => (Some(self.present_hsm_domain(cred, label)?), None),
            DomainChoice::Imprint(secret) => {
                let (v, id, imp) = self.imprint_domain(
                    secret,
                    format!("cloning domain of {label}"),
                    mode,
                    hsm_policy.m_of_n,
                )?;
                (Some((v, id)), imp)
            }
        };
        let dk = self.store.device_key()?.clone();
        let e = self.ev("partition-init", "so", Some(label), None, "success");
        self.store.write(|t| {
            let mut p = Self::partition_by_label(t, label)?;
            t.delete_partition_objects(p.id)?;
            p.wipe();
            // The Partition SO's role key wraps the domain (in the slot a Crypto Officer's
            // wraps the partition key): only its secret opens it, to seal it for a CO.
            p.so = Some(RoleAuth::new(
                &dk,
                &role_tag(Role::PartitionSo, Some(p.id)),
                so_method,
                &so_auth,
                dom.as_ref().map(|(v, _)| v),
            ));
            p.domain_id = dom.map(|(_, id)| id);
            p.initialised = Some(now_rfc3339());
            t.put("partition", &pid(p.id), &p)?;
            t.event(&e)
        })?;
        Ok(so_imp.into_iter().chain(dom_imp).collect())
    }
}
