//! `discover_model` (models.path / models.paths) and `discover_dir` (models.dir).

use std::collections::BTreeMap;

use soma_core::ModelLocation;

use crate::error::RepositoryError;
use crate::layout::{Layout, Listing, Validator, VersionFiles, invalid_model, validate};
use crate::store::{ModelStore, S3Settings};

/// The name Cortex reserves for the single model of `models.path`.
pub const RESERVED_MODEL_NAME: &str = "_cortex_default";

/// A model folder that passed the layout check.
#[derive(Debug, Clone)]
pub struct DiscoveredModel {
    pub location: ModelLocation,
    pub layout: Layout,
    /// Every version (non-versioned models have exactly version 1), ascending; the last is
    /// the latest.
    pub versions: BTreeMap<i64, VersionFiles>,
}

impl DiscoveredModel {
    /// The highest version number.
    pub fn latest_version(&self) -> Option<i64> {
        self.versions.keys().next_back().copied()
    }
}

/// Lists and validates one model folder (S3 settings from the environment).
pub async fn discover_model(
    location: &ModelLocation,
    validator: Validator,
) -> Result<DiscoveredModel, RepositoryError> {
    discover_model_with(location, validator, &S3Settings::default()).await
}

/// [`discover_model`] with explicit S3 settings.
pub async fn discover_model_with(
    location: &ModelLocation,
    validator: Validator,
    settings: &S3Settings,
) -> Result<DiscoveredModel, RepositoryError> {
    let store = ModelStore::open(location, settings).await?;
    discover_in_store(&store, location, validator).await
}

pub(crate) async fn discover_in_store(
    store: &ModelStore,
    location: &ModelLocation,
    validator: Validator,
) -> Result<DiscoveredModel, RepositoryError> {
    let listing = store.list().await?;
    model_from_listing(location, &listing, validator)
}

pub(crate) fn model_from_listing(
    location: &ModelLocation,
    listing: &Listing,
    validator: Validator,
) -> Result<DiscoveredModel, RepositoryError> {
    let (layout, versions) = validate(&location.to_string(), listing, validator)?;
    Ok(DiscoveredModel {
        location: location.clone(),
        layout,
        versions,
    })
}

/// Lists a `models.dir` folder: every first-level folder is a model named after the folder,
/// returned sorted by name. A file directly under the folder, the reserved name
/// `_cortex_default`, an empty folder or any invalid model fails the whole call (like
/// Cortex's deploy-time check).
pub async fn discover_dir(
    location: &ModelLocation,
    validator: Validator,
) -> Result<Vec<(String, DiscoveredModel)>, RepositoryError> {
    discover_dir_with(location, validator, &S3Settings::default()).await
}

/// [`discover_dir`] with explicit S3 settings.
pub async fn discover_dir_with(
    location: &ModelLocation,
    validator: Validator,
    settings: &S3Settings,
) -> Result<Vec<(String, DiscoveredModel)>, RepositoryError> {
    let store = ModelStore::open(location, settings).await?;
    let listing = store.list().await?;
    dir_from_listing(location, &listing, validator)
}

pub(crate) fn dir_from_listing(
    location: &ModelLocation,
    listing: &Listing,
    validator: Validator,
) -> Result<Vec<(String, DiscoveredModel)>, RepositoryError> {
    if listing.is_empty() {
        return Err(invalid_model(
            &location.to_string(),
            "the models directory is empty",
            &[],
            validator,
        ));
    }
    let mut models: BTreeMap<String, Listing> = BTreeMap::new();
    for (key, meta) in listing {
        let Some((name, rest)) = key.split_once('/') else {
            return Err(RepositoryError::InvalidDir {
                location: location.to_string(),
                problem: format!(
                    "{key} is a file; every entry of a models directory must be a model folder"
                ),
            });
        };
        if name == RESERVED_MODEL_NAME {
            return Err(RepositoryError::InvalidDir {
                location: location.to_string(),
                problem: format!("{RESERVED_MODEL_NAME} is a reserved model name"),
            });
        }
        models
            .entry(name.to_string())
            .or_default()
            .insert(rest.to_string(), *meta);
    }
    let mut out = Vec::with_capacity(models.len());
    for (name, sub) in models {
        let model =
            model_from_listing(&location.join(&name), &sub, validator).map_err(|source| {
                RepositoryError::InDir {
                    name: name.clone(),
                    source: Box::new(source),
                }
            })?;
        out.push((name, model));
    }
    Ok(out)
}
