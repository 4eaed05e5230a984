//! Parsers of outside input, fed hostile bytes: they must return an error, never panic, and
//! never accept a damaged input. (Property tests; a libFuzzer target can reuse the same calls.)

use std::path::Path;

use ferrohsm_core::ped::{ImprintRequest, LocalPed, Ped, PedAnswers};
use ferrohsm_core::pedkey::{PedKey, SecretType};
use ferrohsm_core::secret::Secret32;
use proptest::prelude::*;

fn valid_key() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("k.pedkey");
    LocalPed::new(PedAnswers {
        keys: vec![p.clone()],
        m: 1,
        n: 1,
        ..Default::default()
    })
    .imprint(
        &ImprintRequest {
            secret_type: SecretType::CryptoOfficer,
            label: "co".into(),
            origin_serial: "FH1".into(),
            allow_m_of_n: true,
        },
        Secret32::random(),
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ped_key_parser_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = PedKey::from_bytes(Path::new("fuzz"), &bytes);
    }

    #[test]
    fn ped_key_with_any_byte_changed_is_rejected(pos in any::<prop::sample::Index>(), delta in 1u8..=255) {
        let orig = valid_key();
        let mut b = orig.clone();
        let i = pos.index(b.len());
        b[i] = b[i].wrapping_add(delta);
        // Only insignificant JSON whitespace may change and still parse, to the same key.
        if let Ok(k) = PedKey::from_bytes(Path::new("fuzz"), &b) {
            prop_assert!(orig[i].is_ascii_whitespace() && b[i].is_ascii_whitespace(),
                "a changed significant byte at {} was accepted", i);
            let o = PedKey::from_bytes(Path::new("fuzz"), &orig).unwrap();
            prop_assert_eq!(k.info, o.info);
            prop_assert_eq!(k.value, o.value);
        }
    }

    #[test]
    fn audit_export_parser_and_verifier_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(ex) = ferrohsm_audit::Export::from_bytes(&bytes) {
            let _ = ferrohsm_audit::verify_export(&ex, &Default::default());
        }
    }

    #[test]
    fn audit_export_json_with_hostile_fields_never_panics(
        size in any::<u64>(), seq in any::<u64>(), proof_len in 0usize..80, n_records in 0usize..4)
    {
        let rec = format!(r#"{{"seq":{seq},"time":"t","serial":"s","event":"e","role":"r","partition":null,"object":null,"outcome":"o"}}"#);
        let proof: Vec<String> = (0..proof_len).map(|_| "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string()).collect();
        let records: Vec<serde_json::Value> = (0..n_records).map(|_| serde_json::json!({"record": rec, "proof": proof})).collect();
        let doc = serde_json::json!({
            "format": "ferrohsm-audit-export", "version": 1, "origin": "o",
            "public_key": "x+00000000+AQ==",
            "checkpoint": format!("o\n{size}\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} x AAAA\n"),
            "records": records, "earlier": []
        });
        let ex = ferrohsm_audit::Export::from_bytes(doc.to_string().as_bytes()).unwrap();
        prop_assert!(ferrohsm_audit::verify_export(&ex, &Default::default()).is_err());
    }
}
