//! The local download cache for S3 models.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use soma_core::ModelLocation;

use crate::discover::DiscoveredModel;
use crate::error::RepositoryError;
use crate::layout::{Layout, missing_files};
use crate::store::{ModelStore, S3Settings};
use crate::version_lock::{self, Access, VersionLock};

/// Written into every cached version folder; identical manifest = reusable download.
pub const MANIFEST_FILE: &str = ".soma-manifest.json";

/// Temporary folders older than this are leftovers of a crashed process, not a download in
/// progress (in this or another process sharing the cache).
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// How many files of one version are downloaded at the same time.
const CONCURRENT_DOWNLOADS: usize = 4;

/// Downloads of one fetch before it gives up on a cached copy that processes sharing the
/// cache keep replacing (each with other files: they see the storage at other moments).
const MAX_DOWNLOADS_PER_FETCH: usize = 3;

/// A version's local folder, and for an S3 model a read lock on the cached copy: while it is
/// held no process sharing the cache replaces or deletes the folder, so hold it while
/// TensorFlow loads from it.
#[derive(Debug)]
pub struct CachedVersion {
    pub path: PathBuf,
    pub lock: Option<VersionLock>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    location: String,
    version: i64,
    files: BTreeMap<String, u64>,
    last_modified: Option<SystemTime>,
}

