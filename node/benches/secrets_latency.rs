//! Issue 14's figures: latency of `secrets put`, `get` (metadata) and `get`
//! with `reveal` through the admin API on loopback, one request at a time,
//! each on a new connection (as `gtc op --node` sends them), measured side
//! by side in one run on one real node and on a real three-member cluster
//! (QUIC with mutual TLS between the members, Raft on redb). On the cluster
//! request `i` goes to member `i % 3`, so leader and followers share the
//! load; a put there is sealed on that member and committed through Raft by
//! every replica before it answers. Every request is audited and every put
//! fsyncs a version file and the audit log (on every member), so this
//! measures the disk too. Prints p50/p90/p99/max per operation for
//! `BENCH_REQUESTS` (default 500) each, and the cluster's p99 over the
//! single node's.
//!
//! Run: `bash scripts/bench-secrets.sh`.

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;
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

const OPERATIONS: [&str; 3] = ["put", "get", "get reveal"];

/// Sorted samples per operation, for `requests` rounds over `admins`.
fn measure(admins: &[(SocketAddr, String)], requests: usize) -> Vec<Vec<Duration>> {
    let base = "/v1/environments/local/secrets";
    let mut timings = vec![Vec::new(), Vec::new(), Vec::new()];
    for index in 0..requests {
        let (admin, token) = &admins[index % admins.len()];
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
        for ((route, body), samples) in bodies.iter().zip(timings.iter_mut()) {
            let started = Instant::now();
            let status = request(*admin, token, route, body);
            samples.push(started.elapsed());
            assert_eq!(status, 200, "{route} through {admin}");
        }
    }
    for samples in &mut timings {
        samples.sort();
    }
    timings
}

fn token_of(node_file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(node_file).expect("node file");
    let document: serde_json::Value = serde_json::from_str(&text).expect("node json");
    document["token"].as_str().expect("token").to_owned()
}

fn main() {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);

    let home = Home::new();
    let node = Node::start(&home);
    let single = vec![(node.admin, token_of(&home.root().join("local/node.json")))];
    let single = measure(&single, requests);
    drop(node);

    let temp = tempfile::tempdir().expect("temp");
    let _reaper = cluster_support::Reaper(temp.path().to_owned());
    let (_home, members) = cluster_support::three_members(temp.path(), false);
    let admins: Vec<(SocketAddr, String)> = members
        .iter()
        .map(|member| {
            member.wait_serving();
            (member.admin, cluster_support::node_token(member))
        })
        .collect();
    let cluster = measure(&admins, requests);

    println!("| where | operation | requests | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (place, timings) in [("one node", &single), ("3-member cluster", &cluster)] {
        for (name, samples) in OPERATIONS.iter().zip(timings.iter()) {
            println!(
                "| {place} | {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                samples.len(),
                percentile(samples, 0.50),
                percentile(samples, 0.90),
                percentile(samples, 0.99),
                percentile(samples, 1.0),
            );
        }
    }
    for (name, (one, three)) in OPERATIONS.iter().zip(single.iter().zip(cluster.iter())) {
        println!(
            "{name}: cluster p99 / single-node p99 = {:.2}",
            percentile(three, 0.99) / percentile(one, 0.99)
        );
    }
}
