//! The GlobalPlatform vendor mechanisms and attributes: their codes and parameter structures
//! as a C caller declares them (the README lists them), and their reading into the HSM API's
//! [`GpCall`]s. Codes are `CKM_VENDOR_DEFINED | 0x0047_50xx` ("GP").
#![allow(non_camel_case_types, non_snake_case)]

use cryptoki_sys::*;
use ferrohsm_core::api::GpCall;
use ferrohsm_core::hsm::{GpComponent, GpKeysRef, GpNewSet};
use ferrohsm_core::object::GpMaster;

use crate::ffi::{self, Rv};
use crate::mech;

/// `C_SignInit`/`C_Sign`: a check value of the key's role in its set, or of the card key
/// diversified from it. Parameter [`CK_FERROHSM_GP_KCV_PARAMS`]; the data signed is empty.
pub const CKM_FERROHSM_GP_KCV: CK_MECHANISM_TYPE = 0x8047_5001;
/// `C_GenerateKey`: a new master key set generated inside. Parameter
/// [`CK_FERROHSM_GP_SET_PARAMS`]; returns the set's ENC key.
pub const CKM_FERROHSM_GP_SET_GENERATE: CK_MECHANISM_TYPE = 0x8047_5002;
/// `C_GenerateKey`: a master key set from a key ceremony's components. Parameter
/// [`CK_FERROHSM_GP_IMPORT_PARAMS`]; returns the set's ENC key.
pub const CKM_FERROHSM_GP_SET_IMPORT: CK_MECHANISM_TYPE = 0x8047_5003;
/// `C_GenerateKey`: the next version of a set, generated. Parameter: the set's name (UTF-8
/// bytes); returns the new version's ENC key.
pub const CKM_FERROHSM_GP_SET_ROTATE: CK_MECHANISM_TYPE = 0x8047_5004;
/// `C_DeriveKey` on a set's key: opens a secure channel to a card. Parameter
/// [`CK_FERROHSM_GP_OPEN_PARAMS`]; returns the channel (a session object of this session).
pub const CKM_FERROHSM_GP_CHANNEL_OPEN: CK_MECHANISM_TYPE = 0x8047_5005;
/// `C_EncryptInit`/`C_Encrypt` with a channel: a command APDU protected at its level.
pub const CKM_FERROHSM_GP_CHANNEL_WRAP: CK_MECHANISM_TYPE = 0x8047_5006;
/// `C_DecryptInit`/`C_Decrypt` with a channel: the card's answer to the last command,
/// checked (R-MAC) and opened (R-ENC).
pub const CKM_FERROHSM_GP_CHANNEL_UNWRAP: CK_MECHANISM_TYPE = 0x8047_5007;
/// `C_WrapKey` with a channel as the wrapping key and a set's key as the key: the PUT KEY
/// command that gives the channel's card the set's keys (diversified for it), protected.
/// Parameter [`CK_FERROHSM_GP_PUT_KEY_PARAMS`].
pub const CKM_FERROHSM_GP_PUT_KEY: CK_MECHANISM_TYPE = 0x8047_5008;

/// Attribute: the set's name (UTF-8), on each of its three keys.
pub const CKA_FERROHSM_GP_SET: CK_ATTRIBUTE_TYPE = 0x8047_5101;
/// Attribute: the set's version (`CK_ULONG`, 1-127).
pub const CKA_FERROHSM_GP_VERSION: CK_ATTRIBUTE_TYPE = 0x8047_5102;
/// Attribute: the key's role in its set (`CK_ULONG`: [`CK_FERROHSM_GP_ENC`], …).
pub const CKA_FERROHSM_GP_ROLE: CK_ATTRIBUTE_TYPE = 0x8047_5103;
/// Attribute: the card population the set serves (UTF-8).
pub const CKA_FERROHSM_GP_POPULATION: CK_ATTRIBUTE_TYPE = 0x8047_5104;
/// Attribute: retired (`CK_BBOOL`): kept and listed, never used again.
pub const CKA_FERROHSM_GP_RETIRED: CK_ATTRIBUTE_TYPE = 0x8047_5105;
/// Key type of a secure channel object.
pub const CKK_FERROHSM_GP_CHANNEL: CK_KEY_TYPE = 0x8047_5201;

/// Roles, as [`CKA_FERROHSM_GP_ROLE`] and [`CK_FERROHSM_GP_COMPONENT::role`] give them.
pub const CK_FERROHSM_GP_ENC: CK_ULONG = 1;
/// The MAC key.
pub const CK_FERROHSM_GP_MAC: CK_ULONG = 2;
/// The DEK (KEK).
pub const CK_FERROHSM_GP_DEK: CK_ULONG = 3;

