//! Secret values in memory: [`SecretText`] keeps a value in a
//! `secrecy::SecretString` (zeroed when dropped, `[REDACTED]` in `Debug`,
//! no `Serialize`), and the generator of `rotate`'s random values.

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

/// Largest value in bytes. Secrets are passwords, tokens and keys, not
/// files; 64 KiB holds a PEM chain and keeps every version file, answers
/// file and request body small.
pub const SECRET_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Shortest generated value.
pub const GENERATED_LENGTH_MIN: usize = 16;
/// Longest generated value.
pub const GENERATED_LENGTH_MAX: usize = 1024;
/// Length of a generated value when the answers name none.
pub const GENERATED_LENGTH_DEFAULT: usize = 32;

/// Why a value was refused. Never carries the value, only its size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    #[error("the secret value is empty")]
    Empty,
    #[error("the secret value is {bytes} bytes; the limit is {SECRET_VALUE_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error(
        "a generated value is between {GENERATED_LENGTH_MIN} and {GENERATED_LENGTH_MAX} characters; {length} was asked"
    )]
    GeneratedLength { length: usize },
    #[error("the operating system's random source failed: {reason}")]
    Random { reason: String },
}

/// A secret value held in memory. `Debug` prints `[REDACTED]`; there is
/// deliberately no `Serialize`, so it cannot reach JSON output, an audit
/// target or a log field by accident.
pub struct SecretText(SecretString);

impl SecretText {
    /// Wraps `text` after checking it is not empty and not over the limit.
    pub fn new(text: String) -> Result<Self, ValueError> {
        let text = SecretString::from(text);
        check_size(text.expose_secret().len())?;
        Ok(Self(text))
    }

    /// The value, for the one place that encrypts it (and `reveal`).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Constant-time comparison (an idempotent replay compares values).
    pub fn same_as(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.expose().as_bytes().ct_eq(other).into()
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText([REDACTED])")
    }
}

fn check_size(bytes: usize) -> Result<(), ValueError> {
    if bytes == 0 {
        return Err(ValueError::Empty);
    }
    if bytes > SECRET_VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge { bytes });
    }
    Ok(())
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The error names the size only: a serde error that quoted the
        // value would carry it into the CLI's output.
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        check_size(text.len()).map_err(serde::de::Error::custom)?;
        Ok(Self(SecretString::from(text.as_str().to_owned())))
    }
}

impl JsonSchema for SecretText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretText".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": SECRET_VALUE_BYTES_MAX,
            "description": "A secret value; never echoed in output, errors, logs or the audit log.",
            "writeOnly": true
        })
    }
}

/// The characters a generated value is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Alphabet {
    /// `A-Z a-z 0-9` (62 characters, about 5.95 bits each).
    #[default]
    Alphanumeric,
    /// `0-9 a-f` (4 bits each).
    Hex,
    /// `A-Z a-z 0-9 - _` (6 bits each).
    Base64url,
    /// Printable ASCII without space and quotes (91 characters).
    Printable,
}

impl Alphabet {
    /// The characters, in a fixed order.
    pub fn characters(self) -> Vec<u8> {
        let mut set: Vec<u8> = Vec::new();
        match self {
            Alphabet::Alphanumeric => {
                set.extend(b'A'..=b'Z');
                set.extend(b'a'..=b'z');
                set.extend(b'0'..=b'9');
            }
            Alphabet::Hex => {
                set.extend(b'0'..=b'9');
                set.extend(b'a'..=b'f');
            }
            Alphabet::Base64url => {
                set.extend(b'A'..=b'Z');
                set.extend(b'a'..=b'z');
                set.extend(b'0'..=b'9');
                set.extend([b'-', b'_']);
            }
            Alphabet::Printable => {
                set.extend((b'!'..=b'~').filter(|c| !matches!(c, b'"' | b'\'' | b'`' | b'\\')));
            }
        }
        set
    }
}

/// `rotate`'s request for a generated value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    /// Characters in the value, 16 to 1024 (default 32).
    #[serde(default = "default_length")]
    pub length: usize,
    #[serde(default)]
    pub alphabet: Alphabet,
}

fn default_length() -> usize {
    GENERATED_LENGTH_DEFAULT
}

