//! Signed sticky-session cookies: once a client was served by a revision, it
//! keeps that revision until the split changes.
//!
//! Cookie `_gt_rev_<deployment_id>` = `<b64url payload>.<b64url HMAC-SHA256>`,
//! payload `{"e": env, "d": deployment, "r": revision, "g": split generation,
//! "x": expiry (unix seconds)}`. Binding the split generation means a new
//! split re-samples every client; the MAC means a client cannot pick its own
//! revision.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use hmac::{Hmac, Mac};
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

/// Prefix of the cookie name; the deployment id follows.
pub const COOKIE_PREFIX: &str = "_gt_rev_";

/// Longest cookie value we decode; ours are about 200 bytes.
pub const COOKIE_VALUE_BYTES_MAX: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// The node's cookie-signing key.
#[derive(Clone)]
pub struct StickyKey([u8; 32]);

impl StickyKey {
    /// A key from 32 secret bytes (from the OS RNG or the cluster secret).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail; fall back
        // to a fresh empty-key MAC rather than panic if it ever did.
        HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
    }
}

impl std::fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StickyKey(redacted)")
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    e: String,
    d: String,
    r: String,
    g: u64,
    x: i64,
}

/// Why a cookie does not pin a revision (the request is then re-sampled).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StickyError {
    #[error("the cookie is not a signed revision pin")]
    Malformed,
    #[error("the cookie's signature does not verify")]
    BadSignature,
    #[error("the cookie expired")]
    Expired,
    #[error("the cookie belongs to another deployment or environment")]
    WrongDeployment,
    #[error("the cookie was issued for split generation {cookie}; the split is now at {current}")]
    StaleGeneration { cookie: u64, current: u64 },
}

/// The cookie name for `deployment`.
pub fn cookie_name(deployment: DeploymentId) -> String {
    format!("{COOKIE_PREFIX}{deployment}")
}

