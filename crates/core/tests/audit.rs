//! The audit log: export mutations caught by the offline verifier, role separation, the
//! Auditor's lockout and survival, key-use modes, and fail-closed auditing.

mod common;

use common::*;
use ferrohsm_audit::export::ExportedRecord;
use ferrohsm_audit::{verify_export, Export, VerifyError, VerifyOptions};
use ferrohsm_core::audit::{AuditConfig, KeyUseAudit};
use ferrohsm_core::mechanism::{Hash, Mechanism};
use ferrohsm_core::object::ObjectClass;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{Credential, Hsm, HsmError, NewSecret, Role, Session};

fn with_auditor() -> (Fixture, Hsm, Session) {
    let (f, mut hsm) = fixture();
    hsm.audit_init(
        NewSecret::Ped(&mut new_ped(vec![key(&f, "aud")], 1, 1, None)),
        None,
    )
    .unwrap();
    let s = auditor(&f, &mut hsm);
    (f, hsm, s)
}

fn auditor(f: &Fixture, hsm: &mut Hsm) -> Session {
    hsm.login(
        Role::Auditor,
        None,
        Credential::Ped(&mut ped(vec![key(f, "aud")], None)),
    )
    .unwrap()
}

fn opts(hsm: &Hsm) -> VerifyOptions {
    VerifyOptions {
        public_key: Some(hsm.audit_public_key().unwrap()),
        ..Default::default()
    }
}

fn err(ex: &Export, o: &VerifyOptions) -> VerifyError {
    verify_export(ex, o).expect_err("the mutation must be caught")
}

#[test]
fn intact_export_verifies_and_proves_inclusion() {
    let (_f, mut hsm, s) = with_auditor();
    let ex = hsm.audit_export(&s, 1, &[]).unwrap();
    let n = ex.records.len() as u64;
    assert!(n > 10);
    let mut o = opts(&hsm);
    o.prove = Some(3);
    let r = verify_export(&ex, &o).unwrap();
    assert_eq!((r.from, r.records, r.size, r.proved), (1, n, n, Some(3)));
    assert!(r.ceremonies.iter().any(|(_, e)| e == "hsm-init"));
    assert!(r.ceremonies.iter().any(|(_, e)| e == "partition-create"));
    // Through the file format and back.
    let again = Export::from_bytes(&ex.to_bytes()).unwrap();
    verify_export(&again, &o).unwrap();
    o.prove = Some(n + 5);
    assert_eq!(err(&ex, &o), VerifyError::NotInExport(n + 5));
}

#[test]
fn every_mutation_of_an_export_is_caught_and_names_the_first_bad_record() {
    let (_f, mut hsm, s) = with_auditor();
    let ex = hsm.audit_export(&s, 1, &[]).unwrap();
    let o = opts(&hsm);

    // A changed byte in record #5.
    let mut m = ex.clone();
    m.records[4].record = m.records[4].record.replacen("\"success", "\"sUccess", 1);
    assert!(
        matches!(err(&m, &o), VerifyError::Record { seq: 5, .. }),
        "{:?}",
        err(&m, &o)
    );
    // A changed byte that breaks the record's JSON.
    let mut m = ex.clone();
    m.records[6].record.pop();
    assert!(matches!(err(&m, &o), VerifyError::Record { seq: 7, .. }));
    // Deleted record #4.
    let mut m = ex.clone();
    m.records.remove(3);
    let e = err(&m, &o);
    assert!(
        matches!(&e, VerifyError::Record { seq: 4, reason } if reason.contains("deleted")),
        "{e}"
    );
    // Inserted: #3 again after #3.
    let mut m = ex.clone();
    let dup: ExportedRecord = m.records[2].clone();
    m.records.insert(3, dup);
    assert!(matches!(err(&m, &o), VerifyError::Record { seq: 4, .. }));
    // Reordered #6 and #7.
    let mut m = ex.clone();
    m.records.swap(5, 6);
    assert!(matches!(err(&m, &o), VerifyError::Record { seq: 6, .. }));
    // Renumbered after a deletion, to hide it: the leaf no longer matches its position.
    let mut m = ex.clone();
    m.records.remove(3);
    let fixed = m.records[3].record.replacen("\"seq\":5", "\"seq\":4", 1);
    m.records[3].record = fixed;
    assert!(matches!(err(&m, &o), VerifyError::Record { seq: 4, .. }));
    // Truncated relative to the checkpoint.
    let mut m = ex.clone();
    let n = m.records.len() as u64;
    m.records.truncate(m.records.len() - 2);
    assert_eq!(
        err(&m, &o),
        VerifyError::Truncated {
            size: n,
            last: n - 2
        }
    );
    // A proof hash changed.
    let mut m = ex.clone();
    m.records[1].proof[0] = m.records[0].proof[0].clone();
    assert!(matches!(err(&m, &o), VerifyError::Record { seq: 2, .. }));
}

