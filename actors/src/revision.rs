//! The revision actor: runs one revision's instances through the deployer
//! its environment's deployer slot selected when it started (the
//! `packs::deployer::Deployer` contract: stage, warm, drain, archive),
//! follows the deployer's instance set (exits and restarts happen there),
//! drains, and reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy::command::{RuntimeOutcome, RuntimeReport};
use deploy::revision::Revision;
use packs::deployer::{Deployer, InstanceSet, RevisionSpec, RuntimeSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use router::proxy::Instance;

use crate::context::NodeContext;
use crate::messages::EnvironmentMsg;
use deploy::reconcile::{Goal, Share};

/// How often a drain checks for in-flight requests.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time an instance gets to exit after its stop signal before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a revision actor waits for the router to publish a shrunk
/// instance list before it stops instances anyway (the environment actor
/// publishes first thing when the message arrives; this bounds a stalled
/// or stopping parent).
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

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
    /// The deployer the environment's binding selected when this revision
    /// started; it keeps it even if the binding changes.
    pub deployer: Arc<dyn Deployer>,
    /// The pack configs its instances receive
    /// (`deploy::runtime_config::delivered` when it started).
    pub pack_configs: Vec<deploy::pack_config::PackConfig>,
}

/// Messages to the revision actor.
pub enum RevisionMsg {
    /// Stage and warm through the deployer (sent once, right after the actor starts).
    Start,
    /// The deployer's instance set changed (an exit, a restart).
    InstancesChanged,
    /// Stop taking requests, let in-flight ones finish, then stop.
    Drain { drain_seconds: u32 },
    /// Check whether the drain is over.
    DrainCheck,
    /// Run this many instances here from now on (the autoscaler moved the
    /// revision's count, or the leader placed another number here).
    Resize { instances: u32 },
    /// Its configuration changed (a `reload: signal` revision): rewrite
    /// the instances' pack-config files, then send them SIGHUP.
    Reload {
        pack_configs: Vec<deploy::pack_config::PackConfig>,
    },
}

/// The revision actor's state.
pub struct RevisionState {
    /// This actor's id: the environment actor ignores instance lists from
    /// an actor it already replaced.
    id: ractor::ActorId,
    args: RevisionArgs,
    spec: Option<RevisionSpec>,
    /// The deployer's instances, once warm.
    set: Option<tokio::sync::watch::Receiver<InstanceSet>>,
    /// What the router is given, per instance slot; kept across changes so
    /// an unchanged instance keeps its in-flight count and ejection state.
    shared: Vec<Option<Arc<Instance>>>,
    /// Exits already counted in `gtc_instance_restarts_total`.
    exits_counted: u64,
    drain_deadline: Option<Instant>,
}

fn bundle_folder(args: &RevisionArgs) -> std::path::PathBuf {
    args.context.revision_dir(args.revision.revision_id)
}

/// The deployer's view of this revision, from its staged bundle's manifest.
fn revision_spec(args: &RevisionArgs) -> Result<RevisionSpec, String> {
    let context = &args.context;
    let revision = &args.revision;
    let folder = context.revision_dir(revision.revision_id);
    let bundle_root = deploy::layout::extracted_bundle(&folder);
    let manifest = bundle::stage::read_manifest(&bundle_root).map_err(|e| e.to_string())?;
    let runtime = manifest.require_runtime().map_err(|e| e.to_string())?;
    let instances = match args.share {
        Share::All => revision.instance_count().unwrap_or(runtime.instances),
        Share::Placed(count) => count,
    };
    Ok(RevisionSpec {
        env_id: context.env_id.clone(),
        deployment_id: revision.deployment_id,
        revision_id: revision.revision_id,
        log_dir: deploy::layout::instance_logs(&folder),
        instances,
        host: context.instance_host,
        node_name: context.node_name.clone(),
        runtime: RuntimeSpec {
            command: runtime.command.clone(),
            env: runtime.env.clone(),
            port_env: runtime.port_env.clone(),
            health_path: runtime.health_path.clone(),
            startup_timeout: Duration::from_secs(u64::from(runtime.startup_timeout_seconds)),
            health_timeout: Duration::from_millis(u64::from(runtime.health_timeout_ms)),
            image: crate::image::container_image(runtime, &bundle_root),
            secrets: secret_material(args, &folder)?,
            config_dir: config_folder(args, &folder)?,
        },
        bundle_root,
    })
}

