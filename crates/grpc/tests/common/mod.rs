//! Set-up shared by the gRPC integration tests (each test file uses part of it).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use soma_core::ModelLocation;
use soma_grpc::{GrpcListener, GrpcOptions};
use soma_models::{ModelEntry, ModelOptions};
use soma_repository::Validator;
use soma_runtime::{ModelHub, ModelSet, StaticHub};
use soma_testkit::fixtures;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// `options` for the two ways soma serves a TCP port: on the caller's runtime (no serving
/// threads, `--grpc_io_threads=0`) and on serving threads of its own (as `soma tfserving`
/// and `soma serve` run it). Tests of the wire run against both.
pub fn both_servers(options: GrpcOptions) -> [(&'static str, GrpcOptions); 2] {
    let threads = GrpcOptions {
        threading: soma_grpc::Threading {
            threads: 2,
            busy_poll: std::time::Duration::ZERO,
            idle_timeout: None,
        },
        ..options.clone()
    };
    [("caller's runtime", options), ("serving threads", threads)]
}

/// Serves `set` with tonic's own HTTP/2 server, soma's services as they are, on a free port
/// until the test ends; its address (host:port). The reference for how a gRPC server
/// answers, which soma's own server is held to.
pub async fn serve_with_tonic(set: Arc<ModelSet>, options: GrpcOptions) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(set));
    let routes = soma_grpc::tonic_routes(hub, &options);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming),
    );
    addr
}

/// Serves `set` with `options` on a free port until the test ends; its URL.
pub async fn serve_set_at(set: Arc<ModelSet>, options: GrpcOptions) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    serve_set_on(set, listener.into(), options);
    url
}

/// Serves `set` with `options` on a Unix socket in `dir` until the test ends; its path.
pub fn serve_set_on_socket(set: Arc<ModelSet>, options: GrpcOptions, dir: &Path) -> PathBuf {
    let socket = dir.join("grpc.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    serve_set_on(set, listener.into(), options);
    socket
}

fn serve_set_on(set: Arc<ModelSet>, listener: GrpcListener, options: GrpcOptions) {
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(set));
    tokio::spawn(soma_grpc::serve(
        hub,
        listener,
        options,
        std::future::pending(),
    ));
}

/// [`serve_set_at`], and a channel to it.
pub async fn serve_set(set: Arc<ModelSet>, options: GrpcOptions) -> Channel {
    let url = serve_set_at(set, options).await;
    Channel::from_shared(url).unwrap().connect().await.unwrap()
}

/// Loads the iris fixture (every version, real TensorFlow) into `set` as model `iris`.
pub async fn load_iris(set: &ModelSet, cache: &Path) {
    load_fixture(set, "iris", cache).await;
}

/// Loads the fixture model `name` (every version, real TensorFlow) into `set`.
pub async fn load_fixture(set: &ModelSet, name: &str, cache: &Path) {
    let options = ModelOptions {
        tensorflow_lib: None,
        cache_dir: cache.to_path_buf(),
        metrics: None,
        warmup: None,
    };
    let entry = ModelEntry::new(name, ModelLocation::Local(fixtures().join(name)));
    soma_models::load_entry(set, &entry, Validator::TensorFlow, &options)
        .await
        .unwrap();
}

/// A stand-in model: after `delay` (on the blocking pool, as slow models run), answers its
/// float input `factor` times over (small requests, large responses).
#[derive(Debug)]
struct Stand {
    signatures: std::collections::BTreeMap<String, soma_core::SignatureDef>,
    factor: usize,
    delay: std::time::Duration,
}

impl soma_core::runner::ModelRunner for Stand {
    fn signatures(&self) -> &std::collections::BTreeMap<String, soma_core::SignatureDef> {
        &self.signatures
    }

    fn run(
        &self,
        _signature: &str,
        inputs: &[&soma_core::Tensor],
    ) -> Result<Vec<soma_core::Tensor>, soma_core::runner::RunError> {
        std::thread::sleep(self.delay);
        let values = inputs[0].to_vec::<f32>().unwrap().repeat(self.factor);
        Ok(vec![
            soma_core::Tensor::from_slice(vec![values.len()], &values).unwrap(),
        ])
    }
}

fn stand_in(name: &str, factor: usize, delay: std::time::Duration) -> soma_runtime::Servable {
    let runner = Stand {
        signatures: soma_testkit::vector_signatures(),
        factor,
        delay,
    };
    soma_runtime::Servable::new(name, 1, Box::new(runner), None).unwrap()
}

/// The model `repeat` (input `x`, output `y`, float vectors): its answer is its input
/// `factor` times over.
pub fn repeat_model(factor: usize) -> soma_runtime::Servable {
    stand_in("repeat", factor, std::time::Duration::ZERO)
}

/// The model `slow` (input `x`, output `y`, float vectors): `delay` per run, its input back.
pub fn slow_model(delay: std::time::Duration) -> soma_runtime::Servable {
    stand_in("slow", 1, delay)
}
