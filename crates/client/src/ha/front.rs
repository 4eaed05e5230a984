//! [`GroupFront`]: how a call reaches an HA group's members: a connection to each, group handles
//! found again on each member, members in turn with failover, creates made durable on K.

use std::sync::Arc;

use ferrohsm_core::api::{clone_sided, CloneSelect, CloneSide, HsmApi, LoginId};
use ferrohsm_core::object::ObjectInfo;
use ferrohsm_core::{HsmError, Result};

use super::{lock, Entry, Group};
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

    pub(super) fn partition(&self, i: usize) -> String {
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

    /// [`GroupFront::resolve_all`] as the loops over members use it: `None` when member `i`
    /// lacks an object, or failed (recorded in `failure`, and the member out), so that the
    /// next member is tried; any other error stops the call.
    fn held_on(
        &mut self,
        i: usize,
        ml: Option<LoginId>,
        handles: &[u64],
        failure: &mut Option<HsmError>,
    ) -> Result<Option<Vec<u64>>> {
        match self.resolve_all(i, ml, handles) {
            Err(e) if member_failure(&e) => {
                *failure = Some(e);
                Ok(None)
            }
            r => r,
        }
    }

    /// The error when no member could answer: the last member failure, or (every live member
    /// answered, none holds the objects) not found.
    pub(super) fn none_left(&self, failure: Option<HsmError>, handles: &[u64]) -> HsmError {
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
    pub(super) fn serve<T>(
        &mut self,
        login: Option<LoginId>,
        handles: &[u64],
        mut f: impl FnMut(&mut Remote, Option<LoginId>, &str, &[u64]) -> Result<T>,
    ) -> Result<T> {
        let mut failure = None;
        for (i, ml) in self.group.candidates(login)? {
            let Some(real) = self.held_on(i, ml, handles, &mut failure)? else {
                continue;
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
    pub(super) fn create(
        &mut self,
        login: LoginId,
        handles: &[u64],
        mut f: impl FnMut(&mut Remote, LoginId, &[u64]) -> Result<Vec<u64>>,
    ) -> Result<Vec<u64>> {
        let mut failure = None;
        for (i, ml) in self.group.candidates(Some(login))? {
            let Some(ml) = ml else { continue };
            let Some(real) = self.held_on(i, Some(ml), handles, &mut failure)? else {
                continue;
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

    pub(super) fn create_one(
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
    pub(super) fn land(
        &mut self,
        login: LoginId,
        i: usize,
        ml: LoginId,
        made: &[u64],
    ) -> Result<Vec<u64>> {
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
    pub(super) fn enter(&self, i: usize, infos: &[ObjectInfo]) -> (Vec<u64>, Vec<String>) {
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
    pub(super) fn replicate(
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
    pub(super) fn everywhere(
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
        // The members the change was made on; every other gets it when it is next brought
        // up to date (one that lacks the object yet, as well as one that is away).
        let mut served: Vec<usize> = Vec::new();
        {
            let mut order = self.group.candidates(Some(login))?;
            order.sort_by_key(|(i, _)| *i);
            for (i, ml) in order.iter().copied() {
                let Some(ml) = ml else { continue };
                let Some(h) = self.held_on(i, Some(ml), &[vh], &mut failure)? else {
                    continue;
                };
                let h = h[0];
                match self.on(i, |r| f(r, ml, h)) {
                    Ok(()) => {
                        done += 1;
                        served.push(i);
                    }
                    Err(e) if member_failure(&e) => failure = Some(e),
                    Err(e) if done == 0 => return Err(e),
                    Err(e) => (self.group.log)(&format!(
                        "HA group {}: member {} refused a change the others made: {e}",
                        self.group.config.label,
                        self.group.name(i)
                    )),
                }
            }
        }
        if done == 0 {
            return Err(self.none_left(failure, &[vh]));
        }
        for j in (0..self.group.members.len()).filter(|j| !served.contains(j)) {
            away(&mut self.group.member(j), &uid);
        }
        Ok(())
    }
}

impl GroupFront {
    /// Objects as member `i` showed them, under group handles.
    pub(super) fn translate(&self, i: usize, found: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
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
