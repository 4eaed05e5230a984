//! `ferrohsm gp` as an issuer's operator uses it, through a real server: a simulated card and
//! the custodians' component files of its transport keys, the ceremony that imports them,
//! master keys generated inside, the card personalised over a secure channel the HSM
//! computes, and the check values that prove it; then the mistakes and attacks.

mod support;

use std::process::Output;

use support::Lab;

fn run(lab: &Lab, args: &[&str]) -> Output {
    lab.cli().args(args).output().unwrap()
}

fn ok(lab: &Lab, args: &[&str]) -> String {
    let o = run(lab, args);
    assert!(
        o.status.success(),
        "ferrohsm {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn co<'a>(sock: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--server", sock];
    v.extend_from_slice(args);
    v.extend(["--partition", "app", "--password", "env:CO_PW"]);
    v
}

/// `gp master import` of set `set` of `key_type` from two custodians' component files.
fn import(lab: &Lab, sock: &str, set: &str, key_type: &str, files: [&str; 2]) -> Output {
    run(
        lab,
        &co(
            sock,
            &[
                "gp",
                "master",
                "import",
                "--set",
                set,
                "--type",
                key_type,
                "--population",
                "vendor batch 7",
                "--component",
                files[0],
                "--component",
                files[1],
            ],
        ),
    )
}

#[test]
fn a_card_is_personalised_through_the_server_and_mistakes_change_nothing() {
    let lab = Lab::new();
    let sock = lab.socket().display().to_string();
    let _server = lab.start();
    let made = ok(
        &lab,
        &[
            "gp",
            "sim-card",
            "new",
            "--out",
            "card.json",
            "--scp",
            "2",
            "--components",
            "cer",
        ],
    );
    assert!(made.contains("des3 transport keys"), "{made}");
    let kdd = {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(lab.tmp.path().join("card.json")).unwrap())
                .unwrap();
        v["kdd"].as_str().unwrap().to_string()
    };
    // A mistyped component: refused, nothing stored.
    let a = lab.tmp.path().join("cer/custodian-a.json");
    let good = std::fs::read_to_string(&a).unwrap();
    let mut comps: serde_json::Value = serde_json::from_str(&good).unwrap();
    let v = comps[1]["value"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", if &v[..1] == "0" { "1" } else { "0" }, &v[1..]);
    comps[1]["value"] = flipped.into();
    std::fs::write(lab.tmp.path().join("typo.json"), comps.to_string()).unwrap();
    let import = |files: [&str; 2]| import(&lab, &sock, "transport", "des3", files);
    let o = import(["typo.json", "cer/custodian-b.json"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("component 1 of the mac key does not match its check value"),
        "{e}"
    );
    let listed = ok(&lab, &co(&sock, &["--json", "gp", "master", "list"]));
    assert!(!listed.contains("transport"), "{listed}");
    // The ceremony, right; the issuer's masters generated inside.
    let o = import(["cer/custodian-a.json", "cer/custodian-b.json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(
        &lab,
        &co(
            &sock,
            &[
                "gp",
                "master",
                "generate",
                "--set",
                "issuer",
                "--type",
                "des3",
                "--population",
                "cards 2026",
            ],
        ),
    );
    // Personalised: transport keys replaced by this card's VISA2 keys, proved by a new channel.
    let card_before = std::fs::read(lab.tmp.path().join("card.json")).unwrap();
    let out = ok(
        &lab,
        &co(
            &sock,
            &[
                "gp",
                "personalise",
                "--card",
                "card.json",
                "--from",
                "transport",
                "--to",
                "issuer",
                "--method",
                "visa2",
                "--level",
                "c-mac,c-dec,r-mac",
            ],
        ),
    );
    assert!(out.contains("proved"), "{out}");
    assert_ne!(
        std::fs::read(lab.tmp.path().join("card.json")).unwrap(),
        card_before
    );
    // The card checked the same check values the HSM gives for this card's keys.
    let div = ok(
        &lab,
        &co(
            &sock,
            &[
                "gp",
                "diversify",
                "--set",
                "issuer",
                "--method",
                "visa2",
                "--kdd",
                &kdd,
            ],
        ),
    );
    let kcvs: Vec<&str> = div
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(kcvs.len(), 3, "{div}");
    assert!(out.contains(&kcvs.join(" ")), "{out}\n{div}");
    // The transport keys no longer open the card: refused (exit 4), the card unchanged.
    let card_after = std::fs::read(lab.tmp.path().join("card.json")).unwrap();
    let o = run(
        &lab,
        &co(
            &sock,
            &[
                "gp",
                "personalise",
                "--card",
                "card.json",
                "--from",
                "transport",
                "--to",
                "issuer",
                "--method",
                "visa2",
            ],
        ),
    );
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not hold these keys"));
    assert_eq!(
        std::fs::read(lab.tmp.path().join("card.json")).unwrap(),
        card_after
    );
    // Check values, each with its method named.
    let k = ok(
        &lab,
        &co(&sock, &["gp", "kcv", "--set", "issuer", "--role", "dek"]),
    );
    assert!(k.trim().ends_with("(des3-zeros)"), "{k}");
}

/// Every kind of well-known value on the list, entered by a key ceremony at the command line
/// (whatever the components that make it up), is refused and nothing is stored.
#[test]
fn a_ceremony_of_a_well_known_key_is_refused_at_the_command_line() {
    use ferrohsm_gp::block::{Key, KeyType};
    use ferrohsm_gp::kcv::{kcv, KcvMethod};
    let lab = Lab::new();
    let sock = lab.socket().display().to_string();
    let _server = lab.start();
    let random = |n: usize| {
        let mut b = vec![0u8; n];
        ferrohsm_core::crypto::fill_random(&mut b);
        b
    };
    for (i, (spec, value)) in ferrohsm_core::weak_keys::samples().into_iter().enumerate() {
        let kind = match spec {
            ferrohsm_core::mechanism::KeySpec::Des3 => KeyType::Des3,
            _ => KeyType::aes(value.len()).unwrap(),
        };
        let m = KcvMethod::gp_default(kind);
        // Two custodians' files: random ENC and DEK, the well-known value as MAC.
        let (mut a, mut b) = (vec![], vec![]);
        for role in ["enc", "mac", "dek"] {
            let whole = if role == "mac" {
                value.clone()
            } else {
                random(kind.key_len())
            };
            let ca = random(kind.key_len());
            let cb: Vec<u8> = ca.iter().zip(&whole).map(|(x, y)| x ^ y).collect();
            for (list, c) in [(&mut a, ca), (&mut b, cb)] {
                let check = kcv(&Key::new(kind, &c).unwrap(), m).unwrap();
                list.push(serde_json::json!({
                    "role": role,
                    "value": hex::encode(&c),
                    "kcv": hex::encode(check),
                }));
            }
        }
        for (name, list) in [("weak-a.json", a), ("weak-b.json", b)] {
            std::fs::write(
                lab.tmp.path().join(name),
                serde_json::to_vec(&list).unwrap(),
            )
            .unwrap();
        }
        let set = format!("weak{i}");
        let o = import(
            &lab,
            &sock,
            &set,
            kind.name(),
            ["weak-a.json", "weak-b.json"],
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && e.contains("well known"),
            "{spec:?}: {e}"
        );
    }
    let listed = ok(&lab, &co(&sock, &["--json", "gp", "master", "list"]));
    assert!(!listed.contains("weak"), "{listed}");
}
