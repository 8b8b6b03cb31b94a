//! Liveness facts a node publishes about itself as chitchat key-values.
//!
//! Facts are hints for observers (the admin API, the router's health view,
//! a joining node looking for the Raft leader's address); they may be a few
//! gossip rounds stale and are never the source of truth for anything Raft
//! decides.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Key of the node's Raft role: `voter` or `learner`.
pub const KEY_ROLE: &str = "role";
/// Key of the node's admin API address (`ip:port`).
pub const KEY_ADMIN_ADDR: &str = "admin_addr";
/// Key of the node's Raft RPC address (`ip:port`).
pub const KEY_RAFT_ADDR: &str = "raft_addr";
/// Key of the node's HTTP router address (`ip:port`).
pub const KEY_ROUTER_ADDR: &str = "router_addr";
/// Key of the last Raft log index the node applied (decimal u64).
pub const KEY_APPLIED_INDEX: &str = "applied_index";
/// Key of the routing-table generation the node serves traffic with (decimal u64).
pub const KEY_TRAFFIC_GENERATION: &str = "traffic_generation";
/// Key of the number of healthy local instances (decimal u32).
pub const KEY_INSTANCES_HEALTHY: &str = "instances_healthy";
/// Key of the number of local instances in any state (decimal u32).
pub const KEY_INSTANCES_TOTAL: &str = "instances_total";
/// Key of how many instances the node accepts in all (decimal u32): the
/// leader never places more on it.
pub const KEY_CAPACITY: &str = "capacity";
/// Key of the deployers the node can run instances with now
/// (comma-separated descriptor paths such as `greentic.deployer.docker`):
/// a deployer whose engine does not answer is left out, and the leader
/// places a revision only on members that list its deployer.
pub const KEY_DEPLOYERS: &str = "deployers";

/// Prefix of the keys that carry a revision's ready local instances:
/// `endpoints/<revision id>` = comma-separated `ip:port`s. Routers on other
/// nodes forward to them; the value is a hint (readiness may be a gossip
/// round stale), the split itself always comes from committed state.
pub const KEY_PREFIX_ENDPOINTS: &str = "endpoints/";
/// Longest endpoints value accepted: about 40 addresses, far more ready
/// instances of one revision than one node runs.
pub const MAX_ENDPOINTS_VALUE_BYTES: usize = 1024;

/// Prefix of the keys that carry a revision's request counts on this node:
/// `counts/<revision id>` = comma-separated decimal u64s (what they mean is
/// the publisher's: the node's rollout analysis sums them over members).
pub const KEY_PREFIX_COUNTS: &str = "counts/";
/// Prefix of the keys that carry a revision's requests in flight at this
/// node's router now: `inflight/<revision id>` = `served,held` (the same
/// number list as counts; the leader's autoscaler sums them over members).
pub const KEY_PREFIX_IN_FLIGHT: &str = "inflight/";
/// Most numbers in one counts value.
pub const MAX_COUNTS: usize = 32;

/// Longest fact value accepted. Every fact is a number, an address or a
/// role word; the bound keeps gossip state (sent in full to new peers)
/// small even if a caller passes the wrong string.
pub const MAX_FACT_VALUE_BYTES: usize = 128;

/// The closed set of facts this crate publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactKey {
    Role,
    AdminAddr,
    RaftAddr,
    RouterAddr,
    AppliedIndex,
    TrafficGeneration,
    InstancesHealthy,
    InstancesTotal,
    Capacity,
    Deployers,
}

/// A node's role in the Raft group, as gossiped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRole {
    Voter,
    Learner,
}

/// The typed view of one node's facts. `None` means not published (yet),
/// or published with a value that does not parse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub role: Option<NodeRole>,
    pub admin_addr: Option<SocketAddr>,
    pub raft_addr: Option<SocketAddr>,
    pub router_addr: Option<SocketAddr>,
    pub applied_index: Option<u64>,
    pub traffic_generation: Option<u64>,
    pub instances_healthy: Option<u32>,
    pub instances_total: Option<u32>,
    pub capacity: Option<u32>,
    /// Descriptor paths of the deployers the node can run now.
    pub deployers: Option<Vec<String>>,
}

