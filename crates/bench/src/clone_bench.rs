//! `ferrohsm-bench --clone`: cloning throughput, N AES keys from one HSM's partition to
//! another HSM's of the same cloning domain: engine to engine in this process, and between
//! two real `ferrohsm server` processes over their Unix sockets (loopback).

use std::path::Path;
use std::time::Instant;

use ferrohsm_client::Remote;
use ferrohsm_core::api::{clone_between, CloneSelect, Embedded, HsmApi};
use ferrohsm_core::mechanism::KeySpec;
use ferrohsm_core::object::{KeyOptions, KeyTemplate};
use ferrohsm_core::{Credential, Hsm, Role};

use crate::stats;
use crate::transport::{co_login, provision, pw, start_server, CO_PW};

/// Two HSMs of one domain; the first with `count` more AES-128 keys.
fn pair(tmp: &Path, count: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (tmp.join("source"), tmp.join("target"));
    provision(&a);
    provision(&b);
    let mut h = Hsm::open(&a).expect("source");
    let co = h
        .login(
            Role::CryptoOfficer,
            Some("bench"),
            Credential::Secret(pw(CO_PW)),
        )
        .expect("co");
    let all: Vec<KeyOptions> = (0..count)
        .map(|n| KeyOptions {
            label: format!("clone-{n:05}"),
            id: (n as u64).to_be_bytes().to_vec(),
            extractable: false,
        })
        .collect();
    for chunk in all.chunks(10_000) {
        h.generate_keys_with(&co, KeySpec::Aes128, chunk, &KeyTemplate::default())
            .expect("keys");
    }
    (a, b)
}

/// Objects a second of one clone of everything from `src` to `dst`.
fn clone_rate(src: &mut dyn HsmApi, dst: &mut dyn HsmApi, batch: u32) -> (f64, u64) {
    let (ls, lt) = (co_login(src), co_login(dst));
    let t0 = Instant::now();
    let done = clone_between(
        src,
        ls,
        dst,
        lt,
        &CloneSelect::default(),
        batch,
        |_, _, _| {},
    )
    .expect("clone");
    (done.added as f64 / t0.elapsed().as_secs_f64(), done.added)
}

/// Runs the clone rows.
pub fn run(count: usize, rounds: usize) {
    println!(
        "ferrohsm-bench --clone: {count} AES-128 keys (plus the bench's own few) per clone, {rounds} rounds, batches of 500; objects/s median [min..max]; goal 2000/s"
    );
    let (mut engine, mut served) = (Vec::new(), Vec::new());
    let mut moved = 0;
    for _ in 0..rounds {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = pair(tmp.path(), count);
        let (mut src, mut dst) = (
            Embedded::open(&a).expect("source"),
            Embedded::open(&b).expect("target"),
        );
        let (r, n) = clone_rate(&mut src, &mut dst, 500);
        engine.push(r);
        moved = n;
        drop((src, dst));

        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = pair(tmp.path(), count);
        let (sa, sb) = (tmp.path().join("sa"), tmp.path().join("sb"));
        std::fs::create_dir_all(&sa).expect("dir");
        std::fs::create_dir_all(&sb).expect("dir");
        let (_pa, socka) = start_server(&sa, &a);
        let (_pb, sockb) = start_server(&sb, &b);
        let mut src = Remote::connect(&socka).expect("source server");
        let mut dst = Remote::connect(&sockb).expect("target server");
        let (r, _) = clone_rate(&mut src, &mut dst, 500);
        served.push(r);
    }
    let fmt = |(m, lo, hi): (f64, f64, f64)| format!("{m:>8.0} [{lo:.0}..{hi:.0}]");
    let (e, s) = (stats(engine), stats(served));
    println!("{:<48} {:>26} {:>8}", "clone", "objects/s", "x goal");
    println!(
        "{:<48} {:>26} {:>8.2}",
        format!("engine to engine, {moved} objects"),
        fmt(e),
        e.0 / 2000.0
    );
    println!(
        "{:<48} {:>26} {:>8.2}",
        format!("server to server (Unix sockets), {moved} objects"),
        fmt(s),
        s.0 / 2000.0
    );
}
