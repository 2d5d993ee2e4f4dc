//! Discovery, download cache and watcher against a real S3 API (moto_server).

use std::path::Path;

use soma_core::ModelLocation;
use soma_repository::{
    Layout, MANIFEST_FILE, ModelCache, RepositoryError, RepositoryEvent, S3Settings, Validator,
    WatchSource, Watcher, discover_dir_with, discover_model_with,
};
use soma_testkit::MotoServer;

const BUCKET: &str = "models";

fn settings(moto: &MotoServer) -> S3Settings {
    S3Settings {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        session_token: None,
        operation_timeout: None,
    }
}

/// A fake SavedModel (tiny bytes; only the layout matters here).
fn write_version(root: &Path, version: i64, tag: &str) {
    let dir = root.join(version.to_string());
    std::fs::create_dir_all(dir.join("variables")).unwrap();
    std::fs::write(dir.join("saved_model.pb"), format!("pb-{tag}")).unwrap();
    std::fs::write(dir.join("variables/variables.index"), "index").unwrap();
    std::fs::write(
        dir.join("variables/variables.data-00000-of-00001"),
        format!("data-{tag}-{version}"),
    )
    .unwrap();
}

fn upload_version(moto: &MotoServer, version: i64, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_version(dir.path(), version, tag);
    moto.upload_dir(dir.path(), BUCKET, "zoo/iris");
}

