//! `grpc.health.v1.Health`: as `soma serve` reports it, NOT_SERVING until every model has
//! an AVAILABLE version, then SERVING for the server and its two services; as `soma
//! tfserving` (and TF Serving), SERVING while the server runs; NOT_FOUND for other services;
//! Watch sends the change; absent unless asked for.

mod common;

use std::sync::Arc;
use std::time::Duration;

use soma_grpc::{GrpcOptions, HealthReport};
use soma_grpc_proto::grpc::health::v1::HealthCheckRequest;
use soma_grpc_proto::grpc::health::v1::health_check_response::ServingStatus;
use soma_grpc_proto::grpc::health::v1::health_client::HealthClient;
use soma_runtime::ModelSet;
use tonic::transport::Channel;

async fn serve(set: Arc<ModelSet>, health: Option<HealthReport>) -> HealthClient<Channel> {
    let options = GrpcOptions {
        health,
        ..GrpcOptions::default()
    };
    HealthClient::new(common::serve_set(set, options).await)
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

async fn check(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Code> {
    client
        .check(ask(service))
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| s.code())
}

/// The server (`""`) and its two services report `status`; any other service is unknown.
async fn assert_every_service(client: &mut HealthClient<Channel>, status: ServingStatus) {
    for service in [
        "",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    ] {
        assert_eq!(check(client, service).await, Ok(status), "{service:?}");
    }
    assert_eq!(check(client, "nope").await, Err(tonic::Code::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_model_availability() {
    let set = Arc::new(ModelSet::new("health", false));
    let mut client = serve(Arc::clone(&set), Some(HealthReport::WhenModelsAvailable)).await;
    assert_every_service(&mut client, ServingStatus::NotServing).await;
    let mut watch = client.watch(ask("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::NotServing);
    let mut unknown = client.watch(ask("nope")).await.unwrap().into_inner();
    let unknown = unknown.message().await.unwrap().unwrap();
    assert_eq!(unknown.status(), ServingStatus::ServiceUnknown);

    // A model goes live: the server is SERVING, and the watcher hears it.
    let cache = tempfile::tempdir().unwrap();
    common::load_iris(&set, cache.path()).await;
    assert_eq!(check(&mut client, "").await, Ok(ServingStatus::Serving));
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("Watch sends the change within its poll interval")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
}

/// TF Serving's report: the server is SERVING while it runs, whatever its models do (a model
/// that breaks later must not take the others' traffic away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_running_the_server_is_serving_without_available_models() {
    let set = Arc::new(ModelSet::new("health", false));
    let mut client = serve(set, Some(HealthReport::WhileRunning)).await;
    assert_every_service(&mut client, ServingStatus::Serving).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_service_is_only_served_when_asked_for() {
    let mut client = serve(Arc::new(ModelSet::new("none", false)), None).await;
    assert_eq!(
        check(&mut client, "").await,
        Err(tonic::Code::Unimplemented)
    );
}
