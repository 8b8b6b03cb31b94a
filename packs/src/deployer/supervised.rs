//! The lifecycle every deployer in this workspace shares, over a driver
//! that knows one provider's instances.
//!
//! Per revision: `stage` asks the driver to check and pin the artifact;
//! `warm` reaps what a previous node left (by the provider's own listing),
//! starts the instances concurrently, each health-gated, stops them all if
//! one fails, then hands each to its own supervision task (with its own
//! stop channel) that restarts it with backoff after an unexpected exit;
//! `scale` grows the same way (the new instances get their own tasks and
//! slots) or shrinks by removing the highest-index slots and telling their
//! tasks to stop with the grace, without waiting; `drain` tells every task
//! to stop its instance with the grace and waits for them, and for those a
//! shrink is still stopping; `archive` drains with no grace, cuts short the
//! shrink's stops, reaps again and forgets the revision.
//!
//! Each revision has its own lock, so calls on one revision are serialized
//! (that is what makes a concurrent second `warm` return the first one's
//! instances instead of starting duplicates) while other revisions proceed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deploy::ids::RevisionId;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{
    DeployFuture, Deployer, DeployerError, INSTANCES_MAX, InstanceSet, InstanceSlot,
    ProviderInstance, RevisionPhase, RevisionRuntime, RevisionSpec, RuntimeConfigReport,
    SplitEntry, StagedRevision, WarmRevision, check_split,
};
use crate::restart::{RestartDecision, RestartPolicy};

/// First restart delay after an unexpected exit; doubles per restart.
pub const RESTART_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest restart delay.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Restarts of one instance allowed within [`RESTART_WINDOW`] before the
/// deployer stops restarting it (a crash loop that fast is not bad luck).
pub const RESTARTS_MAX: u32 = 5;
/// The window [`RESTARTS_MAX`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// A boxed future with no error, for [`RunningUnit`].
pub type UnitFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One started, healthy instance on a provider.
pub trait RunningUnit: Send + 'static {
    /// Where it serves.
    fn addr(&self) -> SocketAddr;
    /// Resolves when it exits, with a description of how. Cancel-safe.
    fn wait_exit(&mut self) -> UnitFuture<'_, String>;
    /// Stop signal, `grace` to exit, then kill; gone when this returns.
    fn stop(self: Box<Self>, grace: Duration) -> UnitFuture<'static, ()>;
}

/// What one provider does with one instance.
pub trait InstanceDriver: Send + Sync + 'static {
    /// The deployer's descriptor path.
    fn descriptor_path(&self) -> &'static str;
    /// Checks that the revision's artifact can run and pins it. No
    /// instance is started. Returns what will run.
    fn stage<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, String>;
    /// Starts instance `index` of the staged `artifact` and returns once it
    /// is healthy; on failure nothing of it is left.
    fn start<'a>(
        &'a self,
        spec: &'a RevisionSpec,
        artifact: &'a str,
        index: u32,
    ) -> DeployFuture<'a, Box<dyn RunningUnit>>;
    /// Removes every instance of the revision the provider lists (left by
    /// a killed node, or by this one); returns how many.
    fn reap<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize>;
    /// The revision's instances as the provider lists them.
    fn list<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, Vec<ProviderInstance>>;
    /// Sends SIGHUP to every running instance of the revision the provider
    /// lists (their configuration files were rewritten); returns how many
    /// were signalled. An instance that exited meanwhile is not counted.
    fn reload<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize>;
}

/// One running instance: its supervision task and how to stop it.
struct Member {
    index: u32,
    /// `Some(grace)` tells the task to stop its instance.
    stop_tx: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
}

/// A revision while it is warm: the instance tasks and how to stop them.
struct Warm {
    instances: watch::Receiver<InstanceSet>,
    /// Where slots are added and removed; the tasks update their own slot.
    set_tx: Arc<watch::Sender<InstanceSet>>,
    /// The running instances, index-ordered: `members[i].index == i`.
    members: Vec<Member>,
    /// Tasks of instances a shrink took out, still stopping, by index.
    stopping: BTreeMap<u32, JoinHandle<()>>,
}

impl Warm {
    fn new() -> Self {
        let (set_tx, instances) = watch::channel(InstanceSet::default());
        Self {
            instances,
            set_tx: Arc::new(set_tx),
            members: Vec::new(),
            stopping: BTreeMap::new(),
        }
    }

