//! The `/v1/environments` routes: reads answer from the committed state;
//! changes become the same `Command`s as `gtc op`, with the body as the
//! verb's `--answers` payload (fields the path fixes may be left out).

use std::sync::Arc;

use deploy::apply::event_for;
use deploy::audit::{AUDIT_SCHEMA, AuditEvent, AuditResult, Authorization, Decision};
use deploy::command::{
    BundleAddAnswers, BundleUpdateAnswers, Command, CommandEnvelope, DeploymentAnswers,
    EnvCreateAnswers, EnvRestoreAnswers, EnvTargetAnswers, EnvUpdateAnswers, MintedIds,
    PackBindAnswers, PackSlotAnswers, RevisionAnswers, RevisionStageAnswers, RolloutActionAnswers,
    RolloutStartAnswers, TrafficSetAnswers,
};
use deploy::error::ErrorKind;
use deploy::ids::{BackupId, EnvId, EventId};
use deploy::precondition::Precondition;
use deploy::state::EnvironmentState;
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::auth::{self, Caller, Denied};
use super::commands::{read_body, submit};
use super::reply::{self, ApiError, Reply, json_reply};
use super::route::{self, RevisionVerb, Route, RouteError};
use super::{AdminState, blocking, record};
use crate::error::CliError;

/// Audit events one `GET …/audit` returns when it names no limit.
const AUDIT_EVENTS_DEFAULT: usize = 100;
/// Most audit events one `GET …/audit` returns.
const AUDIT_EVENTS_MAX: usize = 1000;

/// What a request said besides its route.
struct Call {
    caller: Caller,
    if_match: Option<String>,
    idempotency_key: Option<String>,
    query: Option<String>,
    /// The operator signature headers, if sent (checked against the
    /// environment's trust root once the body is read).
    signed: Option<crate::operator_key::SignedHeaders>,
    /// The request's method and path, which the signature covers.
    method: String,
    path: String,
}

/// Answers one `/v1/environments…` request.
pub async fn handle(request: Request<hyper::body::Incoming>, admin: &Arc<AdminState>) -> Reply {
    match run(request, admin).await {
        Ok(reply) => reply,
        Err(error) => error.into_reply(),
    }
}

fn route_error(error: RouteError, path: &str) -> ApiError {
    match error {
        RouteError::NotFound => {
            ApiError::new(ErrorKind::NotFound, format!("no admin route {path}"))
        }
        RouteError::MethodNotAllowed { allowed } => {
            let mut error = ApiError::new(
                ErrorKind::MethodNotAllowed,
                format!("{path} answers {allowed}"),
            );
            error.allow = Some(allowed);
            error
        }
        RouteError::BadSegment { field, message } => {
            ApiError::invalid_request(message).with_field(field)
        }
    }
}