/// Makes model versions available as local folders. Local models are used in place; S3
/// versions are downloaded to `<cache_dir>/<bucket>/<prefix>/<version>/` (atomically: a
/// `<version>.tmp-<random>` folder is filled, checked, then renamed) and reused while the
/// listing shows the same files and sizes, none newer than when they were downloaded.
/// Processes may share the cache directory: a version folder is changed only under its
/// exclusive lock (see `version_lock`), never while another process reads it.
#[derive(Debug)]
pub struct ModelCache {
    cache_dir: PathBuf,
    settings: S3Settings,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl ModelCache {
    /// A cache under `cache_dir`, reaching S3 with settings from the environment.
    pub fn new(cache_dir: PathBuf) -> ModelCache {
        ModelCache::with_settings(cache_dir, S3Settings::default())
    }

    /// A cache with explicit S3 settings.
    pub fn with_settings(cache_dir: PathBuf, settings: S3Settings) -> ModelCache {
        ModelCache {
            cache_dir,
            settings,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Where an S3 model's versions are cached (`None` for a local model, used in place).
    fn folder_of(&self, location: &ModelLocation) -> Result<Option<PathBuf>, RepositoryError> {
        let ModelLocation::S3 { bucket, prefix } = location else {
            return Ok(None);
        };
        let shown = location.to_string();
        let mut folder = self.cache_dir.clone();
        for part in std::iter::once(bucket.as_str()).chain(prefix.split('/')) {
            if part.is_empty() {
                continue;
            }
            folder.push(safe_relative(&shown, part)?);
        }
        Ok(Some(folder))
    }

    /// Deletes the cached copy of an S3 model's `version` (one removed from storage and
    /// unloaded): the cache would otherwise keep every version ever seen. Nothing for a
    /// local model; a failure is logged, not returned (the copy is only disk space).
    pub async fn evict(&self, location: &ModelLocation, version: i64) {
        let Ok(Some(folder)) = self.folder_of(location) else {
            return;
        };
        let target = folder.join(version.to_string());
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(target.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let write = match version_lock::try_write(&target).await {
            Ok(Some(write)) => write,
            Ok(None) => {
                tracing::info!(model = %location, version, "cached copy of a removed version kept: it is being read (by another process sharing the cache)");
                return;
            }
            Err(e) => {
                tracing::warn!(model = %location, version, error = %e, "cached copy not deleted");
                return;
            }
        };
        match tokio::fs::remove_dir_all(&target).await {
            Ok(()) => {
                tracing::info!(model = %location, version, "cached copy of a removed version deleted");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(model = %location, version, error = %e, "cached copy not deleted");
                return;
            }
        }
        if let Err(e) = write.delete_file() {
            tracing::warn!(model = %location, version, error = %e, "lock file of a deleted cached copy not deleted");
        }
    }

    /// The local folder holding `version` of `model` (the `saved_model.pb` folder). Another
    /// process sharing the cache may replace it at any time after; to load from it, use
    /// [`fetch_locked`](Self::fetch_locked).
    pub async fn fetch(
        &self,
        model: &DiscoveredModel,
        version: i64,
    ) -> Result<PathBuf, RepositoryError> {
        self.fetch_locked(model, version).await.map(|v| v.path)
    }

    /// The local folder holding `version` of `model`, locked for reading (S3 models).
    pub async fn fetch_locked(
        &self,
        model: &DiscoveredModel,
        version: i64,
    ) -> Result<CachedVersion, RepositoryError> {
        let files =
            model
                .versions
                .get(&version)
                .ok_or_else(|| RepositoryError::VersionNotFound {
                    location: model.location.to_string(),
                    version,
                })?;
        if let ModelLocation::Local(root) = &model.location {
            let path = match model.layout {
                Layout::Versioned => root.join(&files.folder),
                Layout::NonVersioned => root.clone(),
            };
            return Ok(CachedVersion { path, lock: None });
        }
        let parent = self
            .folder_of(&model.location)?
            .expect("an S3 model has a cache folder");
        let location = model.location.to_string();
        let target = parent.join(version.to_string());
        let expected = Manifest {
            location: location.clone(),
            version,
            files: files.files.clone(),
            last_modified: files.last_modified,
        };

        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(target.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;

        let mut downloads = 0;
        loop {
            let read = version_lock::lock(&target, Access::Read).await?;
            if reusable(&target, &expected).await {
                if downloads == 0 {
                    tracing::info!(model = %location, version, path = %target.display(), "using the cached model version");
                }
                return Ok(CachedVersion {
                    path: target,
                    lock: Some(read),
                });
            }
            drop(read);
            if downloads == MAX_DOWNLOADS_PER_FETCH {
                let why = format!(
                    "the cached copy of version {version} was replaced {downloads} times while \
                     this process fetched it (processes sharing the cache see other files)"
                );
                return Err(RepositoryError::io(&target, std::io::Error::other(why)));
            }
            let write = version_lock::lock(&target, Access::Write).await?;
            // Another process may have put these very files there while this one waited.
            if !reusable(&target, &expected).await {
                self.download_into_place(
                    model,
                    version,
                    &files.folder,
                    &expected,
                    &parent,
                    &target,
                )
                .await?;
            }
            drop(write);
            downloads += 1;
        }
    }

    /// Downloads `version` into a temporary folder next to `target` and moves it into place;
    /// the caller holds `target`'s write lock.
    async fn download_into_place(
        &self,
        model: &DiscoveredModel,
        version: i64,
        folder: &str,
        expected: &Manifest,
        parent: &Path,
        target: &Path,
    ) -> Result<(), RepositoryError> {
        let location = &expected.location;
        remove_abandoned(parent, version).await;
        let started = Instant::now();
        let bytes: u64 = expected.files.values().sum();
        tracing::info!(
            model = %location,
            version,
            files = expected.files.len(),
            bytes,
            "downloading model version"
        );
        let nonce = unique_suffix();
        let tmp = parent.join(format!("{version}.tmp-{nonce}"));
        let result = self
            .download(model, version, folder, expected, &tmp, target, &nonce)
            .await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return result;
        }
        tracing::info!(
            model = %location,
            version,
            files = expected.files.len(),
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            path = %target.display(),
            "downloaded model version"
        );
        Ok(())
    }

    /// Downloads `version` of `model`, whose files are in the storage folder `folder`.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        model: &DiscoveredModel,
        version: i64,
        folder: &str,
        expected: &Manifest,
        tmp: &Path,
        target: &Path,
        nonce: &str,
    ) -> Result<(), RepositoryError> {
        let location = &expected.location;
        tokio::fs::create_dir_all(tmp)
            .await
            .map_err(|e| RepositoryError::io(tmp, e))?;
        let store = ModelStore::open(&model.location, &self.settings).await?;
        let prefix = match model.layout {
            Layout::Versioned => format!("{folder}/"),
            Layout::NonVersioned => String::new(),
        };
        let mut jobs = Vec::with_capacity(expected.files.len());
        for (relative, size) in &expected.files {
            let dest = tmp.join(safe_relative(location, relative)?);
            jobs.push((format!("{prefix}{relative}"), dest, *size));
        }
        let store = &store;
        futures::stream::iter(jobs)
            .map(|(key, dest, size)| async move {
                if let Some(dir) = dest.parent() {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| RepositoryError::io(dir, e))?;
                }
                let actual = store.download(&key, &dest).await?;
                if actual != size {
                    return Err(RepositoryError::SizeMismatch {
                        location: location.clone(),
                        key,
                        expected: size,
                        actual,
                    });
                }
                Ok(())
            })
            .buffer_unordered(CONCURRENT_DOWNLOADS)
            .try_collect::<()>()
            .await?;

        // Re-check what is on disk: same files and sizes, still a SavedModel (the listing
        // could be stale, or the disk could have lost files).
        let validator = model.validator;
        let on_disk = walk(tmp).await?;
        if on_disk != expected.files {
            return Err(crate::layout::invalid_model(
                location,
                &format!("version {version} changed while it was downloaded"),
                &on_disk.keys().map(String::as_str).collect::<Vec<_>>(),
                validator,
            ));
        }
        let missing = missing_files(&on_disk, validator);
        if !missing.is_empty() {
            return Err(crate::layout::invalid_model(
                location,
                &format!(
                    "downloaded version {version} is missing {}",
                    missing.join(", ")
                ),
                &on_disk.keys().map(String::as_str).collect::<Vec<_>>(),
                validator,
            ));
        }
        let manifest_path = tmp.join(MANIFEST_FILE);
        let text = serde_json::to_vec_pretty(expected).map_err(|e| {
            RepositoryError::io(&manifest_path, std::io::Error::other(e.to_string()))
        })?;
        tokio::fs::write(&manifest_path, text)
            .await
            .map_err(|e| RepositoryError::io(&manifest_path, e))?;

        if tokio::fs::try_exists(target).await.unwrap_or(false) {
            let old = target.with_file_name(format!("{version}.old-{nonce}"));
            tokio::fs::rename(target, &old)
                .await
                .map_err(|e| RepositoryError::io(target, e))?;
            tokio::fs::rename(tmp, target)
                .await
                .map_err(|e| RepositoryError::io(target, e))?;
            if let Err(e) = tokio::fs::remove_dir_all(&old).await {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove the replaced version");
            }
        } else {
            tokio::fs::rename(tmp, target)
                .await
                .map_err(|e| RepositoryError::io(target, e))?;
        }
        Ok(())
    }
}

/// Deletes `<version>.tmp-*` and `<version>.old-*` folders left behind by a crash.
async fn remove_abandoned(parent: &Path, version: i64) {
    let Ok(mut entries) = tokio::fs::read_dir(parent).await else {
        return;
    };
    let prefixes = [format!("{version}.tmp-"), format!("{version}.old-")];
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        let age = entry
            .metadata()
            .await
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|age| age > ABANDONED_AFTER) {
            tracing::info!(path = %entry.path().display(), "removing an abandoned download");
            if let Err(e) = tokio::fs::remove_dir_all(entry.path()).await {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an abandoned download");
            }
        }
    }
}

