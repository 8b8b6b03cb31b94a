//! Identifier grammars: environment ids, ULID ids and the opaque string ids.
//!
//! Every id is a newtype that can only be built through its validator, so a
//! value of type [`EnvId`] is always safe to use as a path segment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest environment id we accept. Environment ids become directory names
/// and DNS-like labels in later packs (`gtc-<env>` namespaces), so they stay
/// within the 63-byte DNS label limit.
pub const ENV_ID_LEN_MAX: usize = 63;

/// Longest node name, in bytes: the DNS label limit, so a name fits a
/// certificate SAN. One bound for every place a node name lives: the
/// member's certificate (`transport`), gossip (`membership`) and the
/// placements the leader records (`apply`).
pub const NODE_NAME_BYTES_MAX: usize = 63;

/// Longest opaque id (bundle, customer, pack, party). Long enough for reverse
/// DNS names, short enough to keep audit lines and file names bounded.
pub const OPAQUE_ID_LEN_MAX: usize = 128;

/// Implements `Display`, `FromStr`, serde and JSON Schema for a string newtype
/// whose only constructor is its validator.
macro_rules! validated_string {
    ($name:ident, $error:ty, $validate:path, $description:expr, $pattern:expr) => {
        impl $name {
            /// The id as it is written in documents.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $validate(text)?;
                Ok(Self(text.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                $validate(&text)?;
                Ok(Self(text))
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                Self::try_from(text).map_err(::serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let pattern: Option<&str> = $pattern;
                match pattern {
                    Some(pattern) => schemars::json_schema!({
                        "type": "string",
                        "description": $description,
                        "pattern": pattern,
                    }),
                    None => schemars::json_schema!({
                        "type": "string",
                        "description": $description,
                        "minLength": 1,
                    }),
                }
            }
        }
    };
}
pub(crate) use validated_string;

/// Why an environment id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvIdError {
    #[error(
        "environment id is empty; use letters, digits, '.', '-' or '_' (for example \"prod-eu\")"
    )]
    Empty,
    #[error("environment id is {length} bytes long; the limit is {ENV_ID_LEN_MAX}")]
    TooLong { length: usize },
    #[error(
        "environment id {id:?} contains {character:?}; only ASCII letters, digits, '.', '-' and '_' are allowed"
    )]
    InvalidChar { id: String, character: char },
    #[error(
        "environment id {id:?} starts with '.'; ids that start with a dot are reserved for the store's own folders"
    )]
    LeadingDot { id: String },
}

/// An environment id: a safe path segment such as `local` or `prod-eu`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvId(String);

impl EnvId {
    /// The embedded default environment every laptop gets.
    pub fn local() -> Self {
        Self(LOCAL_ENV.to_owned())
    }

    /// True for the embedded `local` environment.
    pub fn is_local(&self) -> bool {
        self.0 == LOCAL_ENV
    }

    /// What to say when this environment does not exist and its name is
    /// the legacy `dev`: that name is not an alias of `local` (the spec
    /// describes no such alias), so the error names `local` and the
    /// migration of a legacy `dev` folder.
    pub fn legacy_dev_hint(&self) -> Option<&'static str> {
        (self.0 == LEGACY_DEV_ENV).then_some(
            "`dev` is the legacy name of the embedded environment and is not an alias: use `local` (`gtc op env init` creates it), and merge a legacy `dev` folder into it with `gtc op env migrate-dev local --check`, then `--apply`",
        )
    }
}

/// The legacy name of the embedded environment, which `migrate-dev` merges
/// into `local`; never an alias of `local`.
pub const LEGACY_DEV_ENV: &str = "dev";

/// Name of the embedded default environment.
pub const LOCAL_ENV: &str = "local";

fn validate_env_id(text: &str) -> Result<(), EnvIdError> {
    if text.is_empty() {
        return Err(EnvIdError::Empty);
    }
    if text.len() > ENV_ID_LEN_MAX {
        return Err(EnvIdError::TooLong { length: text.len() });
    }
    if let Some(character) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(EnvIdError::InvalidChar {
            id: text.to_owned(),
            character,
        });
    }
    // Rejecting a leading dot also rejects "." and "..", and keeps user ids
    // apart from the store's hidden folders (".destroyed", ".audit").
    if text.starts_with('.') {
        return Err(EnvIdError::LeadingDot {
            id: text.to_owned(),
        });
    }
    Ok(())
}

validated_string!(
    EnvId,
    EnvIdError,
    validate_env_id,
    "Environment id: ASCII letters, digits, '.', '-', '_'; must not start with '.'; at most 63 bytes.",
    Some("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")
);

/// Why an opaque id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpaqueIdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {length} bytes long; the limit is {OPAQUE_ID_LEN_MAX}")]
    TooLong { what: &'static str, length: usize },
    #[error("{what} {id:?} contains a control character or whitespace")]
    InvalidChar { what: &'static str, id: String },
}

fn validate_opaque(what: &'static str, text: &str) -> Result<(), OpaqueIdError> {
    if text.is_empty() {
        return Err(OpaqueIdError::Empty { what });
    }
    if text.len() > OPAQUE_ID_LEN_MAX {
        return Err(OpaqueIdError::TooLong {
            what,
            length: text.len(),
        });
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(OpaqueIdError::InvalidChar {
            what,
            id: text.to_owned(),
        });
    }
    Ok(())
}

macro_rules! opaque_id {
    ($name:ident, $what:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            fn validate(text: &str) -> Result<(), OpaqueIdError> {
                validate_opaque($what, text)
            }

            /// A compile-time constant id; callers pass literals that are
            /// known to satisfy the grammar (a unit test checks each one).
            #[allow(dead_code)]
            pub(crate) fn from_static(text: &'static str) -> Self {
                debug_assert!(validate_opaque($what, text).is_ok(), "{text}");
                Self(text.to_owned())
            }
        }

        validated_string!(
            $name,
            OpaqueIdError,
            Self::validate,
            concat!(
                $doc,
                " Non-empty, no whitespace or control characters, at most 128 bytes."
            ),
            None
        );
    };
}

