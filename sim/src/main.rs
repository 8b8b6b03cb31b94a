//! `sim`: runs seeds of the cluster simulation and reports failures with
//! the command that replays them.
//!
//! ```text
//! RUSTFLAGS='--cfg tokio_unstable --cfg getrandom_backend="custom"' \
//!   cargo run -p sim --release --target-dir target/sim -- --seeds 10000
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use sim::{FaultMix, PlantedBug, RunConfig, RunReport};

/// Runs seeded simulations of a whole cluster under faults.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// How many seeds to run, from --first.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Run this one seed (and print its trace with --trace).
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// Workload steps per run.
    #[arg(long, default_value_t = 80)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    voters: usize,
    #[arg(long, default_value_t = 0)]
    learners: usize,
    #[arg(long, default_value_t = 1)]
    spares: usize,
    /// Run without faults.
    #[arg(long)]
    calm: bool,
    /// Only crashes and restarts, on a calm network: every restart into a
    /// cluster with a live leader is held to the rejoin invariants.
    #[arg(long, conflicts_with = "calm")]
    crash_restart: bool,
    /// Only the leader's disk slowed and the leader killed and restarted at
    /// once (what `--bug leader-restore` needs to show).
    #[arg(long, conflicts_with_all = ["calm", "crash_restart"])]
    leader_bounce: bool,
    /// Plant a known bug (to see the simulator find it).
    #[arg(long, value_parser = ["router-uses-uncommitted-state", "leader-restore", "stale-connections", "skip-duplicate-check", "rollout-counts-itself-twice", "autoscaler-overshoots-from-zero"])]
    bug: Option<String>,
    /// Print every line of the trace of --seed.
    #[arg(long)]
    trace: bool,
    /// For a failing --seed: find the fewest steps that still fail.
    #[arg(long, requires = "seed")]
    shrink: bool,
    /// Seeds run at once, each on its own thread [default: the cores].
    #[arg(long)]
    jobs: Option<usize>,
}

fn config(args: &Args, seed: u64) -> RunConfig {
    let mut config = RunConfig::new(seed);
    config.steps = args.steps;
    config.voters = args.voters;
    config.learners = args.learners;
    config.spares = args.spares;
    config.faults = !args.calm;
    if args.crash_restart {
        config.fault_mix = FaultMix::CrashRestart;
    }
    if args.leader_bounce {
        config.fault_mix = FaultMix::LeaderBounce;
    }
    config.bug = args.bug.as_deref().map(|bug| match bug {
        "leader-restore" => PlantedBug::LeaderRestore,
        "stale-connections" => PlantedBug::StaleConnections,
        "skip-duplicate-check" => PlantedBug::SkipDuplicateCheck,
        "rollout-counts-itself-twice" => PlantedBug::RolloutCountsItselfTwice,
        "autoscaler-overshoots-from-zero" => PlantedBug::AutoscalerOvershootsFromZero,
        _ => PlantedBug::RouterUsesUncommittedState,
    });
    config.keep_trace = args.trace;
    config
}

fn replay_command(args: &Args, seed: u64, steps: usize) -> String {
    let mut command = format!(
        "RUSTFLAGS='--cfg tokio_unstable --cfg getrandom_backend=\"custom\"' cargo run -p sim --release --target-dir target/sim -- --seed {seed} --steps {steps} --voters {} --learners {} --spares {} --trace",
        args.voters, args.learners, args.spares
    );
    if args.calm {
        command.push_str(" --calm");
    }
    if args.crash_restart {
        command.push_str(" --crash-restart");
    }
    if args.leader_bounce {
        command.push_str(" --leader-bounce");
    }
    if let Some(bug) = &args.bug {
        command.push_str(&format!(" --bug {bug}"));
    }
    command
}

