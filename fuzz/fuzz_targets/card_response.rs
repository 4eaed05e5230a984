//! What a card (or whoever sits between the host and the card) answers: any bytes as a
//! response APDU, as INITIALIZE UPDATE's answer checked against a key set, and as the answer
//! to a protected command at the strictest level of each protocol; and any bytes as a command
//! to the simulated card. Nothing may panic; an answer whose cryptogram or R-MAC does not
//! verify is refused.
#![no_main]

use ferrohsm_gp::apdu::{Command, InitUpdate, Response};
use ferrohsm_gp::block::{Key, KeyType};
use ferrohsm_gp::card::SimCard;
use ferrohsm_gp::channel::{Channel, KeySet, SecurityLevel};
use libfuzzer_sys::fuzz_target;

fn set(kind: KeyType) -> KeySet {
    let k = |b: u8| Key::new(kind, &(0..kind.key_len() as u8).map(|i| i ^ b).collect::<Vec<_>>());
    KeySet::new(1, k(0x11).unwrap(), k(0x22).unwrap(), k(0x33).unwrap()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = Response::parse(data) else {
        return;
    };
    let host = [7u8; 8];
    if let Ok(iu) = InitUpdate::parse(&resp.data) {
        let keys = set(if iu.scp == 2 { KeyType::Des3 } else { KeyType::Aes128 });
        let level = SecurityLevel::new(0x13, iu.scp).unwrap();
        // Random bytes hold a valid cryptogram with negligible probability.
        assert!(Channel::open_host(&keys, &host, &iu, level, 0x55).is_err());
    }
    // The answer to a protected command on a channel opened with a real card.
    for (scp, i, kind, level) in [(2u8, 0x55u8, KeyType::Des3, 0x13u8), (3, 0x70, KeyType::Aes128, 0x33)] {
        let keys = set(kind);
        let mut card = SimCard::new(scp, i, [0; 10], keys.clone()).unwrap();
        let iu_cmd = ferrohsm_gp::apdu::initialize_update(0, &host);
        let iu = Response::parse(&card.transmit(&iu_cmd.to_bytes().unwrap())).unwrap();
        let iu = InitUpdate::parse(&iu.data).unwrap();
        let l = SecurityLevel::new(level, scp).unwrap();
        let (mut ch, _) = Channel::open_host(&keys, &host, &iu, l, i).unwrap();
        let cmd = Command::new(0x80, 0xee, 0, 0, vec![1, 2, 3]);
        let _ = ch.wrap(&cmd);
        assert!(ch.unwrap(&cmd, &resp).is_err(), "an answer with no valid R-MAC was taken");
        // The same bytes as a command to the card: a status word, never a panic.
        assert!(card.transmit(data).len() >= 2);
    }
});
