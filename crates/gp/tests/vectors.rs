//! Published vectors for every computation, each with its source; where none is published,
//! agreement with the independent implementation in `independent/`.

mod independent;

use ferrohsm_gp::apdu::{Command, InitUpdate, Response};
use ferrohsm_gp::block::{aes_cmac, Key, KeyType};
use ferrohsm_gp::channel::{Channel, KeySet, SecurityLevel};
use ferrohsm_gp::diversify::{diversify, KeyRole, Method};
use ferrohsm_gp::kcv::{kcv, KcvMethod};
use ferrohsm_gp::{scp02, scp03};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

/// The GlobalPlatform default (test) key, 40 41 … 4F. Only as published test data here.
const GP_TEST_KEY: &str = "404142434445464748494A4B4C4D4E4F";

fn set(kind: KeyType, enc: &str, mac: &str, dek: &str, version: u8) -> KeySet {
    let k = |s: &str| Key::new(kind, &h(s)).unwrap();
    KeySet::new(version, k(enc), k(mac), k(dek)).unwrap()
}

fn challenge(s: &str) -> [u8; 8] {
    h(s).try_into().unwrap()
}

// ---------------------------------------------------------------- AES-CMAC and KCVs

/// NIST SP 800-38B, Appendix D.1 (AES-128) and D.2 (AES-192), examples 2 and 3.
#[test]
fn aes_cmac_matches_nist_sp_800_38b() {
    let m = h("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411");
    for (key, kind, m16, m40) in [
        (
            "2b7e151628aed2a6abf7158809cf4f3c",
            KeyType::Aes128,
            "070a16b46b4d4144f79bdd9dd04a287c",
            "dfa66747de9ae63030ca32611497c827",
        ),
        (
            "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
            KeyType::Aes192,
            "9e99a7bf31e710900662f65e617c5184",
            "8a1de5be2eb31aad089a82e6ee908b0e",
        ),
    ] {
        let k = Key::new(kind, &h(key)).unwrap();
        assert_eq!(aes_cmac(&k, &m[..16]).unwrap().to_vec(), h(m16));
        assert_eq!(aes_cmac(&k, &m).unwrap().to_vec(), h(m40));
    }
}

#[test]
fn key_check_values_in_every_convention() {
    // 3DES: the default key's check value as card tools print it (GlobalPlatformPro, GPShell):
    // 8BAF47; and agreement with the independent implementation for a random key.
    let gp = Key::new(KeyType::Des3, &h(GP_TEST_KEY)).unwrap();
    assert_eq!(kcv(&gp, KcvMethod::Des3Zeros).unwrap(), h("8BAF47"));
    let k16 = h("0123456789ABCDEFFEDCBA9876543210");
    let des = Key::new(KeyType::Des3, &k16).unwrap();
    assert_eq!(
        kcv(&des, KcvMethod::Des3Zeros).unwrap(),
        independent::des3_ecb(&k16, &[0; 8])[..3]
    );
    // AES, each length, each convention.
    for len in [16, 24, 32] {
        let v: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5c).collect();
        let k = Key::new(KeyType::aes(len).unwrap(), &v).unwrap();
        assert_eq!(
            kcv(&k, KcvMethod::AesGp).unwrap(),
            independent::aes_ecb(&v, &[1; 16])[..3]
        );
        assert_eq!(
            kcv(&k, KcvMethod::AesZeros).unwrap(),
            independent::aes_ecb(&v, &[0; 16])[..3]
        );
        assert_eq!(
            kcv(&k, KcvMethod::AesCmac).unwrap(),
            independent::cmac(&v, &[0; 16])[..5]
        );
        assert!(
            kcv(&k, KcvMethod::Des3Zeros).is_err(),
            "no 3DES KCV of an AES key"
        );
    }
    assert!(kcv(&gp, KcvMethod::AesGp).is_err());
}

// ---------------------------------------------------------------- diversification

/// GlobalPlatformPro, library/src/test/java/pro/javacard/gp/TestSCP03.java (testKDF3).
#[test]
fn kdf3_matches_globalplatformpro() {
    let master = Key::new(
        KeyType::Aes256,
        &h("8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD"),
    )
    .unwrap();
    let enc = diversify(
        Method::Kdf3,
        &master,
        KeyRole::Enc,
        &h("D9B1DE5D0362DEDCE4FB"),
    )
    .unwrap();
    assert_eq!(
        enc.expose(),
        h("9AAC5D0B3601F89438A0D9D0B6B256CFB47E6462DFA5228D3420C4AC7C224781")
    );
}

