//! The wire format of node-to-node messages.
//!
//! ```text
//! frame    = length:u32 (big-endian, bytes of envelope) envelope
//! envelope = version:u8 (WIRE_VERSION) payload (postcard encoding of the message)
//! ```
//!
//! The length comes first so a reader can refuse an oversized frame before buffering
//! it; the version byte comes first in the envelope so a future format can be
//! recognised (and refused with [`WireError::UnknownVersion`]) before any payload byte
//! is interpreted. Decoding is total: any byte sequence yields a value or a
//! [`WireError`], never a panic, and never an allocation larger than the frame limit.

mod envelope;
mod error;
mod frame_io;
mod limited_vec;

pub use envelope::{decode_envelope, decode_frame, encode_envelope, encode_frame, frame_length};
pub use error::{FrameError, WireError};
pub use frame_io::{expect_end_of_stream, read_frame, read_frame_bytes, write_frame};

/// Version byte at the start of every envelope. Bump it (and the ALPN id) when the
/// payload encoding changes incompatibly.
pub const WIRE_VERSION: u8 = 1;

/// Hard ceiling on the envelope length of one frame: 16 MiB.
///
/// The largest message is a Raft snapshot sent as a single frame (or one chunk of it),
/// and 16 MiB comfortably holds the state of a control plane while bounding what one
/// stream can make a node buffer: at most `max_concurrent_bidi_streams` times this per
/// connection. Endpoints may configure a lower limit, never a higher one.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// Length of the frame header (the big-endian `u32` length).
pub const FRAME_HEADER_BYTES: usize = 4;

#[cfg(test)]
mod tests;
