//! gRPC inference requests are counted and timed in the shared metrics registry, as REST
//! requests are: TF Serving's `request_count` with `entrypoint="GRPC"` and the gRPC status
//! of each call, latency for the successful ones; and the models' own metrics TF Serving
//! keeps: version loads, `runtime_latency` of Predict, Classify and Regress runs, example
//! counts of MultiInference requests. TensorFlow runs the iris fixture and a TF1-style
//! classifier written by TensorFlow at test time.

mod common;

use std::path::Path;
use std::sync::Arc;

use soma_core::{ModelLocation, Tensor};
use soma_grpc::GrpcOptions;
use soma_grpc::codec::tensor_into_content_proto;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{
    ClassificationRequest, ExampleList, InferenceTask, Input, ModelSpec, MultiInferenceRequest,
    PredictRequest, RegressionRequest, input,
};
use soma_grpc_proto::tensorflow::{Example, Feature, Features, FloatList, feature};
use soma_metrics::{
    LOAD_ATTEMPT_COUNT, REQUEST_COUNT, REQUEST_EXAMPLE_COUNT_TOTAL, REQUEST_EXAMPLE_COUNTS,
    REQUEST_LATENCY, RUNTIME_LATENCY, Registry,
};
use soma_models::{ModelEntry, ModelOptions};
use soma_repository::Validator;
use soma_runtime::ModelSet;
use soma_testkit::{fixtures, run_python};
use tonic::Code;

/// Loads every version of the model in `dir` into `set` as `name`, recording the model's
/// metrics in `metrics`.
async fn load(set: &ModelSet, name: &str, dir: &Path, cache: &Path, metrics: &Registry) {
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: cache.to_path_buf(),
        metrics: Some(metrics.clone()),
        warmup: None,
    };
    let entry = ModelEntry::new(name, ModelLocation::Local(dir.to_path_buf()));
    soma_models::load_entry(set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();
}

