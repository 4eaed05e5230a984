//! Where secrets typed by people come from. A secret is never taken from the command line
//! itself (it would show in `ps` and shell history): `env:NAME`, `file:PATH`, `-` (one line
//! of standard input) or `prompt` (the terminal, without echo).

use std::io::{BufRead, IsTerminal};

use ferrohsm_core::secret::Pin;
use ferrohsm_core::HsmError;

/// How a secret should be checked once read.
#[derive(Clone, Copy)]
pub enum Kind {
    /// 4-16 digits.
    PedPin,
    /// 8-255 printable characters.
    Password,
}

fn check(kind: Kind, s: &str) -> Result<Pin, HsmError> {
    match kind {
        Kind::PedPin => Pin::ped_pin(s),
        Kind::Password => Pin::password(s),
    }
}

/// Reads a secret from a source description (see module docs).
pub fn read(source: &str, kind: Kind, what: &str) -> Result<Pin, HsmError> {
    if let Some(name) = source.strip_prefix("env:") {
        let v = std::env::var(name).map_err(|_| {
            HsmError::InvalidInput(format!("{what}: environment variable {name} is not set"))
        })?;
        return check(kind, &v);
    }
    if let Some(path) = source.strip_prefix("file:") {
        let v = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| HsmError::io(path, e))?,
        );
        let line = v.lines().next().unwrap_or("");
        return check(kind, line);
    }
    if source == "-" {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| HsmError::io("<stdin>", e))?;
        return check(kind, &line);
    }
    if source == "prompt" {
        return prompt_secret(kind, what);
    }
    Err(HsmError::InvalidInput(format!(
        "{what}: give env:NAME, file:PATH, - (standard input) or prompt; a secret is never taken from the command line itself"
    )))
}

/// Asks at the terminal, without echo.
pub fn prompt_secret(kind: Kind, what: &str) -> Result<Pin, HsmError> {
    if !std::io::stdin().is_terminal() {
        return Err(HsmError::InvalidInput(format!(
            "{what} is needed and there is no terminal to ask; pass it as env:NAME or file:PATH"
        )));
    }
    let v = zeroize::Zeroizing::new(
        rpassword::prompt_password(format!("{what}: ")).map_err(|e| HsmError::io("<tty>", e))?,
    );
    check(kind, &v)
}

/// Whether a person is at the terminal to answer questions.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::env::var_os("CI").is_none()
}

/// Asks a question at the terminal; empty answer gives `default`.
pub fn ask(question: &str, default: &str) -> String {
    eprint!("{question} [{default}]: ");
    let mut s = String::new();
    if std::io::stdin().lock().read_line(&mut s).is_err() {
        return default.to_string();
    }
    let s = s.trim();
    if s.is_empty() {
        default.to_string()
    } else {
        s.to_string()
    }
}

/// Asks a yes/no question; only "y" or "yes" count as yes.
pub fn confirm(question: &str) -> bool {
    matches!(ask(question, "no").to_lowercase().as_str(), "y" | "yes")
}
