//! `ferrohsm-bench`: the same PKCS#11 workload against ferrohsm's module and SoftHSMv2 in one
//! run, alternating, beside raw aws-lc-rs doing the same operation in the same process. Prints
//! median ops/s with min and max over the rounds, ferrohsm / SoftHSMv2 and ferrohsm / raw.
//!
//!     cargo build --release && target/release/ferrohsm-bench \
//!         --module target/release/libferrohsm_pkcs11.so --softhsm /usr/lib/softhsm/libsofthsm2.so
//!
//! Figures, not tests: nothing is asserted, and the machine's noise is visible in min/max.

#![forbid(unsafe_code)]

mod clone_bench;
mod find_rows;
mod ha_bench;
mod module_transport;
mod rows;
mod tls_transport;
mod transport;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::KeyPair as _;
use clap::Parser;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use find_rows::{find_rate, populate_ferrohsm, populate_here, populate_p11};
use rows::{rows, P11Op, RawSetup, Row};

#[derive(Parser)]
#[command(about = "Benchmark ferrohsm's PKCS#11 module against SoftHSMv2 and raw aws-lc-rs")]
struct Args {
    /// ferrohsm's module.
    #[arg(long, default_value = "target/release/libferrohsm_pkcs11.so")]
    module: PathBuf,
    /// SoftHSMv2's module (Debian package softhsm2).
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    softhsm: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Alternating rounds per row (median, min and max are over these).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only rows whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Internal: switch key-use auditing (off, strict, batched) in the data directory given
    /// with `--data`, and exit. The benchmark runs itself this way so that the change comes
    /// from another process, as an Auditor's would (two copies of SQLite in one process must
    /// never open the same database).
    #[arg(long, hide = true, requires = "data")]
    set_key_use: Option<String>,
    /// Internal: the data directory for `--set-key-use` and `--populate`.
    #[arg(long, hide = true)]
    data: Option<PathBuf>,
    /// Internal: add this many AES keys labelled `find-<n>` (numbered on from `--from`) to
    /// the bench partition in `--data`, and exit.
    #[arg(long, hide = true, requires = "data")]
    populate: Option<usize>,
    /// Internal: first number for `--populate`.
    #[arg(long, hide = true, default_value_t = 0)]
    from: usize,
    /// Largest store for the C_FindObjects rows (1,000, 10,000, then 100,000 objects).
    #[arg(long, default_value_t = 100_000)]
    find_max: usize,
    /// Largest store SoftHSMv2 is filled to for the C_FindObjects rows (it makes each
    /// object through PKCS#11, a file per object).
    #[arg(long, default_value_t = 10_000)]
    softhsm_find_max: usize,
    /// Instead of the PKCS#11 rows: the HSM API embedded against a `ferrohsm server` over its
    /// Unix socket, with a bare socket echo as the floor (needs the `ferrohsm` binary beside
    /// this one: build the workspace).
    #[arg(long)]
    transport: bool,
    /// Instead of the usual rows: the PKCS#11 module against a `ferrohsm server` over its Unix
    /// socket beside the embedded module, SoftHSMv2 and raw aws-lc-rs, at 1, 2 and 8
    /// threads, with a bare socket echo as the floor (needs the `ferrohsm` binary beside
    /// this one).
    #[arg(long)]
    module_transport: bool,
    /// Instead of the usual rows: the PKCS#11 module against a `ferrohsm server` over TCP
    /// with mutual TLS on loopback, beside the module over the Unix socket and embedded, at
    /// 1, 2 and 8 threads, with a bare TLS echo as the floor and the cost of setting up a
    /// connection (needs the `ferrohsm` binary beside this one).
    #[arg(long)]
    tls: bool,
    /// Internal: serve a bare TLS echo from this process (its identity written in DIR), print
    /// its address and key fingerprint, and stop when standard input closes.
    #[arg(long, hide = true, value_name = "DIR")]
    tls_echo: Option<PathBuf>,
    /// Cloning throughput instead: this many keys cloned between two HSMs of one domain,
    /// engine to engine and between two real servers (needs the `ferrohsm` binary beside this
    /// one).
    #[arg(long, value_name = "KEYS")]
    clone: Option<usize>,
    /// HA group rows: signing through groups of 2 and 3 members against one member alone,
    /// and the time a member stopped while KEYS keys were made takes to be back in sync
    /// (needs the `ferrohsm` binary beside this one).
    #[arg(long, value_name = "KEYS")]
    ha: Option<usize>,
}

