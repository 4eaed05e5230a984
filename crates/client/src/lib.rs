//! The HSM API over the wire: [`Remote`] answers [`HsmApi`] by asking a `ferrohsm server`
//! on a Unix socket. It holds no key, no device key and no store: only login ids and the
//! results the server returns. Every call has a deadline; a server that does not answer in
//! time, or has gone, is an error (never a hang), and the connection is then dropped so
//! that the next call reconnects.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrohsm_core::x509;
use rustls::pki_types::CertificateDer;

use ferrohsm_audit::{Export, Record, Report};
use ferrohsm_core::api::{
    AuditConfig, AuthMode, ClientInfo, HsmApi, HsmInfo, ImprintReport, InitHsm, LoginCredential,
    LoginId, NewCredential, PartitionSummary, Summary, Unwrap, Witness,
};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{KeyOptions, KeyTemplate, NewObject, ObjectFilter, ObjectInfo};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{HsmError, Result, Role};
use ferrohsm_proto::v1::{self, request::Call, response::Result as Reply};
use ferrohsm_proto::{
    convert, error_from_wire, read_message, write_frame, FrameError, Request, Response,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

pub use ferrohsm_proto::DEFAULT_SOCKET;

/// The default deadline of one call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// A client's TLS settings: its certificate and key (PEM), and the fingerprint of the
/// server's key it trusts (SHA-256 of the SubjectPublicKeyInfo, as `ferrohsm server
/// fingerprint` prints it).
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// The client's certificate (PEM).
    pub cert: PathBuf,
    /// The client's private key (PEM).
    pub key: PathBuf,
    /// The server's key fingerprint; any other server is refused before anything is sent.
    pub server_fingerprint: String,
}

/// Accepts only the server whose key has the pinned fingerprint, and checks that it holds
/// that key (the handshake's signature).
struct PinnedServer {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for PinnedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedServer({})", self.fingerprint)
    }
}

impl rustls::client::danger::ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let fp = x509::spki_of(end_entity)
            .map(x509::spki_fingerprint)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        if fp == self.fingerprint {
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
    fn config(&self) -> Result<Arc<rustls::ClientConfig>> {
        use rustls::pki_types::pem::PemObject;
        let fingerprint = x509::parse_fingerprint(&self.server_fingerprint)?;
        let cert = CertificateDer::from_pem_file(&self.cert)
            .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", self.cert.display())))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| HsmError::InvalidInput(format!("{}: {e}", self.key.display())))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| HsmError::Crypto(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                fingerprint,
                provider,
            }))
            .with_client_auth_cert(vec![cert], key)
            .map_err(|e| HsmError::InvalidInput(format!("the client's TLS key: {e}")))?;
        Ok(Arc::new(cfg))
    }
}

/// Where a [`Remote`] connects.
enum Target {
    Unix(PathBuf),
    Tls {
        addr: String,
        config: Arc<rustls::ClientConfig>,
    },
}

/// One connection, local or over the network.
enum Stream {
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A connection to a server: its Unix socket, or its TLS listener.
pub struct Remote {
    /// How the server is named in messages (the socket's path, or `tls://host:port`).
    socket: PathBuf,
    target: Target,
    stream: Option<Stream>,
    deadline: Duration,
    next_id: u64,
}

impl Remote {
    /// Connects to the server listening on `socket`.
    pub fn connect(socket: &Path) -> Result<Remote> {
        Remote::start(socket.to_path_buf(), Target::Unix(socket.to_path_buf()))
    }

    /// Connects to a server over TCP with mutual TLS (`addr` is `host:port`), as the client
    /// `tls` describes, refusing any server whose key is not the pinned one before anything
    /// is sent.
    pub fn connect_tls(addr: &str, tls: &TlsClient) -> Result<Remote> {
        Remote::start(
            PathBuf::from(format!("tls://{addr}")),
            Target::Tls {
                addr: addr.to_string(),
                config: tls.config()?,
            },
        )
    }

    /// Connects to `server`: `tls://host:port` (with `tls`), `unix:PATH` or a socket path.
    pub fn connect_to(server: &str, tls: Option<&TlsClient>) -> Result<Remote> {
        match server.strip_prefix("tls://") {
            Some(addr) => Remote::connect_tls(
                addr,
                tls.ok_or_else(|| {
                    HsmError::InvalidInput(format!(
                        "{server} needs the client's certificate, key and the server's fingerprint"
                    ))
                })?,
            ),
            None => Remote::connect(Path::new(server.strip_prefix("unix:").unwrap_or(server))),
        }
    }

