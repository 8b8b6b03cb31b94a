//! The one wait-until of node's tests and benches (`common` and
//! `cluster_support` both include this file): check a condition until it
//! holds or a deadline passes, instead of sleeping and hoping the system
//! got there.

use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits up to `timeout` for `check` to hold, checking every
/// [`POLL_INTERVAL`]; panics naming `what` after. Returns the time it took.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    start.elapsed()
}
