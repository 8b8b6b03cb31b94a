//! `GET /admin/v1/cluster/status`, `POST /admin/v1/cluster/leave` and
//! `POST /admin/v1/cluster/read-index` (returns once this member has applied
//! everything committed when the call began: `gtc op` reads after it), for
//! the node's owner only (the node file's token), like
//! `POST /admin/v1/commands`.

use std::sync::Arc;

use deploy::error::ErrorKind;
use hyper::{Method, Request, StatusCode};

use super::AdminState;
use super::auth::{Caller, authenticate};
use super::reply::{ApiError, Reply, json_reply};

pub async fn respond(request: Request<hyper::body::Incoming>, admin: &Arc<AdminState>) -> Reply {
    match answer(request, admin).await {
        Ok(reply) => reply,
        Err(error) => error.into_reply(),
    }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
) -> Result<Reply, ApiError> {
    if !matches!(authenticate(request.headers(), admin)?, Caller::Owner) {
        return Err(ApiError::new(
            ErrorKind::Unauthorized,
            "cluster membership is managed with the node file's token only",
        ));
    }
    let Some(cluster) = &admin.cluster else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "this node is not a cluster member (start it with --cluster-dir)",
        ));
    };
    if request.uri().path().ends_with("/read-index") {
        cluster
            .read_barrier()
            .await
            .map_err(|error| ApiError::new(ErrorKind::Conflict, error.to_string()))?;
        return Ok(json_reply(
            StatusCode::OK,
            &serde_json::json!({"applied_index": cluster.state_machine().applied_index()}),
            None,
        ));
    }
    if request.method() == Method::GET {
        let status = serde_json::to_value(cluster.status())
            .map_err(|error| ApiError::new(ErrorKind::Internal, error.to_string()))?;
        return Ok(json_reply(StatusCode::OK, &status, None));
    }
    cluster
        .remove(cluster.node_id())
        .await
        .map_err(|error| ApiError::new(ErrorKind::Conflict, error.to_string()))?;
    Ok(json_reply(
        StatusCode::OK,
        &serde_json::json!({"left": cluster.node().name, "node_id": cluster.node_id()}),
        None,
    ))
}
