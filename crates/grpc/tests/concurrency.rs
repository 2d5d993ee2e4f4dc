//! Predictions run on the blocking pool, in parallel, without holding up the async runtime:
//! sixteen requests to a model that takes 300 ms each finish together, and a status call
//! made meanwhile answers at once even though the runtime has only two worker threads.
//! A quick model under `auto` batching batches requests in place, each with its own rows,
//! also when they all come on one channel to a server on serving threads.
//! Stopping the server lets running requests finish; a request that panics fails alone.
//! All but the batching test also run with the server on serving threads of its own
//! (`soma_net`).
//! A concurrency limit (`--grpc_max_threads`) makes the requests beyond it wait, across every
//! server it is given to.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use soma_core::runner::{ModelRunner, RunError};
use soma_core::{SignatureDef, Tensor};
use soma_grpc::GrpcOptions;
use soma_grpc::codec::{tensor_from_proto, tensor_into_proto};
use soma_grpc_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{
    GetModelStatusRequest, ModelSpec, PredictRequest, PredictResponse,
};
use soma_runtime::{ConcurrencyLimit, ModelHub, ModelSet, Servable, StaticHub};
use tokio::net::TcpListener;
use tonic::transport::Channel;

const RUN_TIME: Duration = Duration::from_millis(300);
const REQUESTS: usize = 16;

/// Echoes its input after blocking the calling thread for `takes`, like a TensorFlow
/// session run.
#[derive(Debug)]
struct SlowEcho {
    signatures: BTreeMap<String, SignatureDef>,
    takes: Duration,
    runs: Arc<AtomicUsize>,
}

impl ModelRunner for SlowEcho {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.signatures
    }

    fn run(&self, _signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        assert!(
            inputs[0].to_vec::<f32>().unwrap().iter().all(|v| *v >= 0.0),
            "the echo model panics on negative inputs"
        );
        if self.takes < Duration::from_millis(1) {
            // A short run busy-waits: sleeping would overshoot by the timer's slack.
            let started = Instant::now();
            while started.elapsed() < self.takes {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(self.takes);
        }
        Ok(vec![inputs[0].clone()])
    }
}

/// The echo model; the counter counts its runs.
fn echo_model(takes: Duration) -> (Servable, Arc<AtomicUsize>) {
    named_echo_model("slow", takes)
}

fn named_echo_model(name: &str, takes: Duration) -> (Servable, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let runner = SlowEcho {
        signatures: soma_testkit::vector_signatures(),
        takes,
        runs: Arc::clone(&runs),
    };
    let servable = Servable::new(name, 1, Box::new(runner), None).unwrap();
    (servable, runs)
}

/// Serves `servable` at the URL returned; the sender stops the server.
async fn serve(
    servable: Servable,
    options: GrpcOptions,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), soma_grpc::GrpcError>>,
) {
    serve_with(vec![servable], options).await
}

/// The server on serving threads of its own (as `soma tfserving` runs it), busy polling:
/// requests of one connection move between the threads (`soma_net::run_balanced`).
fn on_serving_threads() -> GrpcOptions {
    GrpcOptions {
        threading: soma_grpc::Threading {
            threads: 2,
            busy_poll: Duration::from_micros(30),
            idle_timeout: None,
        },
        ..GrpcOptions::default()
    }
}

async fn serve_with(
    servables: Vec<Servable>,
    options: GrpcOptions,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), soma_grpc::GrpcError>>,
) {
    let set = Arc::new(ModelSet::new("echo", false));
    for servable in servables {
        set.insert(Arc::new(servable));
    }
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(set));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(soma_grpc::serve(hub, listener, options, async {
        stopped.await.ok();
    }));
    (url, stop, server)
}

async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Predicts `[i]` and checks the answer is `[i]`.
async fn echo(channel: Channel, i: usize) {
    let response = predict(channel, "slow", i as f32).await.unwrap();
    let y = tensor_from_proto(response.outputs["y"].clone()).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![i as f32]);
}

