//! SavedModel warm-up files written by TensorFlow and the official `tensorflow-serving-api`
//! messages (tests/support/warmup_records.py), replayed by `TfServingWarmup` on real models.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use soma_core::{ErrorKind, ModelLocation, VersionSpec};
use soma_grpc::warmup::{TfServingWarmup, WARMUP_FILE};
use soma_metrics::{
    LOAD_ATTEMPT_COUNT, MODEL_WARMUP_LATENCY, REQUEST_EXAMPLE_COUNT_TOTAL, REQUEST_EXAMPLE_COUNTS,
    RUNTIME_LATENCY, Registry,
};
use soma_models::{ModelEntry, ModelOptions};
use soma_repository::Validator;
use soma_runtime::{ModelSet, RecordedWarmup, RuntimeError, Servable};
use soma_testkit::{fixtures, run_python};

async fn servable(name: &str, dir: &Path, cache: &Path) -> Arc<Servable> {
    let set = ModelSet::new("warmup", false);
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: cache.to_path_buf(),
        metrics: None,
        warmup: None,
    };
    let entry = ModelEntry::new(name, ModelLocation::Local(dir.to_path_buf()));
    soma_models::load_entry(&set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();
    set.resolve(Some(name), VersionSpec::Latest).unwrap()
}

/// A version folder holding only `records` as its warm-up file (replay reads nothing else).
fn version_with(records: &[u8], root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let file = dir.join(WARMUP_FILE);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, records).unwrap();
    dir
}

fn replay(servable: &Servable, dir: &Path) -> Result<Option<usize>, RuntimeError> {
    TfServingWarmup {
        iterations: 2,
        ..TfServingWarmup::default()
    }
    .replay(servable, dir)
}

/// Writes the warm-up records (`support/warmup_records.py`) and the census classifier
/// (`tfs_client.py make-classifier`) under `work`: their folders.
fn records_and_classifier(work: &Path) -> (PathBuf, PathBuf) {
    let records = work.join("records");
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    run_python(
        &support.join("support/warmup_records.py"),
        &[records.as_os_str()],
    );
    let census = work.join("census");
    run_python(
        &support.join("tfs_client.py"),
        &["make-classifier".as_ref(), census.as_os_str()],
    );
    (records, census)
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_requests_replay_and_bad_files_fail_with_the_record() {
    let work = tempfile::tempdir().unwrap();
    let (records, census) = records_and_classifier(work.path());
    let read = |name: &str| std::fs::read(records.join(name)).unwrap();
    let cache = work.path().join("cache");
    let iris = servable("iris", &fixtures().join("iris"), &cache).await;
    let census = servable("census", &census, &cache).await;

    // Predict in both tensor forms and with an output filter; Classify, Regress and
    // MultiInference on tf.Examples.
    let dir = version_with(&read("iris_predict"), work.path(), "good");
    assert_eq!(replay(&iris, &dir), Ok(Some(3)));
    let dir = version_with(&read("census_examples"), work.path(), "examples");
    assert_eq!(replay(&census, &dir), Ok(Some(3)));
    // No file: nothing recorded, soma's own warm-up applies.
    assert_eq!(replay(&iris, work.path()), Ok(None));

    let failure = |records: &[u8], name: &str| {
        let dir = version_with(records, work.path(), name);
        let err = replay(&iris, &dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        let message = err.to_string();
        let file = dir.join(WARMUP_FILE);
        let prefix = format!("model 'iris' version 10: warm-up file {}: ", file.display());
        assert!(message.starts_with(&prefix), "{message}");
        message[prefix.len()..].to_string()
    };
    let bad_input = failure(&read("iris_bad_input"), "bad_input");
    assert!(
        bad_input.starts_with("record 2 failed: ") && bad_input.contains("nope"),
        "{bad_input}"
    );
    assert_eq!(
        failure(&read("session_run"), "session_run"),
        "record 1 failed: session_run_log is not supported for warm-up (only predict, \
         classify, regress and multi_inference logs are)"
    );
    assert_eq!(
        failure(&read("iris_too_many"), "too_many"),
        "more than 1000 records"
    );
    assert_eq!(failure(b"", "empty"), "holds no records");
    let mut corrupt = read("iris_predict");
    let last = corrupt.len() - 10;
    corrupt[last] ^= 0x40;
    assert_eq!(
        failure(&corrupt, "corrupt"),
        "record 3: its data fails its checksum"
    );
    let good = read("iris_predict");
    assert_eq!(
        failure(&good[..good.len() - 3], "truncated"),
        "record 3 is truncated"
    );
    // Valid TFRecord framing around bytes that are not a protobuf message.
    let not_a_log = failure(&read("not_a_log"), "not_a_log");
    assert!(
        not_a_log.starts_with("record 1: not a PredictionLog: "),
        "{not_a_log}"
    );
}

/// A version's recorded warm-up is timed in TF Serving's `model_warmup_latency` under the
/// version's path, and its requests count as TF Serving's warm-up requests do: Classify and
/// Regress runs in `runtime_latency`, MultiInference examples in the example counts.
#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_warm_up_is_timed_and_its_runs_counted_as_tf_serving_counts_them() {
    let work = tempfile::tempdir().unwrap();
    let (records, census) = records_and_classifier(work.path());
    let version = census.join("1");
    let file = version.join(WARMUP_FILE);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::copy(records.join("census_examples"), file).unwrap();

    let metrics = Registry::new();
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: work.path().join("cache"),
        metrics: Some(metrics.clone()),
        warmup: Some(Arc::new(TfServingWarmup::default())),
    };
    let set = ModelSet::new("warmup", false);
    let entry = ModelEntry::new("census", ModelLocation::Local(census.clone()));
    soma_models::load_entry(&set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();

    let page = metrics.render();
    let path = version.display().to_string();
    let warm_ups = metrics.value(
        MODEL_WARMUP_LATENCY,
        &[("model_path", &path), ("status", "OK")],
    );
    assert_eq!(warm_ups, Some(1.0), "{page}");
    let loads = metrics.value(
        LOAD_ATTEMPT_COUNT,
        &[("model_path", &path), ("status", "success")],
    );
    assert_eq!(loads, Some(1.0), "{page}");
    let runs = |api: &str| {
        metrics.value(
            RUNTIME_LATENCY,
            &[("model_name", "census"), ("API", api), ("runtime", "TF1")],
        )
    };
    assert_eq!(runs("Classify"), Some(1.0), "{page}");
    assert_eq!(runs("Regress"), Some(1.0), "{page}");
    let examples = |name: &str| metrics.value(name, &[("model", "census")]);
    assert_eq!(examples(REQUEST_EXAMPLE_COUNTS), Some(1.0), "{page}");
    assert_eq!(examples(REQUEST_EXAMPLE_COUNT_TOTAL), Some(2.0), "{page}");

    // soma's own zero-valued warm-up (no recorded file) is not TF Serving's: not timed.
    let iris = Registry::new();
    let options = ModelOptions {
        metrics: Some(iris.clone()),
        ..options
    };
    let entry = ModelEntry::new("iris", ModelLocation::Local(fixtures().join("iris/1")));
    soma_models::load_entry(&set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();
    let page = iris.render();
    assert!(!page.contains(MODEL_WARMUP_LATENCY), "{page}");
    assert!(page.contains(LOAD_ATTEMPT_COUNT), "{page}");
}
