//! The revision actor: runs one revision's instances with the local-process
//! deployer, restarts crashed ones with backoff, drains, and reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy::command::{RuntimeOutcome, RuntimeReport};
use deploy::revision::Revision;
use local_process::{InstanceSpec, RestartDecision, RestartPolicy, RunningInstance};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use router::proxy::Instance;

use crate::context::NodeContext;
use crate::messages::EnvironmentMsg;
use deploy::reconcile::{Goal, Share};

/// How often instances are checked for an unexpected exit.
const MONITOR_INTERVAL: Duration = Duration::from_millis(500);
/// How often a drain checks for in-flight requests.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time an instance gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Restarts of one instance allowed within `RESTART_WINDOW` before the
/// actor stops restarting it and says so.
const RESTARTS_MAX: u32 = 5;
/// The window `RESTARTS_MAX` counts in.
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The revision actor.
pub struct RevisionActor;

/// Its arguments.
pub struct RevisionArgs {
    pub context: NodeContext,
    /// How many instances run here.
    pub share: Share,
    pub revision: Revision,
    pub goal: Goal,
    pub parent: ActorRef<EnvironmentMsg>,
}

/// Messages to the revision actor.
pub enum RevisionMsg {
    /// Start every instance (sent once, right after the actor starts).
    Start,
    /// Look for instances that exited.
    Monitor,
    /// Start instance `index` again.
    Restart(usize),
    /// Stop taking requests, let in-flight ones finish, then stop.
    Drain { drain_seconds: u32 },
    /// Check whether the drain is over.
    DrainCheck,
}

struct Slot {
    running: Option<RunningInstance>,
    shared: Option<Arc<Instance>>,
    policy: RestartPolicy,
}

/// The revision actor's state.
pub struct RevisionState {
    /// This actor's id: the environment actor ignores instance lists from
    /// an actor it already replaced.
    id: ractor::ActorId,
    args: RevisionArgs,
    specs: Vec<InstanceSpec>,
    slots: Vec<Slot>,
    drain_deadline: Option<Instant>,
}

fn bundle_folder(args: &RevisionArgs) -> std::path::PathBuf {
    args.context.revision_dir(args.revision.revision_id)
}

fn specs(args: &RevisionArgs) -> Result<Vec<InstanceSpec>, String> {
    let context = &args.context;
    let revision = &args.revision;
    let folder = context.revision_dir(revision.revision_id);
    let bundle_root = deploy::layout::extracted_bundle(&folder);
    let manifest = bundle::stage::read_manifest(&bundle_root).map_err(|e| e.to_string())?;
    let runtime = manifest
        .require_runtime()
        .map_err(|e| e.to_string())?
        .clone();
    let count = match args.share {
        Share::All => revision.runtime_instances.unwrap_or(runtime.instances),
        Share::Placed(count) => count,
    };
    Ok((0..count)
        .map(|index| InstanceSpec {
            bundle_root: bundle_root.clone(),
            command: runtime.command.clone(),
            env: runtime.env.clone(),
            port_env: runtime.port_env.clone(),
            host: context.instance_host,
            health_path: runtime.health_path.clone(),
            startup_timeout: Duration::from_secs(u64::from(runtime.startup_timeout_seconds)),
            health_timeout: Duration::from_millis(u64::from(runtime.health_timeout_ms)),
            log_dir: deploy::layout::instance_logs(&folder),
            index,
            labels: BTreeMap::from([
                ("GREENTIC_ENV".to_owned(), context.env_id.to_string()),
                (
                    "GREENTIC_DEPLOYMENT".to_owned(),
                    revision.deployment_id.to_string(),
                ),
                (
                    "GREENTIC_REVISION".to_owned(),
                    revision.revision_id.to_string(),
                ),
                ("GREENTIC_INSTANCE".to_owned(), index.to_string()),
            ]),
        })
        .collect())
}

impl RevisionActor {
    fn report(&self, state: &RevisionState, outcome: RuntimeOutcome) {
        let _ = state
            .args
            .parent
            .cast(EnvironmentMsg::Report(RuntimeReport {
                environment_id: state.args.context.env_id.clone(),
                revision_id: state.args.revision.revision_id,
                outcome,
            }));
    }