async fn predict(channel: Channel, model: &str, x: f32) -> Result<PredictResponse, tonic::Status> {
    let mut client = PredictionServiceClient::new(channel);
    let x = Tensor::from_slice(vec![1], &[x]).unwrap();
    let request = PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..ModelSpec::default()
        }),
        inputs: [("x".to_string(), tensor_into_proto(x))].into(),
        output_filter: vec![],
    };
    client
        .predict(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `n` echo predictions at once, spread over `channels`; how long until all answered.
async fn echo_all(channels: &[Channel], n: usize) -> Duration {
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| tokio::spawn(echo(channels[i % channels.len()].clone(), i)))
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    started.elapsed()
}

fn spec() -> Option<ModelSpec> {
    Some(ModelSpec {
        name: "slow".into(),
        ..ModelSpec::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_run_in_parallel_off_the_async_runtime() {
    predictions_run_in_parallel_off_the_async_runtime_with(GrpcOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_run_in_parallel_off_the_async_runtime_on_serving_threads() {
    predictions_run_in_parallel_off_the_async_runtime_with(on_serving_threads()).await;
}

async fn predictions_run_in_parallel_off_the_async_runtime_with(options: GrpcOptions) {
    let (url, stop, server) = serve(echo_model(RUN_TIME).0, options).await;
    let channel = connect(&url).await;

    let started = Instant::now();
    let calls: Vec<_> = (0..REQUESTS)
        .map(|i| tokio::spawn(echo(channel.clone(), i)))
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

/// `--grpc_max_threads`: with 4 permits, 8 predictions of RUN_TIME run in two waves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_makes_extra_requests_wait_for_a_permit() {
    let options = GrpcOptions {
        max_concurrent: Some(ConcurrencyLimit::new(4)),
        ..GrpcOptions::default()
    };
    let (url, stop, server) = serve_with(vec![echo_model(RUN_TIME).0], options).await;
    let took = echo_all(&[connect(&url).await], 8).await;
    // Without the limit all eight finish together in about RUN_TIME (the test above).
    assert!(
        took >= RUN_TIME * 2 && took < RUN_TIME * 4,
        "8 predictions of {RUN_TIME:?} with 4 permits took {took:?}"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A call its client cancels (RST_STREAM, as a client sends when its deadline passes) stops
/// where it is (its task is aborted): one still waiting for a `--grpc_max_threads` permit
/// never runs. On the caller's runtime and on serving threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_its_client_cancels_never_runs() {
    for (server_kind, options) in [
        ("caller's runtime", GrpcOptions::default()),
        ("serving threads", on_serving_threads()),
    ] {
        let limit = ConcurrencyLimit::new(1);
        let options = GrpcOptions {
            max_concurrent: Some(limit.clone()),
            ..options
        };
        let (servable, runs) = echo_model(Duration::from_millis(1));
        let (url, stop, server) = serve(servable, options).await;
        let channel = connect(&url).await;
        let held = limit.acquire().await;
        // Given up while it waits for the permit: tonic's client resets the stream.
        let call = predict(channel.clone(), "slow", 1.0);
        let gave_up = tokio::time::timeout(Duration::from_millis(100), call).await;
        assert!(gave_up.is_err(), "{server_kind}: {gave_up:?}");
        // Time for the reset to reach the server (generous: CI machines are busy).
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        // Permits go first come, first served: the cancelled call, were it still waiting,
        // would run before this one.
        predict(channel.clone(), "slow", 2.0).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{server_kind}");

        // The same behind a call that waits and is not given up (on the lane the first is
        // its connection's only request and runs in the connection's task, the second in a
        // task of its own).
        let held = limit.acquire().await;
        let waiting = tokio::spawn(predict(channel.clone(), "slow", 3.0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let call = predict(channel.clone(), "slow", 4.0);
        let gave_up = tokio::time::timeout(Duration::from_millis(100), call).await;
        assert!(gave_up.is_err(), "{server_kind}: {gave_up:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        waiting.await.unwrap().unwrap();
        predict(channel, "slow", 5.0).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "{server_kind}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

/// One limit given to two servers (as `soma tfserving` gives its port and its Unix socket)
/// is one limit: 4 predictions on each, 4 permits in all, take two waves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_given_one_limit_share_its_permits() {
    let options = GrpcOptions {
        max_concurrent: Some(ConcurrencyLimit::new(4)),
        ..GrpcOptions::default()
    };
    let (url_a, stop_a, server_a) = serve_with(vec![echo_model(RUN_TIME).0], options.clone()).await;
    let (url_b, stop_b, server_b) = serve_with(vec![echo_model(RUN_TIME).0], options).await;
    let took = echo_all(&[connect(&url_a).await, connect(&url_b).await], 8).await;
    // With a limit of its own per server, all eight would finish together in about RUN_TIME.
    assert!(
        took >= RUN_TIME * 2 && took < RUN_TIME * 4,
        "8 predictions of {RUN_TIME:?} over two servers sharing 4 permits took {took:?}"
    );
    for (stop, server) in [(stop_a, server_a), (stop_b, server_b)] {
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_auto_batching_a_quick_model_batches_requests_in_place() {
    under_auto_batching_a_quick_model_batches_requests_in_place_with(GrpcOptions::default(), 8)
        .await;
}

/// One channel's requests are tasks of one connection on one serving thread: they must still
/// find each other (a thread with one connection but several requests in hand has company).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_auto_batching_requests_on_one_channel_batch_on_serving_threads() {
    under_auto_batching_a_quick_model_batches_requests_in_place_with(on_serving_threads(), 1).await;
}

// Not with many connections on serving threads: there, whether requests of different
// connections are read in the same turn of a thread depends on timing, which on these two
// cores shared with the client and the other tests varies; `auto` batching on serving
// threads is measured in BENCHMARKS.md §4 instead.
async fn under_auto_batching_a_quick_model_batches_requests_in_place_with(
    options: GrpcOptions,
    connections: usize,
) {
    use soma_runtime::batching::{BatchOptions, BatchWindow};

    // Quick (under soma_runtime::QUICK_RUN), so answered on the async threads, and long
    // enough for concurrent requests to queue behind a run.
    let (servable, runs) = echo_model(Duration::from_micros(50));
    let batching = BatchOptions {
        window: BatchWindow::Auto,
        ..BatchOptions::default()
    };
    let (url, stop, server) = serve(servable.with_batching(batching, None).unwrap(), options).await;
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect(&url).await);
    }
    // The first run measures the model (unmeasured counts as slow, so it goes to the pool).
    echo(channels[0].clone(), 1000).await;

    // Bursts of 64 requests at once, spread over the connections. The client shares the
    // test's two worker threads with the server, and now and then their turns interleave
    // so that a whole burst is answered one request at a time (about one burst in thirty
    // on the shared runtime); with batching broken, every burst would be.
    let mut runs_per_burst = Vec::new();
    for burst in 0..3 {
        let before = runs.load(Ordering::SeqCst);
        let calls: Vec<_> = (0..64)
            .map(|i| tokio::spawn(echo(channels[i % connections].clone(), burst * 64 + i)))
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        // Each got its own rows back (`echo` checks), and requests read together shared
        // runs.
        let burst_runs = runs.load(Ordering::SeqCst) - before;
        runs_per_burst.push(burst_runs);
        if burst_runs < 64 {
            break;
        }
    }
    assert!(
        runs_per_burst.iter().any(|&r| r < 64),
        "runs per burst of 64 requests: {runs_per_burst:?}: none were batched"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_lets_running_requests_finish() {
    stopping_the_server_lets_running_requests_finish_with(GrpcOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_lets_running_requests_finish_on_serving_threads() {
    stopping_the_server_lets_running_requests_finish_with(on_serving_threads()).await;
}

async fn stopping_the_server_lets_running_requests_finish_with(options: GrpcOptions) {
    let (url, stop, server) = serve(echo_model(RUN_TIME).0, options).await;
    let channel = connect(&url).await;
    let calls: Vec<_> = (0..8)
        .map(|i| tokio::spawn(echo(channel.clone(), i)))
        .collect();
    tokio::time::sleep(RUN_TIME / 3).await;

    stop.send(()).unwrap();
    // Every request in flight when the server was told to stop gets its answer...
    for call in calls {
        call.await.unwrap();
    }
    // ...and then the server returns, its listener closed.
    tokio::time::timeout(RUN_TIME * 3, server)
        .await
        .expect("the server stops once its requests are answered")
        .unwrap()
        .unwrap();
    let addr = url.trim_start_matches("http://");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_panics_fails_alone() {
    a_request_that_panics_fails_alone_with(GrpcOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_panics_fails_alone_on_serving_threads() {
    a_request_that_panics_fails_alone_with(on_serving_threads()).await;
}

async fn a_request_that_panics_fails_alone_with(options: GrpcOptions) {
    // "quick" is answered in place once measured; "slow" requests run on the blocking pool
    // meanwhile, on the same connection.
    let (quick, _) = named_echo_model("quick", Duration::from_micros(50));
    let (slow, _) = echo_model(RUN_TIME);
    let (url, stop, server) = serve_with(vec![quick, slow], options).await;
    let channel = connect(&url).await;
    for i in 0..3 {
        predict(channel.clone(), "quick", i as f32).await.unwrap();
    }
    let running: Vec<_> = (0..4)
        .map(|i| tokio::spawn(echo(channel.clone(), i)))
        .collect();
    tokio::time::sleep(RUN_TIME / 3).await;

    let failed = predict(channel.clone(), "quick", -1.0).await.unwrap_err();
    println!("the panicking request: {failed:?}");
    // The connection lived on: the requests it was carrying get their answers.
    for call in running {
        call.await.unwrap();
    }
    predict(channel.clone(), "quick", 1.0).await.unwrap();
    // Alone on its connection (the lane then runs it in the connection's own task), a
    // request that panics still fails alone.
    let failed = predict(channel.clone(), "quick", -2.0).await.unwrap_err();
    println!("the panicking request, alone: {failed:?}");
    // Answered on its stream, not lost with its connection.
    assert_eq!(failed.code(), tonic::Code::Internal, "{failed:?}");
    predict(channel.clone(), "quick", 1.0).await.unwrap();

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A connection past `max_connection_age` is asked to go away (GOAWAY) and its running
/// request finishes, gRPC's default; with `max_connection_age_grace`, the connection closes
/// when the grace ends and the request still running fails then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_connection_keeps_its_requests_for_the_grace_period_only() {
    let takes = Duration::from_millis(1500);
    for grace in [None, Some(Duration::from_millis(200))] {
        let options = GrpcOptions {
            max_connection_age: Some(Duration::from_millis(100)),
            max_connection_age_grace: grace,
            ..on_serving_threads()
        };
        let (url, stop, server) = serve(echo_model(takes).0, options).await;
        let started = Instant::now();
        let answer = predict(connect(&url).await, "slow", 1.0).await;
        let took = started.elapsed();
        match grace {
            None => {
                answer.unwrap();
                assert!(took >= takes, "{took:?}");
            }
            Some(_) => {
                let error = answer.unwrap_err();
                assert!(took < takes * 2 / 3, "{took:?}: {error:?}");
            }
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

/// The lane answers a request that outlives its `grpc-timeout` with DEADLINE_EXCEEDED when
/// the deadline passes, as a C++ gRPC server does (tonic's server says CANCELLED).
/// Through a raw HTTP/2 client: tonic's client gives up by itself at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_deadline_exceeded_on_serving_threads() {
    use prost::Message as _;

    let (url, _stop, _server) = serve(echo_model(RUN_TIME).0, on_serving_threads()).await;
    let addr = url.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let x = Tensor::from_slice(vec![1], &[1.0f32]).unwrap();
    let message = PredictRequest {
        model_spec: spec(),
        inputs: [("x".to_string(), tensor_into_proto(x))].into(),
        output_filter: vec![],
    }
    .encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    let request = tonic::codegen::http::Request::post(format!(
        "{url}/tensorflow.serving.PredictionService/Predict"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", "50m")
    .body(())
    .unwrap();
    let started = Instant::now();
    let mut client = client.ready().await.unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream.send_data(body.into(), true).unwrap();
    let response = response.await.unwrap();
    assert!(started.elapsed() < RUN_TIME, "{:?}", started.elapsed());
    // Trailers-only: the status is in the head.
    assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
    // The server serves on.
    echo(connect(&url).await, 3).await;
}