    fn start(name: PathBuf, target: Target) -> Result<Remote> {
        let mut r = Remote {
            socket: name,
            target,
            stream: None,
            deadline: DEFAULT_DEADLINE,
            next_id: 1,
        };
        r.stream()?;
        Ok(r)
    }

    /// Sets the deadline of each call (default [`DEFAULT_DEADLINE`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Remote {
        self.deadline = deadline;
        let set = |r: std::io::Result<()>| r.is_ok();
        let ok = match &self.stream {
            Some(Stream::Unix(s)) => set(s
                .set_read_timeout(Some(deadline))
                .and_then(|_| s.set_write_timeout(Some(deadline)))),
            Some(Stream::Tls(s)) => set(s
                .sock
                .set_read_timeout(Some(deadline))
                .and_then(|_| s.sock.set_write_timeout(Some(deadline)))),
            None => true,
        };
        if !ok {
            // The next call connects afresh, with the new deadline.
            self.stream = None;
        }
        self
    }

    fn io_error(&self, e: std::io::Error) -> HsmError {
        HsmError::io(&self.socket, e)
    }

    fn stream(&mut self) -> Result<&mut Stream> {
        if self.stream.is_none() {
            let fail = |e: std::io::Error, what: &str| {
                HsmError::io(
                    &self.socket,
                    std::io::Error::new(e.kind(), format!("{what} ({e})")),
                )
            };
            let stream = match &self.target {
                Target::Unix(path) => {
                    let s = UnixStream::connect(path)
                        .map_err(|e| fail(e, "no ferrohsm server answers on this socket"))?;
                    s.set_read_timeout(Some(self.deadline))
                        .and_then(|_| s.set_write_timeout(Some(self.deadline)))
                        .map_err(|e| self.io_error(e))?;
                    Stream::Unix(s)
                }
                Target::Tls { addr, config } => {
                    let sock = addr
                        .to_socket_addrs()
                        .map_err(|e| fail(e, "cannot resolve the server's address"))?
                        .next()
                        .ok_or_else(|| {
                            fail(
                                std::io::Error::from(std::io::ErrorKind::NotFound),
                                "cannot resolve the server's address",
                            )
                        })?;
                    let mut tcp = TcpStream::connect_timeout(&sock, self.deadline)
                        .map_err(|e| fail(e, "no ferrohsm server answers there"))?;
                    tcp.set_read_timeout(Some(self.deadline))
                        .and_then(|_| tcp.set_write_timeout(Some(self.deadline)))
                        .map_err(|e| self.io_error(e))?;
                    let _ = tcp.set_nodelay(true);
                    let name = rustls::pki_types::ServerName::try_from("ferrohsm")
                        .map_err(|e| HsmError::InvalidInput(e.to_string()))?;
                    let mut conn = rustls::ClientConnection::new(config.clone(), name)
                        .map_err(|e| HsmError::Crypto(format!("TLS: {e}")))?;
                    // The whole handshake before any request: a server with another key, or
                    // one that does not know this client, is refused here.
                    while conn.is_handshaking() {
                        conn.complete_io(&mut tcp)
                            .map_err(|e| fail(e, "the TLS handshake with the server failed"))?;
                    }
                    Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
                }
            };
            self.stream = Some(stream);
        }
        // Set just above.
        self.stream
            .as_mut()
            .ok_or_else(|| HsmError::State("no connection".into()))
    }

