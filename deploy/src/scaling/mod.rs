//! Request-driven autoscaling (issue #19): a revision's scaling settings,
//! validated, and the pure decider that turns the routers' concurrency
//! readings into a desired instance count.
//!
//! Owns: [`ScalingSettings`] (what an operator or a bundle's `runtime`
//! section asks for, with Knative's KPA defaults where Knative has one) and
//! [`decider`] (stable and panic windows, scale to zero after a grace
//! period, scale from zero sized by the held requests).
//!
//! Must not touch: clocks, the network, the store or any instance. The
//! decider is a function of its readings, the time it is given and its own
//! small memory, so the node's actor and the simulator run the same code
//! and a property test can drive it through any load.

pub mod decider;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most instances one revision may ask for.
pub const MAX_INSTANCES_LIMIT: u32 = 1_000;
/// Most in-flight requests one instance may be sized for (Cloud Run's
/// ceiling).
pub const TARGET_CONCURRENCY_LIMIT: u32 = 1_000;
/// Longest stable window and longest scale-to-zero grace: an hour.
pub const WINDOW_SECONDS_LIMIT: u32 = 3_600;
/// Shortest stable window: Knative's lower bound.
pub const STABLE_WINDOW_SECONDS_MIN: u32 = 6;
/// Most requests a router may hold for one revision while it starts.
pub const QUEUE_SIZE_LIMIT: u32 = 10_000;
/// Longest a held request may wait for a cold start: ten minutes.
pub const QUEUE_WAIT_SECONDS_LIMIT: u32 = 600;

/// How a revision scales with its traffic. Every field has a default, so
/// `{}` is a valid answer: scale to zero after 30 s idle, at most 10
/// instances of 100 concurrent requests each at 70 % utilisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalingSettings {
    /// Instances kept at all times; 0 allows scale to zero.
    #[serde(default)]
    pub min_instances: u32,
    /// Instances never exceeded, whatever the load (1..=1000).
    #[serde(default = "defaults::max_instances")]
    pub max_instances: u32,
    /// In-flight requests one instance is sized for (1..=1000; Knative's
    /// default 100).
    #[serde(default = "defaults::target_concurrency")]
    pub target_concurrency: u32,
    /// Share of `target_concurrency` the decider aims at, in percent
    /// (1..=100; Knative's default 70), leaving headroom for bursts.
    #[serde(default = "defaults::target_utilization_percent")]
    pub target_utilization_percent: u32,
    /// Window the steady desired count averages over (6..=3600 s; Knative's
    /// default 60 s). Also how long panic mode lasts after its last trigger.
    #[serde(default = "defaults::stable_window_seconds")]
    pub stable_window_seconds: u32,
    /// Window a sudden burst is judged over (1 s up to the stable window;
    /// Knative's default 6 s, a tenth of the stable window).
    #[serde(default = "defaults::panic_window_seconds")]
    pub panic_window_seconds: u32,
    /// Panic when the panic window asks for this share of the ready
    /// instances, in percent (110..=1000; Knative's default 200). In panic
    /// the count only grows, so a burst is never answered by a scale-down.
    #[serde(default = "defaults::panic_threshold_percent")]
    pub panic_threshold_percent: u32,
    /// Idle time after the stable window empties before the last instance
    /// stops (0..=3600 s; Knative's default 30 s).
    #[serde(default = "defaults::scale_to_zero_grace_seconds")]
    pub scale_to_zero_grace_seconds: u32,
    /// Instances kept while requests arrive (within the stable window), on
    /// top of `min_instances`: scale to zero when idle, but never below this
    /// while active (Knative #15154). 0 = no such floor.
    #[serde(default)]
    pub min_instances_while_active: u32,
    /// Requests a router holds for this revision while no instance is
    /// ready (1..=10000); past it a request is answered 503 with
    /// `Retry-After`.
    #[serde(default = "defaults::queue_size")]
    pub queue_size: u32,
    /// Longest a held request waits for an instance (1..=600 s); past it,
    /// 503 with `Retry-After`.
    #[serde(default = "defaults::queue_wait_seconds")]
    pub queue_wait_seconds: u32,
}

