//! `ferrohsm gp`: GlobalPlatform master key sets in the HSM, key check values, card keys
//! diversified inside, and a card personalised over a secure channel the HSM computes (here
//! against a simulated card kept in a file).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use ferrohsm_core::api::{GpAnswer, GpCall, GpComponent, GpKeysRef, GpSetInfo, HsmApi, LoginId};
use ferrohsm_core::HsmError;
use ferrohsm_gp::apdu::{initialize_update, InitUpdate, Response};
use ferrohsm_gp::block::{Key, KeyType};
use ferrohsm_gp::card::{SimCard, SimCardState};
use ferrohsm_gp::channel::KeySet;
use ferrohsm_gp::diversify::KeyRole;
use ferrohsm_gp::kcv::{kcv, KcvMethod};

use crate::{exit, KeyUser};

type R<T> = Result<T, HsmError>;

/// `ferrohsm gp …`
#[derive(Subcommand, Debug)]
pub enum GpCmd {
    /// Master key sets: generate inside, import by key ceremony, list, rotate, retire.
    #[command(subcommand)]
    Master(MasterCmd),
    /// A key check value of a master key, or of a card key diversified from it (--kdd and
    /// --diversify); the method is always named with the value.
    #[command(
        after_help = "Examples:\n  ferrohsm gp kcv --partition issuing --set issuer --role enc --password env:CO_PW\n  ferrohsm gp kcv --partition issuing --set issuer --role mac --method aes-cmac --kdd 0000112233445566778A --diversify kdf3 --password env:CO_PW"
    )]
    Kcv {
        #[command(flatten)]
        user: KeyUser,
        /// The master key set. Example: --set issuer
        #[arg(long)]
        set: String,
        /// Its version (default: the newest not retired).
        #[arg(long)]
        version: Option<u8>,
        /// Which key of the set: enc, mac or dek.
        #[arg(long)]
        role: String,
        /// des3-zeros, aes-gp, aes-zeros or aes-cmac (default: GlobalPlatform's for the type).
        #[arg(long)]
        method: Option<String>,
        /// A card's key diversification data (10 bytes, hex): the card key's check value.
        #[arg(long, requires = "diversify")]
        kdd: Option<String>,
        /// The diversification method for --kdd: visa2, emv-cps11 or kdf3.
        #[arg(long, requires = "kdd")]
        diversify: Option<String>,
    },
    /// The check values of a card's three keys, diversified inside from a master set; the keys
    /// stay in the HSM.
    #[command(
        after_help = "Example:\n  ferrohsm gp diversify --partition issuing --set issuer --method kdf3 --kdd 0000112233445566778A --password env:CO_PW"
    )]
    Diversify {
        #[command(flatten)]
        user: KeyUser,
        /// The master key set.
        #[arg(long)]
        set: String,
        /// Its version (default: the newest not retired).
        #[arg(long)]
        version: Option<u8>,
        /// visa2, emv-cps11 or kdf3.
        #[arg(long)]
        method: String,
        /// The card's key diversification data (10 bytes, hex).
        #[arg(long)]
        kdd: String,
    },
    /// Personalise a card: open a secure channel with its current keys, replace them (PUT
    /// KEY) by the keys diversified for it from a master set, and prove it with a new
    /// channel. Every step is computed and audited in the HSM.
    #[command(
        after_help = "Example:\n  ferrohsm gp personalise --partition issuing --card card.json --from transport --to issuer --method kdf3 --level c-mac,c-dec,r-mac,r-enc --password env:CO_PW"
    )]
    Personalise {
        #[command(flatten)]
        user: KeyUser,
        /// The (simulated) card's file, as `gp sim-card new` made it; updated.
        #[arg(long)]
        card: PathBuf,
        /// The set holding the card's current keys (e.g. the vendor's transport keys).
        #[arg(long)]
        from: String,
        /// How the current keys derive from --from for this card (default: --from's keys
        /// as they are).
        #[arg(long)]
        from_method: Option<String>,
        /// The issuer's master key set the card's new keys come from.
        #[arg(long)]
        to: String,
        /// Its version (default: the newest not retired).
        #[arg(long)]
        to_version: Option<u8>,
        /// visa2, emv-cps11 or kdf3.
        #[arg(long)]
        method: String,
        /// The security level: c-mac, c-dec, r-mac, r-enc (comma-separated).
        #[arg(long, default_value = "c-mac,c-dec")]
        level: String,
        /// The key version the card's new keys get (default: the master set's).
        #[arg(long)]
        new_version: Option<u8>,
        /// SCP02's implementation option i (hex).
        #[arg(long, default_value = "55")]
        scp02_i: String,
    },
    /// A simulated card (for tests, training and the demo).
    #[command(subcommand)]
    SimCard(SimCardCmd),
}

