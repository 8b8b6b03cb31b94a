//! The production [`PeerNetwork`]: QUIC with mutual TLS from the
//! `transport` crate. This module only translates; the transport owns
//! sockets, TLS and the frame format.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use transport::{NodeIdentity, RpcError, TransportClient, TransportConfig, TransportServer};

use crate::peer::{CallError, PeerNetwork, PeerRequest, PeerResponse};
use crate::service::PeerService;
use crate::settings::{PEER_CALL_TIMEOUT, PEER_IDLE_TIMEOUT};

/// Keep-alive of peer connections: a quiet connection still carries a packet
/// this often, so the idle timeout only fires on a peer that is gone.
pub const PEER_KEEP_ALIVE: Duration = Duration::from_secs(1);

fn transport_config() -> TransportConfig {
    TransportConfig {
        call_timeout: PEER_CALL_TIMEOUT,
        keep_alive_interval: PEER_KEEP_ALIVE,
        idle_timeout: PEER_IDLE_TIMEOUT,
        ..TransportConfig::default()
    }
}

/// Why the QUIC endpoints could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the cluster endpoint could not listen on {addr}: {message}")]
pub struct BindFailure {
    pub addr: SocketAddr,
    pub message: String,
}

/// A member's QUIC endpoints: the server that hands requests to its
/// [`PeerService`], and the client it calls peers with.
pub struct QuicNetwork {
    client: Arc<TransportClient>,
    server: Mutex<Option<TransportServer>>,
    local_addr: SocketAddr,
}

impl QuicNetwork {
    /// Listens on `listen` for peers (answered by `service`) and binds a
    /// client endpoint of the same address family as `advertise`.
    pub fn bind(
        listen: SocketAddr,
        advertise_ipv4: bool,
        identity: &NodeIdentity,
        service: PeerService,
    ) -> Result<Self, BindFailure> {
        let server = TransportServer::bind(
            listen,
            identity,
            transport_config(),
            move |peer: transport::PeerInfo, request: PeerRequest| {
                let service = service.clone();
                async move { service.handle(peer.node_name.as_ref(), request).await }
            },
        )
        .map_err(|error| BindFailure {
            addr: listen,
            message: error.to_string(),
        })?;
        let client_bind: SocketAddr = if advertise_ipv4 {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let client =
            TransportClient::bind(client_bind, identity, transport_config()).map_err(|error| {
                BindFailure {
                    addr: client_bind,
                    message: error.to_string(),
                }
            })?;
        Ok(Self {
            client: Arc::new(client),
            local_addr: server.local_addr(),
            server: Mutex::new(Some(server)),
        })
    }

    /// Where the server listens (the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

fn classify(target: &str, error: RpcError) -> CallError {
    let target = target.to_owned();
    let message = error.to_string();
    match error {
        RpcError::Connect { .. } | RpcError::TooManyPeers { .. } => {
            CallError::Unreachable { target, message }
        }
        RpcError::Timeout { .. }
        | RpcError::ConnectionLost { .. }
        | RpcError::StreamAbandoned { .. } => CallError::NoAnswer { target, message },
        _ => CallError::Failed { target, message },
    }
}

impl PeerNetwork for QuicNetwork {
    fn call(
        &self,
        target: &str,
        request: PeerRequest,
        timeout: Option<Duration>,
    ) -> BoxFuture<'static, Result<PeerResponse, CallError>> {
        let client = Arc::clone(&self.client);
        let target = target.to_owned();
        Box::pin(async move {
            let addr: SocketAddr = target.parse().map_err(|error| CallError::Unreachable {
                target: target.clone(),
                message: format!("bad raft address: {error}"),
            })?;
            let answer = match timeout {
                Some(timeout) => {
                    client
                        .call_within::<PeerRequest, PeerResponse>(addr, &request, timeout)
                        .await
                }
                None => {
                    client
                        .call::<PeerRequest, PeerResponse>(addr, &request)
                        .await
                }
            };
            answer.map_err(|error| classify(&target, error))
        })
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let server = self.server.lock().ok().and_then(|mut server| server.take());
        let client = Arc::clone(&self.client);
        Box::pin(async move {
            if let Some(server) = server {
                server.shutdown().await;
            }
            client.close().await;
        })
    }
}
