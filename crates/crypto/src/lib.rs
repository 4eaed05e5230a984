//! The engine's providers that need `unsafe` code: raw PKCS#1 and caller-digest PSS RSA
//! ([`raw_rsa`]), which aws-lc-rs's safe API lacks, keyed HMAC contexts rewound per MAC
//! ([`hmac_ctx`]), and a memory map of the store's WAL index ([`shared_view`]) so that the
//! change check every operation makes costs no system call. This and the PKCS#11 crate are the
//! only crates with `unsafe`; every block says why it is sound. Front ends that run the engine
//! (the server, the PKCS#11 module in embedded mode, the CLI) call [`install`] once, so the
//! engine offers the same mechanisms, at the same cost, wherever it runs.

pub mod hmac_ctx;
pub mod raw_rsa;
pub mod shared_view;

/// Installs the providers in the engine (idempotent: the first installation stays).
pub fn install() {
    ferrohsm_core::mechanism::install_raw_rsa(&raw_rsa::AwsLcRawRsa);
    ferrohsm_core::mechanism::install_mac_provider(&hmac_ctx::AwsLcMac);
    ferrohsm_core::store::install_shared_view(shared_view::map);
}
