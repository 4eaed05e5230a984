//! GlobalPlatform through PKCS#11, the way a card-management application uses the module:
//! master key sets generated and imported from a ceremony's components by vendor mechanisms,
//! found by their vendor attributes, check values of set keys and of diversified card keys,
//! and a whole personalisation of the simulated card (INITIALIZE UPDATE, a channel opened by
//! `C_DeriveKey`, commands and answers through `C_Encrypt`/`C_Decrypt`, PUT KEY by
//! `C_WrapKey`, the proof with the new keys) — embedded and through a real server. And what
//! is refused: every well-known value at import, a mistyped component, a tampered answer,
//! the old keys after the change, a master key used by any other mechanism.

use std::ptr::null_mut;
use std::sync::Mutex;

use cryptoki_sys::*;
use ferrohsm_gp::apdu::{initialize_update, Command, Response};
use ferrohsm_gp::block::{Key, KeyType};
use ferrohsm_gp::card::{SimCard, INS_ECHO};
use ferrohsm_gp::channel::KeySet;
use ferrohsm_gp::diversify::KeyRole;
use ferrohsm_gp::kcv::{kcv, KcvMethod};
use ferrohsm_pkcs11::entry::*;
use ferrohsm_pkcs11::gp_mech::*;

mod harness;

/// The module (this test binary's own copy) is one per process: tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

both_ways!(
    a_card_is_personalised_through_pkcs11,
    an_scp02_card_is_personalised_through_pkcs11
);

const KDD: [u8; 10] = [0x00, 0x00, 0x50, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b
}

/// A mechanism with a parameter struct (kept alive by the caller).
fn mech_with<T>(m: CK_MECHANISM_TYPE, p: &mut T) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: p as *mut T as *mut _,
        ulParameterLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// A set's description (its name and population kept alive by the caller).
fn set_params(
    kind: KeyType,
    version: u8,
    name: &mut [u8],
    pop: &mut [u8],
) -> CK_FERROHSM_GP_SET_PARAMS {
    CK_FERROHSM_GP_SET_PARAMS {
        keyType: if kind == KeyType::Des3 {
            CKK_DES2
        } else {
            CKK_AES
        },
        ulValueLen: kind.key_len() as CK_ULONG,
        version: version.into(),
        pSet: name.as_mut_ptr(),
        ulSetLen: name.len() as CK_ULONG,
        pPopulation: pop.as_mut_ptr(),
        ulPopulationLen: pop.len() as CK_ULONG,
    }
}

/// Two custodians' components of each key of `keys`, each with its check value: (role,
/// value, kcv) owned, for [`import`] to point at.
fn components(keys: &KeySet) -> Vec<(CK_ULONG, Vec<u8>, Vec<u8>)> {
    let kind = keys.enc.kind();
    let m = KcvMethod::gp_default(kind);
    let mut out = vec![];
    for (role, code) in
        KeyRole::ALL
            .into_iter()
            .zip([CK_FERROHSM_GP_ENC, CK_FERROHSM_GP_MAC, CK_FERROHSM_GP_DEK])
    {
        let a = random(kind.key_len());
        let b: Vec<u8> = a
            .iter()
            .zip(keys.get(role).expose())
            .map(|(x, y)| x ^ y)
            .collect();
        for c in [a, b] {
            let check = kcv(&Key::new(kind, &c).unwrap(), m).unwrap();
            out.push((code, c, check));
        }
    }
    out
}

/// `C_GenerateKey` with the import mechanism over `comps` (and no whole-key values).
///
/// # Safety
/// `h` a logged-in read/write session.
unsafe fn import(
    h: CK_SESSION_HANDLE,
    name: &str,
    kind: KeyType,
    comps: &mut [(CK_ULONG, Vec<u8>, Vec<u8>)],
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let (mut n, mut pop) = (name.as_bytes().to_vec(), b"vendor batch".to_vec());
    let mut list: Vec<CK_FERROHSM_GP_COMPONENT> = comps
        .iter_mut()
        .map(|(role, v, k)| CK_FERROHSM_GP_COMPONENT {
            role: *role,
            pValue: v.as_mut_ptr(),
            ulValueLen: v.len() as CK_ULONG,
            pKcv: k.as_mut_ptr(),
            ulKcvLen: k.len() as CK_ULONG,
        })
        .collect();
    let mut p = CK_FERROHSM_GP_IMPORT_PARAMS {
        set: set_params(kind, 1, &mut n, &mut pop),
        pComponents: list.as_mut_ptr(),
        ulComponentCount: list.len() as CK_ULONG,
    };
    let mut m = mech_with(CKM_FERROHSM_GP_SET_IMPORT, &mut p);
    let mut out = 0;
    // SAFETY: every pointer is to a live local.
    match unsafe { C_GenerateKey(h, &mut m, null_mut(), 0, &mut out) } {
        CKR_OK => Ok(out),
        rv => Err(rv),
    }
}

