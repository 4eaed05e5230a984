//! `ferrohsm-audit`: verify an exported ferrohsm audit log offline, and act as a witness.
//! Links no engine code: what it trusts is the HSM's public key and the witnesses' keys.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrohsm_audit::tool::{run_witness, verify_file, ToolError, VerifyFiles, WitnessTool};

/// Verify a ferrohsm audit export offline; generate witness keys and cosign checkpoints.
#[derive(Parser)]
#[command(
    name = "ferrohsm-audit",
    version,
    after_help = "\
Exit codes: 0 verified, 1 verification failed (the first bad record or checkpoint is named),
2 usage error or unreadable input.

Example:
  ferrohsm-audit verify audit.json --public-key hsm-audit.vkey --earlier last-month.checkpoint \\
      --witness alice.vkey --witness bob.vkey --prove 17"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify an export: signatures, every record's inclusion, order, completeness, and that
    /// the checkpoint extends earlier ones.
    Verify {
        /// The export file (from `ferrohsm audit export`).
        export: PathBuf,
        /// The HSM's audit public key file (from `ferrohsm audit public-key`), obtained out of
        /// band. Without it the key inside the export is used, which proves integrity only.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// A checkpoint you held before: the export must extend it (detects forks and rollbacks).
        #[arg(long, value_name = "FILE")]
        earlier: Vec<PathBuf>,
        /// A witness public key file; its cosignature is checked and reported.
        #[arg(long, value_name = "FILE")]
        witness: Vec<PathBuf>,
        /// Fail unless at least this many of the --witness keys cosigned.
        #[arg(long, default_value_t = 0)]
        require_cosignatures: usize,
        /// Prove that this record (sequence number) is included.
        #[arg(long, value_name = "SEQ")]
        prove: Option<u64>,
        /// Verify only a part of the log, starting at this record (an export made with
        /// `ferrohsm audit export --from SEQ`). Without it the export must start at #1.
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
    },
    /// Witness tools.
    #[command(subcommand)]
    Witness(WitnessTool),
}

fn run(cli: Cli) -> Result<String, ToolError> {
    match cli.cmd {
        Cmd::Verify {
            export,
            public_key,
            earlier,
            witness,
            require_cosignatures,
            prove,
            from,
        } => {
            let files = VerifyFiles {
                public_key: public_key.as_deref(),
                earlier: &earlier,
                witnesses: &witness,
                require_cosignatures,
                prove,
                from,
            };
            let r = verify_file(&export, &files)?;
            let mut out = r.to_string();
            if !earlier.is_empty() {
                out.push_str(&format!(
                    "  extends every checkpoint you gave ({})\n",
                    earlier.len()
                ));
            }
            if !witness.is_empty() {
                out.push_str(&format!(
                    "  {} of {} witnesses given cosigned\n",
                    r.cosigned_by.len(),
                    witness.len()
                ));
            }
            Ok(out)
        }
        Cmd::Witness(t) => run_witness(&t),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrohsm-audit: {e}");
            ExitCode::from(match e {
                ToolError::Usage(_) => 2,
                ToolError::Failed(_) => 1,
            })
        }
    }
}