async fn run(
    request: Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
) -> Result<Reply, ApiError> {
    let caller = auth::authenticate(request.headers(), admin)?;
    let path = request.uri().path().to_owned();
    let route = route::parse(request.method(), &path).map_err(|e| route_error(e, &path))?;
    let call = Call {
        caller,
        if_match: reply::if_match(request.headers())?,
        idempotency_key: reply::idempotency_key(request.headers())?,
        query: request.uri().query().map(str::to_owned),
        signed: super::signing::headers(request.headers())?,
        method: request.method().as_str().to_owned(),
        path: path.clone(),
    };
    // Decide before reading the body: a denied caller's payload is never
    // parsed. Creation names its environment in the body, so it is decided
    // after parsing, in `mutate`.
    let authorization = match route.env() {
        Some(env) => Some(authorize(admin, &call, &route, env, json!({})).await?),
        None => None,
    };
    match &route {
        Route::ListEnvironments => list(admin, &call.caller).await,
        Route::GetEnvironment(env) => show(admin, env).await,
        Route::ListBackups(env) => backups(admin, env).await,
        Route::Audit(env) => audit(admin, env, call.query.as_deref()).await,
        Route::CreateBackup(env) => create_backup(admin, &call, env, decided(authorization)?).await,
        Route::ListSecrets(env) => {
            super::secrets::list(admin, &call.caller, env, decided(authorization)?).await
        }
        Route::PutSecret(env)
        | Route::GetSecret(env)
        | Route::RotateSecret(env)
        | Route::RemoveSecret(env) => {
            let authorization = decided(authorization)?;
            let body = read_body(request, admin.body_timeout).await?;
            let signed_by = if matches!(route, Route::GetSecret(_)) {
                None
            } else {
                let (_, verb) = route.names();
                match super::signing::check(admin, env, signed(&call, &body)).await {
                    Ok(signed_by) => signed_by,
                    Err(error) => {
                        return Err(super::secrets::unsigned(
                            admin,
                            &call.caller,
                            authorization,
                            env,
                            verb,
                            error,
                        )
                        .await);
                    }
                }
            };
            let secret_call = super::secrets::SecretCall {
                caller: &call.caller,
                idempotency_key: call.idempotency_key.clone(),
                authorization,
                signed_by,
            };
            super::secrets::change(admin, secret_call, &route, env, &body).await
        }
        Route::ListTrustRoot(env) => super::trust::list(admin, env).await,
        Route::AddTrustKey(env) | Route::RemoveTrustKey(env) => {
            let authorization = decided(authorization)?;
            let body = read_body(request, admin.body_timeout).await?;
            let signed_by = super::signing::check(admin, env, signed(&call, &body)).await;
            super::trust::change(
                admin,
                &call.caller,
                authorization,
                signed_by,
                &route,
                env,
                &body,
            )
            .await
        }
        Route::NotImplemented {
            env, noun, verb, ..
        } => not_implemented(admin, &call, env, noun, verb, decided(authorization)?).await,
        _ => {
            let body = read_body(request, admin.body_timeout).await?;
            mutate(admin, &call, &route, authorization, &body).await
        }
    }
}

/// What the operator signature of `call` covers.
fn signed<'a>(call: &'a Call, body: &'a [u8]) -> super::signing::Signed<'a> {
    super::signing::Signed {
        headers: call.signed.as_ref(),
        method: &call.method,
        path: &call.path,
        body,
    }
}

/// The decision made for a route with an environment (always made above;
/// a missing one is a bug, answered as such rather than as an allow).
fn decided(authorization: Option<Authorization>) -> Result<Authorization, ApiError> {
    authorization.ok_or_else(|| {
        ApiError::new(
            ErrorKind::Internal,
            "internal: the request reached its handler without a decision",
        )
    })
}

/// The caller's decision on `env` for `route`; a denial is audited and
/// returned as the error.
async fn authorize(
    admin: &Arc<AdminState>,
    call: &Call,
    route: &Route,
    env: &EnvId,
    target: Value,
) -> Result<Authorization, ApiError> {
    let (noun, verb) = route.names();
    let required = route.required_role();
    let authorization = call
        .caller
        .authorize(admin, env, required, &format!("{noun} {verb}"));
    if authorization.decision == Decision::Allow {
        return Ok(authorization);
    }
    let mut target = target;
    if let Some(map) = target.as_object_mut() {
        for (key, value) in route.path_fields() {
            map.insert(key.to_owned(), value);
        }
    }
    let denied = Denied {
        env,
        noun,
        verb,
        target,
        idempotency_key: call.idempotency_key.clone(),
    };
    Err(auth::deny(admin, &call.caller, denied, authorization).await)
}

async fn load(admin: &Arc<AdminState>, env: &EnvId) -> Result<EnvironmentState, ApiError> {
    let store = Arc::clone(&admin.store);
    let id = env.clone();
    let loaded = blocking(move || store.load(&id)).await?;
    loaded
        .map_err(|error| ApiError::from(crate::error::CliError::from(error)))?
        .ok_or_else(|| ApiError::from(admin.checks.missing(env)))
}

