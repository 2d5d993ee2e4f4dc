//! Local folders: discovery, in-place fetch and the watcher.

use std::path::Path;
use std::time::Duration;

use soma_core::ModelLocation;
use soma_repository::{
    Layout, ModelCache, RepositoryEvent, Validator, Watcher, discover_dir, discover_model,
};

fn write_version(dir: &Path) {
    std::fs::create_dir_all(dir.join("variables")).unwrap();
    std::fs::write(dir.join("saved_model.pb"), "pb").unwrap();
    std::fs::write(dir.join("variables/variables.index"), "index").unwrap();
    std::fs::write(dir.join("variables/variables.data-00000-of-00001"), "data").unwrap();
}

#[tokio::test]
async fn local_discovery_and_fetch_in_place() {
    let root = tempfile::tempdir().unwrap();
    let iris = root.path().join("iris");
    write_version(&iris.join("3"));
    write_version(&iris.join("12"));
    let flat = root.path().join("flat");
    write_version(&flat);

    let model = discover_model(&ModelLocation::Local(iris.clone()), Validator::TensorFlow)
        .await
        .unwrap();
    assert_eq!(model.versions.keys().copied().collect::<Vec<_>>(), [3, 12]);
    let cache = ModelCache::new(root.path().join("cache"));
    assert_eq!(cache.fetch(&model, 12).await.unwrap(), iris.join("12"));

    let flat_model = discover_model(&ModelLocation::Local(flat.clone()), Validator::TensorFlow)
        .await
        .unwrap();
    assert_eq!(flat_model.layout, Layout::NonVersioned);
    assert_eq!(cache.fetch(&flat_model, 1).await.unwrap(), flat);
    assert!(
        !root.path().join("cache").exists(),
        "local models are not copied"
    );

    let models = discover_dir(
        &ModelLocation::Local(root.path().to_path_buf()),
        Validator::TensorFlow,
    )
    .await
    .unwrap();
    let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["flat", "iris"]);

    let file = root.path().join("flat/saved_model.pb");
    let err = discover_model(&ModelLocation::Local(file), Validator::TensorFlow)
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with("is not a directory"), "{err}");
}

#[tokio::test]
async fn local_watcher_reports_settled_changes() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    write_version(&model.join("1"));
    let mut watcher = Watcher::new(
        ModelLocation::Local(model.clone()),
        Validator::TensorFlow,
        Duration::from_millis(50),
    );
    assert_eq!(watcher.poll_once().await.unwrap(), [], "initial snapshot");
    assert_eq!(watcher.versions().keys().copied().collect::<Vec<_>>(), [1]);

    // Half-copied version 2: invalid, then valid but not yet settled, then added.
    std::fs::create_dir_all(model.join("2")).unwrap();
    std::fs::write(model.join("2/saved_model.pb"), "pb").unwrap();
    assert_eq!(watcher.poll_once().await.unwrap(), []);
    write_version(&model.join("2"));
    assert_eq!(watcher.poll_once().await.unwrap(), []);
    assert_eq!(
        watcher.poll_once().await.unwrap(),
        [RepositoryEvent::VersionAdded { version: 2 }]
    );
    assert_eq!(watcher.poll_once().await.unwrap(), []);

    // Changed content (size), reported once settled.
    std::fs::write(model.join("2/saved_model.pb"), "pb-v2").unwrap();
    assert_eq!(watcher.poll_once().await.unwrap(), []);
    assert_eq!(
        watcher.poll_once().await.unwrap(),
        [RepositoryEvent::VersionChanged { version: 2 }]
    );

    // Removal.
    std::fs::remove_dir_all(model.join("1")).unwrap();
    assert_eq!(
        watcher.poll_once().await.unwrap(),
        [RepositoryEvent::VersionRemoved { version: 1 }]
    );

    // A stray entry makes the layout invalid: one Error event, valid versions kept.
    std::fs::write(model.join("notes.txt"), "hi").unwrap();
    let events = watcher.poll_once().await.unwrap();
    assert!(
        matches!(&events[..], [RepositoryEvent::Error { message }] if message.contains("mixes version folders (2) with other entries (notes.txt)")),
        "{events:?}"
    );
    assert_eq!(watcher.poll_once().await.unwrap(), []);
    std::fs::remove_file(model.join("notes.txt")).unwrap();

    // The folder disappears: an error, no removals.
    let moved = root.path().join("moved");
    std::fs::rename(&model, &moved).unwrap();
    assert!(watcher.poll_once().await.is_err());
    assert_eq!(watcher.versions().keys().copied().collect::<Vec<_>>(), [2]);
    std::fs::rename(&moved, &model).unwrap();
    assert_eq!(watcher.poll_once().await.unwrap(), []);
}

#[tokio::test]
async fn spawned_watcher_sends_events() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    write_version(&model.join("1"));
    let mut rx = Watcher::new(
        ModelLocation::Local(model.clone()),
        Validator::TensorFlow,
        Duration::from_millis(30),
    )
    .spawn();
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_version(&model.join("5"));
    let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .unwrap();
    assert_eq!(event, RepositoryEvent::VersionAdded { version: 5 });
}
