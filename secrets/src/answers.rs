//! The `--answers` payloads of `gtc op secrets put|get|rotate` (and the
//! bodies of their admin API routes). Values arrive as [`SecretText`], so
//! an answers struct can be printed with `{:?}` but never serialized.

use std::io::Read;
use std::path::{Path, PathBuf};

use deploy::ids::EnvId;
use schemars::JsonSchema;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::SecretsError;
use crate::value::{GenerateSpec, SECRET_VALUE_BYTES_MAX, SecretText, ValueError};

/// Longest idempotency key (the same bound as the admin API's header).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// `secrets put`: stores a new version of `secret://<env>/<path>`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretPutAnswers {
    pub environment_id: EnvId,
    /// `db/password` or `secret://<env>/db/password` (same environment).
    pub path: String,
    /// The value; or give `value_file`.
    #[serde(default)]
    pub value: Option<SecretText>,
    /// A file whose content is the value (one trailing newline is removed);
    /// read by the CLI on its own machine, never sent as a path to a node.
    #[serde(default)]
    pub value_file: Option<PathBuf>,
    /// Retrying with the same key and value answers the first version again.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `secrets get`: metadata of a version, and its value with `reveal`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretGetAnswers {
    pub environment_id: EnvId,
    pub path: String,
    /// The version to read; the latest when left out.
    #[serde(default)]
    pub version: Option<u32>,
    /// Return the value too (admin role only, audited).
    #[serde(default)]
    pub reveal: bool,
}

/// `secrets remove`: deletes one version that is not the latest and that
/// no non-archived revision pins.
#[derive(Debug, Clone, serde::Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRemoveAnswers {
    pub environment_id: EnvId,
    pub path: String,
    pub version: u32,
}

/// `secrets rotate`: a new version of an existing secret, from a value or
/// generated (the default when neither `value` nor `value_file` is given).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRotateAnswers {
    pub environment_id: EnvId,
    pub path: String,
    #[serde(default)]
    pub value: Option<SecretText>,
    #[serde(default)]
    pub value_file: Option<PathBuf>,
    /// Length and alphabet of a generated value.
    #[serde(default)]
    pub generate: Option<GenerateSpec>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Where a new version's value comes from, once the answers are checked.
#[derive(Debug)]
pub enum ValueSource {
    Given(SecretText),
    Generated(GenerateSpec),
}

/// Checks an idempotency key's size and characters.
pub fn check_idempotency_key(key: Option<&str>) -> Result<(), SecretsError> {
    match key {
        Some(key)
            if key.is_empty()
                || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
                || !key.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Err(SecretsError::Malformed {
                path: PathBuf::from("idempotency_key"),
                reason: format!(
                    "an idempotency key is 1 to {IDEMPOTENCY_KEY_BYTES_MAX} printable ASCII characters"
                ),
            })
        }
        _ => Ok(()),
    }
}

impl SecretPutAnswers {
    /// The value, from `value` or `value_file` (exactly one).
    pub fn into_value(self) -> Result<SecretText, SecretsError> {
        match (self.value, self.value_file) {
            (Some(value), None) => Ok(value),
            (None, Some(file)) => read_value_file(&file),
            _ => Err(SecretsError::ValueSource { generate: false }),
        }
    }
}

impl SecretRotateAnswers {
    /// The value source: at most one of `value`, `value_file`, `generate`;
    /// none means a generated value with the defaults.
    pub fn into_source(self) -> Result<ValueSource, SecretsError> {
        match (self.value, self.value_file, self.generate) {
            (Some(value), None, None) => Ok(ValueSource::Given(value)),
            (None, Some(file), None) => Ok(ValueSource::Given(read_value_file(&file)?)),
            (None, None, spec) => Ok(ValueSource::Generated(spec.unwrap_or_default())),
            _ => Err(SecretsError::ValueSource { generate: true }),
        }
    }
}

/// Reads a value file: at most [`SECRET_VALUE_BYTES_MAX`] bytes (plus one
/// trailing newline, which is removed), UTF-8. Errors never quote content.
pub fn read_value_file(path: &Path) -> Result<SecretText, SecretsError> {
    let failed = |reason: String| SecretsError::ValueFile {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|error| failed(error.to_string()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    // Read one byte past the limit (and a newline) to tell "too large" apart.
    let cap = (SECRET_VALUE_BYTES_MAX + 3) as u64;
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|error| failed(error.to_string()))?;
    let newline = if bytes.ends_with(b"\r\n") {
        2
    } else {
        usize::from(bytes.ends_with(b"\n"))
    };
    let length = bytes.len() - newline;
    bytes.truncate(length);
    if bytes.len() > SECRET_VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge { bytes: bytes.len() }.into());
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| failed("the content is not UTF-8 text".to_owned()))?;
    Ok(SecretText::new(text.to_owned())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_value_source_is_accepted() {
        // Proves: put needs one of value/value_file; rotate defaults to generating.
        let both: SecretPutAnswers = serde_json::from_value(serde_json::json!({
            "environment_id": "local", "path": "a", "value": "x", "value_file": "/nonexistent"
        }))
        .expect("parses");
        assert!(matches!(
            both.into_value(),
            Err(SecretsError::ValueSource { .. })
        ));
        let rotate: SecretRotateAnswers = serde_json::from_value(serde_json::json!({
            "environment_id": "local", "path": "a"
        }))
        .expect("parses");
        assert!(matches!(
            rotate.into_source(),
            Ok(ValueSource::Generated(_))
        ));
    }

    #[test]
    fn value_files_lose_one_newline_and_keep_their_limit() {
        // Proves: `echo v > file` stores `v`, and an oversize file is refused by size.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("v");
        std::fs::write(&file, "s3cret\n").expect("write");
        assert_eq!(read_value_file(&file).expect("read").expose(), "s3cret");
        std::fs::write(&file, "z".repeat(SECRET_VALUE_BYTES_MAX + 1)).expect("write");
        let error = read_value_file(&file).expect_err("too large").to_string();
        assert!(error.contains("limit") && !error.contains("zzz"), "{error}");
    }
}
