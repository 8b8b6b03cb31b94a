//! The process group an instance runs in.
//!
//! Each instance is started as the leader of a new process group, so that
//! helpers it forks (a shell script's children, worker processes) are signalled
//! and killed together with it and none is left holding a port.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Owns an instance's process group: signals it, and SIGKILLs it when dropped
/// unless the group was already swept after the leader's exit.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: Pid,
    armed: bool,
}

impl ProcessGroup {
    /// The group led by `pid` (the child was spawned with `process_group(0)`).
    /// `None` only if `pid` does not fit a `pid_t`, which no real pid does.
    pub(crate) fn led_by(pid: u32) -> Option<Self> {
        let raw = i32::try_from(pid).ok()?;
        Some(Self {
            pgid: Pid::from_raw(raw),
            armed: true,
        })
    }

    /// Sends `signal` to every process in the group. Returns false if the group
    /// is already gone (or was swept), true if the signal was delivered.
    pub(crate) fn signal(&self, signal: Signal) -> bool {
        if !self.armed {
            return false;
        }
        match killpg(self.pgid, signal) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(e) => {
                tracing::warn!(pgid = %self.pgid, ?signal, error = %e, "cannot signal process group");
                false
            }
        }
    }

    /// Called once the leader has been reaped: SIGKILLs whatever is left in the
    /// group (orphaned helpers), then stops acting on this pgid for good.
    ///
    /// The group id cannot be handed to a new process while any member of the
    /// group is alive, so this is safe right after reaping; disarming afterwards
    /// keeps a later drop from signalling a recycled id.
    pub(crate) fn sweep_and_disarm(&mut self) {
        self.signal(Signal::SIGKILL);
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // The handle went away without a stop: the processes must not outlive it.
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}
