//! The console's routes on the admin address (the page and its read model
//! come from the `console` crate; this is the HTTP shell around them):
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /ui/`, `/ui/app.js`, `/ui/style.css` | anyone | the page (no data in it) |
//! | `GET /ui/api/requests` | anyone, like `/metrics` | this router's requests per revision over the last minute |
//! | `GET /ui/api/view/{env}` | viewer | the whole view: state, routers, cluster, audit; ETag + 304 |
//! | `GET /ui/api/logs/{env}/{revision}` | viewer | the tail of this node's instance logs of a revision |
//!
//! Every action the page offers goes to the `/v1` routes with the caller's
//! own token; nothing here changes state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use console::observed::{LastMinute, RequestWindow};
use console::view::{AUDIT_EVENTS_SHOWN, RouterRow};
use deploy::access::Role;
use deploy::audit::Decision;
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, RevisionId};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use router::proxy::Router;
use serde_json::{Value, json};

use super::auth::{self, Caller, Denied};
use super::reply::{ApiError, Reply, json_reply};
use super::{AdminState, blocking};

/// The prefix of the console's routes.
pub const PREFIX: &str = "/ui";

/// How long the view waits for another member's counts: the page polls
/// every second, so a member that does not answer within this is shown as
/// unreachable rather than holding up the view.
const PEER_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest answer read from another member's `/ui/api/requests`: counts of
/// a few thousand revisions, far below this.
const PEER_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Lines of each instance log the logs route returns.
const LOG_LINES_MAX: usize = 200;
/// Bytes read from the end of each log file for those lines.
const LOG_TAIL_BYTES_MAX: u64 = 64 * 1024;

/// What the console needs beyond the rest of the admin state.
pub struct ConsoleState {
    /// This node's name (the member name on a cluster member).
    pub node_name: String,
    /// Gossip, on a cluster member that gossips: other routers' facts.
    pub gossip: Option<Arc<membership::Membership>>,
    /// Samples of this router's per-revision counts.
    pub window: Arc<Mutex<RequestWindow>>,
}

impl ConsoleState {
    pub fn new(node_name: String, gossip: Option<Arc<membership::Membership>>) -> Self {
        Self {
            node_name,
            gossip,
            window: Arc::default(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often the node verifies the audit chain for `gtc_audit_chain_intact`:
/// verifying reads the whole log, so not every sample; an alert on a broken
/// chain within a minute is soon enough (nothing is lost, it is evidence).
const AUDIT_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// What the sampler watches besides the router.
pub struct Sampled {
    pub router: Arc<Router>,
    pub window: Arc<Mutex<RequestWindow>>,
    pub store: Arc<dyn store::EnvironmentStore + Send + Sync>,
    pub env_id: EnvId,
}

/// HELP text of the metric this module emits.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "gtc_audit_chain_intact",
        metrics::Unit::Count,
        "1 while the environment's audit log on this node verifies (hash chain intact, last committed change anchored), else 0."
    );
}

/// Verifies the audit chain of the sampled environment.
async fn audit_intact(sampled: &Sampled) -> Result<bool, String> {
    let store = Arc::clone(&sampled.store);
    let env = sampled.env_id.clone();
    tokio::task::spawn_blocking(move || -> Result<bool, store::StoreError> {
        let head = store.load(&env)?.and_then(|state| state.audit_head);
        let lines = store.audit_lines(&env)?;
        Ok(console::view::chain_status(&lines, head.as_deref())
            .problem
            .is_none())
    })
    .await
    .map_err(|error| error.to_string())?
    .map_err(|error| error.to_string())
}

/// Samples the router's counts into the window, and checks the audit chain
/// every [`AUDIT_CHECK_INTERVAL`], until `shutdown` changes.
pub async fn sample(sampled: Sampled, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut ticker =
        tokio::time::interval(Duration::from_millis(console::observed::SAMPLE_INTERVAL_MS));
    let mut audit_ticker = tokio::time::interval(AUDIT_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let counts = sampled.router.requests_served();
                if let Ok(mut window) = sampled.window.lock() {
                    window.record(now_ms(), counts);
                }
            }
            _ = audit_ticker.tick() => match audit_intact(&sampled).await {
                Ok(intact) => {
                    metrics::gauge!("gtc_audit_chain_intact", "env" => sampled.env_id.to_string())
                        .set(if intact { 1.0 } else { 0.0 });
                }
                Err(error) => tracing::warn!(%error, "the audit chain could not be checked"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// This router's last minute.
fn last_minute(admin: &AdminState) -> LastMinute {
    let current = admin.router.requests_served();
    admin.console.window.lock().map_or_else(
        |_| LastMinute::default(),
        |window| window.last_minute(now_ms(), &current),
    )
}

/// Answers a request under `/ui`.
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
    let path = request.uri().path().to_owned();
    if request.method() != hyper::Method::GET {
        let mut error = ApiError::new(
            ErrorKind::MethodNotAllowed,
            format!("{path} answers GET; the console's actions go to the /v1 API"),
        );
        error.allow = Some("GET");
        return Err(error);
    }
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] if rest.is_empty() => Ok(redirect_to_page()),
        ["api", "requests"] => Ok(requests(admin)),
        ["api", "view", env] => view(&request, admin, &env_segment(env)?).await,
        ["api", "logs", env, revision] => {
            let revision: RevisionId = revision.parse().map_err(|error| {
                ApiError::invalid_request(format!(
                    "revision {revision:?} in the path is not valid: {error}"
                ))
                .with_field("revision_id")
            })?;
            logs(&request, admin, &env_segment(env)?, revision).await
        }
        [name] => asset(&request, name),
        _ => Err(not_found(&path)),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("no console route {path}; the console is at {PREFIX}/"),
    )
}

fn env_segment(text: &str) -> Result<EnvId, ApiError> {
    text.parse().map_err(|error| {
        ApiError::invalid_request(format!(
            "environment {text:?} in the path is not valid: {error}"
        ))
        .with_field("environment_id")
    })
}

fn redirect_to_page() -> Reply {
    let mut reply = json_reply(
        StatusCode::PERMANENT_REDIRECT,
        &json!({"location": "/ui/"}),
        None,
    );
    reply
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    reply
}

/// True when `If-None-Match` names `etag` (quoted, as sent).
fn not_modified(request: &Request<hyper::body::Incoming>, etag: &str) -> bool {
    request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag))
}

fn empty(status: StatusCode) -> Reply {
    let mut reply = Reply::new(Default::default());
    *reply.status_mut() = status;
    reply
}

fn asset(request: &Request<hyper::body::Incoming>, name: &str) -> Result<Reply, ApiError> {
    let asset = console::assets::get(name).ok_or_else(|| not_found(request.uri().path()))?;
    let mut reply = if not_modified(request, &asset.etag) {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut reply = Reply::new(bytes::Bytes::from_static(asset.body).into());
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        reply
    };
    let headers = reply.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    // Revalidate every time: a node upgrade changes the files, and a 304
    // costs one round trip.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(console::assets::CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(reply)
}

/// `GET /ui/api/requests`: public like `/metrics`, which carries the same
/// counts.
fn requests(admin: &AdminState) -> Reply {
    json_reply(
        StatusCode::OK,
        &json!({
            "node": admin.console.node_name,
            "generation": admin.router.generation(),
            "last_minute": last_minute(admin),
        }),
        None,
    )
}

/// Authenticates the caller and checks they may read `env`; a denial is
/// audited like any other.
async fn reader(
    request: &Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
    env: &EnvId,
    verb: &'static str,
) -> Result<Caller, ApiError> {
    let caller = auth::authenticate(request.headers(), admin)?;
    let authorization = caller.authorize(admin, env, Role::Viewer, &format!("console {verb}"));
    if authorization.decision == Decision::Allow {
        return Ok(caller);
    }
    let denied = Denied {
        env,
        noun: "console",
        verb,
        target: json!({"environment_id": env}),
        idempotency_key: None,
    };
    Err(auth::deny(admin, &caller, denied, authorization).await)
}

/// The strongest role the caller holds on `env` (what the page offers).
fn role(caller: &Caller, admin: &AdminState, env: &EnvId) -> Role {
    [Role::Admin, Role::Operator]
        .into_iter()
        .find(|role| {
            caller.authorize(admin, env, *role, "console role").decision == Decision::Allow
        })
        .unwrap_or(Role::Viewer)
}

async fn view(
    request: &Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
    env: &EnvId,
) -> Result<Reply, ApiError> {
    let caller = reader(request, admin, env, "view").await?;
    let store = Arc::clone(&admin.store);
    let id = env.clone();
    let (state, lines) = blocking(move || -> Result<_, store::StoreError> {
        Ok((store.load(&id)?, store.audit_lines(&id)?))
    })
    .await?
    .map_err(|error| ApiError::from(crate::error::CliError::from(error)))?;
    let state = state.ok_or_else(|| ApiError::from(admin.checks.missing(env)))?;
    let deployments = console::observed::deployments_of(&state.environment);
    let members = match &admin.console.gossip {
        Some(gossip) => Some((gossip.live_members().await, gossip.dead_members().await)),
        None => None,
    };
    let routers = routers(admin, members.as_ref(), &deployments, state.generation).await;
    let cluster = admin
        .cluster
        .as_ref()
        .map(|cluster| cluster_view(cluster, members.as_ref()));
    let status = console::view::chain_status(&lines, state.audit_head.as_deref());
    let events: Vec<Value> = lines
        .iter()
        .skip(lines.len().saturating_sub(AUDIT_EVENTS_SHOWN))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| json!({"unparsable": line})))
        .collect();
    let body = json!({
        "environment_id": env,
        "etag": state.etag(),
        "generation": state.generation,
        "updated_at": state.updated_at,
        "role": role(&caller, admin, env),
        "node": admin.console.node_name,
        "environment": state.environment,
        "routers": routers,
        "instances": instances(admin, members.as_ref()),
        "cluster": cluster,
        "audit": {"status": status, "events": events},
    });
    // The view's own tag: any change (a router's generation, a count, an
    // audit event) changes it, so an unchanged poll is a 304.
    let text = body.to_string();
    let tag = format!(
        "\"v-{}\"",
        &deploy::canonical::sha256_hex(text.as_bytes())[..32]
    );
    let mut reply = if not_modified(request, &tag) {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut reply = Reply::new(bytes::Bytes::from(text).into());
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        reply
    };
    if let Ok(value) = HeaderValue::from_str(&tag) {
        reply.headers_mut().insert(header::ETAG, value);
    }
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(reply)
}

type Members = (Vec<membership::Member>, Vec<membership::Member>);

/// This router and, on a gossiping member, every other member's router.
async fn routers(
    admin: &AdminState,
    members: Option<&Members>,
    deployments: &HashMap<RevisionId, deploy::ids::DeploymentId>,
    committed: u64,
) -> Vec<RouterRow> {
    let mine = last_minute(admin);
    let mut me = console::view::router_row(
        admin.console.node_name.clone(),
        Some(admin.router.generation()),
        committed,
        true,
        Ok(&mine),
        deployments,
    );
    let healthy: usize = admin.router.local_instances().values().map(Vec::len).sum();
    me.instances_healthy = u32::try_from(healthy).ok();
    if let Some(cluster) = &admin.cluster {
        let voter = cluster.status().voters.contains(&cluster.node_id());
        me.role = Some(if voter { "voter" } else { "learner" }.to_owned());
        me.applied_index = cluster.state_machine().applied_index();
    }
    let mut rows = vec![me];
    if let Some((live, dead)) = members {
        let others = live
            .iter()
            .map(|m| (m.clone(), true))
            .chain(dead.iter().map(|m| (m.clone(), false)))
            .filter(|(m, _)| m.node_id.name != admin.console.node_name);
        let mut fetches = Vec::new();
        for (member, is_live) in others {
            let admin_addr = member.facts.admin_addr;
            fetches.push(async move {
                let counts = match (is_live, admin_addr) {
                    (true, Some(addr)) => peer_last_minute(addr).await,
                    (true, None) => Err("it gossips no admin address".to_owned()),
                    (false, _) => Err("gossip considers it dead".to_owned()),
                };
                (member, is_live, counts)
            });
        }
        for (member, is_live, counts) in futures_join(fetches).await {
            let mut row: RouterRow = console::view::router_row(
                member.node_id.name.clone(),
                member.facts.traffic_generation,
                committed,
                is_live,
                counts.as_ref().map_err(Clone::clone),
                deployments,
            );
            row.role = member.facts.role.map(|r| r.as_str().to_owned());
            row.applied_index = member.facts.applied_index;
            row.instances_healthy = member.facts.instances_healthy;
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// Runs the peer fetches together (they each have their own timeout).
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (index, future) in futures.into_iter().enumerate() {
        tasks.spawn(async move { (index, future.await) });
    }
    let mut results: Vec<(usize, F::Output)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, output)| output).collect()
}

/// Another member's last minute, from its public `/ui/api/requests`.
async fn peer_last_minute(addr: SocketAddr) -> Result<LastMinute, String> {
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = Request::get("/ui/api/requests")
            .header(header::HOST, addr.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        use http_body_util::BodyExt;
        let body = http_body_util::Limited::new(response.into_body(), PEER_BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        serde_json::from_value::<LastMinute>(answer["last_minute"].clone())
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(PEER_TIMEOUT, fetch).await {
        Ok(result) => result.map_err(|e| format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr} did not answer within {PEER_TIMEOUT:?}")),
    }
}

/// Ready instances per revision and the member that runs them.
fn instances(admin: &AdminState, members: Option<&Members>) -> BTreeMap<String, Vec<Value>> {
    let mut by_revision: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (revision, addrs) in admin.router.local_instances() {
        let list = by_revision.entry(revision.to_string()).or_default();
        for addr in addrs {
            list.push(json!({"addr": addr, "node": admin.console.node_name}));
        }
    }
    if let Some((live, _)) = members {
        for member in live
            .iter()
            .filter(|m| m.node_id.name != admin.console.node_name)
        {
            for (revision, addrs) in &member.endpoints {
                let list = by_revision.entry(revision.clone()).or_default();
                for addr in addrs {
                    list.push(json!({"addr": addr, "node": member.node_id.name}));
                }
            }
        }
    }
    by_revision
}

/// Members, leader, term, indexes, each member's lag and gossip liveness.
fn cluster_view(cluster: &consensus::ClusterHandle, members: Option<&Members>) -> Value {
    let status = cluster.status();
    let committed = status.committed_index.unwrap_or(0);
    let gossip = |name: &str| -> (Option<bool>, Option<u64>) {
        let Some((live, dead)) = members else {
            return (None, None);
        };
        if let Some(member) = live.iter().find(|m| m.node_id.name == name) {
            return (Some(true), member.facts.applied_index);
        }
        (
            dead.iter().any(|m| m.node_id.name == name).then_some(false),
            None,
        )
    };
    let rows: Vec<Value> = status
        .members
        .iter()
        .map(|(id, node)| {
            let (live, applied) = if node.name == status.node_name {
                (Some(true), status.applied_index)
            } else {
                gossip(&node.name)
            };
            json!({
                "node_id": id,
                "name": node.name,
                "voter": status.voters.contains(id),
                "leader": status.leader == Some(*id),
                "admin_addr": node.admin_addr,
                "gossip_live": live,
                "applied_index": applied,
                "lag": applied.map(|applied| committed.saturating_sub(applied)),
            })
        })
        .collect();
    let leader = status
        .leader
        .and_then(|id| status.members.get(&id))
        .map(|node| node.name.clone());
    json!({
        "node": status.node_name,
        "state": status.state,
        "term": status.term,
        "leader": leader,
        "last_log_index": status.last_log_index,
        "committed_index": status.committed_index,
        "applied_index": status.applied_index,
        "members": rows,
    })
}

/// `GET /ui/api/logs/{env}/{revision}`: the last lines of this node's
/// instance logs of `revision` (other members' instances log on their own
/// hosts; open the console there).
async fn logs(
    request: &Request<hyper::body::Incoming>,
    admin: &Arc<AdminState>,
    env: &EnvId,
    revision: RevisionId,
) -> Result<Reply, ApiError> {
    reader(request, admin, env, "logs").await?;
    let dir = deploy::layout::instance_logs(&deploy::layout::revision_dir(
        admin.local_store.root(),
        env,
        revision,
    ));
    let files = blocking(move || tail_logs(&dir)).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({"node": admin.console.node_name, "revision_id": revision, "files": files}),
        None,
    ))
}

/// The last [`LOG_LINES_MAX`] lines of each `*.log` file in `dir`.
fn tail_logs(dir: &std::path::Path) -> Vec<Value> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|path| {
            let mut file = std::fs::File::open(&path).ok()?;
            let length = file.metadata().ok()?.len();
            let start = length.saturating_sub(LOG_TAIL_BYTES_MAX);
            file.seek(SeekFrom::Start(start)).ok()?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).ok()?;
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let lines = &lines[lines.len().saturating_sub(LOG_LINES_MAX)..];
            Some(json!({
                "name": path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "lines": lines,
            }))
        })
        .collect()
}
