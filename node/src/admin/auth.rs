//! Who is calling the admin API and what they may do.
//!
//! Two kinds of bearer token: the node file's (`node.json`, 0600, made at
//! start), which is the operator who started the node and is decided by the
//! policy file exactly like `gtc op`; and the tokens of `tokens.json`, each
//! with a role per environment (`deploy::access`). No token or an unknown
//! one is a 401 and is not audited (there is no one to name, and anyone
//! could fill the log); every authorization decision about a known caller
//! is: allowed changes through their command's envelope, denials here.

use std::path::Path;
use std::sync::Arc;

use deploy::access::{Role, TokenEntry, TokenFile, constant_time_eq, decide};
use deploy::audit::{AUDIT_SCHEMA, Actor, AuditEvent, AuditResult, Authorization, Decision};
use deploy::canonical::sha256_hex;
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, EventId};
use hyper::header::{AUTHORIZATION, HeaderMap};

use super::AdminState;
use super::reply::ApiError;

/// The `policy` of the owner's read decisions.
const OWNER_POLICY: &str = "node-owner";

/// The file of API tokens in the store root.
pub const TOKENS_FILE: &str = "tokens.json";

/// A caller the node recognised.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The node file's token: the operator who started the node.
    Owner,
    /// A token of the tokens file.
    Token(TokenEntry),
}

/// Reads the tokens file; a missing file holds no tokens.
pub fn load_tokens(path: &Path) -> Result<TokenFile, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(TokenFile::new()),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let file: TokenFile = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not a valid tokens file: {error}", path.display()))?;
    file.validate()
        .map_err(|error| format!("{} is not a valid tokens file: {error}", path.display()))?;
    Ok(file)
}

/// The hash under which a token is stored.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorKind::Unauthenticated, message)
}

/// Identifies the caller from `Authorization: Bearer <token>`. The tokens
/// file is read on every request, so adding or revoking a token needs no
/// restart; an unreadable file fails closed (only the node token works).
pub fn authenticate(headers: &HeaderMap, admin: &AdminState) -> Result<Caller, ApiError> {
    if headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        // Two credentials: which one counts would be a guess; refuse.
        return Err(ApiError::invalid_request(
            "the request has more than one Authorization header; send exactly one",
        ));
    }
    let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
    else {
        return Err(unauthenticated(
            "send Authorization: Bearer <token>: the node file's token, or one made with `gtc node token create`",
        ));
    };
    if constant_time_eq(token.as_bytes(), admin.node_token.as_bytes()) {
        return Ok(Caller::Owner);
    }
    let tokens = load_tokens(&admin.tokens_file).unwrap_or_else(|reason| {
        tracing::warn!(%reason, "tokens file refused; only the node token is accepted");
        TokenFile::new()
    });
    tokens
        .find(&token_hash(token))
        .cloned()
        .map(Caller::Token)
        .ok_or_else(|| unauthenticated("the bearer token is not known to this node"))
}

impl Caller {
    /// Who the caller is in audit events.
    pub fn actor(&self, admin: &AdminState) -> Actor {
        match self {
            Caller::Owner => admin.checks.actor.clone(),
            Caller::Token(entry) => entry.actor(),
        }
    }

    /// The decision for doing what needs `required` (described by
    /// `action`) on `env`. The owner reads everything, as `gtc op` does,
    /// and is an admin wherever the policy file lets them change the
    /// environment.
    pub fn authorize(
        &self,
        admin: &AdminState,
        env: &EnvId,
        required: Role,
        action: &str,
    ) -> Authorization {
        match self {
            Caller::Owner if required == Role::Viewer => Authorization {
                decision: Decision::Allow,
                policy: OWNER_POLICY.to_owned(),
                reason: format!(
                    "the node's owner reads every environment, as with gtc op ({action})"
                ),
            },
            Caller::Owner => admin.checks.authorize(env),
            Caller::Token(entry) => decide(&entry.id, entry.role_on(env), required, env, action),
        }
    }
}

/// What an audited denial is about.
pub struct Denied<'a> {
    pub env: &'a EnvId,
    pub noun: &'a str,
    pub verb: &'a str,
    pub target: serde_json::Value,
    pub idempotency_key: Option<String>,
}

/// Audits a denial and returns the 403. Fails closed: if the event cannot
/// be written, the caller gets an audit error instead.
pub async fn deny(
    admin: &Arc<AdminState>,
    caller: &Caller,
    denied: Denied<'_>,
    authorization: Authorization,
) -> ApiError {
    let reason = authorization.reason.clone();
    let event = AuditEvent {
        schema: AUDIT_SCHEMA.to_owned(),
        event_id: EventId::from_ulid(ulid::Ulid::new()),
        ts: chrono::Utc::now(),
        actor: caller.actor(admin),
        env_id: denied.env.to_string(),
        noun: denied.noun.to_owned(),
        verb: denied.verb.to_owned(),
        target: denied.target,
        previous_generation: None,
        new_generation: None,
        idempotency_key: denied.idempotency_key,
        replayed: false,
        authorization: Authorization {
            decision: Decision::Deny,
            ..authorization
        },
        result: AuditResult::Error {
            kind: ErrorKind::Unauthorized.as_str().to_owned(),
            message: reason.clone(),
        },
        signed_by: None,
        prev_hash: String::new(),
    };
    match super::record(admin, event).await {
        Ok(()) => ApiError::new(ErrorKind::Unauthorized, reason),
        Err(error) => error,
    }
}
