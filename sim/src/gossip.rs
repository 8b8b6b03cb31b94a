//! Gossip at scale: N real [`membership::Membership`] nodes in one process,
//! on chitchat's in-memory `ChannelTransport`, under tokio's paused clock.
//!
//! # What this module owns
//!
//! - The **gossip-scale scenario** ([`run_gossip_scale`]): start N nodes
//!   spread over the first gossip round, wait until every node sees all N
//!   live (*convergence*), let the detectors learn the heartbeat gaps, crash
//!   `crash` nodes, and wait until every survivor sees exactly the survivors
//!   live (*failure detection*). Optionally split the survivors in two,
//!   wait until each side sees only itself, repair the links and wait until
//!   everyone sees everyone again (*heal*).
//! - The figures it measures ([`GossipFigures`]) and their markdown table
//!   ([`report_table`]).
//!
//! Every time it reports is simulated time (`tokio::time`), except
//! [`GossipFigures::wall_time`]. Nothing sleeps to make something happen:
//! each phase waits on the nodes' live-member watches, so a figure is the
//! virtual instant at which the last node's view changed, not a poll step.
//!
//! # What it must not touch
//!
//! - **Gossip itself.** Membership, heartbeats and the phi-accrual failure
//!   detector are the real `membership` crate on real chitchat 0.13, with
//!   the config production uses; this module only starts, crashes and
//!   partitions nodes and watches what they report. It never reimplements
//!   or patches gossip.
//! - **The real world.** The runtime has a timer but no I/O driver, so any
//!   accidental `tokio::net` use fails instead of reaching the network, and
//!   seeds are `ip:port` (a hostname seed would go through real DNS).
//! - **Raft, workloads and cluster invariants**: the rest of `sim/`.
//!
//! # Determinism
//!
//! Every choice made here (start offsets, which nodes crash, partition
//! sides) comes from a ChaCha8 RNG seeded with [`GossipScaleConfig::seed`],
//! so a seed always replays the same faults at the same simulated times.
//! Built with `--cfg tokio_unstable`, tokio's scheduler RNG (which breaks
//! `select!` ties inside chitchat's server loop) is seeded from it too, and
//! each run gets a fresh thread, so thread-local RNGs seeded through the
//! simulation's getrandom backend start over.
//!
//! The figures still do not replay exactly from 3 nodes up: chitchat 0.13
//! collects its gossip candidates (live, dead and seed nodes) into `std`
//! `HashSet`s and picks and orders peers by their iteration order, whose
//! hash keys std draws from the OS, out of any seed's reach. (Checked with
//! `tokio_unstable` and a seeded getrandom backend: 2-node runs, where
//! those sets hold at most one node, replayed identically 6 times out of
//! 6; 3-node runs gave 5 different results in 6.) The same seed gives the same scenario and statistically
//! the same figures, not bit-identical ones; exact replay needs chitchat
//! to sample from an ordered collection (upstream, or a `[patch]`).

mod cluster;
mod report;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use membership::{FailureDetectorSettings, Generation, MembershipConfig};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use cluster::{NodeSpec, SimulatedCluster};

pub use cluster::Phase;
pub use report::report_table;

/// Fewest nodes a scenario runs: with one node there is nothing to gossip.
pub const MIN_NODES: usize = 2;

/// Most nodes a scenario runs. 50 nodes take a few seconds of wall time in
/// a debug build; the cost grows roughly with the square of the node count
/// (each digest lists every node), so larger runs belong in a release build
/// and need this bound raised deliberately.
pub const MAX_NODES: usize = 256;

/// Default gossip round: production's (`membership`'s default), so the
/// figures are the ones a real cluster would see.
pub const DEFAULT_GOSSIP_INTERVAL_MS: u64 = membership::config::DEFAULT_GOSSIP_INTERVAL_MS;

/// Default number of seed nodes every node is given. Production passes one
/// or a few `--gossip-seed`s; three, because crash victims are drawn from
/// all nodes and a crashed seed must not leave the others without one.
pub const DEFAULT_SEED_NODES: usize = 3;

/// Default rounds the converged cluster runs before the crash. The failure
/// detector starts from a prior of one round per heartbeat and needs a few
/// real gaps before its mean reflects the cluster; ten is plenty.
pub const DEFAULT_WARMUP_ROUNDS: u32 = 10;

