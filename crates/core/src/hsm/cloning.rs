//! Cloning objects between partitions that share a cloning domain, on one HSM or between two.
//!
//! The two HSMs never meet: a front end (the operator's command) carries five messages
//! between them, each an API call of one side's Crypto Officer:
//!
//! 1. target `clone_accept`: a fresh X25519 key and nonce (its hello);
//! 2. source `clone_offer`: its own key and nonce, what will move (counts by class), and a
//!    proof: an HMAC of the transcript under a key derived from the domain and the agreement;
//! 3. target `clone_confirm`: checks the source's proof (another domain: refused, nothing
//!    moved) and answers with its own proof;
//! 4. source `clone_export`: checks the target's proof before the first object leaves, then
//!    hands out objects in batches, each sealed (AES-256-GCM) under a third key derived from
//!    the domain and the agreement, bound to the transcript and its position;
//! 5. target `clone_import`: opens and stages each batch in memory, and commits them all in
//!    one transaction when the last has come: the target is unchanged or complete.
//!
//! Nothing about the domain leaves either HSM: each derived key depends on the domain secret
//! and on a fresh agreement, and only HMACs and ciphertexts travel. Objects keep every
//! attribute and their unique id; both HSMs write an audit record per object naming the peer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use serde::{Deserialize, Serialize};

use super::*;

/// How long a clone may pause between two of its steps.
pub const CLONE_SESSION_LIFETIME: Duration = Duration::from_secs(600);
/// At most this many objects in one batch of `clone_export`.
pub const MAX_CLONE_BATCH: u32 = 1000;
const MAX_SESSIONS: usize = 32;

/// One side's hello. The source's carries what will move and its proof.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneHello {
    /// The sender's clone session (named in its later calls).
    pub session: String,
    /// The sender's serial and partition (for the transcript, the audit and messages).
    pub serial: String,
    /// The sender's partition label.
    pub partition: String,
    /// X25519 public key, hex.
    pub ephemeral: String,
    /// 32 random bytes, hex.
    pub nonce: String,
    /// Source only: how many objects of each class will move.
    #[serde(default)]
    pub classes: BTreeMap<String, u64>,
    /// Source only: HMAC of the transcript proving the domain, hex.
    #[serde(default)]
    pub proof: String,
}

impl CloneHello {
    /// How many objects will move (source hello).
    pub fn objects(&self) -> u64 {
        self.classes.values().sum()
    }
}

/// Which objects of the source partition to clone (all if every list is empty; otherwise
/// those matching any one entry).
#[derive(Clone, Debug, Default)]
pub struct CloneSelect {
    /// By `CKA_LABEL`.
    pub labels: Vec<String>,
    /// By `CKA_ID`.
    pub ids: Vec<Vec<u8>>,
    /// By class.
    pub classes: Vec<ObjectClass>,
    /// By unique id (`CKA_UNIQUE_ID`): what an HA group replicates.
    pub unique_ids: Vec<String>,
    /// For the target, not sent to the source: objects it already holds (same unique id)
    /// are destroyed and replaced by the ones that come, rather than left as they are (a
    /// backup brought up to date on a backup HSM).
    pub replace: bool,
}

/// A batch of sealed objects from `clone_export`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CloneBatch {
    /// Position of the first object in the clone (0-based).
    pub first: u64,
    /// Objects in the clone.
    pub total: u64,
    /// Each object, sealed (hex).
    pub sealed: Vec<String>,
}

/// What `clone_import` says: how far the clone is, and once committed what it made.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneProgress {
    /// Objects received so far.
    pub received: u64,
    /// Objects in the clone.
    pub total: u64,
    /// Once committed: objects added, and objects already there (same unique id) left as
    /// they were.
    pub committed: Option<(u64, u64)>,
    /// Once committed: objects already there that were replaced (a clone accepted with
    /// `replace`).
    #[serde(default)]
    pub replaced: u64,
}

/// One object as it travels (inside the seal).
#[derive(Serialize, Deserialize)]
pub(super) struct Travelling {
    pub(super) attrs: Attributes,
    #[serde(with = "crate::object::hex_opt")]
    pub(super) public: Option<Vec<u8>>,
    #[serde(with = "crate::object::hex_opt")]
    pub(super) material: Option<Vec<u8>>,
    pub(super) content: Option<crate::object::Content>,
}

