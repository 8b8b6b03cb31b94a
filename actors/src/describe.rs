//! HELP text and units of the actors' Prometheus metrics (see
//! `router::describe_metrics` for why every metric needs one).

use metrics::{Unit, describe_counter, describe_gauge};

/// Describes every metric the node's actors emit.
pub fn describe_metrics() {
    describe_counter!(
        "gtc_actor_restarts_total",
        Unit::Count,
        "Times the supervisor restarted a failed actor, by actor kind."
    );
    describe_counter!(
        "gtc_instance_restarts_total",
        Unit::Count,
        "Times a revision's instance was restarted after it exited, by revision."
    );
    describe_gauge!(
        "gtc_instances",
        Unit::Count,
        "This node's instance slots of a revision by state: ready (serving), running (started, not serving) or down (no process)."
    );
    describe_gauge!(
        "gtc_store_generation",
        Unit::Count,
        "Committed generation of the environment as this node's actors last read it, by environment."
    );
}
