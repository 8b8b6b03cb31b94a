//! Holding requests for a revision with no ready instance (issue #19, the
//! router's half of scale from zero): held requests are answered once an
//! instance is published, each bound answers 503 with `Retry-After`, and a
//! held request keeps the revision the split gave it.

mod support;

use std::time::{Duration, Instant};

use router::proxy::ProxyConfig;
use router::proxy::hold::HoldConfig;

use support::{Harness, Operator, backend, published};

fn holding(max_held: u32, max_wait: Duration) -> ProxyConfig {
    ProxyConfig {
        hold: HoldConfig { max_held, max_wait },
        ..ProxyConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_are_answered_when_an_instance_is_published() {
    // Proves: with no ready instance, concurrent requests wait instead of
    // failing, and all of them are answered by the instance published
    // later (0 failed).
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let harness = Harness::start(
        published(operator.state(), &[]),
        holding(50, Duration::from_secs(10)),
    )
    .await;
    let instance = backend("v1").await;
    let requests = (0..20).map(|_| harness.get("/", &[]));
    let publish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        harness.router.publish(published(
            operator.state(),
            &[(revisions[0], vec![instance])],
        ));
    };
    let started = Instant::now();
    let (answers, ()) = tokio::join!(futures::future::join_all(requests), publish);
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.starts_with("v1"), "{body}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the answers waited for the instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_queue_bound_a_request_is_refused_at_once_with_retry_after() {
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let harness = Harness::start(
        published(operator.state(), &[]),
        holding(1, Duration::from_secs(3)),
    )
    .await;
    let held = harness.get("/", &[]);
    let refused = async {
        // Let the first request take the only place.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let answer = harness.get("/", &[]).await;
        (answer, started.elapsed())
    };
    let (held, ((status, headers, body), waited)) = tokio::join!(held, refused);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("hold-queue-full"), "{body}");
    assert_eq!(headers["retry-after"], "3");
    assert!(
        waited < Duration::from_secs(1),
        "refused at once: {waited:?}"
    );
    // The held one ran into the wait bound: a 503 that says so.
    assert_eq!(held.0, 503, "{}", held.2);
    assert!(held.2.contains("hold-timeout"), "{}", held.2);
    assert_eq!(held.1["retry-after"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_wait_bound_a_held_request_gets_503_with_retry_after() {
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let harness = Harness::start(
        published(operator.state(), &[]),
        holding(10, Duration::from_millis(400)),
    )
    .await;
    let started = Instant::now();
    let (status, headers, body) = harness.get("/", &[]).await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("hold-timeout"), "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Holding off (the default): the same request is refused at once.
    let off = Harness::start(published(operator.state(), &[]), ProxyConfig::default()).await;
    let (status, headers, body) = off.get("/", &[]).await;
    assert_eq!(status, 503);
    assert!(body.contains("no-ready-instance"), "{body}");
    assert!(!headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_keeps_the_revision_its_split_chose() {
    // Proves: a 50/50 split where one revision has no instance yet still
    // sends exactly half of the requests to it (served after it starts),
    // not to the revision that happened to be ready.
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 5_000), (revisions[1], 5_000)]);
    let (warm, cold) = (backend("warm").await, backend("cold").await);
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![warm])]),
        holding(100, Duration::from_secs(10)),
    )
    .await;
    let requests = (0..40).map(|_| harness.get("/", &[]));
    let publish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        harness.router.publish(published(
            operator.state(),
            &[(revisions[0], vec![warm]), (revisions[1], vec![cold])],
        ));
    };
    let (answers, ()) = tokio::join!(futures::future::join_all(requests), publish);
    let cold_answers = answers
        .iter()
        .filter(|(status, _, body)| *status == 200 && body.starts_with("cold"))
        .count();
    let warm_answers = answers
        .iter()
        .filter(|(status, _, body)| *status == 200 && body.starts_with("warm"))
        .count();
    assert_eq!(warm_answers + cold_answers, 40, "0 failed");
    // The same 40 picks on a router where both revisions are warm: the
    // cold revision got exactly the share the split gives it.
    let both_warm = Harness::start(
        published(
            operator.state(),
            &[(revisions[0], vec![warm]), (revisions[1], vec![cold])],
        ),
        ProxyConfig::default(),
    )
    .await;
    let mut expected_cold = 0;
    for _ in 0..40 {
        let (status, _, body) = both_warm.get("/", &[]).await;
        assert_eq!(status, 200, "{body}");
        if body.starts_with("cold") {
            expected_cold += 1;
        }
    }
    assert!(expected_cold > 0);
    assert_eq!(cold_answers, expected_cold, "exactly its share");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_while_held_gives_its_place_back() {
    // Proves: a held request whose client disconnects frees its place at
    // once (the bound is 1 here), so the next request is held, not refused.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let harness = Harness::start(
        published(operator.state(), &[]),
        holding(1, Duration::from_secs(10)),
    )
    .await;
    // A raw client that sends its request head and then closes.
    let mut gone = tokio::net::TcpStream::connect(harness.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut gone, b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(gone);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let instance = backend("v1").await;
    let next = harness.get("/", &[]);
    let publish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        harness.router.publish(published(
            operator.state(),
            &[(revisions[0], vec![instance])],
        ));
    };
    let ((status, _, body), ()) = tokio::join!(next, publish);
    assert_eq!(status, 200, "held, not refused: {body}");
}
