//! Kill-between-steps tests of every PED imprint: the real binary dies (abort, as `kill -9`
//! would: no destructors) at each step of hsm init, partition init, role init,
//! change-secret, a reuse and a duplicate; afterwards a complete set of keys must log in (the
//! old one if the HSM never adopted the new secret, the new one if it did) and the other set
//! must not.
//!
//! The steps (`FERROHSM_TEST_CRASH_AT`, debug builds only): `imprint-staged-file` (a new key
//! written under its temporary name, before the operation), `imprint-committed` (the HSM has
//! committed, no file is in place yet), `imprint-renaming` (some files in place, not all),
//! `duplicate-wrote` (a copy written, the next not yet).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Lab {
    tmp: tempfile::TempDir,
}

impl Lab {
    /// A PED-authenticated HSM (no PINs) with partition "app" and its Crypto Officer.
    fn ped_hsm(label: &str) -> Lab {
        let lab = Lab {
            tmp: tempfile::tempdir().unwrap(),
        };
        lab.ok(&[
            "hsm",
            "init",
            "--label",
            label,
            "--so-no-pin",
            "--domain-no-pin",
        ]);
        lab.ok(&["partition", "create", "--label", "app"]);
        lab.ok(&["partition", "init", "--partition", "app", "--so-no-pin"]);
        lab.ok(&[
            "role",
            "init",
            "--partition",
            "app",
            "--role",
            "co",
            "--new-no-pin",
        ]);
        lab
    }

    fn peds(&self) -> PathBuf {
        self.tmp.path().join("peds")
    }

    fn cmd(&self, args: &[&str], crash_at: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferrohsm"));
        c.args(args)
            .env("FERROHSM_HOME", self.tmp.path().join("data"))
            .env("FERROHSM_PED_DIR", self.peds())
            .env_remove("CI")
            .env_remove("FERROHSM_SERVER")
            .current_dir(self.tmp.path());
        if let Some(at) = crash_at {
            c.env("FERROHSM_TEST_CRASH_AT", at);
        }
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args, None);
        assert!(
            out.status.success(),
            "ferrohsm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The PED key files whose names contain `part` (no temporaries), sorted.
    fn keys(&self, part: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.peds())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.contains(part) && n.ends_with(".pedkey") && !n.contains(".copy")
            })
            .collect();
        v.sort();
        v
    }

    fn pending(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.peds())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".pending"))
            .collect()
    }
}

fn contents(files: &[PathBuf]) -> Vec<Vec<u8>> {
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Saves copies of key files (to present the old set after it was replaced).
fn save(files: &[PathBuf], to: &Path, tag: &str) -> Vec<PathBuf> {
    std::fs::create_dir_all(to).unwrap();
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = to.join(format!("{tag}-{i}.pedkey"));
            std::fs::copy(f, &p).unwrap();
            p
        })
        .collect()
}

