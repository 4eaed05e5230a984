//! Crash test: kill the real binary at arbitrary points while it writes. Nothing acknowledged
//! may be lost, the store must open clean, the audit log must verify, and state and log must
//! agree exactly (they commit in one transaction).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrohsm"))
}

#[test]
fn killed_writers_lose_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let peds = tmp.path().join("peds");
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .env("FERROHSM_HOME", &data)
            .env("FERROHSM_PED_DIR", &peds)
            .env_remove("CI")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["audit", "init"]);
    run(&["hsm", "init", "--label", "crash"]);

    // Size the kill window from how long one write takes on this machine, so that kills land
    // before, during and after the commit whatever the machine's speed.
    let t0 = std::time::Instant::now();
    run(&["hsm", "restart"]);
    let window = (t0.elapsed().as_micros() as u64 * 2).max(1_000);
    let mut acknowledged = 1u64;
    let mut killed = 0u64;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..60 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % window);
        let mut child = bin()
            .args(["hsm", "restart"])
            .env("FERROHSM_HOME", &data)
            .env("FERROHSM_PED_DIR", &peds)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL: no destructors, no flushing
        let status = child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        if out.contains("restarted (boot") {
            acknowledged += 1;
        } else if !status.success() {
            killed += 1;
        }
    }
    assert!(
        killed > 0 && acknowledged > 0,
        "kills {killed}, acknowledged {acknowledged}: the test must see both"
    );

    // The store opens clean and verifies.
    let show: serde_json::Value = serde_json::from_str(&run(&["--json", "hsm", "show"])).unwrap();
    let restarts_in_state = show["boot_epoch"].as_u64().unwrap() - 1;
    run(&["audit", "verify"]);
    let recs: serde_json::Value =
        serde_json::from_str(&run(&["--json", "audit", "show", "--event", "restart"])).unwrap();
    let restarts_in_log = recs.as_array().unwrap().len() as u64;
    assert!(
        restarts_in_state >= acknowledged,
        "acknowledged {acknowledged}, state shows {restarts_in_state}"
    );
    assert_eq!(
        restarts_in_state, restarts_in_log,
        "state and audit log disagree"
    );
    eprintln!(
        "crash test: {acknowledged} acknowledged, {killed} killed, {restarts_in_state} committed"
    );
}
