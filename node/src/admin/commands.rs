//! Submitting a command and answering with the contract's mutation body:
//! `{etag, generation, idempotency, audit, result}`. Also
//! `POST /admin/v1/commands`, through which `gtc op` sends its envelopes.

use std::sync::Arc;

use deploy::command::CommandEnvelope;
use deploy::error::{ApplyError, ErrorKind};
use deploy::state::IdempotencyRecord;
use hyper::{Request, StatusCode};
use serde_json::json;
use store::{SubmitError, Submitted};

use super::auth::{self, Caller};
use super::reply::{ApiError, Reply, json_reply};
use super::{AdminState, BODY_BYTES_MAX, blocking};
use crate::error::CliError;

/// `POST /admin/v1/commands`: a whole envelope as `gtc op` built it (actor,
/// policy decision, ids), so only the node file's token may use it; API
/// tokens use the `/v1` routes, where the node builds the envelope.
pub async fn submit_envelope(
    request: Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
) -> Reply {
    let body = match owner_body(
        request,
        admin,
        "send raw command envelopes; use the /v1/environments routes",
    )
    .await
    {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    match serde_json::from_slice::<CommandEnvelope>(&body) {
        Ok(envelope) => submit(admin, envelope, StatusCode::OK).await,
        Err(error) => {
            ApiError::invalid_request(format!("the command is not valid: {error}")).into_reply()
        }
    }
}

/// `POST /admin/v1/events`: an audit event `gtc op` on this machine made
/// for a refusal it decided (a denial by the policy or the trust root), so
/// that it reaches the node's store: on a cluster member, the replicated
/// log rather than the replica's file behind Raft's back. Only the node
/// file's token may use it.
pub async fn record_event(
    request: Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
) -> Reply {
    let body = match owner_body(request, admin, "record audit events").await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let event = match serde_json::from_slice::<deploy::audit::AuditEvent>(&body) {
        Ok(event) => event,
        Err(error) => {
            return ApiError::invalid_request(format!("the audit event is not valid: {error}"))
                .into_reply();
        }
    };
    match super::record(admin, event).await {
        Ok(()) => json_reply(StatusCode::OK, &json!({"recorded": true}), None),
        Err(error) => error.into_reply(),
    }
}

/// The strict JSON body of an owner-only route (the node file's token);
/// an API token is refused as one that "may not `what`".
async fn owner_body(
    request: Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
    what: &str,
) -> Result<bytes::Bytes, Reply> {
    match auth::authenticate(request.headers(), admin) {
        Ok(Caller::Owner) => {}
        Ok(Caller::Token(entry)) => {
            return Err(ApiError::new(
                ErrorKind::Unauthorized,
                format!("token {} may not {what}", entry.id),
            )
            .into_reply());
        }
        Err(error) => return Err(error.into_reply()),
    }
    let body = read_body(request, admin.body_timeout)
        .await
        .map_err(ApiError::into_reply)?;
    super::strict::check(&body).map_err(ApiError::into_reply)?;
    Ok(body)
}

/// The body of a request, bounded by [`BODY_BYTES_MAX`] and by `timeout`
/// from the end of the head (a client that trickles its body is refused
/// rather than holding a connection in service).
pub async fn read_body(
    request: Request<hyper::body::Incoming>,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(request.into_body(), BODY_BYTES_MAX);
    let Ok(collected) = tokio::time::timeout(timeout, limited.collect()).await else {
        router::connections::count_trip("admin", router::connections::Trip::BodyTimeout);
        return Err(ApiError::invalid_request(format!(
            "the request body did not arrive within {} ms (--body-timeout-ms)",
            timeout.as_millis()
        )));
    };
    collected
        .map(|collected| collected.to_bytes())
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("the request body is larger than {BODY_BYTES_MAX} bytes"),
                )
            } else {
                ApiError::invalid_request(format!("the request body could not be read: {error}"))
            }
        })
}

/// Submits `envelope` through the store and answers with the mutation body
/// (`status` on success) or the error.
pub async fn submit(
    admin: &Arc<AdminState>,
    envelope: CommandEnvelope,
    status: StatusCode,
) -> Reply {
    let store = Arc::clone(&admin.store);
    let sent = envelope.clone();
    match blocking(move || store.submit(&sent)).await {
        Ok(Ok(submitted)) => {
            let mut reply_event = replayed_record(&envelope, &submitted)
                .and_then(|record| record.event.clone())
                .or_else(|| submitted.applied.event.clone());
            if submitted.applied.replayed
                && let Some(event) = reply_event.as_mut()
            {
                fill_logged_prev_hash(admin, &envelope.command.env_id(), event).await;
            }
            success(&envelope, submitted, reply_event, status)
        }
        Ok(Err(error)) => failure(admin, &envelope, error).await.into_reply(),
        Err(error) => error.into_reply(),
    }
}

