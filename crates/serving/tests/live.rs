//! The manager over real TensorFlow and real folders (and moto for S3): versions appear,
//! disappear and break while requests run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use soma_metrics::{LOAD_ATTEMPT_COUNT, LOAD_LATENCY, Registry};
use soma_repository::S3Settings;
use soma_runtime::hub::ModelConfig;
use soma_runtime::{
    ConcurrencyLimit, ModelHub, ModelSet, ServableState, VersionPolicy, VersionSelector,
};
use soma_serving::{ManagedModel, ManagerOptions, ModelManager};
use soma_testkit::{MotoServer, copy_dir, fixtures};

const POLL: Duration = Duration::from_millis(100);

/// Copies a version folder under a temporary name and renames it in, like an upload tool.
fn publish(from: &Path, repo: &Path, version: i64) {
    let tmp = repo.join(format!(".tmp-{version}"));
    copy_dir(from, &tmp);
    std::fs::rename(tmp, repo.join(version.to_string())).unwrap();
}

fn options(cache: &Path) -> ManagerOptions {
    ManagerOptions {
        poll_interval: POLL,
        ..ManagerOptions::new(cache.to_path_buf())
    }
}

fn config(name: &str, base_path: &Path, policy: VersionPolicy) -> ModelConfig {
    ModelConfig {
        name: name.to_string(),
        base_path: base_path.display().to_string(),
        policy,
        labels: BTreeMap::new(),
    }
}

fn iris_input() -> Map<String, Value> {
    json!({"x": [[5.1, 3.5, 1.4, 0.2]]})
        .as_object()
        .cloned()
        .unwrap()
}

/// The model's versions as its status lists them: newest first, as TF Serving does.
fn states(hub: &dyn ModelHub, model: &str) -> Vec<(i64, ServableState)> {
    hub.status(model, None)
        .unwrap()
        .into_iter()
        .map(|s| (s.version, s.state))
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn latest(hub: &dyn ModelHub, model: &str) -> Option<i64> {
    hub.servable(model, &VersionSelector::Latest)
        .ok()
        .map(|s| s.version())
}

/// A manager serving `<root>/iris` (latest version) with version 1 of the iris fixture in it.
async fn serve_iris_1(root: &Path) -> (PathBuf, Arc<ModelManager>) {
    serve_iris_1_recorded(root, None).await
}

/// [`serve_iris_1`], the models' metrics recorded in `metrics`.
async fn serve_iris_1_recorded(
    root: &Path,
    metrics: Option<Registry>,
) -> (PathBuf, Arc<ModelManager>) {
    let repo = root.join("iris");
    std::fs::create_dir_all(&repo).unwrap();
    publish(&fixtures().join("iris/1"), &repo, 1);
    let options = ManagerOptions {
        metrics,
        ..options(&root.join("cache"))
    };
    let manager = Arc::new(ModelManager::new(options));
    let spec = ManagedModel::new(config("iris", &repo, VersionPolicy::Latest(1)));
    manager.apply(vec![spec]).await.unwrap();
    (repo, manager)
}

/// A version whose variables were copied in half fails with TensorFlow's own code in its
/// status (`OUT_OF_RANGE`, as TF Serving reports it), and the version before it serves on.
/// TensorFlow's load metrics count both attempts under the versions' paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_version_reports_tensorflows_code_and_the_old_one_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = Registry::new();
    let (repo, manager) = serve_iris_1_recorded(tmp.path(), Some(metrics.clone())).await;

    let staging = tmp.path().join("staging");
    copy_dir(&fixtures().join("iris/2"), &staging);
    let data = staging.join("variables/variables.data-00000-of-00001");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::rename(&staging, repo.join("2")).unwrap();
    wait_until("version 2 to fail", || {
        manager
            .status("iris", Some(&VersionSelector::Number(2)))
            .is_ok_and(|s| s[0].state == ServableState::End)
    })
    .await;

    let broken = &manager
        .status("iris", Some(&VersionSelector::Number(2)))
        .unwrap()[0];
    let (kind, message) = broken.error.as_ref().expect("version 2 keeps its error");
    assert_eq!(*kind, soma_core::ErrorKind::OutOfRange, "{message}");
    assert!(
        message.contains("Read less bytes than requested"),
        "{message}"
    );
    assert_eq!(latest(&*manager, "iris"), Some(1));
    assert_eq!(
        states(&*manager, "iris"),
        [(2, ServableState::End), (1, ServableState::Available)]
    );

    let page = metrics.render();
    let path = |version: &str| repo.join(version).display().to_string();
    let loads = |version: &str, status: &str| {
        metrics.value(
            LOAD_ATTEMPT_COUNT,
            &[("model_path", &path(version)), ("status", status)],
        )
    };
    assert_eq!(loads("1", "success"), Some(1.0), "{page}");
    assert_eq!(loads("2", "fail"), Some(1.0), "{page}");
    assert_eq!(loads("2", "success"), None, "{page}");
    for version in ["1", "2"] {
        let micros = metrics.value(LOAD_LATENCY, &[("model_path", &path(version))]);
        assert!(micros.is_some_and(|us| us > 0.0), "{page}");
    }
}

