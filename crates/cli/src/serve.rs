//! `ferrohsm server`: reads the configuration, sets up logging and runs the server.

use std::path::{Path, PathBuf};

use clap::Args;
use ferrohsm_core::HsmError;
use ferrohsm_server::config::DEFAULT_CONFIG_PATH;
use ferrohsm_server::{ServerConfig, ServerError};

/// `ferrohsm server` options.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The configuration file (TOML). Without it, /etc/ferrohsm/server.toml if present, else
    /// the defaults with the data directory from --data-dir. Also after `fingerprint`.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Listen on this socket instead of the configured one.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Check the configuration, print it, and exit (0 if usable, 2 if not).
    #[arg(long)]
    pub check_config: bool,
    /// Print every setting with its default value, as a configuration file, and exit.
    #[arg(long)]
    pub print_default_config: bool,
    #[command(subcommand)]
    pub action: Option<ServerAction>,
}

/// What `ferrohsm server` does besides serving.
#[derive(clap::Subcommand, Debug)]
pub enum ServerAction {
    /// Print the fingerprint of the server's TLS key (SHA-256 of its SubjectPublicKeyInfo),
    /// for network clients to pin; makes the key and certificate if there are none yet.
    Fingerprint,
}

fn config(a: &ServerArgs, data_dir: &Path) -> Result<ServerConfig, ServerError> {
    let mut c = match &a.config {
        Some(p) => ServerConfig::load(p)?,
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            ServerConfig::load(Path::new(DEFAULT_CONFIG_PATH))?
        }
        None => ServerConfig {
            data_dir: data_dir.to_path_buf(),
            ..ServerConfig::default()
        },
    };
    if let Some(s) = &a.socket {
        c.socket = s.clone();
    }
    c.validate()?;
    Ok(c)
}

fn exit_code(e: &ServerError) -> u8 {
    match e {
        ServerError::Config(_) => crate::exit::USAGE,
        ServerError::Hsm(h) => crate::exit_code(h),
        ServerError::Io { .. } => crate::exit::FAILURE,
    }
}

/// Runs the subcommand; errors are printed here (they are not engine errors alone).
pub fn run(a: ServerArgs, data_dir: &Path) -> Result<u8, HsmError> {
    if a.print_default_config {
        print!("{}", ServerConfig::default_toml());
        return Ok(crate::exit::OK);
    }
    let c = match config(&a, data_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrohsm server: {e}");
            return Ok(exit_code(&e));
        }
    };
    if let Some(ServerAction::Fingerprint) = a.action {
        println!("{}", ferrohsm_server::tls::fingerprint(&c)?);
        return Ok(crate::exit::OK);
    }
    if a.check_config {
        print!("{}", toml::to_string(&c).unwrap_or_default());
        eprintln!("ferrohsm server: configuration is usable");
        return Ok(crate::exit::OK);
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&c.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match ferrohsm_server::run(c, |socket| {
        eprintln!("ferrohsm server: listening on {}", socket.display())
    }) {
        Ok(()) => Ok(crate::exit::OK),
        Err(e) => {
            eprintln!("ferrohsm server: {e}");
            Ok(exit_code(&e))
        }
    }
}
