//! Sealing and opening with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`, no hand-made crypto). Pure given the nonce: the
//! caller draws a fresh random 24-byte nonce for every seal.
//!
//! Two uses, each with its own associated data so a ciphertext is only
//! ever opened where it was sealed:
//! - a secret version, sealed under the environment's data key, bound to
//!   `env`, `path` and `version` ([`version_associated_data`]): a version
//!   file copied to another path, environment or version number fails;
//! - an environment's data key, sealed (wrapped) under the node key, bound
//!   to `env` ([`data_key_associated_data`]).

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use deploy::ids::EnvId;
use zeroize::Zeroizing;

use crate::path::SecretPath;

/// Key length: XChaCha20-Poly1305 takes a 256-bit key.
pub const KEY_BYTES: usize = 32;
/// Nonce length: 192 bits, so random nonces never collide in practice.
pub const NONCE_BYTES: usize = 24;

/// A 256-bit key, zeroed when dropped. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; KEY_BYTES]>);

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes, for wrapping a data key.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

/// The AEAD refused to open: wrong key, wrong associated data, or a
/// ciphertext that was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFailed;

/// Associated data of a secret version: `greentic.secret.v1`, env, path
/// and version, NUL-separated (none of them may contain NUL).
pub fn version_associated_data(env: &EnvId, path: &SecretPath, version: u32) -> Vec<u8> {
    format!("greentic.secret.v1\0{env}\0{path}\0{version}").into_bytes()
}

/// Associated data of an environment's wrapped data key.
pub fn data_key_associated_data(env: &EnvId) -> Vec<u8> {
    format!("greentic.secret-data-key.v1\0{env}").into_bytes()
}

/// Seals `plaintext` under `key` with `nonce` and `associated_data`.
pub fn seal(
    key: &Key,
    nonce: &[u8; NONCE_BYTES],
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, OpenFailed> {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad: associated_data,
            },
        )
        .map_err(|_| OpenFailed)
}

/// Opens what [`seal`] made; any change to the key, nonce, associated data
/// or ciphertext is [`OpenFailed`], and nothing of the plaintext is returned.
pub fn open(
    key: &Key,
    nonce: &[u8],
    associated_data: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
    let nonce = XNonce::try_from(nonce).map_err(|_| OpenFailed)?;
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad: associated_data,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> SecretPath {
        SecretPath::parse(text).expect("valid")
    }

    #[test]
    fn a_version_opens_only_where_it_was_sealed() {
        // Proves: the associated data binds env, path and version, and any
        // changed byte of the ciphertext is refused.
        let key = Key::from_bytes([7; KEY_BYTES]);
        let nonce = [3; NONCE_BYTES];
        let env = EnvId::local();
        let ad = version_associated_data(&env, &path("db/password"), 1);
        let sealed = seal(&key, &nonce, &ad, b"marker-value").expect("seal");
        assert_eq!(
            open(&key, &nonce, &ad, &sealed).expect("open").as_slice(),
            b"marker-value"
        );
        let moved = version_associated_data(&env, &path("db/other"), 1);
        assert_eq!(open(&key, &nonce, &moved, &sealed).err(), Some(OpenFailed));
        let renumbered = version_associated_data(&env, &path("db/password"), 2);
        assert_eq!(
            open(&key, &nonce, &renumbered, &sealed).err(),
            Some(OpenFailed)
        );
        let other_env =
            version_associated_data(&"prod".parse().expect("env"), &path("db/password"), 1);
        assert_eq!(
            open(&key, &nonce, &other_env, &sealed).err(),
            Some(OpenFailed)
        );
        let wrong_key = Key::from_bytes([8; KEY_BYTES]);
        assert_eq!(
            open(&wrong_key, &nonce, &ad, &sealed).err(),
            Some(OpenFailed)
        );
        for position in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[position] ^= 0x01;
            assert_eq!(open(&key, &nonce, &ad, &tampered).err(), Some(OpenFailed));
        }
        assert_eq!(open(&key, &[0; 5], &ad, &sealed).err(), Some(OpenFailed));
    }

    #[test]
    fn debug_of_a_key_shows_nothing() {
        // Proves: a key formatted by accident prints no byte of it.
        assert_eq!(
            format!("{:?}", Key::from_bytes([0xAB; KEY_BYTES])),
            "Key([REDACTED])"
        );
    }
}