/// The outputs of a prediction on version 1.
fn predict_v1(hub: &dyn ModelHub) -> Value {
    let servable = hub.servable("iris", &VersionSelector::Number(1)).unwrap();
    let prediction = servable.predict_json(None, &iris_input()).unwrap();
    Value::Object(prediction.outputs_json())
}

fn version_1(hub: &dyn ModelHub) -> soma_runtime::VersionStatus {
    hub.status("iris", Some(&VersionSelector::Number(1)))
        .unwrap()[0]
        .clone()
}

/// A version whose files are replaced in place is loaded again from them. Replaced with a
/// broken copy, the files loaded before serve on and the version's status, still
/// `AVAILABLE`, carries the failure until the files change again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_replaced_in_place_reloads_and_a_broken_copy_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, manager) = serve_iris_1(tmp.path()).await;
    let first = predict_v1(&*manager);

    copy_dir(&fixtures().join("iris/2"), &repo.join("1"));
    wait_until("the new files to serve", || predict_v1(&*manager) != first).await;
    let second = predict_v1(&*manager);
    assert_eq!(version_1(&*manager).error, None);

    let data = repo.join("1/variables/variables.data-00000-of-00001");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    wait_until("the failed reload to show", || {
        version_1(&*manager).error.is_some()
    })
    .await;
    let status = version_1(&*manager);
    assert_eq!(status.state, ServableState::Available);
    let (kind, message) = status.error.unwrap();
    assert_eq!(kind, soma_core::ErrorKind::OutOfRange, "{message}");
    assert!(
        message.starts_with("the version's files changed and failed to load"),
        "{message}"
    );
    assert_eq!(predict_v1(&*manager), second);

    std::fs::write(&data, &bytes).unwrap();
    wait_until("the repaired files to load", || {
        version_1(&*manager).error.is_none()
    })
    .await;
    assert_eq!(predict_v1(&*manager), second);
    assert_eq!(version_1(&*manager).state, ServableState::Available);
}

/// A client that predicts on "latest" in a loop, from its start until [`finish`].
///
/// [`finish`]: LoopingClient::finish
struct LoopingClient {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>, BTreeSet<i64>)>,
}

impl LoopingClient {
    fn start(hub: Arc<ModelManager>) -> LoopingClient {
        LoopingClient::start_on(hub, VersionSelector::Latest)
    }

    /// A client looping on `selector` (a label, say) rather than "latest".
    fn start_on(hub: Arc<ModelManager>, selector: VersionSelector) -> LoopingClient {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failed, mut seen) = (0, Vec::new(), BTreeSet::new());
            while !stopped.load(Ordering::Relaxed) {
                match hub
                    .servable("iris", &selector)
                    .and_then(|s| s.predict_json(None, &iris_input()))
                {
                    Ok(p) => {
                        ok += 1;
                        seen.insert(p.version);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, seen)
        });
        LoopingClient { stop, thread }
    }

    /// Stops the loop and checks that no request failed and enough ran; answers the
    /// versions that answered.
    fn finish(self) -> BTreeSet<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failed, seen) = self.thread.join().unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        assert!(ok > 10, "only {ok} requests");
        seen
    }
}

