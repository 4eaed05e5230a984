//! The PED: the authenticator front end that runs the dialogue of an imprint (reuse? M and N?
//! overwrite? PIN? duplicate?) and reads keys back when a role logs in.
//!
//! The engine talks to any PED through [`Ped`]; [`LocalPed`] is the one that reads and writes
//! key files on this machine. The answers it needs come from [`PedAnswers`], filled from
//! command-line flags or from a person at a terminal; the rare question that depends on what a
//! key holds (overwrite?) goes to a confirmation callback.

use std::path::{Path, PathBuf};

use crate::crypto::random_hex_id;
use crate::error::{HsmError, Result};
use crate::pedkey::{PedKey, PedKeyInfo, SecretType, ShareInfo, FORMAT, VERSION};
use crate::secret::{Pin, Secret32, SecretBytes};
use crate::shamir;

/// What the HSM asks the PED to imprint.
#[derive(Clone, Debug)]
pub struct ImprintRequest {
    /// The kind of secret (fixes the colour).
    pub secret_type: SecretType,
    /// Text written on the key, e.g. "Partition SO of payments".
    pub label: String,
    /// Serial of the HSM asking.
    pub origin_serial: String,
    /// Whether policy allows splitting (M of N other than 1 of 1).
    pub allow_m_of_n: bool,
}

/// What the PED imprinted: the secret the HSM must now accept.
#[derive(Debug)]
pub struct Imprinted {
    /// The role or domain secret (whole, rebuilt from shares if split).
    pub secret: Secret32,
    /// Identifies the secret across shares, duplicates and HSMs.
    pub secret_id: String,
    /// Serial of the HSM that first made the secret.
    pub origin_serial: String,
    /// Shares needed.
    pub m: u8,
    /// Shares made.
    pub n: u8,
    /// PED PIN to mix in, if one was chosen (or typed, when reusing a PIN-protected key).
    pub pin: Option<Pin>,
    /// Whether an existing key's secret was reused instead of a new one.
    pub reused: bool,
    /// Files written (shares, then duplicates); empty when reusing without duplicates.
    pub written: Vec<PathBuf>,
}

/// What the HSM asks for at login.
#[derive(Clone, Debug)]
pub struct PresentRequest {
    /// The type of secret the role needs.
    pub secret_type: SecretType,
    /// The role, for messages ("HSM SO", "Crypto Officer of payments").
    pub role: String,
}

/// A secret rebuilt from presented keys.
#[derive(Clone, Debug)]
pub struct Presented {
    /// The rebuilt secret.
    pub secret: Secret32,
    /// Which secret the keys say they hold.
    pub secret_id: String,
    /// Label written on the first key (for messages).
    pub label: String,
    /// Origin HSM of the secret.
    pub origin_serial: String,
    /// The PED PIN typed, if the keys are PIN-protected.
    pub pin: Option<Pin>,
}

/// A PED: local (key files) or, later, remote.
pub trait Ped {
    /// Runs the imprint dialogue. `fresh` is a new secret generated inside the HSM; the PED
    /// writes it to keys unless the operator chose to reuse an existing key's secret.
    fn imprint(&mut self, req: &ImprintRequest, fresh: Secret32) -> Result<Imprinted>;
    /// Reads the keys for a login and rebuilds the secret (checks colour, set, duplicates, M).
    fn present(&mut self, req: &PresentRequest) -> Result<Presented>;
}

/// The operator's answers to the PED dialogue.
#[derive(Clone, Debug)]
pub struct PedAnswers {
    /// Key files: read when presenting or reusing; written when imprinting a new secret.
    pub keys: Vec<PathBuf>,
    /// Reuse the secret already on `keys` instead of generating one.
    pub reuse: bool,
    /// Shares needed (imprint of a new secret).
    pub m: u8,
    /// Shares made (imprint of a new secret).
    pub n: u8,
    /// PED PIN: the new PIN when imprinting, the PIN to type when presenting or reusing.
    pub pin: Option<Pin>,
    /// Allow writing over keys that already hold a secret.
    pub overwrite: bool,
    /// Extra copies to write of each key (named `<stem>.copyK.pedkey`).
    pub duplicates: u8,
}

impl Default for PedAnswers {
    fn default() -> Self {
        PedAnswers {
            keys: Vec::new(),
            reuse: false,
            m: 1,
            n: 1,
            pin: None,
            overwrite: false,
            duplicates: 0,
        }
    }
}