impl Drop for Travelling {
    fn drop(&mut self) {
        if let Some(m) = &mut self.material {
            zeroize::Zeroize::zeroize(m);
        }
    }
}

/// The keys of one clone, from the domain and the agreement.
struct CloneKeys {
    transcript: [u8; 32],
    source_proof: Secret32,
    target_proof: Secret32,
    wrap: Secret32,
}

enum CloneSession {
    Target {
        partition: u32,
        private: PrivateKey,
        hello: CloneHello,
        replace: bool,
    },
    Receiving {
        partition: u32,
        keys: CloneKeys,
        peer: String,
        total: u64,
        staged: Vec<Travelling>,
        replace: bool,
    },
    Source {
        partition: u32,
        keys: CloneKeys,
        peer: String,
        handles: Vec<u64>,
        verified: bool,
    },
}

impl CloneSession {
    fn partition(&self) -> u32 {
        match self {
            CloneSession::Target { partition, .. }
            | CloneSession::Receiving { partition, .. }
            | CloneSession::Source { partition, .. } => *partition,
        }
    }
}

static SESSIONS: Mutex<Vec<(String, Instant, CloneSession)>> = Mutex::new(Vec::new());

fn sessions() -> std::sync::MutexGuard<'static, Vec<(String, Instant, CloneSession)>> {
    // Pushes and removals only: a poisoned list is still whole.
    let mut s = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    s.retain(|(_, t, _)| now.duration_since(*t) < CLONE_SESSION_LIFETIME);
    s
}

fn keep(session: CloneSession) -> Result<String> {
    let mut s = sessions();
    if s.len() >= MAX_SESSIONS {
        return Err(HsmError::Exhausted(format!(
            "{MAX_SESSIONS} clones are under way on this HSM; finish one or let it expire"
        )));
    }
    let id = crypto::random_hex_id(16);
    s.push((id.clone(), Instant::now(), session));
    Ok(id)
}

/// Takes a session of `partition` out of the registry (put it back with [`put_back`]).
fn take(id: &str, partition: u32) -> Result<CloneSession> {
    let mut s = sessions();
    let at = s
        .iter()
        .position(|(i, _, c)| i == id && c.partition() == partition)
        .ok_or_else(|| {
            HsmError::NotFound(format!(
                "no clone {} under way in this partition (each lasts {} s between steps); start again",
                id.get(..8).unwrap_or(id),
                CLONE_SESSION_LIFETIME.as_secs()
            ))
        })?;
    Ok(s.swap_remove(at).2)
}

fn put_back(id: String, session: CloneSession) {
    sessions().push((id, Instant::now(), session));
}

fn hexd(s: &str, what: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|_| HsmError::InvalidInput(format!("the clone's {what} is not hex")))
}

fn transcript(target: &CloneHello, source: &CloneHello) -> [u8; 32] {
    let mut parts: Vec<Vec<u8>> = vec![b"ferrohsm clone v1".to_vec()];
    for h in [target, source] {
        for f in [&h.serial, &h.partition, &h.ephemeral, &h.nonce] {
            parts.push(f.as_bytes().to_vec());
        }
    }
    for (class, n) in &source.classes {
        parts.push(class.as_bytes().to_vec());
        parts.push(n.to_be_bytes().to_vec());
    }
    // Length-prefixed, so no two transcripts encode alike.
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
        buf.extend_from_slice(&p);
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &buf);
    let mut t = [0u8; 32];
    t.copy_from_slice(d.as_ref());
    t
}

/// The clone's keys: the agreement with the peer's key, salted with the domain secret.
fn derive(
    private: &PrivateKey,
    peer: &str,
    domain: &Secret32,
    transcript: [u8; 32],
) -> Result<CloneKeys> {
    let peer = hexd(peer, "peer key")?;
    let z = agreement::agree(
        private,
        UnparsedPublicKey::new(&X25519, &peer),
        HsmError::InvalidInput("the peer's clone key is not an X25519 public key".into()),
        |z| Ok(Secret32::from_slice(z)),
    )??;
    let key = |label: &[u8]| hkdf32(domain.expose(), z.expose(), &[label, &transcript]);
    Ok(CloneKeys {
        transcript,
        source_proof: key(b"ferrohsm clone source proof"),
        target_proof: key(b"ferrohsm clone target proof"),
        wrap: key(b"ferrohsm clone wrap"),
    })
}

