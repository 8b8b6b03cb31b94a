//! When to restart a crashed instance, and when to stop trying.
//!
//! Pure and clock-free: the caller passes the time of each crash, so the policy
//! is deterministic and tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Largest power of two the backoff multiplies `base` by. 2^20 times any sane
/// base is far beyond any sane `max`, and the bound keeps the shift and the
/// multiplication from overflowing however many restarts there were.
pub const MAX_BACKOFF_EXPONENT: u32 = 20;

/// What a supervisor should do after an instance exited unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it again after this delay.
    RestartAfter(Duration),
    /// A restart storm: more than `intensity` restarts within `window`. Stop
    /// restarting and report the revision as failing.
    GiveUp {
        /// Restarts counted in the window, including the refused one.
        restarts_in_window: u32,
    },
}

/// Exponential backoff (`base`·2ⁿ, capped at `max`) with a bound on restart
/// storms (at most `intensity` restarts within any `window`).
///
/// Once it has given up it keeps answering [`RestartDecision::GiveUp`] until
/// [`RestartPolicy::reset`], so a storm is reported once and not silently resumed.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    base: Duration,
    max: Duration,
    intensity: u32,
    window: Duration,
    /// Restarts since the last reset; the backoff exponent.
    consecutive: u32,
    /// Times of the restarts still inside the window, oldest first. Holds at most
    /// `intensity + 1` entries, because the policy gives up at that count.
    recent: VecDeque<Instant>,
    /// Set once the policy has given up: the count it reported.
    gave_up: Option<u32>,
}

impl RestartPolicy {
    /// A policy waiting `base`, then `2·base`, `4·base`, ... (never more than
    /// `max`) and giving up when more than `intensity` restarts fall in `window`.
    pub fn new(base: Duration, max: Duration, intensity: u32, window: Duration) -> Self {
        Self {
            base,
            max,
            intensity,
            window,
            consecutive: 0,
            recent: VecDeque::new(),
            gave_up: None,
        }
    }

    /// Decides about one more restart, for an exit that happened at `now`.
    pub fn next(&mut self, now: Instant) -> RestartDecision {
        if let Some(restarts_in_window) = self.gave_up {
            return RestartDecision::GiveUp { restarts_in_window };
        }
        self.forget_outside_window(now);
        self.recent.push_back(now);
        let in_window = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if in_window > self.intensity {
            self.gave_up = Some(in_window);
            return RestartDecision::GiveUp {
                restarts_in_window: in_window,
            };
        }
        let delay = self.backoff();
        self.consecutive = self.consecutive.saturating_add(1);
        RestartDecision::RestartAfter(delay)
    }

    /// Forgets all history; call after the instance has been healthy for a while.
    pub fn reset(&mut self) {
        self.consecutive = 0;
        self.recent.clear();
        self.gave_up = None;
    }

    fn backoff(&self) -> Duration {
        let factor = 1_u32 << self.consecutive.min(MAX_BACKOFF_EXPONENT);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |delay| delay.min(self.max))
    }

    fn forget_outside_window(&mut self, now: Instant) {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) < self.window {
                break;
            }
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn after(decision: RestartDecision) -> Duration {
        match decision {
            RestartDecision::RestartAfter(d) => d,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        // Proves base·2^n growth and the max cap, with restarts spread beyond the window.
        let mut policy = RestartPolicy::new(MS(100), MS(1000), 3, MS(10));
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..7)
            .map(|i| after(policy.next(t0 + MS(1000 * i))))
            .collect();
        assert_eq!(
            delays,
            vec![
                MS(100),
                MS(200),
                MS(400),
                MS(800),
                MS(1000),
                MS(1000),
                MS(1000)
            ]
        );
    }

    #[test]
    fn huge_restart_counts_do_not_overflow() {
        // Proves the exponent bound: thousands of restarts still yield max, no panic.
        let mut policy = RestartPolicy::new(Duration::from_secs(3600), MS(5000), 1, MS(1));
        let t0 = Instant::now();
        for i in 0..5000 {
            assert!(after(policy.next(t0 + MS(10 * i))) <= MS(5000));
        }
    }

    #[test]
    fn a_storm_gives_up_and_stays_given_up() {
        // Proves more than `intensity` restarts inside `window` yields GiveUp, sticky.
        let mut policy = RestartPolicy::new(MS(10), MS(100), 3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            after(policy.next(t0 + MS(i)));
        }
        let storm = RestartDecision::GiveUp {
            restarts_in_window: 4,
        };
        assert_eq!(policy.next(t0 + MS(3)), storm);
        assert_eq!(policy.next(t0 + Duration::from_secs(600)), storm);
    }

    #[test]
    fn restarts_outside_the_window_do_not_count() {
        // Proves the window slides: spaced-out crashes never trigger GiveUp.
        let mut policy = RestartPolicy::new(MS(10), MS(100), 2, MS(1000));
        let t0 = Instant::now();
        for i in 0..10 {
            after(policy.next(t0 + MS(600 * i)));
        }
    }

    #[test]
    fn reset_clears_backoff_and_storm() {
        // Proves reset() returns the policy to its first delay after a GiveUp.
        let mut policy = RestartPolicy::new(MS(50), MS(1000), 1, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(after(policy.next(t0)), MS(50));
        assert!(matches!(
            policy.next(t0 + MS(1)),
            RestartDecision::GiveUp {
                restarts_in_window: 2
            }
        ));
        policy.reset();
        assert_eq!(after(policy.next(t0 + MS(2))), MS(50));
    }
}
