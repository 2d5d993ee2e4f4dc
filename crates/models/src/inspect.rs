use std::collections::BTreeMap;
use std::path::PathBuf;

use soma_config::ApiSpec;
use soma_core::{ModelLocation, SignatureDef};
use soma_repository::ModelCache;
use soma_runtime::choose_signature;

use crate::entries::validator;
use crate::{ModelOptions, ModelsError, entries};

/// What `soma validate` shows for one model.
#[derive(Debug, Clone)]
pub struct ModelReport {
    pub name: String,
    pub location: ModelLocation,
    pub versions: Vec<VersionReport>,
}

/// One version of a model, with the signatures read from its `saved_model.pb`.
#[derive(Debug, Clone)]
pub struct VersionReport {
    pub version: i64,
    pub dir: PathBuf,
    pub signatures: BTreeMap<String, SignatureDef>,
    /// The signature soma serves by default.
    pub chosen: String,
}

/// Discovers and fetches every model version of an API and reads its signatures, without
/// TensorFlow. Errors name the model and say what is wrong.
pub async fn inspect_api(
    api: &ApiSpec,
    options: &ModelOptions,
) -> Result<Vec<ModelReport>, ModelsError> {
    let (entries, _) = entries(api).await?;
    let cache = ModelCache::new(options.cache_dir.clone());
    let mut reports = Vec::with_capacity(entries.len());
    for entry in entries {
        let model = soma_repository::discover_model(&entry.location, validator(api))
            .await
            .map_err(|source| ModelsError::at(&entry.field, source))?;
        let mut versions = Vec::with_capacity(model.versions.len());
        for &version in model.versions.keys() {
            let cached = cache.fetch_locked(&model, version).await?;
            let dir = cached.path;
            let pb = dir.join("saved_model.pb");
            let bytes = tokio::fs::read(&pb)
                .await
                .map_err(|e| ModelsError::Inspect {
                    model: entry.name.clone(),
                    message: format!("cannot read {}: {e}", pb.display()),
                })?;
            drop(cached.lock);
            let signatures =
                soma_tensorflow::read_signatures(&bytes).map_err(|e| ModelsError::Inspect {
                    model: entry.name.clone(),
                    message: format!("version {version}: {e}"),
                })?;
            let label = format!("model '{}' version {version}", entry.name);
            let chosen = choose_signature(&signatures, entry.signature_key.as_deref(), &label)?;
            versions.push(VersionReport {
                version,
                dir,
                signatures,
                chosen,
            });
        }
        reports.push(ModelReport {
            name: entry.name,
            location: entry.location,
            versions,
        });
    }
    Ok(reports)
}
