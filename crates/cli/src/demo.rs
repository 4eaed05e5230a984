//! `ferrohsm demo`: the whole story in a fresh data directory, through the same engine calls
//! the other commands make, with every step and every refusal printed; its last act runs a
//! real `ferrohsm server` over the directory and goes through it.

use std::path::{Path, PathBuf};

use ferrohsm_core::hsm::{DomainChoice, InitOptions};
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism, Params};
use ferrohsm_core::object::{KeyOptions, ObjectClass};
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, Credential, Hsm, HsmError, NewSecret, Role};

use crate::commands::key_prefix;
use ferrohsm_client::Remote;
use ferrohsm_core::api::HsmApi;

type R<T> = Result<T, HsmError>;

fn step(n: &mut u32, title: &str) {
    *n += 1;
    println!("\n[{n}] {title}");
}

fn ok(msg: impl AsRef<str>) {
    println!("    ok: {}", msg.as_ref());
}

/// Runs an action that must be refused, and prints the refusal. A demo where it is *not*
/// refused is a broken HSM, so that is an error.
fn refused<T>(what: &str, r: R<T>) -> R<()> {
    match r {
        Ok(_) => Err(HsmError::State(format!(
            "demo: {what} was allowed, but must be refused"
        ))),
        Err(e) => {
            println!(
                "    refused as it must be: {what}\n      -> {e} (exit code {})",
                crate::exit_code(&e)
            );
            Ok(())
        }
    }
}

fn random_digits(n: usize) -> String {
    let mut b = vec![0u8; n];
    ferrohsm_core::crypto::fill_random(&mut b);
    b.iter().map(|x| char::from(b'0' + x % 10)).collect()
}

fn keys(dir: &Path, prefix: &str, idx: &[u8]) -> Vec<PathBuf> {
    idx.iter()
        .map(|i| dir.join(format!("{prefix}-{i}.pedkey")))
        .collect()
}

fn ped(keys: Vec<PathBuf>, pin: Option<&Pin>) -> LocalPed {
    LocalPed::new(PedAnswers {
        keys,
        pin: pin.cloned(),
        ..Default::default()
    })
}

