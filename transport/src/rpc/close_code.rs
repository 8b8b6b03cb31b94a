//! Application error codes used when closing connections and resetting streams.
//! They appear in the peer's `ConnectionError::ApplicationClosed`.

use quinn::VarInt;

/// The endpoint is shutting down; nothing was wrong with the peer.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
/// The peer sent a frame we refuse (oversized, unknown version, malformed, truncated).
pub const CLOSE_FRAME_REJECTED: VarInt = VarInt::from_u32(0x10);
/// The peer's certificate verified but names no valid node.
pub const CLOSE_PEER_IDENTITY: VarInt = VarInt::from_u32(0x11);

/// The client closes a connection that heard nothing after a call timed out on it,
/// once a new connection to the same peer succeeded (the old one's peer is gone).
pub const CLOSE_PEER_GONE: VarInt = VarInt::from_u32(0x12);

/// Stream reset code: this side abandoned the stream (timeout, cancellation).
pub const STREAM_ABANDONED: VarInt = VarInt::from_u32(0x20);
