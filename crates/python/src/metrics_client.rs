use std::collections::BTreeMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use soma_metrics::Registry;

/// Prefixes kept for built-in metrics (Cortex reserved `cortex_` and `istio_`; soma's own
/// and TF Serving's are soma's, which a handler's gauge must not take over).
const RESERVED: [&str; 4] = ["cortex_", "istio_", "soma_", ":tensorflow:"];

/// The `metrics_client` given to `Handler.__init__`: Prometheus gauges, counters and
/// histograms in soma's registry, exported on `/metrics` with the tags as labels.
#[pyclass(name = "MetricsClient", module = "soma", frozen)]
pub(crate) struct MetricsClient {
    registry: Registry,
}

impl MetricsClient {
    pub(crate) fn new(registry: Registry) -> MetricsClient {
        MetricsClient { registry }
    }
}

type Tags = Option<BTreeMap<String, String>>;

#[pymethods]
impl MetricsClient {
    /// Sets a gauge.
    #[pyo3(signature = (metric, value, tags = None))]
    fn gauge(&self, metric: &str, value: f64, tags: Tags) -> PyResult<()> {
        self.record(metric, tags, |labels| {
            self.registry
                .gauge_set(metric, "Handler gauge.", labels, value)
        })
    }

    /// Adds `value` (default 1) to a counter.
    #[pyo3(signature = (metric, value = 1.0, tags = None))]
    fn increment(&self, metric: &str, value: f64, tags: Tags) -> PyResult<()> {
        self.record(metric, tags, |labels| {
            self.registry
                .counter_add(metric, "Handler counter.", labels, value)
        })
    }

    /// Records one observation in a histogram.
    #[pyo3(signature = (metric, value, tags = None))]
    fn histogram(&self, metric: &str, value: f64, tags: Tags) -> PyResult<()> {
        self.record(metric, tags, |labels| {
            self.registry
                .observe(metric, "Handler histogram.", labels, value)
        })
    }
}

impl MetricsClient {
    fn record(
        &self,
        metric: &str,
        tags: Tags,
        update: impl FnOnce(&[(&str, &str)]) -> Result<(), soma_metrics::MetricError>,
    ) -> PyResult<()> {
        if let Some(prefix) = RESERVED.iter().find(|p| metric.starts_with(*p)) {
            return Err(PyValueError::new_err(format!(
                "metric {metric:?} starts with the reserved prefix {prefix:?}"
            )));
        }
        let tags = tags.unwrap_or_default();
        let labels: Vec<(&str, &str)> =
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        update(&labels).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}