    /// How many instances the revision runs (up or restarting).
    fn count(&self) -> u32 {
        u32::try_from(self.members.len()).unwrap_or(u32::MAX)
    }

    /// Adds the slots of `started` (instances `count..`, in order), then
    /// hands each to its own supervision task.
    fn add<D: InstanceDriver>(
        &mut self,
        driver: &Arc<D>,
        spec: &Arc<RevisionSpec>,
        artifact: &Arc<str>,
        started: Vec<Box<dyn RunningUnit>>,
    ) {
        let first = self.count();
        let slots: Vec<InstanceSlot> = started
            .iter()
            .zip(first..)
            .map(|(unit, index)| InstanceSlot {
                index,
                addr: Some(unit.addr()),
            })
            .collect();
        // Slots before tasks: a task updates its slot, which must be there.
        self.set_tx.send_modify(|set| {
            set.slots.extend(slots);
            set.slots.sort_by_key(|slot| slot.index);
        });
        for (unit, index) in started.into_iter().zip(first..) {
            let (stop_tx, stop_rx) = watch::channel(None);
            let supervisor = InstanceSupervisor {
                driver: Arc::clone(driver),
                spec: Arc::clone(spec),
                artifact: Arc::clone(artifact),
                index,
                set_tx: Arc::clone(&self.set_tx),
                stop_rx,
            };
            self.members.push(Member {
                index,
                stop_tx,
                task: tokio::spawn(supervisor.run(unit)),
            });
        }
    }

    /// Removes the slots `to..` at once (and their give-ups), then tells
    /// their tasks to stop with `grace`; does not wait for them.
    fn shrink(&mut self, to: u32, grace: Duration) {
        self.set_tx.send_modify(|set| {
            set.slots.retain(|slot| slot.index < to);
            set.gave_up.retain(|index| *index < to);
        });
        let keep = usize::try_from(to).unwrap_or(usize::MAX);
        for member in self.members.drain(keep..).rev() {
            member.stop_tx.send_replace(Some(grace));
            self.stopping.insert(member.index, member.task);
        }
    }

    /// Waits until no instance of `indexes` is still stopping after a
    /// shrink, so that a new instance with the same index does not meet
    /// the old one on the provider (a container's name holds its index).
    async fn settle(&mut self, indexes: Range<u32>) {
        self.stopping.retain(|_, task| !task.is_finished());
        for index in indexes {
            if let Some(task) = self.stopping.get_mut(&index) {
                log_task_end(task.await);
                self.stopping.remove(&index);
            }
        }
    }

    /// Stops every instance with `grace` and waits for all of them, and
    /// for those a shrink is still stopping.
    async fn stop(self, grace: Duration) {
        for member in &self.members {
            member.stop_tx.send_replace(Some(grace));
        }
        for member in self.members {
            log_task_end(member.task.await);
        }
        for (_, task) in self.stopping {
            log_task_end(task.await);
        }
    }

    /// Stops every instance at once. The stops a shrink started are cut
    /// short: their tasks are aborted (dropping a unit kills it or leaves
    /// it to the provider reap that follows).
    async fn kill(mut self) {
        for task in self.stopping.values() {
            task.abort();
        }
        for (_, task) in std::mem::take(&mut self.stopping) {
            match task.await {
                Err(error) if error.is_cancelled() => {}
                ended => log_task_end(ended),
            }
        }
        self.stop(Duration::ZERO).await;
    }
}

fn log_task_end(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended {
        tracing::error!(%error, "an instance supervision task failed");
    }
}

/// Starts instances `indexes` of `spec` concurrently, each health-gated by
/// the driver: all of them or none (when one fails, the others are stopped
/// and the error of the lowest failed index is returned). Runs in its own
/// task, so a caller that stops waiting leaves nothing running: the task
/// then stops what it started.
async fn start_all<D: InstanceDriver>(
    driver: &Arc<D>,
    spec: &Arc<RevisionSpec>,
    artifact: &Arc<str>,
    indexes: Range<u32>,
) -> Result<Vec<Box<dyn RunningUnit>>, DeployerError> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let (revision, first) = (spec.revision_id, indexes.start);
    let (answer_tx, answer_rx) = oneshot::channel();
    let (driver, spec, artifact) = (Arc::clone(driver), Arc::clone(spec), Arc::clone(artifact));
    tokio::spawn(async move {
        let outcome = start_concurrently(&driver, &spec, &artifact, indexes).await;
        if let Err(Ok(units)) = answer_tx.send(outcome) {
            tracing::warn!(%revision, "instances started for a caller that stopped waiting; stopping them");
            stop_units(units).await;
        }
    });
    answer_rx.await.unwrap_or_else(|_| {
        Err(DeployerError::InstanceStart {
            revision,
            index: first,
            source: "the task starting the instances ended without answering".into(),
        })
    })
}