async fn list(admin: &Arc<AdminState>, caller: &Caller) -> Result<Reply, ApiError> {
    let store = Arc::clone(&admin.store);
    let states = blocking(
        move || -> Result<Vec<EnvironmentState>, store::StoreError> {
            let mut states = Vec::new();
            for env in store.list()? {
                states.extend(store.load(&env)?);
            }
            Ok(states)
        },
    )
    .await?
    .map_err(|error| ApiError::from(crate::error::CliError::from(error)))?;
    // A token sees the environments it has a role on.
    let rows: Vec<Value> = states
        .iter()
        .filter(|state| match caller {
            Caller::Owner => true,
            Caller::Token(entry) => entry.role_on(state.env_id()).is_some(),
        })
        .map(|state| {
            json!({
                "environment_id": state.env_id(),
                "name": state.environment.name,
                "generation": state.generation,
                "etag": state.etag(),
            })
        })
        .collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "environments": rows }),
        None,
    ))
}

async fn show(admin: &Arc<AdminState>, env: &EnvId) -> Result<Reply, ApiError> {
    let state = load(admin, env).await?;
    let etag = state.etag();
    let body = json!({
        "environment_id": state.env_id(),
        "etag": etag,
        "generation": state.generation,
        "updated_at": state.updated_at,
        "environment": state.environment,
    });
    Ok(json_reply(StatusCode::OK, &body, Some(&etag)))
}

async fn backups(admin: &Arc<AdminState>, env: &EnvId) -> Result<Reply, ApiError> {
    let state = load(admin, env).await?;
    let store = Arc::clone(&admin.local_store);
    let id = env.clone();
    let manifests = blocking(move || store.list_backups(&id))
        .await?
        .map_err(|error| ApiError::from(crate::error::CliError::from(error)))?;
    let etag = state.etag();
    let body = json!({"environment_id": env, "etag": etag, "generation": state.generation, "backups": manifests});
    Ok(json_reply(StatusCode::OK, &body, Some(&etag)))
}

/// `limit=N` of a query string.
fn limit(query: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("limit="))
    else {
        return Ok(AUDIT_EVENTS_DEFAULT);
    };
    match text.parse::<usize>() {
        Ok(limit) if (1..=AUDIT_EVENTS_MAX).contains(&limit) => Ok(limit),
        _ => Err(ApiError::invalid_request(format!(
            "limit must be a number from 1 to {AUDIT_EVENTS_MAX}"
        ))
        .with_field("limit")),
    }
}

async fn audit(
    admin: &Arc<AdminState>,
    env: &EnvId,
    query: Option<&str>,
) -> Result<Reply, ApiError> {
    let limit = limit(query)?;
    let state = load(admin, env).await?;
    let store = Arc::clone(&admin.store);
    let id = env.clone();
    // Only the tail is read; the total is counted without keeping lines.
    let (lines, total) = blocking(move || {
        let lines = store.audit_tail(&id, limit)?;
        Ok::<_, store::StoreError>((lines, store.audit_count(&id)?))
    })
    .await?
    .map_err(|error| ApiError::from(crate::error::CliError::from(error)))?;
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| json!({"unparsable": line})))
        .collect();
    let etag = state.etag();
    let body = json!({"environment_id": env, "etag": etag, "total": total, "events": events});
    Ok(json_reply(StatusCode::OK, &body, Some(&etag)))
}