    /// Sends one call and waits (up to the deadline) for its answer.
    fn call(&mut self, call: Call) -> Result<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            version: PROTOCOL_VERSION,
            id,
            call: Some(call),
        };
        let answer = self.exchange(&req);
        wipe(req);
        if answer.is_err() {
            // After a failure the stream may be mid-frame: never reuse it.
            self.stream = None;
        }
        match answer?.result {
            Some(Reply::Error(e)) => Err(error_from_wire(e)),
            Some(r) => Ok(r),
            None => Err(HsmError::Store("the server sent an empty answer".into())),
        }
    }

    fn exchange(&mut self, req: &Request) -> Result<Response> {
        let socket = self.socket.clone();
        let s = self.stream()?;
        write_frame(s, req).map_err(|e| HsmError::io(&socket, e))?;
        let resp: Response = read_message(s, DEFAULT_MAX_FRAME).map_err(|e| match e {
            FrameError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                HsmError::io(
                    &socket,
                    std::io::Error::new(e.kind(), "the server did not answer within the deadline"),
                )
            }
            FrameError::Closed => HsmError::io(
                &socket,
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the server closed the connection",
                ),
            ),
            FrameError::Io(e) if refused_by_tls(&e) => HsmError::io(
                &socket,
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the server refused this client in the TLS handshake: its certificate is not \
                     registered with the HSM, or was revoked (`ferrohsm client register`)",
                ),
            ),
            FrameError::Io(e) => HsmError::io(&socket, e),
            other => HsmError::Store(format!("bad answer from the server: {other}")),
        })?;
        if resp.id != req.id && resp.id != 0 {
            return Err(HsmError::Store(format!(
                "the server answered request {} to request {}",
                resp.id, req.id
            )));
        }
        Ok(resp)
    }
}

