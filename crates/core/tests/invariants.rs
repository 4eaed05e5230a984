//! One test (or more) per DESIGN.md invariant 2-5 and 7, each written to fail if the
//! invariant breaks.

mod common;

use common::*;
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism, Params};
use ferrohsm_core::object::{KeyOptions, ObjectClass};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{Credential, Hsm, HsmError, NewSecret, Role};

// ---------- invariant 2: sealed at rest; edited, truncated or swapped store detected ----------

fn db(f: &Fixture) -> rusqlite::Connection {
    rusqlite::Connection::open(f.data.join("hsm.db")).unwrap()
}

#[test]
fn inv2_edited_record_is_tamper_not_wrong_data() {
    let (f, hsm) = fixture();
    drop(hsm);
    // Flip one byte in the sealed partition record.
    let c = db(&f);
    let mut blob: Vec<u8> = c
        .query_row(
            "SELECT sealed FROM records WHERE kind='partition'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x20;
    c.execute(
        "UPDATE records SET sealed=?1 WHERE kind='partition'",
        [&blob],
    )
    .unwrap();
    drop(c);
    let mut hsm = Hsm::open(&f.data).unwrap();
    let e = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "co")], None)),
        )
        .unwrap_err();
    assert!(matches!(e, HsmError::Tamper(_)), "{e}");
    assert!(matches!(hsm.info(), Err(HsmError::Tamper(_))));
}

