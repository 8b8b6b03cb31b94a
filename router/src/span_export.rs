//! Optional export of the router's hop as OpenTelemetry spans over OTLP/HTTP.
//!
//! Off unless a node is given an endpoint. When on, every sampled proxied
//! request becomes one server-kind span named [`SPAN_NAME`]: its trace id
//! and parent span id are those of the incoming `traceparent` (or of the
//! trace the router started), and its span id is the one the router
//! forwarded to the instance as the instance's parent, so the collector
//! joins the caller's, the router's and the instance's spans into one trace.
//!
//! The request path only builds a [`RouteSpan`] (plain data) and offers it
//! to a bounded queue ([`SpanQueue::offer`], never waits): when the queue is
//! full the span is dropped and counted in [`DROPPED_METRIC`]. A dedicated
//! thread ([`SpanExport`]) takes spans off the queue in batches and sends
//! them with `opentelemetry-otlp`'s HTTP/protobuf exporter, so a slow or
//! absent collector costs the request path nothing but dropped spans.
//! [`SpanExport::shutdown`] flushes what is queued, within a bound.
//!
//! The queue and batching are written here rather than using the SDK's
//! `BatchSpanProcessor` because the router needs the drop count as a
//! Prometheus counter (the SDK only logs it) and builds its spans from ids
//! it already chose (the SDK's tracer draws its own span ids).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use deploy::ids::{DeploymentId, RevisionId};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::mpsc;

/// Name of the span each proxied request exports.
pub const SPAN_NAME: &str = "gtc.route";
/// Counter of spans dropped because the export queue was full.
pub const DROPPED_METRIC: &str = "gtc_trace_spans_dropped_total";
/// Counter of spans handed to the collector (accepted or not, see failures).
pub const EXPORTED_METRIC: &str = "gtc_trace_spans_exported_total";
/// Counter of batches the collector did not accept (after the exporter's
/// own retries).
pub const EXPORT_FAILURES_METRIC: &str = "gtc_trace_export_failures_total";
/// The OTLP/HTTP path of traces, appended to the endpoint as the OTLP
/// specification does for `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const TRACES_PATH: &str = "/v1/traces";

/// Spans waiting for export. At a few hundred bytes each this bounds the
/// queue to about a megabyte, and at the default flush interval it absorbs
/// a burst of several thousand requests per second while the collector is
/// slow; past it spans are dropped, never the request delayed.
pub const SPAN_QUEUE_CAPACITY: usize = 4096;
/// Most spans in one OTLP request: the OpenTelemetry SDK's default batch
/// size, well under collectors' default 4 MiB request limit.
pub const SPAN_BATCH_MAX: usize = 512;
/// How long a span may wait for a full batch before a partial one is sent.
pub const SPAN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Time one OTLP request may take (the exporter's timeout).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time shutdown waits for the last spans to be sent.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated OTLP/HTTP endpoint: the collector's base URL
/// (`http://127.0.0.1:4318`), to which [`TRACES_PATH`] is appended unless
/// the URL already ends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    traces_url: String,
}

/// Why an OTLP endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpEndpointError {
    #[error(
        "{value:?} is not a URL ({reason}); give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318"
    )]
    NotAUrl { value: String, reason: String },
    #[error("{value:?} has no scheme; write it as http://HOST:PORT, e.g. http://127.0.0.1:4318")]
    NoScheme { value: String },
    #[error(
        "{value:?} uses {scheme}:, but the exporter speaks plain http only (OTLP/HTTP to a local collector or agent, which forwards over TLS); write http://HOST:PORT"
    )]
    UnsupportedScheme { value: String, scheme: String },
    #[error("{value:?} names no host; write it as http://HOST:PORT")]
    NoHost { value: String },
    #[error("{value:?} has a query string; give the collector's base URL only")]
    HasQuery { value: String },
}