fn with_keys(args: &[&str], keys: &[PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    for k in keys {
        v.push("--key".into());
        v.push(k.display().to_string());
    }
    v
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One imprint, killed at `point`: checks what must hold afterwards. `login` logs the
/// imprinted role in (extra `--key` flags are appended to present a given set).
fn kill_and_check(
    lab: &Lab,
    name: &str,
    imprint: &[&str],
    point: &str,
    part: &str,
    login: &[&str],
) {
    let before = lab.keys(part);
    let old = save(
        &before,
        &lab.tmp.path().join("saved"),
        &format!("{name}-{point}"),
    );
    let out = lab.cmd(imprint, Some(point));
    assert!(
        out.status.code().is_none(),
        "{name}: the process was to die at {point}, but exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The next command that logs in with the default keys settles whatever was left, and
    // logs in: some complete set works.
    let after_login = lab.cmd(login, None);
    assert!(
        after_login.status.success(),
        "{name} killed at {point}: no complete set of keys logs in: {}",
        String::from_utf8_lossy(&after_login.stderr)
    );
    let after = lab.keys(part);
    let adopted = contents(&after) != contents(&old);
    match point {
        "imprint-staged-file" => assert!(
            !adopted,
            "{name}: killed before the operation, the old keys must stay in place"
        ),
        _ => assert!(
            adopted,
            "{name}: killed after the commit at {point}, the new keys must be put in place"
        ),
    }
    if adopted && !old.is_empty() {
        // The set it replaced no longer logs in.
        let stale = lab.cmd(&refs(&with_keys(login, &old)), None);
        assert_eq!(
            stale.status.code(),
            Some(3),
            "{name} at {point}: the replaced keys still log in"
        );
        // And no file of the adopted set waits under a temporary name.
        assert!(lab.pending().is_empty(), "{:?}", lab.pending());
    }
}

#[test]
fn every_imprint_killed_between_steps_leaves_a_set_that_logs_in() {
    let lab = Lab::ped_hsm("crash");
    lab.ok(&[
        "role",
        "init",
        "--partition",
        "app",
        "--role",
        "cu",
        "--new-no-pin",
    ]);
    let co_login = ["key", "list", "--partition", "app"];
    let cu_login = ["key", "list", "--partition", "app", "--as", "cu"];

    // change-secret of the Crypto Officer: one new key.
    for point in ["imprint-staged-file", "imprint-committed"] {
        kill_and_check(
            &lab,
            "change-secret",
            &[
                "role",
                "change-secret",
                "--partition",
                "app",
                "--role",
                "co",
                "--new-no-pin",
                "--overwrite",
            ],
            point,
            "-app-co-",
            &co_login,
        );
    }

    // role init of the Crypto User, 2 of 2: two new keys, so a kill can fall between renames.
    for point in [
        "imprint-staged-file",
        "imprint-committed",
        "imprint-renaming",
    ] {
        kill_and_check(
            &lab,
            "role-init",
            &[
                "role",
                "init",
                "--partition",
                "app",
                "--role",
                "cu",
                "--new-m",
                "2",
                "--new-n",
                "2",
                "--new-no-pin",
                "--overwrite",
            ],
            point,
            "-app-cu-",
            &cu_login,
        );
        // Each run left a 2-of-2 set or the old one; settle on one key again for the next.
        lab.ok(&[
            "role",
            "init",
            "--partition",
            "app",
            "--role",
            "cu",
            "--new-no-pin",
            "--overwrite",
        ]);
        for k in lab.keys("-app-cu-2") {
            std::fs::remove_file(k).unwrap();
        }
    }

    // partition init (re-initialisation) with a new cloning domain: SO and red keys.
    let pso_login = [
        "partition",
        "policy",
        "set",
        "--partition",
        "app",
        "activation",
        "off",
    ];
    for point in [
        "imprint-staged-file",
        "imprint-committed",
        "imprint-renaming",
    ] {
        kill_and_check(
            &lab,
            "partition-init",
            &[
                "partition",
                "init",
                "--partition",
                "app",
                "--so-no-pin",
                "--domain",
                "new",
                "--domain-no-pin",
                "--confirm-destroy",
                "--overwrite",
            ],
            point,
            "-app-so-",
            &pso_login,
        );
    }

    // The re-initialisations took the partition's roles; make them again.
    for role in ["co", "cu"] {
        lab.ok(&[
            "role",
            "init",
            "--partition",
            "app",
            "--role",
            role,
            "--new-no-pin",
            "--overwrite",
        ]);
    }

    // A reuse with a copy: the partition's SO reuses the HSM SO's blue key and writes a
    // duplicate of it (the only new file).
    let hso = lab.keys("-hsm-so-");
    let hso_s = hso[0].display().to_string();
    lab.ok(&["partition", "create", "--label", "reuse"]);
    for point in ["imprint-staged-file", "imprint-committed"] {
        let out = lab.cmd(
            &[
                "partition",
                "init",
                "--partition",
                "reuse",
                "--so-reuse",
                "--so-key",
                &hso_s,
                "--duplicates",
                "1",
                "--overwrite",
                "--confirm-destroy",
            ],
            Some(point),
        );
        assert!(out.status.code().is_none(), "reuse: not killed at {point}");
        let login = lab.cmd(
            &[
                "partition",
                "policy",
                "set",
                "--partition",
                "reuse",
                "activation",
                "off",
                "--key",
                &hso_s,
            ],
            None,
        );
        let copy = lab.peds().join(
            hso[0]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".pedkey", ".copy1.pedkey"),
        );
        match point {
            // Never adopted: the partition has no SO yet. (The copy may be put in place: it
            // holds the HSM SO's secret, which the HSM uses, so it is a working blue key.)
            "imprint-staged-file" => assert!(!login.status.success()),
            // Adopted: the reused key logs in, and so does its copy, now in place.
            _ => {
                assert!(
                    login.status.success(),
                    "{}",
                    String::from_utf8_lossy(&login.stderr)
                );
                assert!(copy.exists(), "the copy was not put in place");
                let c = copy.display().to_string();
                lab.ok(&[
                    "partition",
                    "policy",
                    "set",
                    "--partition",
                    "reuse",
                    "activation",
                    "off",
                    "--key",
                    &c,
                ]);
            }
        }
    }

    // ped duplicate (two sources, two copies): killed after the first copy, the original and
    // that copy both log in; the second copy is not half-written.
    let co = lab.keys("-app-co-");
    let cu = lab.keys("-app-cu-");
    let cu_s = cu[0].display().to_string();
    let c1 = lab.tmp.path().join("dup-1.pedkey");
    let c2 = lab.tmp.path().join("dup-2.pedkey");
    let (co_s, c1_s, c2_s) = (
        co[0].display().to_string(),
        c1.display().to_string(),
        c2.display().to_string(),
    );
    let out = lab.cmd(
        &[
            "ped",
            "duplicate",
            "--from",
            &co_s,
            "--from",
            &cu_s,
            "--to",
            &c1_s,
            "--to",
            &c2_s,
        ],
        Some("duplicate-wrote"),
    );
    assert!(out.status.code().is_none(), "duplicate: not killed");
    assert!(c1.exists() && !c2.exists());
    for k in [&co_s, &c1_s] {
        lab.ok(&["key", "list", "--partition", "app", "--key", k]);
    }

    // hsm init (re-initialisation): the HSM SO's and the domain's new keys.
    for (i, point) in [
        "imprint-staged-file",
        "imprint-committed",
        "imprint-renaming",
    ]
    .into_iter()
    .enumerate()
    {
        let label = format!("check{i}");
        let list: serde_json::Value =
            serde_json::from_str(&lab.ok(&["--json", "partition", "list"])).unwrap();
        let existing: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["label"].as_str().unwrap())
            .collect();
        kill_and_check(
            &lab,
            "hsm-init",
            &[
                "hsm",
                "init",
                "--label",
                "crash",
                "--so-no-pin",
                "--domain-no-pin",
                "--overwrite",
                "--confirm-destroy",
                &existing.join(","),
            ],
            point,
            "-hsm-so-",
            &["partition", "create", "--label", &label],
        );
    }
}

#[test]
fn a_refused_imprint_leaves_no_files() {
    let lab = Lab::ped_hsm("refuse");
    let co = lab.keys("-app-co-");
    let co_s = co[0].display().to_string();
    let so_before = contents(&lab.keys("-hsm-so-"));

    // A black key given as the domain key: refused after the SO's new keys were staged; they
    // are removed, the SO's key files are untouched and still log in.
    let out = lab.cmd(
        &[
            "hsm",
            "init",
            "--label",
            "refuse",
            "--so-no-pin",
            "--domain-reuse",
            "--domain-key",
            &co_s,
            "--overwrite",
            "--confirm-destroy",
            "app",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("red") || err.contains("domain"), "{err}");
    assert!(lab.pending().is_empty(), "{:?}", lab.pending());
    assert_eq!(contents(&lab.keys("-hsm-so-")), so_before);
    lab.ok(&["partition", "create", "--label", "still-so"]);

    // A wrong current SO (a black key) refuses the re-initialisation itself: nothing written.
    let out = lab.cmd(
        &[
            "hsm",
            "init",
            "--label",
            "refuse",
            "--so-no-pin",
            "--domain-no-pin",
            "--overwrite",
            "--confirm-destroy",
            "app,still-so",
            "--key",
            &co_s,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(lab.pending().is_empty(), "{:?}", lab.pending());
    assert_eq!(contents(&lab.keys("-hsm-so-")), so_before);
    lab.ok(&["partition", "create", "--label", "still-so-2"]);
}
