//! HA groups as the module meets them: several served HSMs with TLS listeners, one host
//! registered on all of them (the application's), and the module configured with the group.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::network::{Proxy, TlsHsm};

/// The group's name (its token label).
pub const GROUP: &str = "pay";

/// Members of one group: each a served HSM with partition "mine" (its CO's password is
/// [`super::network::USER_PIN`]), optionally behind a proxy the test controls.
pub struct HaLab {
    /// The members, in the group's order.
    pub hsms: Vec<TlsHsm>,
    /// Proxies in front of members (by index), where asked for.
    pub proxies: Vec<Option<Proxy>>,
    /// The module's configuration.
    pub conf: PathBuf,
}

impl HaLab {
    /// `domains.len()` members, member `i` in the cloning domain made from `domains[i]`;
    /// those listed in `proxied` reached through a [`Proxy`]; `extra` more lines of the
    /// module's configuration. Points the module at the group.
    pub fn new(domains: &[&str], proxied: &[usize], extra: &str) -> HaLab {
        let hsms: Vec<TlsHsm> = domains
            .iter()
            .map(|d| TlsHsm::in_domain("lease_s = 5\n", d))
            .collect();
        // The application's host (host1 of the first member) registered on every other one.
        let (cert, key) = hsms[0].host_files();
        for h in &hsms[1..] {
            let c = cert.to_str().unwrap();
            h.cli(&[
                "client",
                "register",
                "--name",
                "app",
                "--cert",
                c,
                "--password",
                "env:SO_PW",
            ]);
            h.cli(&[
                "client",
                "assign",
                "--client",
                "app",
                "--partition",
                "mine",
                "--password",
                "env:SO_PW",
            ]);
        }
        let proxies: Vec<Option<Proxy>> = (0..hsms.len())
            .map(|i| proxied.contains(&i).then(|| Proxy::start(&hsms[i].addr)))
            .collect();
        let members: String = hsms
            .iter()
            .zip(&proxies)
            .map(|(h, p)| {
                let addr = p.as_ref().map_or(h.addr.as_str(), |p| p.addr.as_str());
                format!("ha_member = \"tls://{addr} mine {}\"\n", h.fingerprint)
            })
            .collect();
        let conf = hsms[0].tmp.path().join("ha.conf");
        std::fs::write(
            &conf,
            format!(
                "ha_group = \"{GROUP}\"\n{members}client_cert = {cert:?}\nclient_key = {key:?}\nlog = {:?}\n{extra}",
                hsms[0].tmp.path().join("module.log"),
            ),
        )
        .unwrap();
        std::env::remove_var("FERROHSM_HOME");
        std::env::remove_var("FERROHSM_SERVER");
        std::env::set_var("FERROHSM_PKCS11_CONF", &conf);
        HaLab {
            hsms,
            proxies,
            conf,
        }
    }

    /// The labels of member `i`'s token objects, read with its CO's login over its socket.
    pub fn labels(&self, i: usize) -> Vec<String> {
        let out = self.hsms[i].cli(&[
            "key",
            "list",
            "--partition",
            "mine",
            "--password",
            "env:CO_PW",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|o| o["attrs"]["token"].as_bool() != Some(false))
            .map(|o| o["attrs"]["label"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// How many of `labels` member `i` holds.
    pub fn holds(&self, i: usize, labels: &[String]) -> usize {
        let have = self.labels(i);
        labels.iter().filter(|l| have.contains(l)).count()
    }

    /// Waits (up to `limit`) until member `i` holds every one of `labels`; how long it took.
    pub fn wait_for(&self, i: usize, labels: &[String], limit: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let n = self.holds(i, labels);
            if n == labels.len() {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "member {i} holds {n} of {} objects after {limit:?}; module log:\n{}",
                labels.len(),
                self.module_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What the module wrote to its log.
    pub fn module_log(&self) -> String {
        std::fs::read_to_string(self.hsms[0].tmp.path().join("module.log")).unwrap_or_default()
    }

    /// `ferrohsm ha ARGS --config … --password env:CO_PW`: exit code and output.
    pub fn ha(&self, args: &[&str]) -> (i32, String) {
        let out = std::process::Command::new(super::server_binary())
            .arg("ha")
            .args(args)
            .arg("--config")
            .arg(&self.conf)
            .args(["--password", "env:CO_PW"])
            .env("CO_PW", super::network::USER_PIN)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}
