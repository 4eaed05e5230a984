//! `ferrohsm partition clone` with the real binary: into a real `ferrohsm server` of the same
//! cloning domain (the cloned key signs what the original's public key verifies), within one
//! HSM, and refused — nothing written — towards a server of another domain.

mod support;

use std::process::Output;

use support::*;

fn run(lab: &Lab, args: &[&str]) -> Output {
    lab.cli().args(args).output().unwrap()
}

fn ok(lab: &Lab, args: &[&str]) -> String {
    let o = run(lab, args);
    assert!(
        o.status.success(),
        "ferrohsm {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn co(args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend(["--password".into(), "env:CO_PW".into()]);
    v
}

/// `partition clone` of partition app into app on the server at `sock`, both Crypto Officers
/// by password, `batch` objects a round trip.
fn clone_to(sock: &str, batch: &str) -> Vec<String> {
    co(&[
        "partition",
        "clone",
        "--from",
        "app",
        "--to",
        "app",
        "--to-server",
        sock,
        "--to-password",
        "env:CO_PW",
        "--batch",
        batch,
    ])
}

/// Generates a key (or `--count` keys) in partition app as its Crypto Officer.
fn generate(lab: &Lab, kind: &str, label: &str, extra: &[&str]) {
    let mut args = vec![
        "key",
        "generate",
        "--partition",
        "app",
        "--type",
        kind,
        "--label",
        label,
    ];
    args.extend_from_slice(extra);
    ok(lab, &refs(&co(&args)));
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn keys(lab: &Lab, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--json", "key", "list", "--partition", "app"];
    args.extend_from_slice(extra);
    let out = ok(lab, &refs(&co(&args)));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut labels: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["attrs"]["label"].as_str().unwrap().to_string())
        .collect();
    labels.sort();
    labels
}

#[test]
fn a_partition_clones_into_a_server_of_its_domain_and_not_of_another() {
    let a = Lab::new();
    for (t, l) in [("ec-p256", "signer"), ("aes-256", "wrapper")] {
        generate(&a, t, l, &[]);
    }
    // B: another HSM, initialised with the same domain words (password HSMs derive the domain
    // from them), served by a real server.
    let b = Lab::new();
    let server = b.start();
    let sock = b.socket().display().to_string();
    let out = ok(&a, &refs(&clone_to(&sock, "1")));
    assert!(out.contains("cloned 3 object(s)"), "{out}");
    assert_eq!(
        keys(&b, &["--server", &sock]),
        vec!["signer", "signer", "wrapper"]
    );
    // The clone signs what A's key verifies: one key in two HSMs.
    let doc = b.tmp.path().join("doc.txt");
    std::fs::write(&doc, b"cloned key test").unwrap();
    let sig = b.tmp.path().join("doc.sig");
    let (doc_s, sig_s) = (doc.display().to_string(), sig.display().to_string());
    ok(
        &b,
        &refs(&co(&[
            "--server",
            &sock,
            "key",
            "sign",
            "--partition",
            "app",
            "--label",
            "signer",
            "--in",
            &doc_s,
            "--out",
            &sig_s,
        ])),
    );
    ok(
        &a,
        &refs(&co(&[
            "key",
            "verify",
            "--partition",
            "app",
            "--label",
            "signer",
            "--in",
            &doc_s,
            "--signature",
            &sig_s,
        ])),
    );
    // Cloned again: nothing new (same unique ids).
    let again = ok(&a, &refs(&clone_to(&sock, "500")));
    assert!(
        again.contains("cloned 0 object(s)") && again.contains("3 already there"),
        "{again}"
    );
    drop(server);

    // C: an HSM of another domain. Refused with the reason; nothing reaches it.
    let c = Lab::with_domain("other-domain-words");
    let server_c = c.start();
    let sock_c = c.socket().display().to_string();
    let refused = run(&a, &refs(&clone_to(&sock_c, "500")));
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        e.contains("cloning domain") && e.contains("nothing was transferred"),
        "{e}"
    );
    assert!(keys(&c, &["--server", &sock_c]).is_empty());
    drop(server_c);
}