#[test]
fn forged_missing_or_foreign_signatures_are_caught() {
    let (_f, mut hsm, s) = with_auditor();
    let ex = hsm.audit_export(&s, 1, &[]).unwrap();
    let o = opts(&hsm);
    // Forged: one character of the signature changed.
    let mut m = ex.clone();
    let sig_start = m.checkpoint.find("\u{2014} ").unwrap();
    let pos = m.checkpoint[sig_start..].find(' ').unwrap()
        + sig_start
        + 1
        + m.checkpoint[sig_start..].split(' ').nth(1).unwrap().len()
        + 10;
    let mut chars: Vec<char> = m.checkpoint.chars().collect();
    let idx = m.checkpoint[..pos].chars().count();
    chars[idx] = if chars[idx] == 'A' { 'B' } else { 'A' };
    m.checkpoint = chars.into_iter().collect();
    assert!(
        matches!(err(&m, &o), VerifyError::Signature(_)),
        "{:?}",
        err(&m, &o)
    );
    // Missing: the signature line removed.
    let mut m = ex.clone();
    let body_end = m.checkpoint.find("\n\n").unwrap();
    m.checkpoint = format!("{}\n\n", &m.checkpoint[..body_end]);
    assert!(matches!(err(&m, &o), VerifyError::Signature(_)));
    // The tree hash in the checkpoint changed (signature no longer covers it).
    let mut m = ex.clone();
    let lines: Vec<&str> = ex.checkpoint.split('\n').collect();
    let new_size = format!("{}", lines[1].parse::<u64>().unwrap() + 1);
    m.checkpoint =
        ex.checkpoint
            .replacen(&format!("\n{}\n", lines[1]), &format!("\n{new_size}\n"), 1);
    assert!(matches!(err(&m, &o), VerifyError::Signature(_)));
    // Another HSM's key pinned: refused.
    let (_g, other) = fixture();
    let o2 = VerifyOptions {
        public_key: Some(other.audit_public_key().unwrap()),
        ..Default::default()
    };
    assert!(matches!(err(&ex, &o2), VerifyError::Key(_)));
    // Another HSM's export presented with this HSM's key embedded: signature does not verify.
    let (_g2, mut other2, s2) = with_auditor();
    let mut m = other2.audit_export(&s2, 1, &[]).unwrap();
    m.public_key = ex.public_key.clone();
    m.origin = ex.origin.clone();
    assert!(
        matches!(err(&m, &o), VerifyError::Signature(_)),
        "{:?}",
        err(&m, &o)
    );
}

#[test]
fn later_checkpoint_extends_earlier_and_a_fork_is_caught() {
    let (f, mut hsm, s) = with_auditor();
    let early = hsm.audit_checkpoint(&s).unwrap();
    let early_size = ferrohsm_audit::verify::checkpoint_size(&early).unwrap();
    // More activity, then an export carrying the proof for the early checkpoint.
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ex = hsm.audit_export(&s, 1, &[early_size]).unwrap();
    let mut o = opts(&hsm);
    o.earlier = vec![early.clone()];
    let r = verify_export(&ex, &o).unwrap();
    assert!(r.extends.contains(&early_size));

    // A fork: copy the data directory, let the two copies diverge, and check one's export
    // against a checkpoint the other issued.
    drop(hsm);
    let fork_dir = f.tmp.path().join("fork");
    copy_dir(&f.data, &fork_dir);
    let mut a = Hsm::open(&f.data).unwrap();
    let mut b = Hsm::open(&fork_dir).unwrap();
    let so_a = hsm_so(&f, &mut a);
    let so_b = hsm_so(&f, &mut b);
    a.restart(&so_a).unwrap();
    b.restart(&so_b).unwrap();
    b.restart(&so_b).unwrap();
    let sa = auditor(&f, &mut a);
    let a_cp = a.audit_checkpoint(&sa).unwrap();
    let a_size = ferrohsm_audit::verify::checkpoint_size(&a_cp).unwrap();
    let sb = auditor(&f, &mut b);
    let bex = b.audit_export(&sb, 1, &[a_size]).unwrap();
    let mut o = opts(&b);
    o.earlier = vec![a_cp];
    let e = err(&bex, &o);
    assert!(matches!(e, VerifyError::Fork(_)), "{e}");
    // A held checkpoint newer than the export: the export is a rollback or truncation.
    let old_b = {
        let mut x = bex.clone();
        x.earlier.clear();
        x
    };
    b.restart(&so_b).unwrap();
    let big = b.audit_checkpoint(&sb).unwrap();
    let mut o = opts(&b);
    o.earlier = vec![big];
    assert!(matches!(err(&old_b, &o), VerifyError::Fork(_)));
    // A consistency proof tampered with.
    let mut x = ex_with_earlier(&mut b, &sb);
    x.earlier[0].consistency[0] = x.records[0].proof[0].clone();
    assert!(matches!(err(&x, &opts(&b)), VerifyError::Fork(_)));
}