/// The count of the `runtime_latency` series of `model` and `api` (None: no series).
fn runtime_runs(metrics: &Registry, model: &str, api: &str) -> Option<f64> {
    metrics.value(
        RUNTIME_LATENCY,
        &[("model_name", model), ("API", api), ("runtime", "TF1")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn predictions_are_counted_by_status_and_timed() {
    let cache = tempfile::tempdir().unwrap();
    let set = Arc::new(ModelSet::new("metrics", false));
    let metrics = Registry::new();
    load(
        &set,
        "iris",
        &fixtures().join("iris"),
        cache.path(),
        &metrics,
    )
    .await;
    let servable = set.resolve(Some("iris"), Default::default()).unwrap();
    let (_, signature) = servable.signature(None).unwrap();
    let input = signature.inputs.keys().next().unwrap().clone();
    let grpc = GrpcOptions {
        metrics: metrics.clone(),
        ..GrpcOptions::default()
    };
    let channel = common::serve_set(set, grpc).await;
    let mut client = PredictionServiceClient::new(channel);

    let request = |model: &str, x: Tensor| PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..ModelSpec::default()
        }),
        inputs: [(input.clone(), tensor_into_content_proto(x))].into(),
        output_filter: vec![],
    };
    let row = Tensor::from_slice(vec![1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap();
    let ints = Tensor::from_slice(vec![1, 4], &[5i32, 3, 1, 0]).unwrap();
    for _ in 0..3 {
        client.predict(request("iris", row.clone())).await.unwrap();
    }
    let wrong_dtype = client.predict(request("iris", ints)).await.unwrap_err();
    assert_eq!(wrong_dtype.code(), Code::InvalidArgument, "{wrong_dtype:?}");
    let unknown = client.predict(request("nope", row)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let count = |model: &str, status: &str| {
        metrics.value(
            REQUEST_COUNT,
            &[
                ("model_name", model),
                ("API", "Predict"),
                ("entrypoint", "GRPC"),
                ("status", status),
            ],
        )
    };
    assert_eq!(count("iris", "OK"), Some(3.0));
    assert_eq!(count("iris", "INVALID_ARGUMENT"), Some(1.0));
    // A model that is not served is counted without its name: clients cannot add series.
    assert_eq!(count("", "NOT_FOUND"), Some(1.0));
    assert_eq!(count("nope", "NOT_FOUND"), None);
    // Only successful requests are timed (a histogram's value is its count).
    let timed = metrics.value(
        REQUEST_LATENCY,
        &[
            ("model_name", "iris"),
            ("API", "Predict"),
            ("entrypoint", "GRPC"),
        ],
    );
    assert_eq!(timed, Some(3.0));
    let page = metrics.render();
    assert!(
        page.contains(r#":tensorflow:serving:request_count{API="Predict",entrypoint="GRPC",model_name="iris",status="OK"} 3"#),
        "{page}"
    );
    // Each successful run is timed, whichever path it took (the first on the blocking pool,
    // the others in place once the model is known to be quick); the refused one is not.
    assert_eq!(
        runtime_runs(&metrics, "iris", "Predict"),
        Some(3.0),
        "{page}"
    );
    assert!(
        page.contains(r#":tensorflow:serving:runtime_latency_count{API="Predict",model_name="iris",runtime="TF1"} 3"#),
        "{page}"
    );
    // Every version was loaded once, under its folder's path.
    for version in ["1", "2", "9", "10"] {
        let path = fixtures().join("iris").join(version).display().to_string();
        let loads = metrics.value(
            LOAD_ATTEMPT_COUNT,
            &[("model_path", &path), ("status", "success")],
        );
        assert_eq!(loads, Some(1.0), "version {version}: {page}");
    }
}

/// A tf.Example with the float feature `x`.
fn example(x: [f32; 4]) -> Example {
    let x = Feature {
        kind: Some(feature::Kind::FloatList(FloatList { value: x.to_vec() })),
    };
    Example {
        features: Some(Features {
            feature: [("x".to_string(), x)].into(),
        }),
    }
}

fn examples(n: usize) -> Option<Input> {
    let rows = [
        [5.1, 3.5, 1.4, 0.2],
        [6.7, 3.0, 5.2, 2.3],
        [5.9, 3.0, 4.2, 1.5],
    ];
    Some(Input {
        kind: Some(input::Kind::ExampleList(ExampleList {
            examples: rows.iter().cycle().take(n).map(|x| example(*x)).collect(),
        })),
    })
}

fn spec(signature: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: "census".into(),
        signature_name: signature.into(),
        ..ModelSpec::default()
    })
}

/// TF Serving times Classify and Regress runs but none of a MultiInference's, and counts the
/// tf.Examples of MultiInference requests only (its classifier and regressor do not call
/// `RecordRequestExampleCount`).
#[tokio::test(flavor = "multi_thread")]
async fn classify_regress_and_multi_inference_keep_tf_servings_run_metrics() {
    let work = tempfile::tempdir().unwrap();
    let census = work.path().join("census");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tfs_client.py");
    run_python(&script, &["make-classifier".as_ref(), census.as_os_str()]);
    let set = Arc::new(ModelSet::new("metrics", false));
    let metrics = Registry::new();
    load(
        &set,
        "census",
        &census,
        &work.path().join("cache"),
        &metrics,
    )
    .await;
    let grpc = GrpcOptions {
        metrics: metrics.clone(),
        ..GrpcOptions::default()
    };
    let mut client = PredictionServiceClient::new(common::serve_set(set, grpc).await);

    let classified = client
        .classify(ClassificationRequest {
            model_spec: spec(""),
            input: examples(2),
        })
        .await
        .unwrap();
    assert_eq!(
        classified
            .into_inner()
            .result
            .unwrap()
            .classifications
            .len(),
        2
    );
    client
        .regress(RegressionRequest {
            model_spec: spec("regress_x"),
            input: examples(1),
        })
        .await
        .unwrap();
    let task = |signature: &str, method: &str| InferenceTask {
        model_spec: spec(signature),
        method_name: format!("tensorflow/serving/{method}"),
    };
    let multi = MultiInferenceRequest {
        tasks: vec![task("classify_x", "classify"), task("regress_x", "regress")],
        input: examples(3),
    };
    let answered = client.multi_inference(multi.clone()).await.unwrap();
    assert_eq!(answered.into_inner().results.len(), 2);
    // A request that fails (an unknown signature) is neither timed nor counted.
    let unknown = MultiInferenceRequest {
        tasks: vec![task("nope", "classify")],
        ..multi
    };
    let failed = client.multi_inference(unknown).await.unwrap_err();
    assert_eq!(failed.code(), Code::InvalidArgument, "{failed:?}");

    let page = metrics.render();
    assert_eq!(
        runtime_runs(&metrics, "census", "Classify"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        runtime_runs(&metrics, "census", "Regress"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(runtime_runs(&metrics, "census", "Predict"), None, "{page}");
    let examples_of = |name: &str| metrics.value(name, &[("model", "census")]);
    // One MultiInference request, of 3 examples.
    assert_eq!(examples_of(REQUEST_EXAMPLE_COUNTS), Some(1.0), "{page}");
    assert_eq!(
        examples_of(REQUEST_EXAMPLE_COUNT_TOTAL),
        Some(3.0),
        "{page}"
    );
    for line in [
        r#":tensorflow:serving:request_example_counts_bucket{model="census",le="2"} 0"#,
        r#":tensorflow:serving:request_example_counts_bucket{model="census",le="4"} 1"#,
        r#":tensorflow:serving:request_example_counts_sum{model="census"} 3"#,
        r#":tensorflow:serving:request_example_count_total{model="census"} 3"#,
    ] {
        assert!(page.contains(line), "{line} not in\n{page}");
    }
}
