//! A native TensorFlow 2 classifier (every signature's method_name is
//! `tensorflow/serving/predict`, as TF2 saves them), called with TF Serving's official Python
//! client: Classify, Regress and MultiInference answer as TensorFlow does with the method
//! name check off (TF Serving's default), and are refused with TF Serving's message when
//! it is on (`--enable_signature_method_name_check`); Predict works either way.

mod common;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use soma_core::ModelLocation;
use soma_grpc::GrpcOptions;
use soma_models::{ModelEntry, ModelOptions};
use soma_repository::Validator;
use soma_runtime::ModelSet;
use soma_testkit::{run_python_code, tf2_classifier};

const CLIENT: &str = r#"
import json, sys, grpc
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, inference_pb2, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

addr, examples = sys.argv[1], json.loads(sys.argv[2])
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(addr))

def fill(input_):
    for values in examples:
        example = input_.example_list.examples.add()
        example.features.feature["x"].float_list.value.extend(values)

def attempt(call):
    try:
        return call()
    except grpc.RpcError as e:
        return {"error": e.code().name, "message": e.details()}

def classify():
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tf2"
    fill(request.input)
    result = stub.Classify(request, timeout=30).result
    return [[[c.label, c.score] for c in row.classes] for row in result.classifications]

def regress():
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "tf2"
    request.model_spec.signature_name = "regress_x"
    fill(request.input)
    return [r.value for r in stub.Regress(request, timeout=30).result.regressions]

def multi():
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in [("classify_x", "classify"), ("regress_x", "regress")]:
        task = request.tasks.add()
        task.model_spec.name = "tf2"
        task.model_spec.signature_name = signature
        task.method_name = "tensorflow/serving/" + method
    fill(request.input)
    results = stub.MultiInference(request, timeout=30).results
    return [len(results[0].classification_result.classifications),
            [r.value for r in results[1].regression_result.regressions]]

def predict():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tf2"
    serialized = []
    for values in examples:
        example = tf.train.Example()
        example.features.feature["x"].float_list.value.extend(values)
        serialized.append(example.SerializeToString())
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(serialized))
    return list(stub.Predict(request, timeout=30).outputs["scores"].float_val)

print(json.dumps({name: attempt(call) for name, call in
                  [("classify", classify), ("regress", regress), ("multi", multi),
                   ("predict", predict)]}))
"#;

/// Serves the model in `dir` as `tf2` with the method name check `on` or off and runs the
/// official client's calls against it.
async fn calls(dir: &Path, cache: &Path, on: bool, examples: &Value) -> Value {
    let set = Arc::new(ModelSet::new("tf2", false));
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: cache.to_path_buf(),
        metrics: None,
        warmup: None,
    };
    let entry = ModelEntry::new("tf2", ModelLocation::Local(dir.to_path_buf()));
    soma_models::load_entry(&set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();
    let url = common::serve_set_at(
        set,
        GrpcOptions {
            check_signature_method_names: on,
            ..GrpcOptions::default()
        },
    )
    .await;
    let addr = url.trim_start_matches("http://").to_string();
    let examples = examples.to_string();
    tokio::task::spawn_blocking(move || {
        serde_json::from_slice(&run_python_code(CLIENT, &[addr, examples])).unwrap()
    })
    .await
    .unwrap()
}

fn close(got: &Value, want: &Value) {
    let (got, want) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!((got - want).abs() < 1e-6, "{got} vs TensorFlow's {want}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tf2_classifier_is_served_unless_method_names_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tf2");
    let expected = tf2_classifier(&model);
    let examples = &expected["examples"];

    let off = calls(&model, &tmp.path().join("cache"), false, examples).await;
    let rows = off["classify"]
        .as_array()
        .unwrap_or_else(|| panic!("{off}"));
    assert_eq!(rows.len(), 3, "{off}");
    for (r, row) in rows.iter().enumerate() {
        for (c, class) in row.as_array().unwrap().iter().enumerate() {
            assert_eq!(class[0], expected["classes"][r][c], "{off}");
            close(&class[1], &expected["scores"][r][c]);
        }
    }
    for (got, want) in off["regress"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["regress"].as_array().unwrap())
    {
        close(got, want);
    }
    assert_eq!(off["multi"][0], 3, "{off}");
    for (got, want) in off["multi"][1]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["regress"].as_array().unwrap())
    {
        close(got, want);
    }
    assert_eq!(off["predict"].as_array().unwrap().len(), 9, "{off}");

    let on = calls(&model, &tmp.path().join("cache"), true, examples).await;
    assert_eq!(on["classify"]["error"], "INVALID_ARGUMENT", "{on}");
    assert_eq!(
        on["classify"]["message"],
        "Expected classification signature method_name to be tensorflow/serving/classify. \
         Was: tensorflow/serving/predict"
    );
    assert_eq!(on["regress"]["error"], "INVALID_ARGUMENT", "{on}");
    assert_eq!(on["multi"]["error"], "INVALID_ARGUMENT", "{on}");
    // Predict accepts a predict signature with the check on.
    assert_eq!(on["predict"], off["predict"]);
}
