//! Errors of the wire format.

use super::WIRE_VERSION;

/// Why a frame or envelope could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The envelope is longer than the limit. When decoding, `len` is the length the
    /// header announced; when encoding, encoding stops at `limit + 1` bytes, so `len`
    /// is a lower bound.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized { len: u64, limit: u32 },
    /// The envelope starts with a version byte this node does not speak.
    #[error("unknown wire format version {got}; this node speaks version {WIRE_VERSION}")]
    UnknownVersion { got: u8 },
    /// The payload is not a valid postcard encoding of the expected type.
    #[error("malformed payload")]
    Malformed(#[source] postcard::Error),
    /// The input ended before the header, version byte or payload was complete.
    #[error("the frame ended early")]
    Truncated,
    /// Bytes follow a complete payload or frame.
    #[error("{count} unexpected bytes follow the message")]
    TrailingBytes { count: usize },
    /// The value could not be serialized (a serde impl returned an error).
    #[error("cannot encode the message")]
    Encode(#[source] postcard::Error),
}

impl WireError {
    /// A short, fixed label for metrics and logs (`reason` of
    /// `gtc_transport_frames_rejected_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Oversized { .. } => "oversized",
            WireError::UnknownVersion { .. } => "unknown_version",
            WireError::Malformed(_) => "malformed",
            WireError::Truncated => "truncated",
            WireError::TrailingBytes { .. } => "trailing_bytes",
            WireError::Encode(_) => "encode",
        }
    }

    /// Maps a postcard decoding error: running out of input is truncation, anything
    /// else is a malformed payload.
    pub(crate) fn from_postcard_decode(error: postcard::Error) -> WireError {
        match error {
            postcard::Error::DeserializeUnexpectedEnd => WireError::Truncated,
            other => WireError::Malformed(other),
        }
    }
}

/// Why reading or writing a frame on a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes arrived but are not an acceptable frame: a protocol violation.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The stream failed (reset, connection lost); no protocol violation implied.
    #[error("stream i/o failed")]
    Io(#[source] std::io::Error),
}
