//! The batcher with a recording fake engine: concurrency, merging rules, failures, the
//! bounded queue and deadlines.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use soma_core::runner::{ModelRunner, RunError};
use soma_core::{ErrorKind, SignatureDef, Tensor};

use super::{BatchOptions, BatchWindow, Batcher};
use crate::RuntimeError;

/// Doubles float32 input `x` (any shape); fails on negative values; `sum` returns a scalar
/// (not splittable by rows). Records the shape of every run; can be held closed.
#[derive(Debug, Default)]
struct Recorder {
    signatures: BTreeMap<String, SignatureDef>,
    runs: Mutex<Vec<Vec<usize>>>,
    gate: Mutex<bool>,
    opened: Condvar,
}

impl Recorder {
    fn new(open: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            gate: Mutex::new(open),
            ..Recorder::default()
        })
    }

    fn open(&self) {
        *self.gate.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn runs(&self) -> Vec<Vec<usize>> {
        self.runs.lock().unwrap().clone()
    }
}

impl ModelRunner for Recorder {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.signatures
    }

    fn run(&self, signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        self.runs.lock().unwrap().push(inputs[0].shape().to_vec());
        assert_ne!(signature, "panic", "the model panics");
        let x = inputs[0].to_vec::<f32>().unwrap();
        if x.iter().any(|v| *v < 0.0) {
            return Err(RunError::new(ErrorKind::InvalidArgument, "negative input"));
        }
        if signature == "sum" {
            return Ok(vec![Tensor::scalar(x.iter().sum::<f32>())]);
        }
        let y: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        Ok(vec![
            Tensor::from_slice(inputs[0].shape().to_vec(), &y).unwrap(),
        ])
    }
}

fn batcher(runner: &Arc<Recorder>, options: BatchOptions) -> Arc<Batcher> {
    options.validate().unwrap();
    Arc::new(Batcher::new(runner.clone(), "m", 1, options, None))
}

fn rows(n: usize, width: usize, start: f32) -> Tensor {
    let values: Vec<f32> = (0..n * width).map(|i| start + i as f32).collect();
    Tensor::from_slice(vec![n, width], &values).unwrap()
}

fn doubled(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap().iter().map(|v| v * 2.0).collect()
}

