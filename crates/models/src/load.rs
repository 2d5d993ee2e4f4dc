use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use soma_config::ApiSpec;
use soma_core::ModelLocation;
use soma_repository::{ModelCache, Validator};
use soma_runtime::{ModelSet, SINGLE_MODEL_NAME, Servable};
use soma_tensorflow::TensorFlow;

use crate::entries::validator;
use crate::{LoadRecord, ModelEntry, ModelOptions, ModelsError, TfRunner, entries};

/// Loads every version of every model of an API and warms each one up.
pub async fn load_api(api: &ApiSpec, options: &ModelOptions) -> Result<Arc<ModelSet>, ModelsError> {
    let (entries, single) = entries(api).await?;
    let set = Arc::new(ModelSet::new(&api.name, single));
    for entry in &entries {
        load_entry(&set, entry, validator(api), options).await?;
    }
    Ok(set)
}

/// Loads a single model folder (a SavedModel, or integer version folders of them).
pub async fn load_location(
    location: &ModelLocation,
    signature_key: Option<&str>,
    options: &ModelOptions,
) -> Result<Arc<ModelSet>, ModelsError> {
    let set = Arc::new(ModelSet::new("model", true));
    let entry = ModelEntry {
        signature_key: signature_key.map(str::to_string),
        ..ModelEntry::new(SINGLE_MODEL_NAME, location.clone())
    };
    load_entry(&set, &entry, Validator::TensorFlow, options).await?;
    Ok(set)
}

/// Discovers one model, fetches each version and adds it to `set` once it has run its
/// warm-up prediction.
pub async fn load_entry(
    set: &ModelSet,
    entry: &ModelEntry,
    validator: Validator,
    options: &ModelOptions,
) -> Result<(), ModelsError> {
    let model = soma_repository::discover_model(&entry.location, validator)
        .await
        .map_err(|source| ModelsError::at(&entry.field, source))?;
    if validator == Validator::Neuron {
        return Err(ModelsError::NeuronUnavailable {
            model: entry.name.clone(),
        });
    }
    let cache = ModelCache::new(options.cache_dir.clone());
    let tf = tensorflow(options).await?;
    for &version in model.versions.keys() {
        let cached = cache.fetch_locked(&model, version).await?;
        let model_path = model
            .version_path(version)
            .unwrap_or_else(|| cached.path.display().to_string());
        let (tf, entry, options) = (Arc::clone(&tf), entry.clone(), options.clone());
        let servable = tokio::task::spawn_blocking(move || {
            // Held while TensorFlow reads the files: no process sharing the cache replaces them.
            let _lock = cached.lock;
            load_version(&tf, &entry, version, cached.path, &model_path, &options)
        })
        .await??;
        set.insert(Arc::new(servable));
    }
    Ok(())
}

/// The process-wide TensorFlow library (opening it takes ~0.2 s, so it happens once).
async fn tensorflow(options: &ModelOptions) -> Result<Arc<TensorFlow>, ModelsError> {
    let explicit = options.tensorflow_lib.clone();
    Ok(tokio::task::spawn_blocking(move || TensorFlow::global(explicit.as_deref())).await??)
}

/// Loads one version from `dir`, stored at `model_path` (its name in the load metrics).
fn load_version(
    tf: &Arc<TensorFlow>,
    entry: &ModelEntry,
    version: i64,
    dir: PathBuf,
    model_path: &str,
    options: &ModelOptions,
) -> Result<Servable, ModelsError> {
    let started = Instant::now();
    let record = LoadRecord {
        metrics: options.metrics.as_ref(),
        model_path,
    };
    let runner = record.load(|| TfRunner::load(tf, &dir, entry.threads))?;
    let servable = Servable::new(
        &entry.name,
        version,
        Box::new(runner),
        entry.signature_key.as_deref(),
    )?;
    let servable = record.with_run_metrics(servable, &entry.name);
    // Warm up before batching is on: a warm-up run needs no batch.
    let records = record.warm_up(&servable, &dir, options.warmup.as_deref())?;
    let servable = match &entry.batching {
        Some(batching) => servable.with_batching(batching.clone(), options.metrics.clone())?,
        None => servable,
    };
    tracing::info!(
        model = %entry.name,
        version,
        signature = servable.default_signature(),
        dir = %dir.display(),
        warmup_records = records.unwrap_or(0),
        millis = started.elapsed().as_millis() as u64,
        "model version loaded"
    );
    Ok(servable)
}
