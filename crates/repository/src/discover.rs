//! `discover_model` (models.path / models.paths) and `discover_dir` (models.dir).

use std::collections::BTreeMap;

use soma_core::ModelLocation;

use crate::error::RepositoryError;
use crate::layout::{Layout, Listing, Validator, VersionFiles, invalid_model, validate};
use crate::store::{ModelStore, S3Settings};

/// The name Cortex reserves for the single model of `models.path`.
pub const RESERVED_MODEL_NAME: &str = "_cortex_default";

/// A model folder that passed the layout check.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredModel {
    pub location: ModelLocation,
    pub layout: Layout,
    /// The check the model passed (downloads are checked again with it).
    pub validator: Validator,
    /// Every version (non-versioned models have exactly version 1), ascending; the last is
    /// the latest.
    pub versions: BTreeMap<i64, VersionFiles>,
}

impl DiscoveredModel {
    /// The highest version number.
    pub fn latest_version(&self) -> Option<i64> {
        self.versions.keys().next_back().copied()
    }

    /// Where `version` is stored, as TF Serving names a version it loads (the base path
    /// joined with the version's folder): the local folder, or the `s3://` URL of the
    /// version of an S3 model, whose downloaded copy is what soma loads.
    pub fn version_path(&self, version: i64) -> Option<String> {
        // Empty for a non-versioned model: the version is the model's root.
        let folder = &self.versions.get(&version)?.folder;
        Some(match &self.location {
            ModelLocation::Local(root) if folder.is_empty() => root.display().to_string(),
            ModelLocation::Local(root) => root.join(folder).display().to_string(),
            ModelLocation::S3 { bucket, prefix } => {
                let key = format!("{prefix}{folder}");
                format!("s3://{bucket}/{}", key.trim_end_matches('/'))
            }
        })
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
        validator,
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
    discover_dir_each(location, validator, settings)
        .await?
        .into_iter()
        .map(|(name, model)| model.map(|m| (name, m)))
        .collect()
}

/// A model folder of a `models.dir`, or why it is not one.
pub type DirModel = Result<DiscoveredModel, RepositoryError>;

/// [`discover_dir_with`], each model folder on its own: what is wrong with the directory
/// itself (a listing that fails, a file directly under it, the reserved name, nothing in
/// it) fails the call, and each model folder comes with its own result, so that a server
/// can serve the valid ones (as Cortex's runtime skipped the `dir` models that failed).
pub async fn discover_dir_each(
    location: &ModelLocation,
    validator: Validator,
    settings: &S3Settings,
) -> Result<Vec<(String, DirModel)>, RepositoryError> {
    let store = ModelStore::open(location, settings).await?;
    let listing = store.list().await?;
    dir_from_listing(location, &listing, validator)
}

pub(crate) fn dir_from_listing(
    location: &ModelLocation,
    listing: &Listing,
    validator: Validator,
) -> Result<Vec<(String, DirModel)>, RepositoryError> {
    if listing.is_empty() {
        return Err(invalid_model(
            &location.to_string(),
            "the models directory is empty",
            &[],
            validator,
        ));
    }
    let (models, files) = split_dir(listing);
    if let Some(key) = files.first() {
        return Err(RepositoryError::InvalidDir {
            location: location.to_string(),
            problem: format!(
                "{key} is a file; every entry of a models directory must be a model folder"
            ),
        });
    }
    if models.contains_key(RESERVED_MODEL_NAME) {
        return Err(RepositoryError::InvalidDir {
            location: location.to_string(),
            problem: format!(
                "{RESERVED_MODEL_NAME}: is a reserved name; please specify a different model name"
            ),
        });
    }
    let mut out = Vec::with_capacity(models.len());
    for (name, sub) in models {
        let model = model_from_listing(&location.join(&name), &sub, validator).map_err(|source| {
            RepositoryError::InDir {
                name: name.clone(),
                source: Box::new(source),
            }
        });
        out.push((name, model));
    }
    Ok(out)
}

/// Groups a `models.dir` listing by first-level folder (keys made relative to it); keys
/// directly under the folder (files) are returned apart.
pub(crate) fn split_dir(listing: &Listing) -> (BTreeMap<String, Listing>, Vec<String>) {
    let mut models: BTreeMap<String, Listing> = BTreeMap::new();
    let mut files = Vec::new();
    for (key, meta) in listing {
        match key.split_once('/') {
            Some((name, rest)) => {
                models
                    .entry(name.to_string())
                    .or_default()
                    .insert(rest.to_string(), *meta);
            }
            None => files.push(key.clone()),
        }
    }
    (models, files)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt as _};

