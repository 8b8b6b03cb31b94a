//! What a node needs to join gossip, validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use crate::generation::Generation;

/// Longest node name: the workspace's one node-name bound (a member's
/// gossip name is its certificate's name). Names travel in every digest,
/// so they stay short.
pub use deploy::ids::NODE_NAME_BYTES_MAX;
/// Longest cluster id; it travels in every SYN.
pub const MAX_CLUSTER_ID_BYTES: usize = 64;
/// Most seed addresses; more than a handful adds nothing once joined.
pub const MAX_SEED_ADDRS: usize = 32;
/// Fastest gossip round accepted; faster only burns CPU and bandwidth.
pub const MIN_GOSSIP_INTERVAL_MS: u64 = 10;
/// Slowest gossip round accepted; slower makes failure detection take minutes.
pub const MAX_GOSSIP_INTERVAL_MS: u64 = 60_000;
/// Default gossip round, chitchat's own default.
pub const DEFAULT_GOSSIP_INTERVAL_MS: u64 = 1_000;
/// Default phi threshold: chitchat's (and Cassandra's) usual 8.
pub const DEFAULT_PHI_THRESHOLD: f64 = 8.0;
/// Accepted phi threshold range. Below 1 nodes flap on normal jitter; above
/// 32 a dead node is effectively never detected.
pub const PHI_THRESHOLD_RANGE: std::ops::RangeInclusive<f64> = 1.0..=32.0;
/// Default time a dead node stays listed (in `dead_members`) before its
/// state is forgotten: one hour, long enough for an operator to see it.
pub const DEFAULT_DEAD_NODE_GRACE_PERIOD_MS: u64 = 60 * 60 * 1_000;
/// Longest dead-node grace period: a week of remembered dead incarnations
/// is already more state than anyone reads.
pub const MAX_DEAD_NODE_GRACE_PERIOD_MS: u64 = 7 * 24 * 60 * 60 * 1_000;
/// The grace period must cover this many gossip rounds, so that every peer
/// hears of the death before anyone forgets the node.
pub const MIN_DEAD_NODE_GRACE_ROUNDS: u64 = 10;

/// How a node joins and runs gossip.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// Stable node name; together with `generation` it is the gossip identity.
    pub node_name: String,
    /// Nodes only gossip with nodes of the same cluster id (checked by
    /// chitchat in every SYN, on top of the cluster key).
    pub cluster_id: String,
    /// Local UDP address to bind. Port 0 picks a free port.
    pub gossip_listen_addr: SocketAddr,
    /// Address peers reach this node at. Port 0 means "the port actually
    /// bound", which lets tests and single-host setups bind port 0.
    pub gossip_advertise_addr: SocketAddr,
    /// Peers to contact first, as `ip:port` (hostnames would go through DNS,
    /// which the simulation cannot intercept).
    pub seed_addrs: Vec<SocketAddr>,
    /// Time between gossip rounds.
    pub gossip_interval_ms: u64,
    /// When a silent peer is declared dead, and how long it stays listed.
    pub failure_detector: FailureDetectorSettings,
    /// This incarnation; must differ on every restart
    /// (see [`Generation::next_persisted`]).
    pub generation: Generation,
}

/// Settings of chitchat's phi-accrual failure detector.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureDetectorSettings {
    /// Suspicion level above which a peer is dead. chitchat 0.13's phi is
    /// the time since the last heartbeat over the mean heartbeat gap, so
    /// detection takes about `phi_threshold * mean heartbeat gap`.
    pub phi_threshold: f64,
    /// How long a dead peer stays in `dead_members` before it is forgotten.
    pub dead_node_grace_period_ms: u64,
}

/// A rule of [`MembershipConfig::validate`] that the config breaks.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("node name {name:?} must be 1..={max} bytes of [A-Za-z0-9._-]")]
    InvalidNodeName { name: String, max: usize },
    #[error("cluster id {cluster_id:?} must be 1..={max} bytes of [A-Za-z0-9._-]")]
    InvalidClusterId { cluster_id: String, max: usize },
    #[error("gossip advertise address {addr} has an unspecified ip; peers cannot reach it")]
    UnspecifiedAdvertiseAddr { addr: SocketAddr },
    #[error("{count} seed addresses given, at most {max} are allowed")]
    TooManySeeds { count: usize, max: usize },
    #[error("gossip interval {interval_ms} ms is outside {min}..={max} ms")]
    GossipIntervalOutOfRange {
        interval_ms: u64,
        min: u64,
        max: u64,
    },
    #[error("phi threshold {phi_threshold} is outside {min}..={max}")]
    PhiThresholdOutOfRange {
        phi_threshold: f64,
        min: f64,
        max: f64,
    },
    #[error("dead node grace period {grace_ms} ms is outside {min_ms}..={max_ms} ms")]
    DeadNodeGraceOutOfRange {
        grace_ms: u64,
        min_ms: u64,
        max_ms: u64,
    },
}

