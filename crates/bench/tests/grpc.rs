//! `soma-bench grpc` against soma's real gRPC front end (TensorFlow behind it): it reads the
//! input name from GetModelMetadata, keeps its channels busy with zero errors, and a model
//! the server does not have is reported, not measured.

use std::sync::Arc;

use soma_core::{ModelLocation, runner::ThreadPools};
use soma_grpc::GrpcOptions;
use soma_models::{ModelEntry, ModelOptions};
use soma_repository::Validator;
use soma_runtime::{ModelHub, ModelSet, StaticHub};
use soma_testkit::fixtures;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread")]
async fn grpc_drives_soma_grpc_server() {
    let cache = tempfile::tempdir().unwrap();
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: cache.path().to_path_buf(),
        metrics: None,
    };
    let set = Arc::new(ModelSet::new("bench", false));
    let entry = ModelEntry {
        name: "iris".to_string(),
        location: ModelLocation::Local(fixtures().join("iris")),
        signature_key: None,
        threads: ThreadPools::default(),
        batching: None,
    };
    soma_models::load_entry(&set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(set));
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
            std::process::Command::new(env!("CARGO_BIN_EXE_soma-bench"))
                .args(args)
                .output()
                .unwrap()
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().unwrap();
    assert!(line.starts_with("grpc iris c=3: "), "{line}");
    assert!(line.contains(" errors 0 of "), "{line}");
    let rate: f64 = line["grpc iris c=3: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{line}");

    let out = run(args("nope")).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GetModelMetadata"), "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}
