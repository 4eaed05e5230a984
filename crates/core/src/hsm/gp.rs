//! GlobalPlatform master key sets inside the HSM, and what a card-management system does
//! with them: key check values, card keys diversified from a set (only their check values
//! leave), and secure channels to a card computed here, so that neither the masters nor a
//! card's keys nor a channel's session keys ever leave the boundary. The algorithms are in
//! `ferrohsm-gp`; this module holds the keys, checks role and policy, and audits.
//!
//! A set is three secret keys in the partition (ENC, MAC, DEK) marked with
//! [`crate::object::GpMaster`]: not extractable, not copyable, not modifiable, and with no
//! PKCS#11 usage, so no other mechanism can use them.

use ferrohsm_gp::block::{Key as GpKey, KeyType};
use ferrohsm_gp::channel::KeySet;
use ferrohsm_gp::diversify::{diversify, KeyRole, Method};
use ferrohsm_gp::kcv::{kcv, KcvMethod};
use ferrohsm_gp::GpError;
use serde::{Deserialize, Serialize};

use super::*;
use crate::object::GpMaster;

/// A master key set as listed: never a key value, only check values (method named).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GpSetInfo {
    /// The set's name.
    pub set: String,
    /// Its version.
    pub version: u8,
    /// `des3`, `aes-128`, `aes-192`, `aes-256`.
    pub key_type: String,
    /// The card population it serves.
    pub population: String,
    /// Retired: kept, never used.
    pub retired: bool,
    /// (role, KCV method, KCV hex) for ENC, MAC, DEK.
    pub kcvs: Vec<(String, String, String)>,
}

/// Which keys open a channel or go to a card: a set (its newest live version unless one is
/// named), used as it is (`method` none: a card's transport keys) or diversified for the card
/// by `method`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GpKeysRef {
    /// The set's name.
    pub set: String,
    /// Its version (none: the newest not retired).
    pub version: Option<u8>,
    /// `visa2`, `emv-cps11`, `kdf3`, or none for the set's keys themselves.
    pub method: Option<String>,
}

/// A new master key set: its name, key type, version and card population.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GpNewSet {
    /// The set's name.
    pub set: String,
    /// `des3`, `aes-128`, `aes-192`, `aes-256`.
    pub key_type: String,
    /// 1-127.
    pub version: u8,
    /// The card population it serves.
    pub population: String,
}

impl GpNewSet {
    /// A new set's description.
    pub fn new(set: &str, key_type: &str, version: u8, population: &str) -> GpNewSet {
        GpNewSet {
            set: set.into(),
            key_type: key_type.into(),
            version,
            population: population.into(),
        }
    }
}

/// One component of a key entered in a ceremony: its value and the check value its custodian
/// read out, by the method named.
#[derive(Clone, Serialize, Deserialize)]
pub struct GpComponent {
    /// `enc`, `mac` or `dek`.
    pub role: String,
    /// The component (hex).
    pub value: String,
    /// Its check value (hex).
    pub kcv: String,
}

/// A component's value is wiped wherever one is dropped (a ceremony's request, a parsed file).
impl Drop for GpComponent {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

impl std::fmt::Debug for GpComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpComponent({}, kcv {})", self.role, self.kcv)
    }
}

/// The versions of a set are 1 to 127 (PUT KEY's key version numbers).
const MAX_VERSION: u8 = 0x7f;
pub(super) fn gp_err(e: GpError) -> HsmError {
    match e {
        GpError::Auth(m) => HsmError::Refused(m),
        GpError::Card { sw, what } => {
            HsmError::Refused(format!("the card answered {sw:04X} to {what}"))
        }
        other => HsmError::InvalidInput(other.to_string()),
    }
}

fn spec_of(kind: KeyType) -> KeySpec {
    match kind {
        // Two-key 3DES is kept as a 16-byte secret; it has no PKCS#11 usage anyway.
        KeyType::Des3 => KeySpec::Generic(16),
        KeyType::Aes128 => KeySpec::Aes128,
        KeyType::Aes192 => KeySpec::Aes192,
        KeyType::Aes256 => KeySpec::Aes256,
    }
}

/// The spec the well-known-key list judges a value by (3DES parts compared as 3DES).
fn judged_as(kind: KeyType) -> KeySpec {
    match kind {
        KeyType::Des3 => KeySpec::Des3,
        other => spec_of(other),
    }
}

