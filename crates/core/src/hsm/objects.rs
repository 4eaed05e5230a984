//! Finding objects and loading keys: the indexes, the per-login key cache and the memo, and
//! the usage-attribute rule.

use super::*;

impl Hsm {
    pub(super) fn load(t: &mut Txn<'_>, partition: u32, handle: u64) -> Result<ObjectRecord> {
        let row = t
            .get_object(partition, handle)?
            .ok_or_else(|| HsmError::NotFound(format!("no object with handle {handle}")))?;
        let rec: ObjectRecord = serde_json::from_slice(row.plaintext.expose())
            .map_err(|e| HsmError::Tamper(format!("object {handle} does not decode: {e}")))?;
        Ok(rec)
    }

    /// Lists the session's partition's objects (Crypto Officer or Crypto User), optionally
    /// only those with a label (found through the index, not by scanning).
    pub fn list_objects(&mut self, s: &Session, label: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let (id, _) = self.object_keeper(s, "listing keys", false)?;
        self.store.read(|t| {
            let mut out = Vec::new();
            for h in t.object_handles(id, label)? {
                let rec = Self::load(t, id, h)?;
                if label.is_some_and(|l| l != rec.attrs.label) {
                    return Err(HsmError::Tamper(format!(
                        "object {h}'s index does not match its sealed label"
                    )));
                }
                out.push(ObjectInfo {
                    handle: h,
                    attrs: rec.attrs,
                    public: rec.public,
                    content: rec.content,
                });
            }
            Ok(out)
        })
    }

    /// Finds objects through the indexes. With a Crypto Officer or Crypto User session, every
    /// object of its partition; with `None` (a public PKCS#11 session), only objects with
    /// `CKA_PRIVATE` false of the partition labelled `public_partition`.
    pub fn find_objects(
        &mut self,
        s: Option<&Session>,
        public_partition: &str,
        f: &ObjectFilter,
    ) -> Result<Vec<ObjectInfo>> {
        let (id, only_public) = match s {
            Some(s) => (self.object_keeper(s, "finding keys", false)?.0, false),
            None => (
                self.store
                    .read(|t| Self::partition_by_label(t, public_partition))?
                    .id,
                true,
            ),
        };
        let mut found = self.store.read(|t| {
            let mut out = Vec::new();
            for h in t.find_handles(
                id,
                f.label.as_deref(),
                f.id.as_deref(),
                f.class.map(ObjectClass::name),
            )? {
                let rec = Self::load(t, id, h)?;
                // The index is a hint; the sealed record is the truth.
                if f.label.as_ref().is_some_and(|l| *l != rec.attrs.label)
                    || f.id.as_ref().is_some_and(|i| *i != rec.attrs.id)
                    || f.class.is_some_and(|c| c != rec.attrs.class)
                {
                    return Err(HsmError::Tamper(format!(
                        "object {h}'s index does not match its sealed record"
                    )));
                }
                if only_public && rec.attrs.private {
                    continue;
                }
                out.push(ObjectInfo {
                    handle: h,
                    attrs: rec.attrs,
                    public: rec.public,
                    content: rec.content,
                });
            }
            Ok(out)
        })?;
        // Then the login's session objects that match (never visible without a login).
        if let Some(s) = s {
            for (_, k) in s.session_objects().values() {
                let a = &k.info.attrs;
                if f.label.as_ref().is_none_or(|l| *l == a.label)
                    && f.id.as_ref().is_none_or(|i| *i == a.id)
                    && f.class.is_none_or(|c| c == a.class)
                {
                    found.push(k.info.clone());
                }
            }
        }
        Ok(found)
    }

