//! [`GroupFront`]: the HSM API answered by an HA group's members.

use std::sync::Arc;

use ferrohsm_audit::{Export, Record, Report};
use ferrohsm_core::api::{
    clone_sided, AuditConfig, BackupSummary, ClientInfo, CloneBatch, CloneHello, CloneProgress,
    CloneSelect, CloneSide, Enrollment, HsmApi, HsmInfo, ImprintReport, InitHsm, LoginCredential,
    LoginId, NewCredential, PedImprint, StagedImprint, Summary, Unwrap, Witness,
};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{
    CopyChanges, KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo,
};
use ferrohsm_core::pedkey::SecretType;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{HsmError, Result, Role};
use zeroize::Zeroizing;

use super::{lock, Entry, Group, GroupLogin};
use crate::Remote;

/// Objects per clone when a group replicates (a clone names at most 10,000).
pub(super) const REPLICATE_CHUNK: usize = 5_000;

/// One front on an HA group: its own connection to each member (opened on first use), so
/// that fronts on different threads never wait on each other's members.
pub struct GroupFront {
    pub(super) group: Arc<Group>,
    conns: Vec<Option<Remote>>,
}

/// Whether `e` says the member is gone or has lost the login (rather than refusing the call).
pub(super) fn member_failure(e: &HsmError) -> bool {
    matches!(e, HsmError::Io { .. } | HsmError::NotLoggedIn(_))
}

fn not_in_group<T>(what: &str) -> Result<T> {
    Err(HsmError::Refused(format!(
        "{what} is done on each member HSM (with ferrohsm), not through an HA group"
    )))
}

impl GroupFront {
    pub(super) fn new(group: Arc<Group>) -> GroupFront {
        let conns = group.members.iter().map(|_| None).collect();
        GroupFront { group, conns }
    }

    /// Takes over connections another front on the same group kept (the background thread's,
    /// between its passes).
    pub(super) fn set_conns(&mut self, conns: Vec<Option<Remote>>) {
        if conns.len() == self.conns.len() {
            self.conns = conns;
        }
    }

    /// Its connections, to be kept for a later front.
    pub(super) fn into_conns(self) -> Vec<Option<Remote>> {
        self.conns
    }

    /// The group.
    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// Member `i`'s connection, taken out of the front (opened when there is none); a member
    /// that cannot be reached leaves the group.
    pub(super) fn take(&mut self, i: usize) -> Result<Remote> {
        if let Some(c) = self.conns[i].take() {
            return Ok(c);
        }
        let m = &self.group.config.members[i];
        let r = Remote::connect_to(&m.server, m.tls.as_ref())
            .map(|r| r.with_deadline(self.group.config.deadline));
        if let Err(e) = &r {
            self.group.member_failed(i, e);
        }
        r
    }

    /// Gives back a connection after a call's outcome `r`: kept, or (the member failed) closed
    /// and the member out of the group.
    fn put<T>(&mut self, i: usize, c: Remote, r: &Result<T>) {
        match r {
            Err(e) if member_failure(e) => self.group.member_failed(i, e),
            _ => self.conns[i] = Some(c),
        }
    }

