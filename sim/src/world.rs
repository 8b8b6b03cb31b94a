//! One simulated run: nodes, the network and disks between them, the
//! operators and users who drive them, the faults, and the final checks.
//!
//! Everything runs on one thread in a tokio current-thread runtime with
//! paused time: timers fire in order of simulated time, and time jumps
//! ahead whenever every task waits. Every choice comes from the run's
//! seed ([`crate::entropy`]), so a run is a function of its seed and
//! configuration, and its trace hash says so.

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
}

/// The faults a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultMix {
    /// Every fault of the fault model.
    #[default]
    All,
    /// Crashes and restarts only, on a calm network with fast disks.
    CrashRestart,
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
}

struct Session {
    cookies: BTreeMap<DeploymentId, String>,
    last: BTreeMap<DeploymentId, (RevisionId, u64)>,
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
            settings,
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    fn next_ids(&mut self) -> MintedIds {
        self.ids += 1;
        MintedIds {
            event_id: EventId::from_ulid(ulid::Ulid::from_parts(self.ids, self.rng.random())),
            object_id: ulid::Ulid::from_parts(self.ids, self.rng.random()),
        }
    }

    fn envelope(
        &mut self,
        command: Command,
        key: String,
        node: usize,
        actor: Actor,
    ) -> CommandEnvelope {
        let elapsed = chrono::Duration::from_std(self.ledger().trace.elapsed())
            .unwrap_or_else(|_| chrono::Duration::zero());
        CommandEnvelope {
            at: self.epoch + elapsed + self.nodes[node].skew,
            actor,
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "sim".to_owned(),
                reason: "simulated operator".to_owned(),
            },
            minted: self.next_ids(),
            command,
            precondition: None,
            idempotency_key: Some(key),
        }
    }

    /// Sends a command like a client would: to a random running member,
    /// whose cluster handle forwards it to the leader and retries while
    /// leadership moves; a client that gets no answer in time retries the
    /// same envelope (same event id, same idempotency key) through another
    /// member. `Some` when the cluster answered.
    async fn submit(&mut self, command: Command, what: &str) -> Option<Answer> {
        let &first = self.entry_points().choose(&mut self.rng)?;
        self.ids += 1;
        let key = format!("sim-{}-{}", self.config.seed, self.ids);
        let operator = Actor::local_user(Some("sim-operator".to_owned()), Some(1000));
        let envelope = self.envelope(command, key.clone(), first, operator);
        let json = serde_json::to_string(&envelope).ok()?;
        let env = envelope.command.env_id();
        if self.config.bug == Some(PlantedBug::RouterUsesUncommittedState) {
            self.speculate(first, &envelope);
        }
        let mut target = first;
        for attempt in 0..WRITE_ATTEMPTS {
            let Some(handle) = self.nodes[target].handle.clone() else {
                target = *self.entry_points().choose(&mut self.rng)?;
                continue;
            };
            let request = ClusterRequest::Submit {
                envelope_json: json.clone(),
            };
            // The node's own write path: propose if it leads, else forward
            // to the leader and retry while leadership moves; a retry of
            // the same envelope must be answered, not applied twice.
            match tokio::time::timeout(WRITE_TIMEOUT, handle.write(request)).await {
                Ok(Ok(ClusterResponse::Outcome { outcome_json })) => {
                    let outcome: Outcome = serde_json::from_str(&outcome_json).ok()?;
                    let answer = Answer::of(&outcome);
                    let index = handle.state_machine().applied_index().unwrap_or(0);
                    if answer.ok {
                        self.stats.acked += 1;
                        let generation = answer.generation.unwrap_or(0);
                        self.trace(format!(
                            "ACK {what} {key} via n{} applied #{index} gen={generation}{}",
                            self.nodes[target].id,
                            if answer.replayed { " (replayed)" } else { "" }
                        ));
                        // A command that changed nothing (an unchanged
                        // placement) writes no audit event and no
                        // generation: there is nothing of it to lose.
                        if answer.event_id.is_some() {
                            self.ledger().acks.push(Ack {
                                key,
                                env,
                                generation,
                                index,
                            });
                        }
                    } else {
                        self.stats.refused += 1;
                        self.trace(format!(
                            "REFUSED {what} {key}: {}",
                            answer.error.clone().unwrap_or_default()
                        ));
                    }
                    return Some(answer);
                }
                Ok(Ok(ClusterResponse::Failed { message })) => {
                    self.trace(format!("{what} {key} attempt {attempt} failed: {message}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    target = *self.entry_points().choose(&mut self.rng)?;
                }
                Ok(Err(error)) => {
                    self.trace(format!("{what} {key} attempt {attempt}: {error}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    target = *self.entry_points().choose(&mut self.rng)?;
                }
                Err(_) => {
                    self.trace(format!("{what} {key} attempt {attempt} timed out"));
                    target = *self.entry_points().choose(&mut self.rng)?;
                }
            }
        }
        self.stats.unacknowledged += 1;
        self.trace(format!("GAVE UP {what} {key}"));
        None
    }

    /// The planted bug: the receiving node's router takes the state the
    /// write should produce from its own replica, before it is committed.
    fn speculate(&mut self, node: usize, envelope: &CommandEnvelope) {
        let id = self.nodes[node].id;
        let env = envelope.command.env_id();
        let current = self
            .ledger()
            .applied
            .get(&id)
            .and_then(|s| s.get(&env))
            .cloned();
        if let Ok(applied) = deploy::apply::apply(current.as_ref(), envelope)
            && let Some(state) = applied.state
        {
            self.ledger().set_table(
                id,
                &env,
                RouteTable::build(&state),
                TableSource::Speculative,
            );
        }
    }

    /// The newest state any node applied: what an operator would read.
    fn view(&self) -> Option<EnvironmentState> {
        let ledger = self.ledger();
        ledger
            .applied
            .values()
            .filter_map(|states| states.get(&self.env))
            .max_by_key(|state| state.generation)
            .cloned()
    }

    async fn setup(&mut self) -> Result<(), SimError> {
        for index in 0..self.nodes.len() {
            self.start(index).await?;
        }
        let voters: BTreeMap<NodeId, ClusterNode> = self
            .nodes
            .iter()
            .filter(|n| n.voter)
            .map(|n| (n.id, Self::cluster_node(n.id)))
            .collect();
        if let Some(raft) = self.raft(0).cloned() {
            raft.initialize(voters)
                .await
                .map_err(|error| SimError::Start {
                    node: 1,
                    message: error.to_string(),
                })?;
        }
        let leader = self
            .wait_for_leader(Duration::from_secs(20))
            .await
            .ok_or(SimError::NoLeader(Duration::from_secs(20)))?;
        let learners: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.member && !n.voter)
            .map(|n| n.id)
            .collect();
        for id in learners {
            if let Some(raft) = self.raft(leader).cloned() {
                let added = tokio::time::timeout(
                    Duration::from_secs(10),
                    raft.add_learner(id, Self::cluster_node(id), false),
                )
                .await;
                self.trace(format!(
                    "learner n{id} added: {}",
                    matches!(added, Ok(Ok(_)))
                ));
            }
        }
        self.submit(
            Command::EnvInit {
                answers: EnvInitAnswers::default(),
                defaults: packs::default_bindings(),
            },
            "env init",
        )
        .await;
        self.add_deployment("shop").await;
        Ok(())
    }

    async fn add_deployment(&mut self, bundle: &str) {
        let Ok(bundle_id) = bundle.parse() else {
            return;
        };
        self.submit(
            Command::BundleAdd(BundleAddAnswers {
                environment_id: self.env.clone(),
                bundle_id,
                customer_id: None,
                route_binding: RouteBinding {
                    path_prefixes: vec![format!("/{bundle}")],
                    ..Default::default()
                },
                revenue_share: None,
                authorization_ref: None,
                config_overrides: None,
                idempotency_key: None,
            }),
            "bundle add",
        )
        .await;
    }

    fn deployments(state: &EnvironmentState) -> Vec<DeploymentId> {
        state
            .environment
            .bundles
            .iter()
            .map(|b| b.deployment_id)
            .collect()
    }

    fn revisions_in(
        state: &EnvironmentState,
        lifecycle: Lifecycle,
    ) -> Vec<(DeploymentId, RevisionId)> {
        state
            .environment
            .revisions
            .iter()
            .filter(|r| r.lifecycle == lifecycle)
            .map(|r| (r.deployment_id, r.revision_id))
            .collect()
    }

    fn revision_answers(&self, revision_id: RevisionId) -> RevisionAnswers {
        RevisionAnswers {
            environment_id: self.env.clone(),
            revision_id,
            idempotency_key: None,
        }
    }

    /// One operator or deployer action, chosen from what the newest state allows.
    async fn operate(&mut self) {
        let Some(state) = self.view() else {
            self.setup_again().await;
            return;
        };
        let deployments = Self::deployments(&state);
        if deployments.is_empty() {
            self.add_deployment("shop").await;
            return;
        }
        let &deployment = deployments.choose(&mut self.rng).unwrap_or(&deployments[0]);
        let ready = Self::revisions_in(&state, Lifecycle::Ready);
        let staged = Self::revisions_in(&state, Lifecycle::Staged);
        let draining = Self::revisions_in(&state, Lifecycle::Draining);
        let inactive = Self::revisions_in(&state, Lifecycle::Inactive);
        let warming = Self::revisions_in(&state, Lifecycle::Warming);
        let in_split: BTreeSet<RevisionId> = state
            .environment
            .traffic_splits
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| e.revision_id))
            .collect();
        let live = state
            .environment
            .revisions
            .iter()
            .filter(|r| r.lifecycle != Lifecycle::Archived)
            .count();
        match self.rng.random_range(0..100) {
            0..18 if live < 8 => {
                // A revision with something to run, as the edge stages a
                // bundle with a runtime section: only such a revision may
                // take traffic once ready.
                let Some(bundle_id) = state
                    .environment
                    .deployment(deployment)
                    .map(|d| d.bundle_id.clone())
                else {
                    return;
                };
                self.ids += 1;
                let revision_id =
                    RevisionId::from_ulid(ulid::Ulid::from_parts(self.ids, self.rng.random()));
                let mut answers = RevisionStageAnswers::new(self.env.clone(), deployment);
                answers.bundle_path = Some(format!("{bundle_id}.gtbundle"));
                let Ok(bundle_digest) = "sha256:ab".parse() else {
                    return;
                };
                self.submit(
                    Command::RevisionStage {
                        answers,
                        staged: Some(deploy::command::StagedBundle {
                            revision_id,
                            bundle_id,
                            bundle_digest,
                            pack_list: Vec::new(),
                            pack_list_lock_ref: String::new(),
                            runtime_instances: Some(1),
                        }),
                    },
                    "stage",
                )
                .await;
            }
            0..30 if !staged.is_empty() => {
                let &(_, revision) = staged.choose(&mut self.rng).unwrap_or(&staged[0]);
                let answers = self.revision_answers(revision);
                self.submit(Command::warm(answers), "warm").await;
            }
            30..60 => {
                let choices: Vec<RevisionId> = ready
                    .iter()
                    .filter(|(d, _)| *d == deployment)
                    .map(|(_, r)| *r)
                    .collect();
                if choices.is_empty() {
                    return;
                }
                let count = self.rng.random_range(1..=choices.len().min(3));
                let mut picked = choices.clone();
                picked.shuffle(&mut self.rng);
                picked.truncate(count);
                let mut left = 10_000u32;
                let entries = picked
                    .iter()
                    .enumerate()
                    .map(|(i, revision)| {
                        let weight = if i + 1 == picked.len() {
                            left
                        } else {
                            self.rng.random_range(0..=left)
                        };
                        left -= weight;
                        TrafficEntryAnswers {
                            revision_id: revision.to_string(),
                            weight_bps: Some(weight),
                            weight_percent: None,
                            tag: None,
                        }
                    })
                    .collect();
                self.ids += 1;
                let key = format!("split-{}-{}", self.config.seed, self.ids);
                self.submit(
                    Command::TrafficSet(TrafficSetAnswers {
                        environment_id: self.env.clone(),
                        deployment_id: deployment,
                        entries,
                        updated_by: None,
                        idempotency_key: key,
                        authorization_ref: None,
                    }),
                    "traffic set",
                )
                .await;
            }
            60..66 => {
                self.submit(
                    Command::TrafficRollback(DeploymentAnswers {
                        environment_id: self.env.clone(),
                        deployment_id: deployment,
                        idempotency_key: None,
                    }),
                    "traffic rollback",
                )
                .await;
            }
            66..76 => {
                let candidates: Vec<RevisionId> = ready
                    .iter()
                    .map(|(_, r)| *r)
                    .filter(|r| !in_split.contains(r))
                    .collect();
                if let Some(&revision) = candidates.choose(&mut self.rng) {
                    let answers = self.revision_answers(revision);
                    self.submit(Command::RevisionDrain(answers), "drain").await;
                }
            }
            76..84 => {
                // Archive a revision: usually an inactive one; now and then
                // one that is still referenced, which must be refused.
                let pool: Vec<RevisionId> = if self.rng.random_bool(0.8) {
                    inactive.iter().map(|(_, r)| *r).collect()
                } else {
                    in_split.iter().copied().collect()
                };
                if let Some(&revision) = pool.choose(&mut self.rng) {
                    let answers = self.revision_answers(revision);
                    self.submit(Command::RevisionArchive(answers), "archive")
                        .await;
                }
            }
            84..94 => {
                // The deployer reports what the runtime observed.
                if let Some(&(_, revision)) = warming.choose(&mut self.rng) {
                    self.report(revision, RuntimeOutcome::Ready).await;
                } else if let Some(&(_, revision)) = draining.choose(&mut self.rng) {
                    self.report(revision, RuntimeOutcome::Drained).await;
                }
            }
            94..97 if deployments.len() < 2 => self.add_deployment("books").await,
            97 => {
                // Another environment: created once, refused as a duplicate after.
                let Ok(environment_id) = "prod-eu".parse() else {
                    return;
                };
                self.submit(
                    Command::EnvCreate(deploy::command::EnvCreateAnswers {
                        environment_id,
                        name: "Production EU".to_owned(),
                        region: Some("eu-west".to_owned()),
                        tenant_org_id: None,
                        listen_addr: None,
                        public_base_url: None,
                        gui_enabled: None,
                    }),
                    "env create",
                )
                .await;
            }
            _ => self.place().await,
        }
    }

    async fn setup_again(&mut self) {
        self.submit(
            Command::EnvInit {
                answers: EnvInitAnswers::default(),
                defaults: packs::default_bindings(),
            },
            "env init",
        )
        .await;
    }

    async fn report(&mut self, revision_id: RevisionId, outcome: RuntimeOutcome) {
        self.submit(
            Command::RevisionReport(RuntimeReport {
                environment_id: self.env.clone(),
                revision_id,
                outcome,
            }),
            "runtime report",
        )
        .await;
    }

    /// The leader's placement round, on the members it can see running.
    async fn place(&mut self) {
        let Some(state) = self.view() else {
            return;
        };
        let nodes: Vec<NodeCapacity> = self
            .nodes
            .iter()
            .filter(|n| n.member && n.handle.is_some())
            .map(|n| NodeCapacity {
                name: format!("n{}", n.id),
                capacity: NODE_CAPACITY,
            })
            .collect();
        if let Some(answers) = deploy::placement::changes(&state, &nodes) {
            self.submit(Command::RevisionPlace(answers), "place").await;
        }
    }

    /// Users: requests through random running routers, some in sticky sessions.
    fn serve(&mut self) {
        for _ in 0..self.config.requests_per_step {
            let up = self.up();
            let Some(&node) = up.choose(&mut self.rng) else {
                return;
            };
            let id = self.nodes[node].id;
            let session = self.rng.random_range(0..self.sessions.len().max(1));
            // Only the chosen deployment's route is copied out of the ledger.
            let chosen = {
                let ledger = self
                    .ledger
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                ledger
                    .tables
                    .get(&id)
                    .and_then(|tables| tables.get(&self.env))
                    .and_then(|(table, _)| {
                        table
                            .deployments()
                            .choose(&mut self.rng)
                            .map(|route| (table.generation(), route.clone()))
                    })
            };
            let Some((generation, route)) = chosen else {
                self.stats.no_route += 1;
                continue;
            };
            let route = &route;
            let now_unix = (self.epoch
                + chrono::Duration::from_std(self.ledger().trace.elapsed())
                    .unwrap_or_else(|_| chrono::Duration::zero()))
            .timestamp();
            let Some(session_state) = self.sessions.get_mut(session) else {
                continue;
            };
            // The router's own choice: a verified cookie of the current split
            // generation whose revision still has weight, else a weighted pick.
            let pinned = session_state
                .cookies
                .get(&route.deployment_id)
                .and_then(|cookie| {
                    sticky::verify(
                        &self.sticky_key,
                        cookie,
                        &self.env,
                        route.deployment_id,
                        route.split_generation,
                        now_unix,
                    )
                    .ok()
                    .filter(|revision| route.pick.contains(*revision))
                });
            let revision = match pinned {
                Some(revision) => revision,
                None => {
                    self.picks += 1;
                    let revision = route.pick.pick(pick_point(self.picks));
                    session_state.cookies.insert(
                        route.deployment_id,
                        sticky::issue(
                            &self.sticky_key,
                            &self.env,
                            route.deployment_id,
                            revision,
                            route.split_generation,
                            now_unix + 3600,
                        ),
                    );
                    revision
                }
            };
            let previous = session_state
                .last
                .insert(route.deployment_id, (revision, route.split_generation));
            let flipped = previous.filter(|(was, split_generation)| {
                *was != revision && *split_generation == route.split_generation
            });
            let at = self.ledger().trace.elapsed();
            let mut ledger = self.ledger();
            if let Some((was, split_generation)) = flipped {
                ledger.violate(
                    names::STICKY_STAYS,
                    format!(
                        "session {session} moved from {was} to {revision} under split generation {split_generation} of {}",
                        route.deployment_id
                    ),
                );
            }
            ledger.served.push(Served {
                node: id,
                env: self.env.clone(),
                generation,
                deployment: route.deployment_id,
                split_generation: route.split_generation,
                revision,
                at,
            });
            drop(ledger);
            self.stats.served += 1;
        }
    }

    fn pick_node(&mut self, filter: impl Fn(&Node) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|i| filter(&self.nodes[*i]))
            .collect();
        candidates.choose(&mut self.rng).copied()
    }

    /// The term and committed index of a live leader, when the network is
    /// calm and whole and every disk fast: a restart now must rejoin within
    /// the bound without moving the term.
    fn calm_with_a_leader(&self) -> Option<(u64, u64)> {
        if self.net.faults() != LinkFaults::CALM
            || self.net.is_partitioned()
            || self.nodes.iter().any(|n| n.disk.speed() != DiskSpeed::FAST)
            || self
                .nodes
                .iter()
                .any(|n| n.crash_armed.load(Ordering::SeqCst))
        {
            return None;
        }
        let leader = self.raft(self.leader()?)?;
        let metrics = leader.metrics().borrow_watched().clone();
        let committed = metrics.cluster_committed.map(|id| id.index())?;
        Some((metrics.current_term, committed))
    }

    /// Starts watching the member restarted at `index` (see [`Rejoin`]).
    fn watch_rejoin(&mut self, index: usize, term: u64, target: u64) {
        let Some(raft) = self.raft(index).cloned() else {
            return;
        };
        if !self.nodes[index].member {
            return;
        }
        let at = tokio::time::Instant::now();
        let caught_up = Arc::new(Mutex::new(None));
        let done = Arc::clone(&caught_up);
        tokio::spawn(async move {
            let applied = raft
                .wait(Some(REJOIN_BOUND * 4))
                .applied_index_at_least(Some(target), "a rejoin")
                .await;
            if applied.is_ok() {
                *done
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at.elapsed());
            }
        });
        self.rejoin = Some(Rejoin {
            id: self.nodes[index].id,
            at,
            term,
            target,
            caught_up,
        });
    }

    /// Checks the watched restart: applied within [`REJOIN_BOUND`], and no
    /// term moved; done after [`REJOIN_TERM_WATCH`].
    fn check_rejoin(&mut self) {
        let Some(rejoin) = &self.rejoin else {
            return;
        };
        let elapsed = rejoin.at.elapsed();
        let caught_up = *rejoin
            .caught_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let highest_term = self
            .nodes
            .iter()
            .filter_map(|n| n.handle.as_ref().map(|h| h.raft()))
            .map(|raft| raft.metrics().borrow_watched().current_term)
            .max()
            .unwrap_or(0);
        let (id, term, target) = (rejoin.id, rejoin.term, rejoin.target);
        if highest_term != term {
            self.rejoin = None;
            self.ledger().violate(
                names::RETURN_MOVES_NO_TERM,
                format!(
                    "n{id} returned to a calm cluster with a live leader in term {term}; the term moved to {highest_term} {:.3}s later",
                    elapsed.as_secs_f64()
                ),
            );
            return;
        }
        match caught_up {
            Some(took) if took > REJOIN_BOUND => {
                self.rejoin = None;
                self.ledger().violate(
                    names::REJOIN_WITHIN_BOUND,
                    format!("n{id} applied index {target} only {took:?} after its restart"),
                );
            }
            None if elapsed > REJOIN_BOUND => {
                self.rejoin = None;
                self.ledger().violate(
                    names::REJOIN_WITHIN_BOUND,
                    format!("n{id} had not applied index {target} {elapsed:?} after its restart"),
                );
            }
            Some(took) if elapsed > REJOIN_TERM_WATCH => {
                self.rejoin = None;
                self.stats.rejoins_checked += 1;
                self.stats.slowest_rejoin = self.stats.slowest_rejoin.max(Some(took));
                self.trace(format!("n{id} rejoined after {:.3}s", took.as_secs_f64()));
            }
            _ => {}
        }
    }

    /// One fault, or the repair of one, drawn from the run's mix.
    async fn fault(&mut self) {
        // Any new fault ends the calm the watched restart was judged in.
        self.rejoin = None;
        let voters_down = self
            .nodes
            .iter()
            .filter(|n| n.voter && n.handle.is_none())
            .count();
        let voters = self.nodes.iter().filter(|n| n.voter).count();
        let minority = (voters - 1) / 2;
        let draw = match self.config.fault_mix {
            FaultMix::All => self.rng.random_range(0..100),
            FaultMix::CrashRestart => self.rng.random_range(0..26),
        };
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let id_of = |world: &Self, index: usize| world.nodes[index].id;
        let fault = match draw {
            0..14 if voters_down < minority => {
                let Some(index) = self.pick_node(|n| n.handle.is_some()) else {
                    return;
                };
                let node = id_of(self, index);
                if self.config.fault_mix == FaultMix::All && self.rng.random_bool(0.3) {
                    Fault::CrashAfterCommit { node }
                } else {
                    Fault::Crash {
                        node,
                        disk: self.disk_fault(index),
                    }
                }
            }
            0..26 => {
                let Some(index) = self.pick_node(|n| n.handle.is_none()) else {
                    return;
                };
                Fault::Restart {
                    node: id_of(self, index),
                }
            }
            26..36 => {
                let Some(index) = self.pick_node(|n| n.member) else {
                    return;
                };
                Fault::Isolate {
                    node: id_of(self, index),
                    from: ids,
                }
            }
            36..44 => {
                let Some(index) = self.leader() else {
                    return;
                };
                Fault::Isolate {
                    node: id_of(self, index),
                    from: ids,
                }
            }
            44..50 => {
                let from = self.pick_node(|n| n.member);
                let to = self.pick_node(|n| n.member);
                let (Some(from), Some(to)) = (from, to) else {
                    return;
                };
                if from == to {
                    return;
                }
                let (from, to) = (id_of(self, from), id_of(self, to));
                if self.rng.random_bool(0.5) {
                    Fault::Partition { from, to }
                } else {
                    Fault::Hold { from, to }
                }
            }
            50..64 => match self.held.iter().next().copied() {
                Some((from, to)) if self.rng.random_bool(0.5) => Fault::Release { from, to },
                _ => Fault::Heal,
            },
            64..72 => Fault::Noise(LinkFaults {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(self.rng.random_range(5..80)),
                loss: self.rng.random_range(0.0..0.2),
                duplicate: self.rng.random_range(0.0..0.1),
            }),
            72..78 => Fault::Calm,
            78..84 => {
                let Some(index) = self.pick_node(|_| true) else {
                    return;
                };
                Fault::ClockSkew {
                    node: id_of(self, index),
                    skew: chrono::Duration::milliseconds(self.rng.random_range(-5_000..5_000)),
                }
            }
            84..90 => {
                let Some(index) = self.pick_node(|_| true) else {
                    return;
                };
                let slow = self.rng.random_bool(0.5);
                Fault::DiskSpeed {
                    node: id_of(self, index),
                    speed: if slow {
                        DiskSpeed::SLOW
                    } else {
                        DiskSpeed::FAST
                    },
                }
            }
            90..95 => return self.join().await,
            _ => return self.leave().await,
        };
        self.inject(fault).await;
    }

    /// What a crash of node `index` does to its unflushed writes.
    fn disk_fault(&mut self, index: usize) -> DiskFault {
        let unflushed = self.nodes[index].disk.unflushed();
        if unflushed > 0 && self.rng.random_bool(0.5) {
            DiskFault::TornWrite {
                kept: self.rng.random_range(0..unflushed),
            }
        } else {
            DiskFault::LostWrites
        }
    }

    fn index_of(&self, node: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == node)
    }

    /// Injects one fault (or repairs one) and records it in the trace.
    pub(crate) async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Crash { node, disk } => {
                if let Some(index) = self.index_of(node) {
                    self.crash(index, disk).await;
                }
            }
            Fault::CrashAfterCommit { node } => {
                if let Some(index) = self.index_of(node) {
                    self.nodes[index].crash_armed.store(true, Ordering::SeqCst);
                    self.trace(format!(
                        "FAULT n{node} dies after its next commit, before the bookkeeping"
                    ));
                }
            }
            Fault::Restart { node } => {
                if let Some(index) = self.index_of(node) {
                    self.trace(format!("FAULT restart n{node}"));
                    let watch = self.calm_with_a_leader();
                    self.restart(index).await;
                    if let Some((term, target)) = watch {
                        self.watch_rejoin(index, term, target);
                    }
                }
            }
            Fault::Isolate { node, from } => {
                self.net.isolate(node, &from);
                self.stats.partitions += 1;
                self.trace(format!("FAULT isolate n{node}"));
            }
            Fault::Partition { from, to } => {
                self.net.block(from, to);
                self.stats.partitions += 1;
                self.trace(format!("FAULT one-way partition n{from} -> n{to}"));
            }
            Fault::Repair { from, to } => {
                self.net.repair(from, to);
                self.trace(format!("HEAL link n{from} -> n{to}"));
            }
            Fault::Hold { from, to } => {
                self.net.hold(from, to);
                self.held.insert((from, to));
                self.stats.partitions += 1;
                self.trace(format!("FAULT hold messages n{from} -> n{to}"));
            }
            Fault::Release { from, to } => {
                self.net.release(from, to);
                self.held.remove(&(from, to));
                self.trace(format!("HEAL release messages n{from} -> n{to}"));
            }
            Fault::Heal => {
                self.net.heal();
                self.held.clear();
                self.trace("HEAL partitions");
            }
            Fault::Noise(faults) => {
                self.net.set_faults(faults);
                self.trace(format!("FAULT noisy network {faults:?}"));
            }
            Fault::Calm => {
                self.net.set_faults(LinkFaults::CALM);
                self.trace("HEAL calm network");
            }
            Fault::ClockSkew { node, skew } => {
                if let Some(index) = self.index_of(node) {
                    self.nodes[index].skew = skew;
                    self.trace(format!("FAULT clock skew n{node} {skew}"));
                }
            }
            Fault::DiskSpeed { node, speed } => {
                if let Some(index) = self.index_of(node) {
                    self.nodes[index].disk.set_speed(speed);
                    let word = if speed == DiskSpeed::SLOW {
                        "slow"
                    } else {
                        "fast"
                    };
                    self.trace(format!("FAULT disk of n{node} {word}"));
                }
            }
        }
    }

    /// A running node outside the cluster joins: learner, then voter.
    async fn join(&mut self) {
        let Some(index) = self.pick_node(|n| !n.member && n.handle.is_some()) else {
            return;
        };
        let Some(leader) = self.leader() else {
            return;
        };
        let Some(raft) = self.raft(leader).cloned() else {
            return;
        };
        let id = self.nodes[index].id;
        let added = tokio::time::timeout(
            Duration::from_secs(10),
            raft.add_learner(id, Self::cluster_node(id), true),
        )
        .await;
        if !matches!(added, Ok(Ok(_))) {
            self.trace(format!("join of n{id} failed at the learner step"));
            return;
        }
        self.nodes[index].member = true;
        let voter = Self::change(&raft, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await;
        self.nodes[index].voter = voter;
        self.stats.joins += 1;
        self.trace(format!("MEMBERSHIP n{id} joined (voter: {voter})"));
    }

    /// One membership change through the leader; true when it committed in
    /// time (a change that timed out may still commit: `sync_membership`).
    async fn change(raft: &consensus::Raft, change: ChangeMembers<NodeId, ClusterNode>) -> bool {
        let changed = tokio::time::timeout(
            Duration::from_secs(10),
            raft.change_membership(change, false),
        )
        .await;
        matches!(changed, Ok(Ok(_)))
    }

    /// A voter leaves, when more than three remain.
    async fn leave(&mut self) {
        let voters = self.nodes.iter().filter(|n| n.voter).count();
        if voters <= 3 {
            return;
        }
        let Some(leader) = self.leader() else {
            return;
        };
        let leader_id = self.nodes[leader].id;
        let Some(index) = self.pick_node(|n| n.voter && n.id != leader_id) else {
            return;
        };
        let Some(raft) = self.raft(leader).cloned() else {
            return;
        };
        let id = self.nodes[index].id;
        if !Self::change(&raft, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await {
            self.trace(format!("leave of n{id} failed"));
            return;
        }
        self.nodes[index].voter = false;
        if Self::change(&raft, ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await {
            self.nodes[index].member = false;
        }
        self.stats.leaves += 1;
        self.trace(format!("MEMBERSHIP n{id} left"));
    }

    async fn step(&mut self, step: usize) {
        let pause = Duration::from_millis(self.rng.random_range(50..400));
        tokio::time::sleep(pause).await;
        self.reap_stopped().await;
        self.check_rejoin();
        self.sync_membership();
        self.trace(format!("step {step}"));
        self.operate().await;
        // With crashes and restarts only, a watched restart is left alone
        // until its watch ends, so every such restart is judged.
        let watching = self.config.fault_mix == FaultMix::CrashRestart && self.rejoin.is_some();
        if self.config.faults && !watching && self.rng.random_bool(0.35) {
            self.fault().await;
        }
        self.serve();
    }

    /// Heals every fault and waits until every member and its router hold
    /// the newest committed generation.
    async fn settle(&mut self) {
        for node in &self.nodes {
            node.crash_armed.store(false, Ordering::SeqCst);
        }
        self.reap_stopped().await;
        self.net.heal();
        self.held.clear();
        self.net.set_faults(LinkFaults::CALM);
        for index in 0..self.nodes.len() {
            self.nodes[index].disk.set_speed(DiskSpeed::FAST);
            self.nodes[index].skew = chrono::Duration::zero();
            if self.nodes[index].handle.is_none() {
                self.restart(index).await;
            }
        }
        self.trace("HEAL everything");
        // A write after healing makes a new leader commit everything before it.
        self.place().await;
        let started = tokio::time::Instant::now();
        loop {
            self.sync_membership();
            if let Some(generation) = self.converged() {
                let after = started.elapsed();
                self.stats.converged_after = Some(after);
                self.trace(format!(
                    "converged on generation {generation} after {:.3}s",
                    after.as_secs_f64()
                ));
                return;
            }
            if started.elapsed() > self.config.settle_bound {
                let detail = self.divergence();
                self.ledger().violate(
                    names::CONVERGE_AFTER_HEAL,
                    format!(
                        "not converged {:?} after healing: {detail}",
                        self.config.settle_bound
                    ),
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes voters and learners from the committed membership as the most
    /// advanced running node applied it: a membership change whose client
    /// timed out may still have committed.
    fn sync_membership(&mut self) {
        let newest = self
            .nodes
            .iter()
            .filter_map(|node| node.handle.as_ref().map(|h| h.raft()))
            .map(|raft| {
                let metrics = raft.metrics().borrow_watched().clone();
                (
                    metrics.last_applied.map_or(0, |id| id.index()),
                    metrics.membership_config,
                )
            })
            .max_by_key(|(applied, _)| *applied);
        let Some((_, membership)) = newest else {
            return;
        };
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        for node in &mut self.nodes {
            node.voter = voters.contains(&node.id);
            node.member = nodes.contains(&node.id);
        }
    }

    fn members(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.id)
            .collect()
    }

    /// The generation of the main environment that every member and its
    /// router agree on, if every member holds the newest committed state
    /// of every environment and routes by the main one's.
    fn converged(&self) -> Option<u64> {
        // Every member has applied the whole committed log, not only the
        // same generation: a refused command adds an audit line without a
        // new generation, and the chains are compared afterwards.
        let applied: Vec<u64> = self
            .members()
            .iter()
            .map(|id| {
                self.nodes
                    .iter()
                    .find(|node| node.id == *id)
                    .and_then(|node| node.handle.as_ref())
                    .map(|handle| {
                        handle
                            .raft()
                            .metrics()
                            .borrow_watched()
                            .last_applied
                            .map_or(0, |log_id| log_id.index())
                    })
            })
            .collect::<Option<Vec<u64>>>()?;
        if applied.windows(2).any(|pair| pair[0] != pair[1]) {
            return None;
        }
        let ledger = self.ledger();
        let mut newest: BTreeMap<&EnvId, u64> = BTreeMap::new();
        for (env, generation) in ledger.committed.keys() {
            let entry = newest.entry(env).or_insert(*generation);
            *entry = (*entry).max(*generation);
        }
        for id in self.members() {
            let applied = ledger.applied.get(&id)?;
            for (env, generation) in &newest {
                if applied.get(*env).map(|state| state.generation) != Some(*generation) {
                    return None;
                }
            }
            let routed = ledger.tables.get(&id)?.get(&self.env)?.0.generation();
            if Some(&routed) != newest.get(&self.env) {
                return None;
            }
        }
        newest.get(&self.env).copied()
    }

    fn divergence(&self) -> String {
        let ledger = self.ledger();
        self.members()
            .iter()
            .map(|id| {
                let applied = ledger
                    .applied
                    .get(id)
                    .and_then(|s| s.get(&self.env))
                    .map(|s| s.generation);
                let routed = ledger
                    .tables
                    .get(id)
                    .and_then(|t| t.get(&self.env))
                    .map(|(t, _)| t.generation());
                format!("n{id}: applied {applied:?}, router {routed:?}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Acknowledged commands, audit chains and served answers, checked on
    /// the healed cluster.
    fn final_checks(&mut self) {
        let acks = self.ledger().acks.clone();
        let mut chains: Vec<(NodeId, BTreeMap<EnvId, Vec<String>>)> = Vec::new();
        for node in self.nodes.iter().filter(|n| n.member) {
            let Some(handle) = &node.handle else {
                continue;
            };
            let audit = audit_chains(handle);
            let mut ledger = self.ledger();
            for ack in &acks {
                let lines = audit.get(&ack.env).map_or(&[][..], Vec::as_slice);
                let found = lines.iter().any(|line| {
                    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|event| {
                        event["idempotency_key"] == ack.key.as_str()
                            && event["new_generation"].as_u64() == Some(ack.generation)
                            && event["replayed"] != true
                    })
                });
                if !found {
                    ledger.violate(
                        names::ACKED_NEVER_LOST,
                        format!(
                            "n{} lacks {} in {} (acknowledged at #{} generation {})",
                            node.id, ack.key, ack.env, ack.index, ack.generation
                        ),
                    );
                }
            }
            for (env, lines) in &audit {
                if let Err(error) = deploy::audit::verify_chain(lines.iter().map(String::as_str)) {
                    ledger.violate(
                        names::AUDIT_CHAIN_VERIFIES,
                        format!("n{} {env}: {error}", node.id),
                    );
                }
            }
            drop(ledger);
            chains.push((node.id, audit));
        }
        if let Some((first, reference)) = chains.first() {
            for (id, audit) in chains.iter().skip(1) {
                if audit != reference {
                    let sizes = |a: &BTreeMap<EnvId, Vec<String>>| {
                        a.iter()
                            .map(|(env, lines)| format!("{env}: {}", lines.len()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    self.ledger().violate(
                        names::AUDIT_CHAIN_VERIFIES,
                        format!(
                            "n{id}'s audit chains ({}) differ from n{first}'s ({})",
                            sizes(audit),
                            sizes(reference)
                        ),
                    );
                }
            }
        }
        self.ledger().check_served();
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

/// Every environment's audit lines in a member's replica.
fn audit_chains(handle: &ClusterHandle) -> BTreeMap<EnvId, Vec<String>> {
    let store = handle.state_machine().store();
    let mut chains = BTreeMap::new();
    for env in store.list().unwrap_or_default() {
        chains.insert(env.clone(), store.audit_lines(&env).unwrap_or_default());
    }
    chains
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