fn proof(key: &Secret32, transcript: &[u8; 32]) -> String {
    hex::encode(crypto::hmac_sha256(key.expose(), &[transcript]))
}

fn new_ephemeral() -> Result<(PrivateKey, String, String)> {
    let private = PrivateKey::generate(&X25519)
        .map_err(|_| HsmError::Crypto("no X25519 key could be made".into()))?;
    let public = private
        .compute_public_key()
        .map_err(|_| HsmError::Crypto("no X25519 public key".into()))?;
    let mut nonce = [0u8; 32];
    crypto::fill_random(&mut nonce);
    Ok((private, hex::encode(public.as_ref()), hex::encode(nonce)))
}

fn object_aad(transcript: &[u8; 32], index: u64) -> Vec<u8> {
    [transcript.as_slice(), b"object", &index.to_be_bytes()].concat()
}

pub(super) fn class_allowed(policy: &Policy, class: ObjectClass) -> Option<&'static str> {
    match class {
        ObjectClass::PrivateKey if !policy.clone_private_keys => Some("clone-private-keys"),
        ObjectClass::SecretKey if !policy.clone_secret_keys => Some("clone-secret-keys"),
        _ => None,
    }
}

impl Hsm {
    /// The partition of a Crypto Officer who clones, with its domain and effective policy.
    pub(super) fn clone_party(
        &mut self,
        s: &Session,
        action: &str,
    ) -> Result<(u32, String, Secret32, Policy)> {
        let id = self.partition_role(s, action, true)?;
        let (label, policy) = self.store.read(|t| {
            let d = Self::device(t)?;
            let p = Self::partition_by_id(t, id)?;
            Ok((p.label.clone(), p.policy.effective(&d.policy)))
        })?;
        let domain = self.partition_domain(s, id)?.ok_or_else(|| {
            HsmError::State(format!(
                "partition {label} is in no cloning domain; its Partition SO puts it in one with `ferrohsm partition init --domain hsm|new` (which destroys its keys)"
            ))
        })?;
        Ok((id, label, domain, policy))
    }

    /// Step 1, on the target: a hello for the source (Crypto Officer of the target partition).
    /// With `replace`, objects the partition already holds (same unique id) are replaced by
    /// the ones that come; otherwise left as they are.
    pub fn clone_accept(&mut self, s: &Session, replace: bool) -> Result<CloneHello> {
        let (id, label, _, _) = self.clone_party(s, "cloning into a partition")?;
        let (private, ephemeral, nonce) = new_ephemeral()?;
        let hello = CloneHello {
            serial: self.serial.clone(),
            partition: label,
            ephemeral,
            nonce,
            ..CloneHello::default()
        };
        // Kept with the key until the source answers; the session id goes out in the hello
        // (it is not part of the transcript).
        let sid = keep(CloneSession::Target {
            partition: id,
            private,
            hello: hello.clone(),
            replace,
        })?;
        let hello = CloneHello {
            session: sid,
            ..hello
        };
        Ok(hello)
    }

    /// Step 2, on the source: checks what is asked against its policy, and answers the
    /// target's hello with its own, carrying the counts and the domain proof.
    pub fn clone_offer(
        &mut self,
        s: &Session,
        target: &CloneHello,
        select: &CloneSelect,
    ) -> Result<CloneHello> {
        let (id, label, domain, policy) = self.clone_party(s, "cloning out of a partition")?;
        let records = self.selected(s, id, &label, &policy, select, "clone-out")?;
        let mut classes = BTreeMap::new();
        for (_, c) in &records {
            *classes.entry(c.name().to_string()).or_insert(0u64) += 1;
        }
        let (private, ephemeral, nonce) = new_ephemeral()?;
        let mut hello = CloneHello {
            session: target.session.clone(),
            serial: self.serial.clone(),
            partition: label,
            ephemeral,
            nonce,
            classes,
            proof: String::new(),
        };
        let t = transcript(target, &hello);
        let keys = derive(&private, &target.ephemeral, &domain, t)?;
        hello.proof = proof(&keys.source_proof, &t);
        let peer = format!("{}/{}", target.serial, target.partition);
        let sid = keep(CloneSession::Source {
            partition: id,
            keys,
            peer,
            handles: records.into_iter().map(|(h, _)| h).collect(),
            verified: false,
        })?;
        // The source's own session id goes back in `session`; the target's is in the
        // transcript already (its hello), and the front end keeps both.
        hello.session = format!("{}:{sid}", target.session);
        Ok(hello)
    }

