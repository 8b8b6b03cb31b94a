//! The accept loop: admits and supervises each connection and hands its
//! requests to [`Router::handle`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{BoxError, ProxyBody, Router, error_response};
use crate::connections::{self, Connections, Ended, Trip};

/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// `body`, keeping its request counted as in service until it is sent.
fn guarded(body: ProxyBody, guard: connections::RequestGuard) -> ProxyBody {
    BoxBody::new(connections::GuardedBody::new(body, guard))
}

/// The answer to a request on a connection a limit is closing.
fn closing_response(trip: Trip, generation: u64) -> Response<ProxyBody> {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "connection-closing",
        format!(
            "the connection is being closed ({}); retry on a new one",
            trip.label()
        ),
        generation,
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
impl Router {
    /// Accepts connections until `shutdown` turns true, then lets in-flight
    /// connections finish. Each connection is admitted and supervised by
    /// [`Connections`] with `ProxyConfig::connections`: a head deadline, an
    /// idle keep-alive timeout, and limits in total and per client address
    /// that close the oldest idle connection first.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let connections = Connections::new("router", self.config.connections);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // The head deadline is the supervisor's (hyper's own would also cut
        // idle keep-alive connections at the head deadline).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(self.config.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.config.max_header_bytes as u32);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, say: back off instead
                            // of spinning on the error.
                            connections.count(Trip::AcceptError);
                            tracing::warn!(%error, "router accept failed");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                            continue;
                        }
                    };
                    let admitted = match connections.admit(peer) {
                        Ok(admitted) => Arc::new(admitted),
                        Err(trip) => {
                            tracing::debug!(%peer, limit = trip.label(), "router connection refused");
                            continue;
                        }
                    };
                    let router = Arc::clone(&self);
                    let guard_source = Arc::clone(&admitted);
                    let service = hyper::service::service_fn(move |request| {
                        let router = Arc::clone(&router);
                        let started = guard_source.request_started(false);
                        async move {
                            let guard = match started {
                                Ok(guard) => guard,
                                Err(trip) => return Ok::<_, Infallible>(closing_response(trip, router.generation())),
                            };
                            let response = router.handle(request, peer).await;
                            Ok::<_, Infallible>(response.map(|body| guarded(body, guard)))
                        }
                    });
                    let stream = admitted.watch(stream);
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    // Boxed so the spawned future's `Send` is proved here,
                    // not through the supervisor's generic future.
                    let connection: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>> =
                        Box::pin(graceful.watch(connection));
                    tokio::spawn(async move {
                        match admitted.supervise(connection).await {
                            Ended::Finished(Err(error)) => {
                                tracing::info!(%peer, %error, "connection closed on a client error (malformed request or oversized head)");
                            }
                            Ended::Finished(Ok(())) => {}
                            Ended::Closed(trip) => {
                                tracing::debug!(%peer, limit = trip.label(), "connection closed by a limit");
                            }
                        }
                    });
                }
                _ = shutdown.changed() => break,
            }
        }
        graceful.shutdown().await;
    }
}