impl Default for FailureDetectorSettings {
    fn default() -> Self {
        Self {
            phi_threshold: DEFAULT_PHI_THRESHOLD,
            dead_node_grace_period_ms: DEFAULT_DEAD_NODE_GRACE_PERIOD_MS,
        }
    }
}

impl MembershipConfig {
    /// A config with default timings, advertising the listen address.
    pub fn new(
        node_name: impl Into<String>,
        cluster_id: impl Into<String>,
        gossip_listen_addr: SocketAddr,
        generation: Generation,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            cluster_id: cluster_id.into(),
            gossip_listen_addr,
            gossip_advertise_addr: gossip_listen_addr,
            seed_addrs: Vec::new(),
            gossip_interval_ms: DEFAULT_GOSSIP_INTERVAL_MS,
            failure_detector: FailureDetectorSettings::default(),
            generation,
        }
    }

    /// Checks every bound; [`crate::Membership::start`] calls it first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_identifier(&self.node_name, NODE_NAME_BYTES_MAX) {
            return Err(ConfigError::InvalidNodeName {
                name: self.node_name.clone(),
                max: NODE_NAME_BYTES_MAX,
            });
        }
        if !is_identifier(&self.cluster_id, MAX_CLUSTER_ID_BYTES) {
            return Err(ConfigError::InvalidClusterId {
                cluster_id: self.cluster_id.clone(),
                max: MAX_CLUSTER_ID_BYTES,
            });
        }
        if self.gossip_advertise_addr.ip().is_unspecified() {
            return Err(ConfigError::UnspecifiedAdvertiseAddr {
                addr: self.gossip_advertise_addr,
            });
        }
        if self.seed_addrs.len() > MAX_SEED_ADDRS {
            return Err(ConfigError::TooManySeeds {
                count: self.seed_addrs.len(),
                max: MAX_SEED_ADDRS,
            });
        }
        let interval_range = MIN_GOSSIP_INTERVAL_MS..=MAX_GOSSIP_INTERVAL_MS;
        if !interval_range.contains(&self.gossip_interval_ms) {
            return Err(ConfigError::GossipIntervalOutOfRange {
                interval_ms: self.gossip_interval_ms,
                min: MIN_GOSSIP_INTERVAL_MS,
                max: MAX_GOSSIP_INTERVAL_MS,
            });
        }
        self.validate_failure_detector()
    }

    /// The gossip interval as a duration.
    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    fn validate_failure_detector(&self) -> Result<(), ConfigError> {
        let phi_threshold = self.failure_detector.phi_threshold;
        if !PHI_THRESHOLD_RANGE.contains(&phi_threshold) {
            return Err(ConfigError::PhiThresholdOutOfRange {
                phi_threshold,
                min: *PHI_THRESHOLD_RANGE.start(),
                max: *PHI_THRESHOLD_RANGE.end(),
            });
        }
        let grace_ms = self.failure_detector.dead_node_grace_period_ms;
        let min_ms = self
            .gossip_interval_ms
            .saturating_mul(MIN_DEAD_NODE_GRACE_ROUNDS);
        if !(min_ms..=MAX_DEAD_NODE_GRACE_PERIOD_MS).contains(&grace_ms) {
            return Err(ConfigError::DeadNodeGraceOutOfRange {
                grace_ms,
                min_ms,
                max_ms: MAX_DEAD_NODE_GRACE_PERIOD_MS,
            });
        }
        Ok(())
    }
}

/// Non-empty, bounded, and made of characters that are safe in logs, file
/// names and metric labels.
fn is_identifier(text: &str, max_bytes: usize) -> bool {
    !text.is_empty()
        && text.len() <= max_bytes
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> MembershipConfig {
        MembershipConfig::new(
            "node-1",
            "cluster-a",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Generation::new(1),
        )
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn each_bound_is_checked() {
        let mut config = valid();
        config.node_name = "bad name".into();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidNodeName { .. })
        ));

        let mut config = valid();
        config.cluster_id = String::new();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidClusterId { .. })
        ));

        let mut config = valid();
        config.gossip_advertise_addr = SocketAddr::from(([0, 0, 0, 0], 7946));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::UnspecifiedAdvertiseAddr { .. })
        ));

        let mut config = valid();
        config.seed_addrs = vec![SocketAddr::from(([127, 0, 0, 1], 1)); MAX_SEED_ADDRS + 1];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::TooManySeeds { .. })
        ));

        let mut config = valid();
        config.gossip_interval_ms = 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::GossipIntervalOutOfRange { .. })
        ));

        let mut config = valid();
        config.failure_detector.phi_threshold = f64::NAN;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::PhiThresholdOutOfRange { .. })
        ));

        let mut config = valid();
        config.failure_detector.dead_node_grace_period_ms = 100;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DeadNodeGraceOutOfRange { .. })
        ));
    }
}