/// The record a replay answered from.
fn replayed_record<'a>(
    envelope: &CommandEnvelope,
    submitted: &'a Submitted,
) -> Option<&'a IdempotencyRecord> {
    if !submitted.applied.replayed {
        return None;
    }
    let key = envelope.idempotency_key()?;
    submitted
        .applied
        .record
        .as_ref()
        .filter(|record| record.key == key)
}

/// Sets `event.prev_hash` to the one this member's audit log holds for it.
/// The copy of an event kept in an idempotency record leaves `prev_hash`
/// empty (the record is replicated state, the same on every member), so a
/// replay reads it back from the log, whose chain every member shares.
pub async fn fill_logged_prev_hash(
    admin: &Arc<AdminState>,
    env: &deploy::ids::EnvId,
    event: &mut deploy::audit::AuditEvent,
) {
    let store = Arc::clone(&admin.store);
    let id = env.clone();
    let Ok(Ok(lines)) = blocking(move || store.audit_lines(&id)).await else {
        return;
    };
    let wanted = event.event_id.to_string();
    if let Some(logged) = lines
        .iter()
        .rev()
        .filter(|line| line.contains(&wanted))
        .filter_map(|line| serde_json::from_str::<deploy::audit::AuditEvent>(line).ok())
        .find(|logged| logged.event_id == event.event_id)
    {
        event.prev_hash = logged.prev_hash;
    }
}

/// The mutation body. A replay answers with the first answer's etag,
/// generation, audit event and result, as recorded in the state, so it is
/// the first answer verbatim except for `"idempotency": "replayed"`. The
/// audit event (`audit`) is the one the log holds, `prev_hash` included.
fn success(
    envelope: &CommandEnvelope,
    submitted: Submitted,
    audit: Option<deploy::audit::AuditEvent>,
    status: StatusCode,
) -> Reply {
    let record = replayed_record(envelope, &submitted);
    let applied = &submitted.applied;
    let etag = record
        .and_then(|r| r.etag.clone())
        .or_else(|| applied.state.as_ref().map(|s| s.etag()));
    let generation = record.map(|r| r.generation).or(submitted.generation);
    let result = record.map_or_else(|| applied.result.clone(), |r| r.response.clone());
    let idempotency = match (applied.replayed, applied.changed) {
        (true, _) => "replayed",
        (false, true) => "applied",
        (false, false) => "unchanged",
    };
    let body = json!({
        "etag": etag,
        "generation": generation,
        "idempotency": idempotency,
        "audit": audit,
        "result": result,
    });
    json_reply(status, &body, etag.as_deref())
}

/// The error of a refused or failed command, with the facts of a 412 and
/// the ETag of a state committed together with the error.
async fn failure(
    admin: &Arc<AdminState>,
    envelope: &CommandEnvelope,
    error: SubmitError,
) -> ApiError {
    match error {
        SubmitError::Refused(ApplyError::PreconditionFailed {
            expected_etag,
            actual_etag,
            expected_generation,
            actual_generation,
        }) => {
            let message = ApplyError::PreconditionFailed {
                expected_etag: expected_etag.clone(),
                actual_etag: actual_etag.clone(),
                expected_generation,
                actual_generation,
            }
            .to_string();
            ApiError::new(ErrorKind::PreconditionFailed, message)
                .with_fact("expected_etag", json!(expected_etag))
                .with_fact("expected_generation", json!(expected_generation))
                .with_fact("actual_etag", json!(actual_etag))
                .with_fact("actual_generation", json!(actual_generation))
        }
        SubmitError::CommittedFailure { error, applied } => {
            let mut api = ApiError::from(CliError::from(error));
            if let Some(state) = &applied.state {
                api.etag = Some(state.etag());
                api = api
                    .with_fact("etag", json!(state.etag()))
                    .with_fact("generation", json!(state.generation));
            }
            api.with_fact("audit", json!(applied.event))
        }
        other => {
            let api = ApiError::from(CliError::from(other));
            if api.kind != ErrorKind::PreconditionFailed {
                return api;
            }
            // A store that carries only the kind and message (a replicated
            // one) loses the facts: report the state as it is now.
            let env = envelope.command.env_id();
            let store = Arc::clone(&admin.store);
            let current = blocking(move || store.load(&env))
                .await
                .ok()
                .and_then(|l| l.ok().flatten());
            let expected = envelope.precondition.clone().unwrap_or_default();
            let mut api = api
                .with_fact("expected_etag", json!(expected.if_match))
                .with_fact("expected_generation", json!(expected.expected_generation));
            if let Some(state) = current {
                api = api
                    .with_fact("actual_etag", json!(state.etag()))
                    .with_fact("actual_generation", json!(state.generation));
            }
            api
        }
    }
}
