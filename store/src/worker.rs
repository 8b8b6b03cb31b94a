//! [`StoreWorker`]: the synchronous [`EnvironmentStore`] behind two dedicated
//! threads that async callers (the node's actors) talk to by message, with a
//! bound on every wait.
//!
//! Why two lanes: a write may stall for a long time (on a cluster member it
//! goes through Raft, and `consensus` retries a write that finds no leader
//! up to its own bound of about two minutes). Reads of the local replica and
//! local files must not queue behind it, or an actor waiting to load the
//! committed state would stall with the write. So commands (`submit`,
//! `record`) run on the *command lane* and everything else on the *query
//! lane*, each one thread with a bounded queue.
//!
//! Every call is bounded twice: a full queue refuses at once
//! ([`StoreCallError::QueueFull`]), and an answer that takes longer than the
//! lane's timeout is given up ([`StoreCallError::TimedOut`]); a timed-out
//! command may still complete on the worker, so its outcome is unknown and
//! the caller reads the state to learn it.

use std::sync::Arc;
use std::time::Duration;

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use tokio::sync::{mpsc, oneshot};

use crate::error::{StoreError, SubmitError};
use crate::{EnvironmentStore, Submitted};

/// The store the worker runs calls against.
pub type SharedStore = Arc<dyn EnvironmentStore + Send + Sync>;

/// Calls waiting on the query lane before new ones are refused: the
/// environment actor has at most one load and one file write in flight, so
/// a full queue means the local disk is stuck, not busy.
pub const QUERY_QUEUE_DEPTH: usize = 16;
/// Commands waiting on the command lane before new ones are refused: one
/// runtime report per revision actor outcome; 64 covers every revision of a
/// large environment reporting during one stalled write.
pub const COMMAND_QUEUE_DEPTH: usize = 64;
/// Longest wait for a query (a load of the local replica, a local file
/// write): local disk work that takes longer than this is a stuck disk.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a command. Just above `consensus`'s own bound for a
/// write that finds no leader (40 attempts × 3.15 s ≈ 126 s), so its typed
/// error normally arrives first; this bound catches a write stuck anywhere
/// else.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(130);

/// The bounds of a [`StoreWorker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreWorkerConfig {
    pub query_queue_depth: usize,
    pub command_queue_depth: usize,
    pub query_timeout: Duration,
    pub command_timeout: Duration,
}

impl Default for StoreWorkerConfig {
    fn default() -> Self {
        Self {
            query_queue_depth: QUERY_QUEUE_DEPTH,
            command_queue_depth: COMMAND_QUEUE_DEPTH,
            query_timeout: QUERY_TIMEOUT,
            command_timeout: COMMAND_TIMEOUT,
        }
    }
}

impl StoreWorkerConfig {
    /// Refuses a configuration that would make every call fail.
    pub fn validate(&self) -> Result<(), StoreWorkerConfigError> {
        if self.query_queue_depth == 0 || self.command_queue_depth == 0 {
            return Err(StoreWorkerConfigError::EmptyQueue);
        }
        if self.query_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(StoreWorkerConfigError::ZeroTimeout);
        }
        Ok(())
    }
}

/// A [`StoreWorkerConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreWorkerConfigError {
    #[error("a store worker queue must hold at least one call")]
    EmptyQueue,
    #[error("a store worker timeout must be longer than zero")]
    ZeroTimeout,
}

/// Which lane a call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Loads, listings, the audit log and local files.
    Query,
    /// `submit` and `record`: writes that may go through consensus.
    Command,
}

