//! The server's configuration: a TOML file, every key optional (see [`ServerConfig`]'s
//! defaults, which `ferrohsm server --print-default-config` prints).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the server reads its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ferrohsm/server.toml";

/// The server's settings. Unknown keys are refused (a misspelt limit must not silently
/// become the default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The HSM's data directory; the server owns it exclusively while it runs. It and every
    /// file in it must be readable by the server's user alone.
    pub data_dir: PathBuf,
    /// The Unix socket to listen on (created mode 0660; its directory must exist).
    pub socket: PathBuf,
    /// Unix users (by uid) allowed to connect, besides the server's own user.
    pub allowed_uids: Vec<u32>,
    /// Unix groups (by gid) whose members may connect.
    pub allowed_gids: Vec<u32>,
    /// Largest request or response frame, in bytes; a larger request closes its connection.
    pub max_frame_bytes: usize,
    /// Most connections served at once; more are refused and closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this many seconds is closed.
    pub idle_timeout_s: u64,
    /// A response the client does not read within this many seconds closes its connection.
    pub write_timeout_s: u64,
    /// On SIGTERM, in-flight requests get this many seconds to finish.
    pub shutdown_grace_s: u64,
    /// Log filter (tracing's syntax: "info", "ferrohsm_server=debug", …).
    pub log: String,
    /// Where to listen for network clients (TCP, TLS 1.3 with client certificates), e.g.
    /// "0.0.0.0:1792"; empty: no network listener. Only clients the HSM SO registered are
    /// admitted, each to the partitions assigned to it.
    pub tls_listen: String,
    /// The server's TLS certificate (PEM); empty: `tls-server.crt` in the data directory,
    /// made at first start with its key.
    pub tls_cert: PathBuf,
    /// The server's TLS private key (PEM); empty: `tls-server.key` in the data directory.
    pub tls_key: PathBuf,
    /// A TLS handshake not finished within this many seconds is cut (a client that connects
    /// and sends nothing, or dribbles its hello).
    pub handshake_timeout_s: u64,
    /// Most TLS handshakes in progress at once; a connection beyond them is closed at once
    /// (a flood of connections cannot take every thread).
    pub max_handshakes: usize,
    /// How long a client's logins (and so its PKCS#11 sessions) outlive its last connection:
    /// a link lost for less than this keeps them for the client to reconnect to.
    pub lease_s: u64,
    /// Where to serve `/metrics` (Prometheus text) and `/health` over plain HTTP, e.g.
    /// "127.0.0.1:9792"; empty: not served. Nothing secret is in them.
    pub metrics_listen: String,
    /// A file outside the data directory (another disk, a mount the HSM's backups do not
    /// restore) where the server keeps the latest signed audit checkpoint; at start it
    /// refuses to serve a log that does not extend it (an older copy of the data directory
    /// put back, or another history). Empty: not kept.
    pub checkpoint_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("/var/lib/ferrohsm"),
            socket: PathBuf::from(ferrohsm_proto::DEFAULT_SOCKET),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            max_frame_bytes: ferrohsm_proto::DEFAULT_MAX_FRAME,
            max_connections: 1024,
            idle_timeout_s: 300,
            write_timeout_s: 10,
            shutdown_grace_s: 30,
            log: "info".into(),
            metrics_listen: String::new(),
            checkpoint_file: PathBuf::new(),
            tls_listen: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            handshake_timeout_s: 5,
            max_handshakes: 64,
            lease_s: 60,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of its range.
    #[error("{0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Parses a configuration text; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<ServerConfig, ConfigError> {
        let c: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(1024..=(256 << 20)).contains(&self.max_frame_bytes) {
            return bad(format!(
                "max_frame_bytes = {} is outside 1024..=268435456",
                self.max_frame_bytes
            ));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return bad(format!(
                "max_connections = {} is outside 1..=65536",
                self.max_connections
            ));
        }
        for (name, v) in [
            ("idle_timeout_s", self.idle_timeout_s),
            ("write_timeout_s", self.write_timeout_s),
            ("shutdown_grace_s", self.shutdown_grace_s),
            ("handshake_timeout_s", self.handshake_timeout_s),
        ] {
            if !(1..=86_400).contains(&v) {
                return bad(format!("{name} = {v} is outside 1..=86400"));
            }
        }
        if !(1..=4096).contains(&self.max_handshakes) {
            return bad(format!(
                "max_handshakes = {} is outside 1..=4096",
                self.max_handshakes
            ));
        }
        if self.lease_s > 3600 {
            return bad(format!(
                "lease_s = {} is outside 0..=3600 (0: logins end with the last connection)",
                self.lease_s
            ));
        }
        if self.data_dir.as_os_str().is_empty() || self.socket.as_os_str().is_empty() {
            return bad("data_dir and socket must not be empty".into());
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(format!(
                "metrics_listen = {:?} is not an address and port (\"127.0.0.1:9792\")",
                self.metrics_listen
            ));
        }
        if !self.checkpoint_file.as_os_str().is_empty() {
            let (file, dir) = (
                std::path::absolute(&self.checkpoint_file).unwrap_or_default(),
                std::path::absolute(&self.data_dir).unwrap_or_default(),
            );
            if file.starts_with(&dir) {
                return bad(format!(
                    "checkpoint_file = {:?} is inside data_dir: a copy of the directory put back would bring its own older checkpoint",
                    self.checkpoint_file
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return bad(format!("log = {:?} is not a valid filter", self.log));
        }
        Ok(())
    }

    /// The defaults as a TOML document (every key, for `--print-default-config`).
    pub fn default_toml() -> String {
        // Serializing plain fields cannot fail.
        toml::to_string(&ServerConfig::default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_every_key_is_documented_by_them() {
        let text = ServerConfig::default_toml();
        let c = ServerConfig::parse(&text, Path::new("x")).unwrap();
        assert_eq!(c, ServerConfig::default());
        assert!(text.contains("max_frame_bytes") && text.contains("allowed_gids"));
    }

    #[test]
    fn unknown_keys_bad_types_and_ranges_are_refused_with_the_reason() {
        let p = Path::new("server.toml");
        let e = ServerConfig::parse("max_conections = 3\n", p).unwrap_err();
        assert!(e.to_string().contains("max_conections"), "{e}");
        let e = ServerConfig::parse("max_connections = \"many\"\n", p).unwrap_err();
        assert!(e.to_string().contains("server.toml"), "{e}");
        let e = ServerConfig::parse("max_frame_bytes = 10\n", p).unwrap_err();
        assert!(e.to_string().contains("max_frame_bytes = 10"), "{e}");
        let e = ServerConfig::parse("idle_timeout_s = 0\n", p).unwrap_err();
        assert!(e.to_string().contains("idle_timeout_s"), "{e}");
        for (text, key) in [
            ("max_handshakes = 0\n", "max_handshakes"),
            ("lease_s = 7200\n", "lease_s"),
            ("handshake_timeout_s = 0\n", "handshake_timeout_s"),
            // Inside the data directory, a copy put back would bring its own checkpoint.
            (
                "data_dir = \"/d\"\ncheckpoint_file = \"/d/last.checkpoint\"\n",
                "checkpoint_file",
            ),
        ] {
            let e = ServerConfig::parse(text, p).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let c = ServerConfig::parse("data_dir = \"/d\"\nallowed_gids = [5]\n", p).unwrap();
        assert_eq!(c.allowed_gids, vec![5]);
        assert_eq!(c.max_connections, 1024);
    }
}
