//! `greentic.deployer.local-process` on the [`Deployer`] contract: the
//! driver that starts one instance as a local process, under the shared
//! lifecycle of [`SupervisedDeployer`].
//!
//! [`Deployer`]: packs::deployer::Deployer

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use packs::deployer::{
    DeployFuture, DeployerError, InstanceDriver, ProviderInstance, RevisionSpec, RunningUnit,
    SupervisedDeployer,
};

use crate::instance::{RunningInstance, start};
use crate::spec::InstanceSpec;

/// The pack's descriptor path.
pub const DESCRIPTOR_PATH: &str = "greentic.deployer.local-process";

/// The local-process deployer.
pub type LocalProcessDeployer = SupervisedDeployer<LocalProcessDriver>;

/// A new local-process deployer (one per node).
pub fn local_process_deployer() -> LocalProcessDeployer {
    SupervisedDeployer::new(LocalProcessDriver)
}

/// Starts instances as local processes in their own process groups.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalProcessDriver;

/// The [`InstanceSpec`] of instance `index` of `spec`: the bundle's
/// runtime plus the identification labels every instance carries.
pub fn instance_spec(spec: &RevisionSpec, index: u32) -> InstanceSpec {
    let runtime = &spec.runtime;
    InstanceSpec {
        bundle_root: spec.bundle_root.clone(),
        command: runtime.command.clone(),
        env: runtime.env.clone(),
        port_env: runtime.port_env.clone(),
        host: spec.host,
        health_path: runtime.health_path.clone(),
        startup_timeout: runtime.startup_timeout,
        health_timeout: runtime.health_timeout,
        log_dir: spec.log_dir.clone(),
        index,
        labels: BTreeMap::from([
            ("GREENTIC_ENV".to_owned(), spec.env_id.to_string()),
            (
                "GREENTIC_DEPLOYMENT".to_owned(),
                spec.deployment_id.to_string(),
            ),
            ("GREENTIC_REVISION".to_owned(), spec.revision_id.to_string()),
            ("GREENTIC_INSTANCE".to_owned(), index.to_string()),
        ]),
        secrets: runtime.secrets.clone(),
        config_dir: runtime.config_dir.clone(),
    }
}

impl RunningUnit for RunningInstance {
    fn addr(&self) -> SocketAddr {
        RunningInstance::addr(self)
    }

    fn wait_exit(&mut self) -> packs::deployer::UnitFuture<'_, String> {
        Box::pin(async move { RunningInstance::wait_exit(self).await.to_string() })
    }

    fn stop(self: Box<Self>, grace: Duration) -> packs::deployer::UnitFuture<'static, ()> {
        Box::pin(async move {
            let outcome = RunningInstance::stop(*self, grace).await;
            tracing::debug!(?outcome, "instance stopped");
        })
    }
}

impl InstanceDriver for LocalProcessDriver {
    fn descriptor_path(&self) -> &'static str {
        DESCRIPTOR_PATH
    }

    fn stage<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, String> {
        Box::pin(async move {
            let program = crate::command::resolve(&spec.bundle_root, &spec.runtime.command)
                .map_err(|source| DeployerError::Artifact {
                    revision: spec.revision_id,
                    source: Box::new(source),
                })?;
            Ok(program.display().to_string())
        })
    }

    fn start<'a>(
        &'a self,
        spec: &'a RevisionSpec,
        _artifact: &'a str,
        index: u32,
    ) -> DeployFuture<'a, Box<dyn RunningUnit>> {
        Box::pin(async move {
            match start(&instance_spec(spec, index)).await {
                Ok(running) => Ok(Box::new(running) as Box<dyn RunningUnit>),
                Err(source) => Err(DeployerError::InstanceStart {
                    revision: spec.revision_id,
                    index,
                    source: Box::new(source),
                }),
            }
        })
    }

    fn reap<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize> {
        Box::pin(async move { Ok(crate::pidfile::reap_orphans(&spec.log_dir)) })
    }

    fn reload<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize> {
        Box::pin(async move {
            Ok(crate::pidfile::signal_live(
                &spec.log_dir,
                nix::sys::signal::Signal::SIGHUP,
            ))
        })
    }

    fn list<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, Vec<ProviderInstance>> {
        Box::pin(async move {
            Ok(crate::pidfile::live_instances(&spec.log_dir)
                .into_iter()
                .map(|(index, pid)| ProviderInstance {
                    id: pid.to_string(),
                    index,
                })
                .collect())
        })
    }
}
