//! The lifecycle every deployer in this workspace shares, over a driver
//! that knows one provider's instances.
//!
//! Per revision: `stage` asks the driver to check and pin the artifact;
//! `warm` reaps what a previous node left (by the provider's own listing),
//! starts the instances one by one, each health-gated, stops them all if
//! one fails, then hands each to a supervision task that restarts it with
//! backoff after an unexpected exit; `drain` tells every task to stop its
//! instance with the grace and waits for them; `archive` drains with no
//! grace, reaps again and forgets the revision.
//!
//! Each revision has its own lock, so calls on one revision are serialized
//! (that is what makes a concurrent second `warm` return the first one's
//! instances instead of starting duplicates) while other revisions proceed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deploy::ids::RevisionId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    DeployFuture, Deployer, DeployerError, InstanceSet, InstanceSlot, ProviderInstance,
    RevisionPhase, RevisionRuntime, RevisionSpec, RuntimeConfigReport, SplitEntry, StagedRevision,
    WarmRevision, check_split,
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
}

/// A revision while it is warm: the instance tasks and how to stop them.
struct Warm {
    instances: watch::Receiver<InstanceSet>,
    /// `Some(grace)` tells every task to stop its instance.
    stop_tx: watch::Sender<Option<Duration>>,
    tasks: Vec<JoinHandle<()>>,
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
        let mut started: Vec<Box<dyn RunningUnit>> = Vec::new();
        for index in 0..spec.instances {
            match driver.start(spec, &entry.artifact, index).await {
                Ok(unit) => started.push(unit),
                Err(error) => {
                    for unit in started {
                        unit.stop(Duration::ZERO).await;
                    }
                    return Err(error);
                }
            }
        }
        let warm = spawn_supervisors(Arc::clone(driver), spec, &entry.artifact, started);
        let answer = WarmRevision {
            instances: warm.instances.clone(),
        };
        entry.warm = Some(warm);
        entry.phase = RevisionPhase::Warm;
        self.record(spec.revision_id, Some(entry));
        Ok(answer)
    }

    async fn drain(&self, spec: &RevisionSpec, grace: Duration) -> Result<(), DeployerError> {
        let slot = self.slot(spec.revision_id);
        let mut guard = slot.lock().await;
        let Some(entry) = guard.as_mut() else {
            return Ok(());
        };
        if let Some(warm) = entry.warm.take() {
            stop_warm(warm, grace).await;
            entry.phase = RevisionPhase::Drained;
            self.record(spec.revision_id, Some(entry));
        }
        Ok(())
    }

    async fn archive(&self, spec: &RevisionSpec) -> Result<(), DeployerError> {
        let slot = self.slot(spec.revision_id);
        let mut guard = slot.lock().await;
        if let Some(warm) = guard.as_mut().and_then(|entry| entry.warm.take()) {
            stop_warm(warm, Duration::ZERO).await;
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

async fn stop_warm(warm: Warm, grace: Duration) {
    let _ = warm.stop_tx.send(Some(grace));
    for task in warm.tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "an instance supervision task failed");
        }
    }
}

fn spawn_supervisors<D: InstanceDriver>(
    driver: Arc<D>,
    spec: &RevisionSpec,
    artifact: &str,
    started: Vec<Box<dyn RunningUnit>>,
) -> Warm {
    let set = InstanceSet {
        slots: started
            .iter()
            .zip(0..)
            .map(|(unit, index)| InstanceSlot {
                index,
                addr: Some(unit.addr()),
            })
            .collect(),
        ..InstanceSet::default()
    };
    let (set_tx, set_rx) = watch::channel(set);
    let set_tx = Arc::new(set_tx);
    let (stop_tx, stop_rx) = watch::channel(None);
    let spec = Arc::new(spec.clone());
    let artifact: Arc<str> = Arc::from(artifact);
    let tasks = started
        .into_iter()
        .zip(0..)
        .map(|(unit, index)| {
            let supervisor = InstanceSupervisor {
                driver: Arc::clone(&driver),
                spec: Arc::clone(&spec),
                artifact: Arc::clone(&artifact),
                index,
                set_tx: Arc::clone(&set_tx),
                stop_rx: stop_rx.clone(),
            };
            tokio::spawn(supervisor.run(unit))
        })
        .collect();
    Warm {
        instances: set_rx,
        stop_tx,
        tasks,
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
                        set.gave_up.insert(index);
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

    fn provider_instances<'a>(
        &'a self,
        spec: &'a RevisionSpec,
    ) -> DeployFuture<'a, Vec<ProviderInstance>> {
        self.shared.driver.list(spec)
    }
}
