//! `ferrohsm-bench --transport`: what the server's boundary costs. The same HSM API calls
//! answered in-process (`api::Embedded`) and by a real `ferrohsm server` over its Unix socket
//! (`ferrohsm_client::Remote`), alternating round by round, at 1, 2 and 8 threads, beside a
//! floor row: a bare Unix-socket echo of a request-sized frame. Prints ops/s (median of the
//! rounds with min and max), remote / embedded, and for one thread the latency the socket adds
//! against the echo round trip and the remote call's 99th percentile against its median.
//! Figures, not tests: nothing is asserted.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohsm_client::Remote;
use ferrohsm_core::api::{Embedded, HsmApi, LoginCredential, LoginId};
use ferrohsm_core::hsm::InitOptions;
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism, Params};
use ferrohsm_core::object::KeyOptions;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, Credential, DomainChoice, Hsm, NewSecret, Role};

use crate::{rate, stats};

pub(crate) const CO_PW: &str = "bench-co-password";
const THREADS: [usize; 3] = [1, 2, 8];

pub(crate) fn pw(s: &str) -> Pin {
    Pin::password(s).expect("password")
}

/// The keys every row uses, by handle (the same in both directories: made in the same order).
#[derive(Clone, Copy)]
pub(crate) struct Handles {
    p256: u64,
    ed25519: u64,
    rsa: u64,
    aes: u64,
    hmac: u64,
}

/// A password HSM with partition "bench" and its Crypto Officer, and the rows' keys.
pub(crate) fn provision(dir: &Path) -> Handles {
    let mut h = Hsm::open_or_create(dir).expect("data dir");
    h.init(InitOptions {
        label: "bench".into(),
        mode: AuthMode::Password,
        so: NewSecret::Password(pw("bench-hsm-so")),
        domain: NewSecret::Password(pw("bench-domain")),
        current_so: None,
        confirm_destroy: vec![],
    })
    .expect("init");
    let so = h
        .login(Role::HsmSo, None, Credential::Secret(pw("bench-hsm-so")))
        .expect("so");
    h.create_partition(&so, "bench").expect("partition");
    h.init_partition(
        "bench",
        NewSecret::Password(pw("bench-pso")),
        DomainChoice::None,
        None,
    )
    .expect("partition init");
    let pso = h
        .login(
            Role::PartitionSo,
            Some("bench"),
            Credential::Secret(pw("bench-pso")),
        )
        .expect("pso");
    h.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Password(pw(CO_PW)),
        false,
    )
    .expect("co");
    let mut api = Embedded::with(h, Default::default());
    let co = co_login(&mut api);
    let mut gen = |spec, label: &str| {
        api.generate_key(
            co,
            spec,
            &KeyOptions {
                label: label.into(),
                id: vec![],
                extractable: false,
            },
        )
        .expect("keygen")[0]
    };
    Handles {
        p256: gen(KeySpec::EcP256, "p256"),
        ed25519: gen(KeySpec::Ed25519, "ed25519"),
        rsa: gen(KeySpec::Rsa2048, "rsa"),
        aes: gen(KeySpec::Aes256, "aes"),
        hmac: gen(KeySpec::Generic(32), "hmac"),
    }
}

type Op = Arc<dyn Fn(&mut dyn HsmApi, LoginId, &Handles, u64) + Send + Sync>;

