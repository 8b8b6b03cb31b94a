//! The proxy: the thin I/O shell around the routing decisions.
//!
//! Every request loads one published snapshot (route table plus ready
//! instances) and uses only that snapshot, so an update is never seen half
//! applied; the snapshot is swapped atomically by [`Router::publish`].
//! Bodies stream both ways; nothing is buffered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use deploy::ids::{DeploymentId, RevisionId};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connections::{self, ConnectionLimits, Connections, Ended, Trip};
use crate::pick::pick_point;
use crate::resilience::{EjectionConfig, FailureOutcome, Outlier, RetryBudget, RetryBudgetConfig};
use crate::sticky::{self, StickyKey};
use crate::table::{DeploymentRoute, RouteTable};
use crate::upstream::{ConnectionPool, PooledBody, SendFailure, UpstreamError};

/// Boxed error of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type both directions use.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Header that carries the committed generation a request was routed under.
pub const GENERATION_HEADER: &str = "x-greentic-generation";
/// Header naming the revision that served (and, from admin callers, the
/// revision to use).
pub const REVISION_HEADER: &str = "x-greentic-revision";
/// Header that asks for the revision with this tag.
pub const TAG_HEADER: &str = "x-greentic-tag";
/// Header an admin caller sends its token in, to be allowed to override.
pub const ADMIN_TOKEN_HEADER: &str = "x-greentic-admin-token";

/// Default per-try connect timeout: a loopback or LAN connect takes well
/// under a millisecond, so 250 ms only ever cuts off an instance that is
/// gone, frozen or behind a partition.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default per-try first-byte timeout before a safe request is hedged on
/// another instance: short enough that one frozen instance costs a request
/// well under a second, long enough that ordinary responses never hedge.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_millis(300);

/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Default most connections the router holds open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default most connections from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;

/// `body`, keeping its request counted as in service until it is sent.
fn guarded(body: ProxyBody, guard: connections::RequestGuard) -> ProxyBody {
    BoxBody::new(connections::GuardedBody::new(body, guard))
}

/// The answer to a request on a connection a limit is closing.
fn closing_response(trip: Trip, generation: u64) -> Response<ProxyBody> {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "connection-closing",
        format!(
            "the connection is being closed ({}); retry on a new one",
            trip.label()
        ),
        generation,
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Bounds and timeouts of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Time to open a connection to an instance (per try); short, because
    /// a request that could not reach an instance is tried on another
    /// instance of the same revision, whatever its method and body.
    pub connect_timeout: Duration,
    /// Time from sending a request to an instance to its response headers
    /// (the whole request, all tries together).
    pub response_timeout: Duration,
    /// Per-try time to the first byte of the response: when it passes, a
    /// request that is safe to send twice (idempotent method, body held by
    /// the router) is also sent to another instance of the same revision,
    /// and the first answer wins. `None` turns this hedging off.
    pub first_byte_timeout: Option<Duration>,
    /// Largest request body the router holds so that it can send the
    /// request again; larger (or unsized) bodies stream through and their
    /// request is retried only if it never left the router.
    pub retry_body_limit: u64,
    /// Most tries of one request, on distinct instances (1 = no retry).
    pub max_tries: usize,
    /// Passive outlier ejection of instances.
    pub ejection: EjectionConfig,
    /// How many extra tries (retries and hedges) the router may spend.
    pub retry_budget: RetryBudgetConfig,
    /// Connection limits of the listener: head deadline, idle keep-alive
    /// timeout, connections in total and per client address.
    pub connections: ConnectionLimits,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Largest request body forwarded; larger declared bodies get 413.
    pub max_body_bytes: u64,
    /// How long a sticky-session cookie pins a revision.
    pub sticky_ttl: Duration,
    /// Token that lets a caller pick the revision with `x-greentic-revision`.
    pub admin_token: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Duration::from_secs(30),
            first_byte_timeout: Some(DEFAULT_FIRST_BYTE_TIMEOUT),
            retry_body_limit: 64 * 1024,
            max_tries: 3,
            ejection: EjectionConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
            connections: ConnectionLimits {
                header_timeout: connections::DEFAULT_HEADER_TIMEOUT,
                idle_timeout: connections::DEFAULT_IDLE_TIMEOUT,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
                reserved_for_priority: 0,
            },
            max_header_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024 * 1024,
            sticky_ttl: Duration::from_secs(3600),
            admin_token: None,
        }
    }
}

