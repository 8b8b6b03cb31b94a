//! The weighted router's decisions: which deployment a request belongs to,
//! and which revision of it serves the request.
//!
//! Owns: [`RouteTable`] (built only from a committed environment state, so
//! a router never routes by an uncommitted split), the weighted pick in
//! basis points ([`WeightedPick`]), and signed sticky-session cookies
//! ([`sticky`]).
//!
//! Status: the pure decision core. The hyper proxy, instance balancing and
//! the atomic table swap that use it arrive with the single-node runtime
//! (issue #4).
//!
//! Must not touch: sockets, the clock or randomness. Callers pass the
//! request's host and path, a pick counter and the current time; the same
//! inputs always give the same answer, which the simulator relies on.

mod pick;
pub mod proxy;
pub mod sticky;
mod table;

pub use pick::{WeightedPick, pick_point};
pub use table::{DeploymentRoute, RouteTable, normalize_host};
