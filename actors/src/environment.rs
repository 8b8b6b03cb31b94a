//! The environment actor: follows the committed state, runs a revision
//! actor for every revision that has instances to run, publishes router
//! snapshots, and turns the revision actors' outcomes into runtime reports.
//!
//! What to run is decided by [`deploy::reconcile::plan`]; this file gathers its
//! inputs and carries out its actions. It never calls the store from a
//! handler: loads and local file writes go through the store worker's query
//! lane with a bounded wait, and runtime reports are handed to its command
//! lane without waiting, so a stalled (Raft) write never stops the actor
//! from following and publishing the states this node applies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deploy::command::{Command, RuntimeOutcome, RuntimeReport};
use deploy::descriptor::CapabilitySlot;
use deploy::environment_runtime::{
    ENVIRONMENT_RUNTIME_FILE, ENVIRONMENT_RUNTIME_SCHEMA, EnvironmentRuntime,
};
use deploy::ids::RevisionId;
use deploy::lifecycle::Lifecycle;
use deploy::state::EnvironmentState;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use router::RouteTable;
use router::proxy::{Instance, Published};
use store::{StoreWorker, StoreWorkerConfig};

use crate::context::NodeContext;
use crate::messages::EnvironmentMsg;
use crate::revision::{RevisionActor, RevisionArgs, RevisionMsg};
use deploy::reconcile::{Action, PlanInput, Runs, Share, StopReason};

/// Longest wait for a revision actor to stop its instances at shutdown.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Pause before asking again for a bundle no member could send, so an
/// unreachable bundle is not asked for in a tight loop.
const FETCH_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// The environment actor.
pub struct EnvironmentActor;

/// Its arguments.
pub struct EnvironmentArgs {
    pub context: NodeContext,
}

struct Running {
    actor: ActorRef<RevisionMsg>,
    /// The share it was started with.
    share: Share,
    /// The instances it was last asked to run (at start, or by a resize).
    count: u32,
    instances: Vec<Arc<Instance>>,
    draining: bool,
    /// The pack configs its instances were last given.
    pack_configs: Vec<deploy::pack_config::PackConfig>,
}

/// Lets a `Tick` into the mailbox only when none is waiting there, so the
/// timer and the cluster's state changes cannot pile ticks up behind a
/// slow handler (ractor mailboxes are unbounded).
#[derive(Clone, Default)]
struct TickGate(Arc<AtomicBool>);

impl TickGate {
    /// Sends a `Tick` unless one is waiting; false once the actor is gone.
    fn send(&self, actor: &ActorRef<EnvironmentMsg>) -> bool {
        if self.0.swap(true, Ordering::AcqRel) {
            return true;
        }
        actor.cast(EnvironmentMsg::Tick).is_ok()
    }

