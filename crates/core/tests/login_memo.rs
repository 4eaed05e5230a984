//! The login memo (`ferrohsm_core::login_memo`): a process reuses the stretched password of a
//! Crypto Officer's recent successful login, and nothing else about a login changes — wrong
//! passwords are still counted and lock the role, a locked role stays locked, a changed
//! password or policy ends what was remembered. One test in its own binary, because the memo
//! is process-wide and tests in one binary run side by side.

mod common;

use common::password_hsm;
use ferrohsm_core::login_memo;
use ferrohsm_core::policy::DEFAULT_LOGIN_CACHE_SECONDS;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{Credential, Hsm, HsmError, NewSecret};
use ferrohsm_core::{Role, Session};

fn pw(s: &str) -> Pin {
    Pin::password(s).unwrap()
}

fn co(hsm: &mut Hsm, password: &str) -> Result<Session, HsmError> {
    hsm.login(
        Role::CryptoOfficer,
        Some("tok"),
        Credential::Secret(pw(password)),
    )
}

fn pso(hsm: &mut Hsm) -> Session {
    hsm.login(
        Role::PartitionSo,
        Some("tok"),
        Credential::Secret(pw("partition-so-pw")),
    )
    .unwrap()
}

#[test]
fn a_remembered_login_changes_no_rule_of_logging_in() {
    let (_tmp, mut hsm) = password_hsm();
    pso(&mut hsm);
    let info = hsm.info().unwrap();
    let tok = info.partitions.iter().find(|x| x.label == "tok").unwrap();
    assert_eq!(
        tok.policy["login-cache-seconds"],
        DEFAULT_LOGIN_CACHE_SECONDS.to_string(),
        "shown to operators, at its default"
    );
    assert_eq!(login_memo::len(), 0, "SO logins are never remembered");

    // A successful Crypto Officer login is remembered; the next is served and works.
    let s = co(&mut hsm, "user-pin-1234").unwrap();
    assert_eq!(login_memo::len(), 1);
    drop(s);
    let s = co(&mut hsm, "user-pin-1234").unwrap();
    assert_eq!(s.role(), Role::CryptoOfficer);

    // Wrong passwords are still refused and counted, one by one, and a right one still
    // resets the count.
    for left in (7..=9).rev() {
        let e = co(&mut hsm, "user-pin-0000").unwrap_err();
        assert!(
            matches!(e, HsmError::AuthFailed { remaining: Some(n), .. } if n == left),
            "{e}"
        );
    }
    co(&mut hsm, "user-pin-1234").unwrap();
    let e = co(&mut hsm, "user-pin-0000").unwrap_err();
    assert!(
        matches!(
            e,
            HsmError::AuthFailed {
                remaining: Some(9),
                ..
            }
        ),
        "the count restarted after the right password: {e}"
    );
    // Ten wrong in a row lock the role, and the remembered right password does not open it.
    for _ in 0..9 {
        assert!(co(&mut hsm, "user-pin-0000").is_err());
    }
    let e = co(&mut hsm, "user-pin-1234").unwrap_err();
    assert!(matches!(e, HsmError::Locked(_)), "{e}");

    // The Partition SO's reset ends what was remembered; the password works again.
    let p = pso(&mut hsm);
    hsm.reset_role(&p, Role::CryptoOfficer).unwrap();
    assert_eq!(login_memo::len(), 0);
    let s = co(&mut hsm, "user-pin-1234").unwrap();
    assert_eq!(login_memo::len(), 1);

    // A new password: the old one is refused at once, the new one works.
    hsm.change_secret(&s, NewSecret::Password(pw("user-pin-5678")))
        .unwrap();
    assert_eq!(login_memo::len(), 0);
    let e = co(&mut hsm, "user-pin-1234").unwrap_err();
    assert!(matches!(e, HsmError::AuthFailed { .. }), "{e}");
    co(&mut hsm, "user-pin-5678").unwrap();
    assert_eq!(login_memo::len(), 1);

    // A policy of 0 seconds: nothing is remembered, and logins still work.
    let p = pso(&mut hsm);
    hsm.set_partition_policy(&p, "login-cache-seconds", "0")
        .unwrap();
    assert_eq!(login_memo::len(), 0);
    co(&mut hsm, "user-pin-5678").unwrap();
    co(&mut hsm, "user-pin-5678").unwrap();
    assert_eq!(login_memo::len(), 0);

    // A zeroize wipes the memo with everything else.
    hsm.set_partition_policy(&p, "login-cache-seconds", "60")
        .unwrap();
    co(&mut hsm, "user-pin-5678").unwrap();
    assert_eq!(login_memo::len(), 1);
    let so = hsm
        .login(
            Role::HsmSo,
            None,
            Credential::Secret(Pin::password("hsm-so-password").unwrap()),
        )
        .unwrap();
    hsm.zeroize(&so, "test").unwrap();
    assert_eq!(login_memo::len(), 0);
}