/// One ready instance of a revision.
#[derive(Debug)]
pub struct Instance {
    pub addr: SocketAddr,
    in_flight: AtomicUsize,
    /// Keep-alive connections to this instance, reused across requests.
    pool: Arc<ConnectionPool>,
    /// Passive health from the outcomes of requests sent to it.
    outlier: Outlier,
}

impl Instance {
    /// A ready instance listening on `addr`.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            in_flight: AtomicUsize::new(0),
            pool: Arc::default(),
            outlier: Outlier::default(),
        })
    }

    /// Requests currently being served (headers sent, body not finished).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// (deployment, revision, split generation) a sticky cookie pins.
type CookieKey = (DeploymentId, RevisionId, u64);
/// (expiry in unix seconds, the whole `Set-Cookie` value).
type SignedCookie = (i64, Arc<str>);

/// What the router serves: a committed route table and the ready
/// instances of its revisions.
#[derive(Debug, Clone)]
pub struct Published {
    pub table: RouteTable,
    pub instances: HashMap<RevisionId, Vec<Arc<Instance>>>,
}

/// The router: a published snapshot, a pick counter and an HTTP client.
pub struct Router {
    published: ArcSwap<Published>,
    /// Feeds the weighted pick; only revision picks draw from it, so the
    /// picks follow the Weyl sequence exactly.
    counter: AtomicU64,
    /// Feeds the instance choice, kept apart from `counter` so balancing
    /// never skews the split.
    instance_counter: AtomicU64,
    /// Signed `Set-Cookie` values by (deployment, revision, split
    /// generation): every client that gets the same revision in the same
    /// half-TTL gets the same cookie, so signing happens once, not per request.
    cookies: RwLock<HashMap<CookieKey, SignedCookie>>,
    /// Prometheus handles per revision, created on first use so that the
    /// request path does no label formatting or registry lookups.
    metrics: RwLock<HashMap<RevisionId, Arc<RevisionMetrics>>>,
    key: StickyKey,
    config: ProxyConfig,
    /// Clock of outlier ejection and the retry budget.
    epoch: Instant,
    budget: RetryBudget,
    resilience: ResilienceMetrics,
    /// What this node's own actors published (table and local instances),
    /// kept so remote instances can be merged in again when they change.
    local: Mutex<Published>,
    /// Ready instances on other nodes, by revision (from gossip). Kept by
    /// address so an unchanged instance keeps its connection pool.
    remote: Mutex<HashMap<RevisionId, Vec<Arc<Instance>>>>,
}

impl Router {
    /// A router serving `published` until the next [`Router::publish`].
    pub fn new(published: Published, key: StickyKey, config: ProxyConfig) -> Arc<Self> {
        Arc::new(Self {
            local: Mutex::new(published.clone()),
            remote: Mutex::new(HashMap::new()),
            published: ArcSwap::from_pointee(published),
            counter: AtomicU64::new(0),
            instance_counter: AtomicU64::new(0),
            cookies: RwLock::new(HashMap::new()),
            metrics: RwLock::new(HashMap::new()),
            key,
            epoch: Instant::now(),
            budget: RetryBudget::new(config.retry_budget),
            resilience: ResilienceMetrics::new(),
            config,
        })
    }

    /// Swaps in a new snapshot of this node's committed table and local
    /// instances (merged with the remote ones); requests already routed
    /// keep the old one.
    pub fn publish(&self, published: Published) {
        if let Ok(mut local) = self.local.lock() {
            *local = published.clone();
        }
        self.republish(published);
    }

    /// The ready instances this node runs itself, by revision: what it
    /// tells other nodes' routers.
    pub fn local_instances(&self) -> HashMap<RevisionId, Vec<SocketAddr>> {
        self.local.lock().map_or_else(
            |_| HashMap::new(),
            |local| {
                local
                    .instances
                    .iter()
                    .map(|(revision, instances)| {
                        (*revision, instances.iter().map(|i| i.addr).collect())
                    })
                    .collect()
            },
        )
    }

