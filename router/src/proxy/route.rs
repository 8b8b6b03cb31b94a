//! Which revision a request goes to: a tag (header or `<tag>---<host>`),
//! the admin override, a sticky cookie, or the weighted pick.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use deploy::ids::{DeploymentId, RevisionId};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::headers::{declared_length, insert};
use super::telemetry::RevisionMetrics;
use super::{
    ADMIN_TOKEN_HEADER, GENERATION_HEADER, ProxyBody, REVISION_HEADER, Router, Snapshot,
    TAG_HEADER, error_response,
};
use crate::pick::pick_point;
use crate::span_export::RouteSpan;
use crate::sticky;
use crate::table::DeploymentRoute;
use crate::traceparent::Hop;

impl Router {
    /// Routes one request.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let snapshot = self.published.load_full();
        let published = &snapshot.published;
        let generation = published.table.generation();
        let host = request_host(&request);
        let path = request.uri().path();
        // `<tag>---<host>` reaches a tagged revision directly.
        let Some((route, host_tag)) = published.table.resolve_any(host, path) else {
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
            None => self.choose(&snapshot, route, &request),
        };
        let held = match self.hold_if_cold(&snapshot, choice.revision).await {
            Ok(held) => held,
            Err((refusal, hold)) => {
                return self.refuse_hold(
                    refusal,
                    hold,
                    choice.revision,
                    route.deployment_id,
                    generation,
                );
            }
        };
        // A held request is served from the snapshot that brought its
        // instance; the common path keeps the one it loaded (no clone).
        let snapshot = held.as_ref().map_or(&snapshot, |(ready, _)| ready);
        let held_since = held.as_ref().map(|(_, since)| *since);
        let generation = snapshot.published.table.generation();
        let serving = snapshot.revisions.get(&choice.revision);
        let Some(instances) = serving
            .map(|serving| serving.instances.as_slice())
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
        let hop = crate::traceparent::propagate(request.headers_mut());
        tracing::debug!(trace_id = %hop.span.trace_id_hex(), deployment = %route.deployment_id, revision = %choice.revision, generation, "request routed");
        // Only with export on, and for sampled traces (as a parent-based
        // sampler does): copy what the span needs before the request moves.
        let exporting = self
            .config
            .span_export
            .as_ref()
            .filter(|_| hop.span.flags & 1 == 1)
            .map(|queue| (queue, SpanStart::new(&request)));
        let started = std::time::Instant::now();
        let mut answered_by = None;
        let mut response = self
            .forward(request, peer, instances, generation, &mut answered_by)
            .await;
        let elapsed = started.elapsed();
        if let Some(held_since) = held_since {
            metrics::histogram!(super::hold::COLD_START_METRIC)
                .record(held_since.elapsed().as_secs_f64());
        }
        if let Some((queue, start)) = exporting {
            queue.offer(start.finish(
                hop,
                route.deployment_id,
                choice.revision,
                answered_by,
                response.status(),
            ));
        }
        let headers = response.headers_mut();
        headers.insert(GENERATION, snapshot.generation_header.clone());
        let by_router = response
            .extensions()
            .get::<super::AnsweredByRouter>()
            .is_some();
        match serving {
            Some(serving) => {
                serving
                    .metrics
                    .get_or_init(|| self.metrics_for(route, choice.revision))
                    .record(response.status(), elapsed, by_router);
                response
                    .headers_mut()
                    .insert(REVISION, serving.header.clone());
            }
            None => {
                self.metrics_for(route, choice.revision).record(
                    response.status(),
                    elapsed,
                    by_router,
                );
                insert(
                    response.headers_mut(),
                    REVISION_HEADER,
                    &choice.revision.to_string(),
                );
            }
        }
        let headers = response.headers_mut();
        if let Some(cookie) = choice.set_cookie {
            headers.append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// `None` when `snapshot` has a ready instance of `revision` or holding
    /// is off; else the first later snapshot that has one, with when the
    /// request started to wait. A revision that scales is held within its
    /// own bounds (`queue_size`, `queue_wait_seconds`), and every request
    /// held tells the autoscaler at once ([`Router::demand`]) rather than
    /// at its next tick. The common path reads no clock and clones nothing.
    async fn hold_if_cold(
        &self,
        snapshot: &super::Snapshot,
        revision: RevisionId,
    ) -> Result<
        Option<(Arc<super::Snapshot>, std::time::Instant)>,
        (super::hold::Refusal, super::hold::HoldConfig),
    > {
        if super::hold::has_instance(snapshot, revision) {
            return Ok(None);
        }
        let hold = snapshot
            .published
            .table
            .hold_bounds(revision)
            .map_or(self.config.hold, |(max_held, max_wait)| {
                super::hold::HoldConfig { max_held, max_wait }
            });
        if !hold.enabled() {
            return Ok(None);
        }
        let held_since = std::time::Instant::now();
        let Some(_slot) = self.held.take(revision, hold.max_held) else {
            return Err((super::hold::Refusal::QueueFull, hold));
        };
        self.demand.send_modify(|held| *held = held.wrapping_add(1));
        let publications = self.publications.subscribe();
        let ready = super::hold::wait_for_instance(revision, hold.max_wait, publications, || {
            self.published.load_full()
        })
        .await
        .map_err(|refusal| (refusal, hold))?;
        Ok(Some((ready, held_since)))
    }

    /// The 503 of a request that could not be held until an instance came,
    /// with `Retry-After`.
    fn refuse_hold(
        &self,
        refusal: super::hold::Refusal,
        hold: super::hold::HoldConfig,
        revision: RevisionId,
        deployment: DeploymentId,
        generation: u64,
    ) -> Response<ProxyBody> {
        metrics::counter!(super::hold::HOLD_REFUSED_METRIC, "reason" => refusal.kind())
            .increment(1);
        let message = match refusal {
            super::hold::Refusal::QueueFull => format!(
                "revision {revision} of deployment {deployment} has no ready instance and {} requests are already waiting for one; retry later",
                hold.max_held
            ),
            super::hold::Refusal::WaitTimeout => format!(
                "revision {revision} of deployment {deployment} had no ready instance within {} ms; retry later",
                hold.max_wait.as_millis()
            ),
        };
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal.kind(),
            message,
            generation,
        );
        insert(
            response.headers_mut(),
            "retry-after",
            &hold.retry_after_seconds().to_string(),
        );
        response
    }

