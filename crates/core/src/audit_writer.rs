//! A thread that makes key-use records durable. Strict callers wait for their record's
//! commit, and every record that arrived meanwhile shares that commit (group commit: one
//! flush for many concurrent operations). Batched callers do not wait: each use is counted
//! in a tally, grouped by who used which key how, and every group becomes one record (with
//! its count, the time of its first use and the time it was closed) committed within
//! `max_wait`; once a commit fails the writer reports unhealthy and key use is refused until
//! a later commit succeeds. Counting instead of writing a record per use is what keeps
//! batched auditing within a few percent of the operations it records: a record costs the
//! writer several SQL inserts and hashes, more than an Ed25519 signature.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{HsmError, Result};
use crate::mechanism::Mechanism;
use crate::role::Role;
use crate::store::{Event, Store};
use crate::time::now_rfc3339;

type Ack = SyncSender<std::result::Result<(), String>>;

struct Msg {
    /// A strict record and its waiting caller, or `None`: "the tally has uses" (sent once
    /// per batch, by the use that found it empty).
    record: Option<(Event, Ack)>,
}

/// What a key was used for, as the record says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KeyUse {
    /// Signed or MACed.
    Sign(Mechanism),
    /// Verified a signature or MAC, which was valid (`true`) or not.
    Verify(Mechanism, bool),
    /// Encrypted.
    Encrypt(Mechanism),
    /// Decrypted.
    Decrypt(Mechanism),
}

impl fmt::Display for KeyUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyUse::Sign(m) => write!(f, "sign {m}"),
            KeyUse::Verify(m, ok) => {
                write!(f, "verify {m} ({})", if *ok { "valid" } else { "invalid" })
            }
            KeyUse::Encrypt(m) => write!(f, "encrypt {m}"),
            KeyUse::Decrypt(m) => write!(f, "decrypt {m}"),
        }
    }
}

/// Who used which key how: the uses one batched record counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UseGroup {
    /// The role logged in.
    pub role: Role,
    /// Its partition (id).
    pub partition: Option<u32>,
    /// The key's handle.
    pub handle: u64,
    /// The operation.
    pub what: KeyUse,
}

/// Batched uses not yet handed to the writer: per group, the record to write (time of the
/// first use, who, which key) and how many uses it stands for.
type Tally = HashMap<UseGroup, (Event, u64)>;

/// Turns a drained tally into records, each saying how many uses it counts and until when.
fn tally_records(tally: Tally) -> Vec<Event> {
    let until = now_rfc3339();
    let mut out: Vec<Event> = tally
        .into_iter()
        .map(|(group, (mut e, n))| {
            e.outcome = format!("success: {} x{n} until {until}", group.what);
            e
        })
        .collect();
    // Deterministic order within a commit: by first use, then by text.
    out.sort_by(|a, b| (&a.time, &a.object, &a.outcome).cmp(&(&b.time, &b.object, &b.outcome)));
    out
}

