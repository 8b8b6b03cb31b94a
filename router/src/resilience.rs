//! The bookkeeping that keeps a router from hanging on a vanished
//! instance: passive outlier ejection per instance and a retry budget per
//! router.
//!
//! Both are plain atomics driven by a caller-given clock (milliseconds on
//! the router's own monotonic epoch), so they are tested here without
//! sockets or sleeps, and the request path takes no lock.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// When an instance is taken out of balancing, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionConfig {
    /// Failures in a row (refused or timed-out connection, a reset before
    /// the response head, a try outrun by a hedge) that eject an instance.
    pub consecutive_failures: u32,
    /// Length of the first ejection; each ejection that follows without a
    /// success in between lasts twice as long as the one before.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// What a recorded failure did to its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the instance stays in balancing.
    Counted,
    /// The instance is ejected for this long.
    Ejected(Duration),
}

/// Passive health of one instance, from the outcomes of real requests.
#[derive(Debug, Default)]
pub struct Outlier {
    consecutive_failures: AtomicU32,
    /// Ejections since the last success: sets the backoff.
    level: AtomicU32,
    /// Ejected while the router's clock is below this (ms); 0 = never.
    ejected_until_ms: AtomicU64,
}

impl Outlier {
    /// Whether the instance is out of balancing at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// A response head came back: the instance is healthy again.
    pub fn record_success(&self) {
        // Plain loads first: the common case writes nothing, so a hot
        // instance's cache line is not bounced between cores.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.level.load(Ordering::Relaxed) != 0 {
            self.level.store(0, Ordering::Relaxed);
        }
    }

    /// A try on this instance failed at `now_ms`.
    pub fn record_failure(&self, config: &EjectionConfig, now_ms: u64) -> FailureOutcome {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < config.consecutive_failures.max(1) || self.is_ejected(now_ms) {
            return FailureOutcome::Counted;
        }
        // Several requests may fail at once; only one ejects.
        let current = self.ejected_until_ms.load(Ordering::Relaxed);
        let level = self.level.load(Ordering::Relaxed).min(16);
        let length = config
            .base
            .saturating_mul(1u32 << level)
            .min(config.max.max(config.base));
        let until = now_ms.saturating_add(length.as_millis() as u64).max(1);
        if self
            .ejected_until_ms
            .compare_exchange(current, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return FailureOutcome::Counted;
        }
        self.level.fetch_add(1, Ordering::Relaxed);
        // The next ejection needs a fresh run of failures after this one
        // ends, or the first failed probe doubles it.
        self.consecutive_failures.store(
            config.consecutive_failures.saturating_sub(1),
            Ordering::Relaxed,
        );
        FailureOutcome::Ejected(length)
    }
}

/// How many extra tries a router may make: a share of its requests, plus
/// a floor per second so a quiet router can still retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Extra tries allowed per request forwarded (0.2 = one in five).
    pub ratio: f64,
    /// Extra tries allowed per second whatever the request rate.
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
        }
    }
}

/// One try, in thousandths: the balance is kept in milli-tries so a
/// ratio of 0.2 deposits 200 per request without floating point.
const MILLI: i64 = 1_000;

/// A token bucket of extra tries, filled by requests and by time.
#[derive(Debug)]
pub struct RetryBudget {
    deposit: i64,
    refill: i64,
    cap: i64,
    balance: AtomicI64,
    /// The router clock (ms) of the last time-based refill.
    refilled_at_ms: AtomicU64,
}

