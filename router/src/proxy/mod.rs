//! The proxy: the thin I/O shell around the routing decisions.
//!
//! Every request loads one published snapshot (route table plus ready
//! instances) and uses only that snapshot, so an update is never seen half
//! applied; the snapshot is swapped atomically by [`Router::publish`].
//! Bodies stream both ways; nothing is buffered.
//!
//! The parts: [`serve`] accepts and supervises connections, [`route`]
//! decides which revision a request goes to (tag, admin override, sticky
//! cookie, weighted pick), [`forward`] sends it to an instance of that
//! revision (retries, hedging, outlier ejection), [`headers`] prepares the
//! headers both ways and [`telemetry`] counts what happened.

mod forward;
mod headers;
pub mod hold;
mod route;
mod serve;
mod telemetry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use deploy::ids::{DeploymentId, RevisionId};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::connections::{self, ConnectionLimits};
use crate::resilience::{EjectionConfig, Outlier, RetryBudget, RetryBudgetConfig};
use crate::sticky::{CookieCache, StickyKey};
use crate::table::RouteTable;
use crate::upstream::ConnectionPool;
use headers::insert;
use telemetry::{ResilienceMetrics, RevisionMetrics};

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

/// Default most connections the router holds open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default most connections from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
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
    /// Threads that serve connections, each with its own runtime and its
    /// own upstream connections (0 = one per core; 1 = serve on the
    /// caller's runtime, as on a single-threaded caller's runtime).
    pub workers: usize,
    /// Where each proxied request's span goes when OTLP export is on;
    /// `None` (the default) exports nothing and costs the request path
    /// one branch.
    pub span_export: Option<crate::span_export::SpanQueue>,
    /// Holding requests for a revision with no ready instance until one is
    /// published (off by default: such a request is answered 503 at once).
    pub hold: hold::HoldConfig,
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
            workers: 0,
            span_export: None,
            hold: hold::HoldConfig::default(),
        }
    }
}

/// Upstream pools per instance: router workers beyond this share them.
const POOL_SHARDS: usize = 8;

/// One ready instance of a revision.
#[derive(Debug)]
pub struct Instance {
    pub addr: SocketAddr,
    in_flight: AtomicUsize,
    /// Keep-alive connections to this instance, reused across requests:
    /// one pool per router worker, so a connection is only ever used by
    /// the thread whose runtime drives it.
    pools: [Arc<ConnectionPool>; POOL_SHARDS],
    /// Passive health from the outcomes of requests sent to it.
    outlier: Outlier,
}

impl Instance {
    /// A ready instance listening on `addr`.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            in_flight: AtomicUsize::new(0),
            pools: std::array::from_fn(|_| Arc::default()),
            outlier: Outlier::default(),
        })
    }

    /// The pool of the current router worker.
    fn pool(&self) -> &Arc<ConnectionPool> {
        &self.pools[serve::worker_index() % POOL_SHARDS]
    }

    /// Requests currently being served (headers sent, body not finished).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Metric: requests in flight at this router per revision, by state.
pub const IN_FLIGHT_METRIC: &str = "gtc_router_in_flight_requests";

/// One revision's requests in flight at a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlight {
    /// Sent to an instance, answer not finished.
    pub served: u64,
    /// Waiting for a ready instance.
    pub held: u64,
}

/// What the router serves: a committed route table and the ready
/// instances of its revisions.
#[derive(Debug, Clone)]
pub struct Published {
    pub table: RouteTable,
    pub instances: HashMap<RevisionId, Vec<Arc<Instance>>>,
}

/// A published snapshot with what the request path derives from it,
/// computed once per publish instead of once per request.
struct Snapshot {
    published: Published,
    /// `x-greentic-generation` of every answer under this snapshot.
    generation_header: HeaderValue,
    /// Per revision of the table: its ready instances, its
    /// `x-greentic-revision` value and its metrics handles.
    revisions: HashMap<RevisionId, Serving>,
    /// Per deployment, the pick counter of its current split: carried over
    /// while the split's generation is the same, new (from 0) when the
    /// split changes. Every request a split routes draws the next value of
    /// that split's own counter, so the answers of one split are a
    /// contiguous run of the pick sequence and hold its weights exactly,
    /// whatever other deployments' traffic or a change of split in flight
    /// interleave with them.
    picks: HashMap<DeploymentId, PickCounter>,
}

