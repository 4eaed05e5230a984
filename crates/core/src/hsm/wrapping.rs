//! Keys leaving and entering the boundary wrapped (`C_WrapKey`, `C_UnwrapKey`), and keys
//! agreed by ECDH.

use super::*;

impl Hsm {
    /// Checks that `target` may be wrapped by `wrapper` and returns both records: the target
    /// must be extractable (`CKA_EXTRACTABLE`), the wrapper allowed to wrap (`CKA_WRAP`) and
    /// trustworthy as a wrapping key (see [`Hsm::wrapping_key_refusal`]), and a
    /// `CKA_WRAP_WITH_TRUSTED` target needs a trusted wrapper. The Crypto User may use keys,
    /// never export them.
    pub(super) fn wrap_check(
        &mut self,
        s: &Session,
        wrapper: u64,
        target: u64,
    ) -> Result<(Arc<LoadedKey>, Arc<LoadedKey>)> {
        if s.role == Role::CryptoUser {
            let e = HsmError::Refused(
                "the Crypto User may use keys but not wrap (export) them; the Crypto Officer may"
                    .into(),
            );
            return Err(self.refuse("key-wrap", s.role.short(), s.partition(), e));
        }
        let w = self.load_key(s, wrapper)?;
        let k = self.load_key(s, target)?;
        let refusal = match Self::wrap_refusal(&w.info.attrs, &k.info.attrs) {
            Some(e) => Some(e),
            None => self.private_half_refusal(s, &w, k.info.attrs.sensitive)?,
        };
        match refusal {
            None => Ok((w, k)),
            // A refused export is recorded like any refusal.
            Some(e) => Err(self.refuse("key-wrap", s.role.short(), s.partition(), e)),
        }
    }

    /// Whether a key may serve to wrap or unwrap at all, whatever its `CKA_WRAP`/`CKA_UNWRAP`
    /// say: only a key whose value nobody outside the HSM can know. That is a key generated
    /// inside (`CKA_LOCAL`) or one the Partition SO marked `CKA_TRUSTED`, and never an
    /// extractable one (it could be exported and brought back under other attributes). A key
    /// imported, unwrapped or derived (ECDH with a point the caller chose) may be one whose
    /// value the caller made; wrapping under it would hand the caller the target.
    pub(super) fn wrapping_key_refusal(w: &Attributes, op: &str) -> Option<HsmError> {
        // (A public key's secret is its private half, checked where the partition is read.)
        if w.extractable && w.class != ObjectClass::PublicKey {
            return Some(HsmError::KeyUse(format!(
                "key {:?} is extractable, so it may not {op} keys: it could be exported and brought back with other attributes",
                w.label
            )));
        }
        if !w.local && !w.trusted {
            return Some(HsmError::KeyUse(format!(
                "key {:?} was not generated in the HSM (it was imported, unwrapped or derived, so its value may be known outside), so it may not {op} keys unless the Partition SO marks it trusted",
                w.label
            )));
        }
        None
    }

    pub(super) fn wrap_refusal(w: &Attributes, k: &Attributes) -> Option<HsmError> {
        if k.class == ObjectClass::PublicKey {
            return Some(HsmError::InvalidInput(
                "a public key is not wrapped; read it instead".into(),
            ));
        }
        if !k.extractable {
            return Some(HsmError::Refused(format!(
                "key {:?} is not extractable (CKA_EXTRACTABLE is false): it never leaves the HSM",
                k.label
            )));
        }
        if k.wrap_with_trusted && !w.trusted {
            return Some(HsmError::Refused(format!(
                "key {:?} may be wrapped only by a trusted key (CKA_WRAP_WITH_TRUSTED)",
                k.label
            )));
        }
        if !w.wrap_template.matches(k) {
            return Some(HsmError::Refused(format!(
                "key {:?} does not match the CKA_WRAP_TEMPLATE of wrapping key {:?}, so it is not wrapped with it",
                k.label, w.label
            )));
        }
        if let Err(e) = Self::require_usage(w.wrap, &w.label, "wrap", "CKA_WRAP") {
            return Some(HsmError::KeyUse(e.to_string()));
        }
        if let Some(e) = Self::wrapping_key_refusal(w, "wrap") {
            return Some(e);
        }
        // Key separation: a key that decrypts would turn the wrapped bytes back into the key
        // (wrap, then C_Decrypt with the same key).
        if k.sensitive && w.decrypt {
            return Some(HsmError::KeyUse(format!(
                "key {:?} can decrypt (CKA_DECRYPT), so it may not wrap a sensitive key: the wrapped bytes could be decrypted back into the key",
                w.label
            )));
        }
        if let (Some(ws), Some(ks)) = (w.spec, k.spec) {
            let (have, need) = (mechanism::security_bits(ws), mechanism::security_bits(ks));
            if have < need {
                return Some(HsmError::KeyUse(format!(
                    "key {:?} ({ws}, {have}-bit strength) is weaker than key {:?} ({ks}, {need}-bit): a key is wrapped only by one at least as strong",
                    w.label, k.label
                )));
            }
        }
        None
    }

