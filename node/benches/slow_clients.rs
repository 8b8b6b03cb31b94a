//! Issue #21's target: with `BENCH_SLOW` (default 1 000) hostile clients
//! held on each listener of a real node for `BENCH_SECONDS` (default 30),
//! every normal request on both listeners is answered, within 100 ms p99.
//! The hostile clients come from `BENCH_SLOW_FROM` (default 127.0.0.2; set
//! 127.0.0.1 for the worst case, the normal clients' own address): each
//! sends part of a request head, then one byte a second (slowloris), and
//! connects again at once whenever the node closes it. The node runs with its
//! default limits. Prints the normal requests' figures per listener and the
//! longest life of a slow connection (to compare with the head deadline).
//!
//! Run: `bash scripts/bench-slow-clients.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Home, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// One slow client: holds a connection with a trickled head; reconnects
/// when closed. Records the longest life of a connection in `longest_ms`.
async fn slow_client(
    from: std::net::Ipv4Addr,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    longest_ms: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let connect = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((from, 0)))?;
            socket.connect(addr).await
        };
        let Ok(mut stream) = connect.await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opened = Instant::now();
        let _ = stream.write_all(SLOW_HEAD).await;
        let mut buffer = [0u8; 512];
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => {
                    if matches!(read, Ok(0) | Err(_)) { break; }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                    if stream.write_all(b"a").await.is_err() { break; }
                }
            }
        }
        longest_ms.fetch_max(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One normal request on a new connection: its time, or why it failed.
async fn request(addr: SocketAddr, path: &str) -> Result<Duration, String> {
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
        match text.split(' ').nth(1) {
            Some("200") | Some("404") => Ok(()),
            _ => Err(format!("answer {:?}", text.lines().next())),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())??;
    Ok(started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).ceil() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let slow = env_number("BENCH_SLOW", 1000) as usize;
    let seconds = env_number("BENCH_SECONDS", 30);
    let from: std::net::Ipv4Addr = std::env::var("BENCH_SLOW_FROM")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(std::net::Ipv4Addr::new(127, 0, 0, 2));
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let node = Node::start(&home);
    let stop = Arc::new(AtomicBool::new(false));
    let mut listeners = Vec::new();
    for (name, addr, path) in [
        ("router", node.addr, "/"),
        ("admin", node.admin, "/healthz"),
    ] {
        let longest = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        for _ in 0..slow {
            tokio::spawn(slow_client(
                from,
                addr,
                Arc::clone(&stop),
                Arc::clone(&longest),
                Arc::clone(&closed),
            ));
        }
        listeners.push((name, addr, path, longest, closed));
    }
    // Let the flood build up before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut measuring = Vec::new();
    for (name, addr, path, _, _) in &listeners {
        for client in 0..4 {
            let (addr, path) = (
                *addr,
                if *name == "admin" && client % 2 == 1 {
                    "/status"
                } else {
                    *path
                },
            );
            measuring.push(tokio::spawn(async move {
                let mut times = Vec::new();
                let mut failures = Vec::new();
                while Instant::now() < until {
                    match request(addr, path).await {
                        Ok(took) => times.push(took),
                        Err(error) => failures.push(error),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (times, failures)
            }));
        }
    }
    let mut results = Vec::new();
    for handle in measuring {
        results.push(handle.await.expect("measuring client"));
    }
    stop.store(true, Ordering::Relaxed);
    println!("slow clients from {from}, normal clients from 127.0.0.1");
    println!(
        "| listener | slow clients | normal requests | answered | p50 | p99 | max | slow connections closed | longest slow connection |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (index, (name, _, _, longest, closed)) in listeners.iter().enumerate() {
        let mut times = Vec::new();
        let mut failures = Vec::new();
        for (t, f) in &results[index * 4..index * 4 + 4] {
            times.extend(t.iter().copied());
            failures.extend(f.iter().cloned());
        }
        times.sort();
        let total = times.len() + failures.len();
        println!(
            "| {name} | {slow} | {total} | {:.2} % | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.1} s |",
            100.0 * times.len() as f64 / total.max(1) as f64,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            closed.load(Ordering::Relaxed),
            longest.load(Ordering::Relaxed) as f64 / 1e3,
        );
        if let Some(first) = failures.first() {
            println!("  {name}: {} failed, first: {first}", failures.len());
        }
    }
    drop(node);
}
