//! The credentials contract of `greentic.deployer.docker`: the identity is
//! whoever may use the engine's socket, so there is nothing to bootstrap;
//! the socket must be there and the engine must answer through it.

use packs::credentials::{
    Capability, CapabilityCheck, CapabilityStatus, DeployerCredentials, RequirementsReport,
};

use super::from_check;
use crate::preflight::docker as preflight;

pub const ENGINE_SOCKET: &str = "engine-socket";
pub const ENGINE_API: &str = "engine-api";

pub struct DockerCredentials;

impl DeployerCredentials for DockerCredentials {
    fn deployer(&self) -> &str {
        docker_deployer::DESCRIPTOR_PATH
    }

    fn required_capabilities(&self) -> Vec<Capability> {
        vec![
            Capability::new(
                ENGINE_SOCKET,
                "reach the Docker engine's unix socket (DOCKER_HOST or /var/run/docker.sock)",
            ),
            Capability::new(
                ENGINE_API,
                "use the engine's API through the socket, at a version the deployer works with",
            ),
        ]
    }

    fn validate(&self) -> RequirementsReport {
        let socket = docker_deployer::socket_from_env();
        let present = from_check(preflight::socket_check(&socket));
        let api = if matches!(present, CapabilityStatus::Pass { .. }) {
            from_check(preflight::api_check(&socket))
        } else {
            CapabilityStatus::Skipped {
                reason: format!(
                    "the engine's socket {socket} is not there, so its API was not asked"
                ),
            }
        };
        let mut capabilities = self.required_capabilities().into_iter();
        let checks = [present, api]
            .into_iter()
            .filter_map(|status| {
                capabilities
                    .next()
                    .map(|capability| CapabilityCheck { capability, status })
            })
            .collect();
        RequirementsReport { checks }
    }
}
