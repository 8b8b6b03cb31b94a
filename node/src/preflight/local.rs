//! Preflight of `greentic.deployer.local-process`: the revisions' bundle
//! folders can be read, and this node can start a process in its own
//! process group, as the deployer starts every instance.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploy::environment::Environment;
use deploy::lifecycle::Lifecycle;

use super::Check;

/// How long the spawned probe (`gtc --version`) may take to exit; it
/// prints one line, so anything near this means the machine is stuck.
const SPAWN_WAIT_MAX: Duration = Duration::from_secs(10);
/// How often the probe is polled while it runs.
const SPAWN_POLL: Duration = Duration::from_millis(10);

pub fn checks(env_dir: &Path, environment: &Environment) -> Vec<Check> {
    vec![bundle_folders(env_dir, environment), spawn()]
}

/// Every revision that may still run (it has something to run and is
/// neither failed nor archived) has a readable extracted bundle.
fn bundle_folders(env_dir: &Path, environment: &Environment) -> Check {
    const NAME: &str = "bundle-folders-readable";
    let mut checked = 0;
    for revision in &environment.revisions {
        if revision.runtime_instances.is_none()
            || matches!(revision.lifecycle, Lifecycle::Failed | Lifecycle::Archived)
        {
            continue;
        }
        let folder = env_dir.join(deploy::layout::revision_dir_in_env(revision.revision_id));
        let root = deploy::layout::extracted_bundle(&folder);
        if let Err(error) = bundle::stage::read_manifest(&root) {
            return Check::fail(
                NAME,
                format!(
                    "revision {}'s bundle folder {} cannot be read: {error}",
                    revision.revision_id,
                    root.display()
                ),
                "give the user running gtc read access to the store folder (chown -R or chmod -R u+rX on it), or stage the revision again with `gtc op revisions stage`",
            );
        }
        checked += 1;
    }
    Check::pass(
        NAME,
        format!("{checked} revision bundle folder(s) that may run are readable"),
    )
}

/// Starts `gtc --version` in a process group of its own and waits for it.
pub(crate) fn spawn() -> Check {
    const NAME: &str = "spawn-process";
    const FIX: &str = "the local-process deployer starts each instance as a child process in its own process group: run gtc as a user allowed to start processes (check `ulimit -u`, cgroup pids.max and seccomp or container policies that forbid fork/exec or setpgid)";
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => {
            return Check::fail(NAME, format!("cannot find the gtc binary: {error}"), FIX);
        }
    };
    let child = Command::new(&program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            return Check::fail(
                NAME,
                format!("starting {} failed: {error}", program.display()),
                FIX,
            );
        }
    };
    let deadline = Instant::now() + SPAWN_WAIT_MAX;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                return Check::pass(
                    NAME,
                    "a child process started in its own process group and exited cleanly",
                );
            }
            Ok(Some(status)) => {
                return Check::fail(NAME, format!("the probe process exited with {status}"), FIX);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(SPAWN_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Check::fail(
                    NAME,
                    format!("the probe process did not exit within {SPAWN_WAIT_MAX:?}"),
                    FIX,
                );
            }
            Err(error) => {
                return Check::fail(NAME, format!("waiting for the probe failed: {error}"), FIX);
            }
        }
    }
}
