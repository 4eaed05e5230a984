//! The HSM API as an HA group answers it: reads and single-part operations served by one
//! member in turn ([`GroupFront::serve`]), creates made durable ([`GroupFront::create`]),
//! changes made everywhere, logins on every member; device, role and audit administration
//! refused (it is done on each member with `ferrohsm`).

use std::sync::Arc;

use ferrohsm_audit::{Export, Record, Report};
use ferrohsm_core::api::{
    AuditConfig, BackupSummary, ClientInfo, CloneBatch, CloneHello, CloneProgress, CloneSelect,
    Enrollment, HsmApi, HsmInfo, ImprintReport, InitHsm, LoginCredential, LoginId, NewCredential,
    PartitionDomain, PedImprint, StagedImprint, Summary, Unwrap, Witness,
};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{
    CopyChanges, KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo,
};
use ferrohsm_core::pedkey::SecretType;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{HsmError, Result, Role};
use zeroize::Zeroizing;

use super::front::{member_failure, GroupFront};
use super::{lock, Entry, GroupLogin};

fn not_in_group<T>(what: &str) -> Result<T> {
    Err(HsmError::Refused(format!(
        "{what} is done on each member HSM (with ferrohsm), not through an HA group"
    )))
}

impl HsmApi for GroupFront {
    fn summary(&mut self) -> Result<Summary> {
        Ok(Summary::from(self.info()?))
    }

    /// The group as one HSM with one partition: the first member that answers describes it,
    /// under the group's name and slot.
    fn info(&mut self) -> Result<HsmInfo> {
        let mut failure = None;
        let n = self.group.members.len();
        let mut order: Vec<usize> = (0..n).filter(|&i| self.group.member(i).up).collect();
        order.extend((0..n).filter(|&i| !self.group.member(i).up));
        for i in order {
            let partition = self.partition(i);
            match self.on(i, |r| r.info()) {
                Ok(mut info) => {
                    let Some(mut p) = info.partitions.into_iter().find(|p| p.label == partition)
                    else {
                        failure = Some(HsmError::NotFound(format!(
                            "member {} has no partition {partition}",
                            self.group.name(i)
                        )));
                        continue;
                    };
                    p.id = self.group.config.slot;
                    p.label = self.group.config.label.clone();
                    info.serial = format!("ha-{}", self.group.config.label);
                    info.label = Some(self.group.config.label.clone());
                    // One slot, never a spare token: members are set up with ferrohsm.
                    info.policy.clear();
                    info.next_partition_id = self.group.config.slot;
                    info.partitions = vec![p];
                    info.hsm_so = None;
                    info.auditor = None;
                    return Ok(info);
                }
                Err(e) => failure = Some(e),
            }
        }
        Err(self.none_left(failure, &[]))
    }

    fn state_generation(&mut self) -> Result<u64> {
        // One slot that never changes.
        Ok(1)
    }

    fn init_token(&mut self, _: &str, _: Pin) -> Result<u32> {
        not_in_group("Initialising a token")
    }

    fn reinit_token(&mut self, _: &str, _: Pin) -> Result<()> {
        not_in_group("Initialising a token")
    }

    fn change_password(&mut self, _: Role, _: &str, _: Pin, _: Pin) -> Result<()> {
        not_in_group("Changing a password")
    }

    fn stage_imprint(&mut self, _: PedImprint, _: SecretType, _: &str) -> Result<StagedImprint> {
        not_in_group("A PED imprint")
    }

    fn secret_in_use(&mut self, _: &str) -> Result<bool> {
        not_in_group("Asking about a PED secret")
    }

    fn init_hsm(&mut self, _: InitHsm) -> Result<Vec<ImprintReport>> {
        not_in_group("Initialising an HSM")
    }

    fn init_partition(
        &mut self,
        _: &str,
        _: NewCredential,
        _: PartitionDomain,
        _: Option<LoginCredential>,
    ) -> Result<Vec<ImprintReport>> {
        not_in_group("Initialising a partition")
    }

    fn init_role(
        &mut self,
        _: LoginId,
        _: Role,
        _: NewCredential,
        _: bool,
    ) -> Result<Option<ImprintReport>> {
        not_in_group("Initialising a role")
    }

    fn change_secret(&mut self, _: LoginId, _: NewCredential) -> Result<Option<ImprintReport>> {
        not_in_group("Changing a secret")
    }

    fn change_pin(&mut self, _: LoginId, _: LoginCredential, _: Option<Pin>) -> Result<()> {
        not_in_group("Changing a PED PIN")
    }

