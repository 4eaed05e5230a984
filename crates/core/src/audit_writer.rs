//! A thread that makes key-use records durable. Strict callers wait for their record's
//! commit, and every record that arrived meanwhile shares that commit (group commit: one
//! flush for many concurrent operations). Batched callers do not wait: records are committed
//! within `max_wait`; once a commit fails the writer reports unhealthy and key use is refused
//! until a later commit succeeds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{HsmError, Result};
use crate::store::{Event, Store};

type Ack = SyncSender<std::result::Result<(), String>>;

struct Msg {
    event: Event,
    ack: Option<Ack>,
}

/// The writer thread's handle. Dropping it commits what is pending and joins the thread.
pub(crate) struct AuditWriter {
    tx: Option<Sender<Msg>>,
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
        let handle = std::thread::Builder::new()
            .name("ferrohsm-audit-writer".into())
            .spawn(move || match Store::open(&dir, false) {
                Ok(store) => {
                    let _ = ready_tx.send(Ok(()));
                    run(store, rx, max_wait, h, c);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| HsmError::Store(format!("cannot start the audit writer: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(AuditWriter {
                tx: Some(tx),
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
            event: e,
            ack: Some(ack),
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

    /// Queues `e`; refuses if the last commit failed.
    pub(crate) fn batched(&self, e: Event) -> Result<()> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(HsmError::Store(
                "the audit log could not be written; key use is refused until it is healthy again"
                    .into(),
            ));
        }
        self.send(Msg {
            event: e,
            ack: None,
        })
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
    max_wait: Duration,
    healthy: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
) {
    // Records of batched operations that already answered: kept until a commit succeeds.
    let mut unflushed: Vec<Event> = Vec::new();
    let retry = max_wait.max(Duration::from_millis(10));
    loop {
        let first = if unflushed.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(retry) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                // Shutting down: one last attempt for what answered already.
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = commit(&mut store, &unflushed, &[]);
                    return;
                }
            }
        };
        let mut batch: Vec<Msg> = first.into_iter().collect();
        let deadline = Instant::now() + max_wait;
        // Whatever is already queued joins this commit.
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        if !batch.is_empty() && batch.iter().all(|m| m.ack.is_none()) {
            // Only batched records (a writer serves one mode): sleep out the window instead
            // of waking for each record, so that senders never have to wake this thread;
            // in short steps, so that a closing handle is not kept waiting.
            loop {
                let now = Instant::now();
                if now >= deadline || closing.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
            }
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
        }
        let res = commit(&mut store, &unflushed, &batch);
        healthy.store(res.is_ok(), Ordering::Release);
        match &res {
            Ok(()) => unflushed.clear(),
            // Strict callers are told and their operations fail; batched records are kept.
            Err(_) => unflushed.extend(
                batch
                    .iter()
                    .filter(|m| m.ack.is_none())
                    .map(|m| m.event.clone()),
            ),
        }
        for m in batch {
            if let Some(ack) = m.ack {
                let _ = ack.send(res.clone());
            }
        }
    }
}

fn commit(
    store: &mut Store,
    unflushed: &[Event],
    batch: &[Msg],
) -> std::result::Result<(), String> {
    store
        .append_events(unflushed.iter().chain(batch.iter().map(|m| &m.event)))
        .map_err(|e| e.to_string())
}
