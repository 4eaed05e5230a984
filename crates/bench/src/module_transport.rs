//! `ferrohsm-bench --module-transport`: what the server's boundary costs an application that
//! uses the PKCS#11 module. The same PKCS#11 workload against the module embedded (engine in
//! the process) and against the module talking to a real `ferrohsm server` over its Unix
//! socket (a second copy of the library, configured for the server), beside SoftHSMv2 and raw
//! aws-lc-rs, alternating round by round at 1, 2 and 8 threads; then C_FindObjects and
//! C_Login, a bare Unix-socket echo as the floor, and one thread's latencies. Figures, not
//! tests: nothing is asserted.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use cryptoki::session::UserType;

use crate::transport::{
    echo_frame, echo_once, echo_rate, echo_server, latencies, pct, start_server,
};
use crate::{
    extra_token, find_rate, load, make_home, measure, measure_raw, pin, populate_p11, rate, rows,
    session, softhsm_home, stats, supported, token, Args, Target, USER_PIN,
};

const THREADS: [usize; 3] = [1, 2, 8];

/// The rows the goals name.
const GOAL_ROWS: [&str; 5] = [
    "C_Sign ECDSA P-256",
    "C_Sign Ed25519",
    "C_Sign RSA-2048 PKCS#1",
    "C_Encrypt AES-256-GCM 64 B",
    "C_Sign HMAC-SHA-256 64 B",
];

/// Objects in each token for the C_FindObjects row.
const FIND_OBJECTS: usize = 1_000;

