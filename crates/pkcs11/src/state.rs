//! The module's state: configuration, sessions, and per-token logins. Behind one lock that is
//! held only to look things up; each session has its own engine handle (its own connection to
//! the store) behind its own lock, so sessions on different threads work in parallel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use cryptoki_sys::*;
use ferrohsm_client::ha::{Group, GroupFront};
use ferrohsm_client::Remote;
use ferrohsm_core::api::{Embedded, HsmApi, LoginId, Logins, OwnerHold};
use ferrohsm_core::hsm::KeyMemo;
use ferrohsm_core::mechanism::Mechanism;
use ferrohsm_core::{Hsm, HsmError, Session as EngineSession};

use crate::ffi::Rv;

/// Where the module finds the HSM.
#[derive(Clone, Debug)]
pub enum Target {
    /// A `ferrohsm server` on this Unix socket: the HSM's boundary (the default).
    Server(PathBuf),
    /// A `ferrohsm server` over the network (`host:port`), with mutual TLS.
    Tls(String, ferrohsm_client::TlsClient),
    /// The data directory, opened in this process: no boundary (tests, demos, single-process
    /// tools).
    Embedded(PathBuf),
    /// An HA group: partitions on several servers, as one slot.
    Group(ferrohsm_client::ha::GroupConfig),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Server(p) => write!(f, "server unix:{}", p.display()),
            Target::Tls(a, _) => write!(f, "server tls://{a}"),
            Target::Embedded(p) => write!(f, "embedded HSM in {}", p.display()),
            Target::Group(g) => write!(f, "HA group {} ({} members)", g.label, g.members.len()),
        }
    }
}

pub use ferrohsm_client::DEFAULT_SOCKET;

/// Where the HSM is, and where PED key files are.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server or data directory.
    pub target: Target,
    /// Where PED key files are (for logins with a NULL PIN on PED-authenticated HSMs).
    pub ped_dir: PathBuf,
    /// Where the module writes what goes wrong (stderr when unset).
    pub log: Option<PathBuf>,
    /// The deadline of each call to a server (`deadline_ms`; the client's default, 10 s,
    /// when unset).
    pub deadline: Option<std::time::Duration>,
}

impl Config {
    /// Reads the configuration: the file named by `FERROHSM_PKCS11_CONF` (`server =
    /// "unix:PATH"` or `embedded = "DIR"`, `ped_dir`, `log`), else `FERROHSM_SERVER` (a
    /// socket), else `FERROHSM_HOME` (embedded), else the default socket. A file that cannot
    /// be read, or holds an unknown key or a bad value, is an error naming it.
    pub fn load() -> Result<Config, String> {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let mut c = Config {
            target: match (env("FERROHSM_SERVER"), env("FERROHSM_HOME")) {
                (Some(socket), _) => Target::Server(socket),
                (None, Some(dir)) => Target::Embedded(dir),
                (None, None) => Target::Server(DEFAULT_SOCKET.into()),
            },
            ped_dir: env("FERROHSM_PED_DIR").unwrap_or_else(|| "ped-keys".into()),
            log: env("FERROHSM_PKCS11_LOG"),
            deadline: None,
        };
        let Some(path) = std::env::var_os("FERROHSM_PKCS11_CONF") else {
            return Ok(c);
        };
        let shown = PathBuf::from(&path).display().to_string();
        let (mut tls_addr, mut fingerprint) = (None, None);
        let mut tls = ferrohsm_client::ha::SharedTls::default();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the configuration {shown}: {e}"))?;
        let entries = ferrohsm_client::conf::entries(&shown, &text)?;
        for e in &entries {
            let (v, line) = (e.value, e.line);
            match e.key {
                "server" => match (v.strip_prefix("unix:"), v.strip_prefix("tls://")) {
                    (Some(socket), _) => c.target = Target::Server(socket.into()),
                    (_, Some(addr)) => tls_addr = Some(addr.to_string()),
                    _ => {
                        return Err(format!(
                            "{shown} line {line}: server is \"unix:/path/to/socket\" or \"tls://host:port\""
                        ))
                    }
                },
                "client_cert" => tls.cert = Some(PathBuf::from(v)),
                "client_key" => tls.key = Some(PathBuf::from(v)),
                "server_fingerprint" => fingerprint = Some(v.to_string()),
                "server_ca" => tls.ca = Some(PathBuf::from(v)),
                // `data_dir` is the older name of `embedded`.
                "embedded" | "data_dir" => c.target = Target::Embedded(v.into()),
                "ped_dir" => c.ped_dir = v.into(),
                "log" => c.log = Some(v.into()),
                "deadline_ms" => match v.parse::<u64>() {
                    Ok(ms @ 100..=600_000) => {
                        c.deadline = Some(std::time::Duration::from_millis(ms))
                    }
                    _ => {
                        return Err(format!(
                            "{shown} line {line}: deadline_ms is a number of milliseconds, 100 to 600000"
                        ))
                    }
                },
                k if ferrohsm_client::ha::KEYS.contains(&k) => {}
                other => {
                    return Err(format!(
                        "{shown} line {line}: unknown key {other:?} (known: server, embedded, \
                         ped_dir, log, client_cert, client_key, server_fingerprint, server_ca, \
                         deadline_ms, ha_group, ha_member, ha_durable, ha_slot)"
                    ))
                }
            }
        }
        if let Some(addr) = tls_addr {
            match (
                tls.cert.clone(),
                tls.key.clone(),
                fingerprint.is_some() || tls.ca.is_some(),
            ) {
                (Some(cert), Some(key), true) => {
                    c.target = Target::Tls(
                        addr,
                        ferrohsm_client::TlsClient {
                            cert,
                            key,
                            server_fingerprint: fingerprint.unwrap_or_default(),
                            server_ca: tls.ca.clone(),
                        },
                    )
                }
                _ => {
                    return Err(format!(
                        "{shown}: server = \"tls://{addr}\" needs client_cert, client_key and \
                         server_fingerprint (or server_ca)"
                    ))
                }
            }
        }
        if let Some(group) =
            ferrohsm_client::ha::GroupConfig::from_entries(&shown, &entries, &tls, c.deadline)?
        {
            if entries
                .iter()
                .any(|e| matches!(e.key, "server" | "embedded" | "data_dir"))
            {
                return Err(format!(
                    "{shown}: an HA group (ha_group) is the module's HSM: it takes no server or embedded line"
                ));
            }
            c.target = Target::Group(group);
        }
        Ok(c)
    }
}

