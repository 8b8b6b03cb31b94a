//! Documented false positives: findings an operator has looked at and decided to accept,
//! each with a written reason.

use super::report::Finding;
use super::rules::RULES;
use serde::Deserialize;

/// The only allowlist schema this module reads.
const SCHEMA: &str = "greentic.scan-allowlist.v1";

/// Why an allowlist document was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// The text is not JSON, or the document lacks `schema`/`allow` or has other fields.
    #[error("allowlist document is malformed: {0}")]
    Document(#[source] serde_json::Error),
    /// The document declares a schema other than `greentic.scan-allowlist.v1`.
    #[error("allowlist schema is {found:?}, expected {SCHEMA:?}")]
    Schema {
        /// The schema the document declared.
        found: String,
    },
    /// An entry has the wrong shape: a missing `reason`, a wrong type, an unknown field.
    #[error("allowlist entry {index}: {source}")]
    Entry {
        /// Position of the entry in `allow`, from 0.
        index: usize,
        /// What serde found wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// An entry's `reason` is empty or blank.
    #[error("allowlist entry {index}: `reason` must say why the finding is acceptable")]
    EmptyReason {
        /// Position of the entry in `allow`, from 0.
        index: usize,
    },
    /// An entry gives neither `fingerprint` nor both `rule` and `path`, so it would allow
    /// too much (a whole rule, or every secret in a file tree).
    #[error("allowlist entry {index}: give `fingerprint`, or both `rule` and `path`")]
    TooBroad {
        /// Position of the entry in `allow`, from 0.
        index: usize,
    },
    /// An entry names a rule that does not exist.
    #[error("allowlist entry {index}: unknown rule {rule:?}")]
    UnknownRule {
        /// Position of the entry in `allow`, from 0.
        index: usize,
        /// The rule id given.
        rule: String,
    },
    /// An entry's fingerprint is not `sha256:` followed by 64 hex digits.
    #[error(
        "allowlist entry {index}: fingerprint {fingerprint:?} is not `sha256:` and 64 hex digits"
    )]
    BadFingerprint {
        /// Position of the entry in `allow`, from 0.
        index: usize,
        /// The fingerprint given.
        fingerprint: String,
    },
    /// An entry's `path` is empty, which would match nothing.
    #[error("allowlist entry {index}: `path` must not be empty")]
    EmptyPath {
        /// Position of the entry in `allow`, from 0.
        index: usize,
    },
}

/// Findings that are accepted, as parsed from an allowlist document.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

/// The document. Entries stay untyped here so that an error in one can name its index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    schema: String,
    allow: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    fingerprint: Option<String>,
    rule: Option<String>,
    path: Option<String>,
    /// For whoever reads the file; the scanner only requires that it is not blank.
    reason: String,
}

