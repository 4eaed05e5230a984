//! Just enough X.509 to know a client by its key: the SubjectPublicKeyInfo of a certificate
//! (DER or PEM) and its SHA-256 fingerprint, the name a network HSM registers a host by.

use crate::error::{HsmError, Result};

fn bad(why: &str) -> HsmError {
    HsmError::InvalidInput(format!("not an X.509 certificate: {why}"))
}

/// One DER element: its tag, the whole element, its contents, and what follows it.
type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The DER element at the start of `b`.
fn tlv(b: &[u8]) -> Result<Element<'_>> {
    let (&tag, rest) = b.split_first().ok_or_else(|| bad("it ends early"))?;
    let (&first, rest) = rest.split_first().ok_or_else(|| bad("it ends early"))?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81..=0x84 => {
            let k = (first & 0x7f) as usize;
            if rest.len() < k {
                return Err(bad("it ends early"));
            }
            let len = rest[..k].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
            (len, &rest[k..])
        }
        _ => return Err(bad("a length it cannot hold")),
    };
    if rest.len() < len {
        return Err(bad("it ends early"));
    }
    let header = b.len() - rest.len();
    Ok((tag, &b[..header + len], &rest[..len], &rest[len..]))
}

/// The DER of a certificate given as DER or PEM.
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(bytes.to_vec());
    };
    let Some(start) = text.find("-----BEGIN CERTIFICATE-----") else {
        return Ok(bytes.to_vec());
    };
    let body = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
    let end = body
        .find("-----END CERTIFICATE-----")
        .ok_or_else(|| bad("a PEM certificate without its END line"))?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad("its PEM body is not base64"))
}

/// The SubjectPublicKeyInfo (DER) of a certificate (DER).
pub fn spki_of(cert: &[u8]) -> Result<&[u8]> {
    let (tag, _, cert_body, _) = tlv(cert)?;
    if tag != 0x30 {
        return Err(bad("it is not a SEQUENCE"));
    }
    let (tag, _, tbs, _) = tlv(cert_body)?;
    if tag != 0x30 {
        return Err(bad("no TBSCertificate"));
    }
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject, then the
    // key.
    let (tag, _, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    for _ in 0..5 {
        rest = tlv(rest)?.3;
    }
    let (tag, spki, _, _) = tlv(rest)?;
    if tag != 0x30 {
        return Err(bad("no SubjectPublicKeyInfo where it belongs"));
    }
    Ok(spki)
}

/// The SHA-256 of a SubjectPublicKeyInfo, in lower-case hex: how clients and servers are
/// named and pinned.
pub fn spki_fingerprint(spki: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki))
}

/// A fingerprint as an operator types it (hex, colons and case allowed), normalised; an
/// error for anything that is not 32 bytes of hex.
pub fn parse_fingerprint(s: &str) -> Result<String> {
    let h: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(HsmError::InvalidInput(format!(
            "a fingerprint is the SHA-256 of a certificate's key: 64 hex digits, not {s:?}"
        )));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_certificates_are_refused_not_misread() {
        assert!(spki_of(b"").is_err());
        assert!(spki_of(&[0x30, 0x82, 0x01]).is_err());
        assert!(spki_of(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_err());
        assert!(parse_fingerprint("ab").is_err());
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&fp).unwrap(), "ab".repeat(32));
    }
}
