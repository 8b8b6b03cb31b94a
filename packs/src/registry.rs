//! The registry proper.

use std::collections::BTreeMap;

use deploy::descriptor::{
    CapabilitySlot, DescriptorError, PackDescriptor, validate_descriptor_path,
};
use thiserror::Error;

/// What every env-pack handler declares about itself. Object safe, so the
/// registry can hold handlers of any pack.
pub trait EnvPackHandler: Send + Sync {
    /// The slot this pack fills.
    fn slot(&self) -> CapabilitySlot;
    /// The version-independent registry key, e.g. `greentic.deployer.local-process`.
    fn descriptor_path(&self) -> &str;
    /// Which versions of the pack this handler can drive.
    fn supported_versions(&self) -> semver::VersionReq;
    /// Tools the pack needs on this machine that are missing; empty when
    /// everything is present.
    fn preflight(&self) -> Vec<String> {
        Vec::new()
    }
    /// For deployers: the capabilities their credentials must grant. A
    /// deployer without a credentials contract cannot be registered.
    fn deployer_credentials(&self) -> Option<Vec<String>> {
        None
    }
}

/// Why a registration or a resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
    #[error("a handler for {path} is already registered; packs cannot shadow each other")]
    DuplicateRegistration { path: String },
    #[error("handler path is invalid: {0}")]
    InvalidPath(#[from] DescriptorError),
    #[error(
        "deployer pack {path} declares no credentials contract; deployers must say which capabilities they need"
    )]
    DeployerMissingCredentials { path: String },
    #[error("no env-pack handler is registered for {path}; known packs: {known}")]
    Unknown { path: String, known: String },
    #[error(
        "{descriptor} asks for version {requested}, but the registered handler supports {supported}"
    )]
    VersionUnsupported {
        descriptor: String,
        requested: semver::Version,
        supported: semver::VersionReq,
    },
    #[error("{descriptor} is a {handler_slot} pack and cannot be bound to the {bound_slot} slot")]
    SlotMismatch {
        descriptor: String,
        bound_slot: CapabilitySlot,
        handler_slot: CapabilitySlot,
    },
}

/// Handlers keyed by descriptor path.
#[derive(Default)]
pub struct EnvPackRegistry {
    handlers: BTreeMap<String, Box<dyn EnvPackHandler>>,
}

impl EnvPackRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler; refuses duplicates and deployers without credentials.
    pub fn register(&mut self, handler: Box<dyn EnvPackHandler>) -> Result<(), RegistryError> {
        let path = handler.descriptor_path().to_owned();
        validate_descriptor_path(&path)?;
        if self.handlers.contains_key(&path) {
            return Err(RegistryError::DuplicateRegistration { path });
        }
        if handler.slot() == CapabilitySlot::Deployer && handler.deployer_credentials().is_none() {
            return Err(RegistryError::DeployerMissingCredentials { path });
        }
        self.handlers.insert(path, handler);
        Ok(())
    }

    /// The handler for `descriptor`, if its version is supported.
    pub fn resolve(
        &self,
        descriptor: &PackDescriptor,
    ) -> Result<&dyn EnvPackHandler, RegistryError> {
        let handler =
            self.handlers
                .get(descriptor.path())
                .ok_or_else(|| RegistryError::Unknown {
                    path: descriptor.path().to_owned(),
                    known: self.handlers.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
        let supported = handler.supported_versions();
        if !supported.matches(&descriptor.version()) {
            return Err(RegistryError::VersionUnsupported {
                descriptor: descriptor.to_string(),
                requested: descriptor.version(),
                supported,
            });
        }
        Ok(handler.as_ref())
    }

    /// Like [`resolve`](Self::resolve), and the handler must fill `slot`.
    pub fn resolve_for_slot(
        &self,
        descriptor: &PackDescriptor,
        slot: CapabilitySlot,
    ) -> Result<&dyn EnvPackHandler, RegistryError> {
        let handler = self.resolve(descriptor)?;
        if handler.slot() != slot {
            return Err(RegistryError::SlotMismatch {
                descriptor: descriptor.to_string(),
                bound_slot: slot,
                handler_slot: handler.slot(),
            });
        }
        Ok(handler)
    }

    /// Registered descriptor paths with their slot and supported versions.
    pub fn entries(&self) -> impl Iterator<Item = (&str, CapabilitySlot, semver::VersionReq)> {
        self.handlers
            .iter()
            .map(|(path, handler)| (path.as_str(), handler.slot(), handler.supported_versions()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        slot: CapabilitySlot,
        path: &'static str,
        credentials: bool,
    }

    impl EnvPackHandler for Fake {
        fn slot(&self) -> CapabilitySlot {
            self.slot
        }
        fn descriptor_path(&self) -> &str {
            self.path
        }
        fn supported_versions(&self) -> semver::VersionReq {
            semver::VersionReq::parse("^1.2").expect("req")
        }
        fn deployer_credentials(&self) -> Option<Vec<String>> {
            self.credentials.then(Vec::new)
        }
    }

    fn fake(slot: CapabilitySlot, path: &'static str) -> Box<Fake> {
        Box::new(Fake {
            slot,
            path,
            credentials: true,
        })
    }

    #[test]
    fn registration_refuses_shadowing_and_deployers_without_credentials() {
        let mut registry = EnvPackRegistry::new();
        registry
            .register(fake(CapabilitySlot::State, "acme.state.redis"))
            .expect("first");
        assert!(matches!(
            registry.register(fake(CapabilitySlot::State, "acme.state.redis")),
            Err(RegistryError::DuplicateRegistration { .. })
        ));
        let no_credentials = Box::new(Fake {
            slot: CapabilitySlot::Deployer,
            path: "acme.deployer.x",
            credentials: false,
        });
        assert!(matches!(
            registry.register(no_credentials),
            Err(RegistryError::DeployerMissingCredentials { .. })
        ));
        assert!(matches!(
            registry.register(fake(CapabilitySlot::State, "NoDot")),
            Err(RegistryError::InvalidPath(_))
        ));
    }

    #[test]
    fn resolution_checks_version_and_slot() {
        let mut registry = EnvPackRegistry::new();
        registry
            .register(fake(CapabilitySlot::State, "acme.state.redis"))
            .expect("register");
        let ok: PackDescriptor = "acme.state.redis@1.4.0".parse().expect("descriptor");
        assert!(
            registry
                .resolve_for_slot(&ok, CapabilitySlot::State)
                .is_ok()
        );
        assert!(matches!(
            registry.resolve_for_slot(&ok, CapabilitySlot::Secrets),
            Err(RegistryError::SlotMismatch { .. })
        ));
        let old: PackDescriptor = "acme.state.redis@1.1.0".parse().expect("descriptor");
        assert!(matches!(
            registry.resolve(&old),
            Err(RegistryError::VersionUnsupported { .. })
        ));
        let unknown: PackDescriptor = "acme.state.mongo@1.2.0".parse().expect("descriptor");
        assert!(matches!(
            registry.resolve(&unknown),
            Err(RegistryError::Unknown { .. })
        ));
    }
}