/// Runs this benchmark again as a child process with `args` and `--data DATA`: the engine
/// must not open the data directory in this process while the module has it open (two
/// copies of SQLite would break each other's locks).
fn run_self(args: &[&str], data: &std::path::Path, what: &str) {
    let exe = std::env::current_exe().expect("own path");
    let st = std::process::Command::new(exe)
        .args(args)
        .arg("--data")
        .arg(data)
        .status()
        .expect("run self");
    assert!(st.success(), "{what} failed");
}

/// A key-pair mechanism and its public-key template (the private key is a token object).
type KeyGen = (Mechanism<'static>, Vec<Attribute>);

/// Milliseconds per C_GenerateKeyPair, `per_thread` of them in each of `threads` threads
/// running at once, one session each.
fn keygen_latencies(
    t: &Target,
    threads: usize,
    per_thread: usize,
    gen: fn() -> KeyGen,
) -> Vec<f64> {
    let (p11, slot) = (&t.p11, t.slot);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(move || {
                    let s = p11.open_rw_session(slot).expect("session");
                    let gen = gen();
                    (0..per_thread.max(1))
                        .map(|_| {
                            let t0 = Instant::now();
                            s.generate_key_pair(&gen.0, &gen.1, &[Attribute::Token(true)])
                                .expect("keygen");
                            t0.elapsed().as_secs_f64() * 1000.0
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("keygen thread"))
            .collect()
    })
}

/// Initialises another token (the module's next uninitialised one) with the bench's PINs,
/// for rows where each thread needs a token of its own; returns its slot.
fn extra_token(p11: &Pkcs11, label: &str) -> Slot {
    let free = *p11
        .get_slots_with_token()
        .expect("slots")
        .iter()
        .find(|s| {
            !p11.get_token_info(**s)
                .map(|t| t.token_initialized())
                .unwrap_or(true)
        })
        .expect("an uninitialised token");
    p11.init_token(free, &pin(SO_PIN), label)
        .expect("C_InitToken");
    // SoftHSMv2 moves a token to a new slot id at C_InitToken; find it by label.
    let slot = *p11
        .get_slots_with_token()
        .expect("slots")
        .iter()
        .find(|s| {
            p11.get_token_info(**s)
                .map(|t| t.label() == label)
                .unwrap_or(false)
        })
        .expect("the initialised token");
    let s = p11.open_rw_session(slot).expect("session");
    s.login(UserType::So, Some(&pin(SO_PIN))).expect("SO login");
    s.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
    s.logout().expect("logout");
    slot
}

const USER_PIN: &str = "bench-user-pin";
/// The message signed in the RSA and Ed25519 rows.
const MSG: &[u8] = b"benchmark message, 32 bytes long";
/// A SHA-256 digest for the ECDSA rows (the value does not matter, its length does).
const DIGEST: [u8; 32] = [0x42; 32];
const SO_PIN: &str = "bench-so-pin";
const AUDITOR_PW: &str = "bench-auditor";
/// Batched key-use auditing: longest a record waits (the CLI's default).
const BATCH_MS: u64 = 100;

/// Switches ferrohsm's key-use auditing as the Auditor, from a child process (see
/// `--set-key-use`); the loaded module sees the change at its next operation.
fn set_key_use(data: &std::path::Path, mode: ferrohsm_core::audit::KeyUseAudit) {
    use ferrohsm_core::audit::KeyUseAudit;
    let name = match mode {
        KeyUseAudit::Off => "off",
        KeyUseAudit::Strict => "strict",
        KeyUseAudit::Batched { .. } => "batched",
    };
    run_self(
        &["--set-key-use", name],
        data,
        &format!("switching key-use auditing to {name}"),
    );
}

/// The child's half of [`set_key_use`].
fn set_key_use_here(data: &std::path::Path, mode: &str) {
    use ferrohsm_core::audit::KeyUseAudit;
    use ferrohsm_core::{audit::AuditConfig, secret::Pin, Credential, Hsm, Role};
    let mode = match mode {
        "off" => KeyUseAudit::Off,
        "strict" => KeyUseAudit::Strict,
        _ => KeyUseAudit::Batched { max_ms: BATCH_MS },
    };
    let mut h = Hsm::open(data).expect("ferrohsm data dir");
    let pw = Pin::password(AUDITOR_PW).expect("pin");
    let a = h
        .login(Role::Auditor, None, Credential::Secret(pw))
        .expect("Auditor login");
    h.set_audit_config(
        &a,
        AuditConfig {
            key_use: mode,
            ceremony_cosignatures: 0,
        },
    )
    .expect("audit config");
}

/// One loaded module with a token ready and keys made.
struct Target {
    name: &'static str,
    p11: Pkcs11,
    slot: Slot,
    _keep: Session,
    keys: Keys,
}

#[derive(Clone)]
struct Keys {
    rsa: (ObjectHandle, ObjectHandle),
    ec: (ObjectHandle, ObjectHandle),
    ed: Option<(ObjectHandle, ObjectHandle)>,
    aes: ObjectHandle,
    hmac: ObjectHandle,
    /// Signatures made by this target, for the verify rows.
    rsa_sig: Arc<Vec<u8>>,
    ec_sig: Arc<Vec<u8>>,
}

fn pin(s: &str) -> AuthPin {
    AuthPin::new(s.into())
}

fn load(path: &PathBuf) -> Pkcs11 {
    let p = Pkcs11::new(path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    p
}

fn token(name: &'static str, p11: Pkcs11) -> Target {
    let slot = extra_token(&p11, "bench");
    keys_in(name, p11, slot)
}

/// A target over a token that exists (its user PIN set): the bench's keys made in it.
fn keys_in(name: &'static str, p11: Pkcs11, slot: Slot) -> Target {
    let s = p11.open_rw_session(slot).expect("session");
    s.login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user login");
    let t = Attribute::Token(true);
    let rsa = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                t.clone(),
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Verify(true),
            ],
            &[t.clone(), Attribute::Sign(true), Attribute::Sensitive(true)],
        )
        .expect("RSA key");
    let ec = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                t.clone(),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
                Attribute::Verify(true),
            ],
            &[t.clone(), Attribute::Sign(true), Attribute::Sensitive(true)],
        )
        .expect("EC key");
    let ed = s
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[
                t.clone(),
                Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
                Attribute::Verify(true),
            ],
            &[t.clone(), Attribute::Sign(true), Attribute::Sensitive(true)],
        )
        .ok();
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                t.clone(),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .expect("AES key");
    let hmac = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                t.clone(),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .expect("HMAC key");
    let rsa_sig = Arc::new(
        s.sign(&Mechanism::Sha256RsaPkcs, rsa.1, MSG)
            .expect("RSA signature"),
    );
    let ec_sig = Arc::new(
        s.sign(&Mechanism::Ecdsa, ec.1, &DIGEST)
            .expect("ECDSA signature"),
    );
    Target {
        name,
        p11,
        slot,
        _keep: s,
        keys: Keys {
            rsa,
            ec,
            ed,
            aes,
            hmac,
            rsa_sig,
            ec_sig,
        },
    }
}

