//! Why a start failed, in terms an operator can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why [`crate::start`] could not produce a healthy instance.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `command` was empty: there is no program to run.
    #[error("the revision's command is empty; it must name a program inside the bundle")]
    EmptyCommand,
    /// `command[0]` is absolute, contains `..`, or resolves (through symlinks) outside
    /// the bundle. Refused so a bundle cannot run programs it does not ship.
    #[error(
        "command {command:?} points outside the bundle; it must be a relative path \
         to a program shipped inside the bundle, without '..'"
    )]
    CommandOutsideBundle {
        /// The offending `command[0]`.
        command: String,
    },
    /// `command[0]` is not there, or not a runnable file.
    #[error(
        "command {} {problem}; the bundle must ship it as a regular file with an \
         execute bit (e.g. mode 0755)",
        .path.display()
    )]
    CommandMissing {
        /// Where the program was looked for.
        path: PathBuf,
        /// Which check failed.
        problem: CommandProblem,
    },
    /// The OS refused to start the process.
    #[error("could not spawn {command:?}: {source}")]
    Spawn {
        /// The command line that was being started.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// The process exited before its health path ever answered 2xx.
    #[error(
        "the process exited ({status}) before becoming healthy; last log lines:\n{}",
        .last_log_lines.join("\n")
    )]
    Exited {
        /// How it exited, e.g. `exit status: 3`.
        status: String,
        /// The last lines of its stdout and stderr logs from this start.
        last_log_lines: Vec<String>,
    },
    /// The health path never answered 2xx within the startup timeout (the process
    /// never listened, or it kept answering non-2xx). The process has been stopped.
    #[error(
        "no 2xx from the health path within {after:?} (never listened, or unhealthy); \
         last log lines:\n{}",
        .last_log_lines.join("\n")
    )]
    HealthTimeout {
        /// The startup timeout that ran out.
        after: Duration,
        /// The last lines of its stdout and stderr logs from this start.
        last_log_lines: Vec<String>,
    },
    /// No port could be reserved on the instance's host address.
    #[error("no free port on the instance's host address: {source}")]
    NoFreePort {
        /// The OS error from binding `<host>:0`.
        source: io::Error,
    },
    /// The log folder or a log file could not be created or opened.
    #[error("cannot open log file {}: {source}", .path.display())]
    LogFile {
        /// The file (or folder) that failed.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Which check on `command[0]` failed, for [`StartError::CommandMissing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandProblem {
    /// Nothing exists at that path inside the bundle.
    NotFound,
    /// The path could not be resolved (permission denied, symlink loop, ...).
    Unresolvable,
    /// It exists but is not a regular file (e.g. a folder).
    NotAFile,
    /// It is a regular file without any execute bit.
    NotExecutable,
}

impl fmt::Display for CommandProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFound => "was not found in the bundle",
            Self::Unresolvable => "could not be resolved (permission denied or symlink loop)",
            Self::NotAFile => "is not a regular file",
            Self::NotExecutable => "is not executable (it has no execute bit)",
        })
    }
}
