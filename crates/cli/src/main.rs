//! `ferrohsm`: the operator command for a ferrohsm HSM.
#![forbid(unsafe_code)]

mod audit;
mod clients;
mod cloning;
mod commands;
mod demo;
mod front;
mod gp;
mod ha;
mod input;
mod keys;
mod output;
mod pedargs;
mod serve;

pub use keys::{KeyCmd, KeyUser};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrohsm_core::HsmError;

use pedargs::{DomainImprint, ImprintCommon, Login, NewImprint, SoImprint};

/// Exit codes: what a script can tell apart.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Anything else: I/O, store, crypto failures, a signature that does not verify.
    pub const FAILURE: u8 = 1;
    /// Usage error or invalid input (bad flags, malformed PED key file, bad PIN format).
    pub const USAGE: u8 = 2;
    /// Authentication failed: wrong key, wrong colour, wrong PIN or password, locked out.
    pub const AUTH: u8 = 3;
    /// Refused by policy or separation of duties.
    pub const REFUSED: u8 = 4;
    /// Tamper detected, or the store failed its integrity checks.
    pub const TAMPER: u8 = 5;
    /// The thing named does not exist or is not in the state needed (e.g. not initialised).
    pub const STATE: u8 = 6;
}

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 failure, 2 usage or invalid input, 3 authentication failed,
4 refused by policy or role, 5 tamper, 6 not found or wrong state.

Secrets (PED PINs, passwords, challenge secrets) are never taken from the command line:
give them as env:NAME, file:PATH, - (one line of standard input) or prompt.

Example, a whole HSM from nothing:
  ferrohsm hsm init --label hsm1 --so-m 2 --so-n 3 --so-pin env:SO_PIN
  ferrohsm partition create --label payments --key ped-keys/FH…-hsm-so-1.pedkey --key …-3.pedkey --pin env:SO_PIN
  ferrohsm demo        # the whole story, in a fresh directory";