/// The writer thread's handle. Dropping it commits what is pending and joins the thread.
pub(crate) struct AuditWriter {
    tx: Option<Sender<Msg>>,
    tally: Arc<Mutex<Tally>>,
    healthy: Arc<AtomicBool>,
    /// Set when the handle is dropped: the writer commits what it has and stops waiting.
    closing: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts a writer over its own connection to the store in `dir`.
    pub(crate) fn start(dir: PathBuf, max_wait: Duration) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<std::result::Result<(), String>>(1);
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let closing = Arc::new(AtomicBool::new(false));
        let c = closing.clone();
        let tally = Arc::new(Mutex::new(Tally::new()));
        let t = tally.clone();
        let handle = std::thread::Builder::new()
            .name("ferrohsm-audit-writer".into())
            .spawn(move || match Store::open(&dir, false) {
                Ok(store) => {
                    let _ = ready_tx.send(Ok(()));
                    run(store, rx, t, max_wait, h, c);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| HsmError::Store(format!("cannot start the audit writer: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(AuditWriter {
                tx: Some(tx),
                tally,
                healthy,
                closing,
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(HsmError::Store(format!("audit writer: {e}"))),
            Err(_) => Err(HsmError::Store("audit writer failed to start".into())),
        }
    }

    /// Records `e` and waits until it is durable.
    pub(crate) fn strict(&self, e: Event) -> Result<()> {
        let (ack, wait) = mpsc::sync_channel(1);
        self.send(Msg {
            record: Some((e, ack)),
        })?;
        match wait.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HsmError::Store(format!(
                "audit record not durable, operation refused: {e}"
            ))),
            Err(_) => Err(HsmError::Store(
                "audit writer stopped; operation refused".into(),
            )),
        }
    }

    /// Counts one use in `group`'s record, which `record` makes (with the time of this use)
    /// if the group has none pending; refuses if the last commit failed.
    pub(crate) fn batched(&self, group: UseGroup, record: impl FnOnce() -> Event) -> Result<()> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(HsmError::Store(
                "the audit log could not be written; key use is refused until it is healthy again"
                    .into(),
            ));
        }
        let was_empty = {
            // Only inserts and a swap happen under this lock; a poisoned tally is still whole.
            let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = t.is_empty();
            t.entry(group).or_insert_with(|| (record(), 0)).1 += 1;
            was_empty
        };
        if was_empty {
            self.send(Msg { record: None })?;
        }
        Ok(())
    }

    /// Whether the last commit succeeded.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn send(&self, m: Msg) -> Result<()> {
        self.tx
            .as_ref()
            .and_then(|t| t.send(m).ok())
            .ok_or_else(|| HsmError::Store("audit writer stopped; operation refused".into()))
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Release);
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    mut store: Store,
    rx: Receiver<Msg>,
    tally: Arc<Mutex<Tally>>,
    max_wait: Duration,
    healthy: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
) {
    let drain = || std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    // Records of batched operations that already answered: kept until a commit succeeds.
    let mut unflushed: Vec<Event> = Vec::new();
    let retry = max_wait.max(Duration::from_millis(10));
    loop {
        let first = if unflushed.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                // Shutting down: uses counted since the last wake-up still get their records.
                Err(_) => {
                    let _ = commit(&mut store, &tally_records(drain()), &[]);
                    return;
                }
            }
        } else {
            match rx.recv_timeout(retry) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                // Shutting down: one last attempt for what answered already.
                Err(RecvTimeoutError::Disconnected) => {
                    unflushed.extend(tally_records(drain()));
                    let _ = commit(&mut store, &unflushed, &[]);
                    return;
                }
            }
        };
        let mut batch: Vec<(Event, Ack)> = Vec::new();
        let mut counted = false;
        let deadline = Instant::now() + max_wait;
        // Whatever is already queued joins this commit.
        for m in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match m.record {
                Some(r) => batch.push(r),
                None => counted = true,
            }
        }
        if counted && batch.is_empty() {
            // Only batched uses (a writer serves one mode): let the tally fill for the
            // window, in short sleeps so that a closing handle is not kept waiting.
            loop {
                let now = Instant::now();
                if now >= deadline || closing.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
            }
        }
        // Wake-ups sent meanwhile belong to uses this drain takes.
        while let Ok(m) = rx.try_recv() {
            if let Some(r) = m.record {
                batch.push(r);
            }
        }
        unflushed.extend(tally_records(drain()));
        let res = commit(&mut store, &unflushed, &batch);
        healthy.store(res.is_ok(), Ordering::Release);
        if res.is_ok() {
            unflushed.clear();
        }
        // Strict callers are told and their operations fail; batched records are kept.
        for (_, ack) in batch {
            let _ = ack.send(res.clone());
        }
    }
}

fn commit(
    store: &mut Store,
    unflushed: &[Event],
    batch: &[(Event, Ack)],
) -> std::result::Result<(), String> {
    if unflushed.is_empty() && batch.is_empty() {
        return Ok(());
    }
    store
        .append_events(unflushed.iter().chain(batch.iter().map(|(e, _)| e)))
        .map_err(|e| e.to_string())
}
