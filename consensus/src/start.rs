//! How the production member starts: a redb log in its data folder, the
//! replica in its store folder, QUIC endpoints for its peers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use transport::NodeIdentity;

use crate::log_store::LogStore;
use crate::member::{ClusterError, ClusterHandle, MemberParts};
use crate::quic::QuicNetwork;
use crate::service::PeerService;
use crate::settings::{RaftSettings, raft_config};
use crate::state_machine::StateMachine;
use crate::types::{ClusterNode, node_id_for};

/// How to start a cluster member.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The node's certificate name; its Raft id derives from it.
    pub node_name: String,
    /// Raft log and bookkeeping.
    pub data_dir: PathBuf,
    /// The replica store (an ordinary store folder).
    pub store_root: PathBuf,
    /// Where the QUIC endpoint listens.
    pub raft_listen: SocketAddr,
    /// The address peers reach it at (defaults to `raft_listen`).
    pub raft_advertise: Option<SocketAddr>,
    /// The node's admin API address, published in the membership.
    pub admin_addr: String,
    pub identity: NodeIdentity,
    /// Create a one-voter cluster if this node has never been in one.
    pub bootstrap: bool,
    /// Ask the member at this Raft address to add this node as a voter.
    pub join: Option<SocketAddr>,
    pub raft: RaftSettings,
}

fn storage_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Storage {
        path: path.to_owned(),
        source,
    }
}

impl ClusterHandle {
    /// Opens the log and replica, listens for peers, starts Raft, then
    /// bootstraps or joins as configured.
    pub async fn start(config: ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let advertise = config.raft_advertise.unwrap_or(config.raft_listen);
        std::fs::create_dir_all(&config.data_dir).map_err(storage_error(&config.data_dir))?;
        let log_path = config.data_dir.join("raft-log.redb");
        let log_store = LogStore::open(&log_path).map_err(storage_error(&log_path))?;
        let state_machine = StateMachine::open(&config.store_root, &config.data_dir)
            .map_err(storage_error(&config.store_root))?;

        let service = PeerService::default();
        service.set_store_root(config.store_root.clone());
        let network = QuicNetwork::bind(
            config.raft_listen,
            advertise.is_ipv4(),
            &config.identity,
            service.clone(),
        )
        .map_err(|error| ClusterError::Bind {
            addr: error.addr,
            message: error.message,
        })?;
        let advertise = if advertise.port() == 0 {
            network.local_addr()
        } else {
            advertise
        };
        let raft_config =
            raft_config(&config.raft).map_err(|error| ClusterError::Config(error.to_string()))?;
        let parts = MemberParts {
            node_id: node_id_for(&config.node_name),
            node: ClusterNode {
                name: config.node_name.clone(),
                raft_addr: advertise.to_string(),
                admin_addr: config.admin_addr.clone(),
            },
            raft_config: Arc::new(raft_config),
            settings: config.raft.clone(),
            state_machine,
            service,
            peers: Arc::new(network),
        };
        let handle = ClusterHandle::start_with(parts, log_store).await?;
        if config.bootstrap {
            handle.bootstrap_if_new().await?;
        }
        if let Some(peer) = config.join {
            handle.join_if_not_voter(&peer.to_string()).await?;
        }
        Ok(handle)
    }
}
