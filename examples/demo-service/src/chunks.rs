//! A response body that yields fixed-size chunks with a pause between them,
//! so tests can see a response that is still being streamed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame};
use tokio::time::{Instant, Sleep};

/// Size of one streamed chunk.
pub const CHUNK_BYTES: usize = 1024;
/// Pause between two chunks.
pub const CHUNK_INTERVAL: Duration = Duration::from_millis(10);
/// Most chunks one `/stream` request may ask for (about 100 s of streaming).
pub const MAX_CHUNKS: u32 = 10_000;

/// The bytes of every chunk; static so streaming allocates nothing per chunk.
static CHUNK: [u8; CHUNK_BYTES] = [b'x'; CHUNK_BYTES];

/// Body yielding `remaining` chunks, the first at once, then one per [`CHUNK_INTERVAL`].
pub struct SlowChunks {
    remaining: u32,
    next_chunk: Pin<Box<Sleep>>,
}

impl SlowChunks {
    /// A body of `count` chunks.
    pub fn new(count: u32) -> Self {
        Self {
            remaining: count,
            next_chunk: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }
}

impl Body for SlowChunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // SlowChunks is Unpin (its only pinned part is boxed), so this is safe code.
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        if this.next_chunk.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.remaining -= 1;
        let next = this.next_chunk.deadline() + CHUNK_INTERVAL;
        this.next_chunk.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}
