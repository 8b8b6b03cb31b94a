//! Per-connection and per-stream work of the server.

use std::marker::PhantomData;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::close_code::CLOSE_PEER_IDENTITY;
use super::config::TransportConfig;
use super::handler::{Handler, PeerInfo};
use super::message::ResponseEnvelope;
use super::protocol_violation::reject_frame;
use super::send_guard::ResetOnDrop;
use super::stats::{ConnectionResult, TransportStats};
use crate::pki::{PkiError, node_name_from_certificate};
use crate::wire::{FrameError, encode_frame, expect_end_of_stream, read_frame};

/// What every server task shares.
pub(crate) struct ServerContext<H, Req, Resp> {
    pub(crate) handler: H,
    pub(crate) config: TransportConfig,
    pub(crate) stats: Arc<TransportStats>,
    pub(crate) shutdown_signal: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// The message types are fixed per server; `fn` keeps the context Send + Sync
    /// whatever they are.
    pub(crate) message_types: PhantomData<fn(Req) -> Resp>,
}

/// Accepts connections until shutdown, refusing those beyond `max_connections`.
pub(crate) async fn accept_loop<H, Req, Resp>(
    endpoint: quinn::Endpoint,
    context: Arc<ServerContext<H, Req, Resp>>,
) where
    H: Handler<Req, Resp>,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let connection_slots = Arc::new(Semaphore::new(context.config.max_connections));
    loop {
        let incoming = tokio::select! {
            () = context.shutdown_signal.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
            context.stats.record_connection(ConnectionResult::Rejected);
            tracing::warn!(
                remote = %incoming.remote_address(),
                limit = context.config.max_connections,
                "refusing connection: connection limit reached"
            );
            incoming.refuse();
            continue;
        };
        context
            .tasks
            .spawn(serve_connection(context.clone(), incoming, slot));
    }
}

/// Completes the handshake, identifies the peer and serves its streams.
async fn serve_connection<H, Req, Resp>(
    context: Arc<ServerContext<H, Req, Resp>>,
    incoming: quinn::Incoming,
    _slot: OwnedSemaphorePermit,
) where
    H: Handler<Req, Resp>,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let remote = incoming.remote_address();
    let handshake = tokio::select! {
        () = context.shutdown_signal.cancelled() => return,
        handshake = incoming => handshake,
    };
    let connection = match handshake {
        Ok(connection) => connection,
        Err(error) => {
            context.stats.record_connection(ConnectionResult::Rejected);
            tracing::info!(%remote, %error, "handshake failed");
            return;
        }
    };
    let peer = match peer_info(&connection) {
        Ok(peer) => peer,
        Err(error) => {
            context.stats.record_connection(ConnectionResult::Rejected);
            tracing::warn!(%remote, %error, "peer certificate names no node");
            connection.close(CLOSE_PEER_IDENTITY, b"no node name in certificate");
            return;
        }
    };
    context.stats.record_connection(ConnectionResult::Accepted);
    tracing::debug!(%remote, peer = %peer.node_name, "connection accepted");
    loop {
        let (send, recv) = tokio::select! {
            () = context.shutdown_signal.cancelled() => break,
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%remote, peer = %peer.node_name, %error, "connection ended");
                    break;
                }
            },
        };
        context.tasks.spawn(serve_stream(
            context.clone(),
            connection.clone(),
            peer.clone(),
            ResetOnDrop::new(send),
            recv,
        ));
    }
}

/// Reads one request, runs the handler and writes one response.
async fn serve_stream<H, Req, Resp>(
    context: Arc<ServerContext<H, Req, Resp>>,
    connection: quinn::Connection,
    peer: PeerInfo,
    mut send: ResetOnDrop,
    mut recv: quinn::RecvStream,
) where
    H: Handler<Req, Resp>,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let limit = context.config.max_frame_bytes;
    let io_timeout = context.config.stream_io_timeout;
    let request = match tokio::time::timeout(io_timeout, receive_request::<Req>(&mut recv, limit))
        .await
    {
        Ok(Ok(request)) => request,
        Ok(Err(FrameError::Wire(error))) => {
            reject_frame(&connection, &context.stats, &error);
            return;
        }
        Ok(Err(FrameError::Io(error))) => {
            tracing::debug!(peer = %peer.node_name, %error, "request stream failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer.node_name, ?io_timeout, "request not received in time");
            return;
        }
    };
    context.stats.record_request_inbound();
    let envelope = match context.handler.handle(peer.clone(), request).await {
        Ok(response) => ResponseEnvelope::Ok(response),
        Err(error) => ResponseEnvelope::failed(error.to_string()),
    };
    let Some(frame) = response_frame(&envelope, limit) else {
        return;
    };
    match tokio::time::timeout(io_timeout, deliver(&mut send, &frame)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(peer = %peer.node_name, %error, "response not delivered");
        }
        Err(_) => {
            tracing::debug!(peer = %peer.node_name, ?io_timeout, "response not delivered in time");
        }
    }
}

/// One frame, then the end of the stream: anything else is a protocol violation.
async fn receive_request<Req: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: u32,
) -> Result<Req, FrameError> {
    let request = read_frame(recv, limit).await?;
    expect_end_of_stream(recv).await?;
    Ok(request)
}

/// Encodes the response; one too large for the frame limit becomes an error reply,
/// so the caller learns why instead of timing out.
fn response_frame<Resp: Serialize>(
    envelope: &ResponseEnvelope<Resp>,
    limit: u32,
) -> Option<Vec<u8>> {
    match encode_frame(envelope, limit) {
        Ok(frame) => Some(frame),
        Err(error) => {
            tracing::warn!(%error, "response cannot be sent");
            let failure =
                ResponseEnvelope::<Resp>::failed(format!("the response cannot be sent: {error}"));
            // The failure message is bounded far below MIN_FRAME_BYTES, so this fits;
            // if it somehow does not, the stream is reset on drop.
            encode_frame(&failure, limit).ok()
        }
    }
}

/// Writes the response, finishes the stream and waits until the peer has it, so a
/// following shutdown cannot discard it.
async fn deliver(
    send: &mut ResetOnDrop,
    frame: &[u8],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    send.write_all(frame).await?;
    send.finish()?;
    send.stopped().await?;
    Ok(())
}

/// The authenticated peer: the node name from the certificate TLS verified.
fn peer_info(connection: &quinn::Connection) -> Result<PeerInfo, PkiError> {
    let certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(PkiError::NoNodeName)?;
    let leaf = certificates.first().ok_or(PkiError::NoNodeName)?;
    Ok(PeerInfo {
        node_name: node_name_from_certificate(leaf)?,
        remote_addr: connection.remote_address(),
    })
}