/// HandleReloadConfigRequest with a new base path for a served model (moving it to another
/// folder or bucket): the new folder's versions load while the old ones serve, then the old
/// ones unload; no request fails. A folder with no versions yet is reported and the old
/// versions serve on until one appears there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_moved_to_a_new_base_path_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new, empty) = (
        tmp.path().join("old"),
        tmp.path().join("new"),
        tmp.path().join("empty"),
    );
    std::fs::create_dir_all(&empty).unwrap();
    publish(&fixtures().join("iris/1"), &old, 1);
    publish(&fixtures().join("iris/2"), &new, 1);
    publish(&fixtures().join("iris/2"), &new, 2);
    let manager = Arc::new(ModelManager::new(options(&tmp.path().join("cache"))));
    let policy = VersionPolicy::Specific(BTreeSet::from([1, 2]));
    manager
        .reload(vec![config("iris", &old, policy.clone())])
        .await
        .unwrap();
    let answer = |version| {
        manager
            .servable("iris", &VersionSelector::Number(version))
            .unwrap()
            .predict_json(None, &iris_input())
            .unwrap()
            .outputs_json()
    };
    let before = answer(1);
    let client = LoopingClient::start(Arc::clone(&manager));
    tokio::time::sleep(POLL).await;

    manager
        .reload(vec![config("iris", &new, policy.clone())])
        .await
        .unwrap();
    assert_eq!(
        states(&*manager, "iris"),
        [(2, ServableState::Available), (1, ServableState::Available)]
    );
    // Version 1 is the new folder's copy now (iris/2's weights).
    assert_ne!(answer(1), before);
    assert_eq!(answer(1), answer(2));

    // To a folder with no versions: refused with the reason, version 2 serves on (and the
    // new config's labels apply to the versions that serve)...
    let mut moved = config("iris", &empty, policy.clone());
    moved.labels.insert("stable".into(), 2);
    let err = manager.reload(vec![moved]).await.unwrap_err();
    assert!(
        err.to_string().contains("which has no versions yet")
            && err
                .to_string()
                .contains("serve until versions appear there"),
        "{err}"
    );
    tokio::time::sleep(POLL * 3).await;
    assert_eq!(latest(&*manager, "iris"), Some(2));
    let stable = manager.servable("iris", &VersionSelector::Label("stable".into()));
    assert_eq!(stable.unwrap().version(), 2);
    // ... until a version appears there: it loads, the old ones unload.
    publish(&fixtures().join("iris/1"), &empty, 1);
    wait_until("the moved model's version 1", || {
        states(&*manager, "iris") == [(2, ServableState::End), (1, ServableState::Available)]
    })
    .await;
    assert_eq!(client.finish(), BTreeSet::from([1, 2]));
}

