//! Command-line pieces shared by `ferrohsm-audit` and `ferrohsm audit`: the witness tools and
//! offline verification of an export file.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::{read_file, verify_export, witness, Export, Report, VerifyOptions};

/// Witness tools that need no HSM.
#[derive(Subcommand, Debug)]
pub enum WitnessTool {
    /// Make a witness key pair (on the witness's own machine): writes the private key file
    /// (0600) and prints the public key to give to the Auditor.
    #[command(after_help = "Example:\n  keygen --name alice --out alice.key > alice.vkey")]
    Keygen {
        /// Witness name (no spaces or '+').
        #[arg(long)]
        name: String,
        /// Private key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Cosign a checkpoint with a witness key (C2SP tlog-cosignature/v1), after checking the
    /// HSM's signature on it and that it extends the last checkpoint this witness cosigned
    /// for the log (kept in the witness's state file).
    #[command(
        after_help = "Examples:\n  cosign --key alice.key --checkpoint cp.txt --public-key hsm-audit.vkey\n  cosign --key alice.key --checkpoint request.txt --public-key hsm-audit.vkey --state alice.state"
    )]
    Cosign {
        /// Witness private key file.
        #[arg(long)]
        key: PathBuf,
        /// The checkpoint (signed note), or a witness request with a consistency proof from
        /// the last size this witness cosigned (`ferrohsm audit checkpoint --old-size N`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The HSM's audit public key file.
        #[arg(long)]
        public_key: PathBuf,
        /// The witness's state file: the last checkpoint it cosigned, per log (default: the
        /// key file's name with .state).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Output file (default: over --checkpoint).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A failure of a tool: usage (bad input, exit 2) or a failed check (exit 1).
#[derive(Debug)]
pub enum ToolError {
    /// Unreadable or malformed input.
    Usage(String),
    /// The check ran and failed.
    Failed(String),
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Usage(m) => f.write_str(m),
            ToolError::Failed(m) => write!(f, "FAILED: {m}"),
        }
    }
}

/// Reads a text file.
pub fn text(p: &Path) -> Result<String, ToolError> {
    let b = read_file(p).map_err(|e| ToolError::Usage(e.to_string()))?;
    String::from_utf8(b).map_err(|_| ToolError::Usage(format!("{}: not UTF-8 text", p.display())))
}

/// Runs a witness tool; returns what to print on standard output.
pub fn run_witness(t: &WitnessTool) -> Result<String, ToolError> {
    match t {
        WitnessTool::Keygen { name, out } => {
            let (skey, vkey) =
                witness::generate(name).map_err(|e| ToolError::Usage(e.to_string()))?;
            witness::write_private_key(out, &skey).map_err(|e| ToolError::Usage(e.to_string()))?;
            eprintln!("private key written to {} (keep it secret); give the public key below to the Auditor", out.display());
            Ok(format!("{vkey}\n"))
        }
        WitnessTool::Cosign {
            key,
            checkpoint,
            public_key,
            state,
            out,
        } => {
            let skey = zeroize::Zeroizing::new(text(key)?);
            let state_file = state.clone().unwrap_or_else(|| key.with_extension("state"));
            let mut st = witness::WitnessState::load(&state_file)
                .map_err(|e| ToolError::Usage(e.to_string()))?;
            let request = witness::CosignRequest::parse(&text(checkpoint)?)
                .map_err(|e| ToolError::Usage(e.to_string()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let signed = witness::cosign(&request, &skey, &text(public_key)?, &mut st, now)
                .map_err(|e| ToolError::Failed(e.to_string()))?;
            let dest = out.as_ref().unwrap_or(checkpoint);
            std::fs::write(dest, signed)
                .map_err(|e| ToolError::Usage(format!("{}: {e}", dest.display())))?;
            // Remembered only once the cosignature is out: a failed write cosigned nothing.
            st.save(&state_file)
                .map_err(|e| ToolError::Usage(e.to_string()))?;
            Ok(format!(
                "cosigned checkpoint written to {} (witness state: {})\n",
                dest.display(),
                state_file.display()
            ))
        }
    }
}

/// Files naming what to verify an export against.
#[derive(Debug, Default)]
pub struct VerifyFiles<'a> {
    /// The HSM's audit public key file.
    pub public_key: Option<&'a Path>,
    /// Checkpoints held before.
    pub earlier: &'a [PathBuf],
    /// Witness public key files.
    pub witnesses: &'a [PathBuf],
    /// Cosignatures required among the witnesses.
    pub require_cosignatures: usize,
    /// Record to prove included.
    pub prove: Option<u64>,
    /// Verify a part of the log starting at this record (default: the whole log, from #1).
    pub from: Option<u64>,
}

/// Verifies an export file; returns the report, printable.
pub fn verify_file(export: &Path, f: &VerifyFiles<'_>) -> Result<Report, ToolError> {
    let ex = Export::from_bytes(&read_file(export).map_err(|e| ToolError::Usage(e.to_string()))?)
        .map_err(|e| ToolError::Usage(format!("{}: {e}", export.display())))?;
    let opts = VerifyOptions {
        public_key: f.public_key.map(text).transpose()?,
        earlier: f
            .earlier
            .iter()
            .map(|p| text(p))
            .collect::<Result<_, _>>()?,
        witnesses: f
            .witnesses
            .iter()
            .map(|p| text(p))
            .collect::<Result<_, _>>()?,
        require_cosignatures: f.require_cosignatures,
        prove: f.prove,
        from: f.from,
    };
    verify_export(&ex, &opts).map_err(|e| ToolError::Failed(e.to_string()))
}
