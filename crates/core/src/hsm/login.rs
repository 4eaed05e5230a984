//! Logging a role in: PED keys, passwords, challenge secrets; failed logins counted and their
//! consequences (zeroize, partition zeroize, lockout) persisted before the answer.

use super::*;

impl Hsm {
    /// Logs a role in. PED credentials rebuild the role's secret from its keys (and PIN);
    /// a secret is a password, or an activated role's challenge secret. Failed attempts are
    /// counted and persisted before this returns; reaching the limit zeroizes the HSM (HSM SO,
    /// 3), zeroizes the partition (Partition SO, 10), locks the role until the Partition SO
    /// resets it (Crypto Officer and User, 10 or the policy's limit) or locks it out for ten
    /// minutes (Auditor, 3).
    pub fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        cred: Credential<'_>,
    ) -> Result<Session> {
        if role.in_partition() != partition.is_some() {
            let e = HsmError::InvalidInput(if role.in_partition() {
                format!("the {role} logs in to a partition; name it with --partition")
            } else {
                format!("the {role} is not a partition role; do not name a partition")
            });
            return Err(self.refuse("login", role.short(), partition, e));
        }
        let who = match partition {
            Some(p) => format!("{role} of {p}"),
            None => role.to_string(),
        };
        // Read what is needed to compute the authenticator, outside the write lock.
        struct Pre {
            mode: AuthMode,
            part_id: Option<u32>,
            auth: Option<RoleAuth>,
            activation: Option<Activation>,
            policy: Option<Policy>,
            clock_floor: u64,
        }
        let pre = match self.store.read(|t| {
            let clock_floor = audit::clock_floor(&t.tx)?;
            if role == Role::Auditor {
                let root = &t.audit_keys()?.root;
                let a: Option<RoleAuth> = audit::get_state(&t.tx, root, "auditor")?;
                let mode = match a.as_ref().map(|a| &a.method) {
                    Some(AuthMethod::Password { .. }) => AuthMode::Password,
                    _ => AuthMode::Ped,
                };
                return Ok(Pre {
                    mode,
                    part_id: None,
                    auth: a,
                    activation: None,
                    policy: None,
                    clock_floor,
                });
            }
            let d = Self::device(t)?;
            match partition {
                None => Ok(Pre {
                    mode: d.mode,
                    part_id: None,
                    auth: Some(d.so.clone()),
                    activation: None,
                    policy: None,
                    clock_floor,
                }),
                Some(l) => {
                    let p = Self::partition_by_label(t, l)?;
                    let eff = p.policy.effective(&d.policy);
                    let act = p.activations.get(role.short()).cloned().filter(|a| {
                        eff.activation && (a.epoch == d.boot_epoch || eff.auto_activation)
                    });
                    Ok(Pre {
                        mode: d.mode,
                        part_id: Some(p.id),
                        auth: p.role(role).cloned(),
                        activation: act,
                        policy: Some(eff),
                        clock_floor,
                    })
                }
            }
        }) {
            Ok(pre) => pre,
            // An unknown partition, an HSM not initialised: refused, and recorded.
            Err(e @ (HsmError::NotFound(_) | HsmError::State(_))) => {
                return Err(self.refuse("login", role.short(), partition, e))
            }
            Err(e) => return Err(e),
        };
        let Some(auth_state) = pre.auth else {
            let e = HsmError::State(format!("the {who} is not initialised"));
            return Err(self.refuse("login", role.short(), partition, e));
        };
        if let Err(e) = auth_state.check_not_locked(&who, now_unix().max(pre.clock_floor)) {
            return Err(self.refuse("login", role.short(), partition, e));
        }
        let tag = role_tag(role, pre.part_id);

        // Compute the candidate authenticator, and whether it is checked against an activation.
        // An application role's password or challenge secret may be served by the login memo.
        let memo_ttl = match role {
            Role::CryptoOfficer | Role::CryptoUser => {
                pre.policy.as_ref().map_or(0, |p| p.login_cache_seconds)
            }
            _ => 0,
        };
        let mut memo: Option<(&KdfParams, &[u8])> = None;
        let mut via_activation = false;
        let mut other_secret: Option<String> = None;
        let candidate = match cred {
            Credential::Ped(ped) => {
                if pre.mode != AuthMode::Ped {
                    let e = HsmError::InvalidInput(format!(
                        "the {who} logs in with a password, not PED keys"
                    ));
                    return Err(self.refuse("login", role.short(), partition, e));
                }
                let presented = match ped.present(&PresentRequest {
                    secret_type: role.secret_type(),
                    role: who.clone(),
                }) {
                    Ok(p) => p,
                    Err(e) => return Err(self.refuse("login", role.short(), partition, e)),
                };
                let AuthMethod::Ped {
                    secret_id, pin_kdf, ..
                } = &auth_state.method
                else {
                    return Err(HsmError::Tamper(
                        "role method disagrees with its mode".into(),
                    ));
                };
                if &presented.secret_id != secret_id {
                    // Still checked (and so counted) like any wrong secret; only the message
                    // is more helpful.
                    other_secret = Some(format!(
                        "the presented key holds another secret (\"{}\", from HSM {})",
                        presented.label, presented.origin_serial
                    ));
                }
                match (pin_kdf, &presented.pin) {
                    (Some(_), None) => {
                        let e = HsmError::InvalidInput(format!(
                            "the {who} key is protected by a PED PIN; give it with --pin"
                        ));
                        return Err(self.refuse("login", role.short(), partition, e));
                    }
                    (Some(k), Some(pin)) => crypto::mix_pin(&presented.secret, Some(pin), k)?,
                    (None, _) => crypto::mix_pin(&presented.secret, None, &KdfParams::fresh())?,
                }
            }
            Credential::Secret(ref pw) => match (&auth_state.method, pre.mode) {
                (AuthMethod::Password { kdf }, AuthMode::Password) => {
                    memo = Some((kdf, pw.expose()));
                    login_memo::derive(kdf, pw.expose(), memo_ttl)?.0
                }
                (_, AuthMode::Ped) => {
                    if !matches!(role, Role::CryptoOfficer | Role::CryptoUser) {
                        let e = HsmError::InvalidInput(format!(
                            "the {who} logs in with PED keys, not a secret"
                        ));
                        return Err(self.refuse("login", role.short(), partition, e));
                    }
                    let Some(act) = &pre.activation else {
                        let off = pre.policy.as_ref().is_some_and(|p| !p.activation);
                        let e = HsmError::Refused(format!(
                            "the {who} is not activated{}; log in with the PED key, or activate first",
                            if off { " (partition policy activation is off)" } else { "" }));
                        return Err(self.refuse("login", role.short(), partition, e));
                    };
                    via_activation = true;
                    memo = Some((&act.kdf, pw.expose()));
                    login_memo::derive(&act.kdf, pw.expose(), memo_ttl)?.0
                }
                _ => {
                    return Err(HsmError::Tamper(
                        "role method disagrees with its mode".into(),
                    ))
                }
            },
        };

        // Check and count under the write lock, against freshly read state.
        let dk = match role {
            Role::Auditor => self.store.audit_keys()?.root.clone(),
            _ => self.store.device_key()?.clone(),
        };
        let act_tag = format!("{tag}/activation");
        let co_cu_limit = pre
            .policy
            .as_ref()
            .map_or(crate::policy::MAX_FAILED_LOGINS, |p| p.failed_login_limit);
        let part_id = pre.part_id;
        let who2 = who.clone();
        let mut ev = self.ev("login", role.short(), partition, None, "");
        let outcome = self.store.write(|t| {
            let mut dev = if role == Role::Auditor { None } else { Some(Self::device(t)?) };
            let mut part = match part_id { Some(id) => Some(Self::partition_by_id(t, id)?), None => None };
            let state = match (role, &dev, &part) {
                (Role::Auditor, _, _) => audit::get_state::<RoleAuth>(&t.tx, &dk, "auditor")?,
                (_, _, Some(p)) => p.role(role).cloned(),
                (_, Some(d), None) => Some(d.so.clone()),
                _ => None,
            }.ok_or_else(|| HsmError::State(format!("the {who2} is not initialised")))?;
            // The clock as the HSM last saw it, at least: a clock set back (before failing, or
            // during a lockout) neither shortens nor skips the Auditor's timed lockout.
            let now = now_unix().max(audit::clock_floor(&t.tx)?);
            state.check_not_locked(&who2, now)?;
            let (ok, pmk) = if via_activation {
                let act = part.as_ref().and_then(|p| p.activations.get(role.short()))
                    .ok_or_else(|| HsmError::Refused(format!("the {who2} is no longer activated")))?;
                let ok = act.auth.matches(&dk, &act_tag, &candidate);
                (ok, if ok { act.auth.unwrap_pmk(&dk, &act_tag, &candidate)? } else { None })
            } else {
                let ok = state.matches(&dk, &tag, &candidate);
                (ok, if ok { state.unwrap_pmk(&dk, &tag, &candidate)? } else { None })
            };
            let limit = role.failed_login_limit(co_cu_limit);
            // A success on a role with no failures to clear changes no state: only its audit
            // record is written (and key caches keyed on the state generation stay valid).
            let mut state_changes = !ok || state.failed != 0 || state.lock_until.is_some();
            let mut new_state = state.clone();
            // A Partition SO's first login since its domain was kept in the clear (records
            // before 0.9): the domain goes under its role key; the clear copy goes once the
            // Crypto Officer's seal holds it too.
            let mut pmk = pmk;
            if ok && role == Role::PartitionSo && pmk.is_none() {
                if let Some(p) = part.as_mut() {
                    if let Some(d) = p.legacy_domain.clone() {
                        new_state.wrap(&dk, &tag, &candidate, &d);
                        if p.domain_sealed.is_some() || p.co.is_none() {
                            p.legacy_domain = None;
                        }
                        pmk = Some(d);
                        state_changes = true;
                    }
                }
            }
            let mut zeroize_hsm = false;
            let result = if ok {
                new_state.failed = 0;
                new_state.lock_until = None;
                ev.outcome = if via_activation { "success (challenge secret)".into() } else { "success".into() };
                Ok(pmk)
            } else {
                new_state.failed += 1;
                let reason = match &other_secret {
                    Some(r) => r.clone(),
                    None if via_activation => "wrong challenge secret".to_string(),
                    None => "wrong PED key, PED PIN or password".to_string(),
                };
                ev.outcome = format!("failure: {reason} ({} of {limit})", new_state.failed);
                let reached = new_state.failed >= limit;
                Err(match role {
                    _ if !reached => HsmError::AuthFailed { role: who2.clone(), reason, remaining: Some(limit - new_state.failed) },
                    Role::HsmSo => {
                        zeroize_hsm = true;
                        HsmError::Locked(format!("{limit} failed HSM SO logins: the HSM has been zeroized"))
                    }
                    Role::PartitionSo => {
                        if let Some(p) = &mut part {
                            t.delete_partition_objects(p.id)?;
                            p.wipe();
                        }
                        HsmError::Locked(format!("{limit} failed Partition SO logins: partition {} has been zeroized", partition.unwrap_or_default()))
                    }
                    Role::Auditor => {
                        new_state.lock_until = Some(now + AUDITOR_LOCKOUT_S);
                        HsmError::Locked(format!("{reason}: the Auditor is locked out for {} minutes after {limit} failed logins", AUDITOR_LOCKOUT_S / 60))
                    }
                    Role::CryptoOfficer | Role::CryptoUser => {
                        new_state.locked = true;
                        HsmError::Locked(format!("{reason}: the {who2} is now locked after {limit} failed logins; the Partition SO must reset it"))
                    }
                })
            };
            match (role, &mut dev, &mut part) {
                _ if !state_changes => {}
                (Role::Auditor, _, _) => audit::put_state(&t.tx, &dk, "auditor", &new_state)?,
                (_, _, Some(p)) => {
                    if let Some(r) = p.role_mut(role) {
                        *r = new_state;
                    }
                    t.put("partition", &pid(p.id), p)?;
                }
                (_, Some(d), None) => {
                    d.so = new_state;
                    t.put("device", "", d)?;
                }
                _ => {}
            }
            t.event(&ev)?;
            Ok(result.map_err(|e| (e, zeroize_hsm)))
        })?;
        match outcome {
            Ok(unwrapped) => {
                if let Some((kdf, input)) = memo {
                    login_memo::remember(kdf, input, &candidate, memo_ttl);
                }
                // The Partition SO's slot holds the domain, never a partition key.
                let (pmk, domain) = match role {
                    Role::PartitionSo => (None, unwrapped),
                    _ => (unwrapped, None),
                };
                Ok(Session {
                    role,
                    partition: part_id,
                    partition_label: partition.map(str::to_owned),
                    pmk,
                    domain,
                    via_activation,
                    cache: KeyCache::default(),
                    session_objects: Mutex::new(BTreeMap::new()),
                    gp_channels: Default::default(),
                })
            }
            Err((e, zeroize_hsm)) => {
                if zeroize_hsm {
                    crate::crash_point("so-lockout-before-zeroize");
                    self.store.destroy_key_material("3 failed HSM SO logins")?;
                }
                Err(e)
            }
        }
    }
}
