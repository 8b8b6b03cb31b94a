//! The Kubernetes objects of a rendered environment, one module per kind
//! of object, each a plain function of the environment's facts.

pub mod budget;
pub mod config;
pub mod inputs;
pub mod namespace;
pub mod network;
pub mod pod;
pub mod router;
pub mod secret;
pub mod service;
pub mod worker;

use std::collections::BTreeMap;

use deploy::ids::EnvId;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::names::environment_labels;

/// The port every workload serves HTTP on, and every Service exposes.
pub const HTTP_PORT: i32 = 8080;
/// The name of [`HTTP_PORT`] on containers; Services and probes refer to it.
pub const HTTP_PORT_NAME: &str = "http";

/// Where the objects go: the environment and its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The environment rendered.
    pub env: EnvId,
    /// `gtc-<env>`, already checked.
    pub namespace: String,
}

impl Scope {
    /// Metadata of an object `name` in the namespace, with the environment's
    /// labels and `labels` on top.
    pub fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        let mut all = environment_labels(&self.env);
        all.extend(labels);
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(all),
            ..ObjectMeta::default()
        }
    }
}

/// A selector matching exactly `labels`.
pub fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}
