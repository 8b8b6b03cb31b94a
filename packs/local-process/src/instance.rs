//! Starting one instance, and the handle that checks and stops it.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::command;
use crate::environment::child_env;
use crate::error::StartError;
use crate::group::ProcessGroup;
use crate::health::probe;
use crate::logs::{LAST_LOG_LINES, LogFiles};
use crate::spec::InstanceSpec;

/// Longest wait between two polls of the health path of a new instance.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// First wait between polls; it doubles up to [`HEALTH_POLL_INTERVAL`]. A
/// service that listens within milliseconds is seen ready within
/// milliseconds (a cold start's added latency), and a slow one is polled
/// ten times a second, as before.
pub const HEALTH_POLL_FIRST: Duration = Duration::from_millis(2);
/// How many times a start is retried with a new port when the process died
/// complaining that its address was in use. The port is chosen by binding
/// `127.0.0.1:0` and releasing it, so another program can take it before the
/// child binds; one retry makes that small race practically invisible, while a
/// bound keeps a persistently failing bundle from looping. (The same holds for
/// the spec's `host` in place of `127.0.0.1`.)
pub const PORT_RACE_RETRIES: u32 = 1;
/// SIGTERM grace given to a process that failed to start before it is SIGKILLed.
pub const FAILED_START_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the kernel to reap a process after SIGKILL. Only a
/// process stuck in uninterruptible I/O takes longer; it is then left to the
/// drop-time kill instead of blocking the caller forever.
pub const KILL_REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit code reported when the OS could not tell how the process ended (waiting
/// on it failed). The process is treated as gone and its group is killed.
pub const UNOBSERVABLE_EXIT_CODE: i32 = 255;
/// How many times a spawn failing with ETXTBSY is retried (see `spawn_retrying_text_busy`).
pub const TEXT_BUSY_RETRIES: u32 = 3;
/// Pause before retrying a spawn that failed with ETXTBSY.
pub const TEXT_BUSY_BACKOFF: Duration = Duration::from_millis(50);

/// Log phrases that mean "the port was taken before the process bound it".
const ADDRESS_IN_USE_PHRASES: [&str; 2] = ["address in use", "address already in use"];

/// A started, healthy instance. Dropping it SIGKILLs its process group; use
/// [`RunningInstance::stop`] for an orderly stop.
#[derive(Debug)]
pub struct RunningInstance {
    // Declared before `child` so it drops first: the whole group is killed
    // before tokio's kill_on_drop reaps the leader and frees its pid.
    group: ProcessGroup,
    child: Child,
    pid: u32,
    addr: SocketAddr,
    health_path: String,
    logs: LogFiles,
    exit_status: Option<ExitStatus>,
    /// Lets a restarted node find this process if the node is killed.
    _pid_file: crate::pidfile::PidFile,
}

/// How [`RunningInstance::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The process had already exited before `stop` was called.
    AlreadyExited(ExitStatus),
    /// The process exited within the grace period after SIGTERM.
    Terminated(ExitStatus),
    /// The grace period ran out; the group was SIGKILLed and the process reaped.
    Killed(ExitStatus),
    /// Even SIGKILL did not end it within [`KILL_REAP_TIMEOUT`] (stuck in the
    /// kernel); it is killed again and reaped in the background when dropped.
    Unreaped,
}

impl StopOutcome {
    /// The exit status, if the process was reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        match self {
            Self::AlreadyExited(s) | Self::Terminated(s) | Self::Killed(s) => Some(*s),
            Self::Unreaped => None,
        }
    }
}

/// Starts one instance of `spec` and waits until its health path answers 2xx.
///
/// On any failure the process (if one was started) is stopped before returning,
/// and the error carries the last [`LAST_LOG_LINES`] lines of its logs.
pub async fn start(spec: &InstanceSpec) -> Result<RunningInstance, StartError> {
    let program = command::resolve(&spec.bundle_root, &spec.command)?;
    let mut retries_left = PORT_RACE_RETRIES;
    loop {
        match start_once(spec, &program).await {
            Err(StartError::Exited {
                ref last_log_lines, ..
            }) if retries_left > 0 && mentions_address_in_use(last_log_lines) => {
                retries_left -= 1;
                tracing::warn!(
                    index = spec.index,
                    "instance lost its port before binding it; retrying with a new port"
                );
            }
            outcome => return outcome,
        }
    }
}