fn role_of(name: &str) -> Result<KeyRole> {
    KeyRole::ALL
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| HsmError::InvalidInput(format!("unknown key {name:?} (enc, mac, dek)")))
}

fn check_name(what: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.len() > 64 || v.chars().any(char::is_control) {
        return Err(HsmError::InvalidInput(format!(
            "a {what} is 1 to 64 printable characters"
        )));
    }
    Ok(())
}

impl Hsm {
    /// Every GlobalPlatform master key of the partition: (handle, record).
    fn gp_keys(&mut self, id: u32) -> Result<Vec<(u64, ObjectRecord)>> {
        self.store.read(|t| {
            let mut v = Vec::new();
            for h in t.find_handles(id, None, None, Some("secret-key"))? {
                let rec = Self::load(t, id, h)?;
                if rec.attrs.gp.is_some() {
                    v.push((h, rec));
                }
            }
            Ok(v)
        })
    }

    /// The sets of the partition, as listed (Crypto Officer or Crypto User).
    pub fn gp_list(&mut self, s: &Session) -> Result<Vec<GpSetInfo>> {
        let (id, pmk) = self.key_user(s, "listing GlobalPlatform master keys", false)?;
        self.gp_sets(id, &pmk)
    }

    fn gp_sets(&mut self, id: u32, pmk: &Secret32) -> Result<Vec<GpSetInfo>> {
        let mut sets: BTreeMap<(String, u8), GpSetInfo> = BTreeMap::new();
        for (h, rec) in self.gp_keys(id)? {
            let Some(g) = &rec.attrs.gp else { continue };
            let key = Self::gp_key(id, pmk, h, &rec)?;
            let method = KcvMethod::gp_default(key.kind());
            let v = kcv(&key, method).map_err(gp_err)?;
            let e = sets
                .entry((g.set.clone(), g.version))
                .or_insert_with(|| GpSetInfo {
                    set: g.set.clone(),
                    version: g.version,
                    key_type: g.key_type.clone(),
                    population: g.population.clone(),
                    retired: g.retired,
                    kcvs: vec![],
                });
            e.kcvs
                .push((g.role.clone(), method.name().into(), hex::encode_upper(v)));
        }
        let mut out: Vec<GpSetInfo> = sets.into_values().collect();
        for s in &mut out {
            s.kcvs
                .sort_by_key(|(r, _, _)| role_of(r).map(KeyRole::id).unwrap_or(0));
        }
        Ok(out)
    }

    /// One master key's value, for a computation inside the HSM.
    fn gp_key(id: u32, pmk: &Secret32, h: u64, rec: &ObjectRecord) -> Result<GpKey> {
        let g = rec
            .attrs
            .gp
            .as_ref()
            .ok_or_else(|| HsmError::State("not a GlobalPlatform key".into()))?;
        let kind = KeyType::parse(&g.key_type).map_err(gp_err)?;
        let m = Self::open_material(id, pmk, h, rec)?;
        GpKey::new(kind, m.expose()).map_err(gp_err)
    }

    /// The key set `r` names (its newest live version unless one is given), as stored.
    fn gp_set(&mut self, id: u32, pmk: &Secret32, r: &GpKeysRef) -> Result<KeySet> {
        let keys = self.gp_keys(id)?;
        let of_set = |v: Option<u8>| {
            keys.iter().filter(move |(_, rec)| {
                rec.attrs
                    .gp
                    .as_ref()
                    .is_some_and(|g| g.set == r.set && v.is_none_or(|v| g.version == v))
            })
        };
        let version = match r.version {
            Some(v) => v,
            None => of_set(None)
                .filter_map(|(_, rec)| rec.attrs.gp.as_ref())
                .filter(|g| !g.retired)
                .map(|g| g.version)
                .max()
                .ok_or_else(|| {
                    HsmError::NotFound(format!("no live GlobalPlatform key set {:?}", r.set))
                })?,
        };
        let mut found: BTreeMap<u8, GpKey> = BTreeMap::new();
        for (h, rec) in of_set(Some(version)) {
            let g = rec
                .attrs
                .gp
                .as_ref()
                .ok_or_else(|| HsmError::State("gp".into()))?;
            if g.retired {
                return Err(HsmError::Refused(format!(
                    "key set {} version {version} is retired: it is kept, never used",
                    r.set
                )));
            }
            found.insert(role_of(&g.role)?.id(), Self::gp_key(id, pmk, *h, rec)?);
        }
        let mut take = |n: u8| {
            found.remove(&n).ok_or_else(|| {
                HsmError::NotFound(format!(
                    "GlobalPlatform key set {} version {version} not found, or incomplete",
                    r.set
                ))
            })
        };
        let (enc, mac, dek) = (take(1)?, take(2)?, take(3)?);
        KeySet::new(version, enc, mac, dek).map_err(gp_err)
    }