    use super::*;

    const MODEL: &[&str] = &[
        "saved_model.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
    ];

    fn location() -> ModelLocation {
        ModelLocation::S3 {
            bucket: "b".into(),
            prefix: "m/".into(),
        }
    }

    async fn store_with(keys: &[String]) -> ModelStore {
        let memory = InMemory::new();
        for key in keys {
            memory
                .put(&Path::from(format!("m/{key}")), b"data".to_vec().into())
                .await
                .unwrap();
        }
        // Something outside the prefix must be ignored.
        memory
            .put(&Path::from("m2/saved_model.pb"), b"x".to_vec().into())
            .await
            .unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(memory);
        ModelStore::from_store(store, "m/", "s3://b/m/".into())
    }

    fn version(v: &str, files: &[&str]) -> Vec<String> {
        files.iter().map(|f| format!("{v}/{f}")).collect()
    }

    async fn discover(
        keys: &[String],
        validator: Validator,
    ) -> Result<DiscoveredModel, RepositoryError> {
        let store = store_with(keys).await;
        discover_in_store(&store, &location(), validator).await
    }

    fn message(err: RepositoryError) -> String {
        assert_eq!(err.kind(), soma_core::ErrorKind::InvalidArgument, "{err}");
        err.to_string()
    }

    #[tokio::test]
    async fn versioned_model_orders_versions_numerically() {
        let mut keys = version("9", MODEL);
        keys.extend(version("10", MODEL));
        keys.push("10/assets/vocab.txt".into());
        let model = discover(&keys, Validator::TensorFlow).await.unwrap();
        assert_eq!(model.layout, Layout::Versioned);
        assert_eq!(
            model.versions.keys().copied().collect::<Vec<_>>(),
            vec![9, 10]
        );
        assert_eq!(model.latest_version(), Some(10));
        let v10 = &model.versions[&10];
        assert_eq!(v10.files.len(), 4);
        assert_eq!(v10.files["assets/vocab.txt"], 4);
        assert!(v10.last_modified.is_some());
    }

