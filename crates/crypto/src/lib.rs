//! The engine's crypto providers that need AWS-LC directly: raw PKCS#1 and caller-digest PSS
//! RSA ([`raw_rsa`]), which aws-lc-rs's safe API lacks, and keyed HMAC contexts rewound per MAC
//! ([`hmac_ctx`]). This and the PKCS#11 crate are the only crates with `unsafe`; every block
//! says why it is sound. Front ends that run the engine (the server, the PKCS#11 module in
//! embedded mode, the CLI) call [`install`] once, so the engine offers the same mechanisms
//! wherever it runs.

pub mod hmac_ctx;
pub mod raw_rsa;

/// Installs both providers in the engine (idempotent: the first installation stays).
pub fn install() {
    ferrohsm_core::mechanism::install_raw_rsa(&raw_rsa::AwsLcRawRsa);
    ferrohsm_core::mechanism::install_mac_provider(&hmac_ctx::AwsLcMac);
}