/// Asked when a target key already holds a secret; returns whether to overwrite.
pub type ConfirmOverwrite = Box<dyn FnMut(&Path, &PedKeyInfo) -> bool>;

/// A PED over key files on this machine.
pub struct LocalPed {
    answers: PedAnswers,
    confirm: Option<ConfirmOverwrite>,
}

impl LocalPed {
    /// The answers it works from (the key files and the PIN).
    pub fn answers(&self) -> &PedAnswers {
        &self.answers
    }

    /// A PED that answers from `answers` alone (scripts, tests).
    pub fn new(answers: PedAnswers) -> Self {
        LocalPed {
            answers,
            confirm: None,
        }
    }

    /// Adds a person to ask before overwriting an occupied key.
    pub fn with_confirm(mut self, confirm: ConfirmOverwrite) -> Self {
        self.confirm = Some(confirm);
        self
    }

    /// Checks (asking, when someone is there) that the keys the imprint would write may be
    /// written: the keys and their copies, or only the copies when a secret is reused.
    pub fn check_targets(&mut self) -> Result<()> {
        let a = &self.answers;
        let mut targets = if a.reuse { Vec::new() } else { a.keys.clone() };
        for k in &a.keys {
            targets.extend((1..=a.duplicates).map(|d| duplicate_path(k, d)));
        }
        self.check_writable(&targets)
    }

    fn check_writable(&mut self, targets: &[PathBuf]) -> Result<()> {
        for t in targets {
            let existing = match PedKey::read(t) {
                Ok(None) => continue,
                Ok(Some(k)) => Some(k.info),
                // A damaged file is still occupied: never overwrite it silently.
                Err(_) => None,
            };
            if self.answers.overwrite {
                continue;
            }
            let what = existing
                .as_ref()
                .map(|i| i.summary())
                .unwrap_or_else(|| "an unreadable file".into());
            let ok = match (&mut self.confirm, &existing) {
                (Some(ask), Some(info)) => ask(t, info),
                _ => false,
            };
            if !ok {
                return Err(HsmError::Refused(format!(
                    "key {} already holds {what}; pass --overwrite (or answer yes) to replace it",
                    t.display()
                )));
            }
        }
        Ok(())
    }
}

