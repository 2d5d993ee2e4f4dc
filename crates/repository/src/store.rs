//! Opening a model location as an `object_store` and listing it.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use soma_core::ModelLocation;
use tokio::io::AsyncWriteExt as _;

use crate::error::RepositoryError;
use crate::layout::{FileMeta, Listing, drop_dir_markers};

/// How S3 is reached. Every field left `None` comes from the usual AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`), read
/// by `object_store`'s `AmazonS3Builder::from_env`. The region defaults to `us-east-1`;
/// plain `http://` endpoints (MinIO, moto, localstack) are allowed.
#[derive(Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// How long one operation may take, its retries included; `None`: `object_store`'s
    /// defaults (30 s per request, retried for up to 180 s), right for model files of
    /// gigabytes, too long for a client waiting on its submission.
    pub operation_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for S3Settings {
    // Never print credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<set>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<set>"),
            )
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

/// A model (or models.dir) folder opened for listing and reading.
#[derive(Debug, Clone)]
pub(crate) struct ModelStore {
    source: Source,
    /// Where this is, for messages.
    pub(crate) display: String,
}

#[derive(Debug, Clone)]
enum Source {
    /// A local folder, listed by soma itself at every call (see [`list_local`]) and checked
    /// first (a vanished folder would list as empty).
    Local(PathBuf),
    /// A folder of an object store (S3; tests use `InMemory`).
    Objects {
        store: Arc<dyn ObjectStore>,
        /// The folder inside the store; `None` = the store's root.
        prefix: Option<Path>,
    },
}

impl ModelStore {
    /// Wraps an existing store (tests use `InMemory`). `prefix` is `/`-separated, without
    /// leading or trailing `/` (empty = root).
    pub(crate) fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, display: String) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
        ModelStore {
            source: Source::Objects { store, prefix },
            display,
        }
    }

    pub(crate) async fn open(
        location: &ModelLocation,
        settings: &S3Settings,
    ) -> Result<ModelStore, RepositoryError> {
        let display = location.to_string();
        match location {
            ModelLocation::Local(dir) => {
                check_local_dir(dir, &display).await?;
                Ok(ModelStore {
                    source: Source::Local(dir.clone()),
                    display,
                })
            }
            ModelLocation::S3 { .. } => {
                let (store, prefix) = open_object_store(location, settings).await?;
                Ok(ModelStore::from_store(store, prefix.as_ref(), display))
            }
        }
    }

    /// Every object under the folder, keyed by its path relative to the folder (directory
    /// markers dropped).
    pub(crate) async fn list(&self) -> Result<Listing, RepositoryError> {
        let (store, prefix) = match &self.source {
            Source::Local(root) => {
                check_local_dir(root, &self.display).await?;
                let dir = root.clone();
                let mut listing = tokio::task::spawn_blocking(move || list_local(&dir))
                    .await
                    .map_err(|e| RepositoryError::io(root, std::io::Error::other(e)))?;
                drop_dir_markers(&mut listing);
                return Ok(listing);
            }
            Source::Objects { store, prefix } => (store, prefix),
        };
        let strip = prefix
            .as_ref()
            .map(|p| format!("{}/", p.as_ref()))
            .unwrap_or_default();
        let metas: Vec<object_store::ObjectMeta> = store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|source| RepositoryError::Storage {
                location: self.display.clone(),
                source,
            })?;
        let mut listing = BTreeMap::new();
        for meta in metas {
            let Some(relative) = meta.location.as_ref().strip_prefix(&strip) else {
                continue;
            };
            listing.insert(
                relative.to_string(),
                FileMeta {
                    size: meta.size,
                    last_modified: Some(SystemTime::from(meta.last_modified)),
                },
            );
        }
        drop_dir_markers(&mut listing);
        Ok(listing)
    }

    /// Streams one object (`relative` to the folder) into `dest`; returns the bytes written.
    pub(crate) async fn download(
        &self,
        relative: &str,
        dest: &FsPath,
    ) -> Result<u64, RepositoryError> {
        let (store, prefix) = match &self.source {
            // Local versions load in place; a copy is a copy.
            Source::Local(root) => {
                return tokio::fs::copy(root.join(relative), dest)
                    .await
                    .map_err(|e| RepositoryError::io(&root.join(relative), e));
            }
            Source::Objects { store, prefix } => (store, prefix),
        };
        let key = match prefix {
            Some(p) => format!("{}/{relative}", p.as_ref()),
            None => relative.to_string(),
        };
        let storage = |source| RepositoryError::Storage {
            location: self.display.clone(),
            source,
        };
        let path = Path::parse(&key)
            .map_err(|source| storage(object_store::Error::InvalidPath { source }))?;
        let result = store.get(&path).await.map_err(storage)?;
        let mut stream = result.into_stream();
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| RepositoryError::io(dest, e))?;
        let mut written = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(storage)? {
            file.write_all(&chunk)
                .await
                .map_err(|e| RepositoryError::io(dest, e))?;
            written += chunk.len() as u64;
        }
        file.flush()
            .await
            .map_err(|e| RepositoryError::io(dest, e))?;
        file.sync_all()
            .await
            .map_err(|e| RepositoryError::io(dest, e))?;
        Ok(written)
    }
}

