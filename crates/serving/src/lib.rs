//! The live model set behind soma's TF Serving front ends (REST, gRPC) and the async APIs.
//!
//! [`ModelManager`] is the real [`ModelHub`](soma_runtime::ModelHub). Each model
//! ([`ManagedModel`]: a TF Serving `ModelConfig` plus how to load it) gets one background
//! task that owns a repository [`Watcher`](soma_repository::Watcher) polling its base path
//! (local or `s3://`) every `poll_interval` (TF Serving's `--file_system_poll_wait_seconds`)
//! and is the only writer of that model's versions:
//!
//! * the version policy (`latest N`, `all`, `specific`) picks the wanted versions among the
//!   settled version folders, skipping versions that failed to load;
//! * a wanted version goes START → LOADING → AVAILABLE: fetched (S3 through the cache),
//!   loaded with TensorFlow and warmed up on a blocking thread (with its recorded warm-up
//!   requests if it has any and [`ManagerOptions::warmup`] is set), and only then published;
//! * versions no longer wanted go UNLOADING → END **after** the new ones are AVAILABLE
//!   (TF Serving's availability-preserving order), so "latest" never has a gap;
//! * a version that fails to load stays in the status as END with its error and is never
//!   wanted again until its files change, so a broken N+1 leaves N serving;
//! * labels may only point at AVAILABLE versions unless
//!   [`ManagerOptions::allow_labels_for_unavailable`] is set (a config breaking that rule
//!   is refused and the previous labels stay).
//!
//! [`parse_model_config_file`] reads TF Serving's `--model_config_file` (text proto) into
//! the `ModelConfig`s that [`ModelHub::reload`](soma_runtime::ModelHub::reload)
//! applies; [`ModelManager::add`] / [`ModelManager::remove`] let `soma serve` register each
//! API's models next to the others.
//!
//! Requests take a read lock only to clone an `Arc<Servable>`; unloading drops the map's
//! `Arc`, so in-flight predictions finish on the old version, which is freed when the last
//! one returns. [`ManagedModel::mirror`] keeps an async API's `ModelSet`
//! (what the Python `tensorflow_client` reads) in step with the same versions.
//!
//! **Memory during a swap:** the new version is fully loaded while the old one still
//! serves, so for a moment both are in memory (like TF Serving). With `latest 1` the peak is
//! about twice the model's size; after the old version is dropped its TensorFlow session is
//! closed, but the allocator may keep some of the freed pages, so RSS after a swap can stay
//! above the pre-swap level (the same as TF Serving; see the README for a measurement).

mod config_file;
mod manager;
mod model_task;
mod policy;
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config_file::{
    ConfigFileError, DEFAULT_PROMETHEUS_PATH, PlatformConfig, SslConfig, parse_batching_parameters,
    parse_model_config_file, parse_monitoring_config, parse_platform_config, parse_session_config,
    parse_ssl_config,
};
pub use manager::ModelManager;
use soma_core::runner::ThreadPools;
use soma_repository::S3Settings;
use soma_runtime::batching::BatchOptions;
use soma_runtime::hub::ModelConfig;
use soma_runtime::{ConcurrencyLimit, ModelSet, RecordedWarmup};

