//! The operator's web console, served by every node at `/ui/` on its admin
//! address.
//!
//! Owns: the page's assets ([`assets`]: HTML, one JavaScript module and a
//! stylesheet, compiled into the binary, so the console needs no network
//! and no CDN), and the pure read model the node's console routes answer
//! with: the traffic each router observed over the last minute
//! ([`observed`]) and the views of routers and the audit chain ([`view`]).
//!
//! Must not touch: HTTP, sockets, the clock, state or authorization. The
//! node (`node::admin::console`) authenticates the caller, gathers the
//! inputs (committed state, cluster status, gossip facts, routers' counts)
//! and serves what this crate builds. Every action the page offers goes to
//! the node's `/v1` admin API with the caller's own token, so the console
//! can do nothing the API would not let that token do.

pub mod assets;
pub mod observed;
pub mod view;
