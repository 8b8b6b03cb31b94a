//! The environment actor: follows the committed state, runs a revision
//! actor for every revision that has instances to run, publishes router
//! snapshots, and turns the revision actors' outcomes into runtime reports.

use std::collections::HashMap;
use std::sync::Arc;

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

use crate::revision::{Goal, RevisionActor, RevisionArgs, RevisionMsg};
use crate::supervisor::NodeContext;

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

/// Messages to the environment actor.
pub enum EnvironmentMsg {
    /// Check the committed state for changes.
    Tick,
    /// Reconcile again with the same committed state: something local
    /// changed (a fetched bundle arrived).
    Reconcile,
    /// A revision's currently healthy instances.
    Instances {
        /// The revision actor that sent it.
        from: ractor::ActorId,
        revision: RevisionId,
        instances: Vec<Arc<Instance>>,
    },
    /// A revision actor's outcome, to be committed.
    Report(RuntimeReport),
}

struct Running {
    actor: ActorRef<RevisionMsg>,
    /// The share it was started with; a new placement restarts it.
    share: crate::supervisor::Share,
    instances: Vec<Arc<Instance>>,
    draining: bool,
}

/// The environment actor's state.
pub struct EnvironmentActorState {
    context: NodeContext,
    current: Option<EnvironmentState>,
    revisions: HashMap<RevisionId, Running>,
    /// Bundles being fetched from other members, not to be asked for twice.
    fetching: Arc<std::sync::Mutex<std::collections::HashSet<RevisionId>>>,
    /// What `runtime.json` last said (generation and discoveries), so it is
    /// rewritten only when that changes.
    runtime_written: Option<(u64, std::collections::BTreeMap<String, serde_json::Value>)>,
}

fn wants_instances(lifecycle: Lifecycle) -> bool {
    matches!(
        lifecycle,
        Lifecycle::Warming | Lifecycle::Ready | Lifecycle::Draining
    )
}

