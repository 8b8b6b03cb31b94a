//! `gtc bundle build|inspect|doctor`, and staging a bundle file for
//! `gtc op revisions stage`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use bundle::ExtractLimits;
use bundle::build::{ALLOWLIST_FILE, BuildError, BuildOptions, build};
use bundle::read::ArchiveError;
use bundle::scan::{Allowlist, ScanNote, ScanReport, Scanner};
use bundle::stage::{StageError, StageRequest, stage};
use deploy::command::{Command, RevisionStageAnswers, StagedBundle};
use deploy::error::ErrorKind;
use deploy::ids::RevisionId;
use serde_json::json;

use crate::cli::{BuildFormat, BundleVerb};
use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;

/// Largest single file the doctor scans in memory; bigger files get a note.
const SCAN_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

pub fn run(verb: BundleVerb) -> Result<Report, CliError> {
    match verb {
        BundleVerb::Build {
            dir,
            out,
            format,
            allowlist,
        } => build_bundle(&dir, &out, format, allowlist.as_deref()),
        BundleVerb::Inspect { file } => {
            let inspection =
                bundle::inspect::inspect(&file, ExtractLimits::default()).map_err(archive_error)?;
            Ok(Report::new("bundle", "inspect", json!(inspection)))
        }
        BundleVerb::Doctor { file, allowlist } => doctor(&file, allowlist.as_deref()),
    }
}

fn load_allowlist(explicit: Option<&Path>, dir: Option<&Path>) -> Result<Allowlist, CliError> {
    let path = match (explicit, dir) {
        (Some(path), _) => path.to_owned(),
        (None, Some(dir)) if dir.join(ALLOWLIST_FILE).is_file() => dir.join(ALLOWLIST_FILE),
        _ => return Ok(Allowlist::empty()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::new(
            ErrorKind::Io,
            format!("cannot read allowlist {}: {e}", path.display()),
        )
    })?;
    Allowlist::from_json(&text).map_err(|e| {
        CliError::new(
            ErrorKind::InvalidArgument,
            format!("allowlist {} is invalid: {e}", path.display()),
        )
    })
}

fn archive_error(error: ArchiveError) -> CliError {
    let kind = match &error {
        ArchiveError::Io { .. } => ErrorKind::Io,
        _ => ErrorKind::BundleRefused,
    };
    let mut cli = CliError::new(kind, error.to_string());
    if let ArchiveError::Refused { entry, rule, .. } = &error {
        cli = cli.with_details(json!({"entry": entry, "rule": rule}));
    }
    cli
}

fn leak_error(report: &ScanReport) -> CliError {
    let lines: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{} at byte {}: {}", f.path, f.offset, f.rule))
        .collect();
    CliError::new(
        ErrorKind::SecretLeak,
        format!(
            "the bundle would leak secrets ({}); remove them, or document a false positive in {ALLOWLIST_FILE} (see README)",
            lines.join("; ")
        ),
    )
    .with_details(json!({"findings": report.findings}))
}

fn build_bundle(
    dir: &Path,
    out: &Path,
    format: BuildFormat,
    allowlist: Option<&Path>,
) -> Result<Report, CliError> {
    let options = BuildOptions {
        format: match format {
            BuildFormat::Squashfs => bundle::BundleFormat::Squashfs,
            BuildFormat::Zip => bundle::BundleFormat::Zip,
        },
        allowlist: load_allowlist(allowlist, Some(dir))?,
    };
    // A progress bar only for people watching a terminal, on stderr so the
    // JSON on stdout stays clean.
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("scanning");
        bar
    });
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result = build(dir, out, options, &mut progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = result.map_err(|error| match error {
        BuildError::Leaks { report } => leak_error(&report),
        BuildError::Io { .. } => CliError::new(ErrorKind::Io, error.to_string()),
        other => CliError::new(ErrorKind::InvalidArgument, other.to_string()),
    })?;
    for skipped in &report.skipped {
        crate::output::errln!("skipped {}: {}", skipped.path, skipped.reason);
    }
    let warnings = staging_warnings(&report.output);
    for warning in &warnings {
        crate::output::errln!("warning: {warning}");
    }
    let mut result = json!(report);
    result["warnings"] = json!(warnings);
    Ok(Report::new("bundle", "build", result))
}

/// Why staging would refuse the bundle just written (read back with the
/// same checks staging runs), each saying what to add. The bundle is still
/// written: a work-in-progress folder may be built on purpose.
fn staging_warnings(bundle: &Path) -> Vec<String> {
    let inspection = match bundle::inspect::inspect(bundle, ExtractLimits::default()) {
        Ok(inspection) => inspection,
        Err(error) => {
            return vec![format!(
                "the written bundle could not be read back, so staging will refuse it: {error}"
            )];
        }
    };
    let mut warnings = Vec::new();
    if let Some(error) = inspection.manifest_error {
        warnings.push(format!(
            "staging will refuse this bundle: {error}; add bundle.yaml (schema_version: 1, bundle_id: …) or bundle-manifest.json at the folder's root"
        ));
    }
    if let Some(error) = inspection.packs_error {
        warnings.push(format!("staging will refuse this bundle: {error}"));
    }
    warnings
}