/// ferrohsm: a software HSM with PED-key authentication, partitions and M-of-N quorum.
#[derive(Parser, Debug)]
#[command(name = "ferrohsm", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The HSM's data directory (default ./ferrohsm-data). Without it (and without
    /// --server), commands go through the local server's socket when one answers there.
    #[arg(long, global = true, env = "FERROHSM_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where PED key files are written and looked for by default.
    #[arg(
        long,
        global = true,
        env = "FERROHSM_PED_DIR",
        default_value = "ped-keys",
        value_name = "DIR"
    )]
    pub ped_dir: PathBuf,
    /// The server to talk to: its Unix socket, or tls://host:port (with --tls-cert,
    /// --tls-key and --server-fingerprint). Without it, the CLI goes through the local
    /// server (/run/ferrohsm/ferrohsm.sock) when no data directory is named and one answers
    /// there, else through the server that holds the data directory, else it opens the
    /// directory itself.
    #[arg(long, global = true, env = "FERROHSM_SERVER", value_name = "SOCKET")]
    pub server: Option<PathBuf>,
    /// This host's TLS certificate (PEM), for a server named tls://host:port.
    #[arg(long, global = true, env = "FERROHSM_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This host's TLS private key (PEM).
    #[arg(long, global = true, env = "FERROHSM_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The fingerprint of the server's TLS key (`ferrohsm server fingerprint` on the server);
    /// any other server is refused before anything is sent.
    #[arg(
        long,
        global = true,
        env = "FERROHSM_SERVER_FINGERPRINT",
        value_name = "HEX"
    )]
    pub server_fingerprint: Option<String>,
    /// Or (and) a CA certificate (PEM) that issued the server's certificate for the host
    /// named in --server.
    #[arg(long, global = true, env = "FERROHSM_SERVER_CA", value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// Machine-readable output (JSON) for show and list commands.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Command groups.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the HSM as a server: the boundary that applications and operators reach over a
    /// Unix socket. It owns the data directory while it runs.
    #[command(
        after_help = "Examples:\n  ferrohsm server --print-default-config > /etc/ferrohsm/server.toml\n  ferrohsm server --config /etc/ferrohsm/server.toml --check-config\n  ferrohsm server --config /etc/ferrohsm/server.toml\n  ferrohsm server --socket /tmp/hsm.sock     # no file: defaults, the data directory from --data-dir"
    )]
    Server(serve::ServerArgs),
    /// The device: initialise, show, zeroize, tamper, policies.
    #[command(
        after_help = "Example:\n  ferrohsm hsm init --label hsm1 --so-m 2 --so-n 3 --so-pin prompt\n  ferrohsm hsm show"
    )]
    #[command(subcommand)]
    Hsm(HsmCmd),
    /// Partitions (PKCS#11 tokens): create, initialise, list, delete, policies.
    #[command(
        after_help = "Example:\n  ferrohsm partition create --label payments\n  ferrohsm partition init --partition payments"
    )]
    #[command(subcommand)]
    Partition(PartitionCmd),
    /// Partition roles: Crypto Officer and Crypto User, activation, lockout reset, PIN and secret changes.
    #[command(
        after_help = "Example:\n  ferrohsm role init --partition payments --role co\n  ferrohsm role activate --partition payments --role co --set-challenge prompt"
    )]
    #[command(subcommand)]
    Role(RoleCmd),
    /// Partition backup files: check one without restoring it.
    #[command(
        after_help = "Example:\n  ferrohsm backup verify payments.backup --partition spare --challenge prompt"
    )]
    #[command(subcommand)]
    Backup(BackupCmd),
    /// HA groups (as the PKCS#11 module's configuration names them): members, state, lag;
    /// bring them in sync.
    #[command(
        after_help = "Example:\n  ferrohsm ha show --config /etc/ferrohsm/pkcs11.conf --password env:CO_PW"
    )]
    #[command(subcommand)]
    Ha(ha::HaCmd),
    /// GlobalPlatform card keys: master key sets (generate, import by ceremony, list,
    /// rotate, retire), key check values, card keys diversified inside, and personalising a
    /// card over a secure channel the HSM computes.
    #[command(
        after_help = "Example:\n  ferrohsm gp master generate --partition issuing --set issuer --type aes-128 --population \"cards 2026\" --password env:CO_PW\n  ferrohsm gp personalise --partition issuing --card card.json --from transport --to issuer --method kdf3 --password env:CO_PW"
    )]
    #[command(subcommand)]
    Gp(gp::GpCmd),
    /// PED key files: inspect and duplicate.
    #[command(
        after_help = "Example:\n  ferrohsm ped show ped-keys/*.pedkey\n  ferrohsm ped duplicate --from a.pedkey --to backup/a.pedkey"
    )]
    #[command(subcommand)]
    Ped(PedCmd),
    /// Keys in a partition: generate, list, sign, verify, encrypt, decrypt, delete.
    #[command(
        after_help = "Example:\n  ferrohsm key generate --partition payments --type rsa-2048 --label signer --challenge prompt"
    )]
    #[command(subcommand)]
    Key(KeyCmd),
    /// Client hosts of a network HSM: register, assign partitions, revoke; make a host key.
    #[command(
        after_help = "Example:\n  ferrohsm client keygen --name app1 --key app1.key --cert app1.crt\n  ferrohsm client register --name app1 --cert app1.crt --password prompt"
    )]
    #[command(subcommand)]
    Client(clients::ClientCmd),
    /// The audit log: Auditor role, show, export, verify, configuration, witnesses.
    #[command(
        after_help = "Example:\n  ferrohsm audit init\n  ferrohsm audit show --failures\n  ferrohsm audit export --out audit.json"
    )]
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run the whole story non-interactively in a fresh data directory and explain each step.
    #[command(
        after_help = "Example:\n  ferrohsm demo\n  ferrohsm demo --dir /tmp/hsm-demo   # keep the result"
    )]
    Demo {
        /// Directory to run in (default: a new temporary directory, removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `ferrohsm hsm …`
#[derive(Subcommand, Debug)]
pub enum HsmCmd {
    /// Initialise the HSM: imprint the HSM SO (blue) and the cloning domain (red).
    #[command(after_help = "\
Examples:
  # PED-authenticated, SO split 2 of 3 with a PED PIN, domain on one red key:
  ferrohsm hsm init --label hsm1 --so-m 2 --so-n 3 --so-pin env:SO_PIN
  # reuse another HSM's cloning domain:
  ferrohsm hsm init --label hsm2 --domain-reuse --domain-key red-from-hsm1.pedkey
  # password-authenticated (for plain PKCS#11 tools):
  ferrohsm hsm init --label lab --auth password --so-password env:SO_PW --domain-password env:DOMAIN
  # re-initialise an HSM that has partitions (needs the current SO):
  ferrohsm hsm init --label hsm1 --key so-1.pedkey --confirm-destroy payments,pki --overwrite")]
    Init {
        /// HSM label.
        #[arg(long)]
        label: String,
        /// How roles authenticate.
        #[arg(long, value_enum, default_value = "ped")]
        auth: AuthArg,
        #[command(flatten)]
        so: SoImprint,
        #[command(flatten)]
        domain: DomainImprint,
        #[command(flatten)]
        common: ImprintCommon,
        /// Re-initialisation: the partitions it destroys, all named (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "LABELS")]
        confirm_destroy: Vec<String>,
        /// A backup HSM: its partitions keep other partitions' objects (cloned in with
        /// `partition clone`, and cloned back out to restore) and never use them.
        #[arg(long)]
        backup: bool,
        /// Re-initialisation: the current HSM SO's credential.
        #[command(flatten)]
        login: Login,
    },
    /// Show serial, state, authentication mode, policies, partitions and roles.
    #[command(after_help = "Example:\n  ferrohsm hsm show\n  ferrohsm hsm show --json")]
    Show,
    /// Destroy all key material irreversibly (device key, partitions, roles, keys). The HSM
    /// SO logs in to do it; a store that fails its integrity checks (tamper) is destroyed
    /// without a login, with direct access to its directory.
    #[command(
        after_help = "Example:\n  ferrohsm hsm zeroize --yes --key ped-keys/FH…-hsm-so-1.pedkey --key …-2.pedkey --pin prompt\n  ferrohsm hsm zeroize --yes --password env:SO_PW      # password-authenticated HSM"
    )]
    Zeroize {
        /// Confirm.
        #[arg(long)]
        yes: bool,
        /// The HSM SO's credential.
        #[command(flatten)]
        login: Login,
    },
    /// Zeroize and clear the zeroize and tamper notes: as delivered. Works on the data
    /// directory directly (no server may hold it), with --yes. The audit log, its key and
    /// the Auditor are kept unless --erase-audit-log, for which the Auditor logs in with this
    /// command's --key/--pin/--password (export the log first).
    #[command(
        after_help = "Examples:\n  ferrohsm hsm factory-reset --yes\n  ferrohsm audit export --out before-reset.json && ferrohsm hsm factory-reset --yes --erase-audit-log --password env:AUDITOR_PW"
    )]
    FactoryReset {
        /// Confirm.
        #[arg(long)]
        yes: bool,
        /// Also destroy the audit log, its signing key and the Auditor (the Auditor logs in).
        #[arg(long)]
        erase_audit_log: bool,
        /// The Auditor's credential, with --erase-audit-log.
        #[command(flatten)]
        login: Login,
    },
    /// Simulate the tamper switch (HSM SO): zeroize and drop every activation.
    #[command(
        after_help = "Example:\n  ferrohsm hsm tamper --yes --password env:SO_PW && ferrohsm hsm show"
    )]
    Tamper {
        /// Confirm.
        #[arg(long)]
        yes: bool,
        /// The HSM SO's credential.
        #[command(flatten)]
        login: Login,
    },
    /// Simulate a restart (HSM SO): activations end unless auto-activation is allowed.
    #[command(
        after_help = "Example:\n  ferrohsm hsm restart --key ped-keys/FH…-hsm-so-1.pedkey --key …-2.pedkey --pin prompt"
    )]
    Restart {
        /// The HSM SO's credential.
        #[command(flatten)]
        login: Login,
    },
    /// HSM policies (HSM SO).
    #[command(subcommand)]
    Policy(HsmPolicyCmd),
}