impl RetryBudget {
    /// A full budget: `min_per_second` tries available at once.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let refill = i64::from(config.min_per_second) * MILLI;
        let deposit = (config.ratio.clamp(0.0, 10.0) * MILLI as f64) as i64;
        // Enough to absorb a burst of ten seconds of floor, or of a
        // hundred requests' worth of ratio, whichever is larger.
        let cap = (refill * 10).max(deposit * 100).max(MILLI);
        Self {
            deposit,
            refill,
            cap,
            balance: AtomicI64::new(refill),
            refilled_at_ms: AtomicU64::new(0),
        }
    }

    /// A request was forwarded: it earns its share of a retry.
    pub fn deposit(&self) {
        if self.deposit == 0 || self.balance.load(Ordering::Relaxed) >= self.cap {
            return;
        }
        self.balance.fetch_add(self.deposit, Ordering::Relaxed);
    }

    /// Takes one extra try at `now_ms`, if the budget has one.
    pub fn withdraw(&self, now_ms: u64) -> bool {
        self.refill_by_time(now_ms);
        let mut balance = self.balance.load(Ordering::Relaxed);
        loop {
            if balance < MILLI {
                return false;
            }
            match self.balance.compare_exchange_weak(
                balance,
                balance - MILLI,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => balance = actual,
            }
        }
    }

    fn refill_by_time(&self, now_ms: u64) {
        let last = self.refilled_at_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(last);
        if elapsed < 1_000 || self.refill == 0 {
            return;
        }
        if self
            .refilled_at_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let seconds = i64::try_from(elapsed / 1_000).unwrap_or(i64::MAX);
        let added = self.refill.saturating_mul(seconds);
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(added).min(self.cap.max(b)))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EjectionConfig {
        EjectionConfig {
            consecutive_failures: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        }
    }

    #[test]
    fn an_instance_is_ejected_after_consecutive_failures_only() {
        let outlier = Outlier::default();
        let config = config();
        assert_eq!(outlier.record_failure(&config, 10), FailureOutcome::Counted);
        outlier.record_success();
        assert_eq!(outlier.record_failure(&config, 20), FailureOutcome::Counted);
        assert!(!outlier.is_ejected(20));
        assert_eq!(
            outlier.record_failure(&config, 30),
            FailureOutcome::Ejected(Duration::from_secs(1))
        );
        assert!(outlier.is_ejected(30));
        assert!(outlier.is_ejected(1_029));
        assert!(!outlier.is_ejected(1_030));
    }

    #[test]
    fn ejections_grow_until_a_success_and_never_exceed_the_maximum() {
        let outlier = Outlier::default();
        let config = config();
        let mut now = 0;
        outlier.record_failure(&config, now);
        let mut lengths = Vec::new();
        for _ in 0..6 {
            match outlier.record_failure(&config, now) {
                FailureOutcome::Ejected(length) => {
                    lengths.push(length.as_secs());
                    now += length.as_millis() as u64;
                }
                FailureOutcome::Counted => panic!("a failed probe after an ejection re-ejects"),
            }
        }
        assert_eq!(lengths, [1, 2, 4, 8, 8, 8]);
        outlier.record_success();
        outlier.record_failure(&config, now);
        assert_eq!(
            outlier.record_failure(&config, now),
            FailureOutcome::Ejected(Duration::from_secs(1))
        );
    }

    #[test]
    fn failures_while_ejected_do_not_extend_the_ejection() {
        let outlier = Outlier::default();
        let config = config();
        outlier.record_failure(&config, 0);
        outlier.record_failure(&config, 0);
        for _ in 0..10 {
            assert_eq!(
                outlier.record_failure(&config, 500),
                FailureOutcome::Counted
            );
        }
        assert!(!outlier.is_ejected(1_000));
    }

    #[test]
    fn the_budget_allows_a_share_of_requests_plus_a_floor_per_second() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 2,
        });
        // The floor is available at once, then exhausted.
        assert!(budget.withdraw(0));
        assert!(budget.withdraw(0));
        assert!(!budget.withdraw(0));
        // Ten requests earn two tries.
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw(10));
        assert!(budget.withdraw(10));
        assert!(!budget.withdraw(10));
        // A second later the floor is back.
        assert!(budget.withdraw(1_010));
        assert!(budget.withdraw(1_010));
        assert!(!budget.withdraw(1_010));
    }

    #[test]
    fn the_budget_is_capped_so_a_quiet_hour_does_not_buy_a_retry_storm() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.0,
            min_per_second: 1,
        });
        let mut granted = 0;
        while budget.withdraw(3_600_000) {
            granted += 1;
        }
        assert_eq!(granted, 10);
    }
}
