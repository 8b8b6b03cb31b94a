//! A router that does not hang on a vanished instance: per-try timeouts,
//! retries and hedges within the chosen revision, passive outlier
//! ejection, and the split kept exact through all of it. The instances are
//! real loopback servers that refuse, freeze (accept and never answer, like
//! a paused or partitioned member) or reset.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use router::proxy::ProxyConfig;
use router::resilience::EjectionConfig;
use router::{RouteTable, pick_point};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use support::{Harness, Operator, dead_addr, published};

/// Accepts connections and reads from them, but never answers: what a
/// router sees of a member that is paused or cut off after the connection
/// opened. Counts the connections it accepted.
async fn frozen_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

/// Reads the request head, then closes the connection without a word:
/// the request reached an instance that died before answering.
async fn resetting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buffer[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        count.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

/// Answers `<name> <method> <body bytes>` and counts the requests it served.
async fn counting_backend(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (addr, serve_counting(listener, name))
}

/// Serves `counting_backend`'s answers on `listener`.
fn serve_counting(listener: TcpListener, name: &'static str) -> Arc<AtomicUsize> {
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let count = Arc::clone(&count);
                    async move {
                        let method = request.method().clone();
                        let bytes = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        count.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            format!("{name} {method} {bytes}"),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    served
}

fn config() -> ProxyConfig {
    ProxyConfig {
        first_byte_timeout: Some(Duration::from_millis(200)),
        response_timeout: Duration::from_secs(10),
        ..ProxyConfig::default()
    }
}

#[tokio::test]
async fn a_frozen_instance_costs_a_request_one_first_byte_timeout_and_is_then_ejected() {
    // Proves: a GET sent to an instance that never answers is hedged on
    // the revision's other instance after the first-byte timeout (not held
    // for the 10 s response timeout), and after two such failures the
    // frozen instance is ejected, so later requests do not reach it.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let (frozen, accepted) = frozen_backend().await;
    let (live, served) = counting_backend("live").await;
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![frozen, live])]),
        config(),
    )
    .await;
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let (status, headers, body) = harness.get("/", &[]).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-greentic-revision"], revisions[0].to_string());
        assert!(body.starts_with("live GET"), "{body}");
    }
    assert_eq!(served.load(Ordering::SeqCst), 40);
    assert!(
        slowest < Duration::from_secs(3),
        "a request waited {slowest:?} on the frozen instance (response timeout 10 s)"
    );
    // Two failures eject it for a second: the 40 requests (well under a
    // second) reach it at most twice, plus connections of the hedged tries.
    let reached = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&reached),
        "the frozen instance got {reached} connections; ejection should stop them after 2"
    );
}

#[tokio::test]
async fn a_request_that_reached_an_instance_is_never_sent_again_unless_it_is_safe() {
    // Proves: a POST is not hedged or retried once it left the router (it
    // may have been acted on): against a frozen instance it waits for the
    // response timeout and gets 504, and the live instance never sees it.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let (frozen, _) = frozen_backend().await;
    let (resetting, resets) = resetting_backend().await;
    let (live, served) = counting_backend("live").await;
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![frozen, live])]),
        ProxyConfig {
            response_timeout: Duration::from_millis(600),
            ..config()
        },
    )
    .await;
    let mut ok = 0;
    let mut timed_out = 0;
    for _ in 0..8 {
        let (status, _, body) = harness
            .send("POST", "/", &[], Bytes::from_static(b"order"))
            .await;
        match status {
            200 => ok += 1,
            504 => {
                assert!(body.contains("upstream-timeout"), "{body}");
                timed_out += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        ok,
        "a POST went to two instances"
    );
    assert!(ok + timed_out == 8);

    // A reset after the request left: a GET is retried on the other
    // instance, a POST is answered 502 and not sent again.
    harness.router.publish(published(
        operator.state(),
        &[(revisions[0], vec![resetting, live])],
    ));
    let before = served.load(Ordering::SeqCst);
    let mut get_ok = 0;
    for _ in 0..10 {
        let (status, _, body) = harness.get("/", &[]).await;
        assert_eq!(
            status, 200,
            "a GET reset before its answer is retried: {body}"
        );
        get_ok += 1;
    }
    assert_eq!(served.load(Ordering::SeqCst) - before, get_ok);
    let before = served.load(Ordering::SeqCst);
    let resets_before = resets.load(Ordering::SeqCst);
    let mut post_ok = 0;
    for _ in 0..10 {
        let (status, _, body) = harness
            .send("POST", "/", &[], Bytes::from_static(b"order"))
            .await;
        match status {
            200 => post_ok += 1,
            502 => assert!(body.contains("upstream-error"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(served.load(Ordering::SeqCst) - before, post_ok);
    assert_eq!(
        post_ok + (resets.load(Ordering::SeqCst) - resets_before),
        10,
        "every POST went to exactly one instance"
    );
}

#[tokio::test]
async fn a_request_that_never_left_the_router_goes_to_another_instance_whatever_its_body() {
    // Proves: a refused connection costs nothing, even for a POST with a
    // streamed (unsized) body or one above the held-body limit: the request
    // is handed to the next instance before any of its body is read.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let dead = dead_addr().await;
    let (live, served) = counting_backend("live").await;
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![dead, live])]),
        ProxyConfig {
            retry_body_limit: 1024,
            ..config()
        },
    )
    .await;
    let large = Bytes::from(vec![b'x'; 200_000]);
    for _ in 0..10 {
        let (status, _, body) = harness.send("POST", "/", &[], large.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "live POST 200000");
    }
    // Chunked: no content length, so nothing is held.
    for _ in 0..10 {
        let body = Chunked((0..4).map(|_| Bytes::from_static(b"0123456789")).collect());
        let request = Request::builder()
            .method("POST")
            .uri(format!("http://{}/", harness.addr))
            .header("host", "shop.test")
            .body(body)
            .expect("request");
        let (sender, connection) = {
            let stream = tokio::net::TcpStream::connect(harness.addr)
                .await
                .expect("connect");
            hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake")
        };
        tokio::spawn(connection);
        let mut sender = sender;
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"live POST 40");
    }
    assert_eq!(served.load(Ordering::SeqCst), 20);
}

