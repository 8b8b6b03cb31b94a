//! Per-instance log files, and their last lines for error reports.
//!
//! The child writes straight into the files (no pipe through the manager), so
//! its output survives a manager restart and every byte is on disk the moment
//! the process exits.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::StartError;

/// How many log lines (stdout and stderr together) a start error carries.
pub const LAST_LOG_LINES: usize = 20;
/// Most bytes read from the end of one log file to find its last lines, so a
/// huge log never costs more than this much memory in an error report.
pub const TAIL_READ_BYTES: u64 = 64 * 1024;

/// The two log files of one instance, and where this run's output starts in each.
#[derive(Debug)]
pub(crate) struct LogFiles {
    stdout: LogFile,
    stderr: LogFile,
}

/// One append-only log file; `start` is its length when this run began, so
/// error reports show this run's lines, not a previous run's.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    start: u64,
}

impl LogFiles {
    /// Creates `dir` if needed and opens (appending) the instance's two logs.
    /// Returns the handles to give the child as its stdout and stderr.
    pub(crate) fn open(dir: &Path, index: u32) -> Result<(Self, File, File), StartError> {
        fs::create_dir_all(dir).map_err(|source| StartError::LogFile {
            path: dir.to_owned(),
            source,
        })?;
        let (stdout, out) = LogFile::open(dir.join(format!("instance-{index}.stdout.log")))?;
        let (stderr, err) = LogFile::open(dir.join(format!("instance-{index}.stderr.log")))?;
        Ok((Self { stdout, stderr }, out, err))
    }

    /// Path of the stdout log.
    pub(crate) fn stdout_path(&self) -> &Path {
        &self.stdout.path
    }

    /// Path of the stderr log.
    pub(crate) fn stderr_path(&self) -> &Path {
        &self.stderr.path
    }

    /// The last `n` lines of this run, each prefixed with its stream. stderr lines
    /// come last (and so survive the cut), because that is where failures are told.
    pub(crate) fn last_lines(&self, n: usize) -> Vec<String> {
        let mut lines = self.stdout.tail("stdout", n);
        lines.extend(self.stderr.tail("stderr", n));
        let cut = lines.len().saturating_sub(n);
        lines.split_off(cut)
    }
}

impl LogFile {
    fn open(path: PathBuf) -> Result<(Self, File), StartError> {
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|file| file.metadata().map(|meta| (file, meta.len())));
        match opened {
            Ok((file, start)) => Ok((Self { path, start }, file)),
            Err(source) => Err(StartError::LogFile { path, source }),
        }
    }

    fn tail(&self, stream: &str, n: usize) -> Vec<String> {
        match read_since(&self.path, self.start) {
            Ok(text) => last_lines(&text, n)
                .into_iter()
                .map(|line| format!("[{stream}] {line}"))
                .collect(),
            Err(e) => vec![format!(
                "[{stream}] (could not read {}: {e})",
                self.path.display()
            )],
        }
    }
}

/// Reads what was appended after `start`, at most the last [`TAIL_READ_BYTES`].
fn read_since(path: &Path, start: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    // A file shorter than at our start was truncated (rotated): read it all.
    let start = if len < start { 0 } else { start };
    let from = start.max(len.saturating_sub(TAIL_READ_BYTES));
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    file.take(TAIL_READ_BYTES).read_to_end(&mut buf)?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if from > start {
        // We began mid-file: the first line is a fragment.
        let fragment_end = text.find('\n').map_or(text.len(), |i| i + 1);
        text.drain(..fragment_end);
    }
    Ok(text)
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    lines.iter().skip(skip).map(|l| (*l).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn last_lines_keeps_the_end() {
        // Proves the tail keeps the newest lines, and short texts whole.
        assert_eq!(last_lines("a\nb\nc\n", 2), vec!["b", "c"]);
        assert_eq!(last_lines("a\nb", 5), vec!["a", "b"]);
        assert!(last_lines("", 3).is_empty());
    }

    #[test]
    fn tails_show_only_this_run_with_stderr_last() {
        // Proves a previous run's lines are excluded and the total is capped.
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("instance-0.stdout.log");
        fs::write(&old, "previous run\n").expect("write");
        let (logs, mut out, mut err) = LogFiles::open(dir.path(), 0).expect("open");
        writeln!(out, "o1\no2\no3").expect("write");
        writeln!(err, "e1").expect("write");
        assert_eq!(
            logs.last_lines(3),
            vec!["[stdout] o2", "[stdout] o3", "[stderr] e1"]
        );
    }
}
