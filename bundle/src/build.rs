//! `gtc bundle build`: a folder in, a deterministic bundle out, without the
//! developer's secrets, and never if the secret scanner finds a leak.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use deploy::canonical::ContentDigest;
use serde::Serialize;
use thiserror::Error;

use crate::format::BundleFormat;
use crate::manifest::{BUNDLE_YAML, MANIFEST_JSON, ManifestError, describe};
use crate::scan::{Allowlist, ScanReport, Scanner};
use crate::stage::file_digest;
use crate::write::{Content, Node, WriteError, write};

/// Folders and files that hold a developer's local secrets; never packed.
const DEV_SECRET_DIRS: [&str; 2] = [".greentic/dev", ".greentic/state/dev"];
/// Suffix of local secret env files; never packed.
const DEV_SECRET_SUFFIX: &str = ".dev.secrets.env";
/// Setup answers whose secret parts are dropped before packing.
const SETUP_STATE_DIR: &str = "state/setup";
/// The allowlist a bundle folder may carry for documented false positives.
pub const ALLOWLIST_FILE: &str = ".gtbundle-allowlist.json";

/// How to build.
pub struct BuildOptions {
    pub format: BundleFormat,
    pub allowlist: Allowlist,
}

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// What `build` did.
#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub output: PathBuf,
    pub format: BundleFormat,
    pub digest: ContentDigest,
    pub size_bytes: u64,
    pub files: usize,
    pub bundle_id: String,
    pub skipped: Vec<Skipped>,
    /// Setup files whose secret values were removed.
    pub sanitized: Vec<String>,
    pub scan: ScanReport,
}

/// Why a build was refused; no output file was written.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("{path} is not a folder; pass the folder that holds the bundle's files")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} is a symlink to {target:?}, which leaves the bundle folder or points nowhere; copy the file in instead"
    )]
    SymlinkEscape { path: String, target: String },
    #[error("{path} is a device, fifo or socket; bundles hold only files, folders and symlinks")]
    SpecialFile { path: String },
    #[error("{path}: file names must be valid UTF-8")]
    NonUtf8 { path: String },
    #[error("the bundle folder has no valid manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the bundle would leak {count} secret(s); nothing was written", count = report.findings.len())]
    Leaks { report: ScanReport },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

/// Progress callback: bytes processed so far, bytes in total.
pub type Progress<'p> = dyn FnMut(u64, u64) + 'p;

/// The tree to pack, with what was left out.
pub struct Collected {
    pub nodes: Vec<Node>,
    pub skipped: Vec<Skipped>,
    pub sanitized: Vec<String>,
    pub total_bytes: u64,
}

/// The dev-secret rule: why `relative` (a path inside a bundle folder or
/// archive) holds local development secrets, if it does. `build` leaves
/// such paths out with this reason; `bundle doctor` fails on an archive
/// that carries one, or a link to one, with the same words.
pub fn dev_secret_reason(relative: &str, is_dir: bool) -> Option<String> {
    skip_reason(relative, is_dir)
}

fn skip_reason(relative: &str, is_dir: bool) -> Option<String> {
    for dir in DEV_SECRET_DIRS {
        if relative == dir || relative.starts_with(&format!("{dir}/")) {
            return Some(format!(
                "{dir}/ holds local development secrets and is never packed"
            ));
        }
    }
    if !is_dir && relative.ends_with(DEV_SECRET_SUFFIX) {
        return Some(format!(
            "*{DEV_SECRET_SUFFIX} files hold local secrets and are never packed"
        ));
    }
    None
}

/// Removes secret values from a setup-answers document; `None` when
/// nothing had to change (or it is not JSON, which the scanner still sees).
fn sanitize_setup(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut document: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let object = document.as_object_mut()?;
    let mut changed = false;
    if let Some(values) = object.get_mut("secret_values")
        && values.as_object().is_none_or(|map| !map.is_empty())
    {
        *values = serde_json::json!({});
        changed = true;
    }
    if let Some(answers) = object.get_mut("answers").and_then(|a| a.as_object_mut()) {
        let before = answers.len();
        answers.retain(|_, answer| answer.get("secret").and_then(|s| s.as_bool()) != Some(true));
        changed |= answers.len() != before;
    }
    if !changed {
        return None;
    }
    let mut out = serde_json::to_vec_pretty(&document).ok()?;
    out.push(b'\n');
    Some(out)
}