fn ex_with_earlier(h: &mut Hsm, s: &Session) -> Export {
    h.audit_export(s, 1, &[3]).unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn only_the_auditor_audits_and_the_auditor_does_nothing_else() {
    let (f, mut hsm, aud) = with_auditor();
    let sessions = [
        hsm_so(&f, &mut hsm),
        login(&f, &mut hsm, Role::PartitionSo, "pso"),
        login(&f, &mut hsm, Role::CryptoOfficer, "co"),
        login(&f, &mut hsm, Role::CryptoUser, "cu"),
    ];
    let refused = |r: Result<(), HsmError>| {
        let e = r.expect_err("must be refused");
        assert!(
            matches!(e, HsmError::Refused(_)) && e.to_string().contains("Auditor"),
            "{e}"
        );
    };
    for s in &sessions {
        refused(hsm.audit_records(s).map(drop));
        refused(hsm.audit_config(s).map(drop));
        refused(hsm.set_audit_config(s, AuditConfig::default()));
        refused(hsm.audit_checkpoint(s).map(drop));
        refused(hsm.audit_export(s, 1, &[]).map(drop));
        refused(hsm.audit_verify(s).map(drop));
        refused(hsm.witnesses(s).map(drop));
        refused(hsm.add_witness(s, "x+00000000+AQ==").map(drop));
        refused(hsm.submit_cosigned(s, "x").map(drop));
        refused(hsm.pending_ceremonies(s).map(drop));
    }
    // The Auditor is refused everything else.
    let co = &sessions[2];
    let ec = hsm.find_key(co, "ec", ObjectClass::PrivateKey).unwrap();
    let no = |r: Result<(), HsmError>| assert!(matches!(r, Err(HsmError::Refused(_))));
    no(hsm.create_partition(&aud, "x").map(drop));
    no(hsm.set_hsm_policy(&aud, "m-of-n", "off"));
    no(hsm.set_partition_policy(&aud, "activation", "off"));
    no(hsm
        .sign(&aud, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .map(drop));
    no(hsm.list_objects(&aud, None).map(drop));
    no(hsm.reset_role(&aud, Role::CryptoOfficer));
    no(hsm.delete_partition(&aud, "p").map(drop));
    // And the refusals were recorded.
    let recs = hsm.audit_records(&aud).unwrap();
    assert!(
        recs.iter()
            .filter(|r| r.event == "audit" && r.outcome.starts_with("failure"))
            .count()
            >= 40
    );
}

#[test]
fn auditor_exists_before_init_survives_zeroize_and_reinit_and_locks_for_a_while() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let aud_key = tmp.path().join("aud.pedkey");
    let mut hsm = Hsm::open_or_create(&data).unwrap();
    hsm.audit_init(
        NewSecret::Ped(&mut new_ped(vec![aud_key.clone()], 1, 1, None)),
        None,
    )
    .unwrap();
    assert_eq!(hsm.info().unwrap().state, "uninitialised");
    let s = hsm
        .login(
            Role::Auditor,
            None,
            Credential::Ped(&mut ped(vec![aud_key.clone()], None)),
        )
        .unwrap();
    hsm.audit_verify(&s).unwrap();
    // Re-imprinting without the current Auditor is refused.
    assert!(matches!(
        hsm.audit_init(
            NewSecret::Ped(&mut new_ped(vec![tmp.path().join("x")], 1, 1, None)),
            None
        ),
        Err(HsmError::Refused(_))
    ));
    // No HSM SO exists yet: direct local access zeroizes, keeping the log and the Auditor.
    hsm.factory_reset(None, None).unwrap();
    let s = hsm
        .login(
            Role::Auditor,
            None,
            Credential::Ped(&mut ped(vec![aud_key.clone()], None)),
        )
        .unwrap();
    let before = hsm.audit_records(&s).unwrap().len();
    assert!(hsm
        .audit_records(&s)
        .unwrap()
        .iter()
        .any(|r| r.event == "zeroize"));
    hsm.audit_verify(&s).unwrap();
    // Three wrong keys (a blue key is the wrong colour and not counted; use another white key).
    let other = tmp.path().join("other-white.pedkey");
    let (_g, mut h2) = fixture();
    h2.audit_init(
        NewSecret::Ped(&mut new_ped(vec![other.clone()], 1, 1, None)),
        None,
    )
    .unwrap();
    for i in 0..3 {
        let e = hsm
            .login(
                Role::Auditor,
                None,
                Credential::Ped(&mut ped(vec![other.clone()], None)),
            )
            .unwrap_err();
        if i < 2 {
            assert!(matches!(e, HsmError::AuthFailed { .. }), "{e}");
        } else {
            assert!(
                matches!(e, HsmError::Locked(_)) && e.to_string().contains("10 minutes"),
                "{e}"
            );
        }
    }
    let e = hsm
        .login(
            Role::Auditor,
            None,
            Credential::Ped(&mut ped(vec![aud_key.clone()], None)),
        )
        .unwrap_err();
    assert!(
        matches!(e, HsmError::Locked(_)),
        "the right key is locked out too: {e}"
    );
    assert!(hsm.info().unwrap().auditor.unwrap().locked);
    // The failures were audited (read back from the store, bypassing the lockout).
    assert!(hsm.events().unwrap().len() >= before + 4);
}

#[test]
fn key_use_strict_and_batched() {
    let (f, mut hsm, aud) = with_auditor();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    // Key uses recorded (a batched record counts several).
    let count = |h: &mut Hsm| -> u64 {
        h.events()
            .unwrap()
            .iter()
            .filter_map(|r| r.key_uses())
            .sum()
    };
    hsm.sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap();
    assert_eq!(count(&mut hsm), 0, "off by default");
    hsm.set_audit_config(
        &aud,
        AuditConfig {
            key_use: KeyUseAudit::Strict,
            ceremony_cosignatures: 3,
        },
    )
    .unwrap();
    hsm.sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap();
    // Durable before the answer: another handle on the store sees it at once.
    let mut other = Hsm::open(&f.data).unwrap();
    assert_eq!(count(&mut other), 1);
    hsm.set_audit_config(
        &aud,
        AuditConfig {
            key_use: KeyUseAudit::Batched { max_ms: 50 },
            ceremony_cosignatures: 3,
        },
    )
    .unwrap();
    for _ in 0..20 {
        hsm.sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
            .unwrap();
    }
    // Within the bound, without any further call on `hsm`: every use counted, in far fewer
    // records than uses, each naming the key, the operation and its time span.
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(count(&mut other), 21);
    let batched: Vec<_> = other
        .events()
        .unwrap()
        .into_iter()
        .filter(|r| r.event == "key-use" && r.outcome.contains(" until "))
        .collect();
    assert!(!batched.is_empty() && batched.len() < 20, "{batched:?}");
    for r in &batched {
        assert_eq!(r.object.as_deref(), Some("ec"));
        assert_eq!(r.role, "co");
        assert!(
            r.outcome.starts_with("success: sign ecdsa-sha256 x"),
            "{}",
            r.outcome
        );
    }
    let r = hsm.audit_verify(&aud).unwrap();
    assert!(r.records >= 2);
}

#[test]
fn batched_key_use_records_count_every_use_per_key_and_operation() {
    let (f, mut hsm, aud) = with_auditor();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    let ec_pub = hsm.find_key(&co, "ec", ObjectClass::PublicKey).unwrap();
    let aes = hsm.find_key(&co, "aes", ObjectClass::SecretKey).unwrap();
    hsm.set_audit_config(
        &aud,
        AuditConfig {
            key_use: KeyUseAudit::Batched { max_ms: 60_000 },
            ceremony_cosignatures: 3,
        },
    )
    .unwrap();
    let mech = Mechanism::Ecdsa(Some(Hash::Sha256));
    let mut sig = vec![];
    for _ in 0..3 {
        sig = hsm.sign(&co, ec.handle, mech, b"m").unwrap();
    }
    for _ in 0..2 {
        assert!(hsm.verify(&co, ec_pub.handle, mech, b"m", &sig).unwrap());
    }
    assert!(!hsm
        .verify(&co, ec_pub.handle, mech, b"other", &sig)
        .unwrap());
    let params = ferrohsm_core::mechanism::Params {
        iv: vec![1; 12],
        ..Default::default()
    };
    hsm.encrypt(&co, aes.handle, Mechanism::AesGcm, &params, b"data")
        .unwrap();
    // The window is a minute: nothing is written yet; closing the writer writes it all.
    let key_use_records = |h: &mut Hsm| {
        let mut v: Vec<String> = h
            .events()
            .unwrap()
            .into_iter()
            .filter(|r| r.event == "key-use")
            .map(|r| {
                let (head, _) = r.outcome.split_once(" until ").expect("batched record");
                format!("{} {head}", r.object.unwrap_or_default())
            })
            .collect();
        v.sort();
        v
    };
    assert!(key_use_records(&mut Hsm::open(&f.data).unwrap()).is_empty());
    hsm.flush_key_use().unwrap();
    assert_eq!(
        key_use_records(&mut Hsm::open(&f.data).unwrap()),
        [
            "aes success: encrypt aes-gcm x1",
            "ec success: sign ecdsa-sha256 x3",
            "ec success: verify ecdsa-sha256 (invalid) x1",
            "ec success: verify ecdsa-sha256 (valid) x2",
        ]
    );
    hsm.audit_verify(&aud).unwrap();
}

#[test]
fn key_use_auditing_switched_by_another_handle_applies_to_the_next_operation() {
    let (f, mut hsm, _) = with_auditor();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    let sign = |h: &mut Hsm| {
        h.sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
            .unwrap()
    };
    sign(&mut hsm);
    sign(&mut hsm);
    let key_uses = |f: &Fixture| {
        Hsm::open(&f.data)
            .unwrap()
            .events()
            .unwrap()
            .iter()
            .filter(|r| r.event == "key-use")
            .count()
    };
    assert_eq!(key_uses(&f), 0);
    // The Auditor, elsewhere, turns strict auditing on: the very next signature is recorded.
    let mut other = Hsm::open(&f.data).unwrap();
    let aud = auditor(&f, &mut other);
    other
        .set_audit_config(
            &aud,
            AuditConfig {
                key_use: KeyUseAudit::Strict,
                ceremony_cosignatures: 3,
            },
        )
        .unwrap();
    drop(other);
    sign(&mut hsm);
    assert_eq!(key_uses(&f), 1);
}

/// Installs a trigger that makes every append to the log fail, as a full disk would.
fn break_log(f: &Fixture) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(f.data.join("hsm.db")).unwrap();
    c.execute_batch("CREATE TRIGGER broken BEFORE INSERT ON audit_log BEGIN SELECT RAISE(FAIL, 'disk full'); END;").unwrap();
    c
}

