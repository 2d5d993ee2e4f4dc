//! [`Backend`]: the three stores plus the ordering rules gateway and worker code rely on.
//!
//! Keeping the sequences here (and not in the HTTP or worker crates) means every backend gets
//! the same crash behaviour: each step is durable before the next starts, and every step is
//! safe to repeat, so a crash between two steps leaves either nothing visible or a state the
//! next delivery repairs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::error::JobsError;
use crate::model::{
    ApiName, Deliveries, Lease, Outcome, Popped, Status, Timestamp, WorkloadId, WorkloadRecord,
    payload_key,
};
use crate::traits::{AtomicSteps, BlobStore, Queue, StateStore, Taken};

/// Deliveries after which `claim` gives up on a workload whose worker keeps disappearing.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The storage of the async workloads: queue, states and payloads.
#[derive(Debug, Clone)]
pub struct Backend {
    pub queue: Arc<dyn Queue>,
    pub states: Arc<dyn StateStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// Set when one store holds all three and can run each sequence as one write.
    atomic: Option<Arc<dyn AtomicSteps>>,
    max_attempts: u32,
}

/// A workload handed to a worker by [`Backend::claim`].
#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    /// The record after it was marked `in_progress`.
    pub record: WorkloadRecord,
    pub payload: Bytes,
    pub content_type: String,
}

/// What [`Backend::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelResult {
    /// It was still queued and is now `cancelled`; a worker will never run it.
    Cancelled,
    /// A worker already started it. Running work is not interrupted; it ends normally.
    Running,
    /// It had already ended with this status.
    AlreadyFinal(Status),
    NotFound,
}