/// Writes one line to the module's log (the configured file, else stderr). Never a secret:
/// callers pass what they looked for and what went wrong.
pub fn log(config_log: Option<&std::path::Path>, message: &str) {
    use std::io::Write;
    let line = format!(
        "{} ferrohsm-pkcs11[{}]: {message}\n",
        ferrohsm_core::time::now_rfc3339(),
        std::process::id()
    );
    let written = config_log.is_some_and(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .is_ok()
    });
    if !written {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// The module's way to the HSM: an engine in this process, or a connection to a server.
// One per session: unboxed, so that the embedded fast path follows no extra pointer.
#[allow(clippy::large_enum_variant)]
pub enum Front {
    /// The engine here (its logins shared by the module's sessions).
    Embedded(Embedded),
    /// A connection to a server (its logins are this process's, shared by its connections).
    Remote(Remote),
    /// Connections to an HA group's members.
    Group(GroupFront),
}

impl Front {
    /// The HSM API, whichever way it is answered.
    pub fn api(&mut self) -> &mut dyn HsmApi {
        match self {
            Front::Embedded(e) => e,
            Front::Remote(r) => r,
            Front::Group(g) => g,
        }
    }

    /// The engine, when it runs in this process (the operations' fast path).
    pub fn engine(&mut self) -> Option<&mut Hsm> {
        match self {
            Front::Embedded(e) => Some(e.engine()),
            Front::Remote(_) | Front::Group(_) => None,
        }
    }
}

/// Opens fronts on the configured HSM.
#[derive(Clone)]
pub struct Opener {
    /// Where.
    pub config: Config,
    /// The logins of the module's embedded fronts.
    logins: Logins,
    /// Their owner: one for the whole module, so that a login is every session's.
    owner: u64,
    /// The HA group, when the module serves one (shared by all its fronts).
    group: Option<Arc<Group>>,
}

impl Opener {
    /// A fresh front.
    pub fn open(&self) -> Rv<Front> {
        let r = match &self.config.target {
            Target::Embedded(dir) => Hsm::open(dir)
                .map(|h| Front::Embedded(Embedded::for_owner(h, self.logins.clone(), self.owner))),
            Target::Server(socket) => Remote::connect(socket).map(|r| self.remote(r)),
            Target::Tls(addr, tls) => Remote::connect_tls(addr, tls).map(|r| self.remote(r)),
            Target::Group(_) => match &self.group {
                Some(g) => Ok(Front::Group(g.front())),
                None => Err(HsmError::State("the HA group was not started".into())),
            },
        };
        r.map_err(|e| {
            log(
                self.config.log.as_deref(),
                &format!("cannot reach the HSM ({}): {e}", self.config.target),
            );
            rv(&e)
        })
    }
}

impl Opener {
    fn remote(&self, r: Remote) -> Front {
        Front::Remote(match self.config.deadline {
            Some(d) => r.with_deadline(d),
            None => r,
        })
    }
}

/// A logged-in user of one token, shared by all of the application's sessions on it.
pub struct Login {
    /// `CKU_SO`, `CKU_USER` or the vendor Crypto User type.
    pub user: CK_USER_TYPE,
    /// The HSM's name for the login (valid on every front of this module).
    pub id: LoginId,
    /// The engine's session behind it, when the engine runs here (the fast path).
    pub engine: Option<Arc<EngineSession>>,
}

/// An operation in progress in a session.
pub struct Op {
    /// What it does.
    pub mech: Mechanism,
    /// The key's algorithm and size.
    pub spec: ferrohsm_core::mechanism::KeySpec,
    /// With which key.
    pub key: OpKey,
    /// Per-call parameters (IV, AAD).
    pub params: ferrohsm_core::mechanism::Params,
    /// Data gathered by multi-part calls.
    pub buffer: Vec<u8>,
    /// AES-CTR counter width in bits (128 otherwise).
    pub ctr_bits: u32,
}

/// The key of an operation: loaded when it began (engine here), or named by its handle (the
/// server loads it at the final call).
pub enum OpKey {
    /// Loaded in this process.
    Loaded(Arc<ferrohsm_core::hsm::LoadedKey>),
    /// Held by the server.
    Remote(u64),
}

/// A digest in progress.
pub struct DigestOp {
    /// The hash.
    pub hash: ferrohsm_core::mechanism::Hash,
    /// Data gathered so far.
    pub buffer: Vec<u8>,
}

/// One PKCS#11 session.
pub struct Session {
    /// The slot (= partition id).
    pub slot: CK_SLOT_ID,
    /// The partition's label.
    pub label: String,
    /// `CKF_RW_SESSION` and `CKF_SERIAL_SESSION`.
    pub flags: CK_FLAGS,
    /// This session's way to the HSM (its own store handle or connection).
    pub front: Front,
    /// Find results not yet returned.
    pub find: Option<Vec<CK_OBJECT_HANDLE>>,
    /// Sign in progress.
    pub sign: Option<Op>,
    /// Verify in progress.
    pub verify: Option<Op>,
    /// Encrypt in progress.
    pub encrypt: Option<Op>,
    /// Decrypt in progress.
    pub decrypt: Option<Op>,
    /// Digest in progress.
    pub digest: Option<DigestOp>,
    /// The token's login, shared by all its sessions, kept in step with [`Module::logins`]
    /// (set at `C_Login` and `C_OpenSession`, cleared at `C_Logout`) so that an operation
    /// reads it from its own session without touching shared state.
    pub login: Option<Arc<Login>>,
    /// The key this session last used, found again without the login's shared key cache
    /// (cleared whenever the login changes, so no key outlives its login here).
    pub key_memo: KeyMemo,
    /// Through a server: the attributes of the key this session last began an operation
    /// with, so that beginning another needs no round trip (cleared with `key_memo`). Only
    /// the module's own checks read it; the server checks the key again at every use.
    pub remote_memo: Option<(u64, ferrohsm_core::object::Attributes)>,
    /// The HMAC context of the last key it MACed with (keyed state: cleared with the memo).
    pub mac: ferrohsm_core::mechanism::MacSlot,
    /// GlobalPlatform operations in progress and the secure channels this session opened.
    pub gp: crate::api::gp::GpState,
}

impl Session {
    /// The HSM API of this session's front.
    pub fn api(&mut self) -> &mut dyn HsmApi {
        self.front.api()
    }

    /// Ends every operation that holds a key or a search over private objects, and forgets the
    /// last key used (at logout).
    pub fn end_key_operations(&mut self) {
        self.sign = None;
        self.verify = None;
        self.encrypt = None;
        self.decrypt = None;
        self.find = None;
        self.key_memo.clear();
        self.remote_memo = None;
        self.mac.clear();
        self.gp.end_operations();
    }
}

/// The whole module.
pub struct Module {
    /// The process that initialised it (a forked child must initialise again).
    pub pid: u32,
    /// Configuration, and the way to open fronts.
    pub opener: Opener,
    /// Keeps the embedded fronts' logins alive while the module is (they end at
    /// `C_Finalize`, with the module).
    pub _hold: Option<OwnerHold>,
    /// Sessions by handle.
    pub sessions: HashMap<CK_SESSION_HANDLE, Arc<Mutex<Session>>>,
    /// Logins by slot.
    pub logins: HashMap<CK_SLOT_ID, Arc<Login>>,
    /// Next session handle.
    pub next_handle: CK_SESSION_HANDLE,
    /// One front kept for slot and token queries, so that they do not open the store (or
    /// connect) each time.
    pub control: Mutex<Option<Front>>,
    /// Fronts of closed sessions, reused by the next `C_OpenSession` (opening one opens and
    /// verifies the store, or connects).
    pub pool: Mutex<Vec<Front>>,
    /// What `C_OpenSession` needs to know of each slot (label, initialised), and the store's
    /// state generation it was read at.
    pub tokens: Mutex<Option<(u64, TokenBriefs)>>,
}

/// Per slot: the token's label and whether it is initialised.
pub type TokenBriefs = HashMap<CK_SLOT_ID, (String, bool)>;

impl Module {
    /// A module over the configured HSM.
    pub fn new(config: Config) -> Module {
        let logins = Logins::new();
        let hold =
            matches!(config.target, Target::Embedded(_)).then(|| logins.hold(Logins::new_owner()));
        let owner = hold.as_ref().map(OwnerHold::owner).unwrap_or_default();
        let group = match &config.target {
            Target::Group(g) => {
                let log_to = config.log.clone();
                Some(Group::start(
                    g.clone(),
                    Arc::new(move |m: &str| log(log_to.as_deref(), m)),
                ))
            }
            _ => None,
        };
        Module {
            pid: current_pid(),
            opener: Opener {
                config,
                logins,
                owner,
                group,
            },
            _hold: hold,
            sessions: Default::default(),
            logins: Default::default(),
            next_handle: 1,
            control: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            tokens: Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.opener.config
    }

    /// Writes a line to the module's log.
    pub fn log(&self, message: &str) {
        log(self.config().log.as_deref(), message)
    }
}

/// At most this many idle engine handles are kept.
pub const POOL_MAX: usize = 16;

/// This process's id, or 0 when it must be read again (cleared in a forked child), so that
/// the check every call makes ("was the module initialised by this process?") needs no
/// system call.
static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget_pid_in_child() {
    // Async-signal-safe: atomic operations only. The child's threads-local session memos
    // (copied from the forking thread) must not outlive the fork either.
    PID.store(0, Ordering::Relaxed);
    sessions_changed();
}

/// Moves on whenever a session handle stops being valid (a session closed, the module
/// finalized or initialised, a fork), so that a thread's memo of its last session
/// ([`session_only`]) is never used after its session is gone.
static SESSIONS_EPOCH: AtomicU64 = AtomicU64::new(1);

/// Records that some session handle may no longer be valid (see [`SESSIONS_EPOCH`]).
pub fn sessions_changed() {
    SESSIONS_EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// A thread's memo of its last session: the epoch it was looked up at, its handle, and the
/// session.
type SessionMemo = Option<(u64, CK_SESSION_HANDLE, Weak<Mutex<Session>>)>;

thread_local! {
    /// The session this thread last used, with the epoch it was looked up at. Weak, so that
    /// a closed session's engine handle is released (or pooled) as if the memo were not there.
    static LAST_SESSION: std::cell::RefCell<SessionMemo> =
        const { std::cell::RefCell::new(None) };
}

/// This process's id (see [`PID`]).
pub fn current_pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let p = std::process::id();
            PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Registers the fork handler that keeps [`current_pid`] true in children (once per process).
pub fn watch_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler is a plain function of this library, which is linked with
        // `-z nodelete` and so is never unloaded while the handler stays registered; it only
        // performs an atomic store. If registration fails the PID stays unknown (0) and is
        // read with a system call on each call instead: slower, still correct.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
        if rc != 0 {
            PID.store(0, Ordering::Relaxed);
        }
    });
}

