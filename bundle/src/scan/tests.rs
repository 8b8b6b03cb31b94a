//! Tests of the whole scanner: nested archives, bounds, the allowlist in action, the corpus
//! under `testdata/`, and a property test on arbitrary input.

use super::nested::Limits;
use super::report::Finding;
use super::*;
use proptest::prelude::*;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

const AWS_KEY_ID: &str = "AKIAZ7Q4FAKE0TEST0K9";
const GITHUB: &str = "ghp_FAKEfakeFAKEfake0123456789abcdefABCD";

fn scanner() -> Scanner {
    Scanner::new(Allowlist::empty())
}

/// A ZIP of `(name, content)` entries; names ending in `/` become directories.
fn zip_of(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, content) in entries {
        if name.ends_with('/') {
            writer.add_directory(*name, options).expect("add directory");
        } else {
            writer.start_file(*name, options).expect("start file");
            writer.write_all(content).expect("write entry");
        }
    }
    writer.finish().expect("finish zip").into_inner()
}

fn deflated(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_of(entries, CompressionMethod::Deflated)
}

fn paths_and_rules(report: &ScanReport) -> Vec<(&str, &str)> {
    report
        .findings
        .iter()
        .map(|f| (f.path.as_str(), f.rule))
        .collect()
}

fn notes_about<'r>(report: &'r ScanReport, path: &str) -> Vec<&'r str> {
    report
        .notes
        .iter()
        .filter(|n| n.path == path)
        .map(|n| n.message.as_str())
        .collect()
}

fn small_limits() -> Limits {
    Limits {
        depth_max: NESTED_DEPTH_MAX,
        entries_max: NESTED_ENTRIES_MAX,
        bytes_max: 1024,
        findings_per_file_max: FINDINGS_PER_FILE_MAX,
    }
}

#[test]
fn plain_content_reports_path_offset_and_rule() {
    let text = format!("# config\nkey_id = {AWS_KEY_ID}\n");
    let report = scanner().scan("deploy/aws.env", text.as_bytes());
    assert_eq!(report.findings.len(), 1, "{report:?}");
    let finding = &report.findings[0];
    assert_eq!(finding.path, "deploy/aws.env");
    assert_eq!(finding.rule, "aws-access-key-id");
    assert_eq!(finding.offset, 18);
    assert_eq!(&text[18..18 + finding.len as usize], AWS_KEY_ID);
    assert_eq!(finding.redacted, "AKIA…");
    assert!(report.notes.is_empty());
}

#[test]
fn entries_of_a_zip_are_scanned_with_outer_bang_inner_paths() {
    let env = format!("X=1\nGH={GITHUB}\n");
    let bundle = deflated(&[
        ("docs/", b""),
        ("docs/readme.md", b"nothing to see"),
        ("config/app.env", env.as_bytes()),
    ]);
    let report = scanner().scan("<archive>", &bundle);
    assert_eq!(
        paths_and_rules(&report),
        [("<archive>!config/app.env", "github-token")],
        "{report:?}"
    );
    assert_eq!(report.findings[0].offset, 7, "offset is within the entry");
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn a_zip_inside_a_zip_is_scanned_recursively() {
    let inner = deflated(&[("secrets/key.env", format!("id={AWS_KEY_ID}").as_bytes())]);
    let outer = deflated(&[("packs/inner.gtpack", &inner), ("a.txt", b"hello")]);
    let report = scanner().scan("<archive>", &outer);
    assert_eq!(
        paths_and_rules(&report),
        [(
            "<archive>!packs/inner.gtpack!secrets/key.env",
            "aws-access-key-id"
        )],
        "{report:?}"
    );
}

#[test]
fn stored_entries_are_found_in_the_raw_archive_too() {
    // The whole archive file is scanned as bytes before its entries, so an uncompressed
    // entry shows up twice: once in the archive, once in the entry.
    let content = format!("GH={GITHUB}\n");
    let bundle = zip_of(&[("t.txt", content.as_bytes())], CompressionMethod::Stored);
    let report = scanner().scan("<archive>", &bundle);
    assert_eq!(
        paths_and_rules(&report),
        [
            ("<archive>", "github-token"),
            ("<archive>!t.txt", "github-token")
        ]
    );
}

#[test]
fn a_corrupt_nested_zip_is_a_note_and_the_rest_is_still_scanned() {
    let mut broken = b"PK\x03\x04".to_vec();
    broken.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef].repeat(20));
    let outer = deflated(&[
        ("broken.gtpack", &broken),
        ("ok.env", format!("GH={GITHUB}").as_bytes()),
    ]);
    let report = scanner().scan("<archive>", &outer);
    assert_eq!(
        paths_and_rules(&report),
        [("<archive>!ok.env", "github-token")]
    );
    let notes = notes_about(&report, "<archive>!broken.gtpack");
    assert_eq!(notes.len(), 1, "{:?}", report.notes);
    assert!(
        notes[0].starts_with("nested archive skipped"),
        "{}",
        notes[0]
    );
}