/// Why a fact value is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum FactError {
    /// More than [`MAX_COUNTS`] numbers in a counts value.
    #[error("a counts value has {count} numbers, at most {max} are allowed")]
    TooManyCounts { count: usize, max: usize },
    /// An endpoints value longer than [`MAX_ENDPOINTS_VALUE_BYTES`].
    #[error("endpoints value is {bytes} bytes, at most {max} are allowed")]
    EndpointsTooLong { bytes: usize, max: usize },
    /// Longer than [`MAX_FACT_VALUE_BYTES`].
    #[error("fact {key} value is {bytes} bytes, at most {max} are allowed")]
    ValueTooLong {
        key: FactKey,
        bytes: usize,
        max: usize,
    },
    /// Does not parse as the type of the key.
    #[error("fact {key} value {value:?} is not {expected}")]
    InvalidValue {
        key: FactKey,
        value: String,
        expected: &'static str,
    },
}

impl FactKey {
    /// Every fact key.
    pub const ALL: [FactKey; 10] = [
        FactKey::Role,
        FactKey::AdminAddr,
        FactKey::RaftAddr,
        FactKey::RouterAddr,
        FactKey::AppliedIndex,
        FactKey::TrafficGeneration,
        FactKey::InstancesHealthy,
        FactKey::InstancesTotal,
        FactKey::Capacity,
        FactKey::Deployers,
    ];

    /// The chitchat key string.
    pub const fn as_str(self) -> &'static str {
        match self {
            FactKey::Role => KEY_ROLE,
            FactKey::AdminAddr => KEY_ADMIN_ADDR,
            FactKey::RaftAddr => KEY_RAFT_ADDR,
            FactKey::RouterAddr => KEY_ROUTER_ADDR,
            FactKey::AppliedIndex => KEY_APPLIED_INDEX,
            FactKey::TrafficGeneration => KEY_TRAFFIC_GENERATION,
            FactKey::InstancesHealthy => KEY_INSTANCES_HEALTHY,
            FactKey::InstancesTotal => KEY_INSTANCES_TOTAL,
            FactKey::Capacity => KEY_CAPACITY,
            FactKey::Deployers => KEY_DEPLOYERS,
        }
    }

    /// The fact a chitchat key names, if it is one of ours.
    pub fn from_key(key: &str) -> Option<FactKey> {
        FactKey::ALL.into_iter().find(|fact| fact.as_str() == key)
    }

    /// Checks that `value` is a well-formed value for this key.
    pub fn validate_value(self, value: &str) -> Result<(), FactError> {
        let mut facts = NodeFacts::default();
        facts.apply(self, value)
    }
}

impl fmt::Display for FactKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl NodeRole {
    /// The gossiped value.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeRole::Voter => "voter",
            NodeRole::Learner => "learner",
        }
    }
}

impl FromStr for NodeRole {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "voter" => Ok(NodeRole::Voter),
            "learner" => Ok(NodeRole::Learner),
            _ => Err(()),
        }
    }
}

impl NodeFacts {
    /// Parses facts strictly: the first malformed value of a known key is
    /// an error. Keys this crate does not know are ignored, so a newer node
    /// may publish more.
    pub fn from_key_values<'a>(
        key_values: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<NodeFacts, FactError> {
        let mut facts = NodeFacts::default();
        for (key, value) in key_values {
            if let Some(fact) = FactKey::from_key(key) {
                facts.apply(fact, value)?;
            }
        }
        Ok(facts)
    }

    /// Parses facts leniently: a malformed value leaves its field `None`
    /// and is reported, so one bad peer value cannot hide a whole member.
    pub fn from_key_values_lossy<'a>(
        key_values: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (NodeFacts, Vec<FactError>) {
        let mut facts = NodeFacts::default();
        let mut errors = Vec::new();
        for (key, value) in key_values {
            if let Some(fact) = FactKey::from_key(key)
                && let Err(error) = facts.apply(fact, value)
            {
                errors.push(error);
            }
        }
        (facts, errors)
    }