opaque_id!(BundleId, "bundle id", "Opaque bundle id, e.g. `acme.shop`.");
opaque_id!(
    CustomerId,
    "customer id",
    "Opaque customer id; `local-dev` on the local environment."
);
opaque_id!(PackId, "pack id", "Opaque pack id.");
opaque_id!(PartyId, "party id", "Opaque revenue-share party id.");

impl CustomerId {
    /// The customer every deployment on the `local` environment belongs to
    /// unless the operator names another.
    pub fn local_dev() -> Self {
        Self("local-dev".to_owned())
    }
}

/// Why a ULID id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{what} {text:?} is not a ULID: expected 26 Crockford base32 characters such as 01HZX3N5Q8M2V7K4J9T6R1B0CD"
)]
pub struct UlidError {
    pub what: &'static str,
    pub text: String,
}

macro_rules! ulid_id {
    ($name:ident, $what:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(ulid::Ulid);

        impl $name {
            /// Wraps an already minted ULID (minting happens at the edge).
            pub fn from_ulid(ulid: ulid::Ulid) -> Self {
                Self(ulid)
            }

            /// The underlying ULID.
            pub fn ulid(&self) -> ulid::Ulid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = UlidError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                ulid::Ulid::from_string(text)
                    .map(Self)
                    .map_err(|_| UlidError {
                        what: $what,
                        text: text.to_owned(),
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": concat!($doc, " A ULID: 26 Crockford base32 characters."),
                    "pattern": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
                })
            }
        }
    };
}

ulid_id!(RevisionId, "revision id", "Revision id.");
ulid_id!(DeploymentId, "deployment id", "Bundle deployment id.");
ulid_id!(EventId, "audit event id", "Audit event id.");
ulid_id!(BackupId, "backup id", "Backup id.");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn env_id_accepts_the_usual_names() {
        for good in ["local", "prod-eu", "a", "stage_2", "v1.2", "A-b_c.d"] {
            assert!(good.parse::<EnvId>().is_ok(), "{good} should be accepted");
        }
    }

    #[test]
    fn env_id_refuses_path_tricks_with_a_specific_error() {
        assert_eq!("".parse::<EnvId>(), Err(EnvIdError::Empty));
        assert!(matches!(
            "..".parse::<EnvId>(),
            Err(EnvIdError::LeadingDot { .. })
        ));
        assert!(matches!(
            ".".parse::<EnvId>(),
            Err(EnvIdError::LeadingDot { .. })
        ));
        assert!(matches!(
            "a/b".parse::<EnvId>(),
            Err(EnvIdError::InvalidChar { character: '/', .. })
        ));
        assert!(matches!(
            "a\\b".parse::<EnvId>(),
            Err(EnvIdError::InvalidChar {
                character: '\\',
                ..
            })
        ));
        assert!(matches!(
            "../etc".parse::<EnvId>(),
            Err(EnvIdError::InvalidChar { .. }) | Err(EnvIdError::LeadingDot { .. })
        ));
        assert!(matches!(
            "x".repeat(64).parse::<EnvId>(),
            Err(EnvIdError::TooLong { length: 64 })
        ));
    }

    #[test]
    fn ulid_ids_round_trip_and_refuse_garbage() {
        let id: RevisionId = "01HZX3N5Q8M2V7K4J9T6R1B0CD".parse().expect("valid ulid");
        assert_eq!(id.to_string(), "01HZX3N5Q8M2V7K4J9T6R1B0CD");
        assert!("not-a-ulid".parse::<RevisionId>().is_err());
        assert!("01HZX3N5Q8M2V7K4J9T6R1B0C".parse::<RevisionId>().is_err());
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(
            serde_json::from_str::<RevisionId>(&json).expect("parse"),
            id
        );
    }

    proptest! {
        /// Every accepted env id is a single safe path segment.
        #[test]
        fn accepted_env_ids_are_safe_path_segments(text in "\\PC{0,70}") {
            if let Ok(id) = text.parse::<EnvId>() {
                let segment = id.as_str();
                prop_assert!(!segment.is_empty() && segment.len() <= ENV_ID_LEN_MAX);
                prop_assert!(!segment.contains('/') && !segment.contains('\\'));
                prop_assert!(segment != "." && segment != "..");
                prop_assert!(!segment.starts_with('.'));
                let path = std::path::Path::new(segment);
                prop_assert_eq!(path.components().count(), 1);
                prop_assert!(matches!(path.components().next(), Some(std::path::Component::Normal(_))));
            }
        }

        /// Env ids made only of allowed characters and not starting with a dot are accepted.
        #[test]
        fn well_formed_env_ids_are_accepted(text in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}") {
            prop_assert!(text.parse::<EnvId>().is_ok());
        }

        /// Serialization round-trips for every accepted opaque id.
        #[test]
        fn opaque_ids_round_trip(text in "\\PC{0,140}") {
            if let Ok(id) = text.parse::<BundleId>() {
                let json = serde_json::to_string(&id).expect("serialize");
                prop_assert_eq!(serde_json::from_str::<BundleId>(&json).expect("parse"), id);
            }
        }
    }
}
