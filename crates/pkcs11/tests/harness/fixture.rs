//! A fresh HSM for a `cryptoki` test: the module loaded over it (embedded or through a
//! server, as [`super::transport`] says), a token made through PKCS#11, and the error code
//! of a refusal.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// The module loaded over a fresh HSM (and its server, in server mode).
pub struct Fixture {
    // The server, in server mode: stopped before the directory it serves goes.
    pub _server: Option<super::ServerProcess>,
    pub _tmp: tempfile::TempDir,
    pub p11: Option<Pkcs11>,
}

impl Fixture {
    /// The loaded module.
    pub fn p11(&self) -> &Pkcs11 {
        self.p11.as_ref().expect("module loaded")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // cryptoki does not finalize on drop; the next test initialises again.
        if let Some(p) = self.p11.take() {
            let _ = p.finalize();
        }
    }
}

/// A password-authenticated HSM with nothing in it whose HSM SO lets C_InitToken create
/// partitions, and the module loaded over it.
pub fn fixture() -> Fixture {
    fixture_with(true)
}

/// [`fixture`], with or without the HSM SO letting C_InitToken create partitions.
pub fn fixture_with(init_token: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    super::password_hsm(&data, init_token);
    let server = super::reach(&data);
    let p11 = super::load_module();
    Fixture {
        _server: server,
        _tmp: tmp,
        p11: Some(p11),
    }
}

impl Fixture {
    /// Runs the `ferrohsm` CLI against this fixture's HSM (its server, or its directory) as
    /// the Partition SO of [`token`]'s "tok" (password "so-pin-1"); `args` end before the
    /// login. Panics unless it succeeds; its output.
    pub fn as_partition_so(&self, args: &[&str]) -> String {
        let mut c = std::process::Command::new(super::server_binary());
        match &self._server {
            Some(server) => c.arg("--server").arg(&server.socket),
            None => c.arg("--data-dir").arg(self._tmp.path().join("data")),
        };
        let out = c
            .args(args)
            .args(["--password", "env:PSO_PASSWORD"])
            .env("PSO_PASSWORD", "so-pin-1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ferrohsm {args:?}: {text}");
        text
    }

    /// Sets a policy of partition "tok" as its Partition SO.
    pub fn set_policy(&self, name: &str, value: &str) {
        self.as_partition_so(&[
            "partition",
            "policy",
            "set",
            "--partition",
            "tok",
            name,
            value,
        ]);
    }
}

/// A PIN as cryptoki takes it.
pub fn pin(s: &str) -> AuthPin {
    AuthPin::new(s.into())
}

/// Token "tok" initialised through PKCS#11, user PIN set, a user session open.
pub fn token(f: &Fixture) -> (Slot, Session) {
    let slots = f.p11().get_slots_with_token().unwrap();
    assert_eq!(
        slots.len(),
        1,
        "a password HSM shows one uninitialised token"
    );
    let slot = slots[0];
    assert!(!f.p11().get_token_info(slot).unwrap().token_initialized());
    f.p11().init_token(slot, &pin("so-pin-1"), "tok").unwrap();
    let info = f.p11().get_token_info(slot).unwrap();
    assert_eq!(info.label(), "tok");
    assert!(info.token_initialized());
    assert!(!info.user_pin_initialized());
    let s = f.p11().open_rw_session(slot).unwrap();
    s.login(UserType::So, Some(&pin("so-pin-1"))).unwrap();
    s.init_pin(&pin("user-pin-1")).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&pin("user-pin-1"))).unwrap();
    (slot, s)
}

/// The return value of a PKCS#11 refusal.
pub fn err(e: Error) -> RvError {
    match e {
        Error::Pkcs11(rv, _) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// A token RSA key pair of `bits`: the public half with `public` added to its template, the
/// private half with `private`. (public, private).
pub fn rsa_pair(
    s: &Session,
    bits: u64,
    public: &[cryptoki::object::Attribute],
    private: &[cryptoki::object::Attribute],
) -> (
    cryptoki::object::ObjectHandle,
    cryptoki::object::ObjectHandle,
) {
    use cryptoki::object::Attribute;
    let mut pub_tpl = vec![Attribute::Token(true), Attribute::ModulusBits(bits.into())];
    pub_tpl.extend_from_slice(public);
    let mut priv_tpl = vec![Attribute::Token(true)];
    priv_tpl.extend_from_slice(private);
    s.generate_key_pair(
        &cryptoki::mechanism::Mechanism::RsaPkcsKeyPairGen,
        &pub_tpl,
        &priv_tpl,
    )
    .unwrap()
}