mod defaults {
    pub fn max_instances() -> u32 {
        10
    }
    pub fn target_concurrency() -> u32 {
        100
    }
    pub fn target_utilization_percent() -> u32 {
        70
    }
    pub fn stable_window_seconds() -> u32 {
        60
    }
    pub fn panic_window_seconds() -> u32 {
        6
    }
    pub fn panic_threshold_percent() -> u32 {
        200
    }
    pub fn scale_to_zero_grace_seconds() -> u32 {
        30
    }
    pub fn queue_size() -> u32 {
        100
    }
    pub fn queue_wait_seconds() -> u32 {
        30
    }
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self {
            min_instances: 0,
            max_instances: defaults::max_instances(),
            target_concurrency: defaults::target_concurrency(),
            target_utilization_percent: defaults::target_utilization_percent(),
            stable_window_seconds: defaults::stable_window_seconds(),
            panic_window_seconds: defaults::panic_window_seconds(),
            panic_threshold_percent: defaults::panic_threshold_percent(),
            scale_to_zero_grace_seconds: defaults::scale_to_zero_grace_seconds(),
            min_instances_while_active: 0,
            queue_size: defaults::queue_size(),
            queue_wait_seconds: defaults::queue_wait_seconds(),
        }
    }
}

/// Why scaling settings are refused: the field, what is wrong, and the
/// range that would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScalingError {
    #[error("scaling.{field} is {value}; it must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error(
        "scaling.min_instances ({min}) is above scaling.max_instances ({max}); raise max_instances or lower min_instances"
    )]
    MinAboveMax { min: u32, max: u32 },
    #[error(
        "scaling.min_instances_while_active ({while_active}) is above scaling.max_instances ({max}); raise max_instances or lower min_instances_while_active"
    )]
    WhileActiveAboveMax { while_active: u32, max: u32 },
}

impl ScalingError {
    /// What is wrong, without the field's name (for errors that name the
    /// field apart, as `apply`'s and the manifest's do).
    pub fn detail(&self) -> String {
        match self {
            Self::OutOfRange {
                value, min, max, ..
            } => format!("is {value}; it must be between {min} and {max}"),
            Self::MinAboveMax { min, max } => format!(
                "({min}) is above max_instances ({max}); raise max_instances or lower min_instances"
            ),
            Self::WhileActiveAboveMax { while_active, max } => format!(
                "({while_active}) is above max_instances ({max}); raise max_instances or lower min_instances_while_active"
            ),
        }
    }

    /// The field at fault, without the `scaling.` prefix.
    pub fn field(&self) -> &'static str {
        match self {
            Self::OutOfRange { field, .. } => field,
            Self::MinAboveMax { .. } => "min_instances",
            Self::WhileActiveAboveMax { .. } => "min_instances_while_active",
        }
    }
}

fn within(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), ScalingError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ScalingError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

