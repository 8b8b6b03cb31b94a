//! An environment's trust root (spec C2): `<store root>/<env>/trust-root.json`,
//! the allowlist of operator keys whose signature a change of that
//! environment needs. No file, no signing (environments behave as before);
//! `local` is never signed. The file is read on every check, so adding or
//! removing a key needs no restart.
//!
//! The two checks both paths share: [`local_signer`] for `gtc op` on this
//! machine (the operator's own key file must be listed) and
//! [`verify_request`] for the admin API (the request's signature must
//! verify for a listed key, within the date window). Both fail closed: an
//! unreadable or invalid trust root refuses every change.
//!
//! Knows no HTTP and no audit log; callers audit the refusals.

use std::path::{Path, PathBuf};

use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::CliError;
use crate::operator_key::{
    self, CREATE_HINT, DATE_WINDOW_SECONDS, KeyError, OperatorKey, PublicKey, SignedHeaders,
};

/// The noun of the trust verbs in reports and audit events (the spec's).
pub const NOUN: &str = "trust-root";
/// Schema discriminator of a trust root.
pub const TRUST_ROOT_SCHEMA: &str = "greentic.trust-root.v1";

/// The `policy` of an authorization the trust root decided.
pub const TRUST_ROOT_POLICY: &str = "trust-root";

/// Keys one trust root holds at most: a bound on what every check reads.
pub const TRUST_ROOT_KEYS_MAX: usize = 256;

/// `trust-root.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRoot {
    pub schema: String,
    pub keys: Vec<TrustedKey>,
}

/// One operator key allowed to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub key_id: String,
    /// Standard base64 of the 32 public key bytes.
    pub public_key: String,
    /// Whose key this is, for people (`alice laptop`).
    pub label: String,
    pub added_at: chrono::DateTime<chrono::Utc>,
    /// Who added it (the operator as audit events name them).
    pub added_by: String,
}

/// `gtc op env trust add --answers`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustAddAnswers {
    pub environment_id: EnvId,
    /// The operator's public key as `gtc operator key show` prints it.
    pub public_key: String,
    /// Whose key this is.
    pub label: String,
}

/// `gtc op env trust remove --answers`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustRemoveAnswers {
    pub environment_id: EnvId,
    pub key_id: String,
}

fn refused(message: impl Into<String>) -> CliError {
    CliError::new(ErrorKind::TrustRoot, message)
}

/// The CLI error of an operator key that could not be read.
pub fn key_error(error: KeyError) -> CliError {
    let kind = match error {
        KeyError::Io { .. } => ErrorKind::Io,
        _ => ErrorKind::OperatorKey,
    };
    CliError::new(kind, error.to_string())
}

impl TrustRoot {
    /// An empty trust root.
    pub fn new() -> Self {
        Self {
            schema: TRUST_ROOT_SCHEMA.to_owned(),
            keys: Vec::new(),
        }
    }

    /// The entry of `public`, compared on the whole public key.
    pub fn find(&self, public: &PublicKey) -> Option<&TrustedKey> {
        let text = public.to_base64();
        self.keys.iter().find(|key| key.public_key == text)
    }

    fn validate(&self) -> Result<(), String> {
        if self.schema != TRUST_ROOT_SCHEMA {
            return Err(format!(
                "schema {:?}, expected {TRUST_ROOT_SCHEMA:?}",
                self.schema
            ));
        }
        if self.keys.len() > TRUST_ROOT_KEYS_MAX {
            return Err(format!(
                "{} keys, more than {TRUST_ROOT_KEYS_MAX}",
                self.keys.len()
            ));
        }
        for key in &self.keys {
            let public = PublicKey::from_base64(&key.public_key)
                .map_err(|error| format!("key {}: {error}", key.key_id))?;
            if public.key_id() != key.key_id {
                return Err(format!(
                    "key {} has the public key of {}",
                    key.key_id,
                    public.key_id()
                ));
            }
        }
        Ok(())
    }
}

impl Default for TrustRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// `<store root>/<env>/trust-root.json`.
pub fn path(store_root: &Path, env: &EnvId) -> PathBuf {
    deploy::layout::trust_root(store_root, env)
}

