//! Every shell command the README shows runs as written, in the README's order: the operator's
//! path on PED keys, the server and its configuration, registered hosts over mutual TLS and an
//! enrollment, the PKCS#11 module's configuration, the audit log with a witness, and a zeroize
//! after which the Auditor still verifies the log. The runner
//! (`tests/support/readme_runner.py`) types a person's answers at a pseudo-terminal and says
//! exactly what it changes (absolute paths moved into a temporary root, the TLS port).

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn every_readme_command_runs_as_written() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = manifest.join("../../README.md");
    let runner = manifest.join("tests/support/readme_runner.py");
    let ferrohsm = PathBuf::from(env!("CARGO_BIN_EXE_ferrohsm"));
    let bindir = ferrohsm.parent().unwrap();
    let audit = assert_cmd::cargo::cargo_bin("ferrohsm-audit");
    assert!(
        audit.exists(),
        "{} is missing; build it (cargo build -p ferrohsm-audit, or cargo test --workspace)",
        audit.display()
    );
    assert_eq!(
        audit.parent(),
        Some(bindir),
        "ferrohsm and ferrohsm-audit in one directory"
    );
    // The newer of the module `cargo test` leaves in deps/ and the one `cargo build` installs.
    let module = [
        bindir.join("deps/libferrohsm_pkcs11.so"),
        bindir.join("libferrohsm_pkcs11.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
    .unwrap_or_default();
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(&runner)
        .arg(&readme)
        .arg(root.path())
        .arg(bindir)
        .arg(&module)
        .env_remove("CI")
        .output()
        .expect("python3 runs the README runner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "a README command failed as written:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The runner ran the commands (not, say, an empty README).
    let ran: usize = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("readme: ")?
                .strip_suffix(" commands ran as written")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ran >= 40, "only {ran} commands ran:\n{stdout}");
}