/// Where `upload_version` puts the model.
fn zoo_iris() -> ModelLocation {
    ModelLocation::S3 {
        bucket: BUCKET.into(),
        prefix: "zoo/iris/".into(),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A version folder written with leading zeros (`0042`, version 42, as TF Serving and Cortex
/// read it) is listed, and downloaded, from that folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_version_folders_with_leading_zeros_are_fetched_from_their_folder() {
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    write_version(dir.path(), 42, "z");
    std::fs::rename(dir.path().join("42"), dir.path().join("0042")).unwrap();
    moto.upload_dir(dir.path(), BUCKET, "zoo/iris");
    let settings = settings(&moto);
    let location = zoo_iris();
    let model = discover_model_with(&location, Validator::TensorFlow, &settings)
        .await
        .unwrap();
    assert_eq!(model.versions.keys().copied().collect::<Vec<_>>(), [42]);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::with_settings(cache_dir.path().to_path_buf(), settings);
    let path = cache.fetch(&model, 42).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(path.join("variables/variables.data-00000-of-00001")).unwrap(),
        "data-z-42"
    );
}

/// Two caches on one directory, as two processes sharing it: while one loads from a cached
/// version (holding its read lock), the other, which sees changed files in storage, waits
/// before it moves the folder away; once the first lets go, it replaces it. A version being
/// read is not deleted either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_cache_do_not_replace_a_version_being_loaded() {
    let moto = MotoServer::start();
    let settings = settings(&moto);
    moto.create_bucket(BUCKET);
    upload_version(&moto, 10, "a");
    let location = zoo_iris();
    let cache_dir = tempfile::tempdir().unwrap();
    let first = ModelCache::with_settings(cache_dir.path().to_path_buf(), settings.clone());
    let second = ModelCache::with_settings(cache_dir.path().to_path_buf(), settings.clone());
    let model = discover_model_with(&location, Validator::TensorFlow, &settings)
        .await
        .unwrap();
    let loading = first.fetch_locked(&model, 10).await.unwrap();
    let pb = loading.path.join("saved_model.pb");

    // The second sees the first's download as its own: nothing is downloaded again.
    let shared = second.fetch_locked(&model, 10).await.unwrap();
    assert_eq!(shared.path, loading.path);
    drop(shared);

    moto.put_object(BUCKET, "zoo/iris/10/saved_model.pb", b"pb-bigger");
    let changed = discover_model_with(&location, Validator::TensorFlow, &settings)
        .await
        .unwrap();
    let replacing =
        tokio::spawn(async move { second.fetch_locked(&changed, 10).await.map(|v| v.path) });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!replacing.is_finished(), "replaced a version being loaded");
    assert_eq!(std::fs::read_to_string(&pb).unwrap(), "pb-a");
    first.evict(&location, 10).await;
    assert!(pb.exists(), "deleted a version being loaded");

    drop(loading);
    let replaced = replacing.await.unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(replaced.join("saved_model.pb")).unwrap(),
        "pb-bigger"
    );
    assert_eq!(entries(replaced.parent().unwrap()), ["10", "10.lock"]);
    first.evict(&location, 10).await;
    // Its lock file goes with it (Vec<&str>: the folder is empty).
    assert_eq!(entries(replaced.parent().unwrap()), Vec::<&str>::new());
    // And the version can be cached again.
    let model = discover_model_with(&location, Validator::TensorFlow, &settings)
        .await
        .unwrap();
    let again = first.fetch_locked(&model, 10).await.unwrap();
    assert!(again.path.join("saved_model.pb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_discovery_cache_and_watcher() {
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    upload_version(&moto, 1, "a");
    upload_version(&moto, 10, "a");
    let settings = settings(&moto);
    let location = zoo_iris();

    // Discovery.
    let model = discover_model_with(&location, Validator::TensorFlow, &settings)
        .await
        .unwrap();
    assert_eq!(model.layout, Layout::Versioned);
    assert_eq!(model.versions.keys().copied().collect::<Vec<_>>(), [1, 10]);
    assert_eq!(model.latest_version(), Some(10));
    assert_eq!(model.versions[&10].files["saved_model.pb"], 4);

    let dir_location = ModelLocation::S3 {
        bucket: BUCKET.into(),
        prefix: "zoo/".into(),
    };
    let models = discover_dir_with(&dir_location, Validator::TensorFlow, &settings)
        .await
        .unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].0, "iris");
    assert_eq!(models[0].1.versions.len(), 2);

    // Download cache.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::with_settings(cache_dir.path().to_path_buf(), settings.clone());
    let path = cache.fetch(&model, 10).await.unwrap();
    assert_eq!(path, cache_dir.path().join("models/zoo/iris/10"));
    assert_eq!(
        std::fs::read_to_string(path.join("saved_model.pb")).unwrap(),
        "pb-a"
    );
    assert_eq!(
        std::fs::read_to_string(path.join("variables/variables.data-00000-of-00001")).unwrap(),
        "data-a-10"
    );
    assert!(path.join(MANIFEST_FILE).is_file());
    assert_eq!(
        entries(path.parent().unwrap()),
        ["10", "10.lock"],
        "no temporary folder left"
    );

    // Unchanged → reused (a marker file written into the cache survives).
    std::fs::write(path.join("marker"), "x").unwrap();
    assert_eq!(cache.fetch(&model, 10).await.unwrap(), path);
    assert!(path.join("marker").exists());

    // Changed upstream → replaced.
    moto.put_object(BUCKET, "zoo/iris/10/saved_model.pb", b"pb-bigger");
    let changed = discover_model_with(&location, Validator::TensorFlow, &settings)
        .await
        .unwrap();
    assert_eq!(cache.fetch(&changed, 10).await.unwrap(), path);
    assert!(!path.join("marker").exists());
    assert_eq!(
        std::fs::read_to_string(path.join("saved_model.pb")).unwrap(),
        "pb-bigger"
    );
    assert_eq!(entries(path.parent().unwrap()), ["10", "10.lock"]);

    // A stale listing (the object changed since discovery): the download is refused, the
    // temporary folder removed and the cached version left alone.
    let err = cache.fetch(&model, 10).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RepositoryError::SizeMismatch {
                expected: 4,
                actual: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(entries(path.parent().unwrap()), ["10", "10.lock"]);
    assert_eq!(
        std::fs::read_to_string(path.join("saved_model.pb")).unwrap(),
        "pb-bigger"
    );

    let err = cache.fetch(&changed, 7).await.unwrap_err();
    assert_eq!(err.kind(), soma_core::ErrorKind::NotFound);

    // Watcher: snapshot, then version 11 appears (settled after two polls), version 1 goes.
    let mut watcher = Watcher::with_settings(
        [WatchSource::model("iris", location.clone())],
        Validator::TensorFlow,
        std::time::Duration::from_secs(1),
        settings.clone(),
    );
    assert_eq!(watcher.poll_once().await, []);
    upload_version(&moto, 11, "b");
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(
        watcher.poll_once().await,
        [RepositoryEvent::VersionAdded {
            model: "iris".into(),
            version: 11
        }]
    );
    // The watcher's view is enough to fetch the new version.
    let watched = watcher.model("iris").unwrap().clone();
    let path11 = cache.fetch(&watched, 11).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(path11.join("saved_model.pb")).unwrap(),
        "pb-b"
    );
    for file in [
        "saved_model.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
    ] {
        moto.delete_object(BUCKET, &format!("zoo/iris/1/{file}"));
    }
    assert_eq!(
        watcher.poll_once().await,
        [RepositoryEvent::VersionRemoved {
            model: "iris".into(),
            version: 1
        }]
    );
    assert_eq!(
        watcher
            .model("iris")
            .unwrap()
            .versions
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [10, 11]
    );

    // dir mode over S3: a new model folder appears as its versions being added.
    let mut dir_watcher = Watcher::with_settings(
        [WatchSource::dir(dir_location.clone())],
        Validator::TensorFlow,
        std::time::Duration::from_secs(1),
        settings.clone(),
    );
    assert_eq!(dir_watcher.poll_once().await, []);
    let dir = tempfile::tempdir().unwrap();
    write_version(dir.path(), 2, "c");
    moto.upload_dir(dir.path(), BUCKET, "zoo/wine");
    assert_eq!(dir_watcher.poll_once().await, []);
    assert_eq!(
        dir_watcher.poll_once().await,
        [RepositoryEvent::VersionAdded {
            model: "wine".into(),
            version: 2
        }]
    );

    // An unreachable bucket: an Error event, and nothing removed.
    let mut broken = Watcher::with_settings(
        [WatchSource::model(
            "ghost",
            ModelLocation::S3 {
                bucket: "no-such-bucket".into(),
                prefix: "iris/".into(),
            },
        )],
        Validator::TensorFlow,
        std::time::Duration::from_secs(1),
        settings.clone(),
    );
    let events = broken.poll_once().await;
    assert!(
        matches!(&events[..], [RepositoryEvent::Error { model: Some(m), error, .. }] if m == "ghost" && error.starts_with("s3://no-such-bucket/iris/: ")),
        "{events:?}"
    );
    assert_eq!(
        broken.poll_once().await,
        [],
        "the same error is reported once"
    );

    // A missing bucket is a storage error, and the watcher reports it without removals.
    let missing = ModelLocation::S3 {
        bucket: "no-such-bucket".into(),
        prefix: "iris/".into(),
    };
    let err = discover_model_with(&missing, Validator::TensorFlow, &settings)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("s3://no-such-bucket/iris/: "),
        "{err}"
    );
}
