//! Gossip at scale: real `membership` nodes on chitchat's in-memory
//! transport under paused time (`sim::gossip`).
//!
//! The bounds below come from how chitchat 0.13's phi-accrual detector
//! works, not from measured figures:
//!
//! - phi is `time since the last heartbeat report / mean report gap`, so a
//!   peer is declared dead `phi_threshold × mean gap` after its last report,
//!   at the observer's next round (liveness is re-evaluated once per round);
//! - a heartbeat report comes with a digest, and an observer receives
//!   digests at its own round (the replies to its SYNs) and from the peers
//!   that gossip to it, about `GOSSIP_FANOUT` per round; so the mean gap
//!   lies between about `round / (1 + GOSSIP_FANOUT)` and one round (the
//!   detector's prior is one round, weighted as 5 samples);
//! - after a crash, the crashed node's last heartbeat keeps spreading for
//!   at most as long as the cluster took to converge from a cold start.

use std::time::Duration;

use sim::gossip::{GossipFigures, GossipScaleConfig, report_table, run_gossip_scale};

/// Live peers a chitchat 0.13 node gossips with per round (its private
/// `GOSSIP_COUNT`).
const GOSSIP_FANOUT: u32 = 3;

/// Slack, in rounds, for the round a node waits before re-evaluating
/// liveness.
const LIVENESS_CHECK_ROUNDS: u32 = 1;

fn run(config: &GossipScaleConfig) -> GossipFigures {
    let figures = run_gossip_scale(config).expect("scenario completes");
    eprintln!("{}", report_table(std::slice::from_ref(&figures)));
    figures
}

fn round(config: &GossipScaleConfig) -> Duration {
    Duration::from_millis(config.gossip_interval_ms)
}

/// Earliest a survivor can declare a peer dead after its last report:
/// `phi_threshold` times the shortest plausible mean gap.
fn detection_lower_bound(config: &GossipScaleConfig) -> Duration {
    round(config).mul_f64(config.failure_detector.phi_threshold / f64::from(1 + GOSSIP_FANOUT))
}

/// Latest every survivor declares a crashed peer dead: the last heartbeat
/// spreads for at most `spread`, then `phi_threshold` rounds at a mean gap
/// of one round, plus one round until liveness is re-evaluated.
fn detection_upper_bound(config: &GossipScaleConfig, spread: Duration) -> Duration {
    let rounds = config.failure_detector.phi_threshold + f64::from(LIVENESS_CHECK_ROUNDS);
    round(config).mul_f64(rounds) + spread
}

/// Push-pull gossip with fanout 3 tells all `nodes` about a node within
/// about log2(nodes) rounds; a peer then needs a second heartbeat before
/// the detector can compute phi, and the last node starts up to one round
/// late. Twice that, for unlucky peer choices.
fn convergence_upper_bound(config: &GossipScaleConfig) -> Duration {
    let log2_nodes = usize::BITS - (config.nodes - 1).leading_zeros();
    round(config) * (2 * log2_nodes + 2)
}

fn assert_detection_within_bounds(config: &GossipScaleConfig, figures: &GossipFigures) {
    let lower = detection_lower_bound(config);
    let upper = detection_upper_bound(config, figures.convergence);
    assert!(
        figures.detection_min >= lower,
        "a survivor declared a crash dead after {:?}, sooner than phi allows ({lower:?})",
        figures.detection_min
    );
    assert!(
        figures.detection_min <= figures.detection_p50
            && figures.detection_p50 <= figures.detection_max
    );
    assert!(
        figures.detection_max <= upper,
        "the last survivor saw the crash after {:?}, later than {upper:?}",
        figures.detection_max
    );
}

/// Proves 10 nodes converge within the epidemic bound, raise no false
/// suspicion while healthy, and every survivor declares 2 crashed nodes
/// dead no sooner and no later than the phi-accrual settings allow.
#[test]
fn ten_nodes_converge_and_detect_two_crashes_within_detector_bounds() {
    let config = GossipScaleConfig::new(10, 2, 1);
    let figures = run(&config);

    assert!(
        figures.convergence <= convergence_upper_bound(&config),
        "convergence took {:?}",
        figures.convergence
    );
    assert_eq!(figures.false_suspicions, 0);
    assert_eq!(figures.crashed_nodes.len(), 2);
    assert_detection_within_bounds(&config, &figures);
}

