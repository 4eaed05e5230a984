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

fn tls_client(h: &Host, fp: &str) -> TlsClient {
    TlsClient {
        cert: h.cert.clone(),
        key: h.key.clone(),
        server_fingerprint: fp.into(),
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
    so(
        &lab,
        &server,
        &[
            "client",
            "register",
            "--name",
            "app1",
            "--cert",
            &a.cert.display().to_string(),
        ],
    );
    so(
        &lab,
        &server,
        &["client", "assign", "--client", "app1", "--partition", "app"],
    );

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
