//! Where cloning domains are kept. The device key alone opens none of them:
//!
//! - the HSM keeps only its domain's id and a check value; a partition joining the HSM's
//!   domain presents it again (red key, or domain password), as network HSMs ask for the red
//!   key at partition initialisation;
//! - a partition's domain is wrapped under its Partition SO's role key (which needs the
//!   Partition SO's secret) and, once a Crypto Officer exists, sealed under a key derived
//!   from the partition master key (which needs the Crypto Officer's or Crypto User's
//!   secret, or an activation). Cloning opens the second with the Crypto Officer's login.
//!
//! Records written before this layout kept the domain in the clear under the device key:
//! the HSM's copy is dropped when the store is opened, a partition's is moved under the
//! Partition SO's and the Crypto Officer's keys at their next logins, then dropped.

use super::*;

/// The domain value of a red key's secret and its PED PIN: a PIN protects the key, and the
/// value includes it, so every member of the domain is given the same PIN.
pub(super) fn red_key_value(secret: &Secret32, pin: Option<&Pin>) -> Secret32 {
    match pin {
        Some(pin) => hkdf32(
            pin.expose(),
            secret.expose(),
            &[b"ferrohsm domain with pin v1"],
        ),
        None => secret.clone(),
    }
}

/// The value and id of a domain password (deterministic, so the same words make the same
/// domain on every HSM).
pub(super) fn password_domain(pw: &Pin) -> Result<(Secret32, String)> {
    let kdf = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
        salt: hex::encode(b"ferrohsm domain"),
    };
    let value = kdf.derive(pw.expose())?;
    let id = hex::encode(&crypto::hmac_sha256(value.expose(), &[b"domain id"])[..16]);
    Ok((value, id))
}

/// A check value of a domain: tells whether a presented domain is the one meant, revealing
/// nothing about it (one-way; the value is 32 random bytes or an Argon2 output).
pub(super) fn domain_check(domain: &Secret32) -> String {
    hex::encode(&crypto::hmac_sha256(domain.expose(), &[b"ferrohsm domain check v1"])[..16])
}

/// The key a partition's domain is sealed under: bound to the partition master key and the
/// partition, so that neither the device key nor another partition's key opens it.
fn seal_key(pmk: &Secret32, partition: u32) -> Secret32 {
    hkdf32(
        &[],
        pmk.expose(),
        &[b"ferrohsm partition domain v1\0", &partition.to_be_bytes()],
    )
}

/// The partition's domain sealed for its Crypto Officer (hex).
pub(super) fn seal_domain(pmk: &Secret32, partition: u32, domain: &Secret32) -> String {
    hex::encode(crypto::seal(
        &seal_key(pmk, partition),
        &partition.to_be_bytes(),
        domain.expose(),
    ))
}

fn open_domain(pmk: &Secret32, partition: u32, sealed: &str) -> Result<Secret32> {
    let what = format!("the cloning domain of partition {partition}");
    let bytes = hex::decode(sealed).map_err(|_| HsmError::Tamper(format!("{what} is damaged")))?;
    let d = crypto::open(
        &seal_key(pmk, partition),
        &partition.to_be_bytes(),
        &bytes,
        &what,
    )?;
    Secret32::from_slice(d.expose())
}

