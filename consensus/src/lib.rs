//! The Raft-replicated implementation of `store::EnvironmentStore`.
//!
//! Status: reserved. Nothing lives here yet; the cluster issue (#5) fills it.
//! Boundary: it replicates `deploy::command::CommandEnvelope`s and applies them
//! with `deploy::apply::apply`, the same function the local store uses; it
//! never opens a socket itself (the transport is injected).
