//! A password-authenticated HSM made with the real `ferrohsm` binary, and real `ferrohsm
//! server` processes over it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const SO_PW: &str = "so-password-1";
pub const PSO_PW: &str = "pso-password-1";
pub const CO_PW: &str = "co-password-1";

pub struct Lab {
    pub tmp: tempfile::TempDir,
    /// The words of the HSM's cloning domain (`DOM` in the environment of every command,
    /// as `partition init --domain hsm` presents it).
    pub words: String,
}

/// Whether the tests run as root (needed to connect as another user).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether a tool runs here (`tool arg` starts).
pub fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool).arg(arg).output().is_ok()
}

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("ferrohsm")
}

impl Lab {
    /// An HSM with partition "app" initialised and a Crypto Officer (passwords).
    pub fn new() -> Lab {
        Lab::with_domain("domain-words-1")
    }

    /// [`Lab::new`] with the cloning domain made from other words (labs of the same words
    /// share a domain).
    pub fn with_domain(words: &str) -> Lab {
        Lab::made(words, &[])
    }

    /// [`Lab::new`] initialised as a backup HSM (`hsm init --backup`).
    pub fn backup() -> Lab {
        Lab::made("domain-words-1", &["--backup"])
    }

    /// An HSM of the domain made from `words`, `hsm init` given `more` arguments.
    fn made(words: &str, more: &[&str]) -> Lab {
        let lab = Lab {
            tmp: tempfile::tempdir().unwrap(),
            words: words.to_string(),
        };
        std::fs::create_dir_all(lab.run_dir()).unwrap();
        let out = lab
            .cli()
            .args([
                "hsm",
                "init",
                "--label",
                "lab",
                "--auth",
                "password",
                "--so-password",
                "env:SO_PW",
                "--domain-password",
                "env:DOM",
            ])
            .args(more)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab.ok(&[
            "partition",
            "create",
            "--label",
            "app",
            "--password",
            "env:SO_PW",
        ]);
        lab.ok(&[
            "partition",
            "init",
            "--partition",
            "app",
            "--so-password",
            "env:PSO_PW",
            "--domain-password",
            "env:DOM",
        ]);
        lab.ok(&[
            "role",
            "init",
            "--partition",
            "app",
            "--role",
            "co",
            "--password",
            "env:PSO_PW",
            "--new-password",
            "env:CO_PW",
        ]);
        lab
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.tmp.path().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("hsm.sock")
    }

    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("FERROHSM_HOME", self.data())
            .env("FERROHSM_PED_DIR", self.tmp.path().join("peds"))
            .env("SO_PW", SO_PW)
            .env("DOM", &self.words)
            .env("PSO_PW", PSO_PW)
            .env("CO_PW", CO_PW)
            .current_dir(self.tmp.path());
        c
    }

    pub fn ok(&self, args: &[&str]) {
        let out = self.cli().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ferrohsm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a configuration and starts a server with it; waits until it accepts.
    /// Writes a server configuration `name` over this lab's directory, listening on `socket`.
    pub fn config(&self, name: &str, socket: &Path, extra: &str) -> PathBuf {
        let conf = self.tmp.path().join(name);
        std::fs::write(
            &conf,
            format!(
                "data_dir = {:?}\nsocket = {:?}\nlog = \"debug\"\n{extra}",
                self.data(),
                socket
            ),
        )
        .unwrap();
        conf
    }

    pub fn start_with(&self, extra: &str) -> Server {
        let conf = self.config("server.toml", &self.socket(), extra);
        Server::start(&conf, &self.socket(), &self.tmp.path().join("server.log"))
    }

    pub fn start(&self) -> Server {
        self.start_with("")
    }
}

/// Runs `ferrohsm server --config CONF` that is expected to refuse to start: its exit code
/// and what it said.
pub fn refused_start(conf: &Path) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(["server", "--config"])
        .arg(conf)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Server {
    pub fn spawn(conf: &Path, log: &Path) -> Child {
        let err = std::fs::File::create(log).unwrap();
        Command::new(bin())
            .args(["server", "--config"])
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap()
    }

    pub fn start(conf: &Path, socket: &Path, log: &Path) -> Server {
        let mut s = Server {
            child: Server::spawn(conf, log),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        let t = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return s;
            }
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!("server exited {st}: {}", s.log_text());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server never listened: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// SIGTERM, then waits (at most 30 s) for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < limit,
                "server did not exit: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET (the metrics endpoint): the status line and the body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}