async fn start_once(spec: &InstanceSpec, program: &Path) -> Result<RunningInstance, StartError> {
    let port = free_port(spec.host)?;
    let (logs, stdout, stderr) = LogFiles::open(&spec.log_dir, spec.index)?;
    let child = spawn(spec, program, port, stdout, stderr).await?;
    let mut instance = RunningInstance::new(child, port, logs, spec)?;
    tracing::debug!(pid = instance.pid, %instance.addr, index = spec.index, "instance spawned");
    match wait_healthy(&mut instance, spec).await {
        Ok(()) => Ok(instance),
        Err(error) => {
            instance.stop(FAILED_START_GRACE).await;
            Err(error)
        }
    }
}

/// Reserves a port on `host` by binding port 0 and releasing it (see
/// [`PORT_RACE_RETRIES`] for the race this leaves and how it is handled).
fn free_port(host: IpAddr) -> Result<u16, StartError> {
    TcpListener::bind((host, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| StartError::NoFreePort { source })
}

async fn spawn(
    spec: &InstanceSpec,
    program: &Path,
    port: u16,
    stdout: std::fs::File,
    stderr: std::fs::File,
) -> Result<Child, StartError> {
    let mut cmd = Command::new(program);
    cmd.args(spec.command.iter().skip(1))
        .current_dir(&spec.bundle_root)
        .env_clear()
        .envs(child_env(spec, port, |name| std::env::var_os(name)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own group, so stop/drop can signal everything it forks.
        .process_group(0)
        .kill_on_drop(true);
    spawn_retrying_text_busy(&mut cmd)
        .await
        .map_err(|source| StartError::Spawn {
            command: spec.command.join(" "),
            source,
        })
}

/// Spawns, retrying a few times on ETXTBSY ("text file busy"). That error is
/// transient: it happens when another thread of this process forks while it
/// holds a freshly written executable open for writing (e.g. while extracting a
/// bundle), and the forked child has not yet exec'd and closed its copy.
async fn spawn_retrying_text_busy(cmd: &mut Command) -> std::io::Result<Child> {
    let mut retries_left = TEXT_BUSY_RETRIES;
    loop {
        match cmd.spawn() {
            Err(e) if retries_left > 0 && e.raw_os_error() == Some(Errno::ETXTBSY as i32) => {
                retries_left -= 1;
                tokio::time::sleep(TEXT_BUSY_BACKOFF).await;
            }
            outcome => return outcome,
        }
    }
}

/// Polls health, every [`HEALTH_POLL_FIRST`] at first and doubling up to
/// [`HEALTH_POLL_INTERVAL`], until 2xx, exit, or the startup timeout.
async fn wait_healthy(
    instance: &mut RunningInstance,
    spec: &InstanceSpec,
) -> Result<(), StartError> {
    let deadline = Instant::now() + spec.startup_timeout;
    let (addr, path) = (instance.addr, instance.health_path.clone());
    let mut interval = HEALTH_POLL_FIRST;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(StartError::HealthTimeout {
                after: spec.startup_timeout,
                last_log_lines: instance.last_log_lines(),
            });
        }
        let next_poll = (now + interval).min(deadline);
        interval = (interval * 2).min(HEALTH_POLL_INTERVAL);
        let attempt = async {
            let healthy = probe(addr, &path, spec.health_timeout.min(deadline - now)).await;
            if !healthy {
                tokio::time::sleep_until(next_poll).await;
            }
            healthy
        };
        // Racing the exit makes a crash visible at once instead of at the next poll.
        tokio::select! {
            status = instance.wait_exit() => {
                return Err(StartError::Exited {
                    status: status.to_string(),
                    last_log_lines: instance.last_log_lines(),
                });
            }
            healthy = attempt => if healthy {
                return Ok(());
            }
        }
    }
}

fn mentions_address_in_use(lines: &[String]) -> bool {
    lines.iter().any(|line| {
        let line = line.to_lowercase();
        ADDRESS_IN_USE_PHRASES.iter().any(|p| line.contains(p))
    })
}

/// The status reported when waiting on the process failed (see [`UNOBSERVABLE_EXIT_CODE`]).
fn unobservable_status() -> ExitStatus {
    // A raw wait status holds the exit code in bits 8..16.
    ExitStatus::from_raw(UNOBSERVABLE_EXIT_CODE << 8)
}

impl RunningInstance {
    fn new(
        child: Child,
        port: u16,
        logs: LogFiles,
        spec: &InstanceSpec,
    ) -> Result<Self, StartError> {
        // A freshly spawned child always has a pid (tokio forgets it only once the
        // child is reaped, which has not happened yet); handled anyway, not unwrapped.
        let no_pid = || StartError::Spawn {
            command: String::from("(spawned process)"),
            source: std::io::Error::other("the child has no pid right after spawning"),
        };
        let pid = child.id().ok_or_else(no_pid)?;
        let group = ProcessGroup::led_by(pid).ok_or_else(no_pid)?;
        Ok(Self {
            group,
            child,
            pid,
            addr: SocketAddr::from((spec.host, port)),
            health_path: spec.health_path.clone(),
            logs,
            exit_status: None,
            _pid_file: crate::pidfile::PidFile::record(&spec.log_dir, spec.index, pid),
        })
    }

    /// The instance's address, `<spec.host>:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id of the instance (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Path of the log file receiving the process's stdout.
    pub fn stdout_log(&self) -> &Path {
        self.logs.stdout_path()
    }

    /// Path of the log file receiving the process's stderr.
    pub fn stderr_log(&self) -> &Path {
        self.logs.stderr_path()
    }

    /// The last [`LAST_LOG_LINES`] lines this instance wrote (stdout, then stderr).
    pub fn last_log_lines(&self) -> Vec<String> {
        self.logs.last_lines(LAST_LOG_LINES)
    }

    /// One health probe: true if the health path answers 2xx within `timeout`.
    pub async fn check_health(&self, timeout: Duration) -> bool {
        probe(self.addr, &self.health_path, timeout).await
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_some() {
            return self.exit_status;
        }
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(self.record_exit(status)),
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "cannot poll instance; treating it as gone");
                Some(self.record_exit(unobservable_status()))
            }
        }
    }

    /// Waits until the process exits and returns its status (for supervisors).
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "cannot wait for instance; treating it as gone");
                unobservable_status()
            }
        };
        self.record_exit(status)
    }

    /// Stops the instance: SIGTERM to its process group, up to `grace` to exit,
    /// then SIGKILL; the process is reaped before this returns.
    pub async fn stop(mut self, grace: Duration) -> StopOutcome {
        if let Some(status) = self.try_exited() {
            return StopOutcome::AlreadyExited(status);
        }
        self.group.signal(Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.wait_exit()).await {
            return StopOutcome::Terminated(status);
        }
        tracing::info!(
            pid = self.pid,
            ?grace,
            "instance ignored SIGTERM; killing it"
        );
        self.group.signal(Signal::SIGKILL);
        match tokio::time::timeout(KILL_REAP_TIMEOUT, self.wait_exit()).await {
            Ok(status) => StopOutcome::Killed(status),
            Err(_) => StopOutcome::Unreaped,
        }
    }

    /// Remembers the status and kills what the leader left behind in its group.
    fn record_exit(&mut self, status: ExitStatus) -> ExitStatus {
        self.exit_status = Some(status);
        self.group.sweep_and_disarm();
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_in_use_is_recognised_in_both_spellings() {
        // Proves the port-race retry triggers on the usual OS and runtime messages only.
        let lines = |s: &str| vec![s.to_owned()];
        assert!(mentions_address_in_use(&lines(
            "[stderr] bind: Address already in use (os error 98)"
        )));
        assert!(mentions_address_in_use(&lines(
            "[stderr] EADDRINUSE: address in use"
        )));
        assert!(!mentions_address_in_use(&lines(
            "[stderr] permission denied"
        )));
    }

    #[test]
    fn unobservable_status_reads_as_exit_code_255() {
        // Proves the synthetic status is a failure a supervisor will notice.
        assert_eq!(unobservable_status().code(), Some(UNOBSERVABLE_EXIT_CODE));
    }
}
