//! Connection limits of a listener, shared by the router and the admin API,
//! so that hostile clients cannot lock anyone out.
//!
//! ```text
//! accept ─► Connections::admit(peer)
//!             per-address limit reached?  close that address's oldest idle
//!                                          connection, else refuse the new one
//!             total limit reached?        close the oldest idle connection,
//!                                          else refuse the new one
//!           Admitted::supervise(connection)   one watchdog per connection:
//!             head phase  (from accept, or from the first byte after a
//!                          response): closed after `header_timeout`
//!             busy        (a request is being served): no deadline here
//!             idle        (keep-alive, nothing sent): closed after `idle_timeout`
//!           Admitted::request_started(priority)
//!             ordinary requests leave `reserved` slots for priority ones
//!             (the admin API's /healthz and /readyz)
//! ```
//!
//! "Idle" for eviction means no request in service: a connection waiting
//! for (or part-way through) a request head costs the server nothing but a
//! socket, so the one that has waited longest is closed first when a new
//! client needs the slot. A connection with a request in service is never
//! evicted. Every limit that trips is counted in
//! `gtc_connection_limit_trips_total{listener, limit}`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Default time a client gets to send a whole request head, counted from
/// the accept (or from the first byte of a later request on a keep-alive
/// connection).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a keep-alive connection may sit with no request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to send a request head; past it the connection is closed.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once on the listener.
    pub max_connections: usize,
    /// Connections open at once from one client IP address.
    pub max_connections_per_ip: usize,
    /// Requests in service at once are held below `max_connections` by
    /// this many, which only priority requests may use (0: none reserved).
    pub reserved_for_priority: usize,
}

/// Which limit tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trip {
    /// A request head did not arrive within the header timeout.
    HeaderTimeout,
    /// A keep-alive connection had no request within the idle timeout.
    IdleTimeout,
    /// An idle connection was closed to admit a new one (total limit).
    EvictedTotal,
    /// An idle connection was closed to admit a new one from the same
    /// address (per-address limit).
    EvictedPerIp,
    /// A new connection was refused: every open one has a request in service.
    RefusedTotal,
    /// A new connection was refused: every open one from its address has a
    /// request in service.
    RefusedPerIp,
    /// A request was answered 503 to keep the reserved share free.
    Reserved,
    /// A request body the server reads did not arrive within its deadline.
    BodyTimeout,
    /// The listener could not accept (out of file descriptors, say).
    AcceptError,
}

impl Trip {
    /// The `limit` label of the metric.
    pub fn label(self) -> &'static str {
        match self {
            Trip::HeaderTimeout => "header_timeout",
            Trip::IdleTimeout => "idle_timeout",
            Trip::EvictedTotal => "max_connections_evicted",
            Trip::EvictedPerIp => "max_connections_per_ip_evicted",
            Trip::RefusedTotal => "max_connections_refused",
            Trip::RefusedPerIp => "max_connections_per_ip_refused",
            Trip::Reserved => "reserved_for_health",
            Trip::BodyTimeout => "body_timeout",
            Trip::AcceptError => "accept_error",
        }
    }
}

/// The metric every tripped limit is counted in.
pub const TRIPS_METRIC: &str = "gtc_connection_limit_trips_total";
/// The gauge of open connections per listener.
pub const OPEN_METRIC: &str = "gtc_connections_open";

/// Counts a tripped limit of `listener`.
pub fn count_trip(listener: &'static str, trip: Trip) {
    metrics::counter!(TRIPS_METRIC, "listener" => listener, "limit" => trip.label()).increment(1);
}

