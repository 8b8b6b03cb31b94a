//! One container's life: create (labelled, port published), start,
//! health-gate, follow its logs into the revision's log folder, wait for
//! its exit, stop with the grace, remove. And the labels' other use:
//! listing and reaping a revision's containers whoever created them.
//!
//! Reaching it: the container's port is published on the instance host
//! (127.0.0.1 on a single node) with a host port the engine picks. The
//! bridge IP would also work on Linux, but only from this host and only
//! with the default bridge reachable; a published loopback port is reached
//! the same way as a local process (so router, stickiness and health probes
//! need nothing new), is not exposed beyond the host, and also works on
//! engines whose bridge is not routable from the host (Docker Desktop,
//! rootless).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use packs::deployer::{
    CONFIG_DIR_ENV, CONTAINER_CONFIG_DIR, CONTAINER_SECRETS_DIR, DeployerError, ProviderInstance,
    RevisionSpec, RunningUnit, SECRETS_DIR_ENV, UnitFuture,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{Engine, is_not_found};
use crate::health::probe;

/// The port the service listens on inside its container (given to it in
/// the runtime's `port_env`); published on the host with an engine-chosen port.
pub const CONTAINER_PORT: u16 = 8080;
/// How often the health path is polled while a container warms.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Log lines a start error carries.
pub const LAST_LOG_LINES: usize = 20;

/// Label keys on every container this deployer creates.
pub const LABEL_ENV: &str = "greentic.env";
pub const LABEL_DEPLOYMENT: &str = "greentic.deployment";
pub const LABEL_REVISION: &str = "greentic.revision";
pub const LABEL_INSTANCE: &str = "greentic.instance";
pub const LABEL_NODE: &str = "greentic.node";

/// The container's name: one per (env, revision, node, instance), so the
/// engine itself refuses a duplicate. The node is part of it because every
/// member numbers its own instances of a revision from 0: cluster members
/// sharing one engine (several members on one host) would otherwise ask
/// for the same name, and all but the first would fail to warm.
pub fn container_name(spec: &RevisionSpec, index: u32) -> String {
    format!(
        "gtc-{}-{}-{}-{index}",
        spec.env_id,
        spec.revision_id.to_string().to_lowercase(),
        spec.node_name
    )
}

/// A started, healthy container.
pub struct RunningContainer {
    docker: Docker,
    id: String,
    name: String,
    addr: SocketAddr,
    logs: JoinHandle<()>,
}

/// Why a container did not become ready (the instance-start error's source).
#[derive(Debug, thiserror::Error)]
pub enum ContainerStartError {
    #[error("container {name} exited ({status}) before becoming healthy; last log lines:\n{}", .last_log_lines.join("\n"))]
    Exited {
        name: String,
        status: String,
        last_log_lines: Vec<String>,
    },
    #[error("container {name}: no 2xx from {path} within {after:?}; last log lines:\n{}", .last_log_lines.join("\n"))]
    HealthTimeout {
        name: String,
        path: String,
        after: Duration,
        last_log_lines: Vec<String>,
    },
    #[error("container {name} has no published port for {CONTAINER_PORT}/tcp")]
    NoPort { name: String },
}

fn labels(spec: &RevisionSpec, index: u32) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_ENV.to_owned(), spec.env_id.to_string()),
        (LABEL_DEPLOYMENT.to_owned(), spec.deployment_id.to_string()),
        (LABEL_REVISION.to_owned(), spec.revision_id.to_string()),
        (LABEL_INSTANCE.to_owned(), index.to_string()),
        (LABEL_NODE.to_owned(), spec.node_name.clone()),
    ])
}

