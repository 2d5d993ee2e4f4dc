//! Benchmarks behind BENCHMARKS.md. Commands:
//!
//! * `predict <model version dir> [iterations] [rounds]` (below);
//! * `async <host:port> <endpoint> <payload.json> [workloads] [concurrency]` (asyncload.rs);
//! * `async-floor <cortex.yaml> <payload.json> [calls]` (floor.rs);
//! * `rest <host:port> <model> <body.json> --connections N --seconds S` (restload.rs),
//!   `grpc ...` with the same arguments (grpcload.rs; `grpc-body ... <out>` writes the
//!   framed request for other load generators) and
//!   `floor <model-dir> --threads N --seconds S [--body body.json]` (predictfloor.rs): the
//!   synchronous serving benchmarks (closed loop; req/s, p50, p99, errors), sharing load.rs;
//!   `null-server [--rest ADDR] [--grpc ADDR] [...]` (nullserver.rs): soma's HTTP stacks
//!   answering a fixed prediction without a model, the ceiling those benchmarks are read
//!   against.
//!   The request bodies of BENCHMARKS.md are in `crates/bench/data/`.
//!
//! `predict`: per-call latency of
//! TensorFlow through four layers, on one row of ones, in one process and one run:
//!
//! 1. `c-api`: the bare C API loop (allocate, copy, TF_SessionRun, read, delete);
//! 2. `session`: soma's FFI wrapper (`SavedModel::run`, soma tensors in and out);
//! 3. `predict`: soma's predict path with tensor inputs (`Servable::predict`: signature
//!    lookup, input checks), as used by `tensorflow_client` with numpy and by gRPC;
//! 4. `predict-json`: the JSON path (`ModelSet::predict_json`: model/version resolution,
//!    JSON → tensor, predict, tensor → JSON), as used by the CLI and REST.
//!
//! Each round runs every layer for `iterations` calls after a warm-up; the table shows the
//! median over rounds of each layer's mean, p50 and p99 (µs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};
use soma_core::runner::ThreadPools;
use soma_core::{Tensor, VersionSpec};
use soma_models::TfRunner;
use soma_runtime::{ModelSet, Servable};
use soma_tensorflow::{SavedModel, SessionOptions, TensorFlow};

mod asyncload;
mod floor;
mod grpcload;
mod load;
mod nullserver;
mod predictfloor;
mod restload;

/// The same allocator as `soma`, so that the in-process floors are measured like the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(args.get(i).map_or(Ok(default), |s| s.parse())?)
    };
    match args.first().map(String::as_str) {
        Some("predict") if args.len() >= 2 => {
            predict(PathBuf::from(&args[1]), number(2, 10_000)?, number(3, 5)?)
        }
        Some("async") if args.len() >= 4 => {
            let payload = std::fs::read(&args[3])?;
            asyncload::run(
                &args[1],
                &args[2],
                &payload,
                number(4, 2000)?,
                number(5, 8)?,
            )
        }
        Some("async-floor") if args.len() >= 3 => {
            let payload = std::fs::read(&args[2])?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(floor::run(
                std::path::Path::new(&args[1]),
                &payload,
                number(3, 2000)?,
            ))
        }
        Some("rest") => restload::run(&args[1..]),
        Some("grpc") => grpcload::run(&args[1..]),
        Some("grpc-body") => grpcload::write_body(&args[1..]),
        Some("floor") => predictfloor::run(&args[1..]),
        Some("null-server") => nullserver::run(&args[1..]),
        _ => bail!(
            "usage: soma-bench predict <model version dir> [iterations] [rounds]\n       \
             soma-bench async <host:port> <endpoint> <payload.json> [workloads] [concurrency]\n       \
             soma-bench async-floor <cortex.yaml> <payload.json> [calls]\n       \
             soma-bench rest|grpc <host:port> <model> <body.json> --connections N --seconds S [--warmup S]\n       \
             soma-bench grpc-body <host:port> <model> <body.json> <out>\n       \
             soma-bench floor <model-dir> --threads N --seconds S [--body body.json] [--warmup S]\n       \
             soma-bench null-server [--rest host:port] [--grpc host:port] [--model dir] [--threads n] [--busy-poll-micros n]"
        ),
    }
}

