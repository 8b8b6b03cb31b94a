//! What the router counts per revision for a rollout's analysis, on
//! loopback with real backends: every request, the instances' own 5xx
//! answers apart from the router's error answers (no instance reached),
//! and a latency bucket for each, cumulative across table changes.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use router::proxy::ProxyConfig;
use support::{Harness, Operator, dead_addr, published};
use tokio::net::TcpListener;

/// A backend that answers 500 to every other request.
async fn half_failing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                    let n = seen.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let mut response = Response::new(Full::new(Bytes::from_static(b"x")));
                        if n % 2 == 1 {
                            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
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
async fn instance_errors_router_errors_and_latencies_are_counted_per_revision() {
    let (mut operator, deployment, revisions) = Operator::new(2);
    let (flaky, unreachable) = (revisions[0], revisions[1]);
    operator.split(deployment, &[(flaky, 5_000), (unreachable, 5_000)]);
    let harness = Harness::start(
        published(
            operator.state(),
            &[
                (flaky, vec![half_failing().await]),
                (unreachable, vec![dead_addr().await]),
            ],
        ),
        ProxyConfig::default(),
    )
    .await;
    for _ in 0..100 {
        harness.get("/", &[]).await;
    }
    let counts = harness.router.revision_counts();
    let (flaky, unreachable) = (&counts[&flaky], &counts[&unreachable]);
    assert_eq!(flaky.requests + unreachable.requests, 100);
    assert!(
        (49..=51).contains(&flaky.requests),
        "a 50/50 split over 100 picks: {}",
        flaky.requests
    );
    assert_eq!(
        flaky.server_errors,
        flaky.requests / 2,
        "every other answer was a 500"
    );
    assert_eq!(flaky.upstream_errors, 0);
    assert_eq!(
        unreachable.upstream_errors, unreachable.requests,
        "no instance ever answered"
    );
    assert_eq!(unreachable.server_errors, 0);
    for counts in [flaky, unreachable] {
        assert_eq!(
            counts.latency_buckets.iter().sum::<u64>(),
            counts.requests,
            "one latency bucket per request"
        );
    }
    assert_eq!(unreachable.error_rate_bps(), Some(10_000));
}