#[test]
fn visa2_and_emv_cps11_match_the_independent_implementation() {
    let master = h("0123456789ABCDEFFEDCBA9876543210");
    let kdd = h("000074746E6E6E626262");
    let m = Key::new(KeyType::Des3, &master).unwrap();
    for role in KeyRole::ALL {
        let visa2 = diversify(Method::Visa2, &m, role, &kdd).unwrap();
        let six: Vec<u8> = kdd[0..2].iter().chain(&kdd[4..8]).copied().collect();
        assert_eq!(
            visa2.expose(),
            independent::diversify_des(&master, &six, role.id())
        );
        let emv = diversify(Method::EmvCps11, &m, role, &kdd).unwrap();
        assert_eq!(
            emv.expose(),
            independent::diversify_des(&master, &kdd[4..10], role.id())
        );
        assert_ne!(visa2.expose(), emv.expose());
    }
    // The three card keys differ, and each card's differ from another card's.
    let a = diversify(Method::Visa2, &m, KeyRole::Enc, &kdd).unwrap();
    let b = diversify(Method::Visa2, &m, KeyRole::Mac, &kdd).unwrap();
    // (VISA2 reads KDD bytes 0-1 and 4-7: another card differs there.)
    let c = diversify(Method::Visa2, &m, KeyRole::Enc, &h("000074746E6F6E626262")).unwrap();
    assert_ne!(a.expose(), b.expose());
    assert_ne!(a.expose(), c.expose());
    // Wrong inputs: a short KDD, an AES master for VISA2, a 3DES master for KDF3.
    assert!(diversify(Method::Visa2, &m, KeyRole::Enc, &kdd[..9]).is_err());
    let aes = Key::new(KeyType::Aes128, &master).unwrap();
    assert!(diversify(Method::Visa2, &aes, KeyRole::Enc, &kdd).is_err());
    assert!(diversify(Method::Kdf3, &m, KeyRole::Enc, &kdd).is_err());
}

// ---------------------------------------------------------------- SCP02

fn scp02_open(host: &str, iu: &str, level: u8) -> (Channel, Command) {
    let keys = set(KeyType::Des3, GP_TEST_KEY, GP_TEST_KEY, GP_TEST_KEY, 1);
    let iu = InitUpdate::parse(&h(iu)).unwrap();
    Channel::open_host(
        &keys,
        &challenge(host),
        &iu,
        SecurityLevel::new(level, 2).unwrap(),
        0x15,
    )
    .unwrap()
}

/// kaoh/globalplatform, globalplatform/src/scp02Test.c (get_status_mac_only): a card's
/// INITIALIZE UPDATE answer, EXTERNAL AUTHENTICATE and a GET STATUS with C-MAC, option 15.
#[test]
fn scp02_c_mac_matches_a_recorded_card_session() {
    let (mut ch, ea) = scp02_open(
        "D5AD539A60CA5E72",
        "000074746E6E6E626262 0102 069F AA2A0591E733 67DD78794D04315E",
        0x01,
    );
    assert_eq!(
        ea.to_bytes().unwrap(),
        h("84820100107C799B3C771DBAE6BEF49310977617BA")
    );
    let get_status = Command::new(0x80, 0xf2, 0x20, 0x02, h("4F00")).expecting();
    assert_eq!(
        ch.wrap(&get_status).unwrap().to_bytes().unwrap(),
        h("84F220020A4F00BB6E71C0EFCFCF0D00")
    );
}

/// kaoh/globalplatform, globalplatform/src/scp02Test.c (install_mac_enc): C-MAC and
/// C-DECRYPTION (level 03) on two DELETE commands.
#[test]
fn scp02_c_decryption_matches_a_recorded_card_session() {
    let (mut ch, ea) = scp02_open(
        "EBAA9E53C696281B",
        "000074746E6E6E626262 0102 06A1 5086BBEE58F4 67149061DA4B6EAE",
        0x03,
    );
    assert_eq!(
        ea.to_bytes().unwrap(),
        h("848203001005814C116071EB67D8BA9D9879454564")
    );
    for (aid, wire) in [
        (
            "D0D1D2D3D4D50101",
            "84E4008018BC146FA0403BE4BAD3BC089E4ABD8674DA7EFEA21047B85800",
        ),
        (
            "D0D1D2D3D4D501",
            "84E4008018C2748C1669FAFC0E20C5253680388A4A49C9A6038D77B45700",
        ),
    ] {
        let mut data = vec![0x4f, (aid.len() / 2) as u8];
        data.extend(h(aid));
        let delete = Command::new(0x80, 0xe4, 0x00, 0x80, data).expecting();
        assert_eq!(ch.wrap(&delete).unwrap().to_bytes().unwrap(), h(wire));
    }
}

