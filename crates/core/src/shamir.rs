//! Shamir secret sharing over GF(2^8) (the AES field, x^8 + x^4 + x^3 + x + 1), used to split a
//! PED secret over N same-colour keys so that any M rebuild it.
//!
//! Field arithmetic is branch-free on secret data (no log/exp tables), so splitting and
//! combining do not leak share bytes through cache timing.

use zeroize::Zeroizing;

use crate::error::{HsmError, Result};

/// The most shares a secret may be split into.
pub const MAX_SHARES: u8 = 16;

fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

fn gf_inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(2^8); 0 maps to 0 (never used: x-coordinates are 1..=16).
    let mut r = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e > 0 {
        if e & 1 == 1 {
            r = gf_mul(r, base);
        }
        base = gf_mul(base, base);
        e >>= 1;
    }
    r
}

/// Checks 1 ≤ M ≤ N ≤ 16.
pub fn check_m_of_n(m: u8, n: u8) -> Result<()> {
    if m == 0 || n == 0 || m > n || n > MAX_SHARES {
        return Err(HsmError::InvalidInput(format!(
            "M of N must satisfy 1 <= M <= N <= {MAX_SHARES}; got M={m}, N={n}"
        )));
    }
    Ok(())
}

/// Splits `secret` into `n` shares, any `m` of which rebuild it. Share `i` (0-based in the
/// returned vector) has x-coordinate `i + 1`. `random` fills the polynomial coefficients.
pub fn split(
    secret: &[u8],
    m: u8,
    n: u8,
    mut random: impl FnMut(&mut [u8]),
) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    check_m_of_n(m, n)?;
    let mut shares: Vec<Zeroizing<Vec<u8>>> = (0..n)
        .map(|_| Zeroizing::new(vec![0u8; secret.len()]))
        .collect();
    let mut coeffs = Zeroizing::new(vec![0u8; m as usize]);
    for (byte_idx, &s) in secret.iter().enumerate() {
        coeffs[0] = s;
        random(&mut coeffs[1..]);
        for (share_idx, share) in shares.iter_mut().enumerate() {
            let x = share_idx as u8 + 1;
            // Horner evaluation of the polynomial at x.
            let mut y = 0u8;
            for &c in coeffs.iter().rev() {
                y = gf_mul(y, x) ^ c;
            }
            share[byte_idx] = y;
        }
    }
    Ok(shares)
}

/// Rebuilds a secret from shares given as `(x, bytes)` with distinct x in 1..=16, all of the
/// same length. The caller checks that at least M shares of one set are present: with fewer,
/// the answer is a wrong secret, not an error (that is what makes the scheme hiding).
pub fn combine(shares: &[(u8, &[u8])]) -> Result<Zeroizing<Vec<u8>>> {
    let first = shares
        .first()
        .ok_or_else(|| HsmError::InvalidInput("no shares to combine".into()))?;
    let len = first.1.len();
    for (i, (x, s)) in shares.iter().enumerate() {
        if *x == 0 || *x > MAX_SHARES {
            return Err(HsmError::InvalidInput(format!(
                "share index {x} out of range"
            )));
        }
        if s.len() != len {
            return Err(HsmError::InvalidInput("shares differ in length".into()));
        }
        if shares[..i].iter().any(|(y, _)| y == x) {
            return Err(HsmError::InvalidInput(format!(
                "share {x} was presented twice; each share counts once"
            )));
        }
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    for (j, (xj, sj)) in shares.iter().enumerate() {
        // Lagrange basis polynomial l_j evaluated at 0: prod_{m != j} x_m / (x_m - x_j);
        // subtraction is XOR in this field.
        let mut num = 1u8;
        let mut den = 1u8;
        for (k, (xk, _)) in shares.iter().enumerate() {
            if k != j {
                num = gf_mul(num, *xk);
                den = gf_mul(den, xk ^ xj);
            }
        }
        let l = gf_mul(num, gf_inv(den));
        for (o, &b) in out.iter_mut().zip(sj.iter()) {
            *o ^= gf_mul(l, b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move |buf: &mut [u8]| {
            for b in buf {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
        }
    }

    #[test]
    fn field_inverse_is_inverse() {
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "a={a}");
        }
        // Known AES-field product: 0x57 * 0x83 = 0xc1 (FIPS-197 §4.2).
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
    }

    #[test]
    fn bad_m_of_n_is_refused() {
        assert!(check_m_of_n(0, 1).is_err());
        assert!(check_m_of_n(3, 2).is_err());
        assert!(check_m_of_n(2, 17).is_err());
        assert!(check_m_of_n(16, 16).is_ok());
    }

    #[test]
    fn duplicate_share_is_refused() {
        let sh = split(&[7; 32], 2, 3, rng(1)).unwrap();
        let e = combine(&[(1, &sh[0]), (1, &sh[0])]).unwrap_err();
        assert!(e.to_string().contains("twice"));
    }

    proptest! {
        #[test]
        fn any_m_shares_in_any_order_rebuild(secret in proptest::collection::vec(any::<u8>(), 1..48),
                                             m in 1u8..=16, extra in 0u8..=15, seed in any::<u64>(),
                                             perm_seed in any::<u64>()) {
            let n = (m + extra).min(16);
            let shares = split(&secret, m, n, rng(seed)).unwrap();
            // Pick m distinct indices in a seed-driven order.
            let mut idx: Vec<u8> = (0..n).collect();
            let mut r = rng(perm_seed);
            for i in (1..idx.len()).rev() {
                let mut b = [0u8; 1];
                r(&mut b);
                idx.swap(i, b[0] as usize % (i + 1));
            }
            let chosen: Vec<(u8, &[u8])> = idx[..m as usize].iter()
                .map(|&i| (i + 1, shares[i as usize].as_slice())).collect();
            let got = combine(&chosen).unwrap();
            prop_assert_eq!(got.as_slice(), secret.as_slice());
        }

        #[test]
        fn fewer_than_m_shares_do_not_rebuild(secret in proptest::collection::vec(any::<u8>(), 16..33),
                                              m in 2u8..=16, seed in any::<u64>()) {
            let shares = split(&secret, m, m, rng(seed)).unwrap();
            let chosen: Vec<(u8, &[u8])> = (0..m - 1)
                .map(|i| (i + 1, shares[i as usize].as_slice())).collect();
            let got = combine(&chosen).unwrap();
            prop_assert_ne!(got.as_slice(), secret.as_slice());
        }
    }
}
