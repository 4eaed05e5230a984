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

/// Reads a new secret (a PIN, password or challenge being set): from a variable or file once,
/// at the terminal twice, so that a typo does not become the secret.
pub fn read_new(source: &str, kind: Kind, what: &str) -> Result<Pin, HsmError> {
    if source == "prompt" {
        return prompt_new(kind, what);
    }
    read(source, kind, what)
}

/// Asks for a secret twice at the terminal until both entries agree (three tries).
pub fn prompt_new(kind: Kind, what: &str) -> Result<Pin, HsmError> {
    agreed(
        || {
            let a = prompt_secret(kind, what)?;
            let b = prompt_secret(kind, &format!("{what} again, to confirm"))?;
            Ok((a, b))
        },
        what,
    )
}

/// The secret of the first pair `entries` gives whose two halves agree, within three pairs.
fn agreed(
    mut entries: impl FnMut() -> Result<(Pin, Pin), HsmError>,
    what: &str,
) -> Result<Pin, HsmError> {
    for _ in 0..3 {
        let (a, b) = entries()?;
        if a.expose() == b.expose() {
            return Ok(a);
        }
        eprintln!("the two entries of the {what} differ; enter it again");
    }
    Err(HsmError::InvalidInput(format!(
        "the {what} was entered differently three times; nothing was changed"
    )))
}

/// Asks a question on `r` (the terminal's input); an empty answer gives `default`; `None` at
/// end of input.
fn ask_from(r: &mut impl BufRead, question: &str, default: &str) -> Option<String> {
    eprint!("{question} [{default}]: ");
    let mut s = String::new();
    match r.read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let s = s.trim();
            Some(if s.is_empty() { default } else { s }.to_string())
        }
    }
}

/// Asks a yes/no question: "y"/"yes" or "n"/"no" (an empty answer is no); anything else is
/// asked again, so that a PIN typed too early is not taken for "no".
pub fn confirm(question: &str) -> bool {
    confirm_from(&mut std::io::stdin().lock(), question)
}

fn confirm_from(r: &mut impl BufRead, question: &str) -> bool {
    loop {
        match ask_from(r, question, "no")
            .map(|a| a.to_lowercase())
            .as_deref()
        {
            Some("y" | "yes") => return true,
            Some("n" | "no") | None => return false,
            Some(_) => eprintln!("answer yes or no"),
        }
    }
}

/// Asks for a number in `lo..=hi` until one is given; `default` on an empty answer.
pub fn ask_number(question: &str, default: u8, lo: u8, hi: u8) -> Result<u8, HsmError> {
    ask_number_from(&mut std::io::stdin().lock(), question, default, lo, hi)
}

fn ask_number_from(
    r: &mut impl BufRead,
    question: &str,
    default: u8,
    lo: u8,
    hi: u8,
) -> Result<u8, HsmError> {
    loop {
        let Some(a) = ask_from(r, question, &default.to_string()) else {
            return Err(HsmError::InvalidInput(format!(
                "{question}: no answer (end of input)"
            )));
        };
        match a.parse::<u8>() {
            Ok(n) if (lo..=hi).contains(&n) => return Ok(n),
            _ => eprintln!("{a:?} is not a number from {lo} to {hi}; again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_no_takes_only_yes_or_no_and_asks_again_otherwise() {
        let mut typed = "123456\nmaybe\nyes\n".as_bytes();
        assert!(confirm_from(&mut typed, "q"));
        let mut typed = "\n".as_bytes();
        assert!(!confirm_from(&mut typed, "q"));
        let mut typed = "1234\nN\n".as_bytes();
        assert!(!confirm_from(&mut typed, "q"));
        // End of input is no.
        let mut typed = "what\n".as_bytes();
        assert!(!confirm_from(&mut typed, "q"));
    }

    #[test]
    fn numbers_are_checked_when_typed() {
        let mut typed = "xyz\n0\n17\n3\n".as_bytes();
        assert_eq!(ask_number_from(&mut typed, "M", 1, 1, 16).unwrap(), 3);
        let mut typed = "\n".as_bytes();
        assert_eq!(ask_number_from(&mut typed, "M", 2, 1, 16).unwrap(), 2);
        let mut typed = "xyz\n".as_bytes();
        assert!(ask_number_from(&mut typed, "M", 1, 1, 16).is_err());
    }

    #[test]
    fn a_new_secret_is_taken_only_when_both_entries_agree() {
        let pin = |s: &str| Pin::ped_pin(s).unwrap();
        let mut tries = vec![
            (pin("123456"), pin("123465")),
            (pin("123456"), pin("123456")),
        ]
        .into_iter();
        let got = agreed(|| Ok(tries.next().unwrap()), "PED PIN").unwrap();
        assert_eq!(got.expose(), pin("123456").expose());
        let mut always_differ = || Ok((pin("111111"), pin("222222")));
        assert!(agreed(&mut always_differ, "PED PIN").is_err());
    }
}
