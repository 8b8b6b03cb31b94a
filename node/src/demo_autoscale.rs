//! `gtc demo --autoscale`: request-driven autoscaling in one command. On
//! the same throwaway node as `gtc demo`, one revision of the example
//! service that scales to zero (6 s stable window, 2 s grace, 4 requests
//! per instance):
//!
//! 1. idle, it goes to 0 instances;
//! 2. a load generator (16 clients, each keeping one 250 ms request in
//!    flight) brings it up from zero, through a cold start, to what the
//!    load needs; once a second the demo prints the instances ready, the
//!    autoscaler's decision and mode, and the requests answered and failed;
//! 3. when the load stops it goes back to 0 after its window and grace,
//!    and the next request is answered after a cold start again.
//!
//! It reads what it prints from the node's own `/metrics`, and exits
//! non-zero, saying why, if a request failed, the revision did not scale
//! beyond one instance under the load, or did not return to zero.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deploy::ids::{EnvId, RevisionId};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::context::Context;
use crate::demo_support::{
    HttpClient, add_deployment, build_example_with_runtime, fail, request_path, split,
    stage_and_warm, wait_generation, wait_ready,
};
use crate::error::CliError;
use crate::node_cmd::RunningNode;
use crate::output::outln;

/// The revision's scaling: to zero after 6 s idle and a 2 s grace, up to 8
/// instances of 4 concurrent requests (at 100 %, so the counts read plainly).
const SCALING: &str = "  instances: 1\n  scaling:\n    min_instances: 0\n    max_instances: 8\n    target_concurrency: 4\n    target_utilization_percent: 100\n    stable_window_seconds: 6\n    panic_window_seconds: 2\n    scale_to_zero_grace_seconds: 2\n    queue_size: 200\n    queue_wait_seconds: 30\n";
/// Load clients, each with one request in flight: 16 / 4 = 4 instances.
const CLIENTS: u64 = 16;
/// How long each load request takes at the example service.
const REQUEST_PATH: &str = "/slow?ms=250";
/// How long the load runs.
const LOAD_FOR: Duration = Duration::from_secs(12);
/// How long the revision may take to reach zero (window + grace + ticks).
const TO_ZERO_BOUND: Duration = Duration::from_secs(30);

