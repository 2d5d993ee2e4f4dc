//! Worker behaviour over the in-memory backend with small Rust handlers, and the wake-up of
//! idle workers over a real `redis-server`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};
use soma_jobs::{ApiName, Backend, MemoryBackend, RedactedUrl, RedisStore, Status, WorkloadId};
use soma_metrics::Registry;
use soma_worker::{HandlerFailure, WorkerOptions, WorkerPool, Workload, WorkloadHandler};
use tokio::sync::{Notify, watch};

/// Echoes the payload length; fails on "fail"; sleeps `delay` first.
#[derive(Debug)]
struct TestHandler {
    delay: Duration,
}

#[async_trait]
impl WorkloadHandler for TestHandler {
    async fn handle(&self, workload: Workload) -> Result<Value, HandlerFailure> {
        tokio::time::sleep(self.delay).await;
        if workload.payload.as_ref() == b"fail" {
            return Err(HandlerFailure {
                message: "ValueError: told to fail".into(),
                traceback: Some("Traceback ...".into()),
            });
        }
        Ok(json!({ "length": workload.payload.len(), "type": workload.content_type }))
    }
}

struct Running {
    backend: Backend,
    api: ApiName,
    pool: WorkerPool,
    stop: watch::Sender<bool>,
    metrics: Registry,
}

fn start(delay: Duration, options: WorkerOptions, backend: Backend) -> Running {
    start_with(Arc::new(TestHandler { delay }), options, backend)
}

fn start_with(
    handler: Arc<dyn WorkloadHandler>,
    options: WorkerOptions,
    backend: Backend,
) -> Running {
    let api = ApiName::parse("api").unwrap();
    let (stop, shutdown) = watch::channel(false);
    let metrics = Registry::new();
    let pool = WorkerPool::spawn(
        api.clone(),
        backend.clone(),
        handler,
        options,
        metrics.clone(),
        Arc::new(Notify::new()),
        shutdown,
    );
    Running {
        backend,
        api,
        pool,
        stop,
        metrics,
    }
}

fn fast_options(workers: usize) -> WorkerOptions {
    WorkerOptions {
        workers,
        lease: Duration::from_secs(5),
        renew_every: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        prefetch: 0,
        error_backoff: Duration::from_millis(20),
        ..WorkerOptions::default()
    }
}

fn prefetching(workers: usize) -> WorkerOptions {
    WorkerOptions {
        prefetch: 2,
        ..fast_options(workers)
    }
}