/// A split's pick counter (its split generation, the counter).
#[derive(Clone)]
struct PickCounter {
    split_generation: u64,
    counter: Arc<AtomicU64>,
}

/// What serving one revision needs, ready for the request path.
struct Serving {
    instances: Vec<Arc<Instance>>,
    header: HeaderValue,
    /// Created on the revision's first request (as the series appear in
    /// `/metrics` only once a revision served), then read without a lock.
    metrics: OnceLock<Arc<RevisionMetrics>>,
}

impl Snapshot {
    /// The snapshot of `published`, keeping the pick counters of `previous`
    /// whose split did not change.
    fn new(published: Published, previous: Option<&Snapshot>) -> Self {
        let picks = published
            .table
            .deployments()
            .iter()
            .map(|route| {
                let kept = previous
                    .and_then(|p| p.picks.get(&route.deployment_id))
                    .filter(|p| p.split_generation == route.split_generation)
                    .cloned();
                let counter = kept.unwrap_or_else(|| PickCounter {
                    split_generation: route.split_generation,
                    counter: Arc::new(AtomicU64::new(0)),
                });
                (route.deployment_id, counter)
            })
            .collect();
        let mut revisions = HashMap::new();
        for deployment in published.table.deployments() {
            for revision in &deployment.revisions {
                let Ok(header) = HeaderValue::from_str(&revision.to_string()) else {
                    continue;
                };
                let instances = published
                    .instances
                    .get(revision)
                    .cloned()
                    .unwrap_or_default();
                revisions.insert(
                    *revision,
                    Serving {
                        instances,
                        header,
                        metrics: OnceLock::new(),
                    },
                );
            }
        }
        Self {
            generation_header: HeaderValue::from(published.table.generation()),
            revisions,
            picks,
            published,
        }
    }

