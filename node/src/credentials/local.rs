//! The credentials contract of `greentic.deployer.local-process`: the
//! identity is the user gtc runs as, so there is nothing to bootstrap;
//! what it must be able to do is start processes in their own group,
//! write the environment's revisions folder, and bind loopback ports.

use std::path::PathBuf;

use packs::credentials::{
    Capability, CapabilityCheck, CapabilityStatus, DeployerCredentials, RequirementsReport,
};

use super::from_check;
use crate::preflight::local as preflight;

pub const PROCESS_SPAWN: &str = "process-spawn";
pub const STORE_WRITABLE: &str = "store-writable";
pub const LOOPBACK_BIND: &str = "loopback-bind";

pub struct LocalProcessCredentials {
    /// The environment's folder; its `revisions` folder is where the
    /// deployer stages bundles, logs and run configs.
    pub env_dir: PathBuf,
}

impl DeployerCredentials for LocalProcessCredentials {
    fn deployer(&self) -> &str {
        local_process::DESCRIPTOR_PATH
    }

    fn required_capabilities(&self) -> Vec<Capability> {
        vec![
            Capability::new(
                PROCESS_SPAWN,
                "start a child process in a process group of its own (each instance runs so)",
            ),
            Capability::new(
                STORE_WRITABLE,
                "write the environment's revisions folder (staged bundles, instance logs, run configs)",
            ),
            Capability::new(
                LOOPBACK_BIND,
                "bind a TCP port on 127.0.0.1 (each instance listens on one; the router connects to it)",
            ),
        ]
    }

    fn validate(&self) -> RequirementsReport {
        let checks = self
            .required_capabilities()
            .into_iter()
            .map(|capability| {
                let status = match capability.id.as_str() {
                    PROCESS_SPAWN => from_check(preflight::spawn()),
                    STORE_WRITABLE => self.store_writable(),
                    _ => loopback_bind(),
                };
                CapabilityCheck { capability, status }
            })
            .collect();
        RequirementsReport { checks }
    }
}

impl LocalProcessCredentials {
    /// Creates and removes a probe file in the revisions folder (the
    /// environment's folder when no revision was staged yet).
    fn store_writable(&self) -> CapabilityStatus {
        let revisions = self.env_dir.join(deploy::layout::REVISIONS_DIR);
        let folder = if std::fs::symlink_metadata(&revisions).is_ok() {
            revisions
        } else {
            self.env_dir.clone()
        };
        let probe = folder.join(format!(".gtc-write-probe-{}", std::process::id()));
        match std::fs::write(&probe, b"probe") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                CapabilityStatus::Pass {
                    detail: format!("{} is writable", folder.display()),
                }
            }
            Err(error) => CapabilityStatus::Fail {
                reason: format!("{} cannot be written: {error}", folder.display()),
                fix: format!(
                    "make {} a folder the user running gtc can write (chown -R USER or chmod -R u+rwX on it; remove whatever stands in its place)",
                    folder.display()
                ),
            },
        }
    }
}

fn loopback_bind() -> CapabilityStatus {
    match std::net::TcpListener::bind(("127.0.0.1", 0)) {
        Ok(listener) => CapabilityStatus::Pass {
            detail: match listener.local_addr() {
                Ok(addr) => format!("bound {addr}"),
                Err(_) => "bound a loopback port".to_owned(),
            },
        },
        Err(error) => CapabilityStatus::Fail {
            reason: format!("binding a port on 127.0.0.1 failed: {error}"),
            fix: "bring the loopback interface up (ip link set lo up) and let this user bind unprivileged ports (check seccomp, network namespace or container policies)".to_owned(),
        },
    }
}
