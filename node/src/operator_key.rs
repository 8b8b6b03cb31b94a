//! The operator key (spec C2): one Ed25519 key per operator, kept at
//! `$GREENTIC_HOME/operator/key.pem` (PKCS#8 PEM, file 0600 in a 0700
//! folder), and the signature of an admin API request made with it.
//!
//! A key is named by its `key_id`, the first 16 hex characters of the
//! SHA-256 of its 32 public key bytes; its public key travels as standard
//! base64 of those bytes. The private key never leaves this module: it is
//! read into a `SigningKey` (zeroed on drop), and its PEM text is held in a
//! `Zeroizing` buffer while it is written or parsed.
//!
//! What a request signature covers ([`canonical_request`]): the method,
//! the path, the SHA-256 of the body and the `x-greentic-date` header, one
//! per line. The date bounds replays to [`DATE_WINDOW_SECONDS`] either way.
//!
//! Knows nothing of trust roots or environments (`trust_root` does).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

/// The folder of the operator key, inside `GREENTIC_HOME`.
pub const OPERATOR_DIR: &str = "operator";
/// The operator key's file inside [`OPERATOR_DIR`].
pub const KEY_FILE: &str = "key.pem";
/// Hex characters of a `key_id`: 64 bits of the public key's SHA-256, so a
/// name stays short in audit events and errors; a trust root compares the
/// whole public key, never the id alone.
pub const KEY_ID_HEX_CHARS: usize = 16;
/// How far a signed request's `x-greentic-date` may be from the node's
/// clock, either way: a captured request can be replayed within this
/// window only (and ETags still refuse a replay of a guarded change).
pub const DATE_WINDOW_SECONDS: i64 = 300;

/// The header carrying the signer's public key (standard base64).
pub const HEADER_KEY: &str = "x-greentic-operator-key";
/// The header carrying the signature of [`canonical_request`] (standard base64).
pub const HEADER_SIGNATURE: &str = "x-greentic-operator-signature";
/// The header carrying the signing time (RFC 3339).
pub const HEADER_DATE: &str = "x-greentic-date";

/// The message `create one…` that every "no key" refusal ends with.
pub const CREATE_HINT: &str = "create one with `gtc operator key create` and ask an admin to add its public key with `gtc op env trust add`";

/// Why the operator key could not be made or read.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("no operator key at {}; {CREATE_HINT}", path.display())]
    Missing { path: PathBuf },
    #[error(
        "an operator key already exists at {}; it is never overwritten (see its public key with `gtc operator key show`)",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error(
        "operator key {} is readable by group or others (mode {mode:o}); make it private with `chmod 600 {}`",
        path.display(), path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("operator key {} is not an Ed25519 PKCS#8 PEM key: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot {action} {}: {reason}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the operating system's random source failed: {reason}")]
    Random { reason: String },
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("the public key is not 32 bytes of standard base64 naming an Ed25519 key: {reason}")]
    PublicKey { reason: String },
    #[error("the signature is not 64 bytes of standard base64: {reason}")]
    Malformed { reason: String },
    #[error("the signature does not verify for this key and request")]
    Mismatch,
}

/// An operator's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses the standard base64 of 32 public key bytes.
    pub fn from_base64(text: &str) -> Result<Self, SignatureError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|error| SignatureError::PublicKey {
                reason: error.to_string(),
            })?;
        let bytes: [u8; 32] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SignatureError::PublicKey {
                    reason: format!("{} bytes", bytes.len()),
                })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|error| SignatureError::PublicKey {
            reason: error.to_string(),
        })?;
        Ok(Self { key })
    }

    /// The standard base64 of the 32 public key bytes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    /// The first 16 hex characters of the SHA-256 of the public key bytes.
    pub fn key_id(&self) -> String {
        let digest = hex::encode(Sha256::digest(self.key.as_bytes()));
        digest[..KEY_ID_HEX_CHARS].to_owned()
    }

    /// Checks `signature` (standard base64) over `message` (strict Ed25519
    /// verification: no malleable or small-order forms).
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        let bytes =
            STANDARD
                .decode(signature.trim())
                .map_err(|error| SignatureError::Malformed {
                    reason: error.to_string(),
                })?;
        let signature =
            Signature::from_slice(&bytes).map_err(|error| SignatureError::Malformed {
                reason: error.to_string(),
            })?;
        self.key
            .verify_strict(message, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// `{key_id, public_key}`, what `gtc operator key show` prints.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({"key_id": self.key_id(), "public_key": self.to_base64()})
    }
}

/// The three headers of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub public_key: String,
    pub signature: String,
    pub date: String,
}

/// The text a request signature covers: method, path, the lowercase hex
/// SHA-256 of the body and the date, joined by newlines.
pub fn canonical_request(method: &str, path: &str, body: &[u8], date: &str) -> String {
    let body_digest = hex::encode(Sha256::digest(body));
    format!("{method}\n{path}\n{body_digest}\n{date}")
}