impl Hsm {
    /// The HSM's own cloning domain, presented again to join a partition to it: a red key
    /// (PED-authenticated HSM) or the domain password. Refused, naming what was presented,
    /// unless it is the HSM's domain.
    pub(super) fn present_hsm_domain(
        &mut self,
        cred: Credential<'_>,
        label: &str,
    ) -> Result<(Secret32, String)> {
        let (mode, id, check) = self.store.read(|t| {
            let d = Self::device(t)?;
            Ok((d.mode, d.domain_id, d.domain_check))
        })?;
        let (value, got_id, what) = match (cred, mode) {
            (Credential::Ped(ped), AuthMode::Ped) => {
                let p = ped.present(&PresentRequest {
                    secret_type: crate::pedkey::SecretType::Domain,
                    role: format!("cloning domain of {} (for partition {label})", self.serial),
                })?;
                let v = red_key_value(&p.secret, p.pin.as_ref());
                let what = format!(
                    "the red key presented (\"{}\", from HSM {})",
                    p.label, p.origin_serial
                );
                (v, p.secret_id, what)
            }
            (Credential::Secret(pw), AuthMode::Password) => {
                let (v, i) = password_domain(&pw)?;
                (v, i, "the domain password given".to_string())
            }
            _ => return Err(HsmError::InvalidInput(
                "the HSM's cloning domain is presented the way this HSM authenticates (its red PED key, or its domain password)".into())),
        };
        let refuse = |why: &str| {
            HsmError::Refused(format!(
                "{what} is not this HSM's cloning domain{why}; partition {label} was not initialised"
            ))
        };
        if got_id != id {
            return Err(self.refuse("partition-init", "so", Some(label), refuse("")));
        }
        if check.is_some_and(|c| !crypto::ct_eq(c.as_bytes(), domain_check(&value).as_bytes())) {
            return Err(self.refuse(
                "partition-init",
                "so",
                Some(label),
                refuse(" (the key is, but not with this PED PIN)"),
            ));
        }
        Ok((value, got_id))
    }

    /// Drops the device record's clear copy of the HSM's domain (records before 0.9), after
    /// keeping its check value. Run when the store is opened.
    pub(super) fn migrate_device_domain(&mut self) -> Result<()> {
        if self.store.key_state() != KeyState::Present {
            return Ok(());
        }
        let legacy = self.store.read(|t| {
            Ok(t.get::<Device>("device", "")?
                .is_some_and(|d| d.legacy_domain.is_some()))
        })?;
        if !legacy {
            return Ok(());
        }
        self.store.write(|t| {
            let mut d = Self::device(t)?;
            if let Some(v) = d.legacy_domain.take() {
                d.domain_check.get_or_insert_with(|| domain_check(&v));
            }
            t.put("device", "", &d)
        })
    }

