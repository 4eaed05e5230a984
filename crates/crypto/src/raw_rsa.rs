//! Raw PKCS#1 v1.5 RSA for `CKM_RSA_PKCS` over data that is not a DigestInfo, through
//! AWS-LC's `RSA_sign_raw`/`RSA_verify_raw` (constant time, blinded): aws-lc-rs's safe API has
//! no raw RSA operation, and only this crate may call C. The engine decides when it is used
//! ([`ferrohsm_core::mechanism::RawRsa`]); this is the call and nothing else.

use aws_lc_sys::{
    CBS_init, EVP_PKEY_free, EVP_PKEY_get0_RSA, EVP_parse_private_key, EVP_parse_public_key,
    EVP_sha1, EVP_sha224, EVP_sha256, EVP_sha384, EVP_sha512, RSA_decrypt, RSA_encrypt,
    RSA_sign_pss_mgf1, RSA_sign_raw, RSA_size, RSA_verify_pss_mgf1, RSA_verify_raw, CBS, EVP_MD,
    EVP_PKEY, RSA_NO_PADDING, RSA_PKCS1_PADDING,
};
use ferrohsm_core::mechanism::Hash;
use ferrohsm_core::secret::SecretBytes;

/// AWS-LC's digest for `h` (static, never freed).
pub(crate) fn md(h: Hash) -> *const EVP_MD {
    // SAFETY: these return pointers to static digest descriptions; no arguments, no state.
    unsafe {
        match h {
            Hash::Sha1 => EVP_sha1(),
            Hash::Sha224 => EVP_sha224(),
            Hash::Sha256 => EVP_sha256(),
            Hash::Sha384 => EVP_sha384(),
            Hash::Sha512 => EVP_sha512(),
        }
    }
}

/// The RSA key inside `key` (borrowed: lives as long as `key`), or NULL if it is not RSA.
fn rsa_of(key: &Pkey) -> *mut aws_lc_sys::RSA {
    // SAFETY: `key.0` is a live EVP_PKEY; get0 borrows its RSA without a new reference.
    unsafe { EVP_PKEY_get0_RSA(key.0) }
}

/// The provider installed at `C_Initialize`.
pub struct AwsLcRawRsa;

/// An `EVP_PKEY` freed on drop.
struct Pkey(*mut EVP_PKEY);

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_parse_*_key, is non-NULL (checked at creation)
        // and is freed exactly once, here; AWS-LC cleanses private key material as it frees.
        unsafe { EVP_PKEY_free(self.0) }
    }
}

/// Parses DER with `parse` (EVP_parse_private_key or EVP_parse_public_key).
fn parse(der: &[u8], parse: unsafe extern "C" fn(*mut CBS) -> *mut EVP_PKEY) -> Option<Pkey> {
    let mut cbs = CBS {
        data: std::ptr::null(),
        len: 0,
    };
    // SAFETY: CBS_init only records the pointer and length of `der`, which outlives `cbs`;
    // the parser reads within them and returns a new EVP_PKEY or NULL.
    let p = unsafe {
        CBS_init(&mut cbs, der.as_ptr(), der.len());
        parse(&mut cbs)
    };
    (!p.is_null()).then_some(Pkey(p))
}

/// Runs `op` (RSA_sign_raw, RSA_verify_raw, RSA_encrypt or RSA_decrypt) with `padding` on
/// `input` with the RSA key inside `key`; the output, if the operation succeeded.
fn rsa_raw(
    key: &Pkey,
    input: &[u8],
    padding: std::os::raw::c_int,
    op: unsafe extern "C" fn(
        *mut aws_lc_sys::RSA,
        *mut usize,
        *mut u8,
        usize,
        *const u8,
        usize,
        std::os::raw::c_int,
    ) -> std::os::raw::c_int,
) -> Option<Vec<u8>> {
    let rsa = rsa_of(key);
    if rsa.is_null() {
        return None;
    }
    // SAFETY: `rsa` is a live RSA key (above).
    let k = unsafe { RSA_size(rsa) } as usize;
    let mut out = vec![0u8; k];
    let mut n = 0usize;
    // SAFETY: `out` has room for `k` bytes, the most either operation writes; `input` is valid
    // for its length; `n` receives the length written.
    let ok = unsafe {
        op(
            rsa,
            &mut n,
            out.as_mut_ptr(),
            k,
            input.as_ptr(),
            input.len(),
            padding,
        )
    };
    if ok != 1 || n > k {
        return None;
    }
    out.truncate(n);
    Some(out)
}

