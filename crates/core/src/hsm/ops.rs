//! Using keys: sign, verify, encrypt, decrypt, each role- and attribute-checked and audited.

use super::*;

impl Hsm {
    /// Checks that `s` may use `k` for `op` (role, partition, the usage attribute).
    pub(super) fn may_use(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        op: &str,
        allowed: bool,
        attribute: &str,
    ) -> Result<()> {
        let id = self.key_role(s, "using keys", false)?;
        if k.partition != id {
            return Err(HsmError::NotFound(format!(
                "no object with handle {} in this partition",
                k.info.handle
            )));
        }
        Self::require_usage(allowed, &k.info.attrs.label, op, attribute)
    }

    /// Signs with a private key, or MACs with a secret key (Crypto Officer or Crypto User).
    pub fn sign(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let k = self.load_key(s, handle)?;
        self.sign_loaded(s, &k, mech, data)
    }

    /// [`Hsm::sign`] with a key already loaded.
    pub fn sign_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        // No slot: one-shot MACs (a context made for one MAC would cost more than it saves).
        self.sign_with(s, k, mech, data, None, <[u8]>::to_vec)
    }

    /// [`Hsm::sign_loaded`] for a caller that keeps a [`mechanism::MacSlot`] (a PKCS#11
    /// session): HMACs go through the slot's reusable context when a provider is installed,
    /// and the result is handed to `out` (after the use is audited) instead of returned, so a
    /// MAC needs no allocation.
    pub fn sign_loaded_into<R>(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
        slot: &mut mechanism::MacSlot,
        out: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.sign_with(s, k, mech, data, Some(slot), out)
    }

    pub(super) fn sign_with<R>(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
        slot: Option<&mut mechanism::MacSlot>,
        out: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.may_use(s, k, "sign", k.info.attrs.sign, "CKA_SIGN")?;
        let mut buf = [0u8; mechanism::MAX_MAC_LEN];
        let mac = match (&k.key, slot) {
            (Some(key), Some(slot)) => mechanism::mac_into(key, mech, data, slot, &mut buf)?,
            _ => None,
        };
        match mac {
            Some(n) => {
                self.audit_key_use(s, k, KeyUse::Sign(mech))?;
                Ok(out(&buf[..n]))
            }
            None => {
                let sig = mechanism::sign(k.material()?, mech, data)?;
                self.audit_key_use(s, k, KeyUse::Sign(mech))?;
                Ok(out(&sig))
            }
        }
    }

    /// Verifies with a public key, or a MAC with a secret key (Crypto Officer or Crypto User).
    /// `Ok(false)`: bad signature.
    pub fn verify(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        data: &[u8],
        sig: &[u8],
    ) -> Result<bool> {
        let k = self.load_key(s, handle)?;
        self.verify_loaded(s, &k, mech, data, sig)
    }

    /// [`Hsm::verify`] with a key already loaded.
    pub fn verify_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        data: &[u8],
        sig: &[u8],
    ) -> Result<bool> {
        self.may_use(s, k, "verify", k.info.attrs.verify, "CKA_VERIFY")?;
        let ok = if k.info.attrs.class == ObjectClass::SecretKey {
            mechanism::verify_mac(k.material()?, mech, data, sig)?
        } else {
            let public = k
                .info
                .public
                .as_ref()
                .ok_or_else(|| HsmError::InvalidInput("not a public key".into()))?;
            mechanism::verify(k.info.attrs.key_spec()?, public, mech, data, sig)?
        };
        self.audit_key_use(s, k, KeyUse::Verify(mech, ok))?;
        Ok(ok)
    }

    /// Encrypts with a secret key or an RSA public key (Crypto Officer or Crypto User).
    pub fn encrypt(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let k = self.load_key(s, handle)?;
        self.encrypt_loaded(s, &k, mech, p, data)
    }

    /// [`Hsm::encrypt`] with a key already loaded.
    pub fn encrypt_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.may_use(s, k, "encrypt", k.info.attrs.encrypt, "CKA_ENCRYPT")?;
        let ct = if k.info.attrs.class == ObjectClass::SecretKey {
            mechanism::encrypt(k.material()?, mech, p, data)?
        } else {
            let public = k
                .info
                .public
                .as_ref()
                .ok_or_else(|| HsmError::InvalidInput("key has no public value".into()))?;
            mechanism::encrypt_public(k.info.attrs.key_spec()?, public, mech, p, data)?
        };
        self.audit_key_use(s, k, KeyUse::Encrypt(mech))?;
        Ok(ct)
    }

    /// [`Hsm::encrypt_loaded`] with a secret key, over the first `len` bytes of `buf` where
    /// they lie (see [`mechanism::encrypt_in_place`]); returns the ciphertext's length.
    pub fn encrypt_loaded_in_place(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        p: &Params,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize> {
        self.may_use(s, k, "encrypt", k.info.attrs.encrypt, "CKA_ENCRYPT")?;
        if k.info.attrs.class != ObjectClass::SecretKey {
            return Err(HsmError::InvalidInput(
                "only secret keys encrypt in place".into(),
            ));
        }
        let n = mechanism::encrypt_in_place(k.material()?, mech, p, buf, len)?;
        self.audit_key_use(s, k, KeyUse::Encrypt(mech))?;
        Ok(n)
    }

    /// Decrypts with a secret or private key (Crypto Officer or Crypto User).
    pub fn decrypt(
        &mut self,
        s: &Session,
        handle: u64,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<SecretBytes> {
        let k = self.load_key(s, handle)?;
        self.decrypt_loaded(s, &k, mech, p, data)
    }

    /// [`Hsm::decrypt`] with a key already loaded.
    pub fn decrypt_loaded(
        &mut self,
        s: &Session,
        k: &LoadedKey,
        mech: Mechanism,
        p: &Params,
        data: &[u8],
    ) -> Result<SecretBytes> {
        self.may_use(s, k, "decrypt", k.info.attrs.decrypt, "CKA_DECRYPT")?;
        if mech == Mechanism::RsaPkcs1Raw {
            self.rsa_pkcs_decrypt_check(s, "key-use")?;
        }
        let pt = mechanism::decrypt(k.material()?, mech, p, data)?;
        self.audit_key_use(s, k, KeyUse::Decrypt(mech))?;
        Ok(pt)
    }

    /// Refuses `CKM_RSA_PKCS` decryption and unwrapping where the partition's policy
    /// `rsa-pkcs-decrypt` is off.
    pub(super) fn rsa_pkcs_decrypt_check(&mut self, s: &Session, event: &str) -> Result<()> {
        if self.partition_policy(s)?.rsa_pkcs_decrypt {
            return Ok(());
        }
        let e = HsmError::Refused(
            "CKM_RSA_PKCS (PKCS#1 v1.5) decryption and unwrapping are off in this partition (policy rsa-pkcs-decrypt); use RSA-OAEP".into(),
        );
        Err(self.refuse(event, s.role.short(), s.partition(), e))
    }
}
