//! `ferrohsm key …`: the keys of a partition as its Crypto Officer or Crypto User uses them
//! (generate, list, public key, delete, trust, sign, verify, encrypt, decrypt), through the
//! HSM API.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use ferrohsm_core::api::{HsmApi, LoginId};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{KeyOptions, ObjectClass};
use ferrohsm_core::{HsmError, Role};

use crate::commands::{done, partition_role};
use crate::pedargs::Login;
use crate::{exit, output};

type R<T> = Result<T, HsmError>;

/// Who uses keys: Crypto Officer or Crypto User.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyUser {
    /// Partition label.
    #[arg(long)]
    pub partition: String,
    /// Log in as co (default) or cu.
    #[arg(long = "as", default_value = "co")]
    pub as_role: String,
    #[command(flatten)]
    pub login: Login,
}

/// `ferrohsm key …`
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Generate a key in the partition (Crypto Officer).
    #[command(
        after_help = "Examples:\n  ferrohsm key generate --partition payments --type ec-p256 --label signer --challenge env:CO_CHALLENGE\n  ferrohsm key generate --partition issuing --type aes-128 --label card-batch-7 --count 5000 --challenge env:CO_CHALLENGE"
    )]
    Generate {
        #[command(flatten)]
        user: KeyUser,
        /// Key type: aes-128, aes-192, aes-256, ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072, rsa-4096, ed25519.
        #[arg(long = "type")]
        key_type: String,
        /// Label (with --count, the prefix of each label: LABEL-00001, LABEL-00002, …).
        #[arg(long)]
        label: String,
        /// CKA_ID, hex (with --count, the keys' ids are their numbers).
        #[arg(long, default_value = "")]
        id: String,
        /// Allow the key to leave the HSM wrapped (CKA_EXTRACTABLE). Default: never.
        #[arg(long)]
        extractable: bool,
        /// Generate this many keys in one transaction (all or none; each one audited).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: Option<u32>,
    },
    /// List the partition's keys.
    #[command(
        after_help = "Example:\n  ferrohsm key list --partition payments --challenge env:CO_CHALLENGE --json"
    )]
    List {
        #[command(flatten)]
        user: KeyUser,
    },
    /// Write a key pair's public key (X.509 SubjectPublicKeyInfo, PEM) for use outside the HSM.
    #[command(
        after_help = "Example:\n  ferrohsm key public --partition payments --label signer --out signer.pem --as cu"
    )]
    Public {
        #[command(flatten)]
        user: KeyUser,
        /// Key label.
        #[arg(long)]
        label: String,
        /// PEM file to write.
        #[arg(long = "out")]
        output: PathBuf,
    },
    /// Delete a key (both halves of a pair) (Crypto Officer).
    #[command(
        after_help = "Example:\n  ferrohsm key delete --partition payments --label old-signer --challenge env:CO_CHALLENGE"
    )]
    Delete {
        #[command(flatten)]
        user: KeyUser,
        /// Label.
        #[arg(long)]
        label: String,
    },
    /// Mark a secret or public key trusted (CKA_TRUSTED), so that it may wrap although it was
    /// not generated in the HSM (Partition SO login). Every other wrapping rule still holds.
    #[command(
        after_help = "Examples:\n  ferrohsm key trust --partition payments --label zone-kek\n  ferrohsm key trust --partition payments --label zone-kek --remove"
    )]
    Trust {
        /// Partition label.
        #[arg(long)]
        partition: String,
        /// The key's label.
        #[arg(long)]
        label: String,
        /// Take the mark away instead.
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        login: Login,
    },
    /// Sign a file.
    #[command(
        after_help = "Example:\n  ferrohsm key sign --partition payments --label signer --in msg.txt --out msg.sig --challenge env:CO_CHALLENGE"
    )]
    Sign {
        #[command(flatten)]
        user: KeyUser,
        /// Key label.
        #[arg(long)]
        label: String,
        /// Mechanism (default per key type: ecdsa-sha256, rsa-pkcs1-sha256, ed25519).
        #[arg(long)]
        mechanism: Option<String>,
        /// Data to sign.
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the signature.
        #[arg(long = "out")]
        output: PathBuf,
    },
    /// Verify a signature (exit 0 if valid, 1 if not).
    #[command(
        after_help = "Example:\n  ferrohsm key verify --partition payments --label signer --in msg.txt --signature msg.sig --as cu"
    )]
    Verify {
        #[command(flatten)]
        user: KeyUser,
        /// Key label.
        #[arg(long)]
        label: String,
        /// Mechanism (default per key type).
        #[arg(long)]
        mechanism: Option<String>,
        /// Signed data.
        #[arg(long = "in")]
        input: PathBuf,
        /// Signature file.
        #[arg(long)]
        signature: PathBuf,
    },
    /// Encrypt a file (AES-GCM with a fresh random IV stored in front of the output, or RSA-OAEP).
    #[command(
        after_help = "Example:\n  ferrohsm key encrypt --partition payments --label data-key --in plain.bin --out cipher.bin --aad 0102"
    )]
    Encrypt {
        #[command(flatten)]
        user: KeyUser,
        /// Key label.
        #[arg(long)]
        label: String,
        /// Plaintext file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Ciphertext file.
        #[arg(long = "out")]
        output: PathBuf,
        /// Additional authenticated data for AES-GCM, as hex.
        #[arg(long, default_value = "")]
        aad: String,
    },
    /// Decrypt a file made by `key encrypt`.
    #[command(
        after_help = "Example:\n  ferrohsm key decrypt --partition payments --label data-key --in cipher.bin --out plain.bin --aad 0102"
    )]
    Decrypt {
        #[command(flatten)]
        user: KeyUser,
        /// Key label.
        #[arg(long)]
        label: String,
        /// Ciphertext file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Plaintext file.
        #[arg(long = "out")]
        output: PathBuf,
        /// Additional authenticated data for AES-GCM, as hex.
        #[arg(long, default_value = "")]
        aad: String,
    },
}

