//! Making and changing key objects: generation (token and session objects, bulk), public keys
//! and certificates brought in, relabelling and destruction.

use super::*;

impl Hsm {
    pub(super) fn material_aad(partition: u32, handle: u64) -> Vec<u8> {
        format!("keymat\0{partition}\0{handle}").into_bytes()
    }

    /// Generates a key (secret key, or private and public key pair) in the session's partition
    /// (Crypto Officer only). Returns the handles made.
    pub fn generate_key(
        &mut self,
        s: &Session,
        spec: KeySpec,
        opts: &KeyOptions,
    ) -> Result<Vec<u64>> {
        self.generate_key_with(
            s,
            spec,
            opts,
            &KeyTemplate {
                unique_label: true,
                ..Default::default()
            },
        )
    }

    /// Generates a key with PKCS#11 template overrides (usages, sensitivity, privacy, a
    /// different public label or id). Returns the handles made: the secret key, or the
    /// private key then the public key.
    pub fn generate_key_with(
        &mut self,
        s: &Session,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        if tpl.session_private || tpl.session_public {
            return self.generate_with_session_objects(s, spec, opts, tpl);
        }
        let mut made = self.generate_keys_with(s, spec, std::slice::from_ref(opts), tpl)?;
        made.pop()
            .ok_or_else(|| HsmError::State("no key was generated".into()))
    }