/// Walks `dir` in name order and decides what goes into the bundle.
pub fn collect(dir: &Path, exclude: Option<&Path>) -> Result<Collected, BuildError> {
    if !dir.is_dir() {
        return Err(BuildError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let root = fs::canonicalize(dir).map_err(io("resolve", dir))?;
    let exclude = exclude.and_then(|path| fs::canonicalize(path).ok());
    let mut collected = Collected {
        nodes: Vec::new(),
        skipped: Vec::new(),
        sanitized: Vec::new(),
        total_bytes: 0,
    };
    walk(&root, &root, exclude.as_deref(), &mut collected)?;
    Ok(collected)
}

fn walk(
    root: &Path,
    dir: &Path,
    exclude: Option<&Path>,
    collected: &mut Collected,
) -> Result<(), BuildError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io("list", dir))?
        .flatten()
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let Some(relative) = relative.to_str().map(str::to_owned) else {
            return Err(BuildError::NonUtf8 {
                path: relative.display().to_string(),
            });
        };
        let file_type = entry.file_type().map_err(io("stat", &path))?;
        if exclude == Some(path.as_path()) {
            collected.skipped.push(Skipped {
                path: relative,
                reason: "it is the output file of this build".to_owned(),
            });
            continue;
        }
        if let Some(reason) = skip_reason(&relative, file_type.is_dir()) {
            collected.skipped.push(Skipped {
                path: relative,
                reason,
            });
            continue;
        }
        if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(io("read link", &path))?;
            let target = target.to_string_lossy().into_owned();
            // A link to a dev secret would point at a file left out (or
            // carry the secret's name): the dev-secret rule covers it too.
            let resolved = crate::extract::resolve_lexically(&relative, &target);
            let secret = resolved.as_deref().and_then(|resolved| {
                skip_reason(resolved, fs::metadata(&path).is_ok_and(|m| m.is_dir()))
                    .map(|reason| format!("it links to {resolved}: {reason}"))
            });
            if let Some(reason) = secret {
                collected.skipped.push(Skipped {
                    path: relative,
                    reason,
                });
                continue;
            }
            let inside = fs::canonicalize(&path).is_ok_and(|resolved| resolved.starts_with(root))
                && crate::extract::resolve_lexically(&relative, &target).is_some();
            if !inside {
                return Err(BuildError::SymlinkEscape {
                    path: relative,
                    target,
                });
            }
            collected.nodes.push(Node::Symlink {
                path: relative,
                target,
            });
        } else if file_type.is_dir() {
            collected.nodes.push(Node::Dir { path: relative });
            walk(root, &path, exclude, collected)?;
        } else if file_type.is_file() {
            if is_bundle_archive(&path) {
                collected.skipped.push(Skipped {
                    path: relative,
                    reason: "it is a bundle (an earlier build's output); a bundle is never packed inside another".to_owned(),
                });
                continue;
            }
            add_file(&path, relative, collected)?;
        } else {
            return Err(BuildError::SpecialFile { path: relative });
        }
    }
    Ok(())
}

/// Whether the file at `path` is a bundle: an archive (recognised by its
/// magic bytes, not its name) with a bundle manifest at its root. Packs
/// (`.gtpack` ZIPs) have none, so they are still packed.
fn is_bundle_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    let read = fs::File::open(path).and_then(|file| {
        file.take(crate::format::DETECT_BYTES as u64)
            .read_to_end(&mut head)
    });
    if read.is_err() {
        return false;
    }
    // By magic bytes only: the name decides nothing here.
    let Ok(format) = crate::format::detect(&head, Path::new("")) else {
        return false;
    };
    let mut found = false;
    // Stop at the first manifest; any error means "not a readable bundle".
    let _ = crate::read::visit(path, format, &mut |entry, _| {
        let name = String::from_utf8_lossy(&entry.name);
        let name = name.trim_start_matches("./");
        if name == MANIFEST_JSON || name == BUNDLE_YAML {
            found = true;
            return Err(crate::read::ArchiveError::Truncated {
                entry: name.to_owned(),
                reason: "found".to_owned(),
            });
        }
        Ok(())
    });
    found
}

