//! Keeping an HA group's members the same: the background thread that brings members back
//! (log in again, catch up, serve), replicates what a create left for later, and records
//! membership changes; and the reports `ferrohsm ha show` and `ha sync` print.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use ferrohsm_core::api::{CloneSide, HsmApi, LoginCredential, LoginId};
use ferrohsm_core::object::{ObjectFilter, ObjectInfo};
use ferrohsm_core::{HsmError, Result, Role};
use serde::Serialize;

use super::front::{member_failure, GroupFront};
use super::{lock, Group, GroupLogin, Signal};
use crate::Remote;

/// How often the background thread looks at members that left.
const RETRY: Duration = Duration::from_millis(300);

/// The background thread: one pass whenever something is waiting, and every [`RETRY`].
/// Holds the group only during a pass, so it ends once the group is dropped.
pub(super) fn background(weak: Weak<Group>, signal: Arc<Signal>) {
    let mut conns: Option<Vec<Option<Remote>>> = None;
    loop {
        {
            let mut st = lock(&signal.state);
            if !st.0 && !st.1 {
                st = signal
                    .cv
                    .wait_timeout(st, RETRY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if st.1 {
                return;
            }
            st.0 = false;
        }
        let Some(g) = weak.upgrade() else { return };
        let mut f = GroupFront::new(g);
        if let Some(c) = conns.take() {
            f.set_conns(c);
        }
        f.pass();
        conns = Some(f.into_conns());
    }
}

/// One member as `ferrohsm ha show` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberReport {
    /// `server/partition`.
    pub name: String,
    /// "up" (serving) or "down".
    pub state: String,
    /// Why it is down.
    pub error: Option<String>,
    /// Token objects it holds (when it could be listed).
    pub objects: Option<usize>,
    /// Objects the group holds that it lacks: its lag (unique id and label).
    pub missing: Vec<(String, String)>,
    /// Objects it holds that were destroyed on another member (by any process): what a sync
    /// destroys here (unique id and label).
    pub destroyed_elsewhere: Vec<(String, String)>,
}

/// The whole group as `ferrohsm ha show` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    /// The group's name.
    pub group: String,
    /// Token objects on any member.
    pub objects: usize,
    /// Each member.
    pub members: Vec<MemberReport>,
}

/// A member's token objects by unique id.
type Listing = HashMap<String, ObjectInfo>;

impl GroupFront {
    /// One pass of the background thread.
    fn pass(&mut self) {
        let g = self.group.clone();
        let n = g.members.len();
        for i in (0..n).filter(|&i| !g.member(i).up) {
            self.rejoin(i);
        }
        if let Some(co) = self.co_login() {
            if (0..n).any(|i| g.member(i).needs_pass && g.member(i).up) {
                if let Err(e) = self.compare(&co) {
                    self.note_error(&format!("comparing the members: {e}"));
                }
            }
            self.drain(&co);
            self.send_notes(&co);
        }
    }

    fn note_error(&self, what: &str) {
        (self.group.log)(&format!("HA group {}: {what}", self.group.config.label));
    }

    /// A Crypto Officer's login on the group (the role that replicates), if any.
    fn co_login(&self) -> Option<Arc<GroupLogin>> {
        lock(&self.group.logins)
            .values()
            .find(|l| l.role == Role::CryptoOfficer)
            .cloned()
    }

    /// Tries to bring member `i` back: every group login logged in again on it, then (with a
    /// Crypto Officer) caught up; only then does it serve.
    fn rejoin(&mut self, i: usize) {
        let g = self.group.clone();
        let logins: Vec<Arc<GroupLogin>> = lock(&g.logins).values().cloned().collect();
        if logins.is_empty() {
            // Nothing to log in: it serves again once it answers (a login compares it).
            if self.on(i, |r| r.state_generation()).is_ok() {
                self.back(i);
            }
            return;
        }
        let partition = g.config.members[i].partition.clone();
        for l in &logins {
            if lock(&l.on)[i].is_some() {
                continue;
            }
            let s = l.secret.clone();
            match self.on(i, |r| {
                r.login(l.role, Some(&partition), LoginCredential::Secret(s))
            }) {
                Ok(id) => lock(&l.on)[i] = Some(id),
                Err(e) => return self.still_down(i, "logging in again", &e),
            }
        }
        if let Some(co) = self.co_login() {
            if let Err(e) = self.catch_up(i, &co) {
                return self.still_down(i, "catching up", &e);
            }
        }
        self.back(i);
    }