async fn start_concurrently<D: InstanceDriver>(
    driver: &Arc<D>,
    spec: &Arc<RevisionSpec>,
    artifact: &Arc<str>,
    indexes: Range<u32>,
) -> Result<Vec<Box<dyn RunningUnit>>, DeployerError> {
    let starts: Vec<(u32, JoinHandle<_>)> = indexes
        .map(|index| {
            let (driver, spec, artifact) =
                (Arc::clone(driver), Arc::clone(spec), Arc::clone(artifact));
            let task = tokio::spawn(async move { driver.start(&spec, &artifact, index).await });
            (index, task)
        })
        .collect();
    let mut started = Vec::with_capacity(starts.len());
    let mut failed = None;
    // In index order; the starts run concurrently meanwhile.
    for (index, task) in starts {
        let outcome = task.await.unwrap_or_else(|error| {
            Err(DeployerError::InstanceStart {
                revision: spec.revision_id,
                index,
                source: Box::new(error),
            })
        });
        match outcome {
            Ok(unit) => started.push(unit),
            Err(error) => {
                failed.get_or_insert(error);
            }
        }
    }
    match failed {
        None => Ok(started),
        Some(error) => {
            stop_units(started).await;
            Err(error)
        }
    }
}

/// Stops freshly started instances at once (no request reached them yet).
async fn stop_units(units: Vec<Box<dyn RunningUnit>>) {
    let stops: Vec<_> = units
        .into_iter()
        .map(|unit| tokio::spawn(unit.stop(Duration::ZERO)))
        .collect();
    for stop in stops {
        if let Err(error) = stop.await {
            tracing::error!(%error, "stopping an instance failed");
        }
    }
}

struct Entry {
    artifact: String,
    phase: RevisionPhase,
    warm: Option<Warm>,
}

type EntrySlot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// What the synchronous report knows of one revision.
struct Reported {
    phase: RevisionPhase,
    artifact: String,
    instances: Option<watch::Receiver<InstanceSet>>,
}

struct Shared<D> {
    driver: Arc<D>,
    revisions: Mutex<BTreeMap<RevisionId, EntrySlot>>,
    /// A copy of each revision's phase and instances for the synchronous report.
    report: Mutex<BTreeMap<RevisionId, Reported>>,
    split: Mutex<Vec<SplitEntry>>,
}

/// A [`Deployer`] over an [`InstanceDriver`]. Cheap to clone.
pub struct SupervisedDeployer<D> {
    shared: Arc<Shared<D>>,
}