/// A move to a folder whose only version fails to load: the old version serves on, as TF
/// Serving's availability-preserving policy keeps it, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_folder_of_broken_versions_keeps_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, broken) = (tmp.path().join("old"), tmp.path().join("broken"));
    publish(&fixtures().join("iris/1"), &old, 1);
    std::fs::create_dir_all(&broken).unwrap();
    publish(
        &fixtures().join("invalid/keras_saved_model_save/1"),
        &broken,
        7,
    );
    let manager = Arc::new(ModelManager::new(options(&tmp.path().join("cache"))));
    manager
        .reload(vec![config("iris", &old, VersionPolicy::Latest(1))])
        .await
        .unwrap();
    let client = LoopingClient::start(Arc::clone(&manager));

    let err = manager
        .reload(vec![config("iris", &broken, VersionPolicy::Latest(1))])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("version 7"), "{err}");
    tokio::time::sleep(POLL * 3).await;
    assert_eq!(client.finish(), BTreeSet::from([1]));
    assert_eq!(
        states(&*manager, "iris"),
        [(7, ServableState::End), (1, ServableState::Available)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_version_goes_live_without_failed_requests_and_broken_one_keeps_old() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("iris");
    std::fs::create_dir_all(&repo).unwrap();
    publish(&fixtures().join("iris/1"), &repo, 1);
    let mirror = Arc::new(ModelSet::new("api", false));
    let manager = Arc::new(ModelManager::new(options(&tmp.path().join("cache"))));
    let spec = ManagedModel {
        mirror: Some(Arc::clone(&mirror)),
        ..ManagedModel::new(config("iris", &repo, VersionPolicy::Latest(1)))
    };
    manager.apply(vec![spec]).await.unwrap();
    assert_eq!(states(&*manager, "iris"), [(1, ServableState::Available)]);

    // A client loops on "latest" for the whole test.
    let client = LoopingClient::start(Arc::clone(&manager));

    publish(&fixtures().join("iris/2"), &repo, 2);
    wait_until("version 2 to serve", || {
        latest(&*manager, "iris") == Some(2)
    })
    .await;
    wait_until("version 1 to unload", || {
        states(&*manager, "iris") == [(2, ServableState::Available), (1, ServableState::End)]
    })
    .await;
    // The async API's set follows: only version 2 left.
    assert_eq!(mirror.list(), [("iris".to_string(), vec![2])]);
    std::fs::remove_dir_all(repo.join("1")).unwrap();

    // A broken version 3 (loads, fails its warm-up) never replaces version 2.
    publish(
        &fixtures().join("invalid/keras_saved_model_save/1"),
        &repo,
        3,
    );
    wait_until("version 3 to fail", || {
        manager
            .status("iris", Some(&VersionSelector::Number(3)))
            .is_ok_and(|s| s[0].state == ServableState::End)
    })
    .await;
    tokio::time::sleep(POLL * 5).await;
    let seen = client.finish();

    let broken = &manager
        .status("iris", Some(&VersionSelector::Number(3)))
        .unwrap()[0];
    let (_, message) = broken.error.as_ref().expect("version 3 keeps its error");
    assert!(
        message.contains("failed its warm-up prediction"),
        "{message}"
    );
    assert_eq!(latest(&*manager, "iris"), Some(2));
    assert_eq!(seen, BTreeSet::from([1, 2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_load_within_the_load_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = ConcurrencyLimit::new(1);
    let manager = Arc::new(ModelManager::new(ManagerOptions {
        load_limit: Some(limit.clone()),
        ..options(&tmp.path().join("cache"))
    }));
    // The test holds the only permit (clones share them): nothing may load meanwhile.
    let held = limit.acquire().await;
    let reload = tokio::spawn({
        let manager = Arc::clone(&manager);
        let configs = vec![
            config("iris", &fixtures().join("iris"), VersionPolicy::All),
            config(
                "plain",
                &fixtures().join("iris_plain"),
                VersionPolicy::Latest(1),
            ),
        ];
        async move { manager.reload(configs).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(latest(&*manager, "iris"), None);
    assert_eq!(latest(&*manager, "plain"), None);
    assert!(!reload.is_finished());

    drop(held);
    reload.await.unwrap().unwrap();
    assert_eq!(latest(&*manager, "iris"), Some(10));
    assert_eq!(latest(&*manager, "plain"), Some(1));
    assert!(
        states(&*manager, "iris")
            .iter()
            .all(|(_, s)| *s == ServableState::Available)
    );
}

/// A reload that moves a label off a version it unloads points the label at its new
/// version before the old one goes, as TF Serving updates its labels before it unloads:
/// requests by label never meet a version already gone (they did, now and then, when the
/// labels were applied after the unload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_moves_before_its_old_version_unloads() {
    let tmp = tempfile::tempdir().unwrap();
    let manager = Arc::new(ModelManager::new(options(&tmp.path().join("cache"))));
    let iris = fixtures().join("iris");
    let labelled = |version: i64, also: Option<i64>| {
        let mut versions = BTreeSet::from([version]);
        versions.extend(also);
        let mut spec = config("iris", &iris, VersionPolicy::Specific(versions));
        spec.labels.insert("stable".into(), version);
        vec![spec]
    };
    manager.reload(labelled(2, Some(9))).await.unwrap();
    let client = LoopingClient::start_on(
        Arc::clone(&manager),
        VersionSelector::Label("stable".into()),
    );
    // A label moves only to a version already available (TF Serving's rule), so each move
    // off an unloaded version follows a reload that loads its new one.
    for _ in 0..3 {
        manager.reload(labelled(9, None)).await.unwrap(); // 2 unloads
        manager.reload(labelled(9, Some(2))).await.unwrap();
        manager.reload(labelled(2, None)).await.unwrap(); // 9 unloads
        manager.reload(labelled(2, Some(9))).await.unwrap();
    }
    assert_eq!(client.finish(), BTreeSet::from([2, 9]));
    // A label on a version the same reload unloads is refused, as one on a version that is
    // not available.
    let mut dangling = config("iris", &iris, VersionPolicy::Specific(BTreeSet::from([9])));
    dangling.labels.insert("stable".into(), 2);
    let err = manager.reload(vec![dangling]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Request to assign label to version 2 of model iris"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_models_and_checks_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let manager = ModelManager::new(options(&tmp.path().join("cache")));
    let iris = fixtures().join("iris");
    let plain = fixtures().join("iris_plain");
    manager
        .reload(vec![config("iris", &iris, VersionPolicy::All)])
        .await
        .unwrap();
    assert_eq!(manager.models(), ["iris"]);
    assert_eq!(latest(&manager, "iris"), Some(10));

    // Policy change on the same path: no reload of the kept versions; a label added.
    let mut pinned = config(
        "iris",
        &iris,
        VersionPolicy::Specific(BTreeSet::from([2, 9])),
    );
    pinned.labels.insert("stable".into(), 2);
    manager
        .reload(vec![
            pinned.clone(),
            config("plain", &plain, VersionPolicy::Latest(1)),
        ])
        .await
        .unwrap();
    assert_eq!(manager.models(), ["iris", "plain"]);
    assert_eq!(latest(&manager, "iris"), Some(9));
    let labelled = manager
        .servable("iris", &VersionSelector::Label("stable".into()))
        .unwrap();
    assert_eq!(labelled.version(), 2);
    assert_eq!(
        states(&manager, "iris"),
        [
            (10, ServableState::End),
            (9, ServableState::Available),
            (2, ServableState::Available),
            (1, ServableState::End)
        ]
    );

    // A label on a version that is not available is refused, the old label stays.
    let mut bad = pinned.clone();
    bad.labels.insert("canary".into(), 10);
    let err = manager.reload(vec![bad]).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "Request to assign label to version 10 of model iris, which is not currently \
             available for inference"
        ),
        "{err}"
    );
    let unknown = manager
        .servable("iris", &VersionSelector::Label("canary".into()))
        .unwrap_err();
    // A bad request in TF Serving (INVALID_ARGUMENT, HTTP 400), not a missing servable.
    assert_eq!(
        (unknown.kind(), unknown.to_string()),
        (
            soma_core::ErrorKind::InvalidArgument,
            "Unrecognized servable version label: canary".to_string()
        )
    );
    // ... and nothing else of that reload was applied ("plain", left out of it, still
    // serves), as TF Serving checks labels before it loads or unloads anything.
    assert_eq!(manager.models(), ["iris", "plain"]);
    assert_eq!(latest(&manager, "plain"), Some(1));
    assert_eq!(latest(&manager, "iris"), Some(9));
    manager.reload(vec![pinned.clone()]).await.unwrap();
    assert_eq!(manager.models(), ["iris"]);
    // As in TF Serving, a removed model's versions are still reported, as END.
    let gone = manager.status("plain", None).unwrap();
    assert!(
        !gone.is_empty() && gone.iter().all(|v| v.state == ServableState::End),
        "{gone:?}"
    );
    let never = manager.status("never", None).unwrap_err();
    assert_eq!(
        never.to_string(),
        "Could not find any versions of model never"
    );
    let missing = manager
        .servable("plain", &VersionSelector::Latest)
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "Servable not found for request: Latest(plain)"
    );

    // add() refuses a name in use; remove() forgets a model.
    let again = ManagedModel::new(config("iris", &iris, VersionPolicy::All));
    let err = manager.add(vec![again]).await.unwrap_err();
    assert_eq!(err.to_string(), "model iris is already served");
    manager
        .add(vec![ManagedModel::new(config(
            "extra",
            &plain,
            VersionPolicy::All,
        ))])
        .await
        .unwrap();
    assert_eq!(manager.models(), ["extra", "iris"]);
    manager.remove(&["extra".to_string()]).await;
    assert_eq!(manager.models(), ["iris"]);

    // A new model whose base path has no versions fails the reload with the reason, and
    // the rest of it is not applied (iris, left out, still serves).
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = manager
        .reload(vec![config("e", &empty, VersionPolicy::Latest(1))])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("model e: "), "{err}");
    assert_eq!(manager.models(), ["iris"]);
    assert_eq!(latest(&manager, "iris"), Some(9));
    // So does a base path that does not parse, and a new model with a label (none of its
    // versions is available yet).
    let mut labelled = config("plain", &plain, VersionPolicy::Latest(1));
    labelled.labels.insert("stable".into(), 1);
    let err = manager.reload(vec![labelled]).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "Request to assign label to version 1 of model plain, which is not currently \
             available"
        ),
        "{err}"
    );
    let err = manager
        .reload(vec![config("bad", Path::new(""), VersionPolicy::Latest(1))])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("model bad: base_path"), "{err}");
    assert_eq!(manager.models(), ["iris"]);
    assert_eq!(latest(&manager, "iris"), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_versions_go_live() {
    let moto = MotoServer::start();
    moto.create_bucket("models");
    moto.upload_dir(&fixtures().join("iris/1"), "models", "iris/1");
    let tmp = tempfile::tempdir().unwrap();
    let metrics = Registry::new();
    let options = ManagerOptions {
        metrics: Some(metrics.clone()),
        s3: moto_settings(&moto),
        ..options(&tmp.path().join("cache"))
    };
    let manager = ModelManager::new(options);
    let cfg = ModelConfig {
        base_path: "s3://models/iris".into(),
        ..config("iris", Path::new("/"), VersionPolicy::Latest(1))
    };
    manager.reload(vec![cfg]).await.unwrap();
    assert_eq!(latest(&manager, "iris"), Some(1));
    // Loaded from the downloaded copy, recorded under the version's own address, as TF
    // Serving (which reads S3 itself) names it.
    let loads = metrics.value(
        LOAD_ATTEMPT_COUNT,
        &[("model_path", "s3://models/iris/1"), ("status", "success")],
    );
    assert_eq!(loads, Some(1.0), "{}", metrics.render());
    moto.upload_dir(&fixtures().join("iris/9"), "models", "iris/9");
    wait_until("s3 version 9", || latest(&manager, "iris") == Some(9)).await;
    let p = manager
        .servable("iris", &VersionSelector::Latest)
        .unwrap()
        .predict_json(None, &iris_input())
        .unwrap();
    assert_eq!(p.version, 9);

    // The prefix emptied (`aws s3 rm --recursive`, to upload again): version 9 serves on,
    // then the new upload goes live.
    for key in moto.list_keys("models") {
        moto.delete_object("models", &key);
    }
    tokio::time::sleep(POLL * 5).await;
    assert_eq!(latest(&manager, "iris"), Some(9));
    let still = manager.servable("iris", &VersionSelector::Latest).unwrap();
    assert_eq!(still.predict_json(None, &iris_input()).unwrap().version, 9);
    moto.upload_dir(&fixtures().join("iris/10"), "models", "iris/10");
    wait_until("s3 version 10", || latest(&manager, "iris") == Some(10)).await;
    // The downloaded copies of the versions deleted from S3 are deleted once they do not
    // serve (9 after 10 replaced it; 1 was not serving when it went).
    let cached = |v: &str| tmp.path().join("cache/models/iris").join(v).exists();
    wait_until("the removed versions' copies deleted", || {
        !cached("9") && !cached("1")
    })
    .await;
    assert!(cached("10"));
}

/// A fetch that fails for a reason that passes is retried: the cache's folder for the model
/// is blocked by a file (an I/O error, as a full or failing disk gives) until a moment after
/// the first try; with retries off the version ends with the error.
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_that_fails_for_a_while_is_retried() {
    let (moto, cfg) = moto_with_iris_1();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let blocker = cache.join("models").join("iris");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();

    // Retries off: the version ends with the I/O error.
    std::fs::write(&blocker, "in the way").unwrap();
    let manager = retrying_manager(&moto, &cache, 0, Duration::from_secs(60));
    let _ = manager.reload(vec![cfg.clone()]).await;
    wait_until("version 1 to fail", || {
        states(&manager, "iris") == [(1, ServableState::End)]
    })
    .await;
    drop(manager);

    // Retries on: the blocker goes away after the first try, and the version loads.
    let manager = retrying_manager(&moto, &cache, 20, Duration::from_millis(200));
    let unblock = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::remove_file(&blocker).unwrap();
    });
    let _ = manager.reload(vec![cfg]).await;
    unblock.await.unwrap();
    wait_until("version 1 after the retries", || {
        latest(&manager, "iris") == Some(1)
    })
    .await;
}

