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
}
