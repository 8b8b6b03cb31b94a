//! A rollback's reach (issue #13): from the decision to every router of a
//! three-member cluster serving 100 % stable, and the last in-flight
//! candidate request finished, for a rollout's abort and, side by side in
//! the same run, for a person's `traffic set` back to 100 % stable.
//!
//! Each round puts the candidate at 50 % (alternately a rollout at a
//! manual step, or a `traffic set` 50/50), waits until every router serves
//! that, starts in-flight load on every router (`/slow?ms=20` in a loop,
//! two clients per router), then decides: `gtc op rollouts abort`, or
//! `gtc op traffic set` to 100 % stable, each through the next member in
//! turn (two of three go through a follower). The decision's clock starts
//! when the CLI process starts.
//!
//! Run: `bash scripts/bench-rollback.sh`. Knob: `BENCH_ROUNDS` (default
//! 40: 20 of each kind).

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::json;

/// What a client saw: when it sent, when the answer ended, who answered.
struct Seen {
    sent: Instant,
    ended: Instant,
    revision: Option<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Waits until every member's router answers under `generation` or later.
fn every_router_at(members: &[Member], generation: u64, from: Instant) -> Duration {
    let mut slowest = Duration::ZERO;
    for member in members {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((_, Some(served), _)) = get(member.router)
                && served >= generation
            {
                slowest = slowest.max(from.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never served generation {generation}",
                member.name
            );
        }
    }
    slowest
}

/// Two clients per router sending `/slow?ms=20` until stopped.
fn load(
    members: &[Member],
    stop: &Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for member in members {
        for _ in 0..2 {
            let (router, stop, seen) = (member.router, Arc::clone(stop), Arc::clone(&seen));
            clients.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = get_answer_at(router, "/slow?ms=20");
                    let ended = Instant::now();
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(Seen {
                            sent,
                            ended,
                            revision: answer.and_then(|a| a.revision),
                        });
                    }
                }
            }));
        }
    }
    (clients, seen)
}

#[derive(Default)]
struct Figures {
    acknowledged: Vec<Duration>,
    every_router: Vec<Duration>,
    last_candidate_answer: Vec<Duration>,
    candidate_after_every_router: usize,
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, members) = three_members(temp.path(), true);
    let (deployment, revisions) = two_ready_revisions(&home, &members);
    let (stable, candidate) = (&revisions[0], &revisions[1]);
    let generation = set_split(
        &home,
        &members[0],
        &deployment,
        &revisions,
        100,
        "all-stable",
    );
    every_router_at(&members, generation, Instant::now());

    let mut abort = Figures::default();
    let mut manual = Figures::default();
    for round in 0..rounds {
        let via = &members[round % members.len()];
        let by_rollout = round % 2 == 0;
        // The candidate at 50 %, on every router.
        let generation = if by_rollout {
            let split = op(
                &home,
                via,
                "traffic",
                "set",
                json!({"environment_id": "local", "deployment_id": deployment,
                       "idempotency_key": format!("reset-{round}"),
                       "entries": [{"revision_id": stable, "weight_percent": 100}]}),
            );
            every_router_at(
                &members,
                split["generation"].as_u64().expect("generation"),
                Instant::now(),
            );
            let started = op(
                &home,
                via,
                "rollouts",
                "start",
                json!({"environment_id": "local", "deployment_id": deployment,
                       "candidate_revision_id": candidate,
                       "idempotency_key": format!("rollout-{round}"),
                       "steps": [{"weight_bps": 5_000, "until": {"kind": "manual"}}]}),
            );
            started["generation"].as_u64().expect("generation")
        } else {
            set_split(
                &home,
                via,
                &deployment,
                &revisions,
                50,
                &format!("half-{round}"),
            )
        };
        every_router_at(&members, generation, Instant::now());

        let stop = Arc::new(AtomicBool::new(false));
        let (clients, seen) = load(&members, &stop);
        // Let the load reach both revisions on every router.
        std::thread::sleep(Duration::from_millis(200));
        let decided = Instant::now();
        let generation = if by_rollout {
            let aborted = op(
                &home,
                via,
                "rollouts",
                "abort",
                json!({"environment_id": "local", "deployment_id": deployment,
                       "reason": "bench", "idempotency_key": format!("abort-{round}")}),
            );
            aborted["generation"].as_u64().expect("generation")
        } else {
            let split = op(
                &home,
                via,
                "traffic",
                "set",
                json!({"environment_id": "local", "deployment_id": deployment,
                       "idempotency_key": format!("back-{round}"),
                       "entries": [{"revision_id": stable, "weight_percent": 100}]}),
            );
            split["generation"].as_u64().expect("generation")
        };
        let acknowledged = decided.elapsed();
        let every_router = every_router_at(&members, generation, decided);
        let reached = decided + every_router;
        // Load on past the switch: any candidate answer sent after every
        // router switched is a failure of the rollback.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().expect("client");
        }
        let seen = seen.lock().expect("seen");
        let is_candidate = |s: &&Seen| s.revision.as_deref() == Some(candidate.as_str());
        let before = seen
            .iter()
            .filter(|s| s.sent < decided)
            .filter(is_candidate)
            .count();
        assert!(
            before > 0,
            "round {round}: the candidate served nothing before the decision"
        );
        let last_candidate = seen
            .iter()
            .filter(is_candidate)
            .map(|s| s.ended.saturating_duration_since(decided))
            .max()
            .unwrap_or_default();
        let after = seen
            .iter()
            .filter(is_candidate)
            .filter(|s| s.sent > reached)
            .count();
        let figures = if by_rollout { &mut abort } else { &mut manual };
        figures.acknowledged.push(acknowledged);
        figures.every_router.push(every_router);
        figures.last_candidate_answer.push(last_candidate);
        figures.candidate_after_every_router += after;
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "rounds: {rounds} ({} abort, {} traffic set), three members, two /slow?ms=20 clients per router",
        abort.acknowledged.len(),
        manual.acknowledged.len()
    );
    println!("| measure | decision | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (kind, figures) in [("rollouts abort", &mut abort), ("traffic set", &mut manual)] {
        for (name, list) in [
            (
                "decision → acknowledged (CLI start to exit)",
                &mut figures.acknowledged,
            ),
            (
                "decision → every router serves 100 % stable",
                &mut figures.every_router,
            ),
            (
                "decision → last candidate answer ended",
                &mut figures.last_candidate_answer,
            ),
        ] {
            list.sort();
            println!(
                "| {name} | {kind} | {:.1} | {:.1} | {:.1} |",
                ms(percentile(list, 0.5)),
                ms(percentile(list, 0.99)),
                ms(*list.last().expect("measured"))
            );
        }
    }
    println!(
        "candidate answers sent after every router switched: {} (abort), {} (traffic set)",
        abort.candidate_after_every_router, manual.candidate_after_every_router
    );
    assert_eq!(
        abort.candidate_after_every_router + manual.candidate_after_every_router,
        0,
        "a router served the candidate after it switched to 100 % stable"
    );
}