/// The KCV of `key`'s role in its set, or of the card key diversified with `div` and KDD.
///
/// # Safety
/// `h` a logged-in session.
unsafe fn check_value(
    h: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    method: CK_ULONG,
    div: CK_ULONG,
    kdd: &mut [u8],
) -> Result<Vec<u8>, CK_RV> {
    let mut p = CK_FERROHSM_GP_KCV_PARAMS {
        kcvMethod: method,
        diversification: div,
        pKdd: if kdd.is_empty() {
            null_mut()
        } else {
            kdd.as_mut_ptr()
        },
        ulKddLen: kdd.len() as CK_ULONG,
    };
    let mut m = mech_with(CKM_FERROHSM_GP_KCV, &mut p);
    // SAFETY (whole function): live locals.
    unsafe {
        match C_SignInit(h, &mut m, key) {
            CKR_OK => {}
            rv => return Err(rv),
        }
        // The two-call convention: the length, then the value.
        let mut len = 0;
        match C_Sign(h, null_mut(), 0, null_mut(), &mut len) {
            CKR_OK => {}
            rv => return Err(rv),
        }
        let mut out = vec![0u8; len as usize];
        match C_Sign(h, null_mut(), 0, out.as_mut_ptr(), &mut len) {
            CKR_OK => Ok(out[..len as usize].to_vec()),
            rv => Err(rv),
        }
    }
}

/// Opens a channel on `card` with `base`'s set (diversified by `div`) at `level`: the channel
/// handle once the card accepted EXTERNAL AUTHENTICATE.
///
/// # Safety
/// `h` a logged-in session.
unsafe fn open(
    h: CK_SESSION_HANDLE,
    card: &mut SimCard,
    base: CK_OBJECT_HANDLE,
    div: CK_ULONG,
    version: u8,
    level: CK_ULONG,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let host: [u8; 8] = random(8).try_into().unwrap();
    let iu =
        Response::parse(&card.transmit(&initialize_update(version, &host).to_bytes().unwrap()))
            .unwrap();
    let mut answer = iu.expect_ok("INITIALIZE UPDATE").unwrap();
    let mut ea = vec![0u8; 32];
    let mut ea_len = ea.len() as CK_ULONG;
    let mut p = CK_FERROHSM_GP_OPEN_PARAMS {
        diversification: div,
        securityLevel: level,
        scp02Option: 0x55, // the simulated SCP02 card's option (SCP03 ignores it)
        hostChallenge: host,
        pCardAnswer: answer.as_mut_ptr(),
        ulCardAnswerLen: answer.len() as CK_ULONG,
        pExternalAuthenticate: ea.as_mut_ptr(),
        pulExternalAuthenticateLen: &mut ea_len,
    };
    let mut m = mech_with(CKM_FERROHSM_GP_CHANNEL_OPEN, &mut p);
    let mut ch = 0;
    // SAFETY: live locals.
    match unsafe { C_DeriveKey(h, &mut m, base, null_mut(), 0, &mut ch) } {
        CKR_OK => {}
        rv => return Err(rv),
    }
    ea.truncate(ea_len as usize);
    let r = Response::parse(&card.transmit(&ea)).unwrap();
    assert_eq!(r.sw, 0x9000, "EXTERNAL AUTHENTICATE");
    Ok(ch)
}

/// One single-part `C_Encrypt` (wrap) or `C_Decrypt` (unwrap) on channel `ch`, with the
/// length query first.
///
/// # Safety
/// `h` a logged-in session.
unsafe fn over(
    h: CK_SESSION_HANDLE,
    ch: CK_OBJECT_HANDLE,
    wrap: bool,
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    let mut d = data.to_vec();
    // SAFETY (whole function): live locals.
    unsafe {
        let rv = if wrap {
            C_EncryptInit(h, &mut mech(CKM_FERROHSM_GP_CHANNEL_WRAP), ch)
        } else {
            C_DecryptInit(h, &mut mech(CKM_FERROHSM_GP_CHANNEL_UNWRAP), ch)
        };
        if rv != CKR_OK {
            return Err(rv);
        }
        let call = |out: *mut u8, len: &mut CK_ULONG, d: &mut Vec<u8>| {
            if wrap {
                C_Encrypt(h, d.as_mut_ptr(), d.len() as CK_ULONG, out, len)
            } else {
                C_Decrypt(h, d.as_mut_ptr(), d.len() as CK_ULONG, out, len)
            }
        };
        let mut len = 0;
        match call(null_mut(), &mut len, &mut d) {
            CKR_OK => {}
            rv => return Err(rv),
        }
        let mut out = vec![0u8; len as usize];
        match call(out.as_mut_ptr(), &mut len, &mut d) {
            CKR_OK => Ok(out[..len as usize].to_vec()),
            rv => Err(rv),
        }
    }
}

