//! gRPC inference requests are counted and timed in the shared metrics registry, as REST
//! requests are: TF Serving's `request_count` with `entrypoint="GRPC"` and the gRPC status
//! of each call, latency for the successful ones. TensorFlow runs the iris fixture.

mod common;

use std::sync::Arc;

use soma_core::Tensor;
use soma_grpc::GrpcOptions;
use soma_grpc::codec::tensor_into_content_proto;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{ModelSpec, PredictRequest};
use soma_metrics::{REQUEST_COUNT, REQUEST_LATENCY, Registry};
use soma_runtime::ModelSet;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn predictions_are_counted_by_status_and_timed() {
    let cache = tempfile::tempdir().unwrap();
    let set = Arc::new(ModelSet::new("metrics", false));
    common::load_iris(&set, cache.path()).await;
    let servable = set.resolve(Some("iris"), Default::default()).unwrap();
    let (_, signature) = servable.signature(None).unwrap();
    let input = signature.inputs.keys().next().unwrap().clone();
    let metrics = Registry::new();
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
}
