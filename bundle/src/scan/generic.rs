//! The `generic-secret-assignment` rule: a secret-sounding key (`DB_PASSWORD`, `"apiKey"`,
//! `client_secret`) assigned a literal value that looks generated rather than written.
//!
//! The regex only finds candidates; the decisions live here because they need more than a
//! regex can say: how the key splits into words, whether the value is code, a placeholder or
//! a word, and whether a more specific rule already owns the text.

use super::entropy::shannon_entropy;
use super::placeholder::is_placeholder_value;
use regex::bytes::{Captures, Regex};
use std::ops::Range;

/// Shortest value reported. Below 12 bytes, entropy cannot tell a random string from a
/// word (a 12-byte string scores at most log2(12) ≈ 3.58 bits), and short literals are
/// mostly test fixtures, flags and enum names rather than credentials.
pub(super) const GENERIC_VALUE_LEN_MIN: usize = 12;

/// Longest value considered. Real passwords and API keys are far shorter; the cap keeps a
/// hostile line from producing huge matches.
pub(super) const GENERIC_VALUE_LEN_MAX: usize = 256;

/// Minimum Shannon entropy (bits per byte) of a reported value. Words, identifiers and
/// readable passphrases mostly score 2.8–3.4 (`supersecretpassword` ≈ 3.22,
/// `correcthorsebatterystaple` ≈ 3.36), while generated base62/base64 tokens of 16+ bytes
/// score about 3.7–4.5, so 3.5 separates the two. The price: a 12–15 byte value passes only
/// if almost all of its bytes differ, and long made-up words (`development_password` ≈ 3.68)
/// still pass, which is acceptable for a password in a shipped config.
pub(super) const GENERIC_ENTROPY_MIN: f64 = 3.5;

/// Key words that name a secret. `api`+`key` and `access`+`key` also count when split
/// (`api_key`, `apiKey`); `client_secret` is covered by `secret`.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
];

/// Key words that, after the secret word, turn the key into metadata about a secret
/// (`secret_name`, `token_url`, `password_hint`, `max_token_length`): the value is then a
/// name, a location or a number, not the secret.
const METADATA_WORDS: &[&str] = &[
    "name",
    "names",
    "ref",
    "refs",
    "reference",
    "file",
    "filename",
    "path",
    "dir",
    "url",
    "uri",
    "endpoint",
    "host",
    "type",
    "kind",
    "id",
    "ids",
    "arn",
    "env",
    "var",
    "field",
    "fields",
    "header",
    "prefix",
    "suffix",
    "length",
    "len",
    "size",
    "min",
    "max",
    "limit",
    "count",
    "ttl",
    "expiry",
    "expires",
    "expiration",
    "lifetime",
    "timeout",
    "hash",
    "hashed",
    "digest",
    "sha",
    "checksum",
    "pattern",
    "regex",
    "hint",
    "label",
    "placeholder",
    "prompt",
    "policy",
    "provider",
    "store",
    "manager",
    "version",
    "source",
    "format",
    "mode",
    "enabled",
    "required",
    "rotation",
    "description",
    "desc",
    "title",
    "help",
    "error",
    "message",
    "usage",
];

/// Bytes that, right after an unquoted value, show the value is an expression in code
/// (`env::var(…)`, `os.environ[…]`, `Option<…>`, `Foo {…}`), not a literal.
const CODE_FOLLOWERS: &[u8] = b"([<{";

/// The candidate regex: capture 1 is the key, 2/3/4 the double-quoted, single-quoted or bare
/// value. A `: &str` / `: String` / `: string` annotation may sit between key and `=`
/// (Rust and TypeScript constants). A bare value stops at `&` so a query string (`?password=…&user=…`) yields only the
/// password.
pub(super) fn pattern() -> String {
    let len = format!("{{{GENERIC_VALUE_LEN_MIN},{GENERIC_VALUE_LEN_MAX}}}");
    format!(
        r#"(?i-u)([a-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)[a-z0-9_.-]*)["']?\]?(?:[ \t]*:[ \t]*&?(?:'static[ \t]+)?str(?:ing)?)?[ \t]*(?::=|=>|=|:)[ \t]*(?:"([\x20\x21\x23-\x7e]{len})"|'([\x20-\x26\x28-\x7e]{len})'|([a-z0-9!#$%*+./:=?@^_|~-]{len}))"#
    )
}

