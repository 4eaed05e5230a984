//! How the `cryptoki` tests reach the HSM: the module over the data directory in the test's
//! own process (embedded), or the module against a real `ferrohsm server` process serving
//! that directory over its Unix socket. Most tests run both ways ([`both_ways!`]).
// Shared by several test binaries, each of which uses part of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use ferrohsm_core::hsm::InitOptions;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{AuthMode, Credential, Hsm, NewSecret, Role};

pub mod fixture;
pub mod ha;
pub mod network;

/// The HSM SO's password of [`password_hsm`].
pub const HSM_SO_PW: &str = "hsm-so-pw";

/// Makes a password-authenticated HSM with nothing in it in `data`; with `init_token`, its
/// HSM SO lets `C_InitToken` create partitions (plain PKCS#11 set-ups).
pub fn password_hsm(data: &Path, init_token: bool) {
    password_hsm_in(data, init_token, "domain-pw")
}

/// [`password_hsm`] with the cloning domain made from `domain`.
pub fn password_hsm_in(data: &Path, init_token: bool, domain: &str) {
    let mut hsm = Hsm::open_or_create(data).unwrap();
    hsm.init(InitOptions {
        label: "p11".into(),
        mode: AuthMode::Password,
        so: NewSecret::Password(Pin::password(HSM_SO_PW).unwrap()),
        domain: NewSecret::Password(Pin::password(domain).unwrap()),
        current_so: None,
        confirm_destroy: vec![],
    })
    .unwrap();
    if init_token {
        let so = hsm
            .login(
                Role::HsmSo,
                None,
                Credential::Secret(Pin::password(HSM_SO_PW).unwrap()),
            )
            .unwrap();
        hsm.set_hsm_policy(&so, "init-token", "on").unwrap();
    }
}

/// Loads and initialises the module as an application would (it reads its configuration
/// from the environment [`reach`] set).
pub fn load_module() -> Pkcs11 {
    let p11 = Pkcs11::new(module_path()).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p11
}

/// Which way a test reaches the HSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The engine inside the module (no boundary).
    Embedded,
    /// A `ferrohsm server` process; the module holds no key and opens no file of the HSM.
    Server,
}

thread_local! {
    static TRANSPORT: Cell<Transport> = const { Cell::new(Transport::Embedded) };
}

/// The transport of the test running on this thread.
pub fn transport() -> Transport {
    TRANSPORT.with(Cell::get)
}

/// Runs a test body with `t` as its transport.
pub fn run_with(t: Transport, body: fn()) {
    TRANSPORT.with(|c| c.set(t));
    body();
}

/// Each named test body runs twice: `NAME::embedded` and `NAME::server`.
#[macro_export]
macro_rules! both_ways {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn embedded() {
                    super::harness::run_with(super::harness::Transport::Embedded, super::$name)
                }
                #[test]
                fn server() {
                    super::harness::run_with(super::harness::Transport::Server, super::$name)
                }
            }
        )*
    };
}

/// The module this test run built. `cargo test` leaves the cdylib beside the test binary in
/// `deps/` (it copies it up to `target/<profile>/` only on `cargo build`, where a stale one
/// may lie), so the copy in `deps/` comes first.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let fresh = deps.join("libferrohsm_pkcs11.so");
    if fresh.exists() {
        return fresh;
    }
    deps.parent().unwrap().join("libferrohsm_pkcs11.so")
}

/// The `ferrohsm` binary of this build (`cargo test --workspace` builds it for the CLI's
/// tests).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let bin = deps.parent().unwrap().join("ferrohsm");
    assert!(
        bin.exists(),
        "{} is missing: the server-mode tests run the real server; build it first \
         (cargo build -p ferrohsm-cli, or run cargo test --workspace)",
        bin.display()
    );
    bin
}

/// A running `ferrohsm server` (killed, if still running, when dropped).
pub struct ServerProcess {
    child: Child,
    log: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
}

