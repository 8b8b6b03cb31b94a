//! The proxy on loopback with real HTTP backends: routing by committed
//! split, generation header, sticky sessions, admin override, error answers,
//! retry on a refused connection, and streamed bodies.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use deploy::command::*;
use deploy::ids::EnvId;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use router::proxy::ProxyConfig;
use tokio::net::TcpListener;

use support::{Harness, Operator, backend, dead_addr, published};

#[tokio::test]
async fn a_99_1_split_is_served_as_committed_with_the_generation() {
    // Proves: requests follow the committed split within ±0.1 pp and every
    // answer names the generation it was routed under.
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 9_900), (revisions[1], 100)]);
    let (a, b) = (backend("v1").await, backend("v2").await);
    let harness = Harness::start(
        published(
            operator.state(),
            &[(revisions[0], vec![a]), (revisions[1], vec![b])],
        ),
        ProxyConfig::default(),
    )
    .await;
    let mut canary = 0;
    let requests = 5_000;
    for _ in 0..requests {
        let (status, headers, body) = harness.get("/", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers["x-greentic-generation"],
            operator.state().generation.to_string()
        );
        if body.starts_with("v2") {
            canary += 1;
        }
    }
    // 1% of 5000 is 50; ±0.1 pp is ±5.
    assert!(
        (45..=55).contains(&canary),
        "canary served {canary} of {requests}"
    );
}

#[tokio::test]
async fn sticky_sessions_hold_until_the_split_changes() {
    // Proves: a client with the cookie stays on its revision for 1000
    // requests, and is re-sampled (new cookie) once a new split is published.
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 5_000), (revisions[1], 5_000)]);
    let (a, b) = (backend("v1").await, backend("v2").await);
    let instances = [(revisions[0], vec![a]), (revisions[1], vec![b])];
    let harness = Harness::start(
        published(operator.state(), &instances),
        ProxyConfig::default(),
    )
    .await;
    let (_, headers, first) = harness.get("/", &[]).await;
    let cookie = headers["set-cookie"]
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let pinned = first.split(' ').next().expect("name").to_owned();
    for _ in 0..1_000 {
        let (_, headers, body) = harness.get("/", &[("cookie", &cookie)]).await;
        assert!(
            body.starts_with(&pinned),
            "sticky session flipped to {body}"
        );
        assert!(!headers.contains_key("set-cookie"));
    }
    operator.split(deployment, &[(revisions[0], 4_000), (revisions[1], 6_000)]);
    harness
        .router
        .publish(published(operator.state(), &instances));
    let (_, headers, _) = harness.get("/", &[("cookie", &cookie)]).await;
    assert!(headers.contains_key("set-cookie"), "a new split re-samples");
}

#[tokio::test]
async fn a_new_split_starts_its_own_pick_sequence_and_a_republish_keeps_it() {
    // Proves: the answers of a split are the first picks of its own
    // sequence, whatever the split before it drew (so a step a rollout cut
    // short after 150 answers still holds its weight exactly), and a
    // publish that leaves the split as it is (instances changed) goes on
    // with the same sequence rather than starting it again.
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 5_000), (revisions[1], 5_000)]);
    let (a, b) = (backend("v1").await, backend("v2").await);
    let instances = [(revisions[0], vec![a]), (revisions[1], vec![b])];
    let harness = Harness::start(
        published(operator.state(), &instances),
        ProxyConfig::default(),
    )
    .await;
    // 37 requests under the 50/50 split: a global counter would start the
    // next split at 37.
    for _ in 0..37 {
        let (status, _, _) = harness.get("/", &[]).await;
        assert_eq!(status, 200);
    }
    operator.split(deployment, &[(revisions[0], 9_000), (revisions[1], 1_000)]);
    harness
        .router
        .publish(published(operator.state(), &instances));
    let canary = |from: u64, to: u64| {
        (from..to)
            .filter(|counter| router::pick_point(*counter) >= 9_000)
            .count()
    };
    let second_v1 = backend("v1").await;
    let mut seen = 0;
    for round in 0..2 {
        for _ in 0..75 {
            let (status, _, body) = harness.get("/", &[]).await;
            assert_eq!(status, 200);
            seen += usize::from(body.starts_with("v2"));
        }
        if round == 0 {
            // The same split published again with another instance of v1,
            // as an instance change does.
            harness.router.publish(published(
                operator.state(),
                &[(revisions[0], vec![a, second_v1]), (revisions[1], vec![b])],
            ));
        }
    }
    assert_eq!(
        seen,
        canary(0, 150),
        "the new split's 150 answers are exactly the first 150 picks of its own sequence"
    );
    assert_ne!(
        canary(0, 150),
        canary(37, 187),
        "the test tells the two apart"
    );
    assert_ne!(
        canary(0, 150),
        canary(0, 75) * 2,
        "the test tells a carried-over sequence from a restarted one"
    );
}

