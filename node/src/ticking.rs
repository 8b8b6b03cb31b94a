//! A supervised actor that looks at the committed state on a timer: the
//! shape of the node's automatic deciders (the rollout controller, the
//! autoscaler). One tick at a time, the next [`Ticking::interval`] after
//! the last one ended, so a slow commit delays the next look and ticks
//! never pile up in the mailbox; a [`Ticking::wakes`] signal asks for a
//! tick at once (at most one such wake waits in the mailbox).
//!
//! A decider that fails (a panic in a tick) is started again, fresh, with
//! the environment actor's backoff (`actors::restart_policy`), as after a
//! leader change; a restart storm is reported and stops it, and the node
//! goes on serving.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a supervised decider does.
pub trait Ticking: Send + Sync + Sized + 'static {
    /// The `actor` label of `gtc_actor_restarts_total` and the logs.
    const NAME: &'static str;
    /// The same decider with nothing remembered: what a restart begins with.
    fn fresh(&self) -> Self;
    /// How long after one tick ended the next begins.
    fn interval(&self) -> Duration;
    /// Moves when the decider should look now rather than at its next tick.
    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// One look at the state, and what it decides.
    fn tick(&mut self) -> impl Future<Output = ()> + Send;
}

/// Runs `template` (fresh) under supervision until `shutdown` turns true.
pub async fn run<T: Ticking>(template: T, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let supervisor = match ractor::Actor::spawn(None, Supervisor::<T>(PhantomData), template).await
    {
        Ok((supervisor, _)) => supervisor,
        Err(error) => {
            tracing::error!(%error, actor = T::NAME, "cannot start; it will not decide on its own");
            return;
        }
    };
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    supervisor.stop(Some("node stopping".to_owned()));
}

/// The decider actor's messages.
pub enum Msg {
    /// The timer's tick: look, then set the timer again.
    Tick,
    /// A wake: look now; the timer goes on as it was.
    Wake,
}

struct DeciderActor<T>(PhantomData<fn() -> T>);

struct DeciderState<T> {
    inner: T,
    /// A wake is in the mailbox.
    wake_queued: Arc<AtomicBool>,
}

impl<T: Ticking> ractor::Actor for DeciderActor<T> {
    type Msg = Msg;
    type State = DeciderState<T>;
    type Arguments = T;