/// The trust root of `env`, if it has one. An unreadable or invalid file
/// is an error, never "no trust root".
pub fn load(store_root: &Path, env: &EnvId) -> Result<Option<TrustRoot>, CliError> {
    let path = path(store_root, env);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(refused(format!(
                "cannot read the trust root {}: {error}; changes are refused until it can be read",
                path.display()
            )));
        }
    };
    let trust: TrustRoot = serde_json::from_str(&text).map_err(|error| {
        refused(format!(
            "the trust root {} is not valid: {error}; changes are refused until it is fixed",
            path.display()
        ))
    })?;
    trust.validate().map_err(|reason| {
        refused(format!(
            "the trust root {} is not valid: {reason}; changes are refused until it is fixed",
            path.display()
        ))
    })?;
    Ok(Some(trust))
}

/// Writes `trust` atomically (temp file, fsync, rename, fsync of the folder).
pub fn save(store_root: &Path, env: &EnvId, trust: &TrustRoot) -> Result<(), CliError> {
    store::write_file_atomically(&path(store_root, env), document(trust)?.as_bytes())
        .map_err(CliError::from)
}

/// The text of `trust-root.json` for `trust`, as every replica writes it.
pub fn document(trust: &TrustRoot) -> Result<String, CliError> {
    let mut text = serde_json::to_string_pretty(trust)
        .map_err(|error| CliError::new(ErrorKind::Internal, error.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// For `gtc op` on this machine: `None` when `env` needs no signature
/// (`local`, or no trust root); else the `key_id` of the operator key in
/// `home`, which must be listed.
pub fn local_signer(
    home: &Path,
    store_root: &Path,
    env: &EnvId,
) -> Result<Option<String>, CliError> {
    if env.is_local() {
        return Ok(None);
    }
    let Some(trust) = load(store_root, env)? else {
        return Ok(None);
    };
    let key = OperatorKey::load(home).map_err(|error| match error {
        KeyError::Missing { path } => CliError::new(
            ErrorKind::OperatorKey,
            format!(
                "environment {env} has a trust root, so its changes must be signed, and there is no operator key at {}; {CREATE_HINT}",
                path.display()
            ),
        ),
        other => key_error(other),
    })?;
    let public = key.public();
    match trust.find(&public) {
        Some(entry) => Ok(Some(entry.key_id.clone())),
        None => Err(not_listed(env, &public.key_id())),
    }
}

/// The authorization recorded with a change the trust root refused: a
/// denial by policy `trust-root`, for the reason the error gives (a
/// `key_id` at most, never key material).
pub fn denial(error: &CliError) -> deploy::audit::Authorization {
    deploy::audit::Authorization {
        decision: deploy::audit::Decision::Deny,
        policy: TRUST_ROOT_POLICY.to_owned(),
        reason: error.message.clone(),
    }
}

fn not_listed(env: &EnvId, key_id: &str) -> CliError {
    refused(format!(
        "operator key {key_id} is not in the trust root of environment {env}; nothing was changed. Ask an admin to add it with `gtc op env trust add` (its public key: `gtc operator key show`)"
    ))
}

/// For the admin API: `None` when `env` needs no signature; else the
/// `key_id` of the listed key whose signature over the request verifies,
/// dated within [`DATE_WINDOW_SECONDS`] of `now`.
pub fn verify_request(
    trust: &TrustRoot,
    env: &EnvId,
    signed: Option<&SignedHeaders>,
    request: (&str, &str, &[u8]),
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, CliError> {
    let Some(signed) = signed else {
        return Err(CliError::new(
            ErrorKind::OperatorKey,
            format!(
                "environment {env} has a trust root, so its changes must be signed with an operator key (headers {}, {}, {}); {CREATE_HINT}",
                operator_key::HEADER_KEY,
                operator_key::HEADER_SIGNATURE,
                operator_key::HEADER_DATE
            ),
        ));
    };
    let public = PublicKey::from_base64(&signed.public_key).map_err(|error| {
        CliError::new(
            ErrorKind::OperatorKey,
            format!("{}: {error}", operator_key::HEADER_KEY),
        )
    })?;
    let Some(entry) = trust.find(&public) else {
        return Err(not_listed(env, &public.key_id()));
    };
    let (method, path, body) = request;
    let message = operator_key::canonical_request(method, path, body, &signed.date);
    public
        .verify(message.as_bytes(), &signed.signature)
        .map_err(|error| {
            refused(format!(
                "the request's signature by operator key {} was refused: {error}",
                entry.key_id
            ))
        })?;
    let date = chrono::DateTime::parse_from_rfc3339(&signed.date).map_err(|error| {
        refused(format!(
            "{} {:?} is not an RFC 3339 time: {error}",
            operator_key::HEADER_DATE,
            signed.date
        ))
    })?;
    let skew = (now - date.with_timezone(&chrono::Utc)).num_seconds().abs();
    if skew > DATE_WINDOW_SECONDS {
        return Err(refused(format!(
            "{} {} is {skew} s from the node's clock, more than the {DATE_WINDOW_SECONDS} s a signed request may be; sign it again (and check the clocks)",
            operator_key::HEADER_DATE,
            signed.date
        )));
    }
    Ok(entry.key_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &OperatorKey) -> TrustRoot {
        let public = key.public();
        TrustRoot {
            schema: TRUST_ROOT_SCHEMA.to_owned(),
            keys: vec![TrustedKey {
                key_id: public.key_id(),
                public_key: public.to_base64(),
                label: "a".to_owned(),
                added_at: chrono::Utc::now(),
                added_by: "ops".to_owned(),
            }],
        }
    }

    #[test]
    fn a_listed_key_passes_and_an_unlisted_stale_or_tampered_request_is_refused() {
        // Proves: the admin API's check accepts exactly a fresh, intact
        // request signed by a listed key.
        let (home_a, home_b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let key_a = OperatorKey::create(home_a.path()).expect("a");
        let key_b = OperatorKey::create(home_b.path()).expect("b");
        let trust = listed(&key_a);
        let env: EnvId = "prod".parse().expect("env");
        let now = chrono::Utc::now();
        let date = now.to_rfc3339();
        let (method, path, body) = ("POST", "/v1/environments/prod/traffic", b"{}".as_slice());
        let signed = key_a.sign_request(method, path, body, &date);
        let ok = verify_request(&trust, &env, Some(&signed), (method, path, body), now);
        assert_eq!(ok.expect("listed"), key_a.public().key_id());

        let by_b = key_b.sign_request(method, path, body, &date);
        let error = verify_request(&trust, &env, Some(&by_b), (method, path, body), now)
            .expect_err("unlisted");
        assert_eq!(error.kind, ErrorKind::TrustRoot);
        assert!(error.message.contains(&key_b.public().key_id()));

        let tampered = verify_request(&trust, &env, Some(&signed), (method, path, b"{ }"), now)
            .expect_err("tampered");
        assert_eq!(tampered.kind, ErrorKind::TrustRoot);

        let later = now + chrono::Duration::seconds(DATE_WINDOW_SECONDS + 1);
        let stale = verify_request(&trust, &env, Some(&signed), (method, path, body), later)
            .expect_err("stale");
        assert!(
            stale.message.contains("x-greentic-date"),
            "{}",
            stale.message
        );

        let unsigned =
            verify_request(&trust, &env, None, (method, path, body), now).expect_err("unsigned");
        assert_eq!(unsigned.kind, ErrorKind::OperatorKey);
    }

    #[test]
    fn an_invalid_trust_root_fails_closed_and_local_is_never_signed() {
        // Proves: a broken file refuses rather than turning signing off;
        // `local` and an environment without a file need no key.
        let root = tempfile::tempdir().expect("root");
        let home = tempfile::tempdir().expect("home");
        let env: EnvId = "prod".parse().expect("env");
        assert_eq!(
            local_signer(home.path(), root.path(), &env).expect("none"),
            None
        );
        std::fs::create_dir_all(root.path().join("prod")).expect("dir");
        std::fs::write(path(root.path(), &env), b"{\"schema\":\"x\",\"keys\":[]}").expect("write");
        assert_eq!(
            local_signer(home.path(), root.path(), &env)
                .expect_err("invalid")
                .kind,
            ErrorKind::TrustRoot
        );
        let key = OperatorKey::create(home.path()).expect("key");
        save(root.path(), &env, &listed(&key)).expect("save");
        assert_eq!(
            local_signer(home.path(), root.path(), &env).expect("listed"),
            Some(key.public().key_id())
        );
        assert_eq!(
            local_signer(home.path(), root.path(), &EnvId::local()).expect("local"),
            None
        );
    }
}
