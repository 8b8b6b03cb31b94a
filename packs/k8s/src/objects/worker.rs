//! One revision's worker: its bundle's image, as many pods as the revision's
//! committed instance count.

use std::collections::BTreeMap;

use deploy::revision::{DRAIN_SECONDS_DEFAULT, Revision};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, KeyToPath, PodSpec, PodTemplateSpec,
    SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{LABEL_DEPLOYMENT, LABEL_NAME, environment_labels, worker_selector};
use crate::objects::inputs::{
    CONFIG_DIR, CONFIG_DIR_ENV, PinnedDelivery, PinnedKey, SECRETS_DIR, SECRETS_DIR_ENV,
};
use crate::objects::{HTTP_PORT, HTTP_PORT_NAME, Scope, match_labels, pod};

/// The pod volume of the worker's pack configs.
const CONFIG_VOLUME: &str = "pack-config";
/// The pod volume of the worker's secret files.
const SECRETS_VOLUME: &str = "pinned-secrets";
/// Mode of the mounted secret files: read-only for the owner and the
/// group, which the pod security context (`fsGroup`) makes the pod's own;
/// no one else.
const SECRET_FILE_MODE: i32 = 0o440;

/// What a worker receives besides its image: its ConfigMap (when it has
/// pack configs) and its Secret's name with the pinned keys (when it pins
/// secrets).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub config_map: Option<String>,
    pub secrets: Option<(String, Vec<PinnedKey>)>,
}

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
    inputs: &Inputs,
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
                    containers: vec![container(scope, revision, image, inputs)],
                    security_context: Some(pod::pod_security_context()),
                    termination_grace_period_seconds: Some(i64::from(drain_seconds)),
                    volumes: Some(volumes(inputs)),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The pod's volumes: `/tmp`, then the pack configs and the secret files
/// when the worker has them.
fn volumes(inputs: &Inputs) -> Vec<Volume> {
    let mut volumes = vec![pod::tmp_volume()];
    if let Some(config_map) = &inputs.config_map {
        volumes.push(Volume {
            name: CONFIG_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some((secret, pinned)) = &inputs.secrets {
        let items: Vec<KeyToPath> = pinned
            .iter()
            .filter_map(|p| match &p.delivery {
                PinnedDelivery::File(file) => Some(KeyToPath {
                    key: p.key.clone(),
                    path: file.clone(),
                    mode: Some(SECRET_FILE_MODE),
                }),
                PinnedDelivery::Env(_) => None,
            })
            .collect();
        if !items.is_empty() {
            volumes.push(Volume {
                name: SECRETS_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    items: Some(items),
                    default_mode: Some(SECRET_FILE_MODE),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
    }
    volumes
}

fn container(scope: &Scope, revision: &Revision, image: &str, inputs: &Inputs) -> Container {
    // Sorted by name, as the other deployers' child environments are.
    let mut env = BTreeMap::from([
        (
            "GREENTIC_DEPLOYMENT".to_owned(),
            revision.deployment_id.to_string(),
        ),
        ("GREENTIC_ENV".to_owned(), scope.env.to_string()),
        (
            "GREENTIC_REVISION".to_owned(),
            revision.revision_id.to_string(),
        ),
        (HOST_ENV.to_owned(), "0.0.0.0".to_owned()),
        (PORT_ENV.to_owned(), HTTP_PORT.to_string()),
    ]);
    let mut mounts = vec![pod::tmp_mount()];
    if inputs.config_map.is_some() {
        env.insert(CONFIG_DIR_ENV.to_owned(), CONFIG_DIR.to_owned());
        mounts.push(VolumeMount {
            name: CONFIG_VOLUME.to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let mut from_secret = BTreeMap::new();
    if let Some((secret, pinned)) = &inputs.secrets {
        for p in pinned {
            match &p.delivery {
                PinnedDelivery::Env(variable) => {
                    from_secret.insert(variable.clone(), (secret.clone(), p.key.clone()));
                }
                PinnedDelivery::File(_) => {}
            }
        }
        if pinned
            .iter()
            .any(|p| matches!(p.delivery, PinnedDelivery::File(_)))
        {
            env.insert(SECRETS_DIR_ENV.to_owned(), SECRETS_DIR.to_owned());
            mounts.push(VolumeMount {
                name: SECRETS_VOLUME.to_owned(),
                mount_path: SECRETS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    }
    let mut variables: Vec<EnvVar> = env
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..EnvVar::default()
        })
        .collect();
    variables.extend(from_secret.into_iter().map(|(name, (secret, key))| EnvVar {
        name,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key,
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }));
    Container {
        name: "worker".to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: Some(variables),
        ports: Some(vec![pod::http_port()]),
        readiness_probe: Some(pod::http_probe(READINESS_PATH, HTTP_PORT_NAME)),
        resources: Some(pod::requests(CPU_REQUEST, MEMORY_REQUEST)),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}
