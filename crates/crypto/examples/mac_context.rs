//! How much of an HMAC-SHA-256 of 64 bytes is aws-lc-rs's copy of the keyed context: the
//! module's rewound `HMAC_CTX` (`hmac_ctx.rs`) against aws-lc-rs's one-shot `hmac::sign`,
//! alternating in one run, so that the benchmark's "ferrohsm / raw" for HMAC can be read
//! against both. `cargo run --release -p ferrohsm-crypto --example mac_context`

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use ferrohsm_core::mechanism::{Hash, MacProvider, MAX_MAC_LEN};
use ferrohsm_crypto::hmac_ctx::AwsLcMac;

fn rate(mut f: impl FnMut()) -> f64 {
    let (t0, mut n) = (Instant::now(), 0u64);
    while t0.elapsed() < Duration::from_millis(500) {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let key = [9u8; 32];
    let msg = [0x5a; 64];
    let one_shot = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut ctx = AwsLcMac.keyed(Hash::Sha256, &key).expect("keyed");
    let mut out = [0u8; MAX_MAC_LEN];
    let (mut a, mut b) = (vec![], vec![]);
    for _ in 0..5 {
        a.push(rate(|| {
            black_box(hmac::sign(&one_shot, black_box(&msg)));
        }));
        b.push(rate(|| {
            black_box(ctx.mac(black_box(&msg), &mut out));
        }));
    }
    let (a, b) = (median(a), median(b));
    println!("HMAC-SHA-256 64 B, 1 thread, median of 5 alternating rounds");
    println!(
        "aws-lc-rs hmac::sign (one shot):  {a:>10.0} ops/s  {:.3} us",
        1e6 / a
    );
    println!(
        "AWS-LC HMAC_CTX rewound (module): {b:>10.0} ops/s  {:.3} us",
        1e6 / b
    );
    println!("rewound / one shot: {:.2}", b / a);
}
