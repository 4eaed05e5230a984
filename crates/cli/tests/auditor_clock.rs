//! The Auditor's timed lockout against someone who controls the machine's clock: setting it
//! back, during a lockout or before failing on purpose, never shortens the lockout. (Debug
//! builds move their clock by `FERROHSM_TEST_CLOCK_OFFSET` seconds, as such a person would.)

use std::process::{Command, Output};

const AUDITOR_PW: &str = "auditor-password-1";

fn run(dir: &std::path::Path, args: &[&str], offset: i64) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrohsm"))
        .args(args)
        .env("FERROHSM_HOME", dir.join("data"))
        .env("FERROHSM_PED_DIR", dir.join("peds"))
        .env("RIGHT", AUDITOR_PW)
        .env("WRONG", "not-the-password")
        .env("FERROHSM_TEST_CLOCK_OFFSET", offset.to_string())
        .env_remove("CI")
        .env_remove("FERROHSM_SERVER")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn show(dir: &std::path::Path, pw: &str, offset: i64) -> Output {
    run(dir, &["audit", "show", "--password", pw], offset)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn new_auditor() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        tmp.path(),
        &[
            "audit",
            "init",
            "--auth",
            "password",
            "--new-password",
            "env:RIGHT",
        ],
        0,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(show(tmp.path(), "env:RIGHT", 0).status.success());
    tmp
}

fn lock_out(dir: &std::path::Path, offset: i64) {
    for _ in 0..3 {
        let o = show(dir, "env:WRONG", offset);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    }
    let o = show(dir, "env:RIGHT", offset);
    assert!(stderr(&o).contains("locked out"), "{}", stderr(&o));
}

#[test]
fn setting_the_clock_back_during_a_lockout_does_not_end_it() {
    let tmp = new_auditor();
    lock_out(tmp.path(), 0);
    // An hour back: still locked, and for no more than the lockout itself.
    let o = show(tmp.path(), "env:RIGHT", -3600);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("locked out for another"),
        "{e}"
    );
    let secs: u64 = e
        .split("another ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(secs <= 600, "{e}");
    // Once the lockout's time has passed, the right password works again.
    let o = show(tmp.path(), "env:RIGHT", 601);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn failing_with_the_clock_set_back_does_not_make_a_lockout_that_is_already_over() {
    let tmp = new_auditor();
    // The clock an hour back while failing: without a floor under the clock, the lockout
    // would end 50 minutes before the real now.
    lock_out(tmp.path(), -3600);
    let o = show(tmp.path(), "env:RIGHT", 0);
    assert!(
        !o.status.success() && stderr(&o).contains("locked out"),
        "the clock put right again ended the lockout: {}",
        stderr(&o)
    );
}