fn create_body(spec: &RevisionSpec, image_id: &str, index: u32) -> ContainerCreateBody {
    let runtime = &spec.runtime;
    let mut env: Vec<String> = runtime
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend([
        format!("GREENTIC_ENV={}", spec.env_id),
        format!("GREENTIC_DEPLOYMENT={}", spec.deployment_id),
        format!("GREENTIC_REVISION={}", spec.revision_id),
        format!("GREENTIC_INSTANCE={index}"),
        format!("{}={CONTAINER_PORT}", runtime.port_env),
        // Inside its own network namespace the service must listen on
        // every interface for the published port to reach it.
        "HOST=0.0.0.0".to_owned(),
    ]);
    // Pinned secrets: variables (visible to `docker inspect` on this host,
    // as any container variable is; prefer files for containers), and the
    // revision's secret files mounted read-only.
    env.extend(runtime.secrets.env.iter().map(|(name, value)| {
        use secrecy::ExposeSecret;
        format!("{name}={}", value.expose_secret())
    }));
    let mut binds = Vec::new();
    if let Some(dir) = &runtime.secrets.files_dir {
        env.push(format!("{SECRETS_DIR_ENV}={CONTAINER_SECRETS_DIR}"));
        binds.push(format!("{}:{CONTAINER_SECRETS_DIR}:ro", dir.display()));
    }
    // The folder, not its files: the node replaces a file by renaming a new
    // one over it, which a bind mount of the file itself would not follow.
    if let Some(dir) = &runtime.config_dir {
        env.push(format!("{CONFIG_DIR_ENV}={CONTAINER_CONFIG_DIR}"));
        binds.push(format!("{}:{CONTAINER_CONFIG_DIR}:ro", dir.display()));
    }
    let binds = (!binds.is_empty()).then_some(binds);
    let port = format!("{CONTAINER_PORT}/tcp");
    let binding = PortBinding {
        host_ip: Some(spec.host.to_string()),
        // Empty: the engine picks a free host port.
        host_port: Some(String::new()),
    };
    let grace_seconds = i64::try_from(runtime.startup_timeout.as_secs()).unwrap_or(i64::MAX);
    ContainerCreateBody {
        image: Some(image_id.to_owned()),
        entrypoint: Some(runtime.command.clone()),
        cmd: Some(Vec::new()),
        env: Some(env),
        labels: Some(labels(spec, index)),
        exposed_ports: Some(vec![port.clone()]),
        stop_signal: Some("SIGTERM".to_owned()),
        stop_timeout: Some(grace_seconds.min(60)),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(port, Some(vec![binding]))])),
            binds,
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Creates, starts and health-gates instance `index`; on any failure the
/// container is removed before the error is returned.
pub async fn start(
    engine: &Engine,
    spec: &RevisionSpec,
    image_id: &str,
    index: u32,
) -> Result<RunningContainer, DeployerError> {
    let docker = engine.client().await?.clone();
    let name = container_name(spec, index);
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..CreateContainerOptions::default()
    };
    let created = docker
        .create_container(Some(options), create_body(spec, image_id, index))
        .await
        .map_err(|e| engine.error(&format!("creating container {name}"), e))?;
    let id = created.id;
    let ready = start_and_wait(engine, &docker, spec, &id, &name, index).await;
    match ready {
        Ok(running) => Ok(running),
        Err(error) => {
            remove(&docker, &id).await;
            Err(error)
        }
    }
}

async fn start_and_wait(
    engine: &Engine,
    docker: &Docker,
    spec: &RevisionSpec,
    id: &str,
    name: &str,
    index: u32,
) -> Result<RunningContainer, DeployerError> {
    let failed = |source: ContainerStartError| DeployerError::InstanceStart {
        revision: spec.revision_id,
        index,
        source: Box::new(source),
    };
    docker
        .start_container(id, None)
        .await
        .map_err(|e| engine.error(&format!("starting container {name}"), e))?;
    let inspected = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| engine.error(&format!("inspecting container {name}"), e))?;
    // A container that exited at once has no port binding any more: say
    // it exited, with its output, rather than that its port is missing.
    let state = inspected.state.clone().unwrap_or_default();
    if state.running == Some(false) {
        return Err(failed(ContainerStartError::Exited {
            name: name.to_owned(),
            status: format!("exit code {}", state.exit_code.unwrap_or_default()),
            last_log_lines: last_lines(docker, id).await,
        }));
    }
    let host_port = inspected
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|ports| ports.get(&format!("{CONTAINER_PORT}/tcp")).cloned())
        .flatten()
        .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
        .and_then(|port| port.parse::<u16>().ok())
        .ok_or_else(|| {
            failed(ContainerStartError::NoPort {
                name: name.to_owned(),
            })
        })?;
    let addr = SocketAddr::from((spec.host, host_port));
    let logs = follow_logs(docker.clone(), id.to_owned(), &spec.log_dir, index);
    let running = RunningContainer {
        docker: docker.clone(),
        id: id.to_owned(),
        name: name.to_owned(),
        addr,
        logs,
    };
    let runtime = &spec.runtime;
    let deadline = Instant::now() + runtime.startup_timeout;
    let mut exit = std::pin::pin!(wait_exit(docker.clone(), id.to_owned()));
    loop {
        let now = Instant::now();
        if now >= deadline {
            running.logs.abort();
            return Err(failed(ContainerStartError::HealthTimeout {
                name: name.to_owned(),
                path: runtime.health_path.clone(),
                after: runtime.startup_timeout,
                last_log_lines: last_lines(docker, id).await,
            }));
        }
        let attempt = async {
            let healthy = probe(
                addr,
                &runtime.health_path,
                runtime.health_timeout.min(deadline - now),
            )
            .await;
            if !healthy {
                tokio::time::sleep_until((now + HEALTH_POLL_INTERVAL).min(deadline)).await;
            }
            healthy
        };
        tokio::select! {
            status = exit.as_mut() => {
                running.logs.abort();
                return Err(failed(ContainerStartError::Exited {
                    name: name.to_owned(),
                    status,
                    last_log_lines: last_lines(docker, id).await,
                }));
            }
            healthy = attempt => if healthy {
                tracing::debug!(container = name, %addr, "container healthy");
                return Ok(running);
            }
        }
    }
}

