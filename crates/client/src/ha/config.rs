//! An HA group's configuration: the `ha_*` entries of the PKCS#11 module's file.
//!
//! ```text
//! ha_group   = "payments"                                   # the slot's token label
//! ha_member  = "tls://hsm1:1792 payments sha256:3f1c…"      # server, partition, fingerprint
//! ha_member  = "tls://hsm2:1792 payments sha256:9ab0…"
//! ha_member  = "unix:/run/ferrohsm/ferrohsm.sock payments"  # a local server
//! ha_durable = 2                                            # K: members a new key is on
//! ha_slot    = 1                                            # the slot id
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::conf::Entry;
use crate::TlsClient;

/// The most members a group takes.
pub const MAX_MEMBERS: usize = 32;

/// Members a new key must be on before it is acknowledged, unless configured.
pub const DEFAULT_DURABLE: usize = 2;

/// The deadline of a member's call in a group unless `deadline_ms` says otherwise: shorter
/// than a lone server's, because another member can answer instead.
pub const GROUP_DEADLINE: Duration = Duration::from_secs(2);

/// The `ha_*` keys.
pub const KEYS: [&str; 4] = ["ha_group", "ha_member", "ha_durable", "ha_slot"];

/// One member: a partition on a server.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// `tls://host:port`, `unix:PATH` or a socket path.
    pub server: String,
    /// The partition's label on that server.
    pub partition: String,
    /// The TLS client settings, for a `tls://` member.
    pub tls: Option<TlsClient>,
}

impl MemberConfig {
    /// How the member is named in messages and audit records: `server/partition`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.server, self.partition)
    }
}

/// A whole group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// The group's name: the label of its one token.
    pub label: String,
    /// The slot id the application sees.
    pub slot: u32,
    /// The members, in the order they were listed.
    pub members: Vec<MemberConfig>,
    /// K: a new key is acknowledged once this many members hold it (or every live member,
    /// when fewer are live).
    pub durable: usize,
    /// Each member call's deadline.
    pub deadline: Duration,
}

/// The TLS files every `tls://` member shares (each member may pin its own fingerprint).
#[derive(Clone, Debug, Default)]
pub struct SharedTls {
    /// `client_cert`.
    pub cert: Option<PathBuf>,
    /// `client_key`.
    pub key: Option<PathBuf>,
    /// `server_ca`.
    pub ca: Option<PathBuf>,
}

impl GroupConfig {
    /// The group the `ha_*` entries describe, if there are any; `shown` names the file.
    /// Every member needs a partition; a `tls://` member needs `client_cert`, `client_key`
    /// and a fingerprint (its third word) or `server_ca`. At most [`MAX_MEMBERS`].
    pub fn from_entries(
        shown: &str,
        entries: &[Entry<'_>],
        tls: &SharedTls,
        deadline: Option<Duration>,
    ) -> Result<Option<GroupConfig>, String> {
        let mut label = None;
        let mut members = Vec::new();
        let mut durable = DEFAULT_DURABLE;
        let mut slot = 1u32;
        for e in entries {
            let at = |msg: &str| format!("{shown} line {}: {msg}", e.line);
            match e.key {
                "ha_group" => {
                    if e.value.is_empty() || e.value.len() > 32 {
                        return Err(at(
                            "ha_group is the group's name, 1 to 32 characters (the token label)",
                        ));
                    }
                    label = Some(e.value.to_string());
                }
                "ha_member" => members.push(member(e.value, tls).map_err(|m| at(&m))?),
                "ha_durable" => {
                    durable = match e.value.parse::<usize>() {
                        Ok(k @ 1..=MAX_MEMBERS) => k,
                        _ => {
                            return Err(at(&format!(
                                "ha_durable is a number of members, 1 to {MAX_MEMBERS}"
                            )))
                        }
                    }
                }
                "ha_slot" => {
                    slot = e
                        .value
                        .parse::<u32>()
                        .map_err(|_| at("ha_slot is a slot number"))?
                }
                _ => {}
            }
        }
        let Some(label) = label else {
            if !members.is_empty() {
                return Err(format!(
                    "{shown}: ha_member needs ha_group (the group's name)"
                ));
            }
            return Ok(None);
        };
        if members.is_empty() {
            return Err(format!("{shown}: HA group {label} has no ha_member"));
        }
        if members.len() > MAX_MEMBERS {
            return Err(format!(
                "{shown}: HA group {label} has {} members; a group takes at most {MAX_MEMBERS}",
                members.len()
            ));
        }
        if durable > members.len() {
            return Err(format!(
                "{shown}: ha_durable = {durable}, but HA group {label} has {} member(s)",
                members.len()
            ));
        }
        let names: std::collections::BTreeSet<String> =
            members.iter().map(MemberConfig::name).collect();
        if names.len() != members.len() {
            return Err(format!(
                "{shown}: HA group {label} names the same member twice"
            ));
        }
        Ok(Some(GroupConfig {
            label,
            slot,
            members,
            durable,
            deadline: deadline.unwrap_or(GROUP_DEADLINE),
        }))
    }
}

impl GroupConfig {
    /// The group a PKCS#11 module configuration file describes (`client_cert`, `client_key`,
    /// `server_ca`, `deadline_ms` and the `ha_*` entries; the rest is the module's). An
    /// error names the file and line, or says that it describes no group.
    pub fn from_file(path: &std::path::Path) -> Result<GroupConfig, String> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the configuration {shown}: {e}"))?;
        let entries = crate::conf::entries(&shown, &text)?;
        let mut tls = SharedTls::default();
        let mut deadline = None;
        for e in &entries {
            match e.key {
                "client_cert" => tls.cert = Some(e.value.into()),
                "client_key" => tls.key = Some(e.value.into()),
                "server_ca" => tls.ca = Some(e.value.into()),
                "deadline_ms" => {
                    deadline = e.value.parse::<u64>().ok().map(Duration::from_millis);
                }
                _ => {}
            }
        }
        GroupConfig::from_entries(&shown, &entries, &tls, deadline)?
            .ok_or_else(|| format!("{shown} describes no HA group (no ha_group line)"))
    }
}

