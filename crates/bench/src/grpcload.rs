//! `soma-bench grpc <host:port> <model> <body.json> --connections N [--channels K] --seconds S
//! [--warmup S]`: N tonic `PredictionService` callers call Predict in a loop, as
//! `soma-bench rest` does over REST. By default each has its own channel (one HTTP/2
//! connection, one request in flight on it). With `--channels K` the N callers share K
//! channels, their requests in flight together as concurrent streams of each connection: how
//! gRPC clients are usually used (the official Python client's channel, `ghz`'s default of
//! one connection), and what HTTP/1.1 (REST) cannot do.
//!
//! The body is the same row-format JSON file as for REST; it becomes a `tensor_content`
//! TensorProto for the input named by the model's `serving_default` signature, which is
//! read once with GetModelMetadata.
//!
//! `soma-bench grpc-body <host:port> <model> <body.json> <out>` writes that request as it goes
//! on the wire (a gRPC message: 1 flag byte, 4 bytes of length, the PredictRequest), for
//! load generators that send a fixed body, such as `h2load` (`scripts/bench_serving.sh`).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, bail};
use prost::Message as _;
use soma_core::{DType, TensorInfo};
use soma_grpc::codec::tensor_into_content_proto;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{
    GetModelMetadataRequest, ModelSpec, PredictRequest, SignatureDefMap,
};
use tonic::transport::Channel;

use crate::load::{self, ClientResult, LoadOptions, Window};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let [addr, model, body, flags @ ..] = args else {
        bail!("usage: soma-bench grpc <host:port> <model> <body.json> --connections N --seconds S");
    };
    let (channels, flags) = load::take_flag(flags, "--channels")?;
    let options = LoadOptions::parse(&flags, "--connections")?;
    let channels = channels.unwrap_or(options.clients);
    if channels == 0 || channels > options.clients {
        bail!(
            "--channels must be between 1 and --connections ({})",
            options.clients
        );
    }
    let body = load::read_body(body)?;
    let url = format!("http://{addr}");
    let request = checked_request(&url, model, &body)?;

    // Like the REST generator: one OS thread per channel, here with its own single-threaded
    // runtime, so the client side costs about the same per request and no task hops between
    // threads (a shared multi-threaded runtime was slower on 2 cores). The callers of a
    // channel are tasks on its thread.
    let window = Window::new(&options);
    let clients: Vec<ClientResult> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..channels)
            .map(|i| {
                let callers =
                    options.clients / channels + usize::from(i < options.clients % channels);
                let (url, request) = (&url, &request);
                scope.spawn(move || {
                    current_thread()?.block_on(async {
                        let channel = Channel::from_shared(url.clone())?.connect().await?;
                        let client = PredictionServiceClient::new(channel);
                        let mut loops = tokio::task::JoinSet::new();
                        for _ in 0..callers {
                            loops.spawn(client_loop(client.clone(), request.clone(), window));
                        }
                        anyhow::Ok(loops.join_all().await)
                    })
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    let label = match channels {
        k if k == options.clients => format!("grpc {model}"),
        k => format!("grpc {model} channels={k}"),
    };
    load::report(&label, &options, clients);
    Ok(())
}

pub(crate) fn write_body(args: &[String]) -> anyhow::Result<()> {
    let [addr, model, body, out] = args else {
        bail!("usage: soma-bench grpc-body <host:port> <model> <body.json> <out>");
    };
    let body = load::read_body(body)?;
    let request = checked_request(&format!("http://{addr}"), model, &body)?;
    let message = request.encode_to_vec();
    let length = u32::try_from(message.len()).context("request over 4 GiB")?;
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0); // not compressed
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(out, framed).with_context(|| format!("writing {out}"))
}

/// The Predict request for `body`, sent once so that a wrong model or body fails here
/// instead of showing up only as errors in the results.
fn checked_request(url: &str, model: &str, body: &[u8]) -> anyhow::Result<PredictRequest> {
    current_thread()?.block_on(async {
        let channel = Channel::from_shared(url.to_string())?.connect().await?;
        let mut client = PredictionServiceClient::new(channel);
        let request = predict_request(&mut client, model, body).await?;
        client
            .predict(request.clone())
            .await
            .context("first Predict")?;
        anyhow::Ok(request)
    })
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn client_loop(
    mut client: PredictionServiceClient<Channel>,
    request: PredictRequest,
    window: Window,
) -> ClientResult {
    let mut result = ClientResult::default();
    loop {
        let started = Instant::now();
        if started >= window.end {
            return result;
        }
        let outcome = client.predict(request.clone()).await;
        if started < window.start {
            continue;
        }
        match outcome {
            Ok(_) => result.latencies.push(started.elapsed()),
            Err(status) => result.error(|| format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// The Predict request for `body`, its input named and typed by the model's metadata.
async fn predict_request(
    client: &mut PredictionServiceClient<Channel>,
    model: &str,
    body: &[u8],
) -> anyhow::Result<PredictRequest> {
    let spec = ModelSpec {
        name: model.to_string(),
        ..ModelSpec::default()
    };
    let metadata = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(spec.clone()),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .context("GetModelMetadata")?
        .into_inner();
    let any = metadata
        .metadata
        .get("signature_def")
        .context("no signature_def in the metadata")?;
    let map = SignatureDefMap::decode(any.value.as_slice())?;
    let signature = map
        .signature_def
        .get("serving_default")
        .context("no serving_default signature")?;
    let inputs: BTreeMap<String, TensorInfo> = signature
        .inputs
        .iter()
        .map(|(name, info)| {
            let dtype = DType::from_proto(info.dtype)
                .with_context(|| format!("input {name}: unknown dtype {}", info.dtype))?;
            let shape = info
                .tensor_shape
                .as_ref()
                .filter(|s| !s.unknown_rank)
                .map(|s| s.dim.iter().map(|d| d.size).collect());
            let tensor_name = String::new();
            Ok((
                name.clone(),
                TensorInfo {
                    tensor_name,
                    dtype,
                    shape,
                },
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let inputs = load::single_input(body, &inputs)?
        .into_iter()
        .map(|(name, tensor)| (name, tensor_into_content_proto(tensor)))
        .collect();
    Ok(PredictRequest {
        model_spec: Some(spec),
        inputs,
        output_filter: vec![],
    })
}
