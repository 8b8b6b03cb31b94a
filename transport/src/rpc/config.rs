//! Tunables of the transport, each with its bound and the reason for it.

use std::time::Duration;

use crate::wire::MAX_FRAME_BYTES;

/// Default bound on concurrently open request streams per connection. Each stream may
/// buffer up to `max_frame_bytes`, so this times the frame limit bounds the memory one
/// peer can pin; 64 leaves Raft pipelining plenty of room.
pub const DEFAULT_MAX_CONCURRENT_BIDI_STREAMS: u32 = 64;

/// Upper bound accepted for `max_concurrent_bidi_streams`.
pub const MAX_CONCURRENT_BIDI_STREAMS_LIMIT: u32 = 1024;

/// Default bound on connections a server holds at once. A cluster has a handful of
/// nodes, each keeping one connection to each peer; 256 leaves room for reconnect
/// churn while refusing a connection flood.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default bound on peers a client keeps a cached connection to (the cluster size).
pub const DEFAULT_MAX_CACHED_PEERS: usize = 64;

/// Default idle timeout: a peer silent this long (keep-alives included) is gone.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default keep-alive interval: well under the idle timeout, so a healthy but quiet
/// connection is never dropped and a dead one is noticed within the idle timeout.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Default bound on establishing a connection (QUIC + TLS handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default bound on one call, connecting included. Raft RPCs are small and fast; a
/// caller that ships large snapshots should raise it.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on receiving one request or delivering one response on a stream, so
/// a stalled peer cannot hold a server task forever.
pub const DEFAULT_STREAM_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time `shutdown` waits for in-flight handlers before giving up on them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long closing an endpoint waits for peers to acknowledge the close, so they
/// learn of it at once instead of after their idle timeout.
pub const ENDPOINT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Smallest accepted frame limit: an error reply (bounded message) must always fit.
pub const MIN_FRAME_BYTES: u32 = 16 * 1024;

/// Longest accepted idle timeout. Beyond an hour a dead peer goes unnoticed too long.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings shared by [`super::TransportServer`] and [`super::TransportClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest envelope accepted or sent, in bytes; at most [`MAX_FRAME_BYTES`].
    /// This is also the largest snapshot that fits in one response.
    pub max_frame_bytes: u32,
    /// Request streams a peer may have open on one connection at once.
    pub max_concurrent_bidi_streams: u32,
    /// Connections a server holds at once; further attempts are refused.
    pub max_connections: usize,
    /// Peers a client keeps a cached connection to.
    pub max_cached_peers: usize,
    /// Silence after which a connection is considered lost.
    pub idle_timeout: Duration,
    /// Interval of keep-alive packets; must be below `idle_timeout`.
    pub keep_alive_interval: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on a whole call, connecting included.
    pub call_timeout: Duration,
    /// Bound on receiving a request or delivering a response on one stream.
    pub stream_io_timeout: Duration,
    /// Bound on waiting for in-flight handlers at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_concurrent_bidi_streams: DEFAULT_MAX_CONCURRENT_BIDI_STREAMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_cached_peers: DEFAULT_MAX_CACHED_PEERS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            stream_io_timeout: DEFAULT_STREAM_IO_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Why a [`TransportConfig`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A numeric setting is outside its accepted range.
    #[error("{field} = {value} is outside {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    /// A duration is zero or longer than allowed.
    #[error("{field} = {value:?} must be above zero and at most {max:?}")]
    InvalidDuration {
        field: &'static str,
        value: Duration,
        max: Duration,
    },
    /// Keep-alives would not prevent the idle timeout.
    #[error("keep_alive_interval {keep_alive:?} must be below idle_timeout {idle:?}")]
    KeepAliveNotBelowIdle {
        keep_alive: Duration,
        idle: Duration,
    },
}

impl TransportConfig {
    /// Checks every bound; called by `bind` so a bad config fails at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range(
            "max_frame_bytes",
            u64::from(self.max_frame_bytes),
            u64::from(MIN_FRAME_BYTES),
            u64::from(MAX_FRAME_BYTES),
        )?;
        in_range(
            "max_concurrent_bidi_streams",
            u64::from(self.max_concurrent_bidi_streams),
            1,
            u64::from(MAX_CONCURRENT_BIDI_STREAMS_LIMIT),
        )?;
        in_range("max_connections", as_u64(self.max_connections), 1, 65_536)?;
        in_range("max_cached_peers", as_u64(self.max_cached_peers), 1, 65_536)?;
        let day = Duration::from_secs(86_400);
        positive("idle_timeout", self.idle_timeout, MAX_IDLE_TIMEOUT)?;
        positive(
            "keep_alive_interval",
            self.keep_alive_interval,
            MAX_IDLE_TIMEOUT,
        )?;
        positive("connect_timeout", self.connect_timeout, day)?;
        positive("call_timeout", self.call_timeout, day)?;
        positive("stream_io_timeout", self.stream_io_timeout, day)?;
        positive("shutdown_grace", self.shutdown_grace, day)?;
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(ConfigError::KeepAliveNotBelowIdle {
                keep_alive: self.keep_alive_interval,
                idle: self.idle_timeout,
            });
        }
        Ok(())
    }
}

fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

fn positive(field: &'static str, value: Duration, max: Duration) -> Result<(), ConfigError> {
    if value.is_zero() || value > max {
        Err(ConfigError::InvalidDuration { field, value, max })
    } else {
        Ok(())
    }
}

fn as_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(TransportConfig::default().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_are_named() {
        let config = TransportConfig {
            max_frame_bytes: MAX_FRAME_BYTES + 1,
            ..TransportConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutOfRange {
                field: "max_frame_bytes",
                ..
            })
        ));
        let config = TransportConfig {
            keep_alive_interval: DEFAULT_IDLE_TIMEOUT,
            ..TransportConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::KeepAliveNotBelowIdle { .. })
        ));
        let config = TransportConfig {
            call_timeout: Duration::ZERO,
            ..TransportConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidDuration {
                field: "call_timeout",
                ..
            })
        ));
    }
}