impl FromStr for OtlpEndpoint {
    type Err = OtlpEndpointError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let owned = || value.to_owned();
        let uri: http::Uri =
            value
                .parse()
                .map_err(|e: http::uri::InvalidUri| OtlpEndpointError::NotAUrl {
                    value: owned(),
                    reason: e.to_string(),
                })?;
        match uri.scheme_str() {
            None => return Err(OtlpEndpointError::NoScheme { value: owned() }),
            Some("http") => {}
            Some(scheme) => {
                return Err(OtlpEndpointError::UnsupportedScheme {
                    value: owned(),
                    scheme: scheme.to_owned(),
                });
            }
        }
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(OtlpEndpointError::NoHost { value: owned() });
        };
        if uri.query().is_some() {
            return Err(OtlpEndpointError::HasQuery { value: owned() });
        }
        let path = uri.path().trim_end_matches('/');
        let traces_url = if path.ends_with(TRACES_PATH) {
            format!("http://{authority}{path}")
        } else {
            format!("http://{authority}{path}{TRACES_PATH}")
        };
        Ok(Self { traces_url })
    }
}

impl OtlpEndpoint {
    /// The URL spans are POSTed to.
    pub fn traces_url(&self) -> &str {
        &self.traces_url
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traces_url)
    }
}

/// What one proxied request contributes to its trace, as the request path
/// builds it (no OpenTelemetry types, no formatting).
#[derive(Debug, Clone)]
pub struct RouteSpan {
    pub trace_id: u128,
    /// The router's span: what it forwarded to the instance as parent.
    pub span_id: u64,
    /// The caller's span, or `None` when the router started the trace.
    pub parent_span_id: Option<u64>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub deployment: DeploymentId,
    pub revision: RevisionId,
    /// The instance that answered (or the last one tried when none did).
    pub instance: Option<SocketAddr>,
    pub method: http::Method,
    pub status: u16,
    /// The request's host and path, as routed.
    pub host: String,
    pub path: String,
}

/// The request path's end of the export queue: cheap to clone, never waits.
#[derive(Debug, Clone)]
pub struct SpanQueue {
    span_tx: mpsc::Sender<RouteSpan>,
    dropped: metrics::Counter,
}