/// A suffix no other download (in this or another process) uses at the same time.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{nanos:08x}{count:x}", std::process::id())
}

/// A relative key turned into a local path, refusing anything that could leave the folder.
fn safe_relative(location: &str, key: &str) -> Result<PathBuf, RepositoryError> {
    let path = Path::new(key);
    let ok = !key.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(path.to_path_buf())
    } else {
        Err(RepositoryError::UnsafeKey {
            location: location.to_string(),
            key: key.to_string(),
        })
    }
}

/// The cached folder has the same manifest and its files have the recorded sizes.
async fn reusable(target: &Path, expected: &Manifest) -> bool {
    let Ok(text) = tokio::fs::read(target.join(MANIFEST_FILE)).await else {
        return false;
    };
    let Ok(found) = serde_json::from_slice::<Manifest>(&text) else {
        return false;
    };
    let unchanged = found.location == expected.location
        && found.version == expected.version
        && found.files == expected.files
        && match (expected.last_modified, found.last_modified) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(listed), Some(recorded)) => listed <= recorded,
        };
    if !unchanged {
        return false;
    }
    for (relative, size) in &expected.files {
        match tokio::fs::metadata(target.join(relative)).await {
            Ok(meta) if meta.len() == *size => {}
            _ => return false,
        }
    }
    true
}

