//! Capability slots and env-pack descriptors (`<path>@<semver>`).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::validated_string;

/// What an env-pack provides to an environment. The five core slots are bound
/// at most once per environment; `revocation` is core too but optional.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CapabilitySlot {
    Deployer,
    Secrets,
    Telemetry,
    Sessions,
    State,
    Revocation,
}

impl CapabilitySlot {
    /// The five slots every environment needs bound to run anything.
    pub const CORE: [CapabilitySlot; 5] = [
        CapabilitySlot::Deployer,
        CapabilitySlot::Secrets,
        CapabilitySlot::Telemetry,
        CapabilitySlot::Sessions,
        CapabilitySlot::State,
    ];

    /// Every slot, in document order.
    pub const ALL: [CapabilitySlot; 6] = [
        CapabilitySlot::Deployer,
        CapabilitySlot::Secrets,
        CapabilitySlot::Telemetry,
        CapabilitySlot::Sessions,
        CapabilitySlot::State,
        CapabilitySlot::Revocation,
    ];

    /// The lowercase name used in JSON, paths and descriptors.
    pub fn as_str(self) -> &'static str {
        match self {
            CapabilitySlot::Deployer => "deployer",
            CapabilitySlot::Secrets => "secrets",
            CapabilitySlot::Telemetry => "telemetry",
            CapabilitySlot::Sessions => "sessions",
            CapabilitySlot::State => "state",
            CapabilitySlot::Revocation => "revocation",
        }
    }
}

impl fmt::Display for CapabilitySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an env-pack descriptor was refused. Each variant names the part of
/// `<path>@<semver>` that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DescriptorError {
    #[error(
        "descriptor {text:?} has no version; write it as <path>@<semver>, e.g. greentic.deployer.local-process@0.1.0"
    )]
    MissingVersion { text: String },
    #[error("descriptor {text:?} contains more than one '@'; write it as <path>@<semver>")]
    MultipleAt { text: String },
    #[error("descriptor {text:?} has an empty path before '@'")]
    EmptyPath { text: String },
    #[error(
        "descriptor path {path:?} has no '.'; pack paths are dotted names such as greentic.secrets.dev-store"
    )]
    PathMissingDot { path: String },
    #[error("descriptor path {path:?} contains {character:?}; only [a-z0-9.-] are allowed")]
    InvalidPathChar { path: String, character: char },
    #[error("descriptor {text:?} has version {version:?}, which is not semver: {reason}")]
    InvalidSemver {
        text: String,
        version: String,
        reason: String,
    },
}

/// An env-pack descriptor such as `greentic.deployer.local-process@0.1.0`.
/// The crate keeps no list of known packs: a new cloud is a new value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackDescriptor(String);

impl PackDescriptor {
    /// The version-independent registry key, e.g. `greentic.deployer.local-process`.
    pub fn path(&self) -> &str {
        self.0
            .split_once('@')
            .map_or(self.0.as_str(), |(path, _)| path)
    }

    /// The requested version.
    pub fn version(&self) -> semver::Version {
        // The validator proved the version parses; an unparsable version can
        // only come from a bug in `validate`, so fall back to 0.0.0 visibly.
        self.0
            .split_once('@')
            .and_then(|(_, version)| semver::Version::parse(version).ok())
            .unwrap_or_else(|| semver::Version::new(0, 0, 0))
    }

    fn validate(text: &str) -> Result<(), DescriptorError> {
        let mut parts = text.split('@');
        let path = parts.next().unwrap_or_default();
        let Some(version) = parts.next() else {
            return Err(DescriptorError::MissingVersion {
                text: text.to_owned(),
            });
        };
        if parts.next().is_some() {
            return Err(DescriptorError::MultipleAt {
                text: text.to_owned(),
            });
        }
        validate_descriptor_path(path).map_err(|error| match error {
            DescriptorError::EmptyPath { .. } => DescriptorError::EmptyPath {
                text: text.to_owned(),
            },
            other => other,
        })?;
        if version.is_empty() {
            return Err(DescriptorError::MissingVersion {
                text: text.to_owned(),
            });
        }
        semver::Version::parse(version).map_err(|error| DescriptorError::InvalidSemver {
            text: text.to_owned(),
            version: version.to_owned(),
            reason: error.to_string(),
        })?;
        Ok(())
    }
}

