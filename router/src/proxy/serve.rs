//! The accept loop: admits and supervises each connection and hands its
//! requests to [`Router::handle`].

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::{BoxError, ProxyBody, Router, error_response};
use crate::connections::{self, Admitted, Connections, Ended, Trip};

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
/// A connection admitted by the acceptor, on its way to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    watcher: Watcher,
}

type Http = hyper_util::server::conn::auto::Builder<TokioExecutor>;

thread_local! {
    /// Which router worker this thread is (1-based; 0 = not a worker).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker of the current thread, to pick its own upstream pool: a
/// connection to an instance is then always used on the thread that
/// drives it, so a request never wakes another thread.
pub(super) fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

impl Router {
    /// Accepts connections until `shutdown` turns true, then lets in-flight
    /// connections finish. Each connection is admitted and supervised by
    /// [`Connections`] with `ProxyConfig::connections`: a head deadline, an
    /// idle keep-alive timeout, and limits in total and per client address
    /// that close the oldest idle connection first.
    ///
    /// Connections are served by `ProxyConfig::workers` threads, each with
    /// its own single-threaded runtime (nginx's model): the accept loop
    /// hands each admitted connection to the next worker in turn, and a
    /// request, its upstream connection and its response stay on that
    /// worker, with no cross-thread wake-ups on the request path.
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
        let workers = self.start_workers(&builder);
        let mut next = 0usize;
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
                        Ok(admitted) => admitted,
                        Err(trip) => {
                            tracing::debug!(%peer, limit = trip.label(), "router connection refused");
                            continue;
                        }
                    };
                    let watcher = graceful.watcher();
                    if workers.is_empty() {
                        tokio::spawn(Arc::clone(&self).connection(&builder, stream, peer, admitted, watcher));
                        continue;
                    }
                    let stream = match stream.into_std() {
                        Ok(stream) => stream,
                        Err(error) => {
                            tracing::warn!(%peer, %error, "router could not hand a connection to a worker");
                            continue;
                        }
                    };
                    next = next.wrapping_add(1);
                    let worker = &workers[next % workers.len()];
                    if let Err(error) = worker.send(Handoff { stream, peer, admitted, watcher }) {
                        tracing::warn!(%peer, "router worker gone; connection dropped");
                        drop(error);
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        graceful.shutdown().await;
        // Closing the channels ends the workers once their connections did.
        drop(workers);
    }

    /// Starts the worker threads; none (connections are then served on the
    /// caller's runtime) if `workers` is 1, if the caller runs a
    /// single-threaded runtime (it chose one thread: tests, embedded uses)
    /// or if a thread cannot start.
    fn start_workers(self: &Arc<Self>, builder: &Http) -> Vec<mpsc::UnboundedSender<Handoff>> {
        let count = match self.config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let mut workers = Vec::new();
        let single = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        if count <= 1 || single {
            return workers;
        }
        for index in 1..=count {
            let (sender, mut receiver) = mpsc::unbounded_channel::<Handoff>();
            let router = Arc::clone(self);
            let builder = builder.clone();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::warn!(%error, "router worker runtime failed; serving on the caller's runtime");
                    return Vec::new();
                }
            };
            let started = std::thread::Builder::new()
                .name(format!("gtc-router-{index}"))
                .spawn(move || {
                    WORKER.with(|worker| worker.set(index));
                    runtime.block_on(async move {
                        while let Some(handoff) = receiver.recv().await {
                            let Handoff {
                                stream,
                                peer,
                                admitted,
                                watcher,
                            } = handoff;
                            match tokio::net::TcpStream::from_std(stream) {
                                Ok(stream) => {
                                    tokio::spawn(Arc::clone(&router).connection(
                                        &builder, stream, peer, admitted, watcher,
                                    ));
                                }
                                Err(error) => {
                                    tracing::warn!(%peer, %error, "router worker could not take a connection");
                                }
                            }
                        }
                    });
                });
            if let Err(error) = started {
                tracing::warn!(%error, "router worker thread failed; serving on the caller's runtime");
                return Vec::new();
            }
            workers.push(sender);
        }
        workers
    }

    /// Serves one admitted connection until it ends or a limit closes it.
    fn connection(
        self: Arc<Self>,
        builder: &Http,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        admitted: Admitted,
        watcher: Watcher,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let admitted = Arc::new(admitted);
        let router = self;
        let guard_source = Arc::clone(&admitted);
        let service = hyper::service::service_fn(move |request| {
            let router = Arc::clone(&router);
            let started = guard_source.request_started(false);
            async move {
                let guard = match started {
                    Ok(guard) => guard,
                    Err(trip) => {
                        return Ok::<_, Infallible>(closing_response(trip, router.generation()));
                    }
                };
                let response = router.handle(request, peer).await;
                Ok::<_, Infallible>(response.map(|body| guarded(body, guard)))
            }
        });
        let stream = admitted.watch(stream);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        // Boxed so the spawned future's `Send` is proved here, not through
        // the supervisor's generic future.
        let connection: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>,
        > = Box::pin(watcher.watch(connection));
        async move {
            match admitted.supervise(connection).await {
                Ended::Finished(Err(error)) => {
                    tracing::info!(%peer, %error, "connection closed on a client error (malformed request or oversized head)");
                }
                Ended::Finished(Ok(())) => {}
                Ended::Closed(trip) => {
                    tracing::debug!(%peer, limit = trip.label(), "connection closed by a limit");
                }
            }
        }
    }
}
