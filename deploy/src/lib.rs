//! The deployment vocabulary: every type an operator or a node talks about,
//! the validators for each grammar, the revision lifecycle matrix, the typed
//! commands, and the one pure function that applies a command to a state.
//!
//! Owns: `Environment`, `Revision`, `TrafficSplit`, `BundleDeployment`,
//! `Credentials`, `PackConfig`, `RuntimeConfig`, `AuditEvent`, the identifier
//! grammars, [`apply::apply`] with its preconditions, and the authorization
//! decisions (the policy file's and the admin tokens' roles).
//!
//! Must not touch: the clock, randomness, files, sockets or threads. Time and
//! freshly minted ids arrive inside a [`command::CommandEnvelope`], so that the
//! same envelope applied to the same state gives the same result on every
//! replica and under simulation.

pub mod access;
pub mod apply;
pub mod audit;
pub mod bundle;
pub mod canonical;
pub mod command;
pub mod credentials;
pub mod descriptor;
pub mod environment;
pub mod environment_runtime;
pub mod error;
pub mod ids;
pub mod layout;
pub mod lifecycle;
pub mod pack_config;
pub mod pack_list_lock;
pub mod placement;
pub mod policy;
pub mod precondition;
pub mod reconcile;
pub mod refs;
pub mod revision;
pub mod rollout;
pub mod runtime_config;
pub mod scaling;
pub mod schema;
pub mod secret_pins;
pub mod state;
pub mod traffic;

/// Wall-clock instants as they appear in documents (RFC 3339, UTC).
pub type Timestamp = chrono::DateTime<chrono::Utc>;