    /// The cloning domain of the partition a Crypto Officer (or activation, or Crypto User)
    /// logged in to, opened with the login's partition master key. A domain kept the old way
    /// is sealed now, and its clear copy dropped once the Partition SO holds it too.
    pub(super) fn partition_domain(&mut self, s: &Session, id: u32) -> Result<Option<Secret32>> {
        let pmk = s.pmk()?.clone();
        let (sealed, legacy) = self.store.read(|t| {
            let p = Self::partition_by_id(t, id)?;
            Ok((p.domain_sealed, p.legacy_domain))
        })?;
        if let Some(sealed) = sealed {
            return open_domain(&pmk, id, &sealed).map(Some);
        }
        let Some(domain) = legacy else {
            return Ok(None);
        };
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            p.domain_sealed = Some(seal_domain(&pmk, id, &domain));
            if p.so.as_ref().is_some_and(|so| so.wrapped_pmk.is_some()) {
                p.legacy_domain = None;
            }
            t.put("partition", &pid(id), &p)
        })?;
        Ok(Some(domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_domain_opens_with_its_partition_key_only() {
        let (pmk, other) = (Secret32::random(), Secret32::random());
        let d = Secret32::random();
        let sealed = seal_domain(&pmk, 3, &d);
        assert_eq!(open_domain(&pmk, 3, &sealed).unwrap(), d);
        assert!(matches!(
            open_domain(&other, 3, &sealed),
            Err(HsmError::Tamper(_))
        ));
        // Moved to another partition's record, it does not open there either.
        assert!(matches!(
            open_domain(&pmk, 4, &sealed),
            Err(HsmError::Tamper(_))
        ));
        assert!(!sealed.contains(&hex::encode(d.expose())));
    }

    #[test]
    fn old_records_keep_reading_and_never_write_the_hsm_domain_again() {
        let dk = Secret32::random();
        let method = AuthMethod::Password {
            kdf: KdfParams::fresh(),
        };
        let d = Device {
            label: "h".into(),
            mode: AuthMode::Password,
            initialised: "t".into(),
            policy: Policy::hsm_default(),
            so: RoleAuth::new(&dk, "so", method, &Secret32::random(), None),
            legacy_domain: None,
            domain_id: "id".into(),
            domain_check: None,
            boot_epoch: 1,
            next_partition: 1,
            backup: false,
        };
        let mut old = serde_json::to_value(&d).unwrap();
        assert!(old.get("domain").is_none(), "{old}");
        // What a record before 0.9 holds: the domain itself.
        old["domain"] = serde_json::to_value(Secret32::random()).unwrap();
        let d: Device = serde_json::from_value(old).unwrap();
        assert!(d.legacy_domain.is_some());
        let again = serde_json::to_value(&d).unwrap();
        assert!(again.get("domain").is_none(), "{again}");
    }

    fn pw(s: &str) -> Pin {
        Pin::password(s).unwrap()
    }

    /// A password HSM with partition "p" in the HSM's domain ("words-1") and its CO.
    fn lab(dir: &Path) -> Hsm {
        let mut h = Hsm::open_or_create(dir).unwrap();
        h.init(InitOptions {
            label: "h".into(),
            mode: AuthMode::Password,
            so: NewSecret::Password(pw("so-password")),
            domain: NewSecret::Password(pw("words-1")),
            current_so: None,
            confirm_destroy: vec![],
        })
        .unwrap();
        let so = h
            .login(Role::HsmSo, None, Credential::Secret(pw("so-password")))
            .unwrap();
        h.create_partition(&so, "p").unwrap();
        h.create_partition(&so, "q").unwrap();
        h.init_partition(
            "p",
            NewSecret::Password(pw("pso-password")),
            DomainChoice::Hsm(Credential::Secret(pw("words-1"))),
            None,
        )
        .unwrap();
        let pso = h
            .login(
                Role::PartitionSo,
                Some("p"),
                Credential::Secret(pw("pso-password")),
            )
            .unwrap();
        h.init_role(
            &pso,
            Role::CryptoOfficer,
            NewSecret::Password(pw("co-password")),
            false,
        )
        .unwrap();
        h
    }

    fn co(h: &mut Hsm) -> Session {
        h.login(
            Role::CryptoOfficer,
            Some("p"),
            Credential::Secret(pw("co-password")),
        )
        .unwrap()
    }

    /// Every record the store holds, opened with the device key: what an attacker who took
    /// the data directory and the device key reads.
    fn everything_the_device_key_opens(h: &mut Hsm) -> String {
        h.store
            .read(|t| {
                let kinds: Vec<String> = {
                    let mut st = t.tx.prepare("SELECT DISTINCT kind FROM records")?;
                    let r = st.query_map([], |r| r.get(0))?;
                    r.collect::<std::result::Result<_, _>>()?
                };
                let mut all = String::new();
                for k in kinds.iter().filter(|k| *k != "manifest") {
                    for (_, v) in t.list::<serde_json::Value>(k)? {
                        all.push_str(&v.to_string());
                    }
                }
                Ok(all)
            })
            .unwrap()
    }

    #[test]
    fn the_device_key_alone_does_not_yield_a_cloning_domain() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = lab(dir.path());
        let (domain, _) = password_domain(&pw("words-1")).unwrap();
        let seen = everything_the_device_key_opens(&mut h);
        assert!(seen.contains("domain_sealed"), "the records were read");
        assert!(
            !seen.contains(&hex::encode(domain.expose())),
            "the domain is readable with the device key"
        );
        // The Crypto Officer's login opens it.
        let s = co(&mut h);
        assert_eq!(h.partition_domain(&s, 1).unwrap(), Some(domain.clone()));
        // Reopened (as after a restart), it is still not in what the device key opens.
        drop(h);
        let mut h = Hsm::open(dir.path()).unwrap();
        let seen = everything_the_device_key_opens(&mut h);
        assert!(!seen.contains(&hex::encode(domain.expose())));
    }

    #[test]
    fn joining_the_hsm_domain_takes_the_hsm_domain() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = lab(dir.path());
        let e = h
            .init_partition(
                "q",
                NewSecret::Password(pw("qso-password")),
                DomainChoice::Hsm(Credential::Secret(pw("words-2"))),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(&e, HsmError::Refused(m) if m.contains("not this HSM's cloning domain")),
            "{e}"
        );
        let info = h.info().unwrap();
        let q = info.partitions.iter().find(|p| p.label == "q").unwrap();
        assert!(!q.initialised, "refused, and q stays as it was");
        // With no domain, a partition cannot clone.
        h.init_partition(
            "q",
            NewSecret::Password(pw("qso-password")),
            DomainChoice::None,
            None,
        )
        .unwrap();
        let qso = h
            .login(
                Role::PartitionSo,
                Some("q"),
                Credential::Secret(pw("qso-password")),
            )
            .unwrap();
        h.init_role(
            &qso,
            Role::CryptoOfficer,
            NewSecret::Password(pw("qco-password")),
            false,
        )
        .unwrap();
        let qco = h
            .login(
                Role::CryptoOfficer,
                Some("q"),
                Credential::Secret(pw("qco-password")),
            )
            .unwrap();
        let e = h.clone_accept(&qco, false).unwrap_err();
        assert!(e.to_string().contains("in no cloning domain"), "{e}");
    }

    #[test]
    fn the_domain_survives_a_partition_so_secret_change_and_a_new_crypto_officer() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = lab(dir.path());
        let (domain, _) = password_domain(&pw("words-1")).unwrap();
        let pso = h
            .login(
                Role::PartitionSo,
                Some("p"),
                Credential::Secret(pw("pso-password")),
            )
            .unwrap();
        h.change_secret(&pso, NewSecret::Password(pw("pso-password-2")))
            .unwrap();
        let pso = h
            .login(
                Role::PartitionSo,
                Some("p"),
                Credential::Secret(pw("pso-password-2")),
            )
            .unwrap();
        h.init_role(
            &pso,
            Role::CryptoOfficer,
            NewSecret::Password(pw("co-password")),
            true,
        )
        .unwrap();
        let s = co(&mut h);
        assert_eq!(h.partition_domain(&s, 1).unwrap(), Some(domain));
    }

    #[test]
    fn a_domain_kept_the_old_way_moves_under_the_role_keys_at_their_logins() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = lab(dir.path());
        let (domain, _) = password_domain(&pw("words-1")).unwrap();
        // Rewrite the records as before 0.9: the domains in the clear, nothing wrapped.
        h.store
            .write(|t| {
                let mut p = Hsm::partition_by_id(t, 1)?;
                p.legacy_domain = Some(domain.clone());
                p.domain_sealed = None;
                if let Some(so) = p.so.as_mut() {
                    so.wrapped_pmk = None;
                }
                t.put("partition", &pid(1), &p)?;
                let mut v: serde_json::Value = t.get("device", "")?.unwrap();
                v["domain"] = serde_json::to_value(&domain).unwrap();
                v.as_object_mut().unwrap().remove("domain_check");
                t.put("device", "", &v)
            })
            .unwrap();
        drop(h);
        let mut h = Hsm::open(dir.path()).unwrap();
        let s = co(&mut h);
        assert_eq!(h.partition_domain(&s, 1).unwrap(), Some(domain.clone()));
        // Sealed for the CO; kept in the clear until the Partition SO holds it too.
        let seen = everything_the_device_key_opens(&mut h);
        assert!(seen.contains(&hex::encode(domain.expose())));
        h.login(
            Role::PartitionSo,
            Some("p"),
            Credential::Secret(pw("pso-password")),
        )
        .unwrap();
        let seen = everything_the_device_key_opens(&mut h);
        assert!(
            !seen.contains(&hex::encode(domain.expose())),
            "the old copy is gone"
        );
        // The device's check value was kept: the HSM's domain is still recognised.
        h.init_partition(
            "q",
            NewSecret::Password(pw("qso-password")),
            DomainChoice::Hsm(Credential::Secret(pw("words-1"))),
            None,
        )
        .unwrap();
        let s = co(&mut h);
        assert_eq!(h.partition_domain(&s, 1).unwrap(), Some(domain));
    }
}