/// A `ferrohsm server` child process over the demo's directory, stopped when dropped.
struct DemoServer(std::process::Child);

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The served part of the story: start a server, show the directory is its alone, sign
/// through it from an "application" thread, zeroize as the HSM SO through it, and watch the
/// application's next call fail; then stop the server with SIGTERM.
fn served(
    root: &Path,
    data: &Path,
    peds: &Path,
    so_prefix: &str,
    co_prefix: &str,
    so_pin: &Pin,
    key: u64,
) -> R<()> {
    let socket = root.join("ferrohsm.sock");
    let conf = root.join("server.toml");
    std::fs::write(
        &conf,
        format!("data_dir = {data:?}\nsocket = {socket:?}\nlog = \"warn\"\n"),
    )
    .map_err(|e| HsmError::io(&conf, e))?;
    let exe = std::env::current_exe().map_err(|e| HsmError::io("ferrohsm", e))?;
    let log = root.join("server.log");
    let err = std::fs::File::create(&log).map_err(|e| HsmError::io(&log, e))?;
    let child = std::process::Command::new(exe)
        .args(["server", "--config"])
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| HsmError::io("ferrohsm server", e))?;
    let mut server = DemoServer(child);
    let started = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            return Err(HsmError::State(format!(
                "demo: the server did not start; see {}",
                log.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ok(format!(
        "ferrohsm server (process {}) listens on {}",
        server.0.id(),
        socket.display()
    ));
    refused(
        "opening the served directory in this process (no second copy of the keys)",
        Hsm::open(data),
    )?;

    // The application: its own connection, the CO's black key presented through it.
    let co_keys = keys(peds, co_prefix, &[1]);
    let app_socket = socket.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let app = std::thread::spawn(move || -> R<(u64, HsmError)> {
        let mut app = Remote::connect(&app_socket)?;
        let co = app.login(
            Role::CryptoOfficer,
            Some("payments"),
            ferrohsm_core::api::LoginCredential::ped_key_files(&co_keys, None)?,
        )?;
        let mut signed = 0u64;
        loop {
            match app.sign(co, key, Mechanism::Ecdsa(Some(Hash::Sha256)), b"invoice") {
                Ok(_) => {
                    signed += 1;
                    if signed == 100 {
                        let _ = ready_tx.send(());
                    }
                }
                Err(e) => return Ok((signed, e)),
            }
        }
    });
    ready_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .map_err(|_| HsmError::State("demo: the application did not sign".into()))?;
    ok("an application signs in a loop through the server; it holds no key, only a login id");

    let mut officer = Remote::connect(&socket)?;
    let so = officer.login(
        Role::HsmSo,
        None,
        ferrohsm_core::api::LoginCredential::ped_key_files(
            &keys(peds, so_prefix, &[1, 3]),
            Some(so_pin.clone()),
        )?,
    )?;
    officer.zeroize(so, "demo: zeroize through the server")?;
    let (signed, err) = app
        .join()
        .map_err(|_| HsmError::State("demo: the application thread failed".into()))??;
    ok(format!(
        "the HSM SO zeroized through the server; the application, after {signed} signatures, was refused on its very next call: {err}"
    ));
    ok(format!("the server says: {}", officer.summary()?.state));

    let pid = server.0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let t = std::time::Instant::now();
    loop {
        match server.0.try_wait() {
            Ok(Some(st)) => {
                ok(format!(
                    "SIGTERM: the server finished its requests and stopped ({st})"
                ));
                break;
            }
            _ if t.elapsed() > std::time::Duration::from_secs(30) => {
                return Err(HsmError::State("demo: the server did not stop".into()))
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    Ok(())
}

/// Runs the demo in `dir` (or a temporary directory).
pub fn run(dir: Option<PathBuf>) -> R<u8> {
    let tmp;
    let tmp_used;
    let root = match dir {
        Some(d) => {
            if d.join("ferrohsm-data").exists() {
                return Err(HsmError::InvalidInput(format!(
                    "{} already holds a demo HSM; give a fresh directory",
                    d.display()
                )));
            }
            tmp_used = false;
            d
        }
        None => {
            tmp_used = true;
            tmp = tempfile::Builder::new()
                .prefix("ferrohsm-demo-")
                .tempdir()
                .map_err(|e| HsmError::io("tmp", e))?;
            tmp.path().to_path_buf()
        }
    };
    let tmp_note = tmp_used;
    let data = root.join("ferrohsm-data");
    let peds = root.join("ped-keys");
    let mut n = 0;

    println!(
        "ferrohsm demo: a PED-authenticated HSM from nothing, in {}",
        root.display()
    );
    println!("(PED PINs and challenge secrets are random, held in memory, and never printed.)");

    step(
        &mut n,
        "Imprint the Auditor on a white key, before the HSM itself is initialised",
    );
    let mut hsm = Hsm::open_or_create(&data)?;
    let serial = hsm.serial().to_string();
    let aud_prefix = key_prefix(&serial, None, "auditor");
    hsm.audit_init(
        NewSecret::Ped(&mut LocalPed::new(PedAnswers {
            keys: keys(&peds, &aud_prefix, &[1]),
            ..Default::default()
        })),
        None,
    )?;
    ok("Auditor imprinted; from now on every action is recorded in a signed Merkle log that only the Auditor reads");

    step(&mut n, "Initialise the HSM: HSM SO split 2 of 3 on blue keys with a PED PIN; cloning domain on a red key");
    let so_pin = Pin::ped_pin(&random_digits(6))?;
    let so_prefix = key_prefix(&serial, None, "hsm-so");
    let dom_prefix = key_prefix(&serial, None, "domain");
    let mut so_ped = LocalPed::new(PedAnswers {
        keys: keys(&peds, &so_prefix, &[1, 2, 3]),
        m: 2,
        n: 3,
        pin: Some(so_pin.clone()),
        ..Default::default()
    });
    let mut dom_ped = LocalPed::new(PedAnswers {
        keys: keys(&peds, &dom_prefix, &[1]),
        duplicates: 1,
        ..Default::default()
    });
    hsm.init(InitOptions {
        label: "demo-hsm".into(),
        mode: AuthMode::Ped,
        so: NewSecret::Ped(&mut so_ped),
        domain: NewSecret::Ped(&mut dom_ped),
        current_so: None,
        confirm_destroy: vec![],
    })?;
    ok(format!("HSM {serial} initialised, PED-authenticated; 3 blue keys, any 2 with the PIN log the HSM SO in; red key plus one backup copy"));

    step(&mut n, "HSM SO logs in with blue keys 1 and 3 (of 3) and the PED PIN, creates partition \"payments\"");
    let so = hsm.login(
        Role::HsmSo,
        None,
        Credential::Ped(&mut ped(keys(&peds, &so_prefix, &[1, 3]), Some(&so_pin))),
    )?;
    hsm.create_partition(&so, "payments")?;
    ok("partition payments created (id 1, PKCS#11 slot 1)");

    step(
        &mut n,
        "A wrong PED PIN counts as a failed login, and the next correct login still works",
    );
    let wrong = Pin::ped_pin(&format!("{}9", random_digits(5)))?;
    let wrong = if wrong.expose() == so_pin.expose() {
        Pin::ped_pin("00000")?
    } else {
        wrong
    };
    match hsm.login(
        Role::HsmSo,
        None,
        Credential::Ped(&mut ped(keys(&peds, &so_prefix, &[2, 3]), Some(&wrong))),
    ) {
        Err(e @ HsmError::AuthFailed { .. }) => println!("    failed as it must: {e}"),
        Err(e) => return Err(e),
        Ok(_) => return Err(HsmError::State("demo: a wrong PED PIN logged in".into())),
    }
    hsm.login(
        Role::HsmSo,
        None,
        Credential::Ped(&mut ped(keys(&peds, &so_prefix, &[2, 3]), Some(&so_pin))),
    )?;
    ok("correct PIN accepted; the failed-login counter is back to 0 (3 in a row would zeroize the HSM)");

    step(
        &mut n,
        "Partition SO initialises \"payments\" (one blue key, no PIN); the HSM's red key joins it to the HSM's cloning domain",
    );
    let pso_prefix = key_prefix(&serial, Some("payments"), "so");
    let mut pso_ped = LocalPed::new(PedAnswers {
        keys: keys(&peds, &pso_prefix, &[1]),
        ..Default::default()
    });
    hsm.init_partition(
        "payments",
        NewSecret::Ped(&mut pso_ped),
        // The HSM keeps no copy of its domain that its device key alone opens: joining it
        // takes the red key again.
        DomainChoice::Hsm(Credential::Ped(&mut ped(
            keys(&peds, &dom_prefix, &[1]),
            None,
        ))),
        None,
    )?;
    let pso = hsm.login(
        Role::PartitionSo,
        Some("payments"),
        Credential::Ped(&mut ped(keys(&peds, &pso_prefix, &[1]), None)),
    )?;
    hsm.set_partition_policy(&pso, "activation", "on")?;
    hsm.set_partition_policy(&pso, "failed-login-limit", "5")?;
    ok("Partition SO imprinted; policies activation=on, failed-login-limit=5");

    step(
        &mut n,
        "Partition SO initialises the Crypto Officer (black key)",
    );
    let co_prefix = key_prefix(&serial, Some("payments"), "co");
    let mut co_ped = LocalPed::new(PedAnswers {
        keys: keys(&peds, &co_prefix, &[1]),
        ..Default::default()
    });
    hsm.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut co_ped),
        false,
    )?;
    ok("Crypto Officer imprinted; a new partition master key now wraps every key in payments");

    step(
        &mut n,
        "Crypto Officer logs in with the black key and activates with a challenge secret",
    );
    let co = hsm.login(
        Role::CryptoOfficer,
        Some("payments"),
        Credential::Ped(&mut ped(keys(&peds, &co_prefix, &[1]), None)),
    )?;
    let challenge = Pin::password(&ferrohsm_core::crypto::random_hex_id(12))?;
    hsm.activate(&co, challenge.clone())?;
    let co = hsm.login(
        Role::CryptoOfficer,
        Some("payments"),
        Credential::Secret(challenge.clone()),
    )?;
    ok("activated: applications now log the Crypto Officer in with the challenge secret alone");

    step(
        &mut n,
        "Crypto Officer generates AES-256, EC P-256 and RSA-2048 keys inside the HSM",
    );
    for (spec, label) in [
        (KeySpec::Aes256, "data-key"),
        (KeySpec::EcP256, "ec-signer"),
        (KeySpec::Rsa2048, "rsa-signer"),
    ] {
        let h = hsm.generate_key(
            &co,
            spec,
            &KeyOptions {
                label: label.into(),
                id: vec![],
                extractable: false,
            },
        )?;
        ok(format!(
            "{spec} {label:?} -> handle(s) {h:?}, sensitive, never extractable"
        ));
    }

    step(
        &mut n,
        "Sign and verify with both key pairs; encrypt and decrypt with AES-GCM",
    );
    let msg = b"pay 100 EUR to account 42";
    for label in ["ec-signer", "rsa-signer"] {
        let private = hsm.find_key(&co, label, ObjectClass::PrivateKey)?;
        let public = hsm.find_key(&co, label, ObjectClass::PublicKey)?;
        let mech = private
            .attrs
            .key_spec()?
            .default_sign()
            .ok_or_else(|| HsmError::State("no sign mechanism".into()))?;
        let sig = hsm.sign(&co, private.handle, mech, msg)?;
        let good = hsm.verify(&co, public.handle, mech, msg, &sig)?;
        let bad = hsm.verify(&co, public.handle, mech, b"pay 999 EUR to account 42", &sig)?;
        if !good || bad {
            return Err(HsmError::State(format!(
                "demo: {label} verification gave valid={good}, tampered={bad}"
            )));
        }
        ok(format!("{label}: {mech} signature of {} bytes verifies; the same signature on an altered message does not", sig.len()));
    }
    let aes = hsm.find_key(&co, "data-key", ObjectClass::SecretKey)?;
    let mut iv = vec![0u8; 12];
    ferrohsm_core::crypto::fill_random(&mut iv);
    let p = Params {
        iv,
        aad: b"record 7".to_vec(),
        label: vec![],
    };
    let ct = hsm.encrypt(&co, aes.handle, Mechanism::AesGcm, &p, msg)?;
    let pt = hsm.decrypt(&co, aes.handle, Mechanism::AesGcm, &p, &ct)?;
    if pt.expose() != msg {
        return Err(HsmError::State("demo: AES-GCM round trip differs".into()));
    }
    ok(format!(
        "AES-256-GCM: {} bytes of ciphertext and tag decrypt back to the message",
        ct.len()
    ));

    step(
        &mut n,
        "GlobalPlatform: a card's transport keys entered by two custodians, the issuer's masters made inside, the card personalised over SCP03",
    );
    gp_card(&mut hsm, &co)?;

    step(
        &mut n,
        "Crypto Officer initialises the Crypto User (gray key); the Crypto User signs",
    );
    let cu_prefix = key_prefix(&serial, Some("payments"), "cu");
    let mut cu_ped = LocalPed::new(PedAnswers {
        keys: keys(&peds, &cu_prefix, &[1]),
        ..Default::default()
    });
    hsm.init_role(&co, Role::CryptoUser, NewSecret::Ped(&mut cu_ped), false)?;
    let cu = hsm.login(
        Role::CryptoUser,
        Some("payments"),
        Credential::Ped(&mut ped(keys(&peds, &cu_prefix, &[1]), None)),
    )?;
    let ec = hsm.find_key(&cu, "ec-signer", ObjectClass::PrivateKey)?;
    hsm.sign(&cu, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), msg)?;
    ok("Crypto User signed with ec-signer (read-only use)");

    step(&mut n, "One refused action at each role boundary");
    refused(
        "the Crypto User generates a key",
        hsm.generate_key(
            &cu,
            KeySpec::Aes256,
            &KeyOptions {
                label: "cu-key".into(),
                id: vec![],
                extractable: false,
            },
        ),
    )?;
    refused(
        "the Crypto User deletes a key",
        hsm.destroy_object(&cu, ec.handle),
    )?;
    refused(
        "the Partition SO signs with a partition key",
        hsm.sign(&pso, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), msg),
    )?;
    refused(
        "the HSM SO lists the partition's keys",
        hsm.list_objects(&so, None),
    )?;
    refused(
        "the HSM SO changes a partition policy",
        hsm.set_partition_policy(&so, "activation", "off"),
    )?;
    refused(
        "the Crypto Officer creates a partition",
        hsm.create_partition(&co, "rogue"),
    )?;
    refused(
        "the Crypto Officer initialises another Crypto Officer",
        hsm.init_role(
            &co,
            Role::CryptoOfficer,
            NewSecret::Ped(&mut ped(vec![], None)),
            true,
        ),
    )?;
    refused(
        "a red (cloning domain) key presented for the HSM SO",
        hsm.login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(keys(&peds, &dom_prefix, &[1]), None)),
        ),
    )?;
    refused(
        "one blue key of a 2-of-3 set",
        hsm.login(
            Role::HsmSo,
            None,
            Credential::Ped(&mut ped(keys(&peds, &so_prefix, &[2]), Some(&so_pin))),
        ),
    )?;

    step(
        &mut n,
        "The HSM SO restarts the HSM (the Crypto User may not); the activation ends (auto-activation is off)",
    );
    refused("the Crypto User restarts the HSM", hsm.restart(&cu))?;
    hsm.restart(&so)?;
    refused(
        "the challenge secret after a restart",
        hsm.login(
            Role::CryptoOfficer,
            Some("payments"),
            Credential::Secret(challenge),
        ),
    )?;

    step(&mut n, "The Auditor reads the trail, exports it, and it is verified offline with the HSM's public key");
    refused(
        "the Crypto User reads the audit log",
        hsm.audit_records(&cu),
    )?;
    let aud = hsm.login(
        Role::Auditor,
        None,
        Credential::Ped(&mut ped(keys(&peds, &aud_prefix, &[1]), None)),
    )?;
    refused(
        "the Auditor signs with a partition key",
        hsm.sign(&aud, ec.handle, Mechanism::Ecdsa(Some(Hash::Sha256)), msg),
    )?;
    let events = hsm.audit_records(&aud)?;
    let failures = events
        .iter()
        .filter(|e| e.outcome.starts_with("failure"))
        .count();
    println!(
        "    {} records, {} of them failures or refusals; the last five:",
        events.len(),
        failures
    );
    for e in events.iter().rev().take(5).rev() {
        println!(
            "      #{:<3} {} {:<16} {:<8} {:<9} {}",
            e.seq,
            e.time,
            e.event,
            e.role,
            e.partition.clone().unwrap_or_default(),
            e.outcome
        );
    }
    let export = hsm.audit_export(&aud, 1, &[])?;
    let export_file = root.join("audit-export.json");
    std::fs::write(&export_file, export.to_bytes()).map_err(|e| HsmError::io(&export_file, e))?;
    let opts = ferrohsm_audit::VerifyOptions {
        public_key: Some(hsm.audit_public_key()?),
        prove: Some(1),
        ..Default::default()
    };
    let report = ferrohsm_audit::verify_export(&export, &opts)
        .map_err(|e| HsmError::Tamper(e.to_string()))?;
    for line in report.to_string().lines() {
        println!("    {line}");
    }
    let mut forged = export.clone();
    forged.records[1].record = forged.records[1].record.replacen("success", "SUCCESS", 1);
    match ferrohsm_audit::verify_export(&forged, &opts) {
        Err(e) => println!("    the same export with one record edited fails: {e}"),
        Ok(_) => {
            return Err(HsmError::State(
                "demo: an edited audit export verified".into(),
            ))
        }
    }
    ok(format!(
        "export written to {} (anyone can check it: ferrohsm-audit verify FILE --public-key KEY)",
        export_file.display()
    ));

    step(
        &mut n,
        "The HSM becomes its own process: `ferrohsm server` owns the directory; an application signs through it; the HSM SO zeroizes",
    );
    drop(hsm);
    served(
        &root, &data, &peds, &so_prefix, &co_prefix, &so_pin, ec.handle,
    )?;

    step(&mut n, "Where the PED key files are (each is one secret or one share; keep them like physical keys)");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&peds)
        .map_err(|e| HsmError::io(&peds, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in &files {
        if let Ok(Some(k)) = ferrohsm_core::pedkey::PedKey::read(f) {
            println!("    {}  {}", f.display(), k.info.summary());
        }
    }
    println!(
        "    data directory: {} (zeroized in the step before: no device key, no key material; the audit log kept)",
        data.display()
    );
    if tmp_note {
        println!("    (a temporary directory, removed when the demo ends; `ferrohsm demo --dir DIR` keeps it)");
    }

    println!("\ndemo complete: {n} steps, every refusal refused, every signature checked.");
    Ok(crate::exit::OK)
}

/// Opens an SCP03 channel (every protection) to `card` through the engine with `keys`.
fn gp_open(
    hsm: &mut Hsm,
    co: &ferrohsm_core::Session,
    card: &mut ferrohsm_gp::card::SimCard,
    keys: &ferrohsm_core::hsm::GpKeysRef,
    p1: u8,
) -> R<String> {
    let mut host = [0u8; 8];
    ferrohsm_core::crypto::fill_random(&mut host);
    let gpe = |e: ferrohsm_gp::GpError| HsmError::State(format!("demo card: {e}"));
    let iu = ferrohsm_gp::apdu::initialize_update(p1, &host)
        .to_bytes()
        .map_err(gpe)?;
    let r = ferrohsm_gp::apdu::Response::parse(&card.transmit(&iu)).map_err(gpe)?;
    let data = r.expect_ok("INITIALIZE UPDATE").map_err(gpe)?;
    let (ch, ea) = hsm.gp_open(co, keys, &host, &data, "c-mac,c-dec,r-mac,r-enc", 0x55)?;
    if card.transmit(&ea) != [0x90, 0x00] {
        return Err(HsmError::State(
            "demo: the card refused EXTERNAL AUTHENTICATE".into(),
        ));
    }
    Ok(ch)
}

/// The GlobalPlatform step: transport keys by ceremony, masters generated, the card given
/// its own KDF3 keys by PUT KEY, and the proof.
fn gp_card(hsm: &mut Hsm, co: &ferrohsm_core::Session) -> R<()> {
    use ferrohsm_core::hsm::{GpKeysRef, GpNewSet};
    let mut kdd = [0u8; 10];
    ferrohsm_core::crypto::fill_random(&mut kdd);
    let kind = ferrohsm_gp::block::KeyType::Aes128;
    let (mut card, [a, b]) = crate::gp::transport_card(3, kind, kdd)?;
    let comps: Vec<_> = a.into_iter().chain(b).collect();
    hsm.gp_import(
        co,
        &GpNewSet::new("transport", "aes-128", 1, "vendor batch 7"),
        &comps,
        &[],
    )?;
    ok("transport keys of the card's batch imported from two custodians' components, each checked against its KCV");
    let m = hsm.gp_generate(
        co,
        &GpNewSet::new("issuer", "aes-128", 1, "payment cards 2026"),
    )?;
    let kcvs: Vec<String> = m.kcvs.iter().map(|(r, _, v)| format!("{r} {v}")).collect();
    ok(format!(
        "master set issuer v1 generated inside: KCV (aes-gp) {}; never extractable",
        kcvs.join(", ")
    ));
    let transport = GpKeysRef {
        set: "transport".into(),
        version: None,
        method: None,
    };
    let issuer = GpKeysRef {
        set: "issuer".into(),
        version: None,
        method: Some("kdf3".into()),
    };
    let ch = gp_open(hsm, co, &mut card, &transport, 0)?;
    let put = hsm.gp_put_key(co, &ch, &issuer, 1, 1)?;
    let answer = hsm.gp_unwrap(co, &ch, &card.transmit(&put))?;
    hsm.gp_close(co, &ch)?;
    if answer.ends_with(&[0x90, 0x00]) {
        ok(format!(
            "card {}: PUT KEY over SCP03 (C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION); the card confirmed KCVs {}",
            hex::encode_upper(kdd),
            answer[1..answer.len() - 2]
                .chunks(3)
                .map(hex::encode_upper)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    } else {
        return Err(HsmError::State("demo: the card refused PUT KEY".into()));
    }
    let proof = gp_open(hsm, co, &mut card, &issuer, 1)?;
    hsm.gp_close(co, &proof)?;
    refused(
        "a channel with the card's old transport keys",
        gp_open(hsm, co, &mut card, &transport, 1),
    )?;
    ok("a new channel opens with the card's own keys (diversified by KDF3 from issuer, inside the HSM)");
    Ok(())
}
