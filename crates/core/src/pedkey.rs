//! The PED key file: one secret, or one share of one, on a portable "key".
//!
//! Format (version 1) is a single JSON object, chosen so that an operator can read the label
//! and colour of a key with any text tool. Every field but `check` is covered by `check`, an
//! HMAC-SHA256 keyed with the secret value itself: a damaged byte anywhere, a truncated file or
//! a label edited by hand is rejected with a clear message. Files are written with owner-only
//! permissions and never partially (write to a temporary file, fsync, rename).
//!
//! ```json
//! {"format":"ferrohsm-ped-key","version":1,"colour":"blue","secret_type":"so",
//!  "origin_serial":"FH1234567890","secret_id":"…","label":"HSM SO of FH1234567890",
//!  "share":{"set_id":"…","index":1,"m":2,"n":3},"pin_protected":true,
//!  "created":"2026-11-22T23:48:00Z","value":"<base64, 32 bytes>","check":"<hex>"}
//! ```

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{ct_eq, hmac_sha256};
use crate::error::{HsmError, Result};
use crate::secret::{SecretBytes, SECRET_LEN};

/// Identifies the file format.
pub const FORMAT: &str = "ferrohsm-ped-key";
/// The only version this release reads and writes.
pub const VERSION: u32 = 1;
/// Larger files are refused before parsing.
pub const MAX_FILE_LEN: u64 = 16 * 1024;

/// What kind of secret a key holds. Reuse and login accept only the matching type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretType {
    /// Security officer, of the HSM or of a partition (blue).
    So,
    /// Cloning domain (red).
    Domain,
    /// Crypto Officer (black).
    CryptoOfficer,
    /// Crypto User (gray).
    CryptoUser,
    /// Remote PED Vector (orange).
    RemotePed,
    /// Auditor (white).
    Auditor,
}

/// The colour sticker of a key; fixed by its secret type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// SO keys.
    Blue,
    /// Cloning domain keys.
    Red,
    /// Crypto Officer keys.
    Black,
    /// Crypto User keys.
    Gray,
    /// Remote PED Vector keys.
    Orange,
    /// Auditor keys.
    White,
}

impl SecretType {
    /// The colour a key of this type carries.
    pub fn colour(self) -> Colour {
        match self {
            SecretType::So => Colour::Blue,
            SecretType::Domain => Colour::Red,
            SecretType::CryptoOfficer => Colour::Black,
            SecretType::CryptoUser => Colour::Gray,
            SecretType::RemotePed => Colour::Orange,
            SecretType::Auditor => Colour::White,
        }
    }

    /// Human name, e.g. "blue (security officer)".
    pub fn describe(self) -> String {
        let what = match self {
            SecretType::So => "security officer",
            SecretType::Domain => "cloning domain",
            SecretType::CryptoOfficer => "Crypto Officer",
            SecretType::CryptoUser => "Crypto User",
            SecretType::RemotePed => "Remote PED Vector",
            SecretType::Auditor => "Auditor",
        };
        format!("{} ({what})", self.colour())
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Colour::Blue => "blue",
            Colour::Red => "red",
            Colour::Black => "black",
            Colour::Gray => "gray",
            Colour::Orange => "orange",
            Colour::White => "white",
        })
    }
}

/// Which share of which split a key holds. An unsplit secret is share 1 of a 1-of-1 set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareInfo {
    /// Identifies one split; shares of different splits never combine.
    pub set_id: String,
    /// 1-based index (the x-coordinate of the share).
    pub index: u8,
    /// Shares needed.
    pub m: u8,
    /// Shares made.
    pub n: u8,
}

/// The public description of a PED key: everything but the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PedKeyInfo {
    /// Must be [`FORMAT`].
    pub format: String,
    /// Must be [`VERSION`].
    pub version: u32,
    /// Colour sticker; must match `secret_type`.
    pub colour: Colour,
    /// What the secret is for.
    pub secret_type: SecretType,
    /// Serial of the HSM that created the secret.
    pub origin_serial: String,
    /// Identifies the secret (the same on every share and duplicate, and on every HSM that
    /// reused it).
    pub secret_id: String,
    /// Free text written at imprint, e.g. "Partition SO of payments".
    pub label: String,
    /// Which share this is.
    pub share: ShareInfo,
    /// Whether a PED PIN must be typed with this key.
    pub pin_protected: bool,
    /// When the file was written (UTC).
    pub created: String,
}