impl Backend {
    pub fn new(
        queue: Arc<dyn Queue>,
        states: Arc<dyn StateStore>,
        blobs: Arc<dyn BlobStore>,
    ) -> Backend {
        Backend {
            queue,
            states,
            blobs,
            atomic: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// One store that implements all three traits (the embedded and memory backends).
    pub fn from_store<S>(store: Arc<S>) -> Backend
    where
        S: Queue + StateStore + BlobStore + 'static,
    {
        Backend::new(store.clone(), store.clone(), store)
    }

    /// Like [`from_store`](Self::from_store) for a store that can also run each sequence
    /// (submit, claim, complete) as one atomic write; the backend then does so.
    pub fn from_atomic_store<S>(store: Arc<S>) -> Backend
    where
        S: Queue + StateStore + BlobStore + AtomicSteps + 'static,
    {
        let mut backend = Backend::new(store.clone(), store.clone(), store.clone());
        backend.atomic = Some(store);
        backend
    }

    /// Three stores and the [`AtomicSteps`] that runs each sequence over them.
    pub(crate) fn with_atomic_steps(
        queue: Arc<dyn Queue>,
        states: Arc<dyn StateStore>,
        blobs: Arc<dyn BlobStore>,
        atomic: Arc<dyn AtomicSteps>,
    ) -> Backend {
        let mut backend = Backend::new(queue, states, blobs);
        backend.atomic = Some(atomic);
        backend
    }

    /// Deliveries a workload gets before `claim` marks it failed instead of handing it out
    /// again (a payload that crashes the worker would otherwise loop forever). At least 1.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Backend {
        self.max_attempts = max_attempts.max(1);
        self
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Accepts a workload under a fresh id. Returns once payload, record and queue entry are
    /// all durably stored.
    pub async fn submit(
        &self,
        api: &ApiName,
        content_type: &str,
        body: Bytes,
    ) -> Result<WorkloadId, JobsError> {
        let id = WorkloadId::random();
        self.submit_with_id(api, &id, content_type, body).await?;
        Ok(id)
    }

    /// Like [`submit`](Self::submit) with a caller-chosen id (Cortex used `x-request-id`).
    /// Fails with `AlreadyExists` if the id is taken; two concurrent submits of one id may
    /// both write the payload before one of them loses on the record.
    pub async fn submit_with_id(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), JobsError> {
        let key = payload_key(api, id);
        if let Some(atomic) = &self.atomic {
            let record =
                WorkloadRecord::new(api.clone(), id.clone(), content_type, Timestamp::now());
            return atomic.enqueue(&record, &key, body).await;
        }
        // Checked first so a duplicate does not overwrite the original's payload.
        if self.states.get(api, id).await?.is_some() {
            return Err(JobsError::AlreadyExists {
                api: api.clone(),
                id: id.clone(),
            });
        }
        // Order matters: a queue entry must never point at a missing record or payload. A
        // crash in between leaves only an unreferenced payload, or an `in_queue` record no
        // worker will see (the caller never got the id, so nobody polls it).
        self.blobs.put(&key, body, content_type).await?;
        let record = WorkloadRecord::new(api.clone(), id.clone(), content_type, Timestamp::now());
        self.states.create(&record).await?;
        self.queue.push(api, id).await
    }

    /// The record and, once completed, the result bytes.
    pub async fn status(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<(WorkloadRecord, Option<Bytes>)>, JobsError> {
        self.states.get_with_result(api, id).await
    }

    /// Hands out the next workload of `api` under a lease of `lease`, skipping (and
    /// acknowledging) queue entries that need no work: already final (a crash between
    /// `finish` and `ack`), unknown (expired), out of attempts, or without payload.
    pub async fn claim(
        &self,
        api: &ApiName,
        lease: Duration,
    ) -> Result<Option<Claimed>, JobsError> {
        Ok(self
            .claim_only(api, lease, Deliveries::Any)
            .await?
            .into_item())
    }

    /// [`claim`](Self::claim) of the `deliveries` given: with [`Deliveries::FirstOnly`], a
    /// workload delivered before (whose lease ran out) is left in the queue and answered
    /// with [`Popped::RedeliveryWaiting`].
    pub async fn claim_only(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
    ) -> Result<Popped<Claimed>, JobsError> {
        loop {
            let Taken {
                lease,
                record,
                payload,
            } = match self.take(api, lease, deliveries).await?.item() {
                Ok(taken) => taken,
                Err(none) => return Ok(none),
            };
            let key = payload_key(api, &lease.id);
            let Some(record) = record else {
                warn!(%api, id = %lease.id, "queued workload has no record; dropping it");
                self.queue.ack(&lease).await?;
                continue;
            };
            if record.status.is_final() {
                debug!(%api, id = %lease.id, status = %record.status, "redelivered workload is already final");
                // The payload delete may be what the crash interrupted.
                self.blobs.delete(&key).await?;
                self.queue.ack(&lease).await?;
                continue;
            }
            if record.attempts > self.max_attempts {
                let error = format!(
                    "gave up after {} deliveries: the worker stopped (crash or lease expiry) \
                     before finishing each time",
                    self.max_attempts
                );
                warn!(%api, id = %lease.id, "{error}");
                self.drop_with_error(&lease, &key, error).await?;
                continue;
            }
            let Some((payload, content_type)) = payload else {
                let error = "the workload's payload is missing from storage".to_string();
                warn!(%api, id = %lease.id, "{error}");
                self.drop_with_error(&lease, &key, error).await?;
                continue;
            };
            return Ok(Popped::Item(Claimed {
                lease,
                record,
                payload,
                content_type,
            }));
        }
    }

    /// Pops the next item, marks it `in_progress` and reads its payload (unless final).
    async fn take(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
    ) -> Result<Popped<Taken>, JobsError> {
        if let Some(atomic) = &self.atomic {
            return atomic.take(api, lease, deliveries, Timestamp::now()).await;
        }
        let lease = match self.queue.pop(api, lease, deliveries).await?.item() {
            Ok(lease) => lease,
            Err(none) => return Ok(none),
        };
        let record = self
            .states
            .mark_in_progress(api, &lease.id, Timestamp::now())
            .await?;
        let payload = match &record {
            Some(r) if !r.status.is_final() => self.blobs.get(&payload_key(api, &lease.id)).await?,
            _ => None,
        };
        Ok(Popped::Item(Taken {
            lease,
            record,
            payload,
        }))
    }

    async fn drop_with_error(
        &self,
        lease: &Lease,
        key: &str,
        error: String,
    ) -> Result<(), JobsError> {
        let outcome = Outcome::Failed { error };
        self.states
            .finish(&lease.api, &lease.id, outcome, Timestamp::now())
            .await?;
        self.blobs.delete(key).await?;
        self.queue.ack(lease).await?;
        Ok(())
    }

    /// Records the outcome of a claimed workload: finish (first final status wins), then
    /// delete the payload, then ack. Safe to repeat after a crash or a redelivery. `true` if
    /// this call set the final status.
    pub async fn complete(&self, claimed: &Claimed, outcome: Outcome) -> Result<bool, JobsError> {
        let lease = &claimed.lease;
        if let Some(atomic) = &self.atomic {
            let key = payload_key(&lease.api, &lease.id);
            return atomic
                .settle(&claimed.record, lease, &key, outcome, Timestamp::now())
                .await;
        }
        let won = self
            .states
            .finish(&lease.api, &lease.id, outcome, Timestamp::now())
            .await?;
        if !won {
            debug!(api = %lease.api, id = %lease.id, "workload was already final; outcome dropped");
        }
        self.blobs
            .delete(&payload_key(&lease.api, &lease.id))
            .await?;
        if !self.queue.ack(lease).await? {
            // Our lease expired and the item went to another consumer, which will see the
            // final status and skip it.
            debug!(api = %lease.api, id = %lease.id, "lease was no longer held at ack");
        }
        Ok(won)
    }

    /// Cancels a workload that no worker has started. Running ones are left alone.
    pub async fn cancel(&self, api: &ApiName, id: &WorkloadId) -> Result<CancelResult, JobsError> {
        let Some(record) = self.states.get(api, id).await? else {
            return Ok(CancelResult::NotFound);
        };
        match record.status {
            Status::InProgress => return Ok(CancelResult::Running),
            status if status.is_final() => return Ok(CancelResult::AlreadyFinal(status)),
            _ => {}
        }
        // The final status is written first: if we crash before removing the queue entry, the
        // worker that pops it sees `cancelled` and skips it. A worker that popped it a moment
        // ago finds the record final in `claim` and skips it too.
        if !self
            .states
            .finish(api, id, Outcome::Cancelled, Timestamp::now())
            .await?
        {
            let status = match self.states.get(api, id).await? {
                Some(record) => record.status,
                None => return Ok(CancelResult::NotFound),
            };
            return Ok(CancelResult::AlreadyFinal(status));
        }
        self.queue.remove(api, id).await?;
        self.blobs.delete(&payload_key(api, id)).await?;
        Ok(CancelResult::Cancelled)
    }

    /// Deletes workloads that ended more than `retention` ago: records, results and any
    /// payload left behind. The retention period is the caller's choice (Cortex: 7 days).
    pub async fn expire(
        &self,
        retention: Duration,
    ) -> Result<Vec<(ApiName, WorkloadId)>, JobsError> {
        let older_than = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let expired = self.states.expire(older_than).await?;
        for (api, id) in &expired {
            self.blobs.delete(&payload_key(api, id)).await?;
        }
        Ok(expired)
    }
}

/// Calls [`Backend::expire`] every `every` until `shutdown` resolves. Errors are logged and
/// retried at the next tick (storage outages are expected to be transient).
pub async fn run_retention(
    backend: Backend,
    retention: Duration,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        match backend.expire(retention).await {
            Ok(expired) if !expired.is_empty() => {
                debug!(count = expired.len(), "expired finished workloads");
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "expiring finished workloads failed"),
        }
    }
}
