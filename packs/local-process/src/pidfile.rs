//! Pid files: how a restarted node finds the instances a killed node left.
//!
//! An instance runs in its own process group, so it outlives a node that is
//! SIGKILLed (nothing in the node runs to stop it, and a parent-death signal
//! would need `unsafe` in `pre_exec`). Each running instance therefore has a
//! pid file beside its logs holding its pid and the kernel's start time of
//! that process; when the revision is started again, [`reap_orphans`] kills
//! the group of every recorded process that is still the same process (same
//! start time, so a recycled pid is never signalled).

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

const SUFFIX: &str = ".pid";

/// The start time (clock ticks since boot) of `pid`, from `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after the last ')'. Start time is field 22 overall.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The pid file of a running instance; removed when dropped.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Records `pid` for instance `index` in `log_dir`. A failure to write is
    /// logged, not fatal: the instance runs either way, it is only not
    /// reapable after a node crash.
    pub(crate) fn record(log_dir: &Path, index: u32, pid: u32) -> Self {
        let path = log_dir.join(format!("instance-{index}-{pid}{SUFFIX}"));
        let text = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
        if let Err(error) = std::fs::write(&path, text) {
            tracing::warn!(path = %path.display(), %error, "cannot record the instance's pid");
        }
        Self { path }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `signal` to the process group of every live instance recorded in
/// `log_dir` (each instance leads its own group); returns how many groups
/// took it.
pub fn signal_live(log_dir: &Path, signal: Signal) -> usize {
    live_instances(log_dir)
        .into_iter()
        .filter_map(|(_, pid)| i32::try_from(pid).ok())
        .filter(|pid| killpg(Pid::from_raw(*pid), signal).is_ok())
        .count()
}

/// The instances recorded in `log_dir` whose process is still the one
/// recorded (same start time): `(index, pid)`, whoever started them.
pub fn live_instances(log_dir: &Path) -> Vec<(Option<u32>, u32)> {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return Vec::new();
    };
    let mut live = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = recorded.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pid)), Some(Ok(started))) = (fields.next(), fields.next())
            && let Ok(pid) = u32::try_from(pid)
            && started != 0
            && start_time(pid) == Some(started)
        {
            let index = stem
                .strip_prefix("instance-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|index| index.parse().ok());
            live.push((index, pid));
        }
    }
    live.sort_unstable();
    live
}

/// Kills the process groups of instances recorded in `log_dir` that are
/// still running (left by a node that was killed), and removes their pid
/// files. Returns how many groups were killed.
pub fn reap_orphans(log_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(SUFFIX) {
            continue;
        }
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = recorded.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pid)), Some(Ok(started))) = (fields.next(), fields.next()) {
            let alive_same = u32::try_from(pid)
                .ok()
                .filter(|pid| started != 0 && start_time(*pid) == Some(started));
            if let Some(pid) = alive_same.and_then(|pid| i32::try_from(pid).ok())
                && killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
            {
                tracing::warn!(pid, "killed an instance left running by a previous node");
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn only_a_live_recorded_process_with_the_same_start_time_is_killed() {
        // Proves: a stale pid file (process gone or pid reused) never
        // signals anything, and a live recorded group is killed.
        let dir = tempfile::tempdir().expect("temp");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn");
        let recorded = PidFile::record(dir.path(), 0, child.id());
        std::mem::forget(recorded);
        std::fs::write(
            dir.path().join("instance-1-999999999.pid"),
            "999999999 12345\n",
        )
        .expect("write");
        std::fs::write(
            dir.path()
                .join(format!("instance-2-{}.pid", std::process::id())),
            format!("{} 1\n", std::process::id()),
        )
        .expect("write");
        assert_eq!(reap_orphans(dir.path()), 1);
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the orphan was killed");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
