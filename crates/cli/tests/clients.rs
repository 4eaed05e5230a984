//! `ferrohsm client …` through a running server: a host key made with `keygen`, its
//! fingerprint the same as OpenSSL computes, registered, assigned, listed and revoked by the
//! HSM SO.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use support::Lab;

fn run(lab: &Lab, socket: &std::path::Path, args: &[&str]) -> Output {
    lab.cli()
        .arg("--server")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn ok(lab: &Lab, socket: &std::path::Path, args: &[&str]) -> String {
    let out = run(lab, socket, args);
    assert!(
        out.status.success(),
        "ferrohsm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_host_key_is_made_registered_assigned_and_revoked() {
    let lab = Lab::new();
    let server = lab.start();
    let sock = server.socket.clone();
    let (key, cert) = (
        lab.tmp.path().join("app1.key"),
        lab.tmp.path().join("app1.crt"),
    );
    let (k, c) = (key.display().to_string(), cert.display().to_string());
    ok(
        &lab,
        &sock,
        &[
            "client", "keygen", "--name", "app1", "--key", &k, "--cert", &c,
        ],
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never over an existing key.
    assert!(!run(
        &lab,
        &sock,
        &["client", "keygen", "--name", "x", "--key", &k, "--cert", &c]
    )
    .status
    .success());
    let fp = ok(&lab, &sock, &["client", "fingerprint", "--cert", &c])
        .trim()
        .to_string();
    assert_eq!(fp.len(), 64);
    if support::have("openssl", "version") {
        // The same fingerprint as OpenSSL's: SHA-256 over the certificate's public key DER.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in {c} -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r"
            ))
            .output()
            .unwrap();
        let theirs = String::from_utf8_lossy(&out.stdout);
        assert!(theirs.starts_with(&fp), "ours {fp}, OpenSSL {theirs}");
    }

    fn with_so<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--password", "env:SO_PW"][..]].concat()
    }
    let out = ok(
        &lab,
        &sock,
        &with_so(&["client", "register", "--name", "app1", "--cert", &c]),
    );
    assert!(out.contains(&fp), "{out}");
    // The same key again is refused.
    assert!(!run(
        &lab,
        &sock,
        &with_so(&["client", "register", "--name", "app2", "--fingerprint", &fp])
    )
    .status
    .success());
    // A wrong HSM SO password is an authentication failure.
    let wrong = run(
        &lab,
        &sock,
        &[
            "client",
            "register",
            "--name",
            "app3",
            "--fingerprint",
            &"ab".repeat(32),
            "--password",
            "env:CO_PW",
        ],
    );
    assert_eq!(wrong.status.code(), Some(3));
    ok(
        &lab,
        &sock,
        &with_so(&["client", "assign", "--client", "app1", "--partition", "app"]),
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(&lab, &sock, &with_so(&["--json", "client", "list"]))).unwrap();
    assert_eq!(list[0]["name"], "app1");
    assert_eq!(list[0]["fingerprint"], fp.as_str());
    assert_eq!(list[0]["partitions"][0], "app");
    assert!(list[0]["revoked"].is_null());
    ok(
        &lab,
        &sock,
        &with_so(&["client", "revoke", "--client", "app1"]),
    );
    let listed = ok(&lab, &sock, &with_so(&["client", "list"]));
    assert!(listed.contains("REVOKED"), "{listed}");
    assert!(server.stop().success());
}

/// A local user the configuration does not name, registered by the HSM SO by its uid: its
/// connections are admitted, see only its assigned partition, and are refused once it is
/// revoked.
#[test]
fn a_local_user_registered_by_uid_reaches_only_its_partitions() {
    if !support::is_root() || !support::have("setpriv", "--version") {
        eprintln!("skipped: needs root and setpriv to connect as another user");
        return;
    }
    let lab = Lab::new();
    // Let others reach the socket file, so that only the server's checks stand in the way.
    for d in [lab.tmp.path().to_path_buf(), lab.run_dir()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let server = lab.start();
    let sock = server.socket.clone();
    let so = |args: &[&str]| ok(&lab, &sock, &[args, &["--password", "env:SO_PW"]].concat());
    so(&["partition", "create", "--label", "other"]);
    // As uid 65534 (nobody), through the socket.
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(support::bin())
            .arg("--server")
            .arg(&sock)
            .args(args)
            .env("CO_PW", support::CO_PW)
            .current_dir("/")
            .output()
            .unwrap()
    };
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let out = as_nobody(&["partition", "list"]);
    assert!(
        !out.status.success() && err(&out).contains("not allowed"),
        "{}",
        err(&out)
    );
    so(&["client", "register", "--name", "batch", "--uid", "65534"]);
    so(&[
        "client",
        "assign",
        "--client",
        "batch",
        "--partition",
        "app",
    ]);
    let out = as_nobody(&["partition", "list"]);
    assert!(out.status.success(), "{}", err(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("app") && !listed.contains("other"),
        "{listed}"
    );
    let co = ["--partition", "app", "--password", "env:CO_PW"];
    let out = as_nobody(
        &[
            &["key", "generate", "--type", "aes-256", "--label", "b"][..],
            &co,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", err(&out));
    let out = as_nobody(&[
        "key",
        "list",
        "--partition",
        "other",
        "--password",
        "env:CO_PW",
    ]);
    assert!(
        !out.status.success() && err(&out).contains("not assigned"),
        "{}",
        err(&out)
    );
    so(&["client", "revoke", "--client", "batch"]);
    let out = as_nobody(&["partition", "list"]);
    assert!(
        !out.status.success() && err(&out).contains("revoked"),
        "{}",
        err(&out)
    );
    assert!(server.stop().success());
}
