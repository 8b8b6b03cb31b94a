//! The weighted router's decisions: which deployment a request belongs to,
//! and which revision of it serves the request.
//!
//! Owns: [`RouteTable`] (built only from a committed environment state, so
//! a router never routes by an uncommitted split), the weighted pick in
//! basis points ([`WeightedPick`]), and signed sticky-session cookies
//! ([`sticky`]).
//!
//! Around that pure core, [`proxy::Router`] is the hyper proxy: per-core
//! worker threads with their own upstream pools, one
//! atomically swapped snapshot per request, instance balancing, streaming,
//! retries and JSON error answers.
//!
//! Must not touch: state. The decision core takes no sockets, clock or
//! randomness (callers pass the request's host and path, a pick counter and
//! the current time, so the same inputs give the same answer, which the
//! simulator relies on); the proxy serves whatever snapshot it was given.

pub mod connections;
mod describe;
mod pick;
pub mod proxy;
pub mod resilience;
pub mod span_export;
pub mod sticky;
mod table;
pub mod traceparent;
mod upstream;

pub use describe::describe_metrics;
pub use pick::{WeightedPick, pick_point};
pub use table::{DeploymentRoute, RouteTable, normalize_host};