    /// One object's public description (attributes, public value), for a session that may see it.
    pub fn object_info(
        &mut self,
        s: Option<&Session>,
        public_partition: &str,
        handle: u64,
    ) -> Result<ObjectInfo> {
        let (id, only_public) = match s {
            Some(s) => (self.object_keeper(s, "reading keys", false)?.0, false),
            None => (
                self.store
                    .read(|t| Self::partition_by_label(t, public_partition))?
                    .id,
                true,
            ),
        };
        if crate::object::is_session_handle(handle) {
            let s =
                s.ok_or_else(|| HsmError::NotFound(format!("no object with handle {handle}")))?;
            return Ok(s.session_object(handle)?.info.clone());
        }
        let rec = self.store.read(|t| Self::load(t, id, handle))?;
        if only_public && rec.attrs.private {
            return Err(HsmError::NotFound(format!(
                "no object with handle {handle}"
            )));
        }
        Ok(ObjectInfo {
            handle,
            attrs: rec.attrs,
            public: rec.public,
            content: rec.content,
        })
    }

    /// Finds the one key with `label` of `class`.
    pub fn find_key(&mut self, s: &Session, label: &str, class: ObjectClass) -> Result<ObjectInfo> {
        crate::object::one_labelled(self.list_objects(s, Some(label))?, label, class)
    }

    /// Unseals the key material of an already loaded object (no second store read).
    pub(super) fn open_material(
        id: u32,
        pmk: &Secret32,
        handle: u64,
        rec: &ObjectRecord,
    ) -> Result<SecretBytes> {
        let sealed = rec.material.as_ref().ok_or_else(|| {
            HsmError::InvalidInput(format!("object {handle} holds no secret or private key"))
        })?;
        crypto::open(
            pmk,
            &Self::material_aad(id, handle),
            sealed,
            &format!("key material of object {handle}"),
        )
    }

    /// The refusal when a key's usage attribute (`CKA_SIGN`, …) does not allow `op`.
    pub(super) fn require_usage(
        allowed: bool,
        label: &str,
        op: &str,
        attribute: &str,
    ) -> Result<()> {
        if allowed {
            return Ok(());
        }
        Err(HsmError::Refused(format!(
            "key {label:?} may not {op} ({attribute} is false)"
        )))
    }

    /// The key object `handle` ready for use (Crypto Officer or Crypto User): from the
    /// session's key cache while the store has not changed since it was loaded, otherwise
    /// read, unsealed and parsed now (and cached). Operations started with it use it as it
    /// was at this call.
    pub fn load_key(&mut self, s: &Session, handle: u64) -> Result<Arc<LoadedKey>> {
        self.load_key_via(s, handle, None)
    }

    /// [`Hsm::load_key`], first trying the caller's memo of the last key it loaded (and
    /// leaving this key there).
    pub fn load_key_memo(
        &mut self,
        s: &Session,
        handle: u64,
        memo: &mut KeyMemo,
    ) -> Result<Arc<LoadedKey>> {
        self.load_key_via(s, handle, Some(memo))
    }

    pub(super) fn load_key_via(
        &mut self,
        s: &Session,
        handle: u64,
        memo: Option<&mut KeyMemo>,
    ) -> Result<Arc<LoadedKey>> {
        let id = self.key_role(s, "using keys", false)?;
        if crate::object::is_session_handle(handle) {
            return s.session_object(handle);
        }
        let generation = self.store.generation()?;
        if let Some((login, g, k)) = memo.as_ref().and_then(|m| m.0.as_ref()) {
            if *login == s.cache.login && *g == generation && k.info.handle == handle {
                return Ok(k.clone());
            }
        }
        let k = match s.cache.get(generation, handle) {
            Some(k) => k,
            None => {
                // A miss: the partition key is needed to unseal the key.
                let pmk = s.pmk()?;
                let rec = self.store.read(|t| Self::load(t, id, handle))?;
                let key = match rec.material {
                    Some(_) => Some(Arc::new(mechanism::Key::parse(
                        rec.attrs.key_spec()?,
                        Self::open_material(id, pmk, handle, &rec)?,
                    )?)),
                    None => None,
                };
                let k = Arc::new(LoadedKey {
                    info: ObjectInfo {
                        handle,
                        attrs: rec.attrs,
                        public: rec.public,
                        content: rec.content,
                    },
                    partition: id,
                    key,
                });
                s.cache.put(generation, k.clone());
                k
            }
        };
        let Some(memo) = memo else {
            return Ok(k);
        };
        // The memo gets its own handle on the key (sharing the parsed material), so that the
        // reference counting of each operation touches memory of this caller only, not the
        // count every session of the login would otherwise update at once.
        let own = Arc::new(LoadedKey::clone(&k));
        memo.0 = Some((s.cache.login, generation, own.clone()));
        Ok(own)
    }
}

