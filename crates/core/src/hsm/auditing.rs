//! The audit log as the Auditor sees it: imprinting the Auditor, configuration, records,
//! checkpoints, exports, witnesses, ceremonies; and key-use auditing.

use super::*;

impl Hsm {
    pub(super) fn auditor_only(&mut self, s: &Session, action: &str) -> Result<()> {
        if s.role == Role::Auditor {
            return Ok(());
        }
        Err(self.refuse(
            "audit",
            s.role.short(),
            s.partition(),
            need("Auditor", action, s.role),
        ))
    }

    /// Imprints the Auditor (white PED key(s), or a password). Possible before `hsm init`;
    /// survives re-initialisation and zeroize. Re-imprinting needs the current Auditor.
    pub fn audit_init(
        &mut self,
        secret: NewSecret<'_>,
        current: Option<Credential<'_>>,
    ) -> Result<Option<Imprinted>> {
        let (exists, allow_mofn) = self.store.read(|t| {
            let root = &t.audit_keys()?.root;
            let exists = audit::get_state::<RoleAuth>(&t.tx, root, "auditor")?.is_some();
            if !exists && audit::log_has(&t.tx, "audit-init")? {
                // Removing the Auditor's row must not make room for a new Auditor.
                return Err(HsmError::Tamper(
                    "the log records an Auditor's imprint, but the Auditor's sealed state is gone: the audit state was removed by hand".into(),
                ));
            }
            let allow = if t.get::<Device>("device", "").ok().flatten().is_some() {
                Self::device(t)?.policy.m_of_n
            } else {
                true
            };
            Ok((exists, allow))
        })?;
        if exists {
            let Some(cred) = current else {
                return Err(self.refuse("audit-init", "none", None, HsmError::Refused(
                    "the Auditor exists; re-imprinting it needs the current Auditor's key or password".into())));
            };
            self.login(Role::Auditor, None, cred)?;
        }
        let mode = match secret {
            NewSecret::Ped(_) => AuthMode::Ped,
            NewSecret::Password(_) => AuthMode::Password,
        };
        let (method, auth, imp) = self.imprint(
            secret,
            crate::pedkey::SecretType::Auditor,
            format!("Auditor of {}", self.serial),
            mode,
            allow_mofn,
        )?;
        let root = self.store.audit_keys()?.root.clone();
        let ra = RoleAuth::new(&root, &role_tag(Role::Auditor, None), method, &auth, None);
        let e = self.ev("audit-init", "auditor", None, None, "success");
        self.store.write(|t| {
            audit::put_state(&t.tx, &root, "auditor", &ra)?;
            if audit::get_state::<AuditConfig>(&t.tx, &root, "config")?.is_none() {
                audit::put_state(&t.tx, &root, "config", &AuditConfig::default())?;
            }
            t.event(&e)
        })?;
        Ok(imp)
    }

    /// The HSM's audit verifier key (signed-note form). Public: anyone may have it.
    pub fn audit_public_key(&self) -> Result<String> {
        Ok(self.store.audit_keys()?.vkey.clone())
    }

    pub(super) fn read_audit_config(&mut self) -> Result<AuditConfig> {
        // Key use asks on every operation, which has just read the state generation (when it
        // loaded its key): read the configuration again only when the generation moved on.
        let version = self.store.last_generation()?;
        if let Some((v, c)) = &self.audit_cfg {
            if *v == version {
                return Ok(c.clone());
            }
        }
        let c = self.store.read(|t| {
            let root = &t.audit_keys()?.root;
            match audit::get_state::<AuditConfig>(&t.tx, root, "config")? {
                Some(c) => Ok(c),
                // Made with the Auditor: gone while the log says there was one is tamper (it
                // would silently turn key-use auditing off).
                None if audit::log_has(&t.tx, "audit-init")? => Err(HsmError::Tamper(
                    "the audit configuration's sealed state is gone although an Auditor was imprinted: the audit state was removed by hand".into(),
                )),
                None => Ok(AuditConfig::default()),
            }
        })?;
        self.audit_cfg = Some((version, c.clone()));
        Ok(c)
    }

    /// The audit configuration (Auditor only).
    pub fn audit_config(&mut self, s: &Session) -> Result<AuditConfig> {
        self.auditor_only(s, "reading the audit configuration")?;
        self.read_audit_config()
    }

