//! `CKM_*` codes and their parameters, mapped onto engine mechanisms.

use cryptoki_sys::*;
use ferrohsm_core::mechanism::{Hash, KeySpec, Mechanism, Params};

use crate::ffi::{self, Rv};

/// Mechanisms offered, with (min key size, max key size, flags) for `C_GetMechanismInfo`.
pub const MECHANISMS: &[(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS)] = &[
    (CKM_RSA_PKCS_KEY_PAIR_GEN, 2048, 4096, CKF_GENERATE_KEY_PAIR),
    (
        CKM_EC_KEY_PAIR_GEN,
        256,
        521,
        CKF_GENERATE_KEY_PAIR | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (CKM_EC_EDWARDS_KEY_PAIR_GEN, 255, 255, CKF_GENERATE_KEY_PAIR),
    (CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE),
    // Decryption and unwrapping with implicit rejection (partition policy rsa-pkcs-decrypt).
    (
        CKM_RSA_PKCS,
        2048,
        4096,
        CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP,
    ),
    (CKM_SHA1_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA224_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA256_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA384_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA512_RSA_PKCS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA1_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA224_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA384_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA512_RSA_PKCS_PSS, 2048, 4096, CKF_SIGN | CKF_VERIFY),
    (
        CKM_RSA_PKCS_OAEP,
        2048,
        4096,
        CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP,
    ),
    (CKM_AES_KEY_WRAP, 16, 32, CKF_WRAP | CKF_UNWRAP),
    (CKM_AES_KEY_WRAP_KWP, 16, 32, CKF_WRAP | CKF_UNWRAP),
    (CKM_AES_KEY_WRAP_PAD, 16, 32, CKF_WRAP | CKF_UNWRAP),
    (
        CKM_ECDSA,
        256,
        521,
        CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (
        CKM_ECDSA_SHA1,
        256,
        521,
        CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (
        CKM_ECDSA_SHA224,
        256,
        521,
        CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (
        CKM_ECDSA_SHA256,
        256,
        521,
        CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (
        CKM_ECDSA_SHA384,
        256,
        521,
        CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (
        CKM_ECDSA_SHA512,
        256,
        521,
        CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (CKM_EDDSA, 255, 255, CKF_SIGN | CKF_VERIFY),
    (
        CKM_ECDH1_DERIVE,
        256,
        521,
        CKF_DERIVE | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
    ),
    (CKM_AES_GCM, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_AES_ECB, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_AES_CBC, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_AES_CBC_PAD, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_AES_CTR, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_AES_CMAC, 16, 32, CKF_SIGN | CKF_VERIFY),
    // In bits: the standard sizes generic secrets in bits (AES, HMAC keys in bytes).
    (CKM_GENERIC_SECRET_KEY_GEN, 128, 512, CKF_GENERATE),
    (CKM_SHA_1_HMAC, 16, 64, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA256_HMAC, 16, 64, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA224_HMAC, 16, 64, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA384_HMAC, 16, 64, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA512_HMAC, 16, 64, CKF_SIGN | CKF_VERIFY),
    (CKM_DES3_KEY_GEN, 24, 24, CKF_GENERATE),
    (CKM_DES3_ECB, 24, 24, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_DES3_CBC, 24, 24, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_SHA_1, 0, 0, CKF_DIGEST),
    (CKM_SHA224, 0, 0, CKF_DIGEST),
    (CKM_SHA256, 0, 0, CKF_DIGEST),
    (CKM_SHA384, 0, 0, CKF_DIGEST),
    (CKM_SHA512, 0, 0, CKF_DIGEST),
    // GlobalPlatform (vendor-defined; the README lists their parameters). Sizes in bytes.
    (crate::gp_mech::CKM_FERROHSM_GP_KCV, 16, 32, CKF_SIGN),
    (
        crate::gp_mech::CKM_FERROHSM_GP_SET_GENERATE,
        16,
        32,
        CKF_GENERATE,
    ),
    (
        crate::gp_mech::CKM_FERROHSM_GP_SET_IMPORT,
        16,
        32,
        CKF_GENERATE,
    ),
    (
        crate::gp_mech::CKM_FERROHSM_GP_SET_ROTATE,
        16,
        32,
        CKF_GENERATE,
    ),
    (
        crate::gp_mech::CKM_FERROHSM_GP_CHANNEL_OPEN,
        16,
        32,
        CKF_DERIVE,
    ),
    (
        crate::gp_mech::CKM_FERROHSM_GP_CHANNEL_WRAP,
        0,
        0,
        CKF_ENCRYPT,
    ),
    (
        crate::gp_mech::CKM_FERROHSM_GP_CHANNEL_UNWRAP,
        0,
        0,
        CKF_DECRYPT,
    ),
    (crate::gp_mech::CKM_FERROHSM_GP_PUT_KEY, 16, 32, CKF_WRAP),
];

/// The hash of a `CKM_SHA*` digest mechanism or `CKM_SHA*` hash-algorithm parameter.
pub fn hash_of(m: CK_MECHANISM_TYPE) -> Option<Hash> {
    Some(match m {
        CKM_SHA_1 => Hash::Sha1,
        CKM_SHA224 => Hash::Sha224,
        CKM_SHA256 => Hash::Sha256,
        CKM_SHA384 => Hash::Sha384,
        CKM_SHA512 => Hash::Sha512,
        _ => return None,
    })
}

fn mgf_of(h: Hash) -> CK_RSA_PKCS_MGF_TYPE {
    match h {
        Hash::Sha1 => CKG_MGF1_SHA1,
        Hash::Sha224 => CKG_MGF1_SHA224,
        Hash::Sha256 => CKG_MGF1_SHA256,
        Hash::Sha384 => CKG_MGF1_SHA384,
        Hash::Sha512 => CKG_MGF1_SHA512,
    }
}

/// Reads the mechanism structure the caller passed.
///
/// # Safety
/// `m` must be NULL or point to a valid `CK_MECHANISM` whose parameter is valid for its length.
pub unsafe fn read(m: *const CK_MECHANISM) -> Rv<(CK_MECHANISM_TYPE, Vec<u8>)> {
    if m.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, valid per contract.
    let m = unsafe { &*m };
    // SAFETY: pParameter is valid for ulParameterLen bytes per contract.
    let p = unsafe { ffi::slice(m.pParameter as *const u8, m.ulParameterLen) }
        .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
    Ok((m.mechanism, p.to_vec()))
}

/// A mechanism parameter struct from its bytes (the length must match exactly).
pub fn param<T: Copy>(p: &[u8]) -> Rv<T> {
    if p.len() != std::mem::size_of::<T>() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: the length matches T exactly and T is a plain C struct (Copy, no invariants);
    // read_unaligned copes with the Vec's alignment.
    Ok(unsafe { std::ptr::read_unaligned(p.as_ptr() as *const T) })
}

/// A sign or verify mechanism for a key of `spec`.
pub fn sign_mechanism(code: CK_MECHANISM_TYPE, p: &[u8], spec: KeySpec) -> Rv<Mechanism> {
    let m = match code {
        CKM_RSA_PKCS => Mechanism::RsaPkcs1Raw,
        CKM_SHA1_RSA_PKCS => Mechanism::RsaPkcs1(Hash::Sha1),
        CKM_SHA224_RSA_PKCS => Mechanism::RsaPkcs1(Hash::Sha224),
        CKM_SHA256_RSA_PKCS => Mechanism::RsaPkcs1(Hash::Sha256),
        CKM_SHA384_RSA_PKCS => Mechanism::RsaPkcs1(Hash::Sha384),
        CKM_SHA512_RSA_PKCS => Mechanism::RsaPkcs1(Hash::Sha512),
        CKM_RSA_PKCS_PSS
        | CKM_SHA1_RSA_PKCS_PSS
        | CKM_SHA224_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS => {
            // The engine's PSS uses MGF1 with the same hash and a salt as long as the hash.
            let pp: CK_RSA_PKCS_PSS_PARAMS = param(p)?;
            let h = hash_of(pp.hashAlg).ok_or(CKR_MECHANISM_PARAM_INVALID)?;
            let named = match code {
                CKM_SHA1_RSA_PKCS_PSS => Some(Hash::Sha1),
                CKM_SHA224_RSA_PKCS_PSS => Some(Hash::Sha224),
                CKM_SHA256_RSA_PKCS_PSS => Some(Hash::Sha256),
                CKM_SHA384_RSA_PKCS_PSS => Some(Hash::Sha384),
                CKM_SHA512_RSA_PKCS_PSS => Some(Hash::Sha512),
                _ => None,
            };
            if named.is_some_and(|n| n != h) || pp.mgf != mgf_of(h) || pp.sLen as usize != h.len() {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            match named {
                Some(_) => Mechanism::RsaPss(h),
                None => Mechanism::RsaPssRaw(h),
            }
        }
        CKM_ECDSA => Mechanism::Ecdsa(None),
        CKM_ECDSA_SHA1 => Mechanism::Ecdsa(Some(Hash::Sha1)),
        CKM_ECDSA_SHA224 => Mechanism::Ecdsa(Some(Hash::Sha224)),
        CKM_ECDSA_SHA256 => Mechanism::Ecdsa(Some(Hash::Sha256)),
        CKM_ECDSA_SHA384 => Mechanism::Ecdsa(Some(Hash::Sha384)),
        CKM_ECDSA_SHA512 => Mechanism::Ecdsa(Some(Hash::Sha512)),
        CKM_EDDSA => {
            // Pure Ed25519 only: no parameters, or CK_EDDSA_PARAMS without prehash/context.
            if !p.is_empty() {
                let ep: CK_EDDSA_PARAMS = param(p)?;
                if ep.phFlag != 0 || ep.ulContextDataLen != 0 {
                    return Err(CKR_MECHANISM_PARAM_INVALID);
                }
            }
            Mechanism::Ed25519
        }
        CKM_AES_CMAC => Mechanism::AesCmac,
        CKM_SHA_1_HMAC => Mechanism::Hmac(Hash::Sha1),
        CKM_SHA256_HMAC => Mechanism::Hmac(Hash::Sha256),
        CKM_SHA224_HMAC => Mechanism::Hmac(Hash::Sha224),
        CKM_SHA384_HMAC => Mechanism::Hmac(Hash::Sha384),
        CKM_SHA512_HMAC => Mechanism::Hmac(Hash::Sha512),
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    let fits = match m {
        Mechanism::AesCmac => spec.is_aes(),
        Mechanism::Hmac(_) => matches!(spec, KeySpec::Generic(_)),
        Mechanism::RsaPkcs1Raw
        | Mechanism::RsaPkcs1(_)
        | Mechanism::RsaPss(_)
        | Mechanism::RsaPssRaw(_) => crate::attrs::key_type(spec) == CKK_RSA,
        Mechanism::Ecdsa(_) => crate::attrs::key_type(spec) == CKK_EC,
        Mechanism::Ed25519 => spec == KeySpec::Ed25519,
        _ => false,
    };
    if !fits {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    }
    Ok(m)
}

/// An encrypt or decrypt mechanism and its per-call parameters.
pub fn cipher_mechanism(
    code: CK_MECHANISM_TYPE,
    p: &[u8],
    spec: KeySpec,
) -> Rv<(Mechanism, Params, u32)> {
    match code {
        CKM_AES_GCM => {
            if crate::attrs::key_type(spec) != CKK_AES {
                return Err(CKR_KEY_TYPE_INCONSISTENT);
            }
            let gp: CK_GCM_PARAMS = param(p)?;
            // SAFETY: the IV and AAD pointers come from the caller's CK_GCM_PARAMS, valid for
            // their stated lengths.
            let iv = unsafe { ffi::slice(gp.pIv as *const u8, gp.ulIvLen) }
                .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
            // SAFETY: as above.
            let aad = unsafe { ffi::slice(gp.pAAD as *const u8, gp.ulAADLen) }
                .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
            if iv.len() != 12 || gp.ulTagBits != 128 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            Ok((
                Mechanism::AesGcm,
                Params {
                    iv: iv.to_vec(),
                    aad: aad.to_vec(),
                    label: vec![],
                },
                128,
            ))
        }
        CKM_AES_ECB | CKM_AES_CBC | CKM_AES_CBC_PAD | CKM_AES_CTR | CKM_DES3_ECB | CKM_DES3_CBC => {
            let des = matches!(code, CKM_DES3_ECB | CKM_DES3_CBC);
            if (des && spec != KeySpec::Des3) || (!des && !spec.is_aes()) {
                return Err(CKR_KEY_TYPE_INCONSISTENT);
            }
            let (m, iv) = match code {
                CKM_AES_ECB => (Mechanism::AesEcb, vec![]),
                CKM_DES3_ECB => (Mechanism::Des3Ecb, vec![]),
                CKM_AES_CBC | CKM_AES_CBC_PAD | CKM_DES3_CBC => {
                    let want = if des { 8 } else { 16 };
                    if p.len() != want {
                        return Err(CKR_MECHANISM_PARAM_INVALID);
                    }
                    let m = match code {
                        CKM_AES_CBC => Mechanism::AesCbc,
                        CKM_AES_CBC_PAD => Mechanism::AesCbcPad,
                        _ => Mechanism::Des3Cbc,
                    };
                    (m, p.to_vec())
                }
                _ => {
                    let cp: CK_AES_CTR_PARAMS = param(p)?;
                    // The engine counts over all 128 bits; a smaller counter field gives the
                    // same blocks until it would wrap, which is refused per message.
                    if cp.ulCounterBits == 0 || cp.ulCounterBits > 128 {
                        return Err(CKR_MECHANISM_PARAM_INVALID);
                    }
                    (Mechanism::AesCtr, cp.cb.to_vec())
                }
            };
            if !p.is_empty() && matches!(m, Mechanism::AesEcb | Mechanism::Des3Ecb) {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let bits = if m == Mechanism::AesCtr {
                param::<CK_AES_CTR_PARAMS>(p)?.ulCounterBits as u32
            } else {
                128
            };
            Ok((
                m,
                Params {
                    iv,
                    ..Default::default()
                },
                bits,
            ))
        }
        CKM_RSA_PKCS => {
            if crate::attrs::key_type(spec) != CKK_RSA {
                return Err(CKR_KEY_TYPE_INCONSISTENT);
            }
            if !p.is_empty() {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            Ok((Mechanism::RsaPkcs1Raw, Params::default(), 128))
        }
        CKM_RSA_PKCS_OAEP => {
            if crate::attrs::key_type(spec) != CKK_RSA {
                return Err(CKR_KEY_TYPE_INCONSISTENT);
            }
            let op: CK_RSA_PKCS_OAEP_PARAMS = param(p)?;
            let h = hash_of(op.hashAlg).ok_or(CKR_MECHANISM_PARAM_INVALID)?;
            if op.mgf != mgf_of(h) || h == Hash::Sha224 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let label = if op.ulSourceDataLen == 0 {
                Vec::new()
            } else {
                if op.source != CKZ_DATA_SPECIFIED {
                    return Err(CKR_MECHANISM_PARAM_INVALID);
                }
                // SAFETY: the label pointer comes from the caller's CK_RSA_PKCS_OAEP_PARAMS,
                // valid for its stated length.
                unsafe { ffi::slice(op.pSourceData as *const u8, op.ulSourceDataLen) }
                    .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?
                    .to_vec()
            };
            Ok((
                Mechanism::RsaOaep(h),
                Params {
                    label,
                    ..Default::default()
                },
                128,
            ))
        }
        _ => Err(CKR_MECHANISM_INVALID),
    }
}

/// Whether AES-CTR with a counter field of `bits` starting at `iv` would wrap within `len` bytes
/// (the engine counts over all 128 bits, so a wrap of a smaller field would differ).
pub fn ctr_would_wrap(iv: &[u8], bits: u32, len: usize) -> bool {
    if bits >= 128 || iv.len() != 16 {
        return false;
    }
    let counter = u128::from_be_bytes(iv.try_into().unwrap_or([0; 16])) & ((1u128 << bits) - 1);
    let blocks = len.div_ceil(16) as u128;
    counter
        .checked_add(blocks)
        .is_none_or(|end| end > (1u128 << bits))
}

/// A key-wrapping mechanism and its parameters, for a wrapping key of `spec`.
pub fn wrap_mechanism(code: CK_MECHANISM_TYPE, p: &[u8], spec: KeySpec) -> Rv<(Mechanism, Params)> {
    match code {
        // CKM_AES_KEY_WRAP (RFC 3394) and CKM_AES_KEY_WRAP_KWP (RFC 5649); the default IVs only.
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_KWP | CKM_AES_KEY_WRAP_PAD => {
            if !matches!(spec, KeySpec::Aes128 | KeySpec::Aes256) {
                return Err(CKR_WRAPPING_KEY_TYPE_INCONSISTENT);
            }
            if !p.is_empty() {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let m = match code {
                CKM_AES_KEY_WRAP => Mechanism::AesKw,
                CKM_AES_KEY_WRAP_KWP => Mechanism::AesKwp,
                _ => Mechanism::AesKwPkcs7,
            };
            Ok((m, Params::default()))
        }
        CKM_RSA_PKCS | CKM_RSA_PKCS_OAEP => {
            let (m, params, _) = cipher_mechanism(code, p, spec).map_err(|e| {
                if e == CKR_KEY_TYPE_INCONSISTENT {
                    CKR_WRAPPING_KEY_TYPE_INCONSISTENT
                } else {
                    e
                }
            })?;
            Ok((m, params))
        }
        _ => Err(CKR_MECHANISM_INVALID),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ctr_wrap_is_caught_only_when_it_would_happen() {
        let mut iv = [0u8; 16];
        iv[15] = 0xfe;
        // An 8-bit counter at 0xfe has room for two blocks.
        assert!(!super::ctr_would_wrap(&iv, 8, 32));
        assert!(super::ctr_would_wrap(&iv, 8, 33));
        // A full 128-bit counter never wraps for any realistic length.
        assert!(!super::ctr_would_wrap(&iv, 128, 1 << 20));
        assert!(!super::ctr_would_wrap(&[0; 16], 32, 16 * 1000));
    }
}