/// Runs `requests` at once on `threads` threads (all released together).
fn concurrently(
    batcher: &Arc<Batcher>,
    signature: &'static str,
    requests: Vec<Tensor>,
) -> Vec<Result<Vec<Tensor>, RuntimeError>> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|input| {
            let (batcher, barrier) = (batcher.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                batcher.run(signature, vec![input], None)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn windowed() -> BatchOptions {
    BatchOptions {
        max_batch_size: 64,
        window: BatchWindow::Fixed(Duration::from_millis(50)),
        num_batch_threads: 1,
        ..BatchOptions::default()
    }
}

#[test]
fn every_caller_gets_exactly_its_own_rows() {
    let runner = Recorder::new(true);
    let batcher = batcher(&runner, windowed());
    let requests: Vec<Tensor> = (0..16)
        .map(|i| rows(1 + i % 4, 2, i as f32 * 100.0))
        .collect();
    let results = concurrently(&batcher, "serving_default", requests.clone());
    for (request, result) in requests.iter().zip(results) {
        let outputs = result.unwrap();
        assert_eq!(outputs[0].shape(), request.shape());
        assert_eq!(outputs[0].to_vec::<f32>().unwrap(), doubled(request));
    }
    let runs = runner.runs();
    assert!(runs.len() < 16, "requests were merged: {runs:?}");
    assert_eq!(runs.iter().map(|s| s[0]).sum::<usize>(), 16 + 4 * 6);
}

#[test]
fn incompatible_shapes_run_in_separate_batches() {
    let runner = Recorder::new(true);
    let batcher = batcher(&runner, windowed());
    let requests: Vec<Tensor> = (0..8).map(|i| rows(1, 2 + i % 2, i as f32)).collect();
    let results = concurrently(&batcher, "serving_default", requests.clone());
    for (request, result) in requests.iter().zip(results) {
        assert_eq!(
            result.unwrap()[0].to_vec::<f32>().unwrap(),
            doubled(request)
        );
    }
    for run in runner.runs() {
        assert_eq!(run.len(), 2);
        assert!(run[1] == 2 || run[1] == 3, "{run:?}");
    }
}

#[test]
fn padding_lets_variable_lengths_share_a_batch() {
    let runner = Recorder::new(true);
    let options = BatchOptions {
        pad_variable_length_inputs: true,
        ..windowed()
    };
    let batcher = batcher(&runner, options);
    let requests = vec![rows(1, 2, 1.0), rows(1, 3, 10.0)];
    let results = concurrently(&batcher, "serving_default", requests);
    let short = results[0].as_ref().unwrap();
    assert_eq!(
        short[0].shape(),
        &[1, 3],
        "padded to the longest, as TF Serving"
    );
    assert_eq!(short[0].to_vec::<f32>().unwrap(), [2.0, 4.0, 2.0]);
    assert_eq!(runner.runs(), vec![vec![2, 3]]);
}

#[test]
fn allowed_batch_sizes_pad_the_batch_and_drop_the_padding() {
    let runner = Recorder::new(true);
    let options = BatchOptions {
        max_batch_size: 8,
        allowed_batch_sizes: vec![4, 8],
        ..windowed()
    };
    let batcher = batcher(&runner, options);
    let out = batcher
        .run("serving_default", vec![rows(3, 2, 1.0)], None)
        .unwrap();
    assert_eq!(out[0].shape(), &[3, 2]);
    assert_eq!(runner.runs(), vec![vec![4, 2]]);
}

#[test]
fn a_failing_member_fails_only_its_batch() {
    let runner = Recorder::new(true);
    let batcher = batcher(&runner, windowed());
    // Two shapes, so two batches; the bad request is in the width-2 one.
    let mut requests: Vec<Tensor> = (0..6).map(|i| rows(1, 2 + i % 2, i as f32)).collect();
    requests[0] = Tensor::from_slice(vec![1, 2], &[-1.0f32, 0.0]).unwrap();
    let results = concurrently(&batcher, "serving_default", requests.clone());
    for (request, result) in requests.iter().zip(&results) {
        if request.shape()[1] == 2 {
            let error = result.as_ref().unwrap_err();
            assert!(error.to_string().contains("negative input"), "{error}");
            assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        } else {
            assert_eq!(
                result.as_ref().unwrap()[0].to_vec::<f32>().unwrap(),
                doubled(request)
            );
        }
    }
}

#[test]
fn outputs_that_cannot_be_split_are_computed_per_request() {
    let runner = Recorder::new(true);
    let batcher = batcher(&runner, windowed());
    let requests = vec![rows(1, 2, 1.0), rows(2, 2, 10.0)];
    let results = concurrently(&batcher, "sum", requests);
    let sums: Vec<f32> = results
        .iter()
        .map(|r| r.as_ref().unwrap()[0].to_vec::<f32>().unwrap()[0])
        .collect();
    assert_eq!(sums, [3.0, 10.0 + 11.0 + 12.0 + 13.0]);
}

/// Starts a request that holds the only batch thread until the gate opens.
fn occupy(batcher: &Arc<Batcher>) -> std::thread::JoinHandle<Result<Vec<Tensor>, RuntimeError>> {
    let b = batcher.clone();
    let handle = std::thread::spawn(move || b.run("serving_default", vec![rows(1, 2, 0.0)], None));
    std::thread::sleep(Duration::from_millis(50));
    handle
}

#[test]
fn a_full_queue_fails_at_once_with_resource_exhausted() {
    let runner = Recorder::new(false);
    let options = BatchOptions {
        max_batch_size: 2,
        max_enqueued_batches: 1,
        num_batch_threads: 1,
        window: BatchWindow::Auto,
        ..BatchOptions::default()
    };
    let batcher = batcher(&runner, options);
    let running = occupy(&batcher);
    let b = batcher.clone();
    let queued = std::thread::spawn(move || b.run("serving_default", vec![rows(2, 2, 5.0)], None));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let error = batcher
        .run("serving_default", vec![rows(1, 2, 9.0)], None)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ResourceExhausted);
    assert!(error.to_string().contains("is full"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it did not wait"
    );
    runner.open();
    assert!(running.join().unwrap().is_ok());
    assert_eq!(
        queued.join().unwrap().unwrap()[0].to_vec::<f32>().unwrap(),
        [10.0, 12.0, 14.0, 16.0]
    );
}

#[test]
fn a_request_past_its_deadline_fails_and_the_rest_run() {
    let runner = Recorder::new(false);
    let options = BatchOptions {
        num_batch_threads: 1,
        window: BatchWindow::Auto,
        ..BatchOptions::default()
    };
    let batcher = batcher(&runner, options);
    let running = occupy(&batcher);
    let deadline = Some(Instant::now() + Duration::from_millis(100));
    let error = batcher
        .run("serving_default", vec![rows(1, 2, 1.0)], deadline)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::DeadlineExceeded);
    runner.open();
    assert!(running.join().unwrap().is_ok());
    let later = batcher
        .run("serving_default", vec![rows(1, 2, 1.0)], None)
        .unwrap();
    assert_eq!(later[0].to_vec::<f32>().unwrap(), [2.0, 4.0]);
}

#[test]
fn scalars_and_oversized_requests_run_alone() {
    let runner = Recorder::new(true);
    let options = BatchOptions {
        max_batch_size: 2,
        ..windowed()
    };
    let batcher = batcher(&runner, options);
    let big = batcher
        .run("serving_default", vec![rows(3, 2, 0.0)], None)
        .unwrap();
    assert_eq!(big[0].shape(), &[3, 2]);
    let scalar = batcher
        .run("serving_default", vec![Tensor::scalar(2.0f32)], None)
        .unwrap();
    assert_eq!(scalar[0].to_vec::<f32>().unwrap(), [4.0]);
}

/// Polls `future` once with a waker that counts its wake-ups.
fn poll_counting<F: Future + Unpin>(future: &mut F, wakes: &Arc<Wakes>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::clone(wakes));
    Pin::new(future).poll(&mut Context::from_waker(&waker))
}