/// Runs `op` in `threads` threads for `secs`; each thread gets its own `setup()`. Returns ops/s.
fn rate<S: Send + 'static>(
    threads: usize,
    secs: f64,
    setup: impl Fn() -> S + Send + Sync + 'static,
    op: impl Fn(&mut S, u64) + Send + Sync + 'static,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let setup = Arc::new(setup);
    let op = Arc::new(op);
    let ready = Arc::new(std::sync::Barrier::new(threads + 1));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count, setup, op, ready) = (
                stop.clone(),
                count.clone(),
                setup.clone(),
                op.clone(),
                ready.clone(),
            );
            std::thread::spawn(move || {
                let mut st = setup();
                ready.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(&mut st, n);
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    ready.wait();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let el = t0.elapsed().as_secs_f64();
    for h in hs {
        h.join().expect("bench thread");
    }
    count.load(Ordering::Relaxed) as f64 / el
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn session(t: &Target) -> Session {
    t.p11.open_rw_session(t.slot).expect("session")
}

/// Whether the target can do the operation at all (one try, panics caught).
fn supported(t: &Target, op: &P11Op) -> bool {
    let s = session(t);
    let keys = t.keys.clone();
    let op = op.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&s, &keys, u64::MAX / 2))).is_ok()
}

fn measure(t: &Target, threads: usize, secs: f64, op: &P11Op) -> f64 {
    let p11 = t.p11.clone();
    let slot = t.slot;
    let keys = t.keys.clone();
    let op = op.clone();
    rate(
        threads,
        secs,
        move || p11.open_rw_session(slot).expect("session"),
        move |s: &mut Session, n| op(s, &keys, n),
    )
}