/// Resolves when the container is no longer running, describing how it ended.
async fn wait_exit(docker: Docker, id: String) -> String {
    let mut stream = docker.wait_container(&id, None);
    match stream.next().await {
        Some(Ok(answer)) => format!("exit code {}", answer.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, error })) => {
            format!("exit code {code} {error}")
        }
        Some(Err(error)) => format!("cannot wait for it: {error}"),
        None => "the engine closed the wait".to_owned(),
    }
}

/// The last lines of the container's output, for an error report.
async fn last_lines(docker: &Docker, id: &str) -> Vec<String> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: LAST_LOG_LINES.to_string(),
        ..LogsOptions::default()
    };
    let mut lines = Vec::new();
    let mut stream = docker.logs(id, Some(options));
    while let Some(Ok(output)) = stream.next().await {
        let (tag, message) = match output {
            LogOutput::StdErr { message } => ("stderr", message),
            other => ("stdout", other.into_bytes()),
        };
        for line in String::from_utf8_lossy(&message).lines() {
            lines.push(format!("[{tag}] {line}"));
        }
    }
    let skip = lines.len().saturating_sub(LAST_LOG_LINES);
    lines.split_off(skip)
}

/// Copies the container's output into `<log_dir>/instance-<index>.{stdout,stderr}.log`
/// (appending), where `gtc` reads instance logs whatever the deployer.
fn follow_logs(docker: Docker, id: String, log_dir: &Path, index: u32) -> JoinHandle<()> {
    let stdout_path = log_dir.join(format!("instance-{index}.stdout.log"));
    let stderr_path = log_dir.join(format!("instance-{index}.stderr.log"));
    let log_dir = log_dir.to_owned();
    tokio::spawn(async move {
        let open = |path: &Path| OpenOptions::new().create(true).append(true).open(path);
        let files = std::fs::create_dir_all(&log_dir)
            .and_then(|()| Ok((open(&stdout_path)?, open(&stderr_path)?)));
        let (mut stdout, mut stderr) = match files {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(dir = %log_dir.display(), %error, "container logs not copied");
                return;
            }
        };
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..LogsOptions::default()
        };
        let mut stream = docker.logs(&id, Some(options));
        while let Some(Ok(output)) = stream.next().await {
            let written = match output {
                LogOutput::StdErr { message } => stderr.write_all(&message),
                other => stdout.write_all(&other.into_bytes()),
            };
            if let Err(error) = written {
                tracing::warn!(%error, "container log write failed");
                return;
            }
        }
    })
}

/// Force-removes a container (stopping it at once); a container already
/// gone is fine.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..RemoveContainerOptions::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(error) if is_not_found(&error) => {}
        // 409 "removal already in progress" ends the same way.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(error) => tracing::warn!(container = id, %error, "cannot remove container"),
    }
}

impl RunningContainer {
    /// The engine's id of the container.
    pub fn container_id(&self) -> &str {
        &self.id
    }
}

impl RunningUnit for RunningContainer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn wait_exit(&mut self) -> UnitFuture<'_, String> {
        Box::pin(wait_exit(self.docker.clone(), self.id.clone()))
    }

    fn stop(self: Box<Self>, grace: Duration) -> UnitFuture<'static, ()> {
        Box::pin(async move {
            // The engine counts whole seconds; round up so the grace is never cut.
            let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
            let options = StopContainerOptions {
                t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)),
                ..StopContainerOptions::default()
            };
            match self.docker.stop_container(&self.id, Some(options)).await {
                Ok(()) => {}
                Err(error) if is_not_found(&error) => {}
                Err(error) => {
                    tracing::debug!(container = %self.name, %error, "stop failed; removing by force")
                }
            }
            remove(&self.docker, &self.id).await;
            // The follower ends with the container's output; give it a
            // moment to copy the last lines, then stop it for good.
            let mut logs = self.logs;
            if tokio::time::timeout(Duration::from_secs(1), &mut logs)
                .await
                .is_err()
            {
                logs.abort();
            }
        })
    }
}

