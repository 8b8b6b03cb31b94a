//! The client side: calls to peers over cached connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::close_code::{CLOSE_PEER_GONE, CLOSE_SHUTDOWN};
use super::config::{ENDPOINT_DRAIN_TIMEOUT, TransportConfig};
use super::error::{BindError, ConnectFailure, RpcError};
use super::message::ResponseEnvelope;
use super::peer_connections::PeerConnections;
use super::protocol_violation::reject_frame;
use super::quic::{bind_endpoint, quinn_client_config};
use super::send_guard::ResetOnDrop;
use super::stats::{ConnectionResult, TransportStats};
use crate::pki::{CLUSTER_SAN, NodeIdentity};
use crate::wire::{FrameError, encode_frame, read_frame};

/// Calls peers of the cluster, one request per QUIC stream, over one cached
/// connection per peer.
///
/// Delivery is at most once: a call is retried only when its request provably never
/// left this node (the cached connection was already dead). Callers that need
/// retries (idempotent Raft RPCs) retry themselves.
pub struct TransportClient {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    config: TransportConfig,
    peers: PeerConnections,
    stats: Arc<TransportStats>,
}

/// `stable_id` of no connection: the call timed out before it had one.
const NO_CONNECTION: usize = usize::MAX;

/// A failed attempt, and whether the request may have reached the peer.
enum AttemptError {
    /// The stream could not even be opened: the request never left.
    NotSent(RpcError),
    /// The request may have been handled.
    Failed(RpcError),
}

impl TransportClient {
    /// Binds a client endpoint at `local_addr` (e.g. `0.0.0.0:0`). Must be called
    /// inside a tokio runtime.
    pub fn bind(
        local_addr: SocketAddr,
        identity: &NodeIdentity,
        config: TransportConfig,
    ) -> Result<TransportClient, BindError> {
        config.validate()?;
        let client_config = quinn_client_config(identity, &config)?;
        let endpoint = bind_endpoint(local_addr, identity, None)?;
        Ok(TransportClient {
            endpoint,
            client_config,
            peers: PeerConnections::new(config.max_cached_peers),
            config,
            stats: Arc::new(TransportStats::default()),
        })
    }

