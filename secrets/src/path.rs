//! Secret paths and `secret://<env>/<path>` references: pure validation,
//! no I/O. Every value the store reads or writes is named by a
//! [`SecretPath`] that passed [`SecretPath::parse`]; answers may give the
//! bare path or the full reference, and [`parse_for_env`] refuses a
//! reference to another environment (`CrossEnvRef`).

use deploy::ids::EnvId;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Longest path in bytes. Paths appear in file contents, audit lines and
/// output; 256 is plenty for `service/component/key` names and keeps a
/// reference under `deploy::refs::REF_LEN_MAX`.
pub const SECRET_PATH_BYTES_MAX: usize = 256;
/// Most `/`-separated segments in a path.
pub const SECRET_PATH_SEGMENTS_MAX: usize = 16;
/// The scheme of a secret reference.
pub const SECRET_SCHEME: &str = "secret://";

/// Why a secret path was refused. The path is not secret, so errors name it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("secret path is empty; write segments such as db/password")]
    Empty,
    #[error("secret path is {length} bytes long; the limit is {SECRET_PATH_BYTES_MAX}")]
    TooLong { length: usize },
    #[error("secret path {path:?} has {count} segments; the limit is {SECRET_PATH_SEGMENTS_MAX}")]
    TooManySegments { path: String, count: usize },
    #[error(
        "secret path {path:?} has an empty segment (a leading, trailing or doubled '/'); write segments such as db/password"
    )]
    EmptySegment { path: String },
    #[error("secret path {path:?} has the segment {segment:?}; '.' and '..' are not allowed")]
    DotSegment { path: String, segment: String },
    #[error(
        "secret path {path:?} contains {character:?}; only ASCII letters, digits, '.', '-' and '_' are allowed between '/'"
    )]
    InvalidChar { path: String, character: char },
}

/// Why a `secret://` reference (or a bare path given for one environment)
/// was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefError {
    #[error("reference {text:?} must start with secret://")]
    MissingScheme { text: String },
    #[error("reference {text:?} has an invalid environment segment: {reason}")]
    InvalidEnv { text: String, reason: String },
    #[error("reference {text:?} has no path after the environment; write secret://<env>/<path>")]
    MissingPath { text: String },
    #[error(
        "reference {text:?} points at environment {found:?} but the verb is about {expected:?}"
    )]
    CrossEnvRef {
        text: String,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    Path(#[from] PathError),
}

/// A validated secret path inside one environment: 1 to
/// [`SECRET_PATH_SEGMENTS_MAX`] non-empty segments of `[A-Za-z0-9._-]`,
/// none `.` or `..`, at most [`SECRET_PATH_BYTES_MAX`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretPath(String);

fn allowed(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '_')
}

