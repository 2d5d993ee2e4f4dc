use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::histogram::{Buckets, Histogram, HistogramHandle, SharedHistogram, lock};

/// Latency buckets in seconds, from 1 ms to 10 min (async workloads can be long).
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// TF Serving's latency buckets, in microseconds: `Buckets::Exponential(10, 1.8, 33)`, i.e.
/// 10 × 1.8^i for i in 0..33 (10 µs to ~25 minutes), so dashboards built on its
/// histograms read soma's the same way. Rounded to 6 significant digits, as TensorFlow
/// prints them (`le="32.4"`, not `le="32.400000000000006"`).
pub fn tf_serving_latency_buckets() -> &'static [f64] {
    static BUCKETS: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
        (0..33)
            .map(|i| {
                let bound = 10.0 * 1.8f64.powi(i);
                format!("{bound:.5e}").parse().unwrap_or(bound)
            })
            .collect()
    });
    &BUCKETS
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric update that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error(
        "invalid metric name {0:?}: use letters, digits, '_' and ':', not starting with a digit"
    )]
    InvalidName(String),
    #[error(
        "invalid tag name {0:?}: use letters, digits and '_', not starting with a digit or '__'"
    )]
    InvalidLabel(String),
    #[error("metric {name:?} is already a {existing}, it cannot also be a {requested}")]
    KindConflict {
        name: String,
        existing: &'static str,
        requested: &'static str,
    },
    #[error("tag {0:?} is given twice")]
    DuplicateLabel(String),
    #[error("counter {0:?} can only increase; got a negative value")]
    NegativeCounter(String),
    #[error("metric {0:?}: the value is not a finite number")]
    NotFinite(String),
    #[error("histogram {0:?}: the tag \"le\" is Prometheus's own (each bucket's bound)")]
    BucketLabel(String),
    #[error("metric {name:?} would clash with the {series:?} series of histogram {histogram:?}")]
    SeriesClash {
        name: String,
        histogram: String,
        series: String,
    },
}

pub(crate) type Labels = Vec<(String, String)>;

/// What a family holds: its kind and, for a histogram, its buckets.
#[derive(Debug, Clone, Copy)]
struct Shape {
    kind: Kind,
    buckets: Buckets,
}

impl Shape {
    fn scalar(kind: Kind) -> Shape {
        Shape {
            kind,
            buckets: Buckets::prometheus(&[]),
        }
    }

    fn histogram(buckets: Buckets) -> Shape {
        Shape {
            kind: Kind::Histogram,
            buckets,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Series {
    Scalar(f64),
    Histogram(SharedHistogram),
}

#[derive(Debug)]
pub(crate) struct Family {
    pub(crate) help: String,
    pub(crate) kind: Kind,
    /// A histogram's buckets (set when the family is created); none otherwise.
    pub(crate) buckets: Buckets,
    pub(crate) series: BTreeMap<Labels, Series>,
}

/// A thread-safe set of metric families. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub(crate) families: Arc<Mutex<BTreeMap<String, Family>>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds `value` (≥ 0) to a counter.
    pub fn counter_add(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), MetricError> {
        if value < 0.0 {
            return Err(MetricError::NegativeCounter(name.to_string()));
        }
        self.update(
            name,
            help,
            Shape::scalar(Kind::Counter),
            labels,
            &[value],
            add_to_scalar,
        )
    }

    /// Sets a gauge.
    pub fn gauge_set(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), MetricError> {
        self.update(
            name,
            help,
            Shape::scalar(Kind::Gauge),
            labels,
            &[value],
            |series, _, v| *series = Series::Scalar(v[0]),
        )
    }

    /// Adds `delta` (may be negative) to a gauge.
    pub fn gauge_add(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        delta: f64,
    ) -> Result<(), MetricError> {
        self.update(
            name,
            help,
            Shape::scalar(Kind::Gauge),
            labels,
            &[delta],
            add_to_scalar,
        )
    }

    /// Records one observation in a histogram with [`DEFAULT_BUCKETS`].
    pub fn observe(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), MetricError> {
        self.observe_in(name, help, DEFAULT_BUCKETS, labels, value)
    }

    /// Records one observation in a histogram with these upper bounds (ascending); a
    /// histogram keeps the bounds it was created with.
    pub fn observe_in(
        &self,
        name: &str,
        help: &str,
        buckets: &'static [f64],
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), MetricError> {
        self.observe_all_in(name, help, buckets, labels, &[value])
    }

    /// The handle of a histogram series (created, with no observation, if it is new): see
    /// [`HistogramHandle`]. A histogram keeps the buckets it was created with.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Buckets,
        labels: &[(&str, &str)],
    ) -> Result<HistogramHandle, MetricError> {
        let shared = self.with_series(
            name,
            help,
            Shape::histogram(buckets),
            labels,
            |series, buckets| match series {
                Series::Histogram(histogram) => Some((Arc::clone(histogram), buckets)),
                Series::Scalar(_) => None,
            },
        )?;
        let (histogram, buckets) = shared.expect("the family's kind is checked: a histogram");
        Ok(HistogramHandle::new(name, buckets, histogram))
    }

    /// Records several observations in one histogram series at once: one lock and one
    /// series lookup for all of them (a batch records every member's wait).
    pub fn observe_all_in(
        &self,
        name: &str,
        help: &str,
        buckets: &'static [f64],
        labels: &[(&str, &str)],
        values: &[f64],
    ) -> Result<(), MetricError> {
        self.update(
            name,
            help,
            Shape::histogram(Buckets::prometheus(buckets)),
            labels,
            values,
            |series, buckets, values| {
                if let Series::Histogram(histogram) = series {
                    let mut histogram = lock(histogram);
                    for &value in values {
                        histogram.observe(buckets, value);
                    }
                }
            },
        )
    }

    /// The current value of a counter or gauge series, for tests and status commands.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        match families.get(name)?.series.get(&owned(labels))? {
            Series::Scalar(v) => Some(*v),
            Series::Histogram(h) => Some(lock(h).count as f64),
        }
    }

    fn update(
        &self,
        name: &str,
        help: &str,
        shape: Shape,
        labels: &[(&str, &str)],
        values: &[f64],
        apply: impl FnOnce(&mut Series, Buckets, &[f64]),
    ) -> Result<(), MetricError> {
        if values.iter().any(|v| !v.is_finite()) {
            return Err(MetricError::NotFinite(name.to_string()));
        }
        self.with_series(name, help, shape, labels, |series, buckets| {
            apply(series, buckets, values)
        })
    }

    /// Runs `use_series` on the series of `name` with `labels` (and its family's buckets),
    /// under the registry's lock, creating the family and the series if they are new.
    fn with_series<R>(
        &self,
        name: &str,
        help: &str,
        Shape { kind, buckets }: Shape,
        labels: &[(&str, &str)],
        use_series: impl FnOnce(&mut Series, Buckets) -> R,
    ) -> Result<R, MetricError> {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        // Names and labels are checked when their family or series is created; updating an
        // existing series (every request's case) allocates nothing.
        let new_family = !families.contains_key(name);
        if new_family {
            // Labels are checked before the family exists, so that a refused update leaves
            // nothing behind.
            validate_metric_name(name)?;
            validate_labels(kind, name, labels)?;
            check_series_clash(&families, name, kind)?;
            let family = Family {
                help: help.to_string(),
                kind,
                buckets,
                series: BTreeMap::new(),
            };
            families.insert(name.to_string(), family);
        }
        let family = families.get_mut(name).expect("inserted above");
        if family.kind != kind {
            return Err(MetricError::KindConflict {
                name: name.to_string(),
                existing: family.kind.as_str(),
                requested: kind.as_str(),
            });
        }
        let buckets = family.buckets;
        if let Some(series) = find_series(&mut family.series, labels) {
            return Ok(use_series(series, buckets));
        }
        if !new_family {
            validate_labels(kind, name, labels)?;
        }
        let series = family
            .series
            .entry(owned(labels))
            .or_insert_with(|| match kind {
                Kind::Histogram => Series::Histogram(Arc::new(Mutex::new(Histogram::new(buckets)))),
                Kind::Counter | Kind::Gauge => Series::Scalar(0.0),
            });
        Ok(use_series(series, buckets))
    }
}