#[test]
fn a_partition_clones_into_another_of_the_same_hsm_by_label() {
    let a = Lab::new();
    generate(&a, "aes-256", "k1", &[]);
    generate(&a, "aes-256", "k2", &[]);
    a.ok(&[
        "partition",
        "create",
        "--label",
        "spare",
        "--password",
        "env:SO_PW",
    ]);
    a.ok(&[
        "partition",
        "init",
        "--partition",
        "spare",
        "--so-password",
        "env:PSO_PW",
        "--domain-password",
        "env:DOM",
    ]);
    a.ok(&[
        "role",
        "init",
        "--partition",
        "spare",
        "--role",
        "co",
        "--password",
        "env:PSO_PW",
        "--new-password",
        "env:CO_PW",
    ]);
    let out = ok(
        &a,
        &refs(&co(&[
            "partition",
            "clone",
            "--from",
            "app",
            "--to",
            "spare",
            "--label",
            "k2",
            "--to-password",
            "env:CO_PW",
        ])),
    );
    assert!(out.contains("cloned 1 object(s)"), "{out}");
    let listed = ok(
        &a,
        &refs(&co(&["--json", "key", "list", "--partition", "spare"])),
    );
    assert!(
        listed.contains("\"k2\"") && !listed.contains("\"k1\""),
        "{listed}"
    );
}

/// Objects in partition "app" of a server's HSM, by asking it.
fn count(lab: &Lab, sock: &str) -> usize {
    keys(lab, &["--server", sock]).len()
}

/// A clone of 2,000 keys killed at several points — the command (kill -9) and the target's
/// server (kill -9, then restarted) — leaves the target with none of them or all of them.
#[test]
fn a_clone_killed_at_any_point_leaves_the_target_empty_or_complete() {
    let a = Lab::new();
    generate(&a, "aes-128", "bulk", &["--count", "2000"]);
    let b = Lab::new();
    let sock = b.socket().display().to_string();
    let clone_args = clone_to(&sock, "1");
    let mut server = b.start();
    let mut mid_transfer = 0;
    for delay_ms in [300u64, 900, 1800] {
        let progress = b.tmp.path().join(format!("progress-{delay_ms}.txt"));
        let mut child = a
            .cli()
            .args(refs(&clone_args))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&progress).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let n = count(&b, &sock);
        assert!(
            n == 0 || n == 2000,
            "the command killed after {delay_ms} ms left {n} keys"
        );
        // Killed with some objects received and not all: the case that matters.
        let said = std::fs::read_to_string(&progress).unwrap_or_default();
        if said.contains(" received") && !said.contains("2000/2000") {
            mid_transfer += 1;
        }
        if n == 2000 {
            break;
        }
    }
    assert!(mid_transfer > 0, "no kill landed while objects were moving");
    // The target's server killed mid-clone, then started again: nothing partial either.
    if count(&b, &sock) == 0 {
        let mut child = a
            .cli()
            .args(refs(&clone_args))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        server.signal("KILL");
        let _ = server.wait(std::time::Duration::from_secs(10));
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the clone cannot have finished without its target"
        );
        server = b.start();
        let n = count(&b, &sock);
        assert!(n == 0 || n == 2000, "a killed target server kept {n} keys");
    }
    // And a clone left alone completes.
    ok(&a, &refs(&clone_args));
    assert_eq!(count(&b, &sock), 2000);
    drop(server);
}

