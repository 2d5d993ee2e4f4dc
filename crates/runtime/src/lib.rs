//! The models of one API, loaded and ready to predict.
//!
//! * [`choose_signature`] applies soma's signature rule: the configured `signature_key`;
//!   else the only signature; else `serving_default`; else `predict`; else an error that
//!   lists the keys.
//! * [`Servable`] is one loaded model version with its chosen signature; it checks inputs
//!   (missing, unknown, dtype, shape) before anything reaches the engine.
//! * [`ModelSet`] holds every model and version of an API and resolves `model_name` /
//!   `model_version` the way Cortex's `tensorflow_client` did, with errors that list what
//!   is available. It is safe to share between threads and can be updated while serving.
//! * [`hub`]: what the TF Serving REST/gRPC front ends need from the owner of the live
//!   model set ([`ModelHub`]), with version states and policies as TF Serving names them.
//! * [`RecordedWarmup`]: replaying the warm-up requests a version was saved with.
//! * [`ConcurrencyLimit`]: how many inference requests the servers process at once.
//! * [`signature_method`]: TF Serving's checks of a signature against the API (predict,
//!   classify, regress) that runs it, for both front ends.

pub mod batching;
mod error;
pub mod hub;
mod limit;
mod model_set;
mod run_clock;
mod servable;
mod signature;
pub mod signature_method;
mod warmup;

pub use error::RuntimeError;
pub use hub::{ModelHub, ServableState, StaticHub, VersionPolicy, VersionSelector, VersionStatus};
pub use limit::{ConcurrencyLimit, permit};
pub use model_set::{ModelSet, SINGLE_MODEL_NAME};
pub use servable::{Prediction, QUICK_RUN, QueuedPrediction, Servable};
pub use signature::{choose_signature, warmup_inputs};
pub use warmup::RecordedWarmup;

#[cfg(test)]
mod fake;
