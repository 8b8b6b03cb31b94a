//! What the caller asks for: one instance of one revision.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to start one instance of a revision from its extracted bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The extracted bundle; the process runs with this as its working directory.
    pub bundle_root: PathBuf,
    /// The argv. `command[0]` is a path relative to `bundle_root` (no `..`, not
    /// absolute, and not a symlink leading out of the bundle); the rest are arguments.
    pub command: Vec<String>,
    /// Extra environment for the process (the bundle's declared configuration).
    pub env: BTreeMap<String, String>,
    /// Name of the variable that receives the instance's port, e.g. `PORT`.
    pub port_env: String,
    /// The address the instance listens on, given to it as `HOST`:
    /// `127.0.0.1` on a single node; on a cluster member, an address the
    /// other members' routers can reach.
    pub host: IpAddr,
    /// Path probed with `GET` for health, e.g. `/healthz`; any 2xx is healthy.
    pub health_path: String,
    /// The first health check must pass within this, or the start fails.
    pub startup_timeout: Duration,
    /// Timeout of one health request.
    pub health_timeout: Duration,
    /// stdout/stderr are appended to `<log_dir>/instance-<index>.{stdout,stderr}.log`.
    /// The folder is created if missing.
    pub log_dir: PathBuf,
    /// Instance number within the revision; names the log files.
    pub index: u32,
    /// Identification variables, e.g. `GREENTIC_REVISION`, `GREENTIC_INSTANCE`.
    /// Set after `env`, so a label wins over an `env` entry of the same name.
    pub labels: BTreeMap<String, String>,
    /// The revision's pinned secrets: variables set after `env`, and the
    /// folder of secret files as `GTC_SECRETS_DIR`. `Debug` shows names only.
    pub secrets: packs::deployer::SecretMaterial,
    /// The revision's pack-config folder, given as `GTC_CONFIG_DIR`.
    pub config_dir: Option<std::path::PathBuf>,
}
