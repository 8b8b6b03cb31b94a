//! `gtc demo`: the whole product in one command. It starts a node on a
//! fresh temporary store, builds and deploys two revisions of the example
//! bundle, splits traffic 90/10, measures the split, shifts to 0/100 under
//! load without dropping a request, and stops (or keeps running with
//! `--keep`). With `--rollout` it runs two rollouts on that node instead
//! (`demo_rollout`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::cli::{DemoArgs, LogFormat, NodeRunArgs};
use crate::context::Context;
use crate::demo_support::{
    HttpClient, build_example, demo_service_binary, deploy_two_revisions, fail, request, split,
    wait_generation, wait_ready,
};
use crate::error::CliError;
use crate::node_cmd::RunningNode;

/// Concurrent clients while measuring.
const CLIENTS: usize = 8;
/// Load duration after the traffic shift, to show nothing is dropped.
const SHIFT_LOAD: Duration = Duration::from_millis(1500);
/// The observed split may differ from the desired one by this much (points).
const SPLIT_TOLERANCE_PERCENT: f64 = 1.0;

/// Sends `total` requests from `CLIENTS` concurrent clients; counts by revision.
async fn measure(client: &HttpClient, addr: SocketAddr, total: u64) -> (HashMap<String, u64>, u64) {
    let counts = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, counts, failed, next) = (
            client.clone(),
            Arc::clone(&counts),
            Arc::clone(&failed),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match request(&client, addr).await {
                    Ok((200, (revision, _))) => {
                        if let Ok(mut counts) = counts.lock() {
                            *counts.entry(revision).or_insert(0) += 1;
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
    (counts, failed.load(Ordering::Relaxed))
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<i32, CliError> {
    crate::node_cmd::init_tracing(LogFormat::Human);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> Result<i32, CliError> {
    let service = demo_service_binary()?;
    let work = tempfile::Builder::new()
        .prefix("gtc-demo-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create a temporary folder: {e}")))?;
    let store_root = work.path().join("environments");
    crate::output::outln!("gtc demo: a fresh store in {}", work.path().display());
    let bundles = [
        build_example(work.path(), "v1", &service)?,
        build_example(work.path(), "v2", &service)?,
    ];
    crate::output::outln!(
        "built two revisions of the example bundle: {}, {}",
        bundles[0].display(),
        bundles[1].display()
    );

    let metrics = crate::node_cmd::install_metrics()?;
    let node_args = NodeRunArgs {
        env: "local".to_owned(),
        listen: Some(args.listen),
        admin: args.admin,
        log_format: LogFormat::Human,
        poll_ms: 50,
        name: Some("demo".to_owned()),
        limits: crate::cli::ConnectionLimitArgs::default(),
        upstream_connect_timeout_ms: router::proxy::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
        upstream_first_byte_timeout_ms: router::proxy::DEFAULT_FIRST_BYTE_TIMEOUT.as_millis()
            as u64,
        upstream_response_timeout_ms: 30_000,
        hold_requests: 0,
        hold_wait_ms: 30_000,
        store_root: Some(store_root.clone()),
        cluster_dir: None,
        raft_listen: None,
        join: None,
        gossip_listen: None,
        gossip_seed: Vec::new(),
        capacity: 16,
        instance_host: None,
        no_bootstrap: false,
        identity_dir: None,
        admin_tls_cert: None,
        admin_tls_key: None,
        admin_tokens: None,
        raft_heartbeat_ms: consensus::RaftSettings::default().heartbeat_interval_ms,
        raft_election_timeout_ms: String::new(),
        otlp_endpoint: None,
    };
    let node = RunningNode::start(&node_args, Some(store_root.clone()), metrics).await?;
    let outcome = if args.rollout {
        crate::demo_rollout::drive(&node, &store_root, work.path(), &bundles, &service).await
    } else if args.autoscale {
        crate::demo_autoscale::drive(&node, &store_root, work.path(), &service).await
    } else {
        drive(&node, &store_root, &bundles, args.requests).await
    };
    if args.keep && outcome.is_ok() {
        crate::output::outln!(
            "\nkept running: traffic on http://{} , metrics on http://{}/metrics ; Ctrl-C to stop",
            node.router_addr,
            node.admin_addr
        );
        let _ = work.keep();
        crate::node_cmd::wait_for_signal().await;
    }
    node.stop().await;
    outcome
}

async fn drive(
    node: &RunningNode,
    store_root: &Path,
    bundles: &[PathBuf; 2],
    requests: u64,
) -> Result<i32, CliError> {
    let context = Context::open(Some(store_root.to_owned()))?;
    let (deployment, [v1, v2]) = deploy_two_revisions(&context, bundles)?;
    crate::output::outln!(
        "deployment {deployment}: revision v1 {v1}, revision v2 {v2}; warming (2 instances each)..."
    );
    wait_ready(&context, &[v1, v2]).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let addr = node.router_addr;

    let generation = split(&context, deployment, "demo-90-10", &[(v1, 90), (v2, 10)])?;
    wait_generation(&client, addr, generation).await?;
    let (counts, failed) = measure(&client, addr, requests).await;
    crate::output::outln!("\nsplit 90/10 (generation {generation}), {requests} requests:");
    crate::output::outln!(
        "  {:<28} {:>8} {:>9} {:>9}",
        "revision",
        "desired",
        "observed",
        "requests"
    );
    let mut off_target = false;
    for (label, revision, desired) in [("v1", v1, 90.0), ("v2", v2, 10.0)] {
        let served = counts.get(&revision.to_string()).copied().unwrap_or(0);
        let observed = 100.0 * served as f64 / requests.max(1) as f64;
        off_target |= (observed - desired).abs() > SPLIT_TOLERANCE_PERCENT;
        crate::output::outln!(
            "  {:<28} {:>7.2}% {:>8.2}% {:>9}",
            format!("{label} {revision}"),
            desired,
            observed,
            served
        );
    }
    crate::output::outln!("  failed requests: {failed}");

    // Shift everything to v2 while clients keep sending.
    let stop = Arc::new(AtomicBool::new(false));
    let shifted_failures = Arc::new(AtomicU64::new(0));
    let shifted_total = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..CLIENTS / 2 {
        let (client, stop, failures, total) = (
            client.clone(),
            Arc::clone(&stop),
            Arc::clone(&shifted_failures),
            Arc::clone(&shifted_total),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                total.fetch_add(1, Ordering::Relaxed);
                if !matches!(request(&client, addr).await, Ok((200, _))) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shifted = split(&context, deployment, "demo-0-100", &[(v1, 0), (v2, 100)])?;
    wait_generation(&client, addr, shifted).await?;
    tokio::time::sleep(SHIFT_LOAD).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    let (after, _) = measure(&client, addr, 200).await;
    let all_v2 = after.get(&v2.to_string()).copied().unwrap_or(0) == 200;
    let dropped = shifted_failures.load(Ordering::Relaxed);
    crate::output::outln!(
        "\nshifted to 0/100 (generation {shifted}) under load: {} requests, {dropped} failed; afterwards {} of 200 went to v2",
        shifted_total.load(Ordering::Relaxed),
        after.get(&v2.to_string()).copied().unwrap_or(0)
    );
    let healthy = !off_target && failed == 0 && dropped == 0 && all_v2;
    crate::output::outln!(
        "\n{}",
        if healthy {
            "demo OK"
        } else {
            "demo FAILED: see the figures above"
        }
    );
    Ok(if healthy {
        0
    } else {
        crate::error::EXIT_FAILURE
    })
}
