//! HA groups through the module, against real servers with mutual TLS: one slot with stable
//! handles over three members; keys acknowledged only once on two; members killed with
//! SIGKILL under load from eight threads (no error reaches the application, no stall over
//! 3 s); a member stopped while keys are made, which catches up by itself; a link cut and
//! healed; a member of another cloning domain refused before anything reaches it.
//!
//! `FERROHSM_HA_KILLS=100 cargo test -p ferrohsm-pkcs11 --test ha -- --nocapture --test-threads 1`
//! runs the long form: 100 kills under load, 200 keys each followed by a kill (see the
//! README's "HA groups").

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

mod harness;
use harness::ha::{HaLab, GROUP};
use harness::network::USER_PIN;

/// The module is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Finalizes the module when the test ends, however it ends (the next test initialises it).
struct Finalize(cryptoki::context::Pkcs11);

impl Drop for Finalize {
    fn drop(&mut self) {
        let _ = self.0.clone().finalize();
    }
}

fn pin() -> AuthPin {
    AuthPin::new(USER_PIN.into())
}

/// Kills in the CI form of the kill tests (`FERROHSM_HA_KILLS` for more).
fn kills(ci: usize) -> usize {
    std::env::var("FERROHSM_HA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

fn aes_key(s: &Session, label: &str) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ],
    )
    .unwrap()
}

fn logged_in(p11: &cryptoki::context::Pkcs11) -> (cryptoki::slot::Slot, Session) {
    let slots = p11.get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1, "an HA group is one slot");
    let s = p11.open_rw_session(slots[0]).unwrap();
    s.login(UserType::User, Some(&pin())).unwrap();
    (slots[0], s)
}

#[test]
fn a_group_is_one_slot_and_a_new_key_is_on_two_members_before_ok() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = HaLab::new(&["domain-pw"; 3], &[], "");
    let p11 = harness::load_module();
    let _fin = Finalize(p11.clone());
    let (slot, s) = logged_in(&p11);
    let info = p11.get_token_info(slot).unwrap();
    assert_eq!(info.label(), GROUP);
    let mut labels = Vec::new();
    for n in 0..5 {
        let label = format!("k{n}");
        let key = harness::ec_key(&s, &label);
        // Acknowledged: on at least two members already.
        let holding = (0..3)
            .filter(|&i| lab.holds(i, std::slice::from_ref(&label)) == 1)
            .count();
        assert!(holding >= 2, "{label} is on {holding} member(s) at CKR_OK");
        // The same handle works whichever member answers (calls go round the members).
        for _ in 0..6 {
            s.sign(&Mechanism::Ecdsa, key, &[7u8; 32]).unwrap();
        }
        labels.push(label);
    }
    // The third member gets them in the background.
    for i in 0..3 {
        lab.wait_for(i, &labels, Duration::from_secs(20));
    }
    let (code, out) = lab.ha(&["show"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("lag      0"), "{out}");
    // Destroyed on every member.
    let found = s.find_objects(&[Attribute::Label("k0".into())]).unwrap();
    assert_eq!(found.len(), 2, "the key pair k0");
    for o in found {
        s.destroy_object(o).unwrap();
    }
    for i in 0..3 {
        assert_eq!(lab.holds(i, &["k0".to_string()]), 0, "member {i}");
    }
}

