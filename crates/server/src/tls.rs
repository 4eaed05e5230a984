//! The network transport: TCP with TLS 1.3 and mutual authentication (rustls). The server has
//! its own key and certificate (made at first start when none is configured; clients pin its
//! key's fingerprint). A client is admitted only if the fingerprint of its certificate's key
//! is registered and not revoked (the HSM SO's client registry): anyone else is refused
//! during the handshake. An admitted client sees only the partitions assigned to it, and its
//! connections close within a second of its revocation.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
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

/// The server's certificate and key, made (P-256, self-signed) when neither exists yet.
pub fn identity(
    c: &ServerConfig,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), HsmError> {
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
    let c = CertificateDer::from_pem_file(&cert)
        .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", cert.display())))?;
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
    let (cert, _) = identity(c)?;
    Ok(x509::spki_fingerprint(x509::spki_of(&cert)?))
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
        match self.shared.client(&fp) {
            Ok(Some(_)) => Ok(ClientCertVerified::assertion()),
            Ok(None) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            Err(e) => Err(rustls::Error::General(format!("client registry: {e}"))),
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

/// The rustls configuration of the listener: TLS 1.3 only, client certificates required
/// and checked against the registry.
pub fn server_config(
    c: &ServerConfig,
    shared: &Arc<Shared>,
) -> Result<Arc<rustls::ServerConfig>, HsmError> {
    let (cert, key) = identity(c)?;
    let provider = provider();
    let verifier = Arc::new(RegisteredClients {
        shared: shared.clone(),
        provider: provider.clone(),
    });
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HsmError::Crypto(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(|e| HsmError::InvalidInput(format!("the server's TLS key: {e}")))?;
    Ok(Arc::new(cfg))
}

/// Accepts TLS connections until the server stops; each gets a thread, a handshake under
/// the write timeout, and then the same service as a local connection, in its client's
/// scope.
pub fn accept_loop(l: TcpListener, shared: Arc<Shared>, tls: Arc<rustls::ServerConfig>) {
    for stream in l.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(tcp) = stream else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let (sh, tls) = (shared.clone(), tls.clone());
        let spawned = std::thread::Builder::new()
            .name("tls-handshake".into())
            .stack_size(1 << 20)
            .spawn(move || handshake_and_serve(tcp, sh, tls));
        if let Err(e) = spawned {
            warn!(error = %e, "TLS connection dropped: no thread for it");
        }
    }
}

fn handshake_and_serve(mut tcp: TcpStream, shared: Arc<Shared>, tls: Arc<rustls::ServerConfig>) {
    let addr = tcp
        .peer_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let cfg = &shared.config;
    let limit = Duration::from_secs(cfg.write_timeout_s);
    if tcp.set_read_timeout(Some(limit)).is_err() || tcp.set_write_timeout(Some(limit)).is_err() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let Ok(mut conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    // The handshake, with the client's certificate checked against the registry; a client
    // that sends nothing is cut off at the write timeout.
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            shared.metrics.refusal("tls");
            let who = format!("tls {addr}");
            if let Err(r) = shared.record(&who, false, &format!("TLS handshake: {e}")) {
                warn!(error = %r, "cannot record a refusal in the audit log");
            }
            warn!(peer = %addr, error = %e, "TLS connection refused");
            return;
        }
    }
    let Some(fp) = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| cert_fingerprint(c).ok())
    else {
        return;
    };
    let client = match shared.client(&fp) {
        Ok(Some(c)) => c,
        _ => return,
    };
    let idle = Duration::from_secs(cfg.idle_timeout_s);
    if tcp.set_read_timeout(Some(idle)).is_err() {
        return;
    }
    let Ok(shut) = tcp.try_clone() else {
        return;
    };
    let who = Who {
        describe: format!("tls client {} ({fp}) from {addr}", client.name),
        owner: format!("tls {fp}"),
        scope: Scope::Partitions(client.partitions.clone()),
        fingerprint: Some(fp),
        uid: None,
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

/// Closes, within a second, the connections of clients that are no longer registered (or
/// were revoked).
pub fn watch_revocations(shared: Arc<Shared>) {
    let _ = std::thread::Builder::new()
        .name("revocations".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            for fp in shared.client_fingerprints() {
                if let Ok(None) = shared.client(&fp) {
                    info!(fingerprint = %fp, "closing a revoked client's connections");
                    shared.close_client(&fp);
                }
            }
        });
}