    /// The waiting `Tick` is being handled: the next one may be sent.
    fn taken(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The environment actor's state.
pub struct EnvironmentActorState {
    context: NodeContext,
    /// The store, behind its own threads.
    worker: StoreWorker,
    tick_gate: TickGate,
    current: Option<EnvironmentState>,
    revisions: HashMap<RevisionId, Running>,
    /// Bundles being fetched from other members, not to be asked for twice.
    fetching: Arc<std::sync::Mutex<HashSet<RevisionId>>>,
    /// What `runtime.json` last said (generation and discoveries), so it is
    /// rewritten only when that changes.
    runtime_written: Option<(u64, BTreeMap<String, serde_json::Value>)>,
    /// The generation whose `runtime-config.json` was last written.
    runtime_config_written: Option<u64>,
}

impl EnvironmentActor {
    /// Fetches `revision`'s bundle from another member, once at a time, and
    /// asks for a new plan when that is over (fetched or not).
    fn fetch_bundle(
        &self,
        state: &EnvironmentActorState,
        revision: &deploy::revision::Revision,
        myself: &ActorRef<EnvironmentMsg>,
    ) {
        let Some(fetcher) = state.context.bundle_fetcher.clone() else {
            return;
        };
        let Ok(mut fetching) = state.fetching.lock() else {
            return;
        };
        if !fetching.insert(revision.revision_id) {
            return;
        }
        let (fetching, revision, actor) = (
            Arc::clone(&state.fetching),
            revision.clone(),
            myself.clone(),
        );
        tokio::spawn(async move {
            let id = revision.revision_id;
            match fetcher.fetch(revision).await {
                Ok(()) => tracing::info!(revision = %id, "bundle fetched from another member"),
                Err(error) => {
                    tracing::warn!(revision = %id, %error, "bundle not fetched; retrying");
                    tokio::time::sleep(FETCH_RETRY_DELAY).await;
                }
            }
            if let Ok(mut fetching) = fetching.lock() {
                fetching.remove(&id);
            }
            let _ = actor.cast(EnvironmentMsg::Reconcile);
        });
    }

    /// Plans against the current state and carries the plan out.
    async fn reconcile(
        &self,
        myself: &ActorRef<EnvironmentMsg>,
        state: &mut EnvironmentActorState,
    ) {
        let Some(current) = state.current.clone() else {
            return;
        };
        let running: BTreeMap<RevisionId, Runs> = state
            .revisions
            .iter()
            .map(|(id, running)| {
                (
                    *id,
                    Runs {
                        share: running.share,
                        instances: running.count,
                        draining: running.draining,
                    },
                )
            })
            .collect();
        // A stat of a local folder per revision not yet running: it never
        // waits on the network.
        let bundles_here: BTreeSet<RevisionId> = current
            .environment
            .revisions
            .iter()
            .filter(|r| r.runtime_instances.is_some() && !running.contains_key(&r.revision_id))
            .filter(|r| {
                deploy::layout::extracted_bundle(&state.context.revision_dir(r.revision_id))
                    .is_dir()
            })
            .map(|r| r.revision_id)
            .collect();
        let role = state.context.role();
        let actions = deploy::reconcile::plan(&PlanInput {
            state: &current,
            running: &running,
            role: &role,
            bundles_here: &bundles_here,
            bundles_fetchable: state.context.bundle_fetcher.is_some(),
        });
        for action in actions {
            self.perform(myself, state, &current, action).await;
        }
        Self::reload_changed_configs(state, &current);
    }

    /// Tells each running `reload: signal` revision whose configuration
    /// (its deployment's `config_overrides`) changed since its instances
    /// were last given one. A revision pinned to its staged configuration
    /// never changes here: a new revision carries a new one.
    fn reload_changed_configs(state: &mut EnvironmentActorState, current: &EnvironmentState) {
        for revision in &current.environment.revisions {
            if revision.config_reload != deploy::pack_config::ConfigReload::Signal {
                continue;
            }
            let Some(running) = state.revisions.get_mut(&revision.revision_id) else {
                continue;
            };
            if running.draining {
                continue;
            }
            let now = deploy::runtime_config::delivered(&current.environment, revision);
            if now != running.pack_configs {
                running.pack_configs = now.clone();
                let _ = running
                    .actor
                    .cast(RevisionMsg::Reload { pack_configs: now });
            }
        }
    }

    /// Writes the environment's `runtime-config.json` (the spec's
    /// `greentic.runtime-config.v1`: every split entry with its revision's
    /// pack-config refs) for a runtime that reads it there, once per
    /// committed generation; removes it when there are no splits.
    async fn write_runtime_config(&self, state: &mut EnvironmentActorState) {
        let Some(current) = &state.current else {
            return;
        };
        let generation = current.generation;
        if state.runtime_config_written == Some(generation) {
            return;
        }
        let projection = deploy::runtime_config::RuntimeConfig::project(&current.environment);
        let path = deploy::layout::env_dir(&state.context.store_root, &state.context.env_id)
            .join(deploy::layout::RUNTIME_CONFIG_FILE);
        let bytes = match projection.map(|config| serde_json::to_vec_pretty(&config)) {
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(error)) => {
                tracing::warn!(path = %path.display(), %error, "runtime-config.json not written");
                return;
            }
            None => None,
        };
        let target = path.clone();
        let written = state
            .worker
            .run_query("write runtime-config.json", move |_| match bytes {
                Some(bytes) => {
                    store::write_file_atomically(&target, &bytes).map_err(|e| e.to_string())
                }
                None => match std::fs::remove_file(&target) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        Err(error.to_string())
                    }
                    _ => Ok(()),
                },
            })
            .await;
        match written {
            Ok(Ok(())) => state.runtime_config_written = Some(generation),
            Ok(Err(error)) => {
                tracing::warn!(path = %path.display(), %error, "runtime-config.json not written")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "runtime-config.json not written")
            }
        }
    }

    async fn perform(
        &self,
        myself: &ActorRef<EnvironmentMsg>,
        state: &mut EnvironmentActorState,
        current: &EnvironmentState,
        action: Action,
    ) {
        match action {
            Action::Stop { revision, reason } => {
                let Some(running) = state.revisions.remove(&revision) else {
                    return;
                };
                let why = match reason {
                    StopReason::PlacementChanged => {
                        tracing::info!(%revision, "placement changed; restarting the revision's instances here");
                        "the revision's placement changed"
                    }
                    StopReason::NoLongerRuns => "the revision no longer runs",
                };
                // Waited for (bounded), so the deployer has stopped and
                // forgotten the revision before a new actor stages it again.
                if let Err(error) = running
                    .actor
                    .stop_and_wait(Some(why.to_owned()), Some(SHUTDOWN_WAIT))
                    .await
                {
                    tracing::warn!(%revision, %error, "revision actor did not stop in time");
                }
            }
            Action::Start {
                revision,
                share,
                goal,
            } => {
                let Some(committed) = current.environment.revision(revision) else {
                    return;
                };
                let deployer = match state
                    .context
                    .deployers
                    .select(&current.environment, committed)
                {
                    Ok(deployer) => deployer,
                    Err(error) => {
                        tracing::error!(%revision, %error, "no deployer for the revision");
                        if goal == deploy::reconcile::Goal::Warm {
                            let _ = myself.cast(EnvironmentMsg::Report(RuntimeReport {
                                environment_id: state.context.env_id.clone(),
                                revision_id: revision,
                                outcome: RuntimeOutcome::Failed {
                                    reason: error.to_string(),
                                },
                            }));
                        }
                        return;
                    }
                };
                let pack_configs =
                    deploy::runtime_config::delivered(&current.environment, committed);
                let args = RevisionArgs {
                    context: state.context.clone(),
                    share,
                    revision: committed.clone(),
                    goal,
                    parent: myself.clone(),
                    deployer,
                    pack_configs: pack_configs.clone(),
                };
                match Actor::spawn_linked(None, RevisionActor, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        state.revisions.insert(
                            revision,
                            Running {
                                actor,
                                share,
                                count: share.count(committed),
                                instances: Vec::new(),
                                draining: false,
                                pack_configs,
                            },
                        );
                    }
                    Err(error) => {
                        tracing::error!(%revision, %error, "could not start the revision actor")
                    }
                }
            }
            Action::Resize {
                revision,
                instances,
            } => {
                if let Some(running) = state.revisions.get_mut(&revision) {
                    running.count = instances;
                    if let Share::Placed(_) = running.share {
                        running.share = Share::Placed(instances);
                    }
                    let _ = running.actor.cast(RevisionMsg::Resize { instances });
                }
            }
            Action::FetchBundle { revision } => {
                if let Some(committed) = current.environment.revision(revision) {
                    self.fetch_bundle(state, committed, myself);
                }
            }
            Action::Drain {
                revision,
                drain_seconds,
            } => {
                if let Some(running) = state.revisions.get_mut(&revision) {
                    running.draining = true;
                    let _ = running.actor.cast(RevisionMsg::Drain { drain_seconds });
                }
            }
            Action::ReportDrained { revision } => {
                let _ = myself.cast(EnvironmentMsg::Report(RuntimeReport {
                    environment_id: state.context.env_id.clone(),
                    revision_id: revision,
                    outcome: RuntimeOutcome::Drained,
                }));
            }
        }
    }

    fn publish(&self, state: &EnvironmentActorState) {
        let Some(current) = &state.current else {
            return;
        };
        let instances = current
            .environment
            .revisions
            .iter()
            .filter(|r| r.lifecycle == Lifecycle::Ready)
            .filter_map(|r| {
                state
                    .revisions
                    .get(&r.revision_id)
                    .map(|running| (r.revision_id, running.instances.clone()))
            })
            .collect();
        state.context.router.publish(Published {
            table: RouteTable::build(current),
            instances,
        });
    }

    fn runtime_path(context: &NodeContext) -> std::path::PathBuf {
        deploy::layout::env_dir(&context.store_root, &context.env_id).join(ENVIRONMENT_RUNTIME_FILE)
    }

    /// Writes `runtime.json` after an apply: this node, and every revision
    /// it runs with its lifecycle and the instances that pass their health
    /// checks. `env doctor`'s `has_runtime` and `config show`'s `runtime`
    /// read it; it is removed when the node stops. The write runs on the
    /// store worker's query lane, with its bounded wait.
    async fn write_runtime(&self, state: &mut EnvironmentActorState) {
        let Some(current) = &state.current else {
            return;
        };
        let Some(deployer) = current.environment.binding(CapabilitySlot::Deployer) else {
            return;
        };
        let revisions: serde_json::Map<String, serde_json::Value> = current
            .environment
            .revisions
            .iter()
            .filter_map(|r| {
                let running = state.revisions.get(&r.revision_id)?;
                let instances: Vec<String> = running
                    .instances
                    .iter()
                    .map(|i| i.addr.to_string())
                    .collect();
                Some((
                    r.revision_id.to_string(),
                    serde_json::json!({
                        "deployment_id": r.deployment_id,
                        "lifecycle": r.lifecycle,
                        "instances": instances,
                    }),
                ))
            })
            .collect();
        let discovered = BTreeMap::from([
            (
                "node".to_owned(),
                serde_json::json!(state.context.node_name),
            ),
            ("revisions".to_owned(), serde_json::Value::Object(revisions)),
        ]);
        let generation = current.generation;
        if state.runtime_written.as_ref() == Some(&(generation, discovered.clone())) {
            return;
        }
        let document = EnvironmentRuntime {
            schema: ENVIRONMENT_RUNTIME_SCHEMA.to_owned(),
            environment_id: state.context.env_id.clone(),
            discovered: discovered.clone(),
            generated_at: chrono::Utc::now(),
            generated_by: deployer.kind.clone(),
            generation,
        };
        let path = Self::runtime_path(&state.context);
        let bytes = match serde_json::to_vec_pretty(&document) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "runtime.json not written");
                return;
            }
        };
        let target = path.clone();
        let written = state
            .worker
            .run_query("write runtime.json", move |_| {
                store::write_file_atomically(&target, &bytes)
            })
            .await;
        match written {
            Ok(Ok(())) => state.runtime_written = Some((generation, discovered)),
            Ok(Err(error)) => {
                tracing::warn!(path = %path.display(), %error, "runtime.json not written")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "runtime.json not written")
            }
        }
    }

    /// Hands the report to the store worker's command lane and returns at
    /// once; a task waits for the outcome (bounded by the lane's timeout),
    /// logs it and asks for a tick.
    fn submit_report(
        &self,
        myself: &ActorRef<EnvironmentMsg>,
        state: &EnvironmentActorState,
        report: RuntimeReport,
    ) {
        let context = &state.context;
        let envelope = crate::context::node_envelope(
            &context.node_name,
            format!("runtime report from node {}", context.node_name),
            Command::RevisionReport(report),
        );
        let (worker, gate, actor, env) = (
            state.worker.clone(),
            state.tick_gate.clone(),
            myself.clone(),
            context.env_id.clone(),
        );
        tokio::spawn(async move {
            match worker.submit(envelope).await {
                Ok(_) => tracing::info!(%env, "runtime report committed"),
                Err(error) => tracing::warn!(%env, %error, "runtime report not committed"),
            }
            gate.send(&actor);
        });
    }

    /// Loads the committed state and, when its generation moved, plans,
    /// publishes and writes `runtime.json`.
    async fn follow(&self, myself: &ActorRef<EnvironmentMsg>, state: &mut EnvironmentActorState) {
        let env = state.context.env_id.clone();
        match state.worker.load(&env).await {
            Ok(Some(loaded)) => {
                let changed =
                    state.current.as_ref().map(|c| c.generation) != Some(loaded.generation);
                if changed {
                    tracing::debug!(generation = loaded.generation, "committed state changed");
                    metrics::gauge!("gtc_store_generation", "env" => env.to_string())
                        .set(loaded.generation as f64);
                    state.current = Some(loaded);
                    self.reconcile(myself, state).await;
                    self.publish(state);
                    self.write_runtime(state).await;
                    self.write_runtime_config(state).await;
                }
            }
            Ok(None) => tracing::warn!(%env, "the environment does not exist"),
            Err(error) => tracing::error!(%env, %error, "cannot load the environment"),
        }
    }
}