/// Waits until the module's log says `n` members have come back (the background thread
/// rejoined them); how long it took.
fn wait_rejoined(lab: &HaLab, n: usize, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let back = lab.module_log().matches("is back in the group").count();
        if back >= n {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{back} of {n} rejoins after {limit:?}; module log:\n{}",
            lab.module_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What eight threads saw while signing: signatures made, the longest call, any errors.
#[derive(Default)]
struct Load {
    signed: AtomicUsize,
    worst: Mutex<Duration>,
    errors: Mutex<Vec<String>>,
}

/// Sets `stop` when dropped: a test that fails inside a thread scope stops its load threads
/// (or the scope would wait for them for ever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Eight sessions sign with `key` (and verify every fourth signature) until `stop`.
fn sign_load<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    p11: &'s cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    key: ObjectHandle,
    public: ObjectHandle,
    load: &'s Load,
    stop: &'s AtomicBool,
) {
    for _ in 0..8 {
        let session = p11.open_ro_session(slot).unwrap();
        scope.spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let data = n.to_be_bytes().repeat(8);
                let t = Instant::now();
                let r = session.sign(&Mechanism::Ecdsa, key, &data).and_then(|sig| {
                    if n.is_multiple_of(4) {
                        session.verify(&Mechanism::Ecdsa, public, &data, &sig)
                    } else {
                        Ok(())
                    }
                });
                let took = t.elapsed();
                let mut w = load.worst.lock().unwrap();
                *w = (*w).max(took);
                drop(w);
                match r {
                    Ok(()) => {
                        load.signed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => load.errors.lock().unwrap().push(e.to_string()),
                }
            }
        });
    }
}

fn ec_pair(s: &Session, label: &str) -> (ObjectHandle, ObjectHandle) {
    let private = harness::ec_key(s, label);
    let public = s
        .find_objects(&[
            Attribute::Label(label.into()),
            Attribute::Class(cryptoki::object::ObjectClass::PUBLIC_KEY),
        ])
        .unwrap()[0];
    (private, public)
}