fn measure_raw(threads: usize, secs: f64, raw: &RawSetup) -> f64 {
    let raw = raw.clone();
    rate(
        threads,
        secs,
        move || raw(),
        |f: &mut Box<dyn FnMut(u64) + Send>, n| f(n),
    )
}

/// A password HSM in `fdata` with an Auditor, whose HSM SO lets C_InitToken make the bench's
/// tokens.
fn make_home(fdata: &std::path::Path) {
    let mut hsm = ferrohsm_core::Hsm::open_or_create(fdata).expect("ferrohsm data dir");
    hsm.init(ferrohsm_core::InitOptions {
        label: "bench".into(),
        mode: ferrohsm_core::AuthMode::Password,
        so: ferrohsm_core::NewSecret::Password(
            ferrohsm_core::secret::Pin::password("bench-hsm-so").expect("pin"),
        ),
        domain: ferrohsm_core::NewSecret::Password(
            ferrohsm_core::secret::Pin::password("bench-domain").expect("pin"),
        ),
        current_so: None,
        confirm_destroy: vec![],
    })
    .expect("HSM init");
    hsm.audit_init(
        ferrohsm_core::NewSecret::Password(
            ferrohsm_core::secret::Pin::password(AUDITOR_PW).expect("pin"),
        ),
        None,
    )
    .expect("Auditor");
    // The bench makes its tokens with C_InitToken, which the HSM SO must allow.
    let so = hsm
        .login(
            ferrohsm_core::Role::HsmSo,
            None,
            ferrohsm_core::Credential::Secret(
                ferrohsm_core::secret::Pin::password("bench-hsm-so").expect("pin"),
            ),
        )
        .expect("HSM SO");
    hsm.set_hsm_policy(&so, "init-token", "on")
        .expect("init-token policy");
}

/// SoftHSMv2's configuration: a token directory under `dir`.
fn softhsm_home(dir: &std::path::Path) {
    let sdir = dir.join("softhsm");
    std::fs::create_dir_all(sdir.join("tokens")).expect("softhsm dir");
    let conf = sdir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            sdir.join("tokens").display()
        ),
    )
    .expect("conf");
    std::env::set_var("SOFTHSM2_CONF", &conf);
}