/// `ferrohsm hsm policy …`
#[derive(Subcommand, Debug)]
pub enum HsmPolicyCmd {
    /// Show HSM policies.
    #[command(after_help = "Example:\n  ferrohsm hsm policy show --json")]
    Show,
    /// Set an HSM policy (HSM SO login).
    #[command(
        after_help = "Example:\n  ferrohsm hsm policy set m-of-n off --key so-1.pedkey --key so-2.pedkey --pin env:SO_PIN"
    )]
    Set {
        /// Policy name (failed-login-limit, activation, auto-activation, clone-private-keys, clone-secret-keys, m-of-n, remote-ped, login-cache-seconds).
        name: String,
        /// on, off, or a number.
        value: String,
        #[command(flatten)]
        login: Login,
    },
}

/// How the HSM authenticates roles.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum AuthArg {
    /// PED keys (files), optional PED PINs and M of N.
    Ped,
    /// Passwords.
    Password,
}

/// `ferrohsm backup …`.
#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Check a backup file (`partition backup`) without restoring it: its format, that it was
    /// made in the cloning domain of the partition named, its MAC, every object. Needs the
    /// Crypto Officer of a partition of that domain.
    #[command(
        after_help = "Example:\n  ferrohsm backup verify payments.backup --partition spare --challenge prompt"
    )]
    Verify {
        /// The backup file. Example: payments.backup
        file: PathBuf,
        /// A partition of the backup's cloning domain, whose Crypto Officer checks it.
        /// Example: --partition spare
        #[arg(long)]
        partition: String,
        #[command(flatten)]
        login: Login,
    },
}