async fn wait_final(
    backend: &Backend,
    api: &ApiName,
    id: &WorkloadId,
) -> (Status, Option<Bytes>, u32, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (record, result) = backend.status(api, id).await.unwrap().unwrap();
        if record.status.is_final() {
            return (record.status, result, record.attempts, record.error);
        }
        assert!(
            Instant::now() < deadline,
            "workload {id} still {:?}",
            record.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn processes_every_workload_once() {
    processes_every_workload_once_with(fast_options(2)).await;
}

#[tokio::test]
async fn processes_every_workload_once_with_prefetch() {
    processes_every_workload_once_with(prefetching(2)).await;
}

async fn processes_every_workload_once_with(options: WorkerOptions) {
    let run = start(Duration::ZERO, options, MemoryBackend::backend());
    let mut ids = Vec::new();
    for i in 0..20 {
        let body = Bytes::from(vec![b'x'; i]);
        ids.push(
            run.backend
                .submit(&run.api, "text/plain", body)
                .await
                .unwrap(),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let (status, result, attempts, _) = wait_final(&run.backend, &run.api, id).await;
        assert_eq!(status, Status::Completed);
        assert_eq!(attempts, 1);
        let value: Value = serde_json::from_slice(&result.unwrap()).unwrap();
        assert_eq!(value, json!({"length": i, "type": "text/plain"}));
    }
    let completed = [("api_name", "api"), ("status", "completed")];
    assert_eq!(
        run.metrics.value("soma_async_workloads_total", &completed),
        Some(20.0)
    );
    run.stop.send(true).unwrap();
    run.pool.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn handler_errors_fail_the_workload_with_their_message() {
    let run = start(Duration::ZERO, fast_options(1), MemoryBackend::backend());
    let id = run
        .backend
        .submit(&run.api, "text/plain", Bytes::from_static(b"fail"))
        .await
        .unwrap();
    let (status, _, _, error) = wait_final(&run.backend, &run.api, &id).await;
    assert_eq!(status, Status::Failed);
    assert_eq!(error.as_deref(), Some("ValueError: told to fail"));
    // The worker keeps going after a failure.
    let id = run
        .backend
        .submit(&run.api, "text/plain", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(
        wait_final(&run.backend, &run.api, &id).await.0,
        Status::Completed
    );
}

#[tokio::test]
async fn workers_run_in_parallel() {
    let run = start(
        Duration::from_millis(300),
        fast_options(4),
        MemoryBackend::backend(),
    );
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            run.backend
                .submit(&run.api, "text/plain", Bytes::new())
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        wait_final(&run.backend, &run.api, id).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn long_workloads_keep_their_lease() {
    let options = WorkerOptions {
        lease: Duration::from_millis(300),
        renew_every: Duration::from_millis(100),
        ..fast_options(2)
    };
    let run = start(
        Duration::from_millis(1200),
        options,
        MemoryBackend::backend(),
    );
    let id = run
        .backend
        .submit(&run.api, "text/plain", Bytes::new())
        .await
        .unwrap();
    let (status, _, attempts, _) = wait_final(&run.backend, &run.api, &id).await;
    assert_eq!(
        (status, attempts),
        (Status::Completed, 1),
        "the lease lapsed and it ran twice"
    );
}

#[tokio::test]
async fn abandoned_workloads_are_redelivered() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let id = backend
        .submit(&api, "text/plain", Bytes::new())
        .await
        .unwrap();
    // A worker that claims and then dies: its short lease runs out.
    let lost = backend
        .claim(&api, Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lost.record.id, id);
    let run = start(Duration::ZERO, fast_options(1), backend);
    let (status, _, attempts, _) = wait_final(&run.backend, &run.api, &id).await;
    assert_eq!((status, attempts), (Status::Completed, 2));
}

#[tokio::test]
async fn shutdown_leaves_queued_work_queued() {
    let run = start(
        Duration::from_millis(200),
        fast_options(1),
        MemoryBackend::backend(),
    );
    let first = run
        .backend
        .submit(&run.api, "text/plain", Bytes::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // let the worker take the first one
    let second = run
        .backend
        .submit(&run.api, "text/plain", Bytes::new())
        .await
        .unwrap();
    run.stop.send(true).unwrap();
    run.pool.drain(Duration::from_secs(5)).await;
    let status = |id| {
        let backend = run.backend.clone();
        let api = run.api.clone();
        async move { backend.status(&api, &id).await.unwrap().unwrap().0.status }
    };
    assert_eq!(
        status(first).await,
        Status::Completed,
        "the running one finished in the grace period"
    );
    assert_eq!(
        status(second).await,
        Status::InQueue,
        "the queued one stays queued"
    );
}

/// Workloads still running when the grace period ends (and those waiting in a prefetch
/// buffer) are abandoned with their leases given back: another worker gets them at once,
/// not when the lease (a minute here) runs out.
#[tokio::test]
async fn abandoned_workloads_are_delivered_again_at_once() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let running = submit(&backend, &api, b"gate").await;
    let prefetched = submit(&backend, &api, b"quick").await;
    let options = WorkerOptions {
        lease: Duration::from_secs(60),
        ..prefetching(1)
    };
    let run = start_with(
        Arc::new(ScriptedHandler::default()),
        options,
        backend.clone(),
    );
    wait_status(&backend, &api, &running, Status::InProgress).await;
    wait_status(&backend, &api, &prefetched, Status::InProgress).await;
    run.stop.send(true).unwrap();
    run.pool.drain(Duration::from_millis(100)).await;
    let mut again = Vec::new();
    while let Some(claimed) = backend.claim(&api, Duration::from_secs(60)).await.unwrap() {
        again.push((claimed.record.id, claimed.record.attempts));
    }
    again.sort();
    let mut expected = vec![(running, 2), (prefetched, 2)];
    expected.sort();
    assert_eq!(again, expected);
}

/// A prefetched workload waits while the current one runs: its lease is renewed meanwhile,
/// so it is not delivered a second time, and the handler runs one workload at a time.
#[tokio::test]
async fn prefetched_workloads_keep_their_lease_and_run_one_at_a_time() {
    let options = WorkerOptions {
        lease: Duration::from_millis(300),
        renew_every: Duration::from_millis(100),
        ..prefetching(1)
    };
    let run = start(
        Duration::from_millis(700),
        options,
        MemoryBackend::backend(),
    );
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            run.backend
                .submit(&run.api, "text/plain", Bytes::new())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second is claimed (prefetched) while the first runs.
    let stats = run.backend.queue.stats(&run.api).await.unwrap();
    assert_eq!((stats.queued, stats.in_flight), (0, 2));
    for id in &ids {
        let (status, _, attempts, _) = wait_final(&run.backend, &run.api, id).await;
        assert_eq!((status, attempts), (Status::Completed, 1), "ran twice");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the two ran concurrently: {:?}",
        started.elapsed()
    );
}

/// On shutdown the prefetched workloads (2) are run, as they are leased to this worker
/// already; the queued one behind them stays queued.
#[tokio::test]
async fn shutdown_runs_the_prefetched_workload() {
    let run = start(
        Duration::from_millis(200),
        prefetching(1),
        MemoryBackend::backend(),
    );
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            run.backend
                .submit(&run.api, "text/plain", Bytes::new())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    run.stop.send(true).unwrap();
    run.pool.drain(Duration::from_secs(5)).await;
    let mut statuses = Vec::new();
    for id in ids {
        statuses.push(
            run.backend
                .status(&run.api, &id)
                .await
                .unwrap()
                .unwrap()
                .0
                .status,
        );
    }
    assert_eq!(
        statuses,
        [
            Status::Completed,
            Status::Completed,
            Status::Completed,
            Status::InQueue
        ]
    );
}

/// Records the payloads it runs, in order. "poison" never returns, as if it had crashed the
/// process (the test then aborts the pool, which is what a crash leaves in storage); "gate"
/// waits for `gate`; "slow" takes 300 ms.
#[derive(Debug, Default)]
struct ScriptedHandler {
    ran: std::sync::Mutex<Vec<String>>,
    poisoned: Notify,
    gate: Notify,
}

#[async_trait]
impl WorkloadHandler for ScriptedHandler {
    async fn handle(&self, workload: Workload) -> Result<Value, HandlerFailure> {
        let name = String::from_utf8_lossy(&workload.payload).into_owned();
        self.ran.lock().unwrap().push(name.clone());
        match name.as_str() {
            "poison" => {
                self.poisoned.notify_one();
                std::future::pending().await
            }
            "gate" => self.gate.notified().await,
            "slow" => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => {}
        }
        Ok(json!({}))
    }
}

async fn submit(backend: &Backend, api: &ApiName, body: &'static [u8]) -> WorkloadId {
    let body = Bytes::from_static(body);
    backend.submit(api, "text/plain", body).await.unwrap()
}

async fn wait_status(backend: &Backend, api: &ApiName, id: &WorkloadId, want: Status) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.status(api, id).await.unwrap().unwrap().0.status != want {
        assert!(Instant::now() < deadline, "workload {id} never {want:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Submits `body` to an empty queue and claims it under a 50 ms lease that is never renewed,
/// as by a worker that died: it is delivered again once the lease runs out.
async fn lose_first_delivery(backend: &Backend, api: &ApiName, body: &'static [u8]) -> WorkloadId {
    lose_delivery(backend, api, body, Duration::from_millis(50)).await
}

async fn lose_delivery(
    backend: &Backend,
    api: &ApiName,
    body: &'static [u8],
    lease: Duration,
) -> WorkloadId {
    let id = submit(backend, api, body).await;
    let lost = backend.claim(api, lease).await;
    assert_eq!(lost.unwrap().unwrap().record.id, id);
    id
}

/// How many times `id` was delivered so far.
async fn attempts(backend: &Backend, api: &ApiName, id: &WorkloadId) -> u32 {
    backend.status(api, id).await.unwrap().unwrap().0.attempts
}

/// A payload that crashes the process on every delivery while others wait in the prefetch
/// buffer: the first crash costs them a delivery, and then the payload, delivered again,
/// runs without company until its deliveries are used up. Without that, the workloads
/// prefetched behind it would be held at each of its crashes and fail with it.
#[tokio::test]
async fn a_payload_that_crashes_every_delivery_fails_alone() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let poison = submit(&backend, &api, b"poison").await;
    let others = [
        submit(&backend, &api, b"b").await,
        submit(&backend, &api, b"c").await,
    ];
    let options = WorkerOptions {
        lease: Duration::from_millis(200),
        renew_every: Duration::from_millis(50),
        ..prefetching(1)
    };
    for crash in 1..=backend.max_attempts() {
        let handler = Arc::new(ScriptedHandler::default());
        let run = start_with(handler.clone(), options.clone(), backend.clone());
        handler.poisoned.notified().await;
        if crash == 1 {
            for id in &others {
                wait_status(&backend, &api, id, Status::InProgress).await;
            }
        }
        // Dropped: its workers are aborted and their leases left to run out, as a crash
        // leaves them (drain would give them back).
        drop(run.pool);
    }
    let run = start_with(Arc::new(ScriptedHandler::default()), options, backend);
    let (status, _, attempts, error) = wait_final(&run.backend, &api, &poison).await;
    assert_eq!((status, attempts), (Status::Failed, 4));
    assert!(error.unwrap().starts_with("gave up after 3 deliveries"));
    for id in &others {
        let (status, _, attempts, _) = wait_final(&run.backend, &api, id).await;
        assert_eq!((status, attempts), (Status::Completed, 2), "{id}");
    }
}

/// A redelivered workload that comes out of the prefetch buffer runs after the workloads
/// prefetched before it, alone: nothing is prefetched while it waits, and the next workload
/// is claimed once it has run.
#[tokio::test]
async fn a_redelivered_workload_runs_after_the_prefetched_ones() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let redelivered = lose_first_delivery(&backend, &api, b"redelivered").await;
    for body in [&b"gate"[..], b"f1", b"f2"] {
        submit(&backend, &api, body).await;
    }
    let handler = Arc::new(ScriptedHandler::default());
    let _run = start_with(handler.clone(), prefetching(1), backend.clone());
    // "gate" runs with f1 and f2 prefetched; the lease of "redelivered" runs out meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = submit(&backend, &api, b"last").await;
    handler.gate.notify_one();
    let (status, _, attempts, _) = wait_final(&backend, &api, &redelivered).await;
    assert_eq!((status, attempts), (Status::Completed, 2));
    wait_final(&backend, &api, &last).await;
    // After f1 the buffer took "redelivered"; "last" was claimed after it ran.
    assert_eq!(
        *handler.ran.lock().unwrap(),
        ["gate", "f1", "f2", "redelivered", "last"]
    );
}

/// A redelivered workload claimed while another slot runs a workload waits until that one
/// is done and runs alone: the idle slot claims nothing meanwhile.
#[tokio::test]
async fn a_redelivered_workload_runs_alone_in_the_process() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let redelivered = lose_first_delivery(&backend, &api, b"redelivered").await;
    let gate = submit(&backend, &api, b"gate").await;
    let handler = Arc::new(ScriptedHandler::default());
    let _run = start_with(handler.clone(), fast_options(3), backend.clone());
    wait_status(&backend, &api, &gate, Status::InProgress).await;
    // The lease of "redelivered" runs out meanwhile: a second slot finds it, leaves it in
    // the queue (its claim would cost it a delivery were "gate" to crash the process) and
    // waits for "gate"; a third stays idle, and "fresh", queued behind it, waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = submit(&backend, &api, b"fresh").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*handler.ran.lock().unwrap(), ["gate"]);
    assert_eq!(attempts(&backend, &api, &redelivered).await, 1);
    let queued = backend.status(&api, &fresh).await.unwrap().unwrap().0;
    assert_eq!(queued.status, Status::InQueue);
    handler.gate.notify_one();
    for id in [&gate, &redelivered, &fresh] {
        assert_eq!(wait_final(&backend, &api, id).await.0, Status::Completed);
    }
    assert_eq!(
        *handler.ran.lock().unwrap(),
        ["gate", "redelivered", "fresh"]
    );
}

/// Workloads whose leases run out together, as those of a crashed process when its
/// restart came first, are claimed one at a time: while the first runs, the others stay in
/// the queue, so a crash it causes costs them no delivery. (Claimed side by side, each
/// would be held, waiting for its turn to run alone, and lose a delivery at the crash.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeliveries_due_together_are_claimed_one_at_a_time() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let lease = Duration::from_millis(300);
    let mut lost = Vec::new();
    for _ in 0..6 {
        lost.push(lose_delivery(&backend, &api, b"poison", lease).await);
    }
    let handler = Arc::new(ScriptedHandler::default());
    // Started before the leases run out: its first claims find nothing.
    let _run = start_with(handler.clone(), prefetching(6), backend.clone());
    handler.poisoned.notified().await;
    // Time for the other slots to claim the rest, were they allowed to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut delivered = Vec::new();
    for id in &lost {
        delivered.push(attempts(&backend, &api, id).await);
    }
    delivered.sort_unstable();
    assert_eq!(delivered, [1, 1, 1, 1, 1, 2]);
    assert_eq!(handler.ran.lock().unwrap().len(), 1);
}

/// A process waiting for its running workload before it claims a redelivery alone stops
/// waiting once another process has taken the redelivery: its idle slot claims fresh work
/// while the long workload still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_taken_by_another_process_stops_the_wait() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let redelivered = lose_first_delivery(&backend, &api, b"redelivered").await;
    let gate = submit(&backend, &api, b"gate").await;
    let waiting = Arc::new(ScriptedHandler::default());
    let _first = start_with(waiting.clone(), fast_options(2), backend.clone());
    wait_status(&backend, &api, &gate, Status::InProgress).await;
    // Past the lease of "redelivered": the idle slot has found it and waits for "gate".
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(attempts(&backend, &api, &redelivered).await, 1);
    // Another process (crash isolation of its own) claims it, runs it and stops.
    let second = start_with(
        Arc::new(ScriptedHandler::default()),
        fast_options(1),
        backend.clone(),
    );
    assert_eq!(
        wait_final(&backend, &api, &redelivered).await.0,
        Status::Completed
    );
    second.stop.send(true).unwrap();
    second.pool.drain(Duration::from_secs(5)).await;
    let fresh = submit(&backend, &api, b"fresh").await;
    wait_final(&backend, &api, &fresh).await;
    assert_eq!(*waiting.ran.lock().unwrap(), ["gate", "fresh"]);
    waiting.gate.notify_one();
    wait_final(&backend, &api, &gate).await;
}

/// Pools of one process share their isolation: a redelivered workload of one API waits for
/// the workload another API's pool runs, and that pool claims nothing meanwhile.
#[tokio::test]
async fn a_redelivered_workload_waits_for_the_other_apis_of_the_process() {
    let backend = MemoryBackend::backend();
    let (first, second) = (ApiName::parse("a").unwrap(), ApiName::parse("b").unwrap());
    let redelivered = lose_first_delivery(&backend, &first, b"redelivered").await;
    let gate = submit(&backend, &second, b"gate").await;
    let handler = Arc::new(ScriptedHandler::default());
    let options = fast_options(1);
    let (_stop, shutdown) = watch::channel(false);
    // "a" first: its start-up claim, made while "redelivered" is still leased, finds nothing.
    let _pools = [&first, &second].map(|api| {
        WorkerPool::spawn(
            api.clone(),
            backend.clone(),
            handler.clone(),
            options.clone(),
            Registry::new(),
            Arc::new(Notify::new()),
            shutdown.clone(),
        )
    });
    wait_status(&backend, &second, &gate, Status::InProgress).await;
    // Past the lease of "redelivered": "a" finds it and waits for "gate" before claiming it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*handler.ran.lock().unwrap(), ["gate"]);
    assert_eq!(attempts(&backend, &first, &redelivered).await, 1);
    handler.gate.notify_one();
    assert_eq!(
        wait_final(&backend, &first, &redelivered).await.0,
        Status::Completed
    );
    assert_eq!(*handler.ran.lock().unwrap(), ["gate", "redelivered"]);
}

/// Many slots prefetching while workloads are delivered again among fresh ones: the
/// redelivered ones wait for the others to be run and make claims wait, and nothing waits on
/// something that waits on it (every workload ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeliveries_among_prefetching_slots_never_stall_the_pool() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    // Deliveries lost with leases that run out one after the other while the rest run.
    let mut ids = Vec::new();
    for i in 1..=20 {
        let lease = Duration::from_millis(40 * i);
        ids.push(lose_delivery(&backend, &api, b"redelivered", lease).await);
    }
    for i in 0..200 {
        let body: &'static [u8] = if i % 10 == 0 { b"slow" } else { b"quick" };
        ids.push(submit(&backend, &api, body).await);
    }
    let handler = Arc::new(ScriptedHandler::default());
    let options = WorkerOptions {
        prefetch: 2,
        ..fast_options(4)
    };
    let _run = start_with(handler, options, backend.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let record = backend.status(&api, id).await.unwrap().unwrap().0;
            if record.status.is_final() {
                assert_eq!(record.status, Status::Completed, "{id}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} still {:?}: the pool stalled",
                record.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A payload that crashes the process on every delivery while another worker slot runs a
/// workload: that one loses a delivery at the first crash, and then each runs alone. (Were
/// they delivered again side by side, "slow" would be running at each crash and fail too.)
#[tokio::test]
async fn a_payload_that_crashes_every_delivery_fails_alone_among_slots() {
    let backend = MemoryBackend::backend();
    let api = ApiName::parse("api").unwrap();
    let poison = submit(&backend, &api, b"poison").await;
    let other = submit(&backend, &api, b"slow").await;
    let options = WorkerOptions {
        lease: Duration::from_millis(200),
        renew_every: Duration::from_millis(50),
        ..fast_options(2)
    };
    for crash in 1..=backend.max_attempts() {
        let handler = Arc::new(ScriptedHandler::default());
        let run = start_with(handler.clone(), options.clone(), backend.clone());
        handler.poisoned.notified().await;
        if crash == 1 {
            wait_status(&backend, &api, &other, Status::InProgress).await;
        } else {
            // Time for the other slot to claim "slow", were it allowed to.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Dropped: its workers are aborted and their leases left to run out, as a crash
        // leaves them (drain would give them back).
        drop(run.pool);
    }
    let run = start_with(Arc::new(ScriptedHandler::default()), options, backend);
    let (status, _, attempts, _) = wait_final(&run.backend, &api, &poison).await;
    assert_eq!((status, attempts), (Status::Failed, 4));
    let (status, _, attempts, _) = wait_final(&run.backend, &api, &other).await;
    assert_eq!((status, attempts), (Status::Completed, 2));
}

/// A workload submitted through another connection (as by a gateway in another process,
/// which cannot signal this process' workers) is picked up at once by an idle worker, not
/// at its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_wake_up_for_workloads_of_other_processes() {
    let redis = tokio::task::spawn_blocking(soma_testkit::RedisServer::start)
        .await
        .unwrap();
    let url = RedactedUrl::parse_redis(&redis.url()).unwrap();
    let connect = || async {
        Backend::from_store(Arc::new(RedisStore::connect(&url, "wake").await.unwrap()))
    };
    let poll_interval = Duration::from_secs(5);
    let options = WorkerOptions {
        poll_interval,
        ..fast_options(2)
    };
    let run = start(Duration::ZERO, options, connect().await);
    let gateway = connect().await;
    for _ in 0..5 {
        // Both workers have found the queue empty and are idle.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let submitted = Instant::now();
        let id = gateway
            .submit(&run.api, "text/plain", Bytes::new())
            .await
            .unwrap();
        let deadline = submitted + Duration::from_millis(500);
        loop {
            let record = gateway.status(&run.api, &id).await.unwrap().unwrap().0;
            if record.status == Status::Completed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still {:?} {:?} after submission (poll interval {poll_interval:?})",
                record.status,
                submitted.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    run.stop.send(true).unwrap();
    run.pool.drain(Duration::from_secs(5)).await;
}
