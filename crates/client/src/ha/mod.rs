//! HA groups: several partitions on several `ferrohsm server`s that share one cloning domain,
//! answering [`HsmApi`](ferrohsm_core::api::HsmApi) as one partition ([`GroupFront`]).
//!
//! - **Handles.** The group hands out its own object handles, one per object's unique id
//!   (`CKA_UNIQUE_ID`), so a handle means the same object whichever member answers. A session
//!   object (`CKA_TOKEN` false) is not replicated: it stays on the member that made it, and
//!   every use of it goes there.
//! - **Balance and failover.** Each call goes to the next live member in turn. A member that
//!   fails (its connection breaks or times out, or it lost the login: a restart) leaves the
//!   group and the call is run again on another member, so single-part operations never see
//!   the failure. The module keeps a multi-part operation's data and sends it in one call, so
//!   it too stays on one member.
//! - **Durable creates.** A new token object is acknowledged only once it is on K members
//!   (`ha_durable`, default 2; every live member when fewer are live): it is cloned from the
//!   member that made it, under the cloning domain, before the call returns. The other
//!   members get it in the background.
//! - **Return.** A background thread tries members that left, logs in again, brings them up
//!   to date (objects they lack cloned to them, objects destroyed meanwhile destroyed) and
//!   only then lets them serve. Leaving and rejoining are recorded in the members' audit logs.
//!
//! Replication needs the Crypto Officer's login (the role that may clone); the group keeps
//! the login's secret in memory (zeroized on logout) to log in again on a returning member.

mod api;
mod config;
mod front;
mod sync;

pub use config::{
    GroupConfig, MemberConfig, SharedTls, DEFAULT_DURABLE, GROUP_DEADLINE, KEYS, MAX_MEMBERS,
};
pub use front::GroupFront;
pub use sync::{MemberReport, SyncReport};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use ferrohsm_core::api::LoginId;
use ferrohsm_core::object::{ObjectFilter, ObjectInfo};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::Role;

/// Where a group writes what happens to it (the PKCS#11 module's log).
pub type Logger = Arc<dyn Fn(&str) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One HA group, shared by all of a process's fronts on it.
pub struct Group {
    config: GroupConfig,
    members: Vec<Mutex<MemberState>>,
    table: Mutex<Table>,
    logins: Mutex<HashMap<LoginId, Arc<GroupLogin>>>,
    /// Objects destroyed through the group: never brought back to a member that missed it.
    tombstones: Mutex<BTreeSet<String>>,
    /// Membership changes still to record in the members' audit logs.
    notes: Mutex<Vec<(&'static str, usize)>>,
    turn: AtomicUsize,
    signal: Arc<Signal>,
    log: Logger,
}

/// Wakes the background thread, and tells it to stop.
#[derive(Default)]
struct Signal {
    /// (work waiting, stop).
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Signal {
    fn raise(&self) {
        lock(&self.state).0 = true;
        self.cv.notify_all();
    }
}

/// What the group knows of one member.
struct MemberState {
    /// Serving calls.
    up: bool,
    /// When it last changed between up and down.
    since: Instant,
    /// Why it left, while down.
    error: Option<String>,
    /// Group handle → the member's handle, as found.
    handles: HashMap<u64, u64>,
    /// Objects it still lacks (unique id → a member that holds it).
    replicate: BTreeMap<String, usize>,
    /// Objects destroyed while it was away.
    destroy: BTreeSet<String>,
    /// Label and id changes made while it was away.
    relabel: BTreeMap<String, (Option<String>, Option<Vec<u8>>)>,
    /// Compare everything with the other members (after a first login).
    needs_pass: bool,
    /// A clone between it and another member has succeeded: it is in the group's cloning
    /// domain. When two members disagree about their domain, the one not proven is at fault.
    proven: bool,
}

/// One login on the group: the role, its secret (to log in again on a returning member) and
/// the member logins behind it.
struct GroupLogin {
    role: Role,
    secret: Pin,
    on: Mutex<Vec<Option<LoginId>>>,
}

/// An object as the group names it.
#[derive(Clone, Debug)]
enum Entry {
    /// A token object: on every member, found on each by its unique id (looked up by label,
    /// id and class, which the HSM indexes).
    Shared { uid: String, filter: ObjectFilter },
    /// A session object: on one member only.
    Pinned { member: usize, handle: u64 },
}

/// Group handles.
#[derive(Default)]
struct Table {
    by_uid: HashMap<String, u64>,
    by_pin: HashMap<(usize, u64), u64>,
    entries: HashMap<u64, Entry>,
    next: u64,
}

impl Table {
    /// The group handle of `o`, as `member` showed it (made on first sight).
    fn enter(&mut self, member: usize, o: &ObjectInfo) -> u64 {
        let shared = o.attrs.token && !o.attrs.unique_id.is_empty();
        let known = if shared {
            self.by_uid.get(&o.attrs.unique_id).copied()
        } else {
            self.by_pin.get(&(member, o.handle)).copied()
        };
        let h = known.unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        let entry = if shared {
            self.by_uid.insert(o.attrs.unique_id.clone(), h);
            Entry::Shared {
                uid: o.attrs.unique_id.clone(),
                filter: ObjectFilter {
                    label: Some(o.attrs.label.clone()),
                    id: Some(o.attrs.id.clone()),
                    class: Some(o.attrs.class),
                },
            }
        } else {
            self.by_pin.insert((member, o.handle), h);
            Entry::Pinned {
                member,
                handle: o.handle,
            }
        };
        self.entries.insert(h, entry);
        h
    }

