//! GlobalPlatform master key sets in the engine: generated or imported by ceremony, never
//! leaving; well-known values refused; card keys diversified inside; a card personalised
//! over a secure channel whose keys never leave, against the simulated card; every step
//! audited; role separation.

mod common;

use common::{audit_records, password_hsm};
use ferrohsm_core::hsm::{GpComponent, GpKeysRef, GpNewSet};
use ferrohsm_core::mechanism::{Mechanism, Params};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{Credential, Hsm, HsmError, Role, Session};
use ferrohsm_gp::apdu::{initialize_update, Command, Response};
use ferrohsm_gp::block::{Key, KeyType};
use ferrohsm_gp::card::{SimCard, INS_ECHO};
use ferrohsm_gp::channel::KeySet;
use ferrohsm_gp::diversify::{diversify, KeyRole, Method};
use ferrohsm_gp::kcv::{kcv, KcvMethod};

fn co(h: &mut Hsm) -> Session {
    h.login(
        Role::CryptoOfficer,
        Some("tok"),
        Credential::Secret(Pin::password("user-pin-1234").unwrap()),
    )
    .unwrap()
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b
}

/// Two components (a custodian's each) of `value`, with their check values.
fn components(role: &str, kind: KeyType, value: &[u8]) -> Vec<GpComponent> {
    let a = random(value.len());
    let b: Vec<u8> = a.iter().zip(value).map(|(x, y)| x ^ y).collect();
    [a, b]
        .iter()
        .map(|c| GpComponent {
            role: role.into(),
            value: hex::encode(c),
            kcv: hex::encode(
                kcv(&Key::new(kind, c).unwrap(), KcvMethod::gp_default(kind)).unwrap(),
            ),
        })
        .collect()
}

fn set_components(kind: KeyType, set: &KeySet) -> Vec<GpComponent> {
    KeyRole::ALL
        .into_iter()
        .flat_map(|r| components(r.name(), kind, set.get(r).expose()))
        .collect()
}

fn random_set(kind: KeyType, version: u8) -> KeySet {
    let k = || loop {
        let v = random(kind.key_len());
        if ferrohsm_core::weak_keys::well_known(ferrohsm_core::mechanism::KeySpec::Des3, &v)
            .is_none()
        {
            return Key::new(kind, &v).unwrap();
        }
    };
    KeySet::new(version, k(), k(), k()).unwrap()
}

fn keys(set: &str, version: Option<u8>, method: Option<&str>) -> GpKeysRef {
    GpKeysRef {
        set: set.into(),
        version,
        method: method.map(str::to_owned),
    }
}

#[test]
fn a_generated_set_is_listed_by_check_values_and_never_leaves() {
    let (tmp, mut h) = password_hsm();
    let s = co(&mut h);
    let made = h
        .gp_generate(
            &s,
            &GpNewSet::new("issuer", "aes-128", 1, "payment cards 2026"),
        )
        .unwrap();
    assert_eq!(made.kcvs.len(), 3);
    assert!(made
        .kcvs
        .iter()
        .all(|(_, m, v)| m == "aes-gp" && v.len() == 6));
    assert_eq!(h.gp_list(&s).unwrap(), std::slice::from_ref(&made));
    // The three keys: sensitive, not extractable, not copyable, no PKCS#11 usage.
    let objs = h.list_objects(&s, None).unwrap();
    let gp: Vec<_> = objs.iter().filter(|o| o.attrs.gp.is_some()).collect();
    assert_eq!(gp.len(), 3);
    for o in &gp {
        let a = &o.attrs;
        assert!(a.sensitive && !a.extractable && !a.copyable && !a.modifiable);
        assert!(!(a.encrypt || a.decrypt || a.sign || a.verify || a.wrap || a.unwrap || a.derive));
        // Used as an ordinary key (ECB encryption of chosen data would be VISA2 itself):
        let r = h.encrypt(
            &s,
            o.handle,
            Mechanism::AesEcb,
            &Params::default(),
            &[0; 16],
        );
        assert!(r.is_err(), "a GP master key encrypted chosen data");
        assert!(h.copy_object(&s, o.handle, &Default::default()).is_err());
    }
    // Generated, audited with its check values.
    let master_kcv = &made.kcvs[0].2;
    let recs = audit_records(&tmp.path().join("d"));
    let r = recs
        .iter()
        .find(|r| r.event == "gp-master-generate")
        .unwrap();
    assert!(r.outcome.contains(master_kcv), "{}", r.outcome);
    // The same name and version twice: refused.
    assert!(h
        .gp_generate(&s, &GpNewSet::new("issuer", "aes-128", 1, "x"))
        .is_err());
}

