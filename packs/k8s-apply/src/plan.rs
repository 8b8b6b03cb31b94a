//! What an apply sends: every object of a render, in its order, with the
//! Secret's empty values replaced by the caller's. Pure: no request is made
//! here, so every refusal happens before anything reaches the cluster.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use k8s_deployer::Rendered;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::PlanError;
use crate::kind::Kind;

pub use crate::kind::ObjectRef;

/// One object to apply. Its body may hold secret values, so it has no
/// `Debug` that shows it and no accessor outside the crate.
pub struct PlannedObject {
    pub object: ObjectRef,
    pub(crate) body: Value,
    /// The values this body carries (a Secret's), so an error about it can
    /// be scrubbed of them.
    pub(crate) secret_values: Vec<Zeroizing<String>>,
}

impl std::fmt::Debug for PlannedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedObject")
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

/// Every object of a render, in apply order (the namespace first).
#[derive(Debug)]
pub struct ApplyPlan {
    /// `gtc-<env>`: the only namespace written to.
    pub namespace: String,
    pub objects: Vec<PlannedObject>,
}

impl ApplyPlan {
    /// The plan of `rendered`, each Secret's keys filled from
    /// `secret_values` (Secret key → value). Refused when a key has no
    /// value (applying it would overwrite the cluster's value with an empty
    /// one), when a value has no key, or when the render holds an object
    /// the apply does not know or outside its namespace.
    pub fn new(
        rendered: &Rendered,
        secret_values: &BTreeMap<String, SecretString>,
    ) -> Result<Self, PlanError> {
        let first = rendered.objects.first().ok_or(PlanError::Empty)?;
        let namespace_ref = object_ref(0, first)?;
        if namespace_ref.kind != Kind::Namespace {
            return Err(PlanError::NamespaceNotFirst {
                found: namespace_ref.kind.to_string(),
            });
        }
        let namespace = namespace_ref.name;
        let mut objects = Vec::with_capacity(rendered.objects.len());
        let mut used_keys = BTreeSet::new();
        for (index, body) in rendered.objects.iter().enumerate() {
            let object = object_ref(index, body)?;
            if object.kind.is_namespaced() && object.namespace.as_deref() != Some(&namespace) {
                return Err(PlanError::OutsideNamespace { object, namespace });
            }
            let mut body = body.clone();
            let mut carried = Vec::new();
            if object.kind == Kind::Secret {
                let keys = fill_secret(&object, &mut body, secret_values, &mut carried)?;
                used_keys.extend(keys);
            }
            objects.push(PlannedObject {
                object,
                body,
                secret_values: carried,
            });
        }
        let unexpected: Vec<String> = secret_values
            .keys()
            .filter(|key| !used_keys.contains(*key))
            .cloned()
            .collect();
        if !unexpected.is_empty() {
            return Err(PlanError::UnexpectedSecretValues { keys: unexpected });
        }
        Ok(Self { namespace, objects })
    }

    /// The objects the render names: what the prune keeps.
    pub fn rendered_refs(&self) -> BTreeSet<ObjectRef> {
        self.objects
            .iter()
            .map(|planned| planned.object.clone())
            .collect()
    }
}

/// The kind, namespace and name of a rendered object, checked against the
/// kinds the apply knows.
fn object_ref(index: usize, body: &Value) -> Result<ObjectRef, PlanError> {
    let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str);
    let kind_name = text("/kind").ok_or_else(|| PlanError::Malformed {
        index,
        reason: "it has no kind".to_owned(),
    })?;
    let api_version = text("/apiVersion").unwrap_or_default();
    let kind = Kind::parse(kind_name)
        .filter(|kind| kind.api_resource().api_version == api_version)
        .ok_or_else(|| PlanError::UnknownKind {
            index,
            kind: kind_name.to_owned(),
            api_version: api_version.to_owned(),
        })?;
    let name = text("/metadata/name")
        .filter(|name| !name.is_empty())
        .ok_or_else(|| PlanError::Malformed {
            index,
            reason: format!("its {kind} has no metadata.name"),
        })?;
    Ok(ObjectRef {
        kind,
        namespace: text("/metadata/namespace").map(str::to_owned),
        name: name.to_owned(),
    })
}

/// Replaces every key of the Secret's `data` with its value from
/// `secret_values` (base64, as `data` holds bytes); returns the keys used.
fn fill_secret(
    object: &ObjectRef,
    body: &mut Value,
    secret_values: &BTreeMap<String, SecretString>,
    carried: &mut Vec<Zeroizing<String>>,
) -> Result<Vec<String>, PlanError> {
    let Some(data) = body.get_mut("data").and_then(Value::as_object_mut) else {
        return Ok(Vec::new());
    };
    let keys: Vec<String> = data.keys().cloned().collect();
    let missing: Vec<String> = keys
        .iter()
        .filter(|key| !secret_values.contains_key(*key))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(PlanError::MissingSecretValues {
            secret: object.to_string(),
            keys: missing,
        });
    }
    for (key, slot) in data.iter_mut() {
        // Every key was just checked to have a value.
        if let Some(value) = secret_values.get(key) {
            let plain = value.expose_secret();
            let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
            carried.push(Zeroizing::new(plain.to_owned()));
            carried.push(Zeroizing::new(encoded.clone()));
            *slot = Value::String(encoded);
        }
    }
    Ok(keys)
}

