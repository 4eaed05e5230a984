//! The login memo: this process remembers, for a bounded time, the Argon2id output of a Crypto
//! Officer's or Crypto User's last successful password (or challenge secret) login, so that
//! an application that logs in and out often pays the memory-hard derivation once.
//!
//! What it guarantees:
//! - It is a memo of a pure function, `KdfParams::derive(input)`: an entry is found only for
//!   the same parameters (the role's random salt included) and the same input, so it can never
//!   make a login succeed that the stored verifier would refuse. Every other step of a login
//!   (verifier check, failed-login counting, lockout, audit record) runs as before.
//! - Only successful logins are remembered, so wrong guesses still each cost a derivation and
//!   a counted failure.
//! - It lives in this process's memory only (never in the data directory, so the offline cost
//!   of guessing from a copied data directory is unchanged). Inputs are not kept: an entry holds
//!   an HMAC of the input under a random per-process key, compared in constant time, and the
//!   derived value; both are zeroized when the entry goes.
//! - An entry is served only while its partition's `login-cache-seconds` policy allows, counted
//!   from its last successful use; expired entries are wiped at the next login, logout or
//!   session close of the process ([`purge_expired`]), and all of them by [`forget_all`]
//!   (`C_Finalize`), a zeroize, or a change to any role's credentials in this process.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use zeroize::Zeroize;

use crate::crypto::KdfParams;
use crate::error::Result;
use crate::secret::Secret32;

/// Most entries kept (one per role and partition an application logs in to, in practice).
const MAX_ENTRIES: usize = 32;

struct Entry {
    kdf: KdfParams,
    tag: [u8; 32],
    derived: Secret32,
    last_used: Instant,
    ttl: Duration,
}

impl Entry {
    fn live(&self) -> bool {
        self.last_used.elapsed() <= self.ttl
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.tag.zeroize();
    }
}

/// A set of remembered derivations. The process has one ([`derive`], [`remember`] and the
/// other free functions use it); tests make their own.
struct Memo {
    key: OnceLock<hmac::Key>,
    entries: Mutex<Vec<Entry>>,
}

static MEMO: Memo = Memo::new();

impl Memo {
    const fn new() -> Self {
        Memo {
            key: OnceLock::new(),
            entries: Mutex::new(Vec::new()),
        }
    }

    fn tag(&self, input: &[u8]) -> [u8; 32] {
        let key = self.key.get_or_init(|| {
            let mut k = [0u8; 32];
            crate::crypto::fill_random(&mut k);
            let key = hmac::Key::new(hmac::HMAC_SHA256, &k);
            k.zeroize();
            key
        });
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(key, input).as_ref());
        out
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A panic elsewhere while the lock was held leaves only plain data behind.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn derive(&self, kdf: &KdfParams, input: &[u8], ttl_s: u32) -> Result<(Secret32, bool)> {
        if ttl_s > 0 {
            let t = self.tag(input);
            let ttl = Duration::from_secs(ttl_s.into());
            let mut es = self.entries();
            es.retain(Entry::live);
            let hit = es.iter().find(|e| {
                e.kdf == *kdf
                    && e.last_used.elapsed() <= ttl
                    && bool::from(subtle::ConstantTimeEq::ct_eq(&e.tag[..], &t[..]))
            });
            if let Some(e) = hit {
                return Ok((e.derived.clone(), true));
            }
        }
        Ok((kdf.derive(input)?, false))
    }

    fn remember(&self, kdf: &KdfParams, input: &[u8], derived: &Secret32, ttl_s: u32) {
        if ttl_s == 0 {
            return;
        }
        let t = self.tag(input);
        let mut es = self.entries();
        es.retain(|e| e.live() && e.kdf != *kdf);
        if es.len() >= MAX_ENTRIES {
            // The least recently used goes.
            if let Some(i) = (0..es.len()).min_by_key(|&i| es[i].last_used) {
                es.swap_remove(i);
            }
        }
        es.push(Entry {
            kdf: kdf.clone(),
            tag: t,
            derived: derived.clone(),
            last_used: Instant::now(),
            ttl: Duration::from_secs(ttl_s.into()),
        });
    }
}

/// `kdf.derive(input)`, served from the memo when a live entry for the same parameters and
/// input exists and was last used within `ttl_s` seconds (0: never). The flag says whether it
/// was served from the memo.
pub(crate) fn derive(kdf: &KdfParams, input: &[u8], ttl_s: u32) -> Result<(Secret32, bool)> {
    MEMO.derive(kdf, input, ttl_s)
}

/// Remembers `derived` as `kdf.derive(input)` after a successful login, for `ttl_s` seconds
/// from now (0: not at all); replaces any entry for the same parameters (the same role).
pub(crate) fn remember(kdf: &KdfParams, input: &[u8], derived: &Secret32, ttl_s: u32) {
    MEMO.remember(kdf, input, derived, ttl_s)
}

/// Wipes every entry whose time is up (called at logout and session close, so that an
/// expired entry does not wait in memory for the next login).
pub fn purge_expired() {
    MEMO.entries().retain(Entry::live);
}

/// Wipes every entry (the module's `C_Finalize`, a zeroize, a credential change).
pub fn forget_all() {
    MEMO.entries().clear();
}

/// How many entries are held (for tests and diagnostics; the entries themselves never leave).
pub fn len() -> usize {
    MEMO.entries().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters with a salt of their own (another role's, in effect).
    fn cheap() -> KdfParams {
        KdfParams::cheap_for_tests(&crate::crypto::random_hex_id(16))
    }

    #[test]
    fn serves_only_the_same_input_and_parameters_while_allowed() {
        let m = Memo::new();
        let kdf = cheap();
        let (d, hit) = m.derive(&kdf, b"right pin", 60).unwrap();
        assert!(!hit, "nothing remembered yet");
        m.remember(&kdf, b"right pin", &d, 60);
        let (again, hit) = m.derive(&kdf, b"right pin", 60).unwrap();
        assert!(hit);
        assert_eq!(again, kdf.derive(b"right pin").unwrap());
        // Another input, or the same input under other parameters (another role's salt),
        // is derived afresh.
        let (w, hit) = m.derive(&kdf, b"wrong pin", 60).unwrap();
        assert!(!hit);
        assert_ne!(w, d);
        let other = cheap();
        let (o, hit) = m.derive(&other, b"right pin", 60).unwrap();
        assert!(!hit);
        assert_eq!(o, other.derive(b"right pin").unwrap());
        // A policy of 0 seconds neither serves nor remembers.
        assert!(!m.derive(&kdf, b"right pin", 0).unwrap().1);
        m.remember(&other, b"right pin", &o, 0);
        assert!(!m.derive(&other, b"right pin", 60).unwrap().1);
        assert_eq!(m.entries().len(), 1);
    }

    #[test]
    fn entries_expire() {
        let m = Memo::new();
        let kdf = cheap();
        let d = kdf.derive(b"pin").unwrap();
        m.remember(&kdf, b"pin", &d, 1);
        assert!(
            m.derive(&kdf, b"pin", 60).unwrap().1,
            "live for its own second"
        );
        std::thread::sleep(Duration::from_millis(1100));
        // Its own time (1 s) is up, whatever the caller's policy now allows.
        assert!(!m.derive(&kdf, b"pin", 60).unwrap().1);
        assert!(m.entries().is_empty(), "the expired entry was wiped");
        // A policy lowered since: served only within the lower figure.
        m.remember(&kdf, b"pin", &d, 60);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!m.derive(&kdf, b"pin", 1).unwrap().1);
        assert!(m.derive(&kdf, b"pin", 60).unwrap().1);
    }
}
