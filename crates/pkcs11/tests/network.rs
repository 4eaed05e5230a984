//! The module over a network that misbehaves, between it and a real server with mutual TLS:
//! a TCP proxy the test controls cuts the link for less than the server's lease (the
//! application's session, login and handles survive), for longer (one
//! `CKR_USER_NOT_LOGGED_IN`, then `C_Login` and `C_OpenSession` work again), and freezes it
//! (a call fails at its deadline, never hangs).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::session::{SessionState, UserType};
use cryptoki::types::AuthPin;

mod harness;
use harness::ec_key;
use harness::network::{Proxy, TlsHsm, USER_PIN};

/// The module is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The server's lease in these tests (seconds).
const LEASE_S: u64 = 3;

fn pin() -> AuthPin {
    AuthPin::new(USER_PIN.into())
}

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// A served HSM with a lease of [`LEASE_S`], a proxy in front of its TLS listener, and the
/// module loaded as host1 through the proxy: a session logged in, and a P-256 key.
struct Proxied {
    _hsm: TlsHsm,
    proxy: Proxy,
    p11: cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    s: cryptoki::session::Session,
    key: cryptoki::object::ObjectHandle,
}

/// [`Proxied`], with `module_extra` lines in the module's configuration and the key
/// labelled `label`.
fn proxied(module_extra: &str, label: &str) -> Proxied {
    let hsm = TlsHsm::new(&format!("lease_s = {LEASE_S}\n"));
    let proxy = Proxy::start(&hsm.addr);
    hsm.module_conf(&proxy.addr, module_extra);
    let p11 = harness::load_module();
    let slot = p11.get_slots_with_token().unwrap()[0];
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin())).unwrap();
    let key = ec_key(&s, label);
    Proxied {
        _hsm: hsm,
        proxy,
        p11,
        slot,
        s,
        key,
    }
}

#[test]
fn a_link_lost_for_less_than_the_lease_keeps_session_login_and_handles() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Proxied {
        _hsm,
        proxy,
        p11,
        slot: _,
        s,
        key,
    } = proxied("", "lease");
    s.sign(&Mechanism::Ecdsa, key, &[1u8; 32]).unwrap();

    // The link goes: the call in hand fails promptly (the connection is reset), not at
    // the deadline, and so does one made while it is down.
    proxy.cut();
    let t = Instant::now();
    assert!(s.sign(&Mechanism::Ecdsa, key, &[2u8; 32]).is_err());
    assert!(s.sign(&Mechanism::Ecdsa, key, &[2u8; 32]).is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(1000));
    // Back within the lease: the same session, login and key handle work, with no new
    // C_Login.
    proxy.restore();
    let sig = s.sign(&Mechanism::Ecdsa, key, &[3u8; 32]).unwrap();
    assert_eq!(sig.len(), 64);
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    drop(s);
    p11.finalize().unwrap();
}

#[test]
fn past_the_lease_the_application_is_told_once_and_logs_in_again() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Proxied {
        _hsm,
        proxy,
        p11,
        slot,
        s,
        key,
    } = proxied("", "gone");
    proxy.cut();
    // Longer than the lease (and the server's once-a-quarter-second sweep).
    std::thread::sleep(Duration::from_secs(LEASE_S + 1));
    proxy.restore();
    // The login ended with the lease: said once, as "not logged in"...
    assert_eq!(
        rv(s.sign(&Mechanism::Ecdsa, key, &[4u8; 32])),
        RvError::UserNotLoggedIn
    );
    // ...and never an error for ever: the application logs in again and carries on, in
    // this session and in a new one.
    s.login(UserType::User, Some(&pin())).unwrap();
    assert_eq!(
        s.sign(&Mechanism::Ecdsa, key, &[5u8; 32]).unwrap().len(),
        64
    );
    let s2 = p11.open_rw_session(slot).unwrap();
    assert_eq!(
        s2.sign(&Mechanism::Ecdsa, key, &[6u8; 32]).unwrap().len(),
        64
    );
    drop((s, s2));
    p11.finalize().unwrap();
}

#[test]
fn a_frozen_link_fails_the_call_at_its_deadline_and_the_next_call_reconnects() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Proxied {
        _hsm,
        proxy,
        p11,
        slot: _,
        s,
        key,
    } = proxied("deadline_ms = 1500\n", "frozen");
    // Bytes go in and nothing comes back: the call fails at its deadline, not later.
    proxy.freeze();
    let t = Instant::now();
    assert_eq!(
        rv(s.sign(&Mechanism::Ecdsa, key, &[7u8; 32])),
        RvError::DeviceError
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The stalled connection is dropped; the next call connects afresh and, within the
    // lease, finds the login.
    proxy.restore();
    assert_eq!(
        s.sign(&Mechanism::Ecdsa, key, &[8u8; 32]).unwrap().len(),
        64
    );
    drop(s);
    p11.finalize().unwrap();
}

/// The module may trust the server by a CA (`server_ca`) instead of a pinned key: with the
/// server's certificate issued by that CA for 127.0.0.1, the host's slot is there and signs.
#[test]
fn the_module_trusts_a_server_certificate_issued_by_its_ca() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.path().join("ca.crt"),
        dir.path().join("server.crt"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let hsm = TlsHsm::new(&format!(
        "tls_cert = {cert_file:?}\ntls_key = {key_file:?}\n"
    ));
    let (cert, key) = hsm.host_files();
    let conf = dir.path().join("pkcs11.conf");
    std::fs::write(
        &conf,
        format!(
            "server = \"tls://{}\"\nclient_cert = {cert:?}\nclient_key = {key:?}\nserver_ca = {ca_file:?}\n",
            hsm.addr
        ),
    )
    .unwrap();
    std::env::set_var("FERROHSM_PKCS11_CONF", &conf);
    let p11 = harness::load_module();
    std::env::remove_var("FERROHSM_PKCS11_CONF");
    let slots = p11.get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1);
    let s = p11.open_rw_session(slots[0]).unwrap();
    s.login(UserType::User, Some(&pin())).unwrap();
    let k = ec_key(&s, "ca");
    assert_eq!(s.sign(&Mechanism::Ecdsa, k, &[1u8; 32]).unwrap().len(), 64);
    drop(s);
    p11.finalize().unwrap();
}
