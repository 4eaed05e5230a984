//! Roles, how each authenticates, and the failed-login rules.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::{ct_eq, hkdf32, hmac_sha256, KdfParams};
use crate::error::{HsmError, Result};
use crate::pedkey::SecretType;
use crate::secret::Secret32;

/// A role. Partition roles are qualified by a partition where they are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Security officer of the whole HSM (blue).
    HsmSo,
    /// Security officer of one partition (blue).
    PartitionSo,
    /// Crypto Officer: read-write use of a partition's objects (black).
    CryptoOfficer,
    /// Crypto User: read-only use of a partition's keys (gray).
    CryptoUser,
    /// Auditor: the audit log and nothing else (white).
    Auditor,
}

impl Role {
    /// The PED secret type this role authenticates with.
    pub fn secret_type(self) -> SecretType {
        match self {
            Role::HsmSo | Role::PartitionSo => SecretType::So,
            Role::CryptoOfficer => SecretType::CryptoOfficer,
            Role::CryptoUser => SecretType::CryptoUser,
            Role::Auditor => SecretType::Auditor,
        }
    }

    /// Short name used in commands, records and key file names.
    pub fn short(self) -> &'static str {
        match self {
            Role::HsmSo => "hsm-so",
            Role::PartitionSo => "so",
            Role::CryptoOfficer => "co",
            Role::CryptoUser => "cu",
            Role::Auditor => "auditor",
        }
    }

    /// Whether the role belongs to a partition.
    pub fn in_partition(self) -> bool {
        matches!(
            self,
            Role::PartitionSo | Role::CryptoOfficer | Role::CryptoUser
        )
    }

    /// Failed logins allowed before the consequence, given the effective CO/CU limit.
    pub fn failed_login_limit(self, co_cu_limit: u32) -> u32 {
        match self {
            Role::HsmSo | Role::Auditor => 3,
            Role::PartitionSo => 10,
            Role::CryptoOfficer | Role::CryptoUser => {
                co_cu_limit.clamp(1, crate::policy::MAX_FAILED_LOGINS)
            }
        }
    }

    /// Parses `hsm-so`, `so`, `co`, `cu`, `auditor` (and long forms).
    pub fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "hsm-so" => Role::HsmSo,
            "so" | "partition-so" | "pso" => Role::PartitionSo,
            "co" | "crypto-officer" => Role::CryptoOfficer,
            "cu" | "crypto-user" => Role::CryptoUser,
            "auditor" => Role::Auditor,
            _ => {
                return Err(HsmError::InvalidInput(format!(
                    "unknown role {s:?}; one of hsm-so, so, co, cu, auditor"
                )))
            }
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::HsmSo => "HSM SO",
            Role::PartitionSo => "Partition SO",
            Role::CryptoOfficer => "Crypto Officer",
            Role::CryptoUser => "Crypto User",
            Role::Auditor => "Auditor",
        })
    }
}

/// How a role's authenticator is produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum AuthMethod {
    /// A PED secret (possibly split M of N), optionally mixed with a PED PIN.
    Ped {
        /// The secret's id, as written on its keys.
        secret_id: String,
        /// The HSM that first made the secret.
        origin_serial: String,
        /// Shares needed.
        m: u8,
        /// Shares made.
        n: u8,
        /// Argon2id parameters for the PED PIN, when one protects the secret.
        pin_kdf: Option<KdfParams>,
    },
    /// A password stretched with Argon2id.
    Password {
        /// Argon2id parameters.
        kdf: KdfParams,
    },
}

/// A role's stored authentication state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleAuth {
    /// How it authenticates.
    pub method: AuthMethod,
    /// HMAC of the authenticator under a device-derived key (hex).
    pub verifier: String,
    /// The partition master key wrapped under this role's key (CO and CU), or the
    /// partition's cloning domain (Partition SO); hex.
    pub wrapped_pmk: Option<String>,
    /// Consecutive failed logins.
    pub failed: u32,
    /// Locked until the Partition SO resets it.
    pub locked: bool,
    /// Locked until this Unix time (timed lockout).
    pub lock_until: Option<u64>,
    /// When the secret was last set (UTC).
    pub changed: String,
}