/// `ferrohsm partition …`
#[derive(Subcommand, Debug)]
pub enum PartitionCmd {
    /// Create a partition (HSM SO login).
    #[command(
        after_help = "Example:\n  ferrohsm partition create --label payments --key so-1.pedkey --key so-3.pedkey --pin env:SO_PIN"
    )]
    Create {
        /// Partition label (also the PKCS#11 token label).
        #[arg(long)]
        label: String,
        #[command(flatten)]
        login: Login,
    },
    /// List partitions.
    #[command(after_help = "Example:\n  ferrohsm partition list --json")]
    List,
    /// Back up a partition (or the objects named): into a backup file (--out), each object
    /// sealed under keys derived from the partition's cloning domain, so that only a
    /// partition of that domain can check or restore it; or into a partition of a backup HSM
    /// (--to-server), by cloning. Needs the partition's Crypto Officer (and, on the backup
    /// HSM, its partition's: --to-key/--to-pin, --to-password or --to-challenge).
    #[command(
        after_help = "Examples:\n  ferrohsm partition backup --partition payments --out payments.backup --challenge prompt\n  ferrohsm partition backup --partition payments --to-server tls://vault:1792 --challenge prompt --to-password prompt"
    )]
    Backup {
        /// The partition to back up (its Crypto Officer logs in). Example: --partition payments
        #[arg(long)]
        partition: String,
        /// The backup file to write (owner-only). Example: --out payments.backup
        #[arg(
            long,
            required_unless_present = "to_server",
            conflicts_with = "to_server"
        )]
        out: Option<PathBuf>,
        /// A backup HSM's server (a socket, or tls://host:port with this command's TLS
        /// settings): the objects are cloned into its partition --to. Objects it already holds
        /// (same unique id) stay, or with --replace are replaced; new ones are added.
        /// Example: --to-server tls://vault:1792
        #[arg(long, value_name = "SERVER")]
        to_server: Option<PathBuf>,
        /// Replace the objects the backup partition already holds (same unique id) with
        /// their current versions (attributes, labels), all or nothing (--to-server only).
        #[arg(long, requires = "to_server")]
        replace: bool,
        /// The partition on the backup HSM (default: the same label). Example: --to payments
        #[arg(long, value_name = "PARTITION", requires = "to_server")]
        to: Option<String>,
        #[command(flatten)]
        to_login: crate::pedargs::TargetLogin,
        /// Back up only objects with this label (repeatable; with --id and --class, objects
        /// matching any of them). Default: every object. Example: --label signer
        #[arg(long)]
        label: Vec<String>,
        /// Only objects with this CKA_ID, in hex (repeatable). Example: --id 01a2
        #[arg(long, value_name = "HEX")]
        id: Vec<String>,
        /// Only objects of this class (repeatable). Example: --class private-key
        #[arg(long, value_name = "CLASS")]
        class: Vec<String>,
        #[command(flatten)]
        login: Login,
    },
    /// Restore a backup into a partition of the same cloning domain, all or nothing: from a
    /// backup file (--in) or from a backup HSM's partition (--from-server, by cloning);
    /// objects the partition holds (same unique id) stay as they are, or with --replace are
    /// replaced. Needs the partition's Crypto
    /// Officer (and the backup HSM's partition's: --to-key/--to-pin, --to-password or
    /// --to-challenge name the other HSM's Crypto Officer in both directions).
    #[command(
        after_help = "Examples:\n  ferrohsm partition restore --partition spare --in payments.backup --challenge prompt\n  ferrohsm partition restore --partition payments --from-server tls://vault:1792 --challenge prompt --to-password prompt"
    )]
    Restore {
        /// The partition to restore into. Example: --partition spare
        #[arg(long)]
        partition: String,
        /// The backup file. Example: --in payments.backup
        #[arg(
            long = "in",
            value_name = "FILE",
            required_unless_present = "from_server",
            conflicts_with = "from_server"
        )]
        input: Option<PathBuf>,
        /// A backup HSM's server whose partition --from is cloned back here.
        /// Example: --from-server tls://vault:1792
        #[arg(long, value_name = "SERVER")]
        from_server: Option<PathBuf>,
        /// The partition on the backup HSM (default: the same label). Example: --from payments
        #[arg(long, value_name = "PARTITION", requires = "from_server")]
        from: Option<String>,
        /// Replace objects the partition already holds (same unique id).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        to_login: crate::pedargs::TargetLogin,
        #[command(flatten)]
        login: Login,
    },
    /// Clone objects into a partition of the same cloning domain, on this HSM or on another
    /// server: both HSMs prove the domain before the first object moves, the target takes all
    /// or nothing, and both audit each object. Needs the Crypto Officer of each partition.
    #[command(
        after_help = "Examples:\n  ferrohsm partition clone --from payments --to payments-dr --to-server /run/ferrohsm/dr.sock --challenge env:CO --to-challenge env:DR_CO\n  ferrohsm partition clone --from payments --to spare --label signer --challenge env:CO --to-challenge env:SPARE_CO"
    )]
    Clone {
        /// The partition to clone from; its Crypto Officer logs in with --key/--pin, --password
        /// or --challenge. Example: --from payments
        #[arg(long, value_name = "PARTITION")]
        from: String,
        /// The partition to clone into; its Crypto Officer logs in with --to-key/--to-pin,
        /// --to-password or --to-challenge. Example: --to payments-dr
        #[arg(long, value_name = "PARTITION")]
        to: String,
        /// The HSM the target partition is on: a server's socket, or tls://host:port with this
        /// command's TLS settings. Default: the same HSM. Example: --to-server /run/ferrohsm/dr.sock
        #[arg(long, value_name = "SERVER")]
        to_server: Option<PathBuf>,
        /// Clone only objects with this label (repeatable; with --id and --class, objects
        /// matching any of them). Default: every object. Example: --label signer
        #[arg(long)]
        label: Vec<String>,
        /// Clone only objects with this CKA_ID, in hex (repeatable). Example: --id 01a2
        #[arg(long, value_name = "HEX")]
        id: Vec<String>,
        /// Clone only objects of this class: secret-key, private-key, public-key,
        /// certificate, data (repeatable). Example: --class private-key
        #[arg(long, value_name = "CLASS")]
        class: Vec<String>,
        /// Objects per batch (1-1000). Example: --batch 100
        #[arg(long, default_value_t = 500)]
        batch: u32,
        /// Replace the objects the target already holds (same unique id) with the ones that
        /// come, instead of leaving them as they are.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        login: Login,
        #[command(flatten)]
        to_login: crate::pedargs::TargetLogin,
    },
    /// Show one partition: policies, domain, roles, object count.
    #[command(after_help = "Example:\n  ferrohsm partition show --partition payments")]
    Show {
        /// Partition label.
        #[arg(long)]
        partition: String,
    },
    /// Delete a partition and every key in it (HSM SO login).
    #[command(
        after_help = "Example:\n  ferrohsm partition delete --partition old --yes --key so-1.pedkey --key so-2.pedkey --pin prompt"
    )]
    Delete {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        login: Login,
    },
    /// Initialise a partition: imprint its Partition SO (blue) and choose its cloning domain.
    #[command(after_help = "\
