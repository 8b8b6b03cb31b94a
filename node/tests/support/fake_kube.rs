//! A fake Kubernetes API server on 127.0.0.1 (plain HTTP) for the tests of
//! the apply path and the deployer credentials (`k8s_apply.rs`,
//! `credentials.rs` include this file): no real API server runs on these
//! machines. It records every request and answers:
//! - `GET /version`;
//! - SelfSubjectAccessReviews: allowed, or denied for chosen
//!   `(verb, resource)` pairs;
//! - TokenRequests for `gtc-deployer` in `gtc-local`: a numbered token that
//!   expires as asked (or after a fixed lifetime);
//! - PATCH: the body echoed back (403 for a forbidden bearer token);
//! - a single object's GET: its labels when the test said it exists, else
//!   404 (the apply's ownership check);
//! - metadata LISTs (a `labelSelector` in the query): the Deployments the
//!   test listed, nothing for other kinds;
//! - DELETE: success.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

/// The path a TokenRequest for the deployer's ServiceAccount goes to.
const TOKEN_PATH: &str = "/api/v1/namespaces/gtc-local/serviceaccounts/gtc-deployer/token";

/// One request the fake received.
#[derive(Debug, Clone)]
#[allow(dead_code)] // each test binary reads a part of it
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub accept: String,
    pub authorization: String,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the fake answers and what it was asked.
#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// `(verb, resource)` pairs the access review denies.
    denied: Vec<(String, String)>,
    /// Objects that exist, by request path, with their labels.
    existing: Vec<(String, Value)>,
    /// The items a Deployment list answers.
    deployments: Vec<Value>,
    /// Tokens issued so far.
    issued: u32,
    /// When set, a token expires this many seconds after issue, whatever
    /// the request asked.
    lifetime_seconds: Option<i64>,
    /// An `Authorization` header whose PATCHes are forbidden.
    forbidden: Option<String>,
}

/// The fake, running on its own runtime until dropped.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeApi {
    /// Starts a fake whose access review denies `denied`.
    pub fn start(denied: &[(&str, &str)]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(Mutex::new(State {
            denied: denied
                .iter()
                .map(|(verb, resource)| ((*verb).to_owned(), (*resource).to_owned()))
                .collect(),
            ..State::default()
        }));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            _runtime: runtime,
        }
    }

    fn with_state(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().expect("state"));
    }

    /// Makes the object at `path` exist, with `labels`.
    #[allow(dead_code)] // each test binary uses a part of the fake
    pub fn holds(&self, path: &str, labels: Value) {
        self.with_state(|state| state.existing.push((path.to_owned(), labels)));
    }

    /// The items a Deployment list answers from now on.
    #[allow(dead_code)]
    pub fn lists_deployments(&self, items: Vec<Value>) {
        self.with_state(|state| state.deployments = items);
    }

    /// Every token issued from now on lives `seconds`.
    #[allow(dead_code)]
    pub fn token_lifetime(&self, seconds: i64) {
        self.with_state(|state| state.lifetime_seconds = Some(seconds));
    }

    /// PATCHes carrying bearer `token` are answered 403.
    #[allow(dead_code)]
    pub fn forbid(&self, token: &str) {
        self.with_state(|state| state.forbidden = Some(format!("Bearer {token}")));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("state").requests.clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn not_found(message: String) -> Response<Full<Bytes>> {
    reply(
        404,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404,
               "reason": "NotFound", "message": message}),
    )
}

async fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (content_type, accept, authorization) = (
        header("content-type"),
        header("accept"),
        header("authorization"),
    );
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes().to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: method.clone(),
        path: path.clone(),
        query,
        content_type,
        accept,
        authorization,
        body,
    };
    let mut state = state.lock().expect("state");
    state.requests.push(recorded.clone());
    match method.as_str() {
        "GET" if path == "/version" => reply(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0",
                   "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1",
                   "compiler": "gc", "platform": "linux/amd64"}),
        ),
        "POST" if path.ends_with("/selfsubjectaccessreviews") => {
            let mut review = recorded.json();
            let attributes = &review["spec"]["resourceAttributes"];
            let asked = (
                attributes["verb"].as_str().unwrap_or_default().to_owned(),
                attributes["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            review["status"] = if state.denied.contains(&asked) {
                json!({"allowed": false, "reason": "no RBAC policy matched"})
            } else {
                json!({"allowed": true})
            };
            reply(201, review)
        }
        "POST" if path == TOKEN_PATH => {
            state.issued += 1;
            let mut token_request = recorded.json();
            let asked = token_request["spec"]["expirationSeconds"]
                .as_i64()
                .unwrap_or(3600);
            let lifetime = state.lifetime_seconds.unwrap_or(asked);
            let expires = chrono::Utc::now() + chrono::Duration::seconds(lifetime);
            token_request["status"] = json!({
                "token": format!("sa-token-{}", state.issued),
                "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            reply(201, token_request)
        }
        "PATCH" if state.forbidden.as_deref() == Some(recorded.authorization.as_str()) => reply(
            403,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 403,
                   "reason": "Forbidden", "message": "user cannot patch this resource"}),
        ),
        "PATCH" => reply(200, recorded.json()),
        // One object's metadata (the ownership check): it exists only when
        // the test said so.
        "GET" if !recorded.query.contains("labelSelector") => {
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            match state.existing.iter().find(|(held, _)| *held == path) {
                Some((_, labels)) => reply(
                    200,
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                           "metadata": {"name": name, "uid": "uid-existing", "labels": labels}}),
                ),
                None => not_found(format!("{name} not found")),
            }
        }
        "GET" => {
            let items = if path.ends_with("/deployments") {
                state.deployments.clone()
            } else {
                Vec::new()
            };
            reply(
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                       "metadata": {}, "items": items}),
            )
        }
        "DELETE" => reply(
            200,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
        ),
        _ => not_found("the fake has no such route".to_owned()),
    }
}
