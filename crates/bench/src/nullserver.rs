//! `null-server [--rest ADDR] [--grpc ADDR] [--model DIR] [--threads N] [--busy-poll-micros N]`:
//! servers built like soma's (axum on hyper for REST, soma's HTTP/2 lane and tonic's
//! services for gRPC), served the way
//! `soma tfserving` serves them (a thread per core with busy polling, gRPC requests through
//! soma's balancing layer), that answer every request with soma's answer to
//! `crates/bench/data/iris.json`, fixed. The REST side reads the whole body; the gRPC side
//! decodes the `PredictRequest` and encodes a `PredictResponse` (tonic and prost do that),
//! and answers GetModelMetadata with iris's signature for clients that read it first
//! (`soma-bench grpc`). Nothing else: no JSON, no model lookup, no metrics.
//!
//! Under the same load generators as soma this measures the ceiling of those stacks on this
//! machine. With `--model DIR` (an iris-shaped model: one float input of width 4) each
//! request also runs that model once on iris.json's row, through `Servable::predict` like the
//! floor, on the thread that read it (as soma runs quick models): the stack plus TensorFlow,
//! so soma's own work per request is what it costs beyond this.
//!
//! `--threads` and `--busy-poll-micros` are soma's `--rest_api_io_threads` /
//! `--grpc_io_threads` and `--*_busy_poll_micros` (defaults: a thread per core, 30 µs);
//! `--threads 0` serves on tokio's shared multi-threaded runtime. Small POSTs are answered in
//! soma's quick lane (`soma_rest::QuickLane`), the rest by the axum router, as in soma.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Response, header};
use prost::Message as _;
use soma_core::Tensor;
use soma_core::runner::ThreadPools;
use soma_grpc::codec::tensor_into_proto;
use soma_grpc_proto::SIGNATURE_DEF_MAP_TYPE_URL;
use soma_grpc_proto::tensorflow::serving::prediction_service_server::PredictionService;
use soma_grpc_proto::tensorflow::serving::{
    ClassificationRequest, ClassificationResponse, GetModelMetadataRequest,
    GetModelMetadataResponse, ModelSpec, MultiInferenceRequest, MultiInferenceResponse,
    PredictRequest, PredictResponse, RegressionRequest, RegressionResponse, SignatureDefMap,
    model_spec,
};
use soma_grpc_proto::tensorflow::{
    DataType, SignatureDef, TensorInfo, TensorShapeProto, tensor_info, tensor_shape_proto,
};
use soma_models::TfRunner;
use soma_runtime::Servable;
use soma_tensorflow::TensorFlow;
use tonic::{Request, Status};

/// The latest version of `fixtures/models/iris`, which soma names in its gRPC answers.
const IRIS_VERSION: i64 = 10;

/// soma's answer to `crates/bench/data/iris.json`, byte for byte.
const REST_ANSWER: &str =
    "{\n    \"predictions\": [[0.972686529, 0.0245849229, 0.00272860541]\n    ]\n}";

const USAGE: &str = "usage: soma-bench null-server [--rest host:port] [--grpc host:port] \
                     [--model dir] [--threads n] [--busy-poll-micros n]";

/// What each request runs before its fixed answer: nothing, or one call of a model.
#[derive(Clone, Default)]
struct Work(Option<Arc<Model>>);

/// A loaded model and the inputs every request runs it on (iris.json's row).
struct Model {
    servable: Servable,
    inputs: BTreeMap<String, Tensor>,
}

impl Work {
    fn load(dir: &Path) -> anyhow::Result<Work> {
        let dir = crate::predictfloor::version_dir(dir)?;
        let tf = TensorFlow::global(None)?;
        // The same thread-pool settings as `soma tfserving` without the thread flags.
        let runner = TfRunner::load(&tf, &dir, ThreadPools::default())?;
        let servable = Servable::new("model", 1, Box::new(runner), None)?;
        let (_, signature) = servable.signature(None)?;
        let body = include_bytes!("../data/iris.json");
        let inputs = crate::load::single_input(body, &signature.inputs)
            .context("--model needs an iris-shaped model")?;
        servable.predict(None, &inputs)?;
        Ok(Work(Some(Arc::new(Model { servable, inputs }))))
    }