#[test]
fn killing_members_under_eight_signing_threads_reaches_no_application() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = HaLab::new(&["domain-pw"; 3], &[], "");
    // An Auditor on the first member, to read what the group recorded there.
    lab.hsms[0].cli(&[
        "audit",
        "init",
        "--auth",
        "password",
        "--new-password",
        "env:CO_PW",
    ]);
    let p11 = harness::load_module();
    let _fin = Finalize(p11.clone());
    let (slot, s) = logged_in(&p11);
    let (key, public) = ec_pair(&s, "signer");
    let rounds = kills(3);
    let load = Load::default();
    let stop = AtomicBool::new(false);
    let mut rejoin_worst = Duration::ZERO;
    std::thread::scope(|scope| {
        sign_load(scope, &p11, slot, key, public, &load, &stop);
        let _stop = StopOnDrop(&stop);
        let t = Instant::now();
        while load.signed.load(Ordering::Relaxed) < 100 {
            assert!(t.elapsed() < Duration::from_secs(60), "nothing got signed");
            std::thread::sleep(Duration::from_millis(10));
        }
        for k in 0..rounds {
            // SIGKILL whichever member is next: some of the eight are mid-call on it.
            let i = k % 3;
            lab.hsms[i].server.kill();
            std::thread::sleep(Duration::from_millis(300));
            lab.hsms[i].restart();
            rejoin_worst = rejoin_worst.max(wait_rejoined(&lab, k + 1, Duration::from_secs(30)));
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    let errors = load.errors.lock().unwrap().clone();
    let worst = *load.worst.lock().unwrap();
    eprintln!(
        "{rounds} kills: {} signatures, no error: {}, longest call {worst:?}, longest rejoin {rejoin_worst:?}",
        load.signed.load(Ordering::Relaxed),
        errors.is_empty()
    );
    assert!(
        errors.is_empty(),
        "errors reached the application: {errors:?}"
    );
    assert!(worst < Duration::from_secs(3), "a call stalled {worst:?}");
    // The members recorded the changes in their audit logs: the first saw the others
    // leave and come back.
    let audit = lab.hsms[0].cli(&["audit", "show", "--password", "env:CO_PW"]);
    for event in ["ha-member-down", "ha-member-rejoined"] {
        assert!(audit.contains(event), "no {event} in\n{audit}");
    }
    // And the signing key's replication, to or from it, with the peer and the object's id.
    assert!(
        audit.contains("clone-in") || audit.contains("clone-out"),
        "no replication in\n{audit}"
    );
}

#[test]
fn a_key_acknowledged_survives_losing_any_one_member_right_after() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = HaLab::new(&["domain-pw"; 3], &[], "");
    let p11 = harness::load_module();
    let _fin = Finalize(p11.clone());
    let (_, s) = logged_in(&p11);
    // Twice the kills of the load test in the long form (200 for FERROHSM_HA_KILLS=100).
    let rounds = if std::env::var_os("FERROHSM_HA_KILLS").is_some() {
        2 * kills(3)
    } else {
        3
    };
    let mut labels = Vec::new();
    for k in 0..rounds {
        let label = format!("acked-{k}");
        let (key, _) = ec_pair(&s, &label);
        // CKR_OK: now kill a member at once (each in turn, so the one that made it too).
        let i = k % 3;
        lab.hsms[i].server.kill();
        s.sign(&Mechanism::Ecdsa, key, &[1u8; 32])
            .unwrap_or_else(|e| panic!("{label} after member {i} was killed: {e}"));
        lab.hsms[i].restart();
        wait_rejoined(&lab, k + 1, Duration::from_secs(30));
        labels.push(label);
    }
    for i in 0..3 {
        lab.wait_for(i, &labels, Duration::from_secs(30));
    }
    eprintln!("{rounds} keys, each followed by a kill: every one on all three members");
}

#[test]
fn a_stopped_member_catches_up_by_itself_when_it_returns() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = HaLab::new(&["domain-pw"; 3], &[], "");
    let p11 = harness::load_module();
    let _fin = Finalize(p11.clone());
    let (_, s) = logged_in(&p11);
    let (gone, _) = ec_pair(&s, "gone");
    lab.wait_for(2, &["gone".to_string()], Duration::from_secs(20));
    lab.hsms[2].server.kill();
    let labels: Vec<String> = (0..20).map(|n| format!("while-away-{n}")).collect();
    for l in &labels {
        aes_key(&s, l);
    }
    let public = s.find_objects(&[Attribute::Label("gone".into())]).unwrap();
    assert_eq!(public.len(), 2);
    for o in public {
        s.destroy_object(o).unwrap();
    }
    let _ = gone;
    lab.hsms[2].restart();
    // The application calls nothing: the module's background thread brings it back.
    let took = lab.wait_for(2, &labels, Duration::from_secs(30));
    wait_rejoined(&lab, 1, Duration::from_secs(30));
    assert_eq!(
        lab.holds(2, &["gone".to_string()]),
        0,
        "destroyed while it was away"
    );
    let (code, out) = lab.ha(&["show"]);
    assert_eq!(code, 0, "{out}");
    eprintln!("caught up with 20 keys in {took:?}\n{out}");
}

/// A key deleted by a process outside the group (here the command line, on each member it
/// can reach) while a member was away is not brought back by a later sync, a process that
/// never saw the deletion: every member keeps the ids of what was destroyed in it.
#[test]
fn a_deletion_made_elsewhere_is_not_undone_by_a_later_sync() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = HaLab::new(&["domain-pw"; 3], &[], "");
    let co = |lab: &HaLab, i: usize, args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--partition", "mine", "--password", "env:CO_PW"]);
        lab.hsms[i].cli(&a)
    };
    co(
        &lab,
        0,
        &["key", "generate", "--type", "aes-256", "--label", "doomed"],
    );
    co(
        &lab,
        0,
        &["key", "generate", "--type", "aes-256", "--label", "kept"],
    );
    let (code, out) = lab.ha(&["sync"]);
    assert_eq!(code, 0, "{out}");
    let both = ["doomed".to_string(), "kept".to_string()];
    for i in 0..3 {
        assert_eq!(lab.holds(i, &both), 2, "member {i}");
    }
    lab.hsms[2].server.kill();
    for i in 0..2 {
        co(&lab, i, &["key", "delete", "--label", "doomed"]);
    }
    lab.hsms[2].restart();
    let (code, out) = lab.ha(&["show"]);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("to destroy"), "{out}");
    let (code, out) = lab.ha(&["sync"]);
    assert_eq!(code, 0, "{out}");
    for i in 0..3 {
        assert_eq!(lab.labels(i), ["kept"], "member {i}");
    }
}