impl<D> Clone for SupervisedDeployer<D> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<D: InstanceDriver> SupervisedDeployer<D> {
    /// A deployer that runs instances through `driver`.
    pub fn new(driver: D) -> Self {
        Self {
            shared: Arc::new(Shared {
                driver: Arc::new(driver),
                revisions: Mutex::new(BTreeMap::new()),
                report: Mutex::new(BTreeMap::new()),
                split: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The driver, for provider-specific calls.
    pub fn driver(&self) -> &D {
        &self.shared.driver
    }

    fn slot(&self, revision: RevisionId) -> EntrySlot {
        let mut revisions = self
            .shared
            .revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(revisions.entry(revision).or_default())
    }

    fn record(&self, revision: RevisionId, entry: Option<&Entry>) {
        let mut report = self
            .shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match entry {
            Some(entry) => {
                let instances = entry.warm.as_ref().map(|warm| warm.instances.clone());
                report.insert(
                    revision,
                    Reported {
                        phase: entry.phase,
                        artifact: entry.artifact.clone(),
                        instances,
                    },
                );
            }
            None => {
                report.remove(&revision);
            }
        }
    }

    fn not_staged(&self, spec: &RevisionSpec) -> DeployerError {
        DeployerError::NotStaged {
            revision: spec.revision_id,
            deployer: self.shared.driver.descriptor_path().to_owned(),
        }
    }

    fn not_warm(&self, spec: &RevisionSpec, phase: RevisionPhase) -> DeployerError {
        DeployerError::NotWarm {
            revision: spec.revision_id,
            deployer: self.shared.driver.descriptor_path().to_owned(),
            phase,
        }
    }

    async fn stage(&self, spec: &RevisionSpec) -> Result<StagedRevision, DeployerError> {
        spec.validate()?;
        let slot = self.slot(spec.revision_id);
        let mut entry = slot.lock().await;
        if let Some(existing) = entry.as_ref() {
            return Ok(StagedRevision {
                revision_id: spec.revision_id,
                artifact: existing.artifact.clone(),
            });
        }
        let artifact = self.shared.driver.stage(spec).await?;
        let staged = Entry {
            artifact: artifact.clone(),
            phase: RevisionPhase::Staged,
            warm: None,
        };
        self.record(spec.revision_id, Some(&staged));
        *entry = Some(staged);
        Ok(StagedRevision {
            revision_id: spec.revision_id,
            artifact,
        })
    }

    async fn warm(&self, spec: &RevisionSpec) -> Result<WarmRevision, DeployerError> {
        spec.validate()?;
        let slot = self.slot(spec.revision_id);
        let mut guard = slot.lock().await;
        let Some(entry) = guard.as_mut() else {
            return Err(self.not_staged(spec));
        };
        if let Some(warm) = &entry.warm {
            return Ok(WarmRevision {
                instances: warm.instances.clone(),
            });
        }
        let driver = &self.shared.driver;
        let reaped = driver.reap(spec).await?;
        if reaped > 0 {
            tracing::warn!(revision = %spec.revision_id, reaped, "removed instances a previous node left running");
        }
        let spec = Arc::new(spec.clone());
        let artifact: Arc<str> = Arc::from(entry.artifact.as_str());
        let started = start_all(driver, &spec, &artifact, 0..spec.instances).await?;
        let mut warm = Warm::new();
        warm.add(driver, &spec, &artifact, started);
        let answer = WarmRevision {
            instances: warm.instances.clone(),
        };
        entry.warm = Some(warm);
        entry.phase = RevisionPhase::Warm;
        self.record(spec.revision_id, Some(entry));
        Ok(answer)
    }

    async fn scale(
        &self,
        spec: &RevisionSpec,
        instances: u32,
        grace: Duration,
    ) -> Result<WarmRevision, DeployerError> {
        spec.validate()?;
        if instances > INSTANCES_MAX {
            return Err(DeployerError::InvalidSpec {
                revision: spec.revision_id,
                field: "instances",
                message: format!("scale target {instances} is outside 0..={INSTANCES_MAX}"),
            });
        }
        let slot = self.slot(spec.revision_id);
        let mut guard = slot.lock().await;
        let Some(entry) = guard.as_mut() else {
            return Err(self.not_staged(spec));
        };
        let Some(warm) = entry.warm.as_mut() else {
            return Err(self.not_warm(spec, entry.phase));
        };
        let current = warm.count();
        if instances < current {
            warm.shrink(instances, grace);
            tracing::info!(revision = %spec.revision_id, from = current, to = instances, "scaled down");
        } else if instances > current {
            let driver = &self.shared.driver;
            let spec = Arc::new(spec.clone());
            let artifact: Arc<str> = Arc::from(entry.artifact.as_str());
            warm.settle(current..instances).await;
            let started = start_all(driver, &spec, &artifact, current..instances).await?;
            warm.add(driver, &spec, &artifact, started);
            tracing::info!(revision = %spec.revision_id, from = current, to = instances, "scaled up");
        }
        Ok(WarmRevision {
            instances: warm.instances.clone(),
        })
    }

    async fn reload(&self, spec: &RevisionSpec) -> Result<usize, DeployerError> {
        spec.validate()?;
        let slot = self.slot(spec.revision_id);
        // Held while signalling, so no warm, scale or drain of the revision
        // runs in between (an instance starting now reads the new files).
        let guard = slot.lock().await;
        let Some(entry) = guard.as_ref() else {
            return Err(self.not_staged(spec));
        };
        if entry.warm.is_none() {
            return Err(self.not_warm(spec, entry.phase));
        }
        let told = self.shared.driver.reload(spec).await?;
        tracing::info!(revision = %spec.revision_id, instances = told, "told instances to reload their configuration");
        Ok(told)
    }

    async fn drain(&self, spec: &RevisionSpec, grace: Duration) -> Result<(), DeployerError> {
        let slot = self.slot(spec.revision_id);
        let mut guard = slot.lock().await;
        let Some(entry) = guard.as_mut() else {
            return Ok(());
        };
        if let Some(warm) = entry.warm.take() {
            warm.stop(grace).await;
            entry.phase = RevisionPhase::Drained;
            self.record(spec.revision_id, Some(entry));
        }
        Ok(())
    }

    async fn archive(&self, spec: &RevisionSpec) -> Result<(), DeployerError> {
        let slot = self.slot(spec.revision_id);
        let mut guard = slot.lock().await;
        if let Some(warm) = guard.as_mut().and_then(|entry| entry.warm.take()) {
            warm.kill().await;
        }
        let reaped = self.shared.driver.reap(spec).await;
        *guard = None;
        self.record(spec.revision_id, None);
        drop(guard);
        self.shared
            .revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&spec.revision_id);
        reaped.map(|_| ())
    }

    fn split(&self, split: &[SplitEntry]) -> Result<(), DeployerError> {
        check_split(split)?;
        let report = self
            .shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in split.iter().filter(|e| e.weight_bps > 0) {
            let warm = matches!(
                report.get(&entry.revision_id),
                Some(Reported {
                    phase: RevisionPhase::Warm,
                    ..
                })
            );
            if !warm {
                return Err(DeployerError::RevisionNotWarm {
                    revision: entry.revision_id,
                    deployer: self.shared.driver.descriptor_path().to_owned(),
                });
            }
        }
        drop(report);
        // Routing is the node's router's job for deployers whose instances
        // it reaches directly: the split is recorded for the runtime report.
        *self
            .shared
            .split
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = split.to_vec();
        Ok(())
    }

    fn report(&self) -> RuntimeConfigReport {
        let report = self
            .shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        RuntimeConfigReport {
            deployer: self.shared.driver.descriptor_path().to_owned(),
            revisions: report
                .iter()
                .map(|(id, reported)| {
                    let instances = reported
                        .instances
                        .as_ref()
                        .map(|rx| rx.borrow().ready())
                        .unwrap_or_default();
                    (
                        *id,
                        RevisionRuntime {
                            phase: reported.phase,
                            artifact: reported.artifact.clone(),
                            instances,
                        },
                    )
                })
                .collect(),
            split: self
                .shared
                .split
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Keeps one instance running until told to stop.
struct InstanceSupervisor<D> {
    driver: Arc<D>,
    spec: Arc<RevisionSpec>,
    artifact: Arc<str>,
    index: u32,
    set_tx: Arc<watch::Sender<InstanceSet>>,
    stop_rx: watch::Receiver<Option<Duration>>,
}

impl<D: InstanceDriver> InstanceSupervisor<D> {
    fn set_addr(&self, addr: Option<SocketAddr>) {
        let index = self.index;
        self.set_tx.send_modify(|set| {
            if let Some(slot) = set.slots.iter_mut().find(|s| s.index == index) {
                slot.addr = addr;
            }
        });
    }

    /// The grace, once a stop was asked for.
    fn stop_asked(&self) -> Option<Duration> {
        *self.stop_rx.borrow()
    }

    async fn run(mut self, mut unit: Box<dyn RunningUnit>) {
        let mut policy = RestartPolicy::new(
            RESTART_BACKOFF_BASE,
            RESTART_BACKOFF_MAX,
            RESTARTS_MAX,
            RESTART_WINDOW,
        );
        loop {
            let exited = tokio::select! {
                status = unit.wait_exit() => Some(status),
                _ = self.stop_rx.wait_for(Option::is_some) => None,
            };
            let Some(status) = exited else {
                self.set_addr(None);
                unit.stop(self.stop_asked().unwrap_or_default()).await;
                return;
            };
            let revision = self.spec.revision_id;
            tracing::warn!(%revision, instance = self.index, %status, "instance exited; restarting");
            self.set_addr(None);
            self.set_tx.send_modify(|set| set.exits_total += 1);
            // The exited unit still owns provider resources (a container).
            unit.stop(Duration::ZERO).await;
            match self.restart(&mut policy).await {
                Some(next) => unit = next,
                None => return,
            }
        }
    }

    /// Starts the instance again after the policy's delay, until it is up,
    /// the policy gives up, or a stop is asked for (then `None`).
    async fn restart(&mut self, policy: &mut RestartPolicy) -> Option<Box<dyn RunningUnit>> {
        let revision = self.spec.revision_id;
        loop {
            match policy.next(Instant::now()) {
                RestartDecision::RestartAfter(delay) => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop_rx.wait_for(Option::is_some) => return None,
                    }
                }
                RestartDecision::GiveUp { restarts_in_window } => {
                    tracing::error!(%revision, instance = self.index, restarts_in_window, "instance restart storm; no more restarts");
                    let index = self.index;
                    self.set_tx.send_modify(|set| {
                        // A slot a shrink removed is not given up on: it is gone.
                        if set.slots.iter().any(|slot| slot.index == index) {
                            set.gave_up.insert(index);
                        }
                    });
                    let _ = self.stop_rx.wait_for(Option::is_some).await;
                    return None;
                }
            }
            match self
                .driver
                .start(&self.spec, &self.artifact, self.index)
                .await
            {
                Ok(unit) if self.stop_asked().is_some() => {
                    unit.stop(self.stop_asked().unwrap_or_default()).await;
                    return None;
                }
                Ok(unit) => {
                    self.set_addr(Some(unit.addr()));
                    return Some(unit);
                }
                Err(error) => {
                    tracing::warn!(%revision, instance = self.index, %error, "restart failed");
                }
            }
        }
    }
}

impl<D: InstanceDriver> Deployer for SupervisedDeployer<D> {
    fn descriptor_path(&self) -> &str {
        self.shared.driver.descriptor_path()
    }

    fn stage_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, StagedRevision> {
        Box::pin(self.stage(spec))
    }

    fn warm_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, WarmRevision> {
        Box::pin(self.warm(spec))
    }

    fn scale_revision<'a>(
        &'a self,
        spec: &'a RevisionSpec,
        instances: u32,
        grace: Duration,
    ) -> DeployFuture<'a, WarmRevision> {
        Box::pin(self.scale(spec, instances, grace))
    }

    fn drain_revision<'a>(
        &'a self,
        spec: &'a RevisionSpec,
        grace: Duration,
    ) -> DeployFuture<'a, ()> {
        Box::pin(self.drain(spec, grace))
    }