fn describe(report: &RunReport) -> String {
    let stats = &report.stats;
    format!(
        "seed {}: {} in {:.1}s simulated, trace {} ({} acked, {} refused, {} unacknowledged, {} served, {} crashes, {} partitions, {} joins, {} leaves, {} terms, {} rejoins checked (slowest {}), {} rollouts started, {} controller decisions, {} analysis advances checked, converged after {})",
        report.seed,
        if report.passed() { "ok" } else { "FAILED" },
        report.simulated.as_secs_f64(),
        &report.trace_hash[..16],
        stats.acked,
        stats.refused,
        stats.unacknowledged,
        stats.served,
        stats.crashes,
        stats.partitions,
        stats.joins,
        stats.leaves,
        stats.terms,
        stats.rejoins_checked,
        stats
            .slowest_rejoin
            .map_or_else(|| "-".to_owned(), |d| format!("{:.3}s", d.as_secs_f64())),
        stats.rollouts_started,
        stats.rollout_decisions,
        stats.rollout_advances_checked,
        stats.converged_after.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.2}s", d.as_secs_f64())
        )
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !sim::entropy::libraries_are_seeded() {
        eprintln!(
            "note: built without --cfg tokio_unstable --cfg getrandom_backend=\"custom\": openraft's and chitchat's own random draws come from the OS, so a seed does not replay exactly (see TESTING.md)"
        );
    }
    if let Some(seed) = args.seed {
        return run_one(&args, seed);
    }
    let started = Instant::now();
    let jobs = args
        .jobs
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1);
    let next = std::sync::atomic::AtomicU64::new(args.first);
    let end = args.first + args.seeds;
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let outcome = sim::run(&config(&args, seed));
                    if let Ok(mut outcomes) = outcomes.lock() {
                        outcomes.push((seed, outcome));
                    }
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_default();
    outcomes.sort_by_key(|(seed, _)| *seed);
    let mut failed = Vec::new();
    let mut simulated = Duration::ZERO;
    let (mut rollouts, mut decisions, mut advances) = (0, 0, 0);
    for (seed, outcome) in outcomes {
        match outcome {
            Ok(report) => {
                simulated += report.simulated;
                rollouts += report.stats.rollouts_started;
                decisions += report.stats.rollout_decisions;
                advances += report.stats.rollout_advances_checked;
                if !report.passed() {
                    println!("{}", describe(&report));
                    for violation in report.violations.iter().take(3) {
                        println!(
                            "  {} at {:.3}s: {}",
                            violation.invariant,
                            violation.at.as_secs_f64(),
                            violation.detail
                        );
                    }
                    println!("  replay: {}", replay_command(&args, seed, args.steps));
                    failed.push(seed);
                }
            }
            Err(error) => {
                println!("seed {seed}: could not run: {error}");
                println!("  replay: {}", replay_command(&args, seed, args.steps));
                failed.push(seed);
            }
        }
    }
    println!(
        "{} seeds from {} on {jobs} threads: {} failed, {:.0}s simulated in {:.1}s of wall time; {rollouts} rollouts started, {decisions} controller decisions, {advances} analysis advances checked against the routers' answers",
        args.seeds,
        args.first,
        failed.len(),
        simulated.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {failed:?}");
        ExitCode::FAILURE
    }
}

fn run_one(args: &Args, seed: u64) -> ExitCode {
    let report = match sim::run(&config(args, seed)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("seed {seed}: could not run: {error}");
            return ExitCode::FAILURE;
        }
    };
    for line in &report.trace_lines {
        println!("{line}");
    }
    println!("{}", describe(&report));
    println!("trace hash {}", report.trace_hash);
    for violation in &report.violations {
        println!(
            "  {} at {:.3}s: {}",
            violation.invariant,
            violation.at.as_secs_f64(),
            violation.detail
        );
    }
    if report.passed() {
        return ExitCode::SUCCESS;
    }
    if args.shrink {
        // A run with fewer steps is a prefix of this one (same seed, same
        // draws), so the smallest failing step count is found by bisection.
        let (mut passing, mut failing) = (0usize, args.steps);
        while failing - passing > 1 {
            let middle = (passing + failing) / 2;
            let mut shorter = config(args, seed);
            shorter.steps = middle;
            shorter.keep_trace = false;
            match sim::run(&shorter) {
                Ok(report) if report.passed() => passing = middle,
                _ => failing = middle,
            }
        }
        println!("shrunk: seed {seed} fails with {failing} steps (passes with {passing})");
        println!("  replay: {}", replay_command(args, seed, failing));
    } else {
        println!("  replay: {}", replay_command(args, seed, args.steps));
    }
    ExitCode::FAILURE
}