/// The module state; `None` until `C_Initialize`.
///
/// Lock order: this lock before any session's mutex. Code holding a session's mutex must not
/// take this lock (a thread logging out holds it for writing while it visits every session,
/// so the two would wait on each other for ever).
pub static MODULE: RwLock<Option<Module>> = RwLock::new(None);

/// Runs `f` with the initialised module (read access).
pub fn with_module<T>(f: impl FnOnce(&Module) -> Rv<T>) -> Rv<T> {
    let g = MODULE.read().unwrap_or_else(PoisonError::into_inner);
    match g.as_ref() {
        Some(m) if m.pid == current_pid() => f(m),
        _ => Err(CKR_CRYPTOKI_NOT_INITIALIZED),
    }
}

/// Runs `f` with the initialised module (write access).
pub fn with_module_mut<T>(f: impl FnOnce(&mut Module) -> Rv<T>) -> Rv<T> {
    let mut g = MODULE.write().unwrap_or_else(PoisonError::into_inner);
    match g.as_mut() {
        Some(m) if m.pid == current_pid() => f(m),
        _ => Err(CKR_CRYPTOKI_NOT_INITIALIZED),
    }
}

/// The session `h` (operations take the login from it: see [`Session::login`]). A thread
/// that keeps using one session finds it again without the module lock, whose shared counter
/// two threads calling at once would otherwise contend for on every call.
pub fn session_only(h: CK_SESSION_HANDLE) -> Rv<Arc<Mutex<Session>>> {
    let epoch = SESSIONS_EPOCH.load(Ordering::SeqCst);
    let memo = LAST_SESSION.with(|l| match &*l.borrow() {
        Some((e, lh, s)) if *e == epoch && *lh == h => s.upgrade(),
        _ => None,
    });
    if let Some(s) = memo {
        return Ok(s);
    }
    let s = with_module(|m| {
        m.sessions
            .get(&h)
            .cloned()
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    })?;
    LAST_SESSION.with(|l| *l.borrow_mut() = Some((epoch, h, Arc::downgrade(&s))));
    Ok(s)
}