impl ServerProcess {
    /// What it logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a server over `data`, listening on `socket`; returns once it answers.
pub fn start_server(data: &Path, socket: &Path) -> ServerProcess {
    start_server_with(data, socket, "")
}

/// [`start_server`] with more configuration lines.
pub fn start_server_with(data: &Path, socket: &Path, extra: &str) -> ServerProcess {
    // The server refuses a directory other users could read.
    for entry in std::iter::once(data.to_path_buf())
        .chain(std::fs::read_dir(data).unwrap().map(|e| e.unwrap().path()))
    {
        let mode = if entry.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let dir = data.parent().unwrap();
    let conf = dir.join("server.toml");
    std::fs::write(
        &conf,
        format!("data_dir = {data:?}\nsocket = {socket:?}\nlog = \"debug\"\n{extra}"),
    )
    .unwrap();
    let log = dir.join("server.log");
    let child = Command::new(server_binary())
        .args(["server", "--config"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut s = ServerProcess {
        child,
        log,
        socket: socket.to_path_buf(),
    };
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(st) = s.child.try_wait().unwrap() {
            panic!("the server exited ({st}): {}", s.log_text());
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the server never listened: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

/// Points the module (through the environment it reads at `C_Initialize`) at the HSM in
/// `data`: directly when embedded; through a server started here otherwise.
pub fn reach(data: &Path) -> Option<ServerProcess> {
    std::env::remove_var("FERROHSM_PKCS11_CONF");
    match transport() {
        Transport::Embedded => {
            std::env::remove_var("FERROHSM_SERVER");
            std::env::set_var("FERROHSM_HOME", data);
            None
        }
        Transport::Server => Some(serve(data)),
    }
}

/// Starts a server over `data` (socket `ferrohsm.sock` beside it) and points the module at it.
pub fn serve(data: &Path) -> ServerProcess {
    std::env::remove_var("FERROHSM_PKCS11_CONF");
    let server = start_server(data, &data.parent().unwrap().join("ferrohsm.sock"));
    std::env::remove_var("FERROHSM_HOME");
    std::env::set_var("FERROHSM_SERVER", &server.socket);
    server
}

/// `CKA_EC_PARAMS` of P-256.
pub const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The eight components (n, e, d, p, q, dp, dq, qinv) of an RSA key in PKCS#8 DER, as
/// PKCS#11 templates carry them.
pub fn rsa_components(pkcs8: &[u8]) -> Vec<Vec<u8>> {
    // One DER element at the start of `b`: (content, rest).
    fn element(b: &[u8]) -> (&[u8], &[u8]) {
        let (len, start) = match b[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 => (b[2] as usize, 3),
            _ => (((b[2] as usize) << 8) | b[3] as usize, 4),
        };
        (&b[start..start + len], &b[start + len..])
    }
    let (body, _) = element(pkcs8);
    let (_, rest) = element(body); // version
    let (_, rest) = element(rest); // algorithm
    let (key, _) = element(rest); // OCTET STRING
    let (mut ints, _) = element(key);
    let mut out = Vec::new();
    while !ints.is_empty() {
        let (v, rest) = element(ints);
        let v = match v.iter().position(|b| *b != 0) {
            Some(i) => v[i..].to_vec(),
            None => vec![0],
        };
        out.push(v);
        ints = rest;
    }
    out.split_off(1)
}

/// Generates a token P-256 key pair labelled `label`; the private key.
pub fn ec_key(s: &cryptoki::session::Session, label: &str) -> cryptoki::object::ObjectHandle {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    let params = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(params.to_vec()),
                Attribute::Label(label.into()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Label(label.into()),
            ],
        )
        .unwrap();
    private
}

/// Through the module's own C functions (this test binary's copy): initialises it, makes a
/// token labelled `label` in the first slot (`C_InitToken`, `C_InitPIN`) and opens a
/// read/write session logged in as its Crypto Officer. The slot and the session.
///
/// # Safety
/// The module must not be initialised already; the caller finalises it.
pub unsafe fn c_officer_session(
    label: &str,
) -> (cryptoki_sys::CK_SLOT_ID, cryptoki_sys::CK_SESSION_HANDLE) {
    use cryptoki_sys::*;
    use ferrohsm_pkcs11::entry::*;
    use std::ptr::null_mut;
    // SAFETY (whole function): every pointer passed is to a live local of the stated length.
    unsafe {
        assert_eq!(C_Initialize(null_mut()), CKR_OK);
        let mut slots = [0 as CK_SLOT_ID; 4];
        let mut n = slots.len() as CK_ULONG;
        assert_eq!(C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n), CKR_OK);
        let slot = slots[0];
        let (mut so, mut user) = (*b"so-pin-1", *b"user-pin-1");
        let mut padded = [b' '; 32];
        padded[..label.len()].copy_from_slice(label.as_bytes());
        assert_eq!(
            C_InitToken(slot, so.as_mut_ptr(), 8, padded.as_mut_ptr()),
            CKR_OK
        );
        let mut h = 0;
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        assert_eq!(C_OpenSession(slot, flags, null_mut(), None, &mut h), CKR_OK);
        assert_eq!(C_Login(h, CKU_SO, so.as_mut_ptr(), 8), CKR_OK);
        assert_eq!(C_InitPIN(h, user.as_mut_ptr(), 10), CKR_OK);
        assert_eq!(C_Logout(h), CKR_OK);
        assert_eq!(C_Login(h, CKU_USER, user.as_mut_ptr(), 10), CKR_OK);
        (slot, h)
    }
}