/// A wrong card cryptogram (one bit changed) is refused before anything is sent.
#[test]
fn a_card_that_does_not_hold_the_keys_is_refused() {
    let keys = set(KeyType::Des3, GP_TEST_KEY, GP_TEST_KEY, GP_TEST_KEY, 1);
    let mut d = h("000074746E6E6E626262 0102 069F AA2A0591E733 67DD78794D04315F");
    let iu = InitUpdate::parse(&d).unwrap();
    let l = SecurityLevel::new(1, 2).unwrap();
    let r = Channel::open_host(&keys, &challenge("D5AD539A60CA5E72"), &iu, l, 0x15);
    assert!(matches!(r, Err(ferrohsm_gp::GpError::Auth(_))));
    d[27] ^= 0x01;
    let other = set(
        KeyType::Des3,
        "0123456789ABCDEFFEDCBA9876543210",
        GP_TEST_KEY,
        GP_TEST_KEY,
        1,
    );
    let iu = InitUpdate::parse(&d).unwrap();
    assert!(Channel::open_host(&other, &challenge("D5AD539A60CA5E72"), &iu, l, 0x15).is_err());
}

/// SCP02 R-MAC has no published trace: the card side of this crate and the independent
/// retail MAC must agree on every response MAC, with the ICV chained.
#[test]
fn scp02_r_mac_matches_the_independent_implementation() {
    let keys = set(KeyType::Des3, GP_TEST_KEY, GP_TEST_KEY, GP_TEST_KEY, 1);
    let seq = h("0042");
    let sk = scp02::session_keys(&keys, &seq).unwrap();
    // Session keys against the independent 3DES-CBC derivation.
    for (k, c) in [
        (&sk.enc, "0182"),
        (&sk.cmac, "0101"),
        (&sk.rmac, "0102"),
        (&sk.dek, "0181"),
    ] {
        let mut d = h(c);
        d.extend(&seq);
        d.resize(16, 0);
        assert_eq!(
            k.expose(),
            independent::des3_cbc(&h(GP_TEST_KEY), &[0; 8], &d)
        );
    }
    let mut card = scp02::Channel::open_card(&keys, &seq, 0x55).unwrap();
    let host = h("1122334455667788");
    let cc = h("AABBCCDDEEFF");
    let hc = scp02::host_cryptogram(&sk, &host, &seq, &cc).unwrap();
    let mut ea = Command::new(0x80, 0x82, 0x13, 0, hc);
    // Host side of EXTERNAL AUTHENTICATE, computed independently: retail MAC, ICV zero.
    let mut m = vec![0x84, 0x82, 0x13, 0x00, 0x10];
    m.extend(&ea.data);
    let mac = independent::retail_mac(sk.cmac.expose(), &[0; 8], &independent::pad(&m, 8));
    ea.cla = 0x84;
    ea.data.extend(&mac);
    card.external_authenticate(&ea, &host, &seq, &cc).unwrap();
    let mut ricv = vec![0u8; 8];
    let mut icv = mac;
    for (i, data) in ["", "0102", "000102030405060708090A0B0C0D0E0F10"]
        .iter()
        .enumerate()
    {
        let plain = Command::new(0x80, 0xee, i as u8, 0, h(data));
        // The host side, independently: C-MAC with the encrypted ICV, data encrypted.
        let icv_enc = independent::des_ecb(&sk.cmac.expose()[..8], &icv);
        let mut m = vec![0x84, 0xee, i as u8, 0, (plain.data.len() + 8) as u8];
        m.extend(&plain.data);
        icv = independent::retail_mac(sk.cmac.expose(), &icv_enc, &independent::pad(&m, 8));
        let mut wire = if plain.data.is_empty() {
            vec![]
        } else {
            independent::des3_cbc(sk.enc.expose(), &[0; 8], &independent::pad(&plain.data, 8))
        };
        wire.extend(&icv);
        let sent = Command {
            cla: 0x84,
            data: wire,
            ..plain.clone()
        };
        assert_eq!(card.unwrap_command(&sent).unwrap(), plain);
        let resp = card.wrap_response(&Response::ok(h(data))).unwrap();
        let mut r = vec![0x80, 0xee, i as u8, 0, plain.data.len() as u8];
        r.extend(&plain.data);
        r.push(plain.data.len() as u8);
        r.extend(&plain.data);
        r.extend([0x90, 0x00]);
        ricv = independent::retail_mac(sk.rmac.expose(), &ricv, &independent::pad(&r, 8));
        assert_eq!(
            resp.data[resp.data.len() - 8..],
            ricv[..],
            "R-MAC of response {i}"
        );
    }
}