    /// For a public wrapping key: a refusal if its private half is in the partition and is
    /// extractable (export it, then decrypt offline), or can decrypt and the target is
    /// sensitive (wrap under the public key, C_Decrypt with the private one).
    fn private_half_refusal(
        &mut self,
        s: &Session,
        w: &LoadedKey,
        sensitive_target: bool,
    ) -> Result<Option<HsmError>> {
        if w.info.attrs.class != ObjectClass::PublicKey {
            return Ok(None);
        }
        let Some(public) = w.info.public.clone() else {
            return Ok(None);
        };
        let (id, _) = self.key_user(s, "wrapping keys", false)?;
        let half = self.store.read(|t| {
            for h in t.object_handles(id, None)? {
                let rec = Self::load(t, id, h)?;
                if rec.attrs.class == ObjectClass::PrivateKey
                    && rec.public.as_deref() == Some(public.as_slice())
                {
                    return Ok(Some(rec.attrs));
                }
            }
            Ok(None)
        })?;
        Ok(half.and_then(|p| {
            let why = if p.extractable {
                "is extractable (it could be exported and the wrapped bytes opened outside)"
            } else if p.decrypt && sensitive_target {
                "can decrypt (CKA_DECRYPT), so it may not wrap a sensitive key: the wrapped bytes could be decrypted back into the key"
            } else {
                return None;
            };
            Some(HsmError::KeyUse(format!(
                "key {:?}'s private half ({:?}) {why}",
                w.info.attrs.label, p.label
            )))
        }))
    }

    /// Length of what [`Hsm::wrap_key`] would return (for the two-call convention).
    pub fn wrapped_key_len(
        &mut self,
        s: &Session,
        wrapper: u64,
        mech: Mechanism,
        target: u64,
    ) -> Result<usize> {
        let (w, k) = self.wrap_check(s, wrapper, target)?;
        let m = k.material()?.material();
        Ok(mechanism::wrapped_len(
            w.info.attrs.key_spec()?,
            mech,
            m.len(),
        ))
    }

    /// Exports a secret or private key wrapped under another key of the partition (AES KW/KWP,
    /// or RSA-OAEP for secret keys), when the attributes allow it. Always audited, durably,
    /// before the wrapped key is returned. Either key may be a session object.
    pub fn wrap_key(
        &mut self,
        s: &Session,
        wrapper: u64,
        mech: Mechanism,
        p: &Params,
        target: u64,
    ) -> Result<Vec<u8>> {
        let (w, k) = self.wrap_check(s, wrapper, target)?;
        let m = k.material()?.material();
        let wrapping_key: &[u8] = if w.info.attrs.class == ObjectClass::SecretKey {
            w.material()?.material().expose()
        } else {
            w.info.public.as_deref().ok_or_else(|| {
                HsmError::InvalidInput("the wrapping key has no public value".into())
            })?
        };
        let out = mechanism::wrap(w.info.attrs.key_spec()?, wrapping_key, mech, p, m.expose())?;
        let e = self.ev(
            "key-wrap",
            s.role.short(),
            s.partition(),
            Some(&k.info.attrs.label),
            &format!(
                "success: wrapped under {:?} with {mech}",
                w.info.attrs.label
            ),
        );
        self.store.event(&e)?;
        Ok(out)
    }