fn ops() -> Vec<(&'static str, Op)> {
    let digest = [0x42u8; 32];
    let msg = b"benchmark message, 32 bytes long";
    vec![
        (
            "ECDSA P-256 sign (digest)",
            Arc::new(move |a: &mut dyn HsmApi, l, k: &Handles, _| {
                a.sign(l, k.p256, Mechanism::Ecdsa(None), &digest)
                    .expect("sign");
            }) as Op,
        ),
        (
            "Ed25519 sign 32 B",
            Arc::new(move |a: &mut dyn HsmApi, l, k: &Handles, _| {
                a.sign(l, k.ed25519, Mechanism::Ed25519, msg).expect("sign");
            }),
        ),
        (
            "RSA-2048 PKCS#1 SHA-256 sign",
            Arc::new(move |a: &mut dyn HsmApi, l, k: &Handles, _| {
                a.sign(l, k.rsa, Mechanism::RsaPkcs1(Hash::Sha256), msg)
                    .expect("sign");
            }),
        ),
        (
            "AES-256-GCM encrypt 64 B",
            Arc::new(move |a: &mut dyn HsmApi, l, k: &Handles, n| {
                let mut iv = vec![0u8; 12];
                iv[4..].copy_from_slice(&n.to_be_bytes());
                let p = Params {
                    iv,
                    aad: vec![],
                    label: vec![],
                };
                a.encrypt(l, k.aes, Mechanism::AesGcm, &p, &[7u8; 64])
                    .expect("encrypt");
            }),
        ),
        (
            "HMAC-SHA-256 64 B",
            Arc::new(move |a: &mut dyn HsmApi, l, k: &Handles, _| {
                a.sign(l, k.hmac, Mechanism::Hmac(Hash::Sha256), &[7u8; 64])
                    .expect("mac");
            }),
        ),
    ]
}

/// A bare echo server: reads a length-prefixed frame, writes it back.
pub(crate) fn echo_server(path: &Path) {
    let l = UnixListener::bind(path).expect("echo socket");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || echo_frames(s));
        }
    });
}

/// Echoes length-prefixed frames on `s` until it closes or sends nonsense.
pub(crate) fn echo_frames(mut s: impl Read + Write) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > buf.len() || s.read_exact(&mut buf[..n]).is_err() {
            return;
        }
        let mut out = len.to_vec();
        out.extend_from_slice(&buf[..n]);
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

/// A frame the size of a signing request, for the echo floor.
pub(crate) fn echo_frame() -> Arc<Vec<u8>> {
    let mut f = 100u32.to_be_bytes().to_vec();
    f.extend_from_slice(&[0x5a; 100]);
    Arc::new(f)
}

/// The echo floor: round trips of `frame` per second at `threads` threads, over `rounds`
/// (median, min, max).
pub(crate) fn echo_rate(
    echo: &Path,
    frame: &Arc<Vec<u8>>,
    threads: usize,
    secs: f64,
    rounds: usize,
) -> (f64, f64, f64) {
    let mut r = Vec::new();
    for _ in 0..rounds {
        let (echo, frame) = (echo.to_path_buf(), frame.clone());
        r.push(rate(
            threads,
            secs,
            move || UnixStream::connect(&echo).expect("echo"),
            move |s, _| {
                let mut back = [0u8; 104];
                echo_once(s, &frame, &mut back)
            },
        ));
    }
    stats(r)
}

/// One echo round trip of `frame` on any stream (a socket, or TLS over one).
pub(crate) fn echo_once(s: &mut (impl Read + Write), frame: &[u8], back: &mut [u8]) {
    s.write_all(frame).expect("echo write");
    s.read_exact(back).expect("echo read");
}

/// Latency samples (µs) of `f`, run for `secs` in this thread.
pub(crate) fn latencies(secs: f64, mut f: impl FnMut(u64)) -> Vec<f64> {
    let mut v = Vec::new();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        f(n);
        v.push(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
    }
    v
}

pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) struct ServerProcess(std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_server(tmp: &Path, data: &Path) -> (ServerProcess, PathBuf) {
    start_server_with(tmp, data, "")
}

/// [`start_server`] with more configuration lines.
pub(crate) fn start_server_with(tmp: &Path, data: &Path, extra: &str) -> (ServerProcess, PathBuf) {
    let bin = std::env::current_exe()
        .expect("own path")
        .with_file_name("ferrohsm");
    let socket = tmp.join("hsm.sock");
    let conf = tmp.join("server.toml");
    std::fs::write(
        &conf,
        format!("data_dir = {data:?}\nsocket = {socket:?}\nlog = \"warn\"\n{extra}"),
    )
    .expect("config");
    let child = std::process::Command::new(&bin)
        .args(["server", "--config"])
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build the workspace first)", bin.display()));
    let t0 = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (ServerProcess(child), socket)
}