#[test]
fn truncated_top_level_zip_is_a_note_not_a_panic() {
    let bundle = deflated(&[("a.env", format!("GH={GITHUB}").as_bytes())]);
    let truncated = &bundle[..bundle.len() - 10];
    let report = scanner().scan("<archive>", truncated);
    assert!(report.findings.is_empty(), "{report:?}");
    assert_eq!(notes_about(&report, "<archive>").len(), 1, "{report:?}");
}

#[test]
fn an_entry_over_the_byte_budget_is_skipped_with_a_note() {
    let mut big = vec![b'\n'; 4096];
    big[..GITHUB.len()].copy_from_slice(GITHUB.as_bytes());
    let bundle = deflated(&[
        ("big.bin", &big),
        ("small.env", format!("GH={GITHUB}").as_bytes()),
    ]);
    let report = scanner().scan_with_limits("<archive>", &bundle, small_limits());
    assert_eq!(
        paths_and_rules(&report),
        [("<archive>!small.env", "github-token")],
        "the small entry still fits in the budget: {report:?}"
    );
    let notes = notes_about(&report, "<archive>!big.bin");
    assert_eq!(notes.len(), 1, "{:?}", report.notes);
    assert!(
        notes[0].contains("4096 decompressed bytes exceed the 1024 bytes left"),
        "{}",
        notes[0]
    );

    // With the default budget the same bundle is scanned whole.
    let report = scanner().scan("<archive>", &bundle);
    assert_eq!(report.findings.len(), 2, "{report:?}");
}

#[test]
fn the_byte_budget_is_shared_by_all_entries() {
    let part = [b'b'; 600];
    let bundle = deflated(&[("one", &part), ("two", &part)]);
    let report = scanner().scan_with_limits("<archive>", &bundle, small_limits());
    assert!(notes_about(&report, "<archive>!one").is_empty());
    assert_eq!(notes_about(&report, "<archive>!two").len(), 1, "{report:?}");
}

/// Rewrites the declared uncompressed size of every entry of a stored ZIP, so the header
/// claims less than the entry really holds.
fn understate_sizes(zip: &mut [u8], size: u32) {
    for (signature, size_offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let positions: Vec<usize> = zip
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == signature)
            .map(|(i, _)| i)
            .collect();
        for pos in positions {
            zip[pos + size_offset..pos + size_offset + 4].copy_from_slice(&size.to_le_bytes());
        }
    }
}

#[test]
fn an_entry_whose_header_understates_its_size_cannot_overrun_the_budget() {
    let mut content = vec![b'c'; 3000];
    content[..GITHUB.len()].copy_from_slice(GITHUB.as_bytes());
    let mut bundle = zip_of(&[("liar.bin", &content)], CompressionMethod::Stored);
    understate_sizes(&mut bundle, 10);
    let report = scanner().scan_with_limits("<archive>", &bundle, small_limits());
    let entry_findings = report.findings.iter().filter(|f| f.path != "<archive>");
    assert_eq!(entry_findings.count(), 0, "{report:?}");
    let notes = notes_about(&report, "<archive>!liar.bin");
    assert_eq!(notes.len(), 1, "{:?}", report.notes);
    assert!(notes[0].starts_with("entry skipped"), "{}", notes[0]);
}

