//! One revision's worker: its bundle's image, as many pods as the revision's
//! committed instance count.

use std::collections::BTreeMap;

use deploy::revision::{DRAIN_SECONDS_DEFAULT, Revision};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{LABEL_DEPLOYMENT, LABEL_NAME, environment_labels, worker_selector};
use crate::objects::{HTTP_PORT, HTTP_PORT_NAME, Scope, match_labels, pod};

/// The worker's readiness path. The bundle's own `health_path` lives in its
/// manifest (the `bundle` crate), not in the environment document, so the
/// render probes `/`, which any HTTP service answers.
pub const READINESS_PATH: &str = "/";
/// The variable that tells the process its port, as the local-process and
/// Docker deployers set it (`PORT` is the bundles' default `port_env`).
pub const PORT_ENV: &str = "PORT";
/// The variable that tells the process which address to listen on; `0.0.0.0`
/// since the pod's own IP is what its Service reaches.
pub const HOST_ENV: &str = "HOST";
/// CPU a worker requests.
pub const CPU_REQUEST: &str = "100m";
/// Memory a worker requests.
pub const MEMORY_REQUEST: &str = "128Mi";

/// A worker's labels: the environment's, its selector, and its deployment.
pub fn labels(scope: &Scope, revision: &Revision) -> BTreeMap<String, String> {
    let mut labels = environment_labels(&scope.env);
    labels.extend(worker_selector(revision.revision_id));
    labels.insert(LABEL_NAME.to_owned(), "gtc-worker".to_owned());
    labels.insert(
        LABEL_DEPLOYMENT.to_owned(),
        revision.deployment_id.to_string(),
    );
    labels
}

/// `revision`'s Deployment named `name`, running `image` on `replicas` pods,
/// each given the drain time as its grace to finish in-flight requests.
pub fn deployment(
    scope: &Scope,
    revision: &Revision,
    name: &str,
    image: &str,
    replicas: i32,
) -> Deployment {
    let labels = labels(scope, revision);
    let drain_seconds = match revision.drain_seconds {
        0 => DRAIN_SECONDS_DEFAULT,
        seconds => seconds,
    };
    Deployment {
        metadata: scope.meta(name, labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: match_labels(worker_selector(revision.revision_id)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    containers: vec![container(scope, revision, image)],
                    security_context: Some(pod::pod_security_context()),
                    termination_grace_period_seconds: Some(i64::from(drain_seconds)),
                    volumes: Some(vec![pod::tmp_volume()]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn container(scope: &Scope, revision: &Revision, image: &str) -> Container {
    // Sorted by name, as the other deployers' child environments are.
    let env = BTreeMap::from([
        ("GREENTIC_DEPLOYMENT", revision.deployment_id.to_string()),
        ("GREENTIC_ENV", scope.env.to_string()),
        ("GREENTIC_REVISION", revision.revision_id.to_string()),
        (HOST_ENV, "0.0.0.0".to_owned()),
        (PORT_ENV, HTTP_PORT.to_string()),
    ]);
    Container {
        name: "worker".to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: Some(
            env.into_iter()
                .map(|(name, value)| EnvVar {
                    name: name.to_owned(),
                    value: Some(value),
                    ..EnvVar::default()
                })
                .collect(),
        ),
        ports: Some(vec![pod::http_port()]),
        readiness_probe: Some(pod::http_probe(READINESS_PATH, HTTP_PORT_NAME)),
        resources: Some(pod::requests(CPU_REQUEST, MEMORY_REQUEST)),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(vec![pod::tmp_mount()]),
        ..Container::default()
    }
}