    /// Member `i` stays out after `e`; the log hears each new reason once (a pass runs every
    /// few hundred milliseconds), not the member's being unreachable while it is.
    fn still_down(&self, i: usize, doing: &str, e: &HsmError) {
        let why = e.to_string();
        let mut m = self.group.member(i);
        if m.error.as_deref() == Some(why.as_str()) {
            return;
        }
        m.error = Some(why);
        drop(m);
        if !member_failure(e) || std::env::var_os("FERROHSM_HA_DEBUG").is_some() {
            self.note_error(&format!(
                "member {} stays out ({doing}): {e}",
                self.group.name(i)
            ));
        }
    }

    fn back(&mut self, i: usize) {
        let g = self.group.clone();
        {
            let mut m = g.member(i);
            m.up = true;
            m.since = Instant::now();
            m.error = None;
        }
        self.note_error(&format!("member {} is back in the group", g.name(i)));
        lock(&g.notes).push(("member-rejoined", i));
    }

    /// Member `i`'s token objects, listed with `login`.
    fn list(&mut self, i: usize, login: LoginId) -> Result<Listing> {
        let partition = self.group.config.members[i].partition.clone();
        let found = self.on(i, |r| {
            r.find(Some(login), &partition, &ObjectFilter::default())
        })?;
        Ok(found
            .into_iter()
            .filter(|o| o.attrs.token && !o.attrs.unique_id.is_empty())
            .map(|o| (o.attrs.unique_id.clone(), o))
            .collect())
    }

    /// The unique ids member `j` says were destroyed in its partition (by any process).
    fn destroyed(&mut self, j: usize, login: LoginId) -> Result<BTreeSet<String>> {
        Ok(self
            .on(j, |r| r.destroyed_objects(login))?
            .into_iter()
            .collect())
    }