/// Settings shared by every model of a manager.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// `libtensorflow_cc.so.2` or its folder; `None` searches the Python environment.
    pub tensorflow_lib: Option<PathBuf>,
    /// Where S3 versions are downloaded.
    pub cache_dir: PathBuf,
    /// How often each base path is listed (TF Serving: `--file_system_poll_wait_seconds`).
    pub poll_interval: Duration,
    /// Thread pools of models added through [`ModelHub::reload`](soma_runtime::ModelHub::reload).
    pub threads: ThreadPools,
    /// The tag set of the MetaGraph loaded from every version (TF Serving's
    /// `--saved_model_tags`; `serve` by default).
    pub saved_model_tags: Vec<String>,
    /// TensorFlow's session `ConfigProto`, encoded, for every version's session (TF
    /// Serving's `--tensorflow_session_config_file`, read by [`parse_session_config`]); the
    /// thread pools above override its thread fields (see `soma_tensorflow::SessionOptions`).
    pub session_config: Option<Arc<[u8]>>,
    /// TF Serving's `--allow_version_labels_for_unavailable_models`.
    pub allow_labels_for_unavailable: bool,
    pub s3: S3Settings,
    /// Where the models' metrics are recorded, if anywhere: batch sizes and waits, and TF
    /// Serving's (version loads and warm-ups, `runtime_latency` and example counts, under
    /// the models' names as requests use them).
    pub metrics: Option<soma_metrics::Registry>,
    /// Server-side batching of models added through
    /// [`ModelHub::reload`](soma_runtime::ModelHub::reload) (TF Serving's `--enable_batching`).
    pub batching: Option<BatchOptions>,
    /// TF Serving's `--enable_per_model_batching_parameters`: with `batching` on, each
    /// version is batched by the `batching_params.pbtxt` in its folder instead, and a version
    /// without that file is not batched.
    pub per_model_batching: bool,
    /// Replays the warm-up requests a version was saved with before it serves (TF Serving's
    /// `--enable_model_warmup`); versions without any, or all versions if `None`, are warmed
    /// up with one zero-valued run instead.
    pub warmup: Option<Arc<dyn RecordedWarmup>>,
    /// How often fetching a version's files is tried again when storage or the disk fails in
    /// a way that may pass (S3 unavailable, an I/O error) before the version is given up
    /// (`END`); TF Serving's `--max_num_load_retries`. A broken model fails at once. The
    /// version shows LOADING meanwhile and its model's other work (polls, reloads, removal)
    /// goes on; a new model's first versions are waited for by a reload
    /// ([`ModelManager::apply`]), not by [`ModelManager::add`].
    pub load_retries: u32,
    /// The wait between those tries (TF Serving's `--load_retry_interval_micros`).
    pub load_retry_interval: Duration,
    /// At most this many versions load (TensorFlow's load and the warm-up) at once, over
    /// every model, so that loading leaves CPU to the requests being served (TF Serving's
    /// `--num_load_threads`). `None`: every model loads as soon as it can.
    pub load_limit: Option<ConcurrencyLimit>,
}

impl ManagerOptions {
    pub fn new(cache_dir: PathBuf) -> ManagerOptions {
        ManagerOptions {
            tensorflow_lib: None,
            cache_dir,
            poll_interval: Duration::from_secs(1),
            threads: ThreadPools::default(),
            saved_model_tags: vec!["serve".to_string()],
            session_config: None,
            allow_labels_for_unavailable: false,
            s3: S3Settings::default(),
            metrics: None,
            batching: None,
            per_model_batching: false,
            warmup: None,
            load_retries: 5,
            load_retry_interval: Duration::from_secs(60),
            load_limit: None,
        }
    }
}

/// One served model: its TF Serving config and how its versions are loaded.
#[derive(Debug, Clone)]
pub struct ManagedModel {
    pub config: ModelConfig,
    /// The name the servables carry (and their key in `mirror`); for a cortex.yaml API with
    /// `models.path` this is `_cortex_default` while `config.name` is the public name.
    pub servable_name: String,
    pub signature_key: Option<String>,
    /// TF Serving semantics: a model whose default signature soma cannot choose (several
    /// signatures, none `serving_default` or `predict`) still loads, warmed up with its
    /// first signature; TF Serving clients name the signature they want anyway. `false`
    /// keeps soma's rule (a cortex.yaml API must say `signature_key`).
    pub any_signature: bool,
    pub threads: ThreadPools,
    /// Server-side batching of this model's versions, if on.
    pub batching: Option<BatchOptions>,
    /// An async API's model set to keep in step (AVAILABLE versions inserted, unloaded
    /// ones removed).
    pub mirror: Option<Arc<ModelSet>>,
}

impl ManagedModel {
    pub fn new(config: ModelConfig) -> ManagedModel {
        ManagedModel {
            servable_name: config.name.clone(),
            config,
            signature_key: None,
            any_signature: true,
            threads: ThreadPools::default(),
            batching: None,
            mirror: None,
        }
    }

    /// Same loading settings: a change of policy, labels or base path is applied by the
    /// model's task, without unloading what serves (a new base path's versions are loaded
    /// before the old ones are unloaded).
    fn same_loading(&self, other: &ManagedModel) -> bool {
        self.servable_name == other.servable_name
            && self.signature_key == other.signature_key
            && self.any_signature == other.any_signature
            && self.threads == other.threads
            && self.batching == other.batching
            && match (&self.mirror, &other.mirror) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}