    /// Step 3, on the target: checks the source's proof (refused if the source is in another
    /// domain, before any object moves) and its own policy; returns the target's proof.
    pub fn clone_confirm(&mut self, s: &Session, source: &CloneHello) -> Result<String> {
        let (id, label, domain, policy) = self.clone_party(s, "cloning into a partition")?;
        let (target_sid, _) = source.session.split_once(':').ok_or_else(|| {
            HsmError::InvalidInput("the source's hello names no clone of this HSM".into())
        })?;
        let CloneSession::Target {
            private,
            hello,
            replace,
            ..
        } = take(target_sid, id)?
        else {
            return Err(HsmError::State("that clone is past its first step".into()));
        };
        let t = transcript(&hello, source);
        let keys = derive(&private, &source.ephemeral, &domain, t)?;
        let peer = format!("{}/{}", source.serial, source.partition);
        let good = hexd(&source.proof, "proof").is_ok_and(|p| {
            crypto::ct_eq(
                &p,
                &hex::decode(proof(&keys.source_proof, &t)).unwrap_or_default(),
            )
        });
        if !good {
            let e = HsmError::Refused(format!(
                "{peer} is not in partition {label}'s cloning domain (its proof does not verify); nothing was transferred"
            ));
            return Err(self.refuse("clone-in", s.role.short(), s.partition(), e));
        }
        for class in source.classes.keys() {
            if let Some(why) = ObjectClass::from_name(class)
                .ok()
                .and_then(|c| class_allowed(&policy, c))
            {
                let e = HsmError::Refused(format!(
                    "partition {label}'s policy {why} is off: it does not take cloned {class} objects; nothing was transferred"
                ));
                return Err(self.refuse("clone-in", s.role.short(), s.partition(), e));
            }
        }
        let answer = proof(&keys.target_proof, &t);
        put_back(
            target_sid.to_string(),
            CloneSession::Receiving {
                partition: id,
                keys,
                peer,
                total: source.objects(),
                staged: Vec::new(),
                replace,
            },
        );
        Ok(answer)
    }

    /// Step 4, on the source: checks the target's proof (before the first object leaves), then
    /// hands out up to `max` objects from position `from`, sealed for the target.
    pub fn clone_export(
        &mut self,
        s: &Session,
        session: &str,
        target_proof: &str,
        from: u64,
        max: u32,
    ) -> Result<CloneBatch> {
        let (id, label, _, _) = self.clone_party(s, "cloning out of a partition")?;
        let sid = session.split_once(':').map_or(session, |(_, s)| s);
        let CloneSession::Source {
            partition,
            keys,
            peer,
            handles,
            verified,
        } = take(sid, id)?
        else {
            return Err(HsmError::State(
                "that clone is not this partition's to send".into(),
            ));
        };
        let good = verified
            || hexd(target_proof, "proof").is_ok_and(|p| {
                crypto::ct_eq(
                    &p,
                    &hex::decode(proof(&keys.target_proof, &keys.transcript)).unwrap_or_default(),
                )
            });
        if !good {
            let e = HsmError::Refused(format!(
                "{peer} is not in partition {label}'s cloning domain (its proof does not verify); nothing was transferred"
            ));
            return Err(self.refuse("clone-out", s.role.short(), s.partition(), e));
        }
        let total = handles.len() as u64;
        let end = (from + u64::from(max.clamp(1, MAX_CLONE_BATCH))).min(total);
        let pmk = s.pmk()?.clone();
        let mut sealed = Vec::new();
        let mut events = Vec::new();
        let result = (|| -> Result<()> {
            let batch = &handles[from.min(end) as usize..end as usize];
            let records = self.load_all(id, batch)?;
            for ((i, h), rec) in (from..end).zip(batch).zip(&records) {
                let (uid, pt) = self.travelling(id, &pmk, *h, rec)?;
                sealed.push(hex::encode(crypto::seal(
                    &keys.wrap,
                    &object_aad(&keys.transcript, i),
                    &pt,
                )));
                events.push(self.ev(
                    "clone-out",
                    s.role.short(),
                    s.partition(),
                    Some(&uid),
                    &format!("success: to {peer}"),
                ));
            }
            self.store
                .write(|t| events.iter().try_for_each(|e| t.event(e)))
        })();
        let done = end >= total;
        if !done || result.is_err() {
            put_back(
                sid.to_string(),
                CloneSession::Source {
                    partition,
                    keys,
                    peer,
                    handles,
                    verified: true,
                },
            );
        }
        result?;
        Ok(CloneBatch {
            first: from,
            total,
            sealed,
        })
    }