/// An audit event for something done at the edge, outside `apply`.
fn edge_event(
    admin: &AdminState,
    call: &Call,
    env: &EnvId,
    names: (&str, &str),
    target: Value,
    authorization: Authorization,
    result: AuditResult,
) -> AuditEvent {
    AuditEvent {
        schema: AUDIT_SCHEMA.to_owned(),
        event_id: EventId::from_ulid(ulid::Ulid::new()),
        ts: chrono::Utc::now(),
        actor: call.caller.actor(admin),
        env_id: env.to_string(),
        noun: names.0.to_owned(),
        verb: names.1.to_owned(),
        target,
        previous_generation: None,
        new_generation: None,
        idempotency_key: call.idempotency_key.clone(),
        replayed: false,
        authorization,
        result,
        prev_hash: String::new(),
        signed_by: None,
    }
}

/// `POST …/backups`: writes a backup artifact (no state changes) and
/// audits it. Backups are not replayable, so `Idempotency-Key` is refused.
async fn create_backup(
    admin: &Arc<AdminState>,
    call: &Call,
    env: &EnvId,
    authorization: Authorization,
) -> Result<Reply, ApiError> {
    if call.idempotency_key.is_some() {
        return Err(ApiError::new(
            ErrorKind::NotYetImplemented,
            "idempotent backups are not implemented: a backup changes no state, so there is no record to replay; send the request without Idempotency-Key (a duplicate backup is harmless)",
        ));
    }
    let state = load(admin, env).await?;
    let backup_id = BackupId::from_ulid(ulid::Ulid::new());
    let store = Arc::clone(&admin.local_store);
    let id = env.clone();
    let manifest = blocking(move || store.backup(&id, backup_id, chrono::Utc::now())).await?;
    let result = match &manifest {
        Ok(_) => AuditResult::Ok,
        Err(error) => AuditResult::Error {
            kind: error.kind().as_str().to_owned(),
            message: error.to_string(),
        },
    };
    let target = json!({"environment_id": env, "backup_id": backup_id});
    let mut event = edge_event(
        admin,
        call,
        env,
        ("env", "backup"),
        target,
        authorization,
        result,
    );
    record(admin, event.clone()).await?;
    super::commands::fill_logged_prev_hash(admin, env, &mut event).await;
    let manifest = manifest.map_err(|error| ApiError::from(crate::error::CliError::from(error)))?;
    let etag = state.etag();
    let body = json!({
        "etag": etag,
        "generation": state.generation,
        "idempotency": "applied",
        "audit": event,
        "result": manifest,
    });
    Ok(json_reply(StatusCode::OK, &body, Some(&etag)))
}

/// A route of the contract we do not serve yet: audited, then 501.
async fn not_implemented(
    admin: &Arc<AdminState>,
    call: &Call,
    env: &EnvId,
    noun: &str,
    verb: &str,
    authorization: Authorization,
) -> Result<Reply, ApiError> {
    let detail = format!(
        "{noun} {verb} is part of the remote-store contract but not implemented by this node yet; nothing was changed"
    );
    let event = edge_event(
        admin,
        call,
        env,
        (noun, verb),
        json!({"environment_id": env}),
        authorization,
        AuditResult::NotYetImplemented {
            detail: detail.clone(),
        },
    );
    record(admin, event).await?;
    Err(ApiError::new(ErrorKind::NotYetImplemented, detail))
}

/// Why a change did not reach the store.
enum Refusal {
    /// The request is malformed: nothing is known, nothing is audited.
    Request(ApiError),
    /// The request was understood and refused at the edge: audited with
    /// the command it would have been.
    Edge(Box<Command>, ApiError),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal::Request(error)
    }
}

/// The body as a JSON object (an empty body is `{}`).
pub(super) fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    super::strict::check(body)?;
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_request(
            "the body must be a JSON object: the verb's --answers payload",
        )),
        Err(error) => Err(ApiError::invalid_request(format!(
            "the body is not valid JSON: {error}"
        ))),
    }
}