/// Returns the byte range of the secret value in `bytes` for a candidate `caps` of
/// [`pattern`], or `None` when the candidate is not a secret. `owners` are the regexes of the
/// specific rules: when one of them matches the candidate, that rule reports it instead.
pub(super) fn secret_value(
    bytes: &[u8],
    caps: &Captures<'_>,
    owners: &[Regex],
) -> Option<Range<usize>> {
    let whole = caps.get(0)?;
    if !key_names_a_secret(caps.get(1)?.as_bytes()) {
        return None;
    }
    let (value, quoted) = match (caps.get(2), caps.get(3), caps.get(4)) {
        (Some(v), _, _) | (_, Some(v), _) => (v, true),
        (_, _, Some(v)) => (v, false),
        _ => return None,
    };
    let text = value.as_bytes();
    if !quoted && is_code_expression(text, bytes.get(value.end()).copied()) {
        return None;
    }
    if !looks_generated(text) {
        return None;
    }
    if owners.iter().any(|owner| owner.is_match(whole.as_bytes())) {
        return None;
    }
    Some(value.range())
}

/// True when the value reads like a generated secret: long enough, random enough, no
/// whitespace (sentences in i18n files and help texts), and not a stand-in.
fn looks_generated(value: &[u8]) -> bool {
    value.len() >= GENERIC_VALUE_LEN_MIN
        && !value.iter().any(u8::is_ascii_whitespace)
        // `secret::Path`, `token = ==`: a leading ':' or '=' means the separator was misread.
        && !value.starts_with(b":")
        && !value.starts_with(b"=")
        && !is_plain_url(value)
        && !is_placeholder_value(value)
        && shannon_entropy(value) >= GENERIC_ENTROPY_MIN
}

/// `https://auth.internal/oauth/token`: an address, unless it carries credentials (`@`).
fn is_plain_url(value: &[u8]) -> bool {
    let Some(pos) = value.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let scheme = &value[..pos];
    !scheme.is_empty() && scheme.iter().all(u8::is_ascii_alphanumeric) && !value.contains(&b'@')
}

/// True when a bare value is code: followed by a call, index or generic bracket, or a dotted
/// or `::` path of identifiers (`process.env.API_TOKEN`, `self.config.password`).
fn is_code_expression(value: &[u8], next: Option<u8>) -> bool {
    if next.is_some_and(|b| CODE_FOLLOWERS.contains(&b)) {
        return true;
    }
    let trimmed = value
        .strip_suffix(b"!")
        .or_else(|| value.strip_suffix(b"?"))
        .unwrap_or(value);
    let text = String::from_utf8_lossy(trimmed)
        .replace("::", ".")
        .replace("?.", ".");
    let mut segments = text.split('.');
    let count = segments.clone().count();
    count >= 2 && segments.all(is_identifier)
}

fn is_identifier(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// True when the key, split into words, contains a secret word and no metadata word follows
/// the last one. `DB_PASSWORD`, `apiKey`, `client_secret` pass; `tokenizer`, `secrets`,
/// `secret_name`, `max_token_length` do not.
fn key_names_a_secret(key: &[u8]) -> bool {
    let words = key_words(key);
    let mut after_last_secret = None;
    for (i, word) in words.iter().enumerate() {
        let joined_with_next = words.get(i + 1).map(|next| format!("{word}{next}"));
        if SECRET_WORDS.contains(&word.as_str()) {
            after_last_secret = Some(i + 1);
        } else if joined_with_next
            .as_deref()
            .is_some_and(|pair| SECRET_WORDS.contains(&pair))
        {
            after_last_secret = Some(i + 2);
        }
    }
    after_last_secret.is_some_and(|start| {
        words
            .iter()
            .skip(start)
            .all(|word| !METADATA_WORDS.contains(&word.as_str()))
    })
}

/// Splits a key into lowercase words at separators, camelCase humps and letter/digit
/// changes: `dbPassword2` → `db`, `password`, `2`; `APIKey` → `api`, `key`.
fn key_words(key: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &byte) in key.iter().enumerate() {
        if !byte.is_ascii_alphanumeric() {
            flush(&mut words, &mut current);
            continue;
        }
        let prev = i.checked_sub(1).and_then(|p| key.get(p)).copied();
        let next = key.get(i + 1).copied();
        if starts_new_word(prev, byte, next) {
            flush(&mut words, &mut current);
        }
        current.push(char::from(byte.to_ascii_lowercase()));
    }
    flush(&mut words, &mut current);
    words
}

