//! The autoscaler on a node: runs the pure decider
//! (`deploy::scaling::decider`, the same the simulator runs) for every
//! ready revision that scales, on the node that decides for the
//! environment (a single node, or the cluster's Raft leader), and commits
//! each new count as `revisions scale-decide`, audited as
//! `autoscaler:<revision>`, never as a person.
//!
//! What this shell adds to the core: the readings (requests in flight,
//! served and held, at this node's router and at every other member's as
//! gossip brought them, `inflight/<revision>`), the ready instances the
//! router sees, the clock, the commit (on a cluster, only as the leader of
//! the term it decided in) and the metrics. It looks every [`TICK`], and
//! at once when a router begins to hold a request ([`Router::demand`]), so
//! a cold start begins at the first held request.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deploy::command::{Command, CommandEnvelope, ScaleDecisionAnswers};
use deploy::ids::{EnvId, RevisionId};
use deploy::lifecycle::Lifecycle;
use deploy::scaling::decider::{self, Memory, Reading};
use router::proxy::{InFlight, Router};
use store::EnvironmentStore;

/// How often the autoscaler reads the routers and decides (Knative's
/// autoscaler ticks every 2 s; a quarter of that keeps a 6 s panic window
/// well sampled).
pub const TICK: Duration = Duration::from_millis(500);

/// The longest a decision waits to be committed on a cluster leader.
const DECISION_COMMIT_BOUND: Duration = Duration::from_secs(3);

/// The other members' requests in flight per revision, keyed by the
/// member's identity in this life (`name@generation`), as gossip brought
/// them.
pub type RemoteInFlight = Arc<RwLock<BTreeMap<String, HashMap<RevisionId, InFlight>>>>;

/// HELP text of the autoscaler's metrics.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "gtc_autoscaler_desired_instances",
        metrics::Unit::Count,
        "Instances the autoscaler on this node last decided for each revision that scales."
    );
    metrics::describe_gauge!(
        "gtc_autoscaler_ready_instances",
        metrics::Unit::Count,
        "Ready instances of each revision that scales, as the autoscaler counted them (all members)."
    );
    metrics::describe_gauge!(
        "gtc_autoscaler_concurrency",
        metrics::Unit::Count,
        "Average requests in flight (served and held, all members) over the stable and the panic window, by revision and window."
    );
    metrics::describe_gauge!(
        "gtc_autoscaler_queued_requests",
        metrics::Unit::Count,
        "Requests the routers hold for each revision that scales, waiting for a ready instance (all members)."
    );
    metrics::describe_gauge!(
        "gtc_autoscaler_panic_mode",
        metrics::Unit::Count,
        "1 while the revision's count follows the panic window (it only grows), else 0."
    );
    metrics::describe_counter!(
        "gtc_autoscaler_decisions_total",
        metrics::Unit::Count,
        "Scale decisions the autoscaler on this node committed, by mode (stable, panic, from-zero, idle)."
    );
}

/// What one revision's decider keeps between ticks.
#[derive(Default)]
struct Tracked {
    memory: Memory,
    readings: VecDeque<Reading>,
}

/// Where the autoscaler reads and writes.
pub struct Autoscaler {
    store: Arc<dyn EnvironmentStore + Send + Sync>,
    env_id: EnvId,
    /// A cluster member decides only while it leads.
    cluster: Option<Arc<consensus::ClusterHandle>>,
    router: Arc<Router>,
    remote: RemoteInFlight,
    tracked: HashMap<RevisionId, Tracked>,
    /// The monotonic clock the windows are measured on.
    started: tokio::time::Instant,
}

/// The envelope of a decision: the actor is the autoscaler of the revision.
fn envelope(command: Command, revision: RevisionId) -> CommandEnvelope {
    crate::ticking::decision_envelope(
        command,
        crate::ticking::Decider {
            kind: "autoscaler",
            user: format!("autoscaler:{revision}"),
            policy: "autoscaler",
            reason: "the revision's own scaling settings",
        },
    )
}

