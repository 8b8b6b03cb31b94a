//! The set of cluster keys a node accepts, and a handle to swap it while
//! gossip runs.
//!
//! Rotation follows Serf's keyring: (1) add the new key to every node as a
//! secondary key, (2) make it the primary everywhere, (3) remove the old key
//! everywhere. At every step each pair of nodes shares at least one key that
//! one sends with and the other accepts, so the cluster never partitions.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::key::ClusterKey;

/// Most keys a keyring may hold, primary included. Opening a datagram tries
/// every key (trial decryption), so this bounds the work an unauthenticated
/// packet can cost; a rotation needs only two.
pub const MAX_KEYRING_KEYS: usize = 4;

/// The keys one node uses for gossip: it seals with `primary` and opens with
/// any key of the ring, primary first.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Keyring {
    primary: ClusterKey,
    secondary: Vec<ClusterKey>,
}

/// Why a keyring could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// More keys than [`MAX_KEYRING_KEYS`], counting the primary.
    #[error("keyring holds {keys} keys, at most {max} are allowed")]
    TooManyKeys { keys: usize, max: usize },
    /// The same key appears twice; the caller most likely mixed up a rotation step.
    #[error("keyring lists the same key twice (position {first} and {second})")]
    DuplicateKey { first: usize, second: usize },
}

impl Keyring {
    /// A keyring holding a single key: the normal state between rotations.
    pub fn single(primary: ClusterKey) -> Self {
        Self {
            primary,
            secondary: Vec::new(),
        }
    }

    /// A keyring that seals with `primary` and also opens with `secondary`.
    pub fn new(primary: ClusterKey, secondary: Vec<ClusterKey>) -> Result<Self, KeyringError> {
        let keyring = Self { primary, secondary };
        keyring.validate()?;
        Ok(keyring)
    }

    /// The key every outgoing datagram is sealed with.
    pub fn primary(&self) -> &ClusterKey {
        &self.primary
    }

    /// Keys accepted for incoming datagrams besides the primary.
    pub fn secondary(&self) -> &[ClusterKey] {
        &self.secondary
    }

    /// Every accepted key, primary first (the most likely match, so the
    /// common case costs one AEAD attempt).
    pub fn keys(&self) -> impl Iterator<Item = &ClusterKey> {
        std::iter::once(&self.primary).chain(self.secondary.iter())
    }

    /// Rotation step 1: accept `key` in addition to the current keys.
    pub fn with_added(&self, key: ClusterKey) -> Result<Self, KeyringError> {
        let mut secondary = self.secondary.clone();
        secondary.push(key);
        Self::new(self.primary.clone(), secondary)
    }

    /// Rotation step 2: seal with `key` from now on, still accepting the old
    /// primary. `key` may already be a secondary key.
    pub fn with_primary(&self, key: ClusterKey) -> Result<Self, KeyringError> {
        let mut secondary: Vec<ClusterKey> = self
            .keys()
            .filter(|existing| **existing != key)
            .cloned()
            .collect();
        secondary.dedup();
        Self::new(key, secondary)
    }

    /// Rotation step 3: stop accepting `key`. Removing the primary is not
    /// possible (a node must always be able to send); switch it first.
    pub fn without_secondary(&self, key: &ClusterKey) -> Self {
        Self {
            primary: self.primary.clone(),
            secondary: self
                .secondary
                .iter()
                .filter(|existing| *existing != key)
                .cloned()
                .collect(),
        }
    }

    /// Checks the bounds that [`Keyring::new`] enforces.
    pub fn validate(&self) -> Result<(), KeyringError> {
        let keys: Vec<&ClusterKey> = self.keys().collect();
        if keys.len() > MAX_KEYRING_KEYS {
            return Err(KeyringError::TooManyKeys {
                keys: keys.len(),
                max: MAX_KEYRING_KEYS,
            });
        }
        for (first, key) in keys.iter().enumerate() {
            if let Some(offset) = keys[first + 1..].iter().position(|other| other == key) {
                return Err(KeyringError::DuplicateKey {
                    first,
                    second: first + 1 + offset,
                });
            }
        }
        Ok(())
    }
}

/// A keyring shared between the gossip socket and the operator, swappable at
/// runtime without restarting gossip.
///
/// Readers (one load per datagram) never block and never see a half-updated
/// ring; a store takes effect for the next datagram sealed or opened.
#[derive(Clone, Debug)]
pub struct SharedKeyring {
    current: Arc<ArcSwap<Keyring>>,
}

impl SharedKeyring {
    /// Starts sharing `keyring`.
    pub fn new(keyring: Keyring) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(keyring)),
        }
    }

    /// The keyring in force now.
    pub fn load(&self) -> Arc<Keyring> {
        self.current.load_full()
    }

    /// Replaces the keyring for every holder of this handle.
    pub fn store(&self, keyring: Keyring) {
        self.current.store(Arc::new(keyring));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::CLUSTER_KEY_BYTES;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; CLUSTER_KEY_BYTES])
    }

    #[test]
    fn rotation_steps_keep_one_common_key() {
        let start = Keyring::single(key(1));
        let added = start.with_added(key(2)).expect("two keys fit");
        assert_eq!(added.keys().count(), 2);
        let switched = added.with_primary(key(2)).expect("two keys fit");
        assert_eq!(switched.primary(), &key(2));
        assert_eq!(switched.secondary(), &[key(1)]);
        let done = switched.without_secondary(&key(1));
        assert_eq!(done, Keyring::single(key(2)));
    }

    #[test]
    fn bounds_are_enforced() {
        let too_many = Keyring::new(key(0), (1..=MAX_KEYRING_KEYS as u8).map(key).collect());
        assert!(matches!(too_many, Err(KeyringError::TooManyKeys { .. })));
        let duplicate = Keyring::new(key(1), vec![key(2), key(1)]);
        assert_eq!(
            duplicate,
            Err(KeyringError::DuplicateKey {
                first: 0,
                second: 2
            })
        );
    }

    #[test]
    fn shared_keyring_swap_is_seen_by_clones() {
        let shared = SharedKeyring::new(Keyring::single(key(1)));
        let clone = shared.clone();
        shared.store(Keyring::single(key(2)));
        assert_eq!(clone.load().primary(), &key(2));
    }
}
