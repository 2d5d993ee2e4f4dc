//! From a cortex.yaml API to loaded, warmed-up models.
//!
//! 1. [`entries`] lists the models an API names (`models.path`, `paths` or `dir`).
//! 2. `soma-repository` discovers each model's versions and fetches them to local folders
//!    (local models are used in place; S3 models are downloaded to the cache).
//! 3. [`TfRunner`] loads each version with the TensorFlow C library; `soma-runtime` picks the
//!    signature and runs one warm-up prediction before the version is served.
//!
//! [`inspect_api`] does steps 1–2 and reads the signatures straight from `saved_model.pb`,
//! so `soma validate` works without TensorFlow.

mod entries;
mod error;
mod inspect;
mod load;
mod recorded;
mod tf_runner;

use std::path::PathBuf;
use std::sync::Arc;

use soma_runtime::RecordedWarmup;

pub use entries::{ModelEntry, ServingEntries, batch_options, entries, serving_entries};
pub use error::ModelsError;
pub use inspect::{ModelReport, VersionReport, inspect_api};
pub use load::{load_api, load_entry, load_location};
pub use recorded::LoadRecord;
pub use tf_runner::TfRunner;

/// Where to find TensorFlow and where to cache downloaded models.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// `libtensorflow_cc.so.2` or its folder; `None` searches the Python environment.
    pub tensorflow_lib: Option<PathBuf>,
    /// Cache for models downloaded from S3.
    pub cache_dir: PathBuf,
    /// Where the models' metrics are recorded, if anywhere: batch sizes and waits, and TF
    /// Serving's (version loads and warm-ups, `runtime_latency` and example counts, under
    /// the models' names).
    pub metrics: Option<soma_metrics::Registry>,
    /// Replays the warm-up requests a version was saved with (see
    /// [`Servable::warm_up_from`](soma_runtime::Servable::warm_up_from)).
    pub warmup: Option<Arc<dyn RecordedWarmup>>,
}