/// The default PED key file prefix for a secret, shared by every front end:
/// `<serial>-hsm-so`, `<serial>-domain`, `<serial>-<partition>-co`, … (the files are
/// `<prefix>-1.pedkey` to `<prefix>-N.pedkey`; partition labels are made file-name safe).
pub fn default_key_prefix(serial: &str, partition: Option<&str>, what: &str) -> String {
    let safe = |l: &str| -> String {
        l.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    match partition {
        Some(p) => format!("{serial}-{}-{what}", safe(p)),
        None => format!("{serial}-{what}"),
    }
}

/// The existing default key files for a prefix, in share order (what a PED finds "inserted").
pub fn default_keys(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (1..=shamir::MAX_SHARES)
        .map(|i| dir.join(format!("{prefix}-{i}.pedkey")))
        .filter(|p| p.exists())
        .collect()
}

/// Where copy `k` (1-based) of a key file goes: `dir/stem.copyK.pedkey`.
pub fn duplicate_path(key: &Path, k: u8) -> PathBuf {
    let stem = key.file_stem().and_then(|s| s.to_str()).unwrap_or("key");
    key.with_file_name(format!("{stem}.copy{k}.pedkey"))
}

/// Reads key files and rebuilds the secret they hold, checking that they are of `want` type,
/// of one secret and one split, without duplicates, and at least M of them.
pub fn read_set(
    paths: &[PathBuf],
    want: SecretType,
    role: &str,
) -> Result<(Vec<PedKey>, Secret32)> {
    if paths.is_empty() {
        return Err(HsmError::InvalidInput(format!(
            "{role} needs a {} key; name the key file(s) with --key",
            want.describe()
        )));
    }
    let mut keys = Vec::with_capacity(paths.len());
    for p in paths {
        let k = PedKey::read(p)?.ok_or_else(|| {
            HsmError::InvalidInput(format!(
                "{}: no key there (a blank key holds no secret)",
                p.display()
            ))
        })?;
        keys.push(k);
    }
    rebuild_set(paths, keys, want, role)
}

/// [`read_set`] for keys already parsed (`paths` name them in messages, one per key).
pub fn rebuild_set(
    paths: &[PathBuf],
    keys: Vec<PedKey>,
    want: SecretType,
    role: &str,
) -> Result<(Vec<PedKey>, Secret32)> {
    if keys.is_empty() || keys.len() != paths.len() {
        return Err(HsmError::InvalidInput(format!(
            "{role} needs a {} key; present the key file(s)",
            want.describe()
        )));
    }
    for (p, k) in paths.iter().zip(&keys) {
        if k.info.secret_type != want {
            return Err(HsmError::WrongKey(format!(
                "{} holds a {} secret; {role} needs a {} secret",
                p.display(),
                k.info.secret_type.describe(),
                want.describe()
            )));
        }
    }
    let first = keys[0].info.clone();
    for (p, k) in paths.iter().zip(&keys).skip(1) {
        if k.info.secret_id != first.secret_id || k.info.share.set_id != first.share.set_id {
            return Err(HsmError::InvalidInput(format!(
                "{} is a share of another set (\"{}\") than {} (\"{}\"); shares of different sets never combine",
                p.display(), k.info.label, paths[0].display(), first.label
            )));
        }
        if (k.info.share.m, k.info.share.n) != (first.share.m, first.share.n) {
            return Err(HsmError::InvalidInput(format!(
                "{} disagrees on M of N with {}",
                p.display(),
                paths[0].display()
            )));
        }
    }
    for (i, k) in keys.iter().enumerate() {
        if let Some(j) = keys[..i]
            .iter()
            .position(|o| o.info.share.index == k.info.share.index)
        {
            return Err(HsmError::InvalidInput(format!(
                "{} and {} are the same share ({} of {}); each share counts once",
                paths[j].display(),
                paths[i].display(),
                k.info.share.index,
                k.info.share.n
            )));
        }
    }
    let m = first.share.m as usize;
    if keys.len() < m {
        return Err(HsmError::InvalidInput(format!(
            "{role} is split {} of {}: {} key(s) presented, {} needed",
            first.share.m,
            first.share.n,
            keys.len(),
            m
        )));
    }
    let secret = if m == 1 {
        Secret32::from_slice(keys[0].value.expose())?
    } else {
        let parts: Vec<(u8, &[u8])> = keys[..m]
            .iter()
            .map(|k| (k.info.share.index, k.value.expose()))
            .collect();
        let whole = shamir::combine(&parts)?;
        Secret32::from_slice(&whole)?
    };
    Ok((keys, secret))
}

impl Ped for LocalPed {
    fn imprint(&mut self, req: &ImprintRequest, fresh: Secret32) -> Result<Imprinted> {
        let a = self.answers.clone();
        let reused = match a.reuse {
            true => Some(read_set(&a.keys, req.secret_type, "reuse")?),
            false => None,
        };
        imprint_keys(
            &a,
            req,
            fresh,
            reused,
            &mut |targets| self.check_writable(targets),
            &mut |path, key| key.write(path),
        )
    }

    fn present(&mut self, req: &PresentRequest) -> Result<Presented> {
        let (keys, secret) = read_set(&self.answers.keys, req.secret_type, &req.role)?;
        presented(&keys, secret, self.answers.pin.clone(), &req.role)
    }
}

/// The imprint dialogue over any key storage: reuses the keys in `reused` (already read and
/// checked) or splits `fresh` into M of N new keys, checks the targets with `check_writable`,
/// and hands each key (and its duplicates) to `write`.
fn imprint_keys(
    a: &PedAnswers,
    req: &ImprintRequest,
    fresh: Secret32,
    reused: Option<(Vec<PedKey>, Secret32)>,
    check_writable: &mut dyn FnMut(&[PathBuf]) -> Result<()>,
    write: &mut dyn FnMut(&Path, &PedKey) -> Result<()>,
) -> Result<Imprinted> {
    if let Some((keys, secret)) = reused {
        let info = keys[0].info.clone();
        if info.pin_protected && a.pin.is_none() {
            return Err(HsmError::InvalidInput(
                "the reused key is PED PIN protected; give its PIN with --pin".into(),
            ));
        }
        let mut written = Vec::new();
        if a.duplicates > 0 {
            let copies: Vec<PathBuf> = a
                .keys
                .iter()
                .flat_map(|k| (1..=a.duplicates).map(move |d| duplicate_path(k, d)))
                .collect();
            check_writable(&copies)?;
            for (k, key) in a.keys.iter().zip(&keys) {
                for d in 1..=a.duplicates {
                    let c = duplicate_path(k, d);
                    write(&c, key)?;
                    written.push(c);
                }
            }
        }
        return Ok(Imprinted {
            secret,
            secret_id: info.secret_id,
            origin_serial: info.origin_serial,
            m: info.share.m,
            n: info.share.n,
            pin: if info.pin_protected {
                a.pin.clone()
            } else {
                None
            },
            reused: true,
            written,
        });
    }

    shamir::check_m_of_n(a.m, a.n)?;
    if (a.m, a.n) != (1, 1) && !req.allow_m_of_n {
        return Err(HsmError::Refused(
            "M of N is disabled by HSM policy (m-of-n=off)".into(),
        ));
    }
    if a.keys.len() != a.n as usize {
        return Err(HsmError::InvalidInput(format!(
            "{} of {} needs {} key file(s); {} given",
            a.m,
            a.n,
            a.n,
            a.keys.len()
        )));
    }
    for (i, k) in a.keys.iter().enumerate() {
        if a.keys[..i].contains(k) {
            return Err(HsmError::InvalidInput(format!(
                "key file {} named twice",
                k.display()
            )));
        }
    }
    let mut targets = a.keys.clone();
    for k in &a.keys {
        targets.extend((1..=a.duplicates).map(|d| duplicate_path(k, d)));
    }
    check_writable(&targets)?;

    let secret_id = random_hex_id(16);
    let set_id = random_hex_id(16);
    let values: Vec<SecretBytes> = if a.n == 1 {
        vec![SecretBytes::new(fresh.expose().to_vec())]
    } else {
        shamir::split(fresh.expose(), a.m, a.n, crate::crypto::fill_random)?
            .into_iter()
            .map(|z| SecretBytes::new(z.to_vec()))
            .collect()
    };
    let created = crate::time::now_rfc3339();
    let mut written = Vec::new();
    for (i, (path, value)) in a.keys.iter().zip(values).enumerate() {
        let key = PedKey {
            info: PedKeyInfo {
                format: FORMAT.into(),
                version: VERSION,
                colour: req.secret_type.colour(),
                secret_type: req.secret_type,
                origin_serial: req.origin_serial.clone(),
                secret_id: secret_id.clone(),
                label: req.label.clone(),
                share: ShareInfo {
                    set_id: set_id.clone(),
                    index: i as u8 + 1,
                    m: a.m,
                    n: a.n,
                },
                pin_protected: a.pin.is_some(),
                created: created.clone(),
            },
            value,
        };
        write(path, &key)?;
        written.push(path.clone());
        for d in 1..=a.duplicates {
            let c = duplicate_path(path, d);
            write(&c, &key)?;
            written.push(c);
        }
    }
    Ok(Imprinted {
        secret: fresh,
        secret_id,
        origin_serial: req.origin_serial.clone(),
        m: a.m,
        n: a.n,
        pin: a.pin.clone(),
        reused: false,
        written,
    })
}

/// A PED for a front end on the other side of the API (a client of the server, or the CLI
/// through [`crate::api::Embedded`]): it imprints into memory, and the front end writes the
/// key files it returns; a reused secret comes from the key files' bytes the front end sent.
/// The front end checked (and asked about) overwriting its files before it asked.
pub struct WirePed {
    answers: PedAnswers,
    existing: Vec<(PathBuf, zeroize::Zeroizing<Vec<u8>>)>,
    files: Vec<(PathBuf, zeroize::Zeroizing<Vec<u8>>)>,
}

impl WirePed {
    /// The dialogue's answers (key names as the front end will write them) and, to reuse a
    /// secret, the bytes of its keys.
    pub fn new(
        answers: PedAnswers,
        existing: Vec<(PathBuf, zeroize::Zeroizing<Vec<u8>>)>,
    ) -> WirePed {
        WirePed {
            answers,
            existing,
            files: Vec::new(),
        }
    }

    /// The key files the imprint made: (name, bytes), each a secret share to write once.
    pub fn take_files(&mut self) -> Vec<(PathBuf, zeroize::Zeroizing<Vec<u8>>)> {
        std::mem::take(&mut self.files)
    }
}

impl Ped for WirePed {
    fn imprint(&mut self, req: &ImprintRequest, fresh: Secret32) -> Result<Imprinted> {
        let a = self.answers.clone();
        let reused = match a.reuse {
            true => {
                let mut names = Vec::with_capacity(self.existing.len());
                let mut keys = Vec::with_capacity(self.existing.len());
                for (name, bytes) in &self.existing {
                    keys.push(PedKey::from_bytes(name, bytes)?);
                    names.push(name.clone());
                }
                Some(rebuild_set(&names, keys, req.secret_type, "reuse")?)
            }
            false => None,
        };
        let files = &mut self.files;
        imprint_keys(&a, req, fresh, reused, &mut |_| Ok(()), &mut |path, key| {
            files.push((path.to_path_buf(), key.to_bytes()));
            Ok(())
        })
    }

    fn present(&mut self, _req: &PresentRequest) -> Result<Presented> {
        Err(HsmError::InvalidInput(
            "this PED imprints new keys; a login presents its keys as a credential".into(),
        ))
    }
}

/// Copies keys (one key, or a whole M-of-N set) to new files that work identically. Each
/// source is verified first; targets that hold a secret are refused unless `overwrite`.
pub fn duplicate_keys(
    from: &[PathBuf],
    to: &[PathBuf],
    overwrite: bool,
) -> Result<Vec<PedKeyInfo>> {
    if from.len() != to.len() || from.is_empty() {
        return Err(HsmError::InvalidInput(format!(
            "give as many target files as source keys ({} source, {} target)",
            from.len(),
            to.len()
        )));
    }
    let mut keys = Vec::new();
    for f in from {
        keys.push(
            PedKey::read(f)?
                .ok_or_else(|| HsmError::InvalidInput(format!("{}: no key there", f.display())))?,
        );
    }
    let mut ped = LocalPed::new(PedAnswers {
        overwrite,
        ..Default::default()
    });
    ped.check_writable(to)?;
    // Each copy is written whole or not at all ([`PedKey::write`]); the sources never change.
    for (k, t) in keys.iter().zip(to) {
        k.write(t)?;
        crate::crash_point("duplicate-wrote");
    }
    Ok(keys.into_iter().map(|k| k.info.clone()).collect())
}

/// A PED whose keys were read elsewhere (by a client, which sent the files' bytes to the
/// server): it presents them for a login and imprints nothing.
pub struct PresentedPed {
    keys: Vec<(PathBuf, zeroize::Zeroizing<Vec<u8>>)>,
    pin: Option<Pin>,
}

impl PresentedPed {
    /// Keys as (name for messages, file bytes), and the PED PIN typed with them.
    pub fn new(keys: Vec<(PathBuf, zeroize::Zeroizing<Vec<u8>>)>, pin: Option<Pin>) -> Self {
        PresentedPed { keys, pin }
    }
}

impl Ped for PresentedPed {
    fn imprint(&mut self, _req: &ImprintRequest, _fresh: Secret32) -> Result<Imprinted> {
        Err(HsmError::InvalidInput(
            "presented PED keys log in; imprinting new keys is a new credential's PED dialogue"
                .into(),
        ))
    }

    fn present(&mut self, req: &PresentRequest) -> Result<Presented> {
        let mut names = Vec::with_capacity(self.keys.len());
        let mut keys = Vec::with_capacity(self.keys.len());
        for (name, bytes) in &self.keys {
            keys.push(PedKey::from_bytes(name, bytes)?);
            names.push(name.clone());
        }
        let (keys, secret) = rebuild_set(&names, keys, req.secret_type, &req.role)?;
        presented(&keys, secret, self.pin.clone(), &req.role)
    }
}

/// What a set of keys presents, with the PED PIN when they are PIN-protected.
fn presented(keys: &[PedKey], secret: Secret32, pin: Option<Pin>, role: &str) -> Result<Presented> {
    let info = &keys[0].info;
    if info.pin_protected && pin.is_none() {
        return Err(HsmError::InvalidInput(format!(
            "the {role} key is PED PIN protected; give the PIN with --pin"
        )));
    }
    Ok(Presented {
        secret,
        secret_id: info.secret_id.clone(),
        label: info.label.clone(),
        origin_serial: info.origin_serial.clone(),
        pin: if info.pin_protected { pin } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(t: SecretType) -> ImprintRequest {
        ImprintRequest {
            secret_type: t,
            label: "test".into(),
            origin_serial: "FH1".into(),
            allow_m_of_n: true,
        }
    }

    #[test]
    fn two_of_three_any_two_rebuild_and_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        let keys: Vec<PathBuf> = (1..=3)
            .map(|i| d.path().join(format!("so-{i}.pedkey")))
            .collect();
        let fresh = Secret32::random();
        let want = fresh.clone();
        let mut ped = LocalPed::new(PedAnswers {
            keys: keys.clone(),
            m: 2,
            n: 3,
            ..Default::default()
        });
        let out = ped.imprint(&req(SecretType::So), fresh).unwrap();
        assert_eq!(out.written.len(), 3);
        for pair in [[0, 1], [2, 0], [1, 2]] {
            let sel: Vec<PathBuf> = pair.iter().map(|&i| keys[i].clone()).collect();
            let (_, s) = read_set(&sel, SecretType::So, "t").unwrap();
            assert_eq!(s, want);
        }
        let e = read_set(&keys[..1], SecretType::So, "t").unwrap_err();
        assert!(
            e.to_string().contains("1 key(s) presented, 2 needed"),
            "{e}"
        );
        let e = read_set(&[keys[0].clone(), keys[0].clone()], SecretType::So, "t").unwrap_err();
        assert!(e.to_string().contains("same share"), "{e}");
    }

    #[test]
    fn share_from_another_set_and_wrong_colour_refused() {
        let d = tempfile::tempdir().unwrap();
        let a: Vec<PathBuf> = (1..=2).map(|i| d.path().join(format!("a{i}"))).collect();
        let b: Vec<PathBuf> = (1..=2).map(|i| d.path().join(format!("b{i}"))).collect();
        LocalPed::new(PedAnswers {
            keys: a.clone(),
            m: 2,
            n: 2,
            ..Default::default()
        })
        .imprint(&req(SecretType::So), Secret32::random())
        .unwrap();
        LocalPed::new(PedAnswers {
            keys: b.clone(),
            m: 2,
            n: 2,
            ..Default::default()
        })
        .imprint(&req(SecretType::So), Secret32::random())
        .unwrap();
        let e = read_set(&[a[0].clone(), b[1].clone()], SecretType::So, "t").unwrap_err();
        assert!(e.to_string().contains("another set"), "{e}");
        let e = read_set(&a, SecretType::Domain, "domain").unwrap_err();
        assert!(matches!(e, HsmError::WrongKey(_)));
        assert!(
            e.to_string().contains("blue (security officer)")
                && e.to_string().contains("red (cloning domain)"),
            "{e}"
        );
    }

    #[test]
    fn overwrite_refused_unless_confirmed_and_says_what_key_holds() {
        let d = tempfile::tempdir().unwrap();
        let k = vec![d.path().join("k")];
        LocalPed::new(PedAnswers {
            keys: k.clone(),
            ..Default::default()
        })
        .imprint(&req(SecretType::Domain), Secret32::random())
        .unwrap();
        let before = std::fs::read(&k[0]).unwrap();
        let e = LocalPed::new(PedAnswers {
            keys: k.clone(),
            ..Default::default()
        })
        .imprint(&req(SecretType::So), Secret32::random())
        .unwrap_err();
        assert!(e.to_string().contains("red (cloning domain)"), "{e}");
        assert_eq!(
            std::fs::read(&k[0]).unwrap(),
            before,
            "refused imprint changed the key"
        );
        // A person saying yes allows it.
        LocalPed::new(PedAnswers {
            keys: k.clone(),
            ..Default::default()
        })
        .with_confirm(Box::new(|_, _| true))
        .imprint(&req(SecretType::So), Secret32::random())
        .unwrap();
        assert_ne!(std::fs::read(&k[0]).unwrap(), before);
    }

    #[test]
    fn reuse_takes_existing_secret_and_duplicates_work() {
        let d = tempfile::tempdir().unwrap();
        let k = vec![d.path().join("dom")];
        let first = LocalPed::new(PedAnswers {
            keys: k.clone(),
            duplicates: 1,
            ..Default::default()
        })
        .imprint(&req(SecretType::Domain), Secret32::random())
        .unwrap();
        assert_eq!(first.written.len(), 2);
        let copy = duplicate_path(&k[0], 1);
        let again = LocalPed::new(PedAnswers {
            keys: vec![copy],
            reuse: true,
            ..Default::default()
        })
        .imprint(&req(SecretType::Domain), Secret32::random())
        .unwrap();
        assert!(again.reused);
        assert_eq!(again.secret, first.secret);
        assert_eq!(again.secret_id, first.secret_id);
        let e = LocalPed::new(PedAnswers {
            keys: k,
            reuse: true,
            ..Default::default()
        })
        .imprint(&req(SecretType::CryptoOfficer), Secret32::random())
        .unwrap_err();
        assert!(
            e.to_string().contains("red (cloning domain)")
                && e.to_string().contains("black (Crypto Officer)"),
            "{e}"
        );
    }
}
