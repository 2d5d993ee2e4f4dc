//! Local folders: discovery, in-place fetch and the watcher.

use std::path::Path;
use std::time::Duration;

use soma_core::ModelLocation;
use soma_repository::{
    Layout, ModelCache, RepositoryEvent, Validator, WatchSource, Watcher, discover_dir,
    discover_model,
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
    // Version 7, written with leading zeros as TF Serving and Cortex allow.
    write_version(&iris.join("007"));
    let flat = root.path().join("flat");
    write_version(&flat);

    let model = discover_model(&ModelLocation::Local(iris.clone()), Validator::TensorFlow)
        .await
        .unwrap();
    assert_eq!(
        model.versions.keys().copied().collect::<Vec<_>>(),
        [3, 7, 12]
    );
    let cache = ModelCache::new(root.path().join("cache"));
    assert_eq!(cache.fetch(&model, 12).await.unwrap(), iris.join("12"));
    assert_eq!(cache.fetch(&model, 7).await.unwrap(), iris.join("007"));

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

fn added(model: &str, version: i64) -> RepositoryEvent {
    RepositoryEvent::VersionAdded {
        model: model.into(),
        version,
    }
}

fn removed(model: &str, version: i64) -> RepositoryEvent {
    RepositoryEvent::VersionRemoved {
        model: model.into(),
        version,
    }
}

fn only_error(events: &[RepositoryEvent]) -> (Option<String>, String) {
    match events {
        [RepositoryEvent::Error { model, error, .. }] => (model.clone(), error.clone()),
        other => panic!("expected one error event, got {other:?}"),
    }
}

fn versions(watcher: &Watcher, model: &str) -> Vec<i64> {
    watcher
        .model(model)
        .map(|m| m.versions.keys().copied().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn local_watcher_reports_settled_changes() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    write_version(&model.join("1"));
    let mut watcher = Watcher::new(
        [WatchSource::model("m", ModelLocation::Local(model.clone()))],
        Validator::TensorFlow,
        Duration::from_millis(50),
    );
    assert_eq!(watcher.poll_once().await, [], "initial snapshot");
    assert_eq!(versions(&watcher, "m"), [1]);

    // Half-copied version 2: invalid, then valid but not yet settled, then added.
    std::fs::create_dir_all(model.join("2")).unwrap();
    std::fs::write(model.join("2/saved_model.pb"), "pb").unwrap();
    assert_eq!(watcher.poll_once().await, []);
    write_version(&model.join("2"));
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(watcher.poll_once().await, [added("m", 2)]);
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(
        watcher.model("m").unwrap().location,
        ModelLocation::Local(model.clone())
    );

    // Changed content (size), reported once settled.
    std::fs::write(model.join("2/saved_model.pb"), "pb-v2").unwrap();
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(
        watcher.poll_once().await,
        [RepositoryEvent::VersionChanged {
            model: "m".into(),
            version: 2
        }]
    );

    // Removal.
    std::fs::remove_dir_all(model.join("1")).unwrap();
    assert_eq!(watcher.poll_once().await, [removed("m", 1)]);

    // A version that stays invalid is reported (once it settled), and never added.
    std::fs::create_dir_all(model.join("3")).unwrap();
    std::fs::write(model.join("3/saved_model.pb"), "pb").unwrap();
    assert_eq!(watcher.poll_once().await, []);
    let (name, error) = only_error(&watcher.poll_once().await);
    assert_eq!(name.as_deref(), Some("m"));
    assert!(
        error.ends_with(
            "version 3 is missing variables/variables.index, variables/variables.data-00000-of-*"
        ),
        "{error}"
    );
    assert_eq!(watcher.poll_once().await, [], "reported once");
    std::fs::remove_dir_all(model.join("3")).unwrap();
    assert_eq!(watcher.poll_once().await, []);

    // A stray entry makes the layout invalid: one Error event, valid versions kept.
    std::fs::write(model.join("notes.txt"), "hi").unwrap();
    let (_, error) = only_error(&watcher.poll_once().await);
    assert!(
        error.contains("mixes version folders (2) with other entries (notes.txt)"),
        "{error}"
    );
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(versions(&watcher, "m"), [2]);
    std::fs::remove_file(model.join("notes.txt")).unwrap();
    assert_eq!(watcher.poll_once().await, []);

    // The folder disappears: an error, no removals; it comes back: nothing changed.
    let moved = root.path().join("moved");
    std::fs::rename(&model, &moved).unwrap();
    let (_, error) = only_error(&watcher.poll_once().await);
    assert!(error.ends_with("does not exist"), "{error}");
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(versions(&watcher, "m"), [2]);
    std::fs::rename(&moved, &model).unwrap();
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(versions(&watcher, "m"), [2]);
}

#[tokio::test]
async fn local_dir_watcher_tracks_models() {
    let root = tempfile::tempdir().unwrap();
    write_version(&root.path().join("iris/1"));
    write_version(&root.path().join("wine"));
    let mut watcher = Watcher::new(
        [WatchSource::dir(ModelLocation::Local(
            root.path().to_path_buf(),
        ))],
        Validator::TensorFlow,
        Duration::from_millis(50),
    );
    assert_eq!(watcher.poll_once().await, []);
    let names: Vec<&str> = watcher.models().map(|(n, _)| n).collect();
    assert_eq!(names, ["iris", "wine"]);
    assert_eq!(versions(&watcher, "wine"), [1]);

    // A new model folder, then a new version of an existing one.
    write_version(&root.path().join("rose/7"));
    write_version(&root.path().join("iris/10"));
    assert_eq!(watcher.poll_once().await, []);
    assert_eq!(
        watcher.poll_once().await,
        [added("iris", 10), added("rose", 7)]
    );
    assert_eq!(
        watcher.model("rose").unwrap().location,
        ModelLocation::Local(root.path().join("rose"))
    );

    // A model folder removed: all its versions go.
    std::fs::remove_dir_all(root.path().join("iris")).unwrap();
    assert_eq!(
        watcher.poll_once().await,
        [removed("iris", 1), removed("iris", 10)]
    );
    assert!(watcher.model("iris").is_none());

    // A stray file and the reserved name: reported, the other models untouched.
    std::fs::write(root.path().join("README"), "hi").unwrap();
    write_version(&root.path().join("_cortex_default"));
    let (name, error) = only_error(&watcher.poll_once().await);
    assert_eq!(name, None);
    assert!(
        error.contains("README directly in the models directory"),
        "{error}"
    );
    assert!(
        error.contains("_cortex_default: is a reserved name"),
        "{error}"
    );
    assert_eq!(watcher.poll_once().await, []);
    let names: Vec<&str> = watcher.models().map(|(n, _)| n).collect();
    assert_eq!(names, ["rose", "wine"]);

    // A non-versioned model turned versioned: the old version goes, the new one comes.
    let wine = root.path().join("wine");
    std::fs::remove_dir_all(&wine).unwrap();
    write_version(&wine.join("1"));
    assert_eq!(watcher.poll_once().await, [removed("wine", 1)]);
    assert_eq!(watcher.poll_once().await, [added("wine", 1)]);
    assert_eq!(watcher.model("wine").unwrap().layout, Layout::Versioned);
}

#[tokio::test]
async fn spawned_watcher_sends_events() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    write_version(&model.join("1"));
    let mut rx = Watcher::new(
        [WatchSource::model("m", ModelLocation::Local(model.clone()))],
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
    assert_eq!(event, added("m", 5));
}

/// A folder in the model folder that cannot be read (here a link to nowhere and a link
/// loop; in production a root-only `lost+found`) is left out of the listing: the model's
/// versions are found, where the whole listing used to fail.
#[tokio::test]
async fn unreadable_entries_leave_the_other_versions_found() {
    let root = tempfile::tempdir().unwrap();
    let iris = root.path().join("iris");
    write_version(&iris.join("1"));
    std::os::unix::fs::symlink(root.path().join("nowhere"), iris.join("lost+found")).unwrap();
    std::os::unix::fs::symlink(&iris, iris.join("1/variables/loop")).unwrap();
    let model = discover_model(&ModelLocation::Local(iris), Validator::TensorFlow)
        .await
        .unwrap();
    assert_eq!(model.versions.keys().copied().collect::<Vec<_>>(), [1]);
}

/// A base path that is a symbolic link is followed again at every poll: switching it to
/// another folder (as git-sync does) serves that folder's versions, where the watcher kept
/// listing the folder the link named when it started.
#[tokio::test]
async fn a_base_path_link_is_followed_at_every_poll() {
    let root = tempfile::tempdir().unwrap();
    write_version(&root.path().join("a/1"));
    write_version(&root.path().join("b/2"));
    let current = root.path().join("current");
    std::os::unix::fs::symlink(root.path().join("a"), &current).unwrap();
    let mut watcher = Watcher::new(
        [WatchSource::model(
            "m",
            ModelLocation::Local(current.clone()),
        )],
        Validator::TensorFlow,
        Duration::from_millis(50),
    );
    assert_eq!(watcher.poll_once().await, [], "initial snapshot");
    assert_eq!(versions(&watcher, "m"), [1]);
    let next = root.path().join("next");
    std::os::unix::fs::symlink(root.path().join("b"), &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    for _ in 0..3 {
        watcher.poll_once().await;
    }
    assert_eq!(versions(&watcher, "m"), [2]);
}

/// Two folders naming one version (`0010` beside `10`): the version is read from the one
/// whose name sorts last, as TF Serving reads it, and the other is reported; the version is
/// neither removed nor rolled back meanwhile.
#[tokio::test]
async fn a_version_named_by_two_folders_is_read_from_the_last_name() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    write_version(&model.join("9"));
    write_version(&model.join("0010"));
    let mut watcher = Watcher::new(
        [WatchSource::model("m", ModelLocation::Local(model.clone()))],
        Validator::TensorFlow,
        Duration::from_millis(50),
    );
    assert_eq!(watcher.poll_once().await, []);
    let folder = |w: &Watcher| w.model("m").unwrap().versions[&10].folder.clone();
    assert_eq!(folder(&watcher), "0010");

    // The same files under the new name: settled at once, and loaded again from there.
    write_version(&model.join("10"));
    let events = watcher.poll_once().await;
    let changed = RepositoryEvent::VersionChanged {
        model: "m".into(),
        version: 10,
    };
    assert_eq!(events[1..], [changed], "{events:?}");
    let (model_name, error) = only_error(&events[..1]);
    assert_eq!(model_name.as_deref(), Some("m"));
    assert!(
        error.ends_with(
            "version 10 is named by more than one folder: read from \"10\", \"0010\" ignored \
             (keep one)"
        ),
        "{error}"
    );
    assert_eq!(versions(&watcher, "m"), [9, 10]);
    assert_eq!(folder(&watcher), "10");
}

/// A folder missing at the first poll: the caller found nothing, so its versions are
/// reported as added once the folder appears (and they settle).
#[tokio::test]
async fn versions_of_a_folder_missing_at_the_first_poll_are_added() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    let mut watcher = Watcher::new(
        [WatchSource::model("m", ModelLocation::Local(model.clone()))],
        Validator::TensorFlow,
        Duration::from_millis(50),
    );
    let (_, error) = only_error(&watcher.poll_once().await);
    assert!(error.ends_with("does not exist"), "{error}");
    write_version(&model.join("3"));
    assert_eq!(watcher.poll_once().await, [], "not settled yet");
    assert_eq!(watcher.poll_once().await, [added("m", 3)]);
    assert_eq!(versions(&watcher, "m"), [3]);
}