/// Logs the Crypto Officer in on an API.
pub(crate) fn co_login(a: &mut dyn HsmApi) -> LoginId {
    a.login(
        Role::CryptoOfficer,
        Some("bench"),
        LoginCredential::Secret(pw(CO_PW)),
    )
    .expect("login")
}

/// ops/s of `op` in `threads` threads, each on its own API from `open`, logged in.
fn api_rate(
    threads: usize,
    secs: f64,
    op: &Op,
    keys: Handles,
    open: impl Fn() -> Box<dyn HsmApi + Send> + Send + Sync + 'static,
) -> f64 {
    let op = op.clone();
    rate(
        threads,
        secs,
        move || {
            let mut a = open();
            let l = co_login(a.as_mut());
            (a, l)
        },
        move |(a, l), n| op(a.as_mut(), *l, &keys, n),
    )
}

/// Runs the transport rows.
pub fn run(secs: f64, rounds: usize, only: &Option<String>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (edir, sdir) = (tmp.path().join("embedded"), tmp.path().join("served"));
    let keys = provision(&edir);
    let skeys = provision(&sdir);
    let (_server, socket) = start_server(tmp.path(), &sdir);
    let echo = tmp.path().join("echo.sock");
    echo_server(&echo);
    let edir = Arc::new(edir);

    println!(
        "ferrohsm-bench --transport: {secs} s per figure, {rounds} alternating rounds; ops/s median [min..max]"
    );
    println!(
        "{:<32} {:>3} {:>26} {:>26} {:>8}",
        "operation", "thr", "embedded API", "server over Unix socket", "s/e"
    );
    let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:>9.0} [{lo:.0}..{hi:.0}]");
    // The floor: a bare echo of a frame the size of a signing request.
    let frame = echo_frame();
    for &t in &THREADS {
        println!(
            "{:<32} {t:>3} {:>26} {:>26}",
            "bare Unix-socket echo 104 B",
            "",
            fmt(echo_rate(&echo, &frame, t, secs, rounds))
        );
    }
    let mut latency_lines = Vec::new();
    for (name, op) in ops() {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        for &t in &THREADS {
            let (mut e, mut s) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let dir = edir.clone();
                e.push(api_rate(t, secs, &op, keys, move || {
                    Box::new(Embedded::open(&dir).expect("embedded"))
                }));
                let sock = socket.clone();
                s.push(api_rate(t, secs, &op, skeys, move || {
                    Box::new(Remote::connect(&sock).expect("remote"))
                }));
            }
            let (e, s) = (stats(e), stats(s));
            println!(
                "{name:<32} {t:>3} {:>26} {:>26} {:>8.2}",
                fmt(e),
                fmt(s),
                s.0 / e.0
            );
        }
        // Latency, one thread: embedded, remote and the echo in the same stretch of time.
        let mut emb = Embedded::open(&edir).expect("embedded");
        let el = co_login(&mut emb);
        let mut rem = Remote::connect(&socket).expect("remote");
        let rl = co_login(&mut rem);
        let mut es = UnixStream::connect(&echo).expect("echo");
        let (mut le, mut lr, mut lx) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            le.extend(latencies(secs / 2.0, |n| op(&mut emb, el, &keys, n)));
            lr.extend(latencies(secs / 2.0, |n| op(&mut rem, rl, &skeys, n)));
            let mut back = [0u8; 104];
            lx.extend(latencies(secs / 4.0, |_| {
                echo_once(&mut es, &frame, &mut back)
            }));
        }
        let (me, mr, mx) = (pct(&mut le, 0.5), pct(&mut lr, 0.5), pct(&mut lx, 0.5));
        let p99 = pct(&mut lr, 0.99);
        latency_lines.push(format!(
            "{name:<32} embedded {me:>8.1} µs  server {mr:>8.1} µs  added {:>7.1} µs = {:>5.2} x echo ({mx:.1} µs)  server p99 {p99:>8.1} µs = {:>5.2} x its median",
            mr - me,
            (mr - me) / mx,
            p99 / mr
        ));
    }
    println!("\nlatency, one thread (medians over every call of every round):");
    for l in latency_lines {
        println!("{l}");
    }
}
