//! Preflight of `greentic.deployer.docker`: the engine's socket is there,
//! and the engine answers through the deployer's own client
//! (`docker_deployer::Engine`, bollard over the unix socket; never the
//! `docker` CLI) with an API version the deployer works with.

use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use docker_deployer::engine::{API_VERSION_MIN, Engine};

use super::Check;

/// How long the engine may take to answer `GET /version`; a local engine
/// answers in milliseconds, so past this it is stuck.
const ENGINE_WAIT_MAX: Duration = Duration::from_secs(10);
/// What to do when the engine is missing.
const INSTALL_FIX: &str = "install the engine: apt-get install docker.io, then start it (systemctl start docker); or point DOCKER_HOST at its socket (DOCKER_HOST=unix:///path/to/docker.sock)";
/// What to do when the engine is there but does not answer.
const START_FIX: &str = "start the engine (systemctl start docker) and let this user use its socket (usermod -aG docker USER, then log in again)";

pub fn checks() -> Vec<Check> {
    // The socket the node itself would use (`gtc node run`).
    let socket = docker_deployer::socket_from_env();
    let present = socket_check(&socket);
    let api = if present.status == super::Status::Pass {
        api_check(&socket)
    } else {
        Check::skipped(
            "docker-api-version",
            format!("the engine's socket {socket} is not there, so its API was not asked"),
        )
    };
    vec![present, api]
}

pub(crate) fn socket_check(socket: &str) -> Check {
    const NAME: &str = "docker-socket";
    let source = match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() && !host.starts_with("unix://") => {
            format!(" (DOCKER_HOST={host} is not a unix:// socket, so gtc uses the default socket)")
        }
        Ok(host) if !host.is_empty() => " (from DOCKER_HOST)".to_owned(),
        _ => String::new(),
    };
    match std::fs::metadata(socket) {
        Ok(metadata) if metadata.file_type().is_socket() => Check::pass(
            NAME,
            format!("the engine's socket {socket} is there{source}"),
        ),
        Ok(_) => Check::fail(
            NAME,
            format!("{socket} exists but is not a socket{source}"),
            INSTALL_FIX,
        ),
        Err(error) => Check::fail(
            NAME,
            format!("the engine's socket {socket} cannot be found: {error}{source}"),
            INSTALL_FIX,
        ),
    }
}

pub(crate) fn api_check(socket: &str) -> Check {
    const NAME: &str = "docker-api-version";
    let (major_min, minor_min) = API_VERSION_MIN;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return Check::fail(
                NAME,
                format!("cannot start the async runtime to ask the engine: {error}"),
                START_FIX,
            );
        }
    };
    let engine = Engine::new(socket);
    let answer = runtime
        .block_on(async { tokio::time::timeout(ENGINE_WAIT_MAX, engine.api_version()).await });
    match answer {
        Ok(Ok(version)) if version >= API_VERSION_MIN => Check::pass(
            NAME,
            format!(
                "the engine at {socket} answers with API {}.{} (gtc needs {major_min}.{minor_min} or later)",
                version.0, version.1
            ),
        ),
        Ok(Ok(version)) => Check::fail(
            NAME,
            format!(
                "the engine at {socket} speaks API {}.{}, older than the {major_min}.{minor_min} gtc needs",
                version.0, version.1
            ),
            "upgrade the engine to Docker 20.10 or later (apt-get install --only-upgrade docker.io), then restart it",
        ),
        Ok(Err(error)) => Check::fail(
            NAME,
            format!("the engine at {socket} did not answer: {error}"),
            START_FIX,
        ),
        Err(_) => Check::fail(
            NAME,
            format!("the engine at {socket} did not answer within {ENGINE_WAIT_MAX:?}"),
            START_FIX,
        ),
    }
}
