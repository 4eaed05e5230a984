//! The device: opening a data directory, what it shows (`info`), initialisation, and the
//! destructive actions (zeroize, factory reset, tamper, restart).

use super::*;

impl Hsm {
    /// Opens the HSM in `dir`, which must exist.
    pub fn open(dir: &Path) -> Result<Hsm> {
        Self::with_store(Store::open(dir, false)?)
    }

    /// Opens the HSM in `dir`, creating an uninitialised one if there is none.
    pub fn open_or_create(dir: &Path) -> Result<Hsm> {
        Self::with_store(Store::open(dir, true)?)
    }

    pub(super) fn with_store(store: Store) -> Result<Hsm> {
        let serial = store.serial()?;
        let mut hsm = Hsm {
            store,
            serial,
            writer: None,
            audit_cfg: None,
            backup_role: None,
        };
        hsm.finish_interrupted_zeroize()?;
        hsm.migrate_device_domain()?;
        Ok(hsm)
    }

    /// The HSM SO's last failed login and the zeroize it causes are one step: a store whose
    /// HSM SO has used up its attempts but still holds key material (the process died between
    /// the two) is zeroized before anything else is done with it.
    fn finish_interrupted_zeroize(&mut self) -> Result<()> {
        if self.store.key_state() == KeyState::Absent {
            return Ok(());
        }
        let failed = match self.store.read(|t| Ok(Self::device(t)?.so.failed)) {
            Ok(n) => n,
            // Not initialised, or unreadable: the usual checks say so when it is used.
            Err(_) => return Ok(()),
        };
        let limit = Role::HsmSo.failed_login_limit(0);
        if failed < limit {
            return Ok(());
        }
        let e = self.ev(
            "zeroize",
            "device",
            None,
            None,
            &format!("{limit} failed HSM SO logins: zeroized at start (the process stopped before it could)"),
        );
        let _ = self.store.event(&e);
        self.store.destroy_key_material("3 failed HSM SO logins")
    }

    /// The store's state generation: it moves on with every change of state made through
    /// any handle in any process (see [`Store::generation`]), so anything read from the HSM
    /// may be kept while it is unchanged.
    pub fn state_generation(&mut self) -> Result<u64> {
        self.store.generation()
    }

    /// Serial number.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// All events recorded so far, oldest first.
    pub fn events(&mut self) -> Result<Vec<Event>> {
        self.store.events()
    }

    pub(super) fn ev(
        &self,
        event: &str,
        role: &str,
        partition: Option<&str>,
        object: Option<&str>,
        outcome: &str,
    ) -> Event {
        Event {
            seq: 0,
            time: now_rfc3339(),
            serial: self.serial.clone(),
            event: event.into(),
            role: role.into(),
            partition: partition.map(str::to_owned),
            object: object.map(str::to_owned),
            outcome: outcome.into(),
        }
    }

    /// Records a refusal that changes nothing else (fail closed: if it cannot be recorded,
    /// the caller gets the store error instead of the refusal).
    pub(super) fn refuse(
        &mut self,
        event: &str,
        role: &str,
        partition: Option<&str>,
        err: HsmError,
    ) -> HsmError {
        let e = self.ev(event, role, partition, None, &format!("failure: {err}"));
        match self.store.event(&e) {
            Ok(()) => err,
            Err(store_err) => store_err,
        }
    }

    pub(super) fn device(t: &mut Txn<'_>) -> Result<Device> {
        t.get("device", "")?.ok_or_else(|| {
            HsmError::State("the HSM is not initialised; run `ferrohsm hsm init`".into())
        })
    }

    pub(super) fn partition_by_label(t: &mut Txn<'_>, label: &str) -> Result<Partition> {
        for (_, p) in t.list::<Partition>("partition")? {
            if p.label == label {
                return Ok(p);
            }
        }
        Err(HsmError::NotFound(format!(
            "no partition labelled {label:?}"
        )))
    }