#[test]
fn a_cut_or_frozen_link_takes_the_member_out_and_healing_brings_it_back() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A silent link stalls a call for the deadline before it runs elsewhere: one second here.
    let lab = HaLab::new(&["domain-pw"; 3], &[2], "deadline_ms = 1000\n");
    let p11 = harness::load_module();
    let _fin = Finalize(p11.clone());
    let (slot, s) = logged_in(&p11);
    let (key, public) = ec_pair(&s, "signer");
    let load = Load::default();
    let stop = AtomicBool::new(false);
    let proxy = lab.proxies[2].as_ref().unwrap();
    let labels: Vec<String> = (0..5).map(|n| format!("cut-{n}")).collect();
    std::thread::scope(|scope| {
        sign_load(scope, &p11, slot, key, public, &load, &stop);
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(500));
        proxy.cut();
        for l in &labels {
            aes_key(&s, l);
        }
        std::thread::sleep(Duration::from_millis(500));
        proxy.restore();
        lab.wait_for(2, &labels, Duration::from_secs(30));
        // A link that silently stalls: calls on it wait out the deadline (1 s here), then
        // run on another member.
        proxy.freeze();
        std::thread::sleep(Duration::from_millis(2_500));
        proxy.cut();
        proxy.restore();
        wait_rejoined(&lab, 2, Duration::from_secs(30));
        stop.store(true, Ordering::SeqCst);
    });
    let errors = load.errors.lock().unwrap().clone();
    let worst = *load.worst.lock().unwrap();
    assert!(
        errors.is_empty(),
        "errors reached the application: {errors:?}\n{}",
        lab.module_log()
    );
    assert!(worst < Duration::from_secs(3), "a call stalled {worst:?}");
}

#[test]
fn a_member_of_another_cloning_domain_gets_nothing() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = HaLab::new(&["domain-pw", "domain-pw", "another-domain"], &[], "");
    let p11 = harness::load_module();
    let _fin = Finalize(p11.clone());
    let (_, s) = logged_in(&p11);
    let before = lab.labels(2);
    let labels: Vec<String> = (0..3).map(|n| format!("d-{n}")).collect();
    for l in &labels {
        aes_key(&s, l);
    }
    lab.wait_for(0, &labels, Duration::from_secs(20));
    lab.wait_for(1, &labels, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    // Refused at the proof, before any object: nothing of the group's on it.
    assert_eq!(lab.labels(2), before);
    let log = lab.module_log();
    assert!(log.contains("cloning domain"), "{log}");
    let (code, out) = lab.ha(&["show"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("lag      3"), "{out}");
}

#[test]
fn a_group_of_more_than_32_members_is_refused_when_the_module_loads() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("ha.conf");
    let members: String = (0..33)
        .map(|i| format!("ha_member = \"unix:/run/m{i}.sock mine\"\n"))
        .collect();
    std::fs::write(&conf, format!("ha_group = \"big\"\n{members}")).unwrap();
    std::env::set_var("FERROHSM_PKCS11_CONF", &conf);
    let p11 = cryptoki::context::Pkcs11::new(harness::module_path()).unwrap();
    let r = p11.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    assert!(
        matches!(
            r,
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::GeneralError,
                _
            ))
        ),
        "{r:?}"
    );
    // Thirty-two load.
    let members: String = (0..32)
        .map(|i| format!("ha_member = \"unix:/run/m{i}.sock mine\"\n"))
        .collect();
    std::fs::write(&conf, format!("ha_group = \"big\"\n{members}")).unwrap();
    let p11 = harness::load_module();
    let _fin = Finalize(p11.clone());
    // No member answers: no slot, and no error.
    assert!(p11.get_slots_with_token().unwrap().is_empty());
}