impl Allowlist {
    /// An allowlist that allows nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses the allowlist JSON document:
    ///
    /// ```json
    /// {"schema": "greentic.scan-allowlist.v1",
    ///  "allow": [{"fingerprint": "sha256:<hex>", "rule": "jwt", "path": "docs/example.md",
    ///             "reason": "sample token from the public docs"}]}
    /// ```
    ///
    /// Each entry needs a non-empty `reason` and `fingerprint`, or both `rule` and `path`;
    /// `rule` must be one of [`RULES`] and unknown fields are refused. Errors
    /// name the entry index and what is wrong.
    pub fn from_json(text: &str) -> Result<Self, AllowlistError> {
        let document: Document = serde_json::from_str(text).map_err(AllowlistError::Document)?;
        if document.schema != SCHEMA {
            return Err(AllowlistError::Schema {
                found: document.schema,
            });
        }
        let entries = document
            .allow
            .into_iter()
            .enumerate()
            .map(|(index, value)| parse_entry(index, value))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// True when some entry allows `finding`.
    pub(super) fn allows(&self, finding: &Finding) -> bool {
        self.entries.iter().any(|entry| entry.matches(finding))
    }
}

fn parse_entry(index: usize, value: serde_json::Value) -> Result<Entry, AllowlistError> {
    let mut entry: Entry =
        serde_json::from_value(value).map_err(|source| AllowlistError::Entry { index, source })?;
    if entry.reason.trim().is_empty() {
        return Err(AllowlistError::EmptyReason { index });
    }
    if entry.fingerprint.is_none() && (entry.rule.is_none() || entry.path.is_none()) {
        return Err(AllowlistError::TooBroad { index });
    }
    if let Some(rule) = &entry.rule
        && !RULES.contains(&rule.as_str())
    {
        return Err(AllowlistError::UnknownRule {
            index,
            rule: rule.clone(),
        });
    }
    if let Some(fingerprint) = &mut entry.fingerprint {
        if !is_fingerprint(fingerprint) {
            return Err(AllowlistError::BadFingerprint {
                index,
                fingerprint: fingerprint.clone(),
            });
        }
        // Findings carry lowercase hex; accept either case from people.
        fingerprint.make_ascii_lowercase();
    }
    if entry.path.as_deref() == Some("") {
        return Err(AllowlistError::EmptyPath { index });
    }
    Ok(entry)
}

fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Entry {
    /// Every field the entry gives must match; a `path` ending in `/` matches as a prefix.
    fn matches(&self, finding: &Finding) -> bool {
        let fingerprint_ok = self
            .fingerprint
            .as_deref()
            .is_none_or(|fp| fp == finding.fingerprint);
        let rule_ok = self.rule.as_deref().is_none_or(|rule| rule == finding.rule);
        let path_ok = self.path.as_deref().is_none_or(|path| {
            path == finding.path || (path.ends_with('/') && finding.path.starts_with(path))
        });
        fingerprint_ok && rule_ok && path_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn doc(entries: &str) -> String {
        format!(r#"{{"schema": "greentic.scan-allowlist.v1", "allow": [{entries}]}}"#)
    }

    fn finding(path: &str, rule: &'static str) -> Finding {
        // The fingerprint of "abc" is FP.
        Finding::new(path, rule, 0, b"abc")
    }

    fn error(entries: &str) -> AllowlistError {
        match Allowlist::from_json(&doc(entries)) {
            Ok(list) => panic!("expected an error, parsed {list:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn valid_document_parses() {
        let text = doc(&format!(
            r#"{{"fingerprint": "{FP}", "rule": "jwt", "path": "docs/example.md", "reason": "sample token"}},
               {{"rule": "private-key-pem", "path": "tests/fixtures/", "reason": "test keys"}},
               {{"fingerprint": "{}", "reason": "upper-case hex is fine"}}"#,
            FP.to_uppercase().replace("SHA256", "sha256")
        ));
        let list = Allowlist::from_json(&text).map_err(|e| e.to_string());
        assert_eq!(list.map(|l| l.entries.len()), Ok(3));
        assert!(Allowlist::from_json(&doc("")).is_ok());
    }

    #[test]
    fn document_level_errors() {
        assert!(matches!(
            Allowlist::from_json("not json"),
            Err(AllowlistError::Document(_))
        ));
        assert!(matches!(
            Allowlist::from_json(r#"{"schema": "greentic.scan-allowlist.v1"}"#),
            Err(AllowlistError::Document(_))
        ));
        assert!(matches!(
            Allowlist::from_json(
                r#"{"schema": "greentic.scan-allowlist.v1", "allow": [], "x": 1}"#
            ),
            Err(AllowlistError::Document(_))
        ));
        let err = Allowlist::from_json(r#"{"schema": "other.v2", "allow": []}"#);
        assert!(matches!(err, Err(AllowlistError::Schema { ref found }) if found == "other.v2"));
    }

    #[test]
    fn entry_errors_name_the_index() {
        let good = format!(r#"{{"fingerprint": "{FP}", "reason": "ok"}}"#);
        type IsExpected = fn(&AllowlistError) -> bool;
        let cases: Vec<(String, IsExpected)> = vec![
            (
                format!(r#"{good}, {{"fingerprint": "{FP}", "reason": "x", "colour": "red"}}"#),
                |e| matches!(e, AllowlistError::Entry { index: 1, .. }),
            ),
            (format!(r#"{good}, {{"fingerprint": "{FP}"}}"#), |e| {
                matches!(e, AllowlistError::Entry { index: 1, .. })
            }),
            (
                format!(r#"{good}, {good}, {{"fingerprint": "{FP}", "reason": "  "}}"#),
                |e| matches!(e, AllowlistError::EmptyReason { index: 2 }),
            ),
            (r#"{"rule": "jwt", "reason": "all jwts"}"#.to_owned(), |e| {
                matches!(e, AllowlistError::TooBroad { index: 0 })
            }),
            (
                r#"{"path": "docs/", "reason": "all docs"}"#.to_owned(),
                |e| matches!(e, AllowlistError::TooBroad { index: 0 }),
            ),
            (
                r#"{"rule": "no-such-rule", "path": "a", "reason": "r"}"#.to_owned(),
                |e| matches!(e, AllowlistError::UnknownRule { index: 0, rule } if rule == "no-such-rule"),
            ),
            (
                r#"{"fingerprint": "sha256:abc", "reason": "r"}"#.to_owned(),
                |e| matches!(e, AllowlistError::BadFingerprint { index: 0, .. }),
            ),
            (
                format!(
                    r#"{{"fingerprint": "{}", "reason": "r"}}"#,
                    FP.replace("sha256:", "md5:")
                ),
                |e| matches!(e, AllowlistError::BadFingerprint { index: 0, .. }),
            ),
            (
                r#"{"rule": "jwt", "path": "", "reason": "r"}"#.to_owned(),
                |e| matches!(e, AllowlistError::EmptyPath { index: 0 }),
            ),
        ];
        for (entries, expected) in cases {
            let err = error(&entries);
            assert!(expected(&err), "{entries} gave {err:?}");
            assert!(err.to_string().starts_with("allowlist entry "), "{err}");
        }
        let message =
            error(r#"{"fingerprint": "sha256:abc", "reason": "r", "extra": 1}"#).to_string();
        assert!(
            message.contains("entry 0") && message.contains("extra"),
            "{message}"
        );
    }

    #[test]
    fn entries_match_when_every_given_field_matches() {
        let list = Allowlist::from_json(&doc(&format!(
            r#"{{"fingerprint": "{FP}", "rule": "jwt", "path": "docs/example.md", "reason": "r"}},
               {{"rule": "private-key-pem", "path": "tests/fixtures/", "reason": "r"}},
               {{"rule": "github-token", "path": "exact.txt", "reason": "r"}}"#
        )));
        let Ok(list) = list else {
            panic!("valid allowlist refused: {list:?}");
        };
        assert!(list.allows(&finding("docs/example.md", "jwt")));
        assert!(!list.allows(&finding("docs/other.md", "jwt")));
        assert!(!list.allows(&finding("docs/example.md", "slack-token")));
        let mut other_secret = finding("docs/example.md", "jwt");
        other_secret.fingerprint = FP.replace("ba78", "0000");
        assert!(!list.allows(&other_secret));

        assert!(list.allows(&finding("tests/fixtures/key.pem", "private-key-pem")));
        assert!(list.allows(&finding("tests/fixtures/a/b.pem", "private-key-pem")));
        assert!(!list.allows(&finding("tests/fixtures-other/key.pem", "private-key-pem")));
        assert!(!list.allows(&finding("tests/fixtures/key.pem", "jwt")));

        assert!(list.allows(&finding("exact.txt", "github-token")));
        assert!(!list.allows(&finding("exact.txt.bak", "github-token")));
        assert!(!list.allows(&finding("exact.txt/", "github-token")));

        assert!(!Allowlist::empty().allows(&finding("docs/example.md", "jwt")));
    }

    #[test]
    fn fingerprint_only_entry_matches_any_rule_and_path() {
        let list = Allowlist::from_json(&doc(&format!(
            r#"{{"fingerprint": "{FP}", "reason": "r"}}"#
        )));
        let Ok(list) = list else {
            panic!("valid allowlist refused: {list:?}");
        };
        assert!(list.allows(&finding("a", "jwt")));
        assert!(list.allows(&finding("b/c", "slack-token")));
    }
}