/// The value of `name{revision="…"}` (or `name` alone) in a `/metrics` text.
fn metric(text: &str, name: &str, revision: RevisionId) -> Option<f64> {
    let labelled = format!("{name}{{revision=\"{revision}\"");
    text.lines()
        .find(|line| line.starts_with(&labelled) || line.starts_with(&format!("{name} ")))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The node's `/metrics` text.
async fn scrape(client: &HttpClient, admin: SocketAddr) -> Result<String, CliError> {
    use http_body_util::BodyExt;
    let uri = format!("http://{admin}/metrics")
        .parse::<hyper::Uri>()
        .map_err(|e| fail(e.to_string()))?;
    let response = client
        .get(uri)
        .await
        .map_err(|e| fail(format!("cannot read /metrics: {e}")))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(format!("cannot read /metrics: {e}")))?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One line of the timeline.
async fn report(
    client: &HttpClient,
    admin: SocketAddr,
    revision: RevisionId,
    since: Instant,
    answered: u64,
    failed: u64,
) -> Result<u32, CliError> {
    let text = scrape(client, admin).await?;
    let ready = metric(&text, "gtc_instances_ready", revision).unwrap_or(0.0) as u32;
    let desired = metric(&text, "gtc_autoscaler_desired_instances", revision).unwrap_or(0.0);
    let panic = metric(&text, "gtc_autoscaler_panic_mode", revision).unwrap_or(0.0) > 0.0;
    let stable = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "gtc_autoscaler_concurrency{{revision=\"{revision}\",window=\"stable\""
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    outln!(
        "  {:>5.1} s  ready {ready:>2}  decided {desired:>2}{}  in flight (stable avg) {stable:>5.1}  answered {answered:>5}  failed {failed}",
        since.elapsed().as_secs_f64(),
        if panic { " (panic)" } else { "        " },
    );
    Ok(ready)
}

/// Waits until the revision has no ready instance, printing the timeline.
async fn until_zero(
    client: &HttpClient,
    admin: SocketAddr,
    revision: RevisionId,
    answered: u64,
) -> Result<Option<Duration>, CliError> {
    let since = Instant::now();
    while since.elapsed() < TO_ZERO_BOUND {
        if report(client, admin, revision, since, answered, 0).await? == 0 {
            return Ok(Some(since.elapsed()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(None)
}

/// Runs the demo on `node`, whose store is at `store_root`.
pub(crate) async fn drive(
    node: &RunningNode,
    store_root: &Path,
    work: &Path,
    service: &Path,
) -> Result<i32, CliError> {
    let context = Context::open(Some(store_root.to_owned()))?;
    let bundle = build_example_with_runtime(work, "v1", service, &[], SCALING)?;
    outln!(
        "built the example bundle with a scaling section (0..8 instances, 4 requests each, idle → 0 after 6 s + 2 s): {}",
        bundle.display()
    );
    let deployment = tokio::task::block_in_place(|| add_deployment(&context))?;
    let revision = tokio::task::block_in_place(|| stage_and_warm(&context, deployment, &bundle))?;
    wait_ready(&context, &[revision]).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (addr, admin) = (node.router_addr, node.admin_addr);
    let generation = tokio::task::block_in_place(|| {
        split(&context, deployment, "demo-autoscale", &[(revision, 100)])
    })?;
    wait_generation(&client, addr, generation).await?;
    outln!("revision {revision} is ready and serves 100 % (generation {generation})");

    let mut problems = Vec::new();
    outln!("\n1. idle: waiting for it to scale to zero");
    if until_zero(&client, admin, revision, 0).await?.is_none() {
        problems.push(format!("it did not scale to zero within {TO_ZERO_BOUND:?}"));
    }

    outln!(
        "\n2. load: {CLIENTS} clients, each keeping one {REQUEST_PATH} request in flight, for {} s",
        LOAD_FOR.as_secs()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::Mutex::new(None::<Duration>));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, stop, answered, failed, first) = (
                client.clone(),
                Arc::clone(&stop),
                Arc::clone(&answered),
                Arc::clone(&failed),
                Arc::clone(&first),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match request_path(&client, addr, REQUEST_PATH).await {
                        Ok((200, _)) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = first.lock() {
                                first.get_or_insert(started.elapsed());
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let mut most = 0;
    while started.elapsed() < LOAD_FOR {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ready = report(
            &client,
            admin,
            revision,
            started,
            answered.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        )
        .await?;
        most = most.max(ready);
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let (answered, failed) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let first = first.lock().ok().and_then(|first| *first);
    let text = scrape(&client, admin).await?;
    let cold_count = metric(&text, "gtc_router_cold_start_seconds_count", revision);
    let cold_sum = metric(&text, "gtc_router_cold_start_seconds_sum", revision);
    outln!(
        "   answered {answered}, failed {failed}; first answer after the cold start {} ms; held requests answered after a cold start: {} (mean wait {} ms); most instances ready at once: {most}",
        first.map_or_else(|| "-".to_owned(), |d| d.as_millis().to_string()),
        cold_count.unwrap_or(0.0),
        match (cold_sum, cold_count) {
            (Some(sum), Some(count)) if count > 0.0 => format!("{:.1}", sum / count * 1_000.0),
            _ => "-".to_owned(),
        }
    );
    if failed > 0 {
        problems.push(format!("{failed} requests failed under the load"));
    }
    if most < 2 {
        problems.push(format!(
            "the load needs {} instances, but at most {most} were ready",
            CLIENTS / 4
        ));
    }

    outln!("\n3. the load stopped: waiting for it to scale back to zero");
    match until_zero(&client, admin, revision, answered).await? {
        Some(after) => outln!(
            "   back at 0 instances {} s after the load stopped",
            after.as_secs()
        ),
        None => problems.push(format!(
            "it did not scale back to zero within {TO_ZERO_BOUND:?}"
        )),
    }
    let again = Instant::now();
    match request_path(&client, addr, "/").await {
        Ok((200, _)) => outln!(
            "   the next request was answered after a cold start in {} ms",
            again.elapsed().as_millis()
        ),
        other => problems.push(format!("the request after idle got {other:?}")),
    }
    let audit = tokio::task::block_in_place(|| {
        use store::EnvironmentStore;
        context.store.audit_lines(&EnvId::local())
    })?;
    let decisions: BTreeMap<&str, usize> = audit
        .iter()
        .filter(|line| line.contains(&format!("autoscaler:{revision}")))
        .fold(BTreeMap::new(), |mut counts, line| {
            for mode in ["from-zero", "panic", "stable", "idle"] {
                if line.contains(&format!("\"mode\":\"{mode}\"")) {
                    *counts.entry(mode).or_default() += 1;
                }
            }
            counts
        });
    outln!("   the autoscaler's audited decisions, by mode: {decisions:?}");
    if problems.is_empty() {
        outln!("\ndemo OK: 0 → {most} → 0 instances with the traffic, no failed request");
        return Ok(0);
    }
    outln!("\ndemo FAILED:");
    for problem in &problems {
        outln!("  - {problem}");
    }
    Ok(crate::error::EXIT_FAILURE)
}
