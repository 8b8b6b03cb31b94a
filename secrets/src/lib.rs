//! The encrypted per-environment secret store behind the `secrets` env-pack
//! slot (`greentic.secrets.dev-store@0.1.0`, the embedded default).
//!
//! - [`path`]: pure validation of secret paths and `secret://<env>/<path>`
//!   references (no I/O; the fuzz target and property tests drive it);
//! - [`value`]: values in memory (`secrecy`, zeroed on drop, never
//!   serialized) and the generator of rotated values;
//! - [`answers`]: the `--answers` payloads of `secrets put|get|rotate`;
//! - [`crypto`]: XChaCha20-Poly1305 sealing with associated data;
//! - [`store`]: [`SecretStore`], versions on disk, one immutable file each.
//!
//! The on-disk names come from `deploy::layout`; the format, key handling
//! and threat notes are in this crate's README.

pub mod answers;
pub mod crypto;
pub mod error;
mod fs;
mod keys;
pub mod path;
pub mod store;
pub mod value;

pub use error::SecretsError;
pub use path::{PathError, RefError, SecretPath};
pub use store::{
    Origin, SealedVersion, Sealing, SecretStore, SecretSummary, SecretsImage, StoreGuard,
    VersionMeta, WriteRequest, Written, check_unpinned,
};
pub use value::SecretText;

/// The env-pack this crate implements; the `secrets` slot must be bound to
/// it (any `^0.1.0` version) for the verbs to serve an environment.
pub const DEV_STORE_PACK_PATH: &str = "greentic.secrets.dev-store";