    /// The keys `r` names for the card of `kdd`: the set's own, or diversified by the method.
    pub(super) fn gp_card_keys(
        &mut self,
        id: u32,
        pmk: &Secret32,
        r: &GpKeysRef,
        kdd: &[u8],
        version: Option<u8>,
    ) -> Result<KeySet> {
        let set = self.gp_set(id, pmk, r)?;
        let Some(m) = &r.method else { return Ok(set) };
        let m = Method::parse(m).map_err(gp_err)?;
        let d = |role| diversify(m, set.get(role), role, kdd).map_err(gp_err);
        KeySet::new(
            version.unwrap_or(set.version),
            d(KeyRole::Enc)?,
            d(KeyRole::Mac)?,
            d(KeyRole::Dek)?,
        )
        .map_err(gp_err)
    }

    /// Stores a new set (three keys) in one transaction with its audit record; refuses a
    /// set and version that exist, and well-known key values outside test mode.
    fn gp_store(
        &mut self,
        s: &Session,
        new: &GpNewSet,
        keys: [GpKey; 3],
        local: bool,
        event: &str,
    ) -> Result<GpSetInfo> {
        let (set, version, population) = (new.set.as_str(), new.version, new.population.as_str());
        check_name("key set name", set)?;
        check_name("card population", population)?;
        if !(1..=MAX_VERSION).contains(&version) {
            return Err(HsmError::InvalidInput(format!(
                "a key set version is 1 to {MAX_VERSION}, not {version}"
            )));
        }
        let (id, pmk) = self.key_user(s, "making GlobalPlatform master keys", true)?;
        let mut notes = String::new();
        for k in &keys {
            notes.push_str(&self.key_value_firewall(s, judged_as(k.kind()), k.expose(), event)?);
        }
        let exists = self.gp_keys(id)?.iter().any(|(_, r)| {
            r.attrs
                .gp
                .as_ref()
                .is_some_and(|g| g.set == set && g.version == version)
        });
        if exists {
            return Err(HsmError::InvalidInput(format!(
                "key set {set} version {version} exists already"
            )));
        }
        let kind = keys[0].kind();
        let kcvs: Vec<String> = keys
            .iter()
            .map(|k| kcv(k, KcvMethod::gp_default(kind)).map(hex::encode_upper))
            .collect::<std::result::Result<_, _>>()
            .map_err(gp_err)?;
        let e = self.ev(
            event,
            s.role.short(),
            s.partition(),
            Some(&format!("{set} v{version}")),
            &format!(
                "success: {} for {population}; KCV ({}) ENC {} MAC {} DEK {}{notes}",
                kind.name(),
                KcvMethod::gp_default(kind).name(),
                kcvs[0],
                kcvs[1],
                kcvs[2]
            ),
        );
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            for (role, k) in KeyRole::ALL.into_iter().zip(&keys) {
                let attrs = Self::gp_attributes(set, version, role, kind, population, local);
                let v = SecretBytes::new(k.expose().to_vec());
                Self::put_key(t, &mut p, &pmk, attrs, None, Some(&v))?;
            }
            t.put("partition", &pid(id), &p)?;
            t.event(&e)
        })?;
        // What was stored, with the check values already computed for the record.
        let method = KcvMethod::gp_default(kind).name().to_string();
        Ok(GpSetInfo {
            set: set.into(),
            version,
            key_type: kind.name().into(),
            population: population.into(),
            retired: false,
            kcvs: KeyRole::ALL
                .into_iter()
                .zip(kcvs)
                .map(|(r, v)| (r.name().to_string(), method.clone(), v))
                .collect(),
        })
    }

    fn gp_attributes(
        set: &str,
        version: u8,
        role: KeyRole,
        kind: KeyType,
        population: &str,
        local: bool,
    ) -> Attributes {
        let (base, _) = Self::key_attributes(
            spec_of(kind),
            &KeyOptions {
                label: format!("gp:{set}:v{version}:{}", role.name()),
                id: vec![version, role.id()],
                extractable: false,
            },
            &KeyTemplate::default(),
            local,
        );
        Attributes {
            sign: false,
            verify: false,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            modifiable: false,
            copyable: false,
            gp: Some(GpMaster {
                set: set.into(),
                version,
                role: role.name().into(),
                key_type: kind.name().into(),
                population: population.into(),
                retired: false,
            }),
            ..base
        }
    }

    /// Generates a master key set inside the HSM (Crypto Officer). Audited with its KCVs.
    pub fn gp_generate(&mut self, s: &Session, new: &GpNewSet) -> Result<GpSetInfo> {
        let kind = KeyType::parse(&new.key_type).map_err(gp_err)?;
        let fresh = || -> Result<GpKey> {
            loop {
                let mut b = zeroize::Zeroizing::new(vec![0u8; kind.key_len()]);
                crypto::fill_random(&mut b);
                // Random keys are well known with negligible odds; a 3DES key with equal
                // halves or a weak part is drawn again rather than refused.
                if crate::weak_keys::well_known(judged_as(kind), &b).is_none() {
                    return GpKey::new(kind, &b).map_err(gp_err);
                }
            }
        };
        let keys = [fresh()?, fresh()?, fresh()?];
        self.gp_store(s, new, keys, true, "gp-master-generate")
    }

    /// Imports a master key set from components (a key ceremony): each component's check
    /// value is checked, the components of each key are combined (XOR), and the whole key
    /// checked against `whole` (its KCV, per role) when given. Crypto Officer; audited with the
    /// component and whole check values, never a value.
    pub fn gp_import(
        &mut self,
        s: &Session,
        new: &GpNewSet,
        components: &[GpComponent],
        whole: &[(String, String)],
    ) -> Result<GpSetInfo> {
        let kind = KeyType::parse(&new.key_type).map_err(gp_err)?;
        let method = KcvMethod::gp_default(kind);
        let mut keys = Vec::new();
        for role in KeyRole::ALL {
            let mine: Vec<&GpComponent> = components
                .iter()
                .filter(|c| c.role == role.name())
                .collect();
            if mine.len() < 2 {
                return Err(HsmError::InvalidInput(format!(
                    "the {} key needs at least two components (one per custodian); {} given",
                    role.name(),
                    mine.len()
                )));
            }
            let mut acc = zeroize::Zeroizing::new(vec![0u8; kind.key_len()]);
            for (n, c) in mine.iter().enumerate() {
                let v = zeroize::Zeroizing::new(hex::decode(c.value.trim()).map_err(|_| {
                    HsmError::InvalidInput(format!(
                        "component {} of {} is not hex",
                        n + 1,
                        role.name()
                    ))
                })?);
                let part = GpKey::new(kind, &v).map_err(gp_err)?;
                let got = kcv(&part, method).map_err(gp_err)?;
                if !crypto::ct_eq(&got, &hex::decode(c.kcv.trim()).unwrap_or_default()) {
                    let e = HsmError::InvalidInput(format!(
                        "component {} of the {} key does not match its check value ({} {}): mistyped? Nothing was stored",
                        n + 1,
                        role.name(),
                        method.name(),
                        c.kcv
                    ));
                    return Err(self.refuse("gp-master-import", s.role.short(), s.partition(), e));
                }
                for (a, b) in acc.iter_mut().zip(v.iter()) {
                    *a ^= b;
                }
            }
            let key = GpKey::new(kind, &acc).map_err(gp_err)?;
            if let Some((_, want)) = whole.iter().find(|(r, _)| r == role.name()) {
                let got = kcv(&key, method).map_err(gp_err)?;
                if !crypto::ct_eq(&got, &hex::decode(want.trim()).unwrap_or_default()) {
                    let e = HsmError::InvalidInput(format!(
                        "the combined {} key does not match its check value {want} ({}): a component is wrong; nothing was stored",
                        role.name(),
                        method.name()
                    ));
                    return Err(self.refuse("gp-master-import", s.role.short(), s.partition(), e));
                }
            }
            keys.push(key);
        }
        let mut it = keys.into_iter();
        let keys = match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c)) => [a, b, c],
            _ => return Err(HsmError::State("three keys".into())),
        };
        self.gp_store(s, new, keys, false, "gp-master-import")
    }

    /// A new version of `set` (the next number), generated inside (Crypto Officer).
    pub fn gp_rotate(&mut self, s: &Session, set: &str) -> Result<GpSetInfo> {
        let id = self.key_role(s, "rotating GlobalPlatform master keys", true)?;
        // The markers say all that is needed: no key is opened to find the latest version.
        let latest = self
            .gp_keys(id)?
            .into_iter()
            .filter_map(|(_, rec)| rec.attrs.gp)
            .filter(|g| g.set == set)
            .max_by_key(|g| g.version)
            .ok_or_else(|| HsmError::NotFound(format!("no GlobalPlatform key set {set:?}")))?;
        if latest.version >= MAX_VERSION {
            return Err(HsmError::InvalidInput(format!(
                "key set {set} is at version {MAX_VERSION}, the last"
            )));
        }
        self.gp_generate(
            s,
            &GpNewSet::new(
                set,
                &latest.key_type,
                latest.version + 1,
                &latest.population,
            ),
        )
    }

    /// Retires a version of a set: kept and listed, never used again (Crypto Officer).
    pub fn gp_retire(&mut self, s: &Session, set: &str, version: u8) -> Result<()> {
        let (id, _) = self.key_user(s, "retiring GlobalPlatform master keys", true)?;
        let e = self.ev(
            "gp-master-retire",
            s.role.short(),
            s.partition(),
            Some(&format!("{set} v{version}")),
            "success",
        );
        self.store.write(|t| {
            let mut n = 0;
            for h in t.find_handles(id, None, None, Some("secret-key"))? {
                let mut rec = Self::load(t, id, h)?;
                let Some(g) = rec.attrs.gp.as_mut() else {
                    continue;
                };
                if g.set == set && g.version == version {
                    g.retired = true;
                    Self::put_record(t, id, h, &rec)?;
                    n += 1;
                }
            }
            if n == 0 {
                return Err(HsmError::NotFound(format!(
                    "no key set {set} version {version}"
                )));
            }
            t.event(&e)
        })
    }

    /// The check value of one key of a set (or of the card key diversified from it).
    pub fn gp_kcv(
        &mut self,
        s: &Session,
        keys: &GpKeysRef,
        role: &str,
        method: &str,
        kdd: Option<&[u8]>,
    ) -> Result<String> {
        let (id, pmk) = self.key_user(s, "computing a key check value", false)?;
        let set = match kdd {
            Some(kdd) => self.gp_card_keys(id, &pmk, keys, kdd, None)?,
            None => self.gp_set(
                id,
                &pmk,
                &GpKeysRef {
                    method: None,
                    ..keys.clone()
                },
            )?,
        };
        let m = KcvMethod::parse(method).map_err(gp_err)?;
        let value = hex::encode_upper(kcv(set.get(role_of(role)?), m).map_err(gp_err)?);
        // A use of the master key like any other: on the record, with what was computed.
        let e = self.ev(
            "gp-kcv",
            s.role.short(),
            s.partition(),
            Some(&format!("{} v{}", keys.set, set.version)),
            &format!(
                "success: {role} {}{}: {value}",
                m.name(),
                match (kdd, &keys.method) {
                    (Some(kdd), Some(d)) =>
                        format!(" of the card key ({d}, KDD {})", hex::encode_upper(kdd)),
                    _ => String::new(),
                }
            ),
        );
        self.store.event(&e)?;
        Ok(value)
    }

    /// The check values of the three card keys diversified from a set for the card of `kdd`;
    /// the keys stay inside. Audited.
    pub fn gp_diversify(
        &mut self,
        s: &Session,
        keys: &GpKeysRef,
        kdd: &[u8],
    ) -> Result<Vec<(String, String, String)>> {
        let (id, pmk) = self.key_user(s, "diversifying card keys", false)?;
        if keys.method.is_none() {
            return Err(HsmError::InvalidInput(
                "name a diversification method (visa2, emv-cps11, kdf3)".into(),
            ));
        }
        let set = self.gp_card_keys(id, &pmk, keys, kdd, None)?;
        let m = KcvMethod::gp_default(set.enc.kind());
        let out: Vec<(String, String, String)> = KeyRole::ALL
            .into_iter()
            .map(|r| {
                Ok((
                    r.name().to_string(),
                    m.name().to_string(),
                    hex::encode_upper(kcv(set.get(r), m).map_err(gp_err)?),
                ))
            })
            .collect::<Result<_>>()?;
        let e = self.ev(
            "gp-diversify",
            s.role.short(),
            s.partition(),
            Some(&format!("{} v{}", keys.set, set.version)),
            &format!(
                "success: {} for KDD {}",
                keys.method.as_deref().unwrap_or("-"),
                hex::encode_upper(kdd)
            ),
        );
        self.store.event(&e)?;
        Ok(out)
    }
}
