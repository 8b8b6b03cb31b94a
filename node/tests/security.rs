//! Hostile clients against a real node (`gtc node run`) on loopback, sized
//! for CI (seconds): connection floods on both listeners while normal
//! requests are answered.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Home, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` from the loopback address `from` (127.0.0.x), so a
/// test can play several client addresses.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(addr).await
}

/// One normal request on a new connection: the status and the time it took.
async fn request(addr: SocketAddr, path: &str) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer);
        text.split(' ')
            .nth(1)
            .and_then(|status| status.parse::<u16>().ok())
            .ok_or_else(|| format!("no HTTP answer: {text:?}"))
    };
    let status = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("{path}: no answer within 5 s"))??;
    Ok((status, started.elapsed()))
}

/// Opens `count` connections from `from`; each sends `prefix` (nothing for
/// an idle one) and then waits. Returns the streams and when they opened.
async fn hold(from: Ipv4Addr, addr: SocketAddr, count: usize, prefix: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = connect_from(from, addr)
            .await
            .expect("connect a slow client");
        if !prefix.is_empty() {
            // The node may already have closed it to admit a newer one.
            let _ = stream.write_all(prefix).await;
        }
        held.push(stream);
    }
    held
}

/// Waits until the peer closes `stream` (EOF or reset), up to `limit`.
async fn closed_within(mut stream: TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.is_ok()
}

/// The value of a counter sample on `/metrics` (0 when absent).
async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let mut stream = TcpStream::connect(admin).await.expect("connect admin");
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("metrics");
    answer
        .lines()
        .find_map(|line| line.strip_prefix(sample))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

const SLOW_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_floods_lock_no_one_out_of_either_listener() {
    // Proves: with hundreds of slow-head and silent connections held on the
    // router and the admin listener (from the normal clients' own address
    // too), every normal request on both is answered, /healthz included;
    // every slow connection is closed within the head deadline; and the
    // limits that tripped are counted in /metrics.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let header_timeout = Duration::from_millis(5000);
    let node = Node::start_with(
        &home,
        &[
            "--header-timeout-ms",
            "5000",
            "--admin-max-connections",
            "128",
            "--admin-max-connections-per-ip",
            "64",
        ],
    );
    let normal = Ipv4Addr::new(127, 0, 0, 1);
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = Vec::new();
    let opened = Instant::now();
    for addr in [node.addr, node.admin] {
        // Slow heads from the normal clients' own address, silent ones
        // from another.
        held.extend(hold(normal, addr, 200, SLOW_HEAD).await);
        held.extend(hold(other, addr, 100, b"").await);
    }

    // Normal requests on both listeners while the flood is held.
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        for (addr, path, expected) in [
            (node.admin, "/healthz", 200),
            (node.admin, "/readyz", 200),
            (node.admin, "/status", 200),
            (node.addr, "/", 404),
        ] {
            let (status, took) = request(addr, path)
                .await
                .unwrap_or_else(|error| panic!("{path} during the flood: {error}"));
            assert_eq!(status, expected, "{path} during the flood");
            slowest = slowest.max(took);
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        opened.elapsed() < header_timeout,
        "the normal requests took {:?}, past the head deadline, so the flood was no longer held while they ran",
        opened.elapsed()
    );

    // Every held connection is closed within the head deadline (evicted
    // earlier, or cut at the deadline), with scheduling slack.
    let deadline = header_timeout + Duration::from_millis(2000);
    let waits = held.into_iter().map(|stream| {
        let left = deadline.saturating_sub(opened.elapsed());
        tokio::spawn(closed_within(stream, left))
    });
    let mut still_open = 0;
    for wait in waits.collect::<Vec<_>>() {
        if !wait.await.expect("join") {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "slow connections left open past the head deadline"
    );

    // The node still serves, and counted what tripped.
    assert_eq!(request(node.admin, "/healthz").await.map(|a| a.0), Ok(200));
    assert_eq!(request(node.addr, "/").await.map(|a| a.0), Ok(404));
    for listener in ["router", "admin"] {
        let timeouts = metric(
            node.admin,
            &format!(
                "gtc_connection_limit_trips_total{{listener=\"{listener}\",limit=\"header_timeout\"}}"
            ),
        )
        .await;
        assert!(timeouts > 0.0, "{listener} head deadline trips counted");
    }
    let evicted = metric(
        node.admin,
        "gtc_connection_limit_trips_total{listener=\"admin\",limit=\"max_connections_per_ip_evicted\"}",
    )
    .await;
    assert!(evicted > 0.0, "admin per-address evictions counted");
    eprintln!("{answered} normal requests answered; slowest {slowest:?}");
}

/// One raw HTTP/1.1 exchange (blocking): the status and the body.
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The node may answer (and close) before reading all of a refused body.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A request with `Connection: close` and a `Content-Length` for `body`.
fn http(method: &str, path: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// Every store file except the audit log, which a denial must grow, the
/// (empty) lock file that writing it creates, and `runtime.json`, the
/// serving node's own record of its instances, which its environment actor
/// rewrites (through a `.tmp-*` file) whatever the requests do.
fn store_without_audit(home: &Home) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = home.snapshot();
    files.retain(|path, _| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        !path.components().any(|c| c.as_os_str() == "audit")
            && name != ".lock"
            && name != "runtime.json"
            && !name.starts_with(".tmp-")
    });
    files
}

