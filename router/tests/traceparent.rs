//! The router's hop in a W3C trace, on loopback with a real backend: a
//! client's `traceparent` reaches the instance with the same trace id and
//! the router's span as parent; a request without one starts a trace; and
//! the router counts what it forwarded per revision; with span export on,
//! the span that reaches an OTLP receiver is the one the instance was told
//! is its parent.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use router::RouteTable;
use router::proxy::{Instance, ProxyConfig, Published, Router};
use router::span_export::{SpanExport, SpanExportConfig};
use router::sticky::StickyKey;
use router::traceparent::TraceContext;
use tokio::net::TcpListener;

use support::Operator;

/// A backend that answers with the `traceparent` it received.
async fn echo_traceparent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let value = request
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(value))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_trace_crosses_the_router_with_the_routers_span_and_requests_are_counted() {
    // Proves: an incoming trace id reaches the instance with a new parent
    // span; no or a malformed traceparent starts a fresh sampled trace; the
    // router's per-revision count sees every forwarded request.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let (state, revision) = (operator.state(), revisions[0]);
    let backend = echo_traceparent().await;
    let published = Published {
        table: RouteTable::build(state),
        instances: [(revision, vec![Instance::new(backend)])].into(),
    };
    let router = Router::new(published, StickyKey::new([7; 32]), ProxyConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_shutdown, receiver) = tokio::sync::watch::channel(false);
    tokio::spawn(Arc::clone(&router).serve(listener, receiver));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |traceparent: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut request = Request::get(format!("http://{addr}/")).header("host", "shop.test");
            if let Some(value) = traceparent {
                request = request.header("traceparent", value);
            }
            let response = client
                .request(request.body(Empty::new()).expect("request"))
                .await
                .expect("response");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            String::from_utf8_lossy(&body).into_owned()
        }
    };

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let seen = TraceContext::parse(&get(Some(incoming)).await).expect("forwarded traceparent");
    assert_eq!(seen.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_ne!(
        seen.span_id, 0x00f067aa0ba902b7,
        "the router's own span is the parent"
    );
    assert_eq!(seen.flags, 0, "the caller's sampling decision is kept");

    let started = TraceContext::parse(&get(None).await).expect("a started trace");
    let garbage = TraceContext::parse(&get(Some("00-zz")).await).expect("a restarted trace");
    assert_ne!(started.trace_id, garbage.trace_id);
    assert_eq!(started.flags, 1);

    assert_eq!(router.requests_served().get(&revision), Some(&3));
}

/// A loopback OTLP/HTTP receiver: decodes each POSTed body and keeps the
/// spans.
async fn otlp_receiver() -> (
    SocketAddr,
    Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        assert_eq!(request.uri().path(), "/v1/traces");
                        let body = request.into_body().collect().await?.to_bytes();
                        let decoded =
                            ExportTraceServiceRequest::decode(body).expect("otlp protobuf");
                        let mut kept = kept.lock().expect("lock");
                        for resource in decoded.resource_spans {
                            for scope in resource.scope_spans {
                                kept.extend(scope.spans);
                            }
                        }
                        Ok::<_, hyper::Error>(Response::new(Empty::<Bytes>::new()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

#[tokio::test]
async fn the_exported_span_is_the_hop_the_instance_was_told_about() {
    // Proves: with span export on, a sampled request's span reaches the
    // OTLP receiver with the caller's trace id, the caller's span as parent
    // and, as its own id, the parent the instance received; a started trace
    // gives a root span; an unsampled request exports nothing; shutdown
    // flushes what is queued.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let (state, revision) = (operator.state(), revisions[0]);
    let backend = echo_traceparent().await;
    let (receiver, spans) = otlp_receiver().await;
    let export = SpanExport::start(SpanExportConfig {
        endpoint: format!("http://{receiver}").parse().expect("endpoint"),
        node_name: "node-t".to_owned(),
    })
    .expect("exporter");
    let published = Published {
        table: RouteTable::build(state),
        instances: [(revision, vec![Instance::new(backend)])].into(),
    };
    let config = ProxyConfig {
        span_export: Some(export.queue()),
        ..ProxyConfig::default()
    };
    let router = Router::new(published, StickyKey::new([7; 32]), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(Arc::clone(&router).serve(listener, shutdown_rx));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |traceparent: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut request = Request::get(format!("http://{addr}/x")).header("host", "shop.test");
            if let Some(value) = traceparent {
                request = request.header("traceparent", value);
            }
            let response = client
                .request(request.body(Empty::new()).expect("request"))
                .await
                .expect("response");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            TraceContext::parse(&String::from_utf8_lossy(&body)).expect("forwarded traceparent")
        }
    };
    let sampled = get(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ))
    .await;
    let unsampled = get(Some(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    ))
    .await;
    let started = get(None).await;
    tokio::task::spawn_blocking(move || export.shutdown())
        .await
        .expect("shutdown");

    let spans = spans.lock().expect("lock");
    let by_trace = |trace_id: u128| {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id.to_be_bytes())
            .collect::<Vec<_>>()
    };
    let continued = by_trace(sampled.trace_id);
    assert_eq!(continued.len(), 1, "one span per request: {spans:?}");
    assert_eq!(continued[0].span_id, sampled.span_id.to_be_bytes());
    assert_eq!(
        continued[0].parent_span_id,
        0x00f067aa0ba902b7u64.to_be_bytes()
    );
    assert_eq!(continued[0].name, "gtc.route");
    let root = by_trace(started.trace_id);
    assert_eq!(root.len(), 1, "{spans:?}");
    assert_eq!(root[0].span_id, started.span_id.to_be_bytes());
    assert!(
        root[0].parent_span_id.is_empty(),
        "a started trace has no parent"
    );
    assert!(
        by_trace(unsampled.trace_id).is_empty(),
        "unsampled: not exported"
    );
    assert_eq!(spans.len(), 2, "{spans:?}");
    let revision_attribute = continued[0]
        .attributes
        .iter()
        .find(|kv| kv.key == "gtc.revision")
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value);
    assert_eq!(
        revision_attribute,
        Some(
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                revision.to_string()
            )
        )
    );
}
