//! Partition roles after login: imprinting the Crypto Officer and User, lockout resets,
//! activation, secret and PIN changes, and the checks every key operation starts with.

use super::*;

impl Hsm {
    /// Initialises the Crypto Officer (by the Partition SO) or the Crypto User (by the Crypto
    /// Officer). A new Crypto Officer gets a new partition master key, so re-initialising it
    /// destroys the partition's objects and needs `confirm_destroy`.
    pub fn init_role(
        &mut self,
        s: &Session,
        role: Role,
        secret: NewSecret<'_>,
        confirm_destroy: bool,
    ) -> Result<Option<Imprinted>> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let action = format!("initialising the {role}");
        match (role, s.role) {
            (Role::CryptoOfficer, Role::PartitionSo) | (Role::CryptoUser, Role::CryptoOfficer) => {}
            (Role::CryptoOfficer, have) => {
                return Err(self.refuse(
                    "role-init",
                    have.short(),
                    s.partition(),
                    need("Partition SO", &action, have),
                ))
            }
            (Role::CryptoUser, have) => {
                return Err(self.refuse(
                    "role-init",
                    have.short(),
                    s.partition(),
                    need("Crypto Officer", &action, have),
                ))
            }
            _ => {
                return Err(HsmError::InvalidInput(format!(
                    "{role} is not initialised with `role init`"
                )))
            }
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let (mode, allow_mofn, exists, objects) = self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_id(t, id)?;
            let n = t.count_objects(id)?;
            Ok((
                d.mode,
                p.policy.effective(&d.policy).m_of_n,
                p.role(role).is_some(),
                n,
            ))
        })?;
        if role == Role::CryptoOfficer && exists && !confirm_destroy {
            return Err(self.refuse("role-init", s.role.short(), s.partition(), HsmError::Refused(format!(
                "the Crypto Officer exists; a new one gets a new partition key, which destroys the partition's {objects} object(s) and its Crypto User: confirm with --confirm-destroy"))));
        }
        let label = s.partition_label.clone().unwrap_or_default();
        let (method, auth, imp) = self.imprint(
            secret,
            role.secret_type(),
            format!("{role} of {label}"),
            mode,
            allow_mofn,
        )?;
        let dk = self.store.device_key()?.clone();
        let pmk = match role {
            Role::CryptoOfficer => Secret32::random(),
            _ => s
                .pmk
                .clone()
                .ok_or_else(|| HsmError::State("session holds no partition key".into()))?,
        };
        let e = self.ev(
            "role-init",
            s.role.short(),
            s.partition(),
            Some(role.short()),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let ra = RoleAuth::new(&dk, &role_tag(role, Some(id)), method, &auth, Some(&pmk));
            if role == Role::CryptoOfficer {
                t.delete_partition_objects(id)?;
                p.cu = None;
                p.activations.clear();
                p.co = Some(ra);
                // The domain the Partition SO's login holds, sealed under the new partition
                // key for the Crypto Officer's clones.
                p.domain_sealed = s.domain.as_ref().map(|d| domain::seal_domain(&pmk, id, d));
            } else {
                p.activations.remove(role.short());
                p.cu = Some(ra);
            }
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })?;
        Ok(imp)
    }

    /// Clears a Crypto Officer's or Crypto User's lockout (Partition SO only).
    pub fn reset_role(&mut self, s: &Session, role: Role) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if s.role != Role::PartitionSo {
            return Err(self.refuse(
                "role-reset",
                s.role.short(),
                s.partition(),
                need("Partition SO", "resetting a lockout", s.role),
            ));
        }
        if !matches!(role, Role::CryptoOfficer | Role::CryptoUser) {
            return Err(HsmError::InvalidInput(
                "only the Crypto Officer or Crypto User can be reset".into(),
            ));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let e = self.ev(
            "role-reset",
            "so",
            s.partition(),
            Some(role.short()),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let r = p
                .role_mut(role)
                .ok_or_else(|| HsmError::State(format!("the {role} is not initialised")))?;
            r.failed = 0;
            r.locked = false;
            r.lock_until = None;
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })
    }

    /// Activates the session's Crypto Officer or Crypto User: caches its PED secret inside the
    /// HSM so that `challenge` alone logs it in, until deactivation, a policy change, a restart
    /// (unless auto-activation) or zeroize.
    pub fn activate(&mut self, s: &Session, challenge: Pin) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        if !matches!(s.role, Role::CryptoOfficer | Role::CryptoUser) {
            return Err(self.refuse("activate", s.role.short(), s.partition(), HsmError::Refused(format!(
                "activation is for the Crypto Officer or Crypto User; you are logged in as the {}", s.role))));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let pmk = s
            .pmk
            .clone()
            .ok_or_else(|| HsmError::State("session holds no partition key".into()))?;
        let (mode, eff, epoch) = self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_id(t, id)?;
            Ok((d.mode, p.policy.effective(&d.policy), d.boot_epoch))
        })?;
        if mode != AuthMode::Ped {
            return Err(HsmError::Refused("activation applies to PED-authenticated HSMs; on this HSM the password is the login".into()));
        }
        if !eff.activation {
            return Err(self.refuse("activate", s.role.short(), s.partition(), HsmError::Refused(format!(
                "partition policy activation is off; the Partition SO must allow it (`ferrohsm partition policy set --partition {} activation on`)",
                s.partition_label.as_deref().unwrap_or("<partition>")))));
        }
        let kdf = KdfParams::fresh();
        let auth = kdf.derive(challenge.expose())?;
        let dk = self.store.device_key()?.clone();
        let tag = format!("{}/activation", role_tag(s.role, Some(id)));
        let act = Activation {
            kdf: kdf.clone(),
            auth: RoleAuth::new(&dk, &tag, AuthMethod::Password { kdf }, &auth, Some(&pmk)),
            epoch,
            since: now_rfc3339(),
        };
        let e = self.ev("activate", s.role.short(), s.partition(), None, "success");
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            p.activations.insert(s.role.short().to_string(), act);
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })
    }

    /// Ends an activation (by the role itself or the Partition SO).
    pub fn deactivate(&mut self, s: &Session, role: Role) -> Result<bool> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let allowed = s.role == Role::PartitionSo || s.role == role;
        if !allowed || !matches!(role, Role::CryptoOfficer | Role::CryptoUser) {
            return Err(self.refuse("deactivate", s.role.short(), s.partition(), HsmError::Refused(format!(
                "deactivating the {role} needs that role or the Partition SO; you are logged in as the {}", s.role))));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let e = self.ev(
            "deactivate",
            s.role.short(),
            s.partition(),
            Some(role.short()),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let was = p.activations.remove(role.short()).is_some();
            t.put("partition", &pid(id), &p)?;
            t.event(&e)?;
            Ok(was)
        })
    }

    /// Replaces the session role's secret (the `changepw` of PED HSMs): a new secret through
    /// the PED dialogue (or a new password). Other roles are untouched.
    pub fn change_secret(
        &mut self,
        s: &Session,
        secret: NewSecret<'_>,
    ) -> Result<Option<Imprinted>> {
        if s.via_activation {
            // Whoever holds only the challenge secret would otherwise lock out the holder of
            // the physical key.
            let e = HsmError::Refused(format!(
                "the {}'s secret is replaced only by a login with its own PED key (or password), not with the challenge secret of an activation",
                s.role
            ));
            return Err(self.refuse("role-change-secret", s.role.short(), s.partition(), e));
        }
        let (mode, allow) = self.store.read(|t| {
            let d = Self::device(t)?;
            let allow = match s.partition {
                Some(id) => {
                    Self::partition_by_id(t, id)?
                        .policy
                        .effective(&d.policy)
                        .m_of_n
                }
                None => d.policy.m_of_n,
            };
            Ok((d.mode, allow))
        })?;
        let label = match &s.partition_label {
            Some(l) => format!("{} of {l}", s.role),
            None => format!("{} of {}", s.role, self.serial),
        };
        let (method, auth, imp) = self.imprint(secret, s.role.secret_type(), label, mode, allow)?;
        self.replace_auth(s, method, &auth, "role-change-secret")?;
        Ok(imp)
    }

    /// Changes (sets or removes) the PED PIN of the session's role, keeping its secret. The
    /// caller presents the role's keys again so the secret can be re-mixed with the new PIN.
    pub fn change_pin(
        &mut self,
        s: &Session,
        ped: &mut dyn Ped,
        new_pin: Option<Pin>,
    ) -> Result<()> {
        // Credentials or the rules for remembering them change: remembered logins go.
        login_memo::forget_all();
        let who = s.role.to_string();
        let presented = ped.present(&PresentRequest {
            secret_type: s.role.secret_type(),
            role: who.clone(),
        })?;
        let method = self.current_auth(s)?.method;
        let AuthMethod::Ped {
            secret_id,
            origin_serial,
            m,
            n,
            pin_kdf: _,
        } = method
        else {
            return Err(HsmError::Refused(
                "PED PINs apply to PED-authenticated HSMs".into(),
            ));
        };
        if presented.secret_id != secret_id {
            return Err(HsmError::WrongKey(format!(
                "the presented key holds another secret than the {who}'s"
            )));
        }
        // Prove the keys and the old PIN as a login does: a wrong PIN counts toward the
        // role's lockout (and the HSM SO's zeroize) and is recorded, like any login.
        self.login(
            s.role,
            s.partition_label.as_deref(),
            Credential::Ped(&mut PresentedOnce(Some(presented.clone()))),
        )?;
        let new_kdf = new_pin.as_ref().map(|_| KdfParams::fresh());
        let auth = crypto::mix_pin(
            &presented.secret,
            new_pin.as_ref(),
            new_kdf.as_ref().unwrap_or(&KdfParams::fresh()),
        )?;
        let method = AuthMethod::Ped {
            secret_id,
            origin_serial,
            m,
            n,
            pin_kdf: new_kdf,
        };
        self.replace_auth(s, method, &auth, "role-change-pin")
    }

    pub(super) fn current_auth(&mut self, s: &Session) -> Result<RoleAuth> {
        self.store.read(|t| match s.partition {
            None => Ok(Self::device(t)?.so),
            Some(id) => Self::partition_by_id(t, id)?
                .role(s.role)
                .cloned()
                .ok_or_else(|| HsmError::State(format!("the {} is not initialised", s.role))),
        })
    }

    pub(super) fn replace_auth(
        &mut self,
        s: &Session,
        method: AuthMethod,
        auth: &Secret32,
        event: &str,
    ) -> Result<()> {
        login_memo::forget_all();
        let dk = self.store.device_key()?.clone();
        let tag = role_tag(s.role, s.partition);
        // What the role's key wraps goes under the new one: the partition key (Crypto
        // Officer, Crypto User) or the cloning domain (Partition SO).
        let wrapped = match s.role {
            Role::PartitionSo => s.domain.as_ref(),
            _ => s.pmk.as_ref(),
        };
        let ra = RoleAuth::new(&dk, &tag, method, auth, wrapped);
        let e = self.ev(event, s.role.short(), s.partition(), None, "success");
        self.store.write(|t| {
            match s.partition {
                None => {
                    let mut d = Self::device(t)?;
                    d.so = ra;
                    t.put("device", "", &d)?;
                }
                Some(id) => {
                    let mut p = Self::partition_by_id(t, id)?;
                    let slot = p.role_mut(s.role).ok_or_else(|| {
                        HsmError::State(format!("the {} is not initialised", s.role))
                    })?;
                    *slot = ra;
                    t.put("partition", &pid(id), &p)?;
                }
            }
            t.event(&e)
        })
    }

    pub(super) fn key_user(
        &mut self,
        s: &Session,
        action: &str,
        write: bool,
    ) -> Result<(u32, Secret32)> {
        let id = self.key_role(s, action, write)?;
        Ok((id, s.pmk()?.clone()))
    }

    /// [`Hsm::key_user`] on any HSM, a backup HSM included: what keeping objects needs
    /// (listing, reading attributes, deleting, writing what a clone brought).
    pub(super) fn object_keeper(
        &mut self,
        s: &Session,
        action: &str,
        write: bool,
    ) -> Result<(u32, Secret32)> {
        let id = self.partition_role(s, action, write)?;
        Ok((id, s.pmk()?.clone()))
    }

    /// Checks that the session may use (or, with `write`, create) keys; its partition's id.
    pub(super) fn key_role(&mut self, s: &Session, action: &str, write: bool) -> Result<u32> {
        let id = self.partition_role(s, action, write)?;
        if self.is_backup_hsm()? {
            return Err(self.refuse(
                if write { "key-create" } else { "key-use" },
                s.role.short(),
                s.partition(),
                HsmError::Refused(format!(
                    "{action} is refused on a backup HSM: it keeps partitions' objects and never uses them; clone them to a working partition (`ferrohsm partition clone`)"
                )),
            ));
        }
        Ok(id)
    }

    /// Whether this is a backup HSM (read again only when the store's state moved on: key
    /// use asks on every operation).
    pub(super) fn is_backup_hsm(&mut self) -> Result<bool> {
        let generation = self.store.last_generation()?;
        if let Some((g, b)) = self.backup_role {
            if g == generation {
                return Ok(b);
            }
        }
        let b = self
            .store
            .read(|t| Ok(t.get::<Device>("device", "")?.is_some_and(|d| d.backup)))?;
        self.backup_role = Some((generation, b));
        Ok(b)
    }

    /// [`Hsm::key_role`] on any HSM, a backup HSM included: the role checks of cloning, which
    /// is how objects reach a backup HSM and leave it.
    pub(super) fn partition_role(&mut self, s: &Session, action: &str, write: bool) -> Result<u32> {
        let ok = match s.role {
            Role::CryptoOfficer => true,
            Role::CryptoUser => !write,
            _ => false,
        };
        if !ok {
            let msg = match s.role {
                Role::CryptoUser => format!("{action} needs the Crypto Officer; the Crypto User may only use existing keys"),
                Role::PartitionSo | Role::HsmSo => format!("{action} needs the Crypto Officer{}; security officers never use partition keys", if write { "" } else { " or Crypto User" }),
                other => format!("{action} needs the Crypto Officer; you are logged in as the {other}"),
            };
            return Err(self.refuse(
                if write { "key-create" } else { "key-use" },
                s.role.short(),
                s.partition(),
                HsmError::Refused(msg),
            ));
        }
        s.partition
            .ok_or_else(|| HsmError::State("no partition".into()))
    }
}

/// Keys already presented, presented once more (so a second check of them is a login).
struct PresentedOnce(Option<crate::ped::Presented>);

impl Ped for PresentedOnce {
    fn imprint(&mut self, _req: &ImprintRequest, _fresh: Secret32) -> Result<Imprinted> {
        Err(HsmError::InvalidInput(
            "presented keys are not imprinted".into(),
        ))
    }
    fn present(&mut self, _req: &PresentRequest) -> Result<crate::ped::Presented> {
        self.0
            .take()
            .ok_or_else(|| HsmError::InvalidInput("the keys were presented already".into()))
    }
}
