//! Metrics handles, created once so the request path only increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deploy::ids::{DeploymentId, RevisionId};
use deploy::rollout::WindowCounts;
use deploy::rollout::analysis::{LATENCY_BUCKETS, bucket_of};
use http::StatusCode;

use super::forward::FailureReason;

/// Counters of retries, hedges and ejections, created once per router so
/// the request path only increments handles.
pub(super) struct ResilienceMetrics {
    retry_connect: metrics::Counter,
    retry_reset: metrics::Counter,
    pub(super) hedges: metrics::Counter,
    pub(super) budget_exhausted: metrics::Counter,
    pub(super) ejections: metrics::Counter,
    pub(super) ejection_overridden: metrics::Counter,
    failure_connect: metrics::Counter,
    failure_connect_timeout: metrics::Counter,
    failure_reset: metrics::Counter,
    failure_outrun: metrics::Counter,
    failure_timeout: metrics::Counter,
}

impl ResilienceMetrics {
    pub(super) fn new() -> Self {
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

    pub(super) fn failure(&self, reason: FailureReason) -> &metrics::Counter {
        match reason {
            FailureReason::Connect => &self.failure_connect,
            FailureReason::ConnectTimeout => &self.failure_connect_timeout,
            FailureReason::Reset => &self.failure_reset,
            FailureReason::Outrun => &self.failure_outrun,
            FailureReason::Timeout => &self.failure_timeout,
        }
    }

    pub(super) fn retry(&self, reason: FailureReason) -> &metrics::Counter {
        match reason {
            FailureReason::Connect | FailureReason::ConnectTimeout => &self.retry_connect,
            _ => &self.retry_reset,
        }
    }
}

/// Request count and latency (to response headers) of one revision, by
/// status class, for Prometheus; and the same, readable here, as the
/// cumulative counts a rollout's analysis takes windows of.
pub(super) struct RevisionMetrics {
    /// Indexed by status class: 1xx..5xx.
    requests: [metrics::Counter; 5],
    /// All of them, readable here (the console's observed share).
    pub(super) served: AtomicU64,
    latency: metrics::Histogram,
    /// 5xx answers from the revision's instances.
    server_errors: AtomicU64,
    /// Error answers the router gave for the revision (no instance
    /// answered: connect failures, resets, timeouts).
    upstream_errors: AtomicU64,
    /// Requests per `deploy::rollout::analysis::LATENCY_BUCKETS_MS` bucket.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl RevisionMetrics {
    pub(super) fn new(deployment: DeploymentId, revision: RevisionId) -> Self {
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
            server_errors: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// One answer: `by_router` when the router answered itself because no
    /// instance did.
    pub(super) fn record(&self, status: StatusCode, elapsed: Duration, by_router: bool) {
        let class = usize::from((status.as_u16() / 100).clamp(1, 5)) - 1;
        self.requests[class].increment(1);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed.as_secs_f64());
        if by_router {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
        } else if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.latency_buckets[bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    /// Everything counted since the router started.
    pub(super) fn counts(&self) -> WindowCounts {
        WindowCounts {
            requests: self.served.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
            latency_buckets: self
                .latency_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}
