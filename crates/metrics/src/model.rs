//! TF Serving's metrics of a model's runs: `runtime_latency` and the tf.Example counts of
//! MultiInference requests. TF Serving records them in its servable code (`predict_util.cc`,
//! `classifier.cc`, `regressor.cc`, `multi_inference.cc`), not in its front ends, so REST
//! and gRPC requests land in the same series (`API="Predict"` for both).

use std::sync::OnceLock;
use std::time::Duration;

use crate::{Buckets, HistogramHandle, Registry};

/// The wall time of a model's run for a request, in microseconds (TF Serving's name, unit and
/// buckets).
pub const RUNTIME_LATENCY: &str = ":tensorflow:serving:runtime_latency";
/// The number of tf.Examples per MultiInference request (TF Serving's name and buckets).
pub const REQUEST_EXAMPLE_COUNTS: &str = ":tensorflow:serving:request_example_counts";
/// The total number of tf.Examples of MultiInference requests.
pub const REQUEST_EXAMPLE_COUNT_TOTAL: &str = ":tensorflow:serving:request_example_count_total";
/// TF Serving's `runtime` label for a SavedModel run in a TensorFlow session (its TFRT
/// runtime says `TFRT`); soma runs sessions through TensorFlow's C API.
pub const TF1_RUNTIME: &str = "TF1";

/// The APIs whose runs TF Serving times, as its `API` label spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeApi {
    Predict,
    Classify,
    Regress,
}

impl RuntimeApi {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeApi::Predict => "Predict",
            RuntimeApi::Classify => "Classify",
            RuntimeApi::Regress => "Regress",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// TF Serving's example-count buckets: `Buckets::Exponential(1, 2, 15)`, i.e. 1, 2, 4, ...,
/// 16384.
pub fn tf_serving_example_count_buckets() -> &'static [f64] {
    const BUCKETS: [f64; 15] = {
        let mut bounds = [1.0; 15];
        let mut i = 1;
        while i < bounds.len() {
            bounds[i] = bounds[i - 1] * 2.0;
            i += 1;
        }
        bounds
    };
    &BUCKETS
}

/// The run metrics of one loaded model version, labelled with the model's name as requests
/// use it (so only served models have series, whatever names clients send).
///
/// Cheap on the request path: a version's `runtime_latency` series are looked up in the
/// registry once per API, on their first run, and observed through their handles after that
/// (the series' own short lock, no registry lock).
#[derive(Debug)]
pub struct ModelMetrics {
    registry: Registry,
    model: String,
    /// One series per [`RuntimeApi`]; `None` if the registry refused it (the name taken by
    /// a metric of another kind), then nothing is recorded.
    runtime_latency: [OnceLock<Option<HistogramHandle>>; 3],
}

impl ModelMetrics {
    pub fn new(registry: Registry, model: impl Into<String>) -> ModelMetrics {
        ModelMetrics {
            registry,
            model: model.into(),
            runtime_latency: Default::default(),
        }
    }

    /// The model name the series are labelled with.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// One successful run of the model for a request of `api` took `latency` (from its
    /// input tensors to its outputs, a wait for a batch included: TF Serving times
    /// `Session::Run`, which is its batching session's when batching is on).
    pub fn record_runtime_latency(&self, api: RuntimeApi, latency: Duration) {
        let series = self.runtime_latency[api.index()].get_or_init(|| {
            self.registry
                .histogram(
                    RUNTIME_LATENCY,
                    "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                    Buckets::tensorflow(crate::tf_serving_latency_buckets()),
                    &[
                        ("model_name", &self.model),
                        ("API", api.as_str()),
                        ("runtime", TF1_RUNTIME),
                    ],
                )
                .ok()
        });
        if let Some(series) = series {
            // A duration is finite: this cannot fail.
            let _ = series.observe(crate::micros(latency));
        }
    }