impl Default for GenerateSpec {
    fn default() -> Self {
        Self {
            length: GENERATED_LENGTH_DEFAULT,
            alphabet: Alphabet::default(),
        }
    }
}

/// Draws a uniform value of `spec` from `random` (a source of random
/// bytes: the OS in production, a fixed stream in tests). Rejection
/// sampling keeps every character equally likely.
pub fn generate(
    spec: GenerateSpec,
    random: &mut dyn FnMut(&mut [u8]) -> Result<(), ValueError>,
) -> Result<SecretText, ValueError> {
    if !(GENERATED_LENGTH_MIN..=GENERATED_LENGTH_MAX).contains(&spec.length) {
        return Err(ValueError::GeneratedLength {
            length: spec.length,
        });
    }
    let characters = spec.alphabet.characters();
    // The largest multiple of the alphabet size that fits in a byte: bytes
    // at or above it are drawn again so that no character is favoured.
    let limit = 256 - (256 % characters.len());
    let mut text = Zeroizing::new(String::with_capacity(spec.length));
    let mut buffer = Zeroizing::new([0u8; 64]);
    while text.len() < spec.length {
        random(&mut buffer[..])?;
        for byte in buffer.iter() {
            if usize::from(*byte) < limit && text.len() < spec.length {
                text.push(char::from(
                    characters[usize::from(*byte) % characters.len()],
                ));
            }
        }
    }
    SecretText::new(text.as_str().to_owned())
}

/// The operating system's random source, as [`generate`] takes it.
pub fn os_random(bytes: &mut [u8]) -> Result<(), ValueError> {
    getrandom::fill(bytes).map_err(|error| ValueError::Random {
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        // Proves: a value formatted by accident (a log field, a panic) is redacted.
        let value = SecretText::new("hunter2-marker".to_owned()).expect("valid");
        assert!(!format!("{value:?}").contains("hunter2"));
    }

    #[test]
    fn size_limits_are_enforced_without_echoing() {
        // Proves: an empty or oversize value is refused, and the error names only the size.
        assert_eq!(
            SecretText::new(String::new()).err(),
            Some(ValueError::Empty)
        );
        let big = "x".repeat(SECRET_VALUE_BYTES_MAX + 1);
        let error = SecretText::new(big).expect_err("too large");
        assert_eq!(
            error,
            ValueError::TooLarge {
                bytes: SECRET_VALUE_BYTES_MAX + 1
            }
        );
        let parsed: Result<SecretText, _> =
            serde_json::from_str(&format!("\"{}\"", "y".repeat(SECRET_VALUE_BYTES_MAX + 1)));
        let message = parsed.expect_err("too large").to_string();
        assert!(!message.contains("yyyy"), "{message}");
    }

    #[test]
    fn generated_values_follow_the_answers() {
        // Proves: length and alphabet are honoured, and out-of-range lengths are refused.
        let mut counter = 0u8;
        let mut source = |bytes: &mut [u8]| {
            for byte in bytes.iter_mut() {
                *byte = counter;
                counter = counter.wrapping_add(1);
            }
            Ok(())
        };
        let spec = GenerateSpec {
            length: 40,
            alphabet: Alphabet::Hex,
        };
        let value = generate(spec, &mut source).expect("generated");
        assert_eq!(value.expose().len(), 40);
        assert!(value.expose().chars().all(|c| c.is_ascii_hexdigit()));
        let printable = generate(
            GenerateSpec {
                length: 100,
                alphabet: Alphabet::Printable,
            },
            &mut source,
        )
        .expect("generated");
        assert!(
            printable
                .expose()
                .bytes()
                .all(|c| Alphabet::Printable.characters().contains(&c))
        );
        assert_eq!(
            generate(
                GenerateSpec {
                    length: 8,
                    alphabet: Alphabet::Hex
                },
                &mut source
            )
            .err(),
            Some(ValueError::GeneratedLength { length: 8 })
        );
    }

    #[test]
    fn generated_values_from_the_os_differ() {
        // Proves: two OS-drawn values are not the same (the source is wired).
        let a = generate(GenerateSpec::default(), &mut os_random).expect("a");
        let b = generate(GenerateSpec::default(), &mut os_random).expect("b");
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
