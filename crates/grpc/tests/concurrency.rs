//! Predictions run on the blocking pool, in parallel, without holding up the async runtime:
//! sixteen requests to a model that takes 300 ms each finish together, and a status call
//! made meanwhile answers at once even though the runtime has only two worker threads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use soma_core::runner::{ModelRunner, RunError};
use soma_core::{DType, SignatureDef, Tensor, TensorInfo};
use soma_grpc::GrpcOptions;
use soma_grpc::codec::{tensor_from_proto, tensor_into_proto};
use soma_grpc_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{GetModelStatusRequest, ModelSpec, PredictRequest};
use soma_runtime::{ModelHub, ModelSet, Servable, StaticHub};
use tokio::net::TcpListener;
use tonic::transport::Channel;

const RUN_TIME: Duration = Duration::from_millis(300);
const REQUESTS: usize = 16;

/// Echoes its input after blocking the calling thread, like a TensorFlow session run.
#[derive(Debug)]
struct SlowEcho {
    signatures: BTreeMap<String, SignatureDef>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl ModelRunner for SlowEcho {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.signatures
    }

    fn run(&self, _signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(RUN_TIME);
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(vec![inputs[0].clone()])
    }
}

fn slow_model() -> Servable {
    let info = |name: &str| TensorInfo {
        tensor_name: format!("{name}:0"),
        dtype: DType::Float,
        shape: Some(vec![-1]),
    };
    let signature = SignatureDef {
        method_name: "tensorflow/serving/predict".into(),
        inputs: BTreeMap::from([("x".to_string(), info("x"))]),
        outputs: BTreeMap::from([("y".to_string(), info("y"))]),
    };
    let runner = SlowEcho {
        signatures: BTreeMap::from([("serving_default".to_string(), signature)]),
        running: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
    };
    Servable::new("slow", 1, Box::new(runner), None).unwrap()
}

fn spec() -> Option<ModelSpec> {
    Some(ModelSpec {
        name: "slow".into(),
        ..ModelSpec::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_run_in_parallel_off_the_async_runtime() {
    let set = Arc::new(ModelSet::new("slow", false));
    set.insert(Arc::new(slow_model()));
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(set));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(soma_grpc::serve(
        hub,
        listener,
        GrpcOptions::default(),
        async {
            stopped.await.ok();
        },
    ));
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();

    let started = Instant::now();
    let calls: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let mut client = PredictionServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let x = Tensor::from_slice(vec![1], &[i as f32]).unwrap();
                let request = PredictRequest {
                    model_spec: spec(),
                    inputs: [("x".to_string(), tensor_into_proto(x))].into(),
                    output_filter: vec![],
                };
                let response = client.predict(request).await.unwrap().into_inner();
                let y = tensor_from_proto(&response.outputs["y"]).unwrap();
                assert_eq!(y.to_vec::<f32>().unwrap(), vec![i as f32]);
            })
        })
        .collect();

    // While every prediction is blocked in the model, the runtime still answers.
    tokio::time::sleep(RUN_TIME / 3).await;
    let status_started = Instant::now();
    let mut models = ModelServiceClient::new(channel.clone());
    let status = models
        .get_model_status(GetModelStatusRequest { model_spec: spec() })
        .await
        .unwrap()
        .into_inner();
    let status_took = status_started.elapsed();
    assert_eq!(status.model_version_status.len(), 1);
    assert!(
        status_took < RUN_TIME / 2,
        "a status call waited {status_took:?} behind running predictions"
    );

    for call in calls {
        call.await.unwrap();
    }
    let took = started.elapsed();
    // One after the other they would take REQUESTS x RUN_TIME (4.8 s).
    assert!(
        took < RUN_TIME * 3,
        "{REQUESTS} predictions of {RUN_TIME:?} took {took:?}: they did not run in parallel"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