/// Writes the revision's pack configs: the pinned ones where its
/// `pack_config_refs` point, and those its instances receive into its
/// `run-config` folder (`None` when it has none).
fn config_folder(
    args: &RevisionArgs,
    folder: &std::path::Path,
) -> Result<Option<std::path::PathBuf>, String> {
    let pinned = folder.join(deploy::layout::PACK_CONFIGS_DIR);
    crate::config_files::write_pinned(&pinned, &args.revision.pack_configs).map_err(|error| {
        format!(
            "writing its pack configs into {}: {error}",
            pinned.display()
        )
    })?;
    let dir = deploy::layout::run_config(folder);
    let keep = args.revision.config_reload == deploy::pack_config::ConfigReload::Signal;
    crate::config_files::write_folder(&dir, &args.pack_configs, keep)
        .map_err(|error| format!("writing its pack configs into {}: {error}", dir.display()))
}

/// Reads the revision's pinned secret versions for its instances: the
/// variables, and the files written (0600, folder 0700) into the revision's
/// `run-secrets` folder, which [`remove_secret_files`] deletes when the
/// revision stops here. An error names the pin, never a value.
fn secret_material(
    args: &RevisionArgs,
    folder: &std::path::Path,
) -> Result<packs::deployer::SecretMaterial, String> {
    use deploy::secret_pins::Delivery;
    use secrecy::SecretString;
    let pins = &args.revision.secret_pins;
    let mut material = packs::deployer::SecretMaterial::default();
    remove_secret_files(folder);
    if pins.is_empty() {
        return Ok(material);
    }
    let env = &args.context.env_id;
    let store = secrets::SecretStore::new(&args.context.store_root);
    let dir = deploy::layout::run_secrets(folder);
    for pin in pins {
        let failed = |error: &dyn std::fmt::Display| {
            format!(
                "pinned secret {} version {}: {error}",
                pin.reference, pin.version
            )
        };
        let path =
            secrets::path::parse_for_env(pin.reference.as_str(), env).map_err(|e| failed(&e))?;
        // The store's errors name the reference and version themselves.
        let (_, value) = store
            .reveal(env, &path, Some(pin.version))
            .map_err(|e| format!("a pinned secret of the revision: {e}"))?;
        match pin.delivery() {
            Some(Delivery::Env(name)) => material.env.push((
                name.to_owned(),
                SecretString::from(value.expose().to_owned()),
            )),
            Some(Delivery::File(name)) => {
                write_secret_file(&dir, name, value.expose())
                    .map_err(|e| failed(&format!("writing its file {name}: {e}")))?;
                material.files_dir = Some(dir.clone());
            }
            None => return Err(failed(&"it names neither a variable nor a file")),
        }
    }
    Ok(material)
}

/// Writes one secret file readable by the node's user only.
fn write_secret_file(dir: &std::path::Path, name: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))?;
    file.write_all(value.as_bytes())?;
    file.sync_all()
}