/// Every file under `root` (relative `/`-separated path → size).
async fn walk(root: &Path) -> Result<BTreeMap<String, u64>, RepositoryError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| RepositoryError::io(&dir, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| RepositoryError::io(&dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{prefix}{name}");
            let meta = entry
                .metadata()
                .await
                .map_err(|e| RepositoryError::io(&entry.path(), e))?;
            if meta.is_dir() {
                stack.push((entry.path(), format!("{relative}/")));
            } else {
                out.insert(relative, meta.len());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn manifest(last_modified: Option<SystemTime>) -> Manifest {
        Manifest {
            location: "s3://b/m/".into(),
            version: 3,
            files: BTreeMap::from([("saved_model.pb".to_string(), 2)]),
            last_modified,
        }
    }

    async fn cached(recorded: &Manifest) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        tokio::fs::write(dir.path().join("saved_model.pb"), "pb")
            .await
            .unwrap();
        let text = serde_json::to_vec(recorded).unwrap();
        tokio::fs::write(dir.path().join(MANIFEST_FILE), text)
            .await
            .unwrap();
        dir
    }

    #[tokio::test]
    async fn reuse_needs_same_files_and_no_newer_timestamp() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let dir = cached(&manifest(Some(t))).await;
        assert!(reusable(dir.path(), &manifest(Some(t))).await);
        assert!(reusable(dir.path(), &manifest(Some(t - Duration::from_secs(1)))).await);
        assert!(reusable(dir.path(), &manifest(None)).await);
        assert!(!reusable(dir.path(), &manifest(Some(t + Duration::from_secs(1)))).await);

        let mut other_files = manifest(Some(t));
        other_files
            .files
            .insert("variables/variables.index".into(), 1);
        assert!(!reusable(dir.path(), &other_files).await);

        // A file truncated on disk after the download.
        tokio::fs::write(dir.path().join("saved_model.pb"), "p")
            .await
            .unwrap();
        assert!(!reusable(dir.path(), &manifest(Some(t))).await);

        let untimed = cached(&manifest(None)).await;
        assert!(!reusable(untimed.path(), &manifest(Some(t))).await);
        assert!(!reusable(Path::new("/nonexistent/soma"), &manifest(None)).await);
    }

    #[test]
    fn keys_cannot_leave_the_cache_folder() {
        assert!(safe_relative("x", "variables/variables.index").is_ok());
        for key in ["../etc/passwd", "/abs", "a/../../b", "", "./a"] {
            let err = safe_relative("x", key).unwrap_err();
            assert!(matches!(err, RepositoryError::UnsafeKey { .. }), "{key}");
        }
    }

    #[tokio::test]
    async fn abandoned_downloads_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let make = |name: &str, age: Duration| {
            let dir = parent.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("saved_model.pb"), "pb").unwrap();
            let modified = SystemTime::now() - age;
            std::fs::File::open(&dir)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        };
        let old = ABANDONED_AFTER + Duration::from_secs(60);
        make("3.tmp-old", old);
        make("3.old-old", old);
        make("3.tmp-fresh", Duration::ZERO);
        make("4.tmp-old", old);
        make("3", old);
        remove_abandoned(parent.path(), 3).await;
        let mut left: Vec<String> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["3", "3.tmp-fresh", "4.tmp-old"]);
    }

    #[test]
    fn temporary_names_differ() {
        assert_ne!(unique_suffix(), unique_suffix());
    }
}
