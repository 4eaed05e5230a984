//! A whole clone between two HSMs as a front end runs it: the five calls of
//! [`crate::hsm::Hsm::clone_accept`] … [`crate::hsm::Hsm::clone_import`] in order, each on
//! its side's API (the same HSM through two front ends, or two servers).

use super::{CloneHello, CloneProgress, CloneSelect, HsmApi, LoginId};
use crate::error::{HsmError, Result};

/// What a finished clone did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneDone {
    /// The source's hello (its serial, partition and what moved).
    pub source: CloneHello,
    /// The target's hello.
    pub target: CloneHello,
    /// Objects added to the target.
    pub added: u64,
    /// Objects the target already held (same unique id), left as they were.
    pub skipped: u64,
    /// Objects the target already held and replaced (`CloneSelect::replace`).
    pub replaced: u64,
}

/// The side of a clone a step ran on (which one failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneSide {
    /// The HSM the objects come from.
    Source,
    /// The HSM they go to.
    Target,
}

/// Clones what `select` names from the source (logged in as `source_login` on `source`) to
/// the target, `batch` objects per round trip; `progress` hears after each batch.
pub fn clone_between(
    source: &mut dyn HsmApi,
    source_login: LoginId,
    target: &mut dyn HsmApi,
    target_login: LoginId,
    select: &CloneSelect,
    batch: u32,
    progress: impl FnMut(&CloneHello, &CloneHello, &CloneProgress),
) -> Result<CloneDone> {
    clone_sided(
        source,
        source_login,
        target,
        target_login,
        select,
        batch,
        progress,
    )
    .map_err(|(_, e)| e)
}

/// [`clone_between`], saying on failure which side's step failed (a refusal by the target,
/// such as another cloning domain, is the target's; one by the source's policy, the source's).
pub fn clone_sided(
    source: &mut dyn HsmApi,
    source_login: LoginId,
    target: &mut dyn HsmApi,
    target_login: LoginId,
    select: &CloneSelect,
    batch: u32,
    mut progress: impl FnMut(&CloneHello, &CloneHello, &CloneProgress),
) -> std::result::Result<CloneDone, (CloneSide, HsmError)> {
    let src = |e| (CloneSide::Source, e);
    let dst = |e| (CloneSide::Target, e);
    let hello_t = target
        .clone_accept(target_login, select.replace)
        .map_err(dst)?;
    let hello_s = source
        .clone_offer(source_login, &hello_t, select)
        .map_err(src)?;
    let proof = target.clone_confirm(target_login, &hello_s).map_err(dst)?;
    let mut from = 0u64;
    loop {
        let b = source
            .clone_export(source_login, &hello_s.session, &proof, from, batch)
            .map_err(src)?;
        from += b.sealed.len() as u64;
        let p = target
            .clone_import(target_login, &hello_s.session, &b)
            .map_err(dst)?;
        progress(&hello_s, &hello_t, &p);
        if let Some((added, skipped)) = p.committed {
            return Ok(CloneDone {
                source: hello_s,
                target: hello_t,
                added,
                skipped,
                replaced: p.replaced,
            });
        }
        if b.sealed.is_empty() {
            return Err(src(HsmError::State(
                "the source sent an empty batch before the clone was complete; nothing was written"
                    .into(),
            )));
        }
    }
}