// ---------------------------------------------------------------- SCP03

fn scp03_keys() -> KeySet {
    set(
        KeyType::Aes128,
        "F995D0A069335C7DF42E590317FFEA6D",
        "58563362EC5A4541ABCD32B34B1EAE7D",
        "0A02A6D687406DCFA09DC70B3EDB7E38",
        0x30,
    )
}

/// kaoh/globalplatform, globalplatform/src/scp03Test.c (mutual_auth and delete_application):
/// session keys, EXTERNAL AUTHENTICATE, and a DELETE with C-MAC and C-DECRYPTION.
#[test]
fn scp03_matches_recorded_card_sessions() {
    for (host, iu, keys3, ea) in [
        (
            "9BD6BF878FB8E991",
            "00000000000000000000 30 03 70 3C80C2CC87EB3A35 E4EDBA35E629C336 00001E",
            [
                "D83EE38C9954C8078987A5E9EE6AB13C",
                "6FF37716E0413065E8DFD08BF1E9EC5E",
                "0254C786E57ACA8982670C1C1A05FF12",
            ],
            "848203001023EBFEDC579D22CDCDB6A25A5FF7891F",
        ),
        (
            "B2BDE1A2DC66BD56",
            "00000000000000000000 30 03 70 C40932A6FEFEAEB2 E127185170F45FCA 000015",
            [
                "9B841BB63D1087484FF7F16802017243",
                "8117FE5ADED74AC0DAABE9FB81DBDB67",
                "4521D75E4D6F60DBFB8AB4EE254EF6F1",
            ],
            "848203001059D54D932423D29F6313C970875F8C2F",
        ),
    ] {
        let iu = InitUpdate::parse(&h(iu)).unwrap();
        let sk = scp03::session_keys(&scp03_keys(), &h(host), &iu.card_challenge).unwrap();
        assert_eq!(sk.enc.expose(), h(keys3[0]));
        assert_eq!(sk.mac.expose(), h(keys3[1]));
        assert_eq!(sk.rmac.expose(), h(keys3[2]));
        let level = SecurityLevel::new(0x03, 3).unwrap();
        let (mut ch, cmd) =
            Channel::open_host(&scp03_keys(), &challenge(host), &iu, level, 0).unwrap();
        assert_eq!(cmd.to_bytes().unwrap(), h(ea));
        if host == "B2BDE1A2DC66BD56" {
            let delete = Command::new(0x80, 0xe4, 0x00, 0x80, h("4F08A00100015141434C"));
            assert_eq!(
                ch.wrap(&delete).unwrap().to_bytes().unwrap(),
                h("84E400801829F06AEC3180B3EFE91FF662310B945DE0D5FE66AD67A5B6")
            );
        }
    }
}