fn add_file(path: &Path, relative: String, collected: &mut Collected) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = fs::metadata(path).map_err(io("stat", path))?;
    let executable = metadata.permissions().mode() & 0o111 != 0;
    let in_setup =
        relative.starts_with(&format!("{SETUP_STATE_DIR}/")) && relative.ends_with(".json");
    let content = if in_setup {
        let bytes = fs::read(path).map_err(io("read", path))?;
        match sanitize_setup(&bytes) {
            Some(clean) => {
                collected.sanitized.push(relative.clone());
                Content::Bytes(clean)
            }
            None => Content::Bytes(bytes),
        }
    } else {
        Content::Path(path.to_owned())
    };
    collected.total_bytes += metadata.len();
    collected.nodes.push(Node::File {
        path: relative,
        content,
        executable,
    });
    Ok(())
}

fn content_bytes(content: &Content) -> Result<Vec<u8>, BuildError> {
    match content {
        Content::Bytes(bytes) => Ok(bytes.clone()),
        Content::Path(path) => fs::read(path).map_err(io("read", path)),
    }
}

/// Builds `dir` into `out`.
pub fn build(
    dir: &Path,
    out: &Path,
    options: BuildOptions,
    progress: &mut Progress<'_>,
) -> Result<BuildReport, BuildError> {
    let collected = collect(dir, Some(out))?;
    let file = |name: &str| -> Result<Option<Vec<u8>>, BuildError> {
        collected
            .nodes
            .iter()
            .find_map(|node| match node {
                Node::File { path, content, .. } if path == name => Some(content_bytes(content)),
                _ => None,
            })
            .transpose()
    };
    let manifest = describe(
        file(MANIFEST_JSON)?.as_deref(),
        file(BUNDLE_YAML)?.as_deref(),
    )?;

    let scanner = Scanner::new(options.allowlist);
    let mut scan = ScanReport::default();
    let mut done = 0u64;
    let mut files = 0usize;
    for node in &collected.nodes {
        if let Node::File { path, content, .. } = node {
            let bytes = content_bytes(content)?;
            done += bytes.len() as u64;
            files += 1;
            scan.merge(scanner.scan(path, &bytes));
            progress(done, collected.total_bytes);
        }
    }

    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io("create", parent))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".gtbundle-")
        .tempfile_in(parent)
        .map_err(io("create a temporary file in", parent))?;
    write(&collected.nodes, options.format, temp.as_file_mut())?;
    temp.as_file_mut()
        .flush()
        .map_err(io("write", temp.path()))?;
    let archive = fs::read(temp.path()).map_err(io("read", temp.path()))?;
    scan.merge(scanner.scan("<archive>", &archive));
    if !scan.findings.is_empty() {
        return Err(BuildError::Leaks { report: scan });
    }
    temp.as_file()
        .sync_all()
        .map_err(io("fsync", temp.path()))?;
    temp.persist(out)
        .map_err(|error| io("write", out)(error.error))?;
    Ok(BuildReport {
        output: out.to_owned(),
        format: options.format,
        digest: file_digest(out)
            .map_err(|e| io("hash", out)(std::io::Error::other(e.to_string())))?,
        size_bytes: archive.len() as u64,
        files,
        bundle_id: manifest.bundle_id,
        skipped: collected.skipped,
        sanitized: collected.sanitized,
        scan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_secret_paths_are_skipped() {
        assert!(skip_reason(".greentic/dev", true).is_some());
        assert!(skip_reason(".greentic/dev/token", false).is_some());
        assert!(skip_reason(".greentic/state/dev/x.json", false).is_some());
        assert!(skip_reason("config/app.dev.secrets.env", false).is_some());
        assert!(skip_reason(".greentic/device.json", false).is_none());
        assert!(skip_reason("src/dev.rs", false).is_none());
    }

    #[test]
    fn setup_answers_lose_their_secrets() {
        let input = br#"{"secret_values":{"db":"hunter2"},"answers":{"region":{"value":"eu"},"password":{"value":"pw","secret":true}}}"#;
        let clean = sanitize_setup(input).expect("changed");
        let text = String::from_utf8(clean).expect("utf8");
        assert!(
            !text.contains("hunter2") && !text.contains("\"pw\""),
            "{text}"
        );
        assert!(text.contains("region"));
        assert_eq!(
            sanitize_setup(br#"{"answers":{"region":{"value":"eu"}}}"#),
            None
        );
    }
}