    /// Changes the audit configuration (Auditor only).
    pub fn set_audit_config(&mut self, s: &Session, cfg: AuditConfig) -> Result<()> {
        self.auditor_only(s, "configuring the audit log")?;
        if let KeyUseAudit::Batched { max_ms } = cfg.key_use {
            if !(1..=60_000).contains(&max_ms) {
                return Err(HsmError::InvalidInput(
                    "batched key-use auditing takes 1 to 60000 ms".into(),
                ));
            }
        }
        if cfg.ceremony_cosignatures > 16 {
            return Err(HsmError::InvalidInput(
                "at most 16 witness cosignatures can be required".into(),
            ));
        }
        let root = self.store.audit_keys()?.root.clone();
        let e = self.ev(
            "audit-config",
            "auditor",
            None,
            Some(&format!(
                "{:?}, ceremony cosignatures {}",
                cfg.key_use, cfg.ceremony_cosignatures
            )),
            "success",
        );
        self.audit_cfg = None;
        self.store.write(|t| {
            audit::put_state(&t.tx, &root, "config", &cfg)?;
            t.event(&e)
        })
    }

    /// Every record of the log (Auditor only).
    pub fn audit_records(&mut self, s: &Session) -> Result<Vec<Record>> {
        self.auditor_only(s, "reading the audit log")?;
        self.flush_key_use()?;
        self.store.events()
    }

    /// The latest signed checkpoint (Auditor only).
    pub fn audit_checkpoint(&mut self, s: &Session) -> Result<String> {
        self.auditor_only(s, "reading the audit log")?;
        self.flush_key_use()?;
        self.store
            .read(|t| audit::latest_checkpoint(&t.tx))?
            .map(|(_, n)| n)
            .ok_or_else(|| HsmError::State("the audit log is empty".into()))
    }

    /// The latest signed checkpoint (public: anyone may keep it to check the log later).
    pub fn latest_checkpoint(&mut self) -> Result<Option<String>> {
        self.flush_key_use()?;
        Ok(self
            .store
            .read(|t| audit::latest_checkpoint(&t.tx))?
            .map(|(_, n)| n))
    }

    /// Checks that the log extends `note`, a checkpoint this HSM signed and someone kept
    /// outside the data directory (the server's `checkpoint_file`, a witness, the Auditor):
    /// an older copy of the directory, or another history, is tamper — refused, recorded and
    /// shown by `hsm show`. Returns the checkpoint's size.
    pub fn check_extends(&mut self, note: &str) -> Result<u64> {
        self.store.read(|t| {
            let keys = t.audit_keys()?;
            audit::check_extends(&t.tx, keys, note)
        })
    }

    /// [`Hsm::check_extends`] when the Auditor asks, with a checkpoint they kept.
    pub fn audit_check_extends(&mut self, s: &Session, note: &str) -> Result<u64> {
        self.auditor_only(s, "checking the log against a kept checkpoint")?;
        self.flush_key_use()?;
        self.check_extends(note)
    }

    /// Exports records from `from` (1-based) to the latest checkpoint with their proofs, and
    /// consistency proofs for the earlier checkpoints of the given sizes plus every checkpoint
    /// a witness cosigned (Auditor only).
    pub fn audit_export(&mut self, s: &Session, from: u64, earlier: &[u64]) -> Result<Export> {
        self.auditor_only(s, "exporting the audit log")?;
        self.flush_key_use()?;
        let witnesses = self.witness_keys()?;
        let e = self.ev(
            "audit-export",
            "auditor",
            None,
            Some(&format!("from #{from}")),
            "success",
        );
        self.store.write(|t| t.event(&e))?;
        self.store.read(|t| {
            let keys = t.audit_keys()?;
            let mut sizes: Vec<u64> = earlier.to_vec();
            for (size, note) in audit::checkpoints(&t.tx)? {
                if !ferrohsm_audit::witness::cosigners(&note, &witnesses).is_empty() {
                    sizes.push(size);
                }
            }
            sizes.sort_unstable();
            sizes.dedup();
            audit::export(&t.tx, keys, from, &sizes)
        })
    }

