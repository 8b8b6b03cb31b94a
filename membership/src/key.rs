//! One symmetric cluster key: the secret every node of a cluster shares to
//! seal and open gossip datagrams.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroize;

/// Length of a cluster key in bytes. XChaCha20-Poly1305 takes a 256-bit key.
pub const CLUSTER_KEY_BYTES: usize = 32;

/// Longest base64 text accepted by [`ClusterKey::from_base64`]. A 32-byte key
/// is 44 characters; the bound stops a misplaced file from being decoded
/// whole before the length check rejects it.
pub const MAX_CLUSTER_KEY_BASE64_CHARS: usize = 64;

/// A 256-bit secret shared by the nodes of one cluster.
///
/// The bytes are wiped from memory when the value is dropped, and `Debug`
/// never prints them, so a key cannot leak through a log line or a panic
/// message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    bytes: [u8; CLUSTER_KEY_BYTES],
}

/// Why a text could not be turned into a [`ClusterKey`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterKeyError {
    /// The text is longer than any encoding of a 32-byte key.
    #[error("cluster key text is {chars} characters long, at most {max} are accepted")]
    TextTooLong { chars: usize, max: usize },
    /// The text is not standard (padded) base64.
    #[error("cluster key is not valid base64: {reason}")]
    NotBase64 { reason: String },
    /// The text decodes, but not to exactly 32 bytes.
    #[error("cluster key decodes to {actual_bytes} bytes, expected {expected_bytes}")]
    WrongLength {
        actual_bytes: usize,
        expected_bytes: usize,
    },
}

impl ClusterKey {
    /// Wraps raw key bytes, for callers that already hold 32 random bytes.
    pub const fn from_bytes(bytes: [u8; CLUSTER_KEY_BYTES]) -> Self {
        Self { bytes }
    }

    /// Draws a fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; CLUSTER_KEY_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self { bytes })
    }

    /// Parses the standard base64 form (the form [`ClusterKey::to_base64`]
    /// writes). Surrounding whitespace is ignored so a key read from a file
    /// with a trailing newline still parses.
    pub fn from_base64(text: &str) -> Result<Self, ClusterKeyError> {
        let text = text.trim();
        let chars = text.chars().count();
        if chars > MAX_CLUSTER_KEY_BASE64_CHARS {
            return Err(ClusterKeyError::TextTooLong {
                chars,
                max: MAX_CLUSTER_KEY_BASE64_CHARS,
            });
        }
        let mut decoded = BASE64
            .decode(text)
            .map_err(|error| ClusterKeyError::NotBase64 {
                reason: error.to_string(),
            })?;
        let result = <[u8; CLUSTER_KEY_BYTES]>::try_from(decoded.as_slice())
            .map(Self::from_bytes)
            .map_err(|_| ClusterKeyError::WrongLength {
                actual_bytes: decoded.len(),
                expected_bytes: CLUSTER_KEY_BYTES,
            });
        decoded.zeroize();
        result
    }

    /// Standard padded base64 of the key, for config files and CLI output.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.bytes)
    }

    /// The raw key bytes, for the AEAD.
    pub(crate) fn as_bytes(&self) -> &[u8; CLUSTER_KEY_BYTES] {
        &self.bytes
    }
}

impl Drop for ClusterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ClusterKey(<redacted>)")
    }
}

impl std::str::FromStr for ClusterKey {
    type Err = ClusterKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_base64(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_keeps_the_key() {
        let key = ClusterKey::from_bytes([7u8; CLUSTER_KEY_BYTES]);
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(ClusterKey::from_base64(&format!(" {text}\n")), Ok(key));
    }

    #[test]
    fn wrong_length_is_a_typed_error() {
        let short = BASE64.encode([1u8; 16]);
        assert_eq!(
            ClusterKey::from_base64(&short),
            Err(ClusterKeyError::WrongLength {
                actual_bytes: 16,
                expected_bytes: CLUSTER_KEY_BYTES
            })
        );
    }

    #[test]
    fn garbage_and_huge_texts_are_rejected() {
        assert!(matches!(
            ClusterKey::from_base64("not base64 at all!"),
            Err(ClusterKeyError::NotBase64 { .. })
        ));
        assert!(matches!(
            ClusterKey::from_base64(&"A".repeat(1000)),
            Err(ClusterKeyError::TextTooLong { .. })
        ));
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = ClusterKey::from_bytes([0xAB; CLUSTER_KEY_BYTES]);
        let printed = format!("{key:?}");
        assert!(!printed.contains("171") && !printed.to_lowercase().contains("ab"));
    }

    #[test]
    fn generated_keys_differ() {
        let first = ClusterKey::generate().expect("os rng");
        let second = ClusterKey::generate().expect("os rng");
        assert_ne!(first, second);
    }
}
