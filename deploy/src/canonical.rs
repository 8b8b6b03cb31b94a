//! Canonical JSON and SHA-256 digests: the integrity digest of a backup, the
//! fingerprint of an idempotent request, the strong ETag and the audit chain
//! all hash the same canonical form.

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::ids::validated_string;

/// Serializes `value` as canonical JSON: object keys sorted at every level,
/// no insignificant whitespace, array order kept.
pub fn to_canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(key) {
                    write_canonical(inner, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// SHA-256 over the canonical JSON of any serializable value.
pub fn canonical_digest<T: Serialize>(value: &T) -> Result<StateIntegrity, serde_json::Error> {
    let json = serde_json::to_value(value)?;
    Ok(StateIntegrity::sha256(to_canonical_json(&json).as_bytes()))
}

/// An integrity digest as stored in backups: `{algorithm, digest}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateIntegrity {
    /// Always `sha-256`.
    pub algorithm: String,
    /// Lowercase hex digest.
    pub digest: String,
}

impl StateIntegrity {
    /// The integrity record of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Self {
        Self {
            algorithm: "sha-256".to_owned(),
            digest: sha256_hex(bytes),
        }
    }
}

/// Why a `sha256:<hex>` digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "digest {text:?} is not of the form sha256:<hex> (lowercase hex, 2 to 64 digits; the full form has 64)"
)]
pub struct DigestError {
    pub text: String,
}

/// A content digest `sha256:<lowercase hex>`. The CLI's placeholder
/// `sha256:00` is accepted for revisions staged without a bundle file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentDigest(String);

impl ContentDigest {
    fn validate(text: &str) -> Result<(), DigestError> {
        let error = || DigestError {
            text: text.to_owned(),
        };
        let hex = text.strip_prefix("sha256:").ok_or_else(error)?;
        let lowercase_hex = hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if hex.len() < 2 || hex.len() > 64 || !lowercase_hex {
            return Err(error());
        }
        Ok(())
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", sha256_hex(bytes)))
    }

    /// The placeholder for "no bundle file was staged".
    pub fn placeholder() -> Self {
        Self("sha256:00".to_owned())
    }
}

validated_string!(
    ContentDigest,
    DigestError,
    ContentDigest::validate,
    "Content digest sha256:<lowercase hex>.",
    Some("^sha256:[0-9a-f]{2,64}$")
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": 1, "a": {"d": [3, {"z": 1, "y": 2}], "c": "x"}});
        assert_eq!(
            to_canonical_json(&value),
            r#"{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn digests_validate() {
        assert!("sha256:00".parse::<ContentDigest>().is_ok());
        assert!(ContentDigest::of_bytes(b"x").as_str().len() == 71);
        assert!("sha256:AB".parse::<ContentDigest>().is_err());
        assert!("md5:00".parse::<ContentDigest>().is_err());
        assert!("sha256:".parse::<ContentDigest>().is_err());
    }

    proptest! {
        /// Canonical JSON is a fixed point: parsing and re-canonicalizing gives the same text.
        #[test]
        fn canonical_json_is_stable(keys in proptest::collection::vec("[a-z]{1,4}", 0..8), numbers in proptest::collection::vec(0i64..1000, 0..8)) {
            let mut map = serde_json::Map::new();
            for (key, number) in keys.iter().zip(numbers.iter()) {
                map.insert(key.clone(), serde_json::json!([number, {"k": key}]));
            }
            let text = to_canonical_json(&serde_json::Value::Object(map));
            let reparsed: serde_json::Value = serde_json::from_str(&text).expect("canonical json parses");
            prop_assert_eq!(to_canonical_json(&reparsed), text);
        }
    }
}