#[test]
fn a_ceremony_checks_every_component_and_refuses_well_known_values() {
    let (tmp, mut h) = password_hsm();
    let s = co(&mut h);
    for kind in [KeyType::Des3, KeyType::Aes128, KeyType::Aes256] {
        let want = random_set(kind, 1);
        let set = format!("imported-{}", kind.name());
        let comps = set_components(kind, &want);
        // A mistyped component: refused with which one, nothing stored.
        let mut bad = comps.clone();
        let flip = if &bad[3].value[0..2] == "00" {
            "01"
        } else {
            "00"
        };
        bad[3].value.replace_range(0..2, flip);
        let e = h
            .gp_import(&s, &GpNewSet::new(&set, kind.name(), 1, "batch"), &bad, &[])
            .unwrap_err();
        assert!(e.to_string().contains("component 2 of the mac key"), "{e}");
        assert!(h.gp_list(&s).unwrap().iter().all(|i| i.set != set));
        // One component per key: refused (dual control).
        let one: Vec<GpComponent> = comps.iter().step_by(2).cloned().collect();
        assert!(h
            .gp_import(&s, &GpNewSet::new(&set, kind.name(), 1, "batch"), &one, &[])
            .is_err());
        // A whole-key check value that does not match: refused.
        let wrong = vec![("enc".to_string(), "000000".to_string())];
        assert!(h
            .gp_import(
                &s,
                &GpNewSet::new(&set, kind.name(), 1, "batch"),
                &comps,
                &wrong
            )
            .is_err());
        // Right: stored, and the stored keys are the ceremony's.
        let m = KcvMethod::gp_default(kind);
        let whole: Vec<(String, String)> = KeyRole::ALL
            .into_iter()
            .map(|r| (r.name().into(), hex::encode(kcv(want.get(r), m).unwrap())))
            .collect();
        let got = h
            .gp_import(
                &s,
                &GpNewSet::new(&set, kind.name(), 1, "batch"),
                &comps,
                &whole,
            )
            .unwrap();
        for (r, _, v) in &got.kcvs {
            let role = KeyRole::ALL.into_iter().find(|x| x.name() == r).unwrap();
            assert_eq!(v, &hex::encode_upper(kcv(want.get(role), m).unwrap()));
        }
    }
    // Every kind of well-known value (the list's samples), whichever components make it up.
    let gp_default = ferrohsm_core::weak_keys::GP_DEFAULT_KEY.to_vec();
    for (spec, value) in ferrohsm_core::weak_keys::samples() {
        let kind = match spec {
            ferrohsm_core::mechanism::KeySpec::Des3 => KeyType::Des3,
            _ => KeyType::aes(value.len()).unwrap(),
        };
        let good = random_set(kind, 1);
        let mut comps = set_components(kind, &good);
        comps.retain(|c| c.role != "mac");
        comps.extend(components("mac", kind, &value));
        let e = h
            .gp_import(
                &s,
                &GpNewSet::new("weak", kind.name(), 1, "test"),
                &comps,
                &[],
            )
            .unwrap_err();
        assert!(
            matches!(e, HsmError::KeyUse(_)),
            "{}: {e}",
            hex::encode(&value)
        );
        assert!(e.to_string().contains("well known"), "{e}");
    }
    assert!(h.gp_list(&s).unwrap().iter().all(|i| i.set != "weak"));
    // The audited test mode takes them, and says so in the record.
    let pso = h
        .login(
            Role::PartitionSo,
            Some("tok"),
            Credential::Secret(Pin::password("partition-so-pw").unwrap()),
        )
        .unwrap();
    h.set_partition_policy(&pso, "test-keys", "on").unwrap();
    let s = co(&mut h);
    let comps: Vec<GpComponent> = ["enc", "mac", "dek"]
        .iter()
        .flat_map(|r| components(r, KeyType::Des3, &gp_default))
        .collect();
    h.gp_import(
        &s,
        &GpNewSet::new("gp-test", "des3", 1, "lab cards"),
        &comps,
        &[],
    )
    .unwrap();
    let recs = audit_records(&tmp.path().join("d"));
    let r = recs
        .iter()
        .rev()
        .find(|r| r.event == "gp-master-import")
        .unwrap();
    assert!(r.outcome.contains("test mode"), "{}", r.outcome);
    let refused = recs
        .iter()
        .filter(|r| r.event == "gp-master-import" && r.outcome.starts_with("failure"))
        .count();
    assert!(refused >= 9, "each refusal audited: {refused}");
}

