//! The env-pack registry: which handler serves which descriptor path, at
//! which versions, for which slot.
//!
//! Owns: the [`EnvPackHandler`] trait, [`EnvPackRegistry`] (register,
//! resolve, resolve for a slot), the built-in handlers for the five local
//! defaults, and the pure doctor checks over an environment's bindings.
//!
//! Must not touch: the store, the network or processes. A handler here
//! describes a pack; running it belongs to the node's actors.

mod builtin;
mod doctor;
mod registry;

pub use builtin::{default_bindings, with_builtins};
pub use doctor::{BindingReport, SlotMismatch, VersionSkew, check_bindings};
pub use registry::{EnvPackHandler, EnvPackRegistry, RegistryError};
