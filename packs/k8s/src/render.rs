//! The render: an environment and its options in, named YAML files out.

use deploy::environment::Environment;
use deploy::revision::Revision;
use serde::Serialize;

use crate::names::{ROUTER_NAME, namespace_name, router_selector, worker_name, worker_selector};
use crate::objects::{
    Scope, budget, config, inputs, namespace, network, router, secret, service, worker,
};
use crate::options::check_pinned;
use crate::secrets::secret_keys;
use crate::workers::{active_revisions, replicas};
use crate::{RenderError, RenderOptions};

/// The name of the multi-document file holding every object in order.
pub const ALL_FILE_NAME: &str = "all.yaml";

/// What a render produced: one file per object, in apply order, and all of
/// them as one multi-document YAML text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `(file name, YAML)` pairs in apply order (namespace, config and
    /// secret, policies, router, workers); names start with a two-digit
    /// order and are unique.
    pub files: Vec<(String, String)>,
    /// Every file's document in the same order, separated by `---` lines:
    /// the text of [`ALL_FILE_NAME`].
    pub all: String,
    /// Every file's object as JSON, in the same order as [`Rendered::files`]
    /// (the namespace first), each serialized from the same typed object as
    /// its YAML: what an apply sends, so it never parses the YAML back.
    pub objects: Vec<serde_json::Value>,
}

impl Rendered {
    /// The YAML of the file called `name`, if rendered.
    pub fn file(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(file, _)| file == name)
            .map(|(_, yaml)| yaml.as_str())
    }
}

/// Renders `environment` into the manifests of namespace `gtc-<env>`.
///
/// Pure and deterministic: no I/O, no clock, no randomness; maps are sorted,
/// so the same input gives byte-identical output. Refuses (and renders
/// nothing) when the environment is invalid, the options are (fewer than
/// two router replicas, an image not pinned by digest), an active revision
/// has no image, or a name breaks Kubernetes' limits.
pub fn render(environment: &Environment, options: &RenderOptions) -> Result<Rendered, RenderError> {
    environment.validate()?;
    options.validate()?;
    let scope = Scope {
        env: environment.environment_id.clone(),
        namespace: namespace_name(&environment.environment_id)?,
    };
    let router_replicas =
        i32::try_from(options.router_replicas).map_err(|_| RenderError::RouterReplicas {
            replicas: options.router_replicas,
        })?;
    let document = serde_json::to_value(environment).map_err(|error| RenderError::Serialize {
        object: "the environment document".to_owned(),
        message: error.to_string(),
    })?;
    let mut files = Files::default();
    files.push("10-namespace.yaml", &namespace::namespace(&scope))?;
    files.push(
        "20-configmap-gtc-runtime-config.yaml",
        &config::runtime_config(&scope, environment)?,
    )?;
    files.push(
        "21-configmap-gtc-env-store.yaml",
        &config::env_store(&scope, &document)?,
    )?;
    files.push(
        "22-secret-gtc-dev-secrets.yaml",
        &secret::dev_secrets(&scope, &secret_keys(&document)?),
    )?;
    for (index, policy) in network::policies(&scope).iter().enumerate() {
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        files.push(&format!("3{index}-networkpolicy-{name}.yaml"), policy)?;
    }
    push_router(&mut files, &scope, &options.router_image, router_replicas)?;
    for revision in active_revisions(environment) {
        push_worker(&mut files, &scope, environment, revision, options)?;
    }
    Ok(files.finish())
}

fn push_router(
    files: &mut Files,
    scope: &Scope,
    image: &str,
    replicas: i32,
) -> Result<(), RenderError> {
    let labels = router_selector();
    files.push(
        "40-deployment-gtc-router.yaml",
        &router::deployment(scope, image, replicas),
    )?;
    files.push(
        "41-service-gtc-router.yaml",
        &service::cluster_ip(scope, ROUTER_NAME, labels.clone(), labels.clone()),
    )?;
    files.push(
        "42-poddisruptionbudget-gtc-router.yaml",
        &budget::min_available(scope, ROUTER_NAME, labels.clone(), labels),
    )
}

fn push_worker(
    files: &mut Files,
    scope: &Scope,
    environment: &Environment,
    revision: &Revision,
    options: &RenderOptions,
) -> Result<(), RenderError> {
    let revision_id = revision.revision_id;
    let name = worker_name(revision_id)?;
    let image = options
        .worker_images
        .get(&revision_id)
        .ok_or(RenderError::MissingWorkerImage {
            revision_id,
            lifecycle: revision.lifecycle,
        })?;
    check_pinned(&format!("revision {revision_id}'s worker"), image)?;
    let instances = replicas(revision);
    let count = i32::try_from(instances).map_err(|_| RenderError::ReplicasOutOfRange {
        revision_id,
        instances,
    })?;
    let labels = worker::labels(scope, revision);
    let selector = worker_selector(revision_id);
    let mut inputs = worker::Inputs::default();
    if let Some(config_map) =
        inputs::config_map(scope, environment, revision, &name, labels.clone())?
    {
        let config_name = inputs::config_name(&name);
        files.push(&format!("48-configmap-{config_name}.yaml"), &config_map)?;
        inputs.config_map = Some(config_name);
    }
    if let Some(secret) = inputs::secrets(scope, revision, &name, labels.clone()) {
        let secret_name = inputs::secrets_name(&name);
        files.push(&format!("49-secret-{secret_name}.yaml"), &secret)?;
        inputs.secrets = Some((secret_name, inputs::pinned_keys(revision)));
    }
    files.push(
        &format!("50-deployment-{name}.yaml"),
        &worker::deployment(scope, revision, &name, image, count, &inputs),
    )?;
    files.push(
        &format!("51-service-{name}.yaml"),
        &service::cluster_ip(scope, &name, labels.clone(), selector.clone()),
    )?;
    if instances > 1 {
        files.push(
            &format!("52-poddisruptionbudget-{name}.yaml"),
            &budget::min_available(scope, &name, labels, selector),
        )?;
    }
    Ok(())
}

/// The files rendered so far.
#[derive(Default)]
struct Files {
    files: Vec<(String, String)>,
    objects: Vec<serde_json::Value>,
}

impl Files {
    fn push(&mut self, name: &str, object: &impl Serialize) -> Result<(), RenderError> {
        let yaml = serde_norway::to_string(object).map_err(|error| RenderError::Serialize {
            object: name.to_owned(),
            message: error.to_string(),
        })?;
        let json = serde_json::to_value(object).map_err(|error| RenderError::Serialize {
            object: name.to_owned(),
            message: error.to_string(),
        })?;
        self.files.push((name.to_owned(), yaml));
        self.objects.push(json);
        Ok(())
    }

    fn finish(self) -> Rendered {
        let all = self
            .files
            .iter()
            .map(|(_, yaml)| yaml.as_str())
            .collect::<Vec<_>>()
            .join("---\n");
        Rendered {
            files: self.files,
            all,
            objects: self.objects,
        }
    }
}
