//! A version's load and warm-up, recorded in the metrics TensorFlow and TF Serving keep of
//! them, for both loaders (a cortex.yaml API's, here, and `soma-serving`'s live models).

use std::path::Path;
use std::time::Instant;

use soma_metrics::{ModelMetrics, Registry};
use soma_runtime::{RecordedWarmup, RuntimeError, Servable};

/// Where a version's load is recorded: the registry, if any, and the version's path as TF
/// Serving names it (see
/// [`DiscoveredModel::version_path`](soma_repository::DiscoveredModel::version_path)).
#[derive(Debug, Clone, Copy)]
pub struct LoadRecord<'a> {
    pub metrics: Option<&'a Registry>,
    pub model_path: &'a str,
}

impl LoadRecord<'_> {
    /// Runs `load`, one attempt to load the SavedModel, counted and timed in TensorFlow's
    /// `load_attempt_count` and `load_latency` (as its `LoadSavedModel` counts itself).
    pub fn load<T, E>(&self, load: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let started = Instant::now();
        let loaded = load();
        if let Some(metrics) = self.metrics {
            metrics.record_saved_model_load(self.model_path, loaded.is_ok(), started.elapsed());
        }
        loaded
    }

    /// `servable` recording TF Serving's run metrics under `model`, the name requests use.
    pub fn with_run_metrics(&self, servable: Servable, model: &str) -> Servable {
        match self.metrics {
            Some(metrics) => servable.with_metrics(ModelMetrics::new(metrics.clone(), model)),
            None => servable,
        }
    }

    /// Warms `servable` up ([`Servable::warm_up_from`]); a replay of recorded warm-up
    /// requests is timed in TF Serving's `model_warmup_latency` (soma's own zero-valued
    /// run, which TF Serving does not have, is not).
    pub fn warm_up(
        &self,
        servable: &Servable,
        dir: &Path,
        recorded: Option<&dyn RecordedWarmup>,
    ) -> Result<Option<usize>, RuntimeError> {
        let started = Instant::now();
        let records = servable.warm_up_from(dir, recorded)?;
        if let (Some(metrics), Some(_)) = (self.metrics, records) {
            metrics.record_model_warmup(self.model_path, started.elapsed());
        }
        Ok(records)
    }
}