/// Puts the path's ids into the payload; a body that names others is refused.
pub(super) fn fill(
    map: &mut Map<String, Value>,
    fields: Vec<(&'static str, Value)>,
) -> Result<(), ApiError> {
    for (key, value) in fields {
        match map.get(key) {
            Some(given) if given != &value => {
                return Err(ApiError::new(
                    ErrorKind::InvalidArgument,
                    format!("the body's {key} {given} differs from the path's {value}; leave it out or make them agree"),
                )
                .with_field(key));
            }
            Some(_) => {}
            None => {
                map.insert(key.to_owned(), value);
            }
        }
    }
    Ok(())
}

/// Puts the `Idempotency-Key` into a payload that has the field.
pub(super) fn with_key(
    mut map: Map<String, Value>,
    key: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    if let Some(key) = key {
        fill(&mut map, vec![("idempotency_key", json!(key))]).map_err(|error| {
            ApiError {
                message: "the body's idempotency_key differs from the Idempotency-Key header; send one of them, or the same value".to_owned(),
                ..error
            }
        })?;
    }
    Ok(map)
}

/// The payload `T` of `noun verb`, with errors naming the field.
pub(super) fn answers<T: DeserializeOwned>(
    map: Map<String, Value>,
    route: &Route,
) -> Result<T, ApiError> {
    let (noun, verb) = route.names();
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|error| {
        let field = error.path().to_string();
        ApiError::new(
            ErrorKind::AnswersParse,
            format!(
                "field `{field}`: {}; the body is the payload of `gtc op {noun} {verb}` (see its --schema)",
                error.inner()
            ),
        )
        .with_field(field)
    })
}