    /// The published facts as chitchat key-values; unset facts are omitted.
    pub fn to_key_values(&self) -> Vec<(FactKey, String)> {
        let entries = [
            (
                FactKey::Role,
                self.role.map(|role| role.as_str().to_owned()),
            ),
            (
                FactKey::AdminAddr,
                self.admin_addr.map(|addr| addr.to_string()),
            ),
            (
                FactKey::RaftAddr,
                self.raft_addr.map(|addr| addr.to_string()),
            ),
            (
                FactKey::RouterAddr,
                self.router_addr.map(|addr| addr.to_string()),
            ),
            (
                FactKey::AppliedIndex,
                self.applied_index.map(|index| index.to_string()),
            ),
            (
                FactKey::TrafficGeneration,
                self.traffic_generation
                    .map(|generation| generation.to_string()),
            ),
            (
                FactKey::InstancesHealthy,
                self.instances_healthy.map(|count| count.to_string()),
            ),
            (
                FactKey::InstancesTotal,
                self.instances_total.map(|count| count.to_string()),
            ),
            (
                FactKey::Capacity,
                self.capacity.map(|count| count.to_string()),
            ),
            (
                FactKey::Deployers,
                self.deployers.as_ref().map(|paths| paths.join(",")),
            ),
        ];
        entries
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect()
    }

    /// Sets the field of `key` from its text form.
    fn apply(&mut self, key: FactKey, value: &str) -> Result<(), FactError> {
        if value.len() > MAX_FACT_VALUE_BYTES {
            return Err(FactError::ValueTooLong {
                key,
                bytes: value.len(),
                max: MAX_FACT_VALUE_BYTES,
            });
        }
        match key {
            FactKey::Role => self.role = Some(parse(key, value, "voter or learner")?),
            FactKey::AdminAddr => self.admin_addr = Some(parse(key, value, "an ip:port")?),
            FactKey::RaftAddr => self.raft_addr = Some(parse(key, value, "an ip:port")?),
            FactKey::RouterAddr => self.router_addr = Some(parse(key, value, "an ip:port")?),
            FactKey::AppliedIndex => self.applied_index = Some(parse(key, value, "a u64")?),
            FactKey::TrafficGeneration => {
                self.traffic_generation = Some(parse(key, value, "a u64")?)
            }
            FactKey::InstancesHealthy => self.instances_healthy = Some(parse(key, value, "a u32")?),
            FactKey::InstancesTotal => self.instances_total = Some(parse(key, value, "a u32")?),
            FactKey::Capacity => self.capacity = Some(parse(key, value, "a u32")?),
            FactKey::Deployers => self.deployers = Some(parse_deployers(value)?),
        }
        Ok(())
    }
}

/// A comma-separated list of descriptor paths (`[a-z0-9.-]`, non-empty
/// each); empty when the node can run none.
fn parse_deployers(value: &str) -> Result<Vec<String>, FactError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|path| {
            let valid = !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
            if valid {
                Ok(path.to_owned())
            } else {
                Err(FactError::InvalidValue {
                    key: FactKey::Deployers,
                    value: value.to_owned(),
                    expected: "comma-separated descriptor paths",
                })
            }
        })
        .collect()
}