Examples:
  ferrohsm partition init --partition payments                 # SO on one blue key, HSM's domain
  ferrohsm partition init --partition payments --domain new    # a new red key for this partition
  ferrohsm partition init --partition payments --domain new --domain-reuse --domain-key red.pedkey")]
    Init {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// Cloning domain: the HSM's, or a new/reused one via --domain-* flags.
        #[arg(long, value_enum, default_value = "hsm")]
        domain: DomainArg,
        #[command(flatten)]
        so: SoImprint,
        #[command(flatten)]
        domain_imprint: DomainImprint,
        #[command(flatten)]
        common: ImprintCommon,
        /// Re-initialisation: confirm that the partition's keys are destroyed.
        #[arg(long)]
        confirm_destroy: bool,
        /// Re-initialisation: the current Partition SO's credential.
        #[command(flatten)]
        login: Login,
    },
    /// Partition policies.
    #[command(subcommand)]
    Policy(PartitionPolicyCmd),
}

/// Which cloning domain.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DomainArg {
    /// The HSM's cloning domain, presented again: its red key (--domain-key, default the
    /// HSM's red key files; --domain-pin) or its domain password (--domain-password).
    Hsm,
    /// A new domain, or an existing red key's with --domain-reuse.
    New,
    /// No cloning domain: the partition can neither clone nor back up.
    None,
}

