//! gtc's Raft path against etcd on the same machine (issue #12): three etcd
//! members and three gtc members on loopback, both fsyncing; small durable
//! writes at 1 and 16 concurrent clients, side by side in one run, plus the
//! machine's fsync floor.
//!
//! The write measured on gtc is the admin API end to end (the fair one: a
//! client's HTTP request to any member, forwarded to the leader, committed
//! by a quorum, applied by the member that answered, audited):
//! `PATCH /v1/environments/bench-N` with `If-Match`, each client on its own
//! environment so guarded writes never conflict. On etcd it is its v3 HTTP
//! gateway's `PUT` of a 64-byte value (`POST /v3/kv/put`). Clients are spread
//! over the three members of each system and keep one connection each.
//!
//! Run: `bash scripts/bench-raft-vs-etcd.sh` (installs etcd 3.4 from Debian
//! when missing). Knobs: `BENCH_SECONDS` per leg (default 10),
//! `BENCH_ROUNDS` (default 2; legs alternate between the systems).

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use cluster_support::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;

/// One target of the load: a member's HTTP address and how to write to it.
#[derive(Clone)]
enum Target {
    Etcd {
        addr: SocketAddr,
    },
    Gtc {
        addr: SocketAddr,
        token: String,
        env: String,
    },
}

impl Target {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::Etcd { addr } | Target::Gtc { addr, .. } => *addr,
        }
    }
}

struct Leg {
    throughput: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).ceil() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// One client: one keep-alive connection, writes back to back until
/// `until`; the latency of each acknowledged write.
async fn client(target: Target, until: Instant, measure_from: Instant) -> (Vec<Duration>, u64) {
    let stream = tokio::net::TcpStream::connect(target.addr())
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut etag = String::new();
    if let Target::Gtc { token, env, .. } = &target {
        // The environment was created through n1: wait until this member
        // has applied it (its reads come from its own replica).
        let mut attempts = 0;
        etag = loop {
            let request = Request::get(format!("/v1/environments/{env}"))
                .header("host", "bench")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let response = sender.send_request(request).await.expect("read etag");
            let status = response.status();
            let found = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            match found {
                Some(etag) if status.is_success() => break etag,
                _ if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => panic!("GET /v1/environments/{env} gave {status} without an ETag: {body:?}"),
            }
        };
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut n = 0u64;
    let value = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    while Instant::now() < until {
        n += 1;
        let request = match &target {
            Target::Etcd { .. } => {
                let key = base64::engine::general_purpose::STANDARD
                    .encode(format!("bench/{}/{n}", target.addr().port()));
                Request::post("/v3/kv/put")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"key":"{key}","value":"{value}"}}"#
                    ))))
            }
            Target::Gtc { token, env, .. } => Request::patch(format!("/v1/environments/{env}"))
                .header("host", "bench")
                .header("authorization", format!("Bearer {token}"))
                .header("if-match", &etag)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!(r#"{{"name":"write {n}"}}"#)))),
        }
        .expect("request");
        let sent = Instant::now();
        let Ok(response) = sender.send_request(request).await else {
            errors += 1;
            break;
        };
        let ok = response.status().is_success();
        if let Some(next) = response.headers().get("etag").and_then(|v| v.to_str().ok()) {
            etag = next.to_owned();
        }
        let _ = response.into_body().collect().await;
        if !ok {
            errors += 1;
            continue;
        }
        if sent >= measure_from {
            latencies.push(sent.elapsed());
        }
    }
    (latencies, errors)
}

async fn leg(targets: &[Target], clients: usize, seconds: u64) -> Leg {
    let warmup = Duration::from_secs(2);
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(client(
                targets[i % targets.len()].clone(),
                until,
                measure_from,
            ))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, failed) = task.await.expect("client");
        all.extend(latencies);
        errors += failed;
    }
    all.sort();
    Leg {
        throughput: all.len() as f64 / seconds as f64,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
    }
}

