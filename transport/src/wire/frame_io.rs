//! Reading and writing frames on async streams (quinn streams in production, any
//! tokio `AsyncRead`/`AsyncWrite` in tests).

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    FRAME_HEADER_BYTES, FrameError, WireError, decode_envelope, encode_frame, frame_length,
};

/// Initial buffer for a frame body. The announced length is only a claim until the
/// bytes arrive, so the buffer grows with the data rather than trusting the header.
const INITIAL_READ_CAPACITY: usize = 64 * 1024;

/// Reads one frame and decodes its envelope as `T`.
pub async fn read_frame<R, T>(reader: &mut R, limit: u32) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let envelope = read_frame_bytes(reader, limit).await?;
    Ok(decode_envelope(&envelope)?)
}

/// Reads one frame and returns its envelope bytes, undecoded.
pub async fn read_frame_bytes<R>(reader: &mut R, limit: u32) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; FRAME_HEADER_BYTES];
    reader
        .read_exact(&mut header)
        .await
        .map_err(eof_is_truncation)?;
    let len = frame_length(header, limit)?;
    let mut envelope = Vec::with_capacity(len.min(INITIAL_READ_CAPACITY));
    // `len` is at most MAX_FRAME_BYTES, so it fits in u64.
    let announced = u64::try_from(len).unwrap_or(u64::MAX);
    (&mut *reader)
        .take(announced)
        .read_to_end(&mut envelope)
        .await
        .map_err(FrameError::Io)?;
    if envelope.len() < len {
        return Err(WireError::Truncated.into());
    }
    Ok(envelope)
}

/// Encodes `value` as one frame and writes it. Does not flush or finish the stream.
pub async fn write_frame<W, T>(writer: &mut W, value: &T, limit: u32) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize + ?Sized,
{
    let frame = encode_frame(value, limit)?;
    writer.write_all(&frame).await.map_err(FrameError::Io)
}

/// Waits for the end of the stream after a frame: one frame per stream is the
/// protocol, so any further byte is a violation.
pub async fn expect_end_of_stream<R>(reader: &mut R) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut probe = [0u8; 1];
    match reader.read(&mut probe).await.map_err(FrameError::Io)? {
        0 => Ok(()),
        _ => Err(WireError::TrailingBytes { count: 1 }.into()),
    }
}

fn eof_is_truncation(error: std::io::Error) -> FrameError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::Truncated.into()
    } else {
        FrameError::Io(error)
    }
}