impl Lane {
    fn name(self) -> &'static str {
        match self {
            Lane::Query => "query",
            Lane::Command => "command",
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Why a call through the worker did not give the store's answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreCallError {
    /// The lane's queue was full: the call was not made.
    #[error("the store's {lane} lane has {depth} calls waiting; {operation} was not made")]
    QueueFull {
        operation: &'static str,
        lane: Lane,
        depth: usize,
    },
    /// No answer within the lane's timeout. A command may still complete:
    /// its outcome is unknown.
    #[error(
        "{operation} got no answer from the store within {waited_ms} ms; its outcome is unknown"
    )]
    TimedOut {
        operation: &'static str,
        waited_ms: u64,
    },
    /// The worker thread ended (it panicked, or the worker was dropped).
    #[error("the store worker stopped before {operation} answered")]
    WorkerStopped { operation: &'static str },
    /// The store answered with an error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store refused or failed the command.
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

type Job = Box<dyn FnOnce(&(dyn EnvironmentStore + Send + Sync)) + Send>;

/// The caller's side of the worker: cheap to clone. The threads end once
/// every clone is dropped and the call they are running returns.
#[derive(Clone)]
pub struct StoreWorker {
    query_tx: mpsc::Sender<Job>,
    command_tx: mpsc::Sender<Job>,
    config: StoreWorkerConfig,
}

impl StoreWorker {
    /// Starts the two lane threads over `store`.
    pub fn start(store: SharedStore, config: StoreWorkerConfig) -> Result<Self, StoreWorkerError> {
        config.validate()?;
        let query_tx = spawn_lane(Arc::clone(&store), Lane::Query, config.query_queue_depth)?;
        let command_tx = spawn_lane(store, Lane::Command, config.command_queue_depth)?;
        Ok(Self {
            query_tx,
            command_tx,
            config,
        })
    }

    /// The current state of `env` (query lane).
    pub async fn load(&self, env: &EnvId) -> Result<Option<EnvironmentState>, StoreCallError> {
        let env = env.clone();
        self.call(Lane::Query, "load", move |store| store.load(&env))
            .await?
            .map_err(StoreCallError::from)
    }

    /// Applies, audits and persists one command (command lane).
    pub async fn submit(&self, envelope: CommandEnvelope) -> Result<Submitted, StoreCallError> {
        self.call(Lane::Command, "submit", move |store| {
            store.submit(&envelope)
        })
        .await?
        .map_err(StoreCallError::from)
    }

    /// Appends an audit event for a request that never reached `apply`
    /// (command lane: on a cluster it is replicated).
    pub async fn record(&self, event: AuditEvent) -> Result<(), StoreCallError> {
        self.call(Lane::Command, "record", move |store| store.record(event))
            .await?
            .map_err(StoreCallError::from)
    }

    /// Runs `job` on the query lane: local file work that must not block an
    /// async caller (the job is given the store, and may ignore it).
    pub async fn run_query<T: Send + 'static>(
        &self,
        operation: &'static str,
        job: impl FnOnce(&(dyn EnvironmentStore + Send + Sync)) -> T + Send + 'static,
    ) -> Result<T, StoreCallError> {
        self.call(Lane::Query, operation, job).await
    }

    async fn call<T: Send + 'static>(
        &self,
        lane: Lane,
        operation: &'static str,
        job: impl FnOnce(&(dyn EnvironmentStore + Send + Sync)) -> T + Send + 'static,
    ) -> Result<T, StoreCallError> {
        let (sender, timeout) = match lane {
            Lane::Query => (&self.query_tx, self.config.query_timeout),
            Lane::Command => (&self.command_tx, self.config.command_timeout),
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            // A query whose caller gave up is not worth running; a command
            // is run anyway, as its caller was told the outcome is unknown.
            if lane == Lane::Query && reply_tx.is_closed() {
                return;
            }
            let _ = reply_tx.send(job(store));
        });
        sender.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => StoreCallError::QueueFull {
                operation,
                lane,
                depth: sender.max_capacity(),
            },
            mpsc::error::TrySendError::Closed(_) => StoreCallError::WorkerStopped { operation },
        })?;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(StoreCallError::WorkerStopped { operation }),
            Err(_) => Err(StoreCallError::TimedOut {
                operation,
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}

/// The worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreWorkerError {
    #[error(transparent)]
    Config(#[from] StoreWorkerConfigError),
    #[error("cannot start the store worker's {lane} thread: {source}")]
    Thread {
        lane: Lane,
        #[source]
        source: std::io::Error,
    },
}

/// One lane: a named thread running jobs in order from a bounded queue.
/// A plain thread, not the async runtime's blocking pool, so a stalled call
/// never holds up the runtime's shutdown.
fn spawn_lane(
    store: SharedStore,
    lane: Lane,
    depth: usize,
) -> Result<mpsc::Sender<Job>, StoreWorkerError> {
    let (job_tx, mut job_rx) = mpsc::channel::<Job>(depth);
    std::thread::Builder::new()
        .name(format!("store-{lane}"))
        .spawn(move || {
            while let Some(job) = job_rx.blocking_recv() {
                job(&*store);
            }
        })
        .map_err(|source| StoreWorkerError::Thread { lane, source })?;
    Ok(job_tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store whose writes wait until released, and whose loads answer
    /// at once: the shape of a cluster member whose Raft write stalls.
    struct StallingStore {
        release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        submits: AtomicUsize,
    }

    impl EnvironmentStore for StallingStore {
        fn list(&self) -> Result<Vec<EnvId>, StoreError> {
            Ok(vec![EnvId::local()])
        }
        fn load(&self, _env: &EnvId) -> Result<Option<EnvironmentState>, StoreError> {
            Ok(None)
        }
        fn submit(&self, _envelope: &CommandEnvelope) -> Result<Submitted, SubmitError> {
            self.submits.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut release) = self.release.lock()
                && let Some(release) = release.take()
            {
                let _ = release.recv();
            }
            Err(SubmitError::Store(StoreError::Audit {
                path: "/nowhere".into(),
                reason: "released".to_owned(),
            }))
        }
        fn record(&self, _event: AuditEvent) -> Result<(), StoreError> {
            Ok(())
        }
        fn audit_lines(&self, _env: &EnvId) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn envelope() -> CommandEnvelope {
        use deploy::audit::{Actor, Authorization, Decision};
        use deploy::command::{Command, EnvTargetAnswers, MintedIds};
        CommandEnvelope {
            at: chrono::DateTime::UNIX_EPOCH,
            actor: Actor::local_user(None, None),
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "test".to_owned(),
                reason: "test".to_owned(),
            },
            minted: MintedIds {
                event_id: deploy::ids::EventId::from_ulid(ulid::Ulid::from_parts(1, 1)),
                object_id: ulid::Ulid::from_parts(1, 2),
            },
            command: Command::EnvDestroy(EnvTargetAnswers {
                environment_id: EnvId::local(),
            }),
            precondition: None,
            idempotency_key: None,
            signed_by: None,
        }
    }

    fn stalling() -> (Arc<StallingStore>, std::sync::mpsc::Sender<()>) {
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let store = Arc::new(StallingStore {
            release: Mutex::new(Some(release_rx)),
            submits: AtomicUsize::new(0),
        });
        (store, release_tx)
    }

    #[tokio::test]
    async fn a_stalled_command_neither_delays_loads_nor_waits_past_its_bound() {
        // Proves: while a submit is stuck on the command lane, loads on the
        // query lane answer at once, and the submit's caller gets a typed
        // timeout at the command bound instead of waiting for the store.
        let (store, release_tx) = stalling();
        let config = StoreWorkerConfig {
            command_timeout: Duration::from_millis(300),
            ..StoreWorkerConfig::default()
        };
        let worker = StoreWorker::start(store.clone(), config).expect("worker");
        let stalled = tokio::spawn({
            let worker = worker.clone();
            async move { worker.submit(envelope()).await }
        });
        let began = std::time::Instant::now();
        for _ in 0..20 {
            let loaded = worker.load(&EnvId::local()).await.expect("load");
            assert!(loaded.is_none());
        }
        assert!(
            began.elapsed() < Duration::from_millis(250),
            "loads waited behind the stalled write: {:?}",
            began.elapsed()
        );
        let answer = stalled.await.expect("join");
        assert!(
            matches!(
                answer,
                Err(StoreCallError::TimedOut {
                    operation: "submit",
                    waited_ms: 300
                })
            ),
            "{answer:?}"
        );
        release_tx.send(()).expect("release");
        assert_eq!(store.submits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_full_command_queue_refuses_at_once() {
        // Proves: the command lane holds at most its queue depth; one more
        // call is refused with `QueueFull` without waiting.
        let (store, release_tx) = stalling();
        let config = StoreWorkerConfig {
            command_queue_depth: 2,
            command_timeout: Duration::from_secs(30),
            ..StoreWorkerConfig::default()
        };
        let worker = StoreWorker::start(store.clone(), config).expect("worker");
        let mut waiting = Vec::new();
        // One running (stalled) and two queued.
        for _ in 0..3 {
            let worker = worker.clone();
            waiting.push(tokio::spawn(async move { worker.submit(envelope()).await }));
            while store.submits.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = worker.submit(envelope()).await;
        assert!(
            matches!(
                refused,
                Err(StoreCallError::QueueFull {
                    lane: Lane::Command,
                    depth: 2,
                    ..
                })
            ),
            "{refused:?}"
        );
        release_tx.send(()).expect("release");
        for call in waiting {
            let answer = call.await.expect("join");
            assert!(
                matches!(answer, Err(StoreCallError::Submit(_))),
                "{answer:?}"
            );
        }
    }

    #[test]
    fn a_config_without_room_or_time_is_refused() {
        // Proves: `validate` refuses a zero queue depth and a zero timeout.
        let empty = StoreWorkerConfig {
            query_queue_depth: 0,
            ..StoreWorkerConfig::default()
        };
        assert_eq!(empty.validate(), Err(StoreWorkerConfigError::EmptyQueue));
        let instant = StoreWorkerConfig {
            command_timeout: Duration::ZERO,
            ..StoreWorkerConfig::default()
        };
        assert_eq!(instant.validate(), Err(StoreWorkerConfigError::ZeroTimeout));
        assert_eq!(StoreWorkerConfig::default().validate(), Ok(()));
    }
}