    /// Replaces the ready instances known on other nodes. Requests for a
    /// revision are balanced over local and remote instances alike; the
    /// split between revisions still comes only from the committed table.
    pub fn set_remote_instances(&self, remote: HashMap<RevisionId, Vec<SocketAddr>>) {
        let Ok(mut current) = self.remote.lock() else {
            return;
        };
        let mut next: HashMap<RevisionId, Vec<Arc<Instance>>> = HashMap::new();
        for (revision, addrs) in remote {
            let known = current.get(&revision);
            let instances = addrs
                .into_iter()
                .map(|addr| {
                    known
                        .and_then(|list| list.iter().find(|i| i.addr == addr))
                        .map_or_else(|| Instance::new(addr), Arc::clone)
                })
                .collect();
            next.insert(revision, instances);
        }
        let addrs = |map: &HashMap<RevisionId, Vec<Arc<Instance>>>| {
            map.iter()
                .map(|(revision, list)| {
                    (*revision, list.iter().map(|i| i.addr).collect::<Vec<_>>())
                })
                .collect::<HashMap<_, _>>()
        };
        if addrs(&current) == addrs(&next) {
            return;
        }
        *current = next;
        drop(current);
        let local = self.local.lock().map(|local| local.clone());
        if let Ok(local) = local {
            self.republish(local);
        }
    }

    fn republish(&self, mut published: Published) {
        if let Ok(remote) = self.remote.lock() {
            for (revision, instances) in remote.iter() {
                let entry = published.instances.entry(*revision).or_default();
                for instance in instances {
                    if !entry.iter().any(|i| i.addr == instance.addr) {
                        entry.push(Arc::clone(instance));
                    }
                }
            }
        }
        for deployment in published.table.deployments() {
            for (revision, weight_bps) in deployment.weights() {
                metrics::gauge!("gtc_split_desired_ratio", "deployment" => deployment.deployment_id.to_string(), "revision" => revision.to_string())
                    .set(f64::from(weight_bps) / 10_000.0);
            }
        }
        for (revision, instances) in &published.instances {
            metrics::gauge!("gtc_instances_ready", "revision" => revision.to_string())
                .set(instances.len() as f64);
        }
        metrics::gauge!("gtc_router_generation").set(published.table.generation() as f64);
        self.published.store(Arc::new(published));
    }

    /// Requests this router forwarded per revision since it started (the
    /// sum of `gtc_http_requests_total` over status classes).
    pub fn requests_served(&self) -> HashMap<RevisionId, u64> {
        self.metrics.read().map_or_else(
            |_| HashMap::new(),
            |cache| {
                cache
                    .iter()
                    .map(|(revision, metrics)| (*revision, metrics.served.load(Ordering::Relaxed)))
                    .collect()
            },
        )
    }

    /// The generation of the table currently served.
    pub fn generation(&self) -> u64 {
        self.published.load().table.generation()
    }