/// `ferrohsm partition policy …`
#[derive(Subcommand, Debug)]
pub enum PartitionPolicyCmd {
    /// Show a partition's effective policies.
    #[command(after_help = "Example:\n  ferrohsm partition policy show --partition payments")]
    Show {
        /// Partition label.
        #[arg(long)]
        partition: String,
    },
    /// Set a partition policy (Partition SO login).
    #[command(
        after_help = "Example:\n  ferrohsm partition policy set --partition payments activation on"
    )]
    Set {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// Policy name.
        name: String,
        /// on, off, or a number.
        value: String,
        #[command(flatten)]
        login: Login,
    },
}

/// `ferrohsm role …`
#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Initialise the Crypto Officer (Partition SO logs in) or Crypto User (Crypto Officer logs in).
    #[command(after_help = "\
Examples:
  ferrohsm role init --partition payments --role co            # PSO's default key logs in
  ferrohsm role init --partition payments --role cu --new-pin env:CU_PIN")]
    Init {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// co or cu.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        new: NewImprint,
        #[command(flatten)]
        common: ImprintCommon,
        /// A new Crypto Officer destroys the partition's keys: confirm.
        #[arg(long)]
        confirm_destroy: bool,
        /// Credential of the role doing it (Partition SO for co, Crypto Officer for cu).
        #[command(flatten)]
        login: Login,
    },
    /// Show a partition's roles: how they authenticate, failed logins, lockout, activation.
    #[command(after_help = "Example:\n  ferrohsm role show --partition payments --json")]
    Show {
        /// Partition label.
        #[arg(long)]
        partition: String,
    },
    /// Activate the Crypto Officer or Crypto User: afterwards the challenge secret alone logs it in.
    #[command(
        after_help = "Example:\n  ferrohsm role activate --partition payments --role co --set-challenge env:CO_CHALLENGE"
    )]
    Activate {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// co or cu.
        #[arg(long)]
        role: String,
        /// The challenge secret to set: env:NAME, file:PATH, - or prompt.
        #[arg(long, value_name = "SRC")]
        set_challenge: Option<String>,
        #[command(flatten)]
        login: Login,
    },
    /// End an activation (the role itself or the Partition SO with --as so).
    #[command(
        after_help = "Example:\n  ferrohsm role deactivate --partition payments --role co --as so"
    )]
    Deactivate {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// co or cu.
        #[arg(long)]
        role: String,
        /// Who logs in to do it: the role itself (default) or so.
        #[arg(long = "as")]
        as_role: Option<String>,
        #[command(flatten)]
        login: Login,
    },
    /// Clear a Crypto Officer's or Crypto User's lockout (Partition SO login).
    #[command(after_help = "Example:\n  ferrohsm role reset --partition payments --role co")]
    Reset {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// co or cu.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        login: Login,
    },
    /// Change (set or remove) a role's PED PIN; its keys stay the same.
    #[command(
        after_help = "Example:\n  ferrohsm role change-pin --role hsm-so --key so-1.pedkey --key so-2.pedkey --pin env:OLD --new-pin env:NEW"
    )]
    ChangePin {
        /// hsm-so, so, co or cu.
        #[arg(long)]
        role: String,
        /// Partition label (partition roles).
        #[arg(long)]
        partition: Option<String>,
        /// The new PED PIN: env:NAME, file:PATH, - or prompt.
        #[arg(long, value_name = "SRC", conflicts_with = "remove_pin")]
        new_pin: Option<String>,
        /// Remove the PED PIN.
        #[arg(long)]
        remove_pin: bool,
        #[command(flatten)]
        login: Login,
    },
    /// Replace a role's secret with a new one (new keys, or a reused key), leaving other roles alone.
    #[command(
        after_help = "Example:\n  ferrohsm role change-secret --role co --partition payments --new-key new-co.pedkey --new-pin prompt"
    )]
    ChangeSecret {
        /// hsm-so, so, co or cu.
        #[arg(long)]
        role: String,
        /// Partition label (partition roles).
        #[arg(long)]
        partition: Option<String>,
        #[command(flatten)]
        new: NewImprint,
        #[command(flatten)]
        common: ImprintCommon,
        #[command(flatten)]
        login: Login,
    },
}