/// The machine's fsync floor: 500 appends of 256 bytes, each followed by
/// `fdatasync`, in the folder the clusters write to.
fn fsync_floor(dir: &Path) -> (Duration, Duration) {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let mut times = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        file.write_all(&[1u8; 256]).expect("write");
        file.sync_data().expect("fdatasync");
        times.push(started.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

struct Etcd(Vec<Child>);

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_etcd(dir: &Path) -> (Etcd, Vec<Target>) {
    let binary = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
    let names = ["e1", "e2", "e3"];
    let clients: Vec<SocketAddr> = names.iter().map(|_| free_tcp()).collect();
    let peers: Vec<SocketAddr> = names.iter().map(|_| free_tcp()).collect();
    let cluster = names
        .iter()
        .zip(&peers)
        .map(|(name, peer)| format!("{name}=http://{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let child = Command::new(&binary)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--listen-client-urls")
            .arg(format!("http://{}", clients[i]))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", clients[i]))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", peers[i]))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", peers[i]))
            .arg("--initial-cluster")
            .arg(&cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("gtc-bench")
            .arg("--log-level")
            .arg("warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e} (install etcd-server)"));
        children.push(child);
    }
    let etcd = Etcd(children);
    for addr in &clients {
        eventually("etcd to serve", || {
            http_get(*addr, "/health").is_some_and(|body| body.contains("true"))
        });
    }
    (
        etcd,
        clients
            .into_iter()
            .map(|addr| Target::Etcd { addr })
            .collect(),
    )
}

fn gtc_targets(home: &Path, members: &[Member], environments: usize) -> Vec<Target> {
    let tokens: Vec<String> = members
        .iter()
        .map(|member| {
            let store = member.store();
            let output = gtc()
                .args([
                    "node", "token", "create", "--role", "operator", "--env", "*",
                ])
                .arg("--id")
                .arg("bench")
                .arg("--store-root")
                .arg(&store)
                .env("GREENTIC_HOME", home)
                .output()
                .expect("token create");
            assert!(output.status.success(), "token create failed");
            let text = String::from_utf8_lossy(&output.stdout);
            let value: serde_json::Value = serde_json::from_str(&text).expect("token json");
            value["result"]["token"].as_str().expect("token").to_owned()
        })
        .collect();
    // The bench's environments are created by the local owner through n1.
    std::fs::write(
        members[0].store().join("policy.json"),
        serde_json::json!({"schema": "greentic.policy.v1",
            "grants": [{"environment_id": "*", "users": ["*"]}]})
        .to_string(),
    )
    .expect("policy");
    for index in 0..environments {
        let answers = home.join(format!("bench-{index}.json"));
        std::fs::write(
            &answers,
            serde_json::json!({"environment_id": format!("bench-{index}"), "name": "bench"})
                .to_string(),
        )
        .expect("answers");
        let (ok, _, text) = run(
            home,
            &[
                "op",
                "env",
                "create",
                "--answers",
                answers.to_str().expect("utf8"),
                "--store-root",
                members[0].store().to_str().expect("utf8"),
            ],
        );
        assert!(ok, "env create: {text}");
    }
    (0..environments)
        .map(|index| {
            let member = index % members.len();
            Target::Gtc {
                addr: members[member].admin,
                token: tokens[member].clone(),
                env: format!("bench-{index}"),
            }
        })
        .collect()
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (floor_p50, floor_p99) = fsync_floor(temp.path());
    let (_etcd, etcd_targets) = start_etcd(&temp.path().join("etcd"));
    let (home, members) = three_members(&temp.path().join("gtc"), false);
    let gtc_all = gtc_targets(&home, &members, 16);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fsync floor (256-byte append + fdatasync, {}): p50 {:.2} ms, p99 {:.2} ms",
        temp.path().display(),
        ms(floor_p50),
        ms(floor_p99)
    );
    println!("| round | clients | system | writes/s | commit p50 ms | commit p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    let mut totals = std::collections::BTreeMap::<(usize, &str), Vec<f64>>::new();
    for round in 1..=rounds {
        for clients in [1usize, 16] {
            let systems: [(&str, &[Target]); 2] = if round % 2 == 1 {
                [("etcd", &etcd_targets), ("gtc", &gtc_all)]
            } else {
                [("gtc", &gtc_all), ("etcd", &etcd_targets)]
            };
            for (name, targets) in systems {
                let targets: Vec<Target> = if name == "gtc" {
                    targets[..clients.min(targets.len())].to_vec()
                } else {
                    targets.to_vec()
                };
                let result = runtime.block_on(leg(&targets, clients, seconds));
                totals
                    .entry((clients, name))
                    .or_default()
                    .push(result.throughput);
                println!(
                    "| {round} | {clients} | {name} | {:.0} | {:.2} | {:.2} | {} |",
                    result.throughput,
                    ms(result.p50),
                    ms(result.p99),
                    result.errors
                );
            }
        }
    }
    for clients in [1usize, 16] {
        let mean = |name| {
            let list = &totals[&(clients, name)];
            list.iter().sum::<f64>() / list.len() as f64
        };
        println!(
            "{clients} client(s): gtc / etcd throughput = {:.2}",
            mean("gtc") / mean("etcd")
        );
    }
    drop(members);
}