    fn run(&self) -> Result<(), String> {
        match &self.0 {
            Some(model) => model
                .servable
                .predict(None, &model.inputs)
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let (mut rest, mut grpc, mut work) = (None, None, Work::default());
    let mut threading = soma_net::Threading::per_core(soma_net::Threading::DEFAULT_BUSY_POLL);
    for pair in args.chunks(2) {
        match pair {
            [flag, addr] if flag == "--rest" => rest = Some(addr.clone()),
            [flag, addr] if flag == "--grpc" => grpc = Some(addr.clone()),
            [flag, dir] if flag == "--model" => work = Work::load(Path::new(dir))?,
            [flag, n] if flag == "--threads" => {
                threading.threads = n.parse().with_context(|| format!("bad {flag} {n}"))?;
            }
            [flag, n] if flag == "--busy-poll-micros" => {
                let micros = n.parse().with_context(|| format!("bad {flag} {n}"))?;
                threading.busy_poll = std::time::Duration::from_micros(micros);
            }
            _ => anyhow::bail!(USAGE),
        }
    }
    if rest.is_none() && grpc.is_none() {
        anyhow::bail!(USAGE);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut servers = tokio::task::JoinSet::new();
        if let Some(addr) = rest {
            let listener = listen(&addr).await?;
            let app = axum::Router::new()
                .fallback(answer_rest)
                .with_state(work.clone());
            let work = work.clone();
            servers.spawn(async move {
                let lane = NullLane(work);
                soma_rest::serve_on_threads(listener, app, lane, threading, std::future::pending())
                    .await
                    .context("REST null server")
            });
        }
        if let Some(addr) = grpc {
            let listener = listen(&addr).await?;
            servers.spawn(async move {
                serve_grpc(listener, work, threading)
                    .await
                    .context("gRPC null server")
            });
        }
        while let Some(done) = servers.join_next().await {
            done??;
        }
        Ok(())
    })
}

/// As `soma_grpc::serve` serves soma's gRPC port: in soma's HTTP/2 lane on `threading`'s
/// threads (on the caller's runtime with none), each request through soma's balancing.
async fn serve_grpc(
    listener: tokio::net::TcpListener,
    work: Work,
    threading: soma_net::Threading,
) -> std::io::Result<()> {
    let options = soma_grpc::GrpcOptions {
        threading,
        ..soma_grpc::GrpcOptions::default()
    };
    soma_grpc::serve_predictions(
        NullPredictions(work),
        listener,
        options,
        std::future::pending(),
    )
    .await
    .map_err(std::io::Error::other)
}

async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Every small POST answered in the quick lane, as soma answers its predictions.
struct NullLane(Work);

impl soma_rest::QuickLane for NullLane {
    type Route = ();

    fn take(&self, _: &str, _: usize) -> Option<()> {
        Some(())
    }

    async fn answer(&self, (): (), _: Vec<u8>) -> (axum::http::StatusCode, String) {
        answer(self.0.run())
    }
}

fn answer(outcome: Result<(), String>) -> (axum::http::StatusCode, String) {
    match outcome {
        Ok(()) => (axum::http::StatusCode::OK, REST_ANSWER.to_owned()),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e }).to_string(),
        ),
    }
}

/// Reads the body as soma's REST front end does (up to its 256 MiB limit), runs the work, answers.
async fn answer_rest(State(work): State<Work>, body: Body) -> Response<Body> {
    let (status, body) = match axum::body::to_bytes(body, 256 * 1024 * 1024).await {
        Ok(_) => answer(work.run()),
        Err(e) => (
            axum::http::StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn shape(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// Predict answers iris's output (one row of three floats) for the model it was asked for.
struct NullPredictions(Work);

#[tonic::async_trait]
impl PredictionService for NullPredictions {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<tonic::Response<PredictResponse>, Status> {
        let request = request.into_inner();
        self.0.run().map_err(Status::internal)?;
        // Encoded by soma's own codec, as soma encodes its outputs.
        let probabilities = [0.972_686_5_f32, 0.024_584_923, 0.002_728_605_4];
        let output = Tensor::from_slice(vec![1, 3], &probabilities)
            .map(tensor_into_proto)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(PredictResponse {
            // As soma answers for the fixture's latest version.
            model_spec: Some(ModelSpec {
                name: request.model_spec.map(|spec| spec.name).unwrap_or_default(),
                version_choice: Some(model_spec::VersionChoice::Version(IRIS_VERSION)),
                signature_name: "serving_default".to_owned(),
            }),
            outputs: [("output_0".to_owned(), output)].into_iter().collect(),
        }))
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<tonic::Response<GetModelMetadataResponse>, Status> {
        let info = |name: &str, dims: &[i64]| TensorInfo {
            encoding: Some(tensor_info::Encoding::Name(name.to_owned())),
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape(dims)),
        };
        let signature = SignatureDef {
            inputs: [("x".to_owned(), info("serve_x:0", &[-1, 4]))].into(),
            outputs: [(
                "output_0".to_owned(),
                info("StatefulPartitionedCall:0", &[-1, 3]),
            )]
            .into(),
            method_name: "tensorflow/serving/predict".to_owned(),
            ..SignatureDef::default()
        };
        let map = SignatureDefMap {
            signature_def: [("serving_default".to_owned(), signature)].into(),
        };
        let any = prost_types::Any {
            type_url: SIGNATURE_DEF_MAP_TYPE_URL.to_owned(),
            value: map.encode_to_vec(),
        };
        Ok(tonic::Response::new(GetModelMetadataResponse {
            model_spec: request.into_inner().model_spec,
            metadata: [("signature_def".to_owned(), any)].into(),
        }))
    }

    async fn classify(
        &self,
        _: Request<ClassificationRequest>,
    ) -> Result<tonic::Response<ClassificationResponse>, Status> {
        Err(Status::unimplemented(
            "the null server only answers Predict",
        ))
    }

    async fn regress(
        &self,
        _: Request<RegressionRequest>,
    ) -> Result<tonic::Response<RegressionResponse>, Status> {
        Err(Status::unimplemented(
            "the null server only answers Predict",
        ))
    }

    async fn multi_inference(
        &self,
        _: Request<MultiInferenceRequest>,
    ) -> Result<tonic::Response<MultiInferenceResponse>, Status> {
        Err(Status::unimplemented(
            "the null server only answers Predict",
        ))
    }
}