/// Deletes the revision's secret files on this node, if any.
fn remove_secret_files(folder: &std::path::Path) {
    let dir = deploy::layout::run_secrets(folder);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "could not remove a revision's secret files")
        }
    }
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
        let instances: Vec<_> = state.shared.iter().flatten().cloned().collect();
        record_instance_states(state);
        let _ = state.args.parent.cast(EnvironmentMsg::Instances {
            from: state.id,
            revision: state.args.revision.revision_id,
            instances,
            published: None,
        });
    }

    /// Announces `instances` and waits (at most `PUBLISH_WAIT`) until the
    /// router serves from them: called before instances are stopped, so
    /// the router stops picking an instance before its process is told to
    /// stop, and `gtc_instances_ready` never counts a stopped one.
    async fn announce_and_wait(&self, state: &RevisionState, instances: Vec<Arc<Instance>>) {
        let (published, done) = tokio::sync::oneshot::channel();
        let sent = state.args.parent.cast(EnvironmentMsg::Instances {
            from: state.id,
            revision: state.args.revision.revision_id,
            instances,
            published: Some(published),
        });
        if sent.is_ok() && tokio::time::timeout(PUBLISH_WAIT, done).await.is_err() {
            tracing::warn!(revision = %state.args.revision.revision_id, "the router did not publish the shrunk instance list in time; stopping anyway");
        }
    }

    /// Takes the deployer's current instance set into `shared`, counts new
    /// exits, and announces when something changed.
    fn follow_instances(&self, state: &mut RevisionState) {
        let Some(set) = state.set.as_mut() else {
            return;
        };
        let current = set.borrow_and_update().clone();
        let revision = state.args.revision.revision_id;
        if current.exits_total > state.exits_counted {
            metrics::counter!("gtc_instance_restarts_total", "revision" => revision.to_string())
                .increment(current.exits_total - state.exits_counted);
            state.exits_counted = current.exits_total;
        }
        let mut changed = state.shared.len() != current.slots.len();
        state.shared.resize(current.slots.len(), None);
        for (shared, slot) in state.shared.iter_mut().zip(&current.slots) {
            let same = shared.as_ref().map(|i| i.addr) == slot.addr;
            if !same {
                *shared = slot.addr.map(Instance::new);
                changed = true;
            }
        }
        if changed {
            self.announce(state);
        }
    }

    async fn start(&self, myself: &ActorRef<RevisionMsg>, state: &mut RevisionState) {
        let Some(spec) = state.spec.clone() else {
            return;
        };
        let deployer = Arc::clone(&state.args.deployer);
        let warmed = async {
            deployer.stage_revision(&spec).await?;
            deployer.warm_revision(&spec).await
        }
        .await;
        match warmed {
            Ok(warm) => {
                tracing::info!(revision = %spec.revision_id, deployer = deployer.descriptor_path(), instances = ?warm.instances.borrow().ready(), "revision warm");
                forward_changes(myself.clone(), warm.instances.clone());
                state.set = Some(warm.instances);
                self.follow_instances(state);
                self.announce(state);
                if state.args.goal == Goal::Warm {
                    self.report(state, RuntimeOutcome::Ready);
                }
            }
            Err(error) => {
                tracing::warn!(revision = %spec.revision_id, %error, "revision failed to warm");
                if state.args.goal == Goal::Warm {
                    self.report(
                        state,
                        RuntimeOutcome::Failed {
                            reason: error.to_string(),
                        },
                    );
                }
                myself.stop(Some("warming failed".to_owned()));
            }
        }
    }

    /// Grows or shrinks the instances that run here, keeping the others.
    /// A shrink takes the instances that go out of the router first, then
    /// the deployer stops them with the revision's drain time as their
    /// grace, so their in-flight requests finish; a growth returns once the
    /// new instances pass their health check (the router then sends them
    /// requests, releasing any it held).
    async fn resize(&self, state: &mut RevisionState, instances: u32) {
        let Some(mut spec) = state.spec.clone() else {
            return;
        };
        if state.drain_deadline.is_some() || state.set.is_none() || spec.instances == instances {
            spec.instances = instances;
            state.spec = Some(spec);
            return;
        }
        let revision = spec.revision_id;
        let from = spec.instances;
        let keep = usize::try_from(instances).unwrap_or(usize::MAX);
        if state.shared.len() > keep {
            state.shared.truncate(keep);
            record_instance_states(state);
            let instances = state.shared.iter().flatten().cloned().collect();
            self.announce_and_wait(state, instances).await;
        }
        spec.instances = instances;
        let grace = Duration::from_secs(u64::from(state.args.revision.drain_seconds));
        let started = Instant::now();
        match state
            .args
            .deployer
            .scale_revision(&spec, instances, grace)
            .await
        {
            Ok(_) => {
                tracing::info!(%revision, from, to = instances, elapsed_ms = started.elapsed().as_millis() as u64, "revision resized");
                state.spec = Some(spec);
            }
            Err(error) => {
                tracing::warn!(%revision, from, to = instances, %error, "revision not resized; the next plan asks again");
            }
        }
        self.follow_instances(state);
    }

    /// Stops the revision's instances and forgets them on the deployer.
    async fn stop_all(&self, state: &mut RevisionState) {
        state.set = None;
        for shared in &mut state.shared {
            *shared = None;
        }
        // Nothing of it runs here any more: its gauges say so, whether it
        // drained, was archived or its node is stopping.
        for instance_state in INSTANCE_STATES {
            instances_gauge(state, instance_state).set(0.0);
        }
        let Some(spec) = state.spec.as_ref() else {
            return;
        };
        let deployer = &state.args.deployer;
        if let Err(error) = deployer.drain_revision(spec, STOP_GRACE).await {
            tracing::warn!(revision = %spec.revision_id, %error, "drain failed");
        }
        if let Err(error) = deployer.archive_revision(spec).await {
            tracing::warn!(revision = %spec.revision_id, %error, "archive failed");
        }
        // Nothing runs here any more: its secret files go with it.
        remove_secret_files(&bundle_folder(&state.args));
        crate::config_files::remove_folder(&deploy::layout::run_config(&bundle_folder(
            &state.args,
        )));
    }
}