/// A request body sent in chunks with no declared length.
struct Chunked(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

#[tokio::test]
async fn retries_stay_within_the_chosen_revision_so_the_split_is_exact() {
    // Proves: with a refusing and a frozen instance beside a live one in
    // each revision, every answer still comes from the revision the split
    // picked, and the 30/70 split is served exactly (the pick is a Weyl
    // sequence: exact over whole cycles, here within one request).
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 3_000), (revisions[1], 7_000)]);
    let (frozen, _) = frozen_backend().await;
    let dead = dead_addr().await;
    let (a, _) = counting_backend("a").await;
    let (b, _) = counting_backend("b").await;
    let harness = Harness::start(
        published(
            operator.state(),
            &[
                (revisions[0], vec![dead, frozen, a]),
                (revisions[1], vec![frozen, dead, b]),
            ],
        ),
        config(),
    )
    .await;
    // The revisions a router with no failing instance would pick, in order.
    let table = RouteTable::build(operator.state());
    let route = table
        .resolve("shop.test", "/")
        .expect("the deployment's route");
    let mut counts = [0usize; 2];
    for i in 0..1_000u64 {
        let (status, headers, body) = harness.get("/", &[]).await;
        assert_eq!(status, 200, "{body}");
        let revision = &headers["x-greentic-revision"];
        let index = revisions
            .iter()
            .position(|r| r.to_string() == *revision)
            .expect("a revision of the split");
        let expected = if index == 0 { "a GET" } else { "b GET" };
        assert!(body.starts_with(expected), "{revision} answered by {body}");
        assert_eq!(
            revisions[index],
            route.pick.pick(pick_point(i)),
            "request {i}: a retry changed the revision the split picked"
        );
        counts[index] += 1;
    }
    assert!(
        counts[0].abs_diff(300) <= 5 && counts[1].abs_diff(700) <= 5,
        "split drifted under retries: {counts:?}"
    );
}

#[tokio::test]
async fn a_revision_whose_instances_are_all_ejected_is_still_tried() {
    // Proves: ejection never silently removes a revision's last instances:
    // when every instance is ejected the router still tries one (counted in
    // gtc_router_ejection_overridden_total), so an instance that comes back
    // serves at once instead of after its backoff.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let first = dead_addr().await;
    let second = dead_addr().await;
    // A long ejection, so the returning instance is certainly still in it.
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![first, second])]),
        ProxyConfig {
            ejection: EjectionConfig {
                consecutive_failures: 2,
                base: Duration::from_secs(60),
                max: Duration::from_secs(60),
            },
            ..config()
        },
    )
    .await;
    for _ in 0..6 {
        let (status, _, body) = harness.get("/", &[]).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("upstream-unavailable"), "{body}");
    }
    // Both are ejected now (two failures each). One comes back.
    let listener = TcpListener::bind(first)
        .await
        .expect("rebind the first address");
    let served = serve_counting(listener, "back");
    // Within the backoff: without the override this would be refused.
    let (status, _, body) = harness.get("/", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "back GET 0");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_that_stops_mid_body_reaches_no_instance_and_harms_no_one() {
    // Proves: a held body (declared length under the limit) that the
    // client never finishes is answered 400 or dropped, is never forwarded
    // half-read, and the router serves the next client; a body one byte
    // over the held limit streams and still survives a refused instance.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let dead = dead_addr().await;
    let (live, served) = counting_backend("live").await;
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![dead, live])]),
        ProxyConfig {
            retry_body_limit: 1024,
            ..config()
        },
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(harness.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1000\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    tokio::io::AsyncWriteExt::shutdown(&mut stream)
        .await
        .expect("half-close");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    eprintln!("a half-sent body was answered: {:?}", text.lines().next());
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 400"),
        "a half-sent body got {text}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "a half-read body reached an instance"
    );
    // Exactly one byte over the held limit: streamed, still delivered.
    let over = Bytes::from(vec![b'y'; 1025]);
    for _ in 0..4 {
        let (status, _, body) = harness.send("POST", "/", &[], over.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "live POST 1025");
    }
    let (status, _, _) = harness.get("/", &[]).await;
    assert_eq!(status, 200);
}