/// The operator's signing key. `Debug` shows the `key_id` only.
pub struct OperatorKey {
    signing: SigningKey,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

/// `<home>/operator/key.pem`.
pub fn key_path(home: &Path) -> PathBuf {
    home.join(OPERATOR_DIR).join(KEY_FILE)
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> KeyError + use<'a> {
    move |error| KeyError::Io {
        action,
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

impl OperatorKey {
    /// Makes a new key from 32 bytes of the OS random source and writes it
    /// to `<home>/operator/key.pem` (0600; the folder 0700). An existing key
    /// is never replaced: the file appears whole, by a hard link of a
    /// fully written temporary file, or not at all.
    pub fn create(home: &Path) -> Result<Self, KeyError> {
        let path = key_path(home);
        if path.exists() {
            return Err(KeyError::Exists { path });
        }
        let folder = home.join(OPERATOR_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&folder)
            .map_err(io("create", &folder))?;
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restrict", &folder))?;
        let mut seed = Zeroizing::new([0u8; 32]);
        secrets::value::os_random(seed.as_mut_slice()).map_err(|error| KeyError::Random {
            reason: error.to_string(),
        })?;
        let key = Self {
            signing: SigningKey::from_bytes(&seed),
        };
        let pem = key
            .signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|error| KeyError::Malformed {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let temporary = folder.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
        let written = write_private(&temporary, pem.as_bytes()).and_then(|()| {
            match std::fs::hard_link(&temporary, &path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(KeyError::Exists { path: path.clone() })
                }
                Err(error) => Err(io("write", &path)(error)),
            }
        });
        // The temporary name goes either way; the key (if linked) stays.
        let _ = std::fs::remove_file(&temporary);
        written?;
        std::fs::File::open(&folder)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync", &folder))?;
        Ok(key)
    }

    /// Reads `<home>/operator/key.pem`; refuses a file readable by group or
    /// others.
    pub fn load(home: &Path) -> Result<Self, KeyError> {
        let path = key_path(home);
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing { path });
            }
            Err(error) => return Err(io("read", &path)(error)),
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path, mode });
        }
        let pem = Zeroizing::new(std::fs::read_to_string(&path).map_err(io("read", &path))?);
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|error| KeyError::Malformed {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        Ok(Self { signing })
    }

    /// The key's public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.signing.verifying_key(),
        }
    }

    /// The standard base64 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.signing.sign(message).to_bytes())
    }

    /// The headers of a request signed at `date` (RFC 3339).
    pub fn sign_request(&self, method: &str, path: &str, body: &[u8], date: &str) -> SignedHeaders {
        SignedHeaders {
            public_key: self.public().to_base64(),
            signature: self.sign(canonical_request(method, path, body, date).as_bytes()),
            date: date.to_owned(),
        }
    }
}

/// Writes `bytes` to a new file of mode 0600 and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_loads_back_as_the_same_key() {
        // Proves: create writes a 0600 PEM in a 0700 folder, load reads the
        // same key, and a second create refuses to overwrite it.
        let home = tempfile::tempdir().expect("home");
        let created = OperatorKey::create(home.path()).expect("create");
        let path = key_path(home.path());
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let folder = std::fs::metadata(home.path().join(OPERATOR_DIR)).expect("folder");
        assert_eq!(folder.permissions().mode() & 0o777, 0o700);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        let loaded = OperatorKey::load(home.path()).expect("load");
        assert_eq!(loaded.public(), created.public());
        let id = created.public().key_id();
        assert_eq!(id.len(), KEY_ID_HEX_CHARS);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(matches!(
            OperatorKey::create(home.path()),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(
            OperatorKey::load(home.path()).expect("still").public(),
            created.public()
        );
        assert!(!format!("{loaded:?}").contains(&text[30..60]));
    }

    #[test]
    fn a_missing_or_too_open_key_is_refused() {
        // Proves: no key says how to make one; a key readable by others is
        // refused like the secrets node key.
        let home = tempfile::tempdir().expect("home");
        let missing = OperatorKey::load(home.path()).expect_err("missing");
        assert!(missing.to_string().contains("gtc operator key create"));
        OperatorKey::create(home.path()).expect("create");
        let path = key_path(home.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            OperatorKey::load(home.path()),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn a_signed_request_verifies_and_a_tampered_one_does_not() {
        // Proves: the canonical request string binds method, path, body and
        // date; another key's signature does not verify.
        let home = tempfile::tempdir().expect("home");
        let key = OperatorKey::create(home.path()).expect("create");
        let date = "2025-01-01T00:00:00Z";
        let body = br#"{"entries":[]}"#;
        let signed = key.sign_request("POST", "/v1/environments/prod/traffic", body, date);
        let public = PublicKey::from_base64(&signed.public_key).expect("public");
        let message = canonical_request("POST", "/v1/environments/prod/traffic", body, date);
        assert_eq!(public.verify(message.as_bytes(), &signed.signature), Ok(()));
        for tampered in [
            canonical_request("POST", "/v1/environments/prod/traffic", b"{}", date),
            canonical_request("PATCH", "/v1/environments/prod/traffic", body, date),
            canonical_request("POST", "/v1/environments/local/traffic", body, date),
            canonical_request(
                "POST",
                "/v1/environments/prod/traffic",
                body,
                "2025-01-01T00:00:01Z",
            ),
        ] {
            assert_eq!(
                public.verify(tampered.as_bytes(), &signed.signature),
                Err(SignatureError::Mismatch)
            );
        }
        let other_home = tempfile::tempdir().expect("other");
        let other = OperatorKey::create(other_home.path()).expect("other key");
        assert_ne!(other.public().key_id(), public.key_id());
        assert_eq!(
            other.public().verify(message.as_bytes(), &signed.signature),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            public.verify(message.as_bytes(), "not base64!"),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(PublicKey::from_base64("AAAA").is_err());
    }
}
