//! Checks that a revision's program is shipped inside its bundle.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{CommandProblem, StartError};

/// Any of the owner/group/other execute bits.
const EXECUTE_BITS: u32 = 0o111;

/// Resolves `command[0]` to a canonical path inside the canonical `bundle_root`.
///
/// The returned path is what gets executed, so a symlink cannot be swapped
/// between this check and the spawn to point elsewhere through `command[0]`.
pub(crate) fn resolve(bundle_root: &Path, command: &[String]) -> Result<PathBuf, StartError> {
    let first = command
        .first()
        .filter(|c| !c.is_empty())
        .ok_or(StartError::EmptyCommand)?;
    let relative = Path::new(first);
    if !is_plain_relative(relative) {
        return Err(outside(first));
    }
    let root =
        fs::canonicalize(bundle_root).map_err(|e| missing(bundle_root.join(relative), &e))?;
    let resolved =
        fs::canonicalize(root.join(relative)).map_err(|e| missing(root.join(relative), &e))?;
    if !resolved.starts_with(&root) {
        return Err(outside(first));
    }
    check_runnable(&resolved)?;
    Ok(resolved)
}

/// True for paths made only of normal names (and `.`): no root, no `..`.
fn is_plain_relative(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn check_runnable(path: &Path) -> Result<(), StartError> {
    let meta = fs::metadata(path).map_err(|e| missing(path.to_owned(), &e))?;
    let problem = if !meta.is_file() {
        CommandProblem::NotAFile
    } else if meta.permissions().mode() & EXECUTE_BITS == 0 {
        CommandProblem::NotExecutable
    } else {
        return Ok(());
    };
    Err(StartError::CommandMissing {
        path: path.to_owned(),
        problem,
    })
}

fn outside(command: &str) -> StartError {
    StartError::CommandOutsideBundle {
        command: command.to_owned(),
    }
}

fn missing(path: PathBuf, error: &io::Error) -> StartError {
    let problem = match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => CommandProblem::NotFound,
        _ => CommandProblem::Unresolvable,
    };
    StartError::CommandMissing { path, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_pass_the_syntax_check() {
        // Proves absolute paths and any '..' are refused before touching the disk.
        assert!(is_plain_relative(Path::new("bin/server")));
        assert!(is_plain_relative(Path::new("./bin/server")));
        assert!(!is_plain_relative(Path::new("/bin/sh")));
        assert!(!is_plain_relative(Path::new("../server")));
        assert!(!is_plain_relative(Path::new("bin/../../server")));
    }
}
