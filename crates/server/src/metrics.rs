//! What an operator scrapes: a Prometheus text endpoint (`/metrics`) and a health endpoint
//! (`/health`) on their own TCP address (`metrics_listen`), served by one small thread. The
//! listener counts every request by call, mechanism and outcome, with a latency histogram per
//! call; connections and refusals are counted too. Nothing secret is a label: calls and
//! mechanisms are names, outcomes are error codes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::warn;

use crate::listener::Shared;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_s: f64,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, String), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    connections: Mutex<BTreeMap<u32, u64>>,
    bad_frames: AtomicU64,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters only: a poisoned map is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(
        &self,
        call: &'static str,
        mechanism: Option<&str>,
        outcome: &str,
        took: Duration,
    ) {
        *locked(&self.requests)
            .entry((call, mechanism.unwrap_or("").into(), outcome.into()))
            .or_default() += 1;
        let s = took.as_secs_f64();
        let mut lat = locked(&self.latency);
        let h = lat.entry(call).or_default();
        h.count += 1;
        h.sum_s += s;
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.buckets[i] += 1;
            }
        }
    }

    /// Counts a connection admitted from user `uid`.
    pub fn connection(&self, uid: u32) {
        *locked(&self.connections).entry(uid).or_default() += 1;
    }

    /// Counts a refused connection (`reason`: user, limit, …).
    pub fn refusal(&self, reason: &'static str) {
        *locked(&self.refused).entry(reason).or_default() += 1;
    }

    /// Counts a frame that was oversized, truncated or did not decode.
    pub fn bad_frame(&self) {
        self.bad_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter, with the live gauges of `shared`.
    pub fn render(&self, shared: &Shared) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(o, "# HELP ferrohsm_requests_total Requests answered, by call, mechanism and outcome (ok or an error code).");
        let _ = writeln!(o, "# TYPE ferrohsm_requests_total counter");
        for ((call, mech, outcome), n) in locked(&self.requests).iter() {
            let _ = writeln!(
                o,
                "ferrohsm_requests_total{{call=\"{call}\",mechanism=\"{mech}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# HELP ferrohsm_request_seconds Time from a request's decoding to its answer, by call.");
        let _ = writeln!(o, "# TYPE ferrohsm_request_seconds histogram");
        for (call, h) in locked(&self.latency).iter() {
            for (b, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    o,
                    "ferrohsm_request_seconds_bucket{{call=\"{call}\",le=\"{b}\"}} {n}"
                );
            }
            let _ = writeln!(
                o,
                "ferrohsm_request_seconds_bucket{{call=\"{call}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "ferrohsm_request_seconds_sum{{call=\"{call}\"}} {}",
                h.sum_s
            );
            let _ = writeln!(
                o,
                "ferrohsm_request_seconds_count{{call=\"{call}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            o,
            "# HELP ferrohsm_connections_total Connections admitted, by client user id."
        );
        let _ = writeln!(o, "# TYPE ferrohsm_connections_total counter");
        for (uid, n) in locked(&self.connections).iter() {
            let _ = writeln!(o, "ferrohsm_connections_total{{uid=\"{uid}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP ferrohsm_refused_connections_total Connections refused, by reason."
        );
        let _ = writeln!(o, "# TYPE ferrohsm_refused_connections_total counter");
        for (why, n) in locked(&self.refused).iter() {
            let _ = writeln!(
                o,
                "ferrohsm_refused_connections_total{{reason=\"{why}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP ferrohsm_bad_frames_total Oversized, truncated or undecodable requests."
        );
        let _ = writeln!(o, "# TYPE ferrohsm_bad_frames_total counter");
        let _ = writeln!(
            o,
            "ferrohsm_bad_frames_total {}",
            self.bad_frames.load(Ordering::Relaxed)
        );
        let _ = writeln!(o, "# HELP ferrohsm_connections Connections being served.");
        let _ = writeln!(o, "# TYPE ferrohsm_connections gauge");
        let _ = writeln!(
            o,
            "ferrohsm_connections {}",
            shared.active.load(Ordering::SeqCst)
        );
        let _ = writeln!(
            o,
            "# HELP ferrohsm_client_connections Connections being served, by registered client."
        );
        let _ = writeln!(o, "# TYPE ferrohsm_client_connections gauge");
        for (name, n) in shared.client_connections() {
            let _ = writeln!(o, "ferrohsm_client_connections{{client=\"{name}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP ferrohsm_logins Live logins of every client.");
        let _ = writeln!(o, "# TYPE ferrohsm_logins gauge");
        let _ = writeln!(o, "ferrohsm_logins {}", shared.logins.len());
        o
    }
}

/// Serves `/metrics` and `/health` on `listener` in a thread of its own, one short request
/// at a time (a slow scraper gets two seconds, then is closed).
pub fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for s in listener.incoming().flatten() {
                if let Err(e) = answer(s, &shared) {
                    warn!(error = %e, "metrics request failed");
                }
            }
        })
        .map(drop)
}

fn answer(mut s: TcpStream, shared: &Shared) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut words = head.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", shared.metrics.render(shared)),
        (Some("GET"), Some("/health")) => {
            if shared.stopping.load(Ordering::SeqCst) {
                ("503 Service Unavailable", "stopping\n".to_string())
            } else {
                ("200 OK", "ok\n".to_string())
            }
        }
        (Some("GET"), _) => ("404 Not Found", "try /metrics or /health\n".into()),
        _ => ("405 Method Not Allowed", "GET only\n".into()),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