    /// Imports a wrapped key as a new object (Crypto Officer). `spec` names the key type for a
    /// secret key (`None`: AES, sized by what unwraps); a private key's type comes from its
    /// PKCS#8 encoding. The new key is not
    /// local, not always sensitive and not never extractable, as PKCS#11 requires.
    #[allow(clippy::too_many_arguments)]
    pub fn unwrap_key(
        &mut self,
        s: &Session,
        unwrapper: u64,
        mech: Mechanism,
        p: &Params,
        wrapped: &[u8],
        class: ObjectClass,
        spec: Option<KeySpec>,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "unwrapping keys", true)?;
        let u = self.load_key(s, unwrapper)?;
        let attrs = &u.info.attrs;
        // The unwrapping key's CKA_UNWRAP_TEMPLATE is what every key it unwraps becomes.
        let (mut tpl, mut opts) = (tpl.clone(), opts.clone());
        attrs
            .unwrap_template
            .apply_to(class, spec, &mut tpl, &mut opts)?;
        let (tpl, opts) = (&tpl, &opts);
        let refusal = Self::require_usage(attrs.unwrap, &attrs.label, "unwrap", "CKA_UNWRAP")
            .err()
            .map(|e| HsmError::KeyUse(e.to_string()))
            .or_else(|| Self::wrapping_key_refusal(attrs, "unwrap"))
            .or_else(|| {
                // Key separation: bytes the caller encrypted with this key would unwrap into
                // a key of a value the caller knows.
                attrs.encrypt.then(|| HsmError::KeyUse(format!(
                    "key {:?} can encrypt (CKA_ENCRYPT), so it may not unwrap keys: what anyone encrypted with it would become a key of a known value",
                    attrs.label
                )))
            })
            .or_else(|| {
                // An unwrapped key is never less sensitive than what went in; the HSM
                // cannot tell what went in, so it is sensitive.
                (tpl.sensitive == Some(false)).then(|| HsmError::KeyUse(
                    "an unwrapped key is always sensitive (CKA_SENSITIVE false is refused): otherwise wrapping a sensitive key and unwrapping it again would read it out".into(),
                ))
            });
        if let Some(e) = refusal {
            return Err(self.refuse("key-unwrap", s.role.short(), s.partition(), e));
        }
        if mech == Mechanism::RsaPkcs1Raw {
            self.rsa_pkcs_decrypt_check(s, "key-unwrap")?;
        }
        // One answer for every way the bytes fail to unwrap (padding, length, integrity):
        // no padding oracle.
        let uniform = || HsmError::Crypto("the wrapped key does not unwrap with this key".into());
        let m = mechanism::unwrap(
            attrs.key_spec()?,
            u.material()?.material(),
            mech,
            p,
            wrapped,
        )
        .map_err(|_| uniform())?;
        // What unwrapped must also be a key of the kind asked for; when it is not, the answer
        // is the same one, so that a synthetic message of an implicitly rejected CKM_RSA_PKCS
        // padding is not told apart from a real one by its length.
        let (spec, public) = match Self::key_of_value(class, spec, &m, "unwrapped") {
            Err(HsmError::Crypto(_)) => return Err(uniform()),
            other => other?,
        };
        // Now that the key's type is known, the template's CKA_KEY_TYPE is checked too.
        attrs
            .unwrap_template
            .apply_to(class, Some(spec), &mut tpl.clone(), &mut opts.clone())?;
        let (a, _) = Self::key_attributes(spec, opts, tpl, false);
        let a = Attributes { class, ..a };
        let label = attrs.label.clone();
        let note = self.key_value_firewall(s, spec, m.expose(), "key-unwrap")?;
        let e = self.ev(
            "key-unwrap",
            s.role.short(),
            s.partition(),
            Some(&opts.label),
            &format!("success: {spec} unwrapped with {label:?} ({mech}){note}"),
        );
        if tpl.session_private {
            return self.keep_session_key(s, tpl, id, a, public, spec, m, &e);
        }
        self.store.write(|t| {
            let mut part = Self::partition_by_id(t, id)?;
            let h = Self::put_key(t, &mut part, &pmk, a, public, Some(&m))?;
            t.put("partition", &pid(id), &part)?;
            t.event(&e)?;
            Ok(h)
        })
    }

    /// Derives a secret key by ECDH (no KDF) from the EC private key `base` and a peer's
    /// public point (Crypto Officer; `base` must allow it, `CKA_DERIVE`). The key value is
    /// the shared secret's rightmost bytes, as many as `spec` needs. The new key is not local,
    /// and is always sensitive and never extractable only if the base key was too.
    pub fn derive_ecdh(
        &mut self,
        s: &Session,
        base: u64,
        peer_point: &[u8],
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "deriving keys", true)?;
        let k = self.load_key(s, base)?;
        self.may_use(s, &k, "derive", k.info.attrs.derive, "CKA_DERIVE")?;
        if k.info.attrs.sensitive && tpl.sensitive == Some(false) {
            // Never a weaker copy: what comes of a sensitive key is sensitive.
            let e = HsmError::KeyUse(format!(
                "a key derived from sensitive key {:?} is sensitive (CKA_SENSITIVE false is refused)",
                k.info.attrs.label
            ));
            return Err(self.refuse("key-derive", s.role.short(), s.partition(), e));
        }
        if !k.info.attrs.extractable && opts.extractable {
            // Nor more extractable: what comes of a key that never leaves does not leave.
            let e = HsmError::KeyUse(format!(
                "a key derived from unextractable key {:?} is not extractable (CKA_EXTRACTABLE true is refused)",
                k.info.attrs.label
            ));
            return Err(self.refuse("key-derive", s.role.short(), s.partition(), e));
        }
        self.non_sensitive_check(s, spec, tpl, "key-derive")?;
        if !spec.is_symmetric() || spec == KeySpec::Des3 {
            return Err(HsmError::InvalidInput(format!(
                "ECDH derives AES or generic secret keys, not {spec}"
            )));
        }
        let shared = mechanism::ecdh(k.material()?, peer_point)?;
        let n = mechanism::key_bits(spec) as usize / 8;
        let value = shared.expose().len().checked_sub(n).ok_or_else(|| {
            HsmError::InvalidInput(format!(
                "the shared secret has {} bytes; a {spec} key needs {n}",
                shared.expose().len()
            ))
        })?;
        let material = SecretBytes::new(shared.expose()[value..].to_vec());
        let note = self.key_value_firewall(s, spec, material.expose(), "key-derive")?;
        let (mut a, _) = Self::key_attributes(spec, opts, tpl, false);
        a.always_sensitive = k.info.attrs.always_sensitive && a.sensitive;
        a.never_extractable = k.info.attrs.never_extractable && !a.extractable;
        let e = self.ev(
            "key-derive",
            s.role.short(),
            s.partition(),
            Some(&format!("{} ({spec})", opts.label)),
            &format!("success: ECDH with {:?}{note}", k.info.attrs.label),
        );
        if tpl.session_private {
            return self.keep_session_key(s, tpl, id, a, None, spec, material, &e);
        }
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let h = Self::put_key(t, &mut p, &pmk, a, None, Some(&material))?;
            t.put("partition", &pid(id), &p)?;
            t.event(&e)?;
            Ok(h)
        })
    }

    /// Refuses a well-known secret key value ([`crate::weak_keys`]) unless the partition's
    /// `test-keys` policy is on; when it is, the note the audit record of the key's entry
    /// carries.
    pub(super) fn key_value_firewall(
        &mut self,
        s: &Session,
        spec: KeySpec,
        value: &[u8],
        event: &str,
    ) -> Result<String> {
        let Some(why) = crate::weak_keys::well_known(spec, value) else {
            return Ok(String::new());
        };
        if self.partition_policy(s)?.test_keys {
            return Ok(format!(
                "; a well-known key value ({why}) accepted in test mode (policy test-keys)"
            ));
        }
        let e = HsmError::KeyUse(format!(
            "the key's value is well known ({why}); such keys are refused outside a partition's test mode (Partition SO: `ferrohsm partition policy set test-keys on`)"
        ));
        Err(self.refuse(event, s.role.short(), s.partition(), e))
    }

    /// Keeps a new secret or private key as a session object of `tpl.session_owner`, after
    /// recording its creation (`e`). Returns its handle.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keep_session_key(
        &mut self,
        s: &Session,
        tpl: &KeyTemplate,
        partition: u32,
        attrs: Attributes,
        public: Option<Vec<u8>>,
        spec: KeySpec,
        material: SecretBytes,
        e: &Event,
    ) -> Result<u64> {
        let owner = session_owner(tpl)?;
        s.session_room(1)?;
        let key = mechanism::Key::parse(spec, material)?;
        self.store.event(e)?;
        Ok(s.add_session_object(owner, partition, attrs, public, Some(key)))
    }
}