fn parse<T: FromStr>(key: FactKey, value: &str, expected: &'static str) -> Result<T, FactError> {
    value.parse().map_err(|_| FactError::InvalidValue {
        key,
        value: value.to_owned(),
        expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeFacts {
        NodeFacts {
            role: Some(NodeRole::Voter),
            admin_addr: Some(SocketAddr::from(([10, 0, 0, 1], 7000))),
            raft_addr: Some(SocketAddr::from(([10, 0, 0, 1], 7001))),
            router_addr: None,
            applied_index: Some(42),
            traffic_generation: Some(3),
            instances_healthy: Some(2),
            instances_total: Some(5),
            capacity: Some(8),
            deployers: Some(vec![
                "greentic.deployer.local-process".to_owned(),
                "greentic.deployer.docker".to_owned(),
            ]),
        }
    }

    #[test]
    fn key_values_round_trip() {
        let facts = sample();
        let pairs = facts.to_key_values();
        assert_eq!(pairs.len(), 9);
        let text: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        assert_eq!(NodeFacts::from_key_values(text), Ok(facts));
    }

    #[test]
    fn unknown_keys_are_ignored_and_bad_values_reported() {
        let pairs = [
            ("future_key", "x"),
            (KEY_APPLIED_INDEX, "-1"),
            (KEY_ROLE, "learner"),
        ];
        assert!(matches!(
            NodeFacts::from_key_values(pairs),
            Err(FactError::InvalidValue {
                key: FactKey::AppliedIndex,
                ..
            })
        ));
        let (facts, errors) = NodeFacts::from_key_values_lossy(pairs);
        assert_eq!(facts.role, Some(NodeRole::Learner));
        assert_eq!(facts.applied_index, None);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn keys_are_unique_and_map_back() {
        for key in FactKey::ALL {
            assert_eq!(FactKey::from_key(key.as_str()), Some(key));
        }
        assert_eq!(FactKey::from_key("generation"), None);
    }

    #[test]
    fn long_values_are_rejected() {
        let long = "1".repeat(MAX_FACT_VALUE_BYTES + 1);
        assert!(matches!(
            FactKey::AppliedIndex.validate_value(&long),
            Err(FactError::ValueTooLong { .. })
        ));
    }
}

/// The endpoints published by one member, by revision id. Addresses that do
/// not parse are skipped (a newer node may publish a form we do not know).
pub fn endpoints_from_key_values<'a>(
    key_values: impl Iterator<Item = (&'a str, &'a str)>,
) -> std::collections::BTreeMap<String, Vec<SocketAddr>> {
    key_values
        .filter_map(|(key, value)| {
            let revision = key.strip_prefix(KEY_PREFIX_ENDPOINTS)?;
            let addrs = value
                .split(',')
                .filter_map(|addr| addr.trim().parse().ok())
                .collect();
            Some((revision.to_owned(), addrs))
        })
        .collect()
}

/// The counts published by one member, by revision id. A value with a
/// number that does not parse, or too many, is skipped whole.
pub fn counts_from_key_values<'a>(
    key_values: impl Iterator<Item = (&'a str, &'a str)>,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    numbers_from_key_values(KEY_PREFIX_COUNTS, key_values)
}

/// The numbers under `prefix` (`counts/`, `inflight/`) published by one
/// member, by revision id. A value with a number that does not parse, or
/// too many, is skipped whole.
pub fn numbers_from_key_values<'a>(
    prefix: &str,
    key_values: impl Iterator<Item = (&'a str, &'a str)>,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    key_values
        .filter_map(|(key, value)| {
            let revision = key.strip_prefix(prefix)?;
            let numbers: Vec<u64> = value
                .split(',')
                .map(|n| n.trim().parse().ok())
                .collect::<Option<_>>()?;
            (numbers.len() <= MAX_COUNTS).then(|| (revision.to_owned(), numbers))
        })
        .collect()
}

/// The value of a counts key, or why it cannot be published.
pub fn counts_value(numbers: &[u64]) -> Result<String, FactError> {
    if numbers.len() > MAX_COUNTS {
        return Err(FactError::TooManyCounts {
            count: numbers.len(),
            max: MAX_COUNTS,
        });
    }
    Ok(numbers
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

/// The value of an endpoints key, or why it cannot be published.
pub fn endpoints_value(addrs: &[SocketAddr]) -> Result<String, FactError> {
    let value = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if value.len() > MAX_ENDPOINTS_VALUE_BYTES {
        return Err(FactError::EndpointsTooLong {
            bytes: value.len(),
            max: MAX_ENDPOINTS_VALUE_BYTES,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_bad_values_are_skipped() {
        let value = counts_value(&[12, 0, 3, u64::MAX]).expect("value");
        let parsed = counts_from_key_values(
            [
                ("counts/r1", value.as_str()),
                ("counts/r2", "1,x,3"),
                ("counts/r3", &"1,".repeat(MAX_COUNTS).to_string()),
                ("endpoints/r1", "127.0.0.1:1"),
            ]
            .into_iter(),
        );
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed["r1"], [12, 0, 3, u64::MAX]);
        assert!(counts_value(&[0; MAX_COUNTS + 1]).is_err());
    }

    #[test]
    fn endpoints_round_trip_and_bad_addresses_are_skipped() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().expect("valid"),
            "10.0.0.2:8080".parse().expect("valid"),
        ];
        let value = endpoints_value(&addrs).expect("valid");
        let parsed = endpoints_from_key_values(
            [
                ("endpoints/r1", value.as_str()),
                ("endpoints/r2", "nope,127.0.0.1:9"),
                ("role", "voter"),
            ]
            .into_iter(),
        );
        assert_eq!(parsed["r1"], addrs);
        assert_eq!(
            parsed["r2"],
            vec!["127.0.0.1:9".parse::<SocketAddr>().expect("valid")]
        );
        assert_eq!(parsed.len(), 2);
        let many: Vec<SocketAddr> = (0..100)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 65000)))
            .collect();
        assert!(endpoints_value(&many).is_err());
    }
}
