//! Audit throughput: durable appends per second alone and under concurrent signing load, and
//! what auditing every key use costs signing, in one run, side by side.
//!
//! Run: `cargo bench -p ferrohsm-core --bench audit` (prints a table; nothing is asserted:
//! these are figures, not tests).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohsm_core::audit::{AuditConfig, KeyUseAudit};
use ferrohsm_core::hsm::InitOptions;
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism};
use ferrohsm_core::object::{KeyOptions, ObjectClass};
use ferrohsm_core::ped::{LocalPed, PedAnswers};
use ferrohsm_core::{AuthMode, Credential, DomainChoice, Hsm, NewSecret, Role, Session};

const RUN: Duration = Duration::from_millis(1500);

fn ped(dir: &Path, name: &str) -> LocalPed {
    LocalPed::new(PedAnswers {
        keys: vec![dir.join(format!("{name}.pedkey"))],
        ..Default::default()
    })
}

fn setup(dir: &Path) {
    let mut h = Hsm::open_or_create(&dir.join("data")).unwrap();
    h.audit_init(NewSecret::Ped(&mut ped(dir, "aud")), None)
        .unwrap();
    h.init(InitOptions {
        label: "bench".into(),
        mode: AuthMode::Ped,
        so: NewSecret::Ped(&mut ped(dir, "so")),
        domain: NewSecret::Ped(&mut ped(dir, "dom")),
        current_so: None,
        confirm_destroy: vec![],
    })
    .unwrap();
    let so = h
        .login(Role::HsmSo, None, Credential::Ped(&mut ped(dir, "so")))
        .unwrap();
    h.create_partition(&so, "p").unwrap();
    h.init_partition(
        "p",
        NewSecret::Ped(&mut ped(dir, "pso")),
        DomainChoice::None,
        None,
    )
    .unwrap();
    let pso = h
        .login(
            Role::PartitionSo,
            Some("p"),
            Credential::Ped(&mut ped(dir, "pso")),
        )
        .unwrap();
    h.init_role(
        &pso,
        Role::CryptoOfficer,
        NewSecret::Ped(&mut ped(dir, "co")),
        false,
    )
    .unwrap();
    let co = h
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(dir, "co")),
        )
        .unwrap();
    h.generate_key(
        &co,
        KeySpec::EcP256,
        &KeyOptions {
            label: "ec".into(),
            id: vec![],
            extractable: false,
        },
    )
    .unwrap();
}

fn co(dir: &Path) -> (Hsm, Session, u64) {
    let mut h = Hsm::open(&dir.join("data")).unwrap();
    let s = h
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(dir, "co")),
        )
        .unwrap();
    let k = h
        .find_key(&s, "ec", ObjectClass::PrivateKey)
        .unwrap()
        .handle;
    (h, s, k)
}

fn set_mode(dir: &Path, mode: KeyUseAudit) {
    let mut h = Hsm::open(&dir.join("data")).unwrap();
    let a = h
        .login(Role::Auditor, None, Credential::Ped(&mut ped(dir, "aud")))
        .unwrap();
    h.set_audit_config(
        &a,
        AuditConfig {
            key_use: mode,
            ceremony_cosignatures: 3,
        },
    )
    .unwrap();
}

/// Signatures per second over `threads` threads, each with its own HSM handle and session.
fn sign_rate(dir: &Path, threads: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let d = dir.to_path_buf();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut h, s, k) = co(&d);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    h.sign(
                        &s,
                        k,
                        Mechanism::Ecdsa(Some(Hash::Sha256)),
                        b"benchmark message",
                    )
                    .unwrap();
                    n += 1;
                }
                h.flush_key_use().unwrap();
                n
            })
        })
        .collect();
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / RUN.as_secs_f64()
}

/// Durable state changes (each one audit record, one checkpoint, one fsync) per second,
/// optionally while another thread signs flat out.
fn append_rate(dir: &Path, with_signing: bool) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let signer = with_signing.then(|| {
        let d = dir.to_path_buf();
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Log in before the append loop starts: a writer in a tight loop can starve
            // another connection's login (a write) of SQLite's lock.
            let (mut h, s, k) = co(&d);
            let _ = ready_tx.send(());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                h.sign(&s, k, Mechanism::Ecdsa(Some(Hash::Sha256)), b"load")
                    .unwrap();
                n += 1;
            }
            n
        })
    });
    if with_signing {
        ready_rx.recv().unwrap();
    }
    let mut h = Hsm::open(&dir.join("data")).unwrap();
    let so = h
        .login(Role::HsmSo, None, Credential::Ped(&mut ped(dir, "so")))
        .unwrap();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < RUN {
        h.restart(&so).unwrap();
        n += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let signs = signer.map(|s| s.join().unwrap()).unwrap_or(0);
    (n as f64 / secs, signs as f64 / secs)
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    println!(
        "ferrohsm audit benchmark ({} ms per figure, ECDSA P-256 signing through the engine)",
        RUN.as_millis()
    );
    println!();
    let (alone, _) = append_rate(dir, false);
    let (loaded, signs) = append_rate(dir, true);
    println!("durable appends/s (state change + record + checkpoint + fsync)");
    println!("  alone                      {alone:>10.0}");
    println!("  under signing load         {loaded:>10.0}   ({:.0} signatures/s alongside; ratio to alone {:.2})", signs, loaded / alone);
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "signing, key-use auditing", "1 thread/s", "2 threads/s", "scaling"
    );
    let mut base = (0.0, 0.0);
    for (name, mode) in [
        ("off", KeyUseAudit::Off),
        ("batched (100 ms)", KeyUseAudit::Batched { max_ms: 100 }),
        ("strict (group commit)", KeyUseAudit::Strict),
    ] {
        set_mode(dir, mode);
        let one = sign_rate(dir, 1);
        let two = sign_rate(dir, 2);
        if mode == KeyUseAudit::Off {
            base = (one, two);
            println!("{name:<28} {one:>12.0} {two:>12.0} {:>9.2}x", two / one);
        } else {
            println!("{name:<28} {one:>12.0} {two:>12.0} {:>9.2}x   cost vs off: {:.1} % (1 thread), {:.1} % (2 threads)",
                two / one, 100.0 * (1.0 - one / base.0), 100.0 * (1.0 - two / base.1));
        }
    }
}
