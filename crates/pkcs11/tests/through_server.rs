//! The module against a real `ferrohsm server` process, where the boundary shows: the server
//! killed with SIGKILL while eight threads sign, the HSM SO zeroizing while an application
//! signs, no server at all, and a trace of the application's file system calls.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

mod harness;
use harness::{ec_key, ServerProcess};

/// The module is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const USER_PIN: &str = "user-pin-1";

/// The module's deadline for one call to the server (the client's default).
const DEADLINE: Duration = Duration::from_secs(10);

fn pin(s: &str) -> AuthPin {
    AuthPin::new(s.into())
}

fn rv(e: Error) -> RvError {
    match e {
        Error::Pkcs11(rv, _) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// A served HSM with token "tok" (made through the module), its user PIN set, and the module
/// loaded against the server.
struct Served {
    tmp: tempfile::TempDir,
    server: Option<ServerProcess>,
    p11: Option<Pkcs11>,
    slot: Slot,
}

impl Served {
    fn new() -> Served {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        harness::password_hsm(&data, true);
        let server = Some(harness::serve(&data));
        let p11 = harness::load_module();
        let slot = p11.get_slots_with_token().unwrap()[0];
        p11.init_token(slot, &pin("so-pin-1"), "tok").unwrap();
        let s = p11.open_rw_session(slot).unwrap();
        s.login(UserType::So, Some(&pin("so-pin-1"))).unwrap();
        s.init_pin(&pin(USER_PIN)).unwrap();
        s.logout().unwrap();
        drop(s);
        Served {
            tmp,
            server,
            p11: Some(p11),
            slot,
        }
    }

    fn p11(&self) -> &Pkcs11 {
        self.p11.as_ref().unwrap()
    }

    fn data(&self) -> std::path::PathBuf {
        self.tmp.path().join("data")
    }

    fn socket(&self) -> std::path::PathBuf {
        self.tmp.path().join("ferrohsm.sock")
    }

    fn user_session(&self) -> Session {
        let s = self.p11().open_rw_session(self.slot).unwrap();
        match s.login(UserType::User, Some(&pin(USER_PIN))) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("login: {e:?}"),
        }
        s
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(p) = self.p11.take() {
            let _ = p.finalize();
        }
        self.server.take();
    }
}

fn find_labelled(s: &Session, label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[Attribute::Label(label.into())]).unwrap()
}

fn private_key(s: &Session, label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[
        Attribute::Label(label.into()),
        Attribute::Class(ObjectClass::PRIVATE_KEY),
    ])
    .unwrap()
}

/// kill -9 of the server while eight threads sign (and a ninth makes keys): every call
/// errors within its deadline and none hangs; after a restart the application logs in
/// again and signs; every key whose generation was acknowledged is there.
#[test]
fn kill_9_of_the_server_while_eight_threads_sign() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Served::new();
    let s = lab.user_session();
    let (data, socket) = (lab.data(), lab.socket());
    let server = std::cell::RefCell::new(lab.server.take());
    kill_and_restart_under_load(
        lab.p11(),
        lab.slot,
        &s,
        || server.borrow_mut().as_mut().unwrap().kill(),
        || *server.borrow_mut() = Some(harness::start_server(&data, &socket)),
    );
}

/// The same over mutual TLS: the module's connections are reset by the kill, every call
/// fails within its deadline, and after the restart (same address, same server key) the
/// application logs in again and carries on.
#[test]
fn kill_9_of_the_server_over_tls_while_eight_threads_sign() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hsm = std::cell::RefCell::new(harness::network::TlsHsm::new(""));
    let addr = hsm.borrow().addr.clone();
    hsm.borrow().module_conf(&addr, "");
    let p11 = harness::load_module();
    std::env::remove_var("FERROHSM_PKCS11_CONF");
    let slot = p11.get_slots_with_token().unwrap()[0];
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    kill_and_restart_under_load(
        &p11,
        slot,
        &s,
        || hsm.borrow_mut().server.kill(),
        || hsm.borrow_mut().restart(),
    );
    drop(s);
    p11.finalize().unwrap();
}

