//! The real TensorFlow runtime on the generated fixtures (scripts/make_models.py).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Map;
use soma_core::json::{tensor_from_json, tensor_to_json};
use soma_core::{DType, ErrorKind, Tensor, TensorData};
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
    assert!(
        matches!(
            err,
            TfError::Run {
                kind: ErrorKind::FailedPrecondition,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_metagraph_loads_only_when_asked_for_by_its_exact_tag_set() {
    let dir = version_dir("iris_serve_gpu", 1);
    let options = SessionOptions::default();

    // `serve` alone is a subset of {serve, gpu}: TensorFlow wants the set itself.
    let err = load(&dir).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let message = err.to_string();
    assert!(message.contains("iris_serve_gpu/1"), "{message}");
    assert!(
        message.contains("the MetaGraphs in it are tagged {gpu, serve}"),
        "{message}"
    );

    // Order and repeats do not matter; the outputs are Python TensorFlow's.
    let model = SavedModel::load(&tf(), &dir, &["gpu", "serve", "gpu"], &options).unwrap();
    let cases = expected_cases(&fixtures().join("iris_serve_gpu"));
    assert!(!cases.is_empty());
    for case in cases {
        let outputs = run_json(&model, &case.signature, &case.inputs).unwrap();
        assert_outputs_match(&outputs, &case.outputs, "iris_serve_gpu");
    }

    // A model that has the set asked for says nothing about tags when it fails otherwise.
    let err = load(&fixtures().join("invalid/not_a_model/1")).unwrap_err();
    assert!(!err.to_string().contains("tagged"), "{err}");
    let bytes = std::fs::read(dir.join("saved_model.pb")).unwrap();
    assert_eq!(
        soma_tensorflow::read_tag_sets(&bytes).unwrap(),
        [["gpu", "serve"]]
    );
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
    assert!(text.contains("SOMA_TENSORFLOW_LIB"), "{text}");
    let TfError::LibraryNotFound { tried } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        tried,
        &[PathBuf::from("/no/such/dir/libtensorflow_cc.so.2")]
    );
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

#[test]
fn iris_signatures_and_one_prediction() {
    let tf = tf();
    assert!(tf.version().starts_with("2."), "{}", tf.version());
    let model = load(&version_dir("iris", 1)).unwrap();
    assert!(model.skipped_signatures().is_empty());
    let sig = &model.signatures()["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    let x = &sig.inputs["x"];
    assert_eq!(
        (x.tensor_name.as_str(), x.dtype, x.shape.as_deref()),
        ("serving_default_x:0", DType::Float, Some(&[-1i64, 4][..]))
    );
    let out = &sig.outputs["output_0"];
    assert_eq!(
        (out.dtype, out.shape.as_deref()),
        (DType::Float, Some(&[-1i64, 3][..]))
    );
    let prepared = model.prepare("serving_default").unwrap();
    assert_eq!(prepared.key(), "serving_default");
    assert_eq!(prepared.input_names(), ["x"]);
    assert_eq!(prepared.output_names(), ["output_0"]);
    let input = Tensor::from_slice(vec![1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap();
    let outputs = model.run(&prepared, &[&input], None).unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].shape(), [1, 3]);
    let probabilities = outputs[0].to_vec::<f32>().unwrap();
    let sum: f32 = probabilities.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "{probabilities:?}");
    assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
    // Bitwise what Python TensorFlow computed when the fixture was made.
    let expected = expected_cases(&fixtures().join("iris"))
        .into_iter()
        .find(|c| c.version == 1 && c.signature == "serving_default")
        .expect("iris.expected.json has serving_default for version 1");
    let json = Map::from_iter([("output_0".to_string(), tensor_to_json(&outputs[0]))]);
    if expected.inputs["x"] == serde_json::json!([[5.1, 3.5, 1.4, 0.2]]) {
        assert_outputs_match(&json, &expected.outputs, "iris/1 serving_default");
    }
    // An empty batch is a valid input and gives an empty output.
    let empty = Tensor::from_slice::<f32>(vec![0, 4], &[]).unwrap();
    let outputs = model.run(&prepared, &[&empty], None).unwrap();
    assert_eq!(outputs[0].shape(), [0, 3]);
}

/// Strings longer than 22 bytes live on the heap of their TF_TString. An `Identity` hands
/// back an output sharing the input's buffer, so freeing the input's strings early would
/// empty the output (it did, before the ownership fix in tensor.rs).
#[test]
fn long_strings_survive_an_identity() {
    let model = load(&version_dir("all_dtypes", 1)).unwrap();
    let sig = &model.signatures()["serving_default"];
    let strings: Vec<Vec<u8>> = vec![
        b"short".to_vec(),
        vec![b'x'; 23],
        Vec::new(),
        vec![0xff, 0xfe, 0x00, 0x80],
        (0..=255u8).cycle().take(1 << 20).collect(),
    ];
    let n = strings.len();
    let inputs: Vec<Tensor> = sig
        .inputs
        .values()
        .map(|info| match info.dtype {
            DType::String => Tensor::from_strings(vec![n], strings.clone()).unwrap(),
            dtype => {
                let width = dtype.byte_size().unwrap();
                Tensor::new(dtype, vec![n], TensorData::Fixed(vec![1; n * width])).unwrap()
            }
        })
        .collect();
    let prepared = model.prepare("serving_default").unwrap();
    let outputs = model
        .run(&prepared, &inputs.iter().collect::<Vec<_>>(), None)
        .unwrap();
    let out = |name: &str| {
        let i = prepared
            .output_names()
            .iter()
            .position(|n| n == name)
            .unwrap();
        &outputs[i]
    };
    assert_eq!(out("out_string").strings().unwrap(), &strings[..]);
    assert_eq!(out("out_string").shape(), [n]);
    for dtype in ["bfloat16", "float16", "float64", "uint64", "bool", "int8"] {
        let (input, output) = (
            &inputs[prepared
                .input_names()
                .iter()
                .position(|x| *x == format!("in_{dtype}"))
                .unwrap()],
            out(&format!("out_{dtype}")),
        );
        assert_eq!(input, output, "{dtype}");
    }
    // A subset of outputs, in the order asked for.
    let picked = model
        .run(
            &prepared,
            &inputs.iter().collect::<Vec<_>>(),
            Some(&[prepared
                .output_names()
                .iter()
                .position(|n| n == "out_string")
                .unwrap()]),
        )
        .unwrap();
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].strings().unwrap(), &strings[..]);
}

#[test]
fn inputs_that_contradict_the_signature_are_refused_before_tensorflow() {
    let model = load(&version_dir("iris", 1)).unwrap();
    let prepared = model.prepare("serving_default").unwrap();
    let int_input = Tensor::from_slice(vec![1, 4], &[1i64, 2, 3, 4]).unwrap();
    let err = model.run(&prepared, &[&int_input], None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string()
            .contains("input 'x' must be float32, not int64"),
        "{err}"
    );
    let wrong_shape = Tensor::from_slice(vec![1, 3], &[1f32, 2., 3.]).unwrap();
    let err = model.run(&prepared, &[&wrong_shape], None).unwrap_err();
    assert!(
        err.to_string()
            .contains("has shape (1, 3), which does not fit the declared (-1, 4)"),
        "{err}"
    );
    let good = Tensor::from_slice(vec![1, 4], &[1f32; 4]).unwrap();
    let err = model.run(&prepared, &[], None).unwrap_err();
    assert!(
        err.to_string().contains("takes 1 inputs, 0 were given"),
        "{err}"
    );
    let err = model.run(&prepared, &[&good], Some(&[1])).unwrap_err();
    assert!(err.to_string().contains("there is no output 1"), "{err}");
    let other = load(&version_dir("iris", 2)).unwrap();
    let err = other.run(&prepared, &[&good], None).unwrap_err();
    assert!(
        err.to_string().contains("prepared for another model"),
        "{err}"
    );
    let err = model.prepare("nope").unwrap_err();
    assert_eq!(err.to_string(), "signature 'nope': no such signature");
}

#[test]
fn junk_saved_model_pb_fails_with_tensorflow_code() {
    let dir = std::env::temp_dir().join(format!("soma-tf-junk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("saved_model.pb"),
        b"definitely not a protobuf \xff",
    )
    .unwrap();
    let err = load(&dir).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    let TfError::Load { path, kind, .. } = &err else {
        panic!("not a load error: {err:?}");
    };
    assert_eq!(path, &dir);
    assert_eq!(*kind, ErrorKind::DataLoss, "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    eprintln!("junk saved_model.pb: {err} [{:?}]", err.kind());
}

/// A version copied in half (its variables cut short) fails with TensorFlow's own code, which
/// TF Serving shows in the model status, not a nearby class.
#[test]
fn a_truncated_variables_file_fails_with_tensorflows_code() {
    let dir = std::env::temp_dir().join(format!("soma-tf-truncated-{}", std::process::id()));
    let source = version_dir("iris", 1);
    std::fs::create_dir_all(dir.join("variables")).unwrap();
    std::fs::copy(source.join("saved_model.pb"), dir.join("saved_model.pb")).unwrap();
    std::fs::copy(
        source.join("variables/variables.index"),
        dir.join("variables/variables.index"),
    )
    .unwrap();
    let data = std::fs::read(source.join("variables/variables.data-00000-of-00001")).unwrap();
    std::fs::write(
        dir.join("variables/variables.data-00000-of-00001"),
        &data[..data.len() / 2],
    )
    .unwrap();
    let err = load(&dir).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("truncated variables: {err} [{:?}]", err.kind());
    assert!(
        matches!(
            err,
            TfError::Load {
                kind: ErrorKind::OutOfRange,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("(OUT_OF_RANGE)"), "{err}");
}

#[test]
fn a_library_without_the_c_api_names_the_missing_symbol() {
    // libtensorflow_framework.so.2 holds half of the C API; TF_Version is in the other half.
    let framework = locate(None)
        .unwrap()
        .with_file_name("libtensorflow_framework.so.2");
    let err = TensorFlow::load(&framework).unwrap_err();
    let TfError::MissingSymbol { symbol, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*symbol, "TF_Version");
    assert!(err.to_string().contains("TF_Version"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let err = TensorFlow::load(Path::new("/no/such/libtensorflow_cc.so.2")).unwrap_err();
    assert!(matches!(err, TfError::LibraryOpen { .. }), "{err:?}");
}

/// A `tf.function(jit_compile=True)` saved by TensorFlow 2 runs, with Python TensorFlow's
/// answer (TF Serving needs `--xla_cpu_compilation_enabled` for such models; soma's
/// `tfserving` accepts that flag because TensorFlow compiles them here by default).
#[test]
fn a_jit_compile_function_runs_as_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let code = r#"
import json, sys
import tensorflow as tf
class Xla(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")], jit_compile=True)
    def f(self, x):
        return {"y": tf.reduce_sum(tf.sin(x) * 2.0, axis=1)}
model = Xla()
tf.saved_model.save(model, sys.argv[1], signatures={"serving_default": model.f})
print(json.dumps(model.f(tf.constant([[1.0, 2.0, 3.0, 4.0]]))["y"].numpy().tolist()))
"#;
    let out = soma_testkit::run_python_code(code, &[dir.path()]);
    let want: Vec<f32> = serde_json::from_slice(&out).unwrap();
    let model = load(dir.path()).unwrap();
    let inputs = serde_json::json!({"x": [[1.0, 2.0, 3.0, 4.0]]});
    let outputs = run_json(&model, "serving_default", inputs.as_object().unwrap()).unwrap();
    let got: Vec<f32> = serde_json::from_value(outputs["y"].clone()).unwrap();
    assert_eq!(got, want);
}