/// Default longest wait for any one phase, in gossip rounds. Convergence,
/// detection and heal each take tens of rounds at most with phi 8; a phase
/// still unfinished after 200 is a failure, not a slow run.
pub const DEFAULT_PHASE_TIMEOUT_ROUNDS: u32 = 200;

/// Cluster id every simulated node gossips under.
const CLUSTER_ID: &str = "sim";

/// UDP port every simulated node "binds"; nodes differ by IP address, as
/// they would on a real network.
const GOSSIP_PORT: u16 = 7946;

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipScaleConfig {
    /// Nodes started, `MIN_NODES..=MAX_NODES`.
    pub nodes: usize,
    /// Nodes crashed after convergence and warm-up; at least one survives.
    pub crash: usize,
    /// Seeds every random choice of the run (and, under `tokio_unstable`,
    /// tokio's scheduler).
    pub seed: u64,
    /// How many nodes (the first ones) every node is given as seeds.
    pub seed_nodes: usize,
    /// Gossip round, as `MembershipConfig::gossip_interval_ms`.
    pub gossip_interval_ms: u64,
    /// Failure detector, as `MembershipConfig::failure_detector`.
    pub failure_detector: FailureDetectorSettings,
    /// Rounds the converged cluster runs before the crash.
    pub warmup_rounds: u32,
    /// Whether to partition the survivors in two after detection, then heal.
    pub partition: bool,
    /// Longest simulated wait for any one phase, in gossip rounds.
    pub phase_timeout_rounds: u32,
}

/// What one run measured. All durations are simulated time except
/// `wall_time`. `nodes`, `seed`, `gossip_interval`, `crashed_nodes` and the
/// partition's side sizes follow from the config; the rest depends on
/// chitchat's peer choices (see the module doc on determinism).
#[derive(Clone, Debug, PartialEq)]
pub struct GossipFigures {
    /// Nodes started.
    pub nodes: usize,
    /// The seed the run used.
    pub seed: u64,
    /// Gossip round the nodes used.
    pub gossip_interval: Duration,
    /// From the first node's start until every node sees all nodes live.
    /// Nodes start spread over the first round, so this includes up to one
    /// round of staggered starts.
    pub convergence: Duration,
    /// During the warm-up, when nothing fails: how often a node stopped
    /// seeing every node live (a false suspicion or a flap). Should be 0.
    pub false_suspicions: usize,
    /// Names of the crashed nodes, sorted.
    pub crashed_nodes: Vec<String>,
    /// Per survivor, from the crash until it sees every crashed node dead
    /// (and every survivor live): the fastest survivor.
    pub detection_min: Duration,
    /// The median survivor (nearest rank).
    pub detection_p50: Duration,
    /// The slowest survivor: when the whole cluster agrees.
    pub detection_max: Duration,
    /// The partition phase, if it ran.
    pub partition: Option<PartitionFigures>,
    /// Gossip messages sent over the in-memory network, all phases.
    pub messages_total: u64,
    /// Their serialized size in bytes.
    pub bytes_total: u64,
    /// Simulated time the whole run covered.
    pub simulated_total: Duration,
    /// Wall-clock time the run took, runtime setup and shutdown included.
    pub wall_time: Duration,
}

/// The optional partition phase: survivors split in two halves.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionFigures {
    /// Nodes on each side.
    pub side_sizes: (usize, usize),
    /// From the split until every survivor sees only its own side live.
    pub detection_max: Duration,
    /// From the repair until every survivor sees every survivor live.
    pub heal: Duration,
}

/// A rule of [`GossipScaleConfig::validate`] that the config breaks.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GossipScaleConfigError {
    #[error("{nodes} nodes requested, the scenario runs {min}..={max}")]
    NodeCountOutOfRange {
        nodes: usize,
        min: usize,
        max: usize,
    },
    #[error("{crash} of {nodes} nodes to crash; at least {min_survivors} must survive")]
    TooManyCrashes {
        crash: usize,
        nodes: usize,
        min_survivors: usize,
    },
    #[error("{seed_nodes} seed nodes requested, between 1 and {max} allowed")]
    SeedNodesOutOfRange { seed_nodes: usize, max: usize },
    #[error("phase timeout of {rounds} rounds; at least 1 is needed")]
    PhaseTimeoutZero { rounds: u32 },
    #[error("node membership config is invalid: {0}")]
    Membership(#[from] membership::ConfigError),
}

