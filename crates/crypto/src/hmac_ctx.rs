//! Reusable HMAC contexts ([`ferrohsm_core::mechanism::MacContext`]) over AWS-LC's `HMAC_CTX`:
//! keyed once per session and key, then rewound for each MAC with `HMAC_Init_ex` and no key.
//! aws-lc-rs's safe API copies the whole keyed context for every MAC; for a short message
//! that copy costs a fifth of the MAC. The engine decides when a context is used and keeps it
//! in the caller's slot; this is the call and nothing else.

use aws_lc_sys::{HMAC_CTX_free, HMAC_CTX_new, HMAC_Final, HMAC_Init_ex, HMAC_Update, HMAC_CTX};
use ferrohsm_core::mechanism::{Hash, MacContext, MacProvider, MAX_MAC_LEN};

/// The provider installed at `C_Initialize`.
pub struct AwsLcMac;

/// A keyed `HMAC_CTX`, owned alone; freed (and cleansed by AWS-LC) on drop.
struct Ctx(*mut HMAC_CTX);

// SAFETY: the context is owned by this value alone and AWS-LC keeps no thread-affine state in
// it; moving it to another thread is sound. It is not `Sync`: `mac` needs `&mut self`.
unsafe impl Send for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from HMAC_CTX_new, is non-NULL (checked at creation) and is
        // freed exactly once, here; HMAC_CTX_free cleanses the keyed state before freeing.
        unsafe { HMAC_CTX_free(self.0) }
    }
}

impl MacProvider for AwsLcMac {
    fn keyed(&self, hash: Hash, key: &[u8]) -> Option<Box<dyn MacContext>> {
        // SAFETY: HMAC_CTX_new returns a fresh context or NULL (checked).
        let ctx = Ctx(unsafe { HMAC_CTX_new() });
        if ctx.0.is_null() {
            return None;
        }
        // A non-NULL key pointer even for an empty key: NULL would mean "keep the old key".
        let one = [0u8; 1];
        let key_ptr = if key.is_empty() {
            one.as_ptr()
        } else {
            key.as_ptr()
        };
        // SAFETY: `ctx.0` is a live context; `key_ptr` is valid for `key.len()` bytes (or
        // points at a live byte when the length is 0); `md` returns a static digest; AWS-LC
        // copies the key into the context and keeps no pointer to it.
        let ok = unsafe {
            HMAC_Init_ex(
                ctx.0,
                key_ptr.cast(),
                key.len(),
                crate::raw_rsa::md(hash),
                std::ptr::null_mut(),
            )
        };
        (ok == 1).then(|| Box::new(ctx) as Box<dyn MacContext>)
    }
}

impl MacContext for Ctx {
    fn mac(&mut self, data: &[u8], out: &mut [u8; MAX_MAC_LEN]) -> Option<usize> {
        let mut len: std::os::raw::c_uint = 0;
        // SAFETY: `self.0` is a live context keyed in `keyed`; HMAC_Init_ex with a NULL key
        // and NULL digest rewinds it to the keyed state (AWS-LC's documented reuse); `data`
        // is valid for its length; `out` has room for the longest digest (64 bytes), and
        // HMAC_Final writes at most the digest's size and its length to `len`.
        let ok = unsafe {
            HMAC_Init_ex(
                self.0,
                std::ptr::null(),
                0,
                std::ptr::null(),
                std::ptr::null_mut(),
            ) == 1
                && HMAC_Update(self.0, data.as_ptr(), data.len()) == 1
                && HMAC_Final(self.0, out.as_mut_ptr(), &mut len) == 1
        };
        ok.then_some(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::hmac;

    /// Each hash, keys shorter and longer than the block, several messages on one context
    /// (each MAC must start from the key, not from the previous message): equal to aws-lc-rs.
    #[test]
    fn a_rewound_context_equals_the_one_shot_mac_every_time() {
        let hashes = [
            (Hash::Sha1, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
            (Hash::Sha224, hmac::HMAC_SHA224),
            (Hash::Sha256, hmac::HMAC_SHA256),
            (Hash::Sha384, hmac::HMAC_SHA384),
            (Hash::Sha512, hmac::HMAC_SHA512),
        ];
        for (h, alg) in hashes {
            for key in [vec![], vec![7u8; 1], vec![9u8; 32], vec![3u8; 200]] {
                let mut ctx = AwsLcMac.keyed(h, &key).expect("keyed");
                let one_shot = hmac::Key::new(alg, &key);
                for msg in [&b""[..], b"abc", &[0x5a; 64][..], &[1; 1000][..], b"abc"] {
                    let mut out = [0u8; MAX_MAC_LEN];
                    let n = ctx.mac(msg, &mut out).expect("mac");
                    assert_eq!(&out[..n], hmac::sign(&one_shot, msg).as_ref(), "{h:?}");
                }
            }
        }
    }
}
