//! Recognises values that only stand in for a secret: templates, references to a secret
//! store, masks and sample values from documentation. Such values are safe to ship, so
//! reporting them would only train people to ignore the scanner.

use super::entropy::shannon_entropy;

/// Words that mark documentation samples of a token (`…EXAMPLE`, `xoxb-your-token`).
/// They practically never occur in a real, randomly generated credential.
const SAMPLE_MARKERS: &[&str] = &["example", "your", "xxxx", "****", "placeholder", "redacted"];

/// Below this many bits per byte a token is a run of one or two characters
/// (`ghp_000…`, `AKIAAAAA…`) rather than a generated credential, which scores well above 3.
const TOKEN_ENTROPY_MIN: f64 = 2.0;

/// Words that mark a value of a `password = …` style assignment as a stand-in.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "replaceme",
    "replace_me",
    "replace-me",
    "example",
    "placeholder",
    "your",
    "dummy",
    "redacted",
    "xxxx",
    "****",
    "....",
    "____",
    "----",
    "{{",
    "}}",
    "${",
    "$(",
    "{%",
    "<%",
    "%(",
];

/// Prefixes of references to a secret kept elsewhere (a secret store, an environment
/// variable, a file): the value names the secret, it is not the secret.
const REFERENCE_PREFIXES: &[&str] = &[
    "secret://",
    "secrets://",
    "env:",
    "env://",
    "vault:",
    "file:",
    "ref+",
    "op://",
    "arn:",
    "//",
];

/// Whole values that mean "no secret here".
const EMPTY_WORDS: &[&str] = &[
    "null",
    "nil",
    "none",
    "true",
    "false",
    "undefined",
    "empty",
    "n/a",
];

/// True when a token matched by a specific rule (AWS, GitHub, Slack, …) is a documentation
/// sample or a filler run rather than a generated credential.
pub(super) fn is_sample_token(token: &[u8]) -> bool {
    let lower = token.to_ascii_lowercase();
    contains_any(&lower, SAMPLE_MARKERS) || shannon_entropy(token) < TOKEN_ENTROPY_MIN
}

/// True when the value of a secret-like assignment is a placeholder, a template, a
/// reference to a secret stored elsewhere or a mask.
pub(super) fn is_placeholder_value(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    is_single_repeated_byte(&lower)
        || EMPTY_WORDS.iter().any(|word| lower == word.as_bytes())
        || REFERENCE_PREFIXES
            .iter()
            .any(|prefix| lower.starts_with(prefix.as_bytes()))
        || contains_any(&lower, PLACEHOLDER_MARKERS)
        || is_angle_or_percent_template(&lower)
        || is_shell_variable(&lower)
}

fn contains_any(haystack: &[u8], needles: &[&str]) -> bool {
    needles.iter().any(|needle| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

fn is_single_repeated_byte(value: &[u8]) -> bool {
    value
        .first()
        .is_some_and(|first| value.iter().all(|b| b == first))
}

/// `<your-token>`, `%DB_PASSWORD%`.
fn is_angle_or_percent_template(value: &[u8]) -> bool {
    (value.starts_with(b"<") && value.ends_with(b">"))
        || (value.len() > 2 && value.starts_with(b"%") && value.ends_with(b"%"))
}

/// `$DB_PASSWORD`: a shell or compose variable, expanded at run time.
fn is_shell_variable(value: &[u8]) -> bool {
    value.strip_prefix(b"$").is_some_and(|name| {
        !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised() {
        for value in [
            "${DB_PASSWORD}",
            "${{ secrets.TOKEN }}",
            "{{ .Values.password }}",
            "<your-token>",
            "<TOKEN>",
            "changeme",
            "ChangeMe123456",
            "an-example-value-123",
            "xxxxxxxxxxxxxxxx",
            "sk-xxxxxxxxxxxxxxxxxxxx",
            "********",
            "null",
            "NULL",
            "true",
            "false",
            "undefined",
            "aaaaaaaaaaaaaaaa",
            "7777777777777",
            "secret://prod/db/password",
            "env:DB_PASSWORD",
            "vault:secret/data/app#token",
            "$DB_PASSWORD",
            "%DB_PASSWORD%",
            "YOUR_API_KEY_HERE",
            "insert-placeholder-here",
            "//vault.internal/v1/token",
        ] {
            assert!(
                is_placeholder_value(value.as_bytes()),
                "{value} should be a placeholder"
            );
        }
    }

    #[test]
    fn real_looking_values_are_not_placeholders() {
        for value in [
            "Zq8vN2rLx7Tb4KpW9mYc",
            "s3cr3t-V4lu3-9f8a7b",
            "hunter2hunter2",
            "$2Fq9!xLp0",
            "ab",
        ] {
            assert!(
                !is_placeholder_value(value.as_bytes()),
                "{value} should not be a placeholder"
            );
        }
    }

    #[test]
    fn sample_tokens_are_recognised() {
        assert!(is_sample_token(b"AKIAIOSFODNN7EXAMPLE"));
        assert!(is_sample_token(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"));
        assert!(is_sample_token(b"xoxb-your-token-here"));
        assert!(is_sample_token(b"ghp_000000000000000000000000000000000000"));
        assert!(is_sample_token(b"ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        assert!(!is_sample_token(b"AKIAZ7Q4FAKE0TEST0K9"));
        assert!(!is_sample_token(
            b"ghp_FAKEfakeFAKEfake0123456789abcdefABCD"
        ));
    }
}
