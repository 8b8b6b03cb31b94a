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

/// Body of `POST /admin/v1/cluster/join`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    name: String,
    raft_addr: std::net::SocketAddr,
    #[serde(default)]
    admin_addr: String,
}

/// Largest join body read.
const JOIN_BYTES_MAX: usize = 4096;

async fn join(
    request: Request<hyper::body::Incoming>,
    cluster: &consensus::ClusterHandle,
) -> Result<Reply, ApiError> {
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(request.into_body(), JOIN_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("the join body is larger than {JOIN_BYTES_MAX} bytes"),
            )
        })?
        .to_bytes();
    let join: JoinRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("the join body is not valid: {error}; send {{\"name\", \"raft_addr\", \"admin_addr\"}}"),
        )
    })?;
    transport::NodeName::new(&join.name).map_err(|error| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("name {:?}: {error}", join.name),
        )
    })?;
    let node = consensus::ClusterNode {
        name: join.name.clone(),
        raft_addr: join.raft_addr.to_string(),
        admin_addr: join.admin_addr,
    };
    let id = consensus::node_id_for(&join.name);
    cluster
        .add(id, node)
        .await
        .map_err(|error| ApiError::new(ErrorKind::Conflict, error.to_string()))?;
    Ok(json_reply(
        StatusCode::OK,
        &serde_json::json!({"joined": join.name, "node_id": id}),
        None,
    ))
}

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
    if request.uri().path().ends_with("/join") {
        return join(request, cluster).await;
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