impl SecretPath {
    /// Validates `text` as a path.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if text.len() > SECRET_PATH_BYTES_MAX {
            return Err(PathError::TooLong { length: text.len() });
        }
        let count = text.split('/').count();
        if count > SECRET_PATH_SEGMENTS_MAX {
            return Err(PathError::TooManySegments {
                path: text.to_owned(),
                count,
            });
        }
        for segment in text.split('/') {
            if segment.is_empty() {
                return Err(PathError::EmptySegment {
                    path: text.to_owned(),
                });
            }
            if segment == "." || segment == ".." {
                return Err(PathError::DotSegment {
                    path: text.to_owned(),
                    segment: segment.to_owned(),
                });
            }
            if let Some(character) = segment.chars().find(|c| !allowed(*c)) {
                return Err(PathError::InvalidChar {
                    path: text.to_owned(),
                    character,
                });
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lowercase hex SHA-256 of the path: the name of its folder on disk.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// `secret://<env>/<path>`.
    pub fn reference(&self, env: &EnvId) -> String {
        format!("{SECRET_SCHEME}{env}/{}", self.0)
    }
}

impl std::fmt::Display for SecretPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a full `secret://<env>/<path>` reference into its environment and
/// path. Never panics on any input (the fuzz target holds it to that).
pub fn parse_ref(text: &str) -> Result<(EnvId, SecretPath), RefError> {
    let Some(rest) = text.strip_prefix(SECRET_SCHEME) else {
        return Err(RefError::MissingScheme {
            text: text.to_owned(),
        });
    };
    let (env, path) = rest.split_once('/').unwrap_or((rest, ""));
    let env = env.parse::<EnvId>().map_err(|error| RefError::InvalidEnv {
        text: text.to_owned(),
        reason: error.to_string(),
    })?;
    if path.is_empty() {
        return Err(RefError::MissingPath {
            text: text.to_owned(),
        });
    }
    Ok((env, SecretPath::parse(path)?))
}

/// The path an answer's `path` field names for environment `owner`: either
/// a bare path (`db/password`) or a reference, which must be scoped to
/// `owner` ([`RefError::CrossEnvRef`] otherwise).
pub fn parse_for_env(text: &str, owner: &EnvId) -> Result<SecretPath, RefError> {
    if !text.starts_with(SECRET_SCHEME) {
        return Ok(SecretPath::parse(text)?);
    }
    let (env, path) = parse_ref(text)?;
    if &env != owner {
        return Err(RefError::CrossEnvRef {
            text: text.to_owned(),
            found: env.to_string(),
            expected: owner.to_string(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn local() -> EnvId {
        EnvId::local()
    }

    #[test]
    fn good_paths_and_refs_parse() {
        // Proves: the documented grammar accepts ordinary names, and a
        // ref and its bare path name the same secret.
        let path = SecretPath::parse("db/primary.password_v-2").expect("valid");
        assert_eq!(
            path.reference(&local()),
            "secret://local/db/primary.password_v-2"
        );
        assert_eq!(
            parse_for_env("secret://local/db/primary.password_v-2", &local()),
            Ok(path.clone())
        );
        assert_eq!(parse_for_env("db/primary.password_v-2", &local()), Ok(path));
    }

    #[test]
    fn each_bad_input_gets_its_own_error() {
        // Proves: every refusal names its reason.
        assert_eq!(SecretPath::parse(""), Err(PathError::Empty));
        assert!(matches!(
            SecretPath::parse("a/../b"),
            Err(PathError::DotSegment { .. })
        ));
        assert!(matches!(
            SecretPath::parse(".."),
            Err(PathError::DotSegment { .. })
        ));
        assert!(matches!(
            SecretPath::parse("a//b"),
            Err(PathError::EmptySegment { .. })
        ));
        assert!(matches!(
            SecretPath::parse("/a"),
            Err(PathError::EmptySegment { .. })
        ));
        assert!(matches!(
            SecretPath::parse("a/"),
            Err(PathError::EmptySegment { .. })
        ));
        assert!(matches!(
            SecretPath::parse("a b"),
            Err(PathError::InvalidChar { character: ' ', .. })
        ));
        assert!(matches!(
            SecretPath::parse("a\\b"),
            Err(PathError::InvalidChar { .. })
        ));
        assert!(matches!(
            SecretPath::parse(&"a".repeat(SECRET_PATH_BYTES_MAX + 1)),
            Err(PathError::TooLong { .. })
        ));
        assert!(matches!(
            SecretPath::parse(&vec!["a"; SECRET_PATH_SEGMENTS_MAX + 1].join("/")),
            Err(PathError::TooManySegments { .. })
        ));
        assert!(SecretPath::parse(&"a".repeat(SECRET_PATH_BYTES_MAX)).is_ok());
        assert!(matches!(
            parse_for_env("secret://prod/db", &local()),
            Err(RefError::CrossEnvRef { .. })
        ));
        assert!(matches!(
            parse_ref("http://local/db"),
            Err(RefError::MissingScheme { .. })
        ));
        assert!(matches!(
            parse_ref("secret:///db"),
            Err(RefError::InvalidEnv { .. })
        ));
        assert!(matches!(
            parse_ref("secret://local"),
            Err(RefError::MissingPath { .. })
        ));
        assert!(matches!(
            parse_ref("secret://local/"),
            Err(RefError::MissingPath { .. })
        ));
        assert!(matches!(
            parse_ref("secret://local/a/../b"),
            Err(RefError::Path(PathError::DotSegment { .. }))
        ));
    }

    #[test]
    fn digests_differ_for_paths_that_nest() {
        // Proves: `a` and `a/b` get different folders (no file/folder clash).
        let a = SecretPath::parse("a").expect("valid");
        let ab = SecretPath::parse("a/b").expect("valid");
        assert_ne!(a.digest(), ab.digest());
        assert_eq!(a.digest().len(), 64);
    }

    proptest! {
        /// Whatever the input, an accepted path has only allowed
        /// characters, no empty or dot segment, and fits the limits; and a
        /// path built from allowed segments is accepted.
        #[test]
        fn accepted_paths_are_safe(text in "[a-z./_ -]{0,40}") {
            if let Ok(path) = SecretPath::parse(&text) {
                prop_assert!(path.as_str().len() <= SECRET_PATH_BYTES_MAX);
                for segment in path.as_str().split('/') {
                    prop_assert!(!segment.is_empty());
                    prop_assert!(segment != "." && segment != "..");
                    prop_assert!(segment.chars().all(allowed));
                }
            }
        }

        #[test]
        fn well_formed_paths_are_accepted(
            segments in proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,10}", 1..SECRET_PATH_SEGMENTS_MAX)
        ) {
            let text = segments.join("/");
            let path = SecretPath::parse(&text);
            prop_assert!(path.is_ok(), "{text}: {path:?}");
            let reference = format!("secret://local/{text}");
            prop_assert_eq!(parse_for_env(&reference, &local()).map(|p| p.as_str().to_owned()), Ok(text));
        }

        #[test]
        fn parse_ref_never_panics(text in "secret://\\PC{0,60}") {
            let _ = parse_ref(&text);
        }
    }
}
