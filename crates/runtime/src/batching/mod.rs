//! Server-side batching: concurrent predictions on one model version and signature run as
//! one TensorFlow call.
//!
//! There are no dedicated batch threads. Callers block in [`Batcher::run`] anyway (REST and
//! gRPC on blocking threads, Python handlers on their own threads), so the first caller that
//! finds no batch being formed becomes its *leader*: it waits for the window, takes a run
//! permit (at most `num_batch_threads` batches of a model run at once), collects the
//! compatible requests that are waiting, runs them as one batch on its own thread, and hands
//! every member its rows. Later arrivals wait as *followers*; when a leader leaves requests
//! behind (incompatible shapes, a full batch), it promotes the oldest to lead the next batch.
//!
//! Requests that REST and gRPC answer on their async threads (quick models, a window that
//! never waits) batch there instead, without blocking: see [`InPlace`] (`in_place.rs`).
//!
//! Requests are merged only if every input has the same dims but the first (or, with
//! `pad_variable_length_inputs`, the same rank); others run in their own batch. A request
//! with scalar inputs, or larger than `max_batch_size`, runs alone. If the model's outputs
//! cannot be split back by rows, each member is re-run alone, so a caller always gets
//! exactly its own rows. An error in a batched run is every member's error.

mod in_place;
mod options;
mod rows;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use soma_core::Tensor;
use soma_core::runner::ModelRunner;
use soma_metrics::Registry;

pub use in_place::InPlace;
pub use options::{BatchOptions, BatchWindow};

use crate::RuntimeError;

/// `soma_batch_size`'s buckets: rows per run, in powers of two.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Longest wait of an `auto` window, and the arrival gap above which it does not wait.
const AUTO_MAX_WAIT: Duration = Duration::from_millis(1);

/// Batches the predictions of one model version.
pub struct Batcher {
    options: BatchOptions,
    runner: Arc<dyn ModelRunner>,
    model: String,
    version: String,
    queues: Mutex<HashMap<String, Arc<SignatureQueue>>>,
    /// The queues of requests batched on async threads ([`Batcher::queue_in_place`]).
    in_place: Mutex<HashMap<String, Arc<SignatureQueue>>>,
    permits: Permits,
    metrics: Option<Registry>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model", &self.model)
            .field("version", &self.version)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct SignatureQueue {
    state: Mutex<QueueState>,
    /// Signalled on every arrival, for a leader waiting out its window.
    arrived: Condvar,
    /// Requests inside [`Batcher::run`] for this signature (waiting or running). An `auto`
    /// window only waits when some other request is active: a lone client's next request
    /// cannot arrive before this one returns, however fast it sends them.
    active: std::sync::atomic::AtomicUsize,
}

/// Counts a request as active for as long as it lives.
struct Active<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Active<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Active<'a> {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Active(counter)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct QueueState {
    pending: VecDeque<Arc<Request>>,
    pending_rows: usize,
    /// A leader is forming a batch (or has been promoted and is about to).
    leader: bool,
    last_arrival: Option<Instant>,
    /// Moving average of the gap between arrivals, in seconds (for `auto`).
    gap: f64,
}

impl QueueState {
    /// The leader is done with the queue: the oldest pending request, if any, leads next
    /// (woken to form its batch).
    fn pass_the_lead(&mut self) {
        self.leader = false;
        if let Some(next) = self.pending.front() {
            self.leader = true;
            *lock(&next.slot) = Slot::Lead;
            next.notify();
        }
    }
}

impl Default for QueueState {
    fn default() -> QueueState {
        QueueState {
            pending: VecDeque::new(),
            pending_rows: 0,
            leader: false,
            last_arrival: None,
            gap: 1.0,
        }
    }
}

struct Request {
    inputs: Vec<Tensor>,
    rows: usize,
    deadline: Option<Instant>,
    enqueued: Instant,
    slot: Mutex<Slot>,
    /// Where a blocking caller ([`Batcher::run`]) waits for its slot to change. `None` for
    /// an async caller ([`Batcher::queue_in_place`]), whose waker is in the slot: notifying
    /// a condvar costs a futex syscall even when nobody waits on it, one per request.
    ready: Option<Condvar>,
}

