//! `soma serve`: runs every API of a `cortex.yaml` in one process.
//!
//! Start-up order matters for availability: the gateway listens first (so `/healthz`
//! answers and workloads can be accepted while models load), then each API loads its models
//! and constructs its `Handler` in the background; an API whose start-up fails stays
//! not-ready with the error on `/readyz`, and its accepted workloads stay queued.
//!
//! Models are owned by one `soma_serving::ModelManager`: each model folder is polled every
//! `model_poll_interval`, a new version folder is loaded and warmed up and then served, an
//! old one removed from the folder is unloaded. The Python handlers' `tensorflow_client`
//! and the TF Serving REST paths (`/v1/models/...`, mounted on the gateway's listener) see
//! the same live versions.
//! [`serve_with`] runs one [`Role`] on a given backend: `soma gateway` (HTTP only, no Python
//! or TensorFlow) and `soma worker` (handlers) processes share a Redis + S3 backend.

mod live_models;
mod options;
mod python_handler;
mod role;
mod scaling;
mod serve;

pub use options::ServeOptions;
pub use role::Role;
pub use serve::{ServeError, serve, serve_with};