/// `ferrohsm gp master …`
#[derive(Subcommand, Debug)]
pub enum MasterCmd {
    /// Generate a master key set inside the HSM.
    #[command(
        after_help = "Example:\n  ferrohsm gp master generate --partition issuing --set issuer --type aes-128 --population \"payment cards 2026\" --password env:CO_PW"
    )]
    Generate {
        #[command(flatten)]
        user: KeyUser,
        /// The set's name.
        #[arg(long)]
        set: String,
        /// des3, aes-128, aes-192 or aes-256.
        #[arg(long = "type")]
        key_type: String,
        /// Key version (1-127).
        #[arg(long, default_value_t = 1)]
        version: u8,
        /// The card population the set serves.
        #[arg(long)]
        population: String,
    },
    /// Import a master key set from components (a key ceremony): each custodian's file of
    /// components (JSON: role, value, kcv), at least two per key; each component and (with
    /// --kcv) each whole key is checked.
    #[command(
        after_help = "Example:\n  ferrohsm gp master import --partition issuing --set transport --type aes-128 --population \"vendor batch 7\" --component custodian-a.json --component custodian-b.json --kcv enc=1A2B3C --password env:CO_PW"
    )]
    Import {
        #[command(flatten)]
        user: KeyUser,
        /// The set's name.
        #[arg(long)]
        set: String,
        /// des3, aes-128, aes-192 or aes-256.
        #[arg(long = "type")]
        key_type: String,
        /// Key version (1-127).
        #[arg(long, default_value_t = 1)]
        version: u8,
        /// The card population.
        #[arg(long)]
        population: String,
        /// A custodian's component file (repeat).
        #[arg(long, required = true)]
        component: Vec<PathBuf>,
        /// A whole key's check value, ROLE=HEX (repeat).
        #[arg(long)]
        kcv: Vec<String>,
    },
    /// List the master key sets, with their check values.
    List {
        #[command(flatten)]
        user: KeyUser,
    },
    /// A new version of a set, generated.
    Rotate {
        #[command(flatten)]
        user: KeyUser,
        /// The set's name.
        #[arg(long)]
        set: String,
    },
    /// Retire a version of a set: kept and listed, never used again.
    Retire {
        #[command(flatten)]
        user: KeyUser,
        /// The set's name.
        #[arg(long)]
        set: String,
        /// The version.
        #[arg(long)]
        version: u8,
    },
}

/// `ferrohsm gp sim-card …`
#[derive(Subcommand, Debug)]
pub enum SimCardCmd {
    /// A new simulated card with random transport keys, and the two custodians' component
    /// files of those keys (for `gp master import`).
    #[command(
        after_help = "Example:\n  ferrohsm gp sim-card new --out card.json --scp 3 --type aes-128 --components ceremony/"
    )]
    New {
        /// The card's file (its memory; owner-only).
        #[arg(long)]
        out: PathBuf,
        /// 2 (3DES) or 3 (AES).
        #[arg(long, default_value_t = 3)]
        scp: u8,
        /// Key type (default: des3 for SCP02, aes-128 for SCP03).
        #[arg(long = "type")]
        key_type: Option<String>,
        /// The card's key diversification data (10 bytes hex; default random).
        #[arg(long)]
        kdd: Option<String>,
        /// Where the custodians' component files go (custodian-a.json, custodian-b.json).
        #[arg(long)]
        components: PathBuf,
    },
}