/// An `ha_member` value: `SERVER PARTITION [FINGERPRINT]`.
fn member(v: &str, tls: &SharedTls) -> Result<MemberConfig, String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let (server, partition, fingerprint) = match words[..] {
        [s, p] => (s, p, None),
        [s, p, f] => (s, p, Some(f)),
        _ => return Err(
            "ha_member is \"SERVER PARTITION\" or, for tls://, \"SERVER PARTITION FINGERPRINT\""
                .into(),
        ),
    };
    let tls = if server.starts_with("tls://") {
        match (&tls.cert, &tls.key, fingerprint.is_some() || tls.ca.is_some()) {
            (Some(cert), Some(key), true) => Some(TlsClient {
                cert: cert.clone(),
                key: key.clone(),
                server_fingerprint: fingerprint.unwrap_or_default().to_string(),
                server_ca: tls.ca.clone(),
            }),
            _ => {
                return Err(format!(
                    "member {server} needs client_cert, client_key and its fingerprint (third word) or server_ca"
                ))
            }
        }
    } else if fingerprint.is_some() {
        return Err(format!(
            "member {server} is not tls://: it takes no fingerprint"
        ));
    } else {
        None
    };
    Ok(MemberConfig {
        server: server.to_string(),
        partition: partition.to_string(),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::entries;

    fn parse(text: &str) -> Result<Option<GroupConfig>, String> {
        let tls = SharedTls {
            cert: Some("c.crt".into()),
            key: Some("c.key".into()),
            ca: None,
        };
        GroupConfig::from_entries("f", &entries("f", text).unwrap(), &tls, None)
    }

    #[test]
    fn a_group_reads_its_members_and_defaults() {
        let g = parse(
            "ha_group = \"pay\"\nha_member = \"tls://a:1 p sha256:aa\"\nha_member = \"unix:/s p\"\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.label, "pay");
        assert_eq!((g.slot, g.durable, g.deadline), (1, 2, GROUP_DEADLINE));
        assert_eq!(g.members.len(), 2);
        assert_eq!(g.members[0].name(), "tls://a:1/p");
        assert_eq!(
            g.members[0].tls.as_ref().unwrap().server_fingerprint,
            "sha256:aa"
        );
        assert!(g.members[1].tls.is_none());
        assert!(parse("server = \"unix:/x\"\n").unwrap().is_none());
    }

    #[test]
    fn a_bad_group_is_refused_with_the_reason() {
        let many: String = (0..33)
            .map(|i| format!("ha_member = \"unix:/s{i} p\"\n"))
            .collect();
        let e = parse(&format!("ha_group = g\n{many}")).unwrap_err();
        assert!(e.contains("at most 32"), "{e}");
        let thirty_two: String = (0..32)
            .map(|i| format!("ha_member = \"unix:/s{i} p\"\n"))
            .collect();
        assert_eq!(
            parse(&format!("ha_group = g\n{thirty_two}"))
                .unwrap()
                .unwrap()
                .members
                .len(),
            32
        );
        for (text, says) in [
            ("ha_member = \"unix:/s p\"\n", "needs ha_group"),
            ("ha_group = g\n", "has no ha_member"),
            (
                "ha_group = g\nha_member = \"unix:/s\"\n",
                "SERVER PARTITION",
            ),
            ("ha_group = g\nha_member = \"tls://a:1 p\"\n", "fingerprint"),
            (
                "ha_group = g\nha_member = \"unix:/s p x\"\n",
                "takes no fingerprint",
            ),
            (
                "ha_group = g\nha_member = \"unix:/s p\"\nha_durable = 0\n",
                "ha_durable",
            ),
            (
                "ha_group = g\nha_member = \"unix:/s p\"\nha_durable = 2\n",
                "has 1 member",
            ),
            (
                "ha_group = g\nha_member = \"unix:/s p\"\nha_member = \"unix:/s p\"\n",
                "same member twice",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