/// The command a change route asks for, with the edge's checks.
async fn command(
    admin: &Arc<AdminState>,
    route: &Route,
    map: Map<String, Value>,
    key: Option<&str>,
) -> Result<Command, Refusal> {
    let command = match route {
        Route::CreateEnvironment => Command::EnvCreate(answers::<EnvCreateAnswers>(map, route)?),
        Route::UpdateEnvironment(_) => {
            Command::EnvUpdate(answers::<EnvUpdateAnswers>(with_key(map, key)?, route)?)
        }
        Route::DestroyEnvironment(_) => {
            Command::EnvDestroy(answers::<EnvTargetAnswers>(map, route)?)
        }
        Route::StageRevision(_) => {
            let answers: RevisionStageAnswers = answers(with_key(map, key)?, route)?;
            let bundle_path = answers.bundle_path.is_some();
            let command = Command::RevisionStage {
                answers,
                staged: None,
            };
            if bundle_path {
                return Err(Refusal::Edge(
                    Box::new(command),
                    ApiError::new(
                        ErrorKind::NotYetImplemented,
                        "uploading a bundle over the admin API is not implemented yet, and bundle_path names a file on the node's host, which an API client may not reach; stage bundle files with `gtc op revisions stage` on that host",
                    )
                    .with_field("bundle_path"),
                ));
            }
            command
        }
        Route::ScaleRevision(..) => Command::RevisionScale(answers::<
            deploy::command::RevisionScaleAnswers,
        >(with_key(map, key)?, route)?),
        Route::Revision { verb, .. } => {
            let answers: RevisionAnswers = answers(with_key(map, key)?, route)?;
            match verb {
                RevisionVerb::Warm => {
                    let admin = Arc::clone(admin);
                    let checked = answers.clone();
                    let failed_checks = blocking(move || {
                        let env = &checked.environment_id;
                        let state = admin
                            .store
                            .load(env)
                            .map_err(CliError::from)?
                            .ok_or_else(|| admin.checks.missing(env))?;
                        let env_dir = admin.local_store.env_dir(env);
                        Ok::<_, CliError>(admin.checks.warm_checks(&env_dir, &state, &checked))
                    })
                    .await?
                    .map_err(ApiError::from)?;
                    Command::RevisionWarm {
                        answers,
                        failed_checks,
                    }
                }
                RevisionVerb::Drain => Command::RevisionDrain(answers),
                RevisionVerb::Archive => Command::RevisionArchive(answers),
            }
        }
        Route::SetTraffic(_) => {
            Command::TrafficSet(answers::<TrafficSetAnswers>(with_key(map, key)?, route)?)
        }
        Route::RollbackTraffic(_) => {
            Command::TrafficRollback(answers::<DeploymentAnswers>(with_key(map, key)?, route)?)
        }
        Route::StartRollout(_) => {
            Command::RolloutStart(answers::<RolloutStartAnswers>(with_key(map, key)?, route)?)
        }
        Route::RolloutAction(_, _, action) => Command::RolloutAct {
            action: *action,
            answers: answers::<RolloutActionAnswers>(with_key(map, key)?, route)?,
        },
        Route::AddBundle(_) => {
            Command::BundleAdd(answers::<BundleAddAnswers>(with_key(map, key)?, route)?)
        }
        Route::UpdateBundle(..) => {
            Command::BundleUpdate(answers::<BundleUpdateAnswers>(with_key(map, key)?, route)?)
        }
        Route::RemoveBundle(..) => {
            Command::BundleRemove(answers::<DeploymentAnswers>(with_key(map, key)?, route)?)
        }
        Route::AddPack(_) | Route::UpdatePack(..) => {
            let answers: PackBindAnswers = answers(with_key(map, key)?, route)?;
            let refused = admin
                .checks
                .binding_refusal(&answers)
                .map(|reason| ApiError::new(ErrorKind::InvalidArgument, reason).with_field("kind"));
            let command = if matches!(route, Route::AddPack(_)) {
                Command::PackAdd(answers)
            } else {
                Command::PackUpdate(answers)
            };
            if let Some(error) = refused {
                return Err(Refusal::Edge(Box::new(command), error));
            }
            command
        }
        Route::RemovePack(..) => {
            Command::PackRemove(answers::<PackSlotAnswers>(with_key(map, key)?, route)?)
        }
        Route::RollbackPack(..) => {
            Command::PackRollback(answers::<PackSlotAnswers>(with_key(map, key)?, route)?)
        }
        Route::Restore(env) => return restore_command(admin, env, map, route).await,
        Route::ListEnvironments
        | Route::GetEnvironment(_)
        | Route::ListBackups(_)
        | Route::CreateBackup(_)
        | Route::Audit(_)
        | Route::ListSecrets(_)
        | Route::PutSecret(_)
        | Route::GetSecret(_)
        | Route::RotateSecret(_)
        | Route::RemoveSecret(_)
        | Route::ListTrustRoot(_)
        | Route::AddTrustKey(_)
        | Route::RemoveTrustKey(_)
        | Route::NotImplemented { .. } => {
            return Err(Refusal::Request(ApiError::new(
                ErrorKind::Internal,
                "internal: a read or secret route reached the command builder",
            )));
        }
    };
    Ok(command)
}

/// `POST …/restore`: `expected_generation` may be left out (If-Match, which
/// `apply` checks first, is the guard); the backup is verified here.
async fn restore_command(
    admin: &Arc<AdminState>,
    env: &EnvId,
    mut map: Map<String, Value>,
    route: &Route,
) -> Result<Command, Refusal> {
    let current = load(admin, env).await?;
    if !map.contains_key("expected_generation") {
        map.insert("expected_generation".to_owned(), json!(current.generation));
    }
    let answers: EnvRestoreAnswers = answers(map, route)?;
    let store = Arc::clone(&admin.local_store);
    let id = env.clone();
    let backup_id = answers.backup_id;
    let loaded = blocking(move || store.load_backup(&id, backup_id)).await?;
    match loaded {
        Ok(artifact) => Ok(Command::EnvRestore {
            answers,
            snapshot: Box::new(artifact.snapshot),
        }),
        Err(error) => Err(Refusal::Edge(
            Box::new(Command::EnvRestore {
                answers,
                snapshot: Box::new(current),
            }),
            ApiError::from(crate::error::CliError::from(error)),
        )),
    }
}

