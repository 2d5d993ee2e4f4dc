//! How long a model version's TensorFlow runs take: the measure that decides whether a
//! prediction may run in place on an async thread (see [`crate::Servable::runs_quickly`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use soma_core::runner::{ModelRunner, RunError};
use soma_core::{ListedSignature, SignatureDef, Tensor};

/// Whether a version's TensorFlow runs are quick: most recent runs took at most `limit`.
///
/// It keeps a moving average (weight 1/8) of the share of runs that took longer, so it
/// answers "is the typical run under the limit", a median, not a mean: on a busy machine a
/// thread is sometimes preempted in the middle of a 30 µs run for a millisecond or more, and
/// one such run would lift a mean above the limit for many runs after it.
///
/// Only the runs themselves are timed, never a wait for a batch: a measure that included
/// waiting would keep a batched model "slow" for as long as its load lasts (its requests
/// would always wait, so always measure slow), even when every run is quick.
#[derive(Debug)]
pub(crate) struct RunClock {
    limit: Duration,
    /// Share of slow runs in 1/[`ALL`] units; [`UNMEASURED`] before the first run.
    slow_share: AtomicU32,
}

const ALL: u32 = 1 << 16;
const UNMEASURED: u32 = u32::MAX;

impl RunClock {
    pub(crate) fn new(limit: Duration) -> RunClock {
        RunClock {
            limit,
            slow_share: AtomicU32::new(UNMEASURED),
        }
    }

    /// Whether most recent runs took at most the limit (unmeasured counts as slow).
    pub(crate) fn is_quick(&self) -> bool {
        self.slow_share.load(Ordering::Relaxed) < ALL / 2
    }

    fn record(&self, took: Duration) {
        let sample = if took > self.limit { ALL } else { 0 };
        let old = self.slow_share.load(Ordering::Relaxed);
        let new = if old == UNMEASURED {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        // Concurrent updates may overwrite each other; an average that misses a sample is
        // still an average.
        self.slow_share.store(new, Ordering::Relaxed);
    }
}

/// A runner that times every run into a [`RunClock`]: the servable and its batcher share
/// it, so runs in place and batched runs are measured alike.
#[derive(Debug)]
pub(crate) struct TimedRunner {
    inner: Box<dyn ModelRunner>,
    clock: Arc<RunClock>,
}

impl TimedRunner {
    pub(crate) fn new(inner: Box<dyn ModelRunner>, clock: Arc<RunClock>) -> TimedRunner {
        TimedRunner { inner, clock }
    }
}

impl ModelRunner for TimedRunner {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        self.inner.signatures()
    }

    fn listed_signatures(&self) -> BTreeMap<String, ListedSignature> {
        self.inner.listed_signatures()
    }

    fn run(&self, signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        let started = Instant::now();
        let outputs = self.inner.run(signature, inputs);
        self.clock.record(started.elapsed());
        outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_micros(100);
    const FAST: Duration = Duration::from_micros(10);
    const SLOW: Duration = Duration::from_micros(400);

    #[test]
    fn quick_while_most_runs_are_quick() {
        let clock = RunClock::new(LIMIT);
        assert!(!clock.is_quick(), "unmeasured counts as slow");
        clock.record(FAST);
        assert!(clock.is_quick(), "the first run sets the measure");
        for _ in 0..16 {
            clock.record(SLOW);
        }
        assert!(!clock.is_quick(), "follows runs that got slow");
        for _ in 0..64 {
            clock.record(FAST);
        }
        assert!(clock.is_quick(), "and runs that got fast again");
    }

    #[test]
    fn a_rare_long_run_does_not_make_a_quick_model_slow() {
        let clock = RunClock::new(LIMIT);
        for _ in 0..32 {
            clock.record(FAST);
        }
        for _ in 0..4 {
            clock.record(Duration::from_millis(20));
            assert!(clock.is_quick());
            for _ in 0..8 {
                clock.record(FAST);
            }
        }
    }
}