#[test]
fn fail_closed_state_changes_are_refused_when_the_log_cannot_be_written() {
    let (f, mut hsm) = fixture();
    let so = hsm_so(&f, &mut hsm);
    let c = break_log(&f);
    let e = hsm.create_partition(&so, "unrecorded").unwrap_err();
    assert!(matches!(e, HsmError::Store(_)), "{e}");
    // A failed login is not silently uncounted either: the login itself fails.
    let wrong = Pin::ped_pin("999999").unwrap();
    assert!(hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(vec![key(&f, "so1"), key(&f, "so2")], Some(&wrong)))
        )
        .is_err());
    c.execute_batch("DROP TRIGGER broken;").unwrap();
    let info = hsm.info().unwrap();
    assert!(
        info.partitions.iter().all(|p| p.label != "unrecorded"),
        "the change must not have happened"
    );
    assert_eq!(info.hsm_so.unwrap().failed_logins, 0, "nothing half-done");
}

#[test]
fn key_use_strict_refuses_and_batched_recovers_when_the_log_fails() {
    let (f, mut hsm, aud) = with_auditor();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    hsm.set_audit_config(
        &aud,
        AuditConfig {
            key_use: KeyUseAudit::Strict,
            ceremony_cosignatures: 3,
        },
    )
    .unwrap();
    let c = break_log(&f);
    assert!(matches!(
        hsm.sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m"),
        Err(HsmError::Store(_))
    ));
    c.execute_batch("DROP TRIGGER broken;").unwrap();
    hsm.sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap();

    hsm.set_audit_config(
        &aud,
        AuditConfig {
            key_use: KeyUseAudit::Batched { max_ms: 20 },
            ceremony_cosignatures: 3,
        },
    )
    .unwrap();
    hsm.sign(
        &co,
        ec.handle,
        Mechanism::Ecdsa(Some(Hash::Sha256)),
        b"first",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let c = break_log(&f);
    hsm.sign(
        &co,
        ec.handle,
        Mechanism::Ecdsa(Some(Hash::Sha256)),
        b"answered, then the flush fails",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e = hsm
        .sign(
            &co,
            ec.handle,
            Mechanism::Ecdsa(Some(Hash::Sha256)),
            b"refused",
        )
        .unwrap_err();
    assert!(e.to_string().contains("refused until it is healthy"), "{e}");
    c.execute_batch("DROP TRIGGER broken;").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    hsm.sign(
        &co,
        ec.handle,
        Mechanism::Ecdsa(Some(Hash::Sha256)),
        b"healthy again",
    )
    .unwrap();
    hsm.flush_key_use().unwrap();
    // The record of the operation that answered before the failure was kept and written.
    let uses: u64 = hsm
        .events()
        .unwrap()
        .iter()
        .filter_map(|r| r.key_uses())
        .sum();
    assert_eq!(
        uses, 4,
        "strict ok, batched first, batched before failure, batched after"
    );
    hsm.audit_verify(&aud).unwrap();
}

#[test]
fn deletions_at_either_end_an_emptied_export_and_ambiguous_json_are_caught() {
    let (_f, mut hsm, s) = with_auditor();
    let ex = hsm.audit_export(&s, 1, &[]).unwrap();
    let o = opts(&hsm);
    let n = ex.records.len() as u64;
    // The first record deleted (the ceremony that began the log disappears).
    let mut m = ex.clone();
    m.records.remove(0);
    m.first = 0;
    let e = err(&m, &o);
    assert!(
        matches!(&e, VerifyError::Record { seq: 1, reason } if reason.contains("deleted")),
        "{e}"
    );
    // The first three, with the export's own claim of where it starts rewritten to match.
    let mut m = ex.clone();
    m.records.drain(..3);
    m.first = 4;
    assert!(matches!(err(&m, &o), VerifyError::Record { seq: 1, .. }));
    // The last record deleted.
    let mut m = ex.clone();
    m.records.pop();
    assert_eq!(
        err(&m, &o),
        VerifyError::Truncated {
            size: n,
            last: n - 1
        }
    );
    // Every record deleted.
    let mut m = ex.clone();
    m.records.clear();
    assert_eq!(err(&m, &o), VerifyError::Empty);
    // The checkpoint removed.
    let mut m = ex.clone();
    m.checkpoint.clear();
    assert!(matches!(err(&m, &o), VerifyError::Signature(_)));
    // The checkpoint's root changed.
    let mut m = ex.clone();
    let lines: Vec<&str> = ex.checkpoint.split('\n').collect();
    let other_root = if lines[2].starts_with('A') { "B" } else { "A" };
    m.checkpoint = ex
        .checkpoint
        .replacen(lines[2], &format!("{other_root}{}", &lines[2][1..]), 1);
    assert!(matches!(err(&m, &o), VerifyError::Signature(_)));
    // A changed byte in the origin or the embedded key.
    let mut m = ex.clone();
    m.origin.push('x');
    assert!(matches!(err(&m, &o), VerifyError::Malformed(_)));
    let mut m = ex.clone();
    m.public_key = m.public_key.replacen('+', "x+", 1);
    assert!(matches!(err(&m, &o), VerifyError::Key(_)));

    // As files: a key twice (forged records first, genuine last), garbage appended.
    let bytes = String::from_utf8(ex.to_bytes()).unwrap();
    let mut forged = ex.clone();
    forged.records.truncate(1);
    let forged_records = serde_json::to_string(&forged.records).unwrap();
    let twice = bytes.replacen(
        "\"records\":",
        &format!("\"records\": {forged_records},\n  \"records\":"),
        1,
    );
    let e = Export::from_bytes(twice.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"records\" appears twice"), "{e}");
    let e = Export::from_bytes(format!("{bytes}garbage").as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("damaged or truncated"), "{e}");
    // And the genuine file reads back and verifies.
    verify_export(&Export::from_bytes(bytes.as_bytes()).unwrap(), &o).unwrap();
}

#[test]
fn a_complete_export_proves_consistency_itself_and_a_partial_one_says_what_is_missing() {
    let (f, mut hsm, s) = with_auditor();
    let early = hsm.audit_checkpoint(&s).unwrap();
    let early_size = ferrohsm_audit::verify::checkpoint_size(&early).unwrap();
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
    // From #1, without a consistency proof: the records themselves show the log extends it.
    let ex = hsm.audit_export(&s, 1, &[]).unwrap();
    assert_eq!(ex.first, 1);
    let mut o = opts(&hsm);
    o.earlier = vec![early.clone()];
    let r = verify_export(&ex, &o).unwrap();
    assert!(r.extends.contains(&early_size));
    // A part of the log: refused unless asked for, and then it needs the proof.
    let part = hsm.audit_export(&s, 3, &[]).unwrap();
    assert_eq!(part.first, 3);
    let e = err(&part, &opts(&hsm));
    assert!(
        matches!(&e, VerifyError::Record { seq: 1, reason } if reason.contains("--from 3")),
        "{e}"
    );
    let mut o = opts(&hsm);
    o.from = Some(3);
    verify_export(&part, &o).unwrap();
    o.earlier = vec![early.clone()];
    assert!(matches!(err(&part, &o), VerifyError::MissingProof(_)));
    // With the proof, the part verifies against the held checkpoint too.
    let proved = hsm.audit_export(&s, 3, &[early_size]).unwrap();
    verify_export(&proved, &o).unwrap();
    // (A held checkpoint the complete records contradict is a fork:
    // later_checkpoint_extends_earlier_and_a_fork_is_caught.)
}

/// A witness in the C2SP form: cosignatures are tlog-cosignature/v1 (a timestamp and a type
/// 0x04 key), and the witness's state refuses a smaller tree (rollback), a second tree of the
/// same size (fork), a larger one without a proof, and a proof that does not hold. An export
/// carries the cosigned checkpoint, so a verifier counts cosignatures offline.
#[test]
fn a_witness_remembers_what_it_cosigned_and_refuses_rollbacks_and_forks() {
    use ferrohsm_audit::witness::{cosign, CosignRequest, WitnessState};
    let (f, mut hsm, s) = with_auditor();
    let hsm_key = hsm.audit_public_key().unwrap();
    let (skey, wkey) = ferrohsm_audit::witness::generate("witness.example/alice").unwrap();
    hsm.add_witness(&s, &wkey).unwrap();
    let mut st = WitnessState::default();
    let small = hsm.audit_checkpoint(&s).unwrap();
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let big = hsm.audit_checkpoint(&s).unwrap();
    let big_size = ferrohsm_audit::verify::checkpoint_size(&big).unwrap();
    let req = |t: &str| CosignRequest::parse(t).unwrap();
    let signed = cosign(&req(&big), &skey, &hsm_key, &mut st, 1_800_000_000).unwrap();
    // The cosignature line: key hash (4), big-endian timestamp (8), signature (64).
    use base64::Engine as _;
    let line = signed.lines().last().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line.rsplit(' ').next().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 4 + 8 + 64);
    assert_eq!(
        u64::from_be_bytes(raw[4..12].try_into().unwrap()),
        1_800_000_000
    );
    // Rolled back: a smaller tree is refused.
    let e = cosign(&req(&small), &skey, &hsm_key, &mut st, 1_800_000_001).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Fork(m) if m.contains("rolled back")),
        "{e}"
    );
    // A second tree of the same size is a fork.
    let mut forked = st.clone();
    let origin = forked.logs.keys().next().unwrap().clone();
    forked.logs.insert(
        origin,
        (
            big_size,
            ferrohsm_audit::export::hash_to_string(&ferrohsm_audit::Hash([7; 32])),
        ),
    );
    let e = cosign(&req(&big), &skey, &hsm_key, &mut forked, 1).unwrap_err();
    assert!(matches!(e, VerifyError::Fork(_)), "{e}");
    // A larger tree with no proof from the last cosigned size: refused, saying what to ask.
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let bigger = hsm.audit_checkpoint(&s).unwrap();
    let e = cosign(&req(&bigger), &skey, &hsm_key, &mut st, 2).unwrap_err();
    assert!(
        matches!(&e, VerifyError::MissingProof(m) if m.contains(&format!("--old-size {big_size}"))),
        "{e}"
    );
    // With the proof (as `ferrohsm audit checkpoint --old-size` writes it): cosigned.
    let ex = hsm.audit_export(&s, 1, &[big_size]).unwrap();
    let proof = ex
        .earlier
        .iter()
        .find(|e| ferrohsm_audit::verify::checkpoint_size(&e.checkpoint) == Some(big_size))
        .unwrap()
        .consistency
        .clone();
    let good = CosignRequest {
        old: big_size,
        proof: proof.clone(),
        note: ex.checkpoint.clone(),
    };
    let mut bad_proof = CosignRequest::parse(&good.to_text()).unwrap();
    bad_proof.proof[0] = ex.records[0].proof[0].clone();
    let e = cosign(&bad_proof, &skey, &hsm_key, &mut st.clone(), 3).unwrap_err();
    assert!(matches!(e, VerifyError::Fork(_)), "{e}");
    let cosigned = cosign(&good, &skey, &hsm_key, &mut st, 3).unwrap();
    let new_size = ferrohsm_audit::verify::checkpoint_size(&ex.checkpoint).unwrap();
    assert_eq!(st.logs.values().next().unwrap().0, new_size);
    // Kept by the HSM, then carried by every export: counted offline.
    assert_eq!(
        hsm.submit_cosigned(&s, &cosigned).unwrap(),
        vec!["witness.example/alice".to_string()]
    );
    let later = hsm.audit_export(&s, 1, &[]).unwrap();
    let mut o = opts(&hsm);
    o.witnesses = vec![wkey.clone()];
    o.require_cosignatures = 1;
    let r = verify_export(&later, &o).unwrap();
    assert_eq!(r.cosigned_by, vec!["witness.example/alice".to_string()]);
    // Without the witness's key given, one cosignature required: refused.
    o.witnesses.clear();
    assert!(matches!(err(&later, &o), VerifyError::Witness(_)));
}

