//! The real TensorFlow runtime on the generated fixtures (scripts/make_models.py).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Map;
use soma_core::Tensor;
use soma_core::json::{tensor_from_json, tensor_to_json};
use soma_tensorflow::{SavedModel, SessionOptions, TensorFlow, TfError, locate, read_signatures};
use soma_testkit::{assert_outputs_match, expected_cases, fixtures};

fn tf() -> Arc<TensorFlow> {
    TensorFlow::global(None).expect("TensorFlow from .venv (run scripts/setup.sh)")
}

fn load(dir: &Path) -> Result<SavedModel, TfError> {
    SavedModel::load(&tf(), dir, &["serve"], &SessionOptions::default())
}

fn version_dir(model: &str, version: i64) -> PathBuf {
    let root = fixtures().join(model);
    if root.join("saved_model.pb").exists() {
        root
    } else {
        root.join(version.to_string())
    }
}

fn run_json(
    model: &SavedModel,
    signature: &str,
    inputs: &Map<String, serde_json::Value>,
) -> Result<Map<String, serde_json::Value>, TfError> {
    let sig = &model.signatures()[signature];
    let tensors: Vec<Tensor> = sig
        .inputs
        .iter()
        .map(|(name, info)| {
            tensor_from_json(name, &inputs[name], info).expect("valid fixture input")
        })
        .collect();
    let prepared = model.prepare(signature)?;
    let outputs = model.run(&prepared, &tensors.iter().collect::<Vec<_>>(), None)?;
    Ok(sig
        .outputs
        .keys()
        .cloned()
        .zip(outputs.iter().map(tensor_to_json))
        .collect())
}

#[test]
fn every_fixture_matches_python_tensorflow() {
    let models = [
        "iris",
        "iris_plain",
        "multi_io",
        "all_dtypes",
        "two_signatures",
        "predict_and_other",
        "ambiguous",
        "mlp1024",
    ];
    let mut checked = 0;
    for model in models {
        let mut loaded: Option<(i64, SavedModel)> = None;
        for case in expected_cases(&fixtures().join(model)) {
            if loaded.as_ref().map(|(v, _)| *v) != Some(case.version) {
                loaded = Some((
                    case.version,
                    load(&version_dir(model, case.version)).expect(model),
                ));
            }
            let (_, saved) = loaded.as_ref().expect("loaded");
            let context = format!("{model} v{} {}", case.version, case.signature);
            let outputs = run_json(saved, &case.signature, &case.inputs)
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_outputs_match(&outputs, &case.outputs, &context);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} cases checked");
}

#[test]
fn signatures_match_the_saved_model_file() {
    let dir = version_dir("multi_io", 1);
    let model = load(&dir).unwrap();
    let from_file = read_signatures(&std::fs::read(dir.join("saved_model.pb")).unwrap()).unwrap();
    assert_eq!(model.signatures(), &from_file);
    let sig = &model.signatures()["serving_default"];
    let inputs: Vec<(&str, &str)> = sig
        .inputs
        .iter()
        .map(|(n, i)| (n.as_str(), i.dtype.name()))
        .collect();
    assert_eq!(
        inputs,
        [
            ("features", "float32"),
            ("ids", "int64"),
            ("names", "string")
        ]
    );
    assert_eq!(sig.inputs["features"].shape, Some(vec![-1, 3]));
    let iris = load(&version_dir("iris", 10)).unwrap();
    assert_eq!(
        iris.signatures().keys().collect::<Vec<_>>(),
        ["serve", "serving_default"]
    );
}

#[test]
fn a_keras_model_saved_with_tf_saved_model_save_loads_but_cannot_run() {
    let dir = fixtures().join("invalid/keras_saved_model_save/1");
    let model = load(&dir).expect("TensorFlow loads it");
    let key = model.signatures().keys().next().unwrap().clone();
    let sig = &model.signatures()[&key];
    let inputs: Vec<Tensor> = sig
        .inputs
        .values()
        .map(|info| {
            let dims: Vec<usize> = info
                .shape
                .clone()
                .unwrap()
                .iter()
                .map(|d| (*d).max(1) as usize)
                .collect();
            let n: usize = dims.iter().product();
            Tensor::from_slice(dims, &vec![0f32; n]).unwrap()
        })
        .collect();
    let err = model
        .run(
            &model.prepare(&key).unwrap(),
            &inputs.iter().collect::<Vec<_>>(),
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("variable"), "{err}");
}

#[test]
fn broken_models_fail_to_load_with_the_path_and_reason() {
    let err = load(&fixtures().join("invalid/not_a_model/1")).unwrap_err();
    assert!(err.to_string().contains("invalid/not_a_model/1"), "{err}");
    let err = load(Path::new("/nonexistent/model")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    assert_eq!(err.kind(), soma_core::ErrorKind::NotFound, "{err}");
}

#[test]
fn locate_lists_what_it_tried() {
    let err = locate(Some(Path::new("/no/such/dir"))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("/no/such/dir/libtensorflow_cc.so.2"),
        "{text}"
    );
    assert!(text.contains("scripts/setup.sh"), "{text}");
    assert!(locate(None).is_ok(), "the project's .venv has TensorFlow");
}

#[test]
fn concurrent_runs_share_one_session() {
    let model = Arc::new(load(&version_dir("iris", 1)).unwrap());
    let prepared = Arc::new(model.prepare("serving_default").unwrap());
    let input = Tensor::from_slice(vec![1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap();
    let reference = model.run(&prepared, &[&input], None).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (model, prepared, input) =
                (Arc::clone(&model), Arc::clone(&prepared), input.clone());
            std::thread::spawn(move || {
                (0..200)
                    .map(|_| model.run(&prepared, &[&input], None).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for output in thread.join().unwrap() {
            assert_eq!(output, reference);
        }
    }
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// Unloading must give the memory back: load and drop the model 50 times.
#[test]
fn load_unload_cycles_do_not_grow_memory() {
    let dir = version_dir("mlp1024", 1);
    drop(load(&dir).unwrap()); // first load maps kernels and allocator pools
    let start = rss_mib();
    let mut samples = Vec::new();
    for cycle in 1..=50 {
        let model = load(&dir).unwrap();
        let prepared = model.prepare("serving_default").unwrap();
        let input = Tensor::from_slice(vec![1, 1024], &vec![0.5f32; 1024]).unwrap();
        model.run(&prepared, &[&input], None).unwrap();
        drop(model);
        if cycle % 10 == 0 {
            samples.push((cycle, rss_mib()));
        }
    }
    let end = rss_mib();
    eprintln!(
        "RSS over 50 load/run/unload cycles of mlp1024 (25 MB of weights): start {start:.1} MiB, samples {samples:?}, end {end:.1} MiB"
    );
    assert!(end - start < 200.0, "RSS grew by {:.1} MiB", end - start);
}