impl EnvironmentActor {
    /// Whether `revision`'s bundle is on this node; if not and a fetcher is
    /// set, starts fetching it (once) and ticks when it arrives.
    fn bundle_present(
        &self,
        state: &EnvironmentActorState,
        revision: &deploy::revision::Revision,
        myself: &ActorRef<EnvironmentMsg>,
    ) -> bool {
        let folder = state
            .context
            .store_root
            .join(state.context.env_id.as_str())
            .join("revisions")
            .join(revision.revision_id.to_string())
            .join(bundle::stage::BUNDLE_DIR);
        if folder.is_dir() {
            return true;
        }
        let Some(fetcher) = state.context.bundle_fetcher.clone() else {
            // Nothing can bring it; the revision actor reports what is missing.
            return true;
        };
        let Ok(mut fetching) = state.fetching.lock() else {
            return false;
        };
        if fetching.insert(revision.revision_id) {
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
        false
    }

    async fn reconcile(
        &self,
        myself: &ActorRef<EnvironmentMsg>,
        state: &mut EnvironmentActorState,
    ) {
        let Some(current) = state.current.clone() else {
            return;
        };
        for revision in &current.environment.revisions {
            let id = revision.revision_id;
            if revision.runtime_instances.is_none() {
                continue;
            }
            let share = state.context.share(revision);
            if matches!(revision.lifecycle, Lifecycle::Warming | Lifecycle::Ready)
                && let Some(running) = state.revisions.get(&id)
                && Some(running.share) != share
            {
                // Placed elsewhere now, or a different number here: stop it;
                // the next tick starts the new share.
                tracing::info!(revision = %id, ?share, "placement changed; restarting the revision's instances here");
                running.actor.stop(None);
                state.revisions.remove(&id);
            }
            let Some(share) = share else {
                continue;
            };
            if !state.revisions.contains_key(&id)
                && matches!(revision.lifecycle, Lifecycle::Warming | Lifecycle::Ready)
                && !self.bundle_present(state, revision, myself)
            {
                continue;
            }
            let running = state.revisions.get_mut(&id);
            match (revision.lifecycle, running) {
                (Lifecycle::Warming | Lifecycle::Ready, None) => {
                    let goal = if revision.lifecycle == Lifecycle::Warming {
                        Goal::Warm
                    } else {
                        Goal::Run
                    };
                    let args = RevisionArgs {
                        context: state.context.clone(),
                        share,
                        revision: revision.clone(),
                        goal,
                        parent: myself.clone(),
                    };
                    match Actor::spawn_linked(None, RevisionActor, args, myself.get_cell()).await {
                        Ok((actor, _)) => {
                            state.revisions.insert(
                                id,
                                Running {
                                    actor,
                                    share,
                                    instances: Vec::new(),
                                    draining: false,
                                },
                            );
                        }
                        Err(error) => {
                            tracing::error!(revision = %id, %error, "could not start the revision actor")
                        }
                    }
                }
                (Lifecycle::Draining, Some(running)) if !running.draining => {
                    running.draining = true;
                    let _ = running.actor.cast(RevisionMsg::Drain {
                        drain_seconds: revision.drain_seconds,
                    });
                }
                (Lifecycle::Draining, None) => {
                    // Nothing runs (the node restarted mid-drain): the drain is over.
                    let _ = myself.cast(EnvironmentMsg::Report(RuntimeReport {
                        environment_id: state.context.env_id.clone(),
                        revision_id: id,
                        outcome: RuntimeOutcome::Drained,
                    }));
                }
                _ => {}
            }
        }
        // Stop what no longer needs to run.
        let keep: Vec<RevisionId> = current
            .environment
            .revisions
            .iter()
            .filter(|r| r.runtime_instances.is_some() && wants_instances(r.lifecycle))
            .map(|r| r.revision_id)
            .collect();
        let stale: Vec<RevisionId> = state
            .revisions
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in stale {
            if let Some(running) = state.revisions.remove(&id) {
                running
                    .actor
                    .stop(Some("the revision no longer runs".to_owned()));
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
        context
            .store_root
            .join(context.env_id.as_str())
            .join(ENVIRONMENT_RUNTIME_FILE)
    }

    /// Writes `runtime.json` after an apply: this node, and every revision
    /// it runs with its lifecycle and the instances that pass their health
    /// checks. `env doctor`'s `has_runtime` and `config show`'s `runtime`
    /// read it; it is removed when the node stops.
    fn write_runtime(&self, state: &mut EnvironmentActorState) {
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
        let discovered = std::collections::BTreeMap::from([
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
        let written = serde_json::to_vec_pretty(&document)
            .map_err(|error| error.to_string())
            .and_then(|bytes| {
                store::write_file_atomically(&path, &bytes).map_err(|error| error.to_string())
            });
        match written {
            Ok(()) => state.runtime_written = Some((generation, discovered)),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "runtime.json not written")
            }
        }
    }

    fn submit_report(&self, state: &EnvironmentActorState, report: RuntimeReport) {
        let context = &state.context;
        let envelope = crate::supervisor::node_envelope(
            &context.node_name,
            format!("runtime report from node {}", context.node_name),
            Command::RevisionReport(report),
        );
        match context.store.submit(&envelope) {
            Ok(_) => tracing::info!(env = %context.env_id, "runtime report committed"),
            Err(error) => {
                tracing::warn!(env = %context.env_id, %error, "runtime report not committed")
            }
        }
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
        myself.send_interval(args.context.poll_interval, || EnvironmentMsg::Tick);
        if let Some(mut changes) = args.context.state_changes.clone() {
            let actor = myself.clone();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    if actor.cast(EnvironmentMsg::Tick).is_err() {
                        return;
                    }
                }
            });
        }
        myself.cast(EnvironmentMsg::Tick)?;
        Ok(EnvironmentActorState {
            context: args.context,
            current: None,
            revisions: HashMap::new(),
            fetching: Arc::default(),
            runtime_written: None,
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
                let loaded = state.context.store.load(&state.context.env_id);
                match loaded {
                    Ok(Some(loaded)) => {
                        let changed =
                            state.current.as_ref().map(|c| c.generation) != Some(loaded.generation);
                        if changed {
                            tracing::debug!(
                                generation = loaded.generation,
                                "committed state changed"
                            );
                            metrics::gauge!("gtc_store_generation", "env" => state.context.env_id.to_string())
                                .set(loaded.generation as f64);
                            state.current = Some(loaded);
                            self.reconcile(&myself, state).await;
                            self.publish(state);
                            self.write_runtime(state);
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(env = %state.context.env_id, "the environment does not exist")
                    }
                    Err(error) => {
                        tracing::error!(env = %state.context.env_id, %error, "cannot load the environment")
                    }
                }
            }
            EnvironmentMsg::Reconcile => {
                self.reconcile(&myself, state).await;
                self.publish(state);
                self.write_runtime(state);
            }
            EnvironmentMsg::Instances {
                from,
                revision,
                instances,
            } => {
                if let Some(running) = state.revisions.get_mut(&revision)
                    && running.actor.get_id() == from
                {
                    running.instances = instances;
                    self.publish(state);
                    self.write_runtime(state);
                }
            }
            EnvironmentMsg::Report(report) => {
                self.submit_report(state, report);
                myself.cast(EnvironmentMsg::Tick)?;
            }
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
            if let Err(error) = std::fs::remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %error, "runtime.json not removed");
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
