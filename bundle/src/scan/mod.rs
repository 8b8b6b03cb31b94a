//! Secret-leak scanning for bundles.
//!
//! This module owns the rules that recognise secrets (private keys, cloud and SaaS tokens,
//! JWTs, `password = …` style assignments), the allowlist format for documented false
//! positives, and the bounded descent into ZIP archives nested in the scanned content
//! (e.g. a `.gtpack` inside a bundle). It reports where each secret is without ever holding
//! on to the secret itself.
//!
//! It does no file-system I/O: it only scans byte slices handed to it. Reading the bundle,
//! the allowlist file and deciding what a finding means for a deployment is the caller's job.
//!
//! ```text
//! let scanner = Scanner::new(Allowlist::from_json(&allowlist_text)?);
//! let report = scanner.scan("<archive>", &bundle_bytes);
//! if !report.is_clean() { /* refuse the bundle, show report.findings */ }
//! ```

mod allowlist;
mod entropy;
mod generic;
mod job;
mod nested;
mod placeholder;
mod report;
mod rules;
#[cfg(test)]
mod tests;

pub use allowlist::{Allowlist, AllowlistError};
pub use report::{Finding, ScanNote, ScanReport};
pub use rules::RULES;

use job::ScanJob;
use nested::Limits;
use rules::RuleSet;

/// How many archives deep nested entries are opened: a bundle, a pack inside it and one more
/// level covers real layouts; deeper nesting is a note, not a scan.
pub const NESTED_DEPTH_MAX: usize = 3;

/// How many archive entries one scan reads in total, across all nesting levels.
pub const NESTED_ENTRIES_MAX: usize = 10_000;

/// How many decompressed bytes one scan reads from archive entries in total, across all
/// nesting levels: the bound that defuses zip bombs.
pub const NESTED_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// How many findings are reported per scanned file; past it a note says the list was cut,
/// so a hostile file cannot produce unbounded output.
pub const FINDINGS_PER_FILE_MAX: usize = 100;

/// The limits every public scan runs with.
const DEFAULT_LIMITS: Limits = Limits {
    depth_max: NESTED_DEPTH_MAX,
    entries_max: NESTED_ENTRIES_MAX,
    bytes_max: NESTED_BYTES_MAX,
    findings_per_file_max: FINDINGS_PER_FILE_MAX,
};

/// Scans byte slices for secrets, using every built-in rule and an allowlist.
#[derive(Debug)]
pub struct Scanner {
    rules: RuleSet,
    allowlist: Allowlist,
}

impl Scanner {
    /// Scanner with every built-in rule and the given allowlist.
    pub fn new(allowlist: Allowlist) -> Self {
        Self {
            rules: RuleSet::builtin(),
            allowlist,
        }
    }

    /// Scans `bytes`, which are the content of `path` (a path inside a bundle, or a label
    /// such as `"<archive>"`).
    ///
    /// If the content is a ZIP (magic `PK\x03\x04`), e.g. a nested `.gtpack`, every entry
    /// inside is scanned too, recursively, and reported with path `outer!inner/file`.
    /// Nesting depth, entry count and decompressed bytes are bounded by
    /// [`NESTED_DEPTH_MAX`], [`NESTED_ENTRIES_MAX`] and [`NESTED_BYTES_MAX`] for the whole
    /// call; a nested archive that is corrupt or exceeds a bound yields a [`ScanNote`], never
    /// a panic. At most [`FINDINGS_PER_FILE_MAX`] findings are reported per file.
    pub fn scan(&self, path: &str, bytes: &[u8]) -> ScanReport {
        self.scan_with_limits(path, bytes, DEFAULT_LIMITS)
    }

    /// [`Scanner::scan`] with explicit bounds, so tests can reach each one cheaply.
    fn scan_with_limits(&self, path: &str, bytes: &[u8], limits: Limits) -> ScanReport {
        let mut job = ScanJob::new(&self.rules, &self.allowlist, limits);
        for (rule, error) in self.rules.broken() {
            job.note(
                path,
                format!("rule {rule} not run: its pattern does not compile ({error})"),
            );
        }
        job.scan_content(path, bytes, 0);
        job.finish()
    }
}
