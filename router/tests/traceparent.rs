//! The router's hop in a W3C trace, on loopback with a real backend: a
//! client's `traceparent` reaches the instance with the same trace id and
//! the router's span as parent; a request without one starts a trace; and
//! the router counts what it forwarded per revision.

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
