//! Deterministic simulation of whole clusters under a seeded scheduler.
//!
//! Status: reserved. Nothing lives here yet; issue #6 fills it. Boundary:
//! test-only; production crates must not depend on it.
