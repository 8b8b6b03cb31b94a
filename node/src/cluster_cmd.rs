//! `gtc cluster …`: the cluster CA and node certificates, and the status
//! and membership verbs, which talk to a running member's admin API.

use std::path::Path;

use deploy::error::ErrorKind;
use transport::{ClusterCa, NodeIdentity};

use crate::cli::ClusterVerb;
use crate::error::CliError;
use crate::output::Report;

fn pki(error: transport::PkiError) -> CliError {
    CliError::new(ErrorKind::InvalidArgument, error.to_string())
}

/// Runs one `gtc cluster` verb.
pub fn run(verb: ClusterVerb) -> Result<Report, CliError> {
    match verb {
        ClusterVerb::Init {
            dir,
            name,
            issue: others,
            if_missing,
        } => {
            let ca_dir = dir.join("ca");
            if if_missing && ca_dir.join("ca.pem").is_file() {
                // A cluster made before secrets were replicated gets its key.
                let made = ensure_secrets_key(&ca_dir)?;
                return Ok(Report::new(
                    "cluster",
                    "init",
                    serde_json::json!({"ca_dir": ca_dir, "unchanged": !made, "secrets_key_created": made}),
                ));
            }
            let ca = ClusterCa::create("greentic").map_err(pki)?;
            ca.write_to_dir(&ca_dir).map_err(pki)?;
            let key = membership::ClusterKey::generate().map_err(|e| {
                CliError::new(
                    ErrorKind::Io,
                    format!("no randomness for the gossip key: {e}"),
                )
            })?;
            write_secret(
                &ca_dir.join(crate::gossip::GOSSIP_KEY_FILE),
                &format!("{}\n", key.to_base64()),
            )?;
            write_secret_bytes(&ca_dir.join(SECRETS_KEY_FILE), &new_secrets_key()?[..])?;
            let node_dir = issue(&ca, &dir, &name)?;
            for other in &others {
                issue(&ca, &dir, other)?;
            }
            Ok(Report::new(
                "cluster",
                "init",
                serde_json::json!({"ca_dir": ca_dir, "node": name, "node_dir": node_dir,
                    "next": format!("gtc node run --cluster-dir {} --raft-listen 127.0.0.1:7000", node_dir.display())}),
            ))
        }
        ClusterVerb::IssueCert { name, dir } => {
            let ca = ClusterCa::load_from_dir(&dir.join("ca")).map_err(pki)?;
            ensure_secrets_key(&dir.join("ca"))?;
            let node_dir = issue(&ca, &dir, &name)?;
            Ok(Report::new(
                "cluster",
                "issue-cert",
                serde_json::json!({"node": name, "node_dir": node_dir,
                    "next": format!("gtc node run --cluster-dir {} --raft-listen ADDR --join LEADER_RAFT_ADDR", node_dir.display())}),
            ))
        }
        ClusterVerb::Status { node_dir, env } => {
            let (status, document) =
                member(&node_dir, &env)?.request("GET", "/admin/v1/cluster/status", b"")?;
            answer("status", status, document)
        }
        ClusterVerb::Join {
            node_dir,
            env,
            name,
            raft_addr,
            admin_addr,
        } => {
            let body = serde_json::json!({"name": name, "raft_addr": raft_addr, "admin_addr": admin_addr.map(|a| a.to_string()).unwrap_or_default()});
            let (status, document) = member(&node_dir, &env)?.request(
                "POST",
                "/admin/v1/cluster/join",
                body.to_string().as_bytes(),
            )?;
            answer("join", status, document)
        }
        ClusterVerb::Leave { node_dir, env } => {
            let (status, document) =
                member(&node_dir, &env)?.request("POST", "/admin/v1/cluster/leave", b"")?;
            answer("leave", status, document)
        }
    }
}