    fn announce(&self, state: &RevisionState) {
        let instances: Vec<_> = state
            .slots
            .iter()
            .filter_map(|slot| slot.shared.clone())
            .collect();
        record_instance_states(state);
        let _ = state.args.parent.cast(EnvironmentMsg::Instances {
            from: state.id,
            revision: state.args.revision.revision_id,
            instances,
        });
    }

    async fn start_all(&self, myself: &ActorRef<RevisionMsg>, state: &mut RevisionState) {
        let revision = state.args.revision.revision_id;
        let specs = state.specs.clone();
        for spec in &specs {
            match local_process::start(spec).await {
                Ok(running) => {
                    tracing::info!(%revision, instance = spec.index, addr = %running.addr(), "instance healthy");
                    state.slots.push(Slot {
                        shared: Some(Instance::new(running.addr())),
                        running: Some(running),
                        policy: RestartPolicy::new(
                            Duration::from_millis(200),
                            Duration::from_secs(10),
                            RESTARTS_MAX,
                            RESTART_WINDOW,
                        ),
                    });
                }
                Err(error) => {
                    tracing::warn!(%revision, instance = spec.index, %error, "instance failed to start");
                    self.stop_all(state).await;
                    if state.args.goal == Goal::Warm {
                        self.report(
                            state,
                            RuntimeOutcome::Failed {
                                reason: format!("instance {}: {error}", spec.index),
                            },
                        );
                    }
                    myself.stop(Some("warming failed".to_owned()));
                    return;
                }
            }
        }
        self.announce(state);
        if state.args.goal == Goal::Warm {
            self.report(state, RuntimeOutcome::Ready);
        }
        myself.send_interval(MONITOR_INTERVAL, || RevisionMsg::Monitor);
    }

    async fn stop_all(&self, state: &mut RevisionState) {
        for slot in &mut state.slots {
            slot.shared = None;
            if let Some(running) = slot.running.take() {
                running.stop(STOP_GRACE).await;
            }
        }
    }

    fn schedule_restart(
        &self,
        myself: &ActorRef<RevisionMsg>,
        state: &mut RevisionState,
        index: usize,
    ) {
        let revision = state.args.revision.revision_id;
        metrics::counter!("gtc_instance_restarts_total", "revision" => revision.to_string())
            .increment(1);
        match state.slots[index].policy.next(Instant::now()) {
            RestartDecision::RestartAfter(delay) => {
                myself.send_after(delay, move || RevisionMsg::Restart(index));
            }
            RestartDecision::GiveUp { restarts_in_window } => {
                tracing::error!(%revision, instance = index, restarts_in_window, "instance restart storm; no more restarts");
            }
        }
    }
}

