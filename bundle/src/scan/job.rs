//! One call of `Scanner::scan`: runs the rules over a piece of content, applies the
//! allowlist and the per-file finding cap, and descends into nested archives within the
//! call's shared budget.

use super::allowlist::Allowlist;
use super::nested::{Budget, Entry, Limits, NestedArchive, Skip, is_zip};
use super::report::{Finding, ScanNote, ScanReport};
use super::rules::RuleSet;

/// The state of one scan call.
pub(super) struct ScanJob<'s> {
    rules: &'s RuleSet,
    allowlist: &'s Allowlist,
    limits: Limits,
    budget: Budget,
    report: ScanReport,
}

impl<'s> ScanJob<'s> {
    /// A job with the full budget of `limits`.
    pub(super) fn new(rules: &'s RuleSet, allowlist: &'s Allowlist, limits: Limits) -> Self {
        Self {
            rules,
            allowlist,
            limits,
            budget: Budget::new(&limits),
            report: ScanReport::default(),
        }
    }

    /// Scans `bytes` (the content of `path`, `depth` archives deep) and, if it is a ZIP, its
    /// entries.
    pub(super) fn scan_content(&mut self, path: &str, bytes: &[u8], depth: usize) {
        self.scan_file(path, bytes);
        if is_zip(bytes) {
            self.scan_archive(path, bytes, depth);
        }
    }

    /// The finished report.
    pub(super) fn finish(self) -> ScanReport {
        self.report
    }

    /// Adds a note.
    pub(super) fn note(&mut self, path: &str, message: impl Into<String>) {
        self.report.notes.push(ScanNote::new(path, message));
    }

    /// Runs every rule over `bytes` as one file.
    ///
    /// Each rule stops after one finding more than the cap: the first `cap` findings by
    /// offset are then certain to be among those collected, and memory stays bounded however
    /// many matches a hostile file holds.
    fn scan_file(&mut self, path: &str, bytes: &[u8]) {
        let cap = self.limits.findings_per_file_max;
        let mut findings = Vec::new();
        for (rank, rule) in self.rules.rules().iter().enumerate() {
            let mut kept = 0;
            for range in self.rules.secrets(rule, bytes) {
                let finding = Finding::new(path, rule.id, range.start, &bytes[range]);
                if self.allowlist.allows(&finding) {
                    self.report.allowed += 1;
                    continue;
                }
                findings.push((rank, finding));
                kept += 1;
                if kept > cap {
                    break;
                }
            }
        }
        findings.sort_by_key(|(rank, finding)| (finding.offset, *rank));
        if findings.len() > cap {
            findings.truncate(cap);
            self.note(
                path,
                format!("only the first {cap} findings in this file are reported"),
            );
        }
        self.report
            .findings
            .extend(findings.into_iter().map(|(_, finding)| finding));
    }

    /// Scans every entry of the archive in `bytes` as `path!entry`.
    fn scan_archive(&mut self, path: &str, bytes: &[u8], depth: usize) {
        if depth >= self.limits.depth_max {
            let skip = Skip::TooDeep {
                max: self.limits.depth_max,
            };
            self.note(path, skip.to_string());
            return;
        }
        let mut archive = match NestedArchive::open(bytes) {
            Ok(archive) => archive,
            Err(skip) => {
                self.note(path, skip.to_string());
                return;
            }
        };
        while let Some(next) = archive.next_entry(&mut self.budget, &self.limits) {
            match next {
                Ok(Entry::File { name, data }) => {
                    self.scan_content(&format!("{path}!{name}"), &data, depth + 1);
                }
                Ok(Entry::Directory) => {}
                Ok(Entry::Skipped { name, reason }) => {
                    self.note(&format!("{path}!{name}"), reason.to_string());
                }
                Err(skip) => {
                    self.note(path, skip.to_string());
                    break;
                }
            }
        }
    }
}
