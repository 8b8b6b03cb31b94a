//! The connection to the Docker engine and what its errors mean to an operator.

use bollard::Docker;
use packs::deployer::DeployerError;
use tokio::sync::OnceCell;

/// Where the engine listens on Linux.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The engine's socket for this process: `DOCKER_HOST` when it names a
/// unix socket (`unix://…`), else [`DEFAULT_SOCKET`]. The node's deployer,
/// its preflight and its deployers probe all ask here, so they agree.
pub fn socket_from_env() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned())
}
/// Seconds one engine request may take (bollard's own timeout); stop
/// requests add the grace on top.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 120;
/// The oldest engine API this deployer works with, as (major, minor): API
/// 1.41 (Docker 20.10), the engine its tests run against. bollard speaks a
/// newer API by default and negotiates down to the engine's; every call the
/// deployer makes exists in 1.41.
pub const API_VERSION_MIN: (u32, u32) = (1, 41);
/// What to do when the engine cannot be reached.
pub(crate) const ENGINE_FIX: &str = "start the Docker engine (systemctl start docker; install it with \
    apt-get install docker.io) and check this user may use its socket (group docker)";

/// A lazily connected engine client; the API version is negotiated with
/// the engine on first use, so older engines (API 1.41) work.
pub struct Engine {
    socket: String,
    client: OnceCell<Docker>,
}

impl Engine {
    /// An engine at `socket`; nothing is connected yet.
    pub fn new(socket: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
            client: OnceCell::new(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The client, connecting and negotiating the API version the first time.
    pub async fn client(&self) -> Result<&Docker, DeployerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_unix(
                    &self.socket,
                    REQUEST_TIMEOUT_SECONDS,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| self.unreachable(&e))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| self.unreachable(&e))
            })
            .await
    }

    /// The API version the engine reports (`GET /version`), as (major,
    /// minor); connects first if needed.
    pub async fn api_version(&self) -> Result<(u32, u32), DeployerError> {
        let client = self.client().await?;
        let version = client
            .version()
            .await
            .map_err(|e| self.error("version", e))?;
        let reported = version.api_version.unwrap_or_default();
        parse_api_version(&reported).ok_or_else(|| DeployerError::Provider {
            provider: "the Docker engine",
            operation: "version".to_owned(),
            reason: format!("the engine reports API version {reported:?}, not major.minor"),
        })
    }

    /// The engine could not be reached at all.
    pub fn unreachable(&self, error: &bollard::errors::Error) -> DeployerError {
        DeployerError::ProviderUnreachable {
            provider: "the Docker engine",
            endpoint: self.socket.clone(),
            reason: error.to_string(),
            fix: ENGINE_FIX,
        }
    }

    /// An error of `operation`: the engine's own answer, or unreachable.
    pub fn error(&self, operation: &str, error: bollard::errors::Error) -> DeployerError {
        match error {
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                DeployerError::Provider {
                    provider: "the Docker engine",
                    operation: operation.to_owned(),
                    reason: message,
                }
            }
            other => self.unreachable(&other),
        }
    }
}

/// `"1.41"` as (1, 41).
pub fn parse_api_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// True when the engine answered 404 (no such image or container).
pub fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_parse_as_major_and_minor() {
        // Proves the engine's "1.41" form parses and compares numerically
        // (1.9 is older than 1.41), and other forms are refused.
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert!(parse_api_version("1.9") < Some(API_VERSION_MIN));
        assert!(parse_api_version("1.47") >= Some(API_VERSION_MIN));
        for bad in ["", "1", "1.x", "v1.41"] {
            assert_eq!(parse_api_version(bad), None, "{bad}");
        }
    }
}
