//! ferrohsm's wire protocol: the HSM API ([`ferrohsm_core::api::HsmApi`]) as protobuf
//! messages generated from `proto/ferrohsm.proto` (one definition, see its header for the
//! rules of compatible change), the framing used on stream sockets, and the one mapping
//! between engine errors and wire errors.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{self, Read, Write};

pub mod convert;

use ferrohsm_core::HsmError;
use prost::Message;

/// The generated messages (package `ferrohsm.v1`).
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ferrohsm.v1.rs"));
}

pub use v1::{Request, Response};

/// The protocol's major version; every request carries it and the server refuses others.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default largest frame, in bytes (a request or a response): 16 MiB, enough for the
/// largest multi-part operation the module gathers plus room for its parameters.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Where a server listens, and where clients look for one, when nothing else is configured.
pub const DEFAULT_SOCKET: &str = "/run/ferrohsm/ferrohsm.sock";

/// How long a TCP peer may be silent (unreachable, powered off, cut off) before its
/// connection is declared dead: both ends set [`tune_tcp`], so neither waits for the
/// kernel's default of minutes.
pub const DEAD_PEER_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Sets a TCP connection up for request/response over a network: no Nagle delay; keepalive
/// probes after 1 s of silence, every second, dead after 2 unanswered (so an idle link's loss
/// is noticed within [`DEAD_PEER_AFTER`]); and data left unacknowledged for that long ends
/// the connection too (`TCP_USER_TIMEOUT`), so a request in flight to a vanished peer fails
/// then instead of at the call's deadline.
pub fn tune_tcp(s: &std::net::TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    use std::time::Duration;
    s.set_nodelay(true)?;
    sockopt::set_socket_keepalive(s, true)?;
    sockopt::set_tcp_keepidle(s, Duration::from_secs(1))?;
    sockopt::set_tcp_keepintvl(s, Duration::from_secs(1))?;
    sockopt::set_tcp_keepcnt(s, 2)?;
    sockopt::set_tcp_user_timeout(s, DEAD_PEER_AFTER.as_millis() as u32)?;
    Ok(())
}

/// What can go wrong reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer announced a frame over the limit; nothing of it was read.
    #[error("a frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection failed or timed out, or closed inside a frame.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The frame is not a valid message.
    #[error("the frame does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Writes one message as a frame, in one write.
pub fn write_frame(w: &mut impl Write, msg: &impl Message) -> io::Result<()> {
    let len = msg.encoded_len();
    let prefix = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&prefix.to_be_bytes());
    let written = msg
        .encode(&mut buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        .and_then(|_| w.write_all(&buf))
        .and_then(|_| w.flush());
    // A login's frame holds its secret: leave no copy of it behind.
    zeroize::Zeroize::zeroize(&mut buf);
    written
}

/// Reads one frame's bytes, refusing one announced over `max` before reading it.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Reads and decodes one message.
pub fn read_message<M: Message + Default>(r: &mut impl Read, max: usize) -> Result<M, FrameError> {
    let buf = read_frame(r, max)?;
    Ok(M::decode(buf.as_slice())?)
}

use v1::error::Code;

/// An engine error as sent to a client (the message never carries a secret: the engine's
/// messages never do).
pub fn error_to_wire(e: &HsmError) -> v1::Error {
    let (code, remaining) = match e {
        HsmError::InvalidInput(_) => (Code::InvalidInput, None),
        HsmError::BadPedKey { .. } => (Code::BadPedKey, None),
        HsmError::AuthFailed { remaining, .. } => (Code::AuthFailed, *remaining),
        HsmError::WrongKey(_) => (Code::WrongKey, None),
        HsmError::Locked(_) => (Code::Locked, None),
        HsmError::Refused(_) => (Code::Refused, None),
        HsmError::KeyUse(_) => (Code::KeyUse, None),
        HsmError::Tamper(_) => (Code::Tamper, None),
        HsmError::State(_) => (Code::State, None),
        HsmError::NotFound(_) => (Code::NotFound, None),
        HsmError::Crypto(_) => (Code::Crypto, None),
        HsmError::Exhausted(_) => (Code::Exhausted, None),
        HsmError::NotLoggedIn(_) => (Code::NotLoggedIn, None),
        HsmError::InUse(_) => (Code::InUse, None),
        HsmError::Store(_) => (Code::Store, None),
        HsmError::Io { .. } => (Code::Io, None),
    };
    v1::Error {
        code: code as i32,
        message: message_of(e),
        remaining,
    }
}

