//! One simulated run: nodes, the network and disks between them, the
//! operators and users who drive them, the faults, and the final checks.
//!
//! Everything runs on one thread in a tokio current-thread runtime with
//! paused time: timers fire in order of simulated time, and time jumps
//! ahead whenever every task waits. Every choice comes from the run's
//! seed ([`crate::entropy`]), so a run is a function of its seed and
//! configuration, and its trace hash says so.

mod checks;
mod faults;
mod operator;
mod rollouts;
mod scaling;
pub use rollouts::GOSSIP_LAG_ROUNDS;
mod runtime;
mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use consensus::{
    AppliedEntry, ClusterHandle, ClusterNode, ClusterRequest, ClusterResponse, MemberParts, NodeId,
    Outcome, PeerService, StateMachine,
};
use deploy::audit::{Actor, Authorization, Decision};
use deploy::bundle::RouteBinding;
use deploy::command::{
    BundleAddAnswers, Command, CommandEnvelope, DeploymentAnswers, EnvInitAnswers, MintedIds,
    RevisionAnswers, RevisionStageAnswers, RuntimeOutcome, RuntimeReport, TrafficEntryAnswers,
    TrafficSetAnswers,
};
use deploy::ids::{DeploymentId, EnvId, EventId, RevisionId};
use deploy::lifecycle::Lifecycle;
use deploy::placement::NodeCapacity;
use deploy::state::EnvironmentState;
use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, Config, ServerState};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use router::RouteTable;
use router::pick_point;
use router::sticky::{self, StickyKey};
use store::EnvironmentStore;

use crate::disk::{Disk, DiskFault, DiskSpeed};
use crate::entropy::{self, SimRng};
use crate::fault::Fault;
use crate::invariants::{
    Ack, Answer, AppliedChange, Ledger, Served, TableSource, Violation, names,
};
use crate::net::{LinkFaults, Net, NetStats, SimPeers, TransportModel, address};
use crate::trace::Trace;

/// A bug the simulator must find (a test proves it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// The node that receives a write rebuilds its router table from the
    /// state it expects the write to produce, before the write commits.
    RouterUsesUncommittedState,
    /// openraft's default: a restarted leader resumes its term without an
    /// election, even when its log lost entries it had not flushed but the
    /// others had committed.
    LeaderRestore,
    /// The transport before issue #12: a restarted member silently dropped
    /// the packets of its peers' old connections, which they kept using
    /// until the idle timeout, so the leader could not reach it for 30 s.
    StaleConnections,
    /// The state machine applies the first entry after a restart without
    /// checking whether the store already holds it (exactly-once recovery
    /// skipped): a member that crashed between the store's commit and the
    /// bookkeeping write applies that entry twice.
    SkipDuplicateCheck,
    /// The leader reads its own published request counts as another
    /// member's, besides its live ones: every analysis window counts its
    /// router twice.
    RolloutCountsItselfTwice,
    /// The autoscaler starts one instance per held request when a revision
    /// is at zero, with no cap: the overshoot Knative users report
    /// (#4344), past `max_instances`.
    AutoscalerOvershootsFromZero,
}

/// The faults a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultMix {
    /// Every fault of the fault model.
    #[default]
    All,
    /// Crashes and restarts only, on a calm network with fast disks.
    CrashRestart,
    /// The leader's disk made slow, then the leader killed and started
    /// again at once (a supervisor restarting the process), so it comes
    /// back within the election timeout with only what its disk had
    /// flushed, while the others may have committed more.
    LeaderBounce,
}

/// A member restarted into a calm, healthy cluster applies what was
/// committed when it started within this much simulated time (issue #12's
/// target for a restarted member serving the committed split).
pub const REJOIN_BOUND: Duration = Duration::from_secs(2);
/// How long the term is watched after such a restart: a few election
/// timeouts, so a returning member that campaigned would have moved it.
pub const REJOIN_TERM_WATCH: Duration = Duration::from_secs(3);

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// Raft voters at the start.
    pub voters: usize,
    /// Learners added at the start.
    pub learners: usize,
    /// Nodes started outside the cluster, for joins.
    pub spares: usize,
    /// Workload steps (each a few hundred simulated milliseconds).
    pub steps: usize,
    /// Inject faults (crashes, partitions, loss, skew, slow disks, joins).
    pub faults: bool,
    /// Which faults: all of them, or only crashes and restarts on a calm
    /// network (where every restart into a cluster with a live leader is
    /// held to the rejoin invariants).
    pub fault_mix: FaultMix,
    pub bug: Option<PlantedBug>,
    /// How long the healed cluster may take to converge.
    pub settle_bound: Duration,
    /// Keep the trace's lines (for printing), not only its hash.
    pub keep_trace: bool,
    /// Simulated user requests per step.
    pub requests_per_step: usize,
    /// Sticky sessions among the users.
    pub sessions: usize,
}

