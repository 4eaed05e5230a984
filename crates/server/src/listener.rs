//! The transport: a Unix socket, peers admitted by uid/gid, one thread per connection,
//! frames read under the configured limits and answered through the service layer.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrohsm_core::api::{Embedded, HsmApi, Logins};
use ferrohsm_core::Hsm;
use ferrohsm_proto::v1::error::Code;
use ferrohsm_proto::{read_frame, write_frame, FrameError, Request};
use prost::Message;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::service;

/// What every connection thread shares.
pub struct Shared {
    /// The configuration.
    pub config: ServerConfig,
    /// Every login of every connection (zeroize and tamper end them all).
    pub logins: Logins,
    /// Set at SIGTERM: no new connection or request is taken.
    pub stopping: AtomicBool,
    /// Connections being served.
    pub active: AtomicUsize,
    /// Counters for the metrics endpoint.
    pub metrics: Metrics,
    /// An engine handle for the audit records of connections and refusals.
    recorder: Mutex<Option<Hsm>>,
    /// The live connections, to stop their reads at shutdown.
    conns: Mutex<HashMap<u64, UnixStream>>,
    next_conn: AtomicU64,
}

impl Shared {
    /// State for a server with this configuration.
    pub fn new(config: ServerConfig) -> Shared {
        Shared {
            config,
            logins: Logins::new(),
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            metrics: Metrics::default(),
            recorder: Mutex::new(None),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Records a connection or a refusal in the audit log; an error means it could not be
    /// recorded (and the connection is then not served).
    fn record(&self, peer: &Peer, admitted: bool, why: &str) -> ferrohsm_core::Result<()> {
        let who = format!("unix uid {} gid {} pid {}", peer.uid, peer.gid, peer.pid);
        let mut r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        // A kept handle may be stale (zeroize, tamper): one more try on a fresh one.
        for attempt in 0..2 {
            let h = match r.as_mut() {
                Some(h) => h,
                None => r.insert(Hsm::open(&self.config.data_dir)?),
            };
            match h.record_connection(&who, admitted, why) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => *r = None,
            }
        }
        Ok(())
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, UnixStream>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops reading from every connection: idle ones close, busy ones finish the request
    /// in hand and answer it first.
    pub fn stop_reads(&self) {
        for s in self.conns().values() {
            let _ = s.shutdown(Shutdown::Read);
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// Process id (as the kernel saw it at connect).
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

fn peer_of(s: &UnixStream) -> io::Result<Peer> {
    let c = rustix::net::sockopt::socket_peercred(s)?;
    Ok(Peer {
        pid: c.pid.as_raw_nonzero().get(),
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
    })
}

fn admitted(config: &ServerConfig, p: &Peer) -> bool {
    p.uid == rustix::process::geteuid().as_raw()
        || config.allowed_uids.contains(&p.uid)
        || config.allowed_gids.contains(&p.gid)
}

/// Sends a refusal frame, best effort: the connection is closed either way.
fn refuse(mut s: &UnixStream, code: Code, message: String) {
    let _ = write_frame(&mut s, &service::protocol_error(0, code, message));
}

/// Accepts connections until [`Shared::stopping`] is set (the signal thread then makes one
/// more connection to wake this loop).
pub fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = match peer_of(&stream) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "connection without peer credentials refused");
                continue;
            }
        };
        if !admitted(&shared.config, &peer) {
            shared.metrics.refusal("user");
            if let Err(e) = shared.record(&peer, false, "user not allowed") {
                warn!(error = %e, "cannot record a refusal in the audit log");
            }
            warn!(
                uid = peer.uid,
                gid = peer.gid,
                pid = peer.pid,
                "connection refused: user not allowed"
            );
            refuse(
                &stream,
                Code::Refused,
                format!(
                    "uid {} is not allowed to use this HSM (allowed_uids / allowed_gids in the server's configuration)",
                    peer.uid
                ),
            );
            continue;
        }
        if shared.active.load(Ordering::SeqCst) >= shared.config.max_connections {
            shared.metrics.refusal("limit");
            if let Err(e) = shared.record(&peer, false, "connection limit reached") {
                warn!(error = %e, "cannot record a refusal in the audit log");
            }
            warn!(
                uid = peer.uid,
                pid = peer.pid,
                max = shared.config.max_connections,
                "connection refused: too many connections"
            );
            refuse(
                &stream,
                Code::Exhausted,
                format!(
                    "the server is serving its limit of {} connections",
                    shared.config.max_connections
                ),
            );
            continue;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(c) => {
                shared.conns().insert(id, c);
            }
            Err(e) => {
                warn!(error = %e, "connection dropped: cannot track it");
                continue;
            }
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        shared.metrics.connection(peer.uid);
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(1 << 20)
            .spawn(move || {
                serve(&sh, stream, id, peer);
                sh.conns().remove(&id);
                sh.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "connection dropped: no thread for it");
            shared.conns().remove(&id);
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Serves one connection until it closes, misbehaves, idles out or the server stops.
fn serve(shared: &Shared, mut stream: UnixStream, conn: u64, peer: Peer) {
    let cfg = &shared.config;
    let timeouts = stream
        .set_read_timeout(Some(Duration::from_secs(cfg.idle_timeout_s)))
        .and_then(|_| stream.set_write_timeout(Some(Duration::from_secs(cfg.write_timeout_s))));
    if let Err(e) = timeouts {
        warn!(conn, error = %e, "connection closed: cannot set its timeouts");
        return;
    }
    // Audited before anything is served: a connection the log cannot record is closed.
    if let Err(e) = shared.record(&peer, true, "") {
        warn!(conn, error = %e, "connection closed: the audit log cannot record it");
        refuse(
            &stream,
            Code::Store,
            format!("the HSM cannot record this connection in its audit log: {e}"),
        );
        return;
    }
    info!(conn, uid = peer.uid, pid = peer.pid, "connection opened");
    // A process's connections share its logins (a PKCS#11 login is the application's, seen
    // by all its sessions); they end when its last connection closes.
    let hold = shared.logins.hold_process(peer.pid as u32);
    // The engine handle is opened at the first request, so idle connections hold no store
    // descriptors.
    let mut api: Option<Embedded> = None;
    let mut served = 0u64;
    loop {
        let frame = match read_frame(&mut stream, cfg.max_frame_bytes) {
            Ok(f) => f,
            Err(FrameError::Closed) => break,
            Err(FrameError::TooLarge { len, max }) => {
                shared.metrics.bad_frame();
                warn!(conn, len, max, "connection closed: oversized frame");
                refuse(
                    &stream,
                    Code::BadRequest,
                    format!("a frame of {len} bytes is over this server's limit of {max}"),
                );
                break;
            }
            Err(FrameError::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                info!(conn, idle_s = cfg.idle_timeout_s, "connection closed: idle");
                break;
            }
            Err(e) => {
                shared.metrics.bad_frame();
                warn!(conn, error = %e, "connection closed: broken frame");
                break;
            }
        };
        let decoded = Request::decode(frame.as_slice());
        // The frame may hold a login's secret; the decoded request now holds the only copy.
        let mut frame = frame;
        zeroize::Zeroize::zeroize(&mut frame);
        let req = match decoded {
            Ok(r) => r,
            Err(e) => {
                shared.metrics.bad_frame();
                warn!(conn, error = %e, "connection closed: request does not decode");
                refuse(
                    &stream,
                    Code::BadRequest,
                    format!("the request does not decode: {e}"),
                );
                break;
            }
        };
        let call = service::call_name(&req.call);
        let engine = match api.as_mut() {
            Some(a) => a,
            None => match Hsm::open(&cfg.data_dir) {
                Ok(h) => api.insert(Embedded::for_owner(h, shared.logins.clone(), hold.owner())),
                Err(e) => {
                    warn!(conn, error = %e, "cannot open the HSM for a connection");
                    let resp = ferrohsm_proto::Response {
                        id: req.id,
                        result: Some(ferrohsm_proto::v1::response::Result::Error(
                            ferrohsm_proto::error_to_wire(&e),
                        )),
                    };
                    let _ = write_frame(&mut stream, &resp);
                    break;
                }
            },
        };
        let mechanism = service::call_mechanism(&req.call).map(str::to_string);
        let started = std::time::Instant::now();
        let resp = service::handle(engine as &mut dyn HsmApi, req);
        let outcome = match &resp.result {
            Some(ferrohsm_proto::v1::response::Result::Error(e)) => {
                debug!(conn, call, code = e.code, message = %e.message, "refused");
                Code::try_from(e.code)
                    .map(|c| c.as_str_name())
                    .unwrap_or("UNSPECIFIED")
            }
            _ => "ok",
        };
        shared
            .metrics
            .request(call, mechanism.as_deref(), outcome, started.elapsed());
        served += 1;
        if let Err(e) = write_frame(&mut stream, &resp) {
            // The client went away mid-request; what the request changed is complete.
            info!(conn, call, error = %e, "connection closed before its answer was read");
            break;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
    }
    // Dropping the front end flushes its audit batches; the process's logins end with its
    // last connection.
    drop(api);
    drop(hold);
    info!(conn, requests = served, "connection closed");
}