    fn audit_init(
        &mut self,
        _: NewCredential,
        _: Option<LoginCredential>,
    ) -> Result<Option<ImprintReport>> {
        not_in_group("Imprinting the Auditor")
    }

    fn set_hsm_policy(&mut self, _: LoginId, _: &str, _: &str) -> Result<()> {
        not_in_group("Setting a policy")
    }

    fn set_partition_policy(&mut self, _: LoginId, _: &str, _: &str) -> Result<()> {
        not_in_group("Setting a policy")
    }

    fn create_partition(&mut self, _: LoginId, _: &str) -> Result<u32> {
        not_in_group("Creating a partition")
    }

    fn delete_partition(&mut self, _: LoginId, _: &str) -> Result<u64> {
        not_in_group("Deleting a partition")
    }

    fn reset_role(&mut self, _: LoginId, _: Role) -> Result<()> {
        not_in_group("Resetting a role")
    }

    fn activate(&mut self, _: LoginId, _: Pin) -> Result<()> {
        not_in_group("Activating a role")
    }

    fn deactivate(&mut self, _: LoginId, _: Role) -> Result<bool> {
        not_in_group("Deactivating a role")
    }

    fn audit_config(&mut self, _: LoginId) -> Result<AuditConfig> {
        not_in_group("Reading the audit configuration")
    }

    fn set_audit_config(&mut self, _: LoginId, _: AuditConfig) -> Result<()> {
        not_in_group("Configuring the audit log")
    }

    fn witnesses(&mut self, _: LoginId) -> Result<Vec<Witness>> {
        not_in_group("Reading the witnesses")
    }

    fn add_witness(&mut self, _: LoginId, _: &str) -> Result<Witness> {
        not_in_group("Adding a witness")
    }

    fn submit_cosigned(&mut self, _: LoginId, _: &str) -> Result<Vec<String>> {
        not_in_group("Handing in a cosigned checkpoint")
    }

    fn register_client(&mut self, _: LoginId, _: &str, _: &str) -> Result<ClientInfo> {
        not_in_group("Registering a client")
    }

    fn clients(&mut self, _: LoginId) -> Result<Vec<ClientInfo>> {
        not_in_group("Listing clients")
    }

    fn assign_client(&mut self, _: LoginId, _: &str, _: &str, _: bool) -> Result<ClientInfo> {
        not_in_group("Assigning a client")
    }

    fn revoke_client(&mut self, _: LoginId, _: &str) -> Result<ClientInfo> {
        not_in_group("Revoking a client")
    }

    fn rekey_client(&mut self, _: LoginId, _: &str, _: &str) -> Result<ClientInfo> {
        not_in_group("Rekeying a client")
    }

    fn issue_enrollment(
        &mut self,
        _: LoginId,
        _: &str,
        _: &[String],
        _: u64,
    ) -> Result<Enrollment> {
        not_in_group("Issuing an enrollment code")
    }

    fn enroll(&mut self, _: &str, _: &str) -> Result<ClientInfo> {
        not_in_group("Enrolling")
    }

    /// Logs in on every member. The first member that answers decides whether the secret is
    /// right (so a wrong one counts once, on that member); members that cannot be reached now
    /// are logged in when they return.
    fn login(
        &mut self,
        role: Role,
        _partition: Option<&str>,
        credential: LoginCredential,
    ) -> Result<LoginId> {
        let LoginCredential::Secret(secret) = credential else {
            return Err(HsmError::Refused(
                "an HA group logs in with a password or an activated role's challenge secret; \
                 PED keys are presented to one HSM at a time"
                    .into(),
            ));
        };
        let n = self.group.members.len();
        let mut on = vec![None; n];
        let mut decided = false;
        let mut failure = None;
        for (i, slot) in on.iter_mut().enumerate() {
            let partition = self.partition(i);
            let s = secret.clone();
            match self.on(i, |r| {
                r.login(role, Some(&partition), LoginCredential::Secret(s))
            }) {
                Ok(l) => {
                    *slot = Some(l);
                    decided = true;
                }
                Err(e) if member_failure(&e) => failure = Some(e),
                Err(e) if !decided => return Err(e),
                Err(e) => {
                    (self.group.log)(&format!(
                        "HA group {}: member {} refused a login the others accepted: {e}",
                        self.group.config.label,
                        self.group.name(i)
                    ));
                    self.group.member_failed(i, &e);
                }
            }
        }
        if !decided {
            return Err(self.none_left(failure, &[]));
        }
        let mut id = [0u8; 8];
        ferrohsm_core::crypto::fill_random(&mut id);
        let id = u64::from_le_bytes(id);
        lock(&self.group.logins).insert(
            id,
            Arc::new(GroupLogin {
                role,
                secret,
                on: std::sync::Mutex::new(on),
            }),
        );
        if role == Role::CryptoOfficer {
            // Members may differ from before this process ran: compare them once.
            for j in 0..n {
                self.group.member(j).needs_pass = true;
            }
            self.group.signal.raise();
        }
        Ok(id)
    }

