//! Message size limits: a request over `max_message_bytes` and a prediction whose response
//! would be over it both get RESOURCE_EXHAUSTED, and the server keeps serving.

mod common;

use std::sync::Arc;

use soma_core::Tensor;
use soma_grpc::GrpcOptions;
use soma_grpc::codec::tensor_into_content_proto;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{ModelSpec, PredictRequest};
use soma_runtime::ModelSet;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

const LIMIT: usize = 1 << 20;

fn request(elements: usize) -> PredictRequest {
    let x = Tensor::from_slice(vec![elements], &vec![1.0f32; elements]).unwrap();
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "repeat".into(),
            ..ModelSpec::default()
        }),
        inputs: [("x".to_string(), tensor_into_content_proto(x))].into(),
        output_filter: vec![],
    }
}

/// Servers of the repeat model with messages limited to [`LIMIT`]: on the caller's runtime
/// and on serving threads.
async fn serve_repeat() -> Vec<(&'static str, Channel)> {
    let set = Arc::new(ModelSet::new("limits", false));
    set.insert(Arc::new(common::repeat_model(4)));
    let options = GrpcOptions {
        max_message_bytes: LIMIT,
        ..GrpcOptions::default()
    };
    let mut servers = Vec::new();
    for (server, options) in common::both_servers(options) {
        servers.push((server, common::serve_set(Arc::clone(&set), options).await));
    }
    servers
}

#[tokio::test]
async fn oversized_requests_and_responses_are_resource_exhausted() {
    for (server, channel) in serve_repeat().await {
        oversized_on(server, channel).await;
    }
}

async fn oversized_on(server: &str, channel: Channel) {
    let mut client = PredictionServiceClient::new(channel).max_decoding_message_size(usize::MAX);

    // 4 bytes per float: LIMIT / 4 floats is just over the limit once framed.
    let err = client.predict(request(LIMIT / 4)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{server}: {err:?}");
    assert!(
        err.message().contains("message length too large"),
        "{server}: {err:?}"
    );

    // A quarter of the limit in, four times as much out.
    let err = client.predict(request(LIMIT / 16)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("maximum message size of {LIMIT} bytes")),
        "{err:?}"
    );

    // Within the limits, the same server still answers.
    let response = client
        .predict(request(LIMIT / 64))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.outputs["y"].float_val.len(),
        LIMIT / 64 * 4,
        "every value comes back"
    );
}

#[tokio::test]
async fn compressed_requests_are_inflated_and_held_to_the_limit() {
    for (server, channel) in serve_repeat().await {
        compressed_on(server, channel).await;
    }
}

async fn compressed_on(server: &str, channel: Channel) {
    let plain = PredictionServiceClient::new(channel.clone())
        .predict(request(1000))
        .await
        .unwrap()
        .into_inner();
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Deflate] {
        let mut client = PredictionServiceClient::new(channel.clone())
            .send_compressed(encoding)
            .max_decoding_message_size(usize::MAX);
        let answer = client.predict(request(1000)).await.unwrap().into_inner();
        assert_eq!(answer, plain, "{server}: {encoding:?}");

        // Ones compress to almost nothing: the limit is on what they inflate to.
        let err = client.predict(request(LIMIT / 4)).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::ResourceExhausted,
            "{server}: {encoding:?}: {err:?}"
        );
        assert!(
            err.message().contains("size limit") && err.message().contains("decompressing"),
            "{err:?}"
        );
    }
}
