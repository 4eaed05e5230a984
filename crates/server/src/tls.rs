//! The network transport: TCP with TLS 1.3 and mutual authentication (rustls). The server has
//! its own key and certificate (made at first start when none is configured; clients pin its
//! key's fingerprint). A client is admitted only if the fingerprint of its certificate's key
//! is registered and not revoked (the HSM SO's client registry): anyone else is refused
//! during the handshake — except, while an enrollment code is outstanding, to redeem a code
//! and do nothing else. An admitted client sees only the partitions assigned to it, and its
//! connections close within a second of its revocation.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrohsm_core::{x509, HsmError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::listener::{self, Shared, Who};
use crate::service::Scope;

/// The port network HSMs of this kind are usually reached on.
pub const DEFAULT_PORT: u16 = 1792;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Where the server's certificate and key are: as configured, else beside the data.
pub fn identity_paths(c: &ServerConfig) -> (PathBuf, PathBuf) {
    let or = |p: &Path, name: &str| match p.as_os_str().is_empty() {
        true => c.data_dir.join(name),
        false => p.to_path_buf(),
    };
    (
        or(&c.tls_cert, "tls-server.crt"),
        or(&c.tls_key, "tls-server.key"),
    )
}

/// The server's certificate (with any intermediates after it in the file) and key, made
/// (P-256, self-signed) when neither exists yet.
pub fn identity(
    c: &ServerConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), HsmError> {
    let (cert, key) = identity_paths(c);
    if !cert.exists() && !key.exists() {
        for dir in [cert.parent(), key.parent()].into_iter().flatten() {
            use std::os::unix::fs::DirBuilderExt;
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| HsmError::io(dir, e))?;
            }
        }
        let bad =
            |e: rcgen::Error| HsmError::Crypto(format!("making the server's certificate: {e}"));
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(bad)?;
        let made = rcgen::CertificateParams::new(vec!["ferrohsm".to_string()])
            .and_then(|p| p.self_signed(&pair))
            .map_err(bad)?;
        write_new(&key, pair.serialize_pem().as_bytes(), 0o600)?;
        write_new(&cert, made.pem().as_bytes(), 0o600)?;
        info!(cert = %cert.display(), "made the server's TLS key and certificate");
    }
    let bad = |e: rustls::pki_types::pem::Error| {
        HsmError::InvalidInput(format!("{}: {e}", cert.display()))
    };
    let c = CertificateDer::pem_file_iter(&cert)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if c.is_empty() {
        return Err(HsmError::InvalidInput(format!(
            "{}: no certificate in it",
            cert.display()
        )));
    }
    let k = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", key.display())))?;
    Ok((c, k))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), HsmError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| HsmError::io(path, e))?;
    f.write_all(data).map_err(|e| HsmError::io(path, e))
}

/// The fingerprint clients pin: SHA-256 of the server certificate's key.
pub fn fingerprint(c: &ServerConfig) -> Result<String, HsmError> {
    let (chain, _) = identity(c)?;
    Ok(x509::spki_fingerprint(x509::spki_of(&chain[0])?))
}

/// The fingerprint of the key in a certificate.
fn cert_fingerprint(cert: &CertificateDer<'_>) -> Result<String, rustls::Error> {
    x509::spki_of(cert)
        .map(x509::spki_fingerprint)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
}

/// Admits the certificates of registered, unrevoked clients; checks the handshake's
/// signatures with the certificate's key.
struct RegisteredClients {
    shared: Arc<Shared>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for RegisteredClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegisteredClients")
    }
}

impl ClientCertVerifier for RegisteredClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = cert_fingerprint(end_entity)?;
        let registry = |e: HsmError| rustls::Error::General(format!("client registry: {e}"));
        match self.shared.client(&fp).map_err(registry)? {
            Some(_) => Ok(ClientCertVerified::assertion()),
            // Only to redeem a code: the connection's scope allows nothing else.
            None if self.shared.enrollment_open().map_err(registry)? => {
                Ok(ClientCertVerified::assertion())
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only TLS 1.3 is offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server's certificate and key, read again when their files change (checked at most
/// once a second, at a handshake): rotating them needs no restart. A pair that does not
/// load, or whose key is not the certificate's, is not taken (the current one stays, and the
/// server's log says why), so a rotation caught halfway is picked up once both files are in
/// place.
struct RotatingIdentity {
    config: ServerConfig,
    provider: Arc<CryptoProvider>,
    current: std::sync::Mutex<Loaded>,
}

struct Loaded {
    key: Arc<rustls::sign::CertifiedKey>,
    stamp: Option<std::time::SystemTime>,
    checked: std::time::Instant,
    /// The files' stamp when they last failed to load (said once, not every second).
    refused: Option<std::time::SystemTime>,
}

impl std::fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotatingIdentity")
    }
}

