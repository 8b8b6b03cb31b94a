//! Request-driven autoscaling on one real node (issue #19's targets):
//!
//! 1. **Cold starts.** `BENCH_DEPLOYMENTS` deployments (default 20) of the
//!    example service, each scaling to zero (6 s stable window, no grace).
//!    Each waits until its revision has no ready instance, then sends one
//!    request and times it; `BENCH_COLD_STARTS` in all (default 1000). The
//!    deployments run side by side with their cold starts spread out, so a
//!    round of 1000 takes minutes, not the hours one revision would. A few
//!    warm requests after each cold one give, in the same run, what a
//!    request costs without a cold start; the added latency is the
//!    difference.
//! 2. **A step from zero.** One more deployment (Knative's default windows:
//!    60 s stable, 6 s panic; 10 requests per instance at 70 %) at zero
//!    gets 28 clients at once, each keeping one `/slow?ms=100` request in
//!    flight: a load that needs 4 instances. Reported: the most instances
//!    that ran at once, how many instance processes were started, and when
//!    4 were ready (bound: two panic windows).
//! 3. **Idle to zero.** The same revision, once the load stops, reaches 0
//!    instances after its stable window and grace; its next request is
//!    answered.
//!
//! Run: `bash scripts/bench-coldstart.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Home, Node, children, get_at_host, id, lifecycle, service_bundle, stage_and_warm};
use serde_json::json;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1_000.0)
}

/// Adds deployment `bundle_id` on host `<bundle_id>.bench`, stages and
/// warms a scaling bundle of it, sends it all traffic; its revision id.
fn deploy(home: &Home, bundle_id: &str, scaling: &serde_json::Value) -> String {
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": bundle_id,
                   "route_binding": {"hosts": [format!("{bundle_id}.bench")]}}),
        ),
        "deployment_id",
    );
    let bundle = service_bundle(
        home,
        bundle_id,
        bundle_id,
        &format!("  startup_timeout_seconds: 10\n  instances: 1\n  scaling: {scaling}\n"),
    );
    let revision = stage_and_warm(home, &deployment, &bundle);
    common::wait_until("ready", Duration::from_secs(30), || {
        lifecycle(home, &revision) == "ready"
    });
    home.ok(
        "traffic",
        "set",
        json!({"environment_id": "local", "deployment_id": deployment,
               "idempotency_key": format!("all-{revision}"),
               "entries": [{"revision_id": revision, "weight_percent": 100}]}),
    );
    revision
}