/// A change: parse the payload, decide (creation only; the rest was
/// decided before the body was read), build the envelope with the caller,
/// `If-Match` and `Idempotency-Key`, and submit it.
async fn mutate(
    admin: &Arc<AdminState>,
    call: &Call,
    route: &Route,
    authorization: Option<Authorization>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut map = body_object(body)?;
    fill(&mut map, route.path_fields())?;
    let key = call.idempotency_key.as_deref();
    let (command, refusal) = match command(admin, route, map, key).await {
        Ok(command) => (command, None),
        Err(Refusal::Request(error)) => return Err(error),
        Err(Refusal::Edge(command, error)) => (*command, Some(error)),
    };
    let authorization = match authorization {
        Some(authorization) => authorization,
        None => {
            let target = command.payload();
            authorize(admin, call, route, &command.env_id(), target).await?
        }
    };
    // An environment with a trust root takes changes signed by a listed
    // operator key; a refusal is audited as a denial, with the command.
    let (signed_by, unsigned) =
        match super::signing::check(admin, &command.env_id(), signed(call, body)).await {
            Ok(signed_by) => (signed_by, None),
            Err(error) => (None, Some(error)),
        };
    let mut envelope = CommandEnvelope {
        at: chrono::Utc::now(),
        actor: call.caller.actor(admin),
        authorization,
        minted: MintedIds {
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            object_id: ulid::Ulid::new(),
        },
        command,
        precondition: route.guarded().then(|| Precondition {
            if_match: call.if_match.clone(),
            expected_generation: None,
        }),
        idempotency_key: call.idempotency_key.clone(),
        signed_by,
    };
    if let Some(error) = unsigned {
        envelope.authorization = crate::trust_root::denial(&error);
        let event = event_for(
            &envelope,
            None,
            None,
            false,
            AuditResult::Error {
                kind: error.kind.as_str().to_owned(),
                message: error.message.clone(),
            },
        );
        record(admin, event).await?;
        return Err(ApiError::from(error));
    }
    if let Some(error) = refusal {
        let event = event_for(
            &envelope,
            None,
            None,
            false,
            AuditResult::Error {
                kind: error.kind.as_str().to_owned(),
                message: error.message.clone(),
            },
        );
        record(admin, event).await?;
        return Err(error);
    }
    let status = if matches!(route, Route::CreateEnvironment) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(submit(admin, envelope, status).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_fill_the_payload_and_must_agree_with_it() {
        let mut map = body_object(br#"{"name":"x"}"#).expect("object");
        fill(&mut map, vec![("environment_id", json!("local"))]).expect("fill");
        assert_eq!(map["environment_id"], json!("local"));
        let mut other = body_object(br#"{"environment_id":"prod"}"#).expect("object");
        let error =
            fill(&mut other, vec![("environment_id", json!("local"))]).expect_err("differs");
        assert_eq!(error.field.as_deref(), Some("environment_id"));
    }

    #[test]
    fn an_empty_body_is_an_empty_payload_and_a_non_object_is_refused() {
        assert!(body_object(b"").expect("empty").is_empty());
        assert!(body_object(b"[1]").is_err());
        assert!(body_object(b"{").is_err());
    }

    #[test]
    fn the_header_key_and_the_body_key_must_agree() {
        let map = body_object(br#"{"idempotency_key":"a"}"#).expect("object");
        assert!(with_key(map.clone(), Some("a")).is_ok());
        assert!(with_key(map, Some("b")).is_err());
        let filled = with_key(Map::new(), Some("c")).expect("filled");
        assert_eq!(filled["idempotency_key"], json!("c"));
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).ok(), Some(AUDIT_EVENTS_DEFAULT));
        assert_eq!(limit(Some("limit=5")).ok(), Some(5));
        assert!(limit(Some("limit=0")).is_err());
        assert!(limit(Some("limit=100000")).is_err());
    }
}