fn main() {
    let args = Args::parse();
    if let (Some(mode), Some(data)) = (&args.set_key_use, &args.data) {
        set_key_use_here(data, mode);
        return;
    }
    if let (Some(count), Some(data)) = (args.populate, &args.data) {
        populate_here(data, args.from, count);
        return;
    }
    if args.transport {
        transport::run(args.seconds, args.rounds, &args.only);
        return;
    }
    if args.module_transport {
        module_transport::run(&args);
        return;
    }
    if let Some(dir) = &args.tls_echo {
        tls_transport::serve_echo(dir);
        return;
    }
    if args.tls {
        tls_transport::run(&args);
        return;
    }
    if let Some(count) = args.clone {
        clone_bench::run(count, args.rounds);
        return;
    }
    if let Some(keys) = args.ha {
        ha_bench::run(args.seconds, args.rounds, keys);
        return;
    }
    // Each module gets a fresh, temporary home that touches no real token.
    let tmp = tempfile::tempdir().expect("tmp");
    let fdata = tmp.path().join("ferrohsm");
    make_home(&fdata);
    std::env::set_var("FERROHSM_HOME", &fdata);
    softhsm_home(tmp.path());

    let ferro = token("ferrohsm", load(&args.module));
    let soft = token("SoftHSMv2", load(&args.softhsm));
    println!(
        "ferrohsm-bench: {} s per figure, {} alternating rounds; ops/s median [min..max]",
        args.seconds, args.rounds
    );
    println!(
        "{:<40} {:>3} {:>26} {:>26} {:>26} {:>8} {:>8}",
        "operation", "thr", "ferrohsm", "SoftHSMv2", "raw aws-lc-rs", "f/soft", "f/raw"
    );
    let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:>8.0} [{lo:.0}..{hi:.0}]");
    // Probing a mechanism a module lacks panics inside the probe; keep that quiet.
    std::panic::set_hook(Box::new(|_| {}));
    for row in rows(&args.only) {
        let (f_ok, s_ok) = (supported(&ferro, &row.p11), supported(&soft, &row.p11));
        if !f_ok || !s_ok {
            println!(
                "{:<40}     {}",
                row.name,
                if f_ok {
                    "SoftHSMv2: n/a (mechanism not offered)"
                } else {
                    "ferrohsm: n/a (mechanism not offered)"
                }
            );
            continue;
        }
        for threads in [1usize, 2] {
            let (mut f, mut s, mut r) = (vec![], vec![], vec![]);
            for _ in 0..args.rounds {
                f.push(measure(&ferro, threads, args.seconds, &row.p11));
                s.push(measure(&soft, threads, args.seconds, &row.p11));
                if let Some(raw) = &row.raw {
                    r.push(measure_raw(threads, args.seconds, raw));
                }
            }
            let (fs, ss) = (stats(f), stats(s));
            let rs = (!r.is_empty()).then(|| stats(r));
            println!(
                "{:<40} {:>3} {:>26} {:>26} {:>26} {:>8.2} {:>8}",
                row.name,
                threads,
                fmt(fs),
                fmt(ss),
                rs.map(fmt).unwrap_or_else(|| "-".into()),
                fs.0 / ss.0.max(1e-9),
                rs.map(|r| format!("{:.2}", fs.0 / r.0))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    // From here on a panic is a real failure: let it speak.
    let _ = std::panic::take_hook();
    // The signing rows again with every key use audited, against the same rows unaudited
    // in the same rounds, so that the price of the audit trail is a printed figure.
    let signing: Vec<Row> = rows(&args.only)
        .into_iter()
        .filter(|r| r.name.starts_with("C_Sign") && !r.name.contains("HMAC"))
        .collect();
    if !signing.is_empty() {
        use ferrohsm_core::audit::KeyUseAudit;
        println!(
            "{:<40} {:>3} {:>26} {:>26} {:>26} {:>8}",
            "ferrohsm, every key use audited",
            "thr",
            "audit off",
            "batched",
            "strict",
            "b/off s/off"
        );
        for row in &signing {
            for threads in [1usize, 2] {
                let (mut off, mut batched, mut strict) = (vec![], vec![], vec![]);
                for _ in 0..args.rounds {
                    for (mode, out) in [
                        (KeyUseAudit::Off, &mut off),
                        (KeyUseAudit::Batched { max_ms: BATCH_MS }, &mut batched),
                        (KeyUseAudit::Strict, &mut strict),
                    ] {
                        set_key_use(&fdata, mode);
                        out.push(measure(&ferro, threads, args.seconds, &row.p11));
                    }
                }
                set_key_use(&fdata, KeyUseAudit::Off);
                let (o, b, st) = (stats(off), stats(batched), stats(strict));
                println!(
                    "{:<40} {:>3} {:>26} {:>26} {:>26} {:>8.2} {:.2}",
                    row.name,
                    threads,
                    fmt(o),
                    fmt(b),
                    fmt(st),
                    b.0 / o.0.max(1e-9),
                    st.0 / o.0.max(1e-9)
                );
            }
        }
    }
    // Latencies and rounds that are not per-key operations, each with one thread and with
    // two (one session each).
    let rsa_gen: fn() -> KeyGen = || {
        (
            Mechanism::RsaPkcsKeyPairGen,
            vec![Attribute::Token(true), Attribute::ModulusBits(2048.into())],
        )
    };
    let ec_gen: fn() -> KeyGen = || {
        (
            Mechanism::EccKeyPairGen,
            vec![
                Attribute::Token(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
        )
    };
    for (name, t) in [("ferrohsm", &ferro), ("SoftHSMv2", &soft)] {
        for threads in [1usize, 2] {
            for (what, gen, per_thread, digits) in [
                ("RSA-2048", rsa_gen, 6 / threads, 1),
                ("EC P-256", ec_gen, 20, 2),
            ] {
                let (m, lo, hi) = stats(keygen_latencies(t, threads, per_thread, gen));
                println!(
                    "{:<40} {name:<10} {threads} thr median {m:8.digits$} ms [{lo:.digits$}..{hi:.digits$}]",
                    format!("C_GenerateKeyPair {what} latency")
                );
            }
        }
        for threads in [1usize, 2] {
            let p11 = t.p11.clone();
            let slot = t.slot;
            let open_close = rate(
                threads,
                args.seconds,
                move || p11.clone(),
                move |p, _| {
                    p.open_ro_session(slot)
                        .expect("open")
                        .close()
                        .expect("close");
                },
            );
            println!(
                "{:<40} {name:<10} {threads} thr {open_close:8.0} rounds/s",
                "C_OpenSession + C_CloseSession"
            );
        }
    }
    // C_FindObjects as the store grows: both stores get the same labels; SoftHSMv2 is
    // filled only to --softhsm-find-max (through PKCS#11, a file per object).
    if args
        .only
        .as_ref()
        .is_none_or(|o| "C_FindObjects".contains(o.as_str()))
    {
        println!(
            "{:<40} {:>8} {:>3} {:>26} {:>26} {:>12}",
            "C_FindObjects by label (1 match)", "objects", "thr", "ferrohsm", "SoftHSMv2", "f/soft"
        );
        let mut have = 0usize;
        let mut first: [Option<f64>; 2] = [None, None];
        for n in [1_000usize, 10_000, 100_000] {
            if n > args.find_max {
                break;
            }
            populate_ferrohsm(&fdata, have, n - have);
            let soft_ok = n <= args.softhsm_find_max;
            if soft_ok {
                populate_p11(&soft, have, n - have);
            }
            have = n;
            for threads in [1usize, 2] {
                let (mut f, mut s) = (vec![], vec![]);
                for _ in 0..args.rounds {
                    f.push(find_rate(&ferro, n, threads, args.seconds));
                    if soft_ok {
                        s.push(find_rate(&soft, n, threads, args.seconds));
                    }
                }
                let fs = stats(f);
                let base = *first[threads - 1].get_or_insert(fs.0);
                let soft_col = if soft_ok {
                    let ss = stats(s);
                    (fmt(ss), format!("{:.2}", fs.0 / ss.0.max(1e-9)))
                } else {
                    ("not filled".to_string(), "-".to_string())
                };
                println!(
                    "{:<40} {:>8} {:>3} {:>26} {:>26} {:>12}   {:.1} µs/lookup, {:.2}x the 1,000-object time",
                    "C_FindObjects by label (1 match)",
                    n,
                    threads,
                    fmt(fs),
                    soft_col.0,
                    soft_col.1,
                    1e6 * threads as f64 / fs.0,
                    base / fs.0
                );
            }
        }
    }
    // Last: logging out ends the login every other session of the token shares. With two
    // threads each logs in and out of its own token (a login belongs to the token, so two
    // threads on one token would log each other out).
    for (name, t) in [("ferrohsm", &ferro), ("SoftHSMv2", &soft)] {
        let _ = session(t).logout();
        let second = extra_token(&t.p11, "bench2");
        for threads in [1usize, 2] {
            let p11 = t.p11.clone();
            let slots = [t.slot, second];
            let next = Arc::new(AtomicU64::new(0));
            let rounds = rate(
                threads,
                args.seconds,
                move || {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize % 2;
                    p11.open_rw_session(slots[i]).expect("session")
                },
                move |s: &mut Session, _| {
                    s.login(UserType::User, Some(&pin(USER_PIN)))
                        .expect("login");
                    s.logout().expect("logout");
                },
            );
            println!(
                "{:<40} {name:<10} {threads} thr {rounds:8.1} rounds/s",
                "C_Login + C_Logout (user PIN)"
            );
        }
    }
    let _ = (ferro.name, soft.name);
}
