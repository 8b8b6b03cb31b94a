//! The fault vocabulary: everything the world can do to a cluster, and the
//! repair of it. The world draws faults from its mix and injects them;
//! a test may inject one directly.

use consensus::NodeId;

use crate::disk::{DiskFault, DiskSpeed};
use crate::net::LinkFaults;

/// One fault, or the repair of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The process dies: its unflushed log writes suffer `disk`, its
    /// network endpoints vanish.
    Crash { node: NodeId, disk: DiskFault },
    /// The process dies right after the store committed its next applied
    /// command, before the state machine recorded the entry as applied:
    /// the window exactly-once recovery exists for.
    CrashAfterCommit { node: NodeId },
    /// A crashed node starts again from its disk and folder.
    Restart { node: NodeId },
    /// Blocks both directions between `node` and each of `from`.
    Isolate { node: NodeId, from: Vec<NodeId> },
    /// Blocks the link from `from` to `to` (one direction).
    Partition { from: NodeId, to: NodeId },
    /// Unblocks the link from `from` to `to`.
    Repair { from: NodeId, to: NodeId },
    /// Holds messages from `from` to `to` until released (late delivery).
    Hold { from: NodeId, to: NodeId },
    /// Delivers what the link held and stops holding.
    Release { from: NodeId, to: NodeId },
    /// Repairs every link and releases every held message.
    Heal,
    /// Every link delays, loses and duplicates as given.
    Noise(LinkFaults),
    /// Every link back to a calm LAN.
    Calm,
    /// The node's clock is off by `skew` (commands it stamps carry it).
    ClockSkew {
        node: NodeId,
        skew: chrono::Duration,
    },
    /// The node's log disk flushes at `speed`.
    DiskSpeed { node: NodeId, speed: DiskSpeed },
}
