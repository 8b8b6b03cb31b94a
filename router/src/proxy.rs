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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

use crate::pick::pick_point;
use crate::sticky::{self, StickyKey};
use crate::table::{DeploymentRoute, RouteTable};
use crate::upstream::{ConnectionPool, PooledBody};

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

/// Bounds and timeouts of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Time to open a connection to an instance; short, because a refused
    /// connection is retried on another instance.
    pub connect_timeout: Duration,
    /// Time from sending a request to an instance to its response headers.
    pub response_timeout: Duration,
    /// A client that has not sent its headers in this time gets 408.
    pub header_read_timeout: Duration,
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
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
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
}

impl Instance {
    /// A ready instance listening on `addr`.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            in_flight: AtomicUsize::new(0),
            pool: Arc::default(),
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
    /// connections finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .max_buf_size(self.config.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.config.max_header_bytes as u32);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let router = Arc::clone(&self);
                    let service = hyper::service::service_fn(move |request| {
                        let router = Arc::clone(&router);
                        async move { Ok::<_, Infallible>(router.handle(request, peer).await) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::info!(%peer, %error, "connection closed on a client error (malformed request, oversized head or header timeout)");
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

    /// Power of two choices on in-flight requests; the two candidates come
    /// from the pick counter, so no RNG is needed.
    fn pick_instance<'a>(
        &self,
        instances: &'a [Arc<Instance>],
        avoid: Option<usize>,
    ) -> (usize, &'a Arc<Instance>) {
        let count = instances.len();
        let draw = self
            .instance_counter
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let first = (draw % count as u64) as usize;
        let second = ((draw >> 32) % count as u64) as usize;
        let mut candidates = [first, second];
        if let Some(avoid) = avoid {
            for candidate in &mut candidates {
                if *candidate == avoid && count > 1 {
                    *candidate = (avoid + 1) % count;
                }
            }
        }
        let chosen = if instances[candidates[1]].in_flight() < instances[candidates[0]].in_flight()
        {
            candidates[1]
        } else {
            candidates[0]
        };
        (chosen, &instances[chosen])
    }

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
        // Only bodiless idempotent requests can be sent twice.
        let retryable = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
            && body.is_end_stream();
        let mut body = Some(body);
        let mut avoid = None;
        let attempts = if retryable && instances.len() > 1 {
            2
        } else {
            1
        };
        let mut last_error = None;
        // The head is cloned only when a second attempt is possible.
        let mut spare = (attempts > 1).then(|| parts.clone());
        let mut head_for_attempt = Some(parts);
        for _ in 0..attempts {
            let (index, instance) = self.pick_instance(instances, avoid);
            let outgoing_body = match body.take() {
                Some(body) if !retryable => body.map_err(|e| Box::new(e) as BoxError).boxed(),
                _ => Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            };
            let Some(head) = head_for_attempt.take().or_else(|| spare.take()) else {
                break;
            };
            let mut outgoing = Request::from_parts(head, outgoing_body);
            *outgoing.version_mut() = http::Version::HTTP_11;
            let guard = InFlight::enter(instance);
            let sent = instance
                .pool
                .send(instance.addr, self.config.connect_timeout, outgoing);
            match tokio::time::timeout(self.config.response_timeout, sent).await {
                Ok(Ok(response)) => {
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
                Ok(Err(error)) if error.is_connect() => {
                    tracing::warn!(instance = %instance.addr, %error, "instance refused the connection");
                    last_error = Some(format!(
                        "instance {} refused the connection: {error}",
                        instance.addr
                    ));
                    avoid = Some(index);
                }
                Ok(Err(error)) => {
                    return error_response(
                        StatusCode::BAD_GATEWAY,
                        "upstream-error",
                        format!("instance {} failed: {error}", instance.addr),
                        generation,
                    );
                }
                Err(_) => {
                    return error_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream-timeout",
                        format!(
                            "instance {} sent no response within {:?}",
                            instance.addr, self.config.response_timeout
                        ),
                        generation,
                    );
                }
            }
        }
        error_response(
            StatusCode::BAD_GATEWAY,
            "upstream-unavailable",
            last_error.unwrap_or_else(|| "no instance answered".to_owned()),
            generation,
        )
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
