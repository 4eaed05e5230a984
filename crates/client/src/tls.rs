//! The client's side of mutual TLS: its certificate and key, and the one server key it
//! trusts (pinned by fingerprint; the handshake proves the server holds it).

use std::path::PathBuf;
use std::sync::Arc;

use ferrohsm_core::{x509, HsmError, Result};
use rustls::pki_types::CertificateDer;

/// A client's TLS settings: its certificate and key (PEM), and how it recognises the server:
/// the fingerprint of the server's key (SHA-256 of the SubjectPublicKeyInfo, as `ferrohsm
/// server fingerprint` prints it), or a CA that issued the server's certificate for the name
/// the client connects to, or both (then both must hold).
#[derive(Clone, Debug, Default)]
pub struct TlsClient {
    /// The client's certificate (PEM).
    pub cert: PathBuf,
    /// The client's private key (PEM).
    pub key: PathBuf,
    /// The server's key fingerprint; any other server is refused before anything is sent.
    /// Several, separated by commas, while the server's key is being rotated (the old and
    /// the new). Empty when only a CA is trusted.
    pub server_fingerprint: String,
    /// A CA certificate file (PEM): the server's certificate must chain to it and name the
    /// host connected to.
    pub server_ca: Option<PathBuf>,
}

/// Accepts only the server whose key has a pinned fingerprint and (when a CA is configured)
/// whose certificate the CA issued for the host's name, and checks that it holds that key
/// (the handshake's signature).
struct PinnedServer {
    fingerprints: Vec<String>,
    ca: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for PinnedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedServer({})", self.fingerprints.join(","))
    }
}

impl rustls::client::danger::ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Some(ca) = &self.ca {
            ca.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        }
        if self.fingerprints.is_empty() {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let fp = x509::spki_of(end_entity)
            .map(x509::spki_fingerprint)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        if self.fingerprints.contains(&fp) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only TLS 1.3 is accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl TlsClient {
    /// The rustls configuration these settings make: TLS 1.3 only, this client's certificate,
    /// and only the pinned server key trusted. An error names an unreadable file or a bad
    /// fingerprint.
    pub fn config(&self) -> Result<Arc<rustls::ClientConfig>> {
        use rustls::pki_types::pem::PemObject;
        let fingerprints = self
            .server_fingerprint
            .split(',')
            .filter(|f| !f.trim().is_empty())
            .map(x509::parse_fingerprint)
            .collect::<Result<Vec<_>>>()?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let ca = match &self.server_ca {
            None if fingerprints.is_empty() => {
                return Err(HsmError::InvalidInput(
                    "the client trusts no server: give the server's key fingerprint or a CA".into(),
                ))
            }
            None => None,
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(path)
                    .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", path.display())))?
                {
                    let c =
                        c.map_err(|e| HsmError::InvalidInput(format!("{}: {e}", path.display())))?;
                    roots.add(c).map_err(|e| {
                        HsmError::InvalidInput(format!(
                            "{}: not a CA certificate: {e}",
                            path.display()
                        ))
                    })?;
                }
                Some(
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", path.display())))?,
                )
            }
        };
        let cert = CertificateDer::from_pem_file(&self.cert)
            .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", self.cert.display())))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", self.key.display())))?;
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| HsmError::Crypto(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                fingerprints,
                ca,
                provider,
            }))
            .with_client_auth_cert(vec![cert], key)
            .map_err(|e| HsmError::InvalidInput(format!("the client's TLS key: {e}")))?;
        Ok(Arc::new(cfg))
    }
}

/// Whether a read failed because the server refused this client's certificate (in TLS 1.3
/// the client learns it at its first read).
pub(crate) fn refused_by_tls(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::AccessDenied
                | rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::CertificateRevoked
                | rustls::AlertDescription::CertificateRequired
        ))
    )
}
