//! The standalone verifier binary, on exports made by a real engine.

use assert_cmd::Command;
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::{Credential, Hsm, NewSecret, Role};
use predicates::prelude::*;

fn export(dir: &std::path::Path) -> (String, String) {
    let mut hsm = Hsm::open_or_create(&dir.join("data")).unwrap();
    let key = dir.join("aud.pedkey");
    hsm.audit_init(
        NewSecret::Ped(&mut LocalPed::new(PedAnswers {
            keys: vec![key.clone()],
            ..Default::default()
        })),
        None,
    )
    .unwrap();
    let s = hsm
        .login(
            Role::Auditor,
            None,
            Credential::Ped(&mut LocalPed::new(PedAnswers {
                keys: vec![key],
                ..Default::default()
            })),
        )
        .unwrap();
    let ex = hsm.audit_export(&s, 1, &[2]).unwrap();
    (
        String::from_utf8(ex.to_bytes()).unwrap(),
        hsm.audit_public_key().unwrap(),
    )
}

#[test]
fn verifier_binary_accepts_intact_and_names_the_first_bad_record() {
    let d = tempfile::tempdir().unwrap();
    let (ex, vkey) = export(d.path());
    std::fs::write(d.path().join("ex.json"), &ex).unwrap();
    std::fs::write(d.path().join("hsm.vkey"), &vkey).unwrap();
    let cmd = || {
        let mut c = Command::cargo_bin("ferrohsm-audit").unwrap();
        c.current_dir(d.path());
        c
    };
    cmd()
        .args([
            "verify",
            "ex.json",
            "--public-key",
            "hsm.vkey",
            "--prove",
            "1",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("record #1 is included").and(predicate::str::contains(
                "extends the earlier checkpoint of size 2",
            )),
        );
    // Without a pinned key it still verifies integrity, and says so.
    cmd()
        .args(["verify", "ex.json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("pin it with --public-key"));
    // Truncated export file: usage error 2 with a clear message.
    std::fs::write(d.path().join("cut.json"), &ex[..ex.len() / 2]).unwrap();
    cmd()
        .args(["verify", "cut.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("damaged or truncated"));
    // A record removed from the JSON: exit 1, naming it.
    let mut v: serde_json::Value = serde_json::from_str(&ex).unwrap();
    v["records"].as_array_mut().unwrap().remove(1);
    std::fs::write(d.path().join("del.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    cmd()
        .args(["verify", "del.json", "--public-key", "hsm.vkey"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("record #2: missing"));
    // Witness keygen and cosign, then required cosignatures.
    let out = cmd()
        .args(["witness", "keygen", "--name", "w1", "--out", "w1.key"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    std::fs::write(d.path().join("w1.vkey"), out).unwrap();
    cmd()
        .args([
            "verify",
            "ex.json",
            "--witness",
            "w1.vkey",
            "--require-cosignatures",
            "1",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("witness"));
    let cp = v["checkpoint"].as_str().unwrap().to_string();
    std::fs::write(d.path().join("cp.txt"), cp).unwrap();
    cmd()
        .args([
            "witness",
            "cosign",
            "--key",
            "w1.key",
            "--checkpoint",
            "cp.txt",
            "--public-key",
            "hsm.vkey",
        ])
        .assert()
        .success();
    let mut v2: serde_json::Value = serde_json::from_str(&ex).unwrap();
    v2["checkpoint"] =
        serde_json::Value::String(std::fs::read_to_string(d.path().join("cp.txt")).unwrap());
    std::fs::write(
        d.path().join("cosigned.json"),
        serde_json::to_vec(&v2).unwrap(),
    )
    .unwrap();
    cmd()
        .args([
            "verify",
            "cosigned.json",
            "--public-key",
            "hsm.vkey",
            "--witness",
            "w1.vkey",
            "--require-cosignatures",
            "1",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("cosigned by: w1"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(d.path().join("w1.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
