//! The desired instance count of one revision, from the routers'
//! concurrency readings: Knative's KPA, with its documented defaults, and
//! two changes its users ask for.
//!
//! - **Stable mode:** desired = ceil(average in-flight requests over the
//!   stable window / (target concurrency × target utilisation)).
//! - **Panic mode:** when the panic window alone asks for at least the
//!   panic threshold (200 %) of the ready instances, the count follows the
//!   panic window and only grows, until a whole stable window passes
//!   without a new trigger.
//! - **Scale to zero:** with no floor, the last instance stops once no
//!   request arrived for the stable window plus the grace period.
//! - **Scale from zero** (changed from Knative, #4344): with no ready
//!   instance the count is sized by the held requests alone,
//!   ceil(held / target concurrency), never by a panic-mode estimate. Once
//!   those instances are ready, panic mode follows for a stable window, so
//!   a step from zero reaches what the load needs within a panic window or
//!   two instead of waiting for the stable average to catch up.
//! - **Minimum while active** (new, Knative #15154): while requests arrive
//!   (within the stable window of the last one) the count stays at least
//!   `min_instances_while_active`, and may still fall to `min_instances`
//!   when idle.
//!
//! A reading is the in-flight requests over all members for one tick; the
//! decider keeps only a small [`Memory`] between calls. Time is whatever
//! clock the caller gives (milliseconds).

use super::ScalingSettings;

/// In-flight requests (served and held) summed over every router, for the
/// tick that ended at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub at_ms: u64,
    pub concurrency: f64,
}

/// What the decider remembers between calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Panic mode lasts until then.
    panic_until_ms: Option<u64>,
    /// The count panic mode may not go below (its last decision).
    panic_floor: u32,
    /// The last time a request was seen (or the decider's first call, so a
    /// restarted decider waits a whole idle period before scaling to zero).
    last_active_ms: Option<u64>,
    /// Readings up to this time were looked at by an earlier call.
    seen_until_ms: Option<u64>,
}

/// What the decider is shown at one tick.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub now_ms: u64,
    /// Readings of any age and order; those outside the stable window are
    /// ignored.
    pub readings: &'a [Reading],
    /// Instances ready now.
    pub ready: u32,
    /// Requests the routers hold for this revision, waiting for a ready
    /// instance.
    pub queued: u32,
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stable,
    Panic,
    /// No ready instance and requests held: sized by the held requests.
    FromZero,
    /// Idle past the stable window: keeping one instance through the grace
    /// period, or none after it.
    Idle,
}

impl Mode {
    /// The label `/metrics` and the audit log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Panic => "panic",
            Self::FromZero => "from-zero",
            Self::Idle => "idle",
        }
    }
}

/// A decision with the inputs that made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub mode: Mode,
    /// Average in-flight requests over the stable window.
    pub stable_concurrency: f64,
    /// Average in-flight requests over the panic window.
    pub panic_concurrency: f64,
}

fn average(readings: &[Reading], now_ms: u64, window_ms: u64) -> f64 {
    let from = now_ms.saturating_sub(window_ms);
    let (sum, count) = readings
        .iter()
        .filter(|r| r.at_ms > from && r.at_ms <= now_ms)
        .fold((0.0, 0u32), |(sum, count), r| {
            (sum + r.concurrency.max(0.0), count + 1)
        });
    if count == 0 {
        0.0
    } else {
        sum / f64::from(count)
    }
}