    pub(super) fn partition_by_id(t: &mut Txn<'_>, id: u32) -> Result<Partition> {
        t.get("partition", &pid(id))?
            .ok_or_else(|| HsmError::State("the partition of this session no longer exists".into()))
    }

    pub(super) fn role_info(role: Role, a: &RoleAuth, activated: bool) -> RoleInfo {
        RoleInfo {
            role: role.short().into(),
            auth: a.describe(),
            failed_logins: a.failed,
            locked: a.locked || a.lock_until.is_some_and(|t| t > now_unix()),
            activated,
        }
    }

    /// How roles authenticate ("ped" or "password"), or `None` before initialisation: what a
    /// login needs to know, without [`Hsm::info`]'s walk over every partition and its objects.
    pub fn auth_mode(&mut self) -> Result<Option<AuthMode>> {
        if self.store.key_state() == KeyState::Absent {
            return Ok(None);
        }
        self.store.read(|t| Ok(Some(Self::device(t)?.mode)))
    }

    /// Describes the HSM without authentication (labels, states, policies; nothing secret).
    pub fn info(&mut self) -> Result<HsmInfo> {
        let serial = self.serial.clone();
        let last_zeroized = self.store.meta("zeroized")?;
        let tamper = self.store.meta("tamper")?;
        let auditor = self.store.read(|t| {
            let Some(keys) = t.audit else { return Ok(None) };
            Ok(audit::get_state::<RoleAuth>(&t.tx, &keys.root, "auditor")?
                .map(|a| Self::role_info(Role::Auditor, &a, false)))
        })?;
        if self.store.key_state() == KeyState::Absent {
            return Ok(HsmInfo {
                serial,
                state: if last_zeroized.is_some() {
                    "zeroized".into()
                } else {
                    "uninitialised".into()
                },
                label: None,
                auth_mode: None,
                policy: BTreeMap::new(),
                hsm_so: None,
                auditor,
                partitions: vec![],
                last_zeroized,
                tamper,
                boot_epoch: 0,
                next_partition_id: 0,
                backup: false,
            });
        }
        self.store.read(|t| {
            let d = Self::device(t)?;
            let mut partitions = Vec::new();
            for (_, p) in t.list::<Partition>("partition")? {
                let eff = p.policy.effective(&d.policy);
                let mut roles = Vec::new();
                for r in [Role::PartitionSo, Role::CryptoOfficer, Role::CryptoUser] {
                    if let Some(a) = p.role(r) {
                        let live = p.activations.get(r.short()).is_some_and(|act| {
                            eff.activation && (act.epoch == d.boot_epoch || eff.auto_activation)
                        });
                        roles.push(Self::role_info(r, a, live));
                    }
                }
                partitions.push(PartitionInfo {
                    id: p.id,
                    label: p.label.clone(),
                    initialised: p.initialised.is_some(),
                    policy: eff
                        .entries()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    domain: p.domain_id.clone().map(|id| {
                        if id == d.domain_id {
                            "hsm".into()
                        } else {
                            id
                        }
                    }),
                    objects: t.count_objects(p.id)?,
                    roles,
                });
            }
            Ok(HsmInfo {
                serial,
                state: "initialised".into(),
                label: Some(d.label.clone()),
                auth_mode: Some(d.mode),
                policy: d
                    .policy
                    .entries()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                hsm_so: Some(Self::role_info(Role::HsmSo, &d.so, false)),
                auditor: auditor.clone(),
                partitions,
                last_zeroized,
                tamper,
                boot_epoch: d.boot_epoch,
                next_partition_id: d.next_partition,
                backup: d.backup,
            })
        })
    }

