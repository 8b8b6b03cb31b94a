//! Issue 14's figure on one node: latency of `secrets put`, `get`
//! (metadata) and `get` with `reveal` through a real node's admin API on
//! loopback, one request at a time, each on a new connection (as `gtc op
//! --node` sends them). Every request is audited and every put fsyncs a
//! version file and the audit log, so this measures the disk too. Prints
//! p50/p90/p99/max per operation for `BENCH_REQUESTS` (default 500) each.
//!
//! Run: `bash scripts/bench-secrets.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Home, Node};

fn request(admin: SocketAddr, token: &str, path: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(admin).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

fn main() {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let home = Home::new();
    let node = Node::start(&home);
    let text = std::fs::read_to_string(home.root().join("local/node.json")).expect("node file");
    let document: serde_json::Value = serde_json::from_str(&text).expect("node json");
    let token = document["token"].as_str().expect("token").to_owned();
    let base = "/v1/environments/local/secrets";
    let mut timings: Vec<(&str, Vec<Duration>)> = vec![
        ("put", Vec::new()),
        ("get", Vec::new()),
        ("get reveal", Vec::new()),
    ];
    for index in 0..requests {
        let path = format!("bench/key-{}", index % 50);
        let bodies = [
            (
                base.to_owned(),
                format!(r#"{{"path":"{path}","value":"value-{index}-xxxxxxxxxxxxxxxx"}}"#),
            ),
            (format!("{base}/get"), format!(r#"{{"path":"{path}"}}"#)),
            (
                format!("{base}/get"),
                format!(r#"{{"path":"{path}","reveal":true}}"#),
            ),
        ];
        for ((route, body), (name, samples)) in bodies.iter().zip(timings.iter_mut()) {
            let started = Instant::now();
            let status = request(node.admin, &token, route, body);
            samples.push(started.elapsed());
            assert_eq!(status, 200, "{name} {route}");
        }
    }
    println!("| operation | requests | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, mut samples) in timings {
        samples.sort();
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            samples.len(),
            percentile(&samples, 0.50),
            percentile(&samples, 0.90),
            percentile(&samples, 0.99),
            percentile(&samples, 1.0),
        );
    }
}
