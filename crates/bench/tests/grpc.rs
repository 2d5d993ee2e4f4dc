//! `soma-bench grpc` against soma's real gRPC front end (TensorFlow behind it): it reads the
//! input name from GetModelMetadata, keeps its channels busy with zero errors (one per caller,
//! or callers sharing channels with `--channels`), and a model the server does not have is
//! reported, not measured.

mod common;
#[path = "common/iris.rs"]
mod iris;

use soma_grpc::GrpcOptions;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread")]
async fn grpc_drives_soma_grpc_server() {
    let cache = tempfile::tempdir().unwrap();
    let hub = iris::iris_hub(cache.path()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(soma_grpc::serve(
        hub,
        listener,
        GrpcOptions::default(),
        std::future::pending(),
    ));
    let body = concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.json");

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            common::bench(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let args = |model: &str| -> Vec<String> {
        [
            "grpc",
            &addr,
            model,
            body,
            "--connections",
            "3",
            "--seconds",
            "0.5",
            "--warmup",
            "0.2",
        ]
        .map(String::from)
        .to_vec()
    };
    let out = run(args("iris")).await.unwrap();
    common::measured_rate(&out, "grpc iris c=3");

    let shared = [args("iris"), vec!["--channels".into(), "2".into()]].concat();
    let out = run(shared).await.unwrap();
    common::measured_rate(&out, "grpc iris channels=2 c=3");

    let too_many = [args("iris"), vec!["--channels".into(), "4".into()]].concat();
    let out = run(too_many).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--channels must be between 1 and --connections (3)"),
        "{stderr}"
    );

    let out = run(args("nope")).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GetModelMetadata"), "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}