    /// Step 5, on the target: opens and stages a batch; with the last, commits every object
    /// in one transaction (objects whose unique id the partition already holds stay as they
    /// are). Until then nothing is written: a clone cut off leaves the target as it was.
    pub fn clone_import(
        &mut self,
        s: &Session,
        session: &str,
        batch: &CloneBatch,
    ) -> Result<CloneProgress> {
        let (id, _, _, _) = self.clone_party(s, "cloning into a partition")?;
        let sid = session.split_once(':').map_or(session, |(t, _)| t);
        let CloneSession::Receiving {
            partition,
            keys,
            peer,
            total,
            mut staged,
            replace,
        } = take(sid, id)?
        else {
            return Err(HsmError::State(
                "that clone has not been confirmed here".into(),
            ));
        };
        let opened = (|| -> Result<()> {
            if batch.total != total || batch.first != staged.len() as u64 {
                return Err(HsmError::InvalidInput(format!(
                    "the clone's batch starts at object {} of {}, but {} of {total} have come",
                    batch.first,
                    batch.total,
                    staged.len()
                )));
            }
            for (i, hexed) in batch.sealed.iter().enumerate() {
                let index = batch.first + i as u64;
                if index >= total {
                    return Err(HsmError::InvalidInput(
                        "the clone sends more objects than it said".into(),
                    ));
                }
                let pt = crypto::open(
                    &keys.wrap,
                    &object_aad(&keys.transcript, index),
                    &hexd(hexed, "object")?,
                    &format!("cloned object {index}"),
                )?;
                let t: Travelling = serde_json::from_slice(pt.expose()).map_err(|e| {
                    HsmError::InvalidInput(format!("cloned object {index} does not decode: {e}"))
                })?;
                staged.push(t);
            }
            Ok(())
        })();
        // A bad batch ends the clone (its session is not put back): nothing was written.
        opened?;
        let received = staged.len() as u64;
        if received < total {
            put_back(
                sid.to_string(),
                CloneSession::Receiving {
                    partition,
                    keys,
                    peer,
                    total,
                    staged,
                    replace,
                },
            );
            return Ok(CloneProgress {
                received,
                total,
                committed: None,
                replaced: 0,
            });
        }
        let (added, replaced, skipped) =
            self.commit_objects(s, &staged, "clone-in", &format!("from {peer}"), replace)?;
        Ok(CloneProgress {
            received,
            total,
            committed: Some((added, skipped)),
            replaced,
        })
    }

    /// The records of `handles` in partition `id`, read in one transaction (so each bucket of
    /// object fingerprints is opened once, not once per object).
    pub(super) fn load_all(&mut self, id: u32, handles: &[u64]) -> Result<Vec<ObjectRecord>> {
        self.store
            .read(|t| handles.iter().map(|h| Self::load(t, id, *h)).collect())
    }

    /// Object `h` of partition `id` (its record `rec`) as it travels: its unique id, and its
    /// JSON, which holds the key material in clear (to be sealed at once).
    pub(super) fn travelling(
        &self,
        id: u32,
        pmk: &Secret32,
        h: u64,
        rec: &ObjectRecord,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>)> {
        let material = match rec.material {
            Some(_) => Some(Self::open_material(id, pmk, h, rec)?.expose().to_vec()),
            None => None,
        };
        let mut attrs = rec.attrs.clone();
        attrs.unique_id = rec.attrs.unique_id(&self.serial, id, h);
        let uid = attrs.unique_id.clone();
        let t = Travelling {
            attrs,
            public: rec.public.clone(),
            material,
            content: rec.content.clone(),
        };
        let pt = zeroize::Zeroizing::new(
            serde_json::to_vec(&t).map_err(|e| HsmError::Store(e.to_string()))?,
        );
        Ok((uid, pt))
    }

