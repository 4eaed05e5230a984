//! Whatever text an operator (or an attacker with write access to /etc) puts in the server's
//! configuration: it parses and validates, or is refused with a message; nothing panics, and
//! whatever parses passes its own range checks and survives a round trip.
#![no_main]

use ferrohsm_server::ServerConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = ServerConfig::parse(&text, std::path::Path::new("fuzz.toml")) {
        assert!(c.validate().is_ok());
        let again = toml::to_string(&c).expect("a parsed configuration serializes");
        assert_eq!(
            ServerConfig::parse(&again, std::path::Path::new("again.toml")).ok(),
            Some(c)
        );
    }
});