impl RunConfig {
    /// The default run of `seed`: 3 voters, 1 spare, 80 steps, faults on.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            voters: 3,
            learners: 0,
            spares: 1,
            steps: 80,
            faults: true,
            fault_mix: FaultMix::All,
            bug: None,
            settle_bound: Duration::from_secs(30),
            keep_trace: false,
            requests_per_step: 6,
            sessions: 6,
        }
    }
}

/// Counters of a run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub steps: usize,
    pub applied_entries: u64,
    pub acked: usize,
    pub refused: usize,
    pub unacknowledged: usize,
    pub served: usize,
    pub no_route: usize,
    pub crashes: usize,
    pub lost_unflushed_entries: usize,
    pub partitions: usize,
    pub joins: usize,
    pub leaves: usize,
    pub terms: usize,
    /// Restarts into a calm cluster whose rejoin was checked, and the
    /// slowest of them.
    pub rejoins_checked: usize,
    /// Rollouts the operator started, and the controller's decisions
    /// written (committed or refused).
    pub rollouts_started: usize,
    pub rollout_decisions: usize,
    /// Controller advances on an analysis window that the run checked
    /// against the routers' answers.
    pub rollout_advances_checked: usize,
    /// Autoscaler decisions written (committed or refused).
    pub scale_decisions: usize,
    pub slowest_rejoin: Option<Duration>,
    pub net: NetStats,
    pub converged_after: Option<Duration>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub trace_hash: String,
    pub trace_lines: Vec<String>,
    pub violations: Vec<Violation>,
    pub simulated: Duration,
    pub stats: RunStats,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The first violation of `invariant`, if any.
    pub fn violation_of(&self, invariant: &str) -> Option<&Violation> {
        self.violations.iter().find(|v| v.invariant == invariant)
    }
}

/// Why a run could not even be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot build the simulation runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the run's thread panicked: {0}")]
    Panicked(String),
    #[error("cannot start node n{node}: {message}")]
    Start { node: NodeId, message: String },
    #[error("the cluster elected no leader within {0:?} of simulated time")]
    NoLeader(Duration),
}

/// Runs `config` on a fresh thread (so every thread-local random source
/// starts from the seed) and returns its report.
pub fn run(config: &RunConfig) -> Result<RunReport, SimError> {
    let config = config.clone();
    let handle = std::thread::Builder::new()
        .name(format!("sim-seed-{}", config.seed))
        .spawn(move || {
            entropy::seed_thread(config.seed);
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_time().start_paused(true);
            #[cfg(tokio_unstable)]
            builder.rng_seed(tokio::runtime::RngSeed::from_bytes(
                &config.seed.to_le_bytes(),
            ));
            let runtime = builder.build().map_err(SimError::Runtime)?;
            runtime.block_on(async move { World::new(config)?.run().await })
        })
        .map_err(SimError::Runtime)?;
    handle.join().map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        SimError::Panicked(message)
    })?
}

struct Node {
    id: NodeId,
    disk: Disk,
    /// The member's folder: its replica store and the state machine's
    /// bookkeeping, on the real file system (they survive a crash whole,
    /// as fsynced files do).
    dir: tempfile::TempDir,
    handle: Option<Arc<ClusterHandle>>,
    /// Armed by [`Fault::CrashAfterCommit`]: the next entry the member
    /// applies kills it between the store's commit and the bookkeeping.
    crash_armed: Arc<AtomicBool>,
    /// In the Raft membership (voter or learner).
    member: bool,
    voter: bool,
    /// Added to the timestamps of commands this node receives.
    skew: chrono::Duration,
    /// The revisions it runs (`runtime.rs`).
    runtime: runtime::SimRuntime,
    /// Starts so far: its identity in this life is `n<id>@<life>`.
    life: u64,
    /// Its router's request counts per revision, this life (`rollouts.rs`).
    counts: BTreeMap<RevisionId, deploy::rollout::WindowCounts>,
    /// The rollout controller's memory; used while it leads.
    controller: deploy::rollout::controller::Controller,
    /// The autoscaler's memory per revision; used while it leads
    /// (`scaling.rs`).
    scalers: BTreeMap<RevisionId, scaling::Scaler>,
}