fn set_line(i: &GpSetInfo) {
    println!(
        "{} v{}  {}  {}{}",
        i.set,
        i.version,
        i.key_type,
        i.population,
        if i.retired { "  (retired)" } else { "" }
    );
    for (role, method, v) in &i.kcvs {
        println!("    {role:<4} KCV {v} ({method})");
    }
}

fn keys(set: &str, version: Option<u8>, method: Option<&str>) -> GpKeysRef {
    GpKeysRef {
        set: set.into(),
        version,
        method: method.map(str::to_owned),
    }
}

fn read_components(files: &[PathBuf]) -> R<Vec<GpComponent>> {
    let mut all = Vec::new();
    for f in files {
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(f).map_err(|e| HsmError::io(f, e))?);
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            HsmError::InvalidInput(format!("{}: not a component file ({e})", f.display()))
        })?;
        let list = match v {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        for c in list {
            all.push(serde_json::from_value(c).map_err(|e| {
                HsmError::InvalidInput(format!(
                    "{}: a component is {{\"role\", \"value\", \"kcv\"}} ({e})",
                    f.display()
                ))
            })?);
        }
    }
    Ok(all)
}

/// Runs `ferrohsm gp …`.
pub fn run(c: GpCmd, dir: &Path, server: Option<&Path>, ped_dir: &Path, json: bool) -> R<u8> {
    if let GpCmd::SimCard(SimCardCmd::New {
        out,
        scp,
        key_type,
        kdd,
        components,
    }) = c
    {
        return sim_card_new(&out, scp, key_type.as_deref(), kdd.as_deref(), &components);
    }
    let mut api = crate::front::open(dir, server)?;
    let hsm = api.as_mut();
    let user = match &c {
        GpCmd::Master(
            MasterCmd::Generate { user, .. }
            | MasterCmd::Import { user, .. }
            | MasterCmd::List { user }
            | MasterCmd::Rotate { user, .. }
            | MasterCmd::Retire { user, .. },
        )
        | GpCmd::Kcv { user, .. }
        | GpCmd::Diversify { user, .. }
        | GpCmd::Personalise { user, .. } => user,
        GpCmd::SimCard(_) => return Ok(exit::OK),
    };
    let login = crate::keys::key_login(hsm, ped_dir, user)?;
    let r = gp_cmd(hsm, login, c, json);
    let _ = hsm.logout(login);
    r
}

