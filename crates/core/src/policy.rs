//! HSM and partition policies. The HSM SO sets the HSM's policies, which bound what any
//! partition may allow; the Partition SO sets the partition's. The effective partition policy
//! is the stricter of the two.

use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};

/// Highest failed-login limit for Crypto Officer and Crypto User (the PED-HSM anchor's value).
pub const MAX_FAILED_LOGINS: u32 = 10;

/// Longest time a process may remember a Crypto Officer's or User's login (see
/// [`crate::login_memo`]): one hour.
pub const MAX_LOGIN_CACHE_SECONDS: u32 = 3600;

/// A new partition's login memo: five minutes from the last successful login.
pub const DEFAULT_LOGIN_CACHE_SECONDS: u32 = 300;

fn default_login_cache_seconds() -> u32 {
    DEFAULT_LOGIN_CACHE_SECONDS
}

fn on() -> bool {
    true
}

/// A set of policies (used both for the HSM and for each partition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Failed Crypto Officer / Crypto User logins before lockout (1..=10).
    pub failed_login_limit: u32,
    /// Whether Crypto Officer and Crypto User may activate (cache their PED secret).
    pub activation: bool,
    /// Whether an activation survives a restart of the HSM.
    pub auto_activation: bool,
    /// Whether private keys may be cloned (within the cloning domain).
    pub clone_private_keys: bool,
    /// Whether secret keys may be cloned (within the cloning domain).
    pub clone_secret_keys: bool,
    /// Whether secrets may be split M of N.
    pub m_of_n: bool,
    /// Whether a remote PED may authenticate.
    pub remote_ped: bool,
    /// Seconds a process may reuse the stretched password of a Crypto Officer's or User's
    /// last successful login, counted from that login (0..=3600; 0: every login runs Argon2id).
    /// Stores written before this policy existed read the default.
    #[serde(default = "default_login_cache_seconds")]
    pub login_cache_seconds: u32,
    /// HSM policy only: whether PKCS#11 `C_InitToken` may create a partition on a
    /// password-authenticated HSM. Off by default (and in stores written before it existed):
    /// otherwise anyone who can reach the module creates partitions without the HSM SO.
    #[serde(default)]
    pub init_token: bool,
    /// Whether well-known key values (all-zero, repeated, sequential, the GlobalPlatform
    /// default key, weak DES) are accepted in this partition, each acceptance audited: a test
    /// mode only a Partition SO turns on. Off for partitions; the HSM allows it unless its
    /// SO turns it off (stores written before it existed read off).
    #[serde(default)]
    pub test_keys: bool,
    /// Whether secret keys may be made with `CKA_SENSITIVE` false (their value then reads in
    /// clear, as PKCS#11 says). Off for partitions: a key whose value anyone logged in can
    /// read is no HSM key. Stores written before it existed read off.
    #[serde(default)]
    pub non_sensitive_keys: bool,
    /// Whether `CKM_RSA_PKCS` (PKCS#1 v1.5) decryption and unwrapping are offered. On by
    /// default (legacy clients need it); a bad padding never shows (implicit rejection).
    #[serde(default = "on")]
    pub rsa_pkcs_decrypt: bool,
    /// Whether secret and private keys may be brought in clear (`C_CreateObject`, as Java's
    /// keytool does). Off for partitions: such keys are not local, never wrap, and each import
    /// is audited. Stores written before it existed read off.
    #[serde(default)]
    pub import_keys: bool,
}

/// What each policy guards against, for `policy show` (name, meaning).
pub const POLICY_MEANINGS: &[(&str, &str)] = &[
    ("failed-login-limit", "failed Crypto Officer/User logins before lockout (1-10): bounds PIN and PED-key guessing"),
    ("activation", "Crypto Officer/User may activate (the HSM keeps their PED secret) so applications log in by PIN alone"),
    ("auto-activation", "an activation survives a restart of the HSM"),
    ("clone-private-keys", "private keys may be cloned to HSMs of the same cloning domain"),
    ("clone-secret-keys", "secret keys may be cloned to HSMs of the same cloning domain"),
    ("m-of-n", "PED secrets may be split M of N (quorum)"),
    ("remote-ped", "a remote PED may authenticate"),
    ("login-cache-seconds", "seconds a process may reuse a Crypto Officer/User's last stretched password (0: every login runs Argon2id)"),
    ("init-token", "HSM only: PKCS#11 C_InitToken may create partitions (otherwise anyone who reaches the module could)"),
    ("test-keys", "well-known key values (GlobalPlatform default, all-zero, repeated, sequential, weak DES) are accepted, each audited: a test mode; off stops keys whose value every attacker knows"),
    ("non-sensitive-keys", "secret keys may be made with CKA_SENSITIVE false, their value readable in clear; off stops a key being born readable"),
    ("rsa-pkcs-decrypt", "CKM_RSA_PKCS (PKCS#1 v1.5) decryption and unwrapping are offered, with implicit rejection so a bad padding never shows (Bleichenbacher); off removes the mechanism"),
    ("import-keys", "secret and private keys may be brought in clear (C_CreateObject, keytool); off stops keys of a value known outside entering, and such keys never wrap"),
];

