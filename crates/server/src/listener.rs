//! The transport: a Unix socket, peers admitted by uid/gid, one thread per connection,
//! frames read under the configured limits and answered through the service layer. The TLS
//! listener ([`crate::tls`]) admits its clients its own way and serves them here too.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrohsm_core::api::{ClientInfo, Embedded, HsmApi, Logins};
use ferrohsm_core::Hsm;
use ferrohsm_proto::v1::error::Code;
use ferrohsm_proto::{read_frame, write_frame, FrameError, Request};
use prost::Message;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::service;

/// A live connection: how to cut it, and the client certificate it came with.
struct Live {
    shutdown: Box<dyn Fn() + Send>,
    fingerprint: Option<String>,
    client: Option<String>,
}

/// Who a connection serves: for the audit log, the logins it shares, and its scope.
pub struct Who {
    /// How the audit log and the server's log name it.
    pub describe: String,
    /// Its connections share logins: "pid N" locally, "tls FINGERPRINT" over the network.
    pub owner: String,
    /// What it may reach.
    pub scope: service::Scope,
    /// Its registration in the client registry (a certificate key's fingerprint, or
    /// `uid:N`/`gid:N`), if it has one: its connections close at revocation.
    pub fingerprint: Option<String>,
    /// Whether its logins outlive its last connection by the lease (a network client).
    pub leased: bool,
    /// Its registered name, if it has one (for the metrics).
    pub client: Option<String>,
    /// Its user id, for a local client.
    pub uid: Option<u32>,
}

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
    /// The audit records of refused TLS connections, summarised under a flood.
    pub refusals: crate::tls::Refusals,
    /// An engine handle for the audit records of connections and refusals, and for the
    /// client registry.
    recorder: Mutex<Option<Hsm>>,
    /// The live connections, to stop them at shutdown or at a client's revocation.
    conns: Mutex<HashMap<u64, Live>>,
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
            refusals: Default::default(),
            recorder: Mutex::new(None),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Records a connection or a refusal in the audit log; an error means it could not be
    /// recorded (and the connection is then not served).
    pub(crate) fn record(&self, who: &str, admitted: bool, why: &str) -> ferrohsm_core::Result<()> {
        self.with_registry(|h| h.record_connection(who, admitted, why))
    }

    /// A local peer's registration (revoked ones included).
    pub(crate) fn local_client(
        &self,
        uid: u32,
        gid: u32,
    ) -> ferrohsm_core::Result<Option<ClientInfo>> {
        self.with_registry(|h| h.local_client(uid, gid))
    }

    /// The live (registered, unrevoked) client with this certificate key.
    pub(crate) fn client(&self, fp: &str) -> ferrohsm_core::Result<Option<ClientInfo>> {
        self.with_registry(|h| h.client_by_fingerprint(fp))
    }

    /// Whether an enrollment code is outstanding (unregistered hosts may then connect to
    /// redeem one, and do nothing else).
    pub(crate) fn enrollment_open(&self) -> ferrohsm_core::Result<bool> {
        self.with_registry(|h| h.enrollment_open())
    }

    pub(crate) fn with_registry<T>(
        &self,
        f: impl Fn(&mut Hsm) -> ferrohsm_core::Result<T>,
    ) -> ferrohsm_core::Result<T> {
        let mut r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        // A kept handle may be stale (zeroize, tamper): one more try on a fresh one.
        let mut tries = 0;
        loop {
            let h = match r.as_mut() {
                Some(h) => h,
                None => r.insert(Hsm::open(&self.config.data_dir)?),
            };
            match f(h) {
                Ok(v) => return Ok(v),
                Err(e) if tries == 1 => return Err(e),
                Err(_) => *r = None,
            }
            tries += 1;
        }
    }

    /// The certificate keys of the network clients connected now.
    pub(crate) fn client_fingerprints(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .conns()
            .values()
            .filter_map(|c| c.fingerprint.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Connections being served now, by registered client name.
    pub(crate) fn client_connections(&self) -> std::collections::BTreeMap<String, usize> {
        let mut by = std::collections::BTreeMap::new();
        for c in self.conns().values() {
            if let Some(n) = &c.client {
                *by.entry(n.clone()).or_default() += 1;
            }
        }
        by
    }

    /// Cuts every connection of the client with this certificate key.
    pub(crate) fn close_client(&self, fp: &str) {
        for c in self.conns().values() {
            if c.fingerprint.as_deref() == Some(fp) {
                (c.shutdown)();
            }
        }
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops reading from every connection: idle ones close, busy ones finish the request
    /// in hand and answer it first.
    pub fn stop_reads(&self) {
        for c in self.conns().values() {
            (c.shutdown)();
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

/// What a local peer may reach, and its registration (identity and name): the server's own user, the whole
/// HSM; a user (or group) the HSM SO registered, its assigned partitions (registration
/// admits it); any other user the configuration admits, the whole HSM. Why not, otherwise.
fn local_scope(
    shared: &Shared,
    p: &Peer,
) -> Result<(service::Scope, Option<(String, String)>), String> {
    if p.uid == rustix::process::geteuid().as_raw() {
        return Ok((service::Scope::All, None));
    }
    match shared.local_client(p.uid, p.gid) {
        Err(e) => Err(format!("the client registry cannot be read: {e}")),
        Ok(Some(c)) if c.revoked.is_some() => Err(format!(
            "local client {:?} ({}) was revoked by the HSM SO",
            c.name, c.fingerprint
        )),
        Ok(Some(c)) => Ok((
            service::Scope::Partitions(c.partitions),
            Some((c.fingerprint, c.name)),
        )),
        Ok(None) if admitted(&shared.config, p) => Ok((service::Scope::All, None)),
        Ok(None) => Err(format!(
            "uid {} is not allowed to use this HSM (allowed_uids / allowed_gids in the server's configuration, or `ferrohsm client register --uid`)",
            p.uid
        )),
    }
}

/// Sends a refusal frame, best effort: the connection is closed either way.
fn refuse(s: &mut impl Write, code: Code, message: String) {
    let _ = write_frame(s, &service::protocol_error(0, code, message));
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
        let who = format!("unix uid {} gid {} pid {}", peer.uid, peer.gid, peer.pid);
        let (scope, registration) = match local_scope(shared, &peer) {
            Ok(s) => s,
            Err(why) => {
                shared.metrics.refusal("user");
                if let Err(e) = shared.record(&who, false, &why) {
                    warn!(error = %e, "cannot record a refusal in the audit log");
                }
                warn!(
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = peer.pid,
                    reason = %why,
                    "connection refused"
                );
                refuse(&mut &stream, Code::Refused, why);
                continue;
            }
        };
        let cfg = &shared.config;
        let timeouts = stream
            .set_read_timeout(Some(Duration::from_secs(cfg.idle_timeout_s)))
            .and_then(|_| stream.set_write_timeout(Some(Duration::from_secs(cfg.write_timeout_s))));
        let shut = stream.try_clone();
        let (Ok(()), Ok(shut)) = (timeouts, shut) else {
            warn!("connection dropped: cannot set its timeouts or track it");
            continue;
        };
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(1 << 20)
            .spawn(move || {
                let who = Who {
                    describe: who,
                    owner: format!("pid {}", peer.pid),
                    scope,
                    fingerprint: registration.as_ref().map(|r| r.0.clone()),
                    client: registration.map(|r| r.1),
                    leased: false,
                    uid: Some(peer.uid),
                };
                serve_admitted(
                    &sh,
                    stream,
                    Box::new(move || {
                        let _ = shut.shutdown(Shutdown::Read);
                    }),
                    who,
                );
            });
        if let Err(e) = spawned {
            warn!(error = %e, "connection dropped: no thread for it");
        }
    }
}

/// Serves an admitted connection in this thread: the connection limit, its audit record,
/// then its requests; `shutdown` cuts it (at stop or revocation).
pub fn serve_admitted<S: Read + Write>(
    shared: &Shared,
    mut stream: S,
    shutdown: Box<dyn Fn() + Send>,
    who: Who,
) {
    if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.config.max_connections {
        shared.active.fetch_sub(1, Ordering::SeqCst);
        shared.metrics.refusal("limit");
        if let Err(e) = shared.record(&who.describe, false, "connection limit reached") {
            warn!(error = %e, "cannot record a refusal in the audit log");
        }
        warn!(
            peer = %who.describe,
            max = shared.config.max_connections,
            "connection refused: too many connections"
        );
        refuse(
            &mut stream,
            Code::Exhausted,
            format!(
                "the server is serving its limit of {} connections",
                shared.config.max_connections
            ),
        );
        return;
    }
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    shared.conns().insert(
        id,
        Live {
            shutdown,
            fingerprint: who.fingerprint.clone(),
            client: who.client.clone(),
        },
    );
    if let Some(uid) = who.uid {
        shared.metrics.connection(uid);
    }
    serve(shared, stream, id, who);
    shared.conns().remove(&id);
    shared.active.fetch_sub(1, Ordering::SeqCst);
}

/// Serves one connection until it closes, misbehaves, idles out or the server stops.
fn serve<S: Read + Write>(shared: &Shared, mut stream: S, conn: u64, who: Who) {
    let cfg = &shared.config;
    // Audited before anything is served: a connection the log cannot record is closed.
    if let Err(e) = shared.record(&who.describe, true, "") {
        warn!(conn, error = %e, "connection closed: the audit log cannot record it");
        refuse(
            &mut stream,
            Code::Store,
            format!("the HSM cannot record this connection in its audit log: {e}"),
        );
        return;
    }
    info!(conn, peer = %who.describe, "connection opened");
    // A client's connections share its logins (a PKCS#11 login is the application's, seen
    // by all its sessions); they end when its last connection closes, or for a network
    // client a lease later (a link lost and back keeps them). Not for a local process: its
    // pid, which names it, could pass to another process meanwhile.
    let lease = match who.leased {
        true => Duration::from_secs(cfg.lease_s),
        false => Duration::ZERO,
    };
    let hold = shared.logins.hold_peer_leased(&who.owner, lease);
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
                    &mut stream,
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
                    &mut stream,
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
        let resp = service::handle_in(engine as &mut dyn HsmApi, req, &who.scope);
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
