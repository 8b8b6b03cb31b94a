//! The secret refs an environment names, and their keys in `gtc-dev-secrets`.
//!
//! The environment document holds `secret://<env>/<path>` refs, never
//! values. Every string in it that is such a ref (`credentials_ref`, a
//! binding's answers, a deployment's config overrides, …) becomes one key of
//! the Secret, its path with '/' written as '.', and an empty value. The
//! apply path fills the values from the secrets store; a render never holds
//! one.

use std::collections::BTreeMap;

use crate::RenderError;

/// The scheme of a secret ref.
pub const SECRET_SCHEME: &str = "secret://";
/// Longest Secret key Kubernetes accepts.
pub const SECRET_KEY_LEN_MAX: usize = 253;

/// Every secret ref in `document` (the environment as JSON), keyed by its
/// Secret key. Refused when a ref makes no valid key or two make the same.
pub fn secret_keys(document: &serde_json::Value) -> Result<BTreeMap<String, String>, RenderError> {
    let mut references = std::collections::BTreeSet::new();
    collect(document, &mut references);
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for reference in references {
        let key = secret_key(&reference)?;
        if let Some(first) = keys.get(&key) {
            return Err(RenderError::SecretKeyCollision {
                key,
                first: first.clone(),
                second: reference,
            });
        }
        keys.insert(key, reference);
    }
    Ok(keys)
}

/// The Secret key of `reference`: its path with '/' as '.'.
pub fn secret_key(reference: &str) -> Result<String, RenderError> {
    let refuse = |reason| RenderError::SecretKey {
        reference: reference.to_owned(),
        reason,
    };
    let path = reference
        .strip_prefix(SECRET_SCHEME)
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path)
        .filter(|path| !path.is_empty())
        .ok_or_else(|| refuse("it has no path after secret://<env>/"))?;
    let key = path.replace('/', ".");
    if key.len() > SECRET_KEY_LEN_MAX {
        return Err(refuse("its path is longer than 253 characters"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(refuse(
            "its path has a character other than a letter, digit, '.', '-', '_' or '/'",
        ));
    }
    if key.starts_with("..") || key == "." {
        return Err(refuse("its key would start with '..'"));
    }
    Ok(key)
}

fn collect(value: &serde_json::Value, into: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::String(text) if text.starts_with(SECRET_SCHEME) => {
            into.insert(text.clone());
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect(item, into)),
        serde_json::Value::Object(map) => map.values().for_each(|item| collect(item, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_anywhere_in_the_document_become_keys() {
        // Proves nested refs are found, non-refs ignored, keys use '.'.
        let document = serde_json::json!({
            "credentials_ref": "secret://prod/cloud/credentials",
            "bundles": [{"config_overrides": {"p": {"db": "secret://prod/db/password"}}}],
            "name": "not a secret://ref because of the prefix",
        });
        let keys = secret_keys(&document).expect("keys");
        assert_eq!(
            keys,
            BTreeMap::from([
                (
                    "cloud.credentials".to_owned(),
                    "secret://prod/cloud/credentials".to_owned()
                ),
                (
                    "db.password".to_owned(),
                    "secret://prod/db/password".to_owned()
                ),
            ])
        );
    }

    #[test]
    fn colliding_or_unrepresentable_refs_are_refused() {
        // Proves two refs with one key, and a path with a space, are refused.
        let document = serde_json::json!(["secret://prod/a/b", "secret://prod/a.b"]);
        assert!(matches!(
            secret_keys(&document),
            Err(RenderError::SecretKeyCollision { .. })
        ));
        assert!(matches!(
            secret_key("secret://prod/a b"),
            Err(RenderError::SecretKey { .. })
        ));
        assert!(matches!(
            secret_key("secret://prod"),
            Err(RenderError::SecretKey { .. })
        ));
    }
}