    /// Verifies the whole live log with the HSM's own key, and that every checkpoint it ever
    /// signed is consistent with the latest (Auditor only).
    pub fn audit_verify(&mut self, s: &Session) -> Result<Report> {
        self.auditor_only(s, "verifying the audit log")?;
        self.flush_key_use()?;
        let (ex, all) = self.store.read(|t| {
            let keys = t.audit_keys()?;
            let all: Vec<(u64, String)> = audit::checkpoints(&t.tx)?;
            let sizes: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
            Ok((audit::export(&t.tx, keys, 1, &sizes)?, all))
        })?;
        let opts = ferrohsm_audit::VerifyOptions {
            public_key: Some(self.audit_public_key()?),
            earlier: all.into_iter().map(|(_, n)| n).collect(),
            ..Default::default()
        };
        ferrohsm_audit::verify_export(&ex, &opts)
            .map_err(|e| HsmError::Tamper(format!("audit log: {e}")))
    }

    pub(super) fn witness_keys(&mut self) -> Result<Vec<String>> {
        Ok(self.read_witnesses()?.into_iter().map(|w| w.vkey).collect())
    }

    pub(super) fn read_witnesses(&mut self) -> Result<Vec<Witness>> {
        self.store.read(|t| {
            let root = &t.audit_keys()?.root;
            Ok(audit::get_state::<Vec<Witness>>(&t.tx, root, "witnesses")?.unwrap_or_default())
        })
    }

    /// Registered witnesses (Auditor only).
    pub fn witnesses(&mut self, s: &Session) -> Result<Vec<Witness>> {
        self.auditor_only(s, "listing witnesses")?;
        self.read_witnesses()
    }

    /// Registers a witness by its verifier key: C2SP cosignature/v1 (type 0x04, what `witness
    /// keygen` makes) or a plain signed-note Ed25519 key (Auditor only).
    pub fn add_witness(&mut self, s: &Session, vkey: &str) -> Result<Witness> {
        self.auditor_only(s, "registering witnesses")?;
        let vkey = vkey.trim();
        let v = ferrohsm_audit::witness::any_verifier(vkey).ok_or_else(|| {
            HsmError::InvalidInput(
                "not a witness verifier key (C2SP cosignature/v1, or signed-note Ed25519)".into(),
            )
        })?;
        let w = Witness {
            name: v.name().to_string(),
            vkey: vkey.to_string(),
            added: now_rfc3339(),
        };
        let root = self.store.audit_keys()?.root.clone();
        let e = self.ev("witness-add", "auditor", None, Some(&w.name), "success");
        self.store.write(|t| {
            let mut list: Vec<Witness> =
                audit::get_state(&t.tx, &root, "witnesses")?.unwrap_or_default();
            if list.iter().any(|x| x.name == w.name) {
                return Err(HsmError::InvalidInput(format!(
                    "a witness named {} is registered already",
                    w.name
                )));
            }
            list.push(w.clone());
            audit::put_state(&t.tx, &root, "witnesses", &list)?;
            t.event(&e)
        })?;
        Ok(w)
    }

    /// Takes a checkpoint cosigned by witnesses and keeps the registered witnesses'
    /// signatures on the stored checkpoint. Returns the names of the witnesses whose
    /// cosignatures verified (Auditor only).
    pub fn submit_cosigned(&mut self, s: &Session, note: &str) -> Result<Vec<String>> {
        self.auditor_only(s, "submitting cosignatures")?;
        let vkey = self.audit_public_key()?;
        let hsm = signed_note::StandardVerifier::new(&vkey)
            .map_err(|e| HsmError::Store(format!("{e:?}")))?;
        let (_, cp) = ferrohsm_audit::verify::open_checkpoint(note, &hsm)
            .map_err(|e| HsmError::InvalidInput(e.to_string()))?;
        let witnesses = self.witness_keys()?;
        let names = ferrohsm_audit::witness::cosigners(note, &witnesses);
        if names.is_empty() {
            return Err(HsmError::InvalidInput(
                "the checkpoint carries no cosignature from a registered witness".into(),
            ));
        }
        let size = cp.size();
        let e = self.ev(
            "witness-cosign",
            "auditor",
            None,
            Some(&format!("checkpoint {size}: {}", names.join(", "))),
            "success",
        );
        self.store.write(|t| {
            let stored: Vec<(u64, String)> = audit::checkpoints(&t.tx)?;
            let (_, mine) = stored
                .into_iter()
                .find(|(s, _)| *s == size)
                .ok_or_else(|| {
                    HsmError::InvalidInput(format!("this HSM issued no checkpoint of size {size}"))
                })?;
            let merged = merge_signatures(&mine, note)?;
            audit::store_cosigned(&t.tx, size, &merged)?;
            t.event(&e)
        })?;
        Ok(names)
    }