#[test]
fn inv2_edited_object_and_moved_rows_are_detected() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    let aes = hsm.find_key(&co, "aes", ObjectClass::SecretKey).unwrap();
    // Copy the AES object's sealed row over the EC private key's row: the AEAD binds each row
    // to its handle, so this must not yield the AES key under the EC handle.
    let c = db(&f);
    let aes_blob: Vec<u8> = c
        .query_row(
            "SELECT sealed FROM objects WHERE handle=?1",
            [aes.handle as i64],
            |r| r.get(0),
        )
        .unwrap();
    c.execute(
        "UPDATE objects SET sealed=?1 WHERE handle=?2",
        rusqlite::params![aes_blob, ec.handle as i64],
    )
    .unwrap();
    drop(c);
    let e = hsm
        .sign(&co, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap_err();
    assert!(matches!(e, HsmError::Tamper(_)), "{e}");
    // What was detected is recorded: in the log, and in what `hsm show` reports.
    let tamper = hsm.info().unwrap().tamper;
    assert!(tamper.is_some(), "hsm show reports no tamper");
    let recorded: i64 = db(&f)
        .query_row(
            "SELECT count(*) FROM audit_log WHERE CAST(record AS TEXT) LIKE '%tamper-detected%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, 1, "one tamper-detected record");
    // The AES key itself is untouched and still works.
    let p = Params {
        iv: vec![0; 12],
        ..Default::default()
    };
    let ct = hsm
        .encrypt(&co, aes.handle, Mechanism::AesGcm, &p, b"x")
        .unwrap();
    assert_eq!(
        hsm.decrypt(&co, aes.handle, Mechanism::AesGcm, &p, &ct)
            .unwrap()
            .expose(),
        b"x"
    );
    // Pointing the label index at another row is caught too.
    let c = db(&f);
    let tag: Vec<u8> = c
        .query_row(
            "SELECT label_tag FROM objects WHERE handle=?1",
            [aes.handle as i64],
            |r| r.get(0),
        )
        .unwrap();
    c.execute(
        "UPDATE objects SET label_tag=?1 WHERE handle=?2",
        rusqlite::params![tag, ec.handle as i64 + 1],
    )
    .unwrap();
    drop(c);
    assert!(matches!(
        hsm.list_objects(&co, Some("aes")),
        Err(HsmError::Tamper(_))
    ));
}

#[test]
fn inv2_deleted_or_inserted_rows_fail_open() {
    let (f, hsm) = fixture();
    drop(hsm);
    let c = db(&f);
    let n = c
        .execute(
            "DELETE FROM objects WHERE handle = (SELECT MAX(handle) FROM objects)",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(c);
    let e = Hsm::open(&f.data)
        .err()
        .expect("a store with a deleted row must not open");
    assert!(matches!(e, HsmError::Tamper(_)), "{e}");
    assert!(e.to_string().contains("deleted or inserted"), "{e}");
}

#[test]
fn inv2_swapped_store_or_key_fails_open() {
    let (a, ha) = fixture();
    let (b, hb) = fixture();
    drop(ha);
    drop(hb);
    // B's database with A's device key.
    std::fs::copy(b.data.join("hsm.db"), a.data.join("hsm.db")).unwrap();
    let _ = std::fs::remove_file(a.data.join("hsm.db-wal"));
    let _ = std::fs::remove_file(a.data.join("hsm.db-shm"));
    let e = Hsm::open(&a.data)
        .err()
        .expect("swapped store must not open");
    assert!(matches!(e, HsmError::Tamper(_)), "{e}");
    // Named for what it is: the database of another HSM (by its serial).
    let b_serial = Hsm::open(&b.data).unwrap().serial().to_string();
    assert!(
        e.to_string().contains("from another HSM") && e.to_string().contains(&b_serial),
        "{e}"
    );
    // The device key file truncated.
    let k = std::fs::read(b.data.join("device.key")).unwrap();
    std::fs::write(b.data.join("device.key"), &k[..20]).unwrap();
    assert!(matches!(Hsm::open(&b.data), Err(HsmError::Tamper(_))));
    // And missing.
    std::fs::remove_file(b.data.join("device.key")).unwrap();
    assert!(matches!(Hsm::open(&b.data), Err(HsmError::Tamper(_))));
}

#[test]
fn inv2_truncated_database_is_an_error_not_a_panic() {
    let (f, hsm) = fixture();
    drop(hsm);
    let p = f.data.join("hsm.db");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let _ = std::fs::remove_file(f.data.join("hsm.db-wal"));
    match Hsm::open(&f.data) {
        Err(_) => {}
        Ok(mut h) => assert!(h.info().is_err(), "a truncated store yielded an HSM"),
    }
}

#[test]
fn inv2_no_secret_in_clear_in_the_data_directory() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    // An AES key has no public part; the only way to know its value is to encrypt a known
    // block with it. Instead, check the label and PED secrets never appear in clear: the PED
    // key values (which are the role secrets) must not be in any file.
    hsm.generate_key(
        &co,
        KeySpec::Aes128,
        &KeyOptions {
            label: "findme-label-zz".into(),
            id: vec![],
            extractable: false,
        },
    )
    .unwrap();
    drop(hsm);
    let files = all_bytes(&f.data);
    for k in ["so1", "so2", "dom", "pso", "co", "cu"] {
        let pk = ferrohsm_core::pedkey::PedKey::read(&key(&f, k))
            .unwrap()
            .unwrap();
        for (p, b) in &files {
            assert!(
                !contains(b, pk.value.expose()),
                "PED secret {k} in clear in {}",
                p.display()
            );
        }
    }
    // Object records (attributes, public values, wrapped material) are sealed: no attribute
    // name of the record format appears in clear. (Event records name objects by label by
    // design; labels are not secret.)
    for (p, b) in &files {
        for field in [
            &b"\"never_extractable\""[..],
            b"\"material\"",
            b"\"wrapped_pmk\"",
            b"\"verifier\"",
        ] {
            assert!(
                !contains(b, field),
                "a record field in clear in {}",
                p.display()
            );
        }
    }
}

// ---------- invariant 3: zeroize destroys everything; nothing recoverable ----------

#[test]
fn inv3_zeroize_leaves_nothing_recoverable() {
    let (f, mut hsm) = fixture();
    let device_key = std::fs::read(f.data.join("device.key")).unwrap()[8..40].to_vec();
    let c = db(&f);
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    for q in ["SELECT sealed FROM records", "SELECT sealed FROM objects"] {
        let mut st = c.prepare(q).unwrap();
        sealed.extend(
            st.query_map([], |r| r.get::<_, Vec<u8>>(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    drop(c);
    assert!(sealed.len() >= 6);
    let so = hsm_so(&f, &mut hsm);
    hsm.zeroize(&so, "test").unwrap();
    drop(hsm);
    for (p, b) in all_bytes(&f.data) {
        assert!(
            !contains(&b, &device_key),
            "device key survives in {}",
            p.display()
        );
        for s in &sealed {
            // Any 32-byte run of a sealed record would be a leftover page.
            assert!(
                !contains(&b, &s[13..45]),
                "sealed record survives in {}",
                p.display()
            );
        }
    }
    let mut hsm = Hsm::open(&f.data).unwrap();
    assert_eq!(hsm.info().unwrap().state, "zeroized");
    let e = hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(
                vec![key(&f, "so1"), key(&f, "so2")],
                Some(&f.so_pin),
            )),
        )
        .unwrap_err();
    assert!(matches!(e, HsmError::State(_)), "{e}");
}

#[test]
fn inv3_tamper_zeroizes_and_drops_activation() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ch = Pin::password("challenge-secret-1").unwrap();
    hsm.activate(&co, ch.clone()).unwrap();
    hsm.login(
        Role::CryptoOfficer,
        Some("p"),
        Credential::Secret(ch.clone()),
    )
    .unwrap();
    // The tamper switch is the HSM SO's: the Crypto Officer is refused and nothing changes.
    assert!(matches!(hsm.tamper(&co), Err(HsmError::Refused(_))));
    assert_eq!(hsm.info().unwrap().state, "initialised");
    let so = hsm_so(&f, &mut hsm);
    hsm.tamper(&so).unwrap();
    let info = hsm.info().unwrap();
    assert_eq!(info.state, "zeroized");
    assert!(info.tamper.is_some());
    assert!(hsm
        .login(Role::CryptoOfficer, Some("p"), Credential::Secret(ch))
        .is_err());
    assert!(!f.data.join("device.key").exists());
}

// ---------- invariant 4: failed-login limits, persisted before the answer ----------

#[test]
fn inv4_hsm_so_three_failures_zeroize_and_count_survives_reopen() {
    let (f, mut hsm) = fixture();
    let wrong = Pin::ped_pin("000000").unwrap();
    let so_keys = || vec![key(&f, "so1"), key(&f, "so3")];
    for left in [2u32, 1] {
        match hsm.login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(so_keys(), Some(&wrong))),
        ) {
            Err(HsmError::AuthFailed { remaining, .. }) => assert_eq!(remaining, Some(left)),
            other => panic!("expected AuthFailed, got {other:?}"),
        }
        // A new process sees the count: it was persisted before the answer.
        drop(hsm);
        hsm = Hsm::open(&f.data).unwrap();
        assert_eq!(hsm.info().unwrap().hsm_so.unwrap().failed_logins, 3 - left);
    }
    let e = hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(so_keys(), Some(&wrong))),
        )
        .unwrap_err();
    assert!(
        matches!(e, HsmError::Locked(_)) && e.to_string().contains("zeroized"),
        "{e}"
    );
    assert_eq!(hsm.info().unwrap().state, "zeroized");
    assert!(!f.data.join("device.key").exists());
}