impl Request {
    fn new(inputs: Vec<Tensor>, rows: usize, deadline: Option<Instant>, blocking: bool) -> Request {
        Request {
            inputs,
            rows,
            deadline,
            enqueued: Instant::now(),
            slot: Mutex::new(Slot::Waiting(None)),
            ready: blocking.then(Condvar::new),
        }
    }

    /// The condvar a blocking caller waits on.
    fn ready(&self) -> &Condvar {
        self.ready
            .as_ref()
            .expect("only requests queued by Batcher::run wait on a condvar")
    }

    /// Wakes a blocking caller waiting for this request's slot, if it is one.
    fn notify(&self) {
        if let Some(ready) = &self.ready {
            ready.notify_all();
        }
    }
}

enum Slot {
    /// Queued or in a running batch; the waker of an async caller
    /// ([`Batcher::queue_in_place`]) waiting for another thread's batch.
    Waiting(Option<Waker>),
    /// Promoted: this request's caller leads the next batch.
    Lead,
    Done(Result<Vec<Tensor>, RuntimeError>),
    Taken,
}

impl Batcher {
    /// `options` must have passed [`BatchOptions::validate`]. Batch sizes and queueing times
    /// are recorded in `metrics` if given.
    pub fn new(
        runner: Arc<dyn ModelRunner>,
        model: &str,
        version: i64,
        options: BatchOptions,
        metrics: Option<Registry>,
    ) -> Batcher {
        Batcher {
            permits: Permits::new(options.num_batch_threads.max(1)),
            options,
            runner,
            model: model.to_string(),
            version: version.to_string(),
            queues: Mutex::default(),
            in_place: Mutex::default(),
            metrics,
        }
    }

    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Runs `inputs` (in the signature's input order, already checked against it) as part of
    /// a batch and returns this request's outputs. Fails at once with `ResourceExhausted`
    /// when the queue is full, and with `DeadlineExceeded` if `deadline` passes while the
    /// request waits.
    pub fn run(
        &self,
        signature: &str,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let rows = match rows::request_rows(&inputs) {
            Some(rows) if rows > 0 && rows <= self.options.max_batch_size => rows,
            _ => return self.run_alone(signature, &inputs),
        };
        let queue = self.queue(signature);
        let _active = Active::enter(&queue.active);
        if let Some(outputs) = self.run_if_lone(signature, &queue, &inputs, rows) {
            return outputs;
        }
        let request = Arc::new(Request::new(inputs, rows, deadline, true));
        let lead = {
            let mut state = lock(&queue.state);
            if state.pending_rows + rows > self.options.queue_capacity() {
                return Err(RuntimeError::ResourceExhausted(format!(
                    "the batching queue of model '{}' version {} is full ({} rows waiting, \
                     max_enqueued_batches {} x max_batch_size {}); retry later",
                    self.model,
                    self.version,
                    state.pending_rows,
                    self.options.max_enqueued_batches,
                    self.options.max_batch_size
                )));
            }
            let now = request.enqueued;
            if let Some(last) = state.last_arrival {
                let gap = now.duration_since(last).as_secs_f64();
                state.gap = 0.8 * state.gap + 0.2 * gap;
            }
            state.last_arrival = Some(now);
            state.pending.push_back(Arc::clone(&request));
            state.pending_rows += rows;
            queue.arrived.notify_all();
            !std::mem::replace(&mut state.leader, true)
        };
        if !lead && !self.follow(&queue, &request)? {
            return take_result(&request);
        }
        self.lead(signature, &queue, &request);
        take_result(&request)
    }

    /// Whether a lone request runs at once: the window is `auto` or zero, so a request that
    /// finds nobody to batch with does not wait for one.
    pub fn never_waits(&self) -> bool {
        matches!(self.options.window, BatchWindow::Auto)
            || self.options.window == BatchWindow::Fixed(Duration::ZERO)
    }

    /// The lone request's path (the caller is counted in `queue.active`): nobody to batch
    /// with (and nobody waiting), and no window to wait out: no queue, no hand-off, no delay.
    fn run_if_lone(
        &self,
        signature: &str,
        queue: &SignatureQueue,
        inputs: &[Tensor],
        rows: usize,
    ) -> Option<Result<Vec<Tensor>, RuntimeError>> {
        if self.never_waits()
            && self.options.padded_size(rows) == rows
            && queue.active.load(std::sync::atomic::Ordering::SeqCst) == 1
            && let Some(_permit) = self.permits.try_acquire()
        {
            return Some(self.run_alone(signature, inputs));
        }
        None
    }

    /// Waits as a follower. `Ok(true)` if promoted to leader, `Ok(false)` once the result is
    /// in the slot.
    fn follow(&self, queue: &SignatureQueue, request: &Arc<Request>) -> Result<bool, RuntimeError> {
        let mut slot = lock(&request.slot);
        loop {
            match &*slot {
                Slot::Lead => return Ok(true),
                Slot::Done(_) => return Ok(false),
                Slot::Waiting(_) | Slot::Taken => {}
            }
            let Some(deadline) = request.deadline else {
                slot = request
                    .ready()
                    .wait(slot)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let now = Instant::now();
            if now < deadline {
                slot = request
                    .ready()
                    .wait_timeout(slot, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            // Deadline passed: leave the queue if still in it; a batch already running
            // this request is waited for (it is about to answer).
            drop(slot);
            let mut state = lock(&queue.state);
            if let Some(at) = state.pending.iter().position(|r| Arc::ptr_eq(r, request)) {
                state.pending.remove(at);
                state.pending_rows -= request.rows;
                return Err(self.deadline_error(request));
            }
            drop(state);
            slot = lock(&request.slot);
            if matches!(*slot, Slot::Waiting(_)) {
                slot = request
                    .ready()
                    .wait(slot)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn lead(&self, signature: &str, queue: &SignatureQueue, me: &Arc<Request>) {
        self.wait_window(queue, me);
        let Some(_permit) = self.permits.acquire_until(me.deadline) else {
            self.abdicate(queue, me);
            return;
        };
        let members = self.collect(queue, me);
        self.run_batch(signature, &members);
    }

    /// Runs `members` as one batch, records it and hands every member its result. If the
    /// model panics, every member gets an error (none waits forever) before the panic goes
    /// on up the leader's stack.
    fn run_batch(&self, signature: &str, members: &[Arc<Request>]) {
        let waited: Vec<f64> = members
            .iter()
            .map(|m| m.enqueued.elapsed().as_secs_f64())
            .collect();
        let run = std::panic::AssertUnwindSafe(|| self.execute(signature, members));
        let results = match std::panic::catch_unwind(run) {
            Ok(results) => results,
            Err(panic) => {
                let error = RuntimeError::Model(format!(
                    "internal error: {} panicked",
                    self.context(signature, members.len(), rows_of(members))
                ));
                for member in members {
                    finish(member, Err(error.clone()));
                }
                std::panic::resume_unwind(panic);
            }
        };
        self.record(members, &waited);
        for (member, result) in members.iter().zip(results) {
            finish(member, result);
        }
    }

    /// The batching window: a fixed time from the leader's arrival, or (auto) for as long
    /// as requests keep arriving closely, within [`AUTO_MAX_WAIT`].
    fn wait_window(&self, queue: &SignatureQueue, me: &Request) {
        let mut state = lock(&queue.state);
        let full = |s: &QueueState| s.pending_rows >= self.options.max_batch_size;
        match self.options.window {
            BatchWindow::Fixed(window) => {
                let until = me.enqueued + window;
                while !full(&state) {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    state = queue
                        .arrived
                        .wait_timeout(state, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            BatchWindow::Auto => {
                let until = me.enqueued + AUTO_MAX_WAIT;
                let others_active = || queue.active.load(std::sync::atomic::Ordering::SeqCst) > 1;
                while !full(&state) && state.gap < AUTO_MAX_WAIT.as_secs_f64() && others_active() {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    let quiet = Duration::from_secs_f64(2.0 * state.gap).min(until - now);
                    let (next, timeout) = queue
                        .arrived
                        .wait_timeout(state, quiet)
                        .unwrap_or_else(|e| e.into_inner());
                    state = next;
                    if timeout.timed_out() {
                        break;
                    }
                }
            }
        }
    }

    /// The leader's deadline passed while every batch thread was busy: it leaves the queue
    /// with a deadline error, handing the lead to the next request if there is one.
    fn abdicate(&self, queue: &SignatureQueue, me: &Arc<Request>) {
        let mut state = lock(&queue.state);
        if let Some(at) = state.pending.iter().position(|r| Arc::ptr_eq(r, me)) {
            state.pending.remove(at);
            state.pending_rows -= me.rows;
        }
        finish(me, Err(self.deadline_error(me)));
        state.pass_the_lead();
    }

    /// Takes this batch's members out of the queue (the leader first, then compatible
    /// requests in arrival order), fails those past their deadline, and promotes the next
    /// leader if requests remain.
    fn collect(&self, queue: &SignatureQueue, me: &Arc<Request>) -> Vec<Arc<Request>> {
        let mut state = lock(&queue.state);
        let members = self.take_members(&mut state, me);
        state.pass_the_lead();
        members
    }

    /// Takes a batch out of the queue: `me` first (if still queued), then compatible
    /// requests in arrival order up to `max_batch_size` rows; answers those past their
    /// deadline with a deadline error.
    fn take_members(&self, state: &mut QueueState, me: &Arc<Request>) -> Vec<Arc<Request>> {
        let now = Instant::now();
        let mut members: Vec<Arc<Request>> = Vec::new();
        let mut rows = 0;
        let mut kept = VecDeque::with_capacity(state.pending.len());
        let shape_of = |r: &Request| -> Vec<Vec<usize>> {
            if self.options.pad_variable_length_inputs {
                r.inputs.iter().map(|t| vec![0; t.shape().len()]).collect()
            } else {
                rows::row_shapes(&r.inputs)
            }
        };
        let mut anchor: Option<Vec<Vec<usize>>> = None;
        // The leader is in the queue too; it goes first.
        let pending = std::mem::take(&mut state.pending);
        let (mine, others): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|r| Arc::ptr_eq(r, me));
        for request in mine.into_iter().chain(others) {
            let expired = request.deadline.is_some_and(|d| d <= now);
            if expired && !Arc::ptr_eq(&request, me) {
                state.pending_rows -= request.rows;
                finish(&request, Err(self.deadline_error(&request)));
                continue;
            }
            let fits = rows + request.rows <= self.options.max_batch_size;
            let joins = match &anchor {
                None => true,
                Some(anchor) => fits && shape_of(&request) == *anchor,
            };
            if joins && !expired {
                anchor.get_or_insert_with(|| shape_of(&request));
                rows += request.rows;
                state.pending_rows -= request.rows;
                members.push(request);
            } else if expired {
                // The leader itself expired: answer it, and let the rest go on.
                state.pending_rows -= request.rows;
                finish(&request, Err(self.deadline_error(&request)));
            } else {
                kept.push_back(request);
            }
        }
        state.pending = kept;
        members
    }

    /// Runs the members as one batch and splits the outputs back.
    fn execute(
        &self,
        signature: &str,
        members: &[Arc<Request>],
    ) -> Vec<Result<Vec<Tensor>, RuntimeError>> {
        if members.is_empty() {
            return Vec::new();
        }
        let counts: Vec<usize> = members.iter().map(|m| m.rows).collect();
        let total: usize = counts.iter().sum();
        let padded = self.options.padded_size(total);
        if members.len() == 1 && padded == total {
            return vec![self.run_alone(signature, &members[0].inputs)];
        }
        let Some(inputs) = self.merge(members, padded - total) else {
            return self.each_alone(signature, members);
        };
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let outputs = match self.runner.run(signature, &refs) {
            Ok(outputs) => outputs,
            Err(source) => {
                let error = RuntimeError::Engine {
                    context: self.context(signature, members.len(), total),
                    source,
                };
                return members.iter().map(|_| Err(error.clone())).collect();
            }
        };
        let split: Option<Vec<Vec<Tensor>>> = outputs
            .iter()
            .map(|output| rows::split(output, &counts))
            .collect();
        match split {
            // split[output][member] -> per member, its outputs in order.
            Some(split) => (0..members.len())
                .map(|m| Ok(split.iter().map(|pieces| pieces[m].clone()).collect()))
                .collect(),
            None => self.each_alone(signature, members),
        }
    }

    /// The batch's inputs: per input, the members' tensors (padded to a common shape if
    /// enabled) concatenated, plus `extra` padding rows.
    fn merge(&self, members: &[Arc<Request>], extra: usize) -> Option<Vec<Tensor>> {
        let inputs = members[0].inputs.len();
        (0..inputs)
            .map(|i| {
                let parts: Vec<&Tensor> = members.iter().map(|m| &m.inputs[i]).collect();
                let target: Vec<usize> = (1..parts[0].shape().len())
                    .map(|axis| parts.iter().map(|t| t.shape()[axis]).max().unwrap_or(0))
                    .collect();
                let padded: Vec<Tensor>;
                let parts = if parts.iter().all(|t| t.shape()[1..] == *target) {
                    parts
                } else {
                    padded = parts
                        .iter()
                        .map(|t| rows::pad_to(t, &target))
                        .collect::<Option<_>>()?;
                    padded.iter().collect()
                };
                Some(rows::pad_rows(&rows::concat(&parts), extra))
            })
            .collect()
    }

    fn each_alone(
        &self,
        signature: &str,
        members: &[Arc<Request>],
    ) -> Vec<Result<Vec<Tensor>, RuntimeError>> {
        members
            .iter()
            .map(|m| self.run_alone(signature, &m.inputs))
            .collect()
    }

    fn run_alone(&self, signature: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        self.runner
            .run(signature, &refs)
            .map_err(|source| RuntimeError::Engine {
                context: format!(
                    "model '{}' version {} signature '{signature}'",
                    self.model, self.version
                ),
                source,
            })
    }

    fn context(&self, signature: &str, members: usize, rows: usize) -> String {
        format!(
            "model '{}' version {} signature '{signature}' (batch of {members} requests, {rows} rows)",
            self.model, self.version
        )
    }

    fn deadline_error(&self, request: &Request) -> RuntimeError {
        RuntimeError::DeadlineExceeded(format!(
            "the request's deadline passed after {:.1} ms waiting for a batch of model '{}' version {}",
            request.enqueued.elapsed().as_secs_f64() * 1000.0,
            self.model,
            self.version
        ))
    }

    fn record(&self, members: &[Arc<Request>], waited: &[f64]) {
        let Some(metrics) = &self.metrics else { return };
        let labels = [
            ("model_name", self.model.as_str()),
            ("model_version", self.version.as_str()),
        ];
        let rows: usize = members.iter().map(|m| m.rows).sum();
        let _ = metrics.observe_in(
            "soma_batch_size",
            "Rows per batched TensorFlow run.",
            BATCH_SIZE_BUCKETS,
            &labels,
            rows as f64,
        );
        let _ = metrics.observe_all_in(
            "soma_batch_wait_seconds",
            "Time a request waited for its batch to start.",
            soma_metrics::DEFAULT_BUCKETS,
            &labels,
            waited,
        );
    }

    /// The signature's queue; allocates its key only the first time (this is on every
    /// request's path).
    fn queue(&self, signature: &str) -> Arc<SignatureQueue> {
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.get(signature) {
            return Arc::clone(queue);
        }
        Arc::clone(queues.entry(signature.to_string()).or_default())
    }
}

fn rows_of(members: &[Arc<Request>]) -> usize {
    members.iter().map(|m| m.rows).sum()
}

/// Puts `result` in the request's slot and wakes its caller, blocked or async.
fn finish(request: &Request, result: Result<Vec<Tensor>, RuntimeError>) {
    let waker = match std::mem::replace(&mut *lock(&request.slot), Slot::Done(result)) {
        Slot::Waiting(waker) => waker,
        _ => None,
    };
    request.notify();
    if let Some(waker) = waker {
        waker.wake();
    }
}

fn take_result(request: &Request) -> Result<Vec<Tensor>, RuntimeError> {
    match std::mem::replace(&mut *lock(&request.slot), Slot::Taken) {
        Slot::Done(result) => result,
        _ => Err(RuntimeError::Model(
            "internal error: a batched request finished without a result".into(),
        )),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A counting semaphore for blocking threads.
struct Permits {
    free: Mutex<usize>,
    released: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(count: usize) -> Permits {
        Permits {
            free: Mutex::new(count),
            released: Condvar::new(),
        }
    }

    /// A permit if one is free now.
    fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut free = lock(&self.free);
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(Permit(self))
    }

    /// A permit, or `None` if `deadline` passes first.
    fn acquire_until(&self, deadline: Option<Instant>) -> Option<Permit<'_>> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = match deadline {
                None => self.released.wait(free).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    self.released
                        .wait_timeout(free, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        *free -= 1;
        Some(Permit(self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.released.notify_one();
    }
}
