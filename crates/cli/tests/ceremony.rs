//! A whole PED ceremony through a running server: the HSM SO's keys split 2 of 3 with a PED
//! PIN, a partition, its Partition SO and Crypto Officer, activation, a key, the Auditor —
//! every imprint made inside the server and its key files written by the operator's command.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{Lab, Server};

const SO_PIN: &str = "481516";
const CHALLENGE: &str = "co-challenge-words";

/// A server over a directory with no HSM in it yet.
fn empty_lab() -> (Lab, Server) {
    let lab = Lab {
        tmp: tempfile::tempdir().unwrap(),
        words: "domain-words-1".into(),
    };
    std::fs::create_dir_all(lab.run_dir()).unwrap();
    let server = lab.start();
    (lab, server)
}

fn run(lab: &Lab, server: &Server, args: &[&str]) -> Output {
    lab.cli()
        .env_remove("FERROHSM_HOME")
        .arg("--server")
        .arg(&server.socket)
        .env("SO_PIN", SO_PIN)
        .env("WRONG_PIN", "000000")
        .env("CHALLENGE", CHALLENGE)
        .args(args)
        .output()
        .unwrap()
}

fn ok(lab: &Lab, server: &Server, args: &[&str]) -> String {
    let out = run(lab, server, args);
    assert!(
        out.status.success(),
        "ferrohsm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn peds(lab: &Lab) -> PathBuf {
    lab.tmp.path().join("peds")
}

/// The key files in the PED directory whose names contain `what`.
fn keys(lab: &Lab, what: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(peds(lab))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(what))
        .collect();
    v.sort();
    v
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_ped_ceremony_runs_through_the_server_and_the_keys_land_with_the_operator() {
    let (lab, server) = empty_lab();
    ok(
        &lab,
        &server,
        &[
            "hsm",
            "init",
            "--label",
            "vault",
            "--auth",
            "ped",
            "--so-m",
            "2",
            "--so-n",
            "3",
            "--so-pin",
            "env:SO_PIN",
            "--domain-no-pin",
        ],
    );
    // The server made the secrets; the command wrote the keys, owner-only.
    let so = keys(&lab, "-hsm-so-");
    assert_eq!(so.len(), 3);
    assert_eq!(keys(&lab, "-domain-").len(), 1);
    for k in so.iter().chain(&keys(&lab, "-domain-")) {
        let mode = std::fs::metadata(k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", k.display());
    }
    let shown = ok(&lab, &server, &["ped", "show", &s(&so[0]), &s(&so[2])]);
    assert!(
        shown.contains("blue") && shown.contains("(2 needed)") && shown.contains("PIN protected"),
        "{shown}"
    );
    assert!(ok(&lab, &server, &["hsm", "show"]).contains("PED 2 of 3 with PED PIN"));

    // Any two blue keys and the PIN are the HSM SO; a wrong PIN is refused and changes nothing.
    let wrong = run(
        &lab,
        &server,
        &[
            "partition",
            "create",
            "--label",
            "app",
            "--key",
            &s(&so[0]),
            "--key",
            &s(&so[2]),
            "--pin",
            "env:WRONG_PIN",
        ],
    );
    assert_eq!(
        wrong.status.code(),
        Some(3),
        "a wrong PED PIN is an authentication failure"
    );
    assert!(ok(&lab, &server, &["partition", "list"]).contains("no partitions"));
    ok(
        &lab,
        &server,
        &[
            "partition",
            "create",
            "--label",
            "app",
            "--key",
            &s(&so[0]),
            "--key",
            &s(&so[2]),
            "--pin",
            "env:SO_PIN",
        ],
    );
    ok(
        &lab,
        &server,
        &["partition", "init", "--partition", "app", "--so-no-pin"],
    );
    ok(
        &lab,
        &server,
        &[
            "role",
            "init",
            "--partition",
            "app",
            "--role",
            "co",
            "--new-no-pin",
        ],
    );
    let co = keys(&lab, "-app-co-");
    assert_eq!(co.len(), 1);
    ok(
        &lab,
        &server,
        &[
            "partition",
            "policy",
            "set",
            "--partition",
            "app",
            "activation",
            "on",
        ],
    );
    ok(
        &lab,
        &server,
        &[
            "role",
            "activate",
            "--partition",
            "app",
            "--role",
            "co",
            "--set-challenge",
            "env:CHALLENGE",
        ],
    );
    ok(
        &lab,
        &server,
        &[
            "key",
            "generate",
            "--partition",
            "app",
            "--type",
            "ec-p256",
            "--label",
            "signer",
            "--challenge",
            "env:CHALLENGE",
        ],
    );

    // An imprint never writes over a key that holds a secret unless told to: refused before
    // anything is asked of the HSM, the Crypto Officer's key untouched, no Crypto User made.
    let before = std::fs::read(&co[0]).unwrap();
    let refused = run(
        &lab,
        &server,
        &[
            "role",
            "init",
            "--partition",
            "app",
            "--role",
            "cu",
            "--new-key",
            &s(&co[0]),
            "--new-no-pin",
            "--challenge",
            "env:CHALLENGE",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--overwrite"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(std::fs::read(&co[0]).unwrap(), before);
    let roles = ok(&lab, &server, &["role", "show", "--partition", "app"]);
    assert!(!roles.contains("Crypto User"), "{roles}");

    // The Auditor too (white key), and its configuration through the server.
    ok(
        &lab,
        &server,
        &["audit", "init", "--auth", "ped", "--new-no-pin"],
    );
    assert_eq!(keys(&lab, "-auditor-").len(), 1);
    let config = ok(&lab, &server, &["audit", "config", "show"]);
    assert!(config.contains("key-use auditing"), "{config}");
    let log = ok(&lab, &server, &["audit", "show"]);
    for event in [
        "hsm-init",
        "partition-create",
        "role-init",
        "activate",
        "key-generate",
    ] {
        assert!(log.contains(event), "no {event} in the log:\n{log}");
    }

    // No secret reached the server's log.
    let server_log = std::fs::read_to_string(lab.tmp.path().join("server.log")).unwrap();
    for secret in [SO_PIN, CHALLENGE] {
        assert!(!server_log.contains(secret), "the server logged a secret");
    }
    assert!(server.stop().success());
}