    async fn pre_start(
        &self,
        myself: ractor::ActorRef<Msg>,
        inner: T,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        myself.send_after(inner.interval(), || Msg::Tick);
        let wake_queued = Arc::new(AtomicBool::new(false));
        if let Some(mut wakes) = inner.wakes() {
            let (actor, queued) = (myself.clone(), Arc::clone(&wake_queued));
            tokio::spawn(async move {
                while wakes.changed().await.is_ok() {
                    if !queued.swap(true, Ordering::AcqRel) && actor.cast(Msg::Wake).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(DeciderState { inner, wake_queued })
    }

    async fn handle(
        &self,
        myself: ractor::ActorRef<Msg>,
        message: Msg,
        state: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match message {
            Msg::Tick => {
                state.inner.tick().await;
                myself.send_after(state.inner.interval(), || Msg::Tick);
            }
            Msg::Wake => {
                state.wake_queued.store(false, Ordering::Release);
                state.inner.tick().await;
            }
        }
        Ok(())
    }
}

/// Keeps the decider alive: starts it again fresh, with backoff.
struct Supervisor<T>(PhantomData<fn() -> T>);

struct SupervisorState<T> {
    template: T,
    policy: packs::restart::RestartPolicy,
    child: Option<ractor::ActorRef<Msg>>,
}

/// The supervisor's one message: start the decider again.
pub struct Respawn;

async fn spawn_decider<T: Ticking>(
    myself: &ractor::ActorRef<Respawn>,
    template: &T,
) -> Result<ractor::ActorRef<Msg>, ractor::ActorProcessingErr> {
    let (child, _) = ractor::Actor::spawn_linked(
        None,
        DeciderActor::<T>(PhantomData),
        template.fresh(),
        myself.get_cell(),
    )
    .await?;
    Ok(child)
}

impl<T: Ticking> ractor::Actor for Supervisor<T> {
    type Msg = Respawn;
    type State = SupervisorState<T>;
    type Arguments = T;

    async fn pre_start(
        &self,
        myself: ractor::ActorRef<Respawn>,
        template: T,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        let child = spawn_decider(&myself, &template).await?;
        Ok(SupervisorState {
            template,
            policy: actors::restart_policy(),
            child: Some(child),
        })
    }

    async fn handle(
        &self,
        myself: ractor::ActorRef<Respawn>,
        _respawn: Respawn,
        state: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        state.child = Some(spawn_decider(&myself, &state.template).await?);
        tracing::info!(actor = T::NAME, "restarted");
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ractor::ActorRef<Respawn>,
        state: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let Some(child) = state.child.take() {
            child.stop(Some("node stopping".to_owned()));
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ractor::ActorRef<Respawn>,
        event: ractor::SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let Some(why) = actors::child_ended(&event, state.child.as_ref().map(|c| c.get_id()))
        else {
            return Ok(());
        };
        state.child = None;
        metrics::counter!("gtc_actor_restarts_total", "actor" => T::NAME).increment(1);
        match state.policy.next(std::time::Instant::now()) {
            packs::restart::RestartDecision::RestartAfter(delay) => {
                tracing::warn!(actor = T::NAME, reason = %why, ?delay, "ended; restarting");
                myself.send_after(delay, || Respawn);
            }
            packs::restart::RestartDecision::GiveUp { restarts_in_window } => {
                tracing::error!(actor = T::NAME, restarts_in_window, reason = %why, "restart storm; it will not decide on its own");
                myself.stop(Some(format!(
                    "restart storm: {restarts_in_window} restarts within a minute"
                )));
            }
        }
        Ok(())
    }
}

/// Commits a decider's decision: on a cluster only as the leader of the
/// term it was decided in, within `bound`; on a single node through the
/// store, off the async threads.
pub async fn commit(
    store: &Arc<dyn store::EnvironmentStore + Send + Sync>,
    cluster: Option<&Arc<consensus::ClusterHandle>>,
    envelope: deploy::command::CommandEnvelope,
    bound: Duration,
) -> Result<store::Submitted, String> {
    match cluster {
        Some(cluster) => cluster
            .submit_as_leader(&envelope, bound)
            .await
            .map_err(|error| error.to_string()),
        None => {
            let store = Arc::clone(store);
            match tokio::task::spawn_blocking(move || store.submit(&envelope)).await {
                Ok(outcome) => outcome.map_err(|error| error.to_string()),
                Err(error) => Err(format!("the commit task failed: {error}")),
            }
        }
    }
}

/// The term a decision is made in: `None` on a single node, the current
/// term on a cluster's leader, and `Err(())` on a member that does not lead
/// (it decides nothing).
pub fn deciding_term(cluster: Option<&Arc<consensus::ClusterHandle>>) -> Result<Option<u64>, ()> {
    match cluster {
        Some(cluster) if !cluster.is_leader() => Err(()),
        Some(cluster) => Ok(Some(cluster.status().term)),
        None => Ok(None),
    }
}

/// Who a decider's decision is audited as: the decider (`kind`, e.g.
/// `rollout`, and `user`, e.g. `rollout:<deployment>`), never a person and
/// never the node, under the decider's own policy name and reason.
pub struct Decider<'a> {
    pub kind: &'a str,
    pub user: String,
    pub policy: &'a str,
    pub reason: &'a str,
}

/// The envelope of a decider's decision, with fresh ids and the time now.
pub fn decision_envelope(
    command: deploy::command::Command,
    decider: Decider<'_>,
) -> deploy::command::CommandEnvelope {
    use deploy::audit::{Actor, Authorization, Decision};
    deploy::command::CommandEnvelope {
        at: chrono::Utc::now(),
        actor: Actor {
            kind: decider.kind.to_owned(),
            user: Some(decider.user),
            uid: None,
        },
        authorization: Authorization {
            decision: Decision::Allow,
            policy: decider.policy.to_owned(),
            reason: decider.reason.to_owned(),
        },
        minted: deploy::command::MintedIds {
            event_id: deploy::ids::EventId::from_ulid(ulid::Ulid::new()),
            object_id: ulid::Ulid::new(),
        },
        command,
        precondition: None,
        idempotency_key: None,
        signed_by: None,
    }
}