/// Eight threads sign and a ninth makes keys through `p11` (its user logged in on `s`);
/// `kill` kills the server under them; every call then fails with `CKR_DEVICE_ERROR`
/// within the deadline; `restart` brings a server back, and the application logs in again,
/// signs, and finds every key whose generation was acknowledged.
fn kill_and_restart_under_load(
    p11: &cryptoki::context::Pkcs11,
    slot: Slot,
    s: &Session,
    kill: impl FnOnce(),
    restart: impl FnOnce(),
) {
    let signer = ec_key(s, "signer");
    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        for _ in 0..8 {
            let session = p11.open_ro_session(slot).unwrap();
            let (stop, signed) = (stop.clone(), signed.clone());
            threads.push(scope.spawn(move || {
                // Sign until the server goes; then the first failure, and how long it took.
                loop {
                    let t = Instant::now();
                    match session.sign(&Mechanism::Ecdsa, signer, &[7u8; 32]) {
                        Ok(_) => {
                            signed.fetch_add(1, Ordering::Relaxed);
                            if stop.load(Ordering::SeqCst) {
                                panic!("a signature after the server was killed");
                            }
                        }
                        Err(e) => return (rv(e), t.elapsed()),
                    }
                }
            }));
        }
        let maker = {
            let session = p11.open_rw_session(slot).unwrap();
            let acknowledged = acknowledged.clone();
            scope.spawn(move || {
                let mut i = 0;
                loop {
                    i += 1;
                    let label = format!("made-{i}");
                    let made = session.generate_key(
                        &Mechanism::AesKeyGen,
                        &[
                            Attribute::Token(true),
                            Attribute::ValueLen(32.into()),
                            Attribute::Label(label.clone().into()),
                        ],
                    );
                    match made {
                        Ok(_) => acknowledged.lock().unwrap().push(label),
                        Err(e) => return rv(e),
                    }
                }
            })
        };
        // Let them get going, then kill the server outright.
        let t = Instant::now();
        while signed.load(Ordering::Relaxed) < 200 || acknowledged.lock().unwrap().len() < 3 {
            assert!(t.elapsed() < Duration::from_secs(60), "nothing got signed");
            std::thread::sleep(Duration::from_millis(10));
        }
        kill();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            let (code, took) = t.join().unwrap();
            assert_eq!(code, RvError::DeviceError, "a signer's error");
            assert!(
                took < DEADLINE + Duration::from_secs(2),
                "a call took {took:?}"
            );
        }
        assert_eq!(
            maker.join().unwrap(),
            RvError::DeviceError,
            "the maker's error"
        );
    });
    // While no server answers, calls fail at once: nothing waits on a dead socket.
    let t = Instant::now();
    assert_eq!(
        rv(s.sign(&Mechanism::Ecdsa, signer, &[1u8; 32]).unwrap_err()),
        RvError::DeviceError
    );
    assert!(t.elapsed() < DEADLINE);

    // A restart: the application's login ended with the old server. The module finds that
    // out when the application logs in again on its open session, and lets it.
    restart();
    assert_eq!(
        rv(s.sign(&Mechanism::Ecdsa, signer, &[7u8; 32]).unwrap_err()),
        RvError::UserNotLoggedIn
    );
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    assert_eq!(private_key(s, "signer"), vec![signer]);
    s.sign(&Mechanism::Ecdsa, signer, &[7u8; 32]).unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 3);
    for label in &acknowledged {
        assert_eq!(
            find_labelled(s, label).len(),
            1,
            "{label} was acknowledged and is lost"
        );
    }
}