/// What policy `name` means and the attack it stops (empty for an unknown name).
pub fn meaning(name: &str) -> &'static str {
    POLICY_MEANINGS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, m)| m)
}

impl Policy {
    /// The HSM's defaults: everything allowed, so partitions decide.
    pub fn hsm_default() -> Self {
        Policy {
            failed_login_limit: MAX_FAILED_LOGINS,
            activation: true,
            auto_activation: true,
            clone_private_keys: true,
            clone_secret_keys: true,
            m_of_n: true,
            remote_ped: true,
            login_cache_seconds: MAX_LOGIN_CACHE_SECONDS,
            init_token: false,
            test_keys: true,
            non_sensitive_keys: true,
            rsa_pkcs_decrypt: true,
            import_keys: true,
        }
    }

    /// A new partition's defaults: no activation until the Partition SO allows it.
    pub fn partition_default() -> Self {
        Policy {
            activation: false,
            auto_activation: false,
            login_cache_seconds: DEFAULT_LOGIN_CACHE_SECONDS,
            test_keys: false,
            non_sensitive_keys: false,
            import_keys: false,
            ..Self::hsm_default()
        }
    }

    /// The stricter of a partition policy and the HSM policy.
    pub fn effective(&self, hsm: &Policy) -> Policy {
        Policy {
            failed_login_limit: self.failed_login_limit.min(hsm.failed_login_limit),
            activation: self.activation && hsm.activation,
            auto_activation: self.auto_activation && hsm.auto_activation,
            clone_private_keys: self.clone_private_keys && hsm.clone_private_keys,
            clone_secret_keys: self.clone_secret_keys && hsm.clone_secret_keys,
            m_of_n: self.m_of_n && hsm.m_of_n,
            remote_ped: self.remote_ped && hsm.remote_ped,
            login_cache_seconds: self.login_cache_seconds.min(hsm.login_cache_seconds),
            init_token: hsm.init_token,
            test_keys: self.test_keys && hsm.test_keys,
            non_sensitive_keys: self.non_sensitive_keys && hsm.non_sensitive_keys,
            rsa_pkcs_decrypt: self.rsa_pkcs_decrypt && hsm.rsa_pkcs_decrypt,
            import_keys: self.import_keys && hsm.import_keys,
        }
    }