    #[tokio::test]
    async fn non_versioned_model_is_version_1() {
        let keys: Vec<String> = MODEL.iter().map(|s| s.to_string()).collect();
        let model = discover(&keys, Validator::TensorFlow).await.unwrap();
        assert_eq!(model.layout, Layout::NonVersioned);
        assert_eq!(model.versions.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(model.versions[&1].files.len(), 3);
        assert_eq!(model.version_path(1).as_deref(), Some("s3://b/m"));
        assert_eq!(model.version_path(2), None);
    }

    #[tokio::test]
    async fn a_versions_path_is_its_folder_under_the_base_path() {
        let keys = version("007", MODEL);
        let model = discover(&keys, Validator::TensorFlow).await.unwrap();
        assert_eq!(model.version_path(7).as_deref(), Some("s3://b/m/007"));
        assert_eq!(model.version_path(1), None);
        let local = DiscoveredModel {
            location: ModelLocation::Local("/models/iris".into()),
            ..model
        };
        assert_eq!(local.version_path(7).as_deref(), Some("/models/iris/007"));
        let plain = DiscoveredModel {
            layout: Layout::NonVersioned,
            versions: [(
                1,
                VersionFiles {
                    folder: String::new(),
                    ..local.versions[&7].clone()
                },
            )]
            .into(),
            ..local
        };
        assert_eq!(plain.version_path(1).as_deref(), Some("/models/iris"));
    }

    #[tokio::test]
    async fn mixed_layout_is_rejected_with_a_tree() {
        let mut keys = version("1", MODEL);
        keys.push("extra/readme.md".into());
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        assert!(
            text.starts_with("s3://b/m/: invalid TensorFlow model path: it mixes version folders (1) with other entries (extra)."),
            "{text}"
        );
        assert!(text.contains("For models provided for the tensorflow handler type, the path must be a directory with one of the following structures:"));
        assert!(text.contains("1523423423/ (Version prefix, usually a timestamp)"));
        assert!(text.contains("\nor like\n"));
        assert!(text.contains("but its current structure is (limited to 50 sub-paths)"));
        assert!(
            text.contains("├── 1/\n│   ├── saved_model.pb\n│   └── variables/\n"),
            "{text}"
        );
        assert!(text.ends_with("└── extra/\n    └── readme.md"), "{text}");
    }

    #[tokio::test]
    async fn missing_index_and_data_shard_are_named() {
        let mut keys = version("1", MODEL);
        keys.extend(version(
            "3",
            &["saved_model.pb", "variables/variables.data-00000-of-00001"],
        ));
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        assert!(
            text.contains(": version 3 is missing variables/variables.index."),
            "{text}"
        );

        let keys = version(
            "2",
            &[
                "saved_model.pb",
                "variables/variables.index",
                "variables/variables.data-00001-of-00002",
            ],
        );
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        assert!(
            text.contains("version 2 is missing variables/variables.data-00000-of-*"),
            "{text}"
        );

        let keys = vec!["saved_model.pb".to_string()];
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        assert!(text.contains("the model folder is missing variables/variables.index, variables/variables.data-00000-of-*"), "{text}");
    }

    #[tokio::test]
    async fn empty_folder_is_rejected() {
        let text = message(discover(&[], Validator::TensorFlow).await.unwrap_err());
        assert!(text.contains("the directory is empty"), "{text}");
        assert!(
            text.ends_with("but its current directory is empty"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn neuron_needs_only_saved_model_pb() {
        let keys = version("1", &["saved_model.pb"]);
        let model = discover(&keys, Validator::Neuron).await.unwrap();
        assert_eq!(model.versions.len(), 1);
        let keys = version("1", &["other.pb"]);
        let text = message(discover(&keys, Validator::Neuron).await.unwrap_err());
        assert!(
            text.contains(
                "invalid Neuron TensorFlow model path: version 1 is missing saved_model.pb"
            ),
            "{text}"
        );
        assert!(!text.contains("variables.index"), "{text}");
    }

    /// TF Serving's rule: a SavedModel of constants has no variables and is a version; one
    /// with half of its variables is not.
    #[tokio::test]
    async fn a_saved_model_needs_variables_only_when_it_has_some() {
        let keys = version("1", &["saved_model.pb"]);
        let model = discover(&keys, Validator::SavedModel).await.unwrap();
        assert_eq!(model.versions.len(), 1);
        let model = discover(&version("2", MODEL), Validator::SavedModel)
            .await
            .unwrap();
        assert_eq!(model.versions.len(), 1);
        let keys = version("3", &["saved_model.pb", "variables/variables.index"]);
        let text = message(discover(&keys, Validator::SavedModel).await.unwrap_err());
        assert!(
            text.contains("version 3 is missing variables/variables.data-00000-of-*"),
            "{text}"
        );
        // Cortex's rule for cortex.yaml models stays: variables are required.
        let keys = version("1", &["saved_model.pb"]);
        assert!(discover(&keys, Validator::TensorFlow).await.is_err());
    }

    /// Version names as TF Serving and Cortex read them: `007` is version 7, fetched from
    /// that folder; `7` beside it names the version twice, a layout error here (the watcher
    /// serves version 7 from `7`, as TF Serving); a sign or a number past `i64` is no version
    /// name.
    #[tokio::test]
    async fn version_names_are_read_as_tf_serving_reads_them() {
        let model = discover(&version("007", MODEL), Validator::TensorFlow)
            .await
            .unwrap();
        assert_eq!(model.versions.keys().copied().collect::<Vec<_>>(), [7]);
        assert_eq!(model.versions[&7].folder, "007");
        let mut keys = version("007", MODEL);
        keys.extend(version("7", MODEL));
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        assert!(
            text.contains(
                "version 7 is named by more than one folder: read from \"7\", \"007\" ignored \
                 (keep one)"
            ),
            "{text}"
        );
        let keys = version("+7", MODEL);
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        assert!(
            text.contains("\"+7\" is not a valid version folder name (use a non-negative integer without a sign)"),
            "{text}"
        );
        // All digits, past i64: a version name that cannot be, not a stray entry.
        let keys = version("99999999999999999999", MODEL);
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        assert!(
            text.contains("\"99999999999999999999\" is not a valid version folder name (versions are 64-bit integers"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn tree_is_limited_to_50_paths() {
        let mut keys = version("1", MODEL);
        keys.extend((0..80).map(|i| format!("junk/file{i:03}")));
        let text = message(discover(&keys, Validator::TensorFlow).await.unwrap_err());
        let tree = text.split("(limited to 50 sub-paths)").nth(1).unwrap();
        assert!(tree.contains("file046"), "{tree}");
        assert!(!tree.contains("file047"), "{tree}");
        assert!(tree.trim_end().ends_with("..."), "{tree}");
    }

    #[tokio::test]
    async fn directory_markers_are_ignored() {
        let mut keys = version("1", MODEL);
        let memory = InMemory::new();
        keys.push(String::new());
        for key in &keys {
            memory
                .put(&Path::from(format!("m/{key}")), b"data".to_vec().into())
                .await
                .unwrap();
        }
        // "m/1" (empty object) as left by consoles creating folder "1/".
        memory
            .put(&Path::from("m/1"), Vec::<u8>::new().into())
            .await
            .unwrap();
        let store = ModelStore::from_store(Arc::new(memory), "m", "s3://b/m/".into());
        let model = discover_in_store(&store, &location(), Validator::TensorFlow)
            .await
            .unwrap();
        assert_eq!(model.versions[&1].files.len(), 3);
    }

    async fn dir_listing(keys: &[String]) -> Listing {
        store_with(keys).await.list().await.unwrap()
    }

    #[tokio::test]
    async fn dir_mode_lists_models_by_name() {
        let mut keys: Vec<String> = MODEL.iter().map(|f| format!("zebra/{f}")).collect();
        keys.extend(version("iris/2", MODEL));
        let models = dir_from_listing(
            &location(),
            &dir_listing(&keys).await,
            Validator::TensorFlow,
        )
        .unwrap();
        let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["iris", "zebra"]);
        let iris = models[0].1.as_ref().unwrap();
        assert_eq!(iris.location.to_string(), "s3://b/m/iris/");
        assert_eq!(iris.layout, Layout::Versioned);
        assert_eq!(models[1].1.as_ref().unwrap().layout, Layout::NonVersioned);
    }

    #[tokio::test]
    async fn dir_mode_rejects_reserved_names_files_and_bad_models() {
        let mut keys = version("iris/1", MODEL);
        keys.extend(version("_cortex_default/1", MODEL));
        let err = dir_from_listing(
            &location(),
            &dir_listing(&keys).await,
            Validator::TensorFlow,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "_cortex_default: is a reserved name; please specify a different model name"
            ),
            "{err}"
        );

        let mut keys = version("iris/1", MODEL);
        keys.push("stray.txt".into());
        let err = dir_from_listing(
            &location(),
            &dir_listing(&keys).await,
            Validator::TensorFlow,
        )
        .unwrap_err();
        assert!(err.to_string().contains("stray.txt is a file"), "{err}");
        assert_eq!(err.kind(), soma_core::ErrorKind::InvalidArgument);

        // A bad model folder comes with its error; the others are listed beside it.
        let mut keys = version("iris/1", MODEL);
        keys.push("bad/1/saved_model.pb".into());
        let models = dir_from_listing(
            &location(),
            &dir_listing(&keys).await,
            Validator::TensorFlow,
        )
        .unwrap();
        assert_eq!(models[0].0, "bad");
        assert!(models[1].1.is_ok());
        let text = models[0].1.as_ref().unwrap_err().to_string();
        assert!(
            text.starts_with(
                "model bad: s3://b/m/bad/: invalid TensorFlow model path: version 1 is missing"
            ),
            "{text}"
        );

        let err =
            dir_from_listing(&location(), &Listing::new(), Validator::TensorFlow).unwrap_err();
        assert!(
            err.to_string()
                .contains("but its current directory is empty"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn missing_local_folder_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = discover_model(
            &ModelLocation::Local(missing.clone()),
            Validator::TensorFlow,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), soma_core::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("{} does not exist", missing.display())
        );
    }
}