impl ScalingSettings {
    /// Checks every bound; the first problem found, field by field.
    pub fn validate(&self) -> Result<(), ScalingError> {
        within("max_instances", self.max_instances, 1, MAX_INSTANCES_LIMIT)?;
        within("min_instances", self.min_instances, 0, MAX_INSTANCES_LIMIT)?;
        if self.min_instances > self.max_instances {
            return Err(ScalingError::MinAboveMax {
                min: self.min_instances,
                max: self.max_instances,
            });
        }
        if self.min_instances_while_active > self.max_instances {
            return Err(ScalingError::WhileActiveAboveMax {
                while_active: self.min_instances_while_active,
                max: self.max_instances,
            });
        }
        within(
            "target_concurrency",
            self.target_concurrency,
            1,
            TARGET_CONCURRENCY_LIMIT,
        )?;
        within(
            "target_utilization_percent",
            self.target_utilization_percent,
            1,
            100,
        )?;
        within(
            "stable_window_seconds",
            self.stable_window_seconds,
            STABLE_WINDOW_SECONDS_MIN,
            WINDOW_SECONDS_LIMIT,
        )?;
        within(
            "panic_window_seconds",
            self.panic_window_seconds,
            1,
            self.stable_window_seconds,
        )?;
        within(
            "panic_threshold_percent",
            self.panic_threshold_percent,
            110,
            1_000,
        )?;
        within(
            "scale_to_zero_grace_seconds",
            self.scale_to_zero_grace_seconds,
            0,
            WINDOW_SECONDS_LIMIT,
        )?;
        within("queue_size", self.queue_size, 1, QUEUE_SIZE_LIMIT)?;
        within(
            "queue_wait_seconds",
            self.queue_wait_seconds,
            1,
            QUEUE_WAIT_SECONDS_LIMIT,
        )?;
        Ok(())
    }

    /// Instances a revision starts with when it warms: `min_instances`, and
    /// at least one, so that warming proves the revision runs (Knative's
    /// initial scale of 1); an idle revision scales to zero afterwards.
    pub fn initial_instances(&self) -> u32 {
        self.min_instances.max(1).min(self.max_instances)
    }

    /// `count` brought within `min_instances..=max_instances`.
    pub fn clamp(&self, count: u32) -> u32 {
        count.clamp(self.min_instances, self.max_instances)
    }

    /// In-flight requests one instance should carry: the target concurrency
    /// at the target utilisation.
    pub fn per_instance(&self) -> f64 {
        f64::from(self.target_concurrency) * f64::from(self.target_utilization_percent) / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_answers_take_the_documented_defaults() {
        let settings: ScalingSettings = serde_json::from_str("{}").expect("defaults");
        assert_eq!(settings, ScalingSettings::default());
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.per_instance(), 70.0);
    }

    #[test]
    fn each_bad_bound_names_its_field() {
        let base = ScalingSettings::default();
        let cases: Vec<(ScalingSettings, &str)> = vec![
            (
                ScalingSettings {
                    min_instances: 5,
                    max_instances: 4,
                    ..base
                },
                "min_instances",
            ),
            (
                ScalingSettings {
                    target_concurrency: 0,
                    ..base
                },
                "target_concurrency",
            ),
            (
                ScalingSettings {
                    max_instances: 0,
                    ..base
                },
                "max_instances",
            ),
            (
                ScalingSettings {
                    stable_window_seconds: 5,
                    ..base
                },
                "stable_window_seconds",
            ),
            (
                ScalingSettings {
                    panic_window_seconds: 61,
                    ..base
                },
                "panic_window_seconds",
            ),
            (
                ScalingSettings {
                    panic_threshold_percent: 100,
                    ..base
                },
                "panic_threshold_percent",
            ),
            (
                ScalingSettings {
                    target_utilization_percent: 101,
                    ..base
                },
                "target_utilization_percent",
            ),
            (
                ScalingSettings {
                    queue_size: 0,
                    ..base
                },
                "queue_size",
            ),
            (
                ScalingSettings {
                    queue_wait_seconds: 0,
                    ..base
                },
                "queue_wait_seconds",
            ),
            (
                ScalingSettings {
                    min_instances_while_active: 11,
                    ..base
                },
                "min_instances_while_active",
            ),
        ];
        for (settings, field) in cases {
            let error = settings.validate().expect_err(field);
            assert_eq!(error.field(), field, "{error}");
            assert!(error.to_string().contains(field), "{error}");
        }
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let error =
            serde_json::from_str::<ScalingSettings>(r#"{"max_instance": 3}"#).expect_err("a typo");
        assert!(error.to_string().contains("max_instance"), "{error}");
    }
}
