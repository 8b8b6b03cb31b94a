//! The router: `gtc node run` behind a Service, at least two replicas.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, PodSpec,
    PodTemplateSpec, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{ROUTER_NAME, router_selector};
use crate::objects::config::{ENV_STORE_NAME, RUNTIME_CONFIG_NAME};
use crate::objects::{HTTP_PORT, Scope, match_labels, pod};

/// The router's admin listener: `/healthz` and `/readyz` (node/src/admin),
/// the port the image's own health check uses. Not exposed by a Service.
pub const ADMIN_PORT: i32 = 8081;
/// The name of [`ADMIN_PORT`] on the container.
pub const ADMIN_PORT_NAME: &str = "admin";
/// The router's readiness path: 200 while the node can serve current state.
pub const READINESS_PATH: &str = "/readyz";
/// The router's liveness path: 200 while the process answers.
pub const LIVENESS_PATH: &str = "/healthz";
/// CPU the router requests: one proxy's steady share.
pub const CPU_REQUEST: &str = "100m";
/// Memory the router requests.
pub const MEMORY_REQUEST: &str = "128Mi";
/// `GREENTIC_HOME` of the router: the `gtc` image's (`container/Dockerfile`),
/// on a pod-local volume since the root file system is read-only.
pub const DATA_PATH: &str = "/data";
/// Where the environment document ConfigMap is mounted (read-only).
pub const ENV_STORE_MOUNT: &str = "/etc/gtc/environment";
/// Where the runtime-config ConfigMap is mounted (read-only).
pub const RUNTIME_CONFIG_MOUNT: &str = "/etc/gtc/runtime-config";

/// The router's Deployment: `replicas` pods spread across nodes, replaced
/// one at a time without ever dropping below `replicas` ready.
pub fn deployment(scope: &Scope, image: &str, replicas: i32) -> Deployment {
    let selector = router_selector();
    Deployment {
        metadata: scope.meta(ROUTER_NAME, selector.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: match_labels(selector.clone()),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(scope, selector.clone())),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(scope, image, selector)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn pod_labels(scope: &Scope, selector: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = crate::names::environment_labels(&scope.env);
    labels.extend(selector);
    labels
}

fn pod_spec(scope: &Scope, image: &str, selector: BTreeMap<String, String>) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        containers: vec![container(scope, image)],
        security_context: Some(pod::pod_security_context()),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            label_selector: Some(match_labels(selector)),
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            ..TopologySpreadConstraint::default()
        }]),
        volumes: Some(vec![
            pod::tmp_volume(),
            Volume {
                name: "data".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            config_map_volume("environment", ENV_STORE_NAME),
            config_map_volume("runtime-config", RUNTIME_CONFIG_NAME),
        ]),
        ..PodSpec::default()
    }
}

fn container(scope: &Scope, image: &str) -> Container {
    let listen = format!("0.0.0.0:{HTTP_PORT}");
    let admin = format!("0.0.0.0:{ADMIN_PORT}");
    Container {
        name: "router".to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(
            [
                "node",
                "run",
                "--env",
                scope.env.as_str(),
                "--listen",
                &listen,
                "--admin",
                &admin,
                "--log-format",
                "json",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env: Some(vec![EnvVar {
            name: "GREENTIC_HOME".to_owned(),
            value: Some(DATA_PATH.to_owned()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            pod::http_port(),
            ContainerPort {
                container_port: ADMIN_PORT,
                name: Some(ADMIN_PORT_NAME.to_owned()),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(pod::http_probe(READINESS_PATH, ADMIN_PORT_NAME)),
        liveness_probe: Some(pod::http_probe(LIVENESS_PATH, ADMIN_PORT_NAME)),
        resources: Some(pod::requests(CPU_REQUEST, MEMORY_REQUEST)),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(vec![
            pod::tmp_mount(),
            mount("data", DATA_PATH, false),
            mount("environment", ENV_STORE_MOUNT, true),
            mount("runtime-config", RUNTIME_CONFIG_MOUNT, true),
        ]),
        ..Container::default()
    }
}

fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}