/// A version whose fetch waits to be tried again does not hold up its model's reloads or
/// removal (the first try of version 2 fails; the next is a minute away): the reload
/// answers at once, version 1 serves on, and taking the model out of the list unloads it.
/// With a short wait, the version loads on a later try while version 1 serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_waiting_to_be_retried_holds_up_no_reload() {
    let (moto, cfg) = moto_with_iris_1();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let manager = |wait: Duration| retrying_manager(&moto, &cache, 1000, wait);
    // Version 2's lock file cannot be opened (a folder is in its place): an I/O error.
    block_fetch(&cache, "iris", 2);

    let slow = manager(Duration::from_secs(60));
    slow.reload(vec![cfg.clone()]).await.unwrap();
    moto.upload_dir(&fixtures().join("iris/2"), "models", "iris/2");
    wait_until("version 2 to wait for its next fetch", || {
        states(&slow, "iris") == [(2, ServableState::Loading), (1, ServableState::Available)]
    })
    .await;
    let labelled = ModelConfig {
        labels: BTreeMap::from([("stable".to_string(), 1)]),
        ..cfg
    };
    let soon = Duration::from_secs(5);
    let reload = tokio::time::timeout(soon, slow.reload(vec![labelled])).await;
    reload.expect("the reload waited for the retry").unwrap();
    assert_eq!(latest(&slow, "iris"), Some(1));
    let by_label = VersionSelector::Label("stable".into());
    assert_eq!(slow.servable("iris", &by_label).unwrap().version(), 1);
    let removal = tokio::time::timeout(soon, slow.reload(vec![])).await;
    removal.expect("the removal waited for the retry").unwrap();
    assert!(slow.servable("iris", &VersionSelector::Latest).is_err());
    drop(slow);

    // Another model, so that its first load sees only version 1.
    moto.upload_dir(&fixtures().join("iris/1"), "models", "other/1");
    let quick = manager(Duration::from_millis(200));
    let other = ModelConfig {
        base_path: "s3://models/other".into(),
        ..config("other", Path::new("/"), VersionPolicy::Latest(1))
    };
    quick.reload(vec![other]).await.unwrap();
    let blocker = block_fetch(&cache, "other", 2);
    moto.upload_dir(&fixtures().join("iris/2"), "models", "other/2");
    wait_until("version 2 to wait for its next fetch", || {
        states(&quick, "other") == [(2, ServableState::Loading), (1, ServableState::Available)]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(latest(&quick, "other"), Some(1));
    std::fs::remove_dir(&blocker).unwrap();
    wait_until("version 2 after a later try", || {
        latest(&quick, "other") == Some(2)
    })
    .await;
}

/// Storage that fails for longer than the whole retry budget: the version ends with the
/// error, then gets another round of fetches a retry interval later, and loads once the
/// storage works again. A version removed from storage while its fetch waits leaves the
/// status.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_whose_retries_ran_out_gets_another_round() {
    let (moto, cfg) = moto_with_iris_1();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let blocker = block_fetch(&cache, "iris", 1);
    let manager = retrying_manager(&moto, &cache, 1, Duration::from_millis(300));
    let error = manager.reload(vec![cfg]).await.unwrap_err();
    assert!(error.to_string().contains("1.lock"), "{error}");
    assert_eq!(states(&manager, "iris"), [(1, ServableState::End)]);
    std::fs::remove_dir(&blocker).unwrap();
    wait_until("version 1 in a later round", || {
        latest(&manager, "iris") == Some(1)
    })
    .await;

    // Version 2 waits for its next fetch; then it is deleted from storage.
    block_fetch(&cache, "iris", 2);
    moto.upload_dir(&fixtures().join("iris/2"), "models", "iris/2");
    wait_until("version 2 to wait for its next fetch", || {
        states(&manager, "iris") == [(2, ServableState::Loading), (1, ServableState::Available)]
    })
    .await;
    for key in moto.list_keys("models") {
        if key.starts_with("iris/2/") {
            moto.delete_object("models", &key);
        }
    }
    wait_until("version 2 to leave the status", || {
        states(&manager, "iris") == [(1, ServableState::Available)]
    })
    .await;
}