/// The message without the variant's prefix (the client's error adds it back).
fn message_of(e: &HsmError) -> String {
    match e {
        HsmError::InvalidInput(m)
        | HsmError::WrongKey(m)
        | HsmError::Locked(m)
        | HsmError::Refused(m)
        | HsmError::KeyUse(m)
        | HsmError::Tamper(m)
        | HsmError::State(m)
        | HsmError::NotFound(m)
        | HsmError::Crypto(m)
        | HsmError::Exhausted(m)
        | HsmError::NotLoggedIn(m)
        | HsmError::InUse(m)
        | HsmError::Store(m) => m.clone(),
        HsmError::AuthFailed { role, reason, .. } => format!("{role}\u{0}{reason}"),
        other => other.to_string(),
    }
}

/// A wire error as the engine error it stands for, so a front end over the server maps it
/// to the same exit code or `CKR_*` as one over the embedded engine.
pub fn error_from_wire(e: v1::Error) -> HsmError {
    let m = e.message;
    match Code::try_from(e.code).unwrap_or(Code::Unspecified) {
        Code::InvalidInput => HsmError::InvalidInput(m),
        Code::BadPedKey => HsmError::bad_key("(on the client)", m),
        Code::AuthFailed => {
            let (role, reason) = m.split_once('\u{0}').unwrap_or(("role", m.as_str()));
            HsmError::AuthFailed {
                role: role.to_string(),
                reason: reason.to_string(),
                remaining: e.remaining,
            }
        }
        Code::WrongKey => HsmError::WrongKey(m),
        Code::Locked => HsmError::Locked(m),
        Code::Refused => HsmError::Refused(m),
        Code::KeyUse => HsmError::KeyUse(m),
        Code::Tamper => HsmError::Tamper(m),
        Code::State => HsmError::State(m),
        Code::NotFound => HsmError::NotFound(m),
        Code::Crypto => HsmError::Crypto(m),
        Code::Exhausted => HsmError::Exhausted(m),
        Code::NotLoggedIn => HsmError::NotLoggedIn(m),
        Code::InUse => HsmError::InUse(m),
        Code::Store | Code::Io => HsmError::Store(format!("on the server: {m}")),
        Code::Unsupported | Code::BadRequest | Code::Unspecified => {
            HsmError::InvalidInput(format!("the server refused the request: {m}"))
        }
    }
}

#[cfg(test)]
mod tests {

    /// The keepalive and user-timeout settings are what the dead-peer promise rests on:
    /// read back from the kernel.
    #[test]
    fn tcp_is_tuned_to_notice_a_dead_peer_within_three_seconds() {
        use rustix::net::sockopt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        tune_tcp(&s).unwrap();
        assert!(s.nodelay().unwrap());
        assert!(sockopt::socket_keepalive(&s).unwrap());
        let idle = sockopt::tcp_keepidle(&s).unwrap();
        let every = sockopt::tcp_keepintvl(&s).unwrap();
        let probes = sockopt::tcp_keepcnt(&s).unwrap();
        assert!(idle + every * probes <= DEAD_PEER_AFTER);
        assert_eq!(
            u128::from(sockopt::tcp_user_timeout(&s).unwrap()),
            DEAD_PEER_AFTER.as_millis()
        );
    }

    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused_unread() {
        let req = Request {
            version: PROTOCOL_VERSION,
            id: 7,
            call: Some(v1::request::Call::Random(v1::Random { length: 32 })),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        let back: Request = read_message(&mut buf.as_slice(), 1024).unwrap();
        assert_eq!(back, req);
        let e = read_frame(&mut buf.as_slice(), 3).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { max: 3, .. }), "{e}");
        // A frame cut short, and a connection closed between frames, are told apart.
        let e = read_frame(&mut &buf[..buf.len() - 1], 1024).unwrap_err();
        assert!(matches!(e, FrameError::Io(_)), "{e}");
        assert!(matches!(
            read_frame(&mut &[][..], 1024),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn every_engine_error_keeps_its_kind_and_words_across_the_wire() {
        let errors = [
            HsmError::InvalidInput("bad".into()),
            HsmError::AuthFailed {
                role: "Crypto Officer of p".into(),
                reason: "wrong password".into(),
                remaining: Some(4),
            },
            HsmError::Locked("locked".into()),
            HsmError::Refused("no".into()),
            HsmError::Tamper("t".into()),
            HsmError::NotLoggedIn("gone".into()),
            HsmError::InUse("held".into()),
            HsmError::NotFound("x".into()),
        ];
        for e in errors {
            let back = error_from_wire(error_to_wire(&e));
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e}"
            );
        }
    }
}
