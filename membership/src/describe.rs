//! HELP text and units of the gossip transport's metrics (see
//! `router::describe_metrics` for why every metric needs one).

use metrics::{Unit, describe_counter};

use crate::stats::{
    METRIC_PACKETS_DROPPED_OUTBOUND, METRIC_PACKETS_OPENED_WITH_SECONDARY, METRIC_PACKETS_REJECTED,
};

/// Describes every metric the encrypted gossip transport emits.
pub fn describe_metrics() {
    describe_counter!(
        METRIC_PACKETS_REJECTED,
        Unit::Count,
        "Incoming gossip datagrams dropped (wrong key, malformed, replayed), by reason."
    );
    describe_counter!(
        METRIC_PACKETS_DROPPED_OUTBOUND,
        Unit::Count,
        "Outgoing gossip messages that could not be sent sealed, by reason."
    );
    describe_counter!(
        METRIC_PACKETS_OPENED_WITH_SECONDARY,
        Unit::Count,
        "Gossip datagrams opened with a secondary key: while it grows, a member still seals with the old primary."
    );
}
