//! The C_FindObjects rows: stores filled with AES keys labelled `find-<n>` (ferrohsm's by
//! the engine's bulk path in a child process, SoftHSMv2's through PKCS#11), and lookups by
//! label per second.

use super::*;

/// Labels of the objects the C_FindObjects rows look up.
fn find_label(n: usize) -> String {
    format!("find-{n}")
}

/// Adds keys `find-<from>`.. to ferrohsm's bench partition from a child process (the bulk
/// path of the engine, one transaction per 10,000 keys, each key audited).
pub(crate) fn populate_ferrohsm(data: &std::path::Path, from: usize, count: usize) {
    run_self(
        &[
            "--populate",
            &count.to_string(),
            "--from",
            &from.to_string(),
        ],
        data,
        "populating ferrohsm",
    );
}

/// The child's half of [`populate_ferrohsm`].
pub(crate) fn populate_here(data: &std::path::Path, from: usize, count: usize) {
    use ferrohsm_core::mechanism::KeySpec;
    use ferrohsm_core::object::{KeyOptions, KeyTemplate};
    use ferrohsm_core::{secret::Pin, Credential, Hsm, Role};
    let mut h = Hsm::open(data).expect("ferrohsm data dir");
    let co = h
        .login(
            Role::CryptoOfficer,
            Some("bench"),
            Credential::Secret(Pin::password(USER_PIN).expect("pin")),
        )
        .expect("Crypto Officer login");
    let all: Vec<KeyOptions> = (from..from + count)
        .map(|n| KeyOptions {
            label: find_label(n),
            id: n.to_be_bytes().to_vec(),
            extractable: false,
        })
        .collect();
    for chunk in all.chunks(10_000) {
        h.generate_keys_with(&co, KeySpec::Aes128, chunk, &KeyTemplate::default())
            .expect("bulk keys");
    }
}

/// Adds keys `find-<from>`.. to SoftHSMv2's token through PKCS#11.
pub(crate) fn populate_p11(t: &Target, from: usize, count: usize) {
    let s = session(t);
    for n in from..from + count {
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Label(find_label(n).into_bytes()),
            ],
        )
        .expect("AES key");
    }
}

/// Lookups by label per second, each a C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal
/// round for one of `n` labels that matches exactly one object.
pub(crate) fn find_rate(t: &Target, n: usize, threads: usize, secs: f64) -> f64 {
    let (p11, slot) = (t.p11.clone(), t.slot);
    rate(
        threads,
        secs,
        move || p11.open_ro_session(slot).expect("session"),
        move |s: &mut Session, i| {
            let label = find_label((i as usize).wrapping_mul(7919) % n);
            let found = s
                .find_objects(&[Attribute::Label(label.into_bytes())])
                .expect("find");
            assert_eq!(found.len(), 1, "one object per label");
        },
    )
}