    fn archive_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, ()> {
        Box::pin(self.archive(spec))
    }

    fn apply_traffic_split<'a>(&'a self, split: &'a [SplitEntry]) -> DeployFuture<'a, ()> {
        Box::pin(async move { self.split(split) })
    }

    fn report_runtime_config(&self) -> RuntimeConfigReport {
        self.report()
    }

    fn reload_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize> {
        Box::pin(self.reload(spec))
    }

    fn provider_instances<'a>(
        &'a self,
        spec: &'a RevisionSpec,
    ) -> DeployFuture<'a, Vec<ProviderInstance>> {
        self.shared.driver.list(spec)
    }
}

#[cfg(test)]
mod tests {
    //! The lifecycle over a fake driver whose instances are records in
    //! memory: what the conformance suite cannot see from outside (starts
    //! run concurrently, a failed grow stops exactly what it started, an
    //! index is never running twice).

    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use deploy::ids::{DeploymentId, EnvId};

    use super::*;
    use crate::deployer::RuntimeSpec;

    /// What the fake provider runs and did.
    #[derive(Default)]
    struct Provider {
        /// Running instances by index (more than one of an index is a bug).
        live: BTreeMap<u32, u32>,
        /// Indexes stopped, in order.
        stopped: Vec<u32>,
        /// Most instances of one index ever running at once.
        max_same_index: u32,
        /// Reloads asked of the provider.
        reloads: u32,
    }

