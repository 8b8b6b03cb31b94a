//! A send stream that is reset, not finished, when dropped unfinished.
//!
//! quinn finishes a dropped `SendStream`, which would turn a half-written frame into a
//! cleanly ended (truncated) one and make the peer close the whole connection as a
//! protocol violation. When a call times out or a task is cancelled mid-write we
//! reset the stream instead, which the peer treats as an abandoned request.

use quinn::{ClosedStream, SendStream, StoppedError, VarInt, WriteError};

use super::close_code::STREAM_ABANDONED;

pub(crate) struct ResetOnDrop {
    stream: SendStream,
    finished: bool,
}

impl ResetOnDrop {
    pub(crate) fn new(stream: SendStream) -> Self {
        ResetOnDrop {
            stream,
            finished: false,
        }
    }

    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.stream.write_all(bytes).await
    }

    /// Ends the stream normally; after this, dropping it does nothing.
    pub(crate) fn finish(&mut self) -> Result<(), ClosedStream> {
        self.finished = true;
        self.stream.finish()
    }

    /// Waits until the peer has received everything (or stopped the stream).
    pub(crate) async fn stopped(&mut self) -> Result<Option<VarInt>, StoppedError> {
        self.stream.stopped().await
    }
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if !self.finished {
            // Fails only if the stream is already closed, which is what we want anyway.
            let _ = self.stream.reset(STREAM_ABANDONED);
        }
    }
}