/// Sets the login every session of `slot` sees.
pub fn share_login(m: &Module, slot: CK_SLOT_ID, login: Option<&Arc<Login>>) -> Rv {
    for x in m.sessions.values() {
        let mut x = x.lock().unwrap_or_else(PoisonError::into_inner);
        if x.slot == slot {
            x.login = login.cloned();
            x.key_memo.clear();
            x.remote_memo = None;
            x.mac.clear();
        }
    }
    Ok(())
}

/// A session and the login of its token, if any.
pub type SessionAndLogin = (Arc<Mutex<Session>>, Option<Arc<Login>>);

/// The session `h` and the login of its token, if any.
pub fn session(h: CK_SESSION_HANDLE) -> Rv<SessionAndLogin> {
    with_module(|m| {
        let s = m
            .sessions
            .get(&h)
            .cloned()
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        let slot = s.lock().unwrap_or_else(PoisonError::into_inner).slot;
        Ok((s, m.logins.get(&slot).cloned()))
    })
}

/// A front from the module's pool, or a way to open one: for work that must not hold any
/// session's lock while it runs (a login's PIN derivation takes tens of milliseconds, and the
/// module visits every session under its own lock at login and logout). Give it back with
/// [`pool_front`].
pub fn pooled_front(m: &Module) -> Rv<(Option<Front>, Opener)> {
    let pooled = m.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
    Ok((pooled, m.opener.clone()))
}