/// Diversification: none (the set's keys as they are: a card's transport keys).
pub const CK_FERROHSM_GP_DIV_NONE: CK_ULONG = 0;
/// VISA2 (3DES).
pub const CK_FERROHSM_GP_DIV_VISA2: CK_ULONG = 1;
/// EMV CPS 1.1 (3DES).
pub const CK_FERROHSM_GP_DIV_EMV_CPS11: CK_ULONG = 2;
/// The SCP03 counter-mode KDF (NIST SP 800-108), "KDF3" (AES).
pub const CK_FERROHSM_GP_DIV_KDF3: CK_ULONG = 3;

/// Check value: 3DES encrypts eight zero bytes (three bytes).
pub const CK_FERROHSM_GP_KCV_DES3_ZEROS: CK_ULONG = 1;
/// Check value: GlobalPlatform's AES (sixteen `01` bytes; three bytes).
pub const CK_FERROHSM_GP_KCV_AES_GP: CK_ULONG = 2;
/// Check value: AES encrypts sixteen zero bytes (three bytes).
pub const CK_FERROHSM_GP_KCV_AES_ZEROS: CK_ULONG = 3;
/// Check value: ANSI X9.24-1 AES-CMAC of sixteen zero bytes (five bytes).
pub const CK_FERROHSM_GP_KCV_AES_CMAC: CK_ULONG = 4;

/// [`CKM_FERROHSM_GP_KCV`]'s parameter.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_FERROHSM_GP_KCV_PARAMS {
    /// `CK_FERROHSM_GP_KCV_*`.
    pub kcvMethod: CK_ULONG,
    /// `CK_FERROHSM_GP_DIV_*`: none for the set's own key.
    pub diversification: CK_ULONG,
    /// The card's key diversification data (10 bytes), with a diversification.
    pub pKdd: CK_BYTE_PTR,
    /// Its length.
    pub ulKddLen: CK_ULONG,
}

/// [`CKM_FERROHSM_GP_SET_GENERATE`]'s parameter, and the set part of an import's.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_FERROHSM_GP_SET_PARAMS {
    /// `CKK_DES2` (two-key 3DES) or `CKK_AES`.
    pub keyType: CK_KEY_TYPE,
    /// 16 for `CKK_DES2`; 16, 24 or 32 for `CKK_AES`.
    pub ulValueLen: CK_ULONG,
    /// 1-127.
    pub version: CK_ULONG,
    /// The set's name (UTF-8).
    pub pSet: CK_UTF8CHAR_PTR,
    /// Its length.
    pub ulSetLen: CK_ULONG,
    /// The card population it serves (UTF-8).
    pub pPopulation: CK_UTF8CHAR_PTR,
    /// Its length.
    pub ulPopulationLen: CK_ULONG,
}

/// One custodian's component of one key, with its check value; with `pValue` NULL, the check
/// value of the whole key of that role.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_FERROHSM_GP_COMPONENT {
    /// [`CK_FERROHSM_GP_ENC`], [`CK_FERROHSM_GP_MAC`] or [`CK_FERROHSM_GP_DEK`].
    pub role: CK_ULONG,
    /// The component (as long as the key), or NULL.
    pub pValue: CK_BYTE_PTR,
    /// Its length.
    pub ulValueLen: CK_ULONG,
    /// Its check value in the set's default method (`des3-zeros` or `aes-gp`).
    pub pKcv: CK_BYTE_PTR,
    /// Its length.
    pub ulKcvLen: CK_ULONG,
}

/// [`CKM_FERROHSM_GP_SET_IMPORT`]'s parameter: at least two components per key.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_FERROHSM_GP_IMPORT_PARAMS {
    /// The set.
    pub set: CK_FERROHSM_GP_SET_PARAMS,
    /// Components and whole-key check values.
    pub pComponents: *mut CK_FERROHSM_GP_COMPONENT,
    /// How many.
    pub ulComponentCount: CK_ULONG,
}

/// [`CKM_FERROHSM_GP_CHANNEL_OPEN`]'s parameter.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_FERROHSM_GP_OPEN_PARAMS {
    /// How the card's keys come from the base key's set (`CK_FERROHSM_GP_DIV_*`).
    pub diversification: CK_ULONG,
    /// The security level as EXTERNAL AUTHENTICATE's P1 gives it: 0x01 C-MAC, 0x03 +C-DEC,
    /// 0x11 +R-MAC, 0x13, 0x33 (+R-ENC, SCP03).
    pub securityLevel: CK_ULONG,
    /// SCP02's option `i` (e.g. 0x55); ignored for SCP03.
    pub scp02Option: CK_ULONG,
    /// The host challenge sent in INITIALIZE UPDATE.
    pub hostChallenge: [CK_BYTE; 8],
    /// The card's answer to INITIALIZE UPDATE (its data, without the status word).
    pub pCardAnswer: CK_BYTE_PTR,
    /// Its length.
    pub ulCardAnswerLen: CK_ULONG,
    /// Out: the EXTERNAL AUTHENTICATE command to send (at least 32 bytes of room).
    pub pExternalAuthenticate: CK_BYTE_PTR,
    /// In: the room; out: the command's length.
    pub pulExternalAuthenticateLen: CK_ULONG_PTR,
}

