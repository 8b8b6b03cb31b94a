//! Deterministic simulation of whole clusters under a seeded scheduler.
//!
//! Status: being built (issue #6). Boundary: test-only; production crates
//! must not depend on it.
//!
//! - [`gossip`]: N real `membership` nodes on chitchat's in-memory
//!   transport under paused time; convergence, failure-detection and heal
//!   times at cluster sizes from a handful to hundreds.

pub mod gossip;
