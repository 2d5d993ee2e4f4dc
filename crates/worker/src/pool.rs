use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use soma_jobs::{ApiName, Backend, Claimed, Lease, Outcome, WorkloadId};
use soma_metrics::Registry;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::isolation::{CrashIsolation, Hold, PoolIsolation, is_redelivery};
use crate::{HandlerFailure, Workload, WorkloadHandler};

/// How workers claim and hold workloads.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Concurrent workers (each runs one workload at a time).
    pub workers: usize,
    /// How long a claimed workload stays invisible to other workers without renewal.
    pub lease: Duration,
    /// How often a running workload's lease is renewed (well under `lease`).
    pub renew_every: Duration,
    /// Longest wait of an idle worker between queue polls. In-process submissions wake
    /// workers at once, and so do other processes' on a backend that signals pushes (Redis:
    /// `Queue::wait_for_push`); the poll is the fallback.
    pub poll_interval: Duration,
    /// Workloads a slot claims ahead while it runs the current one (0: none), so claims'
    /// storage round trips overlap the handler and each other (like Celery's prefetch). The
    /// handler still runs one workload at a time per slot; a prefetched one is leased,
    /// marked `in_progress` and has its lease renewed while it waits, and after a crash it
    /// is delivered again like a running one (see [`CrashIsolation`] for what the pool does
    /// with such a delivery). Worth it on a remote backend, where a claim
    /// costs network round trips; keep it small, as prefetched work waits for its slot even
    /// if another slot is idle.
    pub prefetch: usize,
    /// Pause after a storage error before trying again.
    pub error_backoff: Duration,
    /// Runs redelivered workloads alone; share one among all pools of a process.
    pub crash_isolation: CrashIsolation,
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            workers: 1,
            lease: Duration::from_secs(60),
            renew_every: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            prefetch: 0,
            error_backoff: Duration::from_secs(1),
            crash_isolation: CrashIsolation::default(),
        }
    }
}

/// The running workers of one API.
#[derive(Debug)]
pub struct WorkerPool {
    tasks: JoinSet<()>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    api: ApiName,
    backend: Backend,
    handler: Arc<dyn WorkloadHandler>,
    options: WorkerOptions,
    metrics: Registry,
    wake: Arc<Notify>,
    isolation: PoolIsolation,
    /// The leases being renewed (workloads running or waiting in a prefetch buffer), for
    /// [`WorkerPool::drain`] to give back those it abandons.
    renewing: Mutex<HashMap<WorkloadId, Lease>>,
}

impl WorkerPool {
    /// Starts `options.workers` workers. They stop claiming new work once `shutdown` turns
    /// true; see [`WorkerPool::drain`].
    pub fn spawn(
        api: ApiName,
        backend: Backend,
        handler: Arc<dyn WorkloadHandler>,
        options: WorkerOptions,
        metrics: Registry,
        wake: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> WorkerPool {
        let slots = options.workers.max(1);
        // A fixed count: the sender is dropped, the value never changes.
        let (_, active) = watch::channel(slots);
        WorkerPool::spawn_scaled(
            api, backend, handler, options, metrics, wake, active, shutdown,
        )
    }

    /// Like [`spawn`](Self::spawn) with `options.workers` slots of which only the first
    /// `active` (e.g. set by [`run_autoscaler`](crate::run_autoscaler)) claim work; a slot
    /// above the count finishes its running workload and then waits. 0 pauses claiming.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_scaled(
        api: ApiName,
        backend: Backend,
        handler: Arc<dyn WorkloadHandler>,
        options: WorkerOptions,
        metrics: Registry,
        wake: Arc<Notify>,
        active: watch::Receiver<usize>,
        shutdown: watch::Receiver<bool>,
    ) -> WorkerPool {
        let shared = Arc::new(Shared {
            api: api.clone(),
            backend,
            handler,
            isolation: options.crash_isolation.for_pool(options.poll_interval),
            options,
            metrics,
            wake,
            renewing: Mutex::default(),
        });
        let mut tasks = JoinSet::new();
        for index in 0..shared.options.workers.max(1) {
            let span = info_span!("worker", api = %api, index);
            let slot = Slot {
                index,
                active: active.clone(),
            };
            tasks.spawn(work(shared.clone(), slot, shutdown.clone()).instrument(span));
        }
        WorkerPool { tasks, shared }
    }