#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn ready<T>(poll: Poll<T>) -> T {
    match poll {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("pending"),
    }
}

fn in_place_options(max_batch_size: usize) -> BatchOptions {
    BatchOptions {
        max_batch_size,
        window: BatchWindow::Auto,
        ..BatchOptions::default()
    }
}

#[test]
fn in_place_the_first_request_polled_runs_everything_queued() {
    let runner = Recorder::new(true);
    let batcher = batcher(&runner, in_place_options(64));
    let wakes = Arc::new(Wakes::default());
    let mut first = batcher.queue_in_place("serving_default", vec![rows(1, 2, 0.0)]);
    assert!(!first.has_company());
    let mut second = batcher.queue_in_place("serving_default", vec![rows(2, 2, 10.0)]);
    let mut third = batcher.queue_in_place("serving_default", vec![rows(1, 2, 20.0)]);
    assert!(first.has_company() && third.has_company());
    // The third is polled first: it leads, with itself first, then in arrival order.
    let out = ready(poll_counting(&mut third, &wakes)).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), doubled(&rows(1, 2, 20.0)));
    assert_eq!(runner.runs(), vec![vec![4, 2]], "one run of all four rows");
    let out = ready(poll_counting(&mut second, &wakes)).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), doubled(&rows(2, 2, 10.0)));
    let out = ready(poll_counting(&mut first, &wakes)).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), doubled(&rows(1, 2, 0.0)));
    assert_eq!(runner.runs().len(), 1);
    drop((first, second, third));
    // All answered: the next request is alone again.
    assert!(
        !batcher
            .queue_in_place("serving_default", vec![rows(1, 2, 0.0)])
            .has_company()
    );
}

#[test]
fn in_place_batches_hold_at_most_max_batch_size_rows_and_one_shape() {
    let runner = Recorder::new(true);
    let batcher = batcher(&runner, in_place_options(4));
    let wakes = Arc::new(Wakes::default());
    let mut queued: Vec<_> = [
        rows(2, 2, 0.0),
        rows(1, 3, 5.0),
        rows(2, 2, 10.0),
        rows(2, 2, 20.0),
    ]
    .into_iter()
    .map(|input| {
        (
            input.clone(),
            batcher.queue_in_place("serving_default", vec![input]),
        )
    })
    .collect();
    for (input, future) in &mut queued {
        let out = ready(poll_counting(future, &wakes)).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), doubled(input));
    }
    // 2+2 rows of width 2; then the width-3 request; then the last 2 rows.
    assert_eq!(runner.runs(), vec![vec![4, 2], vec![1, 3], vec![2, 2]]);
    // Unbatchable requests (a scalar, more rows than max_batch_size) run alone.
    let mut scalar = batcher.queue_in_place("serving_default", vec![Tensor::scalar(2.0f32)]);
    assert!(!scalar.has_company());
    let out = ready(poll_counting(&mut scalar, &wakes)).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [4.0]);
    let mut big = batcher.queue_in_place("serving_default", vec![rows(5, 2, 0.0)]);
    ready(poll_counting(&mut big, &wakes)).unwrap();
    assert_eq!(runner.runs()[4], vec![5, 2]);
}

