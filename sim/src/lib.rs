//! Deterministic simulation of whole clusters under a seeded scheduler.
//!
//! Owns: the simulated network, disk and clock a cluster runs on, the
//! workloads that drive it, the named invariants checked while it runs,
//! and the reproduction of a failing run from its seed. Boundary:
//! test-only; production crates must not depend on it, and it must not
//! reimplement what it tests (it runs openraft, `deploy::apply`,
//! `deploy::placement`, the router's table, pick and sticky cookies, and
//! the membership crate).
//!
//! - [`world`]: one run of a cluster of consensus's own members (the
//!   node's `ClusterHandle` and `StateMachine` over the local store in a
//!   folder per node), on the seeded [`net`] and log [`disk`], driven by
//!   operators, users and [`fault`]s, checked by [`invariants`], recorded
//!   in a hashed [`trace`].
//! - [`gossip`]: N real `membership` nodes on chitchat's in-memory
//!   transport under paused time; convergence, failure-detection and heal
//!   times at cluster sizes from a handful to hundreds.

pub mod disk;
pub mod entropy;
pub mod fault;
pub mod gossip;
pub mod invariants;
pub mod net;
pub mod trace;
pub mod world;

pub use invariants::{Violation, names};
pub use world::{
    FaultMix, PlantedBug, REJOIN_BOUND, REJOIN_TERM_WATCH, RunConfig, RunReport, RunStats,
    SimError, run,
};