#[test]
fn card_keys_are_diversified_inside_and_only_their_check_values_leave() {
    let (tmp, mut h) = password_hsm();
    let s = co(&mut h);
    let master = random_set(KeyType::Des3, 1);
    h.gp_import(
        &s,
        &GpNewSet::new("m", "des3", 1, "cards"),
        &set_components(KeyType::Des3, &master),
        &[],
    )
    .unwrap();
    let kdd = hex::decode("000074746E6E6E626262").unwrap();
    for method in [Method::Visa2, Method::EmvCps11] {
        let got = h
            .gp_diversify(&s, &keys("m", None, Some(method.name())), &kdd)
            .unwrap();
        for (r, m, v) in got {
            let role = KeyRole::ALL.into_iter().find(|x| x.name() == r).unwrap();
            let card = diversify(method, master.get(role), role, &kdd).unwrap();
            assert_eq!(
                v,
                hex::encode_upper(kcv(&card, KcvMethod::Des3Zeros).unwrap())
            );
            assert_eq!(m, "des3-zeros");
        }
    }
    // The KCV of a single card key, by a named method; a wrong-type method is refused.
    let v = h
        .gp_kcv(
            &s,
            &keys("m", None, Some("visa2")),
            "dek",
            "des3-zeros",
            Some(&kdd),
        )
        .unwrap();
    let d = diversify(Method::Visa2, &master.dek, KeyRole::Dek, &kdd).unwrap();
    assert_eq!(v, hex::encode_upper(kcv(&d, KcvMethod::Des3Zeros).unwrap()));
    // Each check value computed is on the record, with the card it was for.
    let recs = audit_records(&tmp.path().join("d"));
    assert!(recs.iter().any(|r| r.event == "gp-kcv"
        && r.outcome.contains(&v)
        && r.outcome.contains("visa2, KDD 000074746E6E6E626262")));
    assert!(h
        .gp_kcv(&s, &keys("m", None, None), "enc", "aes-cmac", None)
        .is_err());
    // A KDF3 method on a 3DES set, a short KDD: refused.
    assert!(h
        .gp_diversify(&s, &keys("m", None, Some("kdf3")), &kdd)
        .is_err());
    assert!(h
        .gp_diversify(&s, &keys("m", None, Some("visa2")), &kdd[..9])
        .is_err());
}

/// Opens a channel through the engine to `card` with the keys `k` names.
fn open(
    h: &mut Hsm,
    s: &Session,
    card: &mut SimCard,
    k: &GpKeysRef,
    p1: u8,
    level: &str,
) -> Result<String, HsmError> {
    let host: [u8; 8] = random(8).try_into().unwrap();
    let iu =
        Response::parse(&card.transmit(&initialize_update(p1, &host).to_bytes().unwrap())).unwrap();
    if iu.sw != 0x9000 {
        return Err(HsmError::NotFound(format!("card: {:04X}", iu.sw)));
    }
    let (ch, ea) = h.gp_open(s, k, &host, &iu.data, level, 0x55)?;
    let r = Response::parse(&card.transmit(&ea)).unwrap();
    assert_eq!(r.sw, 0x9000, "EXTERNAL AUTHENTICATE");
    Ok(ch)
}

