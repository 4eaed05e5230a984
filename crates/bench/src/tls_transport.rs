//! `ferrohsm-bench --tls`: what the network costs an application host. The same PKCS#11
//! workload against the module embedded, against a real `ferrohsm server` over its Unix
//! socket, and against that server over TCP with mutual TLS on loopback (a third copy of the
//! library, configured as a registered host), alternating round by round at 1, 2 and 8
//! threads; a bare TLS 1.3 echo of a request-sized frame is the floor (served by another
//! process, as the HSM is; the same echo served by a thread of this process is shown beside
//! it); then one thread's latencies and the cost of setting up a connection (TCP + handshake
//! + first login). Figures, not tests: nothing is asserted.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use ferrohsm_client::{Remote, TlsClient};
use ferrohsm_core::api::{HsmApi, LoginCredential};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{x509, Role};

use crate::transport::{echo_frame, echo_frames, echo_once, latencies, pct, start_server_with};
use crate::{keys_in, load, make_home, measure, rate, rows, session, stats, token, Args, USER_PIN};

const THREADS: [usize; 3] = [1, 2, 8];

/// The rows the network goals name.
const GOAL_ROWS: [&str; 2] = ["C_Sign ECDSA P-256", "C_Sign RSA-2048 PKCS#1"];

/// Connections set up for the set-up figure.
const SETUPS: usize = 40;

/// A key and self-signed certificate (P-256), written as `name.key` / `name.crt` in `dir`;
/// the fingerprint of its key.
fn identity(dir: &Path, name: &str) -> String {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .and_then(|p| p.self_signed(&pair))
        .expect("certificate");
    std::fs::write(dir.join(format!("{name}.key")), pair.serialize_pem()).expect("key file");
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("cert file");
    x509::spki_fingerprint(x509::spki_of(cert.der()).expect("spki"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port()
}

/// A bare TLS 1.3 echo server (the floor): reads a length-prefixed frame, writes it back.
fn tls_echo_server(dir: &Path) -> (String, String) {
    let fp = identity(dir, "echo");
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_file(dir.join("echo.crt")).expect("c");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("echo.key")).expect("k");
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("echo identity"),
    );
    let l = TcpListener::bind("127.0.0.1:0").expect("echo listener");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_nodelay(true);
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                echo_frames(rustls::StreamOwned::new(conn, tcp));
            });
        }
    });
    (addr, fp)
}

/// The child's half of [`echo_process`]: serves the echo until the parent goes.
pub fn serve_echo(dir: &Path) {
    let (addr, fp) = tls_echo_server(dir);
    println!("{addr} {fp}");
    let _ = std::io::stdout().flush();
    // Standard input closes when the parent ends (or kills this process first).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// The echo process; stopped when dropped.
struct EchoProcess(Child);

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bare TLS echo served by a child process (this benchmark, `--tls-echo`): the floor the
/// HSM's own process is compared with, since waking another process can cost more than
/// waking a thread of one's own. Its address and key fingerprint.
fn echo_process(dir: &Path) -> (EchoProcess, String, String) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--tls-echo")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo process");
    let mut line = String::new();
    let out = child.stdout.take().expect("its output");
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("the echo's address");
    let mut it = line.split_whitespace();
    let addr = it.next().expect("an address").to_string();
    let fp = it.next().expect("a fingerprint").to_string();
    (EchoProcess(child), addr, fp)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(addr: &str, client: &TlsClient) -> TlsStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("ferrohsm").expect("name");
    let conn = rustls::ClientConnection::new(client.config().expect("config"), name).expect("tls");
    rustls::StreamOwned::new(conn, tcp)
}