    /// Runs the imprint of a new secret and returns the authenticator and how it is made.
    pub(super) fn imprint(
        &self,
        secret: NewSecret<'_>,
        t: crate::pedkey::SecretType,
        label: String,
        mode: AuthMode,
        allow_m_of_n: bool,
    ) -> Result<(AuthMethod, Secret32, Option<Imprinted>)> {
        match (secret, mode) {
            (NewSecret::Ped(ped), AuthMode::Ped) => {
                let req = ImprintRequest {
                    secret_type: t,
                    label,
                    origin_serial: self.serial.clone(),
                    allow_m_of_n,
                };
                let imp = ped.imprint(&req, Secret32::random())?;
                let pin_kdf = imp.pin.as_ref().map(|_| KdfParams::fresh());
                let auth = crypto::mix_pin(
                    &imp.secret,
                    imp.pin.as_ref(),
                    pin_kdf.as_ref().unwrap_or(&KdfParams::fresh()),
                )?;
                let method = AuthMethod::Ped {
                    secret_id: imp.secret_id.clone(),
                    origin_serial: imp.origin_serial.clone(),
                    m: imp.m,
                    n: imp.n,
                    pin_kdf,
                };
                Ok((method, auth, Some(imp)))
            }
            (NewSecret::Password(pw), AuthMode::Password) => {
                let kdf = KdfParams::fresh();
                let auth = kdf.derive(pw.expose())?;
                Ok((AuthMethod::Password { kdf }, auth, None))
            }
            (NewSecret::Ped(_), AuthMode::Password) => Err(HsmError::InvalidInput(
                "this HSM is password-authenticated; give a password, not PED keys".into(),
            )),
            (NewSecret::Password(_), AuthMode::Ped) => Err(HsmError::InvalidInput(
                "this HSM is PED-authenticated; imprint PED keys, not a password".into(),
            )),
        }
    }

    /// What a staged imprint ([`crate::ped_stage`]) asks of the PED: keys of `secret_type`
    /// labelled `label`, made by this HSM. M of N is allowed here; the operation that adopts
    /// the stage checks its own policy.
    pub fn stage_request(
        &self,
        secret_type: crate::pedkey::SecretType,
        label: &str,
    ) -> Result<ImprintRequest> {
        let label = label.trim();
        if label.is_empty() || label.len() > 96 || label.chars().any(char::is_control) {
            return Err(HsmError::InvalidInput(
                "a PED key label is 1 to 96 printable characters".into(),
            ));
        }
        Ok(ImprintRequest {
            secret_type,
            label: label.to_string(),
            origin_serial: self.serial.clone(),
            allow_m_of_n: true,
        })
    }

    /// Whether the HSM SO, a partition's roles, the Auditor or a cloning domain is the PED
    /// secret `secret_id`.
    pub fn secret_in_use(&mut self, secret_id: &str) -> Result<bool> {
        if self.store.key_state() == KeyState::Absent {
            return Ok(false);
        }
        let is = |a: Option<&RoleAuth>| matches!(a.map(|a| &a.method), Some(AuthMethod::Ped { secret_id: id, .. }) if id == secret_id);
        self.store.read(|t| {
            if let Some(keys) = t.audit {
                if is(audit::get_state::<RoleAuth>(&t.tx, &keys.root, "auditor")?.as_ref()) {
                    return Ok(true);
                }
            }
            let Some(d) = t.get::<Device>("device", "")? else {
                return Ok(false);
            };
            if is(Some(&d.so)) || d.domain_id == secret_id {
                return Ok(true);
            }
            Ok(t.list::<Partition>("partition")?.iter().any(|(_, p)| {
                [Role::PartitionSo, Role::CryptoOfficer, Role::CryptoUser]
                    .into_iter()
                    .any(|r| is(p.role(r)))
                    || p.domain_id.as_deref() == Some(secret_id)
            }))
        })
    }

