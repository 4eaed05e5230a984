//! What an HA group records on its members: a member leaving the group (it stopped
//! answering) and coming back (brought in sync and serving again). The group runs in the
//! client (`ferrohsm-client`); the members' audit logs are where an auditor reads what
//! happened to it, so the group reports each change to the members it can still reach.

use super::*;

/// The membership events an HA group may record.
pub const HA_EVENTS: [&str; 3] = ["member-down", "member-rejoined", "member-joined"];

/// The longest group or member name recorded.
const MAX_NAME: usize = 256;

fn checked_name<'a>(what: &str, v: &'a str) -> Result<&'a str> {
    if v.is_empty() || v.len() > MAX_NAME || v.chars().any(char::is_control) {
        return Err(HsmError::InvalidInput(format!(
            "an HA {what} is 1 to {MAX_NAME} printable characters"
        )));
    }
    Ok(v)
}

/// The record naming a destroyed object of a partition (its unique id), kept so that an HA
/// group's members, and any process syncing them later, destroy it everywhere rather than
/// bring it back from a member that was away (kind `destroyed`; dropped with the partition's
/// objects).
pub(super) fn tombstone(partition: u32, unique_id: &str) -> String {
    format!("{}/{unique_id}", pid(partition))
}

impl Hsm {
    /// The unique ids of the token objects destroyed in the session's partition (Crypto
    /// Officer or Crypto User), oldest record first by id. An object cloned or restored back
    /// in since is not among them.
    pub fn destroyed_objects(&mut self, s: &Session) -> Result<Vec<String>> {
        let id = self.partition_role(s, "listing destroyed objects", false)?;
        let prefix = tombstone(id, "");
        self.store.read(|t| {
            Ok(t.list::<String>("destroyed")?
                .into_iter()
                .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_owned))
                .collect())
        })
    }

    /// Records `event` (one of [`HA_EVENTS`]) about `member` of the HA group `group` in the
    /// audit log, as `ha-<event>`, for the session's partition (its Crypto Officer: the role
    /// that replicates). Only those fixed events: a client cannot write free text into the log.
    pub fn ha_note(&mut self, s: &Session, group: &str, event: &str, member: &str) -> Result<()> {
        let (_, _, _, _) = self.clone_party(s, "recording an HA group's membership")?;
        if !HA_EVENTS.contains(&event) {
            return Err(HsmError::InvalidInput(format!(
                "unknown HA event {event:?} (known: {})",
                HA_EVENTS.join(", ")
            )));
        }
        let (group, member) = (
            checked_name("group", group)?,
            checked_name("member", member)?,
        );
        let e = self.ev(
            &format!("ha-{event}"),
            s.role.short(),
            s.partition(),
            None,
            &format!("success: group {group}, member {member}"),
        );
        self.store.event(&e)
    }
}