    struct FakeDriver {
        provider: Arc<Mutex<Provider>>,
        start_delay: Duration,
        fail_index: Option<u32>,
    }

    struct FakeUnit {
        index: u32,
        provider: Arc<Mutex<Provider>>,
    }

    fn lock(provider: &Mutex<Provider>) -> std::sync::MutexGuard<'_, Provider> {
        provider.lock().unwrap_or_else(PoisonError::into_inner)
    }

    impl RunningUnit for FakeUnit {
        fn addr(&self) -> SocketAddr {
            SocketAddr::from((
                [127, 0, 0, 1],
                10_000 + u16::try_from(self.index).unwrap_or(0),
            ))
        }
        fn wait_exit(&mut self) -> UnitFuture<'_, String> {
            Box::pin(std::future::pending())
        }
        fn stop(self: Box<Self>, grace: Duration) -> UnitFuture<'static, ()> {
            Box::pin(async move {
                // As if an in-flight request used the whole grace.
                tokio::time::sleep(grace).await;
                let mut provider = lock(&self.provider);
                if let Some(count) = provider.live.get_mut(&self.index) {
                    *count -= 1;
                    if *count == 0 {
                        provider.live.remove(&self.index);
                    }
                }
                provider.stopped.push(self.index);
            })
        }
    }

    impl InstanceDriver for FakeDriver {
        fn descriptor_path(&self) -> &'static str {
            "test.fake"
        }
        fn stage<'a>(&'a self, _spec: &'a RevisionSpec) -> DeployFuture<'a, String> {
            Box::pin(async { Ok("fake".to_owned()) })
        }
        fn start<'a>(
            &'a self,
            spec: &'a RevisionSpec,
            _artifact: &'a str,
            index: u32,
        ) -> DeployFuture<'a, Box<dyn RunningUnit>> {
            Box::pin(async move {
                tokio::time::sleep(self.start_delay).await;
                if self.fail_index == Some(index) {
                    return Err(DeployerError::InstanceStart {
                        revision: spec.revision_id,
                        index,
                        source: "refused by the test".into(),
                    });
                }
                let mut provider = lock(&self.provider);
                let count = provider.live.entry(index).or_default();
                *count += 1;
                let count = *count;
                provider.max_same_index = provider.max_same_index.max(count);
                Ok(Box::new(FakeUnit {
                    index,
                    provider: Arc::clone(&self.provider),
                }) as Box<dyn RunningUnit>)
            })
        }
        fn reap<'a>(&'a self, _spec: &'a RevisionSpec) -> DeployFuture<'a, usize> {
            Box::pin(async { Ok(0) })
        }
        fn reload<'a>(&'a self, _spec: &'a RevisionSpec) -> DeployFuture<'a, usize> {
            Box::pin(async move {
                let mut provider = lock(&self.provider);
                provider.reloads += 1;
                Ok(provider.live.len())
            })
        }
        fn list<'a>(&'a self, _spec: &'a RevisionSpec) -> DeployFuture<'a, Vec<ProviderInstance>> {
            Box::pin(async move {
                Ok(lock(&self.provider)
                    .live
                    .keys()
                    .map(|index| ProviderInstance {
                        id: index.to_string(),
                        index: Some(*index),
                    })
                    .collect())
            })
        }
    }

    fn deployer(
        start_delay: Duration,
        fail_index: Option<u32>,
    ) -> (SupervisedDeployer<FakeDriver>, Arc<Mutex<Provider>>) {
        let provider = Arc::new(Mutex::new(Provider::default()));
        let driver = FakeDriver {
            provider: Arc::clone(&provider),
            start_delay,
            fail_index,
        };
        (SupervisedDeployer::new(driver), provider)
    }

    fn spec(instances: u32) -> RevisionSpec {
        RevisionSpec {
            env_id: EnvId::local(),
            deployment_id: DeploymentId::from_ulid(ulid::Ulid::new()),
            revision_id: RevisionId::from_ulid(ulid::Ulid::new()),
            bundle_root: PathBuf::from("/nonexistent"),
            log_dir: PathBuf::from("/nonexistent"),
            instances,
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            node_name: "test-node".to_owned(),
            runtime: RuntimeSpec {
                command: vec!["bin/server".to_owned()],
                env: BTreeMap::new(),
                port_env: "PORT".to_owned(),
                health_path: "/healthz".to_owned(),
                startup_timeout: Duration::from_secs(10),
                health_timeout: Duration::from_secs(1),
                image: None,
                secrets: crate::deployer::SecretMaterial::default(),
                config_dir: None,
            },
        }
    }

    fn indexes(warm: &WarmRevision) -> Vec<u32> {
        warm.instances
            .borrow()
            .slots
            .iter()
            .map(|s| s.index)
            .collect()
    }

    #[tokio::test]
    async fn growing_starts_the_new_instances_concurrently() {
        // Proves scale-up waits for one start's time, not one per instance.
        let delay = Duration::from_millis(400);
        let (deployer, provider) = deployer(delay, None);
        let spec = spec(1);
        deployer.stage_revision(&spec).await.expect("stage");
        deployer.warm_revision(&spec).await.expect("warm");
        let began = Instant::now();
        let up = deployer
            .scale_revision(&spec, 5, Duration::ZERO)
            .await
            .expect("scale to 5");
        let took = began.elapsed();
        assert!(took < delay * 3, "4 starts of {delay:?} took {took:?}");
        assert_eq!(indexes(&up), [0, 1, 2, 3, 4]);
        assert_eq!(lock(&provider).live.len(), 5);
        deployer.archive_revision(&spec).await.expect("archive");
        assert!(lock(&provider).live.is_empty());
    }

    #[tokio::test]
    async fn a_failed_grow_stops_what_it_started_and_keeps_what_ran() {
        // Proves a grow is all or nothing for the new instances and leaves the running ones alone.
        let (deployer, provider) = deployer(Duration::from_millis(10), Some(2));
        let spec = spec(2);
        deployer.stage_revision(&spec).await.expect("stage");
        let warm = deployer.warm_revision(&spec).await.expect("warm");
        let refused = deployer.scale_revision(&spec, 4, Duration::ZERO).await;
        assert!(
            matches!(refused, Err(DeployerError::InstanceStart { index: 2, .. })),
            "{refused:?}"
        );
        assert_eq!(indexes(&warm), [0, 1]);
        let (live, stopped) = {
            let provider = lock(&provider);
            let live: Vec<u32> = provider.live.keys().copied().collect();
            (live, provider.stopped.clone())
        };
        assert_eq!(live, [0, 1]);
        assert_eq!(stopped, [3], "only the started new instance is stopped");
        deployer.archive_revision(&spec).await.expect("archive");
    }

    #[tokio::test]
    async fn shrinking_does_not_wait_and_a_regrow_waits_for_the_old_index() {
        // Proves a shrink returns before its grace, drain waits for it, and an index never runs twice at once.
        let (deployer, provider) = deployer(Duration::ZERO, None);
        let spec = spec(3);
        deployer.stage_revision(&spec).await.expect("stage");
        deployer.warm_revision(&spec).await.expect("warm");
        let grace = Duration::from_millis(500);
        let began = Instant::now();
        let down = deployer
            .scale_revision(&spec, 1, grace)
            .await
            .expect("scale to 1");
        assert!(began.elapsed() < grace, "the shrink waited its grace");
        assert_eq!(indexes(&down), [0]);
        assert_eq!(lock(&provider).live.len(), 3, "stops are still running");
        let up = deployer
            .scale_revision(&spec, 3, grace)
            .await
            .expect("scale to 3");
        assert!(
            began.elapsed() >= grace,
            "index 1 and 2 restarted before their old instances stopped"
        );
        assert_eq!(indexes(&up), [0, 1, 2]);
        assert_eq!(lock(&provider).max_same_index, 1);
        deployer
            .scale_revision(&spec, 0, grace)
            .await
            .expect("scale to 0");
        assert!(indexes(&up).is_empty());
        assert_eq!(lock(&provider).live.len(), 3);
        deployer.drain_revision(&spec, grace).await.expect("drain");
        assert!(
            lock(&provider).live.is_empty(),
            "drain did not wait for the shrink's stops"
        );
        assert_eq!(up.instances.borrow().exits_total, 0);
        deployer.archive_revision(&spec).await.expect("archive");
    }

    #[tokio::test]
    async fn scale_is_refused_unless_warm_and_within_bounds() {
        // Proves the typed refusals of scale, before any start.
        let (deployer, provider) = deployer(Duration::ZERO, None);
        let spec = spec(1);
        assert!(matches!(
            deployer.scale_revision(&spec, 1, Duration::ZERO).await,
            Err(DeployerError::NotStaged { .. })
        ));
        deployer.stage_revision(&spec).await.expect("stage");
        let refused = deployer.scale_revision(&spec, 1, Duration::ZERO).await;
        let Err(error) = refused else {
            panic!("scale of a staged revision accepted");
        };
        assert!(matches!(
            error,
            DeployerError::NotWarm {
                phase: RevisionPhase::Staged,
                ..
            }
        ));
        assert!(
            error
                .to_string()
                .contains("is staged on test.fake, not warm"),
            "{error}"
        );
        deployer.warm_revision(&spec).await.expect("warm");
        assert!(matches!(
            deployer
                .scale_revision(&spec, INSTANCES_MAX + 1, Duration::ZERO)
                .await,
            Err(DeployerError::InvalidSpec {
                field: "instances",
                ..
            })
        ));
        assert_eq!(lock(&provider).live.len(), 1);
        deployer.archive_revision(&spec).await.expect("archive");
    }
}
