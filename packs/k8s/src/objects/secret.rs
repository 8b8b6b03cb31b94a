//! `gtc-dev-secrets`: one key per secret ref the environment names, every
//! value empty. The apply path fills the values from the environment's
//! secrets store (`greentic.secrets.dev-store`) at apply time, so a render,
//! its golden files and `all.yaml` never hold a secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::objects::Scope;

/// The Secret's name.
pub const DEV_SECRETS_NAME: &str = "gtc-dev-secrets";
/// Annotation mapping each key back to its `secret://` ref, as JSON, so the
/// apply path knows which secret fills which key.
pub const REFS_ANNOTATION: &str = "greentic.ai/secret-refs";

/// The Secret with `keys` (key → ref), each value empty.
pub fn dev_secrets(scope: &Scope, keys: &BTreeMap<String, String>) -> Secret {
    let mut metadata = scope.meta(DEV_SECRETS_NAME, BTreeMap::new());
    // A map of strings always serializes (the fallback is never taken), and
    // a BTreeMap does so in key order, so the annotation is deterministic.
    let refs = serde_json::to_string(keys).unwrap_or_else(|_| "{}".to_owned());
    metadata.annotations = Some(BTreeMap::from([(REFS_ANNOTATION.to_owned(), refs)]));
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(
            keys.keys()
                .map(|key| (key.clone(), ByteString(Vec::new())))
                .collect(),
        ),
        ..Secret::default()
    }
}