/// Whether a read failed because the server refused this client's certificate (in TLS 1.3
/// the client learns it at its first read).
fn refused_by_tls(e: &std::io::Error) -> bool {
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

/// Zeroizes what a request carried of a secret (a login's, a new password) once it is sent.
fn wipe(req: Request) {
    use zeroize::Zeroize;
    match req.call {
        Some(Call::InitToken(mut t) | Call::ReinitToken(mut t)) => t.so_password.zeroize(),
        Some(Call::InitCryptoOfficer(mut c)) => c.password.zeroize(),
        Some(Call::ChangePassword(mut c)) => {
            c.old_password.zeroize();
            c.new_password.zeroize();
        }
        Some(Call::Login(l)) => wipe_login(l),
        Some(Call::Activate(mut a)) => a.challenge.zeroize(),
        Some(Call::ChangePin(mut c)) => {
            wipe_credential(c.keys.take());
            if let Some(p) = &mut c.new_pin {
                p.zeroize();
            }
        }
        Some(Call::InitHsm(mut i)) => {
            wipe_new(i.so.take());
            wipe_new(i.domain.take());
            wipe_credential(i.current_so.take());
        }
        Some(Call::InitPartition(mut i)) => {
            wipe_new(i.so.take());
            wipe_new(i.domain.take());
            wipe_credential(i.current_so.take());
        }
        Some(Call::InitRole(mut i)) => wipe_new(i.secret.take()),
        Some(Call::ChangeSecret(mut c)) => wipe_new(c.secret.take()),
        Some(Call::AuditInit(mut a)) => {
            wipe_new(a.secret.take());
            wipe_credential(a.current.take());
        }
        _ => {}
    }
}

fn wipe_ped_keys(k: &mut v1::PedKeys) {
    use zeroize::Zeroize;
    for f in &mut k.keys {
        f.contents.zeroize();
    }
    if let Some(p) = &mut k.pin {
        p.zeroize();
    }
}

fn wipe_credential(c: Option<v1::Credential>) {
    use zeroize::Zeroize;
    match c.and_then(|c| c.kind) {
        Some(v1::credential::Kind::Secret(mut s)) => s.zeroize(),
        Some(v1::credential::Kind::PedKeys(mut k)) => wipe_ped_keys(&mut k),
        None => {}
    }
}

fn wipe_new(c: Option<v1::NewCredential>) {
    use zeroize::Zeroize;
    match c.and_then(|c| c.kind) {
        Some(v1::new_credential::Kind::Password(mut p)) => p.zeroize(),
        Some(v1::new_credential::Kind::Ped(mut i)) => {
            for f in &mut i.reuse {
                f.contents.zeroize();
            }
            if let Some(p) = &mut i.pin {
                p.zeroize();
            }
        }
        None => {}
    }
}

fn wipe_login(mut l: v1::Login) {
    use zeroize::Zeroize;
    {
        match &mut l.credential {
            Some(v1::login::Credential::Secret(s)) => s.zeroize(),
            Some(v1::login::Credential::PedKeys(k)) => wipe_ped_keys(k),
            None => {}
        }
    }
}

fn unexpected(what: &str) -> HsmError {
    HsmError::Store(format!(
        "the server answered {what} with the wrong kind of reply"
    ))
}

fn bytes(r: Reply) -> Result<Vec<u8>> {
    match r {
        Reply::Bytes(b) => Ok(b.value),
        _ => Err(unexpected("a byte-returning call")),
    }
}

fn text(r: Reply) -> Result<String> {
    match r {
        Reply::Text(t) => Ok(t.value),
        _ => Err(unexpected("a text-returning call")),
    }
}

fn done(r: Reply) -> Result<()> {
    match r {
        Reply::Done(_) => Ok(()),
        _ => Err(unexpected("a call with no result")),
    }
}

fn wrap(login: LoginId, wrapper: u64, mech: Mechanism, p: &Params, target: u64) -> v1::Wrap {
    v1::Wrap {
        login,
        wrapper,
        mechanism: mech.to_string(),
        iv: p.iv.clone(),
        aad: p.aad.clone(),
        label: p.label.clone(),
        target,
    }
}

fn crypt(login: LoginId, key: u64, mech: Mechanism, p: &Params, data: &[u8]) -> v1::Crypt {
    v1::Crypt {
        login,
        key,
        mechanism: mech.to_string(),
        iv: p.iv.clone(),
        aad: p.aad.clone(),
        label: p.label.clone(),
        data: data.to_vec(),
    }
}

fn number(r: Reply) -> Result<u64> {
    match r {
        Reply::Number(n) => Ok(n.value),
        _ => Err(unexpected("a number-returning call")),
    }
}

fn one_handle(r: Reply) -> Result<u64> {
    match r {
        Reply::Handles(h) if h.handles.len() == 1 => Ok(h.handles[0]),
        _ => Err(unexpected("a call that makes one object")),
    }
}

fn objects(r: Reply) -> Result<Vec<ObjectInfo>> {
    match r {
        Reply::Objects(o) => o
            .objects
            .into_iter()
            .map(convert::object_from_wire)
            .collect(),
        _ => Err(unexpected("a call that returns objects")),
    }
}

fn secret(p: &Pin) -> Vec<u8> {
    p.expose().to_vec()
}

fn imprints(r: Reply) -> Result<Vec<ImprintReport>> {
    match r {
        Reply::Imprints(i) => convert::imprints_from_wire(i),
        _ => Err(unexpected("an imprinting call")),
    }
}

fn witnesses(r: Reply) -> Result<Vec<Witness>> {
    match r {
        Reply::Witnesses(w) => Ok(w
            .witnesses
            .into_iter()
            .map(convert::witness_from_wire)
            .collect()),
        _ => Err(unexpected("a witness call")),
    }
}

fn clients(r: Reply) -> Result<Vec<ClientInfo>> {
    match r {
        Reply::Clients(c) => Ok(convert::clients_from_wire(c)),
        _ => Err(unexpected("a client registry call")),
    }
}

fn one_client(r: Reply) -> Result<ClientInfo> {
    clients(r)?
        .pop()
        .ok_or_else(|| unexpected("a client registry call"))
}

impl HsmApi for Remote {
    fn register_client(
        &mut self,
        login: LoginId,
        name: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo> {
        one_client(self.call(Call::RegisterClient(v1::RegisterClient {
            login,
            name: name.into(),
            fingerprint: fingerprint.into(),
        }))?)
    }

    fn clients(&mut self, login: LoginId) -> Result<Vec<ClientInfo>> {
        clients(self.call(Call::Clients(v1::LoginOnly { login }))?)
    }

    fn assign_client(
        &mut self,
        login: LoginId,
        client: &str,
        partition: &str,
        assign: bool,
    ) -> Result<ClientInfo> {
        one_client(self.call(Call::AssignClient(v1::AssignClient {
            login,
            client: client.into(),
            partition: partition.into(),
            assign,
        }))?)
    }

    fn revoke_client(&mut self, login: LoginId, client: &str) -> Result<ClientInfo> {
        one_client(self.call(Call::RevokeClient(v1::ClientRef {
            login,
            client: client.into(),
        }))?)
    }

    fn init_hsm(&mut self, init: InitHsm) -> Result<Vec<ImprintReport>> {
        imprints(
            self.call(Call::InitHsm(v1::InitHsm {
                label: init.label,
                auth_mode: match init.mode {
                    AuthMode::Ped => "ped",
                    AuthMode::Password => "password",
                }
                .into(),
                so: Some(convert::new_credential_to_wire(&init.so)),
                domain: Some(convert::new_credential_to_wire(&init.domain)),
                current_so: init
                    .current_so
                    .as_ref()
                    .map(convert::bare_credential_to_wire),
                confirm_destroy: init.confirm_destroy,
            }))?,
        )
    }

    fn init_partition(
        &mut self,
        label: &str,
        so: NewCredential,
        domain: Option<NewCredential>,
        current_so: Option<LoginCredential>,
    ) -> Result<Vec<ImprintReport>> {
        imprints(self.call(Call::InitPartition(v1::InitPartition {
            label: label.into(),
            so: Some(convert::new_credential_to_wire(&so)),
            domain: domain.as_ref().map(convert::new_credential_to_wire),
            current_so: current_so.as_ref().map(convert::bare_credential_to_wire),
        }))?)
    }

    fn init_role(
        &mut self,
        login: LoginId,
        role: Role,
        secret: NewCredential,
        confirm_destroy: bool,
    ) -> Result<Option<ImprintReport>> {
        Ok(imprints(self.call(Call::InitRole(v1::InitRole {
            login,
            role: role.short().into(),
            secret: Some(convert::new_credential_to_wire(&secret)),
            confirm_destroy,
        }))?)?
        .pop())
    }

    fn change_secret(
        &mut self,
        login: LoginId,
        secret: NewCredential,
    ) -> Result<Option<ImprintReport>> {
        Ok(imprints(self.call(Call::ChangeSecret(v1::ChangeSecret {
            login,
            secret: Some(convert::new_credential_to_wire(&secret)),
        }))?)?
        .pop())
    }

    fn change_pin(
        &mut self,
        login: LoginId,
        keys: LoginCredential,
        new_pin: Option<Pin>,
    ) -> Result<()> {
        done(self.call(Call::ChangePin(v1::ChangePin {
            login,
            keys: Some(convert::bare_credential_to_wire(&keys)),
            new_pin: new_pin.as_ref().map(secret),
        }))?)
    }

    fn audit_init(
        &mut self,
        secret: NewCredential,
        current: Option<LoginCredential>,
    ) -> Result<Option<ImprintReport>> {
        Ok(imprints(self.call(Call::AuditInit(v1::AuditInit {
            secret: Some(convert::new_credential_to_wire(&secret)),
            current: current.as_ref().map(convert::bare_credential_to_wire),
        }))?)?
        .pop())
    }

    fn set_hsm_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()> {
        done(self.call(Call::SetHsmPolicy(v1::SetPolicy {
            login,
            name: name.into(),
            value: value.into(),
        }))?)
    }

    fn set_partition_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()> {
        done(self.call(Call::SetPartitionPolicy(v1::SetPolicy {
            login,
            name: name.into(),
            value: value.into(),
        }))?)
    }

    fn create_partition(&mut self, login: LoginId, label: &str) -> Result<u32> {
        let id = number(self.call(Call::CreatePartition(v1::PartitionCall {
            login,
            label: label.into(),
        }))?)?;
        u32::try_from(id).map_err(|_| unexpected("create-partition"))
    }

    fn delete_partition(&mut self, login: LoginId, label: &str) -> Result<u64> {
        number(self.call(Call::DeletePartition(v1::PartitionCall {
            login,
            label: label.into(),
        }))?)
    }

    fn reset_role(&mut self, login: LoginId, role: Role) -> Result<()> {
        done(self.call(Call::ResetRole(v1::RoleCall {
            login,
            role: role.short().into(),
        }))?)
    }

    fn activate(&mut self, login: LoginId, challenge: Pin) -> Result<()> {
        done(self.call(Call::Activate(v1::Activate {
            login,
            challenge: secret(&challenge),
        }))?)
    }

    fn deactivate(&mut self, login: LoginId, role: Role) -> Result<bool> {
        match self.call(Call::Deactivate(v1::RoleCall {
            login,
            role: role.short().into(),
        }))? {
            Reply::Verified(v) => Ok(v.valid),
            _ => Err(unexpected("deactivate")),
        }
    }

    fn audit_config(&mut self, login: LoginId) -> Result<AuditConfig> {
        match self.call(Call::AuditConfig(v1::AuditorCall { login }))? {
            Reply::AuditConfig(c) => convert::audit_config_from_wire(Some(c)),
            _ => Err(unexpected("audit-config")),
        }
    }

    fn set_audit_config(&mut self, login: LoginId, config: AuditConfig) -> Result<()> {
        done(self.call(Call::SetAuditConfig(v1::SetAuditConfig {
            login,
            config: Some(convert::audit_config_to_wire(&config)),
        }))?)
    }

    fn witnesses(&mut self, login: LoginId) -> Result<Vec<Witness>> {
        witnesses(self.call(Call::Witnesses(v1::AuditorCall { login }))?)
    }

    fn add_witness(&mut self, login: LoginId, vkey: &str) -> Result<Witness> {
        witnesses(self.call(Call::AddWitness(v1::AddWitness {
            login,
            vkey: vkey.into(),
        }))?)?
        .pop()
        .ok_or_else(|| unexpected("add-witness"))
    }

    fn submit_cosigned(&mut self, login: LoginId, note: &str) -> Result<Vec<String>> {
        match self.call(Call::SubmitCosigned(v1::SubmitCosigned {
            login,
            note: note.into(),
        }))? {
            Reply::Strings(s) => Ok(s.values),
            _ => Err(unexpected("submit-cosigned")),
        }
    }

    fn info(&mut self) -> Result<HsmInfo> {
        text(self.call(Call::Info(v1::Info {}))?)
            .and_then(|value| convert::info_from_wire(v1::Text { value }))
    }

    fn state_generation(&mut self) -> Result<u64> {
        number(self.call(Call::StateGeneration(v1::Info {}))?)
    }

    fn init_token(&mut self, label: &str, so_password: Pin) -> Result<u32> {
        let id = number(self.call(Call::InitToken(v1::InitToken {
            label: label.to_string(),
            so_password: secret(&so_password),
        }))?)?;
        u32::try_from(id).map_err(|_| unexpected("init-token"))
    }

    fn reinit_token(&mut self, label: &str, so_password: Pin) -> Result<()> {
        done(self.call(Call::ReinitToken(v1::InitToken {
            label: label.to_string(),
            so_password: secret(&so_password),
        }))?)
    }

    fn init_crypto_officer(&mut self, login: LoginId, password: Pin) -> Result<()> {
        done(self.call(Call::InitCryptoOfficer(v1::InitCryptoOfficer {
            login,
            password: secret(&password),
        }))?)
    }

    fn change_password(&mut self, role: Role, partition: &str, old: Pin, new: Pin) -> Result<()> {
        done(self.call(Call::ChangePassword(v1::ChangePassword {
            role: role.short().to_string(),
            partition: partition.to_string(),
            old_password: secret(&old),
            new_password: secret(&new),
        }))?)
    }

    fn find(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        filter: &ObjectFilter,
    ) -> Result<Vec<ObjectInfo>> {
        objects(self.call(Call::Find(v1::Find {
            login,
            partition: partition.to_string(),
            label: filter.label.clone(),
            object_id: filter.id.clone(),
            class: filter.class.map(|c| c.name().to_string()),
        }))?)
    }

    fn object_info(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        handle: u64,
    ) -> Result<ObjectInfo> {
        objects(self.call(Call::ObjectInfo(v1::GetObject {
            login,
            partition: partition.to_string(),
            handle,
        }))?)?
        .pop()
        .ok_or_else(|| unexpected("object-info"))
    }

    fn generate_key_with(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        match self.call(Call::GenerateKeyWith(v1::GenerateKeyWith {
            login,
            key_type: spec.to_string(),
            key: Some(convert::key_options_to_wire(opts)),
            template: Some(convert::key_template_to_wire(tpl)),
        }))? {
            Reply::Handles(h) => Ok(h.handles),
            _ => Err(unexpected("generate-key-with")),
        }
    }

    fn create_object(&mut self, login: LoginId, object: NewObject) -> Result<u64> {
        one_handle(self.call(Call::CreateObject(convert::new_object_to_wire(
            login, &object,
        )))?)
    }

    fn import_public_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        spki: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        one_handle(self.call(Call::ImportPublicKey(v1::ImportPublicKey {
            login,
            key_type: spec.to_string(),
            spki: spki.to_vec(),
            key: Some(convert::key_options_to_wire(opts)),
            template: Some(convert::key_template_to_wire(tpl)),
        }))?)
    }

    fn relabel_object(
        &mut self,
        login: LoginId,
        handle: u64,
        label: Option<&str>,
        object_id: Option<&[u8]>,
    ) -> Result<()> {
        done(self.call(Call::RelabelObject(v1::Relabel {
            login,
            handle,
            label: label.map(str::to_string),
            object_id: object_id.map(<[u8]>::to_vec),
        }))?)
    }

    fn drop_session_objects(&mut self, login: LoginId, owner: u64) -> Result<()> {
        done(self.call(Call::DropSessionObjects(v1::DropSessionObjects {
            login,
            owner,
        }))?)
    }

    fn wrapped_key_len(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        target: u64,
    ) -> Result<usize> {
        let n = number(self.call(Call::WrappedKeyLen(wrap(
            login,
            wrapper,
            mech,
            &Params::default(),
            target,
        )))?)?;
        usize::try_from(n).map_err(|_| unexpected("wrapped-key-len"))
    }

    fn wrap_key(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        params: &Params,
        target: u64,
    ) -> Result<Vec<u8>> {
        bytes(self.call(Call::WrapKey(wrap(login, wrapper, mech, params, target)))?)
    }

    fn unwrap_key(&mut self, login: LoginId, u: Unwrap<'_>) -> Result<u64> {
        one_handle(self.call(Call::UnwrapKey(v1::UnwrapKey {
            login,
            unwrapper: u.unwrapper,
            mechanism: u.mech.to_string(),
            iv: u.params.iv.clone(),
            aad: u.params.aad.clone(),
            label: u.params.label.clone(),
            wrapped: u.wrapped.to_vec(),
            class: u.class.name().to_string(),
            key_type: u.spec.map(|s| s.to_string()),
            key: Some(convert::key_options_to_wire(u.opts)),
            template: Some(convert::key_template_to_wire(u.tpl)),
        }))?)
    }

    fn derive_ecdh(
        &mut self,
        login: LoginId,
        base: u64,
        peer_point: &[u8],
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        one_handle(self.call(Call::DeriveEcdh(v1::DeriveEcdh {
            login,
            base,
            peer_point: peer_point.to_vec(),
            key_type: spec.to_string(),
            key: Some(convert::key_options_to_wire(opts)),
            template: Some(convert::key_template_to_wire(tpl)),
        }))?)
    }

    fn summary(&mut self) -> Result<Summary> {
        match self.call(Call::Summary(v1::Summary {}))? {
            Reply::Summary(s) => Ok(Summary {
                serial: s.serial,
                state: s.state,
                label: s.label,
                auth_mode: s.auth_mode,
                partitions: s
                    .partitions
                    .into_iter()
                    .map(|p| PartitionSummary {
                        id: p.id,
                        label: p.label,
                        initialised: p.initialised,
                    })
                    .collect(),
                tamper: s.tamper,
            }),
            _ => Err(unexpected("summary")),
        }
    }

    fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        credential: LoginCredential,
    ) -> Result<LoginId> {
        // The request (and so the secret's copy in it) lives only until it is sent.
        let call = Call::Login(v1::Login {
            role: role.short().to_string(),
            partition: partition.map(str::to_string),
            credential: Some(convert::credential_to_wire(&credential)),
        });
        match self.call(call)? {
            Reply::Login(l) => Ok(l.login),
            _ => Err(unexpected("login")),
        }
    }

    fn check_login(&mut self, login: LoginId) -> Result<()> {
        done(self.call(Call::CheckLogin(v1::Logout { login }))?)
    }

    fn logout(&mut self, login: LoginId) -> Result<()> {
        done(self.call(Call::Logout(v1::Logout { login }))?)
    }

    fn generate_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
    ) -> Result<Vec<u64>> {
        match self.call(Call::GenerateKey(v1::GenerateKey {
            login,
            key_type: spec.to_string(),
            label: opts.label.clone(),
            object_id: opts.id.clone(),
            extractable: opts.extractable,
        }))? {
            Reply::Handles(h) => Ok(h.handles),
            _ => Err(unexpected("generate-key")),
        }
    }

    fn generate_keys(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        each: &[KeyOptions],
    ) -> Result<Vec<Vec<u64>>> {
        match self.call(Call::GenerateKeys(v1::GenerateKeys {
            login,
            key_type: spec.to_string(),
            keys: each.iter().map(convert::key_options_to_wire).collect(),
        }))? {
            Reply::HandleSets(h) => Ok(h.sets.into_iter().map(|s| s.handles).collect()),
            _ => Err(unexpected("generate-keys")),
        }
    }

    fn find_objects(&mut self, login: LoginId, label: Option<&str>) -> Result<Vec<ObjectInfo>> {
        match self.call(Call::FindObjects(v1::FindObjects {
            login,
            label: label.map(str::to_string),
        }))? {
            Reply::Objects(o) => o
                .objects
                .into_iter()
                .map(convert::object_from_wire)
                .collect(),
            _ => Err(unexpected("find-objects")),
        }
    }

    fn sign(&mut self, login: LoginId, key: u64, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        bytes(self.call(Call::Sign(v1::Sign {
            login,
            key,
            mechanism: mech.to_string(),
            data: data.to_vec(),
        }))?)
    }

    fn verify(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        match self.call(Call::Verify(v1::Verify {
            login,
            key,
            mechanism: mech.to_string(),
            data: data.to_vec(),
            signature: signature.to_vec(),
        }))? {
            Reply::Verified(v) => Ok(v.valid),
            _ => Err(unexpected("verify")),
        }
    }

    fn encrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        bytes(self.call(Call::Encrypt(crypt(login, key, mech, params, data)))?)
    }

    fn decrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        bytes(self.call(Call::Decrypt(crypt(login, key, mech, params, data)))?)
    }

    fn destroy_object(&mut self, login: LoginId, handle: u64) -> Result<()> {
        done(self.call(Call::DestroyObject(v1::DestroyObject { login, handle }))?)
    }

    fn random(&mut self, len: usize) -> Result<Vec<u8>> {
        let length = u32::try_from(len)
            .map_err(|_| HsmError::InvalidInput(format!("{len} random bytes is too many")))?;
        bytes(self.call(Call::Random(v1::Random { length }))?)
    }

    fn zeroize(&mut self, login: LoginId, reason: &str) -> Result<()> {
        done(self.call(Call::Zeroize(v1::Zeroize {
            login,
            reason: reason.to_string(),
        }))?)
    }

    fn tamper(&mut self, login: LoginId) -> Result<()> {
        done(self.call(Call::Tamper(v1::DeviceAction { login }))?)
    }

    fn restart(&mut self, login: LoginId) -> Result<u64> {
        match self.call(Call::Restart(v1::DeviceAction { login }))? {
            Reply::Epoch(e) => Ok(e.epoch),
            _ => Err(unexpected("restart")),
        }
    }

    fn audit_public_key(&mut self) -> Result<String> {
        text(self.call(Call::AuditPublicKey(v1::AuditPublicKey {}))?)
    }

    fn audit_records(&mut self, login: LoginId) -> Result<Vec<Record>> {
        match self.call(Call::AuditRecords(v1::AuditorCall { login }))? {
            Reply::AuditRecords(r) => convert::records_from_wire(r),
            _ => Err(unexpected("audit-records")),
        }
    }

    fn pending_ceremonies(&mut self, login: LoginId) -> Result<Vec<(Record, usize)>> {
        match self.call(Call::PendingCeremonies(v1::AuditorCall { login }))? {
            Reply::Pending(p) => p
                .records
                .into_iter()
                .map(|r| {
                    Ok((
                        convert::record_from_wire(&r.record)?,
                        r.cosignatures as usize,
                    ))
                })
                .collect(),
            _ => Err(unexpected("pending-ceremonies")),
        }
    }

    fn audit_checkpoint(&mut self, login: LoginId) -> Result<String> {
        text(self.call(Call::AuditCheckpoint(v1::AuditorCall { login }))?)
    }

    fn audit_export(&mut self, login: LoginId, from: u64, earlier: &[u64]) -> Result<Export> {
        let b = bytes(self.call(Call::AuditExport(v1::AuditExport {
            login,
            from,
            earlier: earlier.to_vec(),
        }))?)?;
        Export::from_bytes(&b)
            .map_err(|e| HsmError::Store(format!("audit export from the server: {e}")))
    }

    fn audit_verify(&mut self, login: LoginId) -> Result<Report> {
        match self.call(Call::AuditVerify(v1::AuditorCall { login }))? {
            Reply::Report(r) => Ok(convert::report_from_wire(r)),
            _ => Err(unexpected("audit-verify")),
        }
    }
}
