//! Writing a render into a folder, whole or not at all.
//!
//! The rule for the target folder `DIR`:
//! - absent, or an empty folder: the render becomes it;
//! - a folder holding only files of a previous render (regular files named
//!   `all.yaml` or `NN-<lowercase name>.yaml`, as the render names them):
//!   it is replaced whole, so a worker whose revision left the active set
//!   leaves no stale file behind;
//! - anything else (another file, a subfolder, a link, a file rather than a
//!   folder): refused, so a render never deletes a file it did not write.
//!
//! The files are written into a fresh hidden folder beside `DIR` (same
//! file system), each fsynced, then renamed into place; the previous render
//! is renamed aside first and removed after. A failure before the rename
//! removes the hidden folder, so `DIR` is never half-written: it holds the
//! old render or the new one. (A crash between the two renames leaves the
//! old one under `.DIR.previous-…` beside it.)

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use deploy::error::ErrorKind;
use k8s_deployer::{ALL_FILE_NAME, Rendered};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::CliError;

/// Most entries a folder may hold and still count as a previous render: a
/// render writes about a dozen files plus three per active revision, so a
/// folder past this bound is not one, and listing it stops there.
const PREVIOUS_RENDER_ENTRIES_MAX: usize = 10_000;
/// How many foreign entries a refusal names.
const FOREIGN_ENTRIES_SHOWN: usize = 5;

/// What was written.
#[derive(Debug)]
pub struct Written {
    /// The folder, absolute.
    pub directory: PathBuf,
    /// True when a previous render was replaced.
    pub replaced_previous: bool,
    /// Every file in write order, `all.yaml` last.
    pub files: Vec<WrittenFile>,
}

/// One written file.
#[derive(Debug, Serialize)]
pub struct WrittenFile {
    pub name: String,
    /// Hex SHA-256 of the bytes written, so two renders can be compared
    /// from their answers alone.
    pub sha256: String,
    pub bytes: usize,
}

/// What `DIR` held before the write.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Absent,
    Empty,
    PreviousRender,
}

/// Writes every file of `rendered` and `all.yaml` into `dir` by the rule
/// in the module comment.
pub fn write(dir: &Path, rendered: &Rendered) -> Result<Written, CliError> {
    let directory = std::path::absolute(dir).map_err(|e| io_error("resolve", dir, &e))?;
    let (parent, name) = match (directory.parent(), directory.file_name()) {
        (Some(parent), Some(name)) => (parent.to_owned(), name.to_string_lossy().into_owned()),
        _ => {
            return Err(CliError::usage(format!(
                "--render {}: name a folder to write into, not the root",
                dir.display()
            )));
        }
    };
    let target = inspect(&directory)?;
    fs::create_dir_all(&parent).map_err(|e| io_error("create", &parent, &e))?;
    let staging = Staging::create(&parent, &name)?;
    let mut files = Vec::with_capacity(rendered.files.len() + 1);
    let all = (ALL_FILE_NAME.to_owned(), rendered.all.clone());
    for (file, text) in rendered.files.iter().chain(std::iter::once(&all)) {
        files.push(staging.write(file, text.as_bytes())?);
    }
    staging.sync()?;
    let replaced_previous = target == Target::PreviousRender;
    if replaced_previous {
        staging.replace(&directory, &parent, &name)?;
    } else {
        staging.rename_to(&directory)?;
    }
    sync_dir(&parent)?;
    Ok(Written {
        directory,
        replaced_previous,
        files,
    })
}

/// True for a file name the render writes: `all.yaml`, or two digits, a
/// dash, lowercase letters, digits, dashes or dots, and `.yaml`.
pub fn is_render_file_name(name: &str) -> bool {
    if name == ALL_FILE_NAME {
        return true;
    }
    let Some(stem) = name.strip_suffix(".yaml") else {
        return false;
    };
    let bytes = stem.as_bytes();
    bytes.len() > 3
        && bytes[..2].iter().all(u8::is_ascii_digit)
        && bytes[2] == b'-'
        && bytes[3..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
}

fn inspect(directory: &Path) -> Result<Target, CliError> {
    let metadata = match fs::symlink_metadata(directory) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Absent),
        Err(error) => return Err(io_error("inspect", directory, &error)),
    };
    if !metadata.is_dir() {
        return Err(refusal(
            directory,
            "it exists and is not a folder",
            Vec::new(),
        ));
    }
    let entries = fs::read_dir(directory).map_err(|e| io_error("list", directory, &e))?;
    let mut count = 0;
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", directory, &e))?;
        count += 1;
        if count > PREVIOUS_RENDER_ENTRIES_MAX {
            return Err(refusal(
                directory,
                "it holds more entries than a render writes",
                foreign,
            ));
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        if !(is_file && is_render_file_name(&name)) && foreign.len() < FOREIGN_ENTRIES_SHOWN {
            foreign.push(name);
        }
    }
    match (count, foreign.is_empty()) {
        (0, _) => Ok(Target::Empty),
        (_, true) => Ok(Target::PreviousRender),
        (_, false) => Err(refusal(
            directory,
            "it holds files that are not a previous render's",
            foreign,
        )),
    }
}

