//! Human and JSON output.

use ferrohsm_core::hsm::{HsmInfo, PartitionInfo, RoleInfo};
use ferrohsm_core::object::ObjectInfo;
use serde::Serialize;

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ferrohsm: cannot encode output: {e}"),
    }
}

fn role_line(r: &RoleInfo) -> String {
    let mut s = format!("{:<7} {}", r.role, r.auth);
    if r.failed_logins > 0 {
        s.push_str(&format!(", {} failed login(s)", r.failed_logins));
    }
    if r.locked {
        s.push_str(", LOCKED");
    }
    if r.activated {
        s.push_str(", activated");
    }
    s
}

/// One partition in detail.
pub fn partition(p: &PartitionInfo) {
    println!("partition {} (id {}, PKCS#11 slot {})", p.label, p.id, p.id);
    println!(
        "  state:    {}",
        if p.initialised {
            "initialised"
        } else {
            "created (not initialised)"
        }
    );
    match &p.domain {
        Some(d) if d == "hsm" => println!("  domain:   the HSM's cloning domain"),
        Some(d) => println!("  domain:   own cloning domain {d}"),
        None if p.initialised => {
            println!("  domain:   none (this partition can neither clone nor back up)")
        }
        None => {}
    }
    println!("  objects:  {}", p.objects);
    for r in &p.roles {
        println!("  role      {}", role_line(r));
    }
    let pol: Vec<String> = p.policy.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  policy:   {}", pol.join(" "));
}

/// The whole HSM.
pub fn hsm(i: &HsmInfo) {
    println!("HSM {}", i.serial);
    println!("  state:      {}", i.state);
    if let Some(t) = &i.tamper {
        println!("  TAMPER:     {t}");
    }
    if let Some(z) = i.last_zeroized.as_ref().filter(|z| !z.is_empty()) {
        println!("  zeroized:   {z}");
    }
    if let Some(l) = &i.label {
        println!("  label:      {l}");
    }
    if let Some(m) = &i.auth_mode {
        println!(
            "  auth:       {}",
            match m {
                ferrohsm_core::AuthMode::Ped =>
                    "PED-authenticated (PED keys, optional PED PINs, M of N)",
                ferrohsm_core::AuthMode::Password => "password-authenticated",
            }
        );
    }
    if i.backup {
        println!("  role:       backup HSM (keeps partitions' objects, never uses them)");
    }
    if let Some(so) = &i.hsm_so {
        println!(
            "  HSM SO:     {}",
            role_line(so).trim_start_matches("hsm-so").trim()
        );
    }
    if !i.policy.is_empty() {
        let pol: Vec<String> = i.policy.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  policy:     {}", pol.join(" "));
    }
    if i.state == "initialised" {
        println!("  partitions: {}", i.partitions.len());
        for p in &i.partitions {
            partition(p);
        }
    }
}

/// A key list.
pub fn objects(list: &[ObjectInfo]) {
    if list.is_empty() {
        println!("no keys");
        return;
    }
    println!(
        "{:>6}  {:<12} {:<9} {:<24} flags",
        "handle", "class", "type", "label"
    );
    for o in list {
        let a = &o.attrs;
        let mut flags = Vec::new();
        for (on, n) in [
            (a.sign, "sign"),
            (a.verify, "verify"),
            (a.encrypt, "encrypt"),
            (a.decrypt, "decrypt"),
            (a.sensitive, "sensitive"),
            (a.extractable, "extractable"),
            (a.local, "local"),
        ] {
            if on {
                flags.push(n);
            }
        }
        println!(
            "{:>6}  {:<12} {:<9} {:<24} {}",
            o.handle,
            a.class.name(),
            a.spec.map_or_else(|| "-".to_string(), |s| s.to_string()),
            a.label,
            flags.join(",")
        );
    }
}

/// Writes a new file with `mode` (refusing one that exists, so nothing is overwritten), and
/// syncs it.
pub fn write_new(
    path: &std::path::Path,
    data: &[u8],
    mode: u32,
) -> Result<(), ferrohsm_core::HsmError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| ferrohsm_core::HsmError::io(path, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| ferrohsm_core::HsmError::io(path, e))
}
