//! What every pod here shares: the non-root security context, probes,
//! requests and the writable scratch folder.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSecurityContext, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{HTTP_PORT, HTTP_PORT_NAME};

/// The user and group every container runs as: the `USER` of the `gtc`
/// image (`container/Dockerfile`) and distroless' `nonroot`, so
/// `runAsNonRoot` holds even for an image whose own `USER` is root.
pub const RUN_AS_ID: i64 = 65_532;
/// How often readiness is probed, in seconds.
pub const PROBE_PERIOD_SECONDS: i32 = 5;
/// How long one probe may take, in seconds.
pub const PROBE_TIMEOUT_SECONDS: i32 = 2;
/// Failed probes in a row before a pod leaves its Service.
pub const PROBE_FAILURE_THRESHOLD: i32 = 3;
/// The volume mounted at `/tmp`, since the root file system is read-only.
pub const TMP_VOLUME: &str = "tmp";
/// Largest `/tmp` a pod may fill: a bound, so a runaway writer is evicted
/// instead of filling the node's disk.
pub const TMP_SIZE_LIMIT: &str = "64Mi";

/// The container's context: no root, no privilege escalation, no
/// capabilities, read-only root file system, the runtime's seccomp profile.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// The pod's context: non-root, the files' group, the runtime's seccomp profile.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        fs_group: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// `GET path` on the named port.
pub fn http_probe(path: &str, port_name: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port_name.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(PROBE_PERIOD_SECONDS),
        timeout_seconds: Some(PROBE_TIMEOUT_SECONDS),
        failure_threshold: Some(PROBE_FAILURE_THRESHOLD),
        ..Probe::default()
    }
}

/// Requests of `cpu` and `memory` (Kubernetes quantities). No limits: a CPU
/// limit throttles a proxy's tail latency, and memory limits depend on the
/// bundle, which the environment does not describe.
pub fn requests(cpu: &str, memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// The HTTP port, named so Services and probes follow it.
pub fn http_port() -> ContainerPort {
    ContainerPort {
        container_port: HTTP_PORT,
        name: Some(HTTP_PORT_NAME.to_owned()),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// The size-bounded scratch volume behind `/tmp`.
pub fn tmp_volume() -> Volume {
    Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(TMP_SIZE_LIMIT.to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// `/tmp` on [`tmp_volume`].
pub fn tmp_mount() -> VolumeMount {
    VolumeMount {
        name: TMP_VOLUME.to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }
}
