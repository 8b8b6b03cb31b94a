//! Integration tests: real chitchat nodes on loopback UDP (and one on the
//! in-memory transport). Every wait polls a condition with a bounded
//! timeout; nothing sleeps to make something happen.

mod convergence;
mod failure;
mod intruders;
mod rotation;
mod support;
