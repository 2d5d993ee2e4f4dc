//! A small Prometheus registry shared by soma's built-in metrics and the handlers'
//! `metrics_client`.
//!
//! Series are created on first use (the Python `metrics_client` names metrics at run time,
//! which static registries handle poorly). Every update takes one short lock and, once its
//! series exists, allocates nothing: the REST and gRPC front ends update two series per
//! request, tens of thousands of times a second on a small model.

mod registry;
mod render;
mod requests;

pub use registry::{
    DEFAULT_BUCKETS, Kind, MetricError, Registry, tf_serving_latency_buckets, validate_label_name,
    validate_metric_name,
};
pub use requests::{Entrypoint, REQUEST_COUNT, REQUEST_LATENCY};
