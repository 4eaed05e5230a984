//! Key values that are no secret: the GlobalPlatform default key and its kin, all-zero,
//! repeated and sequential bytes, triple-DES keys whose parts repeat (so that they are single
//! DES), and DES weak and semi-weak keys. One list for every place a key value enters the HSM
//! (generation, creation, unwrap, derivation; the GlobalPlatform master keys too): such a
//! value is refused outside a partition's audited test mode (policy `test-keys`).

use crate::mechanism::KeySpec;

/// The GlobalPlatform default (test) key: bytes 40 41 … 4F.
pub const GP_DEFAULT_KEY: [u8; 16] = [
    0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f,
];

/// DES weak and semi-weak keys (with odd parity); a triple-DES part equal to one is refused.
const DES_WEAK: [[u8; 8]; 16] = [
    [0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01],
    [0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe],
    [0xe0, 0xe0, 0xe0, 0xe0, 0xf1, 0xf1, 0xf1, 0xf1],
    [0x1f, 0x1f, 0x1f, 0x1f, 0x0e, 0x0e, 0x0e, 0x0e],
    [0x01, 0xfe, 0x01, 0xfe, 0x01, 0xfe, 0x01, 0xfe],
    [0xfe, 0x01, 0xfe, 0x01, 0xfe, 0x01, 0xfe, 0x01],
    [0x1f, 0xe0, 0x1f, 0xe0, 0x0e, 0xf1, 0x0e, 0xf1],
    [0xe0, 0x1f, 0xe0, 0x1f, 0xf1, 0x0e, 0xf1, 0x0e],
    [0x01, 0xe0, 0x01, 0xe0, 0x01, 0xf1, 0x01, 0xf1],
    [0xe0, 0x01, 0xe0, 0x01, 0xf1, 0x01, 0xf1, 0x01],
    [0x1f, 0xfe, 0x1f, 0xfe, 0x0e, 0xfe, 0x0e, 0xfe],
    [0xfe, 0x1f, 0xfe, 0x1f, 0xfe, 0x0e, 0xfe, 0x0e],
    [0x01, 0x1f, 0x01, 0x1f, 0x01, 0x0e, 0x01, 0x0e],
    [0x1f, 0x01, 0x1f, 0x01, 0x0e, 0x01, 0x0e, 0x01],
    [0xe0, 0xfe, 0xe0, 0xfe, 0xf1, 0xfe, 0xf1, 0xfe],
    [0xfe, 0xe0, 0xfe, 0xe0, 0xfe, 0xf1, 0xfe, 0xf1],
];

/// Bytes with the DES parity bit (the lowest) cleared, so that keys differing only in parity
/// compare equal.
fn without_parity(b: &[u8]) -> Vec<u8> {
    b.iter().map(|x| x & 0xfe).collect()
}

/// Why `value` (a secret key of type `spec`) is a well-known value, or `None`. Only secret
/// keys are judged: an RSA or EC private key cannot be a repeated-byte pattern.
pub fn well_known(spec: KeySpec, value: &[u8]) -> Option<&'static str> {
    if !spec.is_symmetric() || value.is_empty() {
        return None;
    }
    if value.iter().all(|b| *b == 0) {
        return Some("all zero bytes");
    }
    // A pattern of 1, 2 or 4 bytes repeated (00 00 …, 01 02 01 02 …, 11 22 33 44 11 …).
    for period in [1, 2, 4] {
        if value.len() > period
            && value
                .iter()
                .enumerate()
                .all(|(i, b)| *b == value[i % period])
        {
            return Some("a short pattern repeated");
        }
    }
    if value.windows(2).all(|w| w[1] == w[0].wrapping_add(1))
        || value.windows(2).all(|w| w[1] == w[0].wrapping_sub(1))
    {
        return Some("sequential bytes (such as the GlobalPlatform default key 40..4F)");
    }
    if value.chunks(16).all(|c| c == &GP_DEFAULT_KEY[..c.len()]) {
        return Some("the GlobalPlatform default key");
    }
    if spec == KeySpec::Des3 {
        let parts: Vec<Vec<u8>> = value.chunks(8).map(without_parity).collect();
        // Two-key (K1 K2) or three-key: equal neighbouring parts make it single DES.
        if parts.windows(2).any(|w| w[0] == w[1]) {
            return Some("a triple-DES key whose parts repeat (it is single DES)");
        }
        if parts
            .iter()
            .any(|p| DES_WEAK.iter().any(|w| without_parity(w) == *p))
        {
            return Some("a DES weak or semi-weak key part");
        }
    }
    None
}