    /// Destroys on member `j` (logged in as `login`) what it holds (`have`) of `gone`.
    fn destroy_on(
        &mut self,
        j: usize,
        login: LoginId,
        have: &Listing,
        gone: &BTreeSet<String>,
    ) -> Result<()> {
        for uid in gone.iter().filter(|u| have.contains_key(*u)) {
            let h = have[uid].handle;
            match self.on(j, |r| r.destroy_object(login, h)) {
                Ok(()) | Err(HsmError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Brings member `i` (not yet serving) up to date: what was destroyed (here, or by any
    /// process on any member: each keeps the ids) or relabelled while it was away, then every
    /// object a live member holds that it lacks. Objects only it holds are handed to the
    /// others.
    fn catch_up(&mut self, i: usize, co: &GroupLogin) -> Result<()> {
        let g = self.group.clone();
        let on = lock(&co.on).clone();
        let Some(li) = on[i] else {
            return Err(HsmError::NotLoggedIn(
                "no Crypto Officer login on it".into(),
            ));
        };
        let have = self.list(i, li)?;
        // What the serving members hold, and what any member says was destroyed.
        let mut theirs: Vec<(usize, LoginId, Listing)> = Vec::new();
        let mut destroy = self.destroyed(i, li)?;
        for j in (0..g.members.len()).filter(|&j| j != i && g.member(j).up) {
            let Some(lj) = on[j] else { continue };
            match self
                .list(j, lj)
                .and_then(|l| Ok((l, self.destroyed(j, lj)?)))
            {
                Ok((l, d)) => {
                    destroy.extend(d);
                    theirs.push((j, lj, l));
                }
                Err(e) if member_failure(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        let relabel = {
            let m = g.member(i);
            destroy.extend(m.destroy.iter().cloned());
            destroy.extend(lock(&g.tombstones).iter().cloned());
            m.relabel.clone()
        };
        self.destroy_on(i, li, &have, &destroy)?;
        for (j, lj, l) in &theirs {
            if let Err(e) = self.destroy_on(*j, *lj, l, &destroy) {
                self.note_error(&format!("destroying on {}: {e}", g.name(*j)));
            }
        }
        for (uid, (label, id)) in relabel.iter().filter(|(u, _)| have.contains_key(*u)) {
            let h = have[uid].handle;
            self.on(i, |r| {
                r.relabel_object(li, h, label.as_deref(), id.as_deref())
            })?;
        }
        {
            let mut m = g.member(i);
            m.destroy.retain(|u| !destroy.contains(u));
            m.relabel.retain(|u, _| !relabel.contains_key(u));
        }
        let mut missing: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut anywhere: BTreeSet<String> = BTreeSet::new();
        for (j, _, theirs) in &theirs {
            let j = *j;
            for uid in theirs.keys() {
                anywhere.insert(uid.clone());
                let claimed = missing.values().any(|v| v.contains(uid));
                if !have.contains_key(uid) && !destroy.contains(uid) && !claimed {
                    missing.entry(j).or_default().push(uid.clone());
                }
            }
        }
        let mut cloned = BTreeSet::new();
        for (j, uids) in missing {
            let Some(lj) = on[j] else { continue };
            self.clone_to(j, lj, i, li, &uids).map_err(|(_, e)| e)?;
            cloned.extend(uids);
        }
        // What it now holds is no longer waiting for it (creates made meanwhile still are).
        g.member(i)
            .replicate
            .retain(|u, _| !have.contains_key(u) && !cloned.contains(u));
        // What only it holds (made while the others could not be reached): theirs too.
        let only: Vec<&String> = have
            .keys()
            .filter(|u| !anywhere.contains(*u) && !destroy.contains(*u))
            .collect();
        if !only.is_empty() {
            for j in (0..g.members.len()).filter(|&j| j != i) {
                let mut m = g.member(j);
                for u in &only {
                    m.replicate.insert((*u).clone(), i);
                }
            }
        }
        g.member(i).needs_pass = false;
        Ok(())
    }

    /// Lists every serving member and queues, for each, what another holds and it lacks.
    fn compare(&mut self, co: &GroupLogin) -> Result<()> {
        let g = self.group.clone();
        let on = lock(&co.on).clone();
        let mut lists: Vec<(usize, Listing)> = Vec::new();
        for j in (0..g.members.len()).filter(|&j| g.member(j).up) {
            let Some(lj) = on[j] else { continue };
            match self.list(j, lj) {
                Ok(l) => lists.push((j, l)),
                Err(e) if member_failure(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        // Destroyed on any member, by any process: destroyed on every member, never sent on.
        let mut tomb = lock(&g.tombstones).clone();
        for (j, _) in &lists {
            let Some(lj) = on[*j] else { continue };
            match self.destroyed(*j, lj) {
                Ok(d) => tomb.extend(d),
                Err(e) if member_failure(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        for (j, l) in &lists {
            let Some(lj) = on[*j] else { continue };
            if let Err(e) = self.destroy_on(*j, lj, l, &tomb) {
                self.note_error(&format!("destroying on {}: {e}", g.name(*j)));
            }
        }
        let mut holder: BTreeMap<&String, usize> = BTreeMap::new();
        for (j, l) in &lists {
            for uid in l.keys().filter(|u| !tomb.contains(*u)) {
                holder.entry(uid).or_insert(*j);
            }
        }
        for (j, l) in &lists {
            let mut m = g.member(*j);
            for (uid, src) in &holder {
                if !l.contains_key(*uid) && !tomb.contains(*uid) {
                    m.replicate.insert((*uid).clone(), *src);
                }
            }
            m.needs_pass = false;
        }
        Ok(())
    }

    /// Clones to each serving member what it still lacks, from the member that holds it.
    fn drain(&mut self, co: &GroupLogin) {
        let g = self.group.clone();
        for j in 0..g.members.len() {
            let pending: BTreeMap<usize, Vec<String>> = {
                let tomb = lock(&g.tombstones).clone();
                let mut m = g.member(j);
                // A destroyed object is never sent on.
                m.replicate.retain(|u, _| !tomb.contains(u));
                if !m.up || m.replicate.is_empty() {
                    continue;
                }
                let mut by_src: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                for (uid, src) in &m.replicate {
                    by_src.entry(*src).or_default().push(uid.clone());
                }
                by_src
            };
            for (src, uids) in pending {
                let on = lock(&co.on).clone();
                let (Some(ls), Some(lj)) = (on[src], on[j]) else {
                    // Its holder is away: another may hold it.
                    g.member(j).needs_pass = true;
                    continue;
                };
                if !g.member(src).up {
                    g.member(j).needs_pass = true;
                    continue;
                }
                match self.clone_to(src, ls, j, lj, &uids) {
                    // Nothing left to clone: destroyed since.
                    Ok(()) | Err((_, HsmError::NotFound(_))) => {
                        let mut m = g.member(j);
                        for u in &uids {
                            m.replicate.remove(u);
                        }
                    }
                    Err((CloneSide::Target, e)) if !member_failure(&e) => {
                        // They disagree about the domain: the one not proven in it leaves.
                        let (ps, pj) = (g.member(src).proven, g.member(j).proven);
                        match (ps, pj) {
                            (true, false) => g.member_failed(j, &e),
                            (false, true) => g.member_failed(src, &e),
                            _ => self.still_down(j, "receiving objects", &e),
                        }
                    }
                    Err((_, e)) => self.note_error(&format!(
                        "replicating {} object(s) to {}: {e}",
                        uids.len(),
                        g.name(j)
                    )),
                }
            }
        }
    }

    /// Records membership changes in the audit log of every serving member.
    fn send_notes(&mut self, co: &GroupLogin) {
        let g = self.group.clone();
        let notes: Vec<(&'static str, usize)> = std::mem::take(&mut *lock(&g.notes));
        for (event, i) in notes {
            let name = g.name(i);
            let on = lock(&co.on).clone();
            for j in (0..g.members.len()).filter(|&j| g.member(j).up) {
                let Some(lj) = on[j] else { continue };
                if let Err(e) = self.on(j, |r| r.ha_note(lj, &g.config.label, event, &name)) {
                    self.note_error(&format!(
                        "recording {event} of {name} on {}: {e}",
                        g.name(j)
                    ));
                }
            }
        }
    }

    /// Every member's state and lag, as `login` (a Crypto Officer's login on the group) sees
    /// them: each reachable member is listed and compared with the union of all.
    pub fn report(&mut self, login: LoginId) -> Result<SyncReport> {
        let g = self.group.clone();
        let on = lock(&g.login(login)?.on).clone();
        let mut lists: Vec<Option<Listing>> = Vec::new();
        let mut gone: BTreeSet<String> = lock(&g.tombstones).clone();
        for (i, l) in on.iter().enumerate() {
            lists.push(match l {
                Some(l) if g.member(i).up => {
                    let listed = self.list(i, *l).ok();
                    if listed.is_some() {
                        gone.extend(self.destroyed(i, *l).unwrap_or_default());
                    }
                    listed
                }
                _ => None,
            });
        }
        let mut union: BTreeMap<String, String> = BTreeMap::new();
        for l in lists.iter().flatten() {
            for (uid, o) in l.iter().filter(|(u, _)| !gone.contains(*u)) {
                union
                    .entry(uid.clone())
                    .or_insert_with(|| o.attrs.label.clone());
            }
        }
        let members = lists
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let m = g.member(i);
                MemberReport {
                    name: g.name(i),
                    state: if m.up && l.is_some() { "up" } else { "down" }.into(),
                    error: m.error.clone(),
                    objects: l.as_ref().map(HashMap::len),
                    missing: match l {
                        Some(l) => union
                            .iter()
                            .filter(|(u, _)| !l.contains_key(*u))
                            .map(|(u, lb)| (u.clone(), lb.clone()))
                            .collect(),
                        None => vec![],
                    },
                    destroyed_elsewhere: match l {
                        Some(l) => l
                            .iter()
                            .filter(|(u, _)| gone.contains(*u))
                            .map(|(u, o)| (u.clone(), o.attrs.label.clone()))
                            .collect(),
                        None => vec![],
                    },
                }
            })
            .collect();
        Ok(SyncReport {
            group: g.config.label.clone(),
            objects: union.len(),
            members,
        })
    }

    /// Brings every reachable member up to date now (what the background thread does), then
    /// reports. `login` is a Crypto Officer's login on the group.
    pub fn sync_now(&mut self, login: LoginId) -> Result<SyncReport> {
        let g = self.group.clone();
        let co = g.login(login)?;
        if co.role != Role::CryptoOfficer {
            return Err(HsmError::Refused(
                "only the Crypto Officer replicates objects".into(),
            ));
        }
        self.compare(&co)?;
        self.drain(&co);
        self.report(login)
    }
}