impl SpanQueue {
    /// Queues `span` for export, or drops and counts it when the queue is
    /// full or the exporter has stopped.
    pub fn offer(&self, span: RouteSpan) {
        if self.span_tx.try_send(span).is_err() {
            self.dropped.increment(1);
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpanExportError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
    #[error("cannot start the span export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Settings of the exporter.
#[derive(Debug, Clone)]
pub struct SpanExportConfig {
    pub endpoint: OtlpEndpoint,
    /// Names this node in every span (`gtc.node`) and in the resource
    /// (`service.instance.id`).
    pub node_name: String,
}

/// The running exporter: the queue's producer side and the export thread.
pub struct SpanExport {
    queue: SpanQueue,
    shutdown_tx: Option<tokio::sync::oneshot::Sender<()>>,
    /// Gets one message when the export thread has flushed and stopped.
    done_rx: std_mpsc::Receiver<()>,
}

impl SpanExport {
    /// Builds the OTLP exporter and starts the export thread.
    pub fn start(config: SpanExportConfig) -> Result<Self, SpanExportError> {
        let endpoint = config.endpoint.traces_url().to_owned();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| SpanExportError::Build {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("gtc")
                .with_attributes([KeyValue::new(
                    "service.instance.id",
                    config.node_name.clone(),
                )])
                .build(),
        );
        // The exporter's hyper client needs a Tokio runtime; a private
        // one on its own thread keeps export off the router's workers.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (span_tx, span_rx) = mpsc::channel(SPAN_QUEUE_CAPACITY);
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = std_mpsc::sync_channel(1);
        let node_name = config.node_name;
        std::thread::Builder::new()
            .name("gtc-otlp-export".to_owned())
            .spawn(move || {
                runtime.block_on(export_loop(exporter, span_rx, shutdown_rx, &node_name));
                let _ = done_tx.send(());
            })?;
        tracing::info!(endpoint = %endpoint, "exporting router spans over otlp/http");
        Ok(Self {
            queue: SpanQueue {
                span_tx,
                dropped: metrics::counter!(DROPPED_METRIC),
            },
            shutdown_tx: Some(shutdown_tx),
            done_rx,
        })
    }

    /// The queue the router offers spans to.
    pub fn queue(&self) -> SpanQueue {
        self.queue.clone()
    }

    /// Sends what is queued and stops the export thread, waiting at most
    /// [`SHUTDOWN_FLUSH_TIMEOUT`] plus one export.
    pub fn shutdown(mut self) {
        if let Some(shutdown_tx) = self.shutdown_tx.take() {
            let _ = shutdown_tx.send(());
        }
        if self
            .done_rx
            .recv_timeout(SHUTDOWN_FLUSH_TIMEOUT + EXPORT_TIMEOUT)
            .is_err()
        {
            tracing::warn!("span export did not finish flushing in time; pending spans are lost");
        }
    }
}

/// Takes spans off the queue in batches of up to [`SPAN_BATCH_MAX`], sends
/// a partial batch after [`SPAN_FLUSH_INTERVAL`], and on shutdown sends
/// what is left.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut span_rx: mpsc::Receiver<RouteSpan>,
    mut shutdown_rx: tokio::sync::oneshot::Receiver<()>,
    node_name: &str,
) {
    let scope = InstrumentationScope::builder("gtc-router")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let exported = metrics::counter!(EXPORTED_METRIC);
    let failures = metrics::counter!(EXPORT_FAILURES_METRIC);
    let mut batch = Vec::with_capacity(SPAN_BATCH_MAX);
    let mut stopping = false;
    while !stopping {
        let deadline = tokio::time::sleep(SPAN_FLUSH_INTERVAL);
        tokio::pin!(deadline);
        while batch.len() < SPAN_BATCH_MAX {
            let room = SPAN_BATCH_MAX - batch.len();
            tokio::select! {
                received = span_rx.recv_many(&mut batch, room) => {
                    if received == 0 {
                        stopping = true;
                        break;
                    }
                }
                () = &mut deadline => break,
                _ = &mut shutdown_rx => {
                    stopping = true;
                    break;
                }
            }
        }
        if stopping {
            while batch.len() < SPAN_QUEUE_CAPACITY
                && let Ok(span) = span_rx.try_recv()
            {
                batch.push(span);
            }
        }
        for chunk in batch.chunks(SPAN_BATCH_MAX) {
            let spans: Vec<SpanData> = chunk
                .iter()
                .map(|span| span_data(span, node_name, &scope))
                .collect();
            let count = spans.len() as u64;
            match exporter.export(spans).await {
                Ok(()) => exported.increment(count),
                Err(error) => {
                    failures.increment(1);
                    tracing::warn!(%error, spans = count, "otlp span export failed");
                }
            }
        }
        batch.clear();
    }
    if let Err(error) = exporter.shutdown() {
        tracing::debug!(%error, "otlp exporter shutdown");
    }
}

/// The OpenTelemetry form of a route span.
pub fn span_data(span: &RouteSpan, node_name: &str, scope: &InstrumentationScope) -> SpanData {
    let mut attributes = vec![
        KeyValue::new("gtc.deployment", span.deployment.to_string()),
        KeyValue::new("gtc.revision", span.revision.to_string()),
        KeyValue::new("gtc.node", node_name.to_owned()),
        KeyValue::new("http.request.method", span.method.as_str().to_owned()),
        KeyValue::new("http.response.status_code", i64::from(span.status)),
        KeyValue::new("server.address", span.host.clone()),
        KeyValue::new("url.path", span.path.clone()),
    ];
    if let Some(instance) = span.instance {
        attributes.push(KeyValue::new("gtc.instance", instance.to_string()));
    }
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(span.trace_id),
            SpanId::from(span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: span.parent_span_id.map_or(SpanId::INVALID, SpanId::from),
        parent_span_is_remote: span.parent_span_id.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Borrowed(SPAN_NAME),
        start_time: span.start,
        end_time: span.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        // Server spans are errors on 5xx only (OpenTelemetry's HTTP
        // semantic conventions): a 4xx is the client's doing.
        status: if span.status >= 500 {
            Status::error(format!("status {}", span.status))
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_base_url_gets_the_traces_path_and_a_full_one_is_kept() {
        for (given, expected) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "http://collector:4318/otlp",
                "http://collector:4318/otlp/v1/traces",
            ),
            ("http://[::1]:4318/v1/traces", "http://[::1]:4318/v1/traces"),
            ("http://localhost", "http://localhost/v1/traces"),
        ] {
            let endpoint: OtlpEndpoint = given.parse().expect(given);
            assert_eq!(endpoint.traces_url(), expected, "{given}");
        }
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason() {
        let refused = |value: &str| value.parse::<OtlpEndpoint>().expect_err(value);
        assert!(matches!(
            refused("127.0.0.1:4318"),
            OtlpEndpointError::NoScheme { .. }
        ));
        assert!(matches!(
            refused("localhost"),
            OtlpEndpointError::NoScheme { .. }
        ));
        assert!(matches!(
            refused("https://collector:4318"),
            OtlpEndpointError::UnsupportedScheme { ref scheme, .. } if scheme == "https"
        ));
        assert!(matches!(
            refused("grpc://collector:4317"),
            OtlpEndpointError::UnsupportedScheme { .. }
        ));
        assert!(matches!(
            refused("http://"),
            OtlpEndpointError::NotAUrl { .. }
        ));
        assert!(matches!(
            refused("not a url"),
            OtlpEndpointError::NotAUrl { .. }
        ));
        assert!(matches!(refused(""), OtlpEndpointError::NotAUrl { .. }));
        assert!(matches!(
            refused("http://collector:4318/?x=1"),
            OtlpEndpointError::HasQuery { .. }
        ));
        let message = refused("https://collector:4318").to_string();
        assert!(message.contains("http://HOST:PORT"), "{message}");
    }

    #[test]
    fn a_span_carries_the_ids_and_attributes_of_the_hop() {
        let deployment = DeploymentId::from_ulid(ulid::Ulid::from_parts(1, 1));
        let revision = RevisionId::from_ulid(ulid::Ulid::from_parts(1, 2));
        let span = RouteSpan {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x1122334455667788,
            parent_span_id: Some(0x00f067aa0ba902b7),
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH + Duration::from_millis(3),
            deployment,
            revision,
            instance: Some(SocketAddr::from(([127, 0, 0, 1], 9000))),
            method: http::Method::GET,
            status: 502,
            host: "app.local".to_owned(),
            path: "/x".to_owned(),
        };
        let scope = InstrumentationScope::builder("test").build();
        let data = span_data(&span, "node-a", &scope);
        assert_eq!(
            data.span_context.trace_id(),
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736u128)
        );
        assert_eq!(
            data.span_context.span_id(),
            SpanId::from(0x1122334455667788u64)
        );
        assert_eq!(data.parent_span_id, SpanId::from(0x00f067aa0ba902b7u64));
        assert_eq!(data.span_kind, SpanKind::Server);
        let attribute = |key: &str| {
            data.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attribute("gtc.revision"), Some(revision.to_string()));
        assert_eq!(attribute("gtc.instance").as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(attribute("gtc.node").as_deref(), Some("node-a"));
        assert_eq!(
            attribute("http.response.status_code").as_deref(),
            Some("502")
        );
        assert!(matches!(data.status, Status::Error { .. }));
        let root = span_data(
            &RouteSpan {
                parent_span_id: None,
                ..span
            },
            "node-a",
            &scope,
        );
        assert_eq!(root.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let (span_tx, mut span_rx) = mpsc::channel(1);
        let queue = SpanQueue {
            span_tx,
            dropped: metrics::Counter::noop(),
        };
        let span = RouteSpan {
            trace_id: 1,
            span_id: 1,
            parent_span_id: None,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            deployment: DeploymentId::from_ulid(ulid::Ulid::from_parts(1, 1)),
            revision: RevisionId::from_ulid(ulid::Ulid::from_parts(1, 2)),
            instance: None,
            method: http::Method::GET,
            status: 200,
            host: String::new(),
            path: String::new(),
        };
        queue.offer(span.clone());
        // The second offer finds the queue full and returns at once.
        queue.offer(span);
        assert!(span_rx.try_recv().is_ok(), "the first span was queued");
        assert!(span_rx.try_recv().is_err(), "the second was dropped");
    }

    proptest! {
        #[test]
        fn parsing_an_endpoint_never_panics(value in "\\PC{0,80}") {
            let _ = value.parse::<OtlpEndpoint>();
        }

        #[test]
        fn every_accepted_endpoint_posts_to_the_traces_path(host in "[a-z][a-z0-9-]{0,20}", port in 1u16.., path in "(/[a-z]{1,8}){0,3}") {
            let endpoint: OtlpEndpoint = format!("http://{}:{}{}", host, port, path).parse().expect("valid");
            prop_assert!(endpoint.traces_url().ends_with(TRACES_PATH));
            let prefix = format!("http://{}:{}", host, port);
            prop_assert!(endpoint.traces_url().starts_with(&prefix));
        }
    }
}
