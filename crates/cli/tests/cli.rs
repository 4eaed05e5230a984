//! The `ferrohsm` command driven as an operator drives it: real binary, real files.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    fn peds(&self) -> PathBuf {
        self.tmp.path().join("peds")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("ferrohsm").unwrap();
        c.env("FERROHSM_HOME", self.data())
            .env("FERROHSM_PED_DIR", self.peds())
            .env("SO_PIN", "246810")
            .env("CH", "co-challenge-secret")
            .env("WRONG_PIN", "135790")
            .env_remove("CI")
            .current_dir(self.tmp.path());
        c
    }
    fn run(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        self.cmd().args(args).assert()
    }
    fn serial(&self) -> String {
        let out = self
            .run(&["--json", "hsm", "show"])
            .success()
            .get_output()
            .stdout
            .clone();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["serial"].as_str().unwrap().to_string()
    }
    fn key(&self, name: &str) -> String {
        self.peds()
            .join(format!("{}-{name}.pedkey", self.serial()))
            .display()
            .to_string()
    }
    fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// An HSM with SO 2 of 3 + PIN, partition "pay" initialised, activation on, CO activated.
fn ready() -> Env {
    let e = Env::new();
    e.run(&[
        "hsm",
        "init",
        "--label",
        "hsm1",
        "--so-m",
        "2",
        "--so-n",
        "3",
        "--so-pin",
        "env:SO_PIN",
    ])
    .success()
    .stdout(predicate::str::contains("initialised (PED-authenticated)"));
    let (k1, k3) = (e.key("hsm-so-1"), e.key("hsm-so-3"));
    e.run(&[
        "partition",
        "create",
        "--label",
        "pay",
        "--key",
        &k1,
        "--key",
        &k3,
        "--pin",
        "env:SO_PIN",
    ])
    .success();
    e.run(&["partition", "init", "--partition", "pay"])
        .success();
    e.run(&[
        "partition",
        "policy",
        "set",
        "--partition",
        "pay",
        "activation",
        "on",
    ])
    .success();
    e.run(&["role", "init", "--partition", "pay", "--role", "co"])
        .success();
    e.run(&[
        "role",
        "activate",
        "--partition",
        "pay",
        "--role",
        "co",
        "--set-challenge",
        "env:CH",
    ])
    .success();
    e
}

