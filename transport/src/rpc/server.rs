//! The server side: bind, serve, shut down.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::close_code::CLOSE_SHUTDOWN;
use super::config::{ENDPOINT_DRAIN_TIMEOUT, TransportConfig};
use super::error::BindError;
use super::handler::Handler;
use super::quic::{bind_endpoint, quinn_server_config};
use super::server_connection::{ServerContext, accept_loop};
use super::stats::TransportStats;
use crate::pki::NodeIdentity;

/// How [`TransportServer::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every in-flight handler finished and its response was delivered.
    Drained,
    /// The grace period ran out; the remaining tasks lost their connections.
    GraceExpired {
        /// Tasks (connections and request streams) still running at the deadline.
        in_flight_tasks: usize,
    },
}

/// A QUIC endpoint that answers cluster requests with a [`Handler`].
///
/// Each request arrives on its own bidirectional stream: the client writes one frame
/// and finishes, the server answers with one frame. Only clients with a certificate
/// from the cluster CA get past the handshake.
///
/// Dropping the server closes its endpoint without waiting; prefer
/// [`TransportServer::shutdown`].
#[derive(Debug)]
pub struct TransportServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    /// Tells the accept loop and connection loops to stop taking new work.
    shutdown_signal: CancellationToken,
    /// Every task the server spawned, so shutdown can wait for in-flight handlers.
    tasks: TaskTracker,
    stats: Arc<TransportStats>,
    shutdown_grace: Duration,
}

impl TransportServer {
    /// Binds `addr` and starts serving with `handler`. Must be called inside a tokio
    /// runtime. Use port 0 to let the OS choose; see [`TransportServer::local_addr`].
    pub fn bind<Req, Resp, H>(
        addr: SocketAddr,
        identity: &NodeIdentity,
        config: TransportConfig,
        handler: H,
    ) -> Result<TransportServer, BindError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Handler<Req, Resp>,
    {
        config.validate()?;
        let server_config = quinn_server_config(identity, &config)?;
        let endpoint = bind_endpoint(addr, identity, Some(server_config))?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| BindError::Socket { addr, source })?;
        let shutdown_signal = CancellationToken::new();
        let tasks = TaskTracker::new();
        let stats = Arc::new(TransportStats::default());
        let shutdown_grace = config.shutdown_grace;
        let context = Arc::new(ServerContext {
            handler,
            config,
            stats: stats.clone(),
            shutdown_signal: shutdown_signal.clone(),
            tasks: tasks.clone(),
            message_types: PhantomData,
        });
        tasks.spawn(accept_loop(endpoint.clone(), context));
        tracing::info!(%local_addr, "transport server listening");
        Ok(TransportServer {
            endpoint,
            local_addr,
            shutdown_signal,
            tasks,
            stats,
            shutdown_grace,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    /// Stops accepting connections and streams, waits up to the configured grace
    /// period for in-flight handlers to answer, then closes every connection and the
    /// endpoint.
    pub async fn shutdown(self) -> ShutdownOutcome {
        self.shutdown_signal.cancel();
        self.tasks.close();
        let outcome = match tokio::time::timeout(self.shutdown_grace, self.tasks.wait()).await {
            Ok(()) => ShutdownOutcome::Drained,
            Err(_) => ShutdownOutcome::GraceExpired {
                in_flight_tasks: self.tasks.len(),
            },
        };
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
        if tokio::time::timeout(ENDPOINT_DRAIN_TIMEOUT, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!(local_addr = %self.local_addr, "peers did not acknowledge the close in time");
        }
        tracing::info!(local_addr = %self.local_addr, ?outcome, "transport server stopped");
        outcome
    }
}

impl Drop for TransportServer {
    fn drop(&mut self) {
        self.shutdown_signal.cancel();
        self.tasks.close();
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
    }
}
