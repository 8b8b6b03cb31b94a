//! What happens when a peer sends a frame we refuse: count it, log it, and close the
//! connection. A peer that breaks the framing cannot be trusted to frame anything
//! after it, so the connection goes, not just the stream.

use super::close_code::CLOSE_FRAME_REJECTED;
use super::stats::TransportStats;
use crate::wire::WireError;

pub(crate) fn reject_frame(
    connection: &quinn::Connection,
    stats: &TransportStats,
    error: &WireError,
) {
    stats.record_frame_rejected(error);
    tracing::warn!(
        remote = %connection.remote_address(),
        reason = error.reason(),
        error = %error,
        "closing connection after an unacceptable frame"
    );
    connection.close(CLOSE_FRAME_REJECTED, error.reason().as_bytes());
}