    /// The next pick point of `deployment`'s split.
    fn next_pick(&self, deployment: DeploymentId) -> u64 {
        self.picks
            .get(&deployment)
            .map_or(0, |pick| pick.counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// The router: a published snapshot (with each split's pick counter) and
/// an HTTP client.
pub struct Router {
    published: ArcSwap<Snapshot>,
    /// Feeds the instance choice, kept apart from the splits' pick
    /// counters so balancing never skews a split.
    instance_counter: AtomicU64,
    /// Signed `Set-Cookie` values per deployment: every client that gets
    /// the same revision in the same half-TTL gets the same cookie, so
    /// signing happens once, not per request.
    cookies: CookieCache,
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
    /// Requests held for revisions with no ready instance.
    held: hold::Held,
    /// Counts publications, so held requests wake when instances change.
    publications: tokio::sync::watch::Sender<u64>,
    /// Counts requests that began to be held: the activator's signal.
    demand: tokio::sync::watch::Sender<u64>,
}

impl Router {
    /// A router serving `published` until the next [`Router::publish`].
    pub fn new(published: Published, key: StickyKey, config: ProxyConfig) -> Arc<Self> {
        let router = Arc::new(Self {
            local: Mutex::new(published.clone()),
            remote: Mutex::new(HashMap::new()),
            published: ArcSwap::from_pointee(Snapshot::new(published.clone(), None)),
            instance_counter: AtomicU64::new(0),
            cookies: CookieCache::default(),
            metrics: RwLock::new(HashMap::new()),
            key,
            epoch: Instant::now(),
            budget: RetryBudget::new(config.retry_budget),
            resilience: ResilienceMetrics::new(),
            config,
            held: hold::Held::default(),
            publications: tokio::sync::watch::Sender::new(0),
            demand: tokio::sync::watch::Sender::new(0),
        });
        // The gauges describe what is served from the first request on,
        // not from the first change after start: a scrape right after
        // start sees the generation the router was built with.
        router.republish(published);
        router
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
        // A revision whose last instance went (crashed, drained, scaled to
        // zero) reads 0, not the count it had before.
        for deployment in published.table.deployments() {
            for revision in &deployment.revisions {
                if !published.instances.contains_key(revision) {
                    metrics::gauge!("gtc_instances_ready", "revision" => revision.to_string())
                        .set(0.0);
                }
            }
        }
        metrics::gauge!("gtc_router_generation").set(published.table.generation() as f64);
        let live: std::collections::HashSet<DeploymentId> = published
            .table
            .deployments()
            .iter()
            .map(|d| d.deployment_id)
            .collect();
        self.cookies.retain(|deployment| live.contains(deployment));
        let previous = self.published.load_full();
        self.published
            .store(Arc::new(Snapshot::new(published, Some(&previous))));
        self.publications
            .send_modify(|count| *count = count.wrapping_add(1));
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

    /// Changes every time a request begins to be held for a revision with
    /// no ready instance: the activator inside the router. The autoscaler
    /// waits on it so that a cold start begins at the first held request,
    /// not at its next tick.
    pub fn demand(&self) -> tokio::sync::watch::Receiver<u64> {
        self.demand.subscribe()
    }

    /// Ready instances per revision of the current table (this node's and
    /// those other members publish): what the autoscaler counts as ready.
    pub fn ready_instances(&self) -> HashMap<RevisionId, usize> {
        let snapshot = self.published.load();
        snapshot
            .revisions
            .iter()
            .map(|(revision, serving)| (*revision, serving.instances.len()))
            .collect()
    }

    /// Requests this router has in flight per revision of the current
    /// table, now: those being served by an instance (local or on another
    /// member) and those held for an instance. What autoscaling measures.
    pub fn in_flight(&self) -> HashMap<RevisionId, InFlight> {
        let snapshot = self.published.load();
        snapshot
            .revisions
            .iter()
            .map(|(revision, serving)| {
                let served = serving
                    .instances
                    .iter()
                    .map(|instance| instance.in_flight() as u64)
                    .sum();
                let held = u64::from(self.held.count(*revision));
                (*revision, InFlight { served, held })
            })
            .collect()
    }

    /// Sets `gtc_router_in_flight_requests{revision, state}` from
    /// [`Router::in_flight`]; called when `/metrics` is scraped, so the
    /// request path pays nothing for it.
    pub fn export_in_flight(&self) {
        for (revision, in_flight) in self.in_flight() {
            let revision = revision.to_string();
            metrics::gauge!(IN_FLIGHT_METRIC, "revision" => revision.clone(), "state" => "served")
                .set(in_flight.served as f64);
            metrics::gauge!(IN_FLIGHT_METRIC, "revision" => revision, "state" => "held")
                .set(in_flight.held as f64);
        }
    }

    /// The revisions the current table can route to.
    pub fn serving_revisions(&self) -> Vec<RevisionId> {
        self.published.load().revisions.keys().copied().collect()
    }

    /// What this router counted per revision since it started (requests,
    /// 5xx answers, its own error answers, latency buckets): a rollout's
    /// analysis takes the difference of two readings as its window.
    pub fn revision_counts(&self) -> HashMap<RevisionId, deploy::rollout::WindowCounts> {
        self.metrics.read().map_or_else(
            |_| HashMap::new(),
            |cache| {
                cache
                    .iter()
                    .map(|(revision, metrics)| (*revision, metrics.counts()))
                    .collect()
            },
        )
    }

    /// The generation of the table currently served.
    pub fn generation(&self) -> u64 {
        self.published.load().published.table.generation()
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
    response.extensions_mut().insert(AnsweredByRouter);
    response
}

/// Marks a response the router made itself (no instance answered), so the
/// revision's counts tell its instances' errors from the router's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnsweredByRouter;
