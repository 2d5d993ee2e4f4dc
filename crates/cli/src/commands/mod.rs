pub(crate) mod http_client;
pub(crate) mod ops;
pub(crate) mod predict;
pub(crate) mod scale;
pub(crate) mod serve;
pub(crate) mod tfserving;
pub(crate) mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use soma_grpc::warmup::TfServingWarmup;
use soma_models::ModelOptions;

use crate::GlobalArgs;

/// Reads and validates a cortex.yaml; the error lists every problem, one per line.
pub(crate) fn load_config(path: &std::path::Path) -> anyhow::Result<soma_config::Config> {
    soma_config::load(path).map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))
}

/// Model loading options from the global flags; recorded warm-up requests are replayed, as
/// `soma serve` does, so `soma validate` finds a broken warm-up file before a deploy.
pub(crate) fn model_options(global: &GlobalArgs) -> ModelOptions {
    ModelOptions {
        tensorflow_lib: global.tensorflow_lib.clone(),
        cache_dir: global.cache_dir.clone().unwrap_or_else(default_cache_dir),
        metrics: None,
        warmup: Some(Arc::new(TfServingWarmup::default())),
    }
}

/// `$XDG_CACHE_HOME/soma/models`, else `~/.cache/soma/models`, else `.soma/cache`.
fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(dir) => dir.join("soma").join("models"),
        None => PathBuf::from(".soma").join("cache"),
    }
}