/// `ferrohsm ped …`
#[derive(Subcommand, Debug)]
pub enum PedCmd {
    /// Show what PED key files hold (colour, type, label, share, PIN flag, origin), never the secret.
    #[command(after_help = "Example:\n  ferrohsm ped show ped-keys/*.pedkey")]
    Show {
        /// Key files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Copy keys (one, or a whole M-of-N set) to new files that work identically.
    #[command(
        after_help = "Example:\n  ferrohsm ped duplicate --from so-1.pedkey --from so-2.pedkey --to backup/so-1.pedkey --to backup/so-2.pedkey"
    )]
    Duplicate {
        /// Source key files.
        #[arg(long, required = true)]
        from: Vec<PathBuf>,
        /// Target files, one per source.
        #[arg(long, required = true)]
        to: Vec<PathBuf>,
        /// Write over targets that hold a secret.
        #[arg(long)]
        overwrite: bool,
    },
}

/// `ferrohsm audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Imprint the Auditor (white PED key, or a password); possible before `hsm init`.
    #[command(after_help = "\
Examples:
  ferrohsm audit init                                   # one white key, in the PED directory
  ferrohsm audit init --new-m 2 --new-n 3 --new-pin prompt
  ferrohsm audit init --auth password --new-password prompt")]
    Init {
        /// PED key(s) or password.
        #[arg(long, value_enum, default_value = "ped")]
        auth: AuthArg,
        #[command(flatten)]
        new: NewImprint,
        #[command(flatten)]
        common: ImprintCommon,
        /// Re-imprinting: the current Auditor's credential.
        #[command(flatten)]
        login: Login,
    },
    /// Print (or write) the HSM's audit public key, for verifiers and witnesses. No login.
    #[command(after_help = "Example:\n  ferrohsm audit public-key --out hsm-audit.vkey")]
    PublicKey {
        /// Write it to this file too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show records, filtered (Auditor).
    #[command(
        after_help = "Example:\n  ferrohsm audit show --event login --role co --since 2026-11-01T00:00:00Z --json"
    )]
    Show {
        /// Only records at or after this UTC time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only records before this UTC time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only this event (login, key-use, partition-create, …).
        #[arg(long)]
        event: Option<String>,
        /// Only this role (hsm-so, so, co, cu, auditor, device).
        #[arg(long)]
        role: Option<String>,
        /// Only this partition.
        #[arg(long)]
        partition: Option<String>,
        /// Only failures and refusals.
        #[arg(long)]
        failures: bool,
        /// Only ceremony records still lacking the required witness cosignatures.
        #[arg(long)]
        pending_cosignatures: bool,
        #[command(flatten)]
        login: Login,
    },
    /// Export records with proofs and the signed checkpoint, for offline verification (Auditor).
    #[command(
        after_help = "Example:\n  ferrohsm audit export --out audit.json --earlier last-month.checkpoint"
    )]
    Export {
        /// Export file to write.
        #[arg(long)]
        out: PathBuf,
        /// First record (sequence number).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// A checkpoint a verifier holds: include the proof that the log extends it.
        #[arg(long, value_name = "FILE")]
        earlier: Vec<PathBuf>,
        #[command(flatten)]
        login: Login,
    },
    /// Verify: the live log (Auditor), or an export file offline with --export (no login).
    #[command(
        after_help = "Examples:\n  ferrohsm audit verify\n  ferrohsm audit verify --export audit.json --public-key hsm-audit.vkey --prove 12"
    )]
    Verify {
        /// Verify this export file instead of the live log.
        #[arg(long)]
        export: Option<PathBuf>,
        /// With --export: the HSM's audit public key file.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// A checkpoint held before (e.g. from `audit checkpoint --out`), which the export, or
        /// the live log, must extend: a rollback or fork fails (exit 5; on the live log the
        /// HSM records it as tamper). Repeatable.
        #[arg(long, value_name = "FILE")]
        earlier: Vec<PathBuf>,
        /// With --export: a witness public key file to check.
        #[arg(long, value_name = "FILE")]
        witness: Vec<PathBuf>,
        /// With --export: prove this record is included.
        #[arg(long)]
        prove: Option<u64>,
        /// With --export: verify only a part of the log, starting at this record (an export
        /// made with --from). Without it the export must start at #1.
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        #[command(flatten)]
        login: Login,
    },
    /// Write the latest signed checkpoint (Auditor), e.g. for witnesses to cosign; with
    /// --old-size, a witness request (C2SP tlog-witness) carrying the consistency proof from
    /// the size the witness last cosigned.
    #[command(
        after_help = "Examples:\n  ferrohsm audit checkpoint --out cp.txt\n  ferrohsm audit checkpoint --out request.txt --old-size 42"
    )]
    Checkpoint {
        /// File to write.
        #[arg(long)]
        out: PathBuf,
        /// The size of the checkpoint the witness last cosigned (its state file says).
        #[arg(long, value_name = "SIZE")]
        old_size: Option<u64>,
        #[command(flatten)]
        login: Login,
    },
    /// Audit configuration (Auditor).
    #[command(subcommand)]
    Config(AuditConfigCmd),
    /// Witnesses: make keys, register, cosign, submit cosignatures.
    #[command(subcommand)]
    Witness(WitnessCmd),
}

