//! The network listener: TCP with mutual TLS 1.3. Only hosts the HSM SO registered get in,
//! each to its assigned partitions; a host that pins another server key refuses that server;
//! a revoked host's open connection is cut within a second.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ferrohsm_client::{Remote, TlsClient};
use ferrohsm_core::api::{HsmApi, LoginCredential};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::Role;
use support::{Lab, Server, CO_PW};

struct Host {
    key: PathBuf,
    cert: PathBuf,
}

fn host(lab: &Lab, name: &str) -> Host {
    let h = Host {
        key: lab.tmp.path().join(format!("{name}.key")),
        cert: lab.tmp.path().join(format!("{name}.crt")),
    };
    lab.ok(&[
        "client",
        "keygen",
        "--name",
        name,
        "--key",
        &h.key.display().to_string(),
        "--cert",
        &h.cert.display().to_string(),
    ]);
    h
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CLI as `h`, against the TLS listener at `addr`, trusting `fp`.
fn as_host(lab: &Lab, h: &Host, addr: &str, fp: &str, args: &[&str]) -> Output {
    lab.cli()
        .env_remove("FERROHSM_HOME")
        .args(["--server", &format!("tls://{addr}")])
        .arg("--tls-cert")
        .arg(&h.cert)
        .arg("--tls-key")
        .arg(&h.key)
        .args(["--server-fingerprint", fp])
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn so(lab: &Lab, server: &Server, args: &[&str]) {
    let out = lab
        .cli()
        .arg("--server")
        .arg(&server.socket)
        .args(args)
        .args(["--password", "env:SO_PW"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

/// Registers host `h` as `name` and assigns it partition "app" (HSM SO).
fn admit(lab: &Lab, server: &Server, name: &str, h: &Host) {
    let cert = h.cert.display().to_string();
    so(
        lab,
        server,
        &["client", "register", "--name", name, "--cert", &cert],
    );
    so(
        lab,
        server,
        &["client", "assign", "--client", name, "--partition", "app"],
    );
}

fn tls_client(h: &Host, fp: &str) -> TlsClient {
    TlsClient {
        cert: h.cert.clone(),
        key: h.key.clone(),
        server_fingerprint: fp.into(),
        server_ca: None,
    }
}

fn fingerprint(lab: &Lab, conf: &Path) -> String {
    let out = lab
        .cli()
        .args(["server", "--config"])
        .arg(conf)
        .arg("fingerprint")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn only_registered_hosts_get_in_and_only_to_their_partitions() {
    let lab = Lab::new();
    // A second partition the host will not be given.
    lab.ok(&[
        "partition",
        "create",
        "--label",
        "other",
        "--password",
        "env:SO_PW",
    ]);
    let addr = format!("127.0.0.1:{}", free_port());
    let conf = lab.config(
        "tls.toml",
        &lab.socket(),
        &format!("tls_listen = \"{addr}\"\n"),
    );
    let fp = fingerprint(&lab, &conf);
    assert_eq!(fp.len(), 64);
    let server = Server::start(&conf, &lab.socket(), &lab.tmp.path().join("server.log"));
    assert_eq!(fingerprint(&lab, &conf), fp, "the server keeps its key");

    let a = host(&lab, "app1");
    let stranger = host(&lab, "stranger");
    admit(&lab, &server, "app1", &a);

    // The registered host works in its partition, over the network.
    let co = ["--partition", "app", "--password", "env:CO_PW"];
    let out = as_host(
        &lab,
        &a,
        &addr,
        &fp,
        &[
            &["key", "generate", "--type", "ec-p256", "--label", "net"][..],
            &co,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = as_host(&lab, &a, &addr, &fp, &["partition", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("app") && !listed.contains("other"),
        "it sees only its partitions: {listed}"
    );
    // Outside its scope: another partition, and the device's officers.
    let out = as_host(
        &lab,
        &a,
        &addr,
        &fp,
        &[
            "key",
            "list",
            "--partition",
            "other",
            "--password",
            "env:CO_PW",
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("not assigned"),
        "{}",
        stderr(&out)
    );
    let out = as_host(
        &lab,
        &a,
        &addr,
        &fp,
        &[
            "hsm",
            "policy",
            "set",
            "m-of-n",
            "off",
            "--password",
            "env:SO_PW",
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("not assigned"),
        "{}",
        stderr(&out)
    );

    // An unregistered host is refused during the handshake.
    let out = as_host(&lab, &stranger, &addr, &fp, &["partition", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused this client in the TLS handshake"),
        "{}",
        stderr(&out)
    );
    // A host pinning another server key refuses this server before sending anything.
    let wrong = "ab".repeat(32);
    let out = as_host(&lab, &a, &addr, &wrong, &["partition", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("TLS handshake"), "{}", stderr(&out));
    let log = server.log_text();
    assert!(!log.contains(CO_PW), "a password in the server's log");

    // Revocation cuts the host's open connection within a second.
    let mut api = Remote::connect_tls(&addr, &tls_client(&a, &fp)).unwrap();
    let login = api
        .login(
            Role::CryptoOfficer,
            Some("app"),
            LoginCredential::Secret(Pin::password(CO_PW).unwrap()),
        )
        .unwrap();
    assert!(api.find_objects(login, None).is_ok());
    so(&lab, &server, &["client", "revoke", "--client", "app1"]);
    let revoked = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        api.find_objects(login, None).is_err(),
        "the revoked host's connection still works"
    );
    assert!(revoked.elapsed() < Duration::from_secs(3));
    // And it cannot come back: refused at the handshake (which TLS 1.3 tells the client at
    // its first read).
    let back = Remote::connect_tls(&addr, &tls_client(&a, &fp)).and_then(|mut r| r.summary());
    match back {
        Err(e) => assert!(e.to_string().contains("refused this client"), "{e}"),
        Ok(_) => panic!("a revoked host was served"),
    }
    assert!(server.stop().success());
}

/// The audit log as an Auditor (imprinted here, by password) shows it, through the server.
fn audit_log(lab: &Lab, server: &Server) -> String {
    let aud = |args: &[&str]| {
        let out = lab
            .cli()
            .env("AUD_PW", "auditor-pass-1")
            .arg("--server")
            .arg(&server.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    aud(&[
        "audit",
        "init",
        "--auth",
        "password",
        "--new-password",
        "env:AUD_PW",
    ]);
    aud(&["audit", "show", "--password", "env:AUD_PW"])
}

/// Starts a server with a TLS listener on a free port; its address and pinned fingerprint.
/// `extra` are more lines of its configuration.
fn tls_server(lab: &Lab, extra: &str) -> (Server, String, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let conf = lab.config(
        "tls.toml",
        &lab.socket(),
        &format!("tls_listen = \"{addr}\"\n{extra}"),
    );
    let fp = fingerprint(lab, &conf);
    let server = Server::start(&conf, &lab.socket(), &lab.tmp.path().join("server.log"));
    (server, addr, fp)
}

/// Issues an enrollment code (HSM SO); the code.
fn invite(lab: &Lab, server: &Server, name: &str, valid_for: &str) -> String {
    let out = lab
        .cli()
        .arg("--server")
        .arg(&server.socket)
        .args(["--json", "client", "invite", "--name", name])
        .args(["--partition", "app", "--valid-for", valid_for])
        .args(["--password", "env:SO_PW"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["name"], name);
    e["code"].as_str().unwrap().to_string()
}

/// `client enroll` as `h` with `code`.
fn enroll(lab: &Lab, h: &Host, addr: &str, fp: &str, code: &str) -> Output {
    let mut c = lab.cli();
    c.env_remove("FERROHSM_HOME")
        .env("ENROLL_CODE", code)
        .args(["--server", &format!("tls://{addr}")])
        .arg("--tls-cert")
        .arg(&h.cert)
        .arg("--tls-key")
        .arg(&h.key)
        .args(["--server-fingerprint", fp])
        .args(["client", "enroll", "--code", "env:ENROLL_CODE"]);
    c.output().unwrap()
}

#[test]
fn a_host_enrolls_its_own_certificate_with_a_one_time_code() {
    let lab = Lab::new();
    let (server, addr, fp) = tls_server(&lab, "");
    let (a, b) = (host(&lab, "app2"), host(&lab, "intruder"));
    let some_code = "ABCD-EFGH-JKMN-PQRS";

    // No code outstanding: an unregistered host does not get past the handshake.
    let out = enroll(&lab, &a, &addr, &fp, some_code);
    assert!(
        !out.status.success() && stderr(&out).contains("TLS handshake"),
        "{}",
        stderr(&out)
    );

    let code = invite(&lab, &server, "app2", "10m");
    assert_eq!(code.len(), 19, "{code}");
    // While a code is outstanding, an unregistered host gets through the handshake but may
    // do nothing except redeem a code.
    let out = as_host(&lab, &b, &addr, &fp, &["partition", "list"]);
    assert!(
        !out.status.success() && stderr(&out).contains("may only redeem an enrollment code"),
        "{}",
        stderr(&out)
    );
    // A code nobody issued, and a malformed one, are refused.
    let out = enroll(&lab, &b, &addr, &fp, some_code);
    assert!(
        !out.status.success() && stderr(&out).contains("no such enrollment code"),
        "{}",
        stderr(&out)
    );
    let out = enroll(&lab, &b, &addr, &fp, "not a code at all");
    assert!(!out.status.success(), "a malformed code was taken");

    // The host redeems the code (typed loosely: lower case, no dashes) and is registered
    // with its own key and the invitation's partitions.
    let loose = code.replace('-', "").to_lowercase();
    let out = enroll(&lab, &a, &addr, &fp, &loose);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("registered as app2") && said.contains("app"),
        "{said}"
    );
    let out = as_host(&lab, &a, &addr, &fp, &["partition", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("app"));

    // Once only: with another code outstanding (so the intruder gets through the
    // handshake), the used code is refused.
    let _other = invite(&lab, &server, "app3", "10m");
    let out = enroll(&lab, &b, &addr, &fp, &code);
    assert!(
        !out.status.success() && stderr(&out).contains("already used"),
        "{}",
        stderr(&out)
    );
    // And a code past its time is refused.
    let short = invite(&lab, &server, "app4", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let out = enroll(&lab, &b, &addr, &fp, &short);
    assert!(
        !out.status.success() && stderr(&out).contains("expired"),
        "{}",
        stderr(&out)
    );
    // More than 20 minutes is refused at issue.
    let out = lab
        .cli()
        .arg("--server")
        .arg(&server.socket)
        .args(["client", "invite", "--name", "app5", "--valid-for", "21m"])
        .args(["--password", "env:SO_PW"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Every step is in the audit log, and no code is in the audit log or the server's log.
    let audit = audit_log(&lab, &server);
    for (event, what) in [
        ("client-invite", "success"),
        ("client-enroll", "success"),
        ("client-enroll", "no such enrollment code"),
        ("client-enroll", "already used"),
        ("client-enroll", "expired"),
    ] {
        assert!(
            audit.lines().any(|l| l.contains(event) && l.contains(what)),
            "no {event} {what} in:\n{audit}"
        );
    }
    let log = server.log_text();
    for c in [&code, &short] {
        assert!(!audit.contains(c.as_str()), "a code in the audit log");
        assert!(!log.contains(c.as_str()), "a code in the server's log");
    }
    assert!(server.stop().success());
}

/// A registered host that signs in a loop on its own thread until told to stop; how many
/// signatures it made, every failure, and its slowest call.
struct Signer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    made: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<(Vec<String>, Duration)>,
}

impl Signer {
    fn start(addr: &str, tls: TlsClient) -> Signer {
        use ferrohsm_core::mechanism::{KeySpec, Mechanism};
        use ferrohsm_core::object::KeyOptions;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (st, m, addr) = (stop.clone(), made.clone(), addr.to_string());
        let thread = std::thread::spawn(move || {
            let mut api = Remote::connect_tls(&addr, &tls).unwrap();
            let login = api
                .login(
                    Role::CryptoOfficer,
                    Some("app"),
                    LoginCredential::Secret(Pin::password(CO_PW).unwrap()),
                )
                .unwrap();
            let opts = KeyOptions {
                label: "steady".into(),
                id: vec![],
                extractable: false,
            };
            let key = api.generate_key(login, KeySpec::EcP256, &opts).unwrap()[0];
            let (mut failures, mut slowest) = (Vec::new(), Duration::ZERO);
            while !st.load(Ordering::SeqCst) {
                let t = Instant::now();
                match api.sign(login, key, Mechanism::Ecdsa(None), &[7u8; 32]) {
                    Ok(_) => {
                        m.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                slowest = slowest.max(t.elapsed());
            }
            (failures, slowest)
        });
        Signer { stop, made, thread }
    }

    fn made(&self) -> u64 {
        self.made.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn finish(self) -> (Vec<String>, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Whether the server closes `s` within `limit` (a read sees the end, or a reset).
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Garbage for a client hello, a silent connection, a host that completes the handshake and
/// sends nothing, an oversized frame, a request cut off halfway, and a thousand connections
/// at once: each is closed (and recorded), while another host signs throughout without a
/// single failure.
#[test]
fn bad_network_input_is_closed_and_another_host_keeps_signing() {
    use std::io::Write;
    let lab = Lab::new();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (server, addr, fp) = tls_server(
        &lab,
        &format!("handshake_timeout_s = 2\nidle_timeout_s = 3\nmax_handshakes = 32\nmax_frame_bytes = 65536\nmetrics_listen = \"{metrics}\"\n"),
    );
    let steady = host(&lab, "steady");
    let abuser = host(&lab, "abuser");
    admit(&lab, &server, "steady", &steady);
    admit(&lab, &server, "abuser", &abuser);
    let signer = Signer::start(&addr, tls_client(&steady, &fp));
    let t = Instant::now();
    while signer.made() < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the host never signed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = || std::net::TcpStream::connect(&addr).unwrap();

    // Garbage where a client hello belongs: closed at once.
    let mut g = connect();
    g.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).unwrap();
    g.write_all(&[0x5a; 2048]).unwrap();
    assert!(closed_within(&mut g, Duration::from_secs(2)));
    // A connection that never says anything: cut at the handshake deadline (2 s).
    let mut silent = connect();
    let t = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // A host that completes the handshake and sends nothing: cut at the idle timeout (3 s).
    let mut idle = Remote::connect_tls(&addr, &tls_client(&abuser, &fp)).unwrap();
    std::thread::sleep(Duration::from_millis(4000));
    assert!(
        idle.summary().is_ok(),
        "the client reconnects after the server closed its idle connection"
    );
    // An oversized frame, and a request cut off halfway: both closed, nothing else harmed.
    for half in [false, true] {
        let mut tcp = connect();
        let cfg = tls_client(&abuser, &fp).config().unwrap();
        let name = rustls::pki_types::ServerName::try_from("ferrohsm").unwrap();
        let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        if half {
            // Four length bytes promising 100 bytes, then 10, then the host is gone.
            tls.write_all(&100u32.to_be_bytes()).unwrap();
            tls.write_all(&[0u8; 10]).unwrap();
            drop(tls);
        } else {
            tls.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
            tls.flush().unwrap();
            let mut buf = Vec::new();
            use std::io::Read;
            let _ = tls.read_to_end(&mut buf);
            assert!(
                String::from_utf8_lossy(&buf).contains("over this server's limit"),
                "the refusal says why"
            );
        }
    }
    // A thousand connections at once, each held open: those beyond the handshakes in
    // progress are closed at once; the rest at the handshake deadline.
    let before = signer.made();
    let flood: Vec<std::net::TcpStream> = (0..1000)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(flood.len() > 900, "only {} connected", flood.len());
    std::thread::sleep(Duration::from_millis(3000));
    drop(flood);
    let during = signer.made() - before;
    // The metrics name the connected host and count the refusals.
    let (_, body) = support::http_get(&metrics, "/metrics");
    assert!(
        body.contains("ferrohsm_client_connections{client=\"steady\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("ferrohsm_refused_connections_total{reason=\"handshakes\"}")
            && body.contains("ferrohsm_refused_connections_total{reason=\"tls\"}"),
        "{body}"
    );
    let (failures, slowest) = signer.finish();
    eprintln!("the steady host: {during} signatures during the flood, slowest call {slowest:?}");
    assert!(failures.is_empty(), "the steady host failed: {failures:?}");
    assert!(
        during > 0,
        "the steady host made no progress during the flood"
    );

    // Every refusal is recorded: one by one, and the flood as summaries.
    let audit = audit_log(&lab, &server);
    for why in [
        "TLS handshake: ",
        "not finished within 2 s",
        "recorded as this one summary",
    ] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("connection-refused") && l.contains(why)),
            "no refusal {why:?} in:\n{audit}"
        );
    }
    let log = server.log_text();
    assert!(log.contains("oversized frame"), "{log}");
    assert!(server.stop().success());
}

/// The server's certificate and key are replaced on disk and served from the next
/// handshakes on (clients pinning old and new keep working through the change, a client
/// pinning only the old key is refused); a host's certificate is replaced by the HSM SO
/// (`client rekey`), cutting the old key's connections. The server runs throughout.
#[test]
fn certificates_rotate_without_restarting_the_server() {
    let lab = Lab::new();
    let (server, addr, old_fp) = tls_server(&lab, "");
    let pid = server.pid();
    let app = host(&lab, "app1");
    admit(&lab, &server, "app1", &app);
    let mut open = Remote::connect_tls(&addr, &tls_client(&app, &old_fp)).unwrap();
    assert!(open.summary().is_ok());

    // The server's new pair, put in place of the old files (key first, then certificate).
    let next = host(&lab, "ferrohsm-next");
    let new_fp = String::from_utf8(
        lab.cli()
            .args(["client", "fingerprint", "--cert"])
            .arg(&next.cert)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert_ne!(new_fp, old_fp);
    for (from, to) in [
        (&next.key, "tls-server.key"),
        (&next.cert, "tls-server.crt"),
    ] {
        let staged = lab.data().join(format!("{to}.new"));
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, lab.data().join(to)).unwrap();
    }
    let both = format!("{old_fp},{new_fp}");
    // Within a few seconds the new key is served: a client pinning only the old one is
    // refused; one pinning both, or the new one, gets in.
    let t = Instant::now();
    loop {
        match Remote::connect_tls(&addr, &tls_client(&app, &old_fp)).and_then(|mut r| r.summary()) {
            Err(e) => {
                assert!(e.to_string().contains("TLS handshake"), "{e}");
                break;
            }
            Ok(_) => assert!(
                t.elapsed() < Duration::from_secs(5),
                "the old key is still served"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for pin in [&both, &new_fp] {
        let mut r = Remote::connect_tls(&addr, &tls_client(&app, pin)).unwrap();
        assert!(r.summary().is_ok());
    }
    assert!(
        open.summary().is_ok(),
        "an open connection is not disturbed"
    );

    // The host's certificate: a new key, registered in place of the old by the HSM SO.
    let renewed = host(&lab, "app1-renewed");
    so(
        &lab,
        &server,
        &[
            "client",
            "rekey",
            "--client",
            "app1",
            "--cert",
            &renewed.cert.display().to_string(),
        ],
    );
    std::thread::sleep(Duration::from_millis(1000));
    // The old key's connection was cut, and it cannot connect again.
    assert!(
        open.summary().is_err(),
        "the old key's connection still works"
    );
    let out = as_host(&lab, &app, &addr, &both, &["partition", "list"]);
    assert!(!out.status.success(), "the old key still gets in");
    // The new one has the host's partitions.
    let out = as_host(&lab, &renewed, &addr, &both, &["partition", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("app"));
    assert_eq!(server.pid(), pid, "the server was not restarted");
    let log = server.log_text();
    assert!(log.contains("serving the new ones"), "{log}");
    assert!(server.stop().success());
}

/// Writes a CA (`name-ca.crt`) and, signed by it, a server certificate for 127.0.0.1
/// (`name-server.crt`, `name-server.key`) in `dir`.
fn ca_and_server(dir: &Path, name: &str) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .unwrap();
    std::fs::write(dir.join(format!("{name}-ca.crt")), ca_cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-server.crt")), leaf.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}-server.key")),
        leaf_key.serialize_pem(),
    )
    .unwrap();
}

/// Hosts may trust the server by a CA instead of a pinned key: the server's certificate must
/// chain to that CA and name the address connected to; another CA, or another name, is
/// refused.
#[test]
fn a_host_may_trust_the_server_by_its_ca() {
    let lab = Lab::new();
    let dir = lab.tmp.path();
    ca_and_server(dir, "corp");
    ca_and_server(dir, "other");
    let (server, addr, _fp) = tls_server(
        &lab,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            dir.join("corp-server.crt"),
            dir.join("corp-server.key")
        ),
    );
    let app = host(&lab, "app1");
    admit(&lab, &server, "app1", &app);
    let with_ca = |ca: &str, server_addr: &str| {
        lab.cli()
            .env_remove("FERROHSM_HOME")
            .args(["--server", &format!("tls://{server_addr}")])
            .arg("--tls-cert")
            .arg(&app.cert)
            .arg("--tls-key")
            .arg(&app.key)
            .arg("--server-ca")
            .arg(dir.join(format!("{ca}-ca.crt")))
            .args(["partition", "list"])
            .output()
            .unwrap()
    };
    let out = with_ca("corp", &addr);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("app"));
    // Another CA: refused before anything is sent.
    let out = with_ca("other", &addr);
    assert!(
        !out.status.success() && stderr(&out).contains("TLS handshake"),
        "{}",
        stderr(&out)
    );
    // The right CA, but a name the certificate does not carry.
    let port = addr.rsplit_once(':').unwrap().1;
    let out = with_ca("corp", &format!("localhost:{port}"));
    assert!(
        !out.status.success() && stderr(&out).contains("TLS handshake"),
        "{}",
        stderr(&out)
    );
    assert!(server.stop().success());
}