#[test]
fn nesting_deeper_than_the_limit_is_a_note() {
    let level3 = deflated(&[("deep.env", format!("GH={GITHUB}").as_bytes())]);
    let level2 = deflated(&[("l3.zip", &level3)]);
    let level1 = deflated(&[("l2.zip", &level2)]);
    let limits = Limits {
        depth_max: 2,
        ..small_limits()
    };
    let report = scanner().scan_with_limits("<archive>", &level1, limits);
    assert!(report.findings.is_empty(), "{report:?}");
    let notes = notes_about(&report, "<archive>!l2.zip!l3.zip");
    assert_eq!(notes.len(), 1, "{:?}", report.notes);
    assert!(notes[0].contains("nested deeper than 2"), "{}", notes[0]);

    // The default depth opens all three levels.
    let report = scanner().scan("<archive>", &level1);
    assert_eq!(
        paths_and_rules(&report),
        [("<archive>!l2.zip!l3.zip!deep.env", "github-token")]
    );
}

#[test]
fn the_entry_limit_stops_the_walk_with_a_note() {
    let entries: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("f{i}.env"), format!("GH={GITHUB}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let bundle = deflated(&refs);
    let limits = Limits {
        entries_max: 2,
        ..small_limits()
    };
    let report = scanner().scan_with_limits("<archive>", &bundle, limits);
    assert_eq!(
        paths_and_rules(&report),
        [
            ("<archive>!f0.env", "github-token"),
            ("<archive>!f1.env", "github-token")
        ]
    );
    let notes = notes_about(&report, "<archive>");
    assert_eq!(notes.len(), 1, "{:?}", report.notes);
    assert!(notes[0].contains("limit of 2 entries"), "{}", notes[0]);
}

#[test]
fn findings_per_file_are_capped_with_a_note() {
    let text = format!("{AWS_KEY_ID}\n").repeat(FINDINGS_PER_FILE_MAX + 50);
    let report = scanner().scan("keys.txt", text.as_bytes());
    assert_eq!(report.findings.len(), FINDINGS_PER_FILE_MAX);
    assert_eq!(notes_about(&report, "keys.txt").len(), 1);
    // The reported ones are the first ones, in offset order.
    let offsets: Vec<u64> = report.findings.iter().map(|f| f.offset).collect();
    let expected: Vec<u64> = (0..FINDINGS_PER_FILE_MAX as u64).map(|i| i * 21).collect();
    assert_eq!(offsets, expected);
}

#[test]
fn the_cap_keeps_the_earliest_findings_across_rules() {
    let limits = Limits {
        findings_per_file_max: 3,
        ..small_limits()
    };
    // Rule order would list the AWS keys first; offset order interleaves them.
    let text = format!("{GITHUB} {AWS_KEY_ID} {GITHUB} {AWS_KEY_ID} {GITHUB} {AWS_KEY_ID}");
    let report = scanner().scan_with_limits("mix.txt", text.as_bytes(), limits);
    let rules: Vec<&str> = report.findings.iter().map(|f| f.rule).collect();
    assert_eq!(rules, ["github-token", "aws-access-key-id", "github-token"]);
    assert_eq!(report.notes.len(), 1);
}

#[test]
fn allowlisted_findings_are_counted_not_reported() {
    let text = format!("{AWS_KEY_ID}\n{GITHUB}\n");
    let fingerprint = scanner().scan("docs/a.md", text.as_bytes()).findings[0]
        .fingerprint
        .clone();
    let allowlist = Allowlist::from_json(&format!(
        r#"{{"schema": "greentic.scan-allowlist.v1", "allow": [
            {{"fingerprint": "{fingerprint}", "reason": "documented sample key"}},
            {{"rule": "github-token", "path": "docs/", "reason": "sample tokens in the docs"}}]}}"#
    ))
    .expect("valid allowlist");
    let scanner = Scanner::new(allowlist);
    let report = scanner.scan("docs/a.md", text.as_bytes());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allowed, 2);
    // The path entry only covers docs/; the fingerprint entry covers every path.
    let report = scanner.scan("src/a.md", text.as_bytes());
    assert_eq!(paths_and_rules(&report), [("src/a.md", "github-token")]);
    assert_eq!(report.allowed, 1);
}