struct Session {
    cookies: BTreeMap<DeploymentId, String>,
    /// The revision, split generation and cookie expiry (Unix seconds)
    /// of the session's last answer per deployment.
    last: BTreeMap<DeploymentId, (RevisionId, u64, i64)>,
}

/// How long a client waits for one write attempt.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Write attempts before the client gives up (the command is then neither
/// acknowledged nor known to be lost).
const WRITE_ATTEMPTS: usize = 6;
/// Simulated instances a node accepts, for placement.
const NODE_CAPACITY: u32 = 8;

struct World {
    config: RunConfig,
    rng: SimRng,
    net: Net,
    nodes: Vec<Node>,
    ledger: Arc<Mutex<Ledger>>,
    raft_config: Arc<Config>,
    epoch: chrono::DateTime<chrono::Utc>,
    sticky_key: StickyKey,
    sessions: Vec<Session>,
    ids: u64,
    picks: u64,
    env: EnvId,
    stats: RunStats,
    /// A restart into a calm cluster being watched (issue #12's invariants).
    rejoin: Option<Rejoin>,
    /// Links held by [`Fault::Hold`] and not released yet.
    held: BTreeSet<(NodeId, NodeId)>,
    settings: consensus::RaftSettings,
    /// Runtime reports members owe the deployer (`runtime.rs`).
    reports: BTreeSet<runtime::PendingReport>,
    /// Each member's last published request counts (`rollouts.rs`).
    gossiped: BTreeMap<NodeId, rollouts::Gossiped>,
    /// Revisions staged as bad: the percentage of requests they fail.
    failing: BTreeMap<RevisionId, u32>,
    /// The simulated time the background load was last counted to.
    loaded_until: Duration,
    /// Requests in flight per revision that scales (`scaling.rs`).
    demand: BTreeMap<RevisionId, f64>,
}

/// A member restarted into a calm cluster with a live leader: it must
/// apply `target` within [`REJOIN_BOUND`], and no term may move meanwhile.
struct Rejoin {
    id: NodeId,
    at: tokio::time::Instant,
    term: u64,
    target: u64,
    /// Set by a watcher task when the member applied `target`.
    caught_up: Arc<Mutex<Option<Duration>>>,
}

