//! Process-wide measurements (RSS, latency). They live in their own test binary, so no
//! other test loads models in the same process while they measure.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use soma_core::Tensor;
use soma_tensorflow::{SavedModel, SessionOptions, TensorFlow};
use soma_testkit::fixtures;

/// The tests of this file run one at a time: RSS is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn tf() -> Arc<TensorFlow> {
    TensorFlow::global(None).expect("TensorFlow from .venv (run scripts/setup.sh)")
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// Loads, runs and drops a model 50 times; returns (start, samples, end) RSS in MiB.
fn cycles(dir: PathBuf, input: Tensor) -> (f64, Vec<(usize, f64)>, f64) {
    let load = || SavedModel::load(&tf(), &dir, &["serve"], &SessionOptions::default()).unwrap();
    drop(load()); // the first load maps kernels and sets up allocator pools
    let start = rss_mib();
    let mut samples = Vec::new();
    for cycle in 1..=50 {
        let model = load();
        let prepared = model.prepare("serving_default").unwrap();
        model.run(&prepared, &[&input], None).unwrap();
        drop(model);
        if cycle % 10 == 0 {
            samples.push((cycle, rss_mib()));
        }
    }
    (start, samples, rss_mib())
}

/// Unloading gives the memory back (session, graph and MetaGraphDef buffer are freed);
/// then strings are freed by TensorFlow, whether or not an output shared their buffer.
/// One test, so the measurements run one after the other.
#[test]
fn memory_is_given_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (name, dir, input) in [
        (
            "iris/1",
            fixtures().join("iris/1"),
            Tensor::from_slice(vec![1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap(),
        ),
        (
            "mlp1024/1 (~12 MB of weights)",
            fixtures().join("mlp1024/1"),
            Tensor::from_slice(vec![1, 1024], &vec![0.5f32; 1024]).unwrap(),
        ),
    ] {
        let (start, samples, end) = cycles(dir, input);
        eprintln!(
            "RSS over 50 load/run/unload cycles of {name}: start {start:.1} MiB, \
             after cycles {samples:?}, end {end:.1} MiB (growth {:.1} MiB)",
            end - start
        );
        assert!(
            end - start < 200.0,
            "{name}: RSS grew by {:.1} MiB",
            end - start
        );
    }

    // 300 runs with 2 MiB of strings each: a leak would show as ~600 MiB.
    let model = SavedModel::load(
        &tf(),
        &fixtures().join("multi_io/1"),
        &["serve"],
        &SessionOptions::default(),
    )
    .unwrap();
    let prepared = model.prepare("serving_default").unwrap();
    assert_eq!(prepared.input_names(), ["features", "ids", "names"]);
    let features = Tensor::from_slice(vec![2, 3], &[1f32; 6]).unwrap();
    let ids = Tensor::from_slice(vec![2], &[1i64, 2]).unwrap();
    let names = Tensor::from_strings(vec![2], vec![vec![b'a'; 1 << 20]; 2]).unwrap();
    let inputs = [&features, &ids, &names];
    for _ in 0..20 {
        model.run(&prepared, &inputs, None).unwrap();
    }
    let start = rss_mib();
    for _ in 0..300 {
        model.run(&prepared, &inputs, None).unwrap();
    }
    let end = rss_mib();
    eprintln!("RSS over 300 runs with 2 MiB of string input: {start:.1} -> {end:.1} MiB");
    assert!(
        end - start < 200.0,
        "strings leak: {start:.1} -> {end:.1} MiB"
    );
}

/// Prints per-call latency of iris through `SavedModel::run` (soma tensors in and out).
#[test]
fn iris_latency() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = SavedModel::load(
        &tf(),
        &fixtures().join("iris/1"),
        &["serve"],
        &SessionOptions::default(),
    )
    .unwrap();
    let prepared = model.prepare("serving_default").unwrap();
    let input = Tensor::from_slice(vec![1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap();
    let first = Instant::now();
    model.run(&prepared, &[&input], None).unwrap();
    let first = first.elapsed();
    for _ in 0..1000 {
        model.run(&prepared, &[&input], None).unwrap();
    }
    let mut latencies: Vec<f64> = (0..5000)
        .map(|_| {
            let started = Instant::now();
            model.run(&prepared, &[&input], None).unwrap();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    eprintln!(
        "iris SavedModel::run: first call {first:?}; then mean {mean:.1} µs, p50 {:.1} µs, p99 {:.1} µs",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
}
