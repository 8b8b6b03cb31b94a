//! References that point outside a document: `secret://<env>/<path>` and
//! `runtime://<env>/<path>`. Values are never embedded, only these refs.

use thiserror::Error;

use crate::ids::{EnvId, validated_string};

/// Longest reference we accept; refs are stored in documents and audit lines.
pub const REF_LEN_MAX: usize = 512;

/// Why a `secret://` or `runtime://` reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefError {
    #[error("reference {text:?} must start with {scheme}://")]
    MissingScheme { text: String, scheme: &'static str },
    #[error("reference {text:?} has an empty environment segment; write {scheme}://<env>/<path>")]
    EmptyEnvSegment { text: String, scheme: &'static str },
    #[error("reference {text:?} has an invalid environment segment: {reason}")]
    InvalidEnvSegment { text: String, reason: String },
    #[error("reference {text:?} has an empty path; write {scheme}://<env>/<path>")]
    EmptyPath { text: String, scheme: &'static str },
    #[error(
        "reference {text:?} has an unsafe path segment {segment:?}; segments must be non-empty and not '.' or '..'"
    )]
    UnsafeSegment { text: String, segment: String },
    #[error("reference is {length} bytes long; the limit is {REF_LEN_MAX}")]
    TooLong { length: usize },
    #[error("reference {text:?} points at environment {found:?} but belongs to {expected:?}")]
    CrossEnvRef {
        text: String,
        found: String,
        expected: String,
    },
}

fn split_ref<'a>(text: &'a str, scheme: &'static str) -> Result<(&'a str, &'a str), RefError> {
    if text.len() > REF_LEN_MAX {
        return Err(RefError::TooLong { length: text.len() });
    }
    let prefix = format!("{scheme}://");
    let Some(rest) = text.strip_prefix(prefix.as_str()) else {
        return Err(RefError::MissingScheme {
            text: text.to_owned(),
            scheme,
        });
    };
    let (env, path) = rest.split_once('/').unwrap_or((rest, ""));
    if env.is_empty() {
        return Err(RefError::EmptyEnvSegment {
            text: text.to_owned(),
            scheme,
        });
    }
    env.parse::<EnvId>()
        .map_err(|error| RefError::InvalidEnvSegment {
            text: text.to_owned(),
            reason: error.to_string(),
        })?;
    if path.is_empty() {
        return Err(RefError::EmptyPath {
            text: text.to_owned(),
            scheme,
        });
    }
    if let Some(segment) = path
        .split('/')
        .find(|segment| segment.is_empty() || *segment == "." || *segment == "..")
    {
        return Err(RefError::UnsafeSegment {
            text: text.to_owned(),
            segment: segment.to_owned(),
        });
    }
    Ok((env, path))
}

macro_rules! env_ref {
    ($name:ident, $scheme:expr, $doc:expr, $pattern:expr) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            fn validate(text: &str) -> Result<(), RefError> {
                split_ref(text, $scheme).map(|_| ())
            }

            /// The environment segment.
            pub fn env_segment(&self) -> &str {
                split_ref(&self.0, $scheme).map_or("", |(env, _)| env)
            }

            /// The path after the environment segment.
            pub fn path(&self) -> &str {
                split_ref(&self.0, $scheme).map_or("", |(_, path)| path)
            }

            /// Refuses a reference scoped to another environment.
            pub fn check_scope(&self, owner: &EnvId) -> Result<(), RefError> {
                if self.env_segment() == owner.as_str() {
                    Ok(())
                } else {
                    Err(RefError::CrossEnvRef {
                        text: self.0.clone(),
                        found: self.env_segment().to_owned(),
                        expected: owner.to_string(),
                    })
                }
            }
        }

        validated_string!($name, RefError, Self::validate, $doc, Some($pattern));
    };
}

env_ref!(
    SecretRef,
    "secret",
    "Secret reference `secret://<env>/<path>`; the value lives in the secrets env-pack.",
    "^secret://[A-Za-z0-9_-][A-Za-z0-9._-]*/.+$"
);
env_ref!(
    RuntimeRef,
    "runtime",
    "Runtime reference `runtime://<env>/<path>`, resolved through the environment's discovered runtime values.",
    "^runtime://[A-Za-z0-9_-][A-Za-z0-9._-]*/.+$"
);

impl SecretRef {
    /// Builds the ref for `path` inside `env`.
    pub fn new(env: &EnvId, path: &str) -> Result<Self, RefError> {
        format!("secret://{env}/{path}").parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secret_refs_parse_and_scope() {
        let reference: SecretRef = "secret://prod-eu/db/password".parse().expect("valid");
        assert_eq!(reference.env_segment(), "prod-eu");
        assert_eq!(reference.path(), "db/password");
        assert!(
            reference
                .check_scope(&"prod-eu".parse().expect("env"))
                .is_ok()
        );
        assert!(matches!(
            reference.check_scope(&EnvId::local()),
            Err(RefError::CrossEnvRef { .. })
        ));
    }

    #[test]
    fn malformed_refs_get_specific_errors() {
        assert!(matches!(
            "http://x/y".parse::<SecretRef>(),
            Err(RefError::MissingScheme { .. })
        ));
        assert!(matches!(
            "secret:///y".parse::<SecretRef>(),
            Err(RefError::EmptyEnvSegment { .. })
        ));
        assert!(matches!(
            "secret://local".parse::<SecretRef>(),
            Err(RefError::EmptyPath { .. })
        ));
        assert!(matches!(
            "secret://local/".parse::<SecretRef>(),
            Err(RefError::EmptyPath { .. })
        ));
        assert!(matches!(
            "secret://local/a/../b".parse::<SecretRef>(),
            Err(RefError::UnsafeSegment { .. })
        ));
        assert!(matches!(
            "secret://../a".parse::<SecretRef>(),
            Err(RefError::InvalidEnvSegment { .. })
        ));
        assert!(matches!(
            "runtime://local".parse::<RuntimeRef>(),
            Err(RefError::EmptyPath { .. })
        ));
        assert!(matches!(
            "secret://local/x".parse::<RuntimeRef>(),
            Err(RefError::MissingScheme { .. })
        ));
    }

    proptest! {
        /// An accepted runtime ref always names a valid env and a path without traversal.
        #[test]
        fn accepted_runtime_refs_are_scoped(text in "runtime://[a-z./]{0,12}/[a-z./]{0,12}") {
            if let Ok(reference) = text.parse::<RuntimeRef>() {
                prop_assert!(reference.env_segment().parse::<EnvId>().is_ok());
                prop_assert!(!reference.path().split('/').any(|s| s == ".." || s.is_empty()));
            }
        }
    }
}