    /// Accepts connections until `shutdown` turns true, then lets in-flight
    /// connections finish. Each connection is admitted and supervised by
    /// [`Connections`] with `ProxyConfig::connections`: a head deadline, an
    /// idle keep-alive timeout, and limits in total and per client address
    /// that close the oldest idle connection first.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let connections = Connections::new("router", self.config.connections);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // The head deadline is the supervisor's (hyper's own would also cut
        // idle keep-alive connections at the head deadline).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(self.config.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.config.max_header_bytes as u32);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, say: back off instead
                            // of spinning on the error.
                            connections.count(Trip::AcceptError);
                            tracing::warn!(%error, "router accept failed");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                            continue;
                        }
                    };
                    let admitted = match connections.admit(peer) {
                        Ok(admitted) => Arc::new(admitted),
                        Err(trip) => {
                            tracing::debug!(%peer, limit = trip.label(), "router connection refused");
                            continue;
                        }
                    };
                    let router = Arc::clone(&self);
                    let guard_source = Arc::clone(&admitted);
                    let service = hyper::service::service_fn(move |request| {
                        let router = Arc::clone(&router);
                        let started = guard_source.request_started(false);
                        async move {
                            let guard = match started {
                                Ok(guard) => guard,
                                Err(trip) => return Ok::<_, Infallible>(closing_response(trip, router.generation())),
                            };
                            let response = router.handle(request, peer).await;
                            Ok::<_, Infallible>(response.map(|body| guarded(body, guard)))
                        }
                    });
                    let stream = admitted.watch(stream);
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    // Boxed so the spawned future's `Send` is proved here,
                    // not through the supervisor's generic future.
                    let connection: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>> =
                        Box::pin(graceful.watch(connection));
                    tokio::spawn(async move {
                        match admitted.supervise(connection).await {
                            Ended::Finished(Err(error)) => {
                                tracing::info!(%peer, %error, "connection closed on a client error (malformed request or oversized head)");
                            }
                            Ended::Finished(Ok(())) => {}
                            Ended::Closed(trip) => {
                                tracing::debug!(%peer, limit = trip.label(), "connection closed by a limit");
                            }
                        }
                    });
                }
                _ = shutdown.changed() => break,
            }
        }
        graceful.shutdown().await;
    }

    /// Routes one request.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let published = self.published.load_full();
        let generation = published.table.generation();
        let host = request_host(&request);
        let path = request.uri().path().to_owned();
        // `<tag>---<host>` reaches a tagged revision directly.
        let (resolved, host_tag) = match published.table.resolve_tagged(&host, &path) {
            Some((route, tag)) => (Some(route), Some(tag)),
            None => (published.table.resolve(&host, &path), None),
        };
        let Some(route) = resolved else {
            return error_response(
                StatusCode::NOT_FOUND,
                "no-route",
                format!("no deployment serves host {host:?} and path {path:?}"),
                generation,
            );
        };
        if let Some(length) = declared_length(request.headers())
            && length > self.config.max_body_bytes
        {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!(
                    "the request body is {length} bytes; the limit is {}",
                    self.config.max_body_bytes
                ),
                generation,
            );
        }
        let tag = host_tag.or_else(|| {
            request
                .headers()
                .get(TAG_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let choice = match tag {
            Some(tag) => match route.tagged(&tag) {
                Some(revision) => Choice {
                    revision,
                    set_cookie: None,
                },
                None => {
                    return error_response(
                        StatusCode::NOT_FOUND,
                        "no-such-tag",
                        format!(
                            "deployment {} has no revision tagged {tag:?}",
                            route.deployment_id
                        ),
                        generation,
                    );
                }
            },
            None => self.choose(&published, route, &request),
        };
        let Some(instances) = published
            .instances
            .get(&choice.revision)
            .filter(|i| !i.is_empty())
        else {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-ready-instance",
                format!(
                    "revision {} of deployment {} has no ready instance",
                    choice.revision, route.deployment_id
                ),
                generation,
            );
        };
        let mut request = request;
        let trace = crate::traceparent::propagate(request.headers_mut());
        tracing::debug!(trace_id = %trace.trace_id_hex(), deployment = %route.deployment_id, revision = %choice.revision, generation, "request routed");
        let started = std::time::Instant::now();
        let mut response = self.forward(request, peer, instances, generation).await;
        self.metrics_for(route, choice.revision)
            .record(response.status(), started.elapsed());
        let headers = response.headers_mut();
        insert(headers, GENERATION_HEADER, &generation.to_string());
        insert(headers, REVISION_HEADER, &choice.revision.to_string());
        if let Some(cookie) = choice.set_cookie
            && let Ok(value) = HeaderValue::from_str(cookie.as_ref())
        {
            headers.append(header::SET_COOKIE, value);
        }
        response
    }

    fn choose(
        &self,
        published: &Published,
        route: &DeploymentRoute,
        request: &Request<Incoming>,
    ) -> Choice {
        if let Some(revision) = self.admin_override(route, request.headers()) {
            return Choice {
                revision,
                set_cookie: None,
            };
        }
        let env = published.table.env_id();
        let now = unix_now();
        let name = sticky::cookie_name(route.deployment_id);
        if request.headers().contains_key(header::COOKIE)
            && let Some(value) = cookie_value(request.headers(), &name)
            && let Ok(revision) = sticky::verify(
                &self.key,
                &value,
                env,
                route.deployment_id,
                route.split_generation,
                now,
            )
            && route.pick.contains(revision)
        {
            return Choice {
                revision,
                set_cookie: None,
            };
        }
        let revision = route
            .pick
            .pick(pick_point(self.counter.fetch_add(1, Ordering::Relaxed)));
        let set_cookie = self.cookie_for(env, route, revision, &name, now);
        Choice {
            revision,
            set_cookie: Some(set_cookie),
        }
    }

    /// A signed cookie pinning `revision`, reused while more than half its
    /// lifetime remains.
    fn cookie_for(
        &self,
        env: &deploy::ids::EnvId,
        route: &DeploymentRoute,
        revision: RevisionId,
        name: &str,
        now: i64,
    ) -> Arc<str> {
        let ttl = self.config.sticky_ttl.as_secs() as i64;
        let key = (route.deployment_id, revision, route.split_generation);
        if let Ok(cache) = self.cookies.read()
            && let Some((expires_at, value)) = cache.get(&key)
            && expires_at - now > ttl / 2
        {
            return Arc::clone(value);
        }
        let expires_at = now + ttl;
        let signed = sticky::issue(
            &self.key,
            env,
            route.deployment_id,
            revision,
            route.split_generation,
            expires_at,
        );
        let value: Arc<str> = Arc::from(format!(
            "{name}={signed}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Lax"
        ));
        if let Ok(mut cache) = self.cookies.write() {
            // Entries of older generations are never asked for again.
            cache.retain(|(_, _, generation), _| *generation >= route.split_generation);
            cache.insert(key, (expires_at, Arc::clone(&value)));
        }
        value
    }

    fn metrics_for(&self, route: &DeploymentRoute, revision: RevisionId) -> Arc<RevisionMetrics> {
        if let Ok(cache) = self.metrics.read()
            && let Some(metrics) = cache.get(&revision)
        {
            return Arc::clone(metrics);
        }
        let metrics = Arc::new(RevisionMetrics::new(route.deployment_id, revision));
        if let Ok(mut cache) = self.metrics.write() {
            cache.insert(revision, Arc::clone(&metrics));
        }
        metrics
    }

    /// `x-greentic-revision`, honoured only with the admin token and only
    /// for a revision the split names.
    fn admin_override(&self, route: &DeploymentRoute, headers: &HeaderMap) -> Option<RevisionId> {
        let token = self.config.admin_token.as_deref()?;
        let given = headers.get(ADMIN_TOKEN_HEADER)?.as_bytes();
        if !constant_time_eq(given, token.as_bytes()) {
            return None;
        }
        let revision: RevisionId = headers.get(REVISION_HEADER)?.to_str().ok()?.parse().ok()?;
        route.revisions.contains(&revision).then_some(revision)
    }

    /// Power of two choices on in-flight requests among the instances
    /// not yet tried and not ejected; the two candidates come from the
    /// pick counter, so no RNG is needed. When every untried instance is
    /// ejected, `allow_ejected` decides whether one of them is used anyway
    /// (counted in `gtc_router_ejection_overridden_total`).
    fn pick_instance(
        &self,
        instances: &[Arc<Instance>],
        tried: &[usize],
        now_ms: u64,
        allow_ejected: bool,
    ) -> Option<usize> {
        let count = instances.len();
        if count == 0 {
            return None;
        }
        let draw = self
            .instance_counter
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let untried = |i: &usize| !tried.contains(i);
        let healthy = |i: &usize| untried(i) && !instances[*i].outlier.is_ejected(now_ms);
        let probe = |start: u64, eligible: &dyn Fn(&usize) -> bool| {
            let start = (start % count as u64) as usize;
            (0..count).map(|k| (start + k) % count).find(eligible)
        };
        let (first, second) = match probe(draw, &healthy) {
            Some(first) => (first, probe(draw >> 32, &healthy).unwrap_or(first)),
            None if allow_ejected => {
                let first = probe(draw, &untried)?;
                self.resilience.ejection_overridden.increment(1);
                (first, probe(draw >> 32, &untried).unwrap_or(first))
            }
            None => return None,
        };
        Some(
            if instances[second].in_flight() < instances[first].in_flight() {
                second
            } else {
                first
            },
        )
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn record_failure(&self, instance: &Instance, reason: FailureReason) {
        self.resilience.failure(reason).increment(1);
        if let FailureOutcome::Ejected(length) = instance
            .outlier
            .record_failure(&self.config.ejection, self.now_ms())
        {
            self.resilience.ejections.increment(1);
            tracing::warn!(instance = %instance.addr, ?reason, ejected_for = ?length, "instance ejected from balancing after consecutive failures");
        }
    }

    /// Sends the request to an instance of the chosen revision: a request
    /// that never left the router goes to another instance whatever it
    /// carries; one that is safe to send twice (idempotent method, body
    /// held) is retried after a reset and hedged after the first-byte
    /// timeout. Every try stays within the revision, so the split is never
    /// changed by a retry.
    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        instances: &[Arc<Instance>],
        generation: u64,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        prepare_headers(&mut parts.headers, peer);
        // HTTP/2 clients send the authority in the URI, not in `Host`;
        // the instance gets it as `Host` either way.
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        // Origin form: the connection already names the instance.
        let origin_form = match parts.uri.path_and_query() {
            Some(path) => http::Uri::from(path.clone()),
            None => http::Uri::from_static("/"),
        };
        parts.uri = origin_form;
        parts.version = http::Version::HTTP_11;
        self.budget.deposit();
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let several = instances.len() > 1;
        // With another instance to go to, a small body is held so the
        // request can be sent again; a large or unsized one streams through.
        let mut payload = if several && body.is_end_stream() {
            Payload::Held {
                head: parts,
                body: Bytes::new(),
            }
        } else if several
            && declared_length(&parts.headers).is_some_and(|l| l <= self.config.retry_body_limit)
        {
            match http_body_util::Limited::new(body, self.config.retry_body_limit as usize)
                .collect()
                .await
            {
                Ok(collected) => Payload::Held {
                    head: parts,
                    body: collected.to_bytes(),
                },
                Err(error) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "request-body-unreadable",
                        format!("the request body could not be read: {error}"),
                        generation,
                    );
                }
            }
        } else {
            Payload::Streamed(Some(Request::from_parts(
                parts,
                body.map_err(|e| Box::new(e) as BoxError).boxed(),
            )))
        };
        let hedgeable = several && idempotent && matches!(payload, Payload::Held { .. });
        let max_tries = self.config.max_tries.clamp(1, MAX_TRIES);
        let mut tried = [usize::MAX; MAX_TRIES];
        let mut tries = 0usize;
        let mut slots: [Option<Try>; 2] = [None, None];
        let mut hedge_slot = None;
        let mut never_sent = true;
        let deadline = tokio::time::sleep(self.config.response_timeout);
        tokio::pin!(deadline);
        let hedge_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(hedge_timer);
        let mut hedge_armed = false;

        // The first try.
        let Some(index) = self.pick_instance(instances, &[], self.now_ms(), true) else {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-ready-instance",
                "the revision has no ready instance".to_owned(),
                generation,
            );
        };
        let Some(request) = payload.request() else {
            return error_response(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                "the request could not be prepared".to_owned(),
                generation,
            );
        };
        tried[0] = index;
        tries += 1;
        slots[0] = Some(self.start_try(instances, index, request));
        if hedgeable && let Some(after) = self.config.first_byte_timeout {
            hedge_timer
                .as_mut()
                .reset(tokio::time::Instant::now() + after);
            hedge_armed = true;
        }

        loop {
            let event = {
                let [first, second] = &mut slots;
                tokio::select! {
                    done = poll_try(first) => Event::Done(0, done),
                    done = poll_try(second) => Event::Done(1, done),
                    () = &mut hedge_timer, if hedge_armed => Event::Hedge,
                    () = &mut deadline => Event::Deadline,
                }
            };
            match event {
                Event::Done(slot, (index, guard, Ok(response))) => {
                    slots[slot] = None;
                    let instance = &instances[index];
                    instance.outlier.record_success();
                    // The hedge answered first: the try it raced was slow
                    // past the first-byte timeout while another instance
                    // was not.
                    if hedge_slot == Some(slot)
                        && let Some(outrun) = slots[1 - slot].take()
                    {
                        self.record_failure(&instances[outrun.index], FailureReason::Outrun);
                    }
                    let (mut head, upstream) = response.into_parts();
                    strip_hop_by_hop(&mut head.headers);
                    let streamed = GuardedBody {
                        inner: upstream,
                        _guard: guard,
                    };
                    return Response::from_parts(
                        head,
                        streamed.map_err(|e| Box::new(e) as BoxError).boxed(),
                    );
                }
                Event::Done(slot, (index, guard, Err(failure))) => {
                    slots[slot] = None;
                    drop(guard);
                    let instance = &instances[index];
                    let SendFailure { error, unsent } = failure;
                    let reason = match (&error, unsent.is_some()) {
                        (UpstreamError::ConnectTimeout(_), _) => FailureReason::ConnectTimeout,
                        (_, true) => FailureReason::Connect,
                        (_, false) => FailureReason::Reset,
                    };
                    self.record_failure(instance, reason);
                    tracing::warn!(instance = %instance.addr, %error, "try failed");
                    let message = format!("instance {} failed: {error}", instance.addr);
                    let retry = if let Some(unsent) = unsent {
                        // Never left the router: safe whatever it carries.
                        payload.put_back(unsent);
                        true
                    } else {
                        never_sent = false;
                        idempotent && matches!(payload, Payload::Held { .. }) && {
                            let granted = self.budget.withdraw(self.now_ms());
                            if !granted {
                                self.resilience.budget_exhausted.increment(1);
                            }
                            granted
                        }
                    };
                    let next = if retry && tries < max_tries {
                        self.pick_instance(instances, &tried[..tries], self.now_ms(), true)
                    } else {
                        None
                    };
                    match next.and_then(|next| Some((next, payload.request()?))) {
                        Some((next, request)) => {
                            self.resilience.retry(reason).increment(1);
                            tried[tries] = next;
                            tries += 1;
                            slots[slot] = Some(self.start_try(instances, next, request));
                            if hedge_slot == Some(slot) {
                                hedge_slot = None;
                            }
                            if slots[1 - slot].is_none()
                                && hedgeable
                                && let Some(after) = self.config.first_byte_timeout
                            {
                                hedge_timer
                                    .as_mut()
                                    .reset(tokio::time::Instant::now() + after);
                                hedge_armed = true;
                            }
                        }
                        None if slots[1 - slot].is_some() => {}
                        None => {
                            let kind = if never_sent {
                                "upstream-unavailable"
                            } else {
                                "upstream-error"
                            };
                            return error_response(
                                StatusCode::BAD_GATEWAY,
                                kind,
                                message,
                                generation,
                            );
                        }
                    }
                }
                Event::Hedge => {
                    hedge_armed = false;
                    let free = slots.iter().position(Option::is_none);
                    let (Some(free), true) = (free, tries < max_tries) else {
                        continue;
                    };
                    let Some(next) =
                        self.pick_instance(instances, &tried[..tries], self.now_ms(), false)
                    else {
                        continue;
                    };
                    if !self.budget.withdraw(self.now_ms()) {
                        self.resilience.budget_exhausted.increment(1);
                        continue;
                    }
                    let Some(request) = payload.request() else {
                        continue;
                    };
                    self.resilience.hedges.increment(1);
                    tried[tries] = next;
                    tries += 1;
                    slots[free] = Some(self.start_try(instances, next, request));
                    hedge_slot = Some(free);
                }
                Event::Deadline => {
                    for running in slots.iter_mut().filter_map(Option::take) {
                        self.record_failure(&instances[running.index], FailureReason::Timeout);
                    }
                    return error_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream-timeout",
                        format!(
                            "no instance sent a response within {:?}",
                            self.config.response_timeout
                        ),
                        generation,
                    );
                }
            }
        }
    }

    fn start_try(
        &self,
        instances: &[Arc<Instance>],
        index: usize,
        request: Request<ProxyBody>,
    ) -> Try {
        let instance = Arc::clone(&instances[index]);
        let connect_timeout = self.config.connect_timeout;
        Try {
            index,
            future: Box::pin(async move {
                let guard = InFlight::enter(&instance);
                let result = instance
                    .pool
                    .send(instance.addr, connect_timeout, request)
                    .await;
                (index, guard, result)
            }),
        }
    }
}