fn read_file(p: &PathBuf) -> R<Vec<u8>> {
    std::fs::read(p).map_err(|e| HsmError::io(p, e))
}

fn write_file(p: &PathBuf, data: &[u8]) -> R<()> {
    std::fs::write(p, data).map_err(|e| HsmError::io(p, e))
}

/// Key commands go through the HSM API: to the server that holds the directory (or the one
/// named by --server), or to the engine on the directory.
pub fn run(c: KeyCmd, dir: &Path, server: Option<&Path>, ped_dir: &Path, json: bool) -> R<u8> {
    let mut api = crate::front::open(dir, server)?;
    let hsm = api.as_mut();
    match c {
        KeyCmd::Generate {
            user,
            key_type,
            label,
            id,
            extractable,
            count,
        } => {
            let spec: KeySpec = key_type.parse()?;
            let id =
                hex::decode(&id).map_err(|_| HsmError::InvalidInput("--id takes hex".into()))?;
            let s = key_login(hsm, ped_dir, &user)?;
            if let Some(n) = count {
                let each: Vec<KeyOptions> = (1..=n)
                    .map(|i| KeyOptions {
                        label: format!("{label}-{i:05}"),
                        id: i.to_be_bytes().to_vec(),
                        extractable,
                    })
                    .collect();
                let made = hsm.generate_keys(s, spec, &each)?;
                return done(format!(
                    "generated {} {spec} keys {label}-00001 … {label}-{n:05}",
                    made.len()
                ));
            }
            let handles = hsm.generate_key(
                s,
                spec,
                &KeyOptions {
                    label: label.clone(),
                    id,
                    extractable,
                },
            )?;
            let hs: Vec<String> = handles.iter().map(u64::to_string).collect();
            done(format!(
                "generated {spec} key {label:?} (handle(s) {})",
                hs.join(", ")
            ))
        }
        KeyCmd::List { user } => {
            let s = key_login(hsm, ped_dir, &user)?;
            let list = hsm.find_objects(s, None)?;
            if json {
                output::json(&list)
            } else {
                output::objects(&list)
            }
            Ok(exit::OK)
        }
        KeyCmd::Public {
            user,
            label,
            output,
        } => {
            let s = key_login(hsm, ped_dir, &user)?;
            let key = find_key(hsm, s, &label, ObjectClass::PublicKey)?;
            let der = key
                .public
                .ok_or_else(|| HsmError::State(format!("{label:?} has no public key")))?;
            write_file(&output, pem("PUBLIC KEY", &der).as_bytes())?;
            done(format!(
                "public key of {label:?} written to {}",
                output.display()
            ))
        }
        KeyCmd::Trust {
            partition,
            label,
            remove,
            login: l,
        } => {
            let s = crate::front::login(hsm, ped_dir, &l, Role::PartitionSo, Some(&partition))?;
            hsm.set_key_trusted(s, &label, !remove)?;
            done(if remove {
                format!("key {label:?} in {partition} is no longer trusted")
            } else {
                format!("key {label:?} in {partition} is trusted: it may wrap (CKA_TRUSTED)")
            })
        }
        KeyCmd::Delete { user, label } => {
            let s = key_login(hsm, ped_dir, &user)?;
            let found = hsm.find_objects(s, Some(&label))?;
            if found.is_empty() {
                return Err(HsmError::NotFound(format!("no key labelled {label:?}")));
            }
            for o in &found {
                hsm.destroy_object(s, o.handle)?;
            }
            done(format!(
                "deleted {} object(s) labelled {label:?}",
                found.len()
            ))
        }
        KeyCmd::Sign {
            user,
            label,
            mechanism,
            input,
            output,
        } => {
            let data = read_file(&input)?;
            let s = key_login(hsm, ped_dir, &user)?;
            let key = find_key(hsm, s, &label, ObjectClass::PrivateKey)?;
            let mech = pick(mechanism, Use::Sign, key.attrs.key_spec()?)?;
            let sig = hsm.sign(s, key.handle, mech, &data)?;
            write_file(&output, &sig)?;
            done(format!(
                "signed {} with {label:?} ({mech}): {} bytes to {}",
                input.display(),
                sig.len(),
                output.display()
            ))
        }
        KeyCmd::Verify {
            user,
            label,
            mechanism,
            input,
            signature,
        } => {
            let data = read_file(&input)?;
            let sig = read_file(&signature)?;
            let s = key_login(hsm, ped_dir, &user)?;
            let key = find_key(hsm, s, &label, ObjectClass::PublicKey)?;
            let mech = pick(mechanism, Use::Sign, key.attrs.key_spec()?)?;
            if hsm.verify(s, key.handle, mech, &data, &sig)? {
                done(format!("signature valid ({mech}, key {label:?})"))
            } else {
                println!("signature INVALID ({mech}, key {label:?})");
                Ok(exit::FAILURE)
            }
        }
        KeyCmd::Encrypt {
            user,
            label,
            input,
            output,
            aad,
        } => {
            let data = read_file(&input)?;
            let s = key_login(hsm, ped_dir, &user)?;
            let key = find_cipher_key(hsm, s, &label, true)?;
            let mech = pick(None, Use::Encrypt, key.attrs.key_spec()?)?;
            let mut iv = vec![0u8; if mech == Mechanism::AesGcm { 12 } else { 0 }];
            ferrohsm_core::crypto::fill_random(&mut iv);
            let p = Params {
                iv: iv.clone(),
                aad: hex::decode(&aad)
                    .map_err(|_| HsmError::InvalidInput("--aad takes hex".into()))?,
                label: vec![],
            };
            let ct = hsm.encrypt(s, key.handle, mech, &p, &data)?;
            write_file(&output, &[iv, ct].concat())?;
            done(format!(
                "encrypted {} with {label:?} ({mech}) to {}",
                input.display(),
                output.display()
            ))
        }
        KeyCmd::Decrypt {
            user,
            label,
            input,
            output,
            aad,
        } => {
            let data = read_file(&input)?;
            let s = key_login(hsm, ped_dir, &user)?;
            let key = find_cipher_key(hsm, s, &label, false)?;
            let mech = pick(None, Use::Encrypt, key.attrs.key_spec()?)?;
            let (iv, ct) = if mech == Mechanism::AesGcm {
                if data.len() < 12 + 16 {
                    return Err(HsmError::InvalidInput(format!(
                        "{} is too short to be AES-GCM output",
                        input.display()
                    )));
                }
                data.split_at(12)
            } else {
                (&data[..0], &data[..])
            };
            let p = Params {
                iv: iv.to_vec(),
                aad: hex::decode(&aad)
                    .map_err(|_| HsmError::InvalidInput("--aad takes hex".into()))?,
                label: vec![],
            };
            let pt = hsm.decrypt(s, key.handle, mech, &p, ct)?;
            write_file(&output, &pt)?;
            done(format!(
                "decrypted {} with {label:?} ({mech}) to {}",
                input.display(),
                output.display()
            ))
        }
    }
}