#[test]
fn generic_finding_points_at_the_value_not_the_key() {
    let text = "DB_PASSWORD=\"Zq8vN2rLx7Tb4KpW9mYc\"\n";
    let report = scanner().scan("a.env", text.as_bytes());
    assert_eq!(report.findings.len(), 1, "{report:?}");
    let f = &report.findings[0];
    assert_eq!((f.offset, f.len), (13, 20));
    assert_eq!(
        f.fingerprint,
        Finding::new("x", "jwt", 0, b"Zq8vN2rLx7Tb4KpW9mYc").fingerprint
    );
    assert_eq!(f.redacted, "Zq8v…");
}

// ---------------------------------------------------------------------------------------
// Corpus

/// `testdata/` beside this file. `file!()` is relative to the workspace root, which may sit
/// above the crate, so the longest suffix of it that exists under the crate is used: this
/// keeps working when the module moves into another crate.
fn testdata_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = Path::new(file!());
    let components: Vec<_> = source.components().collect();
    (0..components.len())
        .map(|skip| components[skip..].iter().collect::<PathBuf>())
        .map(|suffix| manifest.join(suffix))
        .find(|candidate| candidate.is_file())
        .and_then(|file| file.parent().map(|dir| dir.join("testdata")))
        .expect("cannot locate this source file under CARGO_MANIFEST_DIR")
}

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = testdata_dir().join(kind);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).expect("read corpus file");
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// The rule a true-positive file is named after: the longest rule id followed by `-`.
fn rule_of(file_name: &str) -> Option<&'static str> {
    RULES
        .iter()
        .copied()
        .filter(|rule| file_name.starts_with(&format!("{rule}-")))
        .max_by_key(|rule| rule.len())
}

