//! Keys whose values cross the boundary in clear, under partition policy: secret keys made
//! not sensitive (their value reads, policy `non-sensitive-keys`), keys imported in clear
//! (`C_CreateObject`, policy `import-keys`), and the Partition SO's trust mark
//! (`CKA_TRUSTED`), which lets a key that was not generated inside wrap.

use super::*;

/// A secret or private key brought into the HSM in clear (`C_CreateObject`).
pub struct ClearKey {
    /// Secret or private.
    pub class: ObjectClass,
    /// A secret key's type (`None`: AES, sized by the value); a private key's comes from its
    /// encoding.
    pub spec: Option<KeySpec>,
    /// The raw secret key, or the private key as PKCS#8 DER.
    pub material: SecretBytes,
}

impl Hsm {
    /// The value of a secret key made not sensitive and extractable, as PKCS#11 reads
    /// `CKA_VALUE` (Crypto Officer or Crypto User). Any other key is refused: its attributes
    /// say it does not read. Each read is audited.
    pub fn key_value(&mut self, s: &Session, handle: u64) -> Result<SecretBytes> {
        self.key_role(s, "reading key values", false)?;
        let k = self.load_key(s, handle)?;
        let a = &k.info.attrs;
        if a.class != ObjectClass::SecretKey || a.sensitive || !a.extractable {
            let e = HsmError::KeyUse(format!(
                "key {:?}'s value does not leave the HSM (only a secret key that is neither sensitive nor unextractable reads)",
                a.label
            ));
            return Err(self.refuse("key-read-value", s.role.short(), s.partition(), e));
        }
        let value = SecretBytes::new(k.material()?.material().expose().to_vec());
        let e = self.ev(
            "key-read-value",
            s.role.short(),
            s.partition(),
            Some(&a.label),
            "success: a non-sensitive key's value read in clear",
        );
        self.store.event(&e)?;
        Ok(value)
    }

