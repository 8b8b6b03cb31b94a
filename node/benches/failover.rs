//! Failover and rejoin of a 3-member loopback cluster (issue #12's targets):
//! SIGKILL the leader, time until a write through a survivor is
//! acknowledged; start the killed member again on the same addresses, time
//! until its router serves the committed generation, and check that no term
//! moved while it returned. Repeated `BENCH_KILLS` times (default 20); the
//! same for a follower once per round.
//!
//! Run: `bash scripts/bench-failover.sh`.

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::Value;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).ceil() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn status(member: &Member) -> Option<Value> {
    http_get(member.admin, "/status").and_then(|body| serde_json::from_str(&body).ok())
}

fn term(member: &Member) -> Option<u64> {
    status(member)?["cluster"]["term"].as_u64()
}

fn leader(members: &[Member]) -> usize {
    let mut found = None;
    eventually("a leader", || {
        found = members
            .iter()
            .position(|m| status(m).is_some_and(|s| s["cluster"]["state"] == "leader"));
        found.is_some()
    });
    found.expect("leader")
}

/// A write through `member` (the operator's CLI, as a user runs it),
/// retried until acknowledged; how long from `since`.
fn write_until_acknowledged(home: &std::path::Path, member: &Member, name: &str) -> u64 {
    let answers = home.join(format!("{name}.json"));
    std::fs::write(
        &answers,
        serde_json::json!({"environment_id": "local", "bundle_id": name,
            "route_binding": {"path_prefixes": [format!("/{name}")]}})
        .to_string(),
    )
    .expect("answers");
    loop {
        let store = member.store();
        let (ok, value, _) = run(
            home,
            &[
                "op",
                "bundles",
                "add",
                "--answers",
                answers.to_str().expect("utf8"),
                "--store-root",
                store.to_str().expect("utf8"),
            ],
        );
        if ok {
            return value["generation"].as_u64().expect("generation");
        }
    }
}

fn rejoin(home: &std::path::Path, member: &mut Member, generation: u64) -> Duration {
    let started = Instant::now();
    member.start(home, None);
    loop {
        if get(member.router).and_then(|(_, g, _)| g) >= Some(generation) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never rejoined"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    let kills: usize = std::env::var("BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, mut members) = three_members(temp.path(), false);
    write_until_acknowledged(&home, &members[0], "warmup");

    let mut failover = Vec::new();
    let mut leader_rejoin = Vec::new();
    let mut follower_rejoin = Vec::new();
    let mut terms_moved_on_return = 0;
    for round in 0..kills {
        let old = leader(&members);
        let survivor = (old + 1) % 3;
        members[old].kill();
        let killed = Instant::now();
        let generation =
            write_until_acknowledged(&home, &members[survivor], &format!("failover-{round}"));
        failover.push(killed.elapsed());
        let term_after_election = term(&members[survivor]).expect("term");
        leader_rejoin.push(rejoin(&home, &mut members[old], generation));

        let current = leader(&members);
        let follower = (current + 1) % 3;
        members[follower].kill();
        let generation =
            write_until_acknowledged(&home, &members[current], &format!("follower-{round}"));
        follower_rejoin.push(rejoin(&home, &mut members[follower], generation));
        // Several election timeouts: a returning member that campaigned
        // would have moved the term by now.
        std::thread::sleep(Duration::from_secs(3));
        if members
            .iter()
            .filter_map(term)
            .any(|t| t != term_after_election)
        {
            terms_moved_on_return += 1;
        }
        eprintln!(
            "round {round}: failover {:?}, leader back in {:?}, follower back in {:?}",
            failover.last().expect("measured"),
            leader_rejoin.last().expect("measured"),
            follower_rejoin.last().expect("measured"),
        );
    }
    for list in [&mut failover, &mut leader_rejoin, &mut follower_rejoin] {
        list.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("kills: {kills} of the leader and {kills} of a follower, 3 members on loopback");
    println!("| measure | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (name, list) in [
        (
            "leader SIGKILL → a write through a survivor acknowledged (CLI)",
            &failover,
        ),
        (
            "killed leader started again → its router serves the committed generation",
            &leader_rejoin,
        ),
        (
            "killed follower started again → its router serves the committed generation",
            &follower_rejoin,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            ms(percentile(list, 0.5)),
            ms(percentile(list, 0.99)),
            ms(*list.last().expect("measured"))
        );
    }
    println!(
        "rounds in which a returning member moved the term: {terms_moved_on_return} of {kills}"
    );
}
