//! The trust root routes, `/v1/environments/{env}/trust-root[/remove]`:
//! the body is the verb's `--answers` payload (the path names the
//! environment), and the work is the CLI's (`trust_cmd`), so checks, audit
//! events and answers match `gtc op env trust`. Listing needs a viewer;
//! adding and removing keys an admin, signed by a listed operator key once
//! the environment has a trust root (the first key is the bootstrap). On a
//! cluster member the change goes through Raft, so every member enforces
//! the same keys.

use std::sync::Arc;

use deploy::audit::Authorization;
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use hyper::StatusCode;
use serde_json::json;

use super::auth::Caller;
use super::handlers::{answers, body_object, fill};
use super::reply::{ApiError, Reply, json_reply};
use super::route::Route;
use super::{AdminState, blocking};
use crate::error::CliError;
use crate::trust_cmd::{self, Change, TrustEdge};
use crate::trust_root::{TrustAddAnswers, TrustRemoveAnswers};

/// `GET …/trust-root`.
pub async fn list(admin: &Arc<AdminState>, env: &EnvId) -> Result<Reply, ApiError> {
    let root = admin.local_store.root().to_owned();
    let store = Arc::clone(&admin.store);
    let id = env.clone();
    let result = blocking(move || -> Result<serde_json::Value, CliError> {
        store
            .load(&id)?
            .ok_or_else(|| crate::checks::missing_environment(&root, &id))?;
        trust_cmd::listing(&root, &id)
    })
    .await??;
    Ok(json_reply(StatusCode::OK, &json!({"result": result}), None))
}

/// `POST …/trust-root` and `…/trust-root/remove`, after the role's
/// decision; `signed_by` is the signature check's answer (an error is
/// audited as a denial here).
pub async fn change(
    admin: &Arc<AdminState>,
    caller: &Caller,
    authorization: Authorization,
    signed_by: Result<Option<String>, CliError>,
    route: &Route,
    env: &EnvId,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut map = body_object(body)?;
    fill(&mut map, route.path_fields())?;
    enum Verb {
        Add(TrustAddAnswers),
        Remove(TrustRemoveAnswers),
    }
    let verb = match route {
        Route::AddTrustKey(_) => Verb::Add(answers(map, route)?),
        Route::RemoveTrustKey(_) => Verb::Remove(answers(map, route)?),
        _ => {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "internal: a route other than the trust root's reached its handler",
            ));
        }
    };
    let store = Arc::clone(&admin.store);
    let root = admin.local_store.root().to_owned();
    let actor = caller.actor(admin);
    // Made here, on the runtime the cluster runs on (its writes block on it).
    let cluster = admin.cluster.clone().map(consensus::ReplicatedStore::new);
    let id = env.clone();
    let report = blocking(move || {
        let edge = TrustEdge {
            store: store.as_ref(),
            root: &root,
            actor,
            cluster,
        };
        store
            .load(&id)?
            .ok_or_else(|| crate::checks::missing_environment(&root, &id))?;
        match verb {
            Verb::Add(answers) => {
                let target = json!({"environment_id": id, "label": answers.label});
                let mut change = Change::new(&edge, &id, "add", target, authorization, None);
                change.signed(signed_by)?;
                let public =
                    trust_cmd::checked_key(&id, &answers).map_err(|error| change.refuse(error))?;
                trust_cmd::add_key(&change, &public, &answers.label)
            }
            Verb::Remove(answers) => {
                let target = json!({"environment_id": id, "key_id": answers.key_id});
                let mut change = Change::new(&edge, &id, "remove", target, authorization, None);
                change.signed(signed_by)?;
                trust_cmd::remove_key(&change, &answers.key_id)
            }
        }
    })
    .await??;
    Ok(json_reply(
        StatusCode::OK,
        &json!({"result": report.result, "idempotency": "applied"}),
        None,
    ))
}