/// Runs the rows.
pub fn run(args: &Args) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (edir, sdir) = (tmp.path().join("embedded"), tmp.path().join("served"));
    make_home(&edir);
    make_home(&sdir);
    softhsm_home(tmp.path());
    let (_server, socket) = start_server(tmp.path(), &sdir);
    let echo = tmp.path().join("echo.sock");
    echo_server(&echo);

    // The module reads where its HSM is at C_Initialize. A second copy of the library is a
    // second module in this process, so one runs embedded and the other against the server.
    std::env::set_var("FERROHSM_HOME", &edir);
    std::env::remove_var("FERROHSM_SERVER");
    let embedded = token("embedded", load(&args.module));
    let copy = tmp.path().join("libferrohsm_pkcs11_served.so");
    std::fs::copy(&args.module, &copy).expect("a copy of the module");
    std::env::remove_var("FERROHSM_HOME");
    std::env::set_var("FERROHSM_SERVER", &socket);
    let served = token("server", load(&copy));
    let soft = token("SoftHSMv2", load(&args.softhsm));
    let targets = [&embedded, &served, &soft];

    println!(
        "ferrohsm-bench --module-transport: {} s per figure, {} alternating rounds; ops/s median [min..max]",
        args.seconds, args.rounds
    );
    println!(
        "{:<36} {:>3} {:>24} {:>24} {:>24} {:>24} {:>6} {:>6}",
        "operation",
        "thr",
        "module embedded",
        "module via server",
        "SoftHSMv2",
        "raw aws-lc-rs",
        "s/e",
        "e/raw"
    );
    let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:>8.0} [{lo:.0}..{hi:.0}]");
    let frame = echo_frame();
    for &t in &THREADS {
        println!(
            "{:<36} {t:>3} {:>24} {:>24}",
            "bare Unix-socket echo 104 B (floor)",
            "",
            fmt(echo_rate(&echo, &frame, t, args.seconds, args.rounds))
        );
    }
    // Probing a mechanism a module lacks panics inside the probe; keep that quiet.
    std::panic::set_hook(Box::new(|_| {}));
    let mut latency_lines = Vec::new();
    for row in rows(&args.only) {
        if !GOAL_ROWS.iter().any(|g| row.name.starts_with(g)) {
            continue;
        }
        if !targets.iter().all(|t| supported(t, &row.p11)) {
            println!(
                "{:<36}     n/a (mechanism not offered by one module)",
                row.name
            );
            continue;
        }
        for &t in &THREADS {
            let (mut e, mut s, mut o, mut r) = (vec![], vec![], vec![], vec![]);
            for _ in 0..args.rounds {
                e.push(measure(&embedded, t, args.seconds, &row.p11));
                s.push(measure(&served, t, args.seconds, &row.p11));
                o.push(measure(&soft, t, args.seconds, &row.p11));
                if let Some(raw) = &row.raw {
                    r.push(measure_raw(t, args.seconds, raw));
                }
            }
            let (e, s, o) = (stats(e), stats(s), stats(o));
            let r = (!r.is_empty()).then(|| stats(r));
            println!(
                "{:<36} {t:>3} {:>24} {:>24} {:>24} {:>24} {:>6.2} {:>6}",
                row.name,
                fmt(e),
                fmt(s),
                fmt(o),
                r.map(fmt).unwrap_or_else(|| "-".into()),
                s.0 / e.0,
                r.map(|r| format!("{:.2}", e.0 / r.0))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        // One thread, call by call: the embedded module, the served one and the echo in the
        // same stretch of time.
        let (se, ss) = (session(&embedded), session(&served));
        let mut es = UnixStream::connect(&echo).expect("echo");
        let (mut le, mut ls, mut lx) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            le.extend(latencies(args.seconds / 2.0, |n| {
                (row.p11)(&se, &embedded.keys, n)
            }));
            ls.extend(latencies(args.seconds / 2.0, |n| {
                (row.p11)(&ss, &served.keys, n)
            }));
            let mut back = [0u8; 104];
            lx.extend(latencies(args.seconds / 4.0, |_| {
                echo_once(&mut es, &frame, &mut back)
            }));
        }
        let (me, ms, mx) = (pct(&mut le, 0.5), pct(&mut ls, 0.5), pct(&mut lx, 0.5));
        let p99 = pct(&mut ls, 0.99);
        latency_lines.push(format!(
            "{:<36} embedded {me:>8.1} µs  via server {ms:>8.1} µs  added {:>7.1} µs = {:>5.2} x echo ({mx:.1} µs)  p99 {p99:>8.1} µs = {:>5.2} x median",
            row.name,
            ms - me,
            (ms - me) / mx,
            p99 / ms
        ));
    }
    if args
        .only
        .as_ref()
        .is_none_or(|o| "C_FindObjects".contains(o.as_str()))
    {
        for t in targets {
            populate_p11(t, 0, FIND_OBJECTS);
        }
        for &t in &THREADS {
            let (mut e, mut s, mut o) = (vec![], vec![], vec![]);
            for _ in 0..args.rounds {
                e.push(find_rate(&embedded, FIND_OBJECTS, t, args.seconds));
                s.push(find_rate(&served, FIND_OBJECTS, t, args.seconds));
                o.push(find_rate(&soft, FIND_OBJECTS, t, args.seconds));
            }
            let (e, s, o) = (stats(e), stats(s), stats(o));
            println!(
                "{:<36} {t:>3} {:>24} {:>24} {:>24} {:>24} {:>6.2}",
                format!("C_FindObjects by label, {FIND_OBJECTS} obj"),
                fmt(e),
                fmt(s),
                fmt(o),
                "-",
                s.0 / e.0
            );
        }
    }
    if args
        .only
        .as_ref()
        .is_none_or(|o| "C_Login".contains(o.as_str()))
    {
        // A login belongs to the token, so each thread logs in and out of a token of its own.
        let mut tokens: Vec<(&Target, Vec<cryptoki::slot::Slot>)> = Vec::new();
        for t in targets {
            let _ = session(t).logout();
            let mut slots = vec![t.slot];
            for i in 1..THREADS[THREADS.len() - 1] {
                slots.push(extra_token(&t.p11, &format!("login{i}")));
            }
            tokens.push((t, slots));
        }
        for &threads in &THREADS {
            let mut figures = Vec::new();
            for (t, slots) in &tokens {
                let (p11, slots) = (t.p11.clone(), Arc::new(slots.clone()));
                let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                figures.push(rate(
                    threads,
                    args.seconds,
                    move || {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        p11.open_rw_session(slots[i % slots.len()])
                            .expect("session")
                    },
                    move |s, _| {
                        s.login(UserType::User, Some(&pin(USER_PIN)))
                            .expect("login");
                        s.logout().expect("logout");
                    },
                ));
            }
            println!(
                "{:<36} {threads:>3} {:>24.1} {:>24.1} {:>24.1} {:>24} {:>6.2}",
                "C_Login + C_Logout (rounds/s)",
                figures[0],
                figures[1],
                figures[2],
                "-",
                figures[1] / figures[0]
            );
        }
    }
    println!("\nlatency, one thread (medians over every call of every round):");
    for l in latency_lines {
        println!("{l}");
    }
}