/// A partition backed up to a file, checked and restored on another HSM of the domain (through
/// its server), refused by a partition of another domain; the file is owner-only and holds no
/// attribute or key in clear.
#[test]
fn a_backup_file_restores_on_another_hsm_of_the_domain_only() {
    use std::os::unix::fs::PermissionsExt;
    let a = Lab::new();
    generate(&a, "ec-p256", "label-in-the-backup", &[]);
    let file = a.tmp.path().join("app.backup");
    let file_s = file.display().to_string();
    let out = ok(
        &a,
        &refs(&co(&[
            "partition",
            "backup",
            "--partition",
            "app",
            "--out",
            &file_s,
        ])),
    );
    assert!(out.contains("backed up 2 object(s)"), "{out}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("label-in-the-backup"));
    // Not written over.
    assert!(!run(
        &a,
        &refs(&co(&[
            "partition",
            "backup",
            "--partition",
            "app",
            "--out",
            &file_s
        ]))
    )
    .status
    .success());

    let b = Lab::new();
    let server = b.start();
    let sock = b.socket().display().to_string();
    let checked = ok(
        &b,
        &refs(&co(&[
            "--server",
            &sock,
            "backup",
            "verify",
            &file_s,
            "--partition",
            "app",
        ])),
    );
    assert!(
        checked.contains("a good backup") && checked.contains("1 private-key"),
        "{checked}"
    );
    assert!(keys(&b, &["--server", &sock]).is_empty());
    let restored = ok(
        &b,
        &refs(&co(&[
            "--server",
            &sock,
            "partition",
            "restore",
            "--partition",
            "app",
            "--in",
            &file_s,
        ])),
    );
    assert!(restored.contains("2 added"), "{restored}");
    assert_eq!(
        keys(&b, &["--server", &sock]),
        vec!["label-in-the-backup", "label-in-the-backup"]
    );
    drop(server);

    let c = Lab::with_domain("other-domain-words");
    let refused = run(
        &c,
        &refs(&co(&["backup", "verify", &file_s, "--partition", "app"])),
    );
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another cloning domain"));
    // A changed file: tamper (exit 5), nothing restored.
    let mut changed = bytes.clone();
    let at = changed.len() / 2;
    changed[at] = if changed[at] == b'0' { b'1' } else { b'0' };
    let bad = a.tmp.path().join("changed.backup");
    std::fs::write(&bad, &changed).unwrap();
    let bad_s = bad.display().to_string();
    let b2 = Lab::new();
    let e = run(
        &b2,
        &refs(&co(&[
            "partition",
            "restore",
            "--partition",
            "app",
            "--in",
            &bad_s,
        ])),
    );
    assert!(matches!(e.status.code(), Some(2) | Some(5)), "{e:?}");
    assert!(keys(&b2, &[]).is_empty());
}

/// A backup HSM keeps a partition's keys cloned into it, refuses to use them or make any,
/// and gives them back: a restore to a fresh partition of the domain signs with the same key.
#[test]
fn a_backup_hsm_keeps_keys_without_using_them_and_gives_them_back() {
    let a = Lab::new();
    generate(&a, "ec-p256", "signer", &[]);
    let backup = Lab::backup();
    let shown = ok(&backup, &["hsm", "show"]);
    assert!(shown.contains("backup HSM"), "{shown}");
    let bsock = backup.socket().display().to_string();
    let _bserver = backup.start();
    // Into the backup HSM: a clone, with progress and the usual proofs.
    let out = ok(
        &a,
        &refs(&co(&[
            "partition",
            "backup",
            "--partition",
            "app",
            "--to-server",
            &bsock,
            "--to-password",
            "env:CO_PW",
        ])),
    );
    assert!(out.contains("cloned"), "{out}");
    assert_eq!(count(&a, &bsock), keys(&a, &[]).len());
    // Again: nothing new to add.
    let again = ok(&a, &refs(&clone_to(&bsock, "10")));
    assert!(again.contains("cloned 0 object(s)"), "{again}");
    // Kept, not used: no signature, no new key, no value read; listing and deleting work.
    for (what, args) in [
        (
            "sign",
            vec![
                "key",
                "sign",
                "--partition",
                "app",
                "--label",
                "signer",
                "--in",
                "Cargo.toml",
                "--out",
                "sig.bin",
            ],
        ),
        (
            "generate",
            vec![
                "key",
                "generate",
                "--partition",
                "app",
                "--type",
                "aes-256",
                "--label",
                "new",
            ],
        ),
    ] {
        std::fs::write(backup.tmp.path().join("Cargo.toml"), b"data").unwrap();
        let o = run(
            &backup,
            &refs(&co(&[&["--server", &bsock][..], &args[..]].concat())),
        );
        assert_eq!(
            o.status.code(),
            Some(4),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("backup HSM"), "{what}: {e}");
    }
    // Restored from the backup HSM (its CO the source) into a fresh HSM of the domain.
    let fresh = Lab::new();
    let fsock = fresh.socket().display().to_string();
    let _fserver = fresh.start();
    let restore = co(&[
        "--server",
        &fsock,
        "partition",
        "restore",
        "--partition",
        "app",
        "--from-server",
        &bsock,
        "--to-password",
        "env:CO_PW",
    ]);
    let out = ok(&fresh, &refs(&restore));
    assert!(out.contains("cloned"), "{out}");
    let before: Vec<String> = keys(&a, &[]);
    let after: Vec<String> = keys(&fresh, &["--server", &fsock]);
    for k in &before {
        assert!(after.contains(k), "{k} was not restored: {after:?}");
    }
}

/// Whether `label` is marked trusted in partition app (listed through `extra`).
fn trusted(lab: &Lab, extra: &[&str], label: &str) -> bool {
    let mut args = vec!["--json", "key", "list", "--partition", "app"];
    args.extend_from_slice(extra);
    let out = ok(lab, &refs(&co(&args)));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let k = v
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["attrs"]["label"] == label)
        .unwrap_or_else(|| panic!("no {label}: {out}"));
    k["attrs"]["trusted"].as_bool().unwrap()
}