#[test]
fn corpus_rules_fire_exactly_where_expected() {
    let scanner = scanner();
    let mut problems = Vec::new();

    let positives = corpus("true-positives");
    for rule in RULES {
        if !positives
            .iter()
            .any(|(name, _)| rule_of(name) == Some(rule))
        {
            problems.push(format!("no true-positive file for rule {rule}"));
        }
    }
    for (name, bytes) in &positives {
        let Some(expected) = rule_of(name) else {
            problems.push(format!("{name}: file name does not start with a rule id"));
            continue;
        };
        let report = scanner.scan(name, bytes);
        let rules: Vec<&str> = report.findings.iter().map(|f| f.rule).collect();
        if rules.is_empty() || rules.iter().any(|rule| *rule != expected) {
            problems.push(format!("{name}: expected only {expected}, got {rules:?}"));
        }
        for finding in &report.findings {
            let start = finding.offset as usize;
            let secret = &bytes[start..start + finding.len as usize];
            if finding.redacted.len() >= secret.len()
                || finding.fingerprint != Finding::new("", "jwt", 0, secret).fingerprint
            {
                problems.push(format!("{name}: inconsistent finding {finding}"));
            }
        }
    }

    let negatives = corpus("false-positives");
    if negatives.len() < 10 {
        problems.push(format!("only {} false-positive files", negatives.len()));
    }
    for (name, bytes) in &negatives {
        let report = scanner.scan(name, bytes);
        for finding in &report.findings {
            problems.push(format!("{name}: unexpected finding {finding}"));
        }
    }
    assert!(
        problems.is_empty(),
        "corpus problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_corpus_zipped_behaves_like_the_corpus() {
    let positives = corpus("true-positives");
    let negatives = corpus("false-positives");
    let entries: Vec<(&str, &[u8])> = positives
        .iter()
        .chain(&negatives)
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let report = scanner().scan("<archive>", &deflated(&entries));
    for (name, _) in &positives {
        let path = format!("<archive>!{name}");
        assert!(
            report.findings.iter().any(|f| f.path == path),
            "nothing found in {path}"
        );
    }
    for (name, _) in &negatives {
        let path = format!("<archive>!{name}");
        assert!(
            !report.findings.iter().any(|f| f.path == path),
            "finding in {path}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Property tests

/// Pieces that make findings likely when glued together at random.
const FRAGMENTS: &[&str] = &[
    "AKIA",
    "ASIA",
    "Z7Q4FAKE0TEST0K9",
    "ghp_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "eyJ",
    ".",
    "=",
    ":",
    " ",
    "\"",
    "'",
    "\n",
    "password",
    "DB_PASSWORD",
    "token",
    "api_key",
    "secret",
    "aws_secret_access_key",
    "Zq8vN2rLx7Tb4KpW9mYc",
    "FAKEfakeFAKEfake0123456789abcdefABCD",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----",
    "${",
    "}",
    "(",
    "é",
    "https://hooks.slack.com/services/T1/B2/",
    "PK\u{3}\u{4}",
];

fn secretish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(FRAGMENTS).prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn mutated_zip() -> impl Strategy<Value = Vec<u8>> {
    let inner = deflated(&[("k.env", format!("GH={GITHUB}").as_bytes())]);
    let base = zip_of(
        &[
            ("a.env", format!("id={AWS_KEY_ID}").as_bytes()),
            ("n.gtpack", &inner),
        ],
        CompressionMethod::Stored,
    );
    let len = base.len();
    prop::collection::vec((0..len, any::<u8>()), 0..4).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (at, value) in edits {
            bytes[at] = value;
        }
        bytes
    })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        secretish(),
        prop::collection::vec(any::<u8>(), 0..512).prop_map(|rest| [
            b"PK\x03\x04".as_slice(),
            &rest
        ]
        .concat()),
        mutated_zip(),
    ]
}

/// The content a finding's path names: the input itself, or one of its entries one or more
/// levels down, when those entries can still be read.
fn content_of(bytes: &[u8], label: &str, path: &str) -> Option<Vec<u8>> {
    if path == label {
        return Some(bytes.to_vec());
    }
    let rest = path.strip_prefix(label)?.strip_prefix('!')?;
    let mut archive = ZipArchive::new(Cursor::new(bytes)).ok()?;
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).ok()?;
        let name = String::from_utf8_lossy(file.name_raw()).into_owned();
        if rest == name || rest.starts_with(&format!("{name}!")) {
            let mut data = Vec::new();
            file.read_to_end(&mut data).ok()?;
            return content_of(&data, &name, rest);
        }
    }
    None
}

proptest! {
    #[test]
    fn scan_never_panics_and_findings_lie_inside_the_input(bytes in any_input()) {
        let report = scanner().scan("<input>", &bytes);
        for finding in &report.findings {
            if finding.path == "<input>" {
                prop_assert!(finding.offset + finding.len <= bytes.len() as u64, "{finding}");
            }
            if let Some(content) = content_of(&bytes, "<input>", &finding.path) {
                let end = finding.offset + finding.len;
                prop_assert!(end <= content.len() as u64, "{finding}");
                let secret = &content[finding.offset as usize..end as usize];
                prop_assert_eq!(&finding.fingerprint, &Finding::new("", "jwt", 0, secret).fingerprint);
            }
            prop_assert!(finding.redacted.ends_with('…'));
            prop_assert!(finding.redacted.chars().count() <= 5);
        }
        prop_assert!(
            report.findings.iter().filter(|f| f.path == "<input>").count() <= FINDINGS_PER_FILE_MAX
        );
    }
}