/// Key for verifiers, derived from the device key: a stolen database alone cannot be used to
/// test guesses.
fn verifier_key(dk: &Secret32) -> Secret32 {
    hkdf32(&[], dk.expose(), &[b"ferrohsm role verifier v1"])
}

/// Verifier of an authenticator for a role tag (e.g. `p1/co`).
pub fn verifier(dk: &Secret32, tag: &str, auth: &Secret32) -> String {
    hex::encode(hmac_sha256(
        verifier_key(dk).expose(),
        &[tag.as_bytes(), b"\0", auth.expose()],
    ))
}

/// Key-encryption key bound to both the device key and the role's authenticator.
pub fn role_kek(dk: &Secret32, tag: &str, auth: &Secret32) -> Secret32 {
    hkdf32(
        dk.expose(),
        auth.expose(),
        &[b"ferrohsm role kek v1\0", tag.as_bytes()],
    )
}

impl RoleAuth {
    /// A new role state for an authenticator, optionally wrapping the partition master key.
    pub fn new(
        dk: &Secret32,
        tag: &str,
        method: AuthMethod,
        auth: &Secret32,
        pmk: Option<&Secret32>,
    ) -> Self {
        let mut ra = RoleAuth {
            method,
            verifier: verifier(dk, tag, auth),
            wrapped_pmk: None,
            failed: 0,
            locked: false,
            lock_until: None,
            changed: crate::time::now_rfc3339(),
        };
        if let Some(k) = pmk {
            ra.wrap(dk, tag, auth, k);
        }
        ra
    }

    /// Wraps `key` under this role's key (what [`RoleAuth::unwrap_pmk`] opens), replacing
    /// what the slot held.
    pub fn wrap(&mut self, dk: &Secret32, tag: &str, auth: &Secret32, key: &Secret32) {
        self.wrapped_pmk = Some(hex::encode(crate::crypto::seal(
            &role_kek(dk, tag, auth),
            tag.as_bytes(),
            key.expose(),
        )));
    }

    /// Whether `auth` is this role's authenticator (constant time).
    pub fn matches(&self, dk: &Secret32, tag: &str, auth: &Secret32) -> bool {
        ct_eq(self.verifier.as_bytes(), verifier(dk, tag, auth).as_bytes())
    }

    /// Unwraps the partition master key with a verified authenticator.
    pub fn unwrap_pmk(
        &self,
        dk: &Secret32,
        tag: &str,
        auth: &Secret32,
    ) -> Result<Option<Secret32>> {
        let Some(w) = &self.wrapped_pmk else {
            return Ok(None);
        };
        let sealed = hex::decode(w)
            .map_err(|_| HsmError::Tamper(format!("wrapped key of {tag} is damaged")))?;
        let pmk = crate::crypto::open(
            &role_kek(dk, tag, auth),
            tag.as_bytes(),
            &sealed,
            &format!("wrapped key of {tag}"),
        )?;
        Ok(Some(Secret32::from_slice(pmk.expose())?))
    }

    /// Short description: "PED 2 of 3 with PED PIN", "password".
    pub fn describe(&self) -> String {
        match &self.method {
            AuthMethod::Ped { m, n, pin_kdf, .. } => {
                let split = if *n == 1 {
                    "PED key".to_string()
                } else {
                    format!("PED {m} of {n}")
                };
                if pin_kdf.is_some() {
                    format!("{split} with PED PIN")
                } else {
                    split
                }
            }
            AuthMethod::Password { .. } => "password".into(),
        }
    }

    /// Refuses if locked (permanently or for a while).
    pub fn check_not_locked(&self, who: &str, now: u64) -> Result<()> {
        if self.locked {
            return Err(HsmError::Locked(format!(
                "{who} is locked after {} failed logins; the Partition SO must reset it (`ferrohsm role reset`)",
                self.failed
            )));
        }
        if let Some(t) = self.lock_until {
            if t > now {
                return Err(HsmError::Locked(format!(
                    "{who} is locked out for another {} s after failed logins",
                    t - now
                )));
            }
        }
        Ok(())
    }
}