#[tokio::test]
async fn only_admin_callers_choose_the_revision_and_the_token_never_leaks() {
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 10_000), (revisions[1], 0)]);
    let (a, b) = (backend("v1").await, backend("v2").await);
    let config = ProxyConfig {
        admin_token: Some("s3cret-admin".into()),
        ..ProxyConfig::default()
    };
    let harness = Harness::start(
        published(
            operator.state(),
            &[(revisions[0], vec![a]), (revisions[1], vec![b])],
        ),
        config,
    )
    .await;
    let v2 = revisions[1].to_string();
    let (_, _, body) = harness.get("/", &[("x-greentic-revision", &v2)]).await;
    assert!(
        body.starts_with("v1"),
        "without the token the override is ignored: {body}"
    );
    let (_, _, body) = harness
        .get(
            "/",
            &[
                ("x-greentic-revision", &v2),
                ("x-greentic-admin-token", "wrong"),
            ],
        )
        .await;
    assert!(body.starts_with("v1"), "{body}");
    let (_, headers, body) = harness
        .get(
            "/",
            &[
                ("x-greentic-revision", &v2),
                ("x-greentic-admin-token", "s3cret-admin"),
            ],
        )
        .await;
    assert!(
        body.starts_with("v2"),
        "an admin reaches a zero-weight revision: {body}"
    );
    assert!(
        body.ends_with("false"),
        "the admin token is not forwarded: {body}"
    );
    assert_eq!(headers["x-greentic-revision"], v2);
}

#[tokio::test]
async fn errors_are_clear_json_and_refused_connections_are_retried() {
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let live = backend("v1").await;
    let dead = dead_addr().await;
    // One dead and one live instance: every bodiless GET still succeeds.
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![dead, live])]),
        ProxyConfig::default(),
    )
    .await;
    for _ in 0..50 {
        let (status, _, body) = harness.get("/", &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    // A POST is not retried: it may fail with 502, never silently go twice.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            harness
                .send("POST", "/", &[], Bytes::from_static(b"x"))
                .await
                .0,
        );
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 502),
        "{statuses:?}"
    );
    // Only dead instances: 502 with a JSON body naming the problem.
    harness
        .router
        .publish(published(operator.state(), &[(revisions[0], vec![dead])]));
    let (status, headers, body) = harness.get("/", &[]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/json");
    assert!(body.contains("upstream-unavailable"), "{body}");
    // No instance at all: 503.
    harness.router.publish(published(operator.state(), &[]));
    let (status, _, body) = harness.get("/", &[]).await;
    assert_eq!(status, 503);
    assert!(body.contains("no-ready-instance"), "{body}");
    // Traffic cleared: nothing routes there any more, 404.
    operator.run(Command::TrafficClear(DeploymentAnswers {
        environment_id: EnvId::local(),
        deployment_id: deployment,
        idempotency_key: None,
    }));
    harness
        .router
        .publish(published(operator.state(), &[(revisions[0], vec![live])]));
    let (status, headers, body) = harness.get("/x", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no-route"), "{body}");
    assert_eq!(
        headers["x-greentic-generation"],
        operator.state().generation.to_string()
    );
}

#[tokio::test]
async fn large_bodies_stream_through_and_oversized_ones_are_refused() {
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let a = backend("v1").await;
    let config = ProxyConfig {
        max_body_bytes: 8 * 1024 * 1024,
        ..ProxyConfig::default()
    };
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![a])]),
        config,
    )
    .await;
    let body = Bytes::from(vec![b'x'; 4 * 1024 * 1024]);
    let (status, _, answer) = harness.send("POST", "/upload", &[], body).await;
    assert_eq!((status, answer.as_str()), (200, "v1 4194304 false"));
    let (status, _, answer) = harness
        .send(
            "POST",
            "/upload",
            &[],
            Bytes::from(vec![b'x'; 9 * 1024 * 1024]),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
}