fn doctor(file: &Path, allowlist: Option<&Path>) -> Result<Report, CliError> {
    let scanner = Scanner::new(load_allowlist(allowlist, None)?);
    let inspection =
        bundle::inspect::inspect(file, ExtractLimits::default()).map_err(archive_error)?;
    let mut scan = ScanReport::default();
    let raw = std::fs::read(file).map_err(|e| {
        CliError::new(
            ErrorKind::Io,
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    scan.merge(scanner.scan("<archive>", &raw));
    bundle::inspect::walk(
        file,
        inspection.format,
        ExtractLimits::default(),
        &mut |name, content| {
            let mut bytes = Vec::new();
            content
                .take(SCAN_FILE_BYTES_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| ArchiveError::Truncated {
                    entry: name.to_owned(),
                    reason: e.to_string(),
                })?;
            if bytes.len() as u64 > SCAN_FILE_BYTES_MAX {
                let mut report = ScanReport::default();
                report.notes.push(ScanNote {
                    path: name.to_owned(),
                    message: format!("larger than {SCAN_FILE_BYTES_MAX} bytes; not scanned"),
                });
                scan.merge(report);
            } else {
                scan.merge(scanner.scan(name, &bytes));
            }
            Ok(())
        },
    )
    .map_err(archive_error)?;
    // What staging, warming and the dev-secret rule would refuse, in their
    // own words: the bundle is staged for real into a scratch folder.
    let staged = trial_stage(file);
    let extracted = staged
        .as_ref()
        .ok()
        .map(|scratch| deploy::layout::extracted_bundle(&scratch.path().join("revision")));
    let staging = match &staged {
        Ok(_) => json!({"status": "ok"}),
        Err(error) => json!({"status": "error", "message": error.message}),
    };
    let (runtime, runtime_ok) = match &extracted {
        Some(root) => match crate::checks::runnable(root) {
            Ok(runtime) => (
                json!({"status": "ok", "instances": runtime.instances, "command": runtime.command}),
                true,
            ),
            Err(message) => (json!({"status": "error", "message": message}), false),
        },
        None => (
            json!({"status": "unknown", "message": "the bundle does not stage (see staging)"}),
            false,
        ),
    };
    let dev_secrets = dev_secret_problems(&inspection.files);
    let healthy = scan.findings.is_empty()
        && inspection.manifest_error.is_none()
        && inspection.packs_error.is_none()
        && staged.is_ok()
        && runtime_ok
        && dev_secrets.is_empty();
    let mut report = Report::new(
        "bundle",
        "doctor",
        json!({
            "path": inspection.path,
            "format": inspection.format,
            "digest": inspection.digest,
            "healthy": healthy,
            "archive": {"status": "ok", "entries": inspection.files.len(), "total_bytes": inspection.total_bytes},
            "manifest": {"status": if inspection.manifest_error.is_none() { "ok" } else { "error" }, "message": inspection.manifest_error},
            "packs": {"status": if inspection.packs_error.is_none() { "ok" } else { "error" }, "message": inspection.packs_error, "pinned": inspection.packs.len()},
            "staging": staging,
            "runtime": runtime,
            "dev_secrets": dev_secrets,
            "secrets": {"findings": scan.findings, "notes": scan.notes, "allowed": scan.allowed},
        }),
    );
    report.exit_code = if healthy {
        0
    } else {
        crate::error::EXIT_FAILURE
    };
    Ok(report)
}

/// Stages `file` into a scratch folder exactly as `revisions stage` would;
/// returns the scratch folder (holding `bundle/`) or staging's refusal as
/// `revisions stage` words it.
fn trial_stage(file: &Path) -> Result<tempfile::TempDir, CliError> {
    let scratch = tempfile::Builder::new()
        .prefix("gtc-doctor-")
        .tempdir()
        .map_err(|e| {
            CliError::new(
                ErrorKind::Io,
                format!("cannot create a scratch folder to stage into: {e}"),
            )
        })?;
    let revision_id = RevisionId::from_ulid(ulid::Ulid::nil());
    let request = StageRequest {
        bundle: file.to_owned(),
        revision_dir: scratch.path().join("revision"),
        env_relative_dir: deploy::layout::revision_dir_in_env(revision_id),
        revision_id,
        limits: ExtractLimits::default(),
    };
    stage(&request).map_err(stage_error)?;
    Ok(scratch)
}

/// Every entry of the archive the dev-secret rule names, and every link
/// to one (present or not), each with the rule's words.
fn dev_secret_problems(rows: &[bundle::inspect::FileRow]) -> Vec<serde_json::Value> {
    let mut problems = Vec::new();
    for row in rows {
        if let Some(reason) = bundle::build::dev_secret_reason(&row.path, row.kind == "dir") {
            problems.push(json!({"path": row.path, "message": format!("{}: {reason}", row.path)}));
            continue;
        }
        let Some(target) = &row.target else {
            continue;
        };
        let Some(resolved) = bundle::extract::resolve_lexically(&row.path, target) else {
            continue; // a link leaving the bundle: staging refuses it
        };
        let is_dir = rows.iter().any(|r| r.path == resolved && r.kind == "dir");
        if let Some(reason) = bundle::build::dev_secret_reason(&resolved, is_dir) {
            problems.push(json!({
                "path": row.path,
                "message": format!("{} links to {resolved}: {reason}", row.path),
            }));
        }
    }
    problems
}

fn stage_error(error: StageError) -> CliError {
    match error {
        StageError::Archive(archive) => archive_error(archive),
        StageError::Io { .. } => CliError::new(ErrorKind::Io, error.to_string()),
        other => {
            CliError::new(ErrorKind::BundleRefused, other.to_string()).with_field("bundle_path")
        }
    }
}

/// `revisions stage` with `bundle_path`: stage the file into the revision
/// folder, then record the revision; on any refusal the folder is removed.
pub fn stage_revision(
    context: &Context,
    answers: RevisionStageAnswers,
    bundle_path: &str,
) -> Result<Report, CliError> {
    let env = answers.environment_id.clone();
    // A retry of an idempotent request replays without staging again.
    let replay = match answers.idempotency_key.as_deref() {
        Some(key) => context.idempotency_record(env.as_str(), key)?.is_some(),
        None => false,
    };
    if replay {
        return context.submit(Command::RevisionStage {
            answers,
            staged: None,
        });
    }
    let revision_id = answers
        .revision_id
        .unwrap_or_else(|| RevisionId::from_ulid(ulid::Ulid::new()));
    let env_relative_dir = deploy::layout::revision_dir_in_env(revision_id);
    let request = StageRequest {
        bundle: PathBuf::from(bundle_path),
        revision_dir: context.store.env_dir(&env).join(&env_relative_dir),
        env_relative_dir,
        revision_id,
        limits: ExtractLimits::default(),
    };
    let staged = match stage(&request) {
        Ok(staged) => staged,
        Err(error) => {
            let error = stage_error(error);
            return Err(context.refuse(
                Command::RevisionStage {
                    answers,
                    staged: None,
                },
                error,
            ));
        }
    };
    let uses = staged
        .manifest
        .runtime
        .as_ref()
        .map_or(&[][..], |r| r.secrets.as_slice());
    // Held until the revision is committed: no pinned version is removed
    // in between.
    let pinning = crate::secrets_cmd::hold_for_pinning(context.store.root(), &env, uses);
    let checked = pinning.and_then(|guard| {
        staged
            .manifest
            .bundle_id
            .parse()
            .map_err(|e: deploy::ids::OpaqueIdError| {
                CliError::new(ErrorKind::BundleRefused, e.to_string())
            })
            .and_then(|bundle_id| {
                crate::secrets_cmd::pin_uses(&context.store, context.store.root(), &env, uses)
                    .map(|pins| (bundle_id, pins, guard))
            })
    });
    let (bundle_id, secret_pins, _pinning) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            // Nothing of a refused stage stays behind.
            if !staged.already_staged {
                let _ = std::fs::remove_dir_all(&request.revision_dir);
            }
            return Err(context.refuse(
                Command::RevisionStage {
                    answers,
                    staged: None,
                },
                error,
            ));
        }
    };
    let command = Command::RevisionStage {
        answers,
        staged: Some(Box::new(StagedBundle {
            revision_id,
            bundle_id,
            bundle_digest: staged.digest.clone(),
            pack_list: staged.lock.pack_list(),
            pack_list_lock_ref: staged.lock_ref.clone(),
            runtime_instances: staged.manifest.runtime.as_ref().map(|r| r.instances),
            scaling: staged.manifest.runtime.as_ref().and_then(|r| r.scaling),
            secret_pins: secret_pins.clone(),
            config_reload: staged
                .manifest
                .runtime
                .as_ref()
                .map(|r| r.reload)
                .unwrap_or_default(),
        })),
    };
    match context.submit(command) {
        Ok(mut report) => {
            report.result["bundle_digest"] = json!(staged.digest);
            report.result["packs"] = json!(staged.lock.packs);
            report.result["runtime"] = json!(staged.manifest.runtime.is_some());
            if !secret_pins.is_empty() {
                report.result["secret_pins"] = json!(secret_pins);
            }
            Ok(report)
        }
        Err(error) => {
            if !staged.already_staged {
                let _ = std::fs::remove_dir_all(&request.revision_dir);
            }
            Err(error)
        }
    }
}