#[test]
fn a_backup_on_a_backup_hsm_is_added_to_or_replaced_in_place() {
    let a = Lab::new();
    generate(&a, "aes-256", "wrapper", &[]);
    let backup = Lab::backup();
    let bsock = backup.socket().display().to_string();
    let _bserver = backup.start();
    let to_backup = |more: &[&str]| {
        let mut args = co(&[
            "partition",
            "backup",
            "--partition",
            "app",
            "--to-server",
            &bsock,
            "--to-password",
            "env:CO_PW",
        ]);
        args.extend(more.iter().map(|s| s.to_string()));
        ok(&a, &refs(&args))
    };
    to_backup(&[]);
    let on_backup = ["--server", bsock.as_str()];
    assert!(!trusted(&a, &on_backup, "wrapper"));
    // The key changes on the working HSM (its Partition SO marks it trusted).
    a.ok(&[
        "key",
        "trust",
        "--partition",
        "app",
        "--label",
        "wrapper",
        "--password",
        "env:PSO_PW",
    ]);
    assert!(trusted(&a, &[], "wrapper"));
    // Added to: the backup keeps its copy as it was, and a new key is added.
    generate(&a, "aes-128", "later", &[]);
    let out = to_backup(&[]);
    assert!(
        out.contains("cloned 1 object(s)") && out.contains("1 already there"),
        "{out}"
    );
    assert!(!trusted(&a, &on_backup, "wrapper"), "left as it was");
    assert_eq!(count(&a, &bsock), 2);
    // Replaced: the copy on the backup HSM is now the key as it is.
    let out = to_backup(&["--replace"]);
    assert!(
        out.contains("2 already there (same unique id) replaced"),
        "{out}"
    );
    assert!(trusted(&a, &on_backup, "wrapper"), "replaced in place");
    assert_eq!(count(&a, &bsock), 2, "replaced, not duplicated");
    // And back: restored with --replace over a partition that holds the old version.
    let fresh = Lab::new();
    let fsock = fresh.socket().display().to_string();
    let _fserver = fresh.start();
    let restore = |more: &[&str]| {
        let mut args = co(&[
            "--server",
            &fsock,
            "partition",
            "restore",
            "--partition",
            "app",
            "--from-server",
            &bsock,
            "--to-password",
            "env:CO_PW",
        ]);
        args.extend(more.iter().map(|s| s.to_string()));
        ok(&fresh, &refs(&args))
    };
    restore(&[]);
    assert!(trusted(&fresh, &["--server", &fsock], "wrapper"));
    let out = restore(&["--replace"]);
    assert!(out.contains("replaced"), "{out}");
    assert_eq!(keys(&fresh, &["--server", &fsock]), ["later", "wrapper"]);
}