#[test]
fn inv4_wrong_pin_then_right_pin_logs_in_and_resets_count() {
    let (f, mut hsm) = fixture();
    let wrong = Pin::ped_pin("000000").unwrap();
    for _ in 0..2 {
        assert!(hsm
            .login(
                Role::HsmSo,
                None,
                Credential::Ped(&mut ped(vec![key(&f, "so2"), key(&f, "so3")], Some(&wrong)))
            )
            .is_err());
    }
    hsm_so(&f, &mut hsm);
    assert_eq!(hsm.info().unwrap().hsm_so.unwrap().failed_logins, 0);
    // Two more wrong ones are then allowed again without zeroizing.
    for _ in 0..2 {
        assert!(hsm
            .login(
                Role::HsmSo,
                None,
                Credential::Ped(&mut ped(vec![key(&f, "so2"), key(&f, "so3")], Some(&wrong)))
            )
            .is_err());
    }
    assert_eq!(hsm.info().unwrap().state, "initialised");
}

#[test]
fn inv4_partition_so_ten_failures_zeroize_the_partition_only() {
    let (f, mut hsm) = fixture();
    // A blue key of another secret (the HSM SO's) presented as the Partition SO: wrong secret.
    let wrong = || ped(vec![key(&f, "so1"), key(&f, "so2")], Some(&f.so_pin));
    for i in 1..10 {
        let e = hsm
            .login(Role::PartitionSo, Some("p"), Credential::Ped(&mut wrong()))
            .unwrap_err();
        assert!(matches!(e, HsmError::AuthFailed { .. }), "attempt {i}: {e}");
    }
    let e = hsm
        .login(Role::PartitionSo, Some("p"), Credential::Ped(&mut wrong()))
        .unwrap_err();
    assert!(
        e.to_string().contains("partition p has been zeroized"),
        "{e}"
    );
    let info = hsm.info().unwrap();
    assert_eq!(info.state, "initialised", "the HSM survives");
    let p = &info.partitions[0];
    assert!(!p.initialised);
    assert_eq!(p.objects, 0);
    assert!(p.roles.is_empty());
    // The HSM SO still works.
    hsm_so(&f, &mut hsm);
}