fn filters(spec: &RevisionSpec) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_ENV}={}", spec.env_id),
            format!("{LABEL_REVISION}={}", spec.revision_id),
            format!("{LABEL_NODE}={}", spec.node_name),
        ],
    )])
}

/// The revision's containers on this engine created for this node,
/// running or not.
pub async fn list(
    engine: &Engine,
    spec: &RevisionSpec,
) -> Result<Vec<ProviderInstance>, DeployerError> {
    let docker = engine.client().await?;
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters(spec)),
        ..ListContainersOptions::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine.error("listing containers", e))?;
    Ok(containers
        .into_iter()
        .map(|c| ProviderInstance {
            index: c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_INSTANCE))
                .and_then(|i| i.parse().ok()),
            id: c.id.unwrap_or_default(),
        })
        .collect())
}

/// Sends `signal` to the main process of every container of the revision
/// this node created; returns how many took it (one that is not running
/// is skipped: the engine refuses to signal it).
pub async fn signal(
    engine: &Engine,
    spec: &RevisionSpec,
    signal: &str,
) -> Result<usize, DeployerError> {
    let found = list(engine, spec).await?;
    let docker = engine.client().await?;
    let mut told = 0;
    for container in &found {
        let options = KillContainerOptions {
            signal: signal.to_owned(),
        };
        match docker.kill_container(&container.id, Some(options)).await {
            Ok(()) => told += 1,
            Err(error) => {
                tracing::debug!(container = %container.id, %error, "not signalled")
            }
        }
    }
    Ok(told)
}

/// Removes every container of the revision this node created (a killed
/// node's leftovers); returns how many.
pub async fn reap(engine: &Engine, spec: &RevisionSpec) -> Result<usize, DeployerError> {
    let found = list(engine, spec).await?;
    let docker = engine.client().await?;
    for container in &found {
        remove(docker, &container.id).await;
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy::ids::{DeploymentId, EnvId, RevisionId};
    use packs::deployer::{RuntimeSpec, SecretMaterial};

    fn spec(node_name: &str) -> RevisionSpec {
        RevisionSpec {
            env_id: EnvId::local(),
            deployment_id: DeploymentId::from_ulid(ulid::Ulid::nil()),
            revision_id: RevisionId::from_ulid(ulid::Ulid::nil()),
            bundle_root: "/bundle".into(),
            log_dir: "/logs".into(),
            instances: 2,
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            node_name: node_name.to_owned(),
            runtime: RuntimeSpec {
                command: vec!["/demo-service".to_owned()],
                env: Default::default(),
                port_env: "PORT".to_owned(),
                health_path: "/healthz".to_owned(),
                startup_timeout: Duration::from_secs(20),
                health_timeout: Duration::from_secs(1),
                image: None,
                secrets: SecretMaterial::default(),
                config_dir: None,
            },
        }
    }

    /// The engine's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    fn engine_accepts(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.len() > 1
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    #[test]
    fn members_sharing_an_engine_name_their_containers_apart() {
        // Proves: instance 0 of one revision on two members (which both
        // number their instances from 0) gets two names, so members on one
        // engine do not refuse each other's containers; the same instance on
        // the same member keeps one name (the engine refuses a duplicate);
        // every name, with a cluster or a single node's name, is one the
        // engine accepts.
        let (n1, n2) = (spec("n1"), spec("n2"));
        assert_ne!(container_name(&n1, 0), container_name(&n2, 0));
        assert_eq!(container_name(&n1, 0), container_name(&spec("n1"), 0));
        assert_ne!(container_name(&n1, 0), container_name(&n1, 1));
        assert_eq!(
            container_name(&n1, 1),
            "gtc-local-00000000000000000000000000-n1-1"
        );
        for node in ["n1", "node-01jabcdefghjkmnpqrstvwxyz0", "Host_1.lan"] {
            let name = container_name(&spec(node), 63);
            assert!(engine_accepts(&name), "{name}");
        }
    }
}