/// PEM armour (RFC 7468) around DER.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn find_cipher_key(
    hsm: &mut dyn HsmApi,
    s: LoginId,
    label: &str,
    encrypt: bool,
) -> R<ferrohsm_core::object::ObjectInfo> {
    let all = hsm.find_objects(s, Some(label))?;
    let want = |c: ObjectClass| all.iter().find(|o| o.attrs.class == c).cloned();
    want(ObjectClass::SecretKey)
        .or_else(|| {
            want(if encrypt {
                ObjectClass::PublicKey
            } else {
                ObjectClass::PrivateKey
            })
        })
        .ok_or_else(|| HsmError::NotFound(format!("no key labelled {label:?}")))
}

fn find_key(
    hsm: &mut dyn HsmApi,
    s: LoginId,
    label: &str,
    class: ObjectClass,
) -> R<ferrohsm_core::object::ObjectInfo> {
    ferrohsm_core::object::one_labelled(hsm.find_objects(s, Some(label))?, label, class)
}

/// Logs the Crypto Officer (or, with --as cu, the Crypto User) of the command's partition in.
pub(crate) fn key_login(hsm: &mut dyn HsmApi, ped_dir: &Path, u: &KeyUser) -> R<LoginId> {
    let role = partition_role(&u.as_role, "--as")?;
    crate::front::login(hsm, ped_dir, &u.login, role, Some(&u.partition))
}

/// What a key is used for, to pick its default mechanism.
enum Use {
    Sign,
    Encrypt,
}

fn pick(given: Option<String>, usage: Use, spec: KeySpec) -> R<Mechanism> {
    let default = match usage {
        Use::Sign => spec.default_sign(),
        Use::Encrypt => spec.default_encrypt(),
    };
    match given {
        Some(m) => m.parse(),
        None => default.ok_or_else(|| {
            HsmError::InvalidInput(format!(
                "a {spec} key has no default mechanism for this; name one with --mechanism"
            ))
        }),
    }
}