/// Every file under a local folder (symbolic links followed), keyed by its `/`-separated
/// path relative to it. soma lists local folders itself rather than through
/// `object_store`'s `LocalFileSystem`, which resolves its root once (a base path that is a
/// symbolic link, switched to a new target as git-sync does, kept listing the old one) and
/// fails the whole listing on one folder it cannot read (a root-only `lost+found` on a
/// volume stopped every new version, and start-up). Here the folder is resolved again at
/// every listing, and a folder or file that cannot be read is left out with a warning: a
/// version folder that cannot be read then fails its own checks alone, and other folders
/// are skipped, as TF Serving skips them.
fn list_local(root: &FsPath) -> Listing {
    let mut listing = Listing::new();
    let mut open = Vec::new();
    walk_local(root, "", &mut open, &mut listing);
    listing
}

/// Lists `dir` (`prefix` is its path in the listing) into `listing`; `open` holds the
/// (device, inode) of the folders being walked, so that a link back to one of them ends
/// there instead of looping.
fn walk_local(dir: &FsPath, prefix: &str, open: &mut Vec<(u64, u64)>, listing: &mut Listing) {
    use std::os::unix::fs::MetadataExt as _;
    let unreadable = |path: &FsPath, error: &std::io::Error| {
        tracing::warn!(path = %path.display(), %error, "left out of the model folder's listing: cannot be read");
    };
    let id = match std::fs::metadata(dir) {
        Ok(meta) => (meta.dev(), meta.ino()),
        Err(e) => return unreadable(dir, &e),
    };
    if open.contains(&id) {
        tracing::warn!(path = %dir.display(), "left out of the model folder's listing: a link to a folder that contains it");
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return unreadable(dir, &e),
    };
    open.push(id);
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                unreadable(dir, &e);
                continue;
            }
        };
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %path.display(), "left out of the model folder's listing: its name is not UTF-8");
            continue;
        };
        let relative = format!("{prefix}{name}");
        // Follows symbolic links, as object_store did.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk_local(&path, &format!("{relative}/"), open, listing),
            Ok(meta) => {
                listing.insert(
                    relative,
                    FileMeta {
                        size: meta.len(),
                        last_modified: meta.modified().ok(),
                    },
                );
            }
            Err(e) => unreadable(&path, &e),
        }
    }
    open.pop();
}