    /// The client's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    /// The local address of the client endpoint.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Sends `request` to the server at `peer` and waits for its response, within the
    /// configured call timeout.
    pub async fn call<Req, Resp>(&self, peer: SocketAddr, request: &Req) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let frame = encode_frame(request, self.config.max_frame_bytes)
            .map_err(|source| RpcError::Encode { peer, source })?;
        self.stats.record_request_outbound();
        self.call_framed(peer, &frame, self.config.call_timeout)
            .await
    }

    /// Like [`TransportClient::call`], but bounded by `timeout` instead of the
    /// configured call timeout (Raft gives each heartbeat a deadline of its own).
    pub async fn call_within<Req, Resp>(
        &self,
        peer: SocketAddr,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let frame = encode_frame(request, self.config.max_frame_bytes)
            .map_err(|source| RpcError::Encode { peer, source })?;
        self.stats.record_request_outbound();
        self.call_framed(peer, &frame, timeout.min(self.config.call_timeout))
            .await
    }

    /// One call with its deadline. A call that times out drops the connection it
    /// used from the cache, so the next call dials again instead of reusing a
    /// connection whose peer may be gone (a peer that restarted answers a new
    /// dial at once; the stale connection would only die at its idle timeout).
    async fn call_framed<Resp: DeserializeOwned>(
        &self,
        peer: SocketAddr,
        frame: &[u8],
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let used = AtomicUsize::new(NO_CONNECTION);
        match tokio::time::timeout(timeout, self.call_once_or_twice(peer, frame, &used)).await {
            Ok(result) => result,
            Err(_) => {
                self.forget(peer, used.load(Ordering::Acquire)).await;
                Err(RpcError::Timeout { peer, timeout })
            }
        }
    }

    /// Drops the cached connection to `peer` if it is the one with `stable_id`
    /// (another call may already have replaced it with a fresh one). Calls still
    /// in flight on it keep their streams; nobody new uses it.
    async fn forget(&self, peer: SocketAddr, stable_id: usize) {
        if stable_id == NO_CONNECTION {
            return;
        }
        let Ok(slot) = self.peers.slot(peer) else {
            return;
        };
        let mut cached = slot.lock().await;
        if cached
            .live
            .as_ref()
            .is_some_and(|connection| connection.stable_id() == stable_id)
        {
            tracing::info!(%peer, "call timed out; the connection will be dialled again");
            self.stats.record_connection(ConnectionResult::Dropped);
            cached.suspect = cached.live.take().map(|connection| {
                let heard = connection.stats().udp_rx.datagrams;
                (connection, heard)
            });
        }
    }

    /// Closes every connection and the endpoint, waiting briefly for peers to
    /// acknowledge.
    pub async fn close(&self) {
        self.endpoint.close(CLOSE_SHUTDOWN, b"client closed");
        // A peer that does not acknowledge learns of the close from its idle timeout.
        let _ = tokio::time::timeout(ENDPOINT_DRAIN_TIMEOUT, self.endpoint.wait_idle()).await;
    }

    async fn call_once_or_twice<Resp: DeserializeOwned>(
        &self,
        peer: SocketAddr,
        frame: &[u8],
        used: &AtomicUsize,
    ) -> Result<Resp, RpcError> {
        let (connection, reused) = self.connection(peer).await?;
        used.store(connection.stable_id(), Ordering::Release);
        match self.attempt(peer, &connection, frame).await {
            Ok(response) => Ok(response),
            Err(AttemptError::NotSent(error)) if reused => {
                tracing::debug!(%peer, %error, "cached connection was dead; reconnecting once");
                let (connection, _) = self.connection(peer).await?;
                used.store(connection.stable_id(), Ordering::Release);
                self.attempt(peer, &connection, frame)
                    .await
                    .map_err(AttemptError::into_inner)
            }
            Err(error) => Err(error.into_inner()),
        }
    }

    /// The live cached connection to `peer` (`true`), or a new one (`false`).
    async fn connection(&self, peer: SocketAddr) -> Result<(quinn::Connection, bool), RpcError> {
        let slot = self.peers.slot(peer)?;
        let mut cached = slot.lock().await;
        if let Some(connection) = cached.live.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok((connection.clone(), true));
        }
        cached.live = None;
        let connection = self.connect(peer).await?;
        if let Some((suspect, heard)) = cached.suspect.take()
            && suspect.close_reason().is_none()
            && suspect.stats().udp_rx.datagrams == heard
        {
            // The peer answered a new handshake while the old connection heard
            // nothing since its call timed out: that connection is dead.
            tracing::info!(%peer, "the connection a call timed out on heard nothing since; closing it");
            suspect.close(CLOSE_PEER_GONE, b"peer gone or restarted");
            self.stats.record_connection(ConnectionResult::ClosedStale);
        }
        cached.live = Some(connection.clone());
        Ok((connection, false))
    }

    async fn connect(&self, peer: SocketAddr) -> Result<quinn::Connection, RpcError> {
        let result = async {
            let connecting = self
                .endpoint
                .connect_with(self.client_config.clone(), peer, CLUSTER_SAN)
                .map_err(ConnectFailure::Endpoint)?;
            let timeout = self.config.connect_timeout;
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(connection)) => Ok(connection),
                Ok(Err(error)) => Err(ConnectFailure::Handshake(error)),
                Err(_) => Err(ConnectFailure::TimedOut { timeout }),
            }
        }
        .await;
        match &result {
            Ok(_) => self.stats.record_connection(ConnectionResult::Established),
            Err(error) => {
                self.stats.record_connection(ConnectionResult::Failed);
                tracing::info!(%peer, %error, "cannot connect to peer");
            }
        }
        result.map_err(|source| RpcError::Connect { peer, source })
    }

    /// One request on one new stream of `connection`.
    async fn attempt<Resp: DeserializeOwned>(
        &self,
        peer: SocketAddr,
        connection: &quinn::Connection,
        frame: &[u8],
    ) -> Result<Resp, AttemptError> {
        let (send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|error| AttemptError::NotSent(connection_failure(peer, error)))?;
        let mut send = ResetOnDrop::new(send);
        let sent = async {
            send.write_all(frame).await?;
            send.finish().map_err(std::io::Error::from)
        };
        if let Err(error) = sent.await {
            return Err(AttemptError::Failed(stream_failure(
                peer, connection, error,
            )));
        }
        let limit = self.config.max_frame_bytes;
        match read_frame::<_, ResponseEnvelope<Resp>>(&mut recv, limit).await {
            Ok(ResponseEnvelope::Ok(response)) => Ok(response),
            Ok(ResponseEnvelope::Failed { message }) => {
                Err(AttemptError::Failed(RpcError::Remote { peer, message }))
            }
            Err(FrameError::Wire(error)) => {
                reject_frame(connection, &self.stats, &error);
                Err(AttemptError::Failed(RpcError::Decode {
                    peer,
                    source: error,
                }))
            }
            Err(FrameError::Io(error)) => Err(AttemptError::Failed(stream_failure(
                peer, connection, error,
            ))),
        }
    }
}

impl std::fmt::Debug for TransportClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TransportClient")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for TransportClient {
    fn drop(&mut self) {
        self.endpoint.close(CLOSE_SHUTDOWN, b"client closed");
    }
}

impl AttemptError {
    fn into_inner(self) -> RpcError {
        match self {
            AttemptError::NotSent(error) | AttemptError::Failed(error) => error,
        }
    }
}

/// A stream error is a connection failure if the connection is gone, otherwise the
/// peer abandoned just this stream.
fn stream_failure(
    peer: SocketAddr,
    connection: &quinn::Connection,
    error: std::io::Error,
) -> RpcError {
    match connection.close_reason() {
        Some(reason) => connection_failure(peer, reason),
        None => RpcError::StreamAbandoned {
            peer,
            source: error,
        },
    }
}

/// Classifies why a connection ended. In TLS 1.3 the client finishes its handshake
/// before the server has checked the client certificate, so a server that refuses our
/// certificate shows up as a close with a TLS alert (a QUIC crypto error,
/// 0x100..=0x1ff) after "connecting" succeeded: report that as the handshake failure
/// it is.
fn connection_failure(peer: SocketAddr, reason: quinn::ConnectionError) -> RpcError {
    let crypto_alert = match &reason {
        quinn::ConnectionError::ConnectionClosed(close) => {
            (0x100..=0x1ff).contains(&u64::from(close.error_code))
        }
        _ => false,
    };
    if crypto_alert {
        RpcError::Connect {
            peer,
            source: ConnectFailure::Handshake(reason),
        }
    } else {
        RpcError::ConnectionLost {
            peer,
            reason: reason.to_string(),
        }
    }
}
