//! The HSM API over the wire: [`Remote`] answers [`ferrohsm_core::api::HsmApi`] by asking a
//! `ferrohsm server` on its Unix socket, or over the network with mutual TLS ([`TlsClient`]). It holds no key, no device key and no store: only login ids and the
//! results the server returns. Every call has a deadline; a server that does not answer in
//! time, or has gone, is an error (never a hang), and the connection is then dropped so
//! that the next call reconnects.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod calls;
pub mod conf;
pub mod ha;
mod tls;

pub use tls::TlsClient;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrohsm_core::{HsmError, Result};
use ferrohsm_proto::v1::{request::Call, response::Result as Reply};
use ferrohsm_proto::{
    error_from_wire, read_message, write_frame, FrameError, Request, Response, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};

use crate::calls::wipe;
use crate::tls::refused_by_tls;

pub use ferrohsm_proto::DEFAULT_SOCKET;

/// The default deadline of one call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Where a [`Remote`] connects.
enum Target {
    Unix(PathBuf),
    /// The client's files are read again at each connection, so that a host whose
    /// certificate and key were rotated reconnects with the new ones.
    Tls {
        addr: String,
        client: TlsClient,
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

impl Stream {
    /// Whether the server has closed (or sent anything on) this idle connection. Between
    /// calls a server sends nothing (it sends no TLS session tickets), so readable means
    /// closed: an end of stream, a reset, or a closing alert.
    fn closed_by_peer(&self) -> bool {
        use rustix::net::{recv, RecvFlags};
        let mut b = [0u8; 1];
        let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
        let r = match self {
            Stream::Unix(s) => recv(s, &mut b[..], flags),
            Stream::Tls(s) => recv(&s.sock, &mut b[..], flags),
        };
        !matches!(r, Err(rustix::io::Errno::AGAIN))
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
                client: tls.clone(),
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
        // A kept connection the server closed meanwhile (its restart, a lease's link cut,
        // its idle timeout) is replaced before a request is trusted to it.
        if self.stream.as_ref().is_some_and(Stream::closed_by_peer) {
            self.stream = None;
        }
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
                Target::Tls { addr, client } => {
                    let config = client.config()?;
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
                    // An unreachable server is noticed within DEAD_PEER_AFTER, not at the
                    // call's deadline.
                    let connect = self.deadline.min(ferrohsm_proto::DEAD_PEER_AFTER);
                    let mut tcp = TcpStream::connect_timeout(&sock, connect)
                        .map_err(|e| fail(e, "no ferrohsm server answers there"))?;
                    tcp.set_read_timeout(Some(self.deadline))
                        .and_then(|_| tcp.set_write_timeout(Some(self.deadline)))
                        .and_then(|_| ferrohsm_proto::tune_tcp(&tcp))
                        .map_err(|e| self.io_error(e))?;
                    // The name a CA-issued certificate must carry: the host connected to.
                    let host = addr
                        .rsplit_once(':')
                        .map_or(addr.as_str(), |(h, _)| h)
                        .trim_matches(|c| c == '[' || c == ']');
                    let name = rustls::pki_types::ServerName::try_from(host.to_string())
                        .or_else(|_| rustls::pki_types::ServerName::try_from("ferrohsm"))
                        .map_err(|e| HsmError::InvalidInput(e.to_string()))?;
                    let mut conn = rustls::ClientConnection::new(config, name)
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

    /// Makes sure there is a connection (a closed one is replaced) without sending anything:
    /// an error here means no call could have reached the server.
    pub fn ready(&mut self) -> Result<()> {
        self.stream().map(|_| ())
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
            // A garbled stream is this connection's failure, like a broken one.
            other => HsmError::io(
                &socket,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad answer from the server: {other}"),
                ),
            ),
        })?;
        if resp.id != req.id && resp.id != 0 {
            return Err(HsmError::io(
                &socket,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the server answered request {} to request {}",
                        resp.id, req.id
                    ),
                ),
            ));
        }
        Ok(resp)
    }
}