/// `ferrohsm audit config …`
#[derive(Subcommand, Debug)]
pub enum AuditConfigCmd {
    /// Show the configuration.
    #[command(after_help = "Example:\n  ferrohsm audit config show --json")]
    Show {
        #[command(flatten)]
        login: Login,
    },
    /// Change it.
    #[command(
        after_help = "Examples:\n  ferrohsm audit config set --key-use strict\n  ferrohsm audit config set --key-use batched --batch-ms 200 --ceremony-cosignatures 3"
    )]
    Set {
        /// Audit key use (sign, verify, encrypt, decrypt): off, strict (durable before the answer) or batched.
        #[arg(long, value_enum)]
        key_use: Option<KeyUseArg>,
        /// With batched: longest a record waits before it is durable, in ms.
        #[arg(long, default_value_t = 100)]
        batch_ms: u64,
        /// Witness cosignatures each ceremony needs.
        #[arg(long)]
        ceremony_cosignatures: Option<u32>,
        #[command(flatten)]
        login: Login,
    },
}

/// Key-use auditing.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KeyUseArg {
    /// Not recorded.
    Off,
    /// A record per use, durable before the answer.
    Strict,
    /// Every use counted; one record per role, key and operation per --batch-ms window,
    /// durable within it.
    Batched,
}

/// `ferrohsm audit witness …`
#[derive(Subcommand, Debug)]
pub enum WitnessCmd {
    #[command(flatten)]
    Tool(ferrohsm_audit::tool::WitnessTool),
    /// Register a witness's public key (Auditor).
    #[command(after_help = "Example:\n  ferrohsm audit witness add --public-key alice.vkey")]
    Add {
        /// File holding the witness's public key line.
        #[arg(long)]
        public_key: PathBuf,
        #[command(flatten)]
        login: Login,
    },
    /// List registered witnesses (Auditor).
    #[command(after_help = "Example:\n  ferrohsm audit witness list")]
    List {
        #[command(flatten)]
        login: Login,
    },
    /// Hand cosignatures back to the HSM (Auditor).
    #[command(after_help = "Example:\n  ferrohsm audit witness submit --checkpoint cp.txt")]
    Submit {
        /// Cosigned checkpoint file.
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        login: Login,
    },
}

/// Maps an engine error to an exit code.
pub fn exit_code(e: &HsmError) -> u8 {
    match e {
        HsmError::InvalidInput(_) | HsmError::BadPedKey { .. } => exit::USAGE,
        HsmError::AuthFailed { .. }
        | HsmError::WrongKey(_)
        | HsmError::Locked(_)
        | HsmError::NotLoggedIn(_) => exit::AUTH,
        HsmError::Refused(_) | HsmError::KeyUse(_) => exit::REFUSED,
        HsmError::Tamper(_) => exit::TAMPER,
        HsmError::State(_) | HsmError::NotFound(_) | HsmError::InUse(_) => exit::STATE,
        HsmError::Crypto(_) | HsmError::Store(_) | HsmError::Io { .. } | HsmError::Exhausted(_) => {
            exit::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Embedded commands offer the mechanisms the server and the module offer.
    ferrohsm_crypto::install();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ferrohsm: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option of every command says what it is for (clap shows nothing for an option
    /// without help, and an operator is left guessing).
    #[test]
    fn every_option_of_every_command_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && !a.is_hide_set() && a.get_help().is_none() {
                    missing.push(format!("{path} --{}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "ferrohsm", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:#?}");
    }
}
