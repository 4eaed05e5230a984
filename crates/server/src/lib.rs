//! `ferrohsm server`: the HSM's boundary. It owns one data directory (exclusively: no other
//! server, CLI or PKCS#11 module may open it while it runs), hardens its own process, and
//! serves the HSM API ([`ferrohsm_core::api::HsmApi`]) over a Unix socket to peers admitted
//! by uid/gid. Layers: [`listener`] (transport, limits, timeouts), [`service`] (one request
//! to one API call), and the engine behind the API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint_file;
pub mod config;
pub mod hardening;
pub mod listener;
pub mod metrics;
pub mod service;
pub mod tls;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohsm_core::dir_lock::{self, LockMode};
use ferrohsm_core::{Hsm, HsmError};
use tracing::{info, warn};

pub use config::{ConfigError, ServerConfig};

/// Why the server did not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory is unusable (held by another process, readable by others,
    /// tampered with).
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The socket or the process could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// Runs a server until SIGTERM or SIGINT; `ready` is called once the socket accepts
/// connections. Returns after in-flight requests finished (or the grace period passed)
/// and every connection's audit batches were flushed.
pub fn run(config: ServerConfig, ready: impl FnOnce(&Path)) -> Result<(), ServerError> {
    config.validate()?;
    // The same mechanisms as every other place the engine runs.
    ferrohsm_crypto::install();
    hardening::harden().map_err(io("hardening the process"))?;
    let dir = config.data_dir.clone();
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    dir_lock::check_private(&dir)?;
    let lock = dir_lock::acquire(&dir, LockMode::Exclusive)?;
    // Check the store opens (device key, manifest) before serving anyone.
    let serial = {
        let mut hsm = Hsm::open_or_create(&dir)?;
        let s = hsm.info()?;
        info!(serial = %s.serial, state = %s.state, dir = %dir.display(), "HSM opened");
        checkpoint_file::check(&mut hsm, &config.checkpoint_file)?;
        s.serial
    };
    dir_lock::check_private(&dir)?;

    let socket = config.socket.clone();
    let shared = Arc::new(listener::Shared::new(config));
    // SIGTERM is handled from before the socket exists: a client (or a supervisor) that sees
    // the socket may stop the server at once, and must get a clean stop, not the default
    // action. (A signal before the bind is seen below, before accepting.)
    let signals = watch_signals(&shared, &socket)?;
    let listener = bind(&socket)?;
    let absolute = std::path::absolute(&socket).unwrap_or_else(|_| socket.clone());
    lock.announce(&absolute)?;
    if !shared.config.metrics_listen.is_empty() {
        let addr = shared.config.metrics_listen.clone();
        let l = std::net::TcpListener::bind(&addr).map_err(io(format!("binding {addr}")))?;
        metrics::serve(l, shared.clone()).map_err(io("starting the metrics thread"))?;
        info!(address = %addr, "metrics and health served");
    }
    if !shared.config.tls_listen.is_empty() {
        let addr = shared.config.tls_listen.clone();
        let tls = tls::server_config(&shared.config, &shared)?;
        let l = std::net::TcpListener::bind(&addr).map_err(io(format!("binding {addr}")))?;
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("tls-accept".into())
            .spawn(move || tls::accept_loop(l, sh, tls))
            .map_err(io("starting the TLS listener"))?;
        tls::housekeeping(shared.clone());
        info!(address = %addr, fingerprint = %tls::fingerprint(&shared.config)?, "listening for TLS clients");
    }
    checkpoint_file::keep(shared.clone());
    info!(socket = %socket.display(), serial = %serial, "listening");
    ready(&socket);
    if !shared.stopping.load(Ordering::SeqCst) {
        listener::accept_loop(&listener, &shared);
    }

    // Stopping: no new connections; idle ones close; busy ones answer first.
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    shared.stop_reads();
    let grace = Duration::from_secs(shared.config.shutdown_grace_s);
    let start = Instant::now();
    while shared.active.load(Ordering::SeqCst) > 0 && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = shared.active.load(Ordering::SeqCst);
    if left > 0 {
        warn!(
            connections = left,
            "grace period over; stopping with requests in flight"
        );
    }
    signals.close();
    info!("stopped");
    Ok(())
}

/// Binds the socket, replacing a stale one (a file nobody listens on) but never a live one.
fn bind(socket: &Path) -> Result<UnixListener, ServerError> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(ServerError::Io {
                what: format!("binding {}", socket.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server is listening on it",
                ),
            });
        }
        std::fs::remove_file(socket).map_err(io(format!("removing stale {}", socket.display())))?;
    }
    let l = UnixListener::bind(socket).map_err(io(format!("binding {}", socket.display())))?;
    // Anyone may connect; the peer's uid/gid decides who is served (and refusals are logged).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
        .map_err(io(format!("setting the mode of {}", socket.display())))?;
    Ok(l)
}

/// A thread that turns SIGTERM/SIGINT into a stop: sets the flag, then connects once to
/// wake the accept loop.
fn watch_signals(
    shared: &Arc<listener::Shared>,
    socket: &Path,
) -> Result<signal_hook::iterator::Handle, ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(io("installing signal handlers"))?;
    let handle = signals.handle();
    let shared = shared.clone();
    let socket: PathBuf = socket.to_path_buf();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                info!(signal = sig, "stopping: finishing requests in flight");
                shared.stopping.store(true, Ordering::SeqCst);
                let _ = UnixStream::connect(&socket);
            }
        })
        .map_err(io("starting the signal thread"))?;
    Ok(handle)
}
