//! HSM and partition policies. The HSM SO sets the HSM's policies, which bound what any
//! partition may allow; the Partition SO sets the partition's. The effective partition policy
//! is the stricter of the two.

use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};

/// Highest failed-login limit for Crypto Officer and Crypto User (the PED-HSM anchor's value).
pub const MAX_FAILED_LOGINS: u32 = 10;

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
        }
    }

    /// A new partition's defaults: no activation until the Partition SO allows it.
    pub fn partition_default() -> Self {
        Policy {
            activation: false,
            auto_activation: false,
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
            "activation" => self.activation = flag()?,
            "auto-activation" => self.auto_activation = flag()?,
            "clone-private-keys" => self.clone_private_keys = flag()?,
            "clone-secret-keys" => self.clone_secret_keys = flag()?,
            "m-of-n" => self.m_of_n = flag()?,
            "remote-ped" => self.remote_ped = flag()?,
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
    fn bad_values_refused() {
        let mut p = Policy::partition_default();
        assert!(p.set("failed-login-limit", "11").is_err());
        assert!(p.set("failed-login-limit", "0").is_err());
        assert!(p.set("activation", "maybe").is_err());
        assert!(p.set("nonsense", "on").is_err());
        assert_eq!(p, Policy::partition_default());
    }
}