/// `hsm zeroize` by the HSM SO through the server ends an application's login at once: the
/// application, signing in a loop through the module, gets an error on its very next call.
#[test]
fn zeroize_through_the_server_stops_a_signing_application_at_its_next_call() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Served::new();
    let s = lab.user_session();
    let signer = ec_key(&s, "signer");
    let zeroized = AtomicBool::new(false);
    let (code, signed, s) = std::thread::scope(|scope| {
        let z = &zeroized;
        let app = scope.spawn(move || {
            let mut n = 0u64;
            loop {
                // Read before the call: a call that starts after zeroize returned must fail.
                let after = z.load(Ordering::SeqCst);
                match s.sign(&Mechanism::Ecdsa, signer, &[7u8; 32]) {
                    Ok(_) if after => panic!("signed after zeroize returned"),
                    Ok(_) => n += 1,
                    Err(e) => return (rv(e), n, s),
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new(harness::server_binary())
            .arg("--server")
            .arg(lab.socket())
            .args(["hsm", "zeroize", "--yes", "--password", "env:SO_PW"])
            .env("SO_PW", harness::HSM_SO_PW)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "zeroize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        zeroized.store(true, Ordering::SeqCst);
        app.join().unwrap()
    });
    assert!(signed > 0, "the application never signed");
    assert_eq!(code, RvError::UserNotLoggedIn);
    // Nothing is left to log in to.
    assert!(s.login(UserType::User, Some(&pin(USER_PIN))).is_err());
}

/// With no server at the configured socket the module shows no slot, and its log says where
/// it looked and why.
#[test]
fn no_server_no_slots_and_the_log_says_where_the_module_looked() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("nobody-here.sock");
    let log = tmp.path().join("module.log");
    std::env::remove_var("FERROHSM_HOME");
    std::env::remove_var("FERROHSM_PKCS11_CONF");
    std::env::set_var("FERROHSM_SERVER", &socket);
    std::env::set_var("FERROHSM_PKCS11_LOG", &log);
    let p11 = harness::load_module();
    let slots = p11.get_all_slots().unwrap();
    p11.finalize().unwrap();
    std::env::remove_var("FERROHSM_PKCS11_LOG");
    assert!(slots.is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("server unix:{}", socket.display()))
            && text.contains("no ferrohsm server answers"),
        "{text}"
    );
}

/// The boundary from the application's side: an application that logs in, finds its key and
/// signs through the module opens no file of the data directory (strace records every file
/// system call and connection of the process and its threads).
#[test]
fn an_application_through_the_server_opens_nothing_of_the_hsm() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed (.ci/run installs it)");
        return;
    }
    let lab = Served::new();
    ec_key(&lab.user_session(), "signer");
    let trace = lab.tmp.path().join("app.trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=%file,connect", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_application_signing_through_the_module",
            "--ignored",
            "--nocapture",
        ])
        .env("FERROHSM_SERVER", lab.socket())
        .env_remove("FERROHSM_HOME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the application failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let trace = std::fs::read_to_string(&trace).unwrap();
    assert!(
        trace.contains("ferrohsm.sock"),
        "the application connected to the server:\n{trace}"
    );
    let data = lab.data().canonicalize().unwrap().display().to_string();
    assert!(
        !trace.contains(&data),
        "the application touched the data directory:\n{trace}"
    );
    for secret_file in ["device.key", "audit.key", "hsm.db"] {
        assert!(!trace.contains(secret_file), "it opened {secret_file}");
    }
}

/// Run by the test above, under strace: an application's whole life with the module.
#[test]
#[ignore = "helper process for an_application_through_the_server_opens_nothing_of_the_hsm"]
fn helper_application_signing_through_the_module() {
    let p11 = harness::load_module();
    let slot = p11.get_slots_with_token().unwrap()[0];
    let s = p11.open_ro_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let key = private_key(&s, "signer")[0];
    let sig = s.sign(&Mechanism::Ecdsa, key, &[7u8; 32]).unwrap();
    assert_eq!(sig.len(), 64);
    drop(s);
    p11.finalize().unwrap();
}

/// The module over the network: a host registered by the HSM SO and assigned one partition
/// reaches it over mutual TLS, sees only it, and signs with its keys.
#[test]
fn the_module_over_mutual_tls_sees_only_its_partition() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hsm = harness::network::TlsHsm::new("");
    hsm.module_conf(&hsm.addr, "");
    let p11 = harness::load_module();
    let slots = p11.get_slots_with_token().unwrap();
    std::env::remove_var("FERROHSM_PKCS11_CONF");
    assert_eq!(slots.len(), 1, "only its partition is a slot");
    assert_eq!(p11.get_token_info(slots[0]).unwrap().label(), "mine");
    let s = p11.open_rw_session(slots[0]).unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let key = ec_key(&s, "net");
    let sig = s.sign(&Mechanism::Ecdsa, key, &[9u8; 32]).unwrap();
    assert_eq!(sig.len(), 64);
    drop(s);
    p11.finalize().unwrap();
}
