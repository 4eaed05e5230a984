//! `CKM_RSA_PKCS` (PKCS#1 v1.5, type 2) decryption with implicit rejection, the defence
//! against Bleichenbacher's padding oracle that draft-irtf-cfrg-rsa-guidance describes and
//! OpenSSL 3.2 adopted: a ciphertext whose padding is wrong does not fail; it decrypts to a
//! pseudo-random message, fixed for that key and ciphertext, that nobody without the private
//! key can predict. No error, no timing and no length distinguishes it from a real message.
//!
//! The raw private operation is AWS-LC's, constant time and blinded (through
//! [`crate::mechanism::RawRsa::decrypt_raw`]); the unpadding here handles every byte the same
//! way whatever its value. The key-derivation key is an HMAC-SHA-256 of the ciphertext under
//! a digest of the private key (the draft uses the private exponent; any secret of the key
//! serves, and the stored PKCS#8 encoding is one).

use aws_lc_rs::{digest, hmac};
use subtle::{
    Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater, ConstantTimeLess,
};
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// Padding of a PKCS#1 v1.5 type-2 block: `00 02`, at least eight nonzero bytes, `00`.
const MIN_PADDING: usize = 11;

/// `len` bytes of the draft's PRF: HMAC-SHA-256 under `kdk` of a counter, the label and the
/// output length in bits, block after block.
fn prf(kdk: &hmac::Key, label: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let bits = ((len * 8) as u16).to_be_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut i: u16 = 0;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(kdk);
        ctx.update(&i.to_be_bytes());
        ctx.update(label);
        ctx.update(&bits);
        out.extend_from_slice(ctx.sign().as_ref());
        i += 1;
    }
    out.truncate(len);
    out
}

/// The message of the raw decryption `em` (the modulus length, `k`) of `ciphertext`, or the
/// synthetic message when the padding is wrong. `key_secret` is a secret of the private key.
pub fn unpad(key_secret: &[u8], ciphertext: &[u8], em: &[u8]) -> SecretBytes {
    let k = em.len();
    if k < MIN_PADDING + 1 {
        return SecretBytes::new(Vec::new());
    }
    let key_digest = Zeroizing::new(
        digest::digest(&digest::SHA256, key_secret)
            .as_ref()
            .to_vec(),
    );
    let mut padded_ct = Zeroizing::new(vec![0u8; k.saturating_sub(ciphertext.len())]);
    padded_ct.extend_from_slice(ciphertext);
    let kdk_bytes = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key_digest), &padded_ct);
    let kdk = hmac::Key::new(hmac::HMAC_SHA256, kdk_bytes.as_ref());

    // The synthetic length: the last of 128 candidates below the largest message length.
    let max_len = (k - MIN_PADDING) as u32;
    let mask = u32::MAX >> (max_len.leading_zeros());
    let candidates = prf(&kdk, b"length", 256);
    let mut synthetic_len = 0u32;
    for pair in candidates.chunks_exact(2) {
        let c = u32::from(u16::from_be_bytes([pair[0], pair[1]])) & mask;
        synthetic_len.conditional_assign(&c, c.ct_lt(&(max_len + 1)));
    }
    let synthetic = prf(&kdk, b"message", k);

    // The real message: 00 02, nonzero padding, the first 00 at index 10 or later.
    let mut good = em[0].ct_eq(&0) & em[1].ct_eq(&2);
    let mut found = Choice::from(0);
    let mut zero_at = 0u32;
    for (i, b) in em.iter().enumerate().skip(2) {
        let first = !found & b.ct_eq(&0);
        zero_at.conditional_assign(&(i as u32), first);
        found |= first;
    }
    good &= found & zero_at.ct_gt(&((MIN_PADDING - 2) as u32));
    let real_len = (k as u32).wrapping_sub(zero_at).wrapping_sub(1);

    let mut out = Zeroizing::new(synthetic.to_vec());
    for (o, e) in out.iter_mut().zip(em) {
        o.conditional_assign(e, good);
    }
    let len = u32::conditional_select(&synthetic_len, &real_len, good) as usize;
    // The length is the answer's own length, so it is no secret once answered.
    SecretBytes::new(out[k - len..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(k: usize, msg: &[u8]) -> Vec<u8> {
        let mut em = vec![0u8, 2];
        em.resize(k - msg.len() - 1, 0x5a);
        em.push(0);
        em.extend_from_slice(msg);
        em
    }

    #[test]
    fn a_well_padded_block_gives_its_message() {
        let em = block(256, b"sixteen byte key");
        assert_eq!(unpad(b"key", b"ct", &em).expose(), b"sixteen byte key");
        // An empty message is a message.
        let em = block(256, b"");
        assert_eq!(unpad(b"key", b"ct", &em).expose(), b"");
        // The longest message: eight bytes of padding exactly.
        let long = vec![7u8; 256 - 11];
        assert_eq!(unpad(b"key", b"ct", &block(256, &long)).expose(), &long[..]);
    }

    #[test]
    fn a_bad_padding_gives_a_fixed_pseudo_random_message_never_an_error() {
        let good = block(256, b"sixteen byte key");
        let mut bads = Vec::new();
        let mut wrong_type = good.clone();
        wrong_type[1] = 1;
        bads.push(wrong_type);
        let mut nonzero_first = good.clone();
        nonzero_first[0] = 1;
        bads.push(nonzero_first);
        // Padding of seven bytes only.
        let mut short_pad = good.clone();
        short_pad[9] = 0;
        bads.push(short_pad);
        // No separator at all.
        bads.push([vec![0u8, 2], vec![0x11; 254]].concat());
        for bad in &bads {
            let a = unpad(b"key", b"ciphertext", bad);
            let b = unpad(b"key", b"ciphertext", bad);
            assert_eq!(a.expose(), b.expose(), "deterministic");
            assert!(a.len() <= 256 - 11);
            assert_ne!(a.expose(), b"sixteen byte key");
            // Another ciphertext or another key: another message.
            let c = unpad(b"key", b"other ciphertext", bad);
            let d = unpad(b"other key", b"ciphertext", bad);
            assert!(a.expose() != c.expose() || a.expose().is_empty());
            assert!(a.expose() != d.expose() || a.expose().is_empty());
        }
    }

    #[test]
    fn synthetic_lengths_spread_over_the_whole_range() {
        let bad = vec![0u8; 256];
        let lens: std::collections::BTreeSet<usize> = (0..200u32)
            .map(|i| unpad(b"key", &i.to_be_bytes(), &bad).len())
            .collect();
        assert!(lens.iter().all(|l| *l <= 245));
        assert!(lens.len() > 100, "lengths vary: {}", lens.len());
    }
}
