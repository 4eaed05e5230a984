//! `ferrohsm-audit`: verify an exported ferrohsm audit log offline, and act as a witness.
//! Links no engine code: what it trusts is the HSM's public key and the witnesses' keys.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrohsm_audit::{read_file, verify_export, witness, Export, VerifyOptions};

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
    },
    /// Witness tools.
    #[command(subcommand)]
    Witness(WitnessCmd),
}

#[derive(Subcommand)]
enum WitnessCmd {
    /// Make a witness key pair: writes the private key file (0600), prints the public key.
    Keygen {
        /// The witness's name (no spaces or '+').
        #[arg(long)]
        name: String,
        /// Private key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Cosign a checkpoint after checking the HSM's signature on it.
    Cosign {
        /// The witness's private key file.
        #[arg(long)]
        key: PathBuf,
        /// The checkpoint (signed note) to cosign.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The HSM's audit public key file.
        #[arg(long)]
        public_key: PathBuf,
        /// Where to write the cosigned checkpoint (default: over --checkpoint).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn text(p: &PathBuf) -> Result<String, String> {
    let b = read_file(p).map_err(|e| e.to_string())?;
    String::from_utf8(b).map_err(|_| format!("{}: not UTF-8 text", p.display()))
}

fn run(cli: Cli) -> Result<u8, (u8, String)> {
    let usage = |e: String| (2u8, e);
    match cli.cmd {
        Cmd::Verify {
            export,
            public_key,
            earlier,
            witness,
            require_cosignatures,
            prove,
        } => {
            let ex = Export::from_bytes(&read_file(&export).map_err(|e| usage(e.to_string()))?)
                .map_err(|e| usage(format!("{}: {e}", export.display())))?;
            let opts = VerifyOptions {
                public_key: public_key.as_ref().map(text).transpose().map_err(usage)?,
                earlier: earlier
                    .iter()
                    .map(text)
                    .collect::<Result<_, _>>()
                    .map_err(usage)?,
                witnesses: witness
                    .iter()
                    .map(text)
                    .collect::<Result<_, _>>()
                    .map_err(usage)?,
                require_cosignatures,
                prove,
            };
            let r = verify_export(&ex, &opts).map_err(|e| (1, format!("FAILED: {e}")))?;
            print!("{r}");
            if !opts.earlier.is_empty() {
                println!(
                    "  extends every checkpoint you gave ({})",
                    opts.earlier.len()
                );
            }
            if !opts.witnesses.is_empty() {
                println!(
                    "  {} of {} witnesses given cosigned",
                    r.cosigned_by.len(),
                    opts.witnesses.len()
                );
            }
            Ok(0)
        }
        Cmd::Witness(WitnessCmd::Keygen { name, out }) => {
            let (skey, vkey) = witness::generate(&name).map_err(|e| usage(e.to_string()))?;
            witness::write_private_key(&out, &skey).map_err(|e| usage(e.to_string()))?;
            println!("{vkey}");
            eprintln!(
                "private key written to {} (keep it secret); give the line above to the Auditor",
                out.display()
            );
            Ok(0)
        }
        Cmd::Witness(WitnessCmd::Cosign {
            key,
            checkpoint,
            public_key,
            out,
        }) => {
            let skey = zeroize::Zeroizing::new(text(&key).map_err(usage)?);
            let note = text(&checkpoint).map_err(usage)?;
            let hsm = text(&public_key).map_err(usage)?;
            let signed =
                witness::cosign(&note, &skey, &hsm).map_err(|e| (1, format!("FAILED: {e}")))?;
            let dest = out.unwrap_or(checkpoint);
            std::fs::write(&dest, signed).map_err(|e| usage(format!("{}: {e}", dest.display())))?;
            println!("cosigned checkpoint written to {}", dest.display());
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(c) => ExitCode::from(c),
        Err((c, msg)) => {
            eprintln!("ferrohsm-audit: {msg}");
            ExitCode::from(c)
        }
    }
}
