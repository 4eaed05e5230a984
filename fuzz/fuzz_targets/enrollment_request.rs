//! What an unregistered host sends to redeem an enrollment code: any bytes as the code a
//! person typed, and any frame as the request of a host in the enrolling scope, answered by
//! the service layer against a real HSM. Nothing may panic; a request other than a
//! well-formed redemption for the host's own key is refused; a code that parses is 16
//! characters of the code alphabet.
#![no_main]

#[path = "common/lab.rs"]
mod lab;
use lab::lab;

use ferrohsm_proto::v1::response::Result as Reply;
use ferrohsm_proto::{read_frame, Request};
use ferrohsm_server::service::{handle_in, Scope};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const HOST_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(code) = ferrohsm_core::hsm::parse_enrollment_code(text) {
            assert_eq!(code.len(), 16);
            assert!(code
                .bytes()
                .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)));
        }
    }
    let mut input = data;
    let Ok(frame) = read_frame(&mut input, 1 << 16) else {
        return;
    };
    let Ok(req) = Request::decode(frame.as_slice()) else {
        return;
    };
    let id = req.id;
    let mut api = lab().api.lock().unwrap_or_else(|e| e.into_inner());
    let resp = handle_in(&mut *api, req, &Scope::Enrolling(HOST_KEY.into()));
    assert_eq!(resp.id, id);
    // No code was ever issued on this HSM: nothing an enrolling host sends succeeds.
    assert!(matches!(resp.result, Some(Reply::Error(_))));
});