fn issue(ca: &ClusterCa, dir: &Path, name: &str) -> Result<std::path::PathBuf, CliError> {
    let node_dir = dir.join(name);
    let identity: NodeIdentity = ca.issue_node_cert(name).map_err(pki)?;
    identity.write_to_dir(&node_dir).map_err(pki)?;
    let key_file = dir.join("ca").join(crate::gossip::GOSSIP_KEY_FILE);
    if let Ok(keys) = std::fs::read_to_string(&key_file) {
        write_secret(&node_dir.join(crate::gossip::GOSSIP_KEY_FILE), &keys)?;
    }
    if let Ok(key) = std::fs::read(dir.join("ca").join(SECRETS_KEY_FILE)) {
        write_secret_bytes(&node_dir.join(SECRETS_KEY_FILE), &key)?;
    }
    Ok(node_dir)
}

/// File in a node folder (and the cluster's `ca/`) with the cluster
/// secrets key: 32 random bytes, mode 0600, the same on every member. A
/// member installs it as its replica's node key, which wraps each
/// environment's data key, so a version sealed on one member opens on all
/// (`secrets/README.md`, "Clusters").
pub const SECRETS_KEY_FILE: &str = "secrets.key";

fn new_secrets_key() -> Result<zeroize::Zeroizing<[u8; 32]>, CliError> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    secrets::value::os_random(&mut key[..]).map_err(|e| {
        CliError::new(
            ErrorKind::Io,
            format!("no randomness for the cluster secrets key: {e}"),
        )
    })?;
    Ok(key)
}

/// Makes `ca/secrets.key` when a cluster folder has none; true if it did.
fn ensure_secrets_key(ca_dir: &Path) -> Result<bool, CliError> {
    let path = ca_dir.join(SECRETS_KEY_FILE);
    if path.is_file() {
        return Ok(false);
    }
    write_secret_bytes(&path, &new_secrets_key()?[..])?;
    Ok(true)
}

/// Installs the node folder's cluster secrets key as the replica's node key
/// before the member starts. A folder without one (made before secrets
/// were replicated) starts anyway: its replica applies every secret change
/// (that needs no key), and the member's own seals and reveals fail with
/// `cluster-key-missing`, naming the fix.
pub fn install_secrets_key(node_dir: &Path, store_root: &Path) -> Result<(), CliError> {
    let source = node_dir.join(SECRETS_KEY_FILE);
    if !source.is_file() {
        tracing::warn!(
            file = %source.display(),
            "this member has no cluster secrets key: it cannot store or reveal secrets until ca/{SECRETS_KEY_FILE} is copied there (mode 0600)"
        );
        return Ok(());
    }
    secrets::SecretStore::replica(store_root)
        .install_cluster_key(&source)
        .map_err(crate::secrets_cmd::cli_error)
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<(), CliError> {
    write_secret_bytes(path, text.as_bytes())
}

/// Writes secret bytes readable by their owner only.
fn write_secret_bytes(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| CliError::new(ErrorKind::Io, format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn member(node_dir: &Path, env: &str) -> Result<crate::node_client::NodeClient, CliError> {
    let env_dir = node_dir.join("environments").join(env);
    let ca = std::env::var_os("GTC_ADMIN_CA").map(std::path::PathBuf::from);
    crate::node_client::running_node(&env_dir, ca.as_deref()).ok_or_else(|| {
        CliError::new(
            ErrorKind::NotFound,
            format!(
                "no running member found for {}: start it with `gtc node run --cluster-dir {}`",
                node_dir.display(),
                node_dir.display()
            ),
        )
    })
}

fn answer(
    verb: &'static str,
    status: u16,
    document: serde_json::Value,
) -> Result<Report, CliError> {
    if status == 200 {
        return Ok(Report::new("cluster", verb, document));
    }
    let error = &document["error"];
    Err(CliError::new(
        ErrorKind::parse(error["kind"].as_str().unwrap_or("")).unwrap_or(ErrorKind::Store),
        error["message"]
            .as_str()
            .unwrap_or("the member refused")
            .to_owned(),
    ))
}