fn gp_cmd(hsm: &mut dyn HsmApi, login: LoginId, c: GpCmd, json: bool) -> R<u8> {
    let show = |a: GpAnswer| -> R<u8> {
        if json {
            crate::output::json(&a);
            return Ok(exit::OK);
        }
        match a {
            GpAnswer::Set { set } => set_line(&set),
            GpAnswer::Sets { sets } => sets.iter().for_each(set_line),
            GpAnswer::Kcv { kcv } => println!("{kcv}"),
            GpAnswer::Kcvs { kcvs } => {
                for (r, m, v) in kcvs {
                    println!("{r:<4} KCV {v} ({m})");
                }
            }
            GpAnswer::Done => println!("done"),
            other => println!("{other:?}"),
        }
        Ok(exit::OK)
    };
    match c {
        GpCmd::Master(MasterCmd::Generate {
            set,
            key_type,
            version,
            population,
            ..
        }) => show(hsm.gp(
            login,
            GpCall::Generate {
                set,
                key_type,
                version,
                population,
            },
        )?),
        GpCmd::Master(MasterCmd::Import {
            set,
            key_type,
            version,
            population,
            component,
            kcv,
            ..
        }) => {
            let components = read_components(&component)?;
            let whole = kcv
                .iter()
                .map(|k| {
                    k.split_once('=')
                        .map(|(r, v)| (r.to_string(), v.to_string()))
                        .ok_or_else(|| HsmError::InvalidInput(format!("--kcv {k:?}: ROLE=HEX")))
                })
                .collect::<R<Vec<_>>>()?;
            show(hsm.gp(
                login,
                GpCall::Import {
                    set,
                    key_type,
                    version,
                    population,
                    components,
                    whole,
                },
            )?)
        }
        GpCmd::Master(MasterCmd::List { .. }) => show(hsm.gp(login, GpCall::List)?),
        GpCmd::Master(MasterCmd::Rotate { set, .. }) => {
            show(hsm.gp(login, GpCall::Rotate { set })?)
        }
        GpCmd::Master(MasterCmd::Retire { set, version, .. }) => {
            show(hsm.gp(login, GpCall::Retire { set, version })?)
        }
        GpCmd::Kcv {
            set,
            version,
            role,
            method,
            kdd,
            diversify,
            ..
        } => {
            let method = match method {
                Some(m) => m,
                None => {
                    // GlobalPlatform's method for the set's key type.
                    let GpAnswer::Sets { sets } = hsm.gp(login, GpCall::List)? else {
                        return Err(HsmError::State("an unexpected answer".into()));
                    };
                    let t = sets
                        .iter()
                        .find(|s| s.set == set)
                        .map(|s| s.key_type.clone())
                        .ok_or_else(|| HsmError::NotFound(format!("no key set {set:?}")))?;
                    let kind =
                        KeyType::parse(&t).map_err(|e| HsmError::InvalidInput(e.to_string()))?;
                    KcvMethod::gp_default(kind).name().to_string()
                }
            };
            let a = hsm.gp(
                login,
                GpCall::Kcv {
                    keys: keys(&set, version, diversify.as_deref()),
                    role,
                    method: method.clone(),
                    kdd,
                },
            )?;
            if let (GpAnswer::Kcv { kcv }, false) = (&a, json) {
                println!("{kcv} ({method})");
                return Ok(exit::OK);
            }
            show(a)
        }
        GpCmd::Diversify {
            set,
            version,
            method,
            kdd,
            ..
        } => show(hsm.gp(
            login,
            GpCall::Diversify {
                keys: keys(&set, version, Some(&method)),
                kdd,
            },
        )?),
        GpCmd::Personalise {
            card,
            from,
            from_method,
            to,
            to_version,
            method,
            level,
            new_version,
            scp02_i,
            ..
        } => {
            let i = u8::from_str_radix(&scp02_i, 16)
                .map_err(|_| HsmError::InvalidInput("--scp02-i is a hex byte".into()))?;
            personalise(
                hsm,
                login,
                &card,
                &keys(&from, None, from_method.as_deref()),
                &keys(&to, to_version, Some(&method)),
                &level,
                new_version,
                i,
            )
        }
        GpCmd::SimCard(_) => Ok(exit::OK),
    }
}

fn card_error(e: ferrohsm_gp::GpError) -> HsmError {
    HsmError::InvalidInput(format!("the card: {e}"))
}

/// One exchange: `apdu` to the card, its answer (status checked for 9000 by the caller).
fn transmit(card: &mut SimCard, apdu: &str) -> R<String> {
    let b = hex::decode(apdu).map_err(|_| HsmError::State("the HSM's APDU is not hex".into()))?;
    Ok(hex::encode_upper(card.transmit(&b)))
}

fn status_of(resp_hex: &str) -> R<u16> {
    let b =
        hex::decode(resp_hex).map_err(|_| HsmError::State("an answer that is not hex".into()))?;
    Ok(Response::parse(&b).map_err(card_error)?.sw)
}

