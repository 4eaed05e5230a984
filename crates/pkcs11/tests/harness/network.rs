//! The network as the module meets it: a served HSM with a TLS listener and one registered
//! host, and a TCP proxy the test controls between them (to cut the link, freeze it, and
//! bring it back).

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{password_hsm_in, server_binary, start_server_with, ServerProcess, HSM_SO_PW};

/// A password the partitions' officers and users share in these tests.
pub const USER_PIN: &str = "user-pin-1";

/// A served HSM with partitions "mine" (assigned to host1) and "theirs", each with its CO
/// (password [`USER_PIN`]), a TLS listener, and host1's key and certificate.
pub struct TlsHsm {
    /// Holds every file.
    pub tmp: tempfile::TempDir,
    /// The server.
    pub server: ServerProcess,
    /// Its TLS listener.
    pub addr: String,
    /// Its key's fingerprint.
    pub fingerprint: String,
    /// The server's configuration lines beyond the defaults.
    extra: String,
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TlsHsm {
    /// Sets it up; `extra` are more lines of the server's configuration.
    pub fn new(extra: &str) -> TlsHsm {
        TlsHsm::in_domain(extra, "domain-pw")
    }

    /// [`TlsHsm::new`], with the cloning domain made from `domain`.
    pub fn in_domain(extra: &str, domain: &str) -> TlsHsm {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        password_hsm_in(&data, false, domain);
        let addr = format!("127.0.0.1:{}", free_port());
        let socket = tmp.path().join("ferrohsm.sock");
        let extra = format!("tls_listen = \"{addr}\"\n{extra}");
        let server = start_server_with(&data, &socket, &extra);
        let mut h = TlsHsm {
            tmp,
            server,
            addr,
            fingerprint: String::new(),
            extra,
        };
        for p in ["mine", "theirs"] {
            h.cli(&[
                "partition",
                "create",
                "--label",
                p,
                "--password",
                "env:SO_PW",
            ]);
            h.cli_with(
                &[
                    "partition",
                    "init",
                    "--partition",
                    p,
                    "--so-password",
                    "env:PSO_PW",
                    "--domain-password",
                    "env:DOM",
                ],
                &[("DOM", domain)],
            );
            h.cli(&[
                "role",
                "init",
                "--partition",
                p,
                "--role",
                "co",
                "--password",
                "env:PSO_PW",
                "--new-password",
                "env:CO_PW",
            ]);
        }
        h.cli(&[
            "client",
            "keygen",
            "--name",
            "host1",
            "--key",
            "host1.key",
            "--cert",
            "host1.crt",
        ]);
        h.cli(&[
            "client",
            "register",
            "--name",
            "host1",
            "--cert",
            "host1.crt",
            "--password",
            "env:SO_PW",
        ]);
        h.cli(&[
            "client",
            "assign",
            "--client",
            "host1",
            "--partition",
            "mine",
            "--password",
            "env:SO_PW",
        ]);
        let out = Command::new(server_binary())
            .args(["server", "--config"])
            .arg(h.tmp.path().join("server.toml"))
            .arg("fingerprint")
            .output()
            .unwrap();
        h.fingerprint = String::from_utf8(out.stdout).unwrap().trim().to_string();
        h
    }

    /// Runs the CLI as the operator, over the local socket; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_with(args, &[])
    }

    /// [`TlsHsm::cli`] with more variables in its environment.
    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new(server_binary())
            .arg("--server")
            .arg(&self.server.socket)
            .args(args)
            .envs(env.iter().copied())
            .env("SO_PW", HSM_SO_PW)
            .env("PSO_PW", "partition-so-1")
            .env("CO_PW", USER_PIN)
            .current_dir(self.tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// host1's certificate and key.
    pub fn host_files(&self) -> (PathBuf, PathBuf) {
        (
            self.tmp.path().join("host1.crt"),
            self.tmp.path().join("host1.key"),
        )
    }

    /// Writes a module configuration for host1 reaching `addr` (the server's listener, or a
    /// proxy in front of it), with more lines `extra`; points the module at it. Its path.
    pub fn module_conf(&self, addr: &str, extra: &str) -> PathBuf {
        let (cert, key) = self.host_files();
        let conf = self.tmp.path().join("pkcs11.conf");
        std::fs::write(
            &conf,
            format!(
                "server = \"tls://{addr}\"\nclient_cert = {cert:?}\nclient_key = {key:?}\nserver_fingerprint = \"{}\"\nlog = {:?}\n{extra}",
                self.fingerprint,
                self.tmp.path().join("module.log"),
            ),
        )
        .unwrap();
        std::env::remove_var("FERROHSM_HOME");
        std::env::remove_var("FERROHSM_SERVER");
        std::env::set_var("FERROHSM_PKCS11_CONF", &conf);
        conf
    }

    /// Starts the server again (after [`ServerProcess::kill`]): same data, address and key.
    pub fn restart(&mut self) {
        let socket = self.server.socket.clone();
        self.server = start_server_with(&self.data(), &socket, &self.extra);
        let t = std::time::Instant::now();
        while TcpStream::connect(&self.addr).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "no TLS listener");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's data directory.
    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
}

const OPEN: u8 = 0;
const CUT: u8 = 1;
const FROZEN: u8 = 2;

/// A TCP proxy on loopback in front of `upstream`. Open, it forwards; [`Proxy::cut`] closes
/// every connection through it and refuses new ones (a link that is gone); [`Proxy::freeze`]
/// keeps connections open but forwards nothing (a link that silently stalls);
/// [`Proxy::restore`] opens it again.
pub struct Proxy {
    /// Where clients connect.
    pub addr: String,
    state: Arc<AtomicU8>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Starts one.
    pub fn start(upstream: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let state = Arc::new(AtomicU8::new(OPEN));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (st, lv, up) = (state.clone(), live.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                if st.load(Ordering::SeqCst) != OPEN {
                    let _ = c.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(u) = TcpStream::connect(&up) else {
                    continue;
                };
                {
                    let mut v = lv.lock().unwrap();
                    v.push(c.try_clone().unwrap());
                    v.push(u.try_clone().unwrap());
                }
                for (from, to) in [(c.try_clone().unwrap(), u.try_clone().unwrap()), (u, c)] {
                    let st = st.clone();
                    std::thread::spawn(move || pump(from, to, st));
                }
            }
        });
        Proxy { addr, state, live }
    }

    /// Closes every connection through it; refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.store(CUT, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Forwards nothing, closes nothing: bytes sent now are never delivered.
    pub fn freeze(&self) {
        self.state.store(FROZEN, Ordering::SeqCst);
    }

    /// Opens the link again (connections cut stay cut; frozen ones stay stalled).
    pub fn restore(&self) {
        self.state.store(OPEN, Ordering::SeqCst);
    }
}

/// Copies bytes one way while the proxy is open; holds them while frozen; stops at a cut or
/// an end.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<AtomicU8>) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A frozen link swallows what it carries: this connection never delivers again.
        if state.load(Ordering::SeqCst) == FROZEN {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                if state.load(Ordering::SeqCst) == CUT {
                    break;
                }
            }
            break;
        }
        if state.load(Ordering::SeqCst) == CUT || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