impl RotatingIdentity {
    fn new(config: &ServerConfig, provider: Arc<CryptoProvider>) -> Result<Self, HsmError> {
        let stamp = Self::stamp(config);
        let key = Self::load(config, &provider)?;
        Ok(RotatingIdentity {
            config: config.clone(),
            provider,
            current: std::sync::Mutex::new(Loaded {
                key,
                stamp,
                checked: std::time::Instant::now(),
                refused: None,
            }),
        })
    }

    /// When either file last changed.
    fn stamp(c: &ServerConfig) -> Option<std::time::SystemTime> {
        let (cert, key) = identity_paths(c);
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        m(&cert).max(m(&key))
    }

    fn load(
        c: &ServerConfig,
        provider: &CryptoProvider,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, HsmError> {
        let (chain, key) = identity(c)?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| HsmError::InvalidInput(format!("the server's TLS key: {e}")))?;
        let ck = rustls::sign::CertifiedKey::new(chain, signing);
        ck.keys_match().map_err(|e| {
            HsmError::InvalidInput(format!(
                "the server's TLS key is not its certificate's: {e}"
            ))
        })?;
        Ok(Arc::new(ck))
    }
}

impl rustls::server::ResolvesServerCert for RotatingIdentity {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.checked.elapsed() >= Duration::from_secs(1) {
            cur.checked = std::time::Instant::now();
            let stamp = Self::stamp(&self.config);
            if stamp != cur.stamp && stamp != cur.refused {
                match Self::load(&self.config, &self.provider) {
                    Ok(key) => {
                        cur.key = key;
                        cur.stamp = stamp;
                        let fp = cur
                            .key
                            .end_entity_cert()
                            .ok()
                            .and_then(|c| cert_fingerprint(c).ok())
                            .unwrap_or_default();
                        info!(fingerprint = %fp, "the server's TLS certificate and key changed: serving the new ones");
                    }
                    Err(e) => {
                        cur.refused = stamp;
                        warn!(error = %e, "the server's TLS files changed but do not load; serving the current ones")
                    }
                }
            }
        }
        Some(cur.key.clone())
    }
}