/// The cookie value pinning `revision` under split `generation`.
pub fn issue(
    key: &StickyKey,
    env: &EnvId,
    deployment: DeploymentId,
    revision: RevisionId,
    generation: u64,
    expires_at_unix: i64,
) -> String {
    let payload = Payload {
        e: env.to_string(),
        d: deployment.to_string(),
        r: revision.to_string(),
        g: generation,
        x: expires_at_unix,
    };
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    let encoded = URL_SAFE_NO_PAD.encode(json);
    let mut mac = key.mac();
    mac.update(encoded.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{encoded}.{signature}")
}

/// The revision a cookie pins, if it is genuine, current and unexpired.
pub fn verify(
    key: &StickyKey,
    value: &str,
    env: &EnvId,
    deployment: DeploymentId,
    current_generation: u64,
    now_unix: i64,
) -> Result<RevisionId, StickyError> {
    if value.len() > COOKIE_VALUE_BYTES_MAX {
        return Err(StickyError::Malformed);
    }
    let (encoded, signature) = value.split_once('.').ok_or(StickyError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| StickyError::Malformed)?;
    let mut mac = key.mac();
    mac.update(encoded.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&signature)
        .map_err(|_| StickyError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| StickyError::Malformed)?;
    let payload: Payload = serde_json::from_slice(&json).map_err(|_| StickyError::Malformed)?;
    if payload.e != env.as_str() || payload.d != deployment.to_string() {
        return Err(StickyError::WrongDeployment);
    }
    if payload.x <= now_unix {
        return Err(StickyError::Expired);
    }
    if payload.g != current_generation {
        return Err(StickyError::StaleGeneration {
            cookie: payload.g,
            current: current_generation,
        });
    }
    payload.r.parse().map_err(|_| StickyError::Malformed)
}

/// The `Set-Cookie` values a router hands out, so that signing happens
/// once per (deployment, revision, split generation) and half-TTL, not per
/// request. Pruned per deployment: a deployment keeps only the cookies of
/// its own newest split generation, so a split change of one deployment
/// never evicts another's, and [`CookieCache::retain`] drops deployments
/// that left the route table.
#[derive(Debug, Default)]
pub struct CookieCache {
    deployments: RwLock<HashMap<DeploymentId, Issued>>,
}

/// One deployment's cookies, all of one split generation.
#[derive(Debug)]
struct Issued {
    generation: u64,
    /// (revision, expiry in unix seconds, the whole `Set-Cookie` value).
    cookies: Vec<(RevisionId, i64, HeaderValue)>,
}

impl CookieCache {
    /// The cookie pinning `revision` under `generation`, if one was issued
    /// that expires after `fresh_until`.
    pub fn get(
        &self,
        deployment: DeploymentId,
        revision: RevisionId,
        generation: u64,
        fresh_until: i64,
    ) -> Option<HeaderValue> {
        let deployments = self.deployments.read().ok()?;
        let issued = deployments.get(&deployment)?;
        if issued.generation != generation {
            return None;
        }
        issued
            .cookies
            .iter()
            .find(|(r, expires_at, _)| *r == revision && *expires_at > fresh_until)
            .map(|(_, _, value)| value.clone())
    }

    /// Keeps `value` (expiring at `expires_at`) for `revision` under
    /// `generation`. A newer generation of the deployment replaces its
    /// older cookies; a cookie of an older generation than the kept one
    /// (a request routed on an older table) is not kept.
    pub fn insert(
        &self,
        deployment: DeploymentId,
        revision: RevisionId,
        generation: u64,
        expires_at: i64,
        value: HeaderValue,
    ) {
        let Ok(mut deployments) = self.deployments.write() else {
            return;
        };
        let issued = deployments.entry(deployment).or_insert(Issued {
            generation,
            cookies: Vec::new(),
        });
        if issued.generation > generation {
            return;
        }
        if issued.generation < generation {
            issued.generation = generation;
            issued.cookies.clear();
        }
        issued.cookies.retain(|(r, _, _)| *r != revision);
        issued.cookies.push((revision, expires_at, value));
    }

    /// Drops the cookies of every deployment `live` says is gone.
    pub fn retain(&self, live: impl Fn(&DeploymentId) -> bool) {
        if let Ok(mut deployments) = self.deployments.write() {
            deployments.retain(|deployment, _| live(deployment));
        }
    }

    /// Deployments with cookies kept.
    pub fn deployments(&self) -> usize {
        self.deployments.read().map_or(0, |d| d.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids() -> (EnvId, DeploymentId, RevisionId) {
        (
            EnvId::local(),
            DeploymentId::from_ulid(ulid::Ulid::from_parts(1, 1)),
            RevisionId::from_ulid(ulid::Ulid::from_parts(1, 2)),
        )
    }

    #[test]
    fn a_genuine_current_cookie_pins_its_revision() {
        let key = StickyKey::new([7; 32]);
        let (env, deployment, revision) = ids();
        let cookie = issue(&key, &env, deployment, revision, 3, 1_000);
        assert_eq!(
            verify(&key, &cookie, &env, deployment, 3, 999),
            Ok(revision)
        );
        assert_eq!(
            verify(&key, &cookie, &env, deployment, 4, 999),
            Err(StickyError::StaleGeneration {
                cookie: 3,
                current: 4
            })
        );
        assert_eq!(
            verify(&key, &cookie, &env, deployment, 3, 1_000),
            Err(StickyError::Expired)
        );
        let other = DeploymentId::from_ulid(ulid::Ulid::from_parts(9, 9));
        assert_eq!(
            verify(&key, &cookie, &env, other, 3, 0),
            Err(StickyError::WrongDeployment)
        );
        let stranger = StickyKey::new([8; 32]);
        assert_eq!(
            verify(&stranger, &cookie, &env, deployment, 3, 0),
            Err(StickyError::BadSignature)
        );
    }

    #[test]
    fn a_client_cannot_choose_its_revision() {
        let key = StickyKey::new([7; 32]);
        let (env, deployment, revision) = ids();
        let cookie = issue(&key, &env, deployment, revision, 0, i64::MAX);
        let (_, signature) = cookie.split_once('.').expect("two parts");
        let forged_payload = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"e": "local", "d": deployment.to_string(), "r": ulid::Ulid::from_parts(5, 5).to_string(), "g": 0, "x": i64::MAX}).to_string(),
        );
        let forged = format!("{forged_payload}.{signature}");
        assert_eq!(
            verify(&key, &forged, &env, deployment, 0, 0),
            Err(StickyError::BadSignature)
        );
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[test]
    fn the_cookie_cache_prunes_per_deployment() {
        let cache = CookieCache::default();
        let a = DeploymentId::from_ulid(ulid::Ulid::from_parts(1, 1));
        let b = DeploymentId::from_ulid(ulid::Ulid::from_parts(2, 2));
        let (ra, rb) = (
            RevisionId::from_ulid(ulid::Ulid::from_parts(1, 3)),
            RevisionId::from_ulid(ulid::Ulid::from_parts(2, 3)),
        );
        let value = |text: &'static str| HeaderValue::from_static(text);
        // Deployment B is at split generation 1, A at 3: issuing A's cookie
        // must not evict B's (it used to: one deployment's generation pruned
        // every deployment's older ones).
        cache.insert(b, rb, 1, 100, value("b1"));
        cache.insert(a, ra, 3, 100, value("a3"));
        assert_eq!(cache.get(b, rb, 1, 0), Some(value("b1")));
        assert_eq!(cache.get(a, ra, 3, 0), Some(value("a3")));
        // And B's cookie does not evict A's either.
        cache.insert(b, rb, 1, 200, value("b1-renewed"));
        assert_eq!(cache.get(a, ra, 3, 0), Some(value("a3")));
        assert_eq!(cache.get(b, rb, 1, 150), Some(value("b1-renewed")));
        // A new split of A drops A's older cookies only; a late insert for
        // A's old generation is not kept.
        cache.insert(a, ra, 4, 100, value("a4"));
        assert_eq!(cache.get(a, ra, 3, 0), None);
        cache.insert(a, ra, 3, 100, value("a3-late"));
        assert_eq!(cache.get(a, ra, 4, 0), Some(value("a4")));
        assert_eq!(cache.get(b, rb, 1, 0), Some(value("b1-renewed")));
        // A cookie past its freshness is not handed out.
        assert_eq!(cache.get(a, ra, 4, 100), None);
        // A deployment that left the table leaves the cache.
        cache.retain(|d| *d == b);
        assert_eq!(cache.deployments(), 1);
        assert_eq!(cache.get(a, ra, 4, 0), None);
        assert_eq!(cache.get(b, rb, 1, 0), Some(value("b1-renewed")));
    }

    proptest! {
        /// No input crashes the verifier, and arbitrary text never verifies.
        #[test]
        fn arbitrary_cookies_never_verify(value in "\\PC{0,600}") {
            let key = StickyKey::new([1; 32]);
            let (env, deployment, _) = ids();
            prop_assert!(verify(&key, &value, &env, deployment, 0, 0).is_err());
        }
    }
}
