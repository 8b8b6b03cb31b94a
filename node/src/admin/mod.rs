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
mod secrets;
mod signing;
mod strict;
pub mod tls;
mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deploy::audit::AuditEvent;
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use router::connections::{Admitted, ConnectionLimits, Connections, Ended, Trip};
use router::proxy::Router;
use store::LocalFsStore;
use tokio::net::TcpListener;

use crate::checks::Checks;
pub use auth::{TOKENS_FILE, load_tokens, token_hash};
use reply::{ApiError, Reply};

/// Default connections the admin API holds at once. An operator's API needs
/// a few dozen, but the limit is sized to hold a slowloris flood of a
/// thousand connections from one address cheaply until the head deadline
/// cuts them: evicting them instead would have them reconnect at once, and
/// that churn (thousands of accepts a second) is what starves normal
/// clients. The bound still keeps a flood from exhausting file descriptors,
/// and the oldest idle connection is closed first when it is reached.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// Default admin connections from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// Default admin connections kept for `/healthz` and `/readyz`.
pub const DEFAULT_HEALTH_RESERVE: usize = 16;
/// Default time to receive a request body the admin API reads.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
    /// warm checks: the edge checks shared with `gtc op`.
    pub checks: Checks,
    /// The web console's own state (node name, gossip, request samples).
    pub console: console::ConsoleState,
    /// Connection limits of the admin listener.
    pub limits: ConnectionLimits,
    /// Time to receive a request body after its head.
    pub body_timeout: Duration,
}

/// Serves the admin API on `listener` until `shutdown` changes, over TLS
/// when `tls` is given. Connections are admitted and supervised by
/// [`Connections`] with `AdminState::limits`: the head deadline (TLS
/// handshake included), the idle timeout, limits in total and per client
/// address (the oldest idle connection is closed first), and a reserve of
/// connections that only `/healthz` and `/readyz` may use, so slow or
/// flooding clients cannot starve the health checks.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<AdminState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let connections = Connections::new("admin", admin.limits);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        connections.count(Trip::AcceptError);
                        tracing::warn!(%error, "admin accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let admitted = match connections.admit(peer) {
                    Ok(admitted) => Arc::new(admitted),
                    Err(trip) => {
                        tracing::warn!(%peer, limit = trip.label(), "admin connection refused");
                        continue;
                    }
                };
                let admin = Arc::clone(&admin);
                let tls = tls.clone();
                tokio::spawn(serve_admitted(stream, peer, admitted, admin, tls));
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Serves one admitted connection to its end, over TLS when `tls` is
/// given, under the supervision of its admission (head deadline, idle
/// timeout, eviction).
async fn serve_admitted<S>(
    stream: S,
    peer: SocketAddr,
    admitted: Arc<Admitted>,
    admin: Arc<AdminState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stream = admitted.watch(stream);
    let serving = {
        let admitted = Arc::clone(&admitted);
        async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), admin, admitted).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "admin tls handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin tls handshake timed out"),
                    }
                }
                None => serve_connection(TokioIo::new(stream), admin, admitted).await,
            }
        }
    };
    if let Ended::Closed(trip) = admitted.supervise(serving).await {
        tracing::debug!(%peer, limit = trip.label(), "admin connection closed by a limit");
    }
}

/// Serves one connection that is already open, as `serve` serves each
/// accepted one (same limits, same routes), without a listener: any byte
/// stream will do, so tests drive the admin API in-process over an
/// in-memory pipe. `peer` is the client address the limits count.
pub async fn serve_stream<S>(stream: S, peer: SocketAddr, admin: Arc<AdminState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connections = Connections::new("admin", admin.limits);
    match connections.admit(peer) {
        Ok(admitted) => serve_admitted(stream, peer, Arc::new(admitted), admin, None).await,
        Err(trip) => tracing::warn!(%peer, limit = trip.label(), "admin connection refused"),
    }
}

async fn serve_connection<I>(io: I, admin: Arc<AdminState>, admitted: Arc<Admitted>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let admin = Arc::clone(&admin);
        let priority = matches!(request.uri().path(), "/healthz" | "/readyz");
        let started = admitted.request_started(priority);
        async move {
            let _guard = match started {
                Ok(guard) => guard,
                Err(trip) => return Ok::<_, std::convert::Infallible>(busy_reply(trip)),
            };
            Ok::<_, std::convert::Infallible>(respond(request, admin).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // The head deadline is the supervisor's (hyper's own would also cut idle
    // keep-alive connections at the head deadline).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    let _ = builder.serve_connection(io, service).await;
}

/// The answer to a request refused to keep the health reserve free, or
/// made on a connection a limit is closing.
fn busy_reply(trip: Trip) -> Reply {
    let mut reply = reply::text_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the admin API is at its connection limit ({}); retry shortly\n",
            trip.label()
        ),
    );
    reply.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    reply.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    reply
}

async fn respond(request: Request<hyper::body::Incoming>, admin: Arc<AdminState>) -> Reply {
    let path = request.uri().path().to_owned();
    match (request.method().as_str(), path.as_str()) {
        ("GET", "/metrics") => {
            // Process figures (CPU, memory, open fds, start time) are read
            // when scraped, so they are as fresh as the scrape.
            metrics_process::Collector::default().collect();
            admin.router.export_in_flight();
            reply::text_reply(StatusCode::OK, admin.metrics.render())
        }
        ("GET", "/healthz") => reply::text_reply(StatusCode::OK, "ok\n".to_owned()),
        ("GET", "/readyz") => readiness(&admin),
        ("GET", "/status") => reply::json_reply(StatusCode::OK, &status(&admin), None),
        ("POST", "/admin/v1/commands") => commands::submit_envelope(request, &admin).await,
        ("POST", "/admin/v1/events") => commands::record_event(request, &admin).await,
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
pub(crate) async fn record(admin: &Arc<AdminState>, event: AuditEvent) -> Result<(), ApiError> {
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