    /// Runs `f` on member `i`.
    pub(super) fn on<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Remote) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.take(i)?;
        let r = f(&mut c);
        self.put(i, c, &r);
        r
    }

    fn partition(&self, i: usize) -> String {
        self.group.config.members[i].partition.clone()
    }

    /// Member `i`'s handle for the group handle `vh`, if it holds the object.
    fn resolve(&mut self, i: usize, ml: Option<LoginId>, vh: u64) -> Result<Option<u64>> {
        let entry = lock(&self.group.table).entries.get(&vh).cloned();
        let Some(entry) = entry else {
            return Err(HsmError::NotFound(format!(
                "object handle {vh} names no object of HA group {}",
                self.group.config.label
            )));
        };
        match entry {
            Entry::Pinned { member, handle } => Ok((member == i).then_some(handle)),
            Entry::Shared { uid, filter } => {
                if let Some(h) = self.group.member(i).handles.get(&vh) {
                    return Ok(Some(*h));
                }
                let partition = self.partition(i);
                let found = self.on(i, |r| r.find(ml, &partition, &filter))?;
                let h = found
                    .iter()
                    .find(|o| o.attrs.unique_id == uid)
                    .map(|o| o.handle);
                if let Some(h) = h {
                    self.group.member(i).handles.insert(vh, h);
                }
                Ok(h)
            }
        }
    }

    /// Member `i`'s handles for `handles`, or `None` when it lacks one of them.
    fn resolve_all(
        &mut self,
        i: usize,
        ml: Option<LoginId>,
        handles: &[u64],
    ) -> Result<Option<Vec<u64>>> {
        let mut real = Vec::with_capacity(handles.len());
        for &vh in handles {
            match self.resolve(i, ml, vh)? {
                Some(h) => real.push(h),
                None => return Ok(None),
            }
        }
        Ok(Some(real))
    }

    /// The error when no member could answer: the last member failure, or (every live member
    /// answered, none holds the objects) not found.
    fn none_left(&self, failure: Option<HsmError>, handles: &[u64]) -> HsmError {
        let label = &self.group.config.label;
        match failure {
            None if !handles.is_empty() => HsmError::NotFound(format!(
                "object handle(s) {handles:?} of HA group {label} are on no live member"
            )),
            f => HsmError::io(
                format!("HA group {label}"),
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    match f {
                        Some(e) => format!("no member can answer (the last: {e})"),
                        None => "no member is live".to_string(),
                    },
                ),
            ),
        }
    }

    /// Runs a call that changes nothing on a live member holding `handles` (their member
    /// handles passed to `f`), in turn; a member that fails is dropped and the call run again
    /// on the next.
    fn serve<T>(
        &mut self,
        login: Option<LoginId>,
        handles: &[u64],
        mut f: impl FnMut(&mut Remote, Option<LoginId>, &str, &[u64]) -> Result<T>,
    ) -> Result<T> {
        let mut failure = None;
        for (i, ml) in self.group.candidates(login)? {
            let real = match self.resolve_all(i, ml, handles) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) if member_failure(&e) => {
                    failure = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let partition = self.partition(i);
            match self.on(i, |r| f(r, ml, &partition, &real)) {
                Err(e) if member_failure(&e) => failure = Some(e),
                r => return r,
            }
        }
        Err(self.none_left(failure, handles))
    }

    /// Runs a call that makes objects (their member handles returned by `f`) on one live
    /// member, then makes them durable ([`GroupFront::land`]). Tried on another member only
    /// when nothing reached the first.
    fn create(
        &mut self,
        login: LoginId,
        handles: &[u64],
        mut f: impl FnMut(&mut Remote, LoginId, &[u64]) -> Result<Vec<u64>>,
    ) -> Result<Vec<u64>> {
        let mut failure = None;
        for (i, ml) in self.group.candidates(Some(login))? {
            let Some(ml) = ml else { continue };
            let real = match self.resolve_all(i, Some(ml), handles) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) if member_failure(&e) => {
                    failure = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A call that changes something is tried on another member only when it cannot
            // have reached this one: no connection could be made for it.
            if let Err(e) = self.on(i, Remote::ready) {
                failure = Some(e);
                continue;
            }
            match self.on(i, |r| f(r, ml, &real)) {
                Ok(made) => match self.land(login, i, ml, &made) {
                    // The member that made it is outside the group's domain (and now out of
                    // the group): made again on another.
                    Err(e) if !self.group.member(i).up && !member_failure(&e) => {
                        for h in made.iter().rev() {
                            let _ = self.on(i, |r| r.destroy_object(ml, *h));
                        }
                        failure = Some(e)
                    }
                    r => return r,
                },
                Err(e) => return Err(e),
            }
        }
        Err(self.none_left(failure, handles))
    }

    fn create_one(
        &mut self,
        login: LoginId,
        handles: &[u64],
        mut f: impl FnMut(&mut Remote, LoginId, &[u64]) -> Result<u64>,
    ) -> Result<u64> {
        let made = self.create(login, handles, |r, l, h| f(r, l, h).map(|h| vec![h]))?;
        made.first()
            .copied()
            .ok_or_else(|| HsmError::State("a create made nothing".into()))
    }

    /// Gives the objects member `i` just made group handles, and replicates the token objects
    /// among them to K members before returning.
    fn land(&mut self, login: LoginId, i: usize, ml: LoginId, made: &[u64]) -> Result<Vec<u64>> {
        let partition = self.partition(i);
        let mut infos = Vec::with_capacity(made.len());
        for h in made {
            infos.push(self.on(i, |r| r.object_info(Some(ml), &partition, *h))?);
        }
        let (handles, uids) = self.enter(i, &infos);
        if !uids.is_empty() {
            self.replicate(login, i, ml, &uids)?;
        }
        Ok(handles)
    }

    /// Group handles for objects member `i` showed; and the unique ids of the token objects.
    fn enter(&self, i: usize, infos: &[ObjectInfo]) -> (Vec<u64>, Vec<String>) {
        let mut t = lock(&self.group.table);
        let mut m = self.group.member(i);
        let mut handles = Vec::with_capacity(infos.len());
        let mut uids = Vec::new();
        for o in infos {
            let vh = t.enter(i, o);
            if matches!(t.entries.get(&vh), Some(Entry::Shared { .. })) {
                uids.push(o.attrs.unique_id.clone());
                m.handles.insert(vh, o.handle);
            }
            handles.push(vh);
        }
        (handles, uids)
    }

    /// Clones `uids` from `src` to live members until K hold them (or every live member,
    /// when fewer are live); the rest get them in the background.
    fn replicate(
        &mut self,
        login: LoginId,
        src: usize,
        src_login: LoginId,
        uids: &[String],
    ) -> Result<()> {
        let g = self.group.clone();
        let targets: Vec<(usize, LoginId)> = g
            .candidates(Some(login))?
            .into_iter()
            .filter(|(j, _)| *j != src)
            .filter_map(|(j, l)| l.map(|l| (j, l)))
            .collect();
        let want = g.config.durable.max(1);
        let mut holders = vec![src];
        let mut refusals = Vec::new();
        for (j, lj) in targets {
            if holders.len() >= want {
                break;
            }
            match self.clone_to(src, src_login, j, lj, uids) {
                Ok(()) => holders.push(j),
                // The target refused (another cloning domain, a policy that takes no
                // clones): which of the two is wrong is settled below; the next is tried.
                Err((CloneSide::Target, e)) if !member_failure(&e) => refusals.push((j, e)),
                Err((CloneSide::Target, _)) => {}
                Err((CloneSide::Source, e)) => return Err(e),
            }
        }
        if let Some((_, e)) = refusals.first() {
            let src_proven = g.member(src).proven;
            let odd_source = !src_proven
                && ((holders.len() == 1 && refusals.len() >= 2)
                    || refusals.iter().any(|(j, _)| g.member(*j).proven));
            if odd_source {
                // Every other member refuses it, or one proven in the domain does: it is the
                // one outside the domain. The object stays on it, out of the group; the
                // caller makes it elsewhere.
                g.member_failed(src, e);
                return Err(HsmError::Refused(format!("{e}")));
            }
            for (j, e) in &refusals {
                g.member_failed(*j, e);
            }
        }
        let live = (0..g.members.len()).filter(|&j| g.member(j).up).count();
        if holders.len() < want.min(live.max(1)) || !g.member(src).up {
            return Err(HsmError::State(format!(
                "the new object is on {} member(s) of HA group {}, fewer than the {} it must be on; not acknowledged",
                holders.len(),
                g.config.label,
                want.min(live.max(1))
            )));
        }
        for j in (0..g.members.len()).filter(|j| !holders.contains(j)) {
            let mut m = g.member(j);
            for u in uids {
                m.replicate.insert(u.clone(), src);
            }
        }
        g.signal.raise();
        Ok(())
    }

    /// Clones `uids` from member `src` to member `dst` (objects `dst` already holds stay).
    /// A member that fails on the way leaves the group; an error says whose step failed.
    pub(super) fn clone_to(
        &mut self,
        src: usize,
        src_login: LoginId,
        dst: usize,
        dst_login: LoginId,
        uids: &[String],
    ) -> std::result::Result<(), (CloneSide, HsmError)> {
        let mut a = self.take(src).map_err(|e| (CloneSide::Source, e))?;
        let mut b = match self.take(dst) {
            Ok(b) => b,
            Err(e) => {
                self.conns[src] = Some(a);
                return Err((CloneSide::Target, e));
            }
        };
        let mut r = Ok(());
        for chunk in uids.chunks(REPLICATE_CHUNK) {
            let select = CloneSelect {
                unique_ids: chunk.to_vec(),
                ..Default::default()
            };
            r = clone_sided(
                &mut a,
                src_login,
                &mut b,
                dst_login,
                &select,
                500,
                |_, _, _| {},
            )
            .map(|_| ());
            if r.is_err() {
                break;
            }
        }
        if r.is_ok() {
            self.group.member(src).proven = true;
            self.group.member(dst).proven = true;
        }
        let failed = match &r {
            Err((side, e)) if member_failure(e) => Some((*side, e)),
            _ => None,
        };
        for (i, side, c) in [(src, CloneSide::Source, a), (dst, CloneSide::Target, b)] {
            match failed {
                Some((s, e)) if s == side => self.group.member_failed(i, e),
                _ => self.conns[i] = Some(c),
            }
        }
        r
    }

    /// Runs `f` on every live member holding `vh` (a change every copy must get); members that
    /// are away get it when they return (`away`). The first refusal stops it before any other
    /// member changes.
    fn everywhere(
        &mut self,
        login: LoginId,
        vh: u64,
        mut f: impl FnMut(&mut Remote, LoginId, u64) -> Result<()>,
        away: impl Fn(&mut super::MemberState, &str),
    ) -> Result<()> {
        let entry = lock(&self.group.table).entries.get(&vh).cloned();
        let uid = match entry {
            Some(Entry::Shared { uid, .. }) => uid,
            Some(Entry::Pinned { .. }) => {
                return self.serve(Some(login), &[vh], |r, l, _, h| {
                    f(r, l.unwrap_or_default(), h[0])
                })
            }
            None => {
                return Err(HsmError::NotFound(format!(
                    "object handle {vh} names no object of HA group {}",
                    self.group.config.label
                )))
            }
        };
        let mut done = 0;
        let mut failure = None;
        let served: Vec<usize> = {
            let mut order = self.group.candidates(Some(login))?;
            order.sort_by_key(|(i, _)| *i);
            for (i, ml) in order.iter().copied() {
                let Some(ml) = ml else { continue };
                let h = match self.resolve(i, Some(ml), vh) {
                    Ok(Some(h)) => h,
                    Ok(None) => continue,
                    Err(e) if member_failure(&e) => {
                        failure = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match self.on(i, |r| f(r, ml, h)) {
                    Ok(()) => done += 1,
                    Err(e) if member_failure(&e) => failure = Some(e),
                    Err(e) if done == 0 => return Err(e),
                    Err(e) => (self.group.log)(&format!(
                        "HA group {}: member {} refused a change the others made: {e}",
                        self.group.config.label,
                        self.group.name(i)
                    )),
                }
            }
            order.iter().map(|(i, _)| *i).collect()
        };
        if done == 0 {
            return Err(self.none_left(failure, &[vh]));
        }
        for j in 0..self.group.members.len() {
            let mut m = self.group.member(j);
            if !served.contains(&j) || !m.up {
                away(&mut m, &uid);
            }
        }
        Ok(())
    }
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
        _: Option<NewCredential>,
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

    fn clone_accept(&mut self, _: LoginId) -> Result<CloneHello> {
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
}

impl GroupFront {
    /// Objects as member `i` showed them, under group handles.
    fn translate(&self, i: usize, found: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
        let (handles, _) = self.enter(i, &found);
        found
            .into_iter()
            .zip(handles)
            .map(|(mut o, h)| {
                o.handle = h;
                o
            })
            .collect()
    }
}
