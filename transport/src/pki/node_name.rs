//! Node and cluster names: DNS-label-like so they fit in a certificate SAN.

use std::fmt;
use std::str::FromStr;

use super::CLUSTER_SAN;

/// Longest accepted name, in bytes: the DNS label limit, so every name is a
/// valid SAN (the workspace's one node-name bound, from `deploy`).
pub use deploy::ids::NODE_NAME_BYTES_MAX;

/// Why a name is not a valid node or cluster name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than [`NODE_NAME_BYTES_MAX`].
    #[error("the name is {len} bytes long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    /// The name contains a character outside `[a-z0-9-]`.
    #[error("character {character:?} at byte {index} is not one of [a-z0-9-]")]
    InvalidCharacter { character: char, index: usize },
    /// The name starts or ends with `-`, which DNS labels forbid.
    #[error("the name starts or ends with '-'")]
    HyphenAtEdge,
    /// The name is the fixed cluster SAN, which would make peer names ambiguous.
    #[error("{CLUSTER_SAN:?} is reserved for the cluster-wide SAN")]
    Reserved,
}

/// Checks the DNS-label rules shared by node and cluster names.
pub(crate) fn validate_label(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NODE_NAME_BYTES_MAX {
        return Err(NameError::TooLong {
            len: name.len(),
            max: NODE_NAME_BYTES_MAX,
        });
    }
    if let Some((index, character)) = name
        .char_indices()
        .find(|(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(NameError::InvalidCharacter { character, index });
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::HyphenAtEdge);
    }
    Ok(())
}

/// A validated node name: `[a-z0-9-]`, 1 to 63 bytes, no leading or trailing `-`,
/// and not the reserved [`CLUSTER_SAN`].
///
/// It is the identity a server sees for an authenticated caller, so it is only ever
/// built through validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// Validates `name` as a node name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        validate_label(&name)?;
        if name == CLUSTER_SAN {
            return Err(NameError::Reserved);
        }
        Ok(NodeName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        NodeName::new(name)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for name in ["a", "node-1", "n0", &"x".repeat(NODE_NAME_BYTES_MAX)] {
            assert!(NodeName::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(NodeName::new(""), Err(NameError::Empty));
        assert_eq!(
            NodeName::new("x".repeat(NODE_NAME_BYTES_MAX + 1)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
        assert_eq!(
            NodeName::new("Node"),
            Err(NameError::InvalidCharacter {
                character: 'N',
                index: 0
            })
        );
        assert!(matches!(
            NodeName::new("a.b"),
            Err(NameError::InvalidCharacter { .. })
        ));
        assert_eq!(NodeName::new("-a"), Err(NameError::HyphenAtEdge));
        assert_eq!(NodeName::new("a-"), Err(NameError::HyphenAtEdge));
        assert_eq!(NodeName::new(CLUSTER_SAN), Err(NameError::Reserved));
    }
}
