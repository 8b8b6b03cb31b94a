//! HELP text and units of the transport's metrics (see
//! `router::describe_metrics` for why every metric needs one).

use metrics::{Unit, describe_counter};

use crate::rpc::{CONNECTIONS_TOTAL, FRAMES_REJECTED_TOTAL, REQUESTS_TOTAL};

/// Describes every metric the node-to-node transport emits.
pub fn describe_metrics() {
    describe_counter!(
        FRAMES_REJECTED_TOTAL,
        Unit::Count,
        "Peer frames refused (and their connection closed), by reason."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Peer RPC requests, by direction (inbound, outbound)."
    );
    describe_counter!(
        CONNECTIONS_TOTAL,
        Unit::Count,
        "Peer connections, by result: accepted or rejected (server), established, failed, dropped after a call timed out on it, or closed_stale when a new dial succeeded while the dropped one heard nothing (client)."
    );
}
