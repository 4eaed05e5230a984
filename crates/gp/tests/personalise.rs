//! The personalisation flow against the simulated card, for both protocols and every
//! security level: open a channel with the card's current keys, replace them by PUT KEY with
//! keys diversified for this card, and prove it by opening a channel with the new keys. And
//! what an attacker on the line tries: changed commands and responses, a replayed
//! authentication, keys that do not match their check values.

use ferrohsm_gp::apdu::{initialize_update, Command, InitUpdate, Response};
use ferrohsm_gp::block::{Key, KeyType};
use ferrohsm_gp::card::{SimCard, INS_ECHO};
use ferrohsm_gp::channel::{Channel, KeySet, SecurityLevel};
use ferrohsm_gp::diversify::{diversify, KeyRole, Method};
use ferrohsm_gp::{put_key, GpError};

fn random_key(kind: KeyType) -> Key {
    let mut b = vec![0u8; kind.key_len()];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    Key::new(kind, &b).unwrap()
}

fn random_set(kind: KeyType, version: u8) -> KeySet {
    KeySet::new(
        version,
        random_key(kind),
        random_key(kind),
        random_key(kind),
    )
    .unwrap()
}

const KDD: [u8; 10] = [0x00, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

/// Opens a channel on `card` with `keys` (key version `p1`) at `level`.
fn open(card: &mut SimCard, keys: &KeySet, p1: u8, level: u8) -> Result<Channel, GpError> {
    let mut host = [0u8; 8];
    aws_lc_rs::rand::fill(&mut host).unwrap();
    let r = Response::parse(&card.transmit(&initialize_update(p1, &host).to_bytes()?))?;
    let iu = InitUpdate::parse(&r.expect_ok("INITIALIZE UPDATE")?)?;
    let level = SecurityLevel::new(level, iu.scp)?;
    let (ch, ea) = Channel::open_host(keys, &host, &iu, level, 0x55)?;
    Response::parse(&card.transmit(&ea.to_bytes()?))?.expect_ok("EXTERNAL AUTHENTICATE")?;
    Ok(ch)
}

/// Sends `cmd` over `ch` and opens the answer.
fn send(card: &mut SimCard, ch: &mut Channel, cmd: &Command) -> Result<Response, GpError> {
    let wire = ch.wrap(cmd)?.to_bytes()?;
    ch.unwrap(cmd, &Response::parse(&card.transmit(&wire))?)
}

fn card_keys(master: &KeySet, method: Method, version: u8) -> KeySet {
    let d = |r| diversify(method, master.get(r), r, &KDD).unwrap();
    KeySet::new(version, d(KeyRole::Enc), d(KeyRole::Mac), d(KeyRole::Dek)).unwrap()
}

#[test]
fn a_card_is_personalised_with_its_own_keys_at_every_level() {
    for (scp, i, kind, method, levels) in [
        (
            2u8,
            0x55u8,
            KeyType::Des3,
            Method::Visa2,
            &[0x01u8, 0x03, 0x11, 0x13][..],
        ),
        (2, 0x55, KeyType::Des3, Method::EmvCps11, &[0x03]),
        (
            3,
            0x70,
            KeyType::Aes128,
            Method::Kdf3,
            &[0x01, 0x03, 0x11, 0x13, 0x33],
        ),
        (3, 0x70, KeyType::Aes192, Method::Kdf3, &[0x33]),
        (3, 0x00, KeyType::Aes256, Method::Kdf3, &[0x13, 0x33]),
    ] {
        for &level in levels {
            let initial = random_set(kind, 1);
            let master = random_set(kind, 1);
            let mut card = SimCard::new(scp, i, KDD, initial.clone()).unwrap();
            let mut ch = open(&mut card, &initial, 0, level).unwrap();
            assert_eq!(ch.level().bits(), level);
            // Protected commands and answers travel intact at this level.
            for data in [vec![], vec![0x42], (0..=200).collect::<Vec<u8>>()] {
                let r = send(
                    &mut card,
                    &mut ch,
                    &Command::new(0x80, INS_ECHO, 0, 0, data.clone()),
                )
                .unwrap();
                assert_eq!(
                    (r.sw, r.data),
                    (0x9000, data),
                    "SCP0{scp} level {level:02X}"
                );
            }
            // PUT KEY: version 1 replaced by this card's keys as version 2.
            let new = card_keys(&master, method, 2);
            let cmd = put_key::command(&ch, 1, &new).unwrap();
            let r = send(&mut card, &mut ch, &cmd).unwrap();
            assert_eq!(r.sw, 0x9000, "SCP0{scp} level {level:02X}");
            assert_eq!(r.data[0], 2);
            assert!(card.holds(&new));
            assert_eq!(card.key_versions(), [2]);
            // Proof: a channel opens with the new keys; the old ones are gone.
            let mut ch2 = open(&mut card, &new, 2, level).unwrap();
            let r = send(
                &mut card,
                &mut ch2,
                &Command::new(0x80, INS_ECHO, 0, 0, vec![7]),
            )
            .unwrap();
            assert_eq!(r.data, [7]);
            assert!(matches!(
                open(&mut card, &initial, 1, level),
                Err(GpError::Card { sw: 0x6a88, .. })
            ));
            // Another card's keys (other KDD) do not open this one.
            let mut other_kdd = KDD;
            other_kdd[5] ^= 1;
            let d = |r| diversify(method, master.get(r), r, &other_kdd).unwrap();
            let other = KeySet::new(2, d(KeyRole::Enc), d(KeyRole::Mac), d(KeyRole::Dek)).unwrap();
            assert!(matches!(
                open(&mut card, &other, 2, level),
                Err(GpError::Auth(_))
            ));
        }
    }
}

#[test]
fn a_changed_command_or_response_is_caught_and_closes_the_channel() {
    for (scp, i, kind) in [(2u8, 0x55u8, KeyType::Des3), (3, 0x70, KeyType::Aes128)] {
        let keys = random_set(kind, 1);
        let mut card = SimCard::new(scp, i, KDD, keys.clone()).unwrap();
        // A command changed on the way: refused, and the channel is closed on the card.
        let mut ch = open(&mut card, &keys, 0, 0x13).unwrap();
        let cmd = Command::new(0x80, INS_ECHO, 0, 0, vec![1, 2, 3]);
        let mut wire = ch.wrap(&cmd).unwrap().to_bytes().unwrap();
        wire[6] ^= 0x01;
        assert_eq!(card.transmit(&wire), [0x69, 0x82]);
        let next = ch.wrap(&cmd).unwrap().to_bytes().unwrap();
        assert_eq!(card.transmit(&next), [0x69, 0x82], "closed after a bad MAC");
        // A response changed on the way: the host refuses it.
        let mut ch = open(&mut card, &keys, 0, 0x13).unwrap();
        let wire = ch.wrap(&cmd).unwrap().to_bytes().unwrap();
        let mut answer = card.transmit(&wire);
        answer[0] ^= 0x01;
        let r = ch.unwrap(&cmd, &Response::parse(&answer).unwrap());
        assert!(matches!(r, Err(GpError::Auth(_))), "SCP0{scp}: {r:?}");
        // A replayed EXTERNAL AUTHENTICATE (a recorded session) does not authenticate.
        let mut host = [0u8; 8];
        aws_lc_rs::rand::fill(&mut host).unwrap();
        let iu_wire = initialize_update(0, &host).to_bytes().unwrap();
        let iu = Response::parse(&card.transmit(&iu_wire)).unwrap();
        let iu = InitUpdate::parse(&iu.expect_ok("IU").unwrap()).unwrap();
        let level = SecurityLevel::new(0x01, scp).unwrap();
        let (_, ea) = Channel::open_host(&keys, &host, &iu, level, i).unwrap();
        let ea = ea.to_bytes().unwrap();
        assert_eq!(card.transmit(&ea), [0x90, 0x00]);
        card.transmit(&iu_wire);
        assert_eq!(card.transmit(&ea), [0x69, 0x82], "a new card challenge");
        // Protected commands without a channel, and garbage, get status words.
        assert_eq!(card.transmit(&wire), [0x69, 0x82]);
        assert_eq!(card.transmit(&[0x80]), [0x67, 0x00]);
    }
}

#[test]
fn put_key_with_a_wrong_check_value_changes_nothing() {
    let keys = random_set(KeyType::Aes128, 1);
    let mut card = SimCard::new(3, 0x70, KDD, keys.clone()).unwrap();
    let mut ch = open(&mut card, &keys, 0, 0x03).unwrap();
    let new = random_set(KeyType::Aes128, 2);
    let mut cmd = put_key::command(&ch, 1, &new).unwrap();
    // The last byte of the first key's check value.
    let kcv_end = 1 + 3 + 16 + 1 + 3;
    cmd.data[kcv_end - 1] ^= 0xff;
    let r = send(&mut card, &mut ch, &cmd);
    assert!(matches!(r, Ok(Response { sw: 0x6982, .. })), "{r:?}");
    assert_eq!(card.key_versions(), [1]);
    assert!(card.holds(&keys));
}