#[test]
fn in_place_a_request_in_another_threads_batch_waits_for_it_and_is_woken() {
    let runner = Recorder::new(false);
    let batcher = batcher(&runner, in_place_options(64));
    let mine = Arc::new(Wakes::default());
    let mut waiting = batcher.queue_in_place("serving_default", vec![rows(1, 2, 7.0)]);
    let leader = {
        let batcher = Arc::clone(&batcher);
        std::thread::spawn(move || {
            let mut lead = batcher.queue_in_place("serving_default", vec![rows(1, 2, 1.0)]);
            let wakes = Arc::new(Wakes::default());
            ready(poll_counting(&mut lead, &wakes)).unwrap()
        })
    };
    // The leader has taken both requests and is held in its run.
    let queue = batcher.in_place_queue("serving_default");
    while !queue.state.lock().unwrap().pending.is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(poll_counting(&mut waiting, &mine).is_pending());
    assert!(
        poll_counting(&mut waiting, &mine).is_pending(),
        "polled twice, waker kept"
    );
    assert_eq!(mine.0.load(Ordering::SeqCst), 0);
    runner.open();
    let led = leader.join().unwrap();
    assert_eq!(led[0].to_vec::<f32>().unwrap(), doubled(&rows(1, 2, 1.0)));
    assert_eq!(
        mine.0.load(Ordering::SeqCst),
        1,
        "woken once its batch finished"
    );
    let out = ready(poll_counting(&mut waiting, &mine)).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), doubled(&rows(1, 2, 7.0)));
    assert_eq!(runner.runs(), vec![vec![2, 2]]);
}

#[test]
fn in_place_a_dropped_request_leaves_the_queue_and_errors_reach_every_member() {
    let runner = Recorder::new(true);
    let batcher = batcher(&runner, in_place_options(64));
    let wakes = Arc::new(Wakes::default());
    let gone = batcher.queue_in_place("serving_default", vec![rows(3, 2, 0.0)]);
    let mut kept = batcher.queue_in_place("serving_default", vec![rows(1, 2, 1.0)]);
    drop(gone);
    assert!(!kept.has_company(), "the dropped request no longer counts");
    ready(poll_counting(&mut kept, &wakes)).unwrap();
    assert_eq!(
        runner.runs(),
        vec![vec![1, 2]],
        "the dropped rows did not run"
    );

    // A failing run is every member's error.
    let mut bad = batcher.queue_in_place("serving_default", vec![rows(1, 2, -5.0)]);
    let mut good = batcher.queue_in_place("serving_default", vec![rows(1, 2, 1.0)]);
    let error = ready(poll_counting(&mut bad, &wakes)).unwrap_err();
    assert!(error.to_string().contains("negative input"), "{error}");
    assert!(error.to_string().contains("batch of 2 requests"), "{error}");
    assert_eq!(ready(poll_counting(&mut good, &wakes)).unwrap_err(), error);

    // A model that panics: the leader's poll panics, the other member gets an error.
    let mut leader = batcher.queue_in_place("panic", vec![rows(1, 2, 1.0)]);
    let mut member = batcher.queue_in_place("panic", vec![rows(1, 2, 2.0)]);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_counting(&mut leader, &wakes).is_ready()
    }));
    assert!(panicked.is_err());
    let error = ready(poll_counting(&mut member, &wakes)).unwrap_err();
    assert!(error.to_string().contains("panicked"), "{error}");
    drop((leader, member));
    let next = batcher.queue_in_place("panic", vec![rows(1, 2, 3.0)]);
    assert!(!next.has_company(), "the panicked leader no longer counts");
}

#[test]
fn under_auto_a_lone_client_sending_back_to_back_never_waits_for_company() {
    // Before the fix, `auto` waited up to its 1 ms window on every request of a single client
    // (arrivals looked close together): 100 requests took 64 ms here, against well under 1 ms.
    let runner = Recorder::new(true);
    let auto = batcher(
        &runner,
        BatchOptions {
            window: BatchWindow::Auto,
            ..BatchOptions::default()
        },
    );
    let started = Instant::now();
    for i in 0..100 {
        let outputs = auto
            .run("serving_default", vec![rows(1, 2, i as f32)], None)
            .unwrap();
        assert_eq!(
            outputs[0].to_vec::<f32>().unwrap(),
            doubled(&rows(1, 2, i as f32))
        );
    }
    let took = started.elapsed();
    assert!(
        took < super::AUTO_MAX_WAIT * 20,
        "100 lone requests took {took:?}: some waited for a batch"
    );
    assert_eq!(runner.runs().len(), 100, "each ran alone");
}