#[tokio::test]
async fn tagged_revisions_are_reached_directly_whatever_their_weight() {
    // Proves: `<tag>---<host>` and `x-greentic-tag` reach a tagged revision
    // even at 0% weight; unknown tags get a clear 404; untagged requests
    // still follow the split.
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.run(Command::TrafficSet(TrafficSetAnswers {
        environment_id: EnvId::local(),
        deployment_id: deployment,
        entries: vec![
            TrafficEntryAnswers {
                revision_id: revisions[0].to_string(),
                weight_bps: Some(10_000),
                weight_percent: None,
                tag: Some("stable".into()),
            },
            TrafficEntryAnswers {
                revision_id: revisions[1].to_string(),
                weight_bps: Some(0),
                weight_percent: None,
                tag: Some("canary".into()),
            },
        ],
        updated_by: None,
        idempotency_key: "tags".into(),
        authorization_ref: None,
    }));
    let (a, b) = (backend("v1").await, backend("v2").await);
    let harness = Harness::start(
        published(
            operator.state(),
            &[(revisions[0], vec![a]), (revisions[1], vec![b])],
        ),
        ProxyConfig::default(),
    )
    .await;
    for _ in 0..20 {
        assert!(harness.get("/", &[]).await.2.starts_with("v1"));
    }
    let (_, _, body) = harness.get("/", &[("host", "canary---shop.test")]).await;
    assert!(body.starts_with("v2"), "tag host: {body}");
    let (_, headers, body) = harness.get("/", &[("x-greentic-tag", "canary")]).await;
    assert!(body.starts_with("v2"), "tag header: {body}");
    assert!(
        !headers.contains_key("set-cookie"),
        "a tagged request does not pin a session"
    );
    let (status, _, body) = harness.get("/", &[("x-greentic-tag", "nope")]).await;
    assert_eq!(status, 404);
    assert!(body.contains("no-such-tag"), "{body}");
}

#[tokio::test]
async fn http2_clients_are_served() {
    // Proves: the router speaks HTTP/2 (prior knowledge) to clients while
    // forwarding HTTP/1.1 to instances.
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    let a = backend("v1").await;
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![a])]),
        ProxyConfig::default(),
    )
    .await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let request = Request::builder()
        .uri(format!("http://{}/h2", harness.addr))
        .body(Full::new(Bytes::from_static(b"abc")))
        .expect("request");
    let response = client.request(request).await.expect("h2 response");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"v1 3 false");
}

/// A backend that counts the connections it accepted; with `keep_alive`
/// off it closes each connection after one response.
async fn counting_backend(keep_alive: bool) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_ones_are_replaced() {
    // Proves the per-instance pool: sequential requests share one
    // keep-alive connection, and an instance that closes every connection
    // still answers every request (no request lands on a dead connection).
    let (mut operator, deployment, revisions) = Operator::new(1);
    operator.split(deployment, &[(revisions[0], 10_000)]);
    for keep_alive in [true, false] {
        let (addr, accepted) = counting_backend(keep_alive).await;
        let harness = Harness::start(
            published(operator.state(), &[(revisions[0], vec![addr])]),
            ProxyConfig::default(),
        )
        .await;
        for _ in 0..200 {
            let (status, _, body) = harness.get("/", &[]).await;
            assert_eq!((status, body.as_str()), (200, "ok"));
        }
        let connections = accepted.load(std::sync::atomic::Ordering::SeqCst);
        if keep_alive {
            assert_eq!(
                connections, 1,
                "sequential requests should share one connection"
            );
        } else {
            assert_eq!(connections, 200, "each request needed its own connection");
        }
    }
}

#[tokio::test]
async fn remote_instances_serve_revisions_this_node_does_not_run() {
    // Proves: a router forwards to ready instances on other nodes (from
    // gossip) for revisions it has no local instance of, still by the
    // committed split, and stops as soon as they are withdrawn.
    let (mut operator, deployment, revisions) = Operator::new(2);
    operator.split(deployment, &[(revisions[0], 5_000), (revisions[1], 5_000)]);
    let (local, remote) = (backend("local").await, backend("remote").await);
    let harness = Harness::start(
        published(operator.state(), &[(revisions[0], vec![local])]),
        ProxyConfig::default(),
    )
    .await;
    harness
        .router
        .set_remote_instances(HashMap::from([(revisions[1], vec![remote])]));
    let mut remote_answers = 0;
    for _ in 0..100 {
        let (status, _, body) = harness.get("/", &[]).await;
        assert_eq!(status, 200);
        if body.starts_with("remote") {
            remote_answers += 1;
        }
    }
    // The Weyl-sequence pick keeps a 50/50 split within a request or two.
    assert!(
        (48..=52).contains(&remote_answers),
        "remote served {remote_answers} of 100"
    );
    harness.router.set_remote_instances(HashMap::new());
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(harness.get("/", &[]).await.0);
        }
        statuses
    };
    assert!(
        statuses.contains(&503),
        "withdrawn remote instances are no longer used: {statuses:?}"
    );
}