/// `gtc_instances_ready` per revision, scraped every 50 ms.
fn watch_ready(node: &Node, stop: Arc<AtomicBool>) -> Arc<Mutex<HashMap<String, u32>>> {
    let ready = Arc::new(Mutex::new(HashMap::new()));
    let (admin, shared) = (node.admin, Arc::clone(&ready));
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, _, text)) = common::get(admin, "/metrics", None) {
                let mut next = HashMap::new();
                for line in text.lines() {
                    let Some(rest) = line.strip_prefix("gtc_instances_ready{revision=\"") else {
                        continue;
                    };
                    let Some((revision, value)) = rest.split_once("\"} ") else {
                        continue;
                    };
                    if let Ok(value) = value.trim().parse::<f64>() {
                        next.insert(revision.to_owned(), value as u32);
                    }
                }
                if let Ok(mut shared) = shared.lock() {
                    *shared = next;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    ready
}

fn ready_of(ready: &Mutex<HashMap<String, u32>>, revision: &str) -> Option<u32> {
    ready.lock().ok()?.get(revision).copied()
}

struct ColdRun {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    failed: Vec<String>,
}

fn cold_starts(home: &Home, node: &Node, ready: &Arc<Mutex<HashMap<String, u32>>>) -> ColdRun {
    let total = knob("BENCH_COLD_STARTS", 1000);
    let deployments = knob("BENCH_DEPLOYMENTS", 20).max(1);
    let rounds = total.div_ceil(deployments);
    let scaling = json!({
        "min_instances": 0, "max_instances": 4, "target_concurrency": 10,
        "stable_window_seconds": 6, "panic_window_seconds": 2,
        "scale_to_zero_grace_seconds": 0, "queue_size": 100, "queue_wait_seconds": 30,
    });
    let revisions: Vec<(String, String)> = (0..deployments)
        .map(|i| {
            let bundle_id = format!("cold{i}");
            let revision = deploy(home, &bundle_id, &scaling);
            (format!("{bundle_id}.bench"), revision)
        })
        .collect();
    eprintln!("{deployments} deployments ready; {rounds} cold starts each");
    let run = Arc::new(Mutex::new(ColdRun {
        cold: Vec::new(),
        warm: Vec::new(),
        failed: Vec::new(),
    }));
    let threads: Vec<_> = revisions
        .into_iter()
        .enumerate()
        .map(|(i, (host, revision))| {
            let (addr, ready, run) = (node.addr, Arc::clone(ready), Arc::clone(&run));
            std::thread::spawn(move || {
                for round in 0..rounds {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while ready_of(&ready, &revision) != Some(0) {
                        assert!(Instant::now() < deadline, "{revision} never reached zero");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    // Spread the deployments' cold starts over a second.
                    std::thread::sleep(Duration::from_millis(
                        ((i * 7919 + round * 104_729) % 1000) as u64,
                    ));
                    let started = Instant::now();
                    let answer = get_at_host(addr, &host, "/");
                    let cold = started.elapsed();
                    let mut warm = Vec::new();
                    for _ in 0..3 {
                        let started = Instant::now();
                        if let Ok((200, _, _)) = get_at_host(addr, &host, "/") {
                            warm.push(started.elapsed());
                        }
                    }
                    if let Ok(mut run) = run.lock() {
                        match answer {
                            Ok((200, _, _)) => run.cold.push(cold),
                            Ok((status, _, body)) => run.failed.push(format!("{status} {body}")),
                            Err(error) => run.failed.push(error),
                        }
                        run.warm.extend(warm);
                    }
                    // Ready again before waiting for the next zero.
                    while ready_of(&ready, &revision) == Some(0)
                        && started.elapsed() < Duration::from_secs(5)
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("deployment thread");
    }
    let mut run = std::mem::replace(
        &mut *run.lock().expect("run"),
        ColdRun {
            cold: Vec::new(),
            warm: Vec::new(),
            failed: Vec::new(),
        },
    );
    run.cold.sort();
    run.warm.sort();
    run
}

fn step_from_zero(home: &Home, node: &Node, ready: &Arc<Mutex<HashMap<String, u32>>>) {
    let scaling = json!({
        "min_instances": 0, "max_instances": 10, "target_concurrency": 10,
        "scale_to_zero_grace_seconds": 0,
    });
    let revision = deploy(home, "step", &scaling);
    let deadline = Instant::now() + Duration::from_secs(120);
    eprintln!("step: waiting for {revision} to reach zero (60 s stable window)");
    while ready_of(ready, &revision) != Some(0) || !children(node.pid()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the step revision never reached zero"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let clients: Vec<_> = (0..28)
        .map(|_| {
            let (addr, stop, failed) = (node.addr, Arc::clone(&stop), Arc::clone(&failed));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !matches!(
                        get_at_host(addr, "step.bench", "/slow?ms=100"),
                        Ok((200, _, _))
                    ) && let Ok(mut failed) = failed.lock()
                    {
                        *failed += 1;
                    }
                }
            })
        })
        .collect();
    let mut pids = BTreeSet::new();
    let mut most = 0;
    let mut four_at = None;
    while started.elapsed() < Duration::from_secs(30) {
        let now = children(node.pid());
        most = most.max(now.len());
        pids.extend(now);
        if four_at.is_none() && ready_of(ready, &revision).is_some_and(|n| n >= 4) {
            four_at = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let failed = *failed.lock().expect("failed");
    println!();
    println!("| step from 0 to 28 in flight (needs 4 at 10 × 70 %) | figure |");
    println!("|---|---|");
    println!("| most instances at once | {most} |");
    println!("| instance processes started | {} |", pids.len());
    println!(
        "| 4 ready after | {} (bound: two panic windows, 12 s) |",
        four_at.map_or_else(|| "never".to_owned(), |at| format!("{} ms", ms(at)))
    );
    println!("| failed requests | {failed} |");

    let idle_from = Instant::now();
    let deadline = idle_from + Duration::from_secs(150);
    while ready_of(ready, &revision) != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the step revision never went back to zero"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let to_zero = idle_from.elapsed();
    let answer = get_at_host(node.addr, "step.bench", "/");
    println!(
        "| idle → 0 instances after | {} s (stable window 60 s + grace 0 s) |",
        to_zero.as_secs()
    );
    println!(
        "| first request after that | {} |",
        match answer {
            Ok((status, _, _)) => status.to_string(),
            Err(error) => error,
        }
    );
}

fn main() {
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let node = Node::start(&home);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = watch_ready(&node, Arc::clone(&stop));
    let run = cold_starts(&home, &node, &ready);
    let warm_p50 = percentile(&run.warm, 0.5);
    let added = |d: Duration| d.saturating_sub(warm_p50);
    println!(
        "| cold starts | n | p50 ms | p99 ms | max ms | added p50 ms | added p99 ms | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| cold (first request at 0 instances) | {} | {} | {} | {} | {} | {} | {} |",
        run.cold.len(),
        ms(percentile(&run.cold, 0.5)),
        ms(percentile(&run.cold, 0.99)),
        ms(run.cold.last().copied().unwrap_or_default()),
        ms(added(percentile(&run.cold, 0.5))),
        ms(added(percentile(&run.cold, 0.99))),
        run.failed.len()
    );
    println!(
        "| warm (same run, instance up) | {} | {} | {} | {} | | | |",
        run.warm.len(),
        ms(warm_p50),
        ms(percentile(&run.warm, 0.99)),
        ms(run.warm.last().copied().unwrap_or_default()),
    );
    for failure in run.failed.iter().take(5) {
        println!("failed: {failure}");
    }
    step_from_zero(&home, &node, &ready);
    stop.store(true, Ordering::Relaxed);
}