#[test]
fn operator_path_keys_sign_verify_encrypt_decrypt() {
    let e = ready();
    let co = ["--partition", "pay", "--challenge", "env:CH"];
    for (t, l) in [("ec-p256", "ec"), ("rsa-2048", "rsa"), ("aes-256", "aes")] {
        e.run(&[&["key", "generate", "--type", t, "--label", l][..], &co[..]].concat())
            .success();
    }
    let out = e
        .run(&[&["--json", "key", "list"][..], &co[..]].concat())
        .success()
        .get_output()
        .stdout
        .clone();
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 5);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["attrs"]["local"] == true));

    std::fs::write(e.file("msg"), b"hello").unwrap();
    std::fs::write(e.file("other"), b"hellO").unwrap();
    for l in ["ec", "rsa"] {
        let sig = e.file(&format!("{l}.sig")).display().to_string();
        e.run(
            &[
                &["key", "sign", "--label", l, "--in", "msg", "--out", &sig][..],
                &co[..],
            ]
            .concat(),
        )
        .success();
        e.run(
            &[
                &[
                    "key",
                    "verify",
                    "--label",
                    l,
                    "--in",
                    "msg",
                    "--signature",
                    &sig,
                ][..],
                &co[..],
            ]
            .concat(),
        )
        .success()
        .stdout(predicate::str::contains("signature valid"));
        e.run(
            &[
                &[
                    "key",
                    "verify",
                    "--label",
                    l,
                    "--in",
                    "other",
                    "--signature",
                    &sig,
                ][..],
                &co[..],
            ]
            .concat(),
        )
        .code(1)
        .stdout(predicate::str::contains("INVALID"));
    }
    e.run(
        &[
            &[
                "key", "encrypt", "--label", "aes", "--in", "msg", "--out", "ct", "--aad", "0102",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .success();
    e.run(
        &[
            &[
                "key", "decrypt", "--label", "aes", "--in", "ct", "--out", "pt", "--aad", "0102",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .success();
    assert_eq!(std::fs::read(e.file("pt")).unwrap(), b"hello");
    e.run(
        &[
            &[
                "key", "decrypt", "--label", "aes", "--in", "ct", "--out", "pt2", "--aad", "0103",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .code(1);
    e.run(
        &[
            &[
                "key", "encrypt", "--label", "rsa", "--in", "msg", "--out", "rct",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .success();
    e.run(
        &[
            &[
                "key", "decrypt", "--label", "rsa", "--in", "rct", "--out", "rpt",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .success();
    assert_eq!(std::fs::read(e.file("rpt")).unwrap(), b"hello");

    // The Crypto User: initialised by the CO, may use, may not create or delete.
    e.run(&[
        "role",
        "init",
        "--partition",
        "pay",
        "--role",
        "cu",
        "--challenge",
        "env:CH",
    ])
    .success();
    let cu = ["--partition", "pay", "--as", "cu"];
    e.run(
        &[
            &[
                "key", "sign", "--label", "ec", "--in", "msg", "--out", "cu.sig",
            ][..],
            &cu[..],
        ]
        .concat(),
    )
    .success();
    e.run(
        &[
            &["key", "generate", "--type", "aes-128", "--label", "x"][..],
            &cu[..],
        ]
        .concat(),
    )
    .code(4)
    .stderr(predicate::str::contains("needs the Crypto Officer"));
    e.run(&[&["key", "delete", "--label", "ec"][..], &cu[..]].concat())
        .code(4);
    e.run(&[&["key", "delete", "--label", "ec"][..], &co[..]].concat())
        .success();
    e.run(
        &[
            &[
                "key", "sign", "--label", "ec", "--in", "msg", "--out", "x.sig",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .code(6);
}

#[test]
fn key_generate_count_makes_a_numbered_batch_in_one_go() {
    let e = ready();
    let co = ["--partition", "pay", "--challenge", "env:CH"];
    e.run(
        &[
            &[
                "key", "generate", "--type", "aes-128", "--label", "card", "--count", "25",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .success()
    .stdout(predicate::str::contains(
        "generated 25 aes-128 keys card-00001",
    ));
    let out = e
        .run(&[&["--json", "key", "list"][..], &co[..]].concat())
        .success()
        .get_output()
        .stdout
        .clone();
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let labels: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["attrs"]["label"].as_str())
        .collect();
    assert_eq!(labels.len(), 25);
    assert!(labels.contains(&"card-00025"));
    // A second batch whose labels clash is refused whole.
    e.run(
        &[
            &[
                "key", "generate", "--type", "aes-128", "--label", "card", "--count", "2",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .failure();
    e.run(
        &[
            &[
                "key", "generate", "--type", "aes-128", "--label", "x", "--count", "0",
            ][..],
            &co[..],
        ]
        .concat(),
    )
    .failure();
}

#[test]
fn show_and_list_have_json_and_text() {
    let e = ready();
    let out = e
        .run(&["--json", "hsm", "show"])
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["state"], "initialised");
    assert_eq!(v["auth_mode"], "ped");
    assert_eq!(v["hsm_so"]["auth"], "PED 2 of 3 with PED PIN");
    assert_eq!(v["partitions"][0]["label"], "pay");
    assert_eq!(v["partitions"][0]["policy"]["activation"], "on");
    let co = v["partitions"][0]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "co")
        .unwrap()
        .clone();
    assert_eq!(co["activated"], true);
    e.run(&["hsm", "show"])
        .success()
        .stdout(predicate::str::contains("PED-authenticated"));
    let out = e
        .run(&["--json", "partition", "list"])
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["id"], 1);
    e.run(&[
        "--json",
        "partition",
        "policy",
        "show",
        "--partition",
        "pay",
    ])
    .success()
    .stdout(predicate::str::contains("\"m-of-n\": \"on\""));
    e.run(&["--json", "hsm", "policy", "show"])
        .success()
        .stdout(predicate::str::contains("failed-login-limit"));
    e.run(&["--json", "role", "show", "--partition", "pay"])
        .success()
        .stdout(predicate::str::contains("\"co\""));
}

#[test]
fn exit_codes_tell_failures_apart() {
    let e = ready();
    let (k1, k2) = (e.key("hsm-so-1"), e.key("hsm-so-2"));
    // Wrong colour: the red domain key for the HSM SO -> 3, naming both colours.
    e.run(&[
        "hsm",
        "policy",
        "set",
        "m-of-n",
        "off",
        "--key",
        &e.key("domain-1"),
    ])
    .code(3)
    .stderr(
        predicate::str::contains("red (cloning domain)")
            .and(predicate::str::contains("blue (security officer)")),
    );
    // Wrong PIN -> 3, with attempts left.
    e.run(&[
        "hsm",
        "policy",
        "set",
        "m-of-n",
        "off",
        "--key",
        &k1,
        "--key",
        &k2,
        "--pin",
        "env:WRONG_PIN",
    ])
    .code(3)
    .stderr(predicate::str::contains("2 attempt(s) left"));
    // Right PIN right after works.
    e.run(&[
        "hsm",
        "policy",
        "set",
        "remote-ped",
        "off",
        "--key",
        &k1,
        "--key",
        &k2,
        "--pin",
        "env:SO_PIN",
    ])
    .success();
    // A secret on the command line itself -> 2.
    e.run(&[
        "hsm", "policy", "set", "m-of-n", "off", "--key", &k1, "--key", &k2, "--pin", "246810",
    ])
    .code(2)
    .stderr(predicate::str::contains(
        "never taken from the command line",
    ));
    // Damaged key file -> 2, clear message, file untouched.
    let damaged = e.file("damaged.pedkey");
    let mut b = std::fs::read(&k1).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x01;
    std::fs::write(&damaged, &b).unwrap();
    e.run(&[
        "hsm",
        "policy",
        "set",
        "m-of-n",
        "off",
        "--key",
        damaged.to_str().unwrap(),
        "--key",
        &k2,
        "--pin",
        "env:SO_PIN",
    ])
    .code(2)
    .stderr(predicate::str::contains("PED key file"));
    // Policy refusal -> 4: the HSM SO may not change partition policy (logged in via the PSO path needs PSO keys).
    e.run(&[
        "partition",
        "policy",
        "set",
        "--partition",
        "pay",
        "activation",
        "off",
        "--key",
        &k1,
        "--key",
        &k2,
        "--pin",
        "env:SO_PIN",
    ])
    .code(3);
    // Not found -> 6.
    e.run(&["partition", "show", "--partition", "nope"]).code(6);
    // Usage -> 2.
    e.run(&["hsm", "frobnicate"]).code(2);
    // Re-init refused without naming partitions -> 4, naming them.
    e.run(&[
        "hsm",
        "init",
        "--label",
        "again",
        "--key",
        &k1,
        "--key",
        &k2,
        "--pin",
        "env:SO_PIN",
        "--overwrite",
    ])
    .code(4)
    .stderr(predicate::str::contains("--confirm-destroy pay"));
    e.run(&["--json", "partition", "list"])
        .success()
        .stdout(predicate::str::contains("\"pay\""));
}

#[test]
fn store_edited_by_hand_is_tamper_exit_5() {
    let e = ready();
    let db = e.data().join("hsm.db");
    let c = rusqlite_edit(&db);
    assert!(c > 0);
    e.run(&["hsm", "show"])
        .code(5)
        .stderr(predicate::str::contains("tamper"));
}

/// Flips a byte in every sealed record with the sqlite3 file format's own tool: we use the
/// library through the core crate's dependency by opening the file as SQLite.
fn rusqlite_edit(db: &Path) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<(String, String, Vec<u8>)> = {
        let mut st = conn
            .prepare("SELECT kind, id, sealed FROM records")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for (k, i, mut s) in rows.clone() {
        let n = s.len() - 3;
        s[n] ^= 0x80;
        conn.execute(
            "UPDATE records SET sealed=?3 WHERE kind=?1 AND id=?2",
            rusqlite::params![k, i, s],
        )
        .unwrap();
    }
    rows.len()
}

#[test]
fn zeroize_tamper_and_reinit() {
    let e = ready();
    e.run(&["hsm", "zeroize"])
        .code(2)
        .stderr(predicate::str::contains("--yes"));
    // Only the HSM SO zeroizes: a wrong PIN is refused (and counted) and nothing is destroyed.
    let (so1, so2) = (e.key("hsm-so-1"), e.key("hsm-so-2"));
    let so = ["--key", &so1, "--key", &so2];
    e.run(
        &[
            &["hsm", "zeroize", "--yes"][..],
            &so,
            &["--pin", "env:WRONG_PIN"],
        ]
        .concat(),
    )
    .code(3);
    assert!(e.data().join("device.key").exists());
    e.run(
        &[
            &["hsm", "zeroize", "--yes"][..],
            &so,
            &["--pin", "env:SO_PIN"],
        ]
        .concat(),
    )
    .success();
    e.run(&["hsm", "show"])
        .success()
        .stdout(predicate::str::contains("state:      zeroized"));
    assert!(!e.data().join("device.key").exists());
    e.run(&["partition", "list"])
        .success()
        .stdout(predicate::str::contains("no partitions"));
    e.run(&["key", "list", "--partition", "pay"])
        .code(6)
        .stderr(predicate::str::contains("not initialised"));
    // Init again on the zeroized HSM: old blue keys are overwritten only when confirmed.
    e.run(&["hsm", "init", "--label", "hsm1"])
        .code(4)
        .stderr(predicate::str::contains("already holds"));
    e.run(&["hsm", "init", "--label", "hsm1", "--overwrite"])
        .success();
    let so1 = e.key("hsm-so-1");
    e.run(&["hsm", "tamper", "--yes", "--key", &so1]).success();
    e.run(&["hsm", "show"])
        .success()
        .stdout(predicate::str::contains("TAMPER"));
}

#[test]
fn ped_show_and_duplicate_never_print_secrets() {
    let e = ready();
    let k = e.key("pay-co-1");
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(&k).unwrap()).unwrap();
    let value = key["value"].as_str().unwrap().to_string();
    let out = e
        .run(&["ped", "show", &k])
        .success()
        .stdout(predicate::str::contains("black (Crypto Officer)"))
        .get_output()
        .stdout
        .clone();
    assert!(!String::from_utf8_lossy(&out).contains(&value));
    let out = e
        .run(&["--json", "ped", "show", &k])
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(!String::from_utf8_lossy(&out).contains(&value));
    // Duplicate, then log in with the copy.
    let copy = e.file("co-copy.pedkey").display().to_string();
    e.run(&["ped", "duplicate", "--from", &k, "--to", &copy])
        .success();
    e.run(&["ped", "duplicate", "--from", &k, "--to", &copy])
        .code(4)
        .stderr(predicate::str::contains("already holds"));
    e.run(&["key", "list", "--partition", "pay", "--key", &copy])
        .success();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn lockout_and_reset_through_the_cli() {
    let e = ready();
    e.run(&[
        "partition",
        "policy",
        "set",
        "--partition",
        "pay",
        "failed-login-limit",
        "2",
    ])
    .success();
    let cu_wrong = e.file("wrong-co.pedkey").display().to_string();
    // A black key of another secret.
    e.run(&[
        "partition",
        "create",
        "--label",
        "other",
        "--key",
        &e.key("hsm-so-1"),
        "--key",
        &e.key("hsm-so-2"),
        "--pin",
        "env:SO_PIN",
    ])
    .success();
    e.run(&["partition", "init", "--partition", "other"])
        .success();
    e.run(&[
        "role",
        "init",
        "--partition",
        "other",
        "--role",
        "co",
        "--new-key",
        &cu_wrong,
    ])
    .success();
    e.run(&["key", "list", "--partition", "pay", "--key", &cu_wrong])
        .code(3)
        .stderr(predicate::str::contains("1 attempt(s) left"));
    e.run(&["key", "list", "--partition", "pay", "--key", &cu_wrong])
        .code(3)
        .stderr(predicate::str::contains("locked"));
    e.run(&["key", "list", "--partition", "pay"])
        .code(3)
        .stderr(predicate::str::contains("role reset"));
    e.run(&["role", "reset", "--partition", "pay", "--role", "co"])
        .success();
    e.run(&["key", "list", "--partition", "pay"]).success();
}

#[test]
fn password_mode_from_the_cli() {
    let e = Env::new();
    let mut c = e.cmd();
    c.env("SO_PW", "so-password-1")
        .env("DOM", "domain-words-1")
        .env("PSO_PW", "pso-password-1")
        .env("CO_PW", "co-password-1");
    c.args([
        "hsm",
        "init",
        "--label",
        "lab",
        "--auth",
        "password",
        "--so-password",
        "env:SO_PW",
        "--domain-password",
        "env:DOM",
    ])
    .assert()
    .success();
    let run = |args: &[&str]| {
        let mut c = e.cmd();
        c.env("SO_PW", "so-password-1")
            .env("PSO_PW", "pso-password-1")
            .env("CO_PW", "co-password-1")
            .args(args)
            .assert()
    };
    run(&["hsm", "show"])
        .success()
        .stdout(predicate::str::contains("password-authenticated"));
    run(&[
        "partition",
        "create",
        "--label",
        "t",
        "--password",
        "env:SO_PW",
    ])
    .success();
    // Joining the HSM's cloning domain takes its domain password: the HSM keeps none of it
    // that its device key alone opens.
    run(&[
        "partition",
        "init",
        "--partition",
        "t",
        "--so-password",
        "env:PSO_PW",
    ])
    .failure()
    .stderr(predicate::str::contains("--domain-password"));
    run(&[
        "partition",
        "init",
        "--partition",
        "t",
        "--so-password",
        "env:PSO_PW",
        "--domain-password",
        "env:PSO_PW",
    ])
    .failure()
    .stderr(predicate::str::contains("is not this HSM's cloning domain"));
    run(&["partition", "show", "--partition", "t"])
        .success()
        .stdout(predicate::str::contains("created (not initialised)"));
    let mut c = e.cmd();
    c.env("PSO_PW", "pso-password-1")
        .env("DOM", "domain-words-1")
        .args([
            "partition",
            "init",
            "--partition",
            "t",
            "--so-password",
            "env:PSO_PW",
            "--domain-password",
            "env:DOM",
        ])
        .assert()
        .success();
    run(&["partition", "show", "--partition", "t"])
        .success()
        .stdout(predicate::str::contains("the HSM's cloning domain"));
    run(&[
        "role",
        "init",
        "--partition",
        "t",
        "--role",
        "co",
        "--password",
        "env:PSO_PW",
        "--new-password",
        "env:CO_PW",
    ])
    .success();
    run(&[
        "key",
        "generate",
        "--partition",
        "t",
        "--type",
        "ed25519",
        "--label",
        "ed",
        "--password",
        "env:CO_PW",
    ])
    .success();
    run(&["key", "list", "--partition", "t", "--password", "env:SO_PW"]).code(3);
}

#[test]
fn demo_runs_and_every_group_has_help_with_examples() {
    let e = Env::new();
    e.run(&["demo"])
        .success()
        .stdout(predicate::str::contains("demo complete"));
    let dir = e.file("kept");
    e.run(&["demo", "--dir", dir.to_str().unwrap()]).success();
    assert!(dir.join("ferrohsm-data/hsm.db").exists());
    e.run(&["demo", "--dir", dir.to_str().unwrap()]).code(2);
    for g in [
        &["hsm", "init"][..],
        &["partition", "create"],
        &["partition", "init"],
        &["role", "init"],
        &["role", "activate"],
        &["key", "sign"],
        &["ped", "duplicate"],
        &["gp", "master", "import"],
        &["gp", "kcv"],
        &["gp", "personalise"],
        &["gp", "sim-card", "new"],
    ] {
        e.run(&[g, &["--help"][..]].concat())
            .success()
            .stdout(predicate::str::contains("Example"));
    }
    e.run(&["--help"])
        .success()
        .stdout(predicate::str::contains("Exit codes"));
}

#[test]
fn audit_trail_export_verify_and_witnesses_from_the_cli() {
    let e = Env::new();
    // The Auditor can exist before the HSM is initialised.
    e.run(&["audit", "init"]).success();
    e.run(&["hsm", "init", "--label", "hsm1"]).success();
    let e2 = &e;
    let aud = e2.key("auditor-1");
    // Another role's key for an audit command: wrong colour, exit 3.
    e2.run(&["audit", "show", "--key", &e2.key("hsm-so-1")])
        .code(3)
        .stderr(predicate::str::contains("white (Auditor)"));
    let out = e2
        .run(&["--json", "audit", "show", "--key", &aud])
        .success()
        .get_output()
        .stdout
        .clone();
    let recs: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let events: Vec<&str> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(&events[..2], &["audit-init", "hsm-init"]);
    e2.run(&["audit", "show", "--failures"])
        .success()
        .stdout(predicate::str::contains("white (Auditor)"));

    e2.run(&["audit", "public-key", "--out", "hsm.vkey"])
        .success();
    e2.run(&["audit", "export", "--out", "ex.json"]).success();
    e2.run(&[
        "audit",
        "verify",
        "--export",
        "ex.json",
        "--public-key",
        "hsm.vkey",
        "--prove",
        "2",
    ])
    .success()
    .stdout(predicate::str::contains("record #2 is included"));
    e2.run(&["audit", "verify"])
        .success()
        .stdout(predicate::str::contains("verified"));
    // A changed byte in record #2 of the export: exit 5, naming it.
    let ex = std::fs::read_to_string(e2.file("ex.json")).unwrap();
    std::fs::write(e2.file("bad.json"), ex.replacen("hsm-init", "hsm-inxt", 1)).unwrap();
    e2.run(&[
        "audit",
        "verify",
        "--export",
        "bad.json",
        "--public-key",
        "hsm.vkey",
    ])
    .code(5)
    .stdout(predicate::str::contains("FAILED: record #2"));

    // Witnesses: keygen on their machine, registration, cosigning, submission.
    for w in ["alice", "bob"] {
        let out = e2
            .run(&[
                "audit",
                "witness",
                "keygen",
                "--name",
                w,
                "--out",
                &format!("{w}.key"),
            ])
            .success()
            .get_output()
            .stdout
            .clone();
        std::fs::write(e2.file(&format!("{w}.vkey")), out).unwrap();
        e2.run(&[
            "audit",
            "witness",
            "add",
            "--public-key",
            &format!("{w}.vkey"),
        ])
        .success();
    }
    e2.run(&["audit", "config", "set", "--ceremony-cosignatures", "2"])
        .success();
    e2.run(&["audit", "show", "--pending-cosignatures"])
        .success()
        .stdout(predicate::str::contains("hsm-init"));
    e2.run(&["audit", "checkpoint", "--out", "cp.txt"])
        .success();
    for w in ["alice", "bob"] {
        e2.run(&[
            "audit",
            "witness",
            "cosign",
            "--key",
            &format!("{w}.key"),
            "--checkpoint",
            "cp.txt",
            "--public-key",
            "hsm.vkey",
        ])
        .success();
    }
    e2.run(&["audit", "witness", "submit", "--checkpoint", "cp.txt"])
        .success()
        .stdout(predicate::str::contains("alice, bob"));
    e2.run(&["audit", "show", "--pending-cosignatures"])
        .success()
        .stdout(predicate::str::contains(
            "carries the required witness cosignatures",
        ));
    // A witness refuses to cosign a checkpoint the HSM did not sign.
    let cp = std::fs::read_to_string(e2.file("cp.txt")).unwrap();
    let lines: Vec<&str> = cp.lines().collect();
    std::fs::write(
        e2.file("forged.txt"),
        cp.replacen(lines[2], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1),
    )
    .unwrap();
    e2.run(&[
        "audit",
        "witness",
        "cosign",
        "--key",
        "alice.key",
        "--checkpoint",
        "forged.txt",
        "--public-key",
        "hsm.vkey",
    ])
    .code(4);
    // Key-use auditing through the CLI.
    e2.run(&["audit", "config", "set", "--key-use", "strict"])
        .success()
        .stdout(predicate::str::contains("strict"));
}

/// `audit export --earlier` checks the checkpoint it is given: one its log extends is proven;
/// one taken before the data directory was put back to an older copy is a rollback, refused
/// with nothing written; a forged one is refused as not this HSM's. And the README's
/// sequence (keep a checkpoint, export later, verify against it) works as written.
#[test]
fn audit_export_against_a_held_checkpoint_catches_a_rolled_back_directory() {
    let e = Env::new();
    e.run(&["audit", "init"]).success();
    e.run(&["hsm", "init", "--label", "hsm1"]).success();
    e.run(&["audit", "public-key", "--out", "hsm-audit.vkey"])
        .success();
    e.run(&["audit", "checkpoint", "--out", "last.checkpoint"])
        .success();
    // A copy of the directory as it is now: what a rollback would put back.
    let old = e.tmp.path().join("data-old");
    std::fs::create_dir_all(&old).unwrap();
    for f in std::fs::read_dir(e.data()).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, old.join(p.file_name().unwrap())).unwrap();
    }
    e.run(&["partition", "create", "--label", "p1"]).success();
    e.run(&[
        "audit",
        "export",
        "--out",
        "audit.json",
        "--earlier",
        "last.checkpoint",
    ])
    .success();
    Command::cargo_bin("ferrohsm-audit")
        .unwrap()
        .current_dir(e.tmp.path())
        .args([
            "verify",
            "audit.json",
            "--public-key",
            "hsm-audit.vkey",
            "--earlier",
            "last.checkpoint",
            "--prove",
            "2",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("record #2 is included"));
    // Later: a checkpoint of the longer log; then the directory is put back.
    e.run(&["audit", "checkpoint", "--out", "newer.checkpoint"])
        .success();
    std::fs::remove_dir_all(e.data()).unwrap();
    std::fs::rename(&old, e.data()).unwrap();
    e.run(&[
        "audit",
        "export",
        "--out",
        "rolled.json",
        "--earlier",
        "newer.checkpoint",
    ])
    .code(5)
    .stderr(predicate::str::contains("rollback or fork"));
    assert!(!e.file("rolled.json").exists(), "nothing is written");
    // A checkpoint whose root was changed is not one this HSM signed.
    let cp = std::fs::read_to_string(e.file("last.checkpoint")).unwrap();
    let root = cp.lines().nth(2).unwrap().to_string();
    let flipped = if root.starts_with('A') { "B" } else { "A" };
    std::fs::write(
        e.file("forged.checkpoint"),
        cp.replacen(&root, &format!("{flipped}{}", &root[1..]), 1),
    )
    .unwrap();
    e.run(&[
        "audit",
        "export",
        "--out",
        "x.json",
        "--earlier",
        "forged.checkpoint",
    ])
    .code(2)
    .stderr(predicate::str::contains("not one this HSM signed"));
}

/// The Auditor reads, exports, verifies and checkpoints the log whatever state the HSM is
/// in: before it is initialised, after a zeroize, and after the tamper switch.
#[test]
fn the_auditor_reads_the_log_of_an_uninitialised_zeroized_or_tampered_hsm() {
    let e = Env::new();
    e.run(&["audit", "init"]).success();
    let reads = |e: &Env, what: &str| {
        e.run(&["audit", "show"])
            .success()
            .stdout(predicate::str::contains(what));
        e.run(&["audit", "export", "--out", "ex.json"]).success();
        e.run(&["audit", "verify"])
            .success()
            .stdout(predicate::str::contains("verified"));
        e.run(&["audit", "checkpoint", "--out", "cp.txt"]).success();
        e.run(&["audit", "config", "show"]).success();
    };
    reads(&e, "audit-init");
    e.run(&["hsm", "init", "--label", "hsm1"]).success();
    e.run(&["hsm", "zeroize", "--yes"]).success();
    reads(&e, "zeroize");
    e.run(&["hsm", "init", "--label", "hsm2", "--overwrite"])
        .success();
    e.run(&["hsm", "tamper", "--yes"]).success();
    reads(&e, "tamper");
}

/// The HSM SO's third failed login and the zeroize it causes are one step: a process that
/// dies between them (here made to abort right after the count is stored) leaves an HSM that
/// the next command zeroizes before doing anything else.
#[test]
fn a_crash_between_the_third_so_failure_and_its_zeroize_is_finished_at_the_next_start() {
    let e = ready();
    let (so1, so2) = (e.key("hsm-so-1"), e.key("hsm-so-2"));
    let wrong = |crash: bool| {
        let mut c = e.cmd();
        if crash {
            c.env("FERROHSM_TEST_CRASH_AT", "so-lockout-before-zeroize");
        }
        c.args(["hsm", "zeroize", "--yes", "--key", &so1, "--key", &so2])
            .args(["--pin", "env:WRONG_PIN"])
            .assert()
    };
    wrong(false).code(3);
    wrong(false).code(3);
    let died = wrong(true).get_output().status;
    assert!(
        !died.success() && died.code().is_none(),
        "the process aborted: {died:?}"
    );
    assert!(e.data().join("device.key").exists(), "not zeroized yet");
    e.run(&["hsm", "show"])
        .success()
        .stdout(predicate::str::contains("state:      zeroized"))
        .stdout(predicate::str::contains("3 failed HSM SO logins"));
    assert!(!e.data().join("device.key").exists());
}