/// Models added beside the served ones (`soma serve`'s APIs) do not wait for retried
/// fetches: the error says which fetch failed and that it is tried again, the version
/// shows LOADING, and it loads once a try succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn an_added_model_does_not_wait_for_its_retries() {
    let (moto, cfg) = moto_with_iris_1();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let blocker = block_fetch(&cache, "iris", 1);
    let manager = retrying_manager(&moto, &cache, 1000, Duration::from_millis(300));
    let added = tokio::time::timeout(
        Duration::from_secs(5),
        manager.add(vec![ManagedModel::new(cfg)]),
    )
    .await
    .expect("add waited for the retries");
    let error = added.unwrap_err().to_string();
    assert!(
        error.contains("version 1: fetching failed (") && error.contains("trying again in"),
        "{error}"
    );
    assert_eq!(states(&manager, "iris"), [(1, ServableState::Loading)]);
    std::fs::remove_dir(&blocker).unwrap();
    wait_until("version 1 after a later try", || {
        latest(&manager, "iris") == Some(1)
    })
    .await;
}

/// A new model whose storage cannot be reached is UNAVAILABLE (try again), not NOT_FOUND
/// (a base path without versions): the listing says nothing of its versions.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_model_on_unreachable_storage_is_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    // A port just closed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manager = ModelManager::new(ManagerOptions {
        s3: S3Settings {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            operation_timeout: Some(Duration::from_millis(500)),
            ..S3Settings::default()
        },
        ..options(&tmp.path().join("cache"))
    });
    let cfg = ModelConfig {
        base_path: "s3://models/iris".into(),
        ..config("iris", Path::new("/"), VersionPolicy::Latest(1))
    };
    let error = manager.reload(vec![cfg]).await.unwrap_err();
    assert_eq!(error.kind(), soma_core::ErrorKind::Unavailable, "{error}");
    assert!(error.to_string().starts_with("model iris: "), "{error}");
    assert!(manager.models().is_empty(), "the model is not kept");
}