/// Tells the actor about every change of the deployer's instance set until
/// the set is dropped (drained or archived) or the actor is gone.
fn forward_changes(
    actor: ActorRef<RevisionMsg>,
    mut set: tokio::sync::watch::Receiver<InstanceSet>,
) {
    tokio::spawn(async move {
        while set.changed().await.is_ok() {
            if actor.cast(RevisionMsg::InstancesChanged).is_err() {
                return;
            }
        }
    });
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
        let spec = revision_spec(&args);
        let mut state = RevisionState {
            args,
            spec: None,
            set: None,
            shared: Vec::new(),
            exits_counted: 0,
            drain_deadline: None,
            id: myself.get_id(),
        };
        match spec {
            Ok(spec) => {
                state.spec = Some(spec);
                myself.cast(RevisionMsg::Start)?;
            }
            Err(reason) => {
                let absent = !bundle_folder(&state.args).exists();
                if absent && state.args.context.bundles_may_be_elsewhere {
                    tracing::warn!(revision = %state.args.revision.revision_id, "the revision's bundle is not on this node; it runs where it was staged");
                } else if state.args.goal == Goal::Warm {
                    self.report(&state, RuntimeOutcome::Failed { reason });
                } else {
                    tracing::error!(revision = %state.args.revision.revision_id, %reason, "cannot run the revision");
                }
                myself.stop(Some("no runnable bundle".to_owned()));
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RevisionMsg::Start => self.start(&myself, state).await,
            RevisionMsg::InstancesChanged => {
                if state.drain_deadline.is_none() {
                    self.follow_instances(state);
                }
            }
            RevisionMsg::Drain { drain_seconds } => {
                state.drain_deadline =
                    Some(Instant::now() + Duration::from_secs(u64::from(drain_seconds)));
                myself.cast(RevisionMsg::DrainCheck)?;
            }
            RevisionMsg::Resize { instances } => self.resize(state, instances).await,
            RevisionMsg::Reload { pack_configs } => self.reload(state, pack_configs).await,
            RevisionMsg::DrainCheck => {
                let idle = state.shared.iter().flatten().all(|i| i.in_flight() == 0);
                let expired = state
                    .drain_deadline
                    .is_some_and(|deadline| Instant::now() >= deadline);
                if idle || expired {
                    self.announce_empty(state).await;
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
    /// Rewrites the instances' pack-config files and tells the instances
    /// (SIGHUP through the deployer). An instance that starts meanwhile
    /// reads the new files; one that cannot be told keeps running with
    /// what it read, and the failure is logged.
    async fn reload(
        &self,
        state: &mut RevisionState,
        pack_configs: Vec<deploy::pack_config::PackConfig>,
    ) {
        let Some(spec) = state.spec.as_mut() else {
            return;
        };
        let revision = spec.revision_id;
        let dir = deploy::layout::run_config(&bundle_folder(&state.args));
        match crate::config_files::write_folder(&dir, &pack_configs, true) {
            Ok(written) => spec.runtime.config_dir = written,
            Err(error) => {
                tracing::error!(%revision, dir = %dir.display(), %error, "the new configuration could not be written; the instances keep the old one");
                return;
            }
        }
        state.args.pack_configs = pack_configs;
        if state.drain_deadline.is_some() || state.set.is_none() {
            return; // nothing running to tell (yet): a start reads the files
        }
        match state.args.deployer.reload_revision(spec).await {
            Ok(told) => {
                tracing::info!(%revision, instances = told, "configuration changed; instances told to reload")
            }
            Err(error) => {
                tracing::warn!(%revision, %error, "instances could not be told of the new configuration")
            }
        }
    }

    async fn announce_empty(&self, state: &RevisionState) {
        for instance_state in INSTANCE_STATES {
            instances_gauge(state, instance_state).set(0.0);
        }
        self.announce_and_wait(state, Vec::new()).await;
    }
}

/// The states an instance slot is reported in: `ready` (serving), `running`
/// (started, not serving: draining), `down` (no instance: crashed and
/// waiting for its restart, or stopped).
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
    let deployer_addrs: Vec<bool> = state
        .set
        .as_ref()
        .map(|set| {
            set.borrow()
                .slots
                .iter()
                .map(|s| s.addr.is_some())
                .collect()
        })
        .unwrap_or_default();
    for (index, shared) in state.shared.iter().enumerate() {
        let up = deployer_addrs.get(index).copied().unwrap_or(false);
        let bucket = match (shared, up) {
            (Some(_), _) => 0,
            (None, true) => 1,
            (None, false) => 2,
        };
        counts[bucket] += 1;
    }
    for (instance_state, count) in INSTANCE_STATES.iter().zip(counts) {
        instances_gauge(state, instance_state).set(count as f64);
    }
}