/// Instances for `concurrency` at `per` requests each, saturating. A load
/// of exactly N instances' worth is N, not N + 1 by a rounding error.
fn instances_for(concurrency: f64, per: f64) -> u32 {
    let needed = (concurrency / per - 1e-9).ceil();
    if needed.is_finite() && needed > 0.0 {
        needed.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// The desired instance count for the revision `settings` describe.
pub fn decide(settings: &ScalingSettings, memory: &mut Memory, observed: Observed<'_>) -> Decision {
    let now = observed.now_ms;
    let stable_ms = u64::from(settings.stable_window_seconds) * 1_000;
    let panic_ms = u64::from(settings.panic_window_seconds) * 1_000;
    let stable_concurrency = average(observed.readings, now, stable_ms);
    let panic_concurrency = average(observed.readings, now, panic_ms);
    // Requests arrived since the last call (on the first call: within the
    // stable window).
    let since = memory
        .seen_until_ms
        .unwrap_or_else(|| now.saturating_sub(stable_ms));
    let arriving = observed.queued > 0
        || observed
            .readings
            .iter()
            .any(|r| r.concurrency > 0.0 && r.at_ms <= now && r.at_ms > since);
    memory.seen_until_ms = Some(now.max(since));
    if arriving {
        memory.last_active_ms = Some(now);
    }
    let last_active = *memory.last_active_ms.get_or_insert(now);
    let idle_ms = now.saturating_sub(last_active);
    let floor = if idle_ms < stable_ms {
        settings
            .min_instances
            .max(settings.min_instances_while_active)
    } else {
        settings.min_instances
    };
    let per = settings.per_instance();
    let (wanted, mode) = if observed.ready == 0 && observed.queued > 0 {
        // A cold start is a burst by definition: once its instances are
        // ready the count follows the panic window (and only grows) for a
        // stable window, as Knative's activator-driven panic does, instead
        // of a stable average diluted by the idle time before the step.
        let by_queue = observed.queued.div_ceil(settings.target_concurrency);
        memory.panic_until_ms = Some(now + stable_ms);
        memory.panic_floor = by_queue.min(settings.max_instances);
        (by_queue, Mode::FromZero)
    } else {
        let by_stable = instances_for(stable_concurrency, per);
        let by_panic = instances_for(panic_concurrency, per);
        let threshold = f64::from(settings.panic_threshold_percent) / 100.0;
        if observed.ready > 0 && f64::from(by_panic) >= f64::from(observed.ready) * threshold {
            if memory.panic_until_ms.is_none_or(|until| until <= now) {
                memory.panic_floor = observed.ready;
            }
            memory.panic_until_ms = Some(now + stable_ms);
        }
        match memory.panic_until_ms {
            Some(until) if until > now => {
                let desired = by_panic.max(memory.panic_floor);
                (desired, Mode::Panic)
            }
            _ => {
                memory.panic_until_ms = None;
                memory.panic_floor = 0;
                if by_stable == 0 {
                    // Nothing over the whole stable window: one instance
                    // through the grace period, then none.
                    let grace_ms = u64::from(settings.scale_to_zero_grace_seconds) * 1_000;
                    let keep = u32::from(idle_ms < stable_ms + grace_ms && observed.ready > 0);
                    (keep, Mode::Idle)
                } else {
                    (by_stable, Mode::Stable)
                }
            }
        }
    };
    let desired = wanted.max(floor).min(settings.max_instances);
    if mode == Mode::Panic {
        memory.panic_floor = desired;
    }
    Decision {
        desired,
        mode,
        stable_concurrency,
        panic_concurrency,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TICK_MS: u64 = 2_000;

    /// Runs the decider every tick over `loads` (concurrency per tick),
    /// with instances becoming ready `start_ticks` after they are wanted.
    struct Run {
        settings: ScalingSettings,
        memory: Memory,
        readings: Vec<Reading>,
        now_ms: u64,
        ready: u32,
    }

    impl Run {
        fn new(settings: ScalingSettings, ready: u32) -> Self {
            Self {
                settings,
                memory: Memory::default(),
                readings: Vec::new(),
                now_ms: 1_000_000,
                ready,
            }
        }

        fn tick(&mut self, concurrency: f64, queued: u32) -> Decision {
            self.now_ms += TICK_MS;
            self.readings.push(Reading {
                at_ms: self.now_ms,
                concurrency,
            });
            let decision = decide(
                &self.settings,
                &mut self.memory,
                Observed {
                    now_ms: self.now_ms,
                    readings: &self.readings,
                    ready: self.ready,
                    queued,
                },
            );
            // Instances start within one tick.
            self.ready = decision.desired;
            decision
        }
    }

    #[test]
    fn a_step_to_a_load_needing_four_starts_four_within_two_panic_windows() {
        let settings = ScalingSettings {
            min_instances: 1,
            ..ScalingSettings::default()
        };
        let mut run = Run::new(settings, 1);
        for _ in 0..40 {
            assert_eq!(run.tick(0.0, 0).desired, 1);
        }
        let load = 4.0 * settings.per_instance();
        let mut most = 0;
        let mut reached_at = None;
        for tick in 1..=60u64 {
            let decision = run.tick(load, 0);
            most = most.max(decision.desired);
            if decision.desired == 4 && reached_at.is_none() {
                reached_at = Some(tick * TICK_MS);
            }
        }
        assert_eq!(most, 4, "never more than the load needs");
        let within = 2 * u64::from(settings.panic_window_seconds) * 1_000;
        assert!(
            reached_at.is_some_and(|at| at <= within),
            "reached 4 at {reached_at:?} ms, bound {within} ms"
        );
    }

    #[test]
    fn a_step_from_zero_starts_what_the_held_requests_need_then_reaches_four() {
        // A load needing 4 instances (at the target utilisation) arrives at
        // a revision scaled to zero: the cold start is sized by the held
        // requests, then the count reaches 4 within two panic windows and
        // never goes above it.
        let settings = ScalingSettings::default();
        let mut run = Run::new(settings, 0);
        run.ready = 0;
        for _ in 0..40 {
            assert_eq!(run.tick(0.0, 0).desired, 0, "idle at zero");
        }
        let load = 4.0 * settings.per_instance();
        let held = load as u32;
        let first = run.tick(load, held);
        assert_eq!(first.mode, Mode::FromZero);
        assert_eq!(first.desired, held.div_ceil(settings.target_concurrency));
        let mut most = first.desired;
        let mut reached_at = None;
        for tick in 2..=60u64 {
            let decision = run.tick(load, 0);
            most = most.max(decision.desired);
            if decision.desired == 4 && reached_at.is_none() {
                reached_at = Some(tick * TICK_MS);
            }
        }
        assert_eq!(most, 4, "never more than the load needs");
        let within = 2 * u64::from(settings.panic_window_seconds) * 1_000;
        assert!(
            reached_at.is_some_and(|at| at <= within),
            "reached 4 at {reached_at:?} ms, bound {within} ms"
        );
    }

    #[test]
    fn scale_from_zero_is_sized_by_the_held_requests() {
        let mut run = Run::new(ScalingSettings::default(), 0);
        run.ready = 0;
        let decision = run.tick(250.0, 250);
        assert_eq!(decision.mode, Mode::FromZero);
        assert_eq!(decision.desired, 3, "ceil(250 / 100)");
        let mut run = Run::new(ScalingSettings::default(), 0);
        assert_eq!(run.tick(1.0, 1).desired, 1);
    }

    #[test]
    fn an_idle_revision_reaches_zero_after_the_window_and_the_grace() {
        let settings = ScalingSettings::default();
        let mut run = Run::new(settings, 0);
        run.tick(5.0, 5);
        for _ in 0..10 {
            run.tick(5.0, 0);
        }
        assert_eq!(run.ready, 1);
        let idle_bound =
            u64::from(settings.stable_window_seconds + settings.scale_to_zero_grace_seconds)
                * 1_000;
        let mut zero_at = None;
        for tick in 1..=100u64 {
            let decision = run.tick(0.0, 0);
            if decision.desired == 0 && zero_at.is_none() {
                zero_at = Some(tick * TICK_MS);
            }
            if zero_at.is_none() {
                assert_eq!(decision.desired, 1, "kept through the grace period");
            }
        }
        let at = zero_at.expect("scaled to zero");
        assert!(
            at >= idle_bound && at <= idle_bound + 2 * TICK_MS,
            "{at} ms"
        );
    }

    #[test]
    fn the_floor_while_active_holds_only_while_requests_arrive() {
        let settings = ScalingSettings {
            min_instances_while_active: 2,
            ..ScalingSettings::default()
        };
        let mut run = Run::new(settings, 0);
        assert_eq!(run.tick(1.0, 1).desired, 2);
        for _ in 0..10 {
            assert_eq!(run.tick(1.0, 0).desired, 2);
        }
        let mut last = 2;
        for _ in 0..100 {
            last = run.tick(0.0, 0).desired;
        }
        assert_eq!(last, 0, "idle: down to min_instances");
    }

    fn settings() -> impl Strategy<Value = ScalingSettings> {
        (
            0u32..4,
            1u32..12,
            1u32..200,
            1u32..=100,
            6u32..120,
            1u32..=6,
            110u32..400,
            0u32..60,
            0u32..6,
        )
            .prop_map(
                |(min, span, target, util, stable, panic, threshold, grace, while_active)| {
                    let max = min + span;
                    ScalingSettings {
                        min_instances: min,
                        max_instances: max,
                        target_concurrency: target,
                        target_utilization_percent: util,
                        stable_window_seconds: stable,
                        panic_window_seconds: panic.min(stable),
                        panic_threshold_percent: threshold,
                        scale_to_zero_grace_seconds: grace,
                        min_instances_while_active: while_active.min(max),
                        ..ScalingSettings::default()
                    }
                },
            )
    }

    proptest! {
        /// The simulator's invariant, on any load: the count stays within
        /// min..=max, and at least the floor while requests arrive; from
        /// zero it never exceeds what the held requests need.
        #[test]
        fn the_count_stays_within_its_bounds_on_any_load(
            settings in settings(),
            loads in proptest::collection::vec((0u32..2_000, 0u32..300, 0u32..3), 1..120),
        ) {
            prop_assert_eq!(settings.validate(), Ok(()));
            let mut run = Run::new(settings, settings.min_instances);
            for (concurrency, queued, restarts) in loads {
                if restarts == 0 {
                    // An instance crashed: fewer ready than wanted.
                    run.ready = run.ready.saturating_sub(1);
                }
                let ready_before = run.ready;
                let decision = run.tick(f64::from(concurrency), queued);
                prop_assert!(decision.desired >= settings.min_instances);
                prop_assert!(decision.desired <= settings.max_instances);
                if concurrency > 0 || queued > 0 {
                    let floor = settings.min_instances.max(settings.min_instances_while_active);
                    prop_assert!(decision.desired >= floor, "{decision:?}");
                }
                if ready_before == 0 && queued > 0 {
                    let need = queued.div_ceil(settings.target_concurrency);
                    let floor = settings.min_instances.max(settings.min_instances_while_active);
                    let cap = need.max(floor).min(settings.max_instances);
                    prop_assert!(decision.desired <= cap, "{decision:?}, need {need}");
                }
            }
        }

        /// In panic mode the count never falls.
        #[test]
        fn panic_mode_never_scales_down(
            settings in settings(),
            loads in proptest::collection::vec(0u32..2_000, 1..120),
        ) {
            let mut run = Run::new(settings, settings.min_instances.max(1));
            let mut previous: Option<Decision> = None;
            for concurrency in loads {
                let decision = run.tick(f64::from(concurrency), 0);
                if let (Some(before), Mode::Panic) = (previous, decision.mode)
                    && before.mode == Mode::Panic
                {
                    prop_assert!(decision.desired >= before.desired, "{before:?} -> {decision:?}");
                }
                previous = Some(decision);
            }
        }

        /// A constant load never gets more instances than it needs (the
        /// step target: no overshoot), once the windows hold only it.
        #[test]
        fn a_constant_load_never_gets_more_than_it_needs(
            settings in settings(),
            needed in 1u32..10,
        ) {
            let mut run = Run::new(settings, settings.min_instances.max(1));
            let load = f64::from(needed) * settings.per_instance();
            let floor = settings.min_instances.max(settings.min_instances_while_active);
            for _ in 0..120 {
                let decision = run.tick(load, 0);
                prop_assert!(decision.desired <= needed.max(floor).min(settings.max_instances), "{decision:?}");
            }
            prop_assert_eq!(run.ready, needed.max(floor).min(settings.max_instances));
        }
    }
}
