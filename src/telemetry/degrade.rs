//! Adaptive degradation (the circuit breaker): while export keeps failing, lower the root
//! sampling ratio step by step; climb back as export recovers.
//!
//! Only the *root* sampling decision is scaled (the lead multiplies
//! [`SamplingFactor::get`] into the rules' `root_ratio`); header propagation and sampled
//! decisions already made upstream are never degraded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::config::DegradationConfig;

/// The current root sampling factor, shared lock-free with the request path.
#[derive(Debug, Clone)]
pub(crate) struct SamplingFactor(Arc<AtomicU64>);

impl SamplingFactor {
    pub(crate) fn new(value: f64) -> Self {
        SamplingFactor(Arc::new(AtomicU64::new(value.to_bits())))
    }

    /// The factor in `(0, 1]` to multiply into the root sampling ratio.
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// A level change, for the metric and the log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LevelChange {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) factor: f64,
}

/// The breaker's state; owned by the export task alone.
#[derive(Debug)]
pub(crate) struct Degradation {
    levels: Vec<f64>,
    failures_to_degrade: u32,
    successes_to_recover: u32,
    level: usize,
    failures: u32,
    successes: u32,
    factor: SamplingFactor,
}

impl Degradation {
    pub(crate) fn new(config: &DegradationConfig, factor: SamplingFactor) -> Self {
        let levels = if config.levels.is_empty() {
            vec![1.0]
        } else {
            config.levels.clone()
        };
        factor.set(levels[0]);
        Degradation {
            levels,
            failures_to_degrade: config.failures_to_degrade.max(1),
            successes_to_recover: config.successes_to_recover.max(1),
            level: 0,
            failures: 0,
            successes: 0,
            factor,
        }
    }

    /// A batch was exported.
    pub(crate) fn on_success(&mut self) -> Option<LevelChange> {
        self.failures = 0;
        if self.level == 0 {
            return None;
        }
        self.successes += 1;
        if self.successes < self.successes_to_recover {
            return None;
        }
        self.successes = 0;
        Some(self.move_to(self.level - 1))
    }

    /// A batch failed after its retries.
    pub(crate) fn on_failure(&mut self) -> Option<LevelChange> {
        self.successes = 0;
        self.failures += 1;
        if self.failures < self.failures_to_degrade || self.level + 1 >= self.levels.len() {
            return None;
        }
        self.failures = 0;
        Some(self.move_to(self.level + 1))
    }

    fn move_to(&mut self, to: usize) -> LevelChange {
        let change = LevelChange {
            from: self.level,
            to,
            factor: self.levels[to],
        };
        self.level = to;
        self.factor.set(change.factor);
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(fail: u32, ok: u32) -> (Degradation, SamplingFactor) {
        let f = SamplingFactor::new(1.0);
        let cfg = DegradationConfig {
            failures_to_degrade: fail,
            successes_to_recover: ok,
            ..DegradationConfig::default()
        };
        (Degradation::new(&cfg, f.clone()), f)
    }

    #[test]
    fn steps_down_after_sustained_failure_and_stops_at_the_floor() {
        let (mut d, f) = breaker(2, 1);
        assert_eq!(d.on_failure(), None);
        assert_eq!(d.on_failure().map(|c| c.to), Some(1));
        assert_eq!(f.get(), 0.5);
        for _ in 0..10 {
            d.on_failure();
        }
        assert_eq!(f.get(), 0.01);
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let (mut d, f) = breaker(2, 1);
        d.on_failure();
        d.on_success();
        assert_eq!(d.on_failure(), None);
        assert_eq!(f.get(), 1.0);
    }

    #[test]
    fn climbs_back_one_step_per_run_of_successes() {
        let (mut d, f) = breaker(1, 2);
        d.on_failure();
        d.on_failure();
        assert_eq!(f.get(), 0.1);
        assert_eq!(d.on_success(), None);
        assert_eq!(
            d.on_success(),
            Some(LevelChange {
                from: 2,
                to: 1,
                factor: 0.5
            })
        );
        d.on_success();
        d.on_success();
        assert_eq!(f.get(), 1.0);
        assert_eq!(d.on_success(), None, "healthy stays healthy");
    }
}