impl World {
    fn new(config: RunConfig) -> Result<Self, SimError> {
        let mut rng = entropy::sim_rng(config.seed);
        let transport = if config.bug == Some(PlantedBug::StaleConnections) {
            TransportModel::BEFORE_ISSUE_12
        } else {
            TransportModel::PRODUCTION
        };
        let net = Net::new(entropy::sim_rng(rng.random()), transport);
        let total = config.voters + config.learners + config.spares;
        let mut nodes = Vec::new();
        for id in 1..=total as u64 {
            nodes.push(Node {
                id,
                disk: Disk::new(entropy::sim_rng(rng.random())),
                dir: node_dir().map_err(|error| SimError::Start {
                    node: id,
                    message: format!("cannot create the node's folder: {error}"),
                })?,
                handle: None,
                crash_armed: Arc::new(AtomicBool::new(false)),
                member: id as usize <= config.voters + config.learners,
                voter: id as usize <= config.voters,
                skew: chrono::Duration::zero(),
                runtime: runtime::SimRuntime::default(),
                life: 0,
                counts: BTreeMap::new(),
                controller: deploy::rollout::controller::Controller::new(),
                scalers: BTreeMap::new(),
            });
        }
        // The production configuration, with snapshots often enough that
        // lagging members catch up from one.
        let settings = consensus::RaftSettings {
            snapshot_every_entries: 40,
            entries_kept_after_snapshot: 10,
            ..consensus::RaftSettings::default()
        };
        let mut raft_config =
            consensus::raft_config(&settings).map_err(|error| SimError::Start {
                node: 0,
                message: error.to_string(),
            })?;
        if config.bug == Some(PlantedBug::LeaderRestore) {
            raft_config.enable_leader_restore = Some(true);
        }
        let sticky_key = StickyKey::new(rng.random());
        let sessions = (0..config.sessions)
            .map(|_| Session {
                cookies: BTreeMap::new(),
                last: BTreeMap::new(),
            })
            .collect();
        let epoch = chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000);
        Ok(Self {
            ledger: Arc::new(Mutex::new(Ledger::new(Trace::new(config.keep_trace)))),
            config,
            rng,
            net,
            nodes,
            raft_config: Arc::new(raft_config),
            epoch,
            sticky_key,
            sessions,
            ids: 0,
            picks: 0,
            env: EnvId::local(),
            stats: RunStats::default(),
            rejoin: None,
            held: BTreeSet::new(),
            reports: BTreeSet::new(),
            gossiped: BTreeMap::new(),
            failing: BTreeMap::new(),
            loaded_until: Duration::ZERO,
            demand: BTreeMap::new(),
            settings,
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state of `env` as member `id` last applied it.
    fn applied_state(&self, id: NodeId, env: &EnvId) -> Option<EnvironmentState> {
        self.ledger()
            .applied
            .get(&id)
            .and_then(|states| states.get(env))
            .cloned()
    }

    fn trace(&self, what: impl AsRef<str>) {
        self.ledger().trace.record(what);
    }

    fn cluster_node(id: NodeId) -> ClusterNode {
        ClusterNode {
            name: format!("n{id}"),
            raft_addr: address(id),
            admin_addr: String::new(),
        }
    }

    /// Starts node `index` as the node binary does: consensus's state
    /// machine over the store in its folder, consensus's cluster handle
    /// over the simulated network and disk.
    async fn start(&mut self, index: usize) -> Result<(), SimError> {
        let id = self.nodes[index].id;
        let failed = |message: String| SimError::Start { node: id, message };
        let dir = self.nodes[index].dir.path().to_owned();
        let state_machine = StateMachine::open(&dir.join("store"), &dir.join("raft"))
            .map_err(|error| failed(error.to_string()))?;
        let ledger = Arc::clone(&self.ledger);
        state_machine.observe(Arc::new(move |entry: AppliedEntry| {
            ledger
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .applied(AppliedChange::of(id, entry));
        }));
        let armed = Arc::clone(&self.nodes[index].crash_armed);
        state_machine.set_crash_point(Arc::new(move |_| armed.swap(false, Ordering::SeqCst)));
        if self.config.bug == Some(PlantedBug::SkipDuplicateCheck) {
            state_machine.plant_skipped_duplicate_check();
        }
        let service = PeerService::default();
        service.set_store_root(dir.join("store"));
        self.net.attach(id, service.clone());
        let parts = MemberParts {
            node_id: id,
            node: Self::cluster_node(id),
            raft_config: Arc::clone(&self.raft_config),
            settings: self.settings.clone(),
            state_machine,
            service,
            peers: Arc::new(SimPeers {
                from: id,
                net: self.net.clone(),
            }),
        };
        let handle = ClusterHandle::start_with(parts, self.nodes[index].disk.log_store())
            .await
            .map_err(|error| {
                self.net.detach(id);
                failed(error.to_string())
            })?;
        let raft = handle.raft().clone();
        // Watches every state change for the one-leader-per-term check.
        let mut metrics = raft.metrics();
        let ledger = Arc::clone(&self.ledger);
        tokio::spawn(async move {
            loop {
                let leader = {
                    let seen = metrics.borrow_watched();
                    (seen.state == ServerState::Leader).then_some(seen.current_term)
                };
                if let Some(term) = leader {
                    ledger
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .leader(term, id);
                }
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        });
        self.nodes[index].handle = Some(handle);
        self.nodes[index].life += 1;
        self.trace(format!("n{id} started"));
        Ok(())
    }

    /// Starts a crashed node again; failing to is a violation.
    async fn restart(&mut self, index: usize) {
        if let Err(error) = self.start(index).await {
            let id = self.nodes[index].id;
            self.ledger()
                .violate(names::RESTARTS_FROM_DISK, format!("n{id}: {error}"));
        }
    }

    async fn crash(&mut self, index: usize, fault: DiskFault) {
        let id = self.nodes[index].id;
        self.net.detach(id);
        if let Some(handle) = self.nodes[index].handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
        }
        self.nodes[index].crash_armed.store(false, Ordering::SeqCst);
        self.forget_runtime(index);
        self.forget_counts(index);
        let lost = self.nodes[index].disk.crash(fault);
        self.stats.crashes += 1;
        self.stats.lost_unflushed_entries += lost;
        self.trace(format!(
            "FAULT crash n{id} ({fault:?}: {lost} unflushed entries lost)"
        ));
    }

    /// Members whose Raft stopped on its own (the crash point fired: the
    /// process died between two writes) are crashed for good measure: the
    /// network and disk forget them like any crashed process.
    async fn reap_stopped(&mut self) {
        for index in 0..self.nodes.len() {
            let stopped = self.nodes[index].handle.as_ref().is_some_and(|handle| {
                handle
                    .raft()
                    .metrics()
                    .borrow_watched()
                    .running_state
                    .is_err()
            });
            if stopped {
                // A crash is a fault: it ends the calm a restart is judged in.
                self.rejoin = None;
                let id = self.nodes[index].id;
                self.trace(format!(
                    "n{id} stopped between the store's commit and the bookkeeping"
                ));
                self.crash(index, DiskFault::LostWrites).await;
            }
        }
    }

    fn raft(&self, index: usize) -> Option<&consensus::Raft> {
        self.nodes[index]
            .handle
            .as_ref()
            .map(|handle| handle.raft())
    }

    /// Where a client sends a write: a running member (a node outside the
    /// cluster knows no leader to forward to), or any running node if no
    /// member runs.
    fn entry_points(&self) -> Vec<usize> {
        let up = self.up();
        let members: Vec<usize> = up
            .iter()
            .copied()
            .filter(|i| self.nodes[*i].member)
            .collect();
        if members.is_empty() { up } else { members }
    }

    fn up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].handle.is_some())
            .collect()
    }

    /// The term member `index` leads, if it leads: where the deciders run.
    fn leading_term(&self, index: usize) -> Option<u64> {
        self.nodes[index]
            .handle
            .as_ref()
            .filter(|handle| handle.is_leader())
            .map(|handle| handle.status().term)
    }

    fn leader(&self) -> Option<usize> {
        self.up().into_iter().find(|i| {
            self.raft(*i)
                .is_some_and(|raft| raft.metrics().borrow_watched().state == ServerState::Leader)
        })
    }

    async fn wait_for_leader(&mut self, within: Duration) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn step(&mut self, step: usize) {
        let pause = Duration::from_millis(self.rng.random_range(50..400));
        tokio::time::sleep(pause).await;
        self.reap_stopped().await;
        self.check_rejoin();
        self.sync_membership();
        self.trace(format!("step {step}"));
        self.reconcile();
        self.operate().await;
        // Besides the step's operation, now and then a person's `revisions
        // scale` (`scaling.rs`).
        if self.rng.random_bool(0.1)
            && let Some(state) = self.view()
        {
            self.operate_scaling(&state).await;
        }
        // With crashes and restarts only, a watched restart is left alone
        // until its watch ends, so every such restart is judged.
        let watching = self.config.fault_mix == FaultMix::CrashRestart && self.rejoin.is_some();
        if self.config.faults && !watching && self.rng.random_bool(0.35) {
            self.fault().await;
        }
        self.serve();
        self.load();
        self.control().await;
        self.autoscale().await;
    }

    async fn run(mut self) -> Result<RunReport, SimError> {
        self.trace(format!(
            "run seed={} voters={} learners={} spares={} steps={} faults={} bug={:?}",
            self.config.seed,
            self.config.voters,
            self.config.learners,
            self.config.spares,
            self.config.steps,
            self.config.faults,
            self.config.bug
        ));
        self.setup().await?;
        for step in 0..self.config.steps {
            self.step(step).await;
            self.stats.steps = step + 1;
        }
        self.settle().await;
        self.final_checks();
        for index in 0..self.nodes.len() {
            if let Some(handle) = self.nodes[index].handle.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
            }
        }
        self.stats.net = self.net.stats();
        let ledger = self.ledger();
        let mut stats = self.stats.clone();
        stats.applied_entries = ledger.applied_entries;
        stats.terms = ledger.leaders.len();
        stats.rollout_advances_checked = ledger.advances_checked.len();
        Ok(RunReport {
            seed: self.config.seed,
            trace_hash: ledger.trace.hash(),
            trace_lines: ledger.trace.lines().to_vec(),
            violations: ledger.violations.clone(),
            simulated: ledger.trace.elapsed(),
            stats,
        })
    }
}

/// A fresh folder for a simulated member: in memory (`/dev/shm`) where
/// there is one, so the store's fsyncs cost nothing.
fn node_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::Builder::new().prefix("gtc-sim-").tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("gtc-sim-").tempdir()
    }
}