    fn choose(
        &self,
        snapshot: &Snapshot,
        route: &DeploymentRoute,
        request: &Request<Incoming>,
    ) -> Choice {
        let published = &snapshot.published;
        if let Some(revision) = self.admin_override(route, request.headers()) {
            return Choice {
                revision,
                set_cookie: None,
            };
        }
        let env = published.table.env_id();
        let now = unix_now();
        if request.headers().contains_key(header::COOKIE)
            && let Some(value) =
                cookie_value(request.headers(), &sticky::cookie_name(route.deployment_id))
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
            .pick(pick_point(snapshot.next_pick(route.deployment_id)));
        Choice {
            revision,
            set_cookie: self.cookie_for(env, route, revision, now),
        }
    }

    /// A signed cookie pinning `revision`, reused while more than half its
    /// lifetime remains.
    fn cookie_for(
        &self,
        env: &deploy::ids::EnvId,
        route: &DeploymentRoute,
        revision: RevisionId,
        now: i64,
    ) -> Option<HeaderValue> {
        let ttl = self.config.sticky_ttl.as_secs() as i64;
        let (deployment, generation) = (route.deployment_id, route.split_generation);
        if let Some(value) = self
            .cookies
            .get(deployment, revision, generation, now + ttl / 2)
        {
            return Some(value);
        }
        let expires_at = now + ttl;
        let signed = sticky::issue(&self.key, env, deployment, revision, generation, expires_at);
        let name = sticky::cookie_name(deployment);
        let value = HeaderValue::from_str(&format!(
            "{name}={signed}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Lax"
        ))
        .ok()?;
        self.cookies
            .insert(deployment, revision, generation, expires_at, value.clone());
        Some(value)
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
}

struct Choice {
    revision: RevisionId,
    set_cookie: Option<HeaderValue>,
}
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
fn request_host<B>(request: &Request<B>) -> &str {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

/// `x-greentic-generation`, parsed once.
const GENERATION: HeaderName = HeaderName::from_static(GENERATION_HEADER);
/// `x-greentic-revision`, parsed once.
const REVISION: HeaderName = HeaderName::from_static(REVISION_HEADER);
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

/// What a route span needs from the request, copied before the request is
/// forwarded (only when spans are exported).
struct SpanStart {
    start: SystemTime,
    method: http::Method,
    host: String,
    path: String,
}

impl SpanStart {
    fn new(request: &Request<Incoming>) -> Self {
        Self {
            start: SystemTime::now(),
            method: request.method().clone(),
            host: request_host(request).to_owned(),
            path: request.uri().path().to_owned(),
        }
    }

    fn finish(
        self,
        hop: Hop,
        deployment: DeploymentId,
        revision: RevisionId,
        instance: Option<SocketAddr>,
        status: StatusCode,
    ) -> RouteSpan {
        RouteSpan {
            trace_id: hop.span.trace_id,
            span_id: hop.span.span_id,
            parent_span_id: hop.parent_span_id,
            start: self.start,
            end: SystemTime::now(),
            deployment,
            revision,
            instance,
            method: self.method,
            status: status.as_u16(),
            host: self.host,
            path: self.path,
        }
    }
}