/// The open connections of one listener.
pub struct Connections {
    listener: &'static str,
    limits: ConnectionLimits,
    registry: Mutex<Registry>,
    /// Requests in service on all connections (HTTP/2 streams count one
    /// each): an atomic, so starting and ending a request takes no lock
    /// shared by every connection.
    busy_requests: AtomicUsize,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<Slot>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// One open connection.
struct Slot {
    id: u64,
    ip: IpAddr,
    state: Mutex<SlotState>,
    /// Wakes the watchdog when the slot is closed or a deadline earlier
    /// than its timer starts.
    wake: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
}

struct SlotState {
    /// Requests in service on this connection.
    busy: usize,
    /// When the current request head started (accept, or the first byte
    /// after the last response); `None` while busy or idle.
    head_since: Option<Instant>,
    /// When the connection last became idle.
    idle_since: Instant,
    /// Set when the connection is to be closed, with the reason.
    closed: Option<Trip>,
    /// When the watchdog's timer fires, if it is set. A deadline that
    /// starts later needs no wake-up (the timer fires early and the
    /// watchdog sleeps again), so a keep-alive request costs the watchdog
    /// nothing.
    armed: Option<Instant>,
}

impl SlotState {
    /// When this connection started waiting (for eviction order), if it
    /// has no request in service.
    fn waiting_since(&self) -> Option<Instant> {
        (self.busy == 0 && self.closed.is_none())
            .then(|| self.head_since.unwrap_or(self.idle_since))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (plain counters).
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connections {
    /// The connections of the listener named `listener` (a metric label).
    pub fn new(listener: &'static str, limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            listener,
            limits,
            registry: Mutex::new(Registry::default()),
            busy_requests: AtomicUsize::new(0),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.registry).open.len()
    }

    /// Counts `trip` for this listener.
    pub fn count(&self, trip: Trip) {
        count_trip(self.listener, trip);
    }

    /// Admits a connection from `peer`, closing the oldest idle one when a
    /// limit is reached; refuses it (the caller drops the socket) when
    /// every connection that counts against the limit has a request in
    /// service.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Admitted, Trip> {
        let ip = peer.ip();
        let now = Instant::now();
        let mut registry = lock(&self.registry);
        let from_ip = registry.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.limits.max_connections_per_ip.max(1) {
            match oldest_idle(&registry, Some(ip)) {
                Some(id) => self.evict(&mut registry, id, Trip::EvictedPerIp),
                None => {
                    drop(registry);
                    self.count(Trip::RefusedPerIp);
                    return Err(Trip::RefusedPerIp);
                }
            }
        }
        if registry.open.len() >= self.limits.max_connections.max(1) {
            match oldest_idle(&registry, None) {
                Some(id) => self.evict(&mut registry, id, Trip::EvictedTotal),
                None => {
                    drop(registry);
                    self.count(Trip::RefusedTotal);
                    return Err(Trip::RefusedTotal);
                }
            }
        }
        registry.next_id += 1;
        let slot = Arc::new(Slot {
            id: registry.next_id,
            ip,
            state: Mutex::new(SlotState {
                busy: 0,
                head_since: Some(now),
                idle_since: now,
                closed: None,
                armed: None,
            }),
            wake: Notify::new(),
            header_timeout: self.limits.header_timeout,
            idle_timeout: self.limits.idle_timeout,
        });
        registry.open.insert(slot.id, Arc::clone(&slot));
        *registry.per_ip.entry(ip).or_insert(0) += 1;
        metrics::gauge!(OPEN_METRIC, "listener" => self.listener).set(registry.open.len() as f64);
        Ok(Admitted {
            connections: Arc::clone(self),
            slot,
        })
    }

    /// Marks `id` closed (its watchdog drops the connection) and frees its
    /// place at once.
    fn evict(&self, registry: &mut Registry, id: u64, trip: Trip) {
        if let Some(slot) = self.remove(registry, id) {
            lock(&slot.state).closed = Some(trip);
            slot.wake.notify_one();
            self.count(trip);
        }
    }

    fn remove(&self, registry: &mut Registry, id: u64) -> Option<Arc<Slot>> {
        let slot = registry.open.remove(&id)?;
        if let Some(count) = registry.per_ip.get_mut(&slot.ip) {
            *count -= 1;
            if *count == 0 {
                registry.per_ip.remove(&slot.ip);
            }
        }
        metrics::gauge!(OPEN_METRIC, "listener" => self.listener).set(registry.open.len() as f64);
        Some(slot)
    }
}

/// The connection (of `ip`, when given) that has waited longest with no
/// request in service.
fn oldest_idle(registry: &Registry, ip: Option<IpAddr>) -> Option<u64> {
    registry
        .open
        .values()
        .filter(|slot| ip.is_none_or(|ip| slot.ip == ip))
        .filter_map(|slot| {
            lock(&slot.state)
                .waiting_since()
                .map(|since| (since, slot.id))
        })
        .min()
        .map(|(_, id)| id)
}

/// An admitted connection; dropping it frees its place.
pub struct Admitted {
    connections: Arc<Connections>,
    slot: Arc<Slot>,
}

/// How a supervised connection ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// The connection finished by itself.
    Finished(T),
    /// A limit closed it.
    Closed(Trip),
}

