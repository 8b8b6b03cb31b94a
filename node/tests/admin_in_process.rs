//! The admin API served in-process: the node library's `AdminState` over a
//! real local store, one connection per request on an in-memory pipe, no
//! `gtc` binary and no socket. Proves the library is enough to drive the
//! API: refusals without a known token, a read, a change and its audit
//! event, and bad input answered with the contract's error shape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use node::admin::console::ConsoleState;
use node::admin::{self, AdminState};
use node::checks::Checks;
use router::connections::ConnectionLimits;
use router::proxy::{ProxyConfig, Published, Router};
use router::{RouteTable, sticky::StickyKey};
use serde_json::{Value, json};
use store::{EnvironmentStore, LocalFsStore};

const LOCAL: &str = "/v1/environments/local";
const OWNER_TOKEN: &str = "owner-token-of-the-in-process-node";
/// The client address the admin API's connection limits count.
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// An admin API over a fresh store holding the `local` environment.
struct InProcess {
    admin: Arc<AdminState>,
    store: Arc<LocalFsStore>,
    _root: tempfile::TempDir,
}

/// One answer: status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn kind(&self) -> &str {
        self.body["error"]["kind"].as_str().unwrap_or("")
    }
}

impl InProcess {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("temp store root");
        let store = Arc::new(LocalFsStore::open(root.path()).expect("open store"));
        let checks = Checks::for_local_user(root.path());
        let init = checks.envelope(deploy::command::Command::EnvInit {
            answers: Default::default(),
            defaults: packs::default_bindings(),
        });
        store.submit(&init).expect("env init");
        let env_id: deploy::ids::EnvId = "local".parse().expect("env id");
        let state = store.load(&env_id).expect("load").expect("local exists");
        let published = Published {
            table: RouteTable::build(&state),
            instances: Default::default(),
        };
        let router = Router::new(published, StickyKey::new([7; 32]), ProxyConfig::default());
        let admin = Arc::new(AdminState {
            router,
            env_id,
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            store: Arc::clone(&store) as Arc<dyn EnvironmentStore + Send + Sync>,
            local_store: Arc::clone(&store),
            cluster: None,
            node_token: OWNER_TOKEN.to_owned(),
            tokens_file: root.path().join(admin::TOKENS_FILE),
            checks,
            console: ConsoleState::new("in-process".to_owned(), None),
            limits: ConnectionLimits {
                header_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(5),
                max_connections: admin::DEFAULT_MAX_CONNECTIONS,
                max_connections_per_ip: admin::DEFAULT_MAX_CONNECTIONS_PER_IP,
                reserved_for_priority: admin::DEFAULT_HEALTH_RESERVE,
            },
            body_timeout: admin::DEFAULT_BODY_TIMEOUT,
        });
        Self {
            admin,
            store,
            _root: root,
        }
    }

    /// Sends one request over a fresh in-memory connection.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(admin::serve_stream(server, PEER, Arc::clone(&self.admin)));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .expect("http1 handshake");
        let driving = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "in-process");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let response = sender.send_request(request).await.expect("answer");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("answer body")
            .to_bytes();
        drop(sender);
        let _ = driving.await;
        let _ = serving.await;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"text": String::from_utf8_lossy(&bytes)}));
        Answer { status, body }
    }

    async fn owner(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).expect("json body")
        };
        self.send(method, path, Some(OWNER_TOKEN), headers, &bytes)
            .await
    }
}

/// Asserts the contract's error shape: kind, and the status in body and head.
fn assert_error(answer: &Answer, status: u16, kind: &str) {
    assert_eq!(answer.status, status, "{kind}: {:?}", answer.body);
    assert_eq!(answer.kind(), kind, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["status"], json!(status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_known_token_is_refused() {
    // Proves: no token and an unknown token are both 401 unauthenticated,
    // and neither reads the environment.
    let api = InProcess::new();
    let anonymous = api.send("GET", LOCAL, None, &[], b"").await;
    assert_error(&anonymous, 401, "unauthenticated");
    let unknown = api.send("GET", LOCAL, Some("not-a-token"), &[], b"").await;
    assert_error(&unknown, 401, "unauthenticated");
    assert!(unknown.body.get("environment").is_none());
    // The public health check needs no token.
    let health = api.send("GET", "/healthz", None, &[], b"").await;
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_reads_the_environment_as_the_store_holds_it() {
    // Proves: a read answers the committed state: its generation and etag
    // are the store's.
    let api = InProcess::new();
    let read = api.owner("GET", LOCAL, &[], Value::Null).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    let state = api
        .store
        .load(&"local".parse().expect("env id"))
        .expect("load")
        .expect("local");
    assert_eq!(read.body["generation"], json!(state.generation));
    assert_eq!(read.body["etag"], json!(state.etag()));
    assert_eq!(read.body["environment_id"], json!("local"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_applied_and_its_audit_event_is_the_logged_one() {
    // Proves: a guarded write through the API changes the store by one
    // generation, and the audit event the answer carries is the last one
    // the environment's audit log holds.
    let api = InProcess::new();
    let read = api.owner("GET", LOCAL, &[], Value::Null).await;
    let etag = format!("\"{}\"", read.body["etag"].as_str().expect("etag"));
    let generation = read.body["generation"].as_u64().expect("generation");
    let added = api
        .owner(
            "POST",
            &format!("{LOCAL}/bundles"),
            &[("If-Match", &etag)],
            json!({"bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}}),
        )
        .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert_eq!(added.body["generation"], json!(generation + 1));
    assert_eq!(added.body["audit"]["noun"], "bundles");
    assert_eq!(added.body["audit"]["verb"], "add");

    let audit = api
        .owner("GET", &format!("{LOCAL}/audit?limit=1"), &[], Value::Null)
        .await;
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    let last = &audit.body["events"][0];
    assert_eq!(last["event_id"], added.body["audit"]["event_id"]);
    assert_eq!(last["new_generation"], json!(generation + 1));
    let (report, anchored) = api
        .store
        .verify_audit(&"local".parse().expect("env id"))
        .expect("verify audit");
    assert!(
        anchored,
        "the audit chain ends at the state's head: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_contract_error_shape_and_changes_nothing() {
    // Proves: a body that is not JSON and one with an unknown field are 400s
    // naming their kind, and the environment's generation does not move.
    let api = InProcess::new();
    let before = api.owner("GET", LOCAL, &[], Value::Null).await;
    let any = [("If-Match", "*")];
    let not_json = api
        .send(
            "POST",
            &format!("{LOCAL}/bundles"),
            Some(OWNER_TOKEN),
            &any,
            b"{not json",
        )
        .await;
    assert_error(&not_json, 400, "invalid-request");
    let unknown_field = api
        .owner(
            "POST",
            &format!("{LOCAL}/bundles"),
            &any,
            json!({"bundle_id": "shop", "colour": "red"}),
        )
        .await;
    assert_error(&unknown_field, 400, "answers-parse");
    let after = api.owner("GET", LOCAL, &[], Value::Null).await;
    assert_eq!(after.body["generation"], before.body["generation"]);
}