    fn check_login(&mut self, login: LoginId) -> Result<()> {
        self.group.login(login).map(|_| ())
    }

    fn logout(&mut self, login: LoginId) -> Result<()> {
        let Some(l) = lock(&self.group.logins).remove(&login) else {
            return Ok(());
        };
        let on = lock(&l.on).clone();
        for (i, ml) in on.into_iter().enumerate() {
            if let Some(ml) = ml {
                let _ = self.on(i, |r| r.logout(ml));
            }
        }
        Ok(())
    }

    fn generate_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
    ) -> Result<Vec<u64>> {
        self.create(login, &[], |r, l, _| r.generate_key(l, spec, opts))
    }

    fn generate_keys(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        each: &[KeyOptions],
    ) -> Result<Vec<Vec<u64>>> {
        let mut sizes = Vec::new();
        let flat = self.create(login, &[], |r, l, _| {
            let sets = r.generate_keys(l, spec, each)?;
            sizes = sets.iter().map(Vec::len).collect();
            Ok(sets.concat())
        })?;
        let mut rest = flat.as_slice();
        Ok(sizes
            .into_iter()
            .map(|n| {
                let (a, b) = rest.split_at(n.min(rest.len()));
                rest = b;
                a.to_vec()
            })
            .collect())
    }

    fn find_objects(&mut self, login: LoginId, label: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let filter = ObjectFilter {
            label: label.map(str::to_string),
            ..Default::default()
        };
        let p = self.group.config.label.clone();
        self.find(Some(login), &p, &filter)
    }

    /// Asks one member with nothing left to receive, adding session objects that live on
    /// other members from them; while every member still waits for some object, asks them
    /// all and merges what they hold (a key acknowledged on K members is found whichever
    /// answers).
    fn find(
        &mut self,
        login: Option<LoginId>,
        _partition: &str,
        filter: &ObjectFilter,
    ) -> Result<Vec<ObjectInfo>> {
        let mut failure = None;
        let order = self.group.candidates(login)?;
        let complete = order
            .iter()
            .position(|(i, _)| self.group.member(*i).replicate.is_empty());
        let pinned: Vec<usize> = {
            let t = lock(&self.group.table);
            let mut v: Vec<usize> = t.by_pin.keys().map(|(m, _)| *m).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        // Each member asked, in order, and whether to take only its session objects.
        let mut asked: Vec<(usize, Option<LoginId>, bool)> = match complete {
            Some(k) => {
                let (first, ml) = order[k];
                std::iter::once((first, ml, false))
                    .chain(
                        order
                            .iter()
                            .filter(|(j, _)| *j != first && pinned.contains(j))
                            .map(|(j, l)| (*j, *l, true)),
                    )
                    .collect()
            }
            None => order.iter().map(|(i, l)| (*i, *l, false)).collect(),
        };
        let mut out: Vec<ObjectInfo> = Vec::new();
        let mut answered = false;
        let mut seen = std::collections::HashSet::new();
        while !asked.is_empty() {
            let (i, ml, session_only) = asked.remove(0);
            let partition = self.partition(i);
            let found = match self.on(i, |r| r.find(ml, &partition, filter)) {
                Ok(f) => f,
                Err(e) if member_failure(&e) => {
                    // The member that was to answer for all failed: ask the next in full.
                    if !session_only && !answered {
                        let full = |j: &usize| asked.iter().any(|(a, _, s)| a == j && !s);
                        if let Some((j, l)) = order.iter().find(|(j, _)| *j != i && !full(j)) {
                            let (j, l) = (*j, *l);
                            asked.retain(|(a, _, _)| *a != j);
                            asked.insert(0, (j, l, false));
                        }
                    }
                    failure = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let found = if session_only {
                found.into_iter().filter(|o| !o.attrs.token).collect()
            } else {
                answered = true;
                found
            };
            for o in self.translate(i, found) {
                if seen.insert(o.handle) {
                    out.push(o);
                }
            }
        }
        if answered {
            Ok(out)
        } else {
            Err(self.none_left(failure, &[]))
        }
    }

    fn object_info(
        &mut self,
        login: Option<LoginId>,
        _partition: &str,
        handle: u64,
    ) -> Result<ObjectInfo> {
        let mut o = self.serve(login, &[handle], |r, l, p, h| r.object_info(l, p, h[0]))?;
        o.handle = handle;
        Ok(o)
    }

    fn generate_key_with(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        self.create(login, &[], |r, l, _| {
            r.generate_key_with(l, spec, opts, tpl)
        })
    }

    fn create_object(&mut self, login: LoginId, object: NewObject) -> Result<u64> {
        self.create_one(login, &[], |r, l, _| r.create_object(l, object.clone()))
    }

    fn import_public_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        spki: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        self.create_one(login, &[], |r, l, _| {
            r.import_public_key(l, spec, spki, opts, tpl)
        })
    }

    fn relabel_object(
        &mut self,
        login: LoginId,
        handle: u64,
        label: Option<&str>,
        object_id: Option<&[u8]>,
    ) -> Result<()> {
        let change = (label.map(str::to_string), object_id.map(<[u8]>::to_vec));
        self.everywhere(
            login,
            handle,
            |r, l, h| r.relabel_object(l, h, label, object_id),
            |m, uid| {
                m.relabel.insert(uid.to_string(), change.clone());
            },
        )?;
        // Found again by its new label and id.
        if let Some(Entry::Shared { filter, .. }) = lock(&self.group.table).entries.get_mut(&handle)
        {
            if let Some(l) = label {
                filter.label = Some(l.to_string());
            }
            if let Some(id) = object_id {
                filter.id = Some(id.to_vec());
            }
        }
        Ok(())
    }

    fn key_value(&mut self, login: LoginId, handle: u64) -> Result<Zeroizing<Vec<u8>>> {
        self.serve(Some(login), &[handle], |r, l, _, h| {
            r.key_value(l.unwrap_or_default(), h[0])
        })
    }

    fn import_key(
        &mut self,
        login: LoginId,
        class: ObjectClass,
        spec: Option<KeySpec>,
        material: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        self.create_one(login, &[], |r, l, _| {
            r.import_key(l, class, spec, material, opts, tpl)
        })
    }

    fn set_key_trusted(&mut self, _: LoginId, _: &str, _: bool) -> Result<u64> {
        not_in_group("Marking a key trusted")
    }

    fn copy_object(&mut self, login: LoginId, handle: u64, changes: &CopyChanges) -> Result<u64> {
        self.create_one(login, &[handle], |r, l, h| r.copy_object(l, h[0], changes))
    }

    fn drop_session_objects(&mut self, login: LoginId, owner: u64) -> Result<()> {
        let members: Vec<usize> = {
            let t = lock(&self.group.table);
            let mut v: Vec<usize> = t.by_pin.keys().map(|(m, _)| *m).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let on = lock(&self.group.login(login)?.on).clone();
        for i in members {
            if let Some(ml) = on[i] {
                let _ = self.on(i, |r| r.drop_session_objects(ml, owner));
            }
        }
        // Their group handles go with them: they are found again if anything is left.
        lock(&self.group.table)
            .entries
            .retain(|_, e| !matches!(e, Entry::Pinned { .. }));
        lock(&self.group.table).by_pin.clear();
        Ok(())
    }

    fn wrapped_key_len(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        target: u64,
    ) -> Result<usize> {
        self.serve(Some(login), &[wrapper, target], |r, l, _, h| {
            r.wrapped_key_len(l.unwrap_or_default(), h[0], mech, h[1])
        })
    }

    fn wrap_key(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        params: &Params,
        target: u64,
    ) -> Result<Vec<u8>> {
        self.serve(Some(login), &[wrapper, target], |r, l, _, h| {
            r.wrap_key(l.unwrap_or_default(), h[0], mech, params, h[1])
        })
    }

    fn unwrap_key(&mut self, login: LoginId, u: Unwrap<'_>) -> Result<u64> {
        self.create_one(login, &[u.unwrapper], |r, l, h| {
            r.unwrap_key(
                l,
                Unwrap {
                    unwrapper: h[0],
                    ..u
                },
            )
        })
    }

    fn derive_ecdh(
        &mut self,
        login: LoginId,
        base: u64,
        peer_point: &[u8],
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        self.create_one(login, &[base], |r, l, h| {
            r.derive_ecdh(l, h[0], peer_point, spec, opts, tpl)
        })
    }

    fn sign(&mut self, login: LoginId, key: u64, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        self.serve(Some(login), &[key], |r, l, _, h| {
            r.sign(l.unwrap_or_default(), h[0], mech, data)
        })
    }

    fn verify(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        self.serve(Some(login), &[key], |r, l, _, h| {
            r.verify(l.unwrap_or_default(), h[0], mech, data, signature)
        })
    }

    fn encrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.serve(Some(login), &[key], |r, l, _, h| {
            r.encrypt(l.unwrap_or_default(), h[0], mech, params, data)
        })
    }

    fn decrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.serve(Some(login), &[key], |r, l, _, h| {
            r.decrypt(l.unwrap_or_default(), h[0], mech, params, data)
        })
    }

    /// Destroys the object on every live member; members that are away lose it when they
    /// return, and it is never brought back to them.
    fn destroy_object(&mut self, login: LoginId, handle: u64) -> Result<()> {
        self.everywhere(
            login,
            handle,
            |r, l, h| r.destroy_object(l, h),
            |m, uid| {
                m.replicate.remove(uid);
                m.destroy.insert(uid.to_string());
            },
        )?;
        let mut t = lock(&self.group.table);
        if let Some(Entry::Shared { uid, .. }) = t.entries.get(&handle) {
            lock(&self.group.tombstones).insert(uid.clone());
        }
        t.forget(handle);
        for m in &self.group.members {
            lock(m).handles.remove(&handle);
        }
        Ok(())
    }

    fn random(&mut self, len: usize) -> Result<Vec<u8>> {
        self.serve(None, &[], |r, _, _, _| r.random(len))
    }

    fn zeroize(&mut self, _: LoginId, _: &str) -> Result<()> {
        not_in_group("Zeroizing")
    }

    fn tamper(&mut self, _: LoginId) -> Result<()> {
        not_in_group("The tamper switch")
    }

    fn restart(&mut self, _: LoginId) -> Result<u64> {
        not_in_group("A restart")
    }

    fn audit_public_key(&mut self) -> Result<String> {
        not_in_group("Reading the audit key")
    }

    fn audit_records(&mut self, _: LoginId) -> Result<Vec<Record>> {
        not_in_group("Reading the audit log")
    }

    fn pending_ceremonies(&mut self, _: LoginId) -> Result<Vec<(Record, usize)>> {
        not_in_group("Reading the ceremonies")
    }

    fn audit_checkpoint(&mut self, _: LoginId) -> Result<String> {
        not_in_group("Reading a checkpoint")
    }

    fn clone_accept(&mut self, _: LoginId, _: bool) -> Result<CloneHello> {
        not_in_group("Cloning")
    }

    fn clone_offer(&mut self, _: LoginId, _: &CloneHello, _: &CloneSelect) -> Result<CloneHello> {
        not_in_group("Cloning")
    }

    fn clone_confirm(&mut self, _: LoginId, _: &CloneHello) -> Result<String> {
        not_in_group("Cloning")
    }

    fn clone_export(&mut self, _: LoginId, _: &str, _: &str, _: u64, _: u32) -> Result<CloneBatch> {
        not_in_group("Cloning")
    }

    fn clone_import(&mut self, _: LoginId, _: &str, _: &CloneBatch) -> Result<CloneProgress> {
        not_in_group("Cloning")
    }

    fn backup_export(&mut self, _: LoginId, _: &CloneSelect) -> Result<Vec<u8>> {
        not_in_group("A backup")
    }

    fn backup_verify(&mut self, _: LoginId, _: &[u8]) -> Result<BackupSummary> {
        not_in_group("Checking a backup")
    }

    fn backup_restore(&mut self, _: LoginId, _: &[u8], _: bool) -> Result<(u64, u64, u64)> {
        not_in_group("A restore")
    }

    fn audit_check_extends(&mut self, _: LoginId, _: &str) -> Result<u64> {
        not_in_group("Checking the audit log")
    }

    fn audit_export(&mut self, _: LoginId, _: u64, _: &[u64]) -> Result<Export> {
        not_in_group("Exporting the audit log")
    }

    fn audit_verify(&mut self, _: LoginId) -> Result<Report> {
        not_in_group("Verifying the audit log")
    }

    fn ha_note(&mut self, _: LoginId, _: &str, _: &str, _: &str) -> Result<()> {
        not_in_group("Recording an HA event")
    }

    fn gp(
        &mut self,
        _: LoginId,
        _: ferrohsm_core::api::GpCall,
    ) -> Result<ferrohsm_core::api::GpAnswer> {
        not_in_group("GlobalPlatform functions")
    }

    fn destroyed_objects(&mut self, _: LoginId) -> Result<Vec<String>> {
        not_in_group("Listing destroyed objects")
    }
}
