//! Pure checks of an environment's bindings against the registry.

use deploy::descriptor::CapabilitySlot;
use deploy::environment::Environment;
use serde::Serialize;

use crate::registry::{EnvPackRegistry, RegistryError};

/// A binding whose pack fills another slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotMismatch {
    pub kind: String,
    pub bound_slot: CapabilitySlot,
    pub handler_slot: CapabilitySlot,
}

/// A binding whose version the registered handler does not support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionSkew {
    pub kind: String,
    pub requested: String,
    pub supported: String,
}

/// What `env doctor` reports about bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BindingReport {
    pub bound_slots: Vec<CapabilitySlot>,
    pub missing_slots: Vec<CapabilitySlot>,
    pub unknown_kinds: Vec<String>,
    pub slot_mismatches: Vec<SlotMismatch>,
    pub version_skew: Vec<VersionSkew>,
}

impl BindingReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.missing_slots.is_empty()
            && self.unknown_kinds.is_empty()
            && self.slot_mismatches.is_empty()
            && self.version_skew.is_empty()
    }
}

/// Checks every binding of `environment` against `registry`.
pub fn check_bindings(registry: &EnvPackRegistry, environment: &Environment) -> BindingReport {
    let mut report = BindingReport {
        bound_slots: environment.packs.iter().map(|b| b.slot).collect(),
        missing_slots: CapabilitySlot::CORE
            .into_iter()
            .filter(|slot| environment.binding(*slot).is_none())
            .collect(),
        ..BindingReport::default()
    };
    for binding in &environment.packs {
        match registry.resolve_for_slot(&binding.kind, binding.slot) {
            Ok(_) => {}
            Err(RegistryError::Unknown { .. }) => {
                report.unknown_kinds.push(binding.kind.to_string())
            }
            Err(RegistryError::SlotMismatch {
                bound_slot,
                handler_slot,
                ..
            }) => report.slot_mismatches.push(SlotMismatch {
                kind: binding.kind.to_string(),
                bound_slot,
                handler_slot,
            }),
            Err(RegistryError::VersionUnsupported {
                requested,
                supported,
                ..
            }) => report.version_skew.push(VersionSkew {
                kind: binding.kind.to_string(),
                requested: requested.to_string(),
                supported: supported.to_string(),
            }),
            Err(_) => report.unknown_kinds.push(binding.kind.to_string()),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::with_builtins;
    use deploy::environment::EnvPackBinding;
    use deploy::ids::EnvId;

    fn binding(slot: CapabilitySlot, kind: &str) -> EnvPackBinding {
        EnvPackBinding {
            slot,
            kind: kind.parse().expect("descriptor"),
            pack_ref: "p".parse().expect("pack"),
            answers_ref: None,
            generation: 0,
            previous: None,
        }
    }

    #[test]
    fn doctor_reports_unknown_kinds_mismatches_skew_and_missing_slots() {
        let registry = with_builtins();
        let mut environment = Environment::new(EnvId::local(), "local".into());
        environment.packs = vec![
            binding(
                CapabilitySlot::Deployer,
                "greentic.deployer.local-process@0.1.3",
            ),
            binding(CapabilitySlot::Secrets, "greentic.state.in-memory@0.1.0"),
            binding(CapabilitySlot::Telemetry, "acme.telemetry.otlp@1.0.0"),
            binding(CapabilitySlot::State, "greentic.state.in-memory@0.2.0"),
        ];
        let report = check_bindings(&registry, &environment);
        assert_eq!(report.missing_slots, vec![CapabilitySlot::Sessions]);
        assert_eq!(
            report.unknown_kinds,
            vec!["acme.telemetry.otlp@1.0.0".to_owned()]
        );
        assert_eq!(report.slot_mismatches.len(), 1);
        assert_eq!(
            report.slot_mismatches[0].handler_slot,
            CapabilitySlot::State
        );
        assert_eq!(report.version_skew.len(), 1);
        assert_eq!(report.version_skew[0].requested, "0.2.0");
        assert!(!report.is_clean());
    }
}
