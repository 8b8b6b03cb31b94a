//! What a scan returns: findings, notes about content that could not be scanned, and the
//! number of findings the allowlist suppressed. Nothing here ever holds a whole secret.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// How many leading characters of a secret a [`Finding`] may show: enough to recognise the
/// kind of credential (`AKIA`, `ghp_`, `eyJh`), too few to be of use to anyone reading a log.
const REDACTED_PREFIX_CHARS: usize = 4;

/// One secret found in scanned content.
///
/// The secret itself is not kept: only its location, a fingerprint and a short prefix, so a
/// finding can be logged, serialised and shown with `Debug` or `Display` without leaking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Path of the scanned content; entries of nested archives read `outer!inner/file`.
    pub path: String,
    /// Byte offset of the secret within the content named by `path`.
    pub offset: u64,
    /// Length of the secret in bytes, so `offset..offset + len` is the secret's byte range.
    pub len: u64,
    /// Id of the rule that matched, one of [`RULES`](super::RULES).
    pub rule: &'static str,
    /// `sha256:<hex>` of the secret's bytes: stable across scans, usable in an allowlist.
    pub fingerprint: String,
    /// At most the first four characters of the secret followed by `…`.
    pub redacted: String,
}

impl Finding {
    /// Builds a finding for `secret`, which starts at `offset` in the content named by `path`.
    pub(super) fn new(path: &str, rule: &'static str, offset: usize, secret: &[u8]) -> Self {
        Self {
            path: path.to_owned(),
            offset: offset as u64,
            len: secret.len() as u64,
            rule,
            fingerprint: fingerprint(secret),
            redacted: redact(secret),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} {} ({})",
            self.path, self.offset, self.rule, self.redacted, self.fingerprint
        )
    }
}

/// Something the scanner could not (fully) scan, e.g. a corrupt or oversized nested archive.
/// A note is never a finding: it tells the caller where coverage stopped and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanNote {
    /// Path of the content the note is about.
    pub path: String,
    /// What was skipped and why.
    pub message: String,
}

impl ScanNote {
    /// Builds a note about `path`.
    pub(super) fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// The result of one or more scans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// Secrets found and not suppressed by the allowlist.
    pub findings: Vec<Finding>,
    /// Content that was skipped or only partly scanned, and why.
    pub notes: Vec<ScanNote>,
    /// Number of findings suppressed by the allowlist.
    pub allowed: usize,
}

impl ScanReport {
    /// Appends `other` to this report, e.g. to combine the scans of several files.
    pub fn merge(&mut self, other: ScanReport) {
        self.findings.extend(other.findings);
        self.notes.extend(other.notes);
        self.allowed += other.allowed;
    }

    /// True when no finding survived the allowlist.
    ///
    /// Notes do not make a report unclean (they are not findings); a caller that needs proof
    /// that every byte was scanned checks `notes` as well.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// `sha256:` followed by the lowercase hex SHA-256 of `secret`.
fn fingerprint(secret: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(secret);
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256:");
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The first few characters of `secret` and `…`.
///
/// Never more than half of the secret is shown, so even an unusually short match is not
/// reproduced whole.
fn redact(secret: &[u8]) -> String {
    let text = String::from_utf8_lossy(secret);
    let shown = REDACTED_PREFIX_CHARS.min(text.chars().count() / 2);
    let mut out: String = text.chars().take(shown).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"ghp_FAKEfakeFAKEfake0123456789abcdefABCD";

    #[test]
    fn fingerprint_is_sha256_hex_of_the_secret() {
        // sha256("abc") is a published test vector.
        assert_eq!(
            fingerprint(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn redaction_shows_at_most_four_chars() {
        assert_eq!(redact(SECRET), "ghp_…");
        assert_eq!(redact(b"abcdefgh"), "abcd…");
        // Short secrets show at most half of themselves.
        assert_eq!(redact(b"abc"), "a…");
        assert_eq!(redact(b"a"), "…");
        assert_eq!(redact(b""), "…");
        // Multi-byte characters are counted as characters, never split.
        assert_eq!(redact("ééééééééé".as_bytes()), "éééé…");
    }

    #[test]
    fn no_rendering_of_a_finding_contains_the_secret() {
        let finding = Finding::new("a/b.txt", "github-token", 7, SECRET);
        let secret = String::from_utf8_lossy(SECRET).into_owned();
        let debug = format!("{finding:?}");
        let display = finding.to_string();
        let json = serde_json::to_string(&finding).unwrap_or_default();
        let mut report = ScanReport::default();
        report.findings.push(finding.clone());
        let report_debug = format!("{report:?}");
        for rendered in [&finding.redacted, &debug, &display, &json, &report_debug] {
            assert!(!rendered.contains(&secret), "secret leaked in {rendered}");
            // Not even a long piece of it.
            assert!(
                !rendered.contains(&secret[..8]),
                "prefix leaked in {rendered}"
            );
        }
        assert!(display.contains("a/b.txt:7: github-token ghp_…"));
        assert!(json.contains("\"rule\":\"github-token\""));
        assert_eq!(finding.len, SECRET.len() as u64);
    }

    #[test]
    fn merge_adds_everything_and_is_clean_looks_at_findings() {
        let mut a = ScanReport::default();
        assert!(a.is_clean());
        let mut b = ScanReport::default();
        b.notes.push(ScanNote::new("x", "skipped"));
        b.allowed = 2;
        a.merge(b);
        assert!(a.is_clean(), "notes alone do not make a report unclean");
        let mut c = ScanReport::default();
        c.findings.push(Finding::new("y", "jwt", 0, b"eyJabc"));
        c.allowed = 1;
        a.merge(c);
        assert!(!a.is_clean());
        assert_eq!((a.findings.len(), a.notes.len(), a.allowed), (1, 1, 3));
    }
}