    /// Waits up to `grace` for running workloads to finish after shutdown was signalled.
    /// Workloads still running then (or waiting in a prefetch buffer) are abandoned, and
    /// their leases given back, so that they are delivered again at once, to a worker of
    /// another process or after a restart: nothing accepted is lost.
    pub async fn drain(mut self, grace: Duration) {
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_done).await.is_ok() {
            return;
        }
        let shared = &self.shared;
        let abandoned: Vec<Lease> = shared.renewing().values().cloned().collect();
        warn!(api = %shared.api, workloads = abandoned.len(), "grace period over; running workloads will be delivered again");
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for lease in abandoned {
            // A workload whose outcome was stored meanwhile has no lease to give back.
            if let Err(e) = shared.backend.queue.release(&lease).await {
                warn!(id = %lease.id, error = %e, "cannot give back the lease of an abandoned workload; it runs again once the lease runs out");
            }
        }
    }
}

/// Outcomes a worker may still be storing while it runs the next workload.
const MAX_SETTLING: usize = 4;

/// A worker's place in the pool: it claims work only while `index < *active`.
struct Slot {
    index: usize,
    active: watch::Receiver<usize>,
}

impl Slot {
    fn may_claim(&self) -> bool {
        self.index < *self.active.borrow()
    }
}

