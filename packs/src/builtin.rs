//! The built-in handlers: what a laptop needs with no extra services.

use deploy::command::DefaultBinding;
use deploy::descriptor::CapabilitySlot;

use crate::registry::{EnvPackHandler, EnvPackRegistry};

/// A built-in pack described by constants.
struct Builtin {
    slot: CapabilitySlot,
    path: &'static str,
    /// Default version bound by `env init`.
    version: &'static str,
    requirement: &'static str,
    credentials: Option<&'static [&'static str]>,
}

impl EnvPackHandler for Builtin {
    fn slot(&self) -> CapabilitySlot {
        self.slot
    }
    fn descriptor_path(&self) -> &str {
        self.path
    }
    fn supported_versions(&self) -> semver::VersionReq {
        // The requirement strings below are constants checked by a unit
        // test; an unparsable one would match nothing rather than panic.
        semver::VersionReq::parse(self.requirement).unwrap_or(semver::VersionReq {
            comparators: vec![semver::Comparator {
                op: semver::Op::Exact,
                major: u64::MAX,
                minor: None,
                patch: None,
                pre: semver::Prerelease::EMPTY,
            }],
        })
    }
    fn deployer_credentials(&self) -> Option<Vec<String>> {
        self.credentials
            .map(|capabilities| capabilities.iter().map(|c| (*c).to_owned()).collect())
    }
}

const BUILTINS: [Builtin; 5] = [
    Builtin {
        slot: CapabilitySlot::Deployer,
        path: "greentic.deployer.local-process",
        version: "0.1.0",
        requirement: "^0.1.0",
        // Local processes run as the operator; no cloud capability needed.
        credentials: Some(&[]),
    },
    Builtin {
        slot: CapabilitySlot::Secrets,
        path: "greentic.secrets.dev-store",
        version: "0.1.0",
        requirement: "^0.1.0",
        credentials: None,
    },
    Builtin {
        slot: CapabilitySlot::Telemetry,
        path: "greentic.telemetry.stdout",
        version: "0.1.0",
        requirement: "^0.1.0",
        credentials: None,
    },
    Builtin {
        slot: CapabilitySlot::Sessions,
        path: "greentic.sessions.in-memory",
        version: "0.1.0",
        requirement: "^0.1.0",
        credentials: None,
    },
    Builtin {
        slot: CapabilitySlot::State,
        path: "greentic.state.in-memory",
        version: "0.1.0",
        requirement: "^0.1.0",
        credentials: None,
    },
];

/// Built-in packs an environment may bind but that `env init` does not
/// pick: the container deployer needs a Docker engine, the Kubernetes one
/// a cluster (its render is `k8s_deployer::render`; a node runs no
/// instances for it).
const OPTIONAL: [Builtin; 2] = [
    Builtin {
        slot: CapabilitySlot::Deployer,
        path: "greentic.deployer.docker",
        version: "0.1.0",
        requirement: "^0.1.0",
        // The local engine's socket; no cloud capability needed.
        credentials: Some(&[]),
    },
    Builtin {
        slot: CapabilitySlot::Deployer,
        path: "greentic.deployer.k8s",
        version: "1.0.0",
        requirement: "^1.0.0",
        // What the server-side apply (and prune) of the render needs: the
        // environment's namespace, and these kinds inside it.
        credentials: Some(&[
            "kubernetes:namespaces:apply,delete",
            "kubernetes:configmaps:apply,delete",
            "kubernetes:secrets:apply,delete",
            "kubernetes:services:apply,delete",
            "kubernetes:apps/deployments:apply,delete",
            "kubernetes:networking.k8s.io/networkpolicies:apply,delete",
            "kubernetes:policy/poddisruptionbudgets:apply,delete",
        ]),
    },
];

/// A registry holding the five built-in local packs and the optional ones.
pub fn with_builtins() -> EnvPackRegistry {
    let mut registry = EnvPackRegistry::new();
    for builtin in BUILTINS.into_iter().chain(OPTIONAL) {
        // Built-in paths are distinct constants with credentials where
        // required; a unit test proves registration succeeds.
        let _ = registry.register(Box::new(builtin));
    }
    registry
}

/// The bindings `env init` fills into empty slots.
pub fn default_bindings() -> Vec<DefaultBinding> {
    BUILTINS
        .iter()
        .filter_map(|builtin| {
            let kind = format!("{}@{}", builtin.path, builtin.version)
                .parse()
                .ok()?;
            Some(DefaultBinding {
                slot: builtin.slot,
                kind,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_registers_and_resolves_its_default() {
        let mut registry = EnvPackRegistry::new();
        for builtin in BUILTINS {
            assert!(semver::VersionReq::parse(builtin.requirement).is_ok());
            registry
                .register(Box::new(builtin))
                .expect("builtin registers");
        }
        let defaults = default_bindings();
        assert_eq!(defaults.len(), 5);
        for default in defaults {
            registry
                .resolve_for_slot(&default.kind, default.slot)
                .expect("default resolves for its slot");
        }
        let slots: Vec<_> = default_bindings().iter().map(|d| d.slot).collect();
        assert_eq!(slots, CapabilitySlot::CORE.to_vec());
        let docker: deploy::descriptor::PackDescriptor = "greentic.deployer.docker@0.1.0"
            .parse()
            .expect("descriptor");
        with_builtins()
            .resolve_for_slot(&docker, CapabilitySlot::Deployer)
            .expect("the docker deployer is bindable");
        let k8s: deploy::descriptor::PackDescriptor =
            "greentic.deployer.k8s@1.0.0".parse().expect("descriptor");
        with_builtins()
            .resolve_for_slot(&k8s, CapabilitySlot::Deployer)
            .expect("the k8s deployer is bindable");
        assert!(
            default_bindings()
                .iter()
                .all(|d| d.kind.path() != "greentic.deployer.k8s"),
            "the k8s deployer is never a default binding"
        );
    }
}