    /// Imprints a cloning domain: the domain secret itself (shared by every HSM or partition
    /// in the domain) and its id.
    pub(super) fn imprint_domain(
        &self,
        secret: NewSecret<'_>,
        label: String,
        mode: AuthMode,
        allow_m_of_n: bool,
    ) -> Result<(Secret32, String, Option<Imprinted>)> {
        match (secret, mode) {
            (NewSecret::Ped(ped), AuthMode::Ped) => {
                let req = ImprintRequest { secret_type: crate::pedkey::SecretType::Domain, label, origin_serial: self.serial.clone(), allow_m_of_n };
                let imp = ped.imprint(&req, Secret32::random())?;
                let value = domain::red_key_value(&imp.secret, imp.pin.as_ref());
                Ok((value, imp.secret_id.clone(), Some(imp)))
            }
            (NewSecret::Password(pw), AuthMode::Password) => {
                let (value, id) = domain::password_domain(&pw)?;
                Ok((value, id, None))
            }
            _ => Err(HsmError::InvalidInput("the cloning domain must be given the way this HSM authenticates (PED key or password)".into())),
        }
    }

    /// Initialises (or re-initialises) the HSM: imprints the HSM SO and the cloning domain,
    /// makes a new device key. Re-initialising needs the current HSM SO and, if partitions
    /// exist, their labels in `confirm_destroy`. The dialogues run before anything is
    /// destroyed, so a refused or failed dialogue leaves the HSM as it was.
    pub fn init(&mut self, opts: InitOptions<'_>) -> Result<Vec<Imprinted>> {
        self.init_as(opts, false)
    }

    /// [`Hsm::init`], as a backup HSM when `backup`: its partitions receive objects by
    /// cloning (and give them back the same way) and never use them: every operation with a
    /// key, and every new key, is refused on it.
    pub fn init_as(&mut self, opts: InitOptions<'_>, backup: bool) -> Result<Vec<Imprinted>> {
        let label = opts.label.trim().to_string();
        if label.is_empty() || label.len() > 32 {
            return Err(HsmError::InvalidInput(
                "an HSM label is 1 to 32 characters".into(),
            ));
        }
        if self.store.key_state() == KeyState::Present {
            let Some(cred) = opts.current_so else {
                return Err(self.refuse("hsm-init", "none", None, HsmError::Refused(
                    "the HSM is already initialised; re-initialising needs the current HSM SO's key (or zeroize first)".into())));
            };
            let s = self.login(Role::HsmSo, None, cred)?;
            let existing: Vec<(String, u64)> = self.store.read(|t| {
                let mut v = Vec::new();
                for (_, p) in t.list::<Partition>("partition")? {
                    let n = t.count_objects(p.id)?;
                    v.push((p.label, n));
                }
                Ok(v)
            })?;
            let mut want: Vec<&String> = existing.iter().map(|(l, _)| l).collect();
            let mut given: Vec<&String> = opts.confirm_destroy.iter().collect();
            want.sort();
            given.sort();
            if want != given {
                let list: Vec<String> = existing
                    .iter()
                    .map(|(l, n)| format!("{l} ({n} objects)"))
                    .collect();
                return Err(self.refuse("hsm-init", s.role.short(), None, HsmError::Refused(format!(
                    "re-initialising destroys partitions {} and every key in them; confirm by naming them all: --confirm-destroy {}",
                    list.join(", "),
                    existing.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(",")
                ))));
            }
        }
        let (so_method, so_auth, so_imp) = self.imprint(
            opts.so,
            crate::pedkey::SecretType::So,
            format!("HSM SO of {}", self.serial),
            opts.mode,
            true,
        )?;
        let (domain, domain_id, dom_imp) = self.imprint_domain(
            opts.domain,
            format!("cloning domain of {}", self.serial),
            opts.mode,
            true,
        )?;

        if self.store.key_state() == KeyState::Present {
            self.store.destroy_key_material("re-initialisation")?;
        }
        self.store.new_device_key()?;
        let dk = self.store.device_key()?.clone();
        let device = Device {
            label: label.clone(),
            mode: opts.mode,
            initialised: now_rfc3339(),
            policy: Policy::hsm_default(),
            so: RoleAuth::new(&dk, &role_tag(Role::HsmSo, None), so_method, &so_auth, None),
            legacy_domain: None,
            domain_check: Some(domain::domain_check(&domain)),
            domain_id,
            boot_epoch: 1,
            next_partition: 1,
            backup,
        };
        let e = self.ev("hsm-init", "hsm-so", None, Some(&label), "success");
        self.store.write(|t| {
            t.put("device", "", &device)?;
            t.event(&e)
        })?;
        Ok(so_imp.into_iter().chain(dom_imp).collect())
    }