#[test]
fn inv4_crypto_officer_locks_at_policy_limit_until_pso_resets() {
    let (f, mut hsm) = fixture();
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.set_partition_policy(&pso, "failed-login-limit", "3")
        .unwrap();
    // Another partition's black key: right colour, wrong secret.
    let so = hsm_so(&f, &mut hsm);
    hsm.create_partition(&so, "q").unwrap();
    hsm.init_partition(
        "q",
        NewSecret::Ped(&mut new_ped(vec![key(&f, "qso")], 1, 1, None)),
        ferrohsm_core::DomainChoice::None,
        None,
    )
    .unwrap();
    let qso = hsm
        .login(
            Role::PartitionSo,
            Some("q"),
            Credential::Ped(&mut ped(vec![key(&f, "qso")], None)),
        )
        .unwrap();
    hsm.init_role(
        &qso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut new_ped(vec![key(&f, "qco")], 1, 1, None)),
        false,
    )
    .unwrap();
    for _ in 0..2 {
        let e = hsm
            .login(
                Role::CryptoOfficer,
                Some("p"),
                Credential::Ped(&mut ped(vec![key(&f, "qco")], None)),
            )
            .unwrap_err();
        assert!(matches!(e, HsmError::AuthFailed { .. }), "{e}");
        assert!(e.to_string().contains("another secret"), "{e}");
    }
    let e = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "qco")], None)),
        )
        .unwrap_err();
    assert!(matches!(e, HsmError::Locked(_)), "{e}");
    // Now even the right key is refused.
    let e = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "co")], None)),
        )
        .unwrap_err();
    assert!(matches!(e, HsmError::Locked(_)), "{e}");
    // The CU is not affected; the PSO resets the CO.
    login(&f, &mut hsm, Role::CryptoUser, "cu");
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.reset_role(&pso, Role::CryptoOfficer).unwrap();
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
}

#[test]
fn inv4_bad_key_files_and_wrong_colour_are_not_counted_and_change_nothing() {
    let (f, mut hsm) = fixture();
    let before = std::fs::read(key(&f, "co")).unwrap();
    // Damaged file: one byte changed inside the value.
    let damaged = f.peds.join("damaged.pedkey");
    let mut b = before.clone();
    let pos = String::from_utf8_lossy(&b).find("\"value\"").unwrap() + 12;
    b[pos] = if b[pos] == b'A' { b'B' } else { b'A' };
    std::fs::write(&damaged, &b).unwrap();
    let truncated = f.peds.join("truncated.pedkey");
    std::fs::write(&truncated, &before[..before.len() / 2]).unwrap();
    for (file, want) in [
        (damaged, "integrity check failed"),
        (truncated, "damaged or truncated"),
    ] {
        let e = hsm
            .login(
                Role::CryptoOfficer,
                Some("p"),
                Credential::Ped(&mut ped(vec![file], None)),
            )
            .unwrap_err();
        assert!(matches!(e, HsmError::BadPedKey { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
    let e = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "cu")], None)),
        )
        .unwrap_err();
    assert!(matches!(e, HsmError::WrongKey(_)), "{e}");
    assert!(
        e.to_string().contains("gray (Crypto User)")
            && e.to_string().contains("black (Crypto Officer)"),
        "{e}"
    );
    let info = hsm.info().unwrap();
    let co = info.partitions[0]
        .roles
        .iter()
        .find(|r| r.role == "co")
        .unwrap();
    assert_eq!(
        co.failed_logins, 0,
        "bad files and wrong colours are not login attempts"
    );
    assert_eq!(std::fs::read(key(&f, "co")).unwrap(), before);
    login(&f, &mut hsm, Role::CryptoOfficer, "co");
}