impl Admitted {
    /// Wraps the accepted socket so that the first byte of a request head
    /// starts the header deadline.
    pub fn watch<S>(&self, stream: S) -> Watched<S> {
        Watched {
            inner: stream,
            slot: Arc::clone(&self.slot),
        }
    }

    /// A request starts on this connection. `priority` requests (health
    /// and readiness) may use the reserved share; others get
    /// `Err(Trip::Reserved)` when only the reserve is left, and any request
    /// on a connection already being closed gets `Err` with the reason.
    pub fn request_started(&self, priority: bool) -> Result<RequestGuard, Trip> {
        let limits = self.connections.limits;
        let busy = &self.connections.busy_requests;
        let before = busy.fetch_add(1, Ordering::Relaxed);
        if !priority
            && limits.reserved_for_priority > 0
            && before + limits.reserved_for_priority >= limits.max_connections
        {
            busy.fetch_sub(1, Ordering::Relaxed);
            self.connections.count(Trip::Reserved);
            return Err(Trip::Reserved);
        }
        {
            let mut state = lock(&self.slot.state);
            if let Some(trip) = state.closed {
                drop(state);
                busy.fetch_sub(1, Ordering::Relaxed);
                return Err(trip);
            }
            state.busy += 1;
            state.head_since = None;
        }
        Ok(RequestGuard {
            connections: Arc::clone(&self.connections),
            slot: Arc::clone(&self.slot),
        })
    }

    /// Drives `connection` until it ends or a deadline of this connection
    /// passes (then it is dropped, which closes the socket).
    pub async fn supervise<F: Future>(&self, connection: F) -> Ended<F::Output> {
        let limits = self.connections.limits;
        tokio::pin!(connection);
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        // When `timer` fires, while it is set.
        let mut armed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let reset = {
                let mut state = lock(&self.slot.state);
                if let Some(trip) = state.closed {
                    return Ended::Closed(trip);
                }
                let deadline = match state.head_since {
                    Some(since) => Some((since + limits.header_timeout, Trip::HeaderTimeout)),
                    None if state.busy == 0 => {
                        Some((state.idle_since + limits.idle_timeout, Trip::IdleTimeout))
                    }
                    None => None,
                };
                if let Some((at, trip)) = deadline
                    && at <= now
                {
                    drop(state);
                    self.close(trip);
                    return Ended::Closed(trip);
                }
                if armed.is_some_and(|at| at <= now) {
                    armed = None;
                }
                // Only an earlier deadline moves the timer; a later one is
                // found when the timer fires early.
                let reset = match deadline {
                    Some((at, _)) if armed.is_none_or(|armed| at < armed) => {
                        armed = Some(at);
                        Some(at)
                    }
                    _ => None,
                };
                state.armed = armed;
                reset
            };
            if let Some(at) = reset {
                timer.as_mut().reset(at.into());
            }
            tokio::select! {
                output = &mut connection => return Ended::Finished(output),
                _ = self.slot.wake.notified() => {}
                _ = &mut timer, if armed.is_some() => {}
            }
        }
    }

    fn close(&self, trip: Trip) {
        lock(&self.slot.state).closed = Some(trip);
        let mut registry = lock(&self.connections.registry);
        self.connections.remove(&mut registry, self.slot.id);
        drop(registry);
        self.connections.count(trip);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut registry = lock(&self.connections.registry);
        self.connections.remove(&mut registry, self.slot.id);
    }
}

/// Held while a request is in service; dropping it makes the connection
/// idle again when it was its last request.
pub struct RequestGuard {
    connections: Arc<Connections>,
    slot: Arc<Slot>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.connections
            .busy_requests
            .fetch_sub(1, Ordering::Relaxed);
        let mut state = lock(&self.slot.state);
        state.busy = state.busy.saturating_sub(1);
        if state.busy == 0 {
            let now = Instant::now();
            state.idle_since = now;
            let earlier = state
                .armed
                .is_none_or(|at| now + self.slot.idle_timeout < at);
            drop(state);
            if earlier {
                self.slot.wake.notify_one();
            }
        }
    }
}

