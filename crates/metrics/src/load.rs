//! The metrics of loading a model version: TensorFlow's SavedModel load counters (recorded
//! by its `LoadSavedModel`, which TF Serving calls for every version) and TF Serving's
//! warm-up latency. Each is labelled with the version's path as TF Serving names it: its
//! base path joined with the version's folder (an `s3://` URL for a model on S3).

use std::time::Duration;

use crate::{Buckets, Registry};

/// Load attempts of SavedModel versions by path and outcome (`success` / `fail`).
pub const LOAD_ATTEMPT_COUNT: &str = ":tensorflow:cc:saved_model:load_attempt_count";
/// The microseconds spent loading each SavedModel version, failed attempts included (a
/// counter, as TensorFlow keeps it, whatever its description says).
pub const LOAD_LATENCY: &str = ":tensorflow:cc:saved_model:load_latency";
/// The wall time of replaying a version's recorded warm-up requests, in microseconds.
pub const MODEL_WARMUP_LATENCY: &str = ":tensorflow:serving:model_warmup_latency";

impl Registry {
    /// One attempt to load the SavedModel version at `model_path` (TensorFlow's load alone,
    /// not the warm-up that follows), `loaded` or not, that took `latency`.
    pub fn record_saved_model_load(&self, model_path: &str, loaded: bool, latency: Duration) {
        let status = if loaded { "success" } else { "fail" };
        // Constant names and labels, finite values: these updates cannot fail.
        let _ = self.counter_add(
            LOAD_ATTEMPT_COUNT,
            "The number of times a SavedModel was successfully loaded.",
            &[("model_path", model_path), ("status", status)],
            1.0,
        );
        // Whole microseconds, as TensorFlow adds them.
        let _ = self.counter_add(
            LOAD_LATENCY,
            "Latency in microseconds for SavedModels that were successfully loaded.",
            &[("model_path", model_path)],
            latency.as_micros() as f64,
        );
    }

    /// The recorded warm-up requests of the version at `model_path` replayed successfully
    /// in `latency`. TF Serving labels a failed warm-up with its error's text, and only some
    /// failures (most return before the metric is recorded): soma records successes only.
    pub fn record_model_warmup(&self, model_path: &str, latency: Duration) {
        if let Ok(series) = self.histogram(
            MODEL_WARMUP_LATENCY,
            "Distribution of wall time (in microseconds) for warming up the model.",
            Buckets::tensorflow(crate::tf_serving_latency_buckets()),
            &[("model_path", model_path), ("status", "OK")],
        ) {
            let _ = series.observe(crate::micros(latency));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_are_counted_by_path_and_outcome_and_timed_in_whole_microseconds() {
        let registry = Registry::new();
        let path = "s3://models/iris/1";
        registry.record_saved_model_load(path, true, Duration::from_nanos(1_500_700));
        registry.record_saved_model_load("/models/iris/2", false, Duration::from_millis(3));
        registry.record_saved_model_load(path, true, Duration::from_millis(1));
        let page = registry.render();
        for line in [
            format!("# TYPE {LOAD_ATTEMPT_COUNT} counter\n"),
            format!("{LOAD_ATTEMPT_COUNT}{{model_path=\"{path}\",status=\"success\"}} 2\n"),
            format!("{LOAD_ATTEMPT_COUNT}{{model_path=\"/models/iris/2\",status=\"fail\"}} 1\n"),
            format!("# TYPE {LOAD_LATENCY} counter\n"),
            format!("{LOAD_LATENCY}{{model_path=\"{path}\"}} 2500\n"),
            format!("{LOAD_LATENCY}{{model_path=\"/models/iris/2\"}} 3000\n"),
        ] {
            assert!(page.contains(&line), "{line} not in\n{page}");
        }
    }

    #[test]
    fn warm_ups_are_a_histogram_in_microseconds_by_path_and_status() {
        let registry = Registry::new();
        registry.record_model_warmup("/models/iris/1", Duration::from_micros(20));
        let page = registry.render();
        let series = r#"{model_path="/models/iris/1",status="OK""#;
        for line in [
            format!("# TYPE {MODEL_WARMUP_LATENCY} histogram\n"),
            format!("{MODEL_WARMUP_LATENCY}_bucket{series},le=\"18\"}} 0\n"),
            format!("{MODEL_WARMUP_LATENCY}_bucket{series},le=\"32.4\"}} 1\n"),
            format!("{MODEL_WARMUP_LATENCY}_sum{series}}} 20\n"),
        ] {
            assert!(page.contains(&line), "{line} not in\n{page}");
        }
    }
}