fn refusal(directory: &Path, why: &str, foreign: Vec<String>) -> CliError {
    CliError::new(
        ErrorKind::Conflict,
        format!(
            "--render {}: {why}; the render writes only into a new or empty folder, or one holding only a previous render (all.yaml and NN-*.yaml files), so it never deletes a file it did not write; pick another folder or empty this one",
            directory.display()
        ),
    )
    .with_details(json!({"directory": directory, "foreign_entries": foreign}))
}

/// The hidden folder the render is written into, removed on drop unless it
/// was renamed into place.
struct Staging {
    path: PathBuf,
    placed: std::cell::Cell<bool>,
}

impl Staging {
    fn create(parent: &Path, name: &str) -> Result<Self, CliError> {
        let path = parent.join(format!(".{name}.render-{}", ulid::Ulid::new()));
        fs::create_dir(&path).map_err(|e| io_error("create", &path, &e))?;
        Ok(Self {
            path,
            placed: std::cell::Cell::new(false),
        })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<WrittenFile, CliError> {
        if !is_render_file_name(name) {
            return Err(CliError::new(
                ErrorKind::Internal,
                format!("the render named a file {name:?} outside its naming rule"),
            ));
        }
        let path = self.path.join(name);
        let mut file = fs::File::create_new(&path).map_err(|e| io_error("create", &path, &e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write", &path, &e))?;
        Ok(WrittenFile {
            name: name.to_owned(),
            sha256: hex::encode(Sha256::digest(bytes)),
            bytes: bytes.len(),
        })
    }

    fn sync(&self) -> Result<(), CliError> {
        sync_dir(&self.path)
    }

    /// Renames the staging folder to `directory` (absent or empty).
    fn rename_to(&self, directory: &Path) -> Result<(), CliError> {
        fs::rename(&self.path, directory).map_err(|e| io_error("rename into", directory, &e))?;
        self.placed.set(true);
        Ok(())
    }

    /// Moves the previous render aside, renames this one into place, and
    /// removes the previous one; puts it back if the second rename fails.
    fn replace(&self, directory: &Path, parent: &Path, name: &str) -> Result<(), CliError> {
        let aside = parent.join(format!(".{name}.previous-{}", ulid::Ulid::new()));
        fs::rename(directory, &aside).map_err(|e| io_error("move aside", directory, &e))?;
        if let Err(error) = self.rename_to(directory) {
            let _ = fs::rename(&aside, directory);
            return Err(error);
        }
        if let Err(error) = fs::remove_dir_all(&aside) {
            tracing::warn!(path = %aside.display(), %error, "the previous render could not be removed");
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.placed.get() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn sync_dir(path: &Path) -> Result<(), CliError> {
    fs::File::open(path)
        .and_then(|folder| folder.sync_all())
        .map_err(|e| io_error("sync", path, &e))
}

fn io_error(action: &str, path: &Path, error: &std::io::Error) -> CliError {
    CliError::new(
        ErrorKind::Io,
        format!("cannot {action} {}: {error}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(files: &[(&str, &str)]) -> Rendered {
        Rendered {
            files: files
                .iter()
                .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
                .collect(),
            all: files
                .iter()
                .map(|(_, text)| *text)
                .collect::<Vec<_>>()
                .join("---\n"),
            objects: Vec::new(),
        }
    }

    #[test]
    fn render_file_names_follow_the_renders_rule() {
        // Proves the names the render writes pass and others do not.
        for good in [
            "all.yaml",
            "10-namespace.yaml",
            "50-deployment-gtc-worker-01hf.yaml",
        ] {
            assert!(is_render_file_name(good), "{good}");
        }
        for bad in [
            "README.md",
            "kustomization.yaml",
            "1-x.yaml",
            "10-.yaml",
            "10-A.yaml",
            "10-x.yml",
        ] {
            assert!(!is_render_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_previous_render_is_replaced_whole_and_a_foreign_folder_refused() {
        // Proves a new folder is created, a previous render replaced with
        // its stale file gone, a folder with another file refused and left
        // as it was, and no hidden staging folder left behind.
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("out");
        let first = write(
            &dir,
            &rendered(&[("10-a.yaml", "a: 1\n"), ("50-old.yaml", "o: 1\n")]),
        )
        .expect("first");
        assert!(!first.replaced_previous);
        assert_eq!(first.files.len(), 3);
        let second = write(&dir, &rendered(&[("10-a.yaml", "a: 2\n")])).expect("second");
        assert!(second.replaced_previous);
        assert!(!dir.join("50-old.yaml").exists());
        assert_eq!(
            fs::read_to_string(dir.join("10-a.yaml")).expect("read"),
            "a: 2\n"
        );
        fs::write(dir.join("notes.txt"), "mine").expect("write");
        let refused = write(&dir, &rendered(&[("10-a.yaml", "a: 3\n")])).expect_err("refused");
        assert_eq!(refused.kind, ErrorKind::Conflict);
        assert_eq!(
            fs::read_to_string(dir.join("10-a.yaml")).expect("read"),
            "a: 2\n"
        );
        let names: Vec<_> = fs::read_dir(root.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["out"]);
    }
}