    /// Policy names and values, for display.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let b = |v: bool| {
            if v {
                "on".to_string()
            } else {
                "off".to_string()
            }
        };
        vec![
            ("failed-login-limit", self.failed_login_limit.to_string()),
            ("activation", b(self.activation)),
            ("auto-activation", b(self.auto_activation)),
            ("clone-private-keys", b(self.clone_private_keys)),
            ("clone-secret-keys", b(self.clone_secret_keys)),
            ("m-of-n", b(self.m_of_n)),
            ("remote-ped", b(self.remote_ped)),
            ("login-cache-seconds", self.login_cache_seconds.to_string()),
            ("init-token", b(self.init_token)),
            ("test-keys", b(self.test_keys)),
            ("non-sensitive-keys", b(self.non_sensitive_keys)),
            ("rsa-pkcs-decrypt", b(self.rsa_pkcs_decrypt)),
            ("import-keys", b(self.import_keys)),
        ]
    }

    /// Sets one policy by name from text ("on"/"off" or a number).
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let flag = || match value {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            _ => Err(HsmError::InvalidInput(format!(
                "policy {name} takes on or off, not {value:?}"
            ))),
        };
        match name {
            "failed-login-limit" => {
                let n: u32 = value.parse().map_err(|_| {
                    HsmError::InvalidInput(format!(
                        "failed-login-limit takes a number, not {value:?}"
                    ))
                })?;
                if !(1..=MAX_FAILED_LOGINS).contains(&n) {
                    return Err(HsmError::InvalidInput(format!(
                        "failed-login-limit must be 1 to {MAX_FAILED_LOGINS}"
                    )));
                }
                self.failed_login_limit = n;
            }
            "login-cache-seconds" => {
                let n: u32 = value.parse().map_err(|_| {
                    HsmError::InvalidInput(format!(
                        "login-cache-seconds takes a number of seconds, not {value:?}"
                    ))
                })?;
                if n > MAX_LOGIN_CACHE_SECONDS {
                    return Err(HsmError::InvalidInput(format!(
                        "login-cache-seconds must be 0 to {MAX_LOGIN_CACHE_SECONDS}"
                    )));
                }
                self.login_cache_seconds = n;
            }
            "activation" => self.activation = flag()?,
            "auto-activation" => self.auto_activation = flag()?,
            "clone-private-keys" => self.clone_private_keys = flag()?,
            "clone-secret-keys" => self.clone_secret_keys = flag()?,
            "m-of-n" => self.m_of_n = flag()?,
            "remote-ped" => self.remote_ped = flag()?,
            "init-token" => self.init_token = flag()?,
            "test-keys" => self.test_keys = flag()?,
            "non-sensitive-keys" => self.non_sensitive_keys = flag()?,
            "rsa-pkcs-decrypt" => self.rsa_pkcs_decrypt = flag()?,
            "import-keys" => self.import_keys = flag()?,
            _ => {
                let names: Vec<_> = self.entries().into_iter().map(|(n, _)| n).collect();
                return Err(HsmError::InvalidInput(format!(
                    "unknown policy {name:?}; one of: {}",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Names of the policies this one allows that `bound` forbids (a partition asking for more
    /// than the HSM allows).
    pub fn exceeds(&self, bound: &Policy) -> Vec<&'static str> {
        let eff = self.effective(bound);
        self.entries()
            .into_iter()
            .zip(eff.entries())
            .filter(|((_, a), (_, b))| a != b && a == "on")
            .map(|((n, _), _)| n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_is_stricter_of_both() {
        let mut hsm = Policy::hsm_default();
        hsm.set("activation", "off").unwrap();
        hsm.set("failed-login-limit", "5").unwrap();
        let mut p = Policy::partition_default();
        p.set("activation", "on").unwrap();
        let e = p.effective(&hsm);
        assert!(!e.activation);
        assert_eq!(e.failed_login_limit, 5);
        assert_eq!(p.exceeds(&hsm), vec!["activation"]);
    }

    #[test]
    fn login_cache_is_the_shorter_of_both_and_old_stores_read_the_default() {
        let mut hsm = Policy::hsm_default();
        let mut p = Policy::partition_default();
        assert_eq!(
            p.effective(&hsm).login_cache_seconds,
            DEFAULT_LOGIN_CACHE_SECONDS
        );
        hsm.set("login-cache-seconds", "60").unwrap();
        assert_eq!(p.effective(&hsm).login_cache_seconds, 60);
        p.set("login-cache-seconds", "0").unwrap();
        assert_eq!(p.effective(&hsm).login_cache_seconds, 0);
        // A policy stored before the field existed.
        let mut v = serde_json::to_value(Policy::partition_default()).unwrap();
        v.as_object_mut().unwrap().remove("login_cache_seconds");
        let old: Policy = serde_json::from_value(v).unwrap();
        assert_eq!(old.login_cache_seconds, DEFAULT_LOGIN_CACHE_SECONDS);
    }

    #[test]
    fn bad_values_refused() {
        let mut p = Policy::partition_default();
        assert!(p.set("failed-login-limit", "11").is_err());
        assert!(p.set("failed-login-limit", "0").is_err());
        assert!(p.set("activation", "maybe").is_err());
        assert!(p.set("nonsense", "on").is_err());
        assert!(p.set("login-cache-seconds", "3601").is_err());
        assert!(p.set("login-cache-seconds", "-1").is_err());
        assert_eq!(p, Policy::partition_default());
    }

    #[test]
    fn every_policy_is_explained_and_old_stores_read_safe_defaults() {
        for (name, _) in Policy::hsm_default().entries() {
            assert!(!meaning(name).is_empty(), "policy {name} has no meaning");
        }
        assert_eq!(POLICY_MEANINGS.len(), Policy::hsm_default().entries().len());
        let mut v = serde_json::to_value(Policy::partition_default()).unwrap();
        for f in ["non_sensitive_keys", "rsa_pkcs_decrypt", "import_keys"] {
            v.as_object_mut().unwrap().remove(f);
        }
        let old: Policy = serde_json::from_value(v).unwrap();
        assert!(!old.non_sensitive_keys && !old.import_keys && old.rsa_pkcs_decrypt);
        let p = Policy::partition_default();
        assert!(!p.non_sensitive_keys && !p.import_keys && p.rsa_pkcs_decrypt);
    }
}
