//! The iris fixture loaded into a hub, for the tests that serve it with soma's front ends.

use std::path::Path;
use std::sync::Arc;

use soma_core::ModelLocation;
use soma_models::{ModelEntry, ModelOptions};
use soma_repository::Validator;
use soma_runtime::{ModelHub, ModelSet, StaticHub};
use soma_testkit::fixtures;

/// Every version of `fixtures/models/iris`, validated and loaded as soma loads them.
pub(crate) async fn iris_hub(cache: &Path) -> Arc<dyn ModelHub> {
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: cache.to_path_buf(),
        metrics: None,
        warmup: None,
    };
    let set = Arc::new(ModelSet::new("bench", false));
    let entry = ModelEntry::new("iris", ModelLocation::Local(fixtures().join("iris")));
    soma_models::load_entry(&set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();
    Arc::new(StaticHub::new(set))
}