/// Every login refused before any secret is checked is still an audit record: the wrong
/// kind of role for a partition, an unknown partition, a PIN-protected key given no PIN.
#[test]
fn early_login_refusals_are_recorded() {
    let (f, mut hsm, aud) = with_auditor();
    let before = hsm.audit_records(&aud).unwrap().len();
    assert!(hsm
        .login(
            Role::HsmSo,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "so1")], None))
        )
        .is_err());
    assert!(hsm
        .login(
            Role::CryptoOfficer,
            Some("no-such-partition"),
            Credential::Ped(&mut ped(vec![key(&f, "co")], None))
        )
        .is_err());
    let e = hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(vec![key(&f, "so1"), key(&f, "so2")], None)),
        )
        .unwrap_err();
    assert!(e.to_string().contains("--pin"), "{e}");
    let recs = hsm.audit_records(&aud).unwrap();
    let refusals: Vec<_> = recs[before..]
        .iter()
        .filter(|r| r.event == "login" && r.outcome.starts_with("failure"))
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:#?}");
}

/// Deleting the audit state's rows by hand does not make room for a new Auditor, nor turn
/// key-use auditing off: both are tamper, while the log says an Auditor was imprinted.
#[test]
fn removing_the_audit_state_is_tamper_never_a_fresh_auditor() {
    let (f, mut hsm, aud) = with_auditor();
    hsm.set_audit_config(
        &aud,
        AuditConfig {
            key_use: KeyUseAudit::Strict,
            ..AuditConfig::default()
        },
    )
    .unwrap();
    drop(hsm);
    rusqlite::Connection::open(f.data.join("hsm.db"))
        .unwrap()
        .execute("DELETE FROM audit_state", [])
        .unwrap();
    let mut hsm = Hsm::open(&f.data).unwrap();
    // Key use would no longer be recorded: refused.
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    let e = hsm
        .sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Tamper(m) if m.contains("removed by hand")),
        "{e}"
    );
    // And nobody imprints a new Auditor in the gap.
    let e = hsm
        .audit_init(
            NewSecret::Ped(&mut new_ped(
                vec![f.tmp.path().join("thief.pedkey")],
                1,
                1,
                None,
            )),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Tamper(m) if m.contains("removed by hand")),
        "{e}"
    );
    assert!(!f.tmp.path().join("thief.pedkey").exists());
}

