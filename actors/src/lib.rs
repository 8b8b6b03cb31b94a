//! Supervised actors for a node: one per environment, revision and env-pack
//! binding, under a node supervisor.
//!
//! Status: reserved. Nothing lives here yet; the single-node runtime (issue
//! #4) fills it. Boundary: actors carry out what the committed state says and
//! report outcomes back as `deploy::command::Command`s; they never write the
//! store directly.