    /// Destroys all key material irreversibly: device key, roles, partitions, objects. The
    /// serial and the event history remain. Needs the HSM SO.
    pub fn zeroize(&mut self, s: &Session, reason: &str) -> Result<()> {
        s.require_hsm_so("zeroize")?;
        self.zeroize_now(reason)
    }

    pub(super) fn zeroize_now(&mut self, reason: &str) -> Result<()> {
        let e = self.ev(
            "zeroize",
            "device",
            None,
            None,
            &format!("success: {reason}"),
        );
        self.store.event(&e)?;
        self.store.destroy_key_material(reason)
    }

    /// Zeroize, and forget the zeroize and tamper notes: the HSM as delivered. Needs the HSM
    /// SO, or (`so` = `None`) direct local access to a directory no server holds, which the
    /// caller has had confirmed. The audit log, its signing key and the Auditor survive
    /// unless the Auditor also confirms by logging in (`auditor`): export the log first.
    pub fn factory_reset(&mut self, so: Option<&Session>, auditor: Option<&Session>) -> Result<()> {
        if let Some(s) = so {
            s.require_hsm_so("factory reset")?;
        }
        if let Some(a) = auditor {
            if a.role != Role::Auditor {
                return Err(need("Auditor", "erasing the audit log", a.role));
            }
        }
        let by = if so.is_some() {
            "HSM SO"
        } else {
            "local access"
        };
        self.writer = None;
        self.zeroize_now(&format!("factory reset ({by})"))?;
        let kept = if auditor.is_some() {
            self.store.reset_audit()?;
            "audit log erased by the Auditor"
        } else {
            "audit log and Auditor kept"
        };
        self.store.clear_meta("zeroized")?;
        self.store.clear_meta("tamper")?;
        let e = self.ev(
            "factory-reset",
            "device",
            None,
            None,
            &format!("success: {by}; {kept}"),
        );
        self.store.event(&e)
    }

    /// Zeroizes an HSM whose store fails its integrity checks (and so cannot be opened):
    /// the recovery a real HSM offers after tamper. Destroys the device key and every sealed
    /// record without reading them; the serial and the event history survive if readable.
    pub fn zeroize_unopenable(dir: &Path, reason: &str) -> Result<()> {
        let mut store = Store::open_unverified(dir)?;
        let serial = store.serial().unwrap_or_default();
        store.event(&Event {
            seq: 0,
            time: now_rfc3339(),
            serial,
            event: "zeroize".into(),
            role: "device".into(),
            partition: None,
            object: None,
            outcome: format!("success: {reason} (store failed its integrity checks)"),
        })?;
        store.destroy_key_material(reason)
    }

    /// The tamper switch (HSM SO): zeroize, which drops every activation with the partitions, and
    /// leave a tamper note that `hsm show` reports until the HSM is initialised again.
    pub fn tamper(&mut self, s: &Session) -> Result<()> {
        s.require_hsm_so("the tamper switch")?;
        let e = self.ev("tamper", "device", None, None, "tamper switch: zeroizing");
        self.store.event(&e)?;
        self.store.destroy_key_material("tamper")?;
        self.store
            .set_meta("tamper", &format!("tamper switch at {}", now_rfc3339()))
    }

    /// A restart of the HSM (HSM SO): activations end unless auto-activation is allowed.
    pub fn restart(&mut self, s: &Session) -> Result<u64> {
        s.require_hsm_so("restart")?;
        let e = self.ev("restart", "device", None, None, "success");
        self.store.write(|t| {
            let mut d = Self::device(t)?;
            d.boot_epoch += 1;
            t.put("device", "", &d)?;
            t.event(&e)?;
            Ok(d.boot_epoch)
        })
    }
}