/// One value of every kind the list refuses, with the key type it is refused as (two-key
/// 3DES, AES-128, AES-256: the sizes GlobalPlatform keys take): what each entry point's test
/// presents, so that a kind added here is tried at all of them.
pub fn samples() -> Vec<(KeySpec, Vec<u8>)> {
    let des = |parts: &[[u8; 8]]| parts.concat();
    let k1 = [0x13, 0x34, 0x57, 0x79, 0x9b, 0xbc, 0xdf, 0xf1];
    let mut descending: Vec<u8> = (0u8..16).collect();
    descending.reverse();
    vec![
        (KeySpec::Aes128, GP_DEFAULT_KEY.to_vec()),
        (KeySpec::Des3, GP_DEFAULT_KEY.to_vec()),
        (KeySpec::Aes256, [GP_DEFAULT_KEY, GP_DEFAULT_KEY].concat()),
        (KeySpec::Aes128, vec![0u8; 16]),
        (KeySpec::Aes128, vec![0x5a; 16]),
        (KeySpec::Aes128, [0x11, 0x22].repeat(8)),
        (KeySpec::Aes128, [0x11, 0x22, 0x33, 0x44].repeat(4)),
        (KeySpec::Aes256, (0u8..32).collect()),
        (KeySpec::Aes128, descending),
        // K1 = K2, and K1 = K2 but for the parity bits: single DES.
        (KeySpec::Des3, des(&[k1, k1])),
        (
            KeySpec::Des3,
            des(&[k1, [0x12, 0x35, 0x56, 0x78, 0x9a, 0xbd, 0xde, 0xf0]]),
        ),
        (KeySpec::Des3, des(&[DES_WEAK[0], k1])),
        (KeySpec::Des3, des(&[k1, DES_WEAK[6]])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_recognised() {
        for (spec, v) in samples() {
            assert!(well_known(spec, &v).is_some(), "{spec:?} {v:02x?}");
        }
    }

    #[test]
    fn the_well_known_values_are_recognised_and_random_ones_pass() {
        let gp2: Vec<u8> = GP_DEFAULT_KEY
            .iter()
            .chain(&GP_DEFAULT_KEY)
            .copied()
            .collect();
        let gp3: Vec<u8> = GP_DEFAULT_KEY
            .iter()
            .chain(&GP_DEFAULT_KEY[..8])
            .copied()
            .collect();
        for (spec, v) in [
            (KeySpec::Aes128, vec![0u8; 16]),
            (KeySpec::Aes256, vec![0x5a; 32]),
            (KeySpec::Aes128, [0x01, 0x02].repeat(8)),
            (KeySpec::Aes128, [0x11, 0x22, 0x33, 0x44].repeat(4)),
            (KeySpec::Aes128, GP_DEFAULT_KEY.to_vec()),
            (KeySpec::Aes256, gp2),
            (KeySpec::Aes128, (0u8..16).rev().collect()),
            (KeySpec::Generic(32), (0u8..32).collect()),
            // 3DES, K1 = K2 (even with different parity bits).
            (
                KeySpec::Des3,
                [
                    [0x13u8, 0x34, 0x57, 0x79, 0x9b, 0xbc, 0xdf, 0xf1].as_slice(),
                    &[0x12, 0x35, 0x56, 0x78, 0x9a, 0xbd, 0xde, 0xf0],
                    &[0x0e, 0x32, 0x9a, 0x8c, 0x46, 0x2d, 0x57, 0x19],
                ]
                .concat(),
            ),
            // Two-key 3DES (GlobalPlatform's), K1 = K2 up to parity: single DES.
            (
                KeySpec::Des3,
                [
                    [0x13u8, 0x34, 0x57, 0x79, 0x9b, 0xbc, 0xdf, 0xf1].as_slice(),
                    &[0x12, 0x35, 0x56, 0x78, 0x9a, 0xbd, 0xde, 0xf0],
                ]
                .concat(),
            ),
            // 3DES with a DES weak part.
            (
                KeySpec::Des3,
                [
                    [0x01u8; 8].as_slice(),
                    &[0x12, 0x35, 0x56, 0x78, 0x9a, 0xbd, 0xde, 0xf0],
                    &[0x0e, 0x32, 0x9a, 0x8c, 0x46, 0x2d, 0x57, 0x19],
                ]
                .concat(),
            ),
            (KeySpec::Des3, gp3),
        ] {
            assert!(well_known(spec, &v).is_some(), "{spec} {}", hex::encode(&v));
        }
        let mut random = [0u8; 32];
        crate::crypto::fill_random(&mut random);
        assert_eq!(well_known(KeySpec::Aes256, &random), None);
        let des = [
            0x13u8, 0x34, 0x57, 0x79, 0x9b, 0xbc, 0xdf, 0xf1, 0x0e, 0x32, 0x9a, 0x8c, 0x46, 0x2d,
            0x57, 0x19, 0x12, 0x35, 0x56, 0x78, 0x9a, 0xbd, 0xde, 0xf0,
        ];
        assert_eq!(well_known(KeySpec::Des3, &des), None);
        // Private keys are not judged by these patterns.
        assert_eq!(well_known(KeySpec::EcP256, &[0u8; 32]), None);
    }
}
