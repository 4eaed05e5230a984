//! The Auditor asks the HSM whether its log extends a checkpoint kept outside it: after an
//! older copy of the whole data directory is put back (its own log, shorter but consistent),
//! `audit verify --earlier` fails as tamper, and the HSM records and shows it.

use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrohsm"))
        .args(args)
        .env("FERROHSM_HOME", dir.join("data"))
        .env("FERROHSM_PED_DIR", dir.join("peds"))
        .env("AUD", "auditor-password-1")
        .env("SO", "so-password-1")
        .env("DOM", "domain-words-1")
        .env_remove("CI")
        .env_remove("FERROHSM_SERVER")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn the_auditor_catches_a_data_directory_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let aud = ["--password", "env:AUD"];
    ok(
        d,
        &[
            "audit",
            "init",
            "--auth",
            "password",
            "--new-password",
            "env:AUD",
        ],
    );
    ok(
        d,
        &[
            "hsm",
            "init",
            "--label",
            "rb",
            "--auth",
            "password",
            "--so-password",
            "env:SO",
            "--domain-password",
            "env:DOM",
        ],
    );
    // A copy of the directory as it is now.
    copy_dir(&d.join("data"), &d.join("old"));
    // More happens, and the Auditor keeps the checkpoint outside the HSM.
    ok(
        d,
        &[
            "partition",
            "create",
            "--label",
            "later",
            "--password",
            "env:SO",
        ],
    );
    let cp = d.join("kept.checkpoint");
    let cp_s = cp.display().to_string();
    ok(
        d,
        &[&["audit", "checkpoint", "--out", &cp_s][..], &aud[..]].concat(),
    );
    let fine = ok(
        d,
        &[&["audit", "verify", "--earlier", &cp_s][..], &aud[..]].concat(),
    );
    assert!(fine.contains("the log extends the checkpoint"), "{fine}");

    // The older copy put back: consistent in itself, shorter than what the Auditor saw.
    std::fs::remove_dir_all(d.join("data")).unwrap();
    copy_dir(&d.join("old"), &d.join("data"));
    let plain = run(d, &[&["audit", "verify"][..], &aud[..]].concat());
    assert!(plain.status.success(), "the copy verifies on its own");
    let caught = run(
        d,
        &[&["audit", "verify", "--earlier", &cp_s][..], &aud[..]].concat(),
    );
    assert_eq!(caught.status.code(), Some(5), "{caught:?}");
    let e = String::from_utf8_lossy(&caught.stderr);
    assert!(e.contains("rollback"), "{e}");
    // Recorded: `hsm show` reports the tamper.
    let show = ok(d, &["--json", "hsm", "show"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert!(
        v["tamper"].as_str().is_some_and(|t| t.contains("rollback")),
        "{show}"
    );
}