/// The handles a search template finds.
///
/// # Safety
/// `h` a logged-in session; `t` valid attributes.
unsafe fn find(h: CK_SESSION_HANDLE, t: &mut [CK_ATTRIBUTE]) -> Vec<CK_OBJECT_HANDLE> {
    // SAFETY (whole function): live locals.
    unsafe {
        assert_eq!(
            C_FindObjectsInit(h, t.as_mut_ptr(), t.len() as CK_ULONG),
            CKR_OK
        );
        let mut found = [0; 16];
        let mut n = 0;
        assert_eq!(C_FindObjects(h, found.as_mut_ptr(), 16, &mut n), CKR_OK);
        assert_eq!(C_FindObjectsFinal(h), CKR_OK);
        found[..n as usize].to_vec()
    }
}

/// One attribute's value.
///
/// # Safety
/// `h` a logged-in session.
unsafe fn attr(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> Result<Vec<u8>, CK_RV> {
    let mut v = vec![0u8; 64];
    let mut a = CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_mut_ptr() as *mut _,
        ulValueLen: 64,
    };
    // SAFETY: a live 64-byte buffer.
    match unsafe { C_GetAttributeValue(h, o, &mut a, 1) } {
        CKR_OK => Ok(v[..a.ulValueLen as usize].to_vec()),
        rv => Err(rv),
    }
}