/// Most tries of one request, whatever the configuration says.
const MAX_TRIES: usize = 4;

/// What one try ends with: the instance's index, its in-flight guard and
/// the response or the failure.
type TryOutput = (usize, InFlight, Result<Response<PooledBody>, SendFailure>);

/// A try in flight on one instance.
struct Try {
    index: usize,
    future: std::pin::Pin<Box<dyn std::future::Future<Output = TryOutput> + Send>>,
}

async fn poll_try(slot: &mut Option<Try>) -> TryOutput {
    match slot {
        Some(running) => running.future.as_mut().await,
        None => std::future::pending().await,
    }
}

// Lives on the stack for one turn of the loop; boxing the large variant
// would allocate once per try on the request path.
#[allow(clippy::large_enum_variant)]
enum Event {
    Done(usize, TryOutput),
    Hedge,
    Deadline,
}

/// The request body, held (so it can be sent again) or streamed (so the
/// request can be sent again only while it has not left the router).
enum Payload {
    Held {
        head: http::request::Parts,
        body: Bytes,
    },
    Streamed(Option<Request<ProxyBody>>),
}

impl Payload {
    /// The request for the next try, if there is one to send.
    fn request(&mut self) -> Option<Request<ProxyBody>> {
        match self {
            Self::Held { head, body: bytes } => {
                let body = if bytes.is_empty() {
                    Empty::<Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed()
                } else {
                    Full::new(bytes.clone())
                        .map_err(|never| match never {})
                        .boxed()
                };
                Some(Request::from_parts(head.clone(), body))
            }
            Self::Streamed(request) => request.take(),
        }
    }

