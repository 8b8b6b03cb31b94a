//! HELP text and units of the router's Prometheus metrics, registered with
//! the `metrics` facade so the exporter prints `# HELP` for each (Prometheus's
//! own linter, `promtool check metrics`, refuses a metric without it).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Describes every metric the router emits. Call once, after the recorder
/// is installed; calling again is harmless.
pub fn describe_metrics() {
    describe_counter!(
        "gtc_http_requests_total",
        Unit::Count,
        "Requests the router answered after forwarding them to an instance, by deployment, revision and status class (1xx..5xx)."
    );
    describe_histogram!(
        "gtc_http_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving a request to the instance's response headers, by deployment and revision."
    );
    describe_gauge!(
        "gtc_split_desired_ratio",
        Unit::Count,
        "Desired share of a deployment's traffic for a revision in the committed split the router serves (0..1)."
    );
    describe_gauge!(
        "gtc_instances_ready",
        Unit::Count,
        "Ready instances (local and on other members) the router balances a revision's requests over."
    );
    describe_gauge!(
        "gtc_router_generation",
        Unit::Count,
        "Committed environment generation of the route table this router serves."
    );
    describe_gauge!(
        crate::proxy::IN_FLIGHT_METRIC,
        Unit::Count,
        "Requests in flight at this router per revision when scraped, by state: served (sent to an instance, answer not finished) or held (waiting for a ready instance). The concurrency autoscaling measures."
    );
    describe_counter!(
        crate::proxy::hold::HOLD_REFUSED_METRIC,
        Unit::Count,
        "Requests answered 503 with Retry-After instead of being held for a revision with no ready instance, by reason: hold-queue-full (the revision's held requests were at the bound), hold-timeout (no instance was published within the wait bound)."
    );
    describe_histogram!(
        crate::proxy::hold::COLD_START_METRIC,
        Unit::Seconds,
        "Time from a request being held (its revision had no ready instance) to its answer's headers; the first held request of a cold start measures the whole cold start."
    );
    describe_gauge!(
        crate::proxy::hold::HELD_METRIC,
        Unit::Count,
        "Requests held now, over all revisions, waiting for a ready instance."
    );
    describe_counter!(
        "gtc_router_retries_total",
        Unit::Count,
        "Extra tries of a request on another instance of the same revision, by reason: not_sent (no connection could be opened; the request never left the router), reset (the connection failed before a response head; idempotent requests with a held body only), first_byte_timeout (a hedge after the per-try first-byte timeout)."
    );
    describe_counter!(
        "gtc_router_retry_budget_exhausted_total",
        Unit::Count,
        "Retries or hedges not made because the router's retry budget (a share of requests plus a floor per second) was spent."
    );
    describe_counter!(
        "gtc_router_upstream_failures_total",
        Unit::Count,
        "Failed tries on an instance, by reason (connect, connect_timeout, reset, outrun_by_hedge, response_timeout); consecutive failures eject the instance."
    );
    describe_counter!(
        "gtc_router_ejections_total",
        Unit::Count,
        "Instances taken out of balancing after consecutive failures, each for a backoff that doubles until the instance answers again."
    );
    describe_counter!(
        "gtc_router_ejection_overridden_total",
        Unit::Count,
        "Tries sent to an ejected instance because every untried instance of the revision was ejected (the router never refuses a revision's last instances silently)."
    );
    describe_counter!(
        crate::connections::TRIPS_METRIC,
        Unit::Count,
        "Connection limits that tripped, by listener (router, admin) and limit: header_timeout (no whole request head within the head deadline; closed), idle_timeout (keep-alive connection idle too long; closed), max_connections_evicted / max_connections_per_ip_evicted (an idle connection closed to admit a new one), max_connections_refused / max_connections_per_ip_refused (a new connection refused: every open one was serving a request), body_timeout (a request body the admin API reads did not arrive in time; 400), reserved_for_health (a request answered 503 to keep capacity for /healthz and /readyz), accept_error (the listener could not accept)."
    );
    describe_gauge!(
        crate::connections::OPEN_METRIC,
        Unit::Count,
        "Client connections open now, by listener (router, admin)."
    );
    describe_counter!(
        crate::span_export::DROPPED_METRIC,
        Unit::Count,
        "Router spans not exported over OTLP because the export queue was full (the collector is slow or away); the request itself is never delayed. Present only with --otlp-endpoint."
    );
    describe_counter!(
        crate::span_export::EXPORTED_METRIC,
        Unit::Count,
        "Router spans sent to the OTLP collector. Present only with --otlp-endpoint."
    );
    describe_counter!(
        crate::span_export::EXPORT_FAILURES_METRIC,
        Unit::Count,
        "Batches of router spans the OTLP collector did not accept (after the exporter's retries); their spans are lost. Present only with --otlp-endpoint."
    );
}