// ---------- invariant 5: separation of duties ----------

#[test]
fn inv5_separation_of_duties() {
    let (f, mut hsm) = fixture();
    let so = hsm_so(&f, &mut hsm);
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let cu = login(&f, &mut hsm, Role::CryptoUser, "cu");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    let opts = KeyOptions {
        label: "x".into(),
        id: vec![],
        extractable: false,
    };
    let refused = |r: Result<(), HsmError>, needs: &str| {
        let e = r.expect_err("must be refused");
        assert!(matches!(e, HsmError::Refused(_)), "{e}");
        assert!(
            e.to_string().contains(needs),
            "refusal should name {needs}: {e}"
        );
    };
    // SOs never use partition keys.
    for s in [&so, &pso] {
        refused(
            hsm.sign(s, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
                .map(drop),
            "Crypto Officer",
        );
        refused(hsm.list_objects(s, None).map(drop), "Crypto Officer");
        refused(
            hsm.generate_key(s, KeySpec::Aes256, &opts).map(drop),
            "Crypto Officer",
        );
    }
    // The CU cannot create, change or delete.
    refused(
        hsm.generate_key(&cu, KeySpec::Aes256, &opts).map(drop),
        "Crypto Officer",
    );
    refused(hsm.destroy_object(&cu, ec.handle), "Crypto Officer");
    refused(
        hsm.init_role(
            &cu,
            Role::CryptoUser,
            NewSecret::Ped(&mut ped(vec![], None)),
            false,
        )
        .map(drop),
        "Crypto Officer",
    );
    // Only the HSM SO creates partitions and sets HSM policy; only the PSO partition policy.
    for s in [&pso, &co, &cu] {
        refused(hsm.create_partition(s, "z").map(drop), "HSM SO");
        refused(hsm.set_hsm_policy(s, "m-of-n", "off"), "HSM SO");
    }
    for s in [&so, &co, &cu] {
        refused(
            hsm.set_partition_policy(s, "activation", "off"),
            "Partition SO",
        );
        refused(hsm.reset_role(s, Role::CryptoOfficer), "Partition SO");
    }
    refused(
        hsm.init_role(
            &co,
            Role::CryptoOfficer,
            NewSecret::Ped(&mut ped(vec![], None)),
            true,
        )
        .map(drop),
        "Partition SO",
    );
    // And the CU can use keys.
    let sig = hsm
        .sign(&cu, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), b"m")
        .unwrap();
    let pubk = hsm.find_key(&cu, "ec", ObjectClass::PublicKey).unwrap();
    assert!(hsm
        .verify(
            &cu,
            pubk.handle,
            Mechanism::Ecdsa(Some(Hash::Sha256)),
            b"m",
            &sig
        )
        .unwrap());
    // Every refusal was recorded.
    let refusals = hsm
        .events()
        .unwrap()
        .iter()
        .filter(|e| e.outcome.starts_with("failure: refused"))
        .count();
    assert!(refusals >= 16, "{refusals} refusals recorded");
}

// ---------- invariant 7: no secret in messages, events or output ----------