    /// A request that never left the router, back for the next try.
    fn put_back(&mut self, unsent: Request<ProxyBody>) {
        if let Self::Streamed(slot) = self {
            *slot = Some(unsent);
        }
    }
}

/// Why a try failed, for the metrics and for outlier ejection.
#[derive(Debug, Clone, Copy)]
enum FailureReason {
    /// The connection was refused or failed before the request left.
    Connect,
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// The connection failed after the request was sent, before a response head.
    Reset,
    /// No response head within the first-byte timeout while a hedge on
    /// another instance answered.
    Outrun,
    /// No response head within the response timeout.
    Timeout,
}

/// Counters of retries, hedges and ejections, created once per router so
/// the request path only increments handles.
struct ResilienceMetrics {
    retry_connect: metrics::Counter,
    retry_reset: metrics::Counter,
    hedges: metrics::Counter,
    budget_exhausted: metrics::Counter,
    ejections: metrics::Counter,
    ejection_overridden: metrics::Counter,
    failure_connect: metrics::Counter,
    failure_connect_timeout: metrics::Counter,
    failure_reset: metrics::Counter,
    failure_outrun: metrics::Counter,
    failure_timeout: metrics::Counter,
}

impl ResilienceMetrics {
    fn new() -> Self {
        let failure = |reason: &'static str| metrics::counter!("gtc_router_upstream_failures_total", "reason" => reason);
        Self {
            retry_connect: metrics::counter!("gtc_router_retries_total", "reason" => "not_sent"),
            retry_reset: metrics::counter!("gtc_router_retries_total", "reason" => "reset"),
            hedges: metrics::counter!("gtc_router_retries_total", "reason" => "first_byte_timeout"),
            budget_exhausted: metrics::counter!("gtc_router_retry_budget_exhausted_total"),
            ejections: metrics::counter!("gtc_router_ejections_total"),
            ejection_overridden: metrics::counter!("gtc_router_ejection_overridden_total"),
            failure_connect: failure("connect"),
            failure_connect_timeout: failure("connect_timeout"),
            failure_reset: failure("reset"),
            failure_outrun: failure("outrun_by_hedge"),
            failure_timeout: failure("response_timeout"),
        }
    }

