//! A small Prometheus registry shared by soma's built-in metrics and the handlers'
//! `metrics_client`.
//!
//! Series are created on first use (the Python `metrics_client` names metrics at run time,
//! which static registries handle poorly). Every update takes one short lock; soma updates
//! metrics once per workload or request, far below the rate where that matters.

mod registry;
mod render;
mod requests;

pub use registry::{
    DEFAULT_BUCKETS, Kind, MetricError, Registry, validate_label_name, validate_metric_name,
};
pub use requests::{Entrypoint, REQUEST_COUNT, REQUEST_LATENCY};