/// `message` with every value in `secret_values` replaced, so a server's
/// message that echoes a value does not carry it further.
pub(crate) fn redact(message: &str, secret_values: &[Zeroizing<String>]) -> String {
    let mut redacted = message.to_owned();
    for value in secret_values.iter().filter(|value| !value.is_empty()) {
        redacted = redacted.replace(value.as_str(), "[redacted]");
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(objects: Vec<Value>) -> Rendered {
        Rendered {
            files: Vec::new(),
            all: String::new(),
            objects,
        }
    }

    fn namespace() -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gtc-prod"}})
    }

    fn secret() -> Value {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "gtc-dev-secrets", "namespace": "gtc-prod"},
               "type": "Opaque", "data": {"db.password": "", "api.token": ""}})
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretString::from((*v).to_owned())))
            .collect()
    }

    #[test]
    fn the_secret_gets_every_value_in_base64_and_nothing_else_changes() {
        // Proves each empty key is filled with its value's base64, the
        // other objects are sent as rendered, and the order is kept.
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "c", "namespace": "gtc-prod"}, "data": {"k": "v"}});
        let plan = ApplyPlan::new(
            &rendered(vec![namespace(), config.clone(), secret()]),
            &values(&[("db.password", "hunter2"), ("api.token", "t0k")]),
        )
        .expect("plan");
        assert_eq!(plan.namespace, "gtc-prod");
        assert_eq!(plan.objects[1].body, config);
        let data = &plan.objects[2].body["data"];
        assert_eq!(data["db.password"], "aHVudGVyMg==");
        assert_eq!(data["api.token"], "dDBr");
        let debug = format!("{plan:?}");
        assert!(
            !debug.contains("aHVudGVyMg") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn a_missing_value_refuses_the_plan_naming_the_key_not_the_value() {
        // Proves an empty value is never sent over a real one: a key
        // without a value refuses everything, and a value without a key too.
        let missing = ApplyPlan::new(
            &rendered(vec![namespace(), secret()]),
            &values(&[("db.password", "hunter2")]),
        )
        .expect_err("missing");
        assert_eq!(
            missing,
            PlanError::MissingSecretValues {
                secret: "Secret gtc-prod/gtc-dev-secrets".to_owned(),
                keys: vec!["api.token".to_owned()],
            }
        );
        assert!(!missing.to_string().contains("hunter2"));
        let extra = ApplyPlan::new(
            &rendered(vec![namespace(), secret()]),
            &values(&[("db.password", "a"), ("api.token", "b"), ("x", "c")]),
        )
        .expect_err("extra");
        assert_eq!(
            extra,
            PlanError::UnexpectedSecretValues {
                keys: vec!["x".to_owned()]
            }
        );
    }

    #[test]
    fn unknown_kinds_other_namespaces_and_a_late_namespace_are_refused() {
        // Proves the plan refuses what the apply must not send.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "gtc-prod"}});
        assert!(matches!(
            ApplyPlan::new(&rendered(vec![namespace(), pod]), &BTreeMap::new()),
            Err(PlanError::UnknownKind { index: 1, .. })
        ));
        let elsewhere = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "kube-system"}});
        assert!(matches!(
            ApplyPlan::new(&rendered(vec![namespace(), elsewhere]), &BTreeMap::new()),
            Err(PlanError::OutsideNamespace { .. })
        ));
        let wrong_version = json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "gtc-prod"}});
        assert!(matches!(
            ApplyPlan::new(
                &rendered(vec![namespace(), wrong_version]),
                &BTreeMap::new()
            ),
            Err(PlanError::UnknownKind { .. })
        ));
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "gtc-prod"}});
        assert!(matches!(
            ApplyPlan::new(&rendered(vec![config, namespace()]), &BTreeMap::new()),
            Err(PlanError::NamespaceNotFirst { .. })
        ));
        assert_eq!(
            ApplyPlan::new(&rendered(Vec::new()), &BTreeMap::new()).expect_err("empty"),
            PlanError::Empty
        );
    }

    #[test]
    fn redaction_removes_every_carried_value() {
        // Proves a server message echoing a value (plain or base64) loses it.
        let carried = vec![
            Zeroizing::new("hunter2".to_owned()),
            Zeroizing::new("aHVudGVyMg==".to_owned()),
        ];
        assert_eq!(
            redact("bad data hunter2 / aHVudGVyMg==", &carried),
            "bad data [redacted] / [redacted]"
        );
    }
}