async fn work(shared: Arc<Shared>, mut slot: Slot, mut shutdown: watch::Receiver<bool>) {
    let options = &shared.options;
    // Storing an outcome is a durable write; the worker does not wait for it before taking
    // the next workload (the workload stays leased until it is stored, so a crash meanwhile
    // only means it runs again).
    let mut settling = JoinSet::new();
    // Claims started ahead (`options.prefetch`), oldest first. Each is run before anything
    // else, also after shutdown or a scale-down: it may be leased to this worker already.
    let mut prefetching: VecDeque<Prefetch> = VecDeque::new();
    // Redelivered workloads that came out of `prefetching` while others waited behind them:
    // they run once those have (a slot's own held workloads would keep it from running
    // alone), their leases renewed meanwhile.
    let mut deferred: VecDeque<Prefetch> = VecDeque::new();
    loop {
        while settling.try_join_next().is_some() {}
        if settling.len() >= MAX_SETTLING {
            settling.join_next().await;
        }
        let (claimed, hold) = if let Some(prefetch) = prefetching.pop_front() {
            match prefetch.take().await {
                Some((claimed, hold)) if hold.is_waiting() && !prefetching.is_empty() => {
                    deferred.push_back(Prefetch::hold(&shared, claimed, hold));
                    continue;
                }
                Some(held) => held,
                // The queue was empty; claim (or wait) below once the others are in.
                None => continue,
            }
        } else if let Some(held) = deferred.pop_front() {
            match held.take().await {
                Some(held) => held,
                None => continue,
            }
        } else {
            if *shutdown.borrow() {
                break;
            }
            if slot.index >= *slot.active.borrow_and_update() {
                tokio::select! {
                    changed = slot.active.changed() => {
                        if changed.is_err() {
                            // The count can no longer change: this slot stays idle.
                            let _ = shutdown.changed().await;
                        }
                    }
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let claim = |deliveries| {
                shared
                    .backend
                    .claim_only(&shared.api, options.lease, deliveries)
            };
            match shared.isolation.claim(claim).await {
                Ok(Some(held)) => held,
                Ok(None) => {
                    wait_for_work(&shared, &mut shutdown).await;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "cannot claim work; retrying");
                    tokio::time::sleep(options.error_backoff).await;
                    continue;
                }
            }
        };
        if is_redelivery(&claimed) {
            info!(id = %claimed.record.id, attempt = claimed.record.attempts, "delivered again (its worker stopped or its lease ran out): it runs alone in the process");
        }
        let hold = if hold.is_waiting() {
            let alone = shared.isolation.alone();
            with_lease_renewal(&shared, &claimed, alone).await
        } else {
            hold
        };
        let alone = is_redelivery(&claimed) || !deferred.is_empty();
        while !alone
            && prefetching.len() < options.prefetch
            && !shared.isolation.recovering()
            && !*shutdown.borrow()
            && slot.may_claim()
        {
            prefetching.push_back(Prefetch::start(&shared));
        }
        let settle = process(&shared, claimed, hold).await;
        settling.spawn(settle.in_current_span());
    }
    while settling.join_next().await.is_some() {}
}

/// Waits for a push (in this process or, if the backend signals them, any), the poll
/// interval or shutdown.
async fn wait_for_work(shared: &Shared, shutdown: &mut watch::Receiver<bool>) {
    let poll_interval = shared.options.poll_interval;
    let pushed = async {
        let waited = shared
            .backend
            .queue
            .wait_for_push(&shared.api, poll_interval)
            .await;
        if let Err(e) = waited {
            debug!(error = %e, "cannot wait for new work; polling");
            tokio::time::sleep(poll_interval).await;
        }
    };
    tokio::select! {
        () = shared.wake.notified() => {}
        () = pushed => {}
        _ = shutdown.changed() => {}
    }
}

/// A claim started ahead of time, on a task of its own so that it overlaps the handler and
/// other claims. The task is never aborted (a claim dropped half-way could leave a workload
/// leased to nobody until the lease runs out); once it has a workload it renews the lease
/// until the slot takes it.
struct Prefetch {
    task: Option<tokio::task::JoinHandle<Option<(Claimed, Hold)>>>,
    taken: Arc<Notify>,
}

impl Drop for Prefetch {
    /// Dropped without being taken (the pool was aborted): stop renewing, so that the lease
    /// runs out and the workload is delivered again.
    fn drop(&mut self) {
        self.taken.notify_one();
    }
}

impl Prefetch {
    fn start(shared: &Arc<Shared>) -> Prefetch {
        let claim = {
            let shared = Arc::clone(shared);
            async move {
                let claim = |deliveries| {
                    let lease = shared.options.lease;
                    shared.backend.claim_only(&shared.api, lease, deliveries)
                };
                match shared.isolation.claim_ahead(claim).await {
                    Ok(held) => held,
                    Err(e) => {
                        warn!(error = %e, "cannot claim a workload ahead; retrying later");
                        None
                    }
                }
            }
        };
        Prefetch::renewing(shared, claim)
    }

    /// Holds a workload this slot claimed already, renewing its lease until it is taken.
    fn hold(shared: &Arc<Shared>, claimed: Claimed, hold: Hold) -> Prefetch {
        Prefetch::renewing(shared, async { Some((claimed, hold)) })
    }

    /// Runs `claim` on a task of its own, then renews the lease of what it claimed until the
    /// slot takes it.
    fn renewing(
        shared: &Arc<Shared>,
        claim: impl Future<Output = Option<(Claimed, Hold)>> + Send + 'static,
    ) -> Prefetch {
        let taken = Arc::new(Notify::new());
        let (shared, signal) = (Arc::clone(shared), Arc::clone(&taken));
        let task = tokio::spawn(
            async move {
                let (claimed, hold) = claim.await?;
                with_lease_renewal(&shared, &claimed, signal.notified()).await;
                Some((claimed, hold))
            }
            .in_current_span(),
        );
        Prefetch {
            task: Some(task),
            taken,
        }
    }

    /// The claimed workload (waiting for the claim if needed), its lease no longer renewed
    /// here; `None` if the queue was empty.
    async fn take(mut self) -> Option<(Claimed, Hold)> {
        // A stored permit if the claim is still running: the renewal then ends at once.
        self.taken.notify_one();
        let task = self.task.take()?;
        match task.await {
            Ok(claimed) => claimed,
            Err(e) => {
                error!(error = %e, "a prefetch task failed");
                None
            }
        }
    }
}

/// Runs the handler on one workload and returns the future that stores its outcome, which
/// lets go of the workload's `hold` once it is stored.
async fn process(
    shared: &Arc<Shared>,
    claimed: Claimed,
    hold: Hold,
) -> impl Future<Output = ()> + use<> {
    let api = shared.api.as_str();
    let id = claimed.record.id.clone();
    let span = info_span!("workload", %id);
    let outcome = async {
        info!(attempt = claimed.record.attempts, "processing workload");
        if let Some(wait) = since(claimed.record.created_at.system_time()) {
            let _ = shared.metrics.observe(
                "soma_async_queue_wait_seconds",
                "Time from submission to the start of processing.",
                &[("api_name", api)],
                wait,
            );
        }
        let _ = shared.metrics.gauge_add("soma_async_busy_workers", "Workers running a workload.", &[("api_name", api)], 1.0);
        let started = std::time::Instant::now();
        let workload = Workload {
            id: id.clone(),
            payload: claimed.payload.clone(),
            content_type: claimed.content_type.clone(),
        };
        let result = with_lease_renewal(shared, &claimed, shared.handler.handle(workload)).await;
        let outcome = match result.and_then(|value| serialize(&value)) {
            Ok(result) => Outcome::Completed { result },
            Err(failure) => {
                error!(error = %failure.message, traceback = failure.traceback.as_deref().unwrap_or(""), "failed to process workload");
                Outcome::Failed { error: failure.message }
            }
        };
        let _ = shared.metrics.gauge_add("soma_async_busy_workers", "Workers running a workload.", &[("api_name", api)], -1.0);
        (outcome, started.elapsed())
    }
    .instrument(span.clone())
    .await;
    let shared = Arc::clone(shared);
    async move {
        let (outcome, took) = outcome;
        let status = outcome.status();
        store_outcome(&shared, &claimed, outcome).await;
        drop(hold);
        let api = shared.api.as_str();
        let labels = [("api_name", api), ("status", status.as_str())];
        let _ = shared.metrics.counter_add(
            "soma_async_workloads_total",
            "Finished workloads by final status.",
            &labels,
            1.0,
        );
        let _ = shared.metrics.observe(
            "soma_async_processing_seconds",
            "Time spent running the handler.",
            &labels,
            took.as_secs_f64(),
        );
        info!(
            status = status.as_str(),
            millis = took.as_millis() as u64,
            "workload processing complete"
        );
    }
    .instrument(span)
}

impl Shared {
    fn renewing(&self) -> std::sync::MutexGuard<'_, HashMap<WorkloadId, Lease>> {
        self.renewing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A lease listed in [`Shared::renewing`] while it lives.
struct Renewing<'a> {
    shared: &'a Shared,
    id: WorkloadId,
}

impl<'a> Renewing<'a> {
    fn start(shared: &'a Shared, lease: &Lease) -> Renewing<'a> {
        shared.renewing().insert(lease.id.clone(), lease.clone());
        Renewing {
            shared,
            id: lease.id.clone(),
        }
    }
}

impl Drop for Renewing<'_> {
    fn drop(&mut self) {
        self.shared.renewing().remove(&self.id);
    }
}

/// Runs `work` while renewing the lease, so long workloads are not redelivered.
async fn with_lease_renewal<T>(
    shared: &Shared,
    claimed: &Claimed,
    work: impl Future<Output = T>,
) -> T {
    let _listed = Renewing::start(shared, &claimed.lease);
    let renew = async {
        let mut ticker = tokio::time::interval(shared.options.renew_every);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(e) = shared
                .backend
                .queue
                .extend(&claimed.lease, shared.options.lease)
                .await
            {
                warn!(error = %e, "cannot renew the lease; the workload may run again elsewhere");
            }
        }
    };
    tokio::select! {
        output = work => output,
        () = renew => unreachable!("the renewal loop never ends"),
    }
}

/// Stores the outcome, retrying through storage outages: until it is stored the workload is
/// still leased, and if this process gives up the lease expires and the work runs again.
async fn store_outcome(shared: &Shared, claimed: &Claimed, outcome: Outcome) {
    for attempt in 1..=10u32 {
        match shared.backend.complete(claimed, outcome.clone()).await {
            Ok(true) => return,
            Ok(false) => {
                info!("workload already had a final status (redelivered); keeping the first");
                return;
            }
            Err(e) => {
                warn!(error = %e, attempt, "cannot store the outcome; retrying");
                tokio::time::sleep(shared.options.error_backoff * attempt).await;
            }
        }
    }
    error!("giving up storing the outcome; the workload will be delivered again");
}

fn serialize(value: &serde_json::Value) -> Result<Bytes, HandlerFailure> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| HandlerFailure::new(format!("the result is not JSON-serialisable: {e}")))
}

fn since(t: SystemTime) -> Option<f64> {
    SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs_f64())
}
