//! How long after `gtc op traffic set` is acknowledged does every member's
//! router serve the new split? Three real members on loopback; each change
//! goes through a different member in turn; every router is polled until it
//! answers under the committed generation.
//!
//! Run: `bash scripts/bench-cluster.sh` (builds the example service first).
//! Knob: `BENCH_CHANGES` (default 200).

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let changes: usize = std::env::var("BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, members) = three_members(temp.path(), true);
    let (deployment, revisions) = two_ready_revisions(&home, &members);

    let mut slowest_router = Vec::with_capacity(changes);
    let mut every_router = Vec::with_capacity(changes * members.len());
    let mut acknowledgement = Vec::with_capacity(changes);
    for change in 0..changes {
        let via = &members[change % members.len()];
        let percent = if change % 2 == 0 { 90 } else { 10 };
        let sent = Instant::now();
        let generation = set_split(
            &home,
            via,
            &deployment,
            &revisions,
            percent,
            &format!("change-{change}"),
        );
        let acknowledged = Instant::now();
        acknowledgement.push(acknowledged - sent);
        let mut slowest = Duration::ZERO;
        for member in &members {
            let deadline = acknowledged + Duration::from_secs(30);
            loop {
                if let Some((_, Some(served), _)) = get(member.router)
                    && served >= generation
                {
                    let delay = acknowledged.elapsed();
                    every_router.push(delay);
                    slowest = slowest.max(delay);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never served generation {generation}",
                    member.name
                );
            }
        }
        slowest_router.push(slowest);
    }
    for list in [&mut slowest_router, &mut every_router, &mut acknowledgement] {
        list.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "traffic changes: {changes}, members: {}, each change through the next member in turn",
        members.len()
    );
    println!("| measure | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (name, list) in [
        (
            "operator acknowledgement (CLI process start to exit)",
            &acknowledgement,
        ),
        ("ack → the slowest router serves it", &slowest_router),
        ("ack → each router serves it", &every_router),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            ms(percentile(list, 0.5)),
            ms(percentile(list, 0.99)),
            ms(*list.last().expect("measured"))
        );
    }
}