/// A PED key: description plus the 32-byte secret or share value.
#[derive(Clone, Debug)]
pub struct PedKey {
    /// The public part.
    pub info: PedKeyInfo,
    /// The secret or share value.
    pub value: SecretBytes,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(flatten)]
    info: PedKeyInfo,
    value: String,
    check: String,
}

impl PedKeyInfo {
    fn check_over(&self, value: &[u8]) -> [u8; 32] {
        // Canonical bytes: serde_json writes struct fields in declaration order.
        let canon = serde_json::to_vec(self).expect("PedKeyInfo always serializes");
        hmac_sha256(value, &[b"ferrohsm ped key check v1", &canon])
    }

    /// One line for operators: colour, type, label, share, PIN flag, origin.
    pub fn summary(&self) -> String {
        let share = if self.share.n == 1 {
            "not split".to_string()
        } else {
            format!(
                "share {} of {} ({} needed)",
                self.share.index, self.share.n, self.share.m
            )
        };
        format!(
            "{} key \"{}\", {}, {}, from HSM {}",
            self.secret_type.describe(),
            self.label,
            share,
            if self.pin_protected {
                "PED PIN protected"
            } else {
                "no PED PIN"
            },
            self.origin_serial
        )
    }
}

impl PedKey {
    /// Serializes to the file format.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let value =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.value.expose()));
        let check = hex::encode(self.info.check_over(self.value.expose()));
        let wire = Wire {
            info: self.info.clone(),
            value: value.to_string(),
            check,
        };
        let mut out = Zeroizing::new(serde_json::to_vec_pretty(&wire).expect("PED key serializes"));
        out.push(b'\n');
        let Wire { mut value, .. } = wire;
        zeroize::Zeroize::zeroize(&mut value);
        out
    }

    /// Parses and verifies a file's bytes. `path` is only used in messages.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(HsmError::bad_key(
                path,
                "file is empty (a blank key holds no secret)",
            ));
        }
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(HsmError::bad_key(path, "file is too large to be a PED key"));
        }
        // Peek at format/version first so an old or foreign file gets a precise message.
        let peek: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            HsmError::bad_key(
                path,
                format!("not a PED key file (damaged or truncated JSON: {e})"),
            )
        })?;
        if peek.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(HsmError::bad_key(
                path,
                format!("not a PED key file (format is not \"{FORMAT}\")"),
            ));
        }
        match peek.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == VERSION as u64 => {}
            Some(v) => return Err(HsmError::bad_key(path, format!("PED key format version {v} is not supported (this release reads version {VERSION})"))),
            None => return Err(HsmError::bad_key(path, "PED key file has no version")),
        }
        drop(peek);
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| HsmError::bad_key(path, format!("malformed PED key file: {e}")))?;
        let value = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(wire.value.as_bytes())
                .map_err(|_| {
                    HsmError::bad_key(path, "secret value is not valid base64 (file damaged)")
                })?,
        );
        let Wire {
            info,
            value: v,
            check,
        } = wire;
        let v_canon = Zeroizing::new(v);
        if value.len() != SECRET_LEN {
            return Err(HsmError::bad_key(
                path,
                "secret value has the wrong length (file damaged)",
            ));
        }
        // Compare canonical spellings (lowercase hex, padded base64): a file that is not
        // byte for byte what was written is refused, even if it would decode the same.
        let expected = hex::encode(info.check_over(&value));
        let canonical_value =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*value));
        if !ct_eq(expected.as_bytes(), check.as_bytes())
            || !ct_eq(canonical_value.as_bytes(), v_canon.as_bytes())
        {
            return Err(HsmError::bad_key(
                path,
                "integrity check failed: the file was damaged or edited",
            ));
        }
        if info.colour != info.secret_type.colour() {
            return Err(HsmError::bad_key(
                path,
                format!(
                    "colour {} does not match secret type {:?} (file edited)",
                    info.colour, info.secret_type
                ),
            ));
        }
        let s = &info.share;
        if crate::shamir::check_m_of_n(s.m, s.n).is_err() || s.index == 0 || s.index > s.n {
            return Err(HsmError::bad_key(
                path,
                format!(
                    "share {} of {} (M={}) is not a valid share",
                    s.index, s.n, s.m
                ),
            ));
        }
        Ok(PedKey {
            info,
            value: SecretBytes::new(value.to_vec()),
        })
    }

    /// Reads and verifies a key file. A missing file is a blank key: `Ok(None)`.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HsmError::io(path, e)),
            Ok(m) if m.len() > MAX_FILE_LEN => {
                return Err(HsmError::bad_key(path, "file is too large to be a PED key"))
            }
            Ok(_) => {}
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| HsmError::io(path, e))?);
        Self::from_bytes(path, &bytes).map(Some)
    }

    /// Writes the key atomically with owner-only permissions (0600 on Unix).
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| HsmError::io(dir, e))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("pedkey"),
            crate::crypto::random_hex_id(4)
        ));
        let res = (|| -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(&self.to_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(HsmError::io(path, e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PedKey {
        PedKey {
            info: PedKeyInfo {
                format: FORMAT.into(),
                version: VERSION,
                colour: Colour::Blue,
                secret_type: SecretType::So,
                origin_serial: "FH0000000001".into(),
                secret_id: "aa".repeat(16),
                label: "HSM SO".into(),
                share: ShareInfo {
                    set_id: "bb".repeat(16),
                    index: 2,
                    m: 2,
                    n: 3,
                },
                pin_protected: true,
                created: "2026-11-22T00:00:00Z".into(),
            },
            value: SecretBytes::new(vec![0x5a; 32]),
        }
    }

    #[test]
    fn round_trips() {
        let k = sample();
        let b = k.to_bytes();
        let back = PedKey::from_bytes(Path::new("k"), &b).unwrap();
        assert_eq!(back.info, k.info);
        assert_eq!(back.value, k.value);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let b = sample().to_bytes();
        for len in 0..b.len() - 1 {
            // Trailing whitespace is the only thing that may go.
            if b[len..].iter().all(|c| c.is_ascii_whitespace()) {
                continue;
            }
            assert!(
                PedKey::from_bytes(Path::new("k"), &b[..len]).is_err(),
                "truncated at {len} accepted"
            );
        }
    }

    #[test]
    fn edited_label_or_colour_is_rejected() {
        let s = String::from_utf8(sample().to_bytes().to_vec()).unwrap();
        for (from, to) in [
            ("HSM SO", "HSM S0"),
            ("\"blue\"", "\"red\""),
            ("\"index\": 2", "\"index\": 3"),
        ] {
            let edited = s.replacen(from, to, 1);
            assert_ne!(edited, s);
            let e = PedKey::from_bytes(Path::new("k"), edited.as_bytes()).unwrap_err();
            assert!(
                e.to_string().contains("integrity check failed"),
                "{from}: {e}"
            );
        }
    }

    #[test]
    fn wrong_format_and_version_have_precise_messages() {
        let s = String::from_utf8(sample().to_bytes().to_vec()).unwrap();
        let e = PedKey::from_bytes(
            Path::new("k"),
            s.replace("\"version\": 1", "\"version\": 9").as_bytes(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("version 9 is not supported"), "{e}");
        let e = PedKey::from_bytes(Path::new("k"), b"{\"format\":\"x\"}").unwrap_err();
        assert!(e.to_string().contains("not a PED key file"), "{e}");
        let e = PedKey::from_bytes(Path::new("k"), b"").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn written_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.pedkey");
        sample().write(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(PedKey::read(&p).unwrap().unwrap().info, sample().info);
        assert!(PedKey::read(&d.path().join("none")).unwrap().is_none());
    }
}