    /// Stores a secret or private key given in clear (Crypto Officer), if the partition's
    /// `import-keys` policy allows it. The key is not local, not always sensitive, not never
    /// extractable, and never wraps or unwraps (its value is known outside); well-known values
    /// are refused as at generation. Audited. Returns its handle.
    pub fn import_key(
        &mut self,
        s: &Session,
        key: ClearKey,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        let (id, pmk) = self.key_user(s, "importing keys", true)?;
        if !self.partition_policy(s)?.import_keys {
            let e = HsmError::Refused(
                "keys are not brought in clear into this partition: its policy import-keys is off (Partition SO: `ferrohsm partition policy set import-keys on`)".into(),
            );
            return Err(self.refuse("key-import", s.role.short(), s.partition(), e));
        }
        if opts.label.len() > 128 || opts.id.len() > 128 {
            return Err(HsmError::InvalidInput(
                "a key label or id is at most 128 bytes".into(),
            ));
        }
        if tpl.wrap == Some(true) || tpl.unwrap == Some(true) {
            let e = HsmError::KeyUse(
                "a key imported in clear never wraps or unwraps (CKA_WRAP/CKA_UNWRAP true refused): its value is known outside the HSM".into(),
            );
            return Err(self.refuse("key-import", s.role.short(), s.partition(), e));
        }
        let m = &key.material;
        let (spec, public) = match Self::key_of_value(key.class, key.spec, m, "imported in clear") {
            Err(HsmError::Crypto(why)) => return Err(HsmError::InvalidInput(why)),
            other => other?,
        };
        self.non_sensitive_check(s, spec, tpl, "key-import")?;
        let note = self.key_value_firewall(s, spec, m.expose(), "key-import")?;
        let (a, _) = Self::key_attributes(spec, opts, tpl, false);
        let a = Attributes {
            class: key.class,
            wrap: false,
            unwrap: false,
            ..a
        };
        let e = self.ev(
            "key-import",
            s.role.short(),
            s.partition(),
            Some(&format!("{} ({spec})", opts.label)),
            &format!(
                "success: {} key brought in clear (not local; never wraps){note}",
                key.class.name()
            ),
        );
        if tpl.session_private {
            return self.keep_session_key(s, tpl, id, a, public, spec, key.material, &e);
        }
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let h = Self::put_key(t, &mut p, &pmk, a, public, Some(&key.material))?;
            t.put("partition", &pid(id), &p)?;
            t.event(&e)?;
            Ok(h)
        })
    }

    /// What a key value is, for a new key of `class` (a secret key of `spec`, or AES sized by
    /// the value when `None`; a private key as PKCS#8): its spec and, for a private key, its
    /// public key. A request that cannot be met (a class or spec that is not a key's) is
    /// [`HsmError::InvalidInput`]; a value that is not such a key is [`HsmError::Crypto`], which
    /// unwrapping turns into its one answer for every bad input.
    pub(super) fn key_of_value(
        class: ObjectClass,
        spec: Option<KeySpec>,
        value: &SecretBytes,
        how: &str,
    ) -> Result<(KeySpec, Option<Vec<u8>>)> {
        match class {
            ObjectClass::PrivateKey => {
                let (spec, public) =
                    mechanism::identify_private_key(value.expose()).map_err(|e| match e {
                        HsmError::InvalidInput(why) => HsmError::Crypto(why),
                        other => other,
                    })?;
                Ok((spec, Some(public)))
            }
            ObjectClass::SecretKey => {
                let spec = match spec {
                    Some(sp) if sp.is_symmetric() => sp,
                    Some(sp) => {
                        return Err(HsmError::InvalidInput(format!(
                            "{sp} is not a secret key type"
                        )))
                    }
                    None => mechanism::aes_spec_for_len(value.len()).ok_or_else(|| {
                        HsmError::Crypto(format!(
                            "a {}-byte value is not an AES key (16, 24 or 32 bytes)",
                            value.len()
                        ))
                    })?,
                };
                if value.len() * 8 != mechanism::key_bits(spec) as usize {
                    return Err(HsmError::Crypto(format!(
                        "a {spec} key is {} bytes, not {}",
                        mechanism::key_bits(spec) / 8,
                        value.len()
                    )));
                }
                Ok((spec, None))
            }
            other => Err(HsmError::InvalidInput(format!(
                "only secret and private keys are {how}, not {} objects",
                other.name()
            ))),
        }
    }

    /// Marks the secret or public key labelled `label` trusted (`CKA_TRUSTED`) or not
    /// (Partition SO only): a trusted key may wrap although it was not generated in the HSM,
    /// and may wrap keys made `CKA_WRAP_WITH_TRUSTED`. Every other wrapping rule still holds;
    /// an extractable key is never marked. The SO changes the mark without touching the key's
    /// value. Audited. Returns the key's handle.
    pub fn set_key_trusted(&mut self, s: &Session, label: &str, trusted: bool) -> Result<u64> {
        if s.role != Role::PartitionSo {
            let e = HsmError::Refused(format!(
                "only the Partition SO marks keys trusted; you are logged in as the {}",
                s.role
            ));
            return Err(self.refuse("key-trust", s.role.short(), s.partition(), e));
        }
        let id = s
            .partition
            .ok_or_else(|| HsmError::State("no partition".into()))?;
        let e = self.ev(
            "key-trust",
            s.role.short(),
            s.partition(),
            Some(label),
            if trusted {
                "success: marked trusted (CKA_TRUSTED)"
            } else {
                "success: trust mark removed"
            },
        );
        let found = self.store.write(|t| {
            let mut keys = Vec::new();
            for h in t.object_handles(id, Some(label))? {
                let rec = Self::load(t, id, h)?;
                if rec.attrs.label == label
                    && matches!(
                        rec.attrs.class,
                        ObjectClass::SecretKey | ObjectClass::PublicKey
                    )
                {
                    keys.push((h, rec));
                }
            }
            let (h, mut rec) = match keys.len() {
                1 => keys.remove(0),
                0 => {
                    return Err(HsmError::NotFound(format!(
                        "no secret or public key labelled {label:?} (private keys are not marked: their public half is)"
                    )))
                }
                n => {
                    return Err(HsmError::InvalidInput(format!(
                        "{n} keys are labelled {label:?}; relabel them first so one is meant"
                    )))
                }
            };
            if trusted && rec.attrs.extractable && rec.attrs.class == ObjectClass::SecretKey {
                return Err(HsmError::KeyUse(format!(
                    "key {label:?} is extractable and is not marked trusted: it could be exported and brought back with other attributes"
                )));
            }
            rec.attrs.trusted = trusted;
            Self::put_record(t, id, h, &rec)?;
            t.event(&e)?;
            Ok(h)
        });
        match found {
            Err(e @ (HsmError::KeyUse(_) | HsmError::InvalidInput(_) | HsmError::NotFound(_))) => {
                Err(self.refuse("key-trust", s.role.short(), s.partition(), e))
            }
            other => other,
        }
    }
}
