//! `soma-bench null-server`, the ceiling rows of BENCHMARKS §4: it must cost the load
//! generators what soma costs them, so its REST answer, its metadata-derived gRPC request and
//! its gRPC answer are compared with soma's real ones (iris behind soma's REST and gRPC front
//! ends), and the generators drive it with zero errors.

mod common;
#[path = "common/iris.rs"]
mod iris;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use prost::Message as _;
use soma_grpc::GrpcOptions;
use soma_grpc_proto::tensorflow::serving::PredictRequest;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_rest::RestOptions;
use soma_testkit::{fixtures, free_port, http};
use tokio::net::TcpListener;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// soma's REST and gRPC front ends on iris, in this process: (REST, gRPC) addresses.
async fn soma_iris(cache: &std::path::Path) -> (String, String) {
    let hub = iris::iris_hub(cache).await;
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (
        rest.local_addr().unwrap().to_string(),
        grpc.local_addr().unwrap().to_string(),
    );
    let app = soma_rest::router(hub.clone(), RestOptions::default());
    tokio::spawn(async move { axum::serve(rest, app).await });
    tokio::spawn(soma_grpc::serve(
        hub,
        grpc,
        GrpcOptions::default(),
        std::future::pending(),
    ));
    addrs
}

fn null_server(extra: &[&str]) -> (Server, String, String) {
    let (rest, grpc) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_soma-bench"))
        .args(["null-server", "--rest", &rest, "--grpc", &grpc])
        .args(extra)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .spawn()
        .expect("null server starts");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(&rest, "GET", "/", &[], b"").is_err() {
        assert!(Instant::now() < deadline, "the null server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, rest, grpc)
}

const BODY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.json");

/// The gRPC request `soma-bench grpc-body` builds against `addr` (from its metadata).
fn grpc_body(addr: &str, out: &std::path::Path) -> Vec<u8> {
    let run = common::bench(&["grpc-body", addr, "iris", BODY, out.to_str().unwrap()]);
    assert!(run.status.success(), "{run:?}");
    std::fs::read(out).unwrap()
}

async fn predict(addr: &str, framed: &[u8]) -> Vec<u8> {
    let request = PredictRequest::decode(&framed[5..]).unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = PredictionServiceClient::new(channel)
        .predict(request)
        .await
        .unwrap();
    response.into_inner().encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn null_server_answers_as_soma_does() {
    let dir = tempfile::tempdir().unwrap();
    let (soma_rest, soma_grpc) = soma_iris(dir.path()).await;
    compare_with_soma(dir.path(), &soma_rest, &soma_grpc, &[]).await;
}

/// The same with TensorFlow behind it: `--model` runs iris on every request.
#[tokio::test(flavor = "multi_thread")]
async fn null_server_with_a_model_answers_as_soma_does() {
    let dir = tempfile::tempdir().unwrap();
    let (soma_rest, soma_grpc) = soma_iris(dir.path()).await;
    let iris = fixtures().join("iris");
    let model = ["--model", iris.to_str().unwrap()];
    compare_with_soma(dir.path(), &soma_rest, &soma_grpc, &model).await;

    // Its fixed answer is iris's: another model is refused, not measured.
    let mlp = fixtures().join("mlp1024");
    let out = common::bench(&[
        "null-server",
        "--rest",
        "127.0.0.1:0",
        "--model",
        mlp.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--model needs an iris-shaped model"),
        "{stderr}"
    );
}

async fn compare_with_soma(
    dir: &std::path::Path,
    soma_rest: &str,
    soma_grpc: &str,
    extra: &[&str],
) {
    let (_null, null_rest, null_grpc) = null_server(extra);
    let (soma_rest, soma_grpc) = (soma_rest.to_owned(), soma_grpc.to_owned());

    let body = std::fs::read(BODY).unwrap();
    let json = [("Content-Type", "application/json")];
    let ask = |addr: String| {
        let body = body.clone();
        move || http(&addr, "POST", "/v1/models/iris:predict", &json, &body).unwrap()
    };
    let soma = tokio::task::spawn_blocking(ask(soma_rest)).await.unwrap();
    let null = tokio::task::spawn_blocking(ask(null_rest.clone()))
        .await
        .unwrap();
    assert_eq!((soma.status, soma.text()), (null.status, null.text()));
    assert_eq!(null.header("content-type"), soma.header("content-type"));

    let (soma_grpc_, null_grpc_) = (soma_grpc.clone(), null_grpc.clone());
    let (soma_path, null_path) = (dir.join("soma.grpc"), dir.join("null.grpc"));
    let (soma_body, null_body) = tokio::task::spawn_blocking(move || {
        (
            grpc_body(&soma_grpc_, &soma_path),
            grpc_body(&null_grpc_, &null_path),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        soma_body, null_body,
        "the null server's metadata gives soma's request"
    );
    assert_eq!(
        predict(&soma_grpc, &soma_body).await,
        predict(&null_grpc, &soma_body).await,
        "the null server's Predict answer is soma's, byte for byte"
    );

    let drive = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            common::bench(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let load = |kind: &str, addr: &str| -> Vec<String> {
        [
            kind,
            addr,
            "iris",
            BODY,
            "--connections",
            "2",
            "--seconds",
            "0.3",
            "--warmup",
            "0.1",
        ]
        .map(String::from)
        .to_vec()
    };
    common::measured_rate(
        &drive(load("rest", &null_rest)).await.unwrap(),
        "rest iris c=2",
    );
    common::measured_rate(
        &drive(load("grpc", &null_grpc)).await.unwrap(),
        "grpc iris c=2",
    );
}