/// Why a run did not produce figures.
#[derive(Debug, thiserror::Error)]
pub enum GossipSimError {
    #[error("invalid gossip scale config: {0}")]
    InvalidConfig(#[from] GossipScaleConfigError),
    #[error("cannot start the simulation thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot build the simulation runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("node {node} did not start: {source}")]
    Start {
        node: String,
        #[source]
        source: membership::StartError,
    },
    #[error("node {node} did not shut down cleanly: {source}")]
    Shutdown {
        node: String,
        #[source]
        source: membership::ShutdownError,
    },
    /// A phase did not reach its condition within the phase timeout.
    #[error(
        "{phase} not reached after {waited:?} of simulated time; nodes not there yet: {waiting_on:?}"
    )]
    PhaseTimeout {
        phase: Phase,
        waited: Duration,
        waiting_on: Vec<String>,
    },
}

impl GossipScaleConfig {
    /// `nodes` nodes, `crash` of them crashed, production gossip timings
    /// and the default seed nodes, warm-up and phase timeout; no partition.
    pub fn new(nodes: usize, crash: usize, seed: u64) -> Self {
        Self {
            nodes,
            crash,
            seed,
            seed_nodes: DEFAULT_SEED_NODES.min(nodes),
            gossip_interval_ms: DEFAULT_GOSSIP_INTERVAL_MS,
            failure_detector: FailureDetectorSettings::default(),
            warmup_rounds: DEFAULT_WARMUP_ROUNDS,
            partition: false,
            phase_timeout_rounds: DEFAULT_PHASE_TIMEOUT_ROUNDS,
        }
    }

    /// Checks every bound, including the node config `membership` would
    /// reject at start.
    pub fn validate(&self) -> Result<(), GossipScaleConfigError> {
        if !(MIN_NODES..=MAX_NODES).contains(&self.nodes) {
            return Err(GossipScaleConfigError::NodeCountOutOfRange {
                nodes: self.nodes,
                min: MIN_NODES,
                max: MAX_NODES,
            });
        }
        // The partition phase needs a survivor on each side.
        let min_survivors = if self.partition { 2 } else { 1 };
        if self.crash.saturating_add(min_survivors) > self.nodes {
            return Err(GossipScaleConfigError::TooManyCrashes {
                crash: self.crash,
                nodes: self.nodes,
                min_survivors,
            });
        }
        let max_seed_nodes = self.nodes.min(membership::config::MAX_SEED_ADDRS);
        if !(1..=max_seed_nodes).contains(&self.seed_nodes) {
            return Err(GossipScaleConfigError::SeedNodesOutOfRange {
                seed_nodes: self.seed_nodes,
                max: max_seed_nodes,
            });
        }
        if self.phase_timeout_rounds == 0 {
            return Err(GossipScaleConfigError::PhaseTimeoutZero {
                rounds: self.phase_timeout_rounds,
            });
        }
        let addrs = node_addrs(self.nodes);
        for index in 0..self.nodes {
            membership_config(self, &addrs, index).validate()?;
        }
        Ok(())
    }

    fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    fn phase_timeout(&self) -> Duration {
        self.gossip_interval() * self.phase_timeout_rounds
    }
}

/// Runs the scenario on a fresh current-thread runtime with paused time
/// and returns what it measured.
///
/// The run gets a thread of its own, so per-thread state that dependencies
/// seed lazily from the OS (or from the simulation's getrandom backend),
/// such as `rand`'s thread RNG, starts fresh for every run instead of
/// carrying over from the caller's previous run. A panic inside the
/// simulation is resumed on the caller's thread.
pub fn run_gossip_scale(config: &GossipScaleConfig) -> Result<GossipFigures, GossipSimError> {
    config.validate()?;
    let wall_start = std::time::Instant::now();
    let config = config.clone();
    let simulation = std::thread::Builder::new()
        .name(format!("gossip-sim-{}", config.seed))
        .spawn(move || {
            crate::entropy::seed_thread(config.seed);
            let runtime = simulation_runtime(config.seed)?;
            runtime.block_on(scenario(&config))
        })
        .map_err(GossipSimError::Thread)?;
    let mut figures = match simulation.join() {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    figures.wall_time = wall_start.elapsed();
    Ok(figures)
}

/// One thread, virtual time, a timer but no I/O driver; under
/// `tokio_unstable` the scheduler's RNG is seeded too.
fn simulation_runtime(seed: u64) -> Result<tokio::runtime::Runtime, GossipSimError> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    #[cfg(not(tokio_unstable))]
    let _ = seed;
    builder.build().map_err(GossipSimError::Runtime)
}