    /// A MultiInference request of `examples` tf.Examples ran (TF Serving's
    /// `RecordRequestExampleCount`, which only its MultiInference calls; note the label
    /// `model`, not `model_name`).
    pub fn record_example_count(&self, examples: usize) {
        let labels = [("model", self.model.as_str())];
        let count = examples as f64;
        // Constant names and labels, finite values: these updates cannot fail unless the
        // names are taken by metrics of another kind, which leaves them unrecorded.
        if let Ok(series) = self.registry.histogram(
            REQUEST_EXAMPLE_COUNTS,
            "The number of tensorflow.Examples per request.",
            Buckets::tensorflow(tf_serving_example_count_buckets()),
            &labels,
        ) {
            let _ = series.observe(count);
        }
        let _ = self.registry.counter_add(
            REQUEST_EXAMPLE_COUNT_TOTAL,
            "The total number of tensorflow.Examples.",
            &labels,
            count,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_latency_is_in_microseconds_by_model_api_and_runtime() {
        let registry = Registry::new();
        let metrics = ModelMetrics::new(registry.clone(), "iris");
        metrics.record_runtime_latency(RuntimeApi::Predict, Duration::from_micros(25));
        metrics.record_runtime_latency(RuntimeApi::Predict, Duration::from_micros(40));
        metrics.record_runtime_latency(RuntimeApi::Classify, Duration::from_millis(2));
        let count = |api: &str| {
            registry.value(
                RUNTIME_LATENCY,
                &[("model_name", "iris"), ("API", api), ("runtime", "TF1")],
            )
        };
        assert_eq!(count("Predict"), Some(2.0));
        assert_eq!(count("Classify"), Some(1.0));
        assert_eq!(count("Regress"), None, "no series before a run");
        let page = registry.render();
        let series = r#"{API="Predict",model_name="iris",runtime="TF1""#;
        for line in [
            format!("# TYPE {RUNTIME_LATENCY} histogram\n"),
            format!("{RUNTIME_LATENCY}_bucket{series},le=\"10\"}} 0\n"),
            format!("{RUNTIME_LATENCY}_bucket{series},le=\"32.4\"}} 1\n"),
            format!("{RUNTIME_LATENCY}_bucket{series},le=\"58.32\"}} 2\n"),
            format!("{RUNTIME_LATENCY}_bucket{series},le=\"+Inf\"}} 2\n"),
            format!("{RUNTIME_LATENCY}_sum{series}}} 65\n"),
            format!("{RUNTIME_LATENCY}_count{series}}} 2\n"),
        ] {
            assert!(page.contains(&line), "{line} not in\n{page}");
        }
        // The same buckets as request_latency: 33 bounds from 10 µs.
        assert_eq!(
            page.matches(&format!("{RUNTIME_LATENCY}_bucket{series}"))
                .count(),
            34
        );
    }

    #[test]
    fn a_new_version_records_into_the_series_of_the_one_before() {
        let registry = Registry::new();
        let old = ModelMetrics::new(registry.clone(), "iris");
        old.record_runtime_latency(RuntimeApi::Regress, Duration::from_micros(100));
        let new = ModelMetrics::new(registry.clone(), "iris");
        new.record_runtime_latency(RuntimeApi::Regress, Duration::from_micros(100));
        let labels = [
            ("model_name", "iris"),
            ("API", "Regress"),
            ("runtime", "TF1"),
        ];
        assert_eq!(registry.value(RUNTIME_LATENCY, &labels), Some(2.0));
    }

    #[test]
    fn a_name_taken_by_another_kind_leaves_the_runs_unrecorded() {
        let registry = Registry::new();
        registry
            .counter_add(RUNTIME_LATENCY, "", &[("x", "y")], 1.0)
            .unwrap();
        let metrics = ModelMetrics::new(registry.clone(), "iris");
        metrics.record_runtime_latency(RuntimeApi::Predict, Duration::from_micros(1));
        assert_eq!(registry.value(RUNTIME_LATENCY, &[("x", "y")]), Some(1.0));
    }

    #[test]
    fn example_counts_use_tf_servings_labels_buckets_and_bound_rule() {
        assert_eq!(
            tf_serving_example_count_buckets(),
            [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
                8192.0, 16384.0
            ]
        );
        let registry = Registry::new();
        let metrics = ModelMetrics::new(registry.clone(), "census");
        metrics.record_example_count(1);
        metrics.record_example_count(4);
        metrics.record_example_count(3);
        let page = registry.render();
        let series = r#"{model="census""#;
        for line in [
            format!("# TYPE {REQUEST_EXAMPLE_COUNTS} histogram\n"),
            // TensorFlow's histograms count a value equal to a bound in the bucket above.
            format!("{REQUEST_EXAMPLE_COUNTS}_bucket{series},le=\"1\"}} 0\n"),
            format!("{REQUEST_EXAMPLE_COUNTS}_bucket{series},le=\"2\"}} 1\n"),
            format!("{REQUEST_EXAMPLE_COUNTS}_bucket{series},le=\"4\"}} 2\n"),
            format!("{REQUEST_EXAMPLE_COUNTS}_bucket{series},le=\"8\"}} 3\n"),
            format!("{REQUEST_EXAMPLE_COUNTS}_bucket{series},le=\"16384\"}} 3\n"),
            format!("{REQUEST_EXAMPLE_COUNTS}_bucket{series},le=\"+Inf\"}} 3\n"),
            format!("{REQUEST_EXAMPLE_COUNTS}_sum{series}}} 8\n"),
            format!("{REQUEST_EXAMPLE_COUNTS}_count{series}}} 3\n"),
            format!("# TYPE {REQUEST_EXAMPLE_COUNT_TOTAL} counter\n"),
            format!("{REQUEST_EXAMPLE_COUNT_TOTAL}{series}}} 8\n"),
        ] {
            assert!(page.contains(&line), "{line} not in\n{page}");
        }
    }
}
