//! Pure encoding and decoding of envelopes and frames.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::limited_vec::LimitedVec;
use super::{FRAME_HEADER_BYTES, MAX_FRAME_BYTES, WIRE_VERSION, WireError};

/// Encodes `value` as an envelope: the version byte followed by its postcard encoding.
pub fn encode_envelope<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_extend(value, vec![WIRE_VERSION]).map_err(WireError::Encode)
}

/// Decodes an envelope produced by [`encode_envelope`]. The whole input must be
/// consumed.
pub fn decode_envelope<T: DeserializeOwned>(envelope: &[u8]) -> Result<T, WireError> {
    let (&version, payload) = envelope.split_first().ok_or(WireError::Truncated)?;
    if version != WIRE_VERSION {
        return Err(WireError::UnknownVersion { got: version });
    }
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(WireError::from_postcard_decode)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { count: rest.len() });
    }
    Ok(value)
}

/// Encodes `value` as a complete frame (header plus envelope), refusing envelopes
/// longer than `limit` (itself capped at [`MAX_FRAME_BYTES`]) without building them
/// whole.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T, limit: u32) -> Result<Vec<u8>, WireError> {
    let limit = effective_limit(limit);
    let mut start = Vec::with_capacity(FRAME_HEADER_BYTES + 64);
    start.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    start.push(WIRE_VERSION);
    let output = LimitedVec {
        bytes: start,
        max_len: FRAME_HEADER_BYTES + limit as usize,
    };
    let mut frame =
        postcard::serialize_with_flavor(value, output).map_err(|error| match error {
            postcard::Error::SerializeBufferFull => WireError::Oversized {
                len: u64::from(limit) + 1,
                limit,
            },
            other => WireError::Encode(other),
        })?;
    let envelope_len = frame.len() - FRAME_HEADER_BYTES;
    // LimitedVec capped the envelope at `limit`, a u32, so this conversion succeeds.
    let header = u32::try_from(envelope_len).map_err(|_| WireError::Oversized {
        len: u64::try_from(envelope_len).unwrap_or(u64::MAX),
        limit,
    })?;
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&header.to_be_bytes());
    Ok(frame)
}

/// Decodes exactly one frame from `frame`: header, envelope, nothing after.
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8], limit: u32) -> Result<T, WireError> {
    let (header, body) = frame
        .split_first_chunk::<FRAME_HEADER_BYTES>()
        .ok_or(WireError::Truncated)?;
    let len = frame_length(*header, limit)?;
    match body.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(WireError::Truncated),
        std::cmp::Ordering::Greater => Err(WireError::TrailingBytes {
            count: body.len() - len,
        }),
        std::cmp::Ordering::Equal => decode_envelope(body),
    }
}

/// Reads the envelope length from a frame header and checks it against `limit`
/// (itself capped at [`MAX_FRAME_BYTES`]), before anything is buffered.
pub fn frame_length(header: [u8; FRAME_HEADER_BYTES], limit: u32) -> Result<usize, WireError> {
    let limit = effective_limit(limit);
    let len = u32::from_be_bytes(header);
    if len > limit {
        return Err(WireError::Oversized {
            len: u64::from(len),
            limit,
        });
    }
    // An empty envelope has no version byte: report it as truncated right away.
    if len == 0 {
        return Err(WireError::Truncated);
    }
    Ok(len as usize)
}

fn effective_limit(limit: u32) -> u32 {
    limit.min(MAX_FRAME_BYTES)
}
