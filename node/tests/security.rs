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
    let header_timeout = Duration::from_millis(1500);
    let node = Node::start_with(
        &home,
        &[
            "--header-timeout-ms",
            "1500",
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
    while opened.elapsed() < header_timeout.mul_f32(0.9) {
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
    assert!(answered >= 40, "only {answered} normal requests were made");

    // Every held connection is closed within the head deadline (evicted
    // earlier, or cut at the deadline), with scheduling slack.
    let deadline = header_timeout + Duration::from_millis(1000);
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