/// Opens a channel on `card` with the keys `k` names; the channel's id.
fn open(
    hsm: &mut dyn HsmApi,
    login: LoginId,
    card: &mut SimCard,
    k: &GpKeysRef,
    p1: u8,
    level: &str,
    i: u8,
) -> R<(String, InitUpdate)> {
    let mut host = [0u8; 8];
    ferrohsm_core::crypto::fill_random(&mut host);
    let iu_cmd = initialize_update(p1, &host)
        .to_bytes()
        .map_err(card_error)?;
    let iu = Response::parse(&card.transmit(&iu_cmd)).map_err(card_error)?;
    let data = iu.expect_ok("INITIALIZE UPDATE").map_err(card_error)?;
    let parsed = InitUpdate::parse(&data).map_err(card_error)?;
    let GpAnswer::Opened { channel, apdu } = hsm.gp(
        login,
        GpCall::Open {
            keys: k.clone(),
            host_challenge: hex::encode(host),
            iu: hex::encode(&data),
            level: level.into(),
            scp02_i: i,
        },
    )?
    else {
        return Err(HsmError::State(
            "an unexpected answer to opening a channel".into(),
        ));
    };
    let sw = status_of(&transmit(card, &apdu)?)?;
    if sw != 0x9000 {
        let _ = hsm.gp(login, GpCall::Close { channel });
        return Err(HsmError::Refused(format!(
            "the card answered {sw:04X} to EXTERNAL AUTHENTICATE"
        )));
    }
    Ok((channel, parsed))
}

#[allow(clippy::too_many_arguments)]
fn personalise(
    hsm: &mut dyn HsmApi,
    login: LoginId,
    path: &Path,
    from: &GpKeysRef,
    to: &GpKeysRef,
    level: &str,
    new_version: Option<u8>,
    i: u8,
) -> R<u8> {
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| HsmError::io(path, e))?);
    let st: SimCardState = serde_json::from_str(&text).map_err(|e| {
        HsmError::InvalidInput(format!("{}: not a simulated card ({e})", path.display()))
    })?;
    let mut card = SimCard::from_state(&st).map_err(card_error)?;
    let (ch, iu) = open(hsm, login, &mut card, from, 0, level, i)?;
    println!(
        "card {}: SCP0{} channel opened with {} (key version {}), level {level}",
        hex::encode_upper(iu.kdd),
        iu.scp,
        from.set,
        iu.key_version
    );
    // The keys' version on the card: the one asked for, or the master set's.
    let version = match new_version {
        Some(v) => v,
        None => {
            let GpAnswer::Sets { sets } = hsm.gp(login, GpCall::List)? else {
                return Err(HsmError::State("an unexpected answer".into()));
            };
            sets.iter()
                .filter(|s| {
                    s.set == to.set && !s.retired && to.version.is_none_or(|v| v == s.version)
                })
                .map(|s| s.version)
                .max()
                .ok_or_else(|| HsmError::NotFound(format!("no live key set {:?}", to.set)))?
        }
    };
    let put = hsm.gp(
        login,
        GpCall::PutKey {
            channel: ch.clone(),
            keys: to.clone(),
            old_version: iu.key_version,
            new_version: version,
        },
    )?;
    let GpAnswer::Apdu { apdu } = put else {
        return Err(HsmError::State("an unexpected answer to PUT KEY".into()));
    };
    let answer = transmit(&mut card, &apdu)?;
    let opened = hsm.gp(
        login,
        GpCall::Unwrap {
            channel: ch.clone(),
            response: answer,
        },
    );
    let _ = hsm.gp(login, GpCall::Close { channel: ch });
    let GpAnswer::Apdu { apdu: plain } = opened? else {
        return Err(HsmError::State("an unexpected answer".into()));
    };
    let plain = hex::decode(&plain).map_err(|_| HsmError::State("not hex".into()))?;
    let r = Response::parse(&plain).map_err(card_error)?;
    if r.sw != 0x9000 {
        return Err(HsmError::Refused(format!(
            "the card answered {:04X} to PUT KEY; its keys are unchanged",
            r.sw
        )));
    }
    // Keep the card as it is now, before the proof.
    let saved =
        serde_json::to_vec_pretty(&card.state()).map_err(|e| HsmError::Store(e.to_string()))?;
    std::fs::write(path, &saved).map_err(|e| HsmError::io(path, e))?;
    let kcvs: Vec<String> = r
        .data
        .get(1..)
        .unwrap_or_default()
        .chunks(3)
        .map(hex::encode_upper)
        .collect();
    println!(
        "PUT KEY: version {version} from {} by {}; the card checked KCV {}",
        to.set,
        to.method.as_deref().unwrap_or("-"),
        kcvs.join(" ")
    );
    let (proof, _) = open(hsm, login, &mut card, to, version, level, i)?;
    let _ = hsm.gp(login, GpCall::Close { channel: proof });
    std::fs::write(
        path,
        serde_json::to_vec_pretty(&card.state()).map_err(|e| HsmError::Store(e.to_string()))?,
    )
    .map_err(|e| HsmError::io(path, e))?;
    println!("proved: a new channel opens with the card's new keys (version {version})");
    Ok(exit::OK)
}

