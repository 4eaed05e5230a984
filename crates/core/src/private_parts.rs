//! Private keys as PKCS#11 templates give them in clear (`C_CreateObject`: RSA by its CRT
//! components, EC by its scalar), encoded as the PKCS#8 the engine keeps, and checked by
//! parsing them back ([`crate::mechanism::identify_private_key`]).

use zeroize::Zeroizing;

use crate::error::{HsmError, Result};
use crate::mechanism::{self, der, der_uint, KeySpec};
use crate::secret::SecretBytes;

/// A private key's parts.
pub enum PrivateParts<'a> {
    /// `CKA_MODULUS`, `CKA_PUBLIC_EXPONENT`, `CKA_PRIVATE_EXPONENT`, `CKA_PRIME_1`,
    /// `CKA_PRIME_2`, `CKA_EXPONENT_1`, `CKA_EXPONENT_2`, `CKA_COEFFICIENT`, in that order
    /// (all big-endian).
    Rsa([&'a [u8]; 8]),
    /// `CKA_EC_PARAMS` and `CKA_VALUE` (the private scalar, big-endian).
    Ec {
        /// DER of the curve's OID.
        params: &'a [u8],
        /// The scalar.
        scalar: &'a [u8],
    },
}

const RSA_ALG: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// The PKCS#8 encoding of `parts`, the key's spec and its public key (SPKI), once the key
/// has parsed back as a consistent key of a type this HSM holds. Malformed or inconsistent
/// parts are [`HsmError::InvalidInput`].
pub fn pkcs8_from_parts(parts: PrivateParts<'_>) -> Result<(SecretBytes, KeySpec, Vec<u8>)> {
    let pkcs8 = match parts {
        PrivateParts::Rsa(c) => {
            let mut body = Zeroizing::new(der_uint(&[0]));
            for v in c {
                if v.is_empty() {
                    return Err(HsmError::InvalidInput(
                        "an RSA key component is empty".into(),
                    ));
                }
                body.extend_from_slice(&Zeroizing::new(der_uint(v)));
            }
            let key = Zeroizing::new(der(0x30, &body));
            let inner =
                Zeroizing::new([der_uint(&[0]), RSA_ALG.to_vec(), der(0x04, &key)].concat());
            der(0x30, &inner)
        }
        PrivateParts::Ec { params, scalar } => {
            let spec = mechanism::spec_from_ec_params(params)
                .filter(|s| matches!(s, KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521))
                .ok_or_else(|| {
                    HsmError::InvalidInput("CKA_EC_PARAMS names no curve held here".into())
                })?;
            let n = (mechanism::key_bits(spec) as usize).div_ceil(8);
            let digits = scalar
                .iter()
                .position(|b| *b != 0)
                .map_or(&[][..], |i| &scalar[i..]);
            if digits.is_empty() || digits.len() > n {
                return Err(HsmError::InvalidInput(format!(
                    "an EC private value for {spec} is 1 to {n} bytes"
                )));
            }
            // The scalar as the fixed-length octet string SEC 1 asks for.
            let mut fixed = Zeroizing::new(vec![0u8; n - digits.len()]);
            fixed.extend_from_slice(digits);
            let ec_key = Zeroizing::new(der(0x30, &[der_uint(&[1]), der(0x04, &fixed)].concat()));
            let alg = der(0x30, &[EC_PUBLIC_KEY, params].concat());
            let inner = Zeroizing::new([der_uint(&[0]), alg, der(0x04, &ec_key)].concat());
            der(0x30, &inner)
        }
    };
    let pkcs8 = SecretBytes::new(pkcs8);
    let (spec, public) = mechanism::identify_private_key(pkcs8.expose()).map_err(|_| {
        HsmError::InvalidInput(
            "the private key's parts do not form a valid RSA (2048/3072/4096) or EC (P-256/P-384/P-521) key".into(),
        )
    })?;
    Ok((pkcs8, spec, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ec_scalar_becomes_the_key_it_is() {
        let g = mechanism::generate(KeySpec::EcP256).unwrap();
        // The scalar of a generated key, read back out of its PKCS#8 (test only).
        let d = g.private.expose();
        let i = d
            .windows(2)
            .position(|w| w == [0x04, 0x20])
            .expect("a P-256 scalar");
        let scalar = &d[i + 2..i + 34];
        let params = mechanism::ec_params(KeySpec::EcP256).unwrap();
        let (_, spec, public) = pkcs8_from_parts(PrivateParts::Ec { params, scalar }).unwrap();
        assert_eq!(spec, KeySpec::EcP256);
        assert_eq!(public, g.public.unwrap());
        // A scalar of the wrong size, and a curve not held, are refused.
        assert!(pkcs8_from_parts(PrivateParts::Ec {
            params,
            scalar: &[1u8; 33]
        })
        .is_err());
        assert!(pkcs8_from_parts(PrivateParts::Ec {
            params: &[0x06, 0x01, 0x00],
            scalar
        })
        .is_err());
    }

    /// One DER element at the start of `b`: (tag, content, rest).
    fn element(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, start) = match b[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 => (b[2] as usize, 3),
            _ => (((b[2] as usize) << 8) | b[3] as usize, 4),
        };
        (b[0], &b[start..start + len], &b[start + len..])
    }

    #[test]
    fn rsa_components_become_the_key_they_are() {
        let g = mechanism::generate(KeySpec::Rsa2048).unwrap();
        // PKCS#8: SEQUENCE { version, algorithm, OCTET STRING { RSAPrivateKey } }.
        let (_, pkcs8, _) = element(g.private.expose());
        let (_, _, rest) = element(pkcs8);
        let (_, _, rest) = element(rest);
        let (tag, key, _) = element(rest);
        assert_eq!(tag, 0x04);
        let (_, mut ints, _) = element(key);
        let mut parts = Vec::new();
        while !ints.is_empty() {
            let (_, v, rest) = element(ints);
            parts.push(v);
            ints = rest;
        }
        let c: [&[u8]; 8] = parts[1..].try_into().unwrap();
        let (_, spec, public) = pkcs8_from_parts(PrivateParts::Rsa(c)).unwrap();
        assert_eq!(spec, KeySpec::Rsa2048);
        assert_eq!(public, g.public.unwrap());
        // One component changed: the parts no longer form a key.
        let mut wrong = c;
        let other = [0x55u8; 128];
        wrong[3] = &other;
        assert!(pkcs8_from_parts(PrivateParts::Rsa(wrong)).is_err());
    }

    #[test]
    fn inconsistent_rsa_parts_are_refused() {
        let junk = [7u8; 128];
        let parts = [&junk[..]; 8];
        assert!(pkcs8_from_parts(PrivateParts::Rsa(parts)).is_err());
        let mut parts = [&junk[..]; 8];
        parts[3] = &[];
        assert!(pkcs8_from_parts(PrivateParts::Rsa(parts)).is_err());
    }
}
