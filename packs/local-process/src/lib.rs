//! Instance manager of the `greentic.deployer.local-process` env-pack.
//!
//! # What this crate owns
//!
//! Starting, checking and stopping the local processes of **one revision**:
//!
//! * [`start`] validates that the revision's command lives inside its extracted
//!   bundle, picks a free port on the spec's host address (loopback on a
//!   single node), spawns the process in its own process
//!   group with a cleared-down environment and its output appended to per-instance
//!   log files, and waits until its health path answers 2xx.
//! * [`RunningInstance`] reports the instance's address and pid, health-checks it,
//!   observes its exit, and [`RunningInstance::stop`]s it (SIGTERM, grace, SIGKILL,
//!   reap). Dropping it kills the process group, so no process outlives its handle.
//! * [`RestartPolicy`] (re-exported from `packs::restart`) is a pure,
//!   clock-free decision helper for supervisors: exponential backoff plus a
//!   bound on restart storms.
//! * [`LocalProcessDeployer`] is this pack on the `packs::deployer::Deployer`
//!   contract: [`LocalProcessDriver`] starts, stops, reaps and lists one
//!   revision's processes, and `packs::deployer::SupervisedDeployer` adds
//!   the lifecycle (health-gated warm, restart with backoff, drain, archive).
//!
//! # What it must not touch
//!
//! Platform state (which revisions exist, desired instance counts, persisted
//! records) and routing (which instance receives traffic) belong to the
//! deployer's control plane. This crate never reads or writes them: it is handed
//! an [`InstanceSpec`] and hands back a [`RunningInstance`] or a typed
//! [`StartError`]; deciding what to do with either is the caller's job.

#![warn(missing_docs)]

mod command;
mod deployer;
mod environment;
mod error;
mod group;
mod health;
mod instance;
mod logs;
mod pidfile;
mod spec;

pub use deployer::{
    DESCRIPTOR_PATH, LocalProcessDeployer, LocalProcessDriver, instance_spec,
    local_process_deployer,
};
pub use environment::INHERITED_ENV;
pub use error::{CommandProblem, StartError};
pub use instance::{
    FAILED_START_GRACE, HEALTH_POLL_FIRST, HEALTH_POLL_INTERVAL, KILL_REAP_TIMEOUT,
    PORT_RACE_RETRIES, RunningInstance, StopOutcome, TEXT_BUSY_BACKOFF, TEXT_BUSY_RETRIES,
    UNOBSERVABLE_EXIT_CODE, start,
};
pub use logs::{LAST_LOG_LINES, TAIL_READ_BYTES};
pub use packs::restart::{MAX_BACKOFF_EXPONENT, RestartDecision, RestartPolicy};
pub use pidfile::{live_instances, reap_orphans};
pub use spec::InstanceSpec;