async fn scenario(config: &GossipScaleConfig) -> Result<GossipFigures, GossipSimError> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let specs = node_specs(config, &mut rng);
    let all_nodes: Vec<usize> = (0..config.nodes).collect();
    let started_at = Instant::now();
    let mut cluster = SimulatedCluster::start(specs).await?;

    let converged = cluster
        .wait_for_views(Phase::Convergence, &all_nodes, config.phase_timeout())
        .await?;
    let convergence = latest(&converged).duration_since(started_at);
    let false_suspicions = cluster
        .count_view_departures(&all_nodes, config.gossip_interval() * config.warmup_rounds)
        .await;

    let crashed = rand::seq::index::sample(&mut rng, config.nodes, config.crash).into_vec();
    let survivors: Vec<usize> = all_nodes
        .iter()
        .copied()
        .filter(|index| !crashed.contains(index))
        .collect();
    let crashed_at = Instant::now();
    for &index in &crashed {
        cluster.crash(index).await?;
    }
    let detected = cluster
        .wait_for_views(Phase::Detection, &survivors, config.phase_timeout())
        .await?;
    let mut detection: Vec<Duration> = detected
        .iter()
        .map(|instant| instant.duration_since(crashed_at))
        .collect();
    detection.sort();

    let partition = if config.partition {
        Some(partition_and_heal(&mut cluster, &survivors, config, &mut rng).await?)
    } else {
        None
    };

    let simulated_total = started_at.elapsed();
    let statistics = cluster.statistics();
    let crashed_nodes: BTreeSet<String> = crashed
        .iter()
        .map(|&index| cluster.name(index).to_owned())
        .collect();
    cluster.shutdown().await?;
    Ok(GossipFigures {
        nodes: config.nodes,
        seed: config.seed,
        gossip_interval: config.gossip_interval(),
        convergence,
        false_suspicions,
        crashed_nodes: crashed_nodes.into_iter().collect(),
        detection_min: detection.first().copied().unwrap_or_default(),
        detection_p50: report::nearest_rank(&detection, 50),
        detection_max: detection.last().copied().unwrap_or_default(),
        partition,
        messages_total: statistics.num_messages_total,
        bytes_total: statistics.num_bytes_total,
        simulated_total,
        wall_time: Duration::ZERO,
    })
}

/// Splits `survivors` into two seeded halves, waits until each side sees
/// only itself, repairs every link and waits until all see all again.
async fn partition_and_heal(
    cluster: &mut SimulatedCluster,
    survivors: &[usize],
    config: &GossipScaleConfig,
    rng: &mut ChaCha8Rng,
) -> Result<PartitionFigures, GossipSimError> {
    let mut shuffled = survivors.to_vec();
    shuffled.shuffle(rng);
    let (side_a, side_b) = shuffled.split_at(shuffled.len() / 2);
    let split_at = Instant::now();
    cluster.partition(side_a, side_b).await;
    let split_seen = cluster
        .wait_for_views(Phase::PartitionDetection, survivors, config.phase_timeout())
        .await?;
    let repaired_at = Instant::now();
    cluster.repair(side_a, side_b).await;
    let healed = cluster
        .wait_for_views(Phase::Heal, survivors, config.phase_timeout())
        .await?;
    Ok(PartitionFigures {
        side_sizes: (side_a.len(), side_b.len()),
        detection_max: latest(&split_seen).duration_since(split_at),
        heal: latest(&healed).duration_since(repaired_at),
    })
}

/// The last of `instants`; a wait returns one per node, never none.
fn latest(instants: &[Instant]) -> Instant {
    instants.iter().copied().max().unwrap_or_else(Instant::now)
}