/// kaoh/globalplatform, globalplatform/src/scp03Test.c (send_apdu_rmac_rencryption): level
/// 33 (C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION) with the default keys; three commands of
/// 165 bytes and the card's protected answers, which must verify and decrypt.
#[test]
fn scp03_r_mac_and_r_encryption_match_a_recorded_card_session() {
    let keys = set(KeyType::Aes128, GP_TEST_KEY, GP_TEST_KEY, GP_TEST_KEY, 0);
    let iu = InitUpdate::parse(&h(
        "00010203040506070809 00 03 70 A5874C57119B976B F94879E36F29E039 000001",
    ))
    .unwrap();
    let level = SecurityLevel::new(0x33, 3).unwrap();
    let (mut ch, ea) =
        Channel::open_host(&keys, &challenge("2C8130E574247B1B"), &iu, level, 0).unwrap();
    assert_eq!(
        ea.to_bytes().unwrap(),
        h("8482330010A75F1CD48F3B93DFA57E690937921F92")
    );
    let hello = b"Hello World".repeat(15);
    let plain = Command::new(0x80, 0x40, 0x00, 0x00, hello);
    let sent = [
        "84400000B80422E602DD973125102DDE05875CA115C04D811A40593DB9D9480927CC9A249BD118FB6C674A86BF70D0CD898153A438DAC4CD302B74876D718481FCDB9D39944453BEBD28832300C99FB8035D2DFF3E3CB3F5DAD568330127929207A179226EB5C6C52341A297CB2C8F25E481F1CE6EF6EADD2410E70EB268AF48D29CB20CFCB8448DE83235ADA96A5EEED379C0701924707DA111DBB9039ACF8E19F1CE62AA4EF26D7C871E842ED815245F7F2D9A9A87D9BDA54B188DCB",
        "84400000B803C6D93C9A2EBE310E2215CEAC64C9CB8A03A89657272AE001E398FB7A7F42E02210672D0927DBE2BF6F80AA322D948C2743EFBA75EC51FD9BC5E6B4306371916CC50B0F341177FB99091F560A37C88D1A387443792E128A3A04118D0EA9F8EC989012FE4E097440411852373B4470851AC573A0B15262E506B34F771DCC53A24E91FAD37FE67454FAAFEFCC3E2F7141DCD7174D88933629E632C1CFDD5D1D30017D0CA14FE32A022F064C93EB4769F5A497BE036C5A563F",
        "84400000B8982E6E5F120796589037A751431F835CCF17C5A13CB4D7F5E0948CF48538FEDCD6F2F0A54F813E8BA755DFE22F7B847BF6A8BBDB1FEEC531B44D01B92BD55EEAA5B55B770AF293E4995E14E3076A40A89ED21A6C2F3772839E6E9A31FAB4B493AB31FE1D951AD11D9924DF15C1C33A5F3C90D168E2A78437ED40601B5289C56F2F020C78744C8C22141A2FCFFADB4B4FDE504EFABA6DD9D5EAD7E0F7D57B58F97C28DACD4C9E93052A0F16EFDF2A41DDFE373917C351B9B8",
    ];
    let answers = [
        "20F075017DE9F58A1E3D7567CBE71140AC0EBFA376881449A0665992BB997C6A145AC6BE3B642931C2652F62B85532B45689EB3E37602E6276B72BABE6A0FF00BEB02473EF22792A37F70D17F7715F103528CC6122880FC86AE75E5F085F1B37492FF33DD148162DAFA203D973F3A4579F8B547FACB14034641FC817BBDF119A9EB0F24DED4F9CE3640B46189EE2138B405446FA4F154D4F9600B288299642BEF5A387B71922A0CAD4D77D9596E8F417A6DB42CFE2C1081E9000",
        "EFA214CD7DE37F299690265ECDBF210361CBC87EAA227C7A5FC1C984A8DFFAF82B6C1856E57C399FA46AA13F9A7150F76207BCBF7421EFE6424D1FCFEF090F63CDF6C1F21F951E286D6A237843B4E1AD070D7FB16C883D052338F19D5C5E96135398F6251E5D48984EBE528E42A93CBD880D67D6631BCCEF13C3D54572C77CEAD84D26F72A4A66FA13DDCFA6C1BF8F5CF4AB151D722B3DBE86841F30BA15E4B90834B122257913FAA6F09D0E540E114817C1ED9F9D2F7AD39000",
        "0E625EA4492C2253DF239C271E0DEA22DDB136461742E6AD02FA9710588655A17B9C9C115076E00EF858C84662827AF5B90CE2374A575A7208E708BB3D01F655A996BF10F6077F61FBD71927E352215CE9348429FDAB03A3E6EEC5C71556A3C42B98240D224314638608CFDCFE5847BB2811948956F9204BC69085A034F33982E75BEBDEB71B59665FCEA9EDD27A85ABE908171D68E2FA639E2ABA02A27CD21E3A37EE831A1C1C1CF6ECD1B4C744EBD250EA42072B5300789000",
    ];
    for (wire, answer) in sent.iter().zip(answers) {
        assert_eq!(ch.wrap(&plain).unwrap().to_bytes().unwrap(), h(wire));
        let r = ch
            .unwrap(&plain, &Response::parse(&h(answer)).unwrap())
            .unwrap();
        assert_eq!(r.sw, 0x9000);
        assert!(!r.data.is_empty());
    }
}