fn starts_new_word(prev: Option<u8>, byte: u8, next: Option<u8>) -> bool {
    let Some(prev) = prev.filter(u8::is_ascii_alphanumeric) else {
        return false;
    };
    let hump = byte.is_ascii_uppercase()
        && (prev.is_ascii_lowercase()
            || (prev.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase())));
    let digit_change = prev.is_ascii_digit() != byte.is_ascii_digit();
    hump || digit_change
}

fn flush(words: &mut Vec<String>, current: &mut String) {
    if !current.is_empty() {
        words.push(std::mem::take(current));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(key: &str) -> Vec<String> {
        key_words(key.as_bytes())
    }

    #[test]
    fn keys_split_into_words() {
        assert_eq!(words("DB_PASSWORD"), ["db", "password"]);
        assert_eq!(words("dbPassword2"), ["db", "password", "2"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(words("x-api-key"), ["x", "api", "key"]);
        assert_eq!(
            words("spring.datasource.password"),
            ["spring", "datasource", "password"]
        );
        assert_eq!(words("oauth2Token"), ["oauth", "2", "token"]);
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "password",
            "PASSWORD",
            "passwd",
            "DB_PASSWORD",
            "dbPassword",
            "secret",
            "client_secret",
            "clientSecret",
            "token",
            "GITHUB_TOKEN",
            "accessToken",
            "api_key",
            "apiKey",
            "APIKEY",
            "x-api-key",
            "access_key",
            "secret_key_base",
            "spring.datasource.password",
        ] {
            assert!(key_names_a_secret(key.as_bytes()), "{key} names a secret");
        }
    }

    #[test]
    fn metadata_and_unrelated_keys_are_not_secrets() {
        for key in [
            "tokenizer",
            "tokens",
            "passwords",
            "secretary",
            "secret_name",
            "secretName",
            "token_url",
            "password_hint",
            "max_token_length",
            "client_secret_expires_at",
            "aws_access_key_id",
            "secret_key_ref",
            "username",
            "keyboard",
        ] {
            assert!(!key_names_a_secret(key.as_bytes()), "{key} is not a secret");
        }
    }

    #[test]
    fn code_expressions_are_recognised() {
        assert!(is_code_expression(b"std::env::var", Some(b'(')));
        assert!(is_code_expression(b"os.environ", Some(b'[')));
        assert!(is_code_expression(b"process.env.API_TOKEN", Some(b';')));
        assert!(is_code_expression(b"process.env.API_TOKEN!", None));
        assert!(is_code_expression(b"this.auth?.currentToken", None));
        assert!(!is_code_expression(b"Zq8vN2rLx7Tb4KpW9mYc", None));
        assert!(!is_code_expression(b"Zq8v.N2rLx7Tb4Kp/W9mYc", Some(b'\n')));
    }

    #[test]
    fn generated_values_pass_and_words_do_not() {
        assert!(looks_generated(b"Zq8vN2rLx7Tb4KpW9mYc"));
        assert!(looks_generated(b"https://bob:Zq8vN2rLx7@db.internal"));
        assert!(
            !looks_generated(b"Zq8vN2rLx7T"),
            "one byte below the length minimum"
        );
        assert!(!looks_generated(b"supersecretpassword"), "low entropy");
        assert!(!looks_generated(b"Password must be at least 8 characters"));
        assert!(!looks_generated(b"https://auth.internal/oauth2/v1/token"));
        assert!(!looks_generated(b"${GITHUB_TOKEN_VALUE}"));
        assert!(!looks_generated(b":Kind::Ident9"));
    }

    #[test]
    fn length_and_entropy_thresholds_are_where_documented() {
        // 12 distinct bytes: log2(12) ≈ 3.58 ≥ 3.5, the shortest value that can pass.
        assert!(looks_generated(b"aB3dE5gH7jK9"));
        // 11 distinct bytes: under the length minimum whatever the entropy.
        assert!(!looks_generated(b"aB3dE5gH7jK"));
        // 12 bytes with one repeat: ≈ 3.42 < 3.5.
        assert!(!looks_generated(b"aB3dE5gH7jKa"));
    }

    #[test]
    fn pattern_compiles() {
        assert!(Regex::new(&pattern()).is_ok());
    }
}
