//! Batching on async threads, with no thread hand-off and no timer.
//!
//! An async server (REST, gRPC) reads many requests per wake-up of its threads. Each request
//! [queues](Batcher::queue_in_place) its inputs, yields to the runtime so that the other
//! requests it has read can queue theirs, and then, if nobody has taken its inputs yet, runs
//! everything queued as one batch, right there on its own thread, and hands every member its
//! rows. A request with no other in flight skips the yield and runs at once
//! ([`InPlace::has_company`]). Under load a batch holds
//! what arrived during the previous runs, so batches grow with the load, and no request ever
//! waits for a timer or for a thread to wake up and take it.
//!
//! This pays where a batch costs little more than one row: one TensorFlow call on 64 iris
//! rows took 16 µs against 11 µs for one row (with one intra-op thread, soma's default),
//! while handing a request to a batch thread and back costs two thread wake-ups (~30 µs
//! each on a small VM). Only models whose runs are quick take this path
//! ([`crate::Servable::may_answer_now`]): a long run would hold the async thread.
//!
//! These requests batch among themselves: blocking callers (Python handlers, slow models)
//! form their batches in [`Batcher::run`], from a separate queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use soma_core::Tensor;

use super::{Batcher, Request, SignatureQueue, Slot, lock, rows, take_result};
use crate::RuntimeError;

/// One request's outputs, from a batch run on whichever async thread got to it first.
/// See [`Batcher::queue_in_place`].
#[must_use = "the request runs when it is awaited"]
pub struct InPlace<'a> {
    batcher: &'a Batcher,
    signature: &'a str,
    state: State,
}

impl std::fmt::Debug for InPlace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Queued { .. } => "queued",
            State::Alone(_) => "alone",
            State::Done => "done",
        };
        f.debug_struct("InPlace")
            .field("signature", &self.signature)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

enum State {
    Queued {
        queue: Arc<SignatureQueue>,
        request: Arc<Request>,
    },
    /// Not batchable (a scalar input, more rows than `max_batch_size`): runs alone on the
    /// first poll.
    Alone(Vec<Tensor>),
    Done,
}

impl Batcher {
    /// Queues `inputs` (in the signature's input order, already checked against it) for a
    /// batch formed by async callers. The caller should let the runtime poll its other
    /// ready tasks first (`tokio::task::yield_now().await`) and then await the result:
    /// the first poll runs the queued requests as one batch unless another thread has
    /// taken this one into its batch already, in which case it waits for that run.
    pub fn queue_in_place<'a>(&'a self, signature: &'a str, inputs: Vec<Tensor>) -> InPlace<'a> {
        let state = match rows::request_rows(&inputs) {
            Some(rows) if rows > 0 && rows <= self.options.max_batch_size => {
                let queue = self.in_place_queue(signature);
                let request = Arc::new(Request::new(inputs, rows, None, false));
                queue.active.fetch_add(1, Ordering::SeqCst);
                let mut state = lock(&queue.state);
                state.pending.push_back(Arc::clone(&request));
                state.pending_rows += rows;
                drop(state);
                State::Queued { queue, request }
            }
            _ => State::Alone(inputs),
        };
        InPlace {
            batcher: self,
            signature,
            state,
        }
    }

    /// The in-place queue of `signature` (see [`Batcher::queue`] for the blocking one).
    pub(super) fn in_place_queue(&self, signature: &str) -> Arc<SignatureQueue> {
        let mut queues = lock(&self.in_place);
        if let Some(queue) = queues.get(signature) {
            return Arc::clone(queue);
        }
        Arc::clone(queues.entry(signature.to_string()).or_default())
    }
}

impl InPlace<'_> {
    /// Whether other requests for this signature are queued or running in place. If not,
    /// yielding before the first poll would find nobody to batch with: a lone client's
    /// next request cannot arrive before this one is answered.
    pub fn has_company(&self) -> bool {
        match &self.state {
            State::Queued { queue, .. } => queue.active.load(Ordering::SeqCst) > 1,
            State::Alone(_) | State::Done => false,
        }
    }
}

impl Future for InPlace<'_> {
    type Output = Result<Vec<Tensor>, RuntimeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (queue, request) = match &this.state {
            State::Queued { queue, request } => (queue, request),
            State::Alone(_) => {
                let State::Alone(inputs) = std::mem::replace(&mut this.state, State::Done) else {
                    unreachable!("matched above")
                };
                return Poll::Ready(this.batcher.run_alone(this.signature, &inputs));
            }
            State::Done => panic!("InPlace polled after it completed"),
        };
        // Still queued: lead a batch of what is waiting, here and now. (If the model
        // panics, the state stays `Queued` and `drop` tidies up.)
        let members = {
            let mut state = lock(&queue.state);
            let queued = state.pending.iter().any(|r| Arc::ptr_eq(r, request));
            queued.then(|| this.batcher.take_members(&mut state, request))
        };
        if let Some(members) = members {
            this.batcher.run_batch(this.signature, &members);
        }
        let mut slot = lock(&request.slot);
        if let Slot::Waiting(waker) = &mut *slot {
            // Another thread's batch holds this request: wait for it to finish.
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        drop(slot);
        let result = take_result(request);
        queue.active.fetch_sub(1, Ordering::SeqCst);
        this.state = State::Done;
        Poll::Ready(result)
    }
}

impl Drop for InPlace<'_> {
    /// A request dropped before it ran (its client went away) leaves the queue, so no batch
    /// computes rows nobody will read.
    fn drop(&mut self) {
        if let State::Queued { queue, request } = &self.state {
            queue.active.fetch_sub(1, Ordering::SeqCst);
            let mut state = lock(&queue.state);
            if let Some(at) = state.pending.iter().position(|r| Arc::ptr_eq(r, request)) {
                state.pending.remove(at);
                state.pending_rows -= request.rows;
            }
        }
    }
}
