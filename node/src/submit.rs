//! How a command travels, chosen once when the command starts.
//!
//! `gtc op … --node URL` sends everything to that node's remote-store
//! contract ([`Submitter::Remote`]): the node authorizes with the token's
//! role, applies and audits. Without `--node` the command stays on this
//! machine ([`Submitter::Local`]): it goes through the running node that
//! owns its environment when one answers (so the node applies it with the
//! same store, or through Raft on a cluster member), else straight to the
//! store. Which running node owns an environment depends on the
//! environment, which most verbs read from their answers, so the local
//! submitter looks it up per environment (`Local::running_node`).

use std::path::PathBuf;

use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use store::LocalFsStore;

use crate::error::CliError;
use crate::node_client::{self, NodeClient};
use crate::remote::Remote;

/// Where a command's reads and changes go.
pub enum Submitter {
    /// A node reached by URL (`--node`): reads and changes go there.
    Remote(Remote),
    /// This machine: its running node for the environment, else its store.
    Local(Local),
}

/// Commands on this machine.
#[derive(Default)]
pub struct Local {
    /// CA certificates to trust when a running node's admin API is HTTPS.
    pub admin_ca: Option<PathBuf>,
    /// Read replicas without a read index (`--stale-ok`).
    pub stale_ok: bool,
}

impl Submitter {
    /// The remote node, when the command goes to one.
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            Submitter::Remote(remote) => Some(remote),
            Submitter::Local(_) => None,
        }
    }
}

impl Local {
    /// The running node that owns changes to `env` in `store`: the node
    /// serving that environment, else a cluster member serving this store
    /// root (every environment of a member's replica, including one not
    /// created yet, changes only through Raft).
    pub fn running_node(&self, store: &LocalFsStore, env: &EnvId) -> Option<NodeClient> {
        let ca = self.admin_ca.as_deref();
        let env_dir = store.env_dir(env);
        node_client::running_node(&env_dir, ca).or_else(|| {
            let root = env_dir.parent()?.to_owned();
            node_client::running_node(&root, ca)
        })
    }

    /// Before a read of a cluster member's replica: waits (through the
    /// running member) until the replica holds everything the cluster had
    /// committed when the read began, so the read is linearizable. Nothing
    /// to do with `--stale-ok`, or without a running cluster member.
    pub fn read_index(&self, store: &LocalFsStore, env: &EnvId) -> Result<(), CliError> {
        if self.stale_ok {
            return Ok(());
        }
        let Some(node) = self.running_node(store, env) else {
            return Ok(());
        };
        match node.request("POST", "/admin/v1/cluster/read-index", b"")? {
            (200, _) => Ok(()),
            // Not a cluster member: its store is the only copy.
            (404, _) => Ok(()),
            (_, document) => Err(CliError::new(
                ErrorKind::parse(document["error"]["kind"].as_str().unwrap_or(""))
                    .unwrap_or(ErrorKind::Store),
                format!(
                    "the cluster could not confirm this replica is current ({}); retry, or read it as it is with --stale-ok",
                    document["error"]["message"].as_str().unwrap_or("no answer")
                ),
            )),
        }
    }
}