    fn failure(&self, reason: FailureReason) -> &metrics::Counter {
        match reason {
            FailureReason::Connect => &self.failure_connect,
            FailureReason::ConnectTimeout => &self.failure_connect_timeout,
            FailureReason::Reset => &self.failure_reset,
            FailureReason::Outrun => &self.failure_outrun,
            FailureReason::Timeout => &self.failure_timeout,
        }
    }

    fn retry(&self, reason: FailureReason) -> &metrics::Counter {
        match reason {
            FailureReason::Connect | FailureReason::ConnectTimeout => &self.retry_connect,
            _ => &self.retry_reset,
        }
    }
}

struct Choice {
    revision: RevisionId,
    set_cookie: Option<Arc<str>>,
}

/// Counts a request against its instance until its response body ends.
struct InFlight(Arc<Instance>);

impl InFlight {
    fn enter(instance: &Arc<Instance>) -> Self {
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(instance))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its instance's in-flight count.
struct GuardedBody {
    inner: PooledBody,
    _guard: InFlight,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn request_host<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hop-by-hop headers are for one connection only (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn prepare_headers(headers: &mut HeaderMap, peer: SocketAddr) {
    strip_hop_by_hop(headers);
    // Never let a client's admin token or override reach an instance.
    headers.remove(ADMIN_TOKEN_HEADER);
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    insert(headers, "x-forwarded-for", &forwarded);
    insert(headers, "x-forwarded-proto", "http");
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Request count and latency (to response headers) of one revision, by
/// status class, for Prometheus.
struct RevisionMetrics {
    /// Indexed by status class: 1xx..5xx.
    requests: [metrics::Counter; 5],
    /// All of them, readable here (the console's observed share).
    served: AtomicU64,
    latency: metrics::Histogram,
}

impl RevisionMetrics {
    fn new(deployment: DeploymentId, revision: RevisionId) -> Self {
        let (deployment, revision) = (deployment.to_string(), revision.to_string());
        let counter = |class: &'static str| metrics::counter!("gtc_http_requests_total", "deployment" => deployment.clone(), "revision" => revision.clone(), "status_class" => class);
        Self {
            requests: [
                counter("1xx"),
                counter("2xx"),
                counter("3xx"),
                counter("4xx"),
                counter("5xx"),
            ],
            latency: metrics::histogram!("gtc_http_request_duration_seconds", "deployment" => deployment.clone(), "revision" => revision.clone()),
            served: AtomicU64::new(0),
        }
    }

    fn record(&self, status: StatusCode, elapsed: Duration) {
        let class = usize::from((status.as_u16() / 100).clamp(1, 5)) - 1;
        self.requests[class].increment(1);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed.as_secs_f64());
    }
}

/// A JSON error answer that says what happened and under which generation.
pub fn error_response(
    status: StatusCode,
    kind: &str,
    message: String,
    generation: u64,
) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": {"kind": kind, "message": message, "status": status.as_u16()}, "generation": generation});
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert(headers, GENERATION_HEADER, &generation.to_string());
    response
}