/// A simulated card with random transport keys (version 1), and its keys as two custodians'
/// components (A random, B = key XOR A), each with its check value.
pub(crate) fn transport_card(
    scp: u8,
    kind: KeyType,
    kdd: [u8; 10],
) -> R<(SimCard, [Vec<GpComponent>; 2])> {
    let bad = |e: ferrohsm_gp::GpError| HsmError::InvalidInput(e.to_string());
    let random_key = || -> R<Key> {
        loop {
            let mut b = zeroize::Zeroizing::new(vec![0u8; kind.key_len()]);
            ferrohsm_core::crypto::fill_random(&mut b);
            let spec = ferrohsm_core::mechanism::KeySpec::Des3;
            if ferrohsm_core::weak_keys::well_known(spec, &b).is_none() {
                return Key::new(kind, &b).map_err(bad);
            }
        }
    };
    let set = KeySet::new(1, random_key()?, random_key()?, random_key()?).map_err(bad)?;
    let i = if scp == 2 { 0x55 } else { 0x70 };
    let card = SimCard::new(scp, i, kdd, set.clone()).map_err(bad)?;
    let method = KcvMethod::gp_default(kind);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for role in KeyRole::ALL {
        let k = set.get(role);
        let mut ca = zeroize::Zeroizing::new(vec![0u8; kind.key_len()]);
        ferrohsm_core::crypto::fill_random(&mut ca);
        let cb: zeroize::Zeroizing<Vec<u8>> =
            zeroize::Zeroizing::new(ca.iter().zip(k.expose()).map(|(x, y)| x ^ y).collect());
        for (list, c) in [(&mut a, &ca), (&mut b, &cb)] {
            let check = Key::new(kind, c)
                .and_then(|k| kcv(&k, method))
                .map_err(bad)?;
            list.push(GpComponent {
                role: role.name().into(),
                value: hex::encode_upper(&c[..]),
                kcv: hex::encode_upper(check),
            });
        }
    }
    Ok((card, [a, b]))
}

fn sim_card_new(
    out: &Path,
    scp: u8,
    key_type: Option<&str>,
    kdd: Option<&str>,
    dir: &Path,
) -> R<u8> {
    let bad = |e: ferrohsm_gp::GpError| HsmError::InvalidInput(e.to_string());
    let kind = match (key_type, scp) {
        (Some(t), _) => KeyType::parse(t).map_err(bad)?,
        (None, 2) => KeyType::Des3,
        (None, _) => KeyType::Aes128,
    };
    let kdd: [u8; 10] = match kdd {
        Some(k) => hex::decode(k)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| HsmError::InvalidInput("--kdd is 10 bytes of hex".into()))?,
        None => {
            let mut b = [0u8; 10];
            ferrohsm_core::crypto::fill_random(&mut b);
            b
        }
    };
    let (card, [a, b]) = transport_card(scp, kind, kdd)?;
    std::fs::create_dir_all(dir).map_err(|e| HsmError::io(dir, e))?;
    for (name, list) in [("custodian-a.json", &a), ("custodian-b.json", &b)] {
        let p = dir.join(name);
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(list).map_err(|e| HsmError::Store(e.to_string()))?,
        );
        crate::output::write_new(&p, &bytes, 0o600)?;
    }
    let state = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(&card.state()).map_err(|e| HsmError::Store(e.to_string()))?,
    );
    crate::output::write_new(out, &state, 0o600)?;
    println!(
        "simulated SCP0{scp} card {} with {} transport keys (version 1); custodians' components in {}/custodian-a.json and custodian-b.json",
        hex::encode_upper(kdd),
        kind.name(),
        dir.display()
    );
    Ok(exit::OK)
}