fn a_card_is_personalised_through_pkcs11() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    harness::password_hsm(&data, true);
    let _server = harness::reach(&data);
    let kind = KeyType::Aes128;
    // The card as it leaves its maker: random transport keys (version 1), entered in the HSM
    // from two custodians' components.
    let transport = KeySet::new(
        1,
        Key::new(kind, &random(16)).unwrap(),
        Key::new(kind, &random(16)).unwrap(),
        Key::new(kind, &random(16)).unwrap(),
    )
    .unwrap();
    let mut card = SimCard::new(3, 0x70, KDD, transport.clone()).unwrap();
    // SAFETY (whole test): every pointer passed is to a live local of the stated length, as
    // the PKCS#11 contract asks of callers.
    unsafe {
        let (slot, h) = harness::c_officer_session("issuer");

        // The mechanisms are listed.
        let mut info: CK_MECHANISM_INFO = std::mem::zeroed();
        assert_eq!(
            C_GetMechanismInfo(slot, CKM_FERROHSM_GP_CHANNEL_OPEN, &mut info),
            CKR_OK
        );
        assert_eq!(info.flags & CKF_DERIVE, CKF_DERIVE);

        // The issuer's master set, generated inside.
        let (mut name, mut pop) = (b"issuer".to_vec(), b"payment cards 2026".to_vec());
        let mut p = set_params(kind, 1, &mut name, &mut pop);
        let mut m = mech_with(CKM_FERROHSM_GP_SET_GENERATE, &mut p);
        let mut issuer = 0;
        assert_eq!(C_GenerateKey(h, &mut m, null_mut(), 0, &mut issuer), CKR_OK);
        assert_eq!(attr(h, issuer, CKA_FERROHSM_GP_SET).unwrap(), b"issuer");
        assert_eq!(
            attr(h, issuer, CKA_FERROHSM_GP_ROLE).unwrap(),
            ulong(CK_FERROHSM_GP_ENC)
        );
        assert_eq!(attr(h, issuer, CKA_FERROHSM_GP_VERSION).unwrap(), ulong(1));
        assert_eq!(
            attr(h, issuer, CKA_FERROHSM_GP_POPULATION).unwrap(),
            b"payment cards 2026"
        );
        assert_eq!(attr(h, issuer, CKA_EXTRACTABLE).unwrap(), vec![0]);
        assert_eq!(attr(h, issuer, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
        // Its three keys are found by the set's name.
        let mut set_name = b"issuer".to_vec();
        let mut t = [CK_ATTRIBUTE {
            type_: CKA_FERROHSM_GP_SET,
            pValue: set_name.as_mut_ptr() as *mut _,
            ulValueLen: set_name.len() as CK_ULONG,
        }];
        assert_eq!(find(h, &mut t).len(), 3);
        // The same name again: refused.
        let mut again = 0;
        assert_eq!(
            C_GenerateKey(h, &mut m, null_mut(), 0, &mut again),
            CKR_MECHANISM_PARAM_INVALID
        );
        // A template asking for anything of its own: refused.
        let mut yes = [1u8];
        let mut extractable = [CK_ATTRIBUTE {
            type_: CKA_EXTRACTABLE,
            pValue: yes.as_mut_ptr() as *mut _,
            ulValueLen: 1,
        }];
        assert_eq!(
            C_GenerateKey(h, &mut m, extractable.as_mut_ptr(), 1, &mut again),
            CKR_TEMPLATE_INCONSISTENT
        );

        // A master key serves no other mechanism: an ECB encryption of chosen data would be
        // VISA2 itself, and wrapping it would take it out.
        assert_eq!(
            C_EncryptInit(h, &mut mech(CKM_AES_ECB), issuer),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );

        // The transport keys, from a ceremony: a mistyped component is refused and nothing
        // is stored; every well-known value is refused whatever components make it up.
        let mut comps = components(&transport);
        let mut typo = comps.clone();
        typo[2].1[0] ^= 0x01;
        assert_eq!(
            import(h, "transport", kind, &mut typo),
            Err(CKR_MECHANISM_PARAM_INVALID)
        );
        let mut transport_name = b"transport".to_vec();
        let mut t = [CK_ATTRIBUTE {
            type_: CKA_FERROHSM_GP_SET,
            pValue: transport_name.as_mut_ptr() as *mut _,
            ulValueLen: transport_name.len() as CK_ULONG,
        }];
        assert!(find(h, &mut t).is_empty());
        for (spec, value) in ferrohsm_core::weak_keys::samples() {
            let k = match spec {
                ferrohsm_core::mechanism::KeySpec::Des3 => KeyType::Des3,
                _ => KeyType::aes(value.len()).unwrap(),
            };
            let good = |_| Key::new(k, &random(k.key_len())).unwrap();
            let weak = KeySet::new(1, good(0), Key::new(k, &value).unwrap(), good(2)).unwrap();
            assert_eq!(
                import(h, "weak", k, &mut components(&weak)),
                Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
                "{spec:?} {value:02x?}"
            );
        }
        let transport_key = import(h, "transport", kind, &mut comps).unwrap();
        // Its check values are the card's keys' own.
        for (method, code) in [
            (KcvMethod::AesGp, CK_FERROHSM_GP_KCV_AES_GP),
            (KcvMethod::AesZeros, CK_FERROHSM_GP_KCV_AES_ZEROS),
            (KcvMethod::AesCmac, CK_FERROHSM_GP_KCV_AES_CMAC),
        ] {
            assert_eq!(
                check_value(h, transport_key, code, CK_FERROHSM_GP_DIV_NONE, &mut []).unwrap(),
                kcv(&transport.enc, method).unwrap()
            );
        }
        // A check value begun and cancelled leaves room for the next.
        let mut kp = CK_FERROHSM_GP_KCV_PARAMS {
            kcvMethod: CK_FERROHSM_GP_KCV_AES_GP,
            diversification: CK_FERROHSM_GP_DIV_NONE,
            pKdd: null_mut(),
            ulKddLen: 0,
        };
        let mut km = mech_with(CKM_FERROHSM_GP_KCV, &mut kp);
        assert_eq!(C_SignInit(h, &mut km, transport_key), CKR_OK);
        assert_eq!(C_SignInit(h, &mut km, transport_key), CKR_OPERATION_ACTIVE);
        assert_eq!(C_SessionCancel(h, CKF_SIGN), CKR_OK);
        assert_eq!(
            check_value(h, transport_key, CK_FERROHSM_GP_KCV_AES_GP, 0, &mut []).unwrap(),
            kcv(&transport.enc, KcvMethod::AesGp).unwrap()
        );
        // A 3DES method for an AES key: refused.
        assert_eq!(
            check_value(h, transport_key, CK_FERROHSM_GP_KCV_DES3_ZEROS, 0, &mut []),
            Err(CKR_MECHANISM_PARAM_INVALID)
        );

        // Personalisation: a channel with the transport keys (every protection on).
        let ch = open(
            h,
            &mut card,
            transport_key,
            CK_FERROHSM_GP_DIV_NONE,
            1,
            0x33,
        )
        .unwrap();
        assert_eq!(
            attr(h, ch, CKA_KEY_TYPE).unwrap(),
            ulong(CKK_FERROHSM_GP_CHANNEL)
        );
        // A command and its answer: wrapped, sent, checked and opened.
        let echo = Command::new(0x80, INS_ECHO, 0, 0, b"hello card".to_vec())
            .to_bytes()
            .unwrap();
        let wrapped = over(h, ch, true, &echo).unwrap();
        assert_ne!(wrapped, echo);
        let answer = card.transmit(&wrapped);
        // An answer changed on the line is refused; the true one opens.
        let mut forged = answer.clone();
        forged[0] ^= 0x01;
        assert_eq!(over(h, ch, false, &forged), Err(CKR_ENCRYPTED_DATA_INVALID));
        let echo2 = Command::new(0x80, INS_ECHO, 0, 0, b"again".to_vec())
            .to_bytes()
            .unwrap();
        let wrapped = over(h, ch, true, &echo2).unwrap();
        let answer = card.transmit(&wrapped);
        let plain = Response::parse(&over(h, ch, false, &answer).unwrap()).unwrap();
        assert_eq!(
            (plain.sw, plain.data.as_slice()),
            (0x9000, b"again".as_slice())
        );

        // PUT KEY: the issuer keys diversified for this card (KDF3), as version 2 in place of
        // the transport keys; the length first, then the command.
        let plain = put_key(h, &mut card, ch, issuer, CK_FERROHSM_GP_DIV_KDF3);
        assert_eq!(plain.sw, 0x9000, "PUT KEY");
        assert_eq!(C_DestroyObject(h, ch), CKR_OK);
        assert_eq!(
            C_EncryptInit(h, &mut mech(CKM_FERROHSM_GP_CHANNEL_WRAP), ch),
            CKR_KEY_HANDLE_INVALID
        );
        assert_eq!(card.key_versions(), vec![2]);

        // What the card holds now is what the HSM says the card's keys are: the check values
        // of the diversified keys match the card's keys (read from the simulator's memory),
        // and the card's answer to PUT KEY carried them too.
        let st = card.state();
        let held: Vec<Key> = st.sets[0]
            .keys
            .iter()
            .map(|k| Key::new(kind, &hex::decode(k).unwrap()).unwrap())
            .collect();
        let mut kdd = KDD.to_vec();
        let card_enc = check_value(
            h,
            issuer,
            CK_FERROHSM_GP_KCV_AES_GP,
            CK_FERROHSM_GP_DIV_KDF3,
            &mut kdd,
        )
        .unwrap();
        assert_eq!(card_enc, kcv(&held[0], KcvMethod::AesGp).unwrap());
        assert_eq!(&plain.data[1..4], card_enc.as_slice());
        // A diversified check value needs the card's ten bytes.
        assert_eq!(
            check_value(
                h,
                issuer,
                CK_FERROHSM_GP_KCV_AES_GP,
                CK_FERROHSM_GP_DIV_KDF3,
                &mut []
            ),
            Err(CKR_MECHANISM_PARAM_INVALID)
        );

        // The proof: a new channel with the card's new keys; the transport keys no longer open
        // one (the card's cryptogram does not verify).
        let proof = open(h, &mut card, issuer, CK_FERROHSM_GP_DIV_KDF3, 2, 0x01).unwrap();
        assert_eq!(C_DestroyObject(h, proof), CKR_OK);
        assert_eq!(
            open(
                h,
                &mut card,
                transport_key,
                CK_FERROHSM_GP_DIV_NONE,
                0,
                0x01
            ),
            Err(CKR_FUNCTION_REJECTED)
        );

        // Rotation: the next version, generated; its ENC key handed back.
        let mut rot = b"issuer".to_vec();
        let mut m = CK_MECHANISM {
            mechanism: CKM_FERROHSM_GP_SET_ROTATE,
            pParameter: rot.as_mut_ptr() as *mut _,
            ulParameterLen: rot.len() as CK_ULONG,
        };
        let mut v2 = 0;
        assert_eq!(C_GenerateKey(h, &mut m, null_mut(), 0, &mut v2), CKR_OK);
        assert_eq!(attr(h, v2, CKA_FERROHSM_GP_VERSION).unwrap(), ulong(2));
        assert_eq!(attr(h, v2, CKA_FERROHSM_GP_SET).unwrap(), b"issuer");

        // A channel is its session's: another session cannot use it.
        let ch = open(h, &mut card, issuer, CK_FERROHSM_GP_DIV_KDF3, 2, 0x01).unwrap();
        let mut h2 = 0;
        assert_eq!(
            C_OpenSession(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut h2
            ),
            CKR_OK
        );
        assert_eq!(
            C_EncryptInit(h2, &mut mech(CKM_FERROHSM_GP_CHANNEL_WRAP), ch),
            CKR_KEY_HANDLE_INVALID
        );
        assert_eq!(C_CloseSession(h2), CKR_OK);
        assert_eq!(C_CloseSession(h), CKR_OK);
        assert_eq!(C_Finalize(null_mut()), CKR_OK);
    }
}

/// PUT KEY over channel `ch` of the keys of `key`'s set diversified for the card by `div`, as
/// version 2 in place of 1 (the length first, then the command), sent to `card`; its answer,
/// checked and opened.
///
/// # Safety
/// `h` a logged-in session; `ch` its channel.
unsafe fn put_key(
    h: CK_SESSION_HANDLE,
    card: &mut SimCard,
    ch: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    div: CK_ULONG,
) -> Response {
    let mut pk = CK_FERROHSM_GP_PUT_KEY_PARAMS {
        diversification: div,
        oldVersion: 1,
        newVersion: 2,
    };
    let mut m = mech_with(CKM_FERROHSM_GP_PUT_KEY, &mut pk);
    let mut len = 0;
    // SAFETY (whole function): live locals.
    unsafe {
        assert_eq!(C_WrapKey(h, &mut m, ch, key, null_mut(), &mut len), CKR_OK);
        let mut put = vec![0u8; len as usize];
        assert_eq!(
            C_WrapKey(h, &mut m, ch, key, put.as_mut_ptr(), &mut len),
            CKR_OK
        );
        put.truncate(len as usize);
        let answer = card.transmit(&put);
        Response::parse(&over(h, ch, false, &answer).unwrap()).unwrap()
    }
}

/// An SCP02 card (two-key 3DES, option 55) at C-MAC, C-DECRYPTION and R-MAC: transport keys
/// from a ceremony, issuer keys by VISA2, and the proof.
fn an_scp02_card_is_personalised_through_pkcs11() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    harness::password_hsm(&data, true);
    let _server = harness::reach(&data);
    let kind = KeyType::Des3;
    let key = || Key::new(kind, &random(16)).unwrap();
    let transport = KeySet::new(1, key(), key(), key()).unwrap();
    let mut card = SimCard::new(2, 0x55, KDD, transport.clone()).unwrap();
    // SAFETY (whole test): every pointer passed is to a live local of the stated length.
    unsafe {
        let (_, h) = harness::c_officer_session("scp02");
        let (mut name, mut pop) = (b"issuer".to_vec(), b"transit cards".to_vec());
        let mut p = set_params(kind, 1, &mut name, &mut pop);
        let mut m = mech_with(CKM_FERROHSM_GP_SET_GENERATE, &mut p);
        let mut issuer = 0;
        assert_eq!(C_GenerateKey(h, &mut m, null_mut(), 0, &mut issuer), CKR_OK);
        assert_eq!(attr(h, issuer, CKA_KEY_TYPE).unwrap(), ulong(CKK_DES2));
        let transport_key = import(h, "transport", kind, &mut components(&transport)).unwrap();
        assert_eq!(
            check_value(h, transport_key, CK_FERROHSM_GP_KCV_DES3_ZEROS, 0, &mut []).unwrap(),
            kcv(&transport.enc, KcvMethod::Des3Zeros).unwrap()
        );
        let ch = open(
            h,
            &mut card,
            transport_key,
            CK_FERROHSM_GP_DIV_NONE,
            1,
            0x13,
        )
        .unwrap();
        let plain = put_key(h, &mut card, ch, issuer, CK_FERROHSM_GP_DIV_VISA2);
        assert_eq!(plain.sw, 0x9000, "PUT KEY");
        assert_eq!(C_DestroyObject(h, ch), CKR_OK);
        let mut kdd = KDD.to_vec();
        let enc = check_value(
            h,
            issuer,
            CK_FERROHSM_GP_KCV_DES3_ZEROS,
            CK_FERROHSM_GP_DIV_VISA2,
            &mut kdd,
        )
        .unwrap();
        assert_eq!(
            &plain.data[1..4],
            enc.as_slice(),
            "the card checked the HSM's keys"
        );
        let proof = open(h, &mut card, issuer, CK_FERROHSM_GP_DIV_VISA2, 2, 0x13).unwrap();
        assert_eq!(C_DestroyObject(h, proof), CKR_OK);
        // EMV CPS 1.1 keys are other keys: the card refuses them.
        assert_eq!(
            open(h, &mut card, issuer, CK_FERROHSM_GP_DIV_EMV_CPS11, 2, 0x13),
            Err(CKR_FUNCTION_REJECTED)
        );
        assert_eq!(C_CloseSession(h), CKR_OK);
        assert_eq!(C_Finalize(null_mut()), CKR_OK);
    }
}

