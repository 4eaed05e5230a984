//! Imprints in two steps, so that a PED dialogue never half-finishes.
//!
//! A front end first *stages* an imprint: the HSM makes the secret (or rebuilds a reused
//! one), splits it into key files and keeps it here, in memory, under a fresh stage id; the
//! front end writes the files under temporary names. Then it runs the operation (init, role
//! init, change-secret …) naming the stage: the engine takes the staged secret instead of a
//! new one and commits. Only then does the front end put the files in place. At every point
//! either the old keys or the new ones log in: before the commit the HSM never saw the new
//! secret; after it, the new keys exist on disk (under their temporary names until the rename).
//!
//! A stage is used at most once and lives [`STAGE_LIFETIME`]; nothing is written to the store
//! until the operation commits, so a server that dies in between forgets it and the front end's
//! temporary files are simply removed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crypto::random_hex_id;
use crate::error::{HsmError, Result};
use crate::ped::{ImprintRequest, Imprinted, Ped, PresentRequest, Presented};
use crate::pedkey::SecretType;
use crate::secret::Secret32;

/// How long a staged imprint waits for its operation. A temporary key file older than this
/// whose secret the HSM does not use can never be adopted, so a front end may remove it.
pub const STAGE_LIFETIME: Duration = Duration::from_secs(600);

/// At most this many stages wait at once (each holds a secret in memory).
const MAX_STAGES: usize = 64;

struct Stage {
    id: String,
    made: Instant,
    secret_type: SecretType,
    imprinted: Imprinted,
}

static STAGES: Mutex<Vec<Stage>> = Mutex::new(Vec::new());

fn stages() -> std::sync::MutexGuard<'static, Vec<Stage>> {
    // Pushes and removals only: a poisoned list is still whole.
    let mut s = STAGES.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    s.retain(|st| now.duration_since(st.made) < STAGE_LIFETIME);
    s
}

/// Keeps what a PED imprinted until the operation that adopts it; returns the stage id.
pub fn keep(secret_type: SecretType, imprinted: Imprinted) -> Result<String> {
    let mut s = stages();
    if s.len() >= MAX_STAGES {
        return Err(HsmError::Exhausted(format!(
            "{MAX_STAGES} PED imprints are already waiting for their operation; finish or let them expire ({} s)",
            STAGE_LIFETIME.as_secs()
        )));
    }
    let id = random_hex_id(16);
    s.push(Stage {
        id: id.clone(),
        made: Instant::now(),
        secret_type,
        imprinted,
    });
    Ok(id)
}

/// The PED of an operation whose keys were staged: it hands the engine the staged secret.
pub struct StagedPed {
    id: String,
}

impl StagedPed {
    /// The PED for stage `id` (from [`keep`]).
    pub fn new(id: String) -> StagedPed {
        StagedPed { id }
    }
}

impl Ped for StagedPed {
    fn imprint(&mut self, req: &ImprintRequest, _fresh: Secret32) -> Result<Imprinted> {
        let stage = {
            let mut s = stages();
            let at = s.iter().position(|st| st.id == self.id).ok_or_else(|| {
                HsmError::InvalidInput(format!(
                    "no staged PED imprint {} (each is used once, within {} s, on the HSM that made it); run the command again",
                    self.id.get(..8).unwrap_or(&self.id),
                    STAGE_LIFETIME.as_secs()
                ))
            })?;
            s.swap_remove(at)
        };
        if stage.secret_type != req.secret_type {
            return Err(HsmError::InvalidInput(format!(
                "the staged keys are {}; this needs {} (a key of the right colour)",
                stage.secret_type.describe(),
                req.secret_type.describe(),
            )));
        }
        let i = stage.imprinted;
        if (i.m, i.n) != (1, 1) && !i.reused && !req.allow_m_of_n {
            return Err(HsmError::Refused(
                "M of N is disabled by HSM policy (m-of-n=off)".into(),
            ));
        }
        if !i.reused && i.origin_serial != req.origin_serial {
            return Err(HsmError::InvalidInput(
                "the staged keys were made by another HSM".into(),
            ));
        }
        Ok(i)
    }

    fn present(&mut self, _req: &PresentRequest) -> Result<Presented> {
        Err(HsmError::InvalidInput(
            "staged keys imprint a new secret; a login presents its keys as a credential".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imprinted(secret_type_serial: &str) -> Imprinted {
        Imprinted {
            secret: Secret32::random(),
            secret_id: random_hex_id(16),
            origin_serial: secret_type_serial.into(),
            m: 1,
            n: 1,
            pin: None,
            reused: false,
            written: Vec::new(),
        }
    }

    fn req(t: SecretType) -> ImprintRequest {
        ImprintRequest {
            secret_type: t,
            label: "x".into(),
            origin_serial: "S1".into(),
            allow_m_of_n: true,
        }
    }

    #[test]
    fn a_stage_is_taken_once_and_only_for_its_colour() {
        let imp = imprinted("S1");
        let want = imp.secret.expose().to_vec();
        let id = keep(SecretType::CryptoOfficer, imp).unwrap();
        let mut ped = StagedPed::new(id.clone());
        let got = ped
            .imprint(&req(SecretType::CryptoOfficer), Secret32::random())
            .unwrap();
        assert_eq!(got.secret.expose().to_vec(), want);
        let again = StagedPed::new(id)
            .imprint(&req(SecretType::CryptoOfficer), Secret32::random())
            .unwrap_err();
        assert!(
            again.to_string().contains("no staged PED imprint"),
            "{again}"
        );

        // A black key's stage offered where a red one is needed is refused (and spent).
        let id = keep(SecretType::CryptoOfficer, imprinted("S1")).unwrap();
        let e = StagedPed::new(id)
            .imprint(&req(SecretType::Domain), Secret32::random())
            .unwrap_err();
        assert!(e.to_string().contains("this needs red"), "{e}");
    }

    #[test]
    fn another_hsms_stage_is_refused() {
        let id = keep(SecretType::So, imprinted("OTHER")).unwrap();
        let e = StagedPed::new(id)
            .imprint(&req(SecretType::So), Secret32::random())
            .unwrap_err();
        assert!(e.to_string().contains("another HSM"), "{e}");
    }
}