/// A new model whose only version folder is incomplete is refused with what is wrong with
/// it, not as a folder without versions.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_model_with_only_an_invalid_version_says_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("iris");
    copy_dir(&fixtures().join("iris/1"), &repo.join("1"));
    std::fs::remove_file(repo.join("1/variables/variables.index")).unwrap();
    let manager = ModelManager::new(options(&tmp.path().join("cache")));
    let error = manager
        .reload(vec![config("iris", &repo, VersionPolicy::Latest(1))])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), soma_core::ErrorKind::NotFound, "{error}");
    assert!(
        error
            .to_string()
            .contains("version 1 is missing variables/variables.index"),
        "{error}"
    );
}

/// moto with version 1 of iris at `s3://models/iris`, and the config serving its latest.
fn moto_with_iris_1() -> (MotoServer, ModelConfig) {
    let moto = MotoServer::start();
    moto.create_bucket("models");
    moto.upload_dir(&fixtures().join("iris/1"), "models", "iris/1");
    let cfg = ModelConfig {
        base_path: "s3://models/iris".into(),
        ..config("iris", Path::new("/"), VersionPolicy::Latest(1))
    };
    (moto, cfg)
}

/// Makes the fetch of `version` of the S3 model cached under `cache/models/<model>` fail
/// with an I/O error (a folder where its lock file goes) until the returned path is removed.
fn block_fetch(cache: &Path, model: &str, version: i64) -> PathBuf {
    let blocker = cache.join(format!("models/{model}/{version}.lock"));
    std::fs::create_dir_all(&blocker).unwrap();
    blocker
}