/// The README's C declarations of the parameter structures are the module's: compiled with
/// the system's C compiler, each structure's size and each field's offset match.
#[test]
fn the_readme_declarations_are_the_modules() {
    use std::mem::{offset_of, size_of};
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```c\n#define CKM_FERROHSM_GP_KCV ")
        .expect("the README declares the parameter structures");
    let block = &readme[start + 5..];
    let block = &block[..block.find("```").unwrap()];
    let fields: &[(&str, &str, usize)] = &[
        (
            "CK_FERROHSM_GP_KCV_PARAMS",
            "kcvMethod",
            offset_of!(CK_FERROHSM_GP_KCV_PARAMS, kcvMethod),
        ),
        (
            "CK_FERROHSM_GP_KCV_PARAMS",
            "diversification",
            offset_of!(CK_FERROHSM_GP_KCV_PARAMS, diversification),
        ),
        (
            "CK_FERROHSM_GP_KCV_PARAMS",
            "pKdd",
            offset_of!(CK_FERROHSM_GP_KCV_PARAMS, pKdd),
        ),
        (
            "CK_FERROHSM_GP_KCV_PARAMS",
            "ulKddLen",
            offset_of!(CK_FERROHSM_GP_KCV_PARAMS, ulKddLen),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            "keyType",
            offset_of!(CK_FERROHSM_GP_SET_PARAMS, keyType),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            "ulValueLen",
            offset_of!(CK_FERROHSM_GP_SET_PARAMS, ulValueLen),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            "version",
            offset_of!(CK_FERROHSM_GP_SET_PARAMS, version),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            "pSet",
            offset_of!(CK_FERROHSM_GP_SET_PARAMS, pSet),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            "ulSetLen",
            offset_of!(CK_FERROHSM_GP_SET_PARAMS, ulSetLen),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            "pPopulation",
            offset_of!(CK_FERROHSM_GP_SET_PARAMS, pPopulation),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            "ulPopulationLen",
            offset_of!(CK_FERROHSM_GP_SET_PARAMS, ulPopulationLen),
        ),
        (
            "CK_FERROHSM_GP_COMPONENT",
            "role",
            offset_of!(CK_FERROHSM_GP_COMPONENT, role),
        ),
        (
            "CK_FERROHSM_GP_COMPONENT",
            "pValue",
            offset_of!(CK_FERROHSM_GP_COMPONENT, pValue),
        ),
        (
            "CK_FERROHSM_GP_COMPONENT",
            "ulValueLen",
            offset_of!(CK_FERROHSM_GP_COMPONENT, ulValueLen),
        ),
        (
            "CK_FERROHSM_GP_COMPONENT",
            "pKcv",
            offset_of!(CK_FERROHSM_GP_COMPONENT, pKcv),
        ),
        (
            "CK_FERROHSM_GP_COMPONENT",
            "ulKcvLen",
            offset_of!(CK_FERROHSM_GP_COMPONENT, ulKcvLen),
        ),
        (
            "CK_FERROHSM_GP_IMPORT_PARAMS",
            "set",
            offset_of!(CK_FERROHSM_GP_IMPORT_PARAMS, set),
        ),
        (
            "CK_FERROHSM_GP_IMPORT_PARAMS",
            "pComponents",
            offset_of!(CK_FERROHSM_GP_IMPORT_PARAMS, pComponents),
        ),
        (
            "CK_FERROHSM_GP_IMPORT_PARAMS",
            "ulComponentCount",
            offset_of!(CK_FERROHSM_GP_IMPORT_PARAMS, ulComponentCount),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "diversification",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, diversification),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "securityLevel",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, securityLevel),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "scp02Option",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, scp02Option),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "hostChallenge",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, hostChallenge),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "pCardAnswer",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, pCardAnswer),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "ulCardAnswerLen",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, ulCardAnswerLen),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "pExternalAuthenticate",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, pExternalAuthenticate),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            "pulExternalAuthenticateLen",
            offset_of!(CK_FERROHSM_GP_OPEN_PARAMS, pulExternalAuthenticateLen),
        ),
        (
            "CK_FERROHSM_GP_PUT_KEY_PARAMS",
            "diversification",
            offset_of!(CK_FERROHSM_GP_PUT_KEY_PARAMS, diversification),
        ),
        (
            "CK_FERROHSM_GP_PUT_KEY_PARAMS",
            "oldVersion",
            offset_of!(CK_FERROHSM_GP_PUT_KEY_PARAMS, oldVersion),
        ),
        (
            "CK_FERROHSM_GP_PUT_KEY_PARAMS",
            "newVersion",
            offset_of!(CK_FERROHSM_GP_PUT_KEY_PARAMS, newVersion),
        ),
    ];
    let sizes: &[(&str, usize)] = &[
        (
            "CK_FERROHSM_GP_KCV_PARAMS",
            size_of::<CK_FERROHSM_GP_KCV_PARAMS>(),
        ),
        (
            "CK_FERROHSM_GP_SET_PARAMS",
            size_of::<CK_FERROHSM_GP_SET_PARAMS>(),
        ),
        (
            "CK_FERROHSM_GP_COMPONENT",
            size_of::<CK_FERROHSM_GP_COMPONENT>(),
        ),
        (
            "CK_FERROHSM_GP_IMPORT_PARAMS",
            size_of::<CK_FERROHSM_GP_IMPORT_PARAMS>(),
        ),
        (
            "CK_FERROHSM_GP_OPEN_PARAMS",
            size_of::<CK_FERROHSM_GP_OPEN_PARAMS>(),
        ),
        (
            "CK_FERROHSM_GP_PUT_KEY_PARAMS",
            size_of::<CK_FERROHSM_GP_PUT_KEY_PARAMS>(),
        ),
    ];
    // And every code the README defines is the module's.
    let codes: &[(&str, CK_ULONG)] = &[
        ("CKM_FERROHSM_GP_KCV", CKM_FERROHSM_GP_KCV),
        ("CKM_FERROHSM_GP_SET_GENERATE", CKM_FERROHSM_GP_SET_GENERATE),
        ("CKM_FERROHSM_GP_SET_IMPORT", CKM_FERROHSM_GP_SET_IMPORT),
        ("CKM_FERROHSM_GP_SET_ROTATE", CKM_FERROHSM_GP_SET_ROTATE),
        ("CKM_FERROHSM_GP_CHANNEL_OPEN", CKM_FERROHSM_GP_CHANNEL_OPEN),
        ("CKM_FERROHSM_GP_CHANNEL_WRAP", CKM_FERROHSM_GP_CHANNEL_WRAP),
        (
            "CKM_FERROHSM_GP_CHANNEL_UNWRAP",
            CKM_FERROHSM_GP_CHANNEL_UNWRAP,
        ),
        ("CKM_FERROHSM_GP_PUT_KEY", CKM_FERROHSM_GP_PUT_KEY),
        ("CKA_FERROHSM_GP_SET", CKA_FERROHSM_GP_SET),
        ("CKA_FERROHSM_GP_VERSION", CKA_FERROHSM_GP_VERSION),
        ("CKA_FERROHSM_GP_ROLE", CKA_FERROHSM_GP_ROLE),
        ("CKA_FERROHSM_GP_POPULATION", CKA_FERROHSM_GP_POPULATION),
        ("CKA_FERROHSM_GP_RETIRED", CKA_FERROHSM_GP_RETIRED),
        ("CKK_FERROHSM_GP_CHANNEL", CKK_FERROHSM_GP_CHANNEL),
        ("CK_FERROHSM_GP_ENC", CK_FERROHSM_GP_ENC),
        ("CK_FERROHSM_GP_MAC", CK_FERROHSM_GP_MAC),
        ("CK_FERROHSM_GP_DEK", CK_FERROHSM_GP_DEK),
        ("CK_FERROHSM_GP_DIV_NONE", CK_FERROHSM_GP_DIV_NONE),
        ("CK_FERROHSM_GP_DIV_VISA2", CK_FERROHSM_GP_DIV_VISA2),
        ("CK_FERROHSM_GP_DIV_EMV_CPS11", CK_FERROHSM_GP_DIV_EMV_CPS11),
        ("CK_FERROHSM_GP_DIV_KDF3", CK_FERROHSM_GP_DIV_KDF3),
        (
            "CK_FERROHSM_GP_KCV_DES3_ZEROS",
            CK_FERROHSM_GP_KCV_DES3_ZEROS,
        ),
        ("CK_FERROHSM_GP_KCV_AES_GP", CK_FERROHSM_GP_KCV_AES_GP),
        ("CK_FERROHSM_GP_KCV_AES_ZEROS", CK_FERROHSM_GP_KCV_AES_ZEROS),
        ("CK_FERROHSM_GP_KCV_AES_CMAC", CK_FERROHSM_GP_KCV_AES_CMAC),
    ];
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n\
         typedef unsigned long CK_ULONG; typedef CK_ULONG *CK_ULONG_PTR;\n\
         typedef unsigned char CK_BYTE; typedef CK_BYTE *CK_BYTE_PTR;\n\
         typedef CK_BYTE CK_UTF8CHAR; typedef CK_UTF8CHAR *CK_UTF8CHAR_PTR;\n\
         typedef CK_ULONG CK_KEY_TYPE;\n",
    );
    c.push_str(block);
    c.push_str("int main(void) {\n");
    for (s, _) in sizes {
        c.push_str(&format!("printf(\"{s} %zu\\n\", sizeof({s}));\n"));
    }
    for (s, f, _) in fields {
        c.push_str(&format!(
            "printf(\"{s}.{f} %zu\\n\", offsetof({s}, {f}));\n"
        ));
    }
    for (name, _) in codes {
        c.push_str(&format!(
            "printf(\"{name} %lu\\n\", (unsigned long)({name}));\n"
        ));
    }
    c.push_str("return 0; }\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gp.c"), c).unwrap();
    let exe = dir.path().join("gp");
    let cc = std::process::Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(dir.path().join("gp.c"))
        .output()
        .expect("a C compiler (cc) is needed to check the README's declarations");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = String::from_utf8(std::process::Command::new(&exe).output().unwrap().stdout).unwrap();
    let mut want = String::new();
    for (s, n) in sizes {
        want.push_str(&format!("{s} {n}\n"));
    }
    for (s, f, o) in fields {
        want.push_str(&format!("{s}.{f} {o}\n"));
    }
    for (name, v) in codes {
        want.push_str(&format!("{name} {v}\n"));
    }
    assert_eq!(out, want);
}