    /// Ceremony records not yet covered by a checkpoint carrying the configured number of
    /// registered witness cosignatures, with the best count they have (Auditor only).
    pub fn pending_ceremonies(&mut self, s: &Session) -> Result<Vec<(Record, usize)>> {
        self.auditor_only(s, "reading the audit log")?;
        let need = self.read_audit_config()?.ceremony_cosignatures as usize;
        let witnesses = self.witness_keys()?;
        let (records, cps) = self.store.read(|t| {
            Ok((
                audit::records(&t.tx, 0, u64::MAX >> 1)?,
                audit::checkpoints(&t.tx)?,
            ))
        })?;
        let counted: Vec<(u64, usize)> = cps
            .iter()
            .map(|(size, n)| {
                (
                    *size,
                    ferrohsm_audit::witness::cosigners(n, &witnesses).len(),
                )
            })
            .collect();
        Ok(records
            .into_iter()
            .filter(|r| r.is_ceremony())
            .filter_map(|r| {
                let best = counted
                    .iter()
                    .filter(|(size, _)| *size >= r.seq)
                    .map(|(_, c)| *c)
                    .max()
                    .unwrap_or(0);
                (best < need).then_some((r, best))
            })
            .collect())
    }

    /// Records a key use as the Auditor configured: not at all, durably before returning
    /// (strict: a record per use), or within the configured delay (batched: a record per
    /// role, key and operation in each window, counting its uses).
    pub(super) fn audit_key_use(&mut self, s: &Session, k: &LoadedKey, what: KeyUse) -> Result<()> {
        let mode = self.read_audit_config()?.key_use;
        if mode == KeyUseAudit::Off {
            return Ok(());
        }
        if self.writer.as_ref().map(|(m, _)| *m) != Some(mode) {
            self.writer = None;
            let wait = match mode {
                KeyUseAudit::Batched { max_ms } => std::time::Duration::from_millis(max_ms),
                _ => std::time::Duration::ZERO,
            };
            self.writer = Some((
                mode,
                AuditWriter::start(self.store.dir().to_path_buf(), wait)?,
            ));
        }
        let object = k.info.attrs.label.as_str();
        let (_, w) = self.writer.as_ref().expect("writer started above");
        match mode {
            KeyUseAudit::Strict => w.strict(self.ev(
                "key-use",
                s.role.short(),
                s.partition(),
                Some(object),
                &format!("success: {what}"),
            )),
            _ => w.batched(
                UseGroup {
                    role: s.role,
                    partition: s.partition,
                    handle: k.info.handle,
                    what,
                },
                || self.ev("key-use", s.role.short(), s.partition(), Some(object), ""),
            ),
        }
    }

    /// Makes every queued key-use record durable now.
    pub fn flush_key_use(&mut self) -> Result<()> {
        let healthy = self.writer.as_ref().is_none_or(|(_, w)| w.healthy());
        self.writer = None; // joins the thread after its last commit
        if healthy {
            Ok(())
        } else {
            Err(HsmError::Store("the last audit flush failed".into()))
        }
    }
}

/// Adds the signatures of `cosigned` (same checkpoint text) that `mine` lacks.
fn merge_signatures(mine: &str, cosigned: &str) -> Result<String> {
    let a = signed_note::Note::from_bytes(mine.as_bytes())
        .map_err(|e| HsmError::Tamper(format!("stored checkpoint: {e:?}")))?;
    let b = signed_note::Note::from_bytes(cosigned.as_bytes())
        .map_err(|e| HsmError::InvalidInput(format!("cosigned checkpoint: {e:?}")))?;
    if a.text() != b.text() {
        return Err(HsmError::InvalidInput(
            "the cosigned checkpoint is not the one this HSM signed".into(),
        ));
    }
    let text = String::from_utf8(a.to_bytes())
        .map_err(|_| HsmError::Tamper("stored checkpoint is not UTF-8".into()))?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let extra = String::from_utf8(b.to_bytes())
        .map_err(|_| HsmError::InvalidInput("cosigned checkpoint is not UTF-8".into()))?;
    let body_len = a.text().split(|&c| c == b'\n').count();
    for l in extra.lines().skip(body_len) {
        if l.starts_with('\u{2014}') && !lines.iter().any(|x| x == l) {
            lines.push(l.to_owned());
        }
    }
    let merged = lines.join("\n") + "\n";
    signed_note::Note::from_bytes(merged.as_bytes())
        .map_err(|e| HsmError::InvalidInput(format!("merged checkpoint: {e:?}")))?;
    Ok(merged)
}
