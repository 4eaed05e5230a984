//! The per-login key cache (DESIGN.md invariant: a destroyed key is never used): keys are
//! served from it only while the store is unchanged, whoever changed it — this connection,
//! another connection in this process, or another process.

mod common;

use common::*;
use ferrohsm_core::mechanism::{Hash, Mechanism, Params};
use ferrohsm_core::object::ObjectClass;
use ferrohsm_core::{Credential, Hsm, HsmError, Role};

const ECDSA: Mechanism = Mechanism::Ecdsa(Some(Hash::Sha256));

fn gcm() -> Params {
    Params {
        iv: vec![0; 12],
        ..Default::default()
    }
}

#[test]
fn a_key_destroyed_through_this_handle_is_not_served_from_the_cache() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    // Twice: the second use is served from the cache.
    hsm.sign(&co, ec.handle, ECDSA, b"m").unwrap();
    hsm.sign(&co, ec.handle, ECDSA, b"m").unwrap();
    hsm.destroy_object(&co, ec.handle).unwrap();
    let e = hsm.sign(&co, ec.handle, ECDSA, b"m").unwrap_err();
    assert!(matches!(e, HsmError::NotFound(_)), "{e}");
}

#[test]
fn a_key_destroyed_through_another_connection_is_not_served_from_the_cache() {
    let (f, mut a) = fixture();
    let co_a = login(&f, &mut a, Role::CryptoOfficer, "co");
    let aes = a.find_key(&co_a, "aes", ObjectClass::SecretKey).unwrap();
    a.encrypt(&co_a, aes.handle, Mechanism::AesGcm, &gcm(), b"m")
        .unwrap();
    // Audit-only commits by other connections do not matter; a state change does.
    let mut b = Hsm::open(&f.data).unwrap();
    let co_b = login(&f, &mut b, Role::CryptoOfficer, "co");
    b.encrypt(&co_b, aes.handle, Mechanism::AesGcm, &gcm(), b"m")
        .unwrap();
    a.encrypt(&co_a, aes.handle, Mechanism::AesGcm, &gcm(), b"m")
        .unwrap();
    b.destroy_object(&co_b, aes.handle).unwrap();
    let e = a
        .encrypt(&co_a, aes.handle, Mechanism::AesGcm, &gcm(), b"m")
        .unwrap_err();
    assert!(matches!(e, HsmError::NotFound(_)), "{e}");
}

#[test]
fn a_loaded_key_is_refused_to_a_session_that_may_not_use_it() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    let k = hsm.load_key(&co, ec.handle).unwrap();
    // The Partition SO never uses partition keys, even one another session loaded.
    let pso = login(&f, &mut hsm, Role::PartitionSo, "pso");
    let e = hsm.sign_loaded(&pso, &k, ECDSA, b"m").unwrap_err();
    assert!(matches!(e, HsmError::Refused(_)), "{e}");
    // The public key has no private material to sign with.
    let public = hsm.find_key(&co, "ec", ObjectClass::PublicKey).unwrap();
    let pk = hsm.load_key(&co, public.handle).unwrap();
    let e = hsm.sign_loaded(&co, &pk, ECDSA, b"m").unwrap_err();
    assert!(
        matches!(e, HsmError::Refused(_) | HsmError::InvalidInput(_)),
        "{e}"
    );
}

/// The other process of the test below: destroys one key and exits. Runs only when the
/// parent test starts it.
#[test]
#[ignore = "helper process for another_process_destroying_a_key_is_seen_at_once"]
fn helper_destroy_key_in_child_process() {
    let (Some(dir), Some(peds), Some(handle)) = (
        std::env::var_os("FH_CACHE_TEST_DATA"),
        std::env::var_os("FH_CACHE_TEST_PEDS"),
        std::env::var("FH_CACHE_TEST_HANDLE").ok(),
    ) else {
        return;
    };
    let mut hsm = Hsm::open(std::path::Path::new(&dir)).unwrap();
    let co_key = std::path::Path::new(&peds).join("co.pedkey");
    let co = hsm
        .login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Ped(&mut ped(vec![co_key], None)),
        )
        .unwrap();
    hsm.destroy_object(&co, handle.parse().unwrap()).unwrap();
}

#[test]
fn another_process_destroying_a_key_is_seen_at_once() {
    let (f, mut hsm) = fixture();
    let co = login(&f, &mut hsm, Role::CryptoOfficer, "co");
    let ec = hsm.find_key(&co, "ec", ObjectClass::PrivateKey).unwrap();
    hsm.sign(&co, ec.handle, ECDSA, b"m").unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_destroy_key_in_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env("FH_CACHE_TEST_DATA", &f.data)
        .env("FH_CACHE_TEST_PEDS", &f.peds)
        .env("FH_CACHE_TEST_HANDLE", ec.handle.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = hsm.sign(&co, ec.handle, ECDSA, b"m").unwrap_err();
    assert!(matches!(e, HsmError::NotFound(_)), "{e}");
}