    /// Writes travelled objects into the session's partition in one transaction, one audit
    /// record `event` each (`whence` names the peer or file). An object whose unique id the
    /// partition holds is left as it is, or with `replace` destroyed and replaced. Returns
    /// (added, replaced, skipped).
    pub(super) fn commit_objects(
        &mut self,
        s: &Session,
        objects: &[Travelling],
        event: &str,
        whence: &str,
        replace: bool,
    ) -> Result<(u64, u64, u64)> {
        let (id, pmk) = self.object_keeper(s, "writing objects", true)?;
        let role = s.role.short();
        let part_label = s.partition().map(str::to_owned);
        let serial = self.serial.clone();
        self.store.write(|t| {
            let mut p = Self::partition_by_id(t, id)?;
            let mut present: HashMap<String, u64> = HashMap::new();
            for h in t.find_handles(id, None, None, None)? {
                present.insert(Self::load(t, id, h)?.attrs.unique_id(&serial, id, h), h);
            }
            let (mut added, mut replaced, mut skipped) = (0u64, 0u64, 0u64);
            let mut seen = HashSet::new();
            for o in objects {
                let uid = o.attrs.unique_id.clone();
                if uid.is_empty() || !seen.insert(uid.clone()) {
                    skipped += 1;
                    continue;
                }
                let old = present.get(&uid).copied();
                match (old, replace) {
                    (Some(_), false) => {
                        skipped += 1;
                        continue;
                    }
                    (Some(h), true) => {
                        t.delete_object(id, h)?;
                        replaced += 1;
                    }
                    (None, _) => {
                        // Brought back deliberately (a restore, a clone): no longer destroyed.
                        t.delete("destroyed", &super::ha::tombstone(id, &uid))?;
                        added += 1;
                    }
                }
                let h = p.next_handle;
                p.next_handle += 1;
                let material = o
                    .material
                    .as_ref()
                    .map(|m| crypto::seal(&pmk, &Self::material_aad(id, h), m));
                Self::put_record(
                    t,
                    id,
                    h,
                    &ObjectRecord {
                        attrs: o.attrs.clone(),
                        public: o.public.clone(),
                        material,
                        content: o.content.clone(),
                    },
                )?;
                t.event(&Event {
                    seq: 0,
                    time: now_rfc3339(),
                    serial: serial.clone(),
                    event: event.into(),
                    role: role.into(),
                    partition: part_label.clone(),
                    object: Some(uid),
                    outcome: format!(
                        "success: {}{whence}",
                        if old.is_some() { "replaced, " } else { "" }
                    ),
                })?;
            }
            t.put("partition", &pid(id), &p)?;
            Ok((added, replaced, skipped))
        })
    }

    /// The objects of partition `id` that `select` names, each with its class, once the
    /// partition's policy is checked for every one of them (a refusal is audited as `event`).
    pub(super) fn selected(
        &mut self,
        s: &Session,
        id: u32,
        label: &str,
        policy: &Policy,
        select: &CloneSelect,
        event: &str,
    ) -> Result<Vec<(u64, ObjectClass)>> {
        let records = self.store.read(|t| {
            let mut out = Vec::new();
            for h in t.find_handles(id, None, None, None)? {
                let rec = Self::load(t, id, h)?;
                let a = &rec.attrs;
                let wanted = (select.labels.is_empty()
                    && select.ids.is_empty()
                    && select.classes.is_empty()
                    && select.unique_ids.is_empty())
                    || select.labels.contains(&a.label)
                    || select.ids.contains(&a.id)
                    || select.classes.contains(&a.class)
                    || (!select.unique_ids.is_empty()
                        && select
                            .unique_ids
                            .contains(&a.unique_id(&self.serial, id, h)));
                if wanted {
                    out.push((h, a.class));
                }
            }
            Ok(out)
        })?;
        if records.is_empty() {
            return Err(HsmError::NotFound(format!(
                "nothing in partition {label} matches what is to be cloned"
            )));
        }
        if let Some((_, class, why)) = records
            .iter()
            .find_map(|(h, c)| class_allowed(policy, *c).map(|w| (h, c, w)))
        {
            let e = HsmError::Refused(format!(
                "partition {label}'s policy {why} is off: its {} objects are not cloned; nothing was transferred",
                class.name()
            ));
            return Err(self.refuse(event, s.role.short(), s.partition(), e));
        }
        Ok(records)
    }
}
