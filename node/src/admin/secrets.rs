//! The secret routes, `/v1/environments/{env}/secrets[/get|/rotate]`: the
//! body is the verb's `--answers` payload, and the work is the CLI's
//! (`secrets_cmd`), so checks, audit events and answers match `gtc op`.
//!
//! Roles: a viewer lists and reads metadata; an operator puts and rotates;
//! only an admin gets a value (`reveal: true`), decided after the body is
//! read, since the body says whether it reveals. A denied caller's body is
//! never parsed for the other routes (the decision comes first, in
//! `handlers::run`).

use std::sync::Arc;

use deploy::access::Role;
use deploy::audit::{Authorization, Decision};
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use hyper::StatusCode;
use secrets::answers::{SecretGetAnswers, SecretPutAnswers, SecretRotateAnswers};
use serde_json::{Value, json};

use super::auth::{self, Caller, Denied};
use super::handlers::{answers, body_object, fill, with_key};
use super::reply::{ApiError, Reply, json_reply};
use super::route::Route;
use super::{AdminState, blocking};
use crate::error::CliError;
use crate::secrets_cmd::{self, Edge};

/// What a secret request carries besides its body.
pub struct SecretCall<'a> {
    pub caller: &'a Caller,
    pub idempotency_key: Option<String>,
    pub authorization: Authorization,
    /// The `key_id` that signed the change (environments with a trust root).
    pub signed_by: Option<String>,
}

/// Runs `work` with an [`Edge`] for `caller` on a blocking thread.
async fn with_edge<T: Send + 'static>(
    admin: &Arc<AdminState>,
    caller: &Caller,
    authorization: Authorization,
    signed_by: Option<String>,
    work: impl FnOnce(&Edge<'_>) -> Result<T, CliError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = Arc::clone(&admin.store);
    let root = admin.local_store.root().to_owned();
    let actor = caller.actor(admin);
    let replicated = admin.cluster.is_some();
    // Made here, on the runtime the cluster runs on (its writes block on it).
    let cluster = admin.cluster.clone().map(consensus::ReplicatedStore::new);
    blocking(move || {
        let edge = Edge {
            store: store.as_ref(),
            root: &root,
            actor,
            authorization,
            signed_by,
            replicated,
            cluster,
        };
        work(&edge)
    })
    .await?
    .map_err(ApiError::from)
}

/// `GET …/secrets`.
pub async fn list(
    admin: &Arc<AdminState>,
    caller: &Caller,
    env: &EnvId,
    authorization: Authorization,
) -> Result<Reply, ApiError> {
    let id = env.clone();
    let result = with_edge(admin, caller, authorization, None, move |edge| {
        secrets_cmd::list(edge, &id)
    })
    .await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "result": result }),
        None,
    ))
}

fn answer(result: Value, replayed: Option<bool>) -> Reply {
    let mut body = json!({ "result": result });
    if let Some(replayed) = replayed {
        body["idempotency"] = json!(if replayed { "replayed" } else { "applied" });
    }
    json_reply(StatusCode::OK, &body, None)
}

/// `POST …/secrets`, `…/secrets/get`, `…/secrets/rotate`.
pub async fn change(
    admin: &Arc<AdminState>,
    call: SecretCall<'_>,
    route: &Route,
    env: &EnvId,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut map = body_object(body)?;
    fill(&mut map, route.path_fields())?;
    let SecretCall {
        caller,
        idempotency_key,
        authorization,
        signed_by,
    } = call;
    match route {
        Route::PutSecret(_) => {
            let answers: SecretPutAnswers =
                answers(with_key(map, idempotency_key.as_deref())?, route)?;
            if answers.value_file.is_some() {
                return Err(value_file_refused());
            }
            let (result, replayed) = with_edge(
                admin,
                caller,
                authorization,
                signed_by.clone(),
                move |edge| secrets_cmd::put(edge, answers),
            )
            .await?;
            Ok(answer(result, Some(replayed)))
        }
        Route::RotateSecret(_) => {
            let answers: SecretRotateAnswers =
                answers(with_key(map, idempotency_key.as_deref())?, route)?;
            if answers.value_file.is_some() {
                return Err(value_file_refused());
            }
            let (result, replayed) = with_edge(
                admin,
                caller,
                authorization,
                signed_by.clone(),
                move |edge| secrets_cmd::rotate(edge, answers),
            )
            .await?;
            Ok(answer(result, Some(replayed)))
        }
        Route::RemoveSecret(_) => {
            let answers: secrets::answers::SecretRemoveAnswers = answers(map, route)?;
            let result = with_edge(
                admin,
                caller,
                authorization,
                signed_by.clone(),
                move |edge| secrets_cmd::remove(edge, answers),
            )
            .await?;
            Ok(answer(result, None))
        }
        Route::GetSecret(_) => {
            let answers: SecretGetAnswers = answers(map, route)?;
            let authorization = if answers.reveal {
                reveal_decision(admin, caller, env, &answers).await?
            } else {
                authorization
            };
            let result = with_edge(
                admin,
                caller,
                authorization,
                signed_by.clone(),
                move |edge| secrets_cmd::get(edge, answers),
            )
            .await?;
            Ok(answer(result, None))
        }
        _ => Err(ApiError::new(
            ErrorKind::Internal,
            "internal: a non-secret route reached the secret handler",
        )),
    }
}

/// Audits a secret change the environment's trust root refused as a
/// denial and returns the 403 (or the audit error).
pub async fn unsigned(
    admin: &Arc<AdminState>,
    caller: &Caller,
    authorization: Authorization,
    env: &EnvId,
    verb: &'static str,
    error: CliError,
) -> ApiError {
    let id = env.clone();
    let refused = with_edge(admin, caller, authorization, None, move |edge| {
        let target = json!({"environment_id": id});
        Err::<(), _>(secrets_cmd::unsigned(edge, &id, verb, target, error))
    })
    .await;
    match refused {
        Err(error) => error,
        Ok(()) => ApiError::new(
            ErrorKind::Internal,
            "internal: a refused change was answered as done",
        ),
    }
}

/// Only an admin of `env` sees a value; a denial is audited (path only).
async fn reveal_decision(
    admin: &Arc<AdminState>,
    caller: &Caller,
    env: &EnvId,
    answers: &SecretGetAnswers,
) -> Result<Authorization, ApiError> {
    let authorization = caller.authorize(admin, env, Role::Admin, "secrets get with reveal");
    if authorization.decision == Decision::Allow {
        return Ok(authorization);
    }
    let denied = Denied {
        env,
        noun: "secrets",
        verb: "get",
        target: json!({"environment_id": env, "path": answers.path, "reveal": true}),
        idempotency_key: None,
    };
    Err(auth::deny(admin, caller, denied, authorization).await)
}

fn value_file_refused() -> ApiError {
    ApiError::new(
        ErrorKind::InvalidArgument,
        "value_file names a file on the client's machine, which the node cannot read; send the content as value (`gtc op secrets … --node` does this for you)",
    )
    .with_field("value_file")
}