impl Hsm {
    /// Copies a key within its partition (`C_CopyObject`; Crypto Officer): as a token object,
    /// or as a session object of `changes.session_owner`. The copy keeps every attribute and
    /// the key's history (`CKA_LOCAL`, `CKA_ALWAYS_SENSITIVE`, `CKA_NEVER_EXTRACTABLE`); it
    /// may only be more restricted than the original (sensitive, not extractable, not
    /// copyable), never less, and a key made with `CKA_COPYABLE` false is not copied.
    /// Audited.
    pub fn copy_object(
        &mut self,
        s: &Session,
        handle: u64,
        changes: &crate::object::CopyChanges,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "copying keys", true)?;
        let k = self.load_key(s, handle)?;
        let old = &k.info.attrs;
        let loosened = [
            (!old.copyable, "CKA_COPYABLE is false"),
            (
                old.sensitive && changes.sensitive == Some(false),
                "a copy of a sensitive key is sensitive",
            ),
            (
                !old.extractable && changes.extractable == Some(true),
                "a copy of a key that is not extractable is not extractable",
            ),
        ];
        if let Some((_, why)) = loosened.iter().find(|(bad, _)| *bad) {
            let e = HsmError::KeyUse(format!("key {:?} is not copied so: {why}", old.label));
            return Err(self.refuse("key-copy", s.role.short(), s.partition(), e));
        }
        let mut a = old.clone();
        if let Some(l) = &changes.label {
            a.label = l.clone();
        }
        if let Some(i) = &changes.id {
            a.id = i.clone();
        }
        a.sensitive |= changes.sensitive.unwrap_or(false);
        a.extractable &= changes.extractable.unwrap_or(true);
        a.copyable &= changes.copyable.unwrap_or(true);
        a.never_extractable &= !a.extractable;
        a.token = changes.token;
        let spec = a.key_spec()?;
        let material = match k.info.attrs.class {
            ObjectClass::SecretKey | ObjectClass::PrivateKey => {
                Some(SecretBytes::new(k.material()?.material().expose().to_vec()))
            }
            ObjectClass::PublicKey => None,
            other => {
                return Err(HsmError::InvalidInput(format!(
                    "only keys are copied, not {} objects",
                    other.name()
                )))
            }
        };
        let e = self.ev(
            "key-copy",
            s.role.short(),
            s.partition(),
            Some(&a.label),
            &format!(
                "success: copy of {:?} as a {} object",
                old.label,
                if a.token { "token" } else { "session" }
            ),
        );
        let public = k.info.public.clone();
        if !a.token {
            let owner = changes.session_owner.ok_or_else(|| {
                HsmError::InvalidInput("a session copy needs the session that owns it".into())
            })?;
            s.session_room(1)?;
            let key = material
                .map(|m| mechanism::Key::parse(spec, m))
                .transpose()?;
            self.store.event(&e)?;
            return Ok(s.add_session_object(owner, id, a, public, key));
        }
        self.store.write(|t| {
            let mut part = Self::partition_by_id(t, id)?;
            let h = Self::put_key(t, &mut part, &pmk, a, public, material.as_ref())?;
            t.put("partition", &pid(id), &part)?;
            t.event(&e)?;
            Ok(h)
        })
    }
}