/// Proves a 50-node cluster converges and detects 2 crashes within the
/// same bounds, in well under a minute of wall time in a debug build.
#[test]
fn fifty_nodes_converge_and_detect_within_a_wall_time_budget() {
    let config = GossipScaleConfig::new(50, 2, 1);
    let figures = run(&config);

    eprintln!("50 nodes: wall time {:?}", figures.wall_time);
    assert!(
        figures.wall_time < Duration::from_secs(30),
        "50 nodes took {:?} of wall time",
        figures.wall_time
    );
    assert!(figures.convergence <= convergence_upper_bound(&config));
    assert_eq!(figures.false_suspicions, 0);
    assert_detection_within_bounds(&config, &figures);
}

/// Proves that when the survivors are split in two, each side declares the
/// other dead within the detector bounds, and that after the repair everyone
/// sees everyone again no slower than a cold start converged: rejoining
/// needs fresh heartbeats only, every node already knows every other.
#[test]
fn partitioned_survivors_detect_the_split_and_heal() {
    let mut config = GossipScaleConfig::new(10, 2, 3);
    config.partition = true;
    let figures = run(&config);

    let partition = figures.partition.as_ref().expect("partition phase ran");
    assert_eq!(partition.side_sizes, (4, 4));
    assert!(partition.detection_max >= detection_lower_bound(&config));
    assert!(partition.detection_max <= detection_upper_bound(&config, figures.convergence));
    assert!(
        partition.heal <= figures.convergence,
        "heal took {:?}, convergence {:?}",
        partition.heal,
        figures.convergence
    );
}

/// Proves a faster gossip round scales every figure down with it: the
/// detector's bounds are in rounds, so they hold at 100 ms rounds too.
#[test]
fn bounds_scale_with_the_gossip_round() {
    let mut config = GossipScaleConfig::new(10, 2, 4);
    config.gossip_interval_ms = 100;
    let figures = run(&config);

    assert!(figures.convergence <= convergence_upper_bound(&config));
    assert_detection_within_bounds(&config, &figures);
    assert!(figures.detection_max < Duration::from_secs(2));
}

/// Proves the seed alone decides the faults: the same seed crashes the same
/// nodes and splits the survivors the same way, another seed does not.
#[test]
fn the_seed_decides_which_nodes_fail() {
    let config = |seed| {
        let mut config = GossipScaleConfig::new(6, 2, seed);
        config.partition = true;
        config
    };
    let first = run(&config(11));
    let replay = run(&config(11));
    let other = run(&config(12));

    assert_eq!(first.crashed_nodes, replay.crashed_nodes);
    let sides = |figures: &GossipFigures| figures.partition.as_ref().map(|p| p.side_sizes);
    assert_eq!(sides(&first), sides(&replay));
    assert_ne!(first.crashed_nodes, other.crashed_nodes);
}

/// Would prove a seed replays a run exactly: identical figures twice.
///
/// Only meaningful under `--cfg tokio_unstable`, because only then is
/// tokio's scheduler RNG (which breaks `select!` ties in chitchat's server
/// loop) seeded from the run's seed; without it, replays differ by design.
/// It also needs the simulation build's seeded getrandom backend, because
/// chitchat seeds its peer-selection RNG from `rand::rng()`.
///
/// Ignored because it fails even with both: chitchat 0.13 collects gossip
/// candidates (live, dead and seed nodes) into `std::collections::HashSet`s
/// and samples from their iteration order, and std seeds those hash keys
/// from the OS, out of any seed's reach. Peer choice, and so every figure,
/// differs between runs, even with 3 nodes (send order). Un-ignore once
/// chitchat samples from an ordered collection (upstream fix or `[patch]`).
#[cfg(tokio_unstable)]
#[test]
#[ignore = "chitchat 0.13 picks gossip peers from OS-seeded std HashSet order"]
fn the_same_seed_gives_identical_figures() {
    let config = GossipScaleConfig::new(10, 2, 21);
    let first = run(&config);
    let replay = run(&config);

    let simulated_only = |figures: &GossipFigures| GossipFigures {
        wall_time: Duration::ZERO,
        ..figures.clone()
    };
    assert_eq!(simulated_only(&first), simulated_only(&replay));
}
