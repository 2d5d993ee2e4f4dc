//! A small Prometheus registry shared by soma's built-in metrics and the handlers'
//! `metrics_client`.
//!
//! Series are created on first use (the Python `metrics_client` names metrics at run time,
//! which static registries handle poorly). Every update takes one short lock and, once its
//! series exists, allocates nothing: the REST and gRPC front ends update two series per
//! request, tens of thousands of times a second on a small model. A series updated on every
//! request can also be kept as a [`HistogramHandle`], which observes it under the series'
//! own lock, without the registry's ([`ModelMetrics`] does for `runtime_latency`).

mod histogram;
mod load;
mod model;
mod registry;
mod render;
mod requests;

use std::time::Duration;

pub use histogram::{BoundRule, Buckets, HistogramHandle};
pub use load::{LOAD_ATTEMPT_COUNT, LOAD_LATENCY, MODEL_WARMUP_LATENCY};
pub use model::{
    ModelMetrics, REQUEST_EXAMPLE_COUNT_TOTAL, REQUEST_EXAMPLE_COUNTS, RUNTIME_LATENCY, RuntimeApi,
    TF1_RUNTIME, tf_serving_example_count_buckets,
};
pub use registry::{
    DEFAULT_BUCKETS, Kind, MetricError, Registry, tf_serving_latency_buckets, validate_label_name,
    validate_metric_name,
};
pub use requests::{Entrypoint, REQUEST_COUNT, REQUEST_LATENCY};

/// A duration in microseconds, TF Serving's unit for latencies.
fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