/// A counter's or gauge's update by deltas.
fn add_to_scalar(series: &mut Series, _buckets: Buckets, deltas: &[f64]) {
    if let Series::Scalar(total) = series {
        *total += deltas.iter().sum::<f64>();
    }
}

/// The suffixes of a histogram's series on the page.
const HISTOGRAM_SERIES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// A new family whose series would share a name with another's on the page (a gauge
/// `h_count` beside a histogram `h`, or the other way round), which makes Prometheus
/// refuse the whole page.
fn check_series_clash(
    families: &BTreeMap<String, Family>,
    name: &str,
    kind: Kind,
) -> Result<(), MetricError> {
    let clash = |histogram: &str, series: &str| MetricError::SeriesClash {
        name: name.to_string(),
        histogram: histogram.to_string(),
        series: series.to_string(),
    };
    for suffix in HISTOGRAM_SERIES {
        if let Some(stem) = name.strip_suffix(suffix)
            && families
                .get(stem)
                .is_some_and(|f| f.kind == Kind::Histogram)
        {
            return Err(clash(stem, name));
        }
        if kind == Kind::Histogram {
            let series = format!("{name}{suffix}");
            if families.contains_key(&series) {
                return Err(MetricError::SeriesClash {
                    name: series.clone(),
                    histogram: name.to_string(),
                    series,
                });
            }
        }
    }
    Ok(())
}

/// Every label name valid, none twice, and no `le` on a histogram (its buckets' own).
fn validate_labels(kind: Kind, name: &str, labels: &[(&str, &str)]) -> Result<(), MetricError> {
    for (i, (label, _)) in labels.iter().enumerate() {
        validate_label_name(label)?;
        if kind == Kind::Histogram && *label == "le" {
            return Err(MetricError::BucketLabel(name.to_string()));
        }
        if labels[..i].iter().any(|(earlier, _)| earlier == label) {
            return Err(MetricError::DuplicateLabel(label.to_string()));
        }
    }
    Ok(())
}

/// Families with at most this many series are scanned for a series instead of building the
/// owned, sorted key a map lookup needs (several allocations per update).
const SCAN_LIMIT: usize = 32;

/// The existing series for `labels`, given in any order.
fn find_series<'a>(
    series: &'a mut BTreeMap<Labels, Series>,
    labels: &[(&str, &str)],
) -> Option<&'a mut Series> {
    if series.len() > SCAN_LIMIT {
        return series.get_mut(&owned(labels));
    }
    // A stored key has distinct label names, so when every one of its pairs is among as many
    // given pairs, the given pairs are the same set.
    series
        .iter_mut()
        .find(|(key, _)| {
            key.len() == labels.len()
                && key
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| k == lk && v == lv))
        })
        .map(|(_, series)| series)
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    let mut out: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

/// Prometheus metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn validate_metric_name(name: &str) -> Result<(), MetricError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if valid {
        Ok(())
    } else {
        Err(MetricError::InvalidName(name.to_string()))
    }
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn validate_label_name(name: &str) -> Result<(), MetricError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if valid {
        Ok(())
    } else {
        Err(MetricError::InvalidLabel(name.to_string()))
    }
}
