//! W3C Trace Context (`traceparent`) across the router's hop.
//!
//! A request that arrives with a valid `traceparent` keeps its trace id and
//! sampling flag; the router takes a new span id of its own (its hop is a
//! span) and forwards that as the instance's parent. A request without one,
//! or with one the recommendation says to ignore, starts a new trace. The
//! router logs the trace id with the revision it chose, so one request can
//! be followed from the client through the router to the instance's logs.
//!
//! Parsing and formatting are pure; only [`TraceIds`] draws fresh ids.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use http::header::HeaderMap;

/// The header of the W3C Trace Context recommendation.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const VERSION_00_LENGTH: usize = 55;

/// The parts of a `traceparent` the router keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The span this context names as the parent of the next hop.
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Reads a `traceparent` value. `None` when the recommendation says to
    /// ignore it: wrong shape, upper-case hex, version `ff`, an all-zero
    /// trace or parent id, or a version-00 value with trailing data. A
    /// later version is read by its version-00 prefix, as the
    /// recommendation asks.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if !value.is_ascii() || bytes.len() < VERSION_00_LENGTH {
            return None;
        }
        let version = &value[0..2];
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && bytes.len() != VERSION_00_LENGTH {
            return None;
        }
        if bytes.len() > VERSION_00_LENGTH && bytes[VERSION_00_LENGTH] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (trace, span, flags) = (&value[3..35], &value[36..52], &value[53..55]);
        if !(is_lower_hex(trace) && is_lower_hex(span) && is_lower_hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The version-00 header value.
    pub fn to_header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// The trace id as 32 lower-case hex digits (what logs carry).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The router's own span in this trace: same trace id and flags, the
    /// router's span id as the next hop's parent.
    pub fn child(&self, span_id: u64) -> Self {
        Self { span_id, ..*self }
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Fresh, unpredictable trace and span ids. Each id hashes a counter with
/// keys the standard library draws from the operating system's randomness
/// ([`RandomState`]), so ids never repeat within a process and cannot be
/// guessed from one another; no random-number crate is needed.
pub struct TraceIds {
    keys: [RandomState; 2],
    counter: AtomicU64,
}

impl Default for TraceIds {
    fn default() -> Self {
        Self {
            keys: [RandomState::new(), RandomState::new()],
            counter: AtomicU64::new(1),
        }
    }
}

impl TraceIds {
    /// A non-zero 64-bit id.
    pub fn span_id(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.keys[0].hash_one(n).max(1)
    }

    /// A non-zero 128-bit id.
    pub fn trace_id(&self) -> u128 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let high = u128::from(self.keys[0].hash_one(n));
        let low = u128::from(self.keys[1].hash_one(n));
        ((high << 64) | low).max(1)
    }
}

/// The process's id source (one per process is enough: ids only need to be
/// unique and unguessable, not reproducible).
static IDS: LazyLock<TraceIds> = LazyLock::new(TraceIds::default);

/// The router's hop in a trace: its own span and the caller's span it
/// continues (none when the router started the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub span: TraceContext,
    pub parent_span_id: Option<u64>,
}

/// The router's span for a request with `incoming` (its `traceparent`, if
/// any): continues a valid trace, else starts a sampled one.
pub fn router_span(incoming: Option<&str>, ids: &TraceIds) -> Hop {
    let span_id = ids.span_id();
    match incoming.and_then(TraceContext::parse) {
        Some(parent) => Hop {
            span: parent.child(span_id),
            parent_span_id: Some(parent.span_id),
        },
        None => Hop {
            span: TraceContext {
                trace_id: ids.trace_id(),
                span_id,
                flags: 1,
            },
            parent_span_id: None,
        },
    }
}

/// Replaces the request's `traceparent` with the router's span and returns
/// the hop (for the log line and the exported span). `tracestate` is
/// forwarded untouched.
pub fn propagate(headers: &mut HeaderMap) -> Hop {
    let incoming = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok());
    let hop = router_span(incoming, &IDS);
    if let Ok(value) = HeaderValue::from_str(&hop.span.to_header()) {
        headers.insert(TRACEPARENT_HEADER, value);
    }
    hop
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_recommendation_example_is_read_and_written_back() {
        let context = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        assert_eq!(context.flags, 1);
        assert_eq!(context.to_header(), EXAMPLE);
    }

    #[test]
    fn values_the_recommendation_says_to_ignore_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_version_00_prefix() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        let context = TraceContext::parse(later).expect("later version");
        assert_eq!(context.to_header(), EXAMPLE);
    }

    #[test]
    fn the_router_continues_a_trace_with_its_own_span_or_starts_one() {
        let ids = TraceIds::default();
        let hop = router_span(Some(EXAMPLE), &ids);
        assert_eq!(hop.parent_span_id, Some(0x00f067aa0ba902b7));
        let continued = hop.span;
        assert_eq!(continued.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_ne!(continued.span_id, 0x00f067aa0ba902b7);
        assert_eq!(continued.flags, 1);
        let started = router_span(Some("garbage"), &ids);
        assert_eq!(
            started.parent_span_id, None,
            "a started trace has no parent"
        );
        let started = started.span;
        let other = router_span(None, &ids).span;
        assert_ne!(started.trace_id, 0);
        assert_ne!(started.trace_id, other.trace_id);
        assert_eq!(started.flags, 1, "a new trace is sampled");
        assert!(TraceContext::parse(&started.to_header()).is_some());
    }

    proptest! {
        #[test]
        fn every_context_round_trips(trace_id in 1u128.., span_id in 1u64.., flags: u8) {
            let context = TraceContext { trace_id, span_id, flags };
            prop_assert_eq!(TraceContext::parse(&context.to_header()), Some(context));
        }

        #[test]
        fn parsing_never_panics(value in "\\PC{0,80}") {
            let _ = TraceContext::parse(&value);
        }
    }
}
