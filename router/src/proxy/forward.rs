//! Sending a routed request to an instance of its revision: per-try
//! timeouts, retries on another instance, hedging and outlier ejection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};

use super::headers::{declared_length, prepare_headers, strip_hop_by_hop};
use super::{BoxError, Instance, ProxyBody, Router, error_response};
use crate::resilience::FailureOutcome;
use crate::upstream::{PooledBody, SendFailure, UpstreamError};

impl Router {
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
    /// changed by a retry. `answered_by` is set to the instance whose
    /// response is returned, or to the last one that failed.
    pub(super) async fn forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        instances: &[Arc<Instance>],
        generation: u64,
        answered_by: &mut Option<SocketAddr>,
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
        // The instance of the try running in each slot; the tries
        // themselves stay pinned in this future (no allocation per try).
        let mut slots: [Option<usize>; 2] = [None, None];
        let first_try = std::pin::pin!(None);
        let second_try = std::pin::pin!(None);
        let mut futures = [first_try, second_try];
        let mut hedge_slot = None;
        let mut never_sent = true;
        // One timer for both the response deadline and the hedge: it is
        // set to whichever comes first (one timer entry per request).
        let deadline = tokio::time::Instant::now() + self.config.response_timeout;
        let mut hedge_at: Option<tokio::time::Instant> = None;
        let timer = tokio::time::sleep_until(deadline);
        tokio::pin!(timer);

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
        slots[0] = Some(index);
        futures[0].set(Some(self.start_try(instances, index, request)));
        if hedgeable && let Some(after) = self.config.first_byte_timeout {
            let at = tokio::time::Instant::now() + after;
            hedge_at = Some(at);
            timer.as_mut().reset(at.min(deadline));
        }

        loop {
            let event = {
                let [first, second] = &mut futures;
                tokio::select! {
                    done = poll_try(first.as_mut()) => Event::Done(0, done),
                    done = poll_try(second.as_mut()) => Event::Done(1, done),
                    () = &mut timer => match hedge_at {
                        Some(at) if at < deadline => Event::Hedge,
                        _ => Event::Deadline,
                    },
                }
            };
            match event {
                Event::Done(slot, (index, guard, Ok(response))) => {
                    slots[slot] = None;
                    futures[slot].set(None);
                    let instance = &instances[index];
                    *answered_by = Some(instance.addr);
                    instance.outlier.record_success();
                    // The hedge answered first: the try it raced was slow
                    // past the first-byte timeout while another instance
                    // was not.
                    if hedge_slot == Some(slot)
                        && let Some(outrun) = slots[1 - slot].take()
                    {
                        futures[1 - slot].set(None);
                        self.record_failure(&instances[outrun], FailureReason::Outrun);
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
                    futures[slot].set(None);
                    drop(guard);
                    let instance = &instances[index];
                    *answered_by = Some(instance.addr);
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
                            slots[slot] = Some(next);
                            futures[slot].set(Some(self.start_try(instances, next, request)));
                            if hedge_slot == Some(slot) {
                                hedge_slot = None;
                            }
                            if slots[1 - slot].is_none()
                                && hedgeable
                                && let Some(after) = self.config.first_byte_timeout
                            {
                                let at = tokio::time::Instant::now() + after;
                                hedge_at = Some(at);
                                timer.as_mut().reset(at.min(deadline));
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
                    hedge_at = None;
                    timer.as_mut().reset(deadline);
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
                    slots[free] = Some(next);
                    futures[free].set(Some(self.start_try(instances, next, request)));
                    hedge_slot = Some(free);
                }
                Event::Deadline => {
                    for running in slots.iter_mut().filter_map(Option::take) {
                        self.record_failure(&instances[running], FailureReason::Timeout);
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

    /// One try of `request` on `instances[index]`.
    fn start_try(
        &self,
        instances: &[Arc<Instance>],
        index: usize,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = TryOutput> + Send + 'static {
        let instance = Arc::clone(&instances[index]);
        let connect_timeout = self.config.connect_timeout;
        async move {
            let guard = InFlight::enter(&instance);
            let result = instance
                .pool()
                .send(instance.addr, connect_timeout, request)
                .await;
            (index, guard, result)
        }
    }
}

/// Most tries of one request, whatever the configuration says.
const MAX_TRIES: usize = 4;

/// What one try ends with: the instance's index, its in-flight guard and
/// the response or the failure.
type TryOutput = (usize, InFlight, Result<Response<PooledBody>, SendFailure>);

/// The try in `slot`, or never when the slot is empty.
async fn poll_try<F: Future<Output = TryOutput>>(slot: Pin<&mut Option<F>>) -> TryOutput {
    match slot.as_pin_mut() {
        Some(running) => running.await,
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
pub(super) enum FailureReason {
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