#[test]
fn inv7_no_pin_or_secret_in_errors_or_events() {
    let (f, mut hsm) = fixture();
    let wrong = Pin::ped_pin("31415926").unwrap();
    let mut messages = Vec::new();
    messages.push(
        hsm.login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(vec![key(&f, "so1"), key(&f, "so2")], Some(&wrong))),
        )
        .unwrap_err()
        .to_string(),
    );
    messages.push(
        hsm.login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Secret(Pin::password("guess-this-9876").unwrap()),
        )
        .unwrap_err()
        .to_string(),
    );
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    hsm.activate(&co, Pin::password("the-challenge-5555").unwrap())
        .unwrap();
    messages.push(
        hsm.login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Secret(Pin::password("not-the-challenge").unwrap()),
        )
        .unwrap_err()
        .to_string(),
    );
    let events = format!("{:?}", hsm.events().unwrap());
    let mut secrets: Vec<String> = vec![
        "31415926".into(),
        "482916".into(),
        "guess-this-9876".into(),
        "the-challenge-5555".into(),
        "not-the-challenge".into(),
    ];
    for k in ["so1", "so2", "co", "dom"] {
        let pk = ferrohsm_core::pedkey::PedKey::read(&key(&f, k))
            .unwrap()
            .unwrap();
        secrets.push(hex::encode(pk.value.expose()));
        use base64::Engine as _;
        secrets.push(base64::engine::general_purpose::STANDARD.encode(pk.value.expose()));
    }
    for s in &secrets {
        assert!(!events.contains(s.as_str()), "secret in events");
        for m in &messages {
            assert!(!m.contains(s.as_str()), "secret in message {m}");
        }
    }
    let files = all_bytes(&f.data);
    for s in &secrets {
        for (p, b) in &files {
            assert!(!contains(b, s.as_bytes()), "secret in {}", p.display());
        }
    }
}

// ---------------------------------------------------------------- invariant 1: keys leave only wrapped, and only when allowed