/// The rustls configuration of the listener: TLS 1.3 only, client certificates required
/// and checked against the registry, the server's own certificate rotating with its files.
pub fn server_config(
    c: &ServerConfig,
    shared: &Arc<Shared>,
) -> Result<Arc<rustls::ServerConfig>, HsmError> {
    let provider = provider();
    let identity = Arc::new(RotatingIdentity::new(c, provider.clone())?);
    let verifier = Arc::new(RegisteredClients {
        shared: shared.clone(),
        provider: provider.clone(),
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HsmError::Crypto(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    // Nothing unasked-for between answers: a client takes anything readable on an idle
    // connection for its end. (Resumption would also skip the registry check.)
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// Refusals recorded one by one in the audit log, per second; beyond them (a flood of
/// garbage or of connections) they are counted and recorded as one summary record a second,
/// so that a flood cannot turn into a flood of audit writes. Nothing goes unrecorded.
const REFUSALS_RECORDED_PER_SECOND: u32 = 10;

/// The audit records of refused TLS connections (see [`REFUSALS_RECORDED_PER_SECOND`]).
#[derive(Default)]
pub struct Refusals {
    state: std::sync::Mutex<RefusalWindow>,
}

#[derive(Default)]
struct RefusalWindow {
    started: Option<std::time::Instant>,
    recorded: u32,
    summarised: u64,
}

impl Refusals {
    /// Records a refusal: in full, or counted into the next summary.
    pub fn note(&self, shared: &Shared, who: &str, why: &str) {
        let one_by_one = {
            let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if w.started
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                w.started = Some(now);
                w.recorded = 0;
            }
            w.recorded += 1;
            if w.recorded > REFUSALS_RECORDED_PER_SECOND {
                w.summarised += 1;
            }
            w.recorded <= REFUSALS_RECORDED_PER_SECOND
        };
        if one_by_one {
            if let Err(e) = shared.record(who, false, why) {
                warn!(error = %e, "cannot record a refusal in the audit log");
            }
        }
    }

    /// Writes the summary of the refusals counted since the last one, if any.
    pub fn flush(&self, shared: &Shared) {
        let n = std::mem::take(
            &mut self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .summarised,
        );
        if n > 0 {
            let why = format!("{n} more TLS connections refused (over {REFUSALS_RECORDED_PER_SECOND} a second: recorded as this one summary)");
            if let Err(e) = shared.record("tls (many peers)", false, &why) {
                warn!(error = %e, "cannot record a refusal in the audit log");
            }
        }
    }
}

/// A place among the handshakes in progress, given back when dropped.
struct HandshakeSlot(Arc<AtomicUsize>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts TLS connections until the server stops. At most `max_handshakes` handshakes run
/// at once (a connection beyond them is closed at once), each in its own thread and within
/// `handshake_timeout_s`; an admitted client then gets the same service as a local
/// connection, in its scope.
pub fn accept_loop(l: TcpListener, shared: Arc<Shared>, tls: Arc<rustls::ServerConfig>) {
    let handshaking = Arc::new(AtomicUsize::new(0));
    for stream in l.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(tcp) = stream else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if handshaking.fetch_add(1, Ordering::SeqCst) >= shared.config.max_handshakes {
            handshaking.fetch_sub(1, Ordering::SeqCst);
            let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            shared.metrics.refusal("handshakes");
            warn!(peer = %peer, max = shared.config.max_handshakes, "TLS connection closed: too many handshakes in progress");
            shared.refusals.note(
                &shared,
                &format!("tls {peer}"),
                "too many TLS handshakes in progress",
            );
            continue;
        }
        let slot = HandshakeSlot(handshaking.clone());
        let (sh, tls) = (shared.clone(), tls.clone());
        // One thread per connection: the handshake, then the requests.
        let spawned = std::thread::Builder::new()
            .name("tls-conn".into())
            .stack_size(1 << 20)
            .spawn(move || handshake_and_serve(tcp, sh, tls, slot));
        if let Err(e) = spawned {
            warn!(error = %e, "TLS connection dropped: no thread for it");
        }
    }
}

fn handshake_and_serve(
    mut tcp: TcpStream,
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    slot: HandshakeSlot,
) {
    let addr = tcp
        .peer_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let cfg = &shared.config;
    let write_limit = Duration::from_secs(cfg.write_timeout_s);
    if tcp.set_write_timeout(Some(write_limit)).is_err() || ferrohsm_proto::tune_tcp(&tcp).is_err()
    {
        return;
    }
    let Ok(mut conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    // The handshake, with the client's certificate checked against the registry, all of it
    // within the handshake deadline: a client that sends nothing, or its hello a byte at a
    // time, is cut off there.
    let deadline = std::time::Instant::now() + Duration::from_secs(cfg.handshake_timeout_s);
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let step = match left.is_zero() {
            true => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("not finished within {} s", cfg.handshake_timeout_s),
            )),
            false => tcp
                .set_read_timeout(Some(left))
                .and_then(|_| conn.complete_io(&mut tcp).map(|_| ())),
        };
        if let Err(e) = step {
            let e = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "not finished within {} s (handshake_timeout_s)",
                    cfg.handshake_timeout_s
                ),
                _ => e.to_string(),
            };
            shared.metrics.refusal("tls");
            shared.refusals.note(
                &shared,
                &format!("tls {addr}"),
                &format!("TLS handshake: {e}"),
            );
            warn!(peer = %addr, error = %e, "TLS connection refused");
            return;
        }
    }
    drop(slot);
    let Some(fp) = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| cert_fingerprint(c).ok())
    else {
        return;
    };
    let who = match shared.client(&fp) {
        Ok(Some(client)) => Who {
            describe: format!("tls client {} ({fp}) from {addr}", client.name),
            owner: format!("tls {fp}"),
            scope: Scope::Partitions(client.partitions.clone()),
            fingerprint: Some(fp),
            client: Some(client.name),
            leased: true,
            uid: None,
        },
        // Let through the handshake while a code was outstanding: it may redeem one.
        Ok(None) => Who {
            describe: format!("tls unregistered host ({fp}) from {addr}, to enroll"),
            owner: format!("enrolling {fp}"),
            scope: Scope::Enrolling(fp),
            fingerprint: None,
            client: None,
            leased: false,
            uid: None,
        },
        Err(_) => return,
    };
    let idle = Duration::from_secs(cfg.idle_timeout_s);
    if tcp.set_read_timeout(Some(idle)).is_err() {
        return;
    }
    let Ok(shut) = tcp.try_clone() else {
        return;
    };
    listener::serve_admitted(
        &shared,
        rustls::StreamOwned::new(conn, tcp),
        Box::new(move || {
            let _ = shut.shutdown(std::net::Shutdown::Both);
        }),
        who,
    );
}

/// Every quarter second: closes the connections of clients that are no longer registered
/// (or were revoked), writes the summary of refusals counted in a flood, and ends the logins
/// whose lease ran out.
pub fn housekeeping(shared: Arc<Shared>) {
    let _ = std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            shared.refusals.flush(&shared);
            shared.logins.expire_leases();
            for fp in shared.client_fingerprints() {
                if let Ok(None) = shared.client(&fp) {
                    info!(fingerprint = %fp, "closing a revoked client's connections");
                    shared.close_client(&fp);
                }
            }
        });
}
