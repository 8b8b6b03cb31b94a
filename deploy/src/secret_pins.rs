//! Secrets a revision's instances receive (issue #14 item 3).
//!
//! A bundle's `runtime.secrets` lists what its instances need: a
//! `secret://<env>/<path>` reference and how it is delivered (an
//! environment variable or a file). When the revision is staged the edge
//! resolves each to an exact version of the secret store ([`SecretUse`] →
//! [`SecretPin`]) and the revision records the pins: its instances run with
//! those versions for the revision's whole life, so a rollback to an older
//! revision runs with the values it was staged with, and rotating a secret
//! changes only revisions staged afterwards.
//!
//! Pure: names and shapes only. Values live in the `secrets` crate and
//! reach an instance only through its deployer.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::EnvId;
use crate::refs::SecretRef;

/// Most secrets one revision may receive.
pub const SECRET_USES_MAX: usize = 64;
/// Longest variable or file name.
pub const SECRET_NAME_BYTES_MAX: usize = 128;

/// How an instance receives one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretUse {
    /// `secret://<env>/<path>`, in the environment the bundle is staged to.
    #[serde(rename = "ref")]
    pub reference: SecretRef,
    /// Deliver as this environment variable (`[A-Z_][A-Z0-9_]*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Deliver as a file of this name (`[A-Za-z0-9._-]`, not `.`/`..`),
    /// mode 0600, in the folder the instance finds in `GTC_SECRETS_DIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Pin this version; the latest version when staged if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// A [`SecretUse`] resolved at stage time: the exact version the
/// revision's instances receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretPin {
    #[serde(rename = "ref")]
    pub reference: SecretRef,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// How an instance receives a pinned secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// As the environment variable of this name.
    Env(&'a str),
    /// As the file of this name.
    File(&'a str),
}

impl SecretPin {
    /// How the instance receives it (validated pins have exactly one).
    pub fn delivery(&self) -> Option<Delivery<'_>> {
        match (&self.env, &self.file) {
            (Some(name), None) => Some(Delivery::Env(name)),
            (None, Some(name)) => Some(Delivery::File(name)),
            _ => None,
        }
    }
}

/// Why a list of secret uses (or pins) was refused; `index` is the entry's
/// position in `runtime.secrets`, which every caller names as the field
/// (`runtime.secrets[i]`), so the messages do not repeat it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretUseError {
    #[error("{count} secrets; at most {SECRET_USES_MAX} per revision")]
    TooMany { count: usize },
    #[error("{reference} names neither `env` nor `file`, or both; give exactly one")]
    Delivery { index: usize, reference: String },
    #[error("`{field}` {name:?} is not a valid name: {reason}")]
    Name {
        index: usize,
        field: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("`{field}` {name:?} is delivered twice; each name once")]
    Duplicate {
        index: usize,
        field: &'static str,
        name: String,
    },
    #[error("{source}")]
    Scope {
        index: usize,
        #[source]
        source: crate::refs::RefError,
    },
    #[error("{reference}: version 0 does not exist; versions start at 1")]
    VersionZero { index: usize, reference: String },
}

impl SecretUseError {
    /// The entry the error is about, for a `field` pointer.
    pub fn index(&self) -> Option<usize> {
        match self {
            Self::TooMany { .. } => None,
            Self::Delivery { index, .. }
            | Self::Name { index, .. }
            | Self::Duplicate { index, .. }
            | Self::Scope { index, .. }
            | Self::VersionZero { index, .. } => Some(*index),
        }
    }
}

fn env_name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Some("it is empty"),
        Some(first) if !(first.is_ascii_uppercase() || first == '_') => {
            return Some("a variable starts with A-Z or _");
        }
        Some(_) => {}
    }
    if name.len() > SECRET_NAME_BYTES_MAX {
        return Some("it is longer than 128 bytes");
    }
    if !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Some("a variable holds only A-Z, 0-9 and _");
    }
    // The runtime owns these: an instance must not get a secret in place
    // of its port or the node's own settings.
    if name == "PORT" || name.starts_with("GTC_") || name.starts_with("GREENTIC_") {
        return Some("PORT, GTC_* and GREENTIC_* are set by the runtime");
    }
    None
}

fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > SECRET_NAME_BYTES_MAX {
        return Some("it is longer than 128 bytes");
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` are not file names");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Some("a file name holds only A-Z, a-z, 0-9, `.`, `-` and `_` (no `/`)");
    }
    None
}

/// Checks one entry's delivery names; shared by uses and pins.
fn check_entry(
    index: usize,
    reference: &SecretRef,
    env: Option<&str>,
    file: Option<&str>,
    owner: Option<&EnvId>,
    seen: &mut std::collections::BTreeSet<(bool, String)>,
) -> Result<(), SecretUseError> {
    if let Some(owner) = owner {
        reference
            .check_scope(owner)
            .map_err(|source| SecretUseError::Scope { index, source })?;
    }
    let (field, name, problem, is_env) = match (env, file) {
        (Some(name), None) => ("env", name, env_name_problem(name), true),
        (None, Some(name)) => ("file", name, file_name_problem(name), false),
        _ => {
            return Err(SecretUseError::Delivery {
                index,
                reference: reference.to_string(),
            });
        }
    };
    if let Some(reason) = problem {
        return Err(SecretUseError::Name {
            index,
            field,
            name: name.to_owned(),
            reason,
        });
    }
    if !seen.insert((is_env, name.to_owned())) {
        return Err(SecretUseError::Duplicate {
            index,
            field,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// One entry as the checks see it: a use, or a pin (whose version is
/// always set).
struct Entry<'a> {
    reference: &'a SecretRef,
    version: Option<u32>,
    env: Option<&'a str>,
    file: Option<&'a str>,
}

fn check_entries<'a>(
    entries: impl ExactSizeIterator<Item = Entry<'a>>,
    owner: Option<&EnvId>,
) -> Result<(), SecretUseError> {
    if entries.len() > SECRET_USES_MAX {
        return Err(SecretUseError::TooMany {
            count: entries.len(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, entry) in entries.enumerate() {
        if entry.version == Some(0) {
            return Err(SecretUseError::VersionZero {
                index,
                reference: entry.reference.to_string(),
            });
        }
        check_entry(
            index,
            entry.reference,
            entry.env,
            entry.file,
            owner,
            &mut seen,
        )?;
    }
    Ok(())
}

/// Validates a bundle's `runtime.secrets`: for environment `owner` when
/// staged there, or, with `None`, everything but the references' scope
/// (a bundle on its own belongs to no environment yet).
pub fn check_uses(uses: &[SecretUse], owner: Option<&EnvId>) -> Result<(), SecretUseError> {
    let entries = uses.iter().map(|secret| Entry {
        reference: &secret.reference,
        version: secret.version,
        env: secret.env.as_deref(),
        file: secret.file.as_deref(),
    });
    check_entries(entries, owner)
}

/// Validates a revision's pins (as `apply` receives them from the edge).
pub fn check_pins(pins: &[SecretPin], owner: &EnvId) -> Result<(), SecretUseError> {
    let entries = pins.iter().map(|pin| Entry {
        reference: &pin.reference,
        version: Some(pin.version),
        env: pin.env.as_deref(),
        file: pin.file.as_deref(),
    });
    check_entries(entries, Some(owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(id: &str) -> EnvId {
        id.parse().expect("env id")
    }

    fn use_of(reference: &str, env_name: Option<&str>, file: Option<&str>) -> SecretUse {
        SecretUse {
            reference: reference.parse().expect("ref"),
            env: env_name.map(str::to_owned),
            file: file.map(str::to_owned),
            version: None,
        }
    }

    #[test]
    fn a_use_is_delivered_one_way_with_a_valid_name() {
        let local = env("local");
        let ok = [
            use_of("secret://local/db/password", Some("DB_PASSWORD"), None),
            use_of("secret://local/tls/key", None, Some("tls.key")),
        ];
        assert_eq!(check_uses(&ok, Some(&local)), Ok(()));
        let both = [use_of("secret://local/a", Some("A"), Some("a"))];
        assert!(matches!(
            check_uses(&both, Some(&local)),
            Err(SecretUseError::Delivery { index: 0, .. })
        ));
        let neither = [use_of("secret://local/a", None, None)];
        assert!(matches!(
            check_uses(&neither, Some(&local)),
            Err(SecretUseError::Delivery { index: 0, .. })
        ));
        for bad in ["db_password", "1X", "", "A-B", "PORT", "GTC_SECRETS_DIR"] {
            let uses = [use_of("secret://local/a", Some(bad), None)];
            assert!(
                matches!(
                    check_uses(&uses, Some(&local)),
                    Err(SecretUseError::Name { field: "env", .. })
                ),
                "{bad:?}"
            );
        }
        for bad in ["a/b", "..", ".", "", "a b"] {
            let uses = [use_of("secret://local/a", None, Some(bad))];
            assert!(
                matches!(
                    check_uses(&uses, Some(&local)),
                    Err(SecretUseError::Name { field: "file", .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_ref_to_another_environment_or_a_name_twice_is_refused() {
        let local = env("local");
        let other = [use_of("secret://prod/db", Some("DB"), None)];
        let error = check_uses(&other, Some(&local)).expect_err("cross-env");
        assert!(
            matches!(
                &error,
                SecretUseError::Scope {
                    index: 0,
                    source: crate::refs::RefError::CrossEnvRef { .. }
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            check_uses(&other, None),
            Ok(()),
            "a bundle alone has no scope yet"
        );
        let twice = [
            use_of("secret://local/a", Some("X"), None),
            use_of("secret://local/b", Some("X"), None),
        ];
        assert!(matches!(
            check_uses(&twice, Some(&local)),
            Err(SecretUseError::Duplicate { index: 1, .. })
        ));
        // The same name as a variable and as a file is two deliveries.
        let both_ways = [
            use_of("secret://local/a", Some("X"), None),
            use_of("secret://local/a", None, Some("X")),
        ];
        assert_eq!(check_uses(&both_ways, Some(&local)), Ok(()));
        let mut zero = use_of("secret://local/a", Some("X"), None);
        zero.version = Some(0);
        assert!(matches!(
            check_uses(&[zero], Some(&local)),
            Err(SecretUseError::VersionZero { index: 0, .. })
        ));
        let many: Vec<_> = (0..=SECRET_USES_MAX)
            .map(|i| use_of("secret://local/a", Some(&format!("V{i}")), None))
            .collect();
        assert!(matches!(
            check_uses(&many, Some(&local)),
            Err(SecretUseError::TooMany { .. })
        ));
    }

    #[test]
    fn pins_round_trip_through_json_with_the_ref_field() {
        let pin = SecretPin {
            reference: "secret://local/db/password".parse().expect("ref"),
            version: 3,
            env: Some("DB_PASSWORD".to_owned()),
            file: None,
        };
        let text = serde_json::to_string(&pin).expect("json");
        assert_eq!(
            text,
            r#"{"ref":"secret://local/db/password","version":3,"env":"DB_PASSWORD"}"#
        );
        let back: SecretPin = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, pin);
        assert_eq!(back.delivery(), Some(Delivery::Env("DB_PASSWORD")));
        assert!(
            serde_json::from_str::<SecretPin>(
                r#"{"ref":"secret://local/a","version":1,"vale":"x"}"#
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn check_uses_never_panics_and_accepted_names_are_safe(
            name in "[ -~]{0,40}",
            as_file in any::<bool>(),
        ) {
            let local = env("local");
            let uses = [if as_file {
                use_of("secret://local/a", None, Some(&name))
            } else {
                use_of("secret://local/a", Some(&name), None)
            }];
            if check_uses(&uses, Some(&local)).is_ok() {
                prop_assert!(!name.contains('/') && !name.contains('=') && !name.is_empty());
                prop_assert!(name != "." && name != "..");
            }
        }
    }
}