/// [`CKM_FERROHSM_GP_PUT_KEY`]'s parameter.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_FERROHSM_GP_PUT_KEY_PARAMS {
    /// How the card's new keys come from the set (`CK_FERROHSM_GP_DIV_*`).
    pub diversification: CK_ULONG,
    /// The key version replaced on the card (0: added).
    pub oldVersion: CK_ULONG,
    /// The version the new keys take on the card (1-127).
    pub newVersion: CK_ULONG,
}

/// The room EXTERNAL AUTHENTICATE needs (5 + 8 + 8 bytes, with margin).
pub const EXTERNAL_AUTHENTICATE_ROOM: CK_ULONG = 32;

/// Whether `code` is one of these mechanisms.
pub fn is_gp(code: CK_MECHANISM_TYPE) -> bool {
    (CKM_FERROHSM_GP_KCV..=CKM_FERROHSM_GP_PUT_KEY).contains(&code)
}

/// The role's name.
pub fn role_name(role: CK_ULONG) -> Rv<&'static str> {
    match role {
        CK_FERROHSM_GP_ENC => Ok("enc"),
        CK_FERROHSM_GP_MAC => Ok("mac"),
        CK_FERROHSM_GP_DEK => Ok("dek"),
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// The role's code.
pub fn role_code(role: &str) -> CK_ULONG {
    match role {
        "enc" => CK_FERROHSM_GP_ENC,
        "mac" => CK_FERROHSM_GP_MAC,
        _ => CK_FERROHSM_GP_DEK,
    }
}

fn method(d: CK_ULONG) -> Rv<Option<String>> {
    Ok(match d {
        CK_FERROHSM_GP_DIV_NONE => None,
        CK_FERROHSM_GP_DIV_VISA2 => Some("visa2".into()),
        CK_FERROHSM_GP_DIV_EMV_CPS11 => Some("emv-cps11".into()),
        CK_FERROHSM_GP_DIV_KDF3 => Some("kdf3".into()),
        _ => return Err(CKR_MECHANISM_PARAM_INVALID),
    })
}

/// The keys a set's key (its marker) and a diversification name.
pub fn keys_of(m: &GpMaster, diversification: CK_ULONG) -> Rv<GpKeysRef> {
    Ok(GpKeysRef {
        set: m.set.clone(),
        version: Some(m.version),
        method: method(diversification)?,
    })
}

/// Caller bytes a parameter points at.
///
/// # Safety
/// `p` valid for `len` bytes (or NULL with 0), per the caller's parameter.
unsafe fn bytes(p: *const u8, len: CK_ULONG) -> Rv<Vec<u8>> {
    // SAFETY: per this function's contract.
    unsafe { ffi::slice(p, len) }
        .map(<[u8]>::to_vec)
        .map_err(|_| CKR_MECHANISM_PARAM_INVALID)
}

/// Caller UTF-8 text a parameter points at.
///
/// # Safety
/// As [`bytes`].
unsafe fn text(p: *const u8, len: CK_ULONG) -> Rv<String> {
    // SAFETY: per this function's contract.
    String::from_utf8(unsafe { bytes(p, len)? }).map_err(|_| CKR_MECHANISM_PARAM_INVALID)
}

/// The KCV call for a key with marker `m`.
///
/// # Safety
/// `p` is a [`CK_FERROHSM_GP_KCV_PARAMS`]'s bytes whose pointers are valid per the caller.
pub unsafe fn kcv_call(m: &GpMaster, p: &[u8]) -> Rv<GpCall> {
    let k: CK_FERROHSM_GP_KCV_PARAMS = mech::param(p)?;
    let method = match k.kcvMethod {
        CK_FERROHSM_GP_KCV_DES3_ZEROS => "des3-zeros",
        CK_FERROHSM_GP_KCV_AES_GP => "aes-gp",
        CK_FERROHSM_GP_KCV_AES_ZEROS => "aes-zeros",
        CK_FERROHSM_GP_KCV_AES_CMAC => "aes-cmac",
        _ => return Err(CKR_MECHANISM_PARAM_INVALID),
    };
    let keys = keys_of(m, k.diversification)?;
    // SAFETY: per this function's contract.
    let kdd = unsafe { bytes(k.pKdd, k.ulKddLen)? };
    let kdd = match (&keys.method, kdd.len()) {
        (None, 0) => None,
        (Some(_), 10) => Some(hex::encode(&kdd)),
        _ => return Err(CKR_MECHANISM_PARAM_INVALID),
    };
    Ok(GpCall::Kcv {
        keys,
        role: m.role.clone(),
        method: method.into(),
        kdd,
    })
}

/// A new set's description from its parameter.
///
/// # Safety
/// `s`'s pointers are valid per the caller.
unsafe fn new_set(s: &CK_FERROHSM_GP_SET_PARAMS) -> Rv<GpNewSet> {
    let key_type = match (s.keyType, s.ulValueLen) {
        (CKK_DES2, 16) => "des3",
        (CKK_AES, 16) => "aes-128",
        (CKK_AES, 24) => "aes-192",
        (CKK_AES, 32) => "aes-256",
        _ => return Err(CKR_MECHANISM_PARAM_INVALID),
    };
    let version = u8::try_from(s.version).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
    // SAFETY: per this function's contract.
    let (set, population) = unsafe {
        (
            text(s.pSet, s.ulSetLen)?,
            text(s.pPopulation, s.ulPopulationLen)?,
        )
    };
    Ok(GpNewSet::new(&set, key_type, version, &population))
}

/// The call `C_GenerateKey` with mechanism `code` (one of the set mechanisms) makes.
///
/// # Safety
/// `p` is the mechanism's parameter bytes, whose pointers are valid per the caller.
pub unsafe fn set_call(code: CK_MECHANISM_TYPE, p: &[u8]) -> Rv<GpCall> {
    Ok(match code {
        CKM_FERROHSM_GP_SET_GENERATE => {
            let s: CK_FERROHSM_GP_SET_PARAMS = mech::param(p)?;
            // SAFETY: per this function's contract.
            let n = unsafe { new_set(&s)? };
            GpCall::Generate {
                set: n.set,
                key_type: n.key_type,
                version: n.version,
                population: n.population,
            }
        }
        CKM_FERROHSM_GP_SET_IMPORT => {
            let i: CK_FERROHSM_GP_IMPORT_PARAMS = mech::param(p)?;
            // SAFETY: per this function's contract.
            let n = unsafe { new_set(&i.set)? };
            // SAFETY: pComponents holds ulComponentCount entries per the caller.
            let list = unsafe { ffi::slice(i.pComponents as *const _, i.ulComponentCount) }
                .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
            let (mut components, mut whole) = (Vec::new(), Vec::new());
            for c in list as &[CK_FERROHSM_GP_COMPONENT] {
                let role = role_name(c.role)?.to_string();
                // SAFETY: each entry's pointers are valid per the caller.
                let kcv = hex::encode(unsafe { bytes(c.pKcv, c.ulKcvLen)? });
                if c.pValue.is_null() {
                    whole.push((role, kcv));
                } else {
                    // SAFETY: as above. The hex copy is wiped with the call (GpCall's
                    // components are wiped by the client once sent; here it is dropped).
                    let value = zeroize::Zeroizing::new(unsafe { bytes(c.pValue, c.ulValueLen)? });
                    components.push(GpComponent {
                        role,
                        value: hex::encode(&value[..]),
                        kcv,
                    });
                }
            }
            GpCall::Import {
                set: n.set,
                key_type: n.key_type,
                version: n.version,
                population: n.population,
                components,
                whole,
            }
        }
        CKM_FERROHSM_GP_SET_ROTATE => GpCall::Rotate {
            set: String::from_utf8(p.to_vec()).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?,
        },
        _ => return Err(CKR_MECHANISM_INVALID),
    })
}

/// The security level's name from EXTERNAL AUTHENTICATE's P1 (the engine checks it against
/// the card's protocol).
pub fn level_name(bits: CK_ULONG) -> Rv<String> {
    let bits = u8::try_from(bits).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
    ferrohsm_gp::channel::SecurityLevel::new(bits, 3)
        .map(|l| l.name())
        .map_err(|_| CKR_MECHANISM_PARAM_INVALID)
}

/// PUT KEY's parameter: (diversification, old version, new version).
pub fn put_key_params(p: &[u8]) -> Rv<(CK_ULONG, u8, u8)> {
    let k: CK_FERROHSM_GP_PUT_KEY_PARAMS = mech::param(p)?;
    let v = |x: CK_ULONG| u8::try_from(x).map_err(|_| CKR_MECHANISM_PARAM_INVALID);
    Ok((k.diversification, v(k.oldVersion)?, v(k.newVersion)?))
}