/// An older copy of one audit state row put back (key-use auditing set to strict, then the
/// row from before put back to turn it off unnoticed) is tamper at its first use.
#[test]
fn an_older_audit_state_row_put_back_is_tamper() {
    let (f, mut hsm, aud) = with_auditor();
    let row = || -> Vec<u8> {
        rusqlite::Connection::open(f.data.join("hsm.db"))
            .unwrap()
            .query_row(
                "SELECT sealed FROM audit_state WHERE kind = 'config'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let off = row();
    hsm.set_audit_config(
        &aud,
        AuditConfig {
            key_use: KeyUseAudit::Strict,
            ..AuditConfig::default()
        },
    )
    .unwrap();
    assert_ne!(row(), off);
    rusqlite::Connection::open(f.data.join("hsm.db"))
        .unwrap()
        .execute(
            "UPDATE audit_state SET sealed = ?1 WHERE kind = 'config'",
            [&off],
        )
        .unwrap();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    let e = hsm
        .sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Tamper(m) if m.contains("older copy")),
        "{e}"
    );
    // Nor does removing the list of fingerprints make room for it: the store refuses to open.
    drop(hsm);
    rusqlite::Connection::open(f.data.join("hsm.db"))
        .unwrap()
        .execute("DELETE FROM audit_state WHERE kind = 'prints'", [])
        .unwrap();
    let e = Hsm::open(&f.data).err().expect("must not open");
    assert!(
        matches!(&e, HsmError::Tamper(m) if m.contains("fingerprints was removed")),
        "{e}"
    );
}
