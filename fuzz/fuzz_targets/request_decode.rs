//! Whatever bytes a client sends on the socket: framing, decoding, and the service layer's
//! answer against a real (uninitialised) HSM. Nothing may panic, and every decoded request
//! gets an answer with its id.
#![no_main]

#[path = "common/lab.rs"]
mod lab;
use lab::lab;

use ferrohsm_proto::{read_frame, FrameError, Request};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    // Several frames may be in one read; each is handled as the server does.
    for _ in 0..4 {
        let frame = match read_frame(&mut input, 1 << 16) {
            Ok(f) => f,
            Err(FrameError::Closed) | Err(FrameError::TooLarge { .. }) | Err(FrameError::Io(_)) => {
                return
            }
            Err(FrameError::Decode(_)) => unreachable!("read_frame does not decode"),
        };
        let Ok(req) = Request::decode(frame.as_slice()) else {
            return;
        };
        let id = req.id;
        let mut api = lab().api.lock().unwrap_or_else(|e| e.into_inner());
        let resp = ferrohsm_server::service::handle(&mut *api, req);
        assert_eq!(resp.id, id);
        assert!(resp.result.is_some());
    }
});
