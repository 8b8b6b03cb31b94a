//! The env-pack registry and the deployer contract.
//!
//! Owns: the [`EnvPackHandler`] trait, [`EnvPackRegistry`] (register,
//! resolve, resolve for a slot), the built-in handlers for the five local
//! defaults, the pure doctor checks over an environment's bindings, the
//! [`deployer::Deployer`] contract with the lifecycle its implementations
//! share ([`deployer::SupervisedDeployer`]), the pure [`restart`] policy,
//! the [`credentials::DeployerCredentials`] contract and its report types,
//! and (feature `conformance`) the suite every deployer must pass.
//!
//! Must not touch: the store or the router. The registry describes packs;
//! deployers run instances through their provider's driver.

mod builtin;
pub mod credentials;
pub mod deployer;
mod doctor;
mod registry;
pub mod restart;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use builtin::{default_bindings, with_builtins};
pub use doctor::{BindingReport, SlotMismatch, VersionSkew, check_bindings};
pub use registry::{EnvPackHandler, EnvPackRegistry, RegistryError};