fn predict(dir: PathBuf, iterations: usize, rounds: usize) -> anyhow::Result<()> {
    let tf = TensorFlow::global(None)?;
    let saved = SavedModel::load(&tf, &dir, &["serve"], &SessionOptions::default())?;
    let sig = saved
        .signatures()
        .get("serving_default")
        .context("no serving_default signature")?
        .clone();
    let (input_name, info) = sig.inputs.iter().next().context("no input")?;
    let width = info
        .shape
        .as_ref()
        .and_then(|s| s.last().copied())
        .context("unknown width")? as usize;
    let ones = vec![1.0f32; width];
    let tensor = Tensor::from_slice(vec![1, width], &ones)?;
    let prepared = saved.prepare("serving_default")?;

    let set = ModelSet::new("bench", true);
    let runner = TfRunner::load(&tf, &dir, ThreadPools::default())?;
    set.insert(Arc::new(Servable::new("model", 1, Box::new(runner), None)?));
    let servable = set.resolve(None, VersionSpec::Latest)?;
    let tensors: BTreeMap<String, Tensor> =
        [(input_name.clone(), tensor.clone())].into_iter().collect();
    let mut json = Map::new();
    json.insert(input_name.clone(), Value::from(vec![ones.clone()]));

    let layers: [(&str, Layer<'_>); 4] = [
        (
            "c-api",
            Box::new(|| saved.bench_raw_c_api(&prepared, &[1, width as i64], &ones, iterations)),
        ),
        (
            "session",
            Box::new(|| {
                timed(iterations, || {
                    drop(saved.run(&prepared, &[&tensor], None).expect("run"))
                })
            }),
        ),
        (
            "predict",
            Box::new(|| {
                timed(iterations, || {
                    drop(servable.predict(None, &tensors).expect("predict"))
                })
            }),
        ),
        (
            "predict-json",
            Box::new(|| {
                timed(iterations, || {
                    let p = set
                        .predict_json(None, VersionSpec::Latest, None, &json)
                        .expect("predict");
                    std::hint::black_box(p.outputs_json());
                })
            }),
        ),
    ];
    let mut results: BTreeMap<&str, Vec<[f64; 3]>> = BTreeMap::new();
    for _ in 0..rounds {
        for (name, run) in &layers {
            drop(timed(iterations / 10, || {
                drop(run_once(name, &saved, &prepared, &tensor))
            }));
            results.entry(name).or_default().push(stats(run()));
        }
    }
    println!(
        "model: {}  iterations: {iterations} x {rounds} rounds  TensorFlow {}",
        dir.display(),
        tf.version()
    );
    println!(
        "{:<14} {:>10} {:>10} {:>10}",
        "layer", "mean µs", "p50 µs", "p99 µs"
    );
    for (name, _) in &layers {
        let rows = &results[name];
        let median = |i: usize| {
            let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{name:<14} {:>10.2} {:>10.2} {:>10.2}",
            median(0),
            median(1),
            median(2)
        );
    }
    Ok(())
}

/// A benchmarked layer: runs `iterations` calls and returns their latencies.
type Layer<'a> = Box<dyn Fn() -> Vec<Duration> + 'a>;

/// One warm-up call through the session (every layer ends in it).
fn run_once(
    _layer: &str,
    saved: &SavedModel,
    prepared: &soma_tensorflow::PreparedSignature,
    tensor: &Tensor,
) -> Vec<Tensor> {
    saved.run(prepared, &[tensor], None).expect("warm-up")
}

fn timed(iterations: usize, mut call: impl FnMut()) -> Vec<Duration> {
    (0..iterations)
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect()
}

/// Mean, p50, p99 in microseconds.
fn stats(mut latencies: Vec<Duration>) -> [f64; 3] {
    latencies.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = latencies.iter().map(|d| us(*d)).sum::<f64>() / latencies.len() as f64;
    [
        mean,
        us(latencies[latencies.len() / 2]),
        us(latencies[latencies.len() * 99 / 100]),
    ]
}