/// Checks the path half of a descriptor (also used for registry keys).
pub fn validate_descriptor_path(path: &str) -> Result<(), DescriptorError> {
    if path.is_empty() {
        return Err(DescriptorError::EmptyPath {
            text: path.to_owned(),
        });
    }
    if let Some(character) = path
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')))
    {
        return Err(DescriptorError::InvalidPathChar {
            path: path.to_owned(),
            character,
        });
    }
    if !path.contains('.') {
        return Err(DescriptorError::PathMissingDot {
            path: path.to_owned(),
        });
    }
    Ok(())
}

validated_string!(
    PackDescriptor,
    DescriptorError,
    PackDescriptor::validate,
    "Env-pack descriptor <path>@<semver>, e.g. greentic.deployer.local-process@0.1.0.",
    Some("^[a-z0-9.-]*\\.[a-z0-9.-]*@[^@]+$")
);

impl PackDescriptor {
    /// Builds a descriptor from parts that are already known to be valid.
    pub fn parse(text: &str) -> Result<Self, DescriptorError> {
        Self::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_default_descriptors() {
        let descriptor: PackDescriptor = "greentic.deployer.local-process@0.1.0"
            .parse()
            .expect("valid");
        assert_eq!(descriptor.path(), "greentic.deployer.local-process");
        assert_eq!(descriptor.version(), semver::Version::new(0, 1, 0));
    }

    #[test]
    fn each_malformed_descriptor_gets_its_own_error() {
        type Case = (&'static str, fn(&DescriptorError) -> bool);
        let cases: [Case; 7] = [
            ("greentic.x", |e| {
                matches!(e, DescriptorError::MissingVersion { .. })
            }),
            ("greentic.x@", |e| {
                matches!(e, DescriptorError::MissingVersion { .. })
            }),
            ("a.b@1.0.0@2", |e| {
                matches!(e, DescriptorError::MultipleAt { .. })
            }),
            ("@1.0.0", |e| matches!(e, DescriptorError::EmptyPath { .. })),
            ("greentic@1.0.0", |e| {
                matches!(e, DescriptorError::PathMissingDot { .. })
            }),
            ("Greentic.x@1.0.0", |e| {
                matches!(e, DescriptorError::InvalidPathChar { character: 'G', .. })
            }),
            ("greentic.x@one", |e| {
                matches!(e, DescriptorError::InvalidSemver { .. })
            }),
        ];
        for (text, expected) in cases {
            let error = text.parse::<PackDescriptor>().expect_err(text);
            assert!(expected(&error), "{text}: unexpected {error:?}");
        }
    }

    proptest! {
        /// Any accepted descriptor splits back into a valid path and a semver.
        #[test]
        fn accepted_descriptors_round_trip(text in "[a-zA-Z0-9.@-]{0,40}") {
            if let Ok(descriptor) = text.parse::<PackDescriptor>() {
                prop_assert!(validate_descriptor_path(descriptor.path()).is_ok());
                prop_assert_eq!(format!("{}@{}", descriptor.path(), descriptor.version()), text);
            }
        }

        /// Well-formed descriptors are always accepted.
        #[test]
        fn well_formed_descriptors_are_accepted(
            head in "[a-z0-9-]{1,10}", tail in "[a-z0-9.-]{1,10}",
            major in 0u64..100, minor in 0u64..100, patch in 0u64..100,
        ) {
            let text = format!("{head}.{tail}@{major}.{minor}.{patch}");
            prop_assert!(text.parse::<PackDescriptor>().is_ok(), "{}", text);
        }
    }
}