#[test]
fn inv1_keys_leave_only_wrapped_and_only_when_attributes_allow() {
    use ferrohsm_core::object::KeyTemplate;
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    // A key-encryption key wraps and unwraps and does nothing else (key separation).
    let kek_tpl = KeyTemplate {
        wrap: Some(true),
        unwrap: Some(true),
        encrypt: Some(false),
        decrypt: Some(false),
        ..Default::default()
    };
    let kek = hsm
        .generate_key_with(
            &co,
            KeySpec::Aes256,
            &KeyOptions {
                label: "kek".into(),
                id: vec![],
                extractable: false,
            },
            &kek_tpl,
        )
        .unwrap()[0];
    let movable = hsm
        .generate_key(
            &co,
            KeySpec::Aes128,
            &KeyOptions {
                label: "movable".into(),
                id: vec![],
                extractable: true,
            },
        )
        .unwrap()[0];
    let fixed = hsm
        .find_key(&co, "aes", ObjectClass::SecretKey)
        .unwrap()
        .handle;
    let p = Params::default();
    // A key generated non-extractable never leaves, wrapped or not.
    let e = hsm
        .wrap_key(&co, kek, Mechanism::AesKwp, &p, fixed)
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("not extractable")),
        "{e}"
    );
    // A key that may not wrap cannot be used to wrap.
    let e = hsm
        .wrap_key(&co, movable, Mechanism::AesKwp, &p, movable)
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::KeyUse(m) if m.contains("CKA_WRAP")),
        "{e}"
    );
    // CKA_WRAP_WITH_TRUSTED: no key here is trusted, so such a key stays in.
    let guarded = hsm
        .generate_key_with(
            &co,
            KeySpec::Aes128,
            &KeyOptions {
                label: "guarded".into(),
                id: vec![],
                extractable: true,
            },
            &KeyTemplate {
                wrap_with_trusted: Some(true),
                ..Default::default()
            },
        )
        .unwrap()[0];
    let e = hsm
        .wrap_key(&co, kek, Mechanism::AesKwp, &p, guarded)
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("trusted")),
        "{e}"
    );
    // Allowed: out wrapped, back in as a new, non-local key that is the same key.
    let wrapped = hsm
        .wrap_key(&co, kek, Mechanism::AesKwp, &p, movable)
        .unwrap();
    assert_eq!(wrapped.len(), 16 + 8);
    let back = hsm
        .unwrap_key(
            &co,
            kek,
            Mechanism::AesKwp,
            &p,
            &wrapped,
            ObjectClass::SecretKey,
            None,
            &KeyOptions {
                label: "back".into(),
                id: vec![],
                extractable: false,
            },
            &KeyTemplate::default(),
        )
        .unwrap();
    let gcm = Params {
        iv: vec![3; 12],
        ..Default::default()
    };
    assert_eq!(
        hsm.encrypt(&co, movable, Mechanism::AesGcm, &gcm, b"same key?")
            .unwrap(),
        hsm.encrypt(&co, back, Mechanism::AesGcm, &gcm, b"same key?")
            .unwrap()
    );
    let info = hsm.list_objects(&co, Some("back")).unwrap().remove(0).attrs;
    assert!(!info.local && !info.always_sensitive && !info.never_extractable && info.sensitive);
    // A changed byte of the wrapped key is refused, never a different key.
    let mut bad = wrapped.clone();
    bad[3] ^= 1;
    assert!(matches!(
        hsm.unwrap_key(
            &co,
            kek,
            Mechanism::AesKwp,
            &p,
            &bad,
            ObjectClass::SecretKey,
            None,
            &KeyOptions {
                label: "bad".into(),
                id: vec![],
                extractable: false
            },
            &KeyTemplate::default()
        ),
        Err(HsmError::Crypto(_))
    ));
    // The Crypto User may use keys, not import them.
    let cu = login(&f, &mut hsm, Role::CryptoUser, "cu");
    assert!(matches!(
        hsm.unwrap_key(
            &cu,
            kek,
            Mechanism::AesKwp,
            &p,
            &wrapped,
            ObjectClass::SecretKey,
            None,
            &KeyOptions {
                label: "cu".into(),
                id: vec![],
                extractable: false
            },
            &KeyTemplate::default()
        ),
        Err(HsmError::Refused(_))
    ));
    // Nor export them: wrapping is the Crypto Officer's (and refused, audited).
    let e = hsm
        .wrap_key(&cu, kek, Mechanism::AesKwp, &p, movable)
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Refused(m) if m.contains("Crypto User")),
        "{e}"
    );
    // Every export and import is in the audit trail, durably, with what and by which key.
    let ev = hsm.events().unwrap();
    assert!(ev.iter().any(|e| e.event == "key-wrap"
        && e.object.as_deref() == Some("movable")
        && e.outcome.contains("\"kek\"")));
    assert!(ev
        .iter()
        .any(|e| e.event == "key-unwrap" && e.object.as_deref() == Some("back")));
    assert!(
        ev.iter().any(|e| e.event == "key-wrap"
            && e.outcome.starts_with("failure")
            && e.outcome.contains("not extractable")),
        "a refused export must be recorded"
    );
}

/// Inv 2: a sealed row put back from an older copy of itself (a valid seal, an older value)
/// is tamper, not the older state: it would reset a lockout count or bring back a changed PIN.
#[test]
fn inv2_an_older_copy_of_one_row_put_back_is_tamper() {
    let (f, mut hsm) = fixture();
    let row = |kind: &str| -> Vec<u8> {
        db(&f)
            .query_row("SELECT sealed FROM records WHERE kind=?1", [kind], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let put_back = |kind: &str, blob: &[u8]| {
        db(&f)
            .execute(
                "UPDATE records SET sealed=?1 WHERE kind=?2",
                rusqlite::params![blob, kind],
            )
            .unwrap();
    };
    // The Partition SO lowers the CO's failed-login limit (kept in the partition's record).
    let before = row("partition");
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.set_partition_policy(&pso, "failed-login-limit", "3")
        .unwrap();
    assert_ne!(row("partition"), before);
    // Putting the earlier record back would undo that: refused as tamper, recorded.
    put_back("partition", &before);
    let e = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![key(&f, "co")], None)),
        )
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Tamper(m) if m.contains("older copy")),
        "{e}"
    );
    assert!(hsm.info().is_err() || hsm.info().unwrap().tamper.is_some());
    drop(hsm);
    // The same for the device record (an HSM SO PIN changed, then the old record put back).
    let (g, mut hsm) = fixture();
    let old_device: Vec<u8> = rusqlite::Connection::open(g.data.join("hsm.db"))
        .unwrap()
        .query_row("SELECT sealed FROM records WHERE kind='device'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let so = hsm_so(&g, &mut hsm);
    hsm.change_pin(
        &so,
        &mut ped(vec![key(&g, "so1"), key(&g, "so2")], Some(&g.so_pin)),
        Some(Pin::ped_pin("97531").unwrap()),
    )
    .unwrap();
    rusqlite::Connection::open(g.data.join("hsm.db"))
        .unwrap()
        .execute(
            "UPDATE records SET sealed=?1 WHERE kind='device'",
            [&old_device],
        )
        .unwrap();
    let e = hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(
                vec![key(&g, "so1"), key(&g, "so2")],
                Some(&g.so_pin),
            )),
        )
        .unwrap_err();
    assert!(
        matches!(e, HsmError::Tamper(_)),
        "the old PIN must not come back: {e}"
    );
}

