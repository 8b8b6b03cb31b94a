//! `greentic.deployer.docker@0.1.0`: runs each revision's instances as
//! containers on the local Docker engine, through the engine's API
//! (`bollard`, never the `docker` CLI), under the same lifecycle as local
//! processes (`packs::deployer::SupervisedDeployer`: health-gated warm,
//! restart with backoff, graceful drain, archive).
//!
//! Owns: talking to the engine ([`engine`]), resolving and pinning a
//! revision's image at stage time ([`image`]; an image archive shipped in
//! the bundle is checked against its digest and loaded first, [`archive`]),
//! and one container's life ([`container`]): created with the labels `greentic.env`,
//! `greentic.deployment`, `greentic.revision`, `greentic.instance` and
//! `greentic.node`, its port published on the instance host (127.0.0.1 on a
//! single node) with a port the engine picks, its logs copied into the
//! revision's log folder, stopped with the grace, removed.
//!
//! Must not touch: the store, the router, the lifecycle. The router reaches
//! a container at its published address like any instance.

pub mod archive;
pub mod container;
pub mod engine;
mod health;
pub mod image;

use packs::deployer::{
    DeployFuture, InstanceDriver, ProviderInstance, RevisionSpec, RunningUnit, SupervisedDeployer,
};

pub use engine::{DEFAULT_SOCKET, Engine, socket_from_env};

/// The pack's descriptor path.
pub const DESCRIPTOR_PATH: &str = "greentic.deployer.docker";
/// The pack's version.
pub const VERSION: &str = "0.1.0";

/// The Docker deployer.
pub type DockerDeployer = SupervisedDeployer<DockerDriver>;

/// A Docker deployer talking to the engine at `socket` (connected lazily,
/// at the first call, so a node starts even when the engine is down).
pub fn docker_deployer(socket: impl Into<String>) -> DockerDeployer {
    SupervisedDeployer::new(DockerDriver {
        engine: Engine::new(socket),
    })
}

/// Starts, stops, lists and reaps containers.
pub struct DockerDriver {
    engine: Engine,
}

impl DockerDriver {
    /// The engine it talks to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl InstanceDriver for DockerDriver {
    fn descriptor_path(&self) -> &'static str {
        DESCRIPTOR_PATH
    }

    fn stage<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, String> {
        Box::pin(image::pin(&self.engine, spec))
    }

    fn start<'a>(
        &'a self,
        spec: &'a RevisionSpec,
        artifact: &'a str,
        index: u32,
    ) -> DeployFuture<'a, Box<dyn RunningUnit>> {
        Box::pin(async move {
            let running = container::start(&self.engine, spec, artifact, index).await?;
            Ok(Box::new(running) as Box<dyn RunningUnit>)
        })
    }

    fn reap<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize> {
        Box::pin(container::reap(&self.engine, spec))
    }

    fn reload<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize> {
        Box::pin(container::signal(&self.engine, spec, "SIGHUP"))
    }

    fn list<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, Vec<ProviderInstance>> {
        Box::pin(container::list(&self.engine, spec))
    }
}
