//! The response envelope sent back on every request stream.

use serde::{Deserialize, Serialize};

/// Longest handler error message sent to a caller, in bytes. Error text is for logs;
/// a bound keeps a verbose handler from filling frames with it.
pub const MAX_REMOTE_ERROR_MESSAGE_BYTES: usize = 4096;

/// What a server writes back on a request stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseEnvelope<Resp> {
    /// The handler succeeded.
    Ok(Resp),
    /// The handler failed, or its response could not be sent; the text explains.
    Failed {
        /// Human-readable reason, at most [`MAX_REMOTE_ERROR_MESSAGE_BYTES`] bytes.
        message: String,
    },
}

impl<Resp> ResponseEnvelope<Resp> {
    /// A failure whose message is cut to [`MAX_REMOTE_ERROR_MESSAGE_BYTES`] on a
    /// character boundary.
    pub fn failed(message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_REMOTE_ERROR_MESSAGE_BYTES {
            let mut end = MAX_REMOTE_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        ResponseEnvelope::Failed { message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_REMOTE_ERROR_MESSAGE_BYTES);
        let ResponseEnvelope::<()>::Failed { message } = ResponseEnvelope::failed(long) else {
            panic!("expected a failure");
        };
        assert!(message.len() <= MAX_REMOTE_ERROR_MESSAGE_BYTES);
        assert!(message.chars().all(|c| c == 'é'));
    }
}