#[test]
fn inv2_an_older_copy_of_one_object_put_back_is_tamper() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let h = hsm
        .generate_key(
            &co,
            KeySpec::Aes256,
            &KeyOptions {
                label: "wrapper".into(),
                id: vec![],
                extractable: false,
            },
        )
        .unwrap()[0];
    let object = || -> Vec<u8> {
        db(&f)
            .query_row(
                "SELECT sealed FROM objects WHERE handle=?1",
                [h as i64],
                |r| r.get(0),
            )
            .unwrap()
    };
    // The Partition SO marks the key trusted, then takes the mark away again.
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    hsm.set_key_trusted(&pso, "wrapper", true).unwrap();
    let trusted = object();
    hsm.set_key_trusted(&pso, "wrapper", false).unwrap();
    assert_ne!(object(), trusted);
    // Putting the trusted copy back would make it a trusted wrapping key again: tamper.
    db(&f)
        .execute(
            "UPDATE objects SET sealed=?1 WHERE handle=?2",
            rusqlite::params![trusted, h as i64],
        )
        .unwrap();
    let e = hsm.object_info(Some(&co), "p", h).unwrap_err();
    assert!(
        matches!(&e, HsmError::Tamper(m) if m.contains("older copy")),
        "{e}"
    );
    drop(hsm);
    // A destroyed key brought back from an older copy (another object deleted so that the
    // counts agree) is not in the manifest: tamper, never a live key again.
    let (g, mut hsm) = fixture();
    let co = login(&g, &mut hsm, Role::CryptoOfficer, "co");
    let opts = |l: &str| KeyOptions {
        label: l.into(),
        id: vec![],
        extractable: false,
    };
    let a = hsm.generate_key(&co, KeySpec::Aes128, &opts("a")).unwrap()[0];
    let b = hsm.generate_key(&co, KeySpec::Aes128, &opts("b")).unwrap()[0];
    type Row = (i64, String, Vec<u8>, Vec<u8>, Vec<u8>);
    let saved: Row = db(&g)
        .query_row(
            "SELECT partition, class, label_tag, id_tag, sealed FROM objects WHERE handle=?1",
            [a as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    hsm.destroy_object(&co, a).unwrap();
    drop(hsm);
    let c = db(&g);
    c.execute("DELETE FROM objects WHERE handle=?1", [b as i64])
        .unwrap();
    c.execute(
        "INSERT INTO objects(partition, handle, class, label_tag, id_tag, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![saved.0, a as i64, saved.1, saved.2, saved.3, saved.4],
    )
    .unwrap();
    drop(c);
    let mut hsm = Hsm::open(&g.data).unwrap();
    let co = login(&g, &mut hsm, Role::CryptoOfficer, "co");
    let e = hsm.object_info(Some(&co), "p", a).unwrap_err();
    assert!(
        matches!(&e, HsmError::Tamper(m) if m.contains("not in the sealed manifest")),
        "{e}"
    );
}
