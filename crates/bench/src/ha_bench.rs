//! `ferrohsm-bench --ha`: signing (ECDSA P-256, RSA-2048) from eight threads through an HA
//! group of two and of three members against one member alone, all real `ferrohsm server`
//! processes on Unix sockets; and how long a returning member takes to be back in the group
//! after keys were made without it. On a machine with few cores the servers share them:
//! the ratio says what a group costs here, not what more machines would add.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohsm_client::ha::{Group, GroupConfig, MemberConfig, GROUP_DEADLINE};
use ferrohsm_client::Remote;
use ferrohsm_core::api::{HsmApi, LoginId};
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism};
use ferrohsm_core::object::KeyOptions;

use crate::transport::{co_login, provision, start_server, ServerProcess};
use crate::{rate, stats};

const THREADS: usize = 8;

/// Whether the groups' messages are still wanted (not once the servers are stopping).
static TALK: AtomicBool = AtomicBool::new(true);

fn group_of(sockets: &[PathBuf]) -> Arc<Group> {
    Group::start(
        GroupConfig {
            label: "bench".into(),
            slot: 1,
            members: sockets
                .iter()
                .map(|s| MemberConfig {
                    server: s.display().to_string(),
                    partition: "bench".into(),
                    tls: None,
                })
                .collect(),
            durable: 2,
            deadline: GROUP_DEADLINE,
        },
        Arc::new(|m: &str| {
            if TALK.load(Ordering::Relaxed) {
                eprintln!("{m}")
            }
        }),
    )
}

fn opts(label: &str) -> KeyOptions {
    KeyOptions {
        label: label.into(),
        id: vec![],
        extractable: false,
    }
}

/// Waits until every member of `g` holds everything (`login` on it).
fn settle(g: &Arc<Group>, login: LoginId, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut f = g.front();
    loop {
        let r = f.report(login).expect("report");
        if r.members
            .iter()
            .all(|m| m.state == "up" && m.missing.is_empty())
        {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "the group did not settle: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the HA rows; `keys` is how many keys the returning member must catch up with.
pub fn run(secs: f64, rounds: usize, keys: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut servers: Vec<Option<ServerProcess>> = Vec::new();
    let mut sockets = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..3 {
        let (run, data) = (
            tmp.path().join(format!("run{i}")),
            tmp.path().join(format!("m{i}")),
        );
        std::fs::create_dir_all(&run).expect("dir");
        provision(&data);
        let (p, s) = start_server(&run, &data);
        servers.push(Some(p));
        sockets.push(s);
        dirs.push((run, data));
    }
    // The keys, made through a group of three so that every member holds them.
    let g3 = group_of(&sockets);
    let mut f = g3.front();
    let l3 = co_login(&mut f);
    let p256 = f
        .generate_key(l3, KeySpec::EcP256, &opts("ha-p256"))
        .expect("p256")[0];
    let rsa = f
        .generate_key(l3, KeySpec::Rsa2048, &opts("ha-rsa"))
        .expect("rsa")[0];
    settle(&g3, l3, Duration::from_secs(60));

    println!(
        "ferrohsm-bench --ha: {THREADS} threads, {secs} s per figure, {rounds} alternating rounds; signatures/s median [min..max]; servers on Unix sockets, sharing this machine's cores"
    );
    println!(
        "{:<26} {:>24} {:>24} {:>24} {:>7} {:>7}",
        "operation", "one member", "HA group of 2", "HA group of 3", "g2/one", "g3/one"
    );
    let g2 = group_of(&sockets[..2]);
    let l2 = co_login(&mut g2.front());
    for (name, label, mech) in [
        ("ECDSA P-256 sign", "ha-p256", Mechanism::Ecdsa(None)),
        (
            "RSA-2048 SHA-256 sign",
            "ha-rsa",
            Mechanism::RsaPkcs1(Hash::Sha256),
        ),
    ] {
        let (mut one, mut two, mut three) = (Vec::new(), Vec::new(), Vec::new());
        // A group hands out its own handles: each group's for the key, found by label.
        let key3 = if label == "ha-p256" { p256 } else { rsa };
        let key2 = g2.front().find_objects(l2, Some(label)).expect("find")[0].handle;
        for _ in 0..rounds {
            let (socket, label) = (sockets[0].clone(), label.to_string());
            one.push(rate(
                THREADS,
                secs,
                move || {
                    let mut r = Remote::connect(&socket).expect("member");
                    let l = co_login(&mut r);
                    let h = r.find_objects(l, Some(&label)).expect("find")[0].handle;
                    (r, l, h)
                },
                move |(r, l, h), _| {
                    r.sign(*l, *h, mech, &[7u8; 32]).expect("sign");
                },
            ));
            for (g, l, key, out) in [(&g2, l2, key2, &mut two), (&g3, l3, key3, &mut three)] {
                let g = g.clone();
                out.push(rate(
                    THREADS,
                    secs,
                    move || g.front(),
                    move |f, _| {
                        f.sign(l, key, mech, &[7u8; 32]).expect("sign");
                    },
                ));
            }
        }
        let (o, t2, t3) = (stats(one), stats(two), stats(three));
        let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:>8.0} [{lo:.0}..{hi:.0}]");
        println!(
            "{name:<26} {:>24} {:>24} {:>24} {:>7.2} {:>7.2}",
            fmt(o),
            fmt(t2),
            fmt(t3),
            t2.0 / o.0,
            t3.0 / o.0
        );
    }
    drop(g2);

    // A member away while keys are made; then back: how long until it serves again, caught up.
    servers[2] = None;
    let t = Instant::now();
    while g3.members_up()[2] {
        // The group notices at the next call that goes to it.
        let _ = f.random(16);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the stopped member stays in"
        );
    }
    let made = Instant::now();
    let each: Vec<KeyOptions> = (0..keys).map(|n| opts(&format!("away-{n:05}"))).collect();
    for chunk in each.chunks(1_000) {
        f.generate_keys(l3, KeySpec::Aes128, chunk).expect("keys");
    }
    let made = made.elapsed();
    let (run, data) = &dirs[2];
    let back = Instant::now();
    servers[2] = Some(start_server(run, data).0);
    while !g3.members_up()[2] {
        assert!(back.elapsed() < Duration::from_secs(600), "never came back");
        std::thread::sleep(Duration::from_millis(10));
    }
    let caught_up = back.elapsed();
    let check = settle(&g3, l3, Duration::from_secs(60));
    println!(
        "{:<26} {keys} keys made without it ({:.1} s through the group); back in the group, caught up, {:.1} s after its restart (goal 30 s; settled {:.1} s later)",
        "returning member",
        made.as_secs_f64(),
        caught_up.as_secs_f64(),
        check.as_secs_f64()
    );
    TALK.store(false, Ordering::Relaxed);
}