/// A response body that keeps its request counted as in service until
/// the body has been sent (or dropped).
pub struct GuardedBody<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, guard: RequestGuard) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for GuardedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An accepted socket whose reads start the header deadline of a request.
pub struct Watched<S> {
    inner: S,
    slot: Arc<Slot>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut state = lock(&self.slot.state);
            if state.busy == 0 && state.head_since.is_none() {
                let now = Instant::now();
                state.head_since = Some(now);
                let earlier = state
                    .armed
                    .is_none_or(|at| now + self.slot.header_timeout < at);
                drop(state);
                if earlier {
                    self.slot.wake.notify_one();
                }
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
            max_connections: max,
            max_connections_per_ip: per_ip,
            reserved_for_priority: 1,
        }
    }

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let connections = Connections::new("test", limits(3, 10));
        let first = connections.admit(peer(1, 1)).expect("first");
        let busy = first.request_started(false).expect("busy");
        let second = connections.admit(peer(1, 2)).expect("second");
        let _third = connections.admit(peer(1, 3)).expect("third");
        // At the limit: the oldest one with no request in service goes.
        let _fourth = connections.admit(peer(1, 4)).expect("fourth");
        assert_eq!(lock(&second.slot.state).closed, Some(Trip::EvictedTotal));
        assert_eq!(lock(&first.slot.state).closed, None);
        assert_eq!(connections.open(), 3);
        drop(busy);
        drop(second);
        assert_eq!(connections.open(), 3, "an evicted slot is freed once");
    }

    #[test]
    fn a_full_listener_of_busy_connections_refuses_new_ones() {
        let connections = Connections::new("test", limits(2, 10));
        let a = connections.admit(peer(1, 1)).expect("a");
        let _a_busy = a.request_started(true).expect("a busy");
        let b = connections.admit(peer(1, 2)).expect("b");
        let _b_busy = b.request_started(true).expect("b busy");
        assert_eq!(
            connections.admit(peer(1, 3)).err(),
            Some(Trip::RefusedTotal)
        );
    }

    #[test]
    fn the_per_address_limit_evicts_only_that_address() {
        let connections = Connections::new("test", limits(10, 2));
        let other = connections.admit(peer(2, 1)).expect("other address");
        let a = connections.admit(peer(1, 1)).expect("a");
        let _b = connections.admit(peer(1, 2)).expect("b");
        let _c = connections.admit(peer(1, 3)).expect("c");
        assert_eq!(lock(&a.slot.state).closed, Some(Trip::EvictedPerIp));
        assert_eq!(lock(&other.slot.state).closed, None);
    }

    #[test]
    fn ordinary_requests_leave_the_reserve_to_priority_ones() {
        let connections = Connections::new("test", limits(2, 10));
        let a = connections.admit(peer(1, 1)).expect("a");
        let _busy = a.request_started(false).expect("first ordinary request");
        let b = connections.admit(peer(1, 2)).expect("b");
        assert_eq!(b.request_started(false).err(), Some(Trip::Reserved));
        assert!(b.request_started(true).is_ok(), "health is answered");
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_the_header_deadline() {
        let connections = Connections::new("test", limits(10, 10));
        let admitted = connections.admit(peer(1, 1)).expect("admit");
        let started = Instant::now();
        let ended = admitted.supervise(std::future::pending::<()>()).await;
        assert!(matches!(ended, Ended::Closed(Trip::HeaderTimeout)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(400),
            "{took:?}"
        );
        assert_eq!(connections.open(), 0);
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_at_the_idle_deadline() {
        let connections = Connections::new("test", limits(10, 10));
        let admitted = connections.admit(peer(1, 1)).expect("admit");
        // One request served: the connection is idle from its end.
        drop(admitted.request_started(false).expect("request"));
        let started = Instant::now();
        let ended = admitted.supervise(std::future::pending::<()>()).await;
        assert!(matches!(ended, Ended::Closed(Trip::IdleTimeout)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_request_in_service_has_no_connection_deadline() {
        let connections = Connections::new("test", limits(10, 10));
        let admitted = connections.admit(peer(1, 1)).expect("admit");
        let guard = admitted.request_started(false).expect("request");
        let ended = admitted
            .supervise(tokio::time::sleep(Duration::from_millis(700)))
            .await;
        assert!(matches!(ended, Ended::Finished(())));
        drop(guard);
    }
}
