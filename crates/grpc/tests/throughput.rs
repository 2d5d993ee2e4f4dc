//! gRPC Predict throughput and latency on the iris and mlp1024 fixtures, one connection per
//! client, at concurrency 1, 8 and 64. A measurement, not a check: run it in release mode,
//!
//!   cargo test --release -p soma-grpc --test throughput -- --ignored --nocapture

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use soma_core::Tensor;
use soma_grpc::GrpcOptions;
use soma_grpc::codec::tensor_into_content_proto;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{ModelSpec, PredictRequest};
use soma_runtime::ModelSet;
use tonic::transport::Channel;

const RUN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run in release mode with --ignored --nocapture"]
async fn grpc_predict_throughput() {
    let cache = tempfile::tempdir().unwrap();
    let set = Arc::new(ModelSet::new("bench", false));
    for name in ["iris", "mlp1024"] {
        common::load_fixture(&set, name, cache.path()).await;
    }
    let url = common::serve_set_at(set, GrpcOptions::default()).await;

    for (model, width) in [("iris", 4), ("mlp1024", 1024)] {
        let x = Tensor::from_slice(vec![1, width], &vec![0.5f32; width]).unwrap();
        let request = PredictRequest {
            model_spec: Some(ModelSpec {
                name: model.into(),
                ..ModelSpec::default()
            }),
            inputs: [("x".to_string(), tensor_into_content_proto(x))].into(),
            output_filter: vec![],
        };
        for clients in [1, 8, 64] {
            let deadline = Instant::now() + RUN;
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let channel = Channel::from_shared(url.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut client = PredictionServiceClient::new(channel);
                let request = request.clone();
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        client.predict(request.clone()).await.unwrap();
                        latencies.push(started.elapsed());
                    }
                    latencies
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all.sort();
            let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
            println!(
                "{model:8} c={clients:<3} {:>8.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  ({} requests)",
                all.len() as f64 / RUN.as_secs_f64(),
                pct(0.50).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3,
                all.len()
            );
        }
    }
}