impl Actor for RevisionActor {
    type Msg = RevisionMsg;
    type State = RevisionState;
    type Arguments = RevisionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RevisionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Instances a killed node left running hold no slot here; stop
        // them before starting this revision's own.
        let reaped =
            local_process::reap_orphans(&deploy::layout::instance_logs(&bundle_folder(&args)));
        if reaped > 0 {
            tracing::warn!(revision = %args.revision.revision_id, reaped, "stopped instances left by a previous node");
        }
        let specs = match specs(&args) {
            Ok(specs) => specs,
            Err(reason) => {
                let state = RevisionState {
                    args,
                    specs: Vec::new(),
                    slots: Vec::new(),
                    drain_deadline: None,
                    id: myself.get_id(),
                };
                let absent = !bundle_folder(&state.args).exists();
                if absent && state.args.context.bundles_may_be_elsewhere {
                    tracing::warn!(revision = %state.args.revision.revision_id, "the revision's bundle is not on this node; it runs where it was staged");
                } else if state.args.goal == Goal::Warm {
                    self.report(&state, RuntimeOutcome::Failed { reason });
                } else {
                    tracing::error!(revision = %state.args.revision.revision_id, %reason, "cannot run the revision");
                }
                myself.stop(Some("no runnable bundle".to_owned()));
                return Ok(state);
            }
        };
        myself.cast(RevisionMsg::Start)?;
        Ok(RevisionState {
            args,
            specs,
            slots: Vec::new(),
            drain_deadline: None,
            id: myself.get_id(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RevisionMsg::Start => self.start_all(&myself, state).await,
            RevisionMsg::Monitor => {
                if state.drain_deadline.is_some() {
                    return Ok(());
                }
                let mut exited = Vec::new();
                for (index, slot) in state.slots.iter_mut().enumerate() {
                    if let Some(running) = slot.running.as_mut()
                        && let Some(status) = running.try_exited()
                    {
                        tracing::warn!(revision = %state.args.revision.revision_id, instance = index, %status, "instance exited; restarting");
                        slot.running = None;
                        slot.shared = None;
                        exited.push(index);
                    }
                }
                if !exited.is_empty() {
                    self.announce(state);
                    for index in exited {
                        self.schedule_restart(&myself, state, index);
                    }
                }
            }
            RevisionMsg::Restart(index) => {
                if state.drain_deadline.is_some()
                    || index >= state.slots.len()
                    || state.slots[index].running.is_some()
                {
                    return Ok(());
                }
                match local_process::start(&state.specs[index]).await {
                    Ok(running) => {
                        let slot = &mut state.slots[index];
                        slot.shared = Some(Instance::new(running.addr()));
                        slot.running = Some(running);
                        self.announce(state);
                    }
                    Err(error) => {
                        tracing::warn!(revision = %state.args.revision.revision_id, instance = index, %error, "restart failed");
                        self.schedule_restart(&myself, state, index);
                    }
                }
            }
            RevisionMsg::Drain { drain_seconds } => {
                state.drain_deadline =
                    Some(Instant::now() + Duration::from_secs(u64::from(drain_seconds)));
                myself.cast(RevisionMsg::DrainCheck)?;
            }
            RevisionMsg::DrainCheck => {
                let idle = state
                    .slots
                    .iter()
                    .filter_map(|s| s.shared.as_ref())
                    .all(|i| i.in_flight() == 0);
                let expired = state
                    .drain_deadline
                    .is_some_and(|deadline| Instant::now() >= deadline);
                if idle || expired {
                    self.announce_empty(state);
                    self.stop_all(state).await;
                    self.report(state, RuntimeOutcome::Drained);
                    myself.stop(Some("drained".to_owned()));
                } else {
                    myself.send_after(DRAIN_POLL_INTERVAL, || RevisionMsg::DrainCheck);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.stop_all(state).await;
        Ok(())
    }
}

impl RevisionActor {
    fn announce_empty(&self, state: &RevisionState) {
        for instance_state in INSTANCE_STATES {
            instances_gauge(state, instance_state).set(0.0);
        }
        let _ = state.args.parent.cast(EnvironmentMsg::Instances {
            from: state.id,
            revision: state.args.revision.revision_id,
            instances: Vec::new(),
        });
    }
}

/// The states an instance slot is reported in: `ready` (serving), `running`
/// (started, not serving: warming up or draining), `down` (no process: not
/// started yet, crashed and waiting for its restart, or stopped).
const INSTANCE_STATES: [&str; 3] = ["ready", "running", "down"];

fn instances_gauge(state: &RevisionState, instance_state: &'static str) -> metrics::Gauge {
    metrics::gauge!(
        "gtc_instances",
        "revision" => state.args.revision.revision_id.to_string(),
        "state" => instance_state
    )
}

/// Sets `gtc_instances{revision, state}` from the slots.
fn record_instance_states(state: &RevisionState) {
    let mut counts = [0usize; 3];
    for slot in &state.slots {
        let index = match (&slot.shared, &slot.running) {
            (Some(_), _) => 0,
            (None, Some(_)) => 1,
            (None, None) => 2,
        };
        counts[index] += 1;
    }
    for (instance_state, count) in INSTANCE_STATES.iter().zip(counts) {
        instances_gauge(state, instance_state).set(count as f64);
    }
}
