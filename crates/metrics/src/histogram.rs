//! Histogram series: their buckets, their counts, and handles that observe one series
//! without going through the registry.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::MetricError;

/// Which bucket of a histogram counts a value equal to one of its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundRule {
    /// Prometheus': a bucket counts the values up to its bound (`le`), the bound included.
    Inclusive,
    /// TensorFlow's (its `Histogram::Add` picks the bucket with `std::upper_bound`): a value
    /// equal to a bound is counted in the bucket above, and TF Serving prints those counts
    /// under the same `le` labels. It shows for whole numbers: a request of one tf.Example
    /// is under `le="2"` on TF Serving's page, not under `le="1"`.
    Exclusive,
}

/// A histogram's buckets: their upper bounds (ascending) and the rule for values on a bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets {
    pub bounds: &'static [f64],
    pub rule: BoundRule,
}

impl Buckets {
    /// Prometheus' buckets (bounds included).
    pub const fn prometheus(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            rule: BoundRule::Inclusive,
        }
    }

    /// TensorFlow's buckets (bounds excluded), for the metrics soma exports under TF
    /// Serving's names, so that their counts are the ones TF Serving shows.
    pub const fn tensorflow(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            rule: BoundRule::Exclusive,
        }
    }

    /// Whether the bucket up to `bound` counts `value`.
    fn counts(self, bound: f64, value: f64) -> bool {
        match self.rule {
            BoundRule::Inclusive => value <= bound,
            BoundRule::Exclusive => value < bound,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Histogram {
    /// Cumulative: each bucket counts every value up to its bound.
    pub(crate) counts: Vec<u64>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Histogram {
    pub(crate) fn new(buckets: Buckets) -> Histogram {
        Histogram {
            counts: vec![0; buckets.bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub(crate) fn observe(&mut self, buckets: Buckets, value: f64) {
        for (count, bound) in self.counts.iter_mut().zip(buckets.bounds) {
            if buckets.counts(*bound, value) {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// A histogram series is shared with the [`HistogramHandle`]s made for it, which observe it
/// without the registry's lock.
pub(crate) type SharedHistogram = Arc<Mutex<Histogram>>;

/// The series' own lock; a panic while it was held leaves at worst one observation half
/// counted, which is no reason to stop counting.
pub(crate) fn lock(histogram: &SharedHistogram) -> MutexGuard<'_, Histogram> {
    histogram.lock().unwrap_or_else(|e| e.into_inner())
}

/// One histogram series, observed directly: no registry lock, no lookup of the series by
/// its labels. For series updated on every request: get the handle once (see
/// [`Registry::histogram`]), keep it, observe through it.
#[derive(Debug, Clone)]
pub struct HistogramHandle {
    name: Arc<str>,
    buckets: Buckets,
    histogram: SharedHistogram,
}

impl HistogramHandle {
    pub(crate) fn new(name: &str, buckets: Buckets, histogram: SharedHistogram) -> HistogramHandle {
        HistogramHandle {
            name: Arc::from(name),
            buckets,
            histogram,
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) -> Result<(), MetricError> {
        if !value.is_finite() {
            return Err(MetricError::NotFinite(self.name.to_string()));
        }
        lock(&self.histogram).observe(self.buckets, value);
        Ok(())
    }
}
