//! What the server calls for each request.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;

use crate::pki::NodeName;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The node name from the caller's certificate, which the cluster CA signed.
    pub node_name: NodeName,
    /// The caller's UDP address as seen by this server.
    pub remote_addr: SocketAddr,
}

/// Answers requests of type `Req` with responses of type `Resp`.
///
/// Implemented for every `Fn(PeerInfo, Req) -> impl Future<Output = Result<Resp, E>>`
/// with `E: Display`, so a closure is enough. An error's text is sent to the caller,
/// which sees it as [`super::RpcError::Remote`].
pub trait Handler<Req, Resp>: Send + Sync + 'static {
    /// The handler's error; only its `Display` text crosses the wire.
    type Error: Display + Send;

    /// Handles one request from `peer`.
    fn handle(
        &self,
        peer: PeerInfo,
        request: Req,
    ) -> impl Future<Output = Result<Resp, Self::Error>> + Send;
}

impl<F, Fut, Req, Resp, E> Handler<Req, Resp> for F
where
    F: Fn(PeerInfo, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send,
    E: Display + Send,
{
    type Error = E;

    fn handle(
        &self,
        peer: PeerInfo,
        request: Req,
    ) -> impl Future<Output = Result<Resp, Self::Error>> + Send {
        self(peer, request)
    }
}