impl ferrohsm_core::mechanism::RawRsa for AwsLcRawRsa {
    fn sign(&self, pkcs8: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        let key = parse(pkcs8, EVP_parse_private_key)?;
        rsa_raw(&key, data, RSA_PKCS1_PADDING as _, RSA_sign_raw)
    }

    fn sign_pss(&self, pkcs8: &[u8], hash: Hash, digest: &[u8]) -> Option<Vec<u8>> {
        let key = parse(pkcs8, EVP_parse_private_key)?;
        let rsa = rsa_of(&key);
        if rsa.is_null() || digest.len() != hash.len() {
            return None;
        }
        // SAFETY: `rsa` is live (above).
        let k = unsafe { RSA_size(rsa) } as usize;
        let mut out = vec![0u8; k];
        let mut n = 0usize;
        // SAFETY: `out` holds `k` bytes, a signature's size; `digest` is valid for its length,
        // which matches `hash`; salt length = hash length (the module's PSS rule).
        let ok = unsafe {
            RSA_sign_pss_mgf1(
                rsa,
                &mut n,
                out.as_mut_ptr(),
                k,
                digest.as_ptr(),
                digest.len(),
                md(hash),
                md(hash),
                hash.len() as std::os::raw::c_int,
            )
        };
        (ok == 1 && n <= k).then(|| {
            out.truncate(n);
            out
        })
    }

    fn verify_pss(&self, spki: &[u8], hash: Hash, digest: &[u8], sig: &[u8]) -> Option<bool> {
        let key = parse(spki, EVP_parse_public_key)?;
        let rsa = rsa_of(&key);
        if rsa.is_null() {
            return None;
        }
        // SAFETY: `rsa` is live; `digest` and `sig` are valid for their lengths.
        let ok = unsafe {
            RSA_verify_pss_mgf1(
                rsa,
                digest.as_ptr(),
                digest.len(),
                md(hash),
                md(hash),
                hash.len() as std::os::raw::c_int,
                sig.as_ptr(),
                sig.len(),
            )
        };
        Some(ok == 1)
    }

    fn verify(&self, spki: &[u8], data: &[u8], sig: &[u8]) -> Option<bool> {
        let key = parse(spki, EVP_parse_public_key)?;
        // A bad signature fails the padding check: that is an answer (false), not an error.
        Some(
            rsa_raw(&key, sig, RSA_PKCS1_PADDING as _, RSA_verify_raw)
                .is_some_and(|recovered| ferrohsm_core::crypto::ct_eq(&recovered, data)),
        )
    }

    fn decrypt_raw(&self, pkcs8: &[u8], ciphertext: &[u8]) -> Option<SecretBytes> {
        let key = parse(pkcs8, EVP_parse_private_key)?;
        // RSA_NO_PADDING: AWS-LC checks the length and that the value is below the modulus,
        // and runs the blinded, constant-time private operation; the padding is the engine's.
        let em = rsa_raw(&key, ciphertext, RSA_NO_PADDING as _, RSA_decrypt)?;
        Some(SecretBytes::new(em))
    }

    fn encrypt_pkcs1(&self, spki: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        let key = parse(spki, EVP_parse_public_key)?;
        rsa_raw(&key, data, RSA_PKCS1_PADDING as _, RSA_encrypt)
    }
}