fn token(home: &Home, id: &str, role: &str, env: &str) -> String {
    let run = home.gtc(&[
        "node", "token", "create", "--id", id, "--role", role, "--env", env,
    ]);
    assert_eq!(run.code, 0, "token create: {}", run.stderr);
    run.stdout["result"]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn owner_token(home: &Home) -> String {
    let text = std::fs::read_to_string(home.root().join("local/node.json")).expect("node file");
    let document: serde_json::Value = serde_json::from_str(&text).expect("node file json");
    document["token"].as_str().expect("token").to_owned()
}

#[test]
fn hostile_requests_get_their_status_and_change_nothing() {
    // Proves: each hostile request below gets its specific status (and
    // error kind), leaves every store file but the audit log byte-identical,
    // and the node still serves afterwards.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let node = Node::start(&home);
    let owner = owner_token(&home);
    let viewer = token(&home, "viewer", "viewer", "local");
    let elsewhere = token(&home, "elsewhere", "admin", "other");
    let revoked = token(&home, "revoked", "admin", "local");
    let revoke = home.gtc(&["node", "token", "revoke", "--id", "revoked"]);
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    let env = "/v1/environments/local";
    let bundles = format!("{env}/bundles");
    let traffic = format!("{env}/traffic");
    let any = "If-Match: *".to_owned();
    let add = br#"{"bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}}"#;
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let big = vec![b' '; 2 * 1024 * 1024];
    let long_id = format!("{env}/bundles/{}", "a".repeat(8000));
    let long_env = format!("/v1/environments/{}", "e".repeat(3000));
    let (added, answer) = exchange(
        node.admin,
        &http("POST", &bundles, &[bearer(&owner), any.clone()], add),
    );
    assert_eq!(added, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let deployment = common::id(&answer["result"], "deployment_id");
    let split =
        |entry: &str| format!(r#"{{"deployment_id": "{deployment}", "entries": [{entry}]}}"#);
    let both_weights =
        split(r#"{"revision_id": "LATEST", "weight_bps": 10000, "weight_percent": 100}"#);
    type Case = (&'static str, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        // Who may call.
        ("no token", http("POST", &bundles, std::slice::from_ref(&any), add), 401, "unauthenticated"),
        ("unknown token", http("POST", &bundles, &[bearer("gtc_nope"), any.clone()], add), 401, "unauthenticated"),
        ("revoked token", http("POST", &bundles, &[bearer(&revoked), any.clone()], add), 401, "unauthenticated"),
        ("viewer changes", http("POST", &bundles, &[bearer(&viewer), any.clone()], add), 403, "unauthorized"),
        ("other environment's token", http("POST", &bundles, &[bearer(&elsewhere), any.clone()], add), 403, "unauthorized"),
        ("two Authorization headers", http("POST", &bundles, &[bearer(&viewer), bearer(&owner), any.clone()], add), 400, "invalid-request"),
        // Paths and ids.
        ("dot-dot environment", http("GET", "/v1/environments/..", &[bearer(&owner)], b""), 400, "invalid-request"),
        ("encoded slash in an id", http("GET", "/v1/environments/local%2F..%2Fother", &[bearer(&owner)], b""), 400, "invalid-request"),
        ("very long deployment id", http("DELETE", &long_id, &[bearer(&owner), any.clone()], b""), 400, "invalid-request"),
        ("very long environment id", http("GET", &long_env, &[bearer(&owner)], b""), 400, "invalid-request"),
        // Bodies.
        ("malformed JSON", http("POST", &bundles, &[bearer(&owner), any.clone()], b"{\"bundle_id\": "), 400, "invalid-request"),
        ("deeply nested JSON", http("POST", &bundles, &[bearer(&owner), any.clone()], deep.as_bytes()), 400, "invalid-request"),
        ("oversized body", http("POST", &bundles, &[bearer(&owner), any.clone()], &big), 413, "payload-too-large"),
        ("duplicate JSON key", http("POST", &bundles, &[bearer(&owner), any.clone()], br#"{"bundle_id": "shop", "bundle_id": "evil"}"#), 400, "invalid-request"),
        ("NUL in a string", http("POST", &bundles, &[bearer(&owner), any.clone()], br#"{"bundle_id": "sh\u0000op"}"#), 400, "invalid-request"),
        ("both weights", http("POST", &traffic, &[bearer(&owner), any.clone(), "Idempotency-Key: k1".to_owned()], both_weights.as_bytes()), 400, "invalid-argument"),
        ("empty update", http("PATCH", env, &[bearer(&owner), any.clone()], b""), 400, "invalid-argument"),
        // Request smuggling forms (hyper refuses them before any route).
        ("two Content-Length values", b"POST /v1/environments/local/bundles HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 70\r\n\r\nhello".to_vec(), 400, ""),
        ("Content-Length and chunked", b"POST /v1/environments/local/bundles HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/environments HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 401, "unauthenticated"),
        ("obfuscated Transfer-Encoding", b"POST /v1/environments/local/bundles HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n".to_vec(), 400, ""),
    ];
    let mut failures = Vec::new();
    for (name, request, status, kind) in cases {
        let before = store_without_audit(&home);
        let (got, body) = exchange(node.admin, &request);
        let got_kind = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|b| b["error"]["kind"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if got != status || (!kind.is_empty() && got_kind != kind) {
            failures.push(format!(
                "{name}: expected {status} {kind}, got {got} {got_kind} {}",
                &body[..body.len().min(200)]
            ));
        }
        let after = store_without_audit(&home);
        if after != before {
            let changed: Vec<_> = after
                .iter()
                .filter(|(path, bytes)| before.get(*path) != Some(bytes))
                .map(|(path, _)| path.display().to_string())
                .chain(
                    before
                        .keys()
                        .filter(|p| !after.contains_key(*p))
                        .map(|p| p.display().to_string()),
                )
                .collect();
            failures.push(format!("{name}: the store changed: {changed:?}"));
        }
        let (health, _) = exchange(node.admin, &http("GET", "/healthz", &[], b""));
        let (read, _) = exchange(node.admin, &http("GET", env, &[bearer(&owner)], b""));
        if health != 200 || read != 200 {
            failures.push(format!(
                "{name}: the node stopped serving ({health}, {read})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The denials of known callers were audited with their identity.
    let audit = home.audit_lines("local").join("\n");
    assert!(
        audit.contains("viewer") && audit.contains("elsewhere"),
        "denials audited"
    );
    // The same empty update through the CLI is refused the same way.
    let empty = home.gtc(&[
        "op",
        "env",
        "update",
        "--answers",
        home.write("empty.json", r#"{"environment_id": "local"}"#)
            .to_str()
            .expect("utf8"),
    ]);
    assert_eq!(empty.code, 1, "{}", empty.stderr);
    assert_eq!(empty.error_kind(), "invalid-argument");
}