/// Names, addresses, seeds and start offsets of every node. Offsets are
/// drawn first from `rng`, one per node in index order, so the same seed
/// staggers the same way. `config` must be valid (a zero interval would
/// leave no offset to draw).
fn node_specs(config: &GossipScaleConfig, rng: &mut ChaCha8Rng) -> Vec<NodeSpec> {
    use rand::Rng as _;
    let addrs = node_addrs(config.nodes);
    (0..config.nodes)
        .map(|index| {
            let membership = membership_config(config, &addrs, index);
            NodeSpec {
                name: membership.node_name.clone(),
                start_offset: Duration::from_millis(rng.random_range(0..config.gossip_interval_ms)),
                membership,
            }
        })
        .collect()
}

/// Node `index`'s config: production's, with the scenario's timings and the
/// first `seed_nodes` nodes (other than itself) as seeds.
fn membership_config(
    config: &GossipScaleConfig,
    addrs: &[SocketAddr],
    index: usize,
) -> MembershipConfig {
    let name = format!("node-{index:03}");
    let mut membership = MembershipConfig::new(name, CLUSTER_ID, addrs[index], Generation::new(1));
    membership.seed_addrs = addrs[..config.seed_nodes.min(addrs.len())]
        .iter()
        .copied()
        .filter(|addr| *addr != addrs[index])
        .collect();
    membership.gossip_interval_ms = config.gossip_interval_ms;
    membership.failure_detector = config.failure_detector.clone();
    membership
}

/// Every node's gossip address: 10.0.x.y, one host per node, as `ip:port`
/// so that no seed goes through DNS.
fn node_addrs(nodes: usize) -> Vec<SocketAddr> {
    (0..nodes)
        .map(|index| {
            let host = index + 1;
            let ip = Ipv4Addr::new(10, 0, (host / 256) as u8, (host % 256) as u8);
            SocketAddr::from((ip, GOSSIP_PORT))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the bounds are checked before anything starts.
    #[test]
    fn invalid_configs_are_rejected() {
        assert_eq!(GossipScaleConfig::new(10, 2, 1).validate(), Ok(()));
        assert!(matches!(
            GossipScaleConfig::new(1, 0, 1).validate(),
            Err(GossipScaleConfigError::NodeCountOutOfRange { .. })
        ));
        assert!(matches!(
            GossipScaleConfig::new(5, 5, 1).validate(),
            Err(GossipScaleConfigError::TooManyCrashes { .. })
        ));
        let mut partitioned = GossipScaleConfig::new(5, 4, 1);
        partitioned.partition = true;
        assert!(matches!(
            partitioned.validate(),
            Err(GossipScaleConfigError::TooManyCrashes { .. })
        ));
        let mut no_seeds = GossipScaleConfig::new(5, 1, 1);
        no_seeds.seed_nodes = 0;
        assert!(matches!(
            no_seeds.validate(),
            Err(GossipScaleConfigError::SeedNodesOutOfRange { .. })
        ));
        for interval_ms in [0, 1] {
            let mut too_fast = GossipScaleConfig::new(5, 1, 1);
            too_fast.gossip_interval_ms = interval_ms;
            assert!(matches!(
                too_fast.validate(),
                Err(GossipScaleConfigError::Membership(_))
            ));
        }
        assert!(matches!(
            GossipScaleConfig::new(5, usize::MAX, 1).validate(),
            Err(GossipScaleConfigError::TooManyCrashes { .. })
        ));
    }

    /// Proves node addresses are distinct `ip:port`s for the whole range.
    #[test]
    fn node_addresses_are_distinct() {
        let addrs: BTreeSet<_> = node_addrs(MAX_NODES).into_iter().collect();
        assert_eq!(addrs.len(), MAX_NODES);
    }

    /// Proves the same seed staggers and seeds the nodes the same way.
    #[test]
    fn node_specs_follow_the_seed() {
        let config = GossipScaleConfig::new(10, 2, 7);
        let offsets = |seed| {
            node_specs(&config, &mut ChaCha8Rng::seed_from_u64(seed))
                .into_iter()
                .map(|spec| spec.start_offset)
                .collect::<Vec<_>>()
        };
        assert_eq!(offsets(7), offsets(7));
        assert_ne!(offsets(7), offsets(8));
        let specs = node_specs(&config, &mut ChaCha8Rng::seed_from_u64(7));
        assert!(specs[0].membership.seed_addrs.len() == 2);
        assert!(specs[5].membership.seed_addrs.len() == 3);
    }
}
