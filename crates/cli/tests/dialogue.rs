//! The PED dialogue at a terminal, driven through a pseudo-terminal as a person types: a PIN
//! typed where a yes/no was asked is not taken for "no", a word where a number was asked is
//! asked again, a new PED PIN is typed twice and a mismatch is asked again — and the PIN that
//! works afterwards is the one intended, not the typo.

use std::path::Path;
use std::process::Command;

/// Runs `ferrohsm args` under a pseudo-terminal with `script` ([prompt, answer] pairs);
/// returns (success, transcript), or None where python3 is missing.
fn dialogue(dir: &Path, script: &str, args: &[&str]) -> Option<(bool, String)> {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 is missing: the terminal dialogue test is skipped");
        return None;
    }
    let script_file = dir.join("script.json");
    std::fs::write(&script_file, script).unwrap();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pty_dialogue.py");
    let out = Command::new("python3")
        .arg(driver)
        .arg(&script_file)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_ferrohsm"))
        .args(args)
        .env("FERROHSM_HOME", dir.join("data"))
        .env("FERROHSM_PED_DIR", dir.join("peds"))
        .env_remove("CI")
        .current_dir(dir)
        .output()
        .unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    ))
}

#[test]
fn typos_early_pins_and_words_for_numbers_are_asked_again_at_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"[
        ["reuse an existing HSM SO key? [no]: ", "135790"],
        ["answer yes or no", null],
        ["reuse an existing HSM SO key? [no]: ", ""],
        ["M (keys needed to rebuild the HSM SO) [1]: ", "xyz"],
        ["is not a number from 1 to 16", null],
        ["[1]: ", "1"],
        ["N (keys to make) [1]: ", ""],
        ["with a PED PIN? [no]: ", "yes"],
        ["new PED PIN: ", "135790"],
        ["confirm: ", "135791"],
        ["differ", null],
        ["new PED PIN: ", "135790"],
        ["confirm: ", "135790"],
        ["reuse an existing HSM cloning domain key? [no]: ", "no"],
        ["[1]: ", ""],
        ["[1]: ", ""],
        ["with a PED PIN? [no]: ", "no"]
    ]"#;
    let Some((ok, transcript)) = dialogue(tmp.path(), script, &["hsm", "init", "--label", "t"])
    else {
        return;
    };
    assert!(ok, "{transcript}");
    assert!(transcript.contains("initialised"), "{transcript}");
    // The intended PIN logs the HSM SO in; the typo does not.
    let run = |pin: &str, label: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferrohsm"))
            .args(["partition", "create", "--label", label, "--pin", "env:P"])
            .env("P", pin)
            .env("FERROHSM_HOME", tmp.path().join("data"))
            .env("FERROHSM_PED_DIR", tmp.path().join("peds"))
            .env_remove("CI")
            .output()
            .unwrap()
    };
    assert!(run("135790", "x").status.success());
    let typo = run("135791", "y");
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("authentication failed"));
}