    fn forget(&mut self, h: u64) {
        match self.entries.remove(&h) {
            Some(Entry::Shared { uid, .. }) => {
                self.by_uid.remove(&uid);
            }
            Some(Entry::Pinned { member, handle }) => {
                self.by_pin.remove(&(member, handle));
            }
            None => {}
        }
    }
}

impl Group {
    /// A group as `config` describes it, with its background thread (which ends when the last
    /// front and the group itself are dropped).
    pub fn start(config: GroupConfig, log: Logger) -> Arc<Group> {
        let g = Group::without_thread(config, log);
        let (weak, signal) = (Arc::downgrade(&g), g.signal.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ferrohsm-ha-{}", g.config.label))
            .spawn(move || sync::background(weak, signal));
        if let Err(e) = spawned {
            (g.log)(&format!(
                "HA group {}: no background thread ({e}): members that leave come back only at the next login",
                g.config.label
            ));
        }
        g
    }

    /// A group with no background thread: for a one-shot command (`ferrohsm ha`).
    pub fn without_thread(config: GroupConfig, log: Logger) -> Arc<Group> {
        let members = config
            .members
            .iter()
            .map(|_| {
                Mutex::new(MemberState {
                    up: true,
                    since: Instant::now(),
                    error: None,
                    handles: HashMap::new(),
                    replicate: BTreeMap::new(),
                    destroy: BTreeSet::new(),
                    relabel: BTreeMap::new(),
                    needs_pass: false,
                    proven: false,
                })
            })
            .collect();
        Arc::new(Group {
            config,
            members,
            table: Mutex::default(),
            logins: Mutex::default(),
            tombstones: Mutex::default(),
            notes: Mutex::default(),
            turn: AtomicUsize::new(0),
            signal: Arc::default(),
            log,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Which members serve calls now (in the configuration's order).
    pub fn members_up(&self) -> Vec<bool> {
        (0..self.members.len()).map(|i| self.member(i).up).collect()
    }

    /// A front on it, with connections of its own.
    pub fn front(self: &Arc<Group>) -> GroupFront {
        GroupFront::new(self.clone())
    }

    fn member(&self, i: usize) -> MutexGuard<'_, MemberState> {
        lock(&self.members[i])
    }

    fn name(&self, i: usize) -> String {
        self.config.members[i].name()
    }

    /// Takes member `i` out of the group after `why`; the background thread brings it back.
    fn member_failed(&self, i: usize, why: &ferrohsm_core::HsmError) {
        {
            let mut m = self.member(i);
            if !m.up {
                return;
            }
            m.up = false;
            m.since = Instant::now();
            m.error = Some(why.to_string());
            m.handles.clear();
        }
        for l in lock(&self.logins).values() {
            lock(&l.on)[i] = None;
        }
        (self.log)(&format!(
            "HA group {}: member {} left the group: {why}",
            self.config.label,
            self.name(i)
        ));
        lock(&self.notes).push(("member-down", i));
        self.signal.raise();
    }

    /// Live members a call may go to (with `login`, those it is logged in on), starting with
    /// the next in turn; each with its member login.
    fn candidates(
        &self,
        login: Option<LoginId>,
    ) -> ferrohsm_core::Result<Vec<(usize, Option<LoginId>)>> {
        let on = match login {
            Some(l) => Some(self.login(l)?),
            None => None,
        };
        let n = self.members.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let on = on.map(|l| lock(&l.on).clone());
        Ok((0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| self.member(i).up)
            .filter_map(|i| match &on {
                Some(on) => on[i].map(|l| (i, Some(l))),
                None => Some((i, None)),
            })
            .collect())
    }

    fn login(&self, l: LoginId) -> ferrohsm_core::Result<Arc<GroupLogin>> {
        lock(&self.logins).get(&l).cloned().ok_or_else(|| {
            ferrohsm_core::HsmError::NotLoggedIn(format!(
                "that login on HA group {} has ended",
                self.config.label
            ))
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        lock(&self.signal.state).1 = true;
        self.signal.cv.notify_all();
    }
}
