//! The admin API of a node: health, status and metrics; the remote-store
//! contract under `/v1/environments` (spec section 6) for any HTTP client;
//! and `POST /admin/v1/commands`, through which `gtc op` sends whole command
//! envelopes with the node file's token.
//!
//! ```text
//! request ─► [TLS when configured] ─► respond
//!   /healthz /readyz /status /metrics        public
//!   /ui/…                                    the web console (console.rs)
//!   /admin/v1/commands                       node token only (envelope as sent)
//!   /v1/environments…  auth::authenticate    401 without a known token
//!                      route::parse          404 / 405 / 400
//!                      Caller::authorize     403, audited with the caller
//!                      handlers              reads, or a command whose envelope
//!                                            carries the caller, the decision,
//!                                            If-Match and Idempotency-Key
//!                      store.submit          apply checks them under the lock
//! ```

mod auth;
mod cluster;
mod commands;
pub mod console;
mod handlers;
mod reply;
pub(crate) mod route;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deploy::audit::AuditEvent;
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use router::proxy::Router;
use store::LocalFsStore;
use tokio::net::TcpListener;

use crate::context::Context;
pub use auth::{TOKENS_FILE, load_tokens, token_hash};
use reply::{ApiError, Reply};

/// Connections the admin API serves at once. It is an operator's API, not
/// a traffic path: a few dozen clients is plenty, and the bound keeps a
/// misbehaving script from exhausting the node's file descriptors.
const ADMIN_CONNECTIONS_MAX: usize = 64;

/// Time a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body the admin API reads.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

/// What the admin listener needs.
pub struct AdminState {
    pub router: Arc<Router>,
    /// The environment this node runs (for `/status`).
    pub env_id: EnvId,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The store every command goes through: the local store, or the
    /// replicated one on a cluster member.
    pub store: Arc<dyn store::EnvironmentStore + Send + Sync>,
    /// This node's own store folder (the replica on a cluster member), for
    /// what only a local store does: backup artifacts.
    pub local_store: Arc<LocalFsStore>,
    /// The cluster member, when the node runs as one.
    pub cluster: Option<Arc<consensus::ClusterHandle>>,
    /// Bearer token of the node file: the operator who started the node.
    pub node_token: String,
    /// The API tokens with their roles, read on every request.
    pub tokens_file: PathBuf,
    /// The owner's identity and policy, the env-pack registry and the
    /// edge checks shared with `gtc op`.
    pub context: Context,
    /// The web console's own state (node name, gossip, request samples).
    pub console: console::ConsoleState,
}

/// Serves the admin API on `listener` until `shutdown` changes, over TLS
/// when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<AdminState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::warn!(%peer, limit = ADMIN_CONNECTIONS_MAX, "admin connection refused: too many open");
                    continue;
                };
                let admin = Arc::clone(&admin);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), admin).await,
                                Ok(Err(error)) => tracing::debug!(%peer, %error, "admin tls handshake failed"),
                                Err(_) => tracing::debug!(%peer, "admin tls handshake timed out"),
                            }
                        }
                        None => serve_connection(TokioIo::new(stream), admin).await,
                    }
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_connection<I>(io: I, admin: Arc<AdminState>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let admin = Arc::clone(&admin);
        async move { Ok::<_, std::convert::Infallible>(respond(request, admin).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

async fn respond(request: Request<hyper::body::Incoming>, admin: Arc<AdminState>) -> Reply {
    let path = request.uri().path().to_owned();
    match (request.method().as_str(), path.as_str()) {
        ("GET", "/metrics") => {
            // Process figures (CPU, memory, open fds, start time) are read
            // when scraped, so they are as fresh as the scrape.
            metrics_process::Collector::default().collect();
            reply::text_reply(StatusCode::OK, admin.metrics.render())
        }
        ("GET", "/healthz") => reply::text_reply(StatusCode::OK, "ok\n".to_owned()),
        ("GET", "/readyz") => readiness(&admin),
        ("GET", "/status") => reply::json_reply(StatusCode::OK, &status(&admin), None),
        ("POST", "/admin/v1/commands") => commands::submit_envelope(request, &admin).await,
        ("GET", "/admin/v1/cluster/status")
        | ("POST", "/admin/v1/cluster/leave")
        | ("POST", "/admin/v1/cluster/read-index")
        | ("POST", "/admin/v1/cluster/join") => cluster::respond(request, &admin).await,
        _ if path.starts_with(route::ENVIRONMENTS) => handlers::handle(request, &admin).await,
        _ if path == console::PREFIX || path.starts_with("/ui/") => {
            console::respond(request, &admin).await
        }
        _ => ApiError::new(
            ErrorKind::NotFound,
            format!(
                "no admin route {path}; the API lives under {}",
                route::ENVIRONMENTS
            ),
        )
        .into_reply(),
    }
}

/// `/readyz`: 200 while this node can serve current state; on a cluster
/// member, 503 once it has heard from no Raft leader for longer than the
/// documented bound (`consensus::RaftSettings::leader_contact_stale_after`),
/// so a load balancer in front takes it out while its router still serves
/// the last split it applied. `/healthz` stays 200: the process is fine.
fn readiness(admin: &AdminState) -> Reply {
    match admin
        .cluster
        .as_deref()
        .map(consensus::ClusterHandle::readiness)
    {
        None | Some(Ok(())) => reply::text_reply(StatusCode::OK, "ok\n".to_owned()),
        Some(Err(reason)) => reply::text_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// `/status`: the environment, the generation the router serves and, on a
/// cluster member, its Raft view (term, leader, indexes, leader contact).
fn status(admin: &AdminState) -> serde_json::Value {
    let mut status = serde_json::json!({
        "environment_id": admin.env_id,
        "generation": admin.router.generation(),
        "pid": std::process::id(),
    });
    if let Some(cluster) = &admin.cluster {
        let view = cluster.status();
        status["cluster"] = serde_json::json!({
            "node_name": view.node_name,
            "state": view.state,
            "term": view.term,
            "leader": view.leader.map(|id| id.to_string()),
            "committed_index": view.committed_index,
            "applied_index": view.applied_index,
            "leader_contact_age_ms": view.leader_contact_age_ms,
            "ready": cluster.readiness().is_ok(),
        });
    }
    status
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        ApiError::new(
            ErrorKind::Internal,
            format!("the store task failed: {error}"),
        )
    })
}

/// Appends an audit event for a request that never reached `apply`. Fails
/// closed: an event that cannot be written is an error for the caller.
async fn record(admin: &Arc<AdminState>, event: AuditEvent) -> Result<(), ApiError> {
    let store = Arc::clone(&admin.store);
    blocking(move || store.record(event))
        .await?
        .map_err(|error| {
            ApiError::new(
                ErrorKind::Audit,
                format!("the audit event could not be written, so nothing was done: {error}"),
            )
        })
}