/// A manager on `moto` that retries fetches `retries` times, `interval` apart.
fn retrying_manager(
    moto: &MotoServer,
    cache: &Path,
    retries: u32,
    interval: Duration,
) -> ModelManager {
    ModelManager::new(ManagerOptions {
        s3: moto_settings(moto),
        load_retries: retries,
        load_retry_interval: interval,
        ..options(cache)
    })
}

fn moto_settings(moto: &MotoServer) -> S3Settings {
    S3Settings {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        session_token: None,
        operation_timeout: None,
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

/// Prints RSS before, during (both versions loaded) and after a swap of mlp1024; run with
/// `--ignored --nocapture` (alone, so no other test shares the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn memory_during_a_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let repo: PathBuf = tmp.path().join("mlp");
    std::fs::create_dir_all(&repo).unwrap();
    let source = fixtures().join("mlp1024/1");
    publish(&source, &repo, 1);
    let mirror = Arc::new(ModelSet::new("api", false));
    let manager = ModelManager::new(options(&tmp.path().join("cache")));
    let spec = ManagedModel {
        mirror: Some(Arc::clone(&mirror)),
        ..ManagedModel::new(config("mlp", &repo, VersionPolicy::Latest(1)))
    };
    manager.apply(vec![spec]).await.unwrap();
    let before = rss_mib();
    publish(&source, &repo, 2);
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(60);
    while states(&manager, "mlp") != [(2, ServableState::Available), (1, ServableState::End)] {
        peak = peak.max(rss_mib());
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = rss_mib();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = rss_mib();
    println!(
        "mlp1024 swap RSS MiB: before {before:.0}, peak during {peak:.0}, right after {after:.0}, 1 s later {settled:.0}"
    );
}

/// With `--allow_version_labels_for_unavailable_models` a new label may point at a version
/// not loaded yet, but a label in use moves only to an available version, so that moving it
/// never drops its traffic (as in TF Serving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_allow_flag_only_new_labels_may_wait_for_their_version() {
    let tmp = tempfile::tempdir().unwrap();
    let manager = ModelManager::new(ManagerOptions {
        allow_labels_for_unavailable: true,
        ..options(&tmp.path().join("cache"))
    });
    let iris = fixtures().join("iris");
    let mut pinned = config(
        "iris",
        &iris,
        VersionPolicy::Specific(BTreeSet::from([1, 2])),
    );
    pinned.labels.insert("stable".into(), 1);
    manager.reload(vec![pinned.clone()]).await.unwrap();

    let mut waiting = pinned.clone();
    waiting.labels.insert("next".into(), 9);
    manager.reload(vec![waiting.clone()]).await.unwrap();
    // A request by that label is one for its version, as TF Serving words it.
    let not_yet = manager
        .servable("iris", &VersionSelector::Label("next".into()))
        .unwrap_err();
    assert_eq!(
        not_yet.to_string(),
        "Servable not found for request: Specific(iris, 9)"
    );

    let mut moved = waiting.clone();
    moved.labels.insert("stable".into(), 9);
    let err = manager.reload(vec![moved]).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "Request to assign label to version 9 of model iris, which is not currently \
             available for inference (label 'stable' points at version 1, and a label moves \
             only to an available version)"
        ),
        "{err}"
    );
    let stable = manager
        .servable("iris", &VersionSelector::Label("stable".into()))
        .unwrap();
    assert_eq!(stable.version(), 1, "the label still serves its version");
}
