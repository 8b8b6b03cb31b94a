//! Keep-alive HTTP/1.1 connections to one instance, driven directly.
//!
//! hyper-util's pooled client keys its pool by URI authority behind one
//! mutex and a checkout handshake per request; the router already knows
//! the exact instance, so each instance keeps its own small stack of idle
//! connections instead. A connection goes back on the stack only after its
//! response body ended, so a connection is never shared by two requests.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::ProxyBody;

/// Idle connections kept per instance. Enough for the concurrency one
/// instance sees from one router; beyond it, connections close after use
/// instead of piling up file descriptors.
pub const MAX_IDLE_CONNECTIONS_PER_INSTANCE: usize = 64;

/// Idle keep-alive connections to one instance.
#[derive(Debug, Default)]
pub struct ConnectionPool {
    idle: Mutex<Vec<SendRequest<ProxyBody>>>,
}

/// Why a request did not reach an instance.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened: safe to try another instance.
    #[error("connection refused or failed: {0}")]
    Connect(#[source] std::io::Error),
    /// Opening the connection took longer than the connect timeout.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The connection opened but HTTP failed on it.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// A try that failed, with the request back when it never left the router
/// (no connection could be opened), so it can go to another instance
/// whatever its body.
#[derive(Debug)]
pub struct SendFailure {
    pub error: UpstreamError,
    pub unsent: Option<Request<ProxyBody>>,
}

impl ConnectionPool {
    /// Sends `request` on an idle connection, or on a new one. A pooled
    /// connection that turns out closed before the request went out is
    /// replaced by a new connection, whatever the method: the request was
    /// never sent.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        connect_timeout: Duration,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendFailure> {
        while let Some(mut sender) = self.checkout() {
            // A connection whose last body just ended may not have turned
            // ready yet; it will, or it reports itself closed.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.wrap(sender, response)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(SendFailure {
                            error: UpstreamError::Http(failed.into_error()),
                            unsent: None,
                        });
                    }
                },
            }
        }
        let mut sender = match connect(addr, connect_timeout).await {
            Ok(sender) => sender,
            Err(error) => {
                return Err(SendFailure {
                    error,
                    unsent: Some(request),
                });
            }
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok(self.wrap(sender, response)),
            Err(mut failed) => {
                let unsent = failed.take_message();
                Err(SendFailure {
                    error: UpstreamError::Http(failed.into_error()),
                    unsent,
                })
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        let Ok(mut idle) = self.idle.lock() else {
            return None;
        };
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_CONNECTIONS_PER_INSTANCE
        {
            idle.push(sender);
        }
    }

    fn wrap(
        self: &Arc<Self>,
        sender: SendRequest<ProxyBody>,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        response.map(|inner| PooledBody {
            inner,
            finished: false,
            sender: Some(sender),
            pool: Arc::clone(self),
        })
    }
}

async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(connect_timeout))?
        .map_err(UpstreamError::Connect)?;
    // Small requests and responses: waiting for Nagle only adds latency.
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(instance = %addr, %error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A response body that returns its connection to the pool once the body
/// has been read to its end; a body dropped early closes the connection.
pub struct PooledBody {
    inner: Incoming,
    finished: bool,
    sender: Option<SendRequest<ProxyBody>>,
    pool: Arc<ConnectionPool>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finished = true,
            Poll::Ready(Some(Err(_))) => self.sender = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if (self.finished || self.inner.is_end_stream())
            && let Some(sender) = self.sender.take()
        {
            self.pool.checkin(sender);
        }
    }
}