/// Sends a tick through `gate` every `interval`, and whenever `changes`
/// moves, until the actor is gone.
fn spawn_tick_sources(
    myself: &ActorRef<EnvironmentMsg>,
    gate: &TickGate,
    interval: std::time::Duration,
    changes: Option<tokio::sync::watch::Receiver<u64>>,
) {
    let (actor, timer_gate) = (myself.clone(), gate.clone());
    tokio::spawn(async move {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            if !timer_gate.send(&actor) {
                return;
            }
        }
    });
    if let Some(mut changes) = changes {
        let (actor, gate) = (myself.clone(), gate.clone());
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if !gate.send(&actor) {
                    return;
                }
            }
        });
    }
}

impl Actor for EnvironmentActor {
    type Msg = EnvironmentMsg;
    type State = EnvironmentActorState;
    type Arguments = EnvironmentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: EnvironmentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let worker = StoreWorker::start(
            Arc::clone(&args.context.store),
            StoreWorkerConfig::default(),
        )?;
        let tick_gate = TickGate::default();
        spawn_tick_sources(
            &myself,
            &tick_gate,
            args.context.poll_interval,
            args.context.state_changes.clone(),
        );
        Ok(EnvironmentActorState {
            context: args.context,
            worker,
            tick_gate,
            current: None,
            revisions: HashMap::new(),
            fetching: Arc::default(),
            runtime_written: None,
            runtime_config_written: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EnvironmentMsg::Tick => {
                state.tick_gate.taken();
                self.follow(&myself, state).await;
            }
            EnvironmentMsg::Reconcile => {
                self.reconcile(&myself, state).await;
                self.publish(state);
                self.write_runtime(state).await;
            }
            EnvironmentMsg::Instances {
                from,
                revision,
                instances,
                published,
            } => {
                if let Some(running) = state.revisions.get_mut(&revision)
                    && running.actor.get_id() == from
                {
                    running.instances = instances;
                    self.publish(state);
                    if let Some(published) = published {
                        let _ = published.send(());
                    }
                    self.write_runtime(state).await;
                }
            }
            EnvironmentMsg::Report(report) => self.submit_report(&myself, state, report),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Stop every revision actor and wait, so no instance outlives the node.
        for (_, running) in state.revisions.drain() {
            let _ = running
                .actor
                .stop_and_wait(Some("node stopping".to_owned()), Some(SHUTDOWN_WAIT))
                .await;
        }
        // Nothing serves the environment from here any more.
        if state.runtime_written.take().is_some() {
            let path = Self::runtime_path(&state.context);
            let target = path.clone();
            let removed = state
                .worker
                .run_query("remove runtime.json", move |_| {
                    match std::fs::remove_file(&target) {
                        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                        _ => Ok(()),
                    }
                })
                .await;
            match removed {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(path = %path.display(), %error, "runtime.json not removed")
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "runtime.json not removed")
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = &event {
            // A crashed revision actor is dropped; the next state change or
            // tick that still wants the revision running starts a new one.
            let id = cell.get_id();
            let failed: Vec<RevisionId> = state
                .revisions
                .iter()
                .filter(|(_, r)| r.actor.get_id() == id)
                .map(|(k, _)| *k)
                .collect();
            for revision in failed {
                tracing::error!(%revision, %error, "revision actor crashed");
                state.revisions.remove(&revision);
                state.current = None; // force a full reconcile on the next tick
            }
        }
        Ok(())
    }
}