/// The `object_store` holding a location, and the folder of the location inside it.
///
/// Local folders get a `LocalFileSystem` rooted at the folder (empty prefix; the folder must
/// exist). S3 locations get an `AmazonS3` client for the bucket (see [`S3Settings`]) and the
/// location's prefix. Listing `Some(&prefix)` (or `None` when empty) is recursive.
pub async fn open_object_store(
    location: &ModelLocation,
    settings: &S3Settings,
) -> Result<(Arc<dyn ObjectStore>, Path), RepositoryError> {
    let display = location.to_string();
    let storage = |source| RepositoryError::Storage {
        location: display.clone(),
        source,
    };
    match location {
        ModelLocation::Local(dir) => {
            check_local_dir(dir, &display).await?;
            let store = LocalFileSystem::new_with_prefix(dir).map_err(storage)?;
            Ok((Arc::new(store), Path::default()))
        }
        ModelLocation::S3 { bucket, prefix } => {
            let store = build_s3(bucket, settings).map_err(storage)?;
            let prefix = prefix.trim_matches('/');
            Ok((Arc::new(store), Path::from(prefix)))
        }
    }
}

async fn check_local_dir(dir: &FsPath, display: &str) -> Result<(), RepositoryError> {
    match tokio::fs::metadata(dir).await {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(RepositoryError::NotADirectory {
            location: display.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RepositoryError::NotFound {
            location: display.to_string(),
        }),
        Err(e) => Err(RepositoryError::io(dir, e)),
    }
}

fn build_s3(
    bucket: &str,
    settings: &S3Settings,
) -> object_store::Result<object_store::aws::AmazonS3> {
    let base = tf_serving_env(AmazonS3Builder::from_env(), |name| std::env::var(name).ok());
    s3_builder(base, bucket, settings).build()
}

/// TensorFlow's own S3 variables, which TF Serving deployments set for MinIO and other
/// S3-compatible servers: `S3_ENDPOINT` (`host:port`, or a URL), `S3_USE_HTTPS` (`0`: plain
/// HTTP), `S3_VERIFY_SSL` (`0`: accept any certificate) and `S3_REGION`. Each applies where
/// the AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...) leave the setting open.
fn tf_serving_env(
    mut builder: AmazonS3Builder,
    var: impl Fn(&str) -> Option<String>,
) -> AmazonS3Builder {
    let set = |builder: &AmazonS3Builder, key: AmazonS3ConfigKey| {
        builder.get_config_value(&key).is_some()
    };
    let plain_http = var("S3_USE_HTTPS").is_some_and(|v| v.starts_with('0'));
    if let Some(endpoint) = var("S3_ENDPOINT").filter(|e| !e.is_empty())
        && !set(&builder, AmazonS3ConfigKey::Endpoint)
        && !set(&builder, AmazonS3ConfigKey::S3Endpoint)
    {
        let endpoint = match (endpoint.contains("://"), plain_http) {
            (true, _) => endpoint,
            (false, true) => format!("http://{endpoint}"),
            (false, false) => format!("https://{endpoint}"),
        };
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = var("S3_REGION").filter(|r| !r.is_empty())
        && !set(&builder, AmazonS3ConfigKey::Region)
        && !set(&builder, AmazonS3ConfigKey::DefaultRegion)
    {
        builder = builder.with_region(region);
    }
    if var("S3_VERIFY_SSL").is_some_and(|v| v.starts_with('0')) {
        builder = builder.with_config(
            AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowInvalidCertificates),
            "true",
        );
    }
    builder
}

/// Applies `settings` (over what `base` read from the environment) and the defaults.
fn s3_builder(base: AmazonS3Builder, bucket: &str, settings: &S3Settings) -> AmazonS3Builder {
    let mut builder = base.with_bucket_name(bucket);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    } else if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
        && builder
            .get_config_value(&AmazonS3ConfigKey::DefaultRegion)
            .is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    if let Some(key) = &settings.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &settings.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &settings.session_token {
        builder = builder.with_token(token);
    }
    if let Some(timeout) = settings.operation_timeout {
        // Each try gets the whole time; the retries stop when it is spent.
        let each = format!("{}ms", timeout.as_millis());
        builder = builder
            .with_config(
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout),
                each,
            )
            .with_retry(object_store::RetryConfig {
                retry_timeout: timeout,
                ..object_store::RetryConfig::default()
            });
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    // Local S3-compatible servers (MinIO, moto, localstack) usually speak plain HTTP.
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    builder
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::ClientConfigKey;

    use super::*;

    fn value(builder: &AmazonS3Builder, key: AmazonS3ConfigKey) -> Option<String> {
        builder.get_config_value(&key)
    }

    fn allow_http(builder: &AmazonS3Builder) -> Option<String> {
        value(
            builder,
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
        )
    }

    #[test]
    fn tensorflows_s3_variables_fill_what_the_aws_ones_leave_open() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let minio = env(&[
            ("S3_ENDPOINT", "minio:9000"),
            ("S3_USE_HTTPS", "0"),
            ("S3_REGION", "eu-west-1"),
            ("S3_VERIFY_SSL", "0"),
        ]);
        let builder = s3_builder(
            tf_serving_env(AmazonS3Builder::new(), minio),
            "b",
            &S3Settings::default(),
        );
        assert_eq!(
            value(&builder, AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://minio:9000")
        );
        assert_eq!(allow_http(&builder).as_deref(), Some("true"));
        assert_eq!(
            value(&builder, AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            value(
                &builder,
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowInvalidCertificates)
            )
            .as_deref(),
            Some("true")
        );
        // HTTPS unless told otherwise; the AWS variables win.
        let https = tf_serving_env(
            AmazonS3Builder::new(),
            env(&[("S3_ENDPOINT", "s3.example")]),
        );
        assert_eq!(
            value(&https, AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("https://s3.example")
        );
        let aws = AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::Endpoint, "http://127.0.0.1:9000")
            .with_config(AmazonS3ConfigKey::Region, "us-west-2");
        let aws = tf_serving_env(aws, minio);
        assert_eq!(
            value(&aws, AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            value(&aws, AmazonS3ConfigKey::Region).as_deref(),
            Some("us-west-2")
        );
    }

    #[test]
    fn defaults_and_explicit_settings() {
        // Nothing from the environment: region us-east-1, HTTPS only.
        let builder = s3_builder(AmazonS3Builder::new(), "b", &S3Settings::default());
        assert_eq!(
            value(&builder, AmazonS3ConfigKey::Bucket).as_deref(),
            Some("b")
        );
        assert_eq!(
            value(&builder, AmazonS3ConfigKey::Region).as_deref(),
            Some("us-east-1")
        );
        assert_ne!(allow_http(&builder).as_deref(), Some("true"));

        // AWS_DEFAULT_REGION-style fallback is kept; an http:// endpoint enables HTTP.
        let base = AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::DefaultRegion, "eu-west-3")
            .with_config(AmazonS3ConfigKey::Endpoint, "http://127.0.0.1:9000");
        let builder = s3_builder(base, "b", &S3Settings::default());
        assert_eq!(
            value(&builder, AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-3")
        );
        assert_eq!(allow_http(&builder).as_deref(), Some("true"));

        // Explicit settings win over the environment.
        let settings = S3Settings {
            endpoint: Some("https://s3.example".into()),
            region: Some("ap-south-1".into()),
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("SECRET".into()),
            session_token: None,
            operation_timeout: Some(Duration::from_millis(1500)),
        };
        let base = AmazonS3Builder::new().with_config(AmazonS3ConfigKey::Region, "us-west-2");
        let builder = s3_builder(base, "b", &settings);
        assert_eq!(
            value(&builder, AmazonS3ConfigKey::Region).as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(
            value(&builder, AmazonS3ConfigKey::S3Endpoint).as_deref(),
            Some("https://s3.example")
        );
        assert_ne!(allow_http(&builder).as_deref(), Some("true"));
        let timeout = AmazonS3ConfigKey::Client(ClientConfigKey::Timeout);
        assert_eq!(value(&builder, timeout).as_deref(), Some("1500ms"));
        assert!(builder.build().is_ok());

        // Debug output never shows credentials.
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("AKID"),
            "{debug}"
        );
    }
}