    /// The effective policy (partition bounded by HSM) of the session's partition.
    pub(super) fn partition_policy(&mut self, s: &Session) -> Result<Policy> {
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_id(t, id)?;
            Ok(p.policy.effective(&d.policy))
        })
    }

    /// Refuses a new key asked to be born with `CKA_SENSITIVE` false: a private key always
    /// (its parts are never read out of this HSM), a secret key unless the partition's
    /// `non-sensitive-keys` policy allows it. The refusal is audited under `event`.
    pub(super) fn non_sensitive_check(
        &mut self,
        s: &Session,
        spec: KeySpec,
        tpl: &KeyTemplate,
        event: &str,
    ) -> Result<()> {
        if tpl.sensitive != Some(false) {
            return Ok(());
        }
        let why = if !spec.is_symmetric() {
            "a private key is always sensitive (CKA_SENSITIVE false is refused): its parts never leave the HSM in clear".to_string()
        } else if self.partition_policy(s)?.non_sensitive_keys {
            return Ok(());
        } else {
            "CKA_SENSITIVE false is refused: the partition's policy non-sensitive-keys is off (a key whose value any user can read is no HSM key; Partition SO: `ferrohsm partition policy set non-sensitive-keys on`)".to_string()
        };
        let e = HsmError::Refused(why);
        Err(self.refuse(event, s.role.short(), s.partition(), e))
    }

    /// Generates one key per entry of `each` (same spec and template) in one transaction:
    /// all are made, each with its own audit record, or none is. For provisioning many keys
    /// at once (card issuance batches); at most 100,000 per call. Returns each key's handles.
    pub fn generate_keys_with(
        &mut self,
        s: &Session,
        spec: KeySpec,
        each: &[KeyOptions],
        tpl: &KeyTemplate,
    ) -> Result<Vec<Vec<u64>>> {
        let (id, pmk) = self.key_user(s, "creating keys", true)?;
        self.non_sensitive_check(s, spec, tpl, "key-generate")?;
        if each.is_empty() || each.len() > 100_000 {
            return Err(HsmError::InvalidInput(
                "generate 1 to 100000 keys at a time".into(),
            ));
        }
        for opts in each {
            if opts.label.len() > 128 || (tpl.unique_label && opts.label.is_empty()) {
                return Err(HsmError::InvalidInput(
                    "a key label is 1 to 128 characters".into(),
                ));
            }
        }
        let mut made = Vec::with_capacity(each.len());
        for opts in each {
            let g = mechanism::generate(spec)?;
            let (attrs, public_attrs) = Self::key_attributes(spec, opts, tpl, true);
            let e = self.ev(
                "key-generate",
                s.role.short(),
                s.partition(),
                Some(&format!("{} ({spec})", opts.label)),
                "success",
            );
            made.push((opts, g, attrs, public_attrs, e));
        }
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let mut out = Vec::with_capacity(made.len());
            let mut labels = std::collections::HashSet::new();
            for (opts, g, attrs, public_attrs, e) in made {
                if tpl.unique_label
                    && (!labels.insert(opts.label.clone())
                        || !t.object_handles(id, Some(&opts.label))?.is_empty())
                {
                    return Err(HsmError::InvalidInput(format!(
                        "a key labelled {:?} exists already in {}",
                        opts.label, p.label
                    )));
                }
                let mut handles = vec![Self::put_key(
                    t,
                    &mut p,
                    &pmk,
                    attrs,
                    g.public.clone(),
                    Some(&g.private),
                )?];
                if let Some(pa) = public_attrs {
                    handles.push(Self::put_key(t, &mut p, &pmk, pa, g.public.clone(), None)?);
                }
                t.event(&e)?;
                out.push(handles);
            }
            t.put("partition", &pid(id), &p)?;
            Ok(out)
        })
    }

    /// [`Hsm::generate_key_with`] where one half or both are session objects: those stay in
    /// the login's memory (the creation is still audited); any token half is stored.
    pub(super) fn generate_with_session_objects(
        &mut self,
        s: &Session,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        let (id, pmk) = self.key_user(s, "creating keys", true)?;
        self.non_sensitive_check(s, spec, tpl, "key-generate")?;
        let owner = session_owner(tpl)?;
        s.session_room(2)?;
        if opts.label.len() > 128 {
            return Err(HsmError::InvalidInput(
                "a key label is at most 128 characters".into(),
            ));
        }
        let g = mechanism::generate(spec)?;
        let (mut attrs, public_attrs) = Self::key_attributes(spec, opts, tpl, true);
        attrs.token = !tpl.session_private;
        let public_attrs = public_attrs.map(|mut a| {
            a.token = !tpl.session_public;
            a
        });
        let e = self.ev(
            "key-generate",
            s.role.short(),
            s.partition(),
            Some(&format!("{} ({spec}, session object)", opts.label)),
            "success",
        );
        let parsed = mechanism::Key::parse(spec, g.private.clone())?;
        let mut halves = vec![(attrs, Some(parsed))];
        if let Some(pa) = public_attrs {
            halves.push((pa, None));
        }
        let any_token = halves.iter().any(|(a, _)| a.token);
        let token_handles = if any_token {
            self.store.write(|t| {
                let mut p = Self::partition_by_id(t, id)?;
                let mut hs = Vec::new();
                for (a, key) in &halves {
                    if a.token {
                        let secret = key.as_ref().map(|_| &g.private);
                        hs.push(Self::put_key(
                            t,
                            &mut p,
                            &pmk,
                            a.clone(),
                            g.public.clone(),
                            secret,
                        )?);
                    }
                }
                t.put("partition", &pid(id), &p)?;
                t.event(&e)?;
                Ok(hs)
            })?
        } else {
            // Nothing stored, so no state changes: only the audit record is written.
            self.store.event(&e)?;
            Vec::new()
        };
        let mut token_handles = token_handles.into_iter();
        let mut out = Vec::new();
        for (a, key) in halves {
            let h = if a.token {
                token_handles
                    .next()
                    .ok_or_else(|| HsmError::State("a stored half went missing".into()))?
            } else {
                s.add_session_object(owner, id, a, g.public.clone(), key)
            };
            out.push(h);
        }
        Ok(out)
    }

    /// Stores a public key brought from outside (Crypto Officer): a token object, or a session
    /// object when `tpl.session_public` is set. Public keys are not secret, so they may enter
    /// in clear; they verify and encrypt (never wrap: a trusted wrapping key is an SO's call).
    pub fn import_public_key(
        &mut self,
        s: &Session,
        spec: KeySpec,
        spki: Vec<u8>,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "importing public keys", true)?;
        if opts.label.len() > 128 {
            return Err(HsmError::InvalidInput(
                "a key label is at most 128 characters".into(),
            ));
        }
        let (_, public) = Self::key_attributes(spec, opts, tpl, false);
        let mut a =
            public.ok_or_else(|| HsmError::InvalidInput(format!("{spec} has no public key")))?;
        a.wrap = false;
        a.token = !tpl.session_public;
        let e = self.ev(
            "key-import",
            s.role.short(),
            s.partition(),
            Some(&format!(
                "{} ({spec} public key{})",
                a.label,
                if a.token { "" } else { ", session object" }
            )),
            "success",
        );
        if a.token {
            return self.store.write(|t| {
                let mut p = Self::partition_by_id(t, id)?;
                let h = Self::put_key(t, &mut p, &pmk, a, Some(spki), None)?;
                t.put("partition", &pid(id), &p)?;
                t.event(&e)?;
                Ok(h)
            });
        }
        let owner = session_owner(tpl)?;
        s.session_room(1)?;
        self.store.event(&e)?;
        Ok(s.add_session_object(owner, id, a, Some(spki), None))
    }

    /// The attributes of a new key (and, for a key pair, of its public half) from its spec,
    /// options and template. `local` keys were generated here; others (unwrapped) were not,
    /// so they are never "always sensitive" or "never extractable".
    pub(super) fn key_attributes(
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
        local: bool,
    ) -> (Attributes, Option<Attributes>) {
        let sensitive = tpl.sensitive.unwrap_or(true);
        let base = Attributes {
            class: ObjectClass::SecretKey,
            spec: Some(spec),
            label: opts.label.clone(),
            id: opts.id.clone(),
            token: true,
            private: tpl.private.unwrap_or(true),
            sensitive,
            extractable: opts.extractable,
            always_sensitive: local && sensitive,
            never_extractable: local && !opts.extractable,
            local,
            modifiable: true,
            destroyable: true,
            sign: false,
            verify: false,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            derive: false,
            wrap_with_trusted: tpl.wrap_with_trusted.unwrap_or(false),
            trusted: false,
            wrap_template: tpl.wrap_template.clone(),
            unwrap_template: tpl.unwrap_template.clone(),
            copyable: tpl.copyable.unwrap_or(true),
            created: now_rfc3339(),
            // Given by `put_key`, for each object it stores.
            unique_id: String::new(),
            gp: None,
        };
        if spec.is_symmetric() {
            // A generic secret is for MACs; AES and 3DES keys are for encryption.
            let mac_key = matches!(spec, KeySpec::Generic(_));
            let a = Attributes {
                encrypt: tpl.encrypt.unwrap_or(!mac_key),
                decrypt: tpl.decrypt.unwrap_or(!mac_key),
                sign: tpl.sign.unwrap_or(mac_key),
                verify: tpl.verify.unwrap_or(mac_key),
                wrap: tpl.wrap.unwrap_or(false),
                unwrap: tpl.unwrap.unwrap_or(false),
                derive: tpl.derive.unwrap_or(false),
                ..base
            };
            return (a, None);
        }
        let can_encrypt = spec.default_encrypt().is_some();
        let public = Attributes {
            class: ObjectClass::PublicKey,
            label: tpl
                .public_label
                .clone()
                .unwrap_or_else(|| base.label.clone()),
            id: tpl.public_id.clone().unwrap_or_else(|| base.id.clone()),
            private: false,
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
            verify: tpl.verify.unwrap_or(true),
            encrypt: tpl.encrypt.unwrap_or(can_encrypt),
            wrap: tpl.wrap.unwrap_or(false),
            derive: tpl.derive.unwrap_or(false),
            wrap_with_trusted: false,
            unwrap_template: Default::default(),
            ..base.clone()
        };
        let private = Attributes {
            class: ObjectClass::PrivateKey,
            sign: tpl.sign.unwrap_or(true),
            decrypt: tpl.decrypt.unwrap_or(can_encrypt),
            unwrap: tpl.unwrap.unwrap_or(false),
            derive: tpl.derive.unwrap_or(false),
            wrap_template: Default::default(),
            ..base
        };
        (private, Some(public))
    }

    /// Seals and stores one key object; returns its handle.
    pub(super) fn put_key(
        t: &mut Txn<'_>,
        p: &mut Partition,
        pmk: &Secret32,
        attrs: Attributes,
        public: Option<Vec<u8>>,
        secret: Option<&SecretBytes>,
    ) -> Result<u64> {
        let id = p.id;
        let h = p.next_handle;
        p.next_handle += 1;
        // Every new object is a new object, copies included: a fresh unique id.
        let attrs = Attributes {
            unique_id: crypto::random_hex_id(16),
            ..attrs
        };
        let material = secret.map(|m| crypto::seal(pmk, &Self::material_aad(id, h), m.expose()));
        Self::put_record(
            t,
            id,
            h,
            &ObjectRecord {
                attrs,
                public,
                material,
                content: None,
            },
        )?;
        Ok(h)
    }

    /// Seals and stores an object record under `handle`, with its index.
    pub(super) fn put_record(
        t: &mut Txn<'_>,
        partition: u32,
        handle: u64,
        rec: &ObjectRecord,
    ) -> Result<()> {
        let pt = zeroize::Zeroizing::new(
            serde_json::to_vec(rec).map_err(|e| HsmError::Store(e.to_string()))?,
        );
        t.put_object(
            partition,
            handle,
            &ObjectIndex {
                class: rec.attrs.class.name(),
                label: &rec.attrs.label,
                id: &rec.attrs.id,
            },
            &pt,
        )
    }

    /// Stores a certificate or data object in the session's partition (Crypto Officer).
    /// Returns its handle.
    pub fn create_object(&mut self, s: &Session, o: NewObject) -> Result<u64> {
        let (id, _) = self.key_user(s, "creating objects", true)?;
        if o.label.len() > 128 || o.id.len() > 128 {
            return Err(HsmError::InvalidInput(
                "an object label or id is at most 128 bytes".into(),
            ));
        }
        let (class, size) = match &o.content {
            Content::Certificate {
                value,
                subject,
                issuer,
                serial,
                ..
            } => (
                ObjectClass::Certificate,
                value.len() + subject.len() + issuer.len() + serial.len(),
            ),
            Content::Data {
                application,
                object_id,
                value,
            } => (
                ObjectClass::Data,
                value.len() + application.len() + object_id.len(),
            ),
        };
        if size > MAX_OBJECT_CONTENT {
            return Err(HsmError::InvalidInput(format!(
                "an object holds at most {MAX_OBJECT_CONTENT} bytes; this one has {size}"
            )));
        }
        let attrs = Attributes {
            class,
            spec: None,
            label: o.label,
            id: o.id,
            token: true,
            private: o.private,
            sensitive: false,
            extractable: false,
            always_sensitive: false,
            never_extractable: false,
            local: false,
            modifiable: o.modifiable,
            destroyable: o.destroyable,
            sign: false,
            verify: false,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            derive: false,
            wrap_with_trusted: false,
            trusted: false,
            wrap_template: Default::default(),
            unwrap_template: Default::default(),
            copyable: true,
            created: now_rfc3339(),
            unique_id: crypto::random_hex_id(16),
            gp: None,
        };
        let e = self.ev(
            "object-create",
            s.role.short(),
            s.partition(),
            Some(&format!("{} ({})", attrs.label, class.name())),
            "success",
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let h = p.next_handle;
            p.next_handle += 1;
            Self::put_record(
                t,
                id,
                h,
                &ObjectRecord {
                    attrs,
                    public: None,
                    material: None,
                    content: Some(o.content),
                },
            )?;
            t.put("partition", &pid(id), &p)?;
            t.event(&e)?;
            Ok(h)
        })
    }

    /// Changes an object's label and/or id (Crypto Officer), if it is modifiable
    /// (`CKA_MODIFIABLE`). Nothing else about an object changes after it is made.
    pub fn relabel_object(
        &mut self,
        s: &Session,
        handle: u64,
        label: Option<String>,
        object_id: Option<Vec<u8>>,
    ) -> Result<()> {
        let (id, _) = self.key_user(s, "changing objects", true)?;
        if label.as_ref().is_some_and(|l| l.len() > 128)
            || object_id.as_ref().is_some_and(|i| i.len() > 128)
        {
            return Err(HsmError::InvalidInput(
                "an object label or id is at most 128 bytes".into(),
            ));
        }
        if crate::object::is_session_handle(handle) {
            let k = s.session_object(handle)?;
            if !k.info.attrs.modifiable {
                return Err(HsmError::Refused(format!(
                    "{:?} is not modifiable (CKA_MODIFIABLE is false)",
                    k.info.attrs.label
                )));
            }
            let mut info = k.info.clone();
            if let Some(l) = label {
                info.attrs.label = l;
            }
            if let Some(i) = object_id {
                info.attrs.id = i;
            }
            let renamed = LoadedKey {
                info,
                partition: k.partition,
                key: k.key.clone(),
            };
            // Operations already started keep the old entry; new lookups see the new one.
            if let Some(entry) = s.session_objects().get_mut(&handle) {
                entry.1 = Arc::new(renamed);
            }
            return Ok(());
        }
        let role = s.role.short().to_string();
        let part = s.partition_label.clone();
        let serial = self.serial.clone();
        self.store.write(|t| {
            let mut rec = Self::load(t, id, handle)?;
            if !rec.attrs.modifiable {
                return Err(HsmError::Refused(format!(
                    "{:?} is not modifiable (CKA_MODIFIABLE is false)",
                    rec.attrs.label
                )));
            }
            let before = rec.attrs.label.clone();
            if let Some(l) = label {
                rec.attrs.label = l;
            }
            if let Some(i) = object_id {
                rec.attrs.id = i;
            }
            Self::put_record(t, id, handle, &rec)?;
            t.event(&Event {
                seq: 0,
                time: now_rfc3339(),
                serial,
                event: "object-modify".into(),
                role,
                partition: part,
                object: Some(before),
                outcome: format!(
                    "success: now labelled {:?}, id {}",
                    rec.attrs.label,
                    hex::encode(&rec.attrs.id)
                ),
            })
        })
    }

    /// Destroys an object (Crypto Officer only).
    pub fn destroy_object(&mut self, s: &Session, handle: u64) -> Result<()> {
        let (id, _) = self.object_keeper(s, "deleting keys", true)?;
        if crate::object::is_session_handle(handle) {
            let k = s.session_object(handle)?;
            if !k.info.attrs.destroyable {
                return Err(HsmError::Refused(format!(
                    "key {:?} is not destroyable (CKA_DESTROYABLE is false)",
                    k.info.attrs.label
                )));
            }
            let e = self.ev(
                "key-delete",
                s.role.short(),
                s.partition(),
                Some(&format!("{} (session object)", k.info.attrs.label)),
                "success",
            );
            self.store.event(&e)?;
            s.session_objects().remove(&handle);
            return Ok(());
        }
        let serial = self.serial.clone();
        let role = s.role.short().to_string();
        let part = s.partition_label.clone();
        self.store.write(|t| {
            let rec = Self::load(t, id, handle)?;
            if !rec.attrs.destroyable {
                return Err(HsmError::Refused(format!(
                    "key {:?} is not destroyable (CKA_DESTROYABLE is false)",
                    rec.attrs.label
                )));
            }
            t.delete_object(id, handle)?;
            let uid = rec.attrs.unique_id(&serial, id, handle);
            t.put("destroyed", &ha::tombstone(id, &uid), &now_rfc3339())?;
            t.event(&Event {
                seq: 0,
                time: now_rfc3339(),
                serial,
                event: "key-delete".into(),
                role,
                partition: part,
                object: Some(rec.attrs.label.clone()),
                outcome: "success".into(),
            })
        })
    }
}