/// Runs the rows.
pub fn run(args: &Args) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (edir, sdir) = (tmp.path().join("embedded"), tmp.path().join("served"));
    make_home(&edir);
    make_home(&sdir);
    let addr = format!("127.0.0.1:{}", free_port());
    let (_server, socket) =
        start_server_with(tmp.path(), &sdir, &format!("tls_listen = \"{addr}\"\n"));
    while TcpStream::connect(&addr).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let server_der =
        x509::certificate_der(&std::fs::read(sdir.join("tls-server.crt")).expect("crt"))
            .expect("der");
    let server_fp = x509::spki_fingerprint(x509::spki_of(&server_der).expect("spki"));

    // Embedded; through the socket (which makes the "bench" token on the server); then a
    // registered host over TLS, given that token's partition by the HSM SO.
    std::env::set_var("FERROHSM_HOME", &edir);
    std::env::remove_var("FERROHSM_SERVER");
    let embedded = token("embedded", load(&args.module));
    std::env::remove_var("FERROHSM_HOME");
    std::env::set_var("FERROHSM_SERVER", &socket);
    let unix_copy = tmp.path().join("libferrohsm_pkcs11_unix.so");
    std::fs::copy(&args.module, &unix_copy).expect("a copy of the module");
    let served = token("socket", load(&unix_copy));
    let host_fp = identity(tmp.path(), "host");
    {
        let mut so = Remote::connect(&socket).expect("server");
        let l = so
            .login(
                Role::HsmSo,
                None,
                LoginCredential::Secret(Pin::password("bench-hsm-so").expect("pin")),
            )
            .expect("HSM SO");
        so.register_client(l, "bench-host", &host_fp)
            .expect("register");
        so.assign_client(l, "bench-host", "bench", true)
            .expect("assign");
    }
    let client = TlsClient {
        cert: tmp.path().join("host.crt"),
        key: tmp.path().join("host.key"),
        server_fingerprint: server_fp,
        server_ca: None,
    };
    let conf = tmp.path().join("pkcs11-tls.conf");
    std::fs::write(
        &conf,
        format!(
            "server = \"tls://{addr}\"\nclient_cert = {:?}\nclient_key = {:?}\nserver_fingerprint = \"{}\"\n",
            client.cert, client.key, client.server_fingerprint
        ),
    )
    .expect("module conf");
    std::env::set_var("FERROHSM_PKCS11_CONF", &conf);
    let tls_copy = tmp.path().join("libferrohsm_pkcs11_tls.so");
    std::fs::copy(&args.module, &tls_copy).expect("a copy of the module");
    let p11 = load(&tls_copy);
    std::env::remove_var("FERROHSM_PKCS11_CONF");
    let slot = p11.get_slots_with_token().expect("slots")[0];
    let networked = keys_in("TLS", p11, slot);

    let echo_dir = tmp.path().join("echo");
    std::fs::create_dir_all(&echo_dir).expect("echo dir");
    let (_echo_process, echo, echo_fp) = echo_process(&echo_dir);
    let echo_client = TlsClient {
        server_fingerprint: echo_fp,
        ..client.clone()
    };
    let (echo_here, here_fp) = tls_echo_server(tmp.path());
    let here_client = TlsClient {
        server_fingerprint: here_fp,
        ..client.clone()
    };
    let frame = echo_frame();
    println!(
        "ferrohsm-bench --tls: {} s per figure, {} alternating rounds; ops/s median [min..max]",
        args.seconds, args.rounds
    );
    println!(
        "{:<36} {:>3} {:>24} {:>24} {:>24} {:>6} {:>6}",
        "operation", "thr", "module embedded", "via Unix socket", "via mutual TLS", "t/e", "t/s"
    );
    let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:>8.0} [{lo:.0}..{hi:.0}]");
    for &t in &THREADS {
        let mut r = Vec::new();
        for _ in 0..args.rounds {
            let (echo, frame, c) = (echo.clone(), frame.clone(), echo_client.clone());
            r.push(rate(
                t,
                args.seconds,
                move || tls_connect(&echo, &c),
                move |s, _| {
                    let mut back = [0u8; 104];
                    echo_once(s, &frame, &mut back)
                },
            ));
        }
        println!(
            "{:<36} {t:>3} {:>24} {:>24} {:>24}",
            "bare TLS 1.3 echo 104 B (floor)",
            "",
            "",
            fmt(stats(r))
        );
    }
    let mut latency_lines = Vec::new();
    for row in rows(&args.only) {
        if !GOAL_ROWS.iter().any(|g| row.name.starts_with(g)) {
            continue;
        }
        for &t in &THREADS {
            let (mut e, mut s, mut n) = (vec![], vec![], vec![]);
            for _ in 0..args.rounds {
                e.push(measure(&embedded, t, args.seconds, &row.p11));
                s.push(measure(&served, t, args.seconds, &row.p11));
                n.push(measure(&networked, t, args.seconds, &row.p11));
            }
            let (e, s, n) = (stats(e), stats(s), stats(n));
            println!(
                "{:<36} {t:>3} {:>24} {:>24} {:>24} {:>6.2} {:>6.2}",
                row.name,
                fmt(e),
                fmt(s),
                fmt(n),
                n.0 / e.0,
                n.0 / s.0
            );
        }
        // One thread, call by call, the three and the TLS echo in the same stretch of time.
        let (se, sn) = (session(&embedded), session(&networked));
        let mut es = tls_connect(&echo, &echo_client);
        let mut eh = tls_connect(&echo_here, &here_client);
        let (mut le, mut ln, mut lx, mut lh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            le.extend(latencies(args.seconds / 2.0, |i| {
                (row.p11)(&se, &embedded.keys, i)
            }));
            ln.extend(latencies(args.seconds / 2.0, |i| {
                (row.p11)(&sn, &networked.keys, i)
            }));
            let mut back = [0u8; 104];
            lx.extend(latencies(args.seconds / 4.0, |_| {
                echo_once(&mut es, &frame, &mut back)
            }));
            lh.extend(latencies(args.seconds / 4.0, |_| {
                echo_once(&mut eh, &frame, &mut back)
            }));
        }
        let (me, mn, mx) = (pct(&mut le, 0.5), pct(&mut ln, 0.5), pct(&mut lx, 0.5));
        let mh = pct(&mut lh, 0.5);
        let p99 = pct(&mut ln, 0.99);
        latency_lines.push(format!(
            "{:<36} embedded {me:>8.1} µs  via TLS {mn:>8.1} µs  added {:>7.1} µs = {:>5.2} x TLS echo ({mx:.1} µs; {mh:.1} µs in-process)  p99 {p99:>8.1} µs = {:>5.2} x median",
            row.name,
            mn - me,
            (mn - me) / mx,
            p99 / mn
        ));
    }
    println!("\nlatency, one thread (medians over every call of every round):");
    for l in latency_lines {
        println!("{l}");
    }
    // Setting up: connect (and, over TLS, the mutual handshake), then the first login.
    let secret = || LoginCredential::Secret(Pin::password(USER_PIN).expect("pin"));
    let (mut over_tls, mut over_unix) = (Vec::new(), Vec::new());
    for _ in 0..SETUPS {
        let t = Instant::now();
        let mut r = Remote::connect_tls(&addr, &client).expect("connect over TLS");
        r.login(Role::CryptoOfficer, Some("bench"), secret())
            .expect("login over TLS");
        over_tls.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let mut r = Remote::connect(&socket).expect("connect");
        r.login(Role::CryptoOfficer, Some("bench"), secret())
            .expect("login");
        over_unix.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (mt, mu) = (pct(&mut over_tls, 0.5), pct(&mut over_unix, 0.5));
    println!(
        "\nconnection set-up + first login, median of {SETUPS}: over mutual TLS {mt:.0} µs, over the Unix socket {mu:.0} µs ({:.2} x)",
        mt / mu
    );
}