impl Autoscaler {
    pub fn new(
        store: Arc<dyn EnvironmentStore + Send + Sync>,
        env_id: EnvId,
        cluster: Option<Arc<consensus::ClusterHandle>>,
        router: Arc<Router>,
        remote: RemoteInFlight,
    ) -> Self {
        Self {
            store,
            env_id,
            cluster,
            router,
            remote,
            tracked: HashMap::new(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Runs the autoscaler as a supervised actor until `shutdown` turns
    /// true (`crate::ticking`: fresh after a failure, as after a leader
    /// change).
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        crate::ticking::run(self, shutdown).await;
    }

    /// Requests in flight of `revision` summed over every member.
    fn in_flight(
        remote: &BTreeMap<String, HashMap<RevisionId, InFlight>>,
        mine: &HashMap<RevisionId, InFlight>,
        revision: RevisionId,
    ) -> InFlight {
        std::iter::once(mine)
            .chain(remote.values())
            .filter_map(|per_revision| per_revision.get(&revision))
            .fold(InFlight::default(), |sum, one| InFlight {
                served: sum.served.saturating_add(one.served),
                held: sum.held.saturating_add(one.held),
            })
    }

    async fn tick(&mut self) {
        let Ok(term) = crate::ticking::deciding_term(self.cluster.as_ref()) else {
            // Another member decides; readings of ours would be stale by
            // the time this node leads again.
            self.tracked.clear();
            return;
        };
        let store = Arc::clone(&self.store);
        let env_id = self.env_id.clone();
        let Ok(Ok(Some(state))) = tokio::task::spawn_blocking(move || store.load(&env_id)).await
        else {
            return;
        };
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mine = self.router.in_flight();
        let ready = self.router.ready_instances();
        let remote = self
            .remote
            .read()
            .map(|remote| remote.clone())
            .unwrap_or_default();
        let mut decided = Vec::new();
        let mut scaling_now = HashSet::new();
        for revision in &state.environment.revisions {
            let Some(settings) = revision.scaling else {
                continue;
            };
            if revision.lifecycle != Lifecycle::Ready {
                continue;
            }
            let id = revision.revision_id;
            scaling_now.insert(id);
            let in_flight = Self::in_flight(&remote, &mine, id);
            let queued = u32::try_from(in_flight.held).unwrap_or(u32::MAX);
            let ready_now = u32::try_from(ready.get(&id).copied().unwrap_or(0)).unwrap_or(u32::MAX);
            let tracked = self.tracked.entry(id).or_default();
            tracked.readings.push_back(Reading {
                at_ms: now_ms,
                concurrency: (in_flight.served + in_flight.held) as f64,
            });
            let window_ms = u64::from(settings.stable_window_seconds) * 1_000;
            while tracked
                .readings
                .front()
                .is_some_and(|r| r.at_ms + window_ms < now_ms)
            {
                tracked.readings.pop_front();
            }
            let readings = tracked.readings.make_contiguous();
            let decision = decider::decide(
                &settings,
                &mut tracked.memory,
                decider::Observed {
                    now_ms,
                    readings,
                    ready: ready_now,
                    queued,
                },
            );
            let label = id.to_string();
            metrics::gauge!("gtc_autoscaler_desired_instances", "revision" => label.clone())
                .set(f64::from(decision.desired));
            metrics::gauge!("gtc_autoscaler_ready_instances", "revision" => label.clone())
                .set(f64::from(ready_now));
            metrics::gauge!("gtc_autoscaler_queued_requests", "revision" => label.clone())
                .set(f64::from(queued));
            metrics::gauge!("gtc_autoscaler_concurrency", "revision" => label.clone(), "window" => "stable")
                .set(decision.stable_concurrency);
            metrics::gauge!("gtc_autoscaler_concurrency", "revision" => label.clone(), "window" => "panic")
                .set(decision.panic_concurrency);
            metrics::gauge!("gtc_autoscaler_panic_mode", "revision" => label)
                .set(f64::from(u8::from(decision.mode == decider::Mode::Panic)));
            if revision.instance_count() != Some(decision.desired) {
                decided.push(ScaleDecisionAnswers {
                    environment_id: self.env_id.clone(),
                    revision_id: id,
                    desired: decision.desired,
                    mode: decision.mode.as_str().to_owned(),
                    stable_concurrency: decision.stable_concurrency,
                    panic_concurrency: decision.panic_concurrency,
                    queued,
                    decided_in_term: term,
                });
            }
        }
        // A revision that stopped scaling (drained, archived, settings
        // gone) starts from nothing if it scales again.
        self.tracked.retain(|id, _| scaling_now.contains(id));
        for answers in decided {
            self.submit(answers).await;
        }
    }

    async fn submit(&self, answers: ScaleDecisionAnswers) {
        let (revision, desired) = (answers.revision_id, answers.desired);
        let mode = answers.mode.clone();
        let envelope = envelope(Command::ScaleDecide(answers), revision);
        match crate::ticking::commit(
            &self.store,
            self.cluster.as_ref(),
            envelope,
            DECISION_COMMIT_BOUND,
        )
        .await
        {
            Ok(_) => {
                tracing::info!(%revision, desired, %mode, "scale decision committed");
                metrics::counter!("gtc_autoscaler_decisions_total", "mode" => mode).increment(1);
            }
            Err(error) => {
                tracing::warn!(%revision, desired, %mode, %error, "scale decision not committed; deciding again")
            }
        }
    }
}

impl crate::ticking::Ticking for Autoscaler {
    const NAME: &'static str = "autoscaler";

    fn fresh(&self) -> Self {
        Self::new(
            Arc::clone(&self.store),
            self.env_id.clone(),
            self.cluster.clone(),
            Arc::clone(&self.router),
            Arc::clone(&self.remote),
        )
    }

    fn interval(&self) -> Duration {
        TICK
    }

    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.router.demand())
    }

    async fn tick(&mut self) {
        Autoscaler::tick(self).await;
    }
}