/// A pooled front, or a fresh one.
pub fn take_front(pooled: Option<Front>, opener: &Opener) -> Rv<Front> {
    match pooled {
        Some(f) => Ok(f),
        None => opener.open(),
    }
}

/// Keeps an idle front for reuse (up to [`POOL_MAX`]; beyond it the front closes).
pub fn pool_front(m: &Module, front: Front) -> Rv {
    let mut pool = m.pool.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < POOL_MAX {
        pool.push(front);
    }
    Ok(())
}

/// The default mapping of engine errors to return values; call sites refine it where the
/// standard names a more precise code.
pub fn rv(e: &HsmError) -> CK_RV {
    match e {
        HsmError::InvalidInput(_) => CKR_ARGUMENTS_BAD,
        HsmError::BadPedKey { .. } => CKR_PIN_INCORRECT,
        HsmError::AuthFailed { .. } | HsmError::WrongKey(_) => CKR_PIN_INCORRECT,
        HsmError::Locked(_) => CKR_PIN_LOCKED,
        HsmError::Refused(_) => CKR_ACTION_PROHIBITED,
        HsmError::KeyUse(_) => CKR_KEY_FUNCTION_NOT_PERMITTED,
        HsmError::NotFound(_) => CKR_OBJECT_HANDLE_INVALID,
        HsmError::Crypto(_) => CKR_FUNCTION_FAILED,
        HsmError::Exhausted(_) => CKR_DEVICE_MEMORY,
        HsmError::NotLoggedIn(_) => CKR_USER_NOT_LOGGED_IN,
        HsmError::Tamper(_)
        | HsmError::Store(_)
        | HsmError::Io { .. }
        | HsmError::State(_)
        | HsmError::InUse(_) => CKR_DEVICE_ERROR,
    }
}
