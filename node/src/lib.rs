//! `gtc`: the operator CLI and the node it runs (`gtc node run`).
//!
//! Owns: argument parsing (clap), reading `--answers` files, the clock and
//! id minting, the operator's identity, output formatting and exit codes,
//! the admin API and the wiring of a running node. Everything else is
//! delegated: meaning to `deploy`, persistence to `store`, env-pack
//! knowledge to `packs`, serving traffic to `router`, running instances
//! to `actors`, replication to `consensus`.
//!
//! The crate is a library with a thin `main.rs`, so the admin API can be
//! served in-process by tests. How a command travels is decided once, when
//! it starts ([`submit::Submitter`]: this machine's store or its running
//! node, or a remote node by URL); the checks a command meets at the edge
//! (authorization by policy, warm checks, the env-pack registry) live in
//! [`checks`], which both `gtc op` and the admin API call.
//!
//! Nothing prints with `print!`/`eprint!` (they panic on a closed pipe):
//! output goes through `output::outln!`/`errln!`, and the lints below keep
//! it that way.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod admin;
mod answers;
mod autoscaler;
mod bundle_cmd;
pub mod checks;
pub mod cli;
mod cluster_cmd;
mod context;
mod credentials;
mod demo_autoscale;
mod demo_cmd;
mod demo_rollout;
mod demo_support;
pub mod dispatch;
pub mod error;
mod fetch;
mod gossip;
mod kube_client;
mod node_client;
mod node_cmd;
mod op;
pub mod operator_key;
mod output;
mod preflight;
mod remote;
mod rollout_controller;
mod secrets_cmd;
pub mod submit;
mod ticking;
mod token_cmd;
mod trust_cmd;
mod trust_root;
