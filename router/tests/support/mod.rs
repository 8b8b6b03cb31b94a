//! Shared by the router's loopback tests: an operator driving the pure
//! `apply`, real HTTP backends, and a router started on a free port.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use deploy::apply::apply;
use deploy::audit::{Actor, Authorization, Decision};
use deploy::bundle::RouteBinding;
use deploy::command::*;
use deploy::ids::{DeploymentId, EnvId, EventId, RevisionId};
use deploy::state::EnvironmentState;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use router::RouteTable;
use router::proxy::{Instance, ProxyConfig, Published, Router};
use router::sticky::StickyKey;
use tokio::net::TcpListener;

/// Drives `apply` like an operator would.
pub struct Operator {
    state: Option<EnvironmentState>,
    counter: u128,
}

impl Operator {
    pub fn run(&mut self, command: Command) -> serde_json::Value {
        self.counter += 1;
        let envelope = CommandEnvelope {
            at: chrono::Utc::now(),
            actor: Actor::local_user(None, None),
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "t".into(),
                reason: "t".into(),
            },
            minted: MintedIds {
                event_id: EventId::from_ulid(ulid::Ulid::new()),
                object_id: ulid::Ulid::new(),
            },
            command,
            precondition: None,
            idempotency_key: None,
            signed_by: None,
        };
        let applied = apply(self.state.as_ref(), None, &envelope).expect("apply");
        self.state = applied.state;
        applied.result
    }

    /// `local` with one deployment on `/` and `count` ready revisions, each
    /// with something to run.
    pub fn new(count: usize) -> (Self, DeploymentId, Vec<RevisionId>) {
        let mut operator = Self {
            state: None,
            counter: 0,
        };
        operator.run(Command::EnvInit {
            answers: EnvInitAnswers::default(),
            defaults: packs::default_bindings(),
        });
        let added = operator.run(Command::BundleAdd(BundleAddAnswers {
            environment_id: EnvId::local(),
            bundle_id: "shop".parse().expect("bundle"),
            customer_id: None,
            route_binding: RouteBinding::default(),
            revenue_share: None,
            authorization_ref: None,
            config_overrides: None,
            idempotency_key: None,
        }));
        let deployment: DeploymentId = added["deployment_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("ulid");
        let mut revisions = Vec::new();
        for _ in 0..count {
            // A revision with something to run (a bundle with a runtime
            // section), warmed and reported healthy as a node would.
            let mut answers = RevisionStageAnswers::new(EnvId::local(), deployment);
            answers.bundle_path = Some("shop.gtbundle".into());
            let staged = operator.run(Command::RevisionStage {
                answers,
                staged: Some(Box::new(StagedBundle {
                    revision_id: RevisionId::from_ulid(ulid::Ulid::new()),
                    bundle_id: "shop".parse().expect("bundle"),
                    bundle_digest: "sha256:ab".parse().expect("digest"),
                    pack_list: Vec::new(),
                    pack_list_lock_ref: String::new(),
                    runtime_instances: Some(1),
                    scaling: None,
                    secret_pins: Vec::new(),
                    config_reload: Default::default(),
                })),
            });
            let revision: RevisionId = staged["revision_id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("ulid");
            operator.run(Command::warm(RevisionAnswers {
                environment_id: EnvId::local(),
                revision_id: revision,
                idempotency_key: None,
            }));
            operator.run(Command::RevisionReport(RuntimeReport {
                environment_id: EnvId::local(),
                revision_id: revision,
                outcome: RuntimeOutcome::Ready,
            }));
            revisions.push(revision);
        }
        (operator, deployment, revisions)
    }

    pub fn split(&mut self, deployment: DeploymentId, entries: &[(RevisionId, u32)]) {
        self.run(Command::TrafficSet(TrafficSetAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            entries: entries
                .iter()
                .map(|(revision, bps)| TrafficEntryAnswers {
                    revision_id: revision.to_string(),
                    weight_bps: Some(*bps),
                    weight_percent: None,
                    tag: None,
                })
                .collect(),
            updated_by: None,
            idempotency_key: ulid::Ulid::new().to_string(),
            authorization_ref: None,
        }));
    }

    pub fn state(&self) -> &EnvironmentState {
        self.state.as_ref().expect("state")
    }
}

/// A backend that answers `<name> <body bytes>`.
pub async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<Incoming>| async move {
                        let forwarded = request.headers().contains_key("x-greentic-admin-token");
                        let bytes = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            format!("{name} {bytes} {forwarded}"),
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An address where nothing listens.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

pub struct Harness {
    pub router: Arc<Router>,
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Harness {
    pub async fn start(published: Published, config: ProxyConfig) -> Self {
        let router = Router::new(published, StickyKey::new([42; 32]), config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        tokio::spawn(Arc::clone(&router).serve(listener, receiver));
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Self {
            router,
            addr,
            client,
            _shutdown: shutdown,
        }
    }

    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, HashMap<String, String>, String) {
        self.send("GET", path, headers, Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> (u16, HashMap<String, String>, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if !headers.iter().any(|(name, _)| *name == "host") {
            request = request.header("host", "shop.test");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::new(body)).expect("request"))
            .await
            .expect("response");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

pub fn published(
    state: &EnvironmentState,
    instances: &[(RevisionId, Vec<SocketAddr>)],
) -> Published {
    Published {
        table: RouteTable::build(state),
        instances: instances
            .iter()
            .map(|(revision, addrs)| (*revision, addrs.iter().map(|a| Instance::new(*a)).collect()))
            .collect(),
    }
}