#[test]
fn a_card_is_personalised_through_the_engine_and_every_step_is_audited() {
    let (tmp, mut h) = password_hsm();
    let s = co(&mut h);
    let kdd: [u8; 10] = random(10).try_into().unwrap();
    for (scp, i, kind, method, level) in [
        (2u8, 0x55u8, KeyType::Des3, "visa2", "c-mac,c-dec,r-mac"),
        (3, 0x70, KeyType::Aes128, "kdf3", "c-mac,c-dec,r-mac,r-enc"),
        (3, 0x70, KeyType::Aes256, "kdf3", "c-mac"),
    ] {
        // The card's transport keys, given to the HSM by ceremony; the issuer's masters made
        // inside.
        let transport = random_set(kind, 1);
        let tname = format!("transport-{scp}-{}", kind.name());
        let mname = format!("issuer-{scp}-{}", kind.name());
        h.gp_import(
            &s,
            &GpNewSet::new(&tname, kind.name(), 1, "vendor batch"),
            &set_components(kind, &transport),
            &[],
        )
        .unwrap();
        h.gp_generate(&s, &GpNewSet::new(&mname, kind.name(), 1, "cards 2026"))
            .unwrap();
        let mut card = SimCard::new(scp, i, kdd, transport.clone()).unwrap();
        let ch = open(&mut h, &s, &mut card, &keys(&tname, None, None), 0, level).unwrap();
        // A protected exchange through the engine.
        let echo = Command::new(0x80, INS_ECHO, 0, 0, vec![1, 2, 3])
            .to_bytes()
            .unwrap();
        let wire = h.gp_wrap(&s, &ch, &echo).unwrap();
        let plain = h.gp_unwrap(&s, &ch, &card.transmit(&wire)).unwrap();
        assert_eq!(plain, [1, 2, 3, 0x90, 0x00]);
        // PUT KEY: the card's own keys from the issuer's masters, version 2 replacing 1.
        let new = keys(&mname, None, Some(method));
        let put = h.gp_put_key(&s, &ch, &new, 1, 2).unwrap();
        let answer = h.gp_unwrap(&s, &ch, &card.transmit(&put)).unwrap();
        assert_eq!(answer[answer.len() - 2..], [0x90, 0x00], "PUT KEY");
        assert_eq!(answer[0], 2, "the card reports the new version");
        assert_eq!(card.key_versions(), [2]);
        h.gp_close(&s, &ch).unwrap();
        // Proof: a new channel with the card's diversified keys; the transport keys are gone.
        let ch2 = open(&mut h, &s, &mut card, &new, 2, level).unwrap();
        let wire = h.gp_wrap(&s, &ch2, &echo).unwrap();
        assert_eq!(
            h.gp_unwrap(&s, &ch2, &card.transmit(&wire)).unwrap(),
            [1, 2, 3, 0x90, 0x00]
        );
        // A channel is its login's: another login of the same partition, knowing its id,
        // cannot use or close it.
        let other = co(&mut h);
        let e = h.gp_wrap(&other, &ch2, &echo).unwrap_err();
        assert!(matches!(e, HsmError::NotFound(_)), "{e}");
        h.gp_close(&other, &ch2).unwrap();
        let wire = h.gp_wrap(&s, &ch2, &echo).unwrap();
        h.gp_unwrap(&s, &ch2, &card.transmit(&wire)).unwrap();
        assert!(open(&mut h, &s, &mut card, &keys(&tname, None, None), 1, level).is_err());
        // Another card's keys (the masters without diversification) are refused by the card's
        // cryptogram, and audited.
        let e = open(&mut h, &s, &mut card, &keys(&mname, None, None), 2, level).unwrap_err();
        assert!(matches!(e, HsmError::Refused(_)), "{e}");
        // A channel is not usable after closing it.
        h.gp_close(&s, &ch2).unwrap();
        assert!(h.gp_wrap(&s, &ch2, &echo).is_err());
    }
    let recs = audit_records(&tmp.path().join("d"));
    let count = |ev: &str| {
        recs.iter()
            .filter(|r| r.event == ev && r.outcome.starts_with("success"))
            .count()
    };
    assert_eq!(count("gp-channel-open"), 6);
    assert_eq!(count("gp-put-key"), 3);
    assert!(recs
        .iter()
        .any(|r| r.event == "gp-channel-open" && r.outcome.starts_with("failure")));
}

#[test]
fn rotation_retirement_and_who_may_do_what() {
    let (_tmp, mut h) = password_hsm();
    let s = co(&mut h);
    h.gp_generate(&s, &GpNewSet::new("m", "aes-128", 1, "cards"))
        .unwrap();
    let v2 = h.gp_rotate(&s, "m").unwrap();
    assert_eq!(v2.version, 2);
    h.gp_retire(&s, "m", 1).unwrap();
    let list = h.gp_list(&s).unwrap();
    assert!(list.iter().any(|i| i.version == 1 && i.retired));
    // A retired version is never used; the newest live one is the default.
    let kdd = random(10);
    assert!(h
        .gp_diversify(&s, &keys("m", Some(1), Some("kdf3")), &kdd)
        .is_err());
    assert!(h
        .gp_diversify(&s, &keys("m", None, Some("kdf3")), &kdd)
        .is_ok());
    // The Partition SO never touches keys; the Crypto User reads but does not make keys.
    let pso = h
        .login(
            Role::PartitionSo,
            Some("tok"),
            Credential::Secret(Pin::password("partition-so-pw").unwrap()),
        )
        .unwrap();
    assert!(h.gp_list(&pso).is_err());
    assert!(h
        .gp_generate(&pso, &GpNewSet::new("x", "aes-128", 1, "c"))
        .is_err());
    h.init_role(
        &s,
        Role::CryptoUser,
        ferrohsm_core::NewSecret::Password(Pin::password("cu-pin-12345").unwrap()),
        false,
    )
    .unwrap();
    let cu = h
        .login(
            Role::CryptoUser,
            Some("tok"),
            Credential::Secret(Pin::password("cu-pin-12345").unwrap()),
        )
        .unwrap();
    assert_eq!(h.gp_list(&cu).unwrap().len(), 2);
    assert!(h
        .gp_generate(&cu, &GpNewSet::new("x", "aes-128", 1, "c"))
        .is_err());
    assert!(h.gp_rotate(&cu, "m").is_err());
}
