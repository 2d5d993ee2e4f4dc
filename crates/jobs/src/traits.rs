//! The three storage contracts. Each is small and object-safe so the backend is chosen at
//! run time (`Arc<dyn Queue>`), and a Redis queue + state store with S3 payloads can
//! replace the embedded one without touching gateway or worker code.

use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::JobsError;
use crate::model::{
    ApiName, Deliveries, Lease, Outcome, Popped, QueueStats, StatusCounts, Timestamp, WorkloadId,
    WorkloadRecord,
};

/// A per-API FIFO of workload ids with visibility leases (SQS semantics).
///
/// Delivery is at-least-once: a popped item stays invisible until its lease expires, and an
/// unacknowledged item becomes visible again, also after a crash or restart of the process
/// that held the lease.
#[async_trait]
pub trait Queue: Send + Sync + Debug {
    /// Appends `id`. A no-op while `id` is already queued or leased in this API.
    async fn push(&self, api: &ApiName, id: &WorkloadId) -> Result<(), JobsError>;

    /// Takes the next visible item and hides it for `lease`. Items whose lease expired come
    /// first (they are the oldest), then FIFO order; with [`Deliveries::FirstOnly`] an
    /// expired lease is left where it is and answered with [`Popped::RedeliveryWaiting`].
    async fn pop(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
    ) -> Result<Popped<Lease>, JobsError>;

    /// Moves the lease deadline to now + `lease`. Fails with `LeaseLost` if the lease was
    /// acknowledged or redelivered to someone else.
    async fn extend(&self, lease: &Lease, by: Duration) -> Result<(), JobsError>;

    /// Deletes the item for good. `false` if this lease is no longer held (already acked,
    /// or expired and popped again); the item is then left to its current holder.
    async fn ack(&self, lease: &Lease) -> Result<bool, JobsError>;

    /// Gives the item back: its lease runs out now, so the next pop delivers it again (a
    /// worker that stops without finishing it), and no longer holds it (a late `extend` or
    /// `ack` with it fails). `false` if this lease is no longer held.
    async fn release(&self, lease: &Lease) -> Result<bool, JobsError>;

    /// Deletes a visible (never popped) item. `false` if it is not queued or is leased.
    async fn remove(&self, api: &ApiName, id: &WorkloadId) -> Result<bool, JobsError>;

    async fn stats(&self, api: &ApiName) -> Result<QueueStats, JobsError>;

    /// Returns when an item may have been pushed to `api` since the last call, by any
    /// process, or after `timeout`, whichever comes first. Idle consumers call it between
    /// empty `pop`s; a return is only a hint (another consumer may take the item first), so
    /// spurious returns are allowed. The default sleeps `timeout`: a backend that cannot see
    /// other processes' pushes leaves them to the next poll (in-process pushes wake workers
    /// through their own signal).
    async fn wait_for_push(&self, api: &ApiName, timeout: Duration) -> Result<(), JobsError> {
        let _ = api;
        tokio::time::sleep(timeout).await;
        Ok(())
    }
}

/// Workload records and results. Every status change is one atomic conditional write.
#[async_trait]
pub trait StateStore: Send + Sync + Debug {
    /// Stores a new record. Fails with `AlreadyExists` if the id has one.
    async fn create(&self, record: &WorkloadRecord) -> Result<(), JobsError>;

    async fn get(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<WorkloadRecord>, JobsError>;

    /// Sets `in_progress`, `started_at = now` and increments `attempts`, unless the record is
    /// final (then nothing changes). Returns the record as stored after the call, `None` if
    /// the id is unknown.
    async fn mark_in_progress(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        now: Timestamp,
    ) -> Result<Option<WorkloadRecord>, JobsError>;

    /// Makes the record final with `outcome` (and stores the result of `Completed`) if, and
    /// only if, it is not final yet. `true` for the one call that won; `false` for every
    /// later call and for unknown ids, which change nothing.
    async fn finish(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, JobsError>;

    /// The result bytes of a completed workload.
    async fn result(&self, api: &ApiName, id: &WorkloadId) -> Result<Option<Bytes>, JobsError>;

    /// The record and, if it is `completed`, the result bytes: `get`, then `result`. A
    /// remote store may read both at once (one round trip per status poll).
    async fn get_with_result(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<(WorkloadRecord, Option<Bytes>)>, JobsError> {
        let Some(record) = self.get(api, id).await? else {
            return Ok(None);
        };
        let result = if record.status == crate::model::Status::Completed {
            self.result(api, id).await?
        } else {
            None
        };
        Ok(Some((record, result)))
    }

    /// Deletes final records (and their results) that finished before `older_than`, in every
    /// API, and returns their ids. Non-final records are never expired.
    async fn expire(&self, older_than: SystemTime)
    -> Result<Vec<(ApiName, WorkloadId)>, JobsError>;

    async fn counts(&self, api: &ApiName) -> Result<StatusCounts, JobsError>;
}

/// Payload bytes with their content type (S3-like objects).
#[async_trait]
pub trait BlobStore: Send + Sync + Debug {
    /// Stores or replaces `key`.
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), JobsError>;

    /// The body and content type, `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, JobsError>;

    /// Deletes `key`; deleting an absent key succeeds.
    async fn delete(&self, key: &str) -> Result<(), JobsError>;
}

/// What [`AtomicSteps::take`] hands out: a fresh lease, the record after
/// `mark_in_progress` (`None` for an unknown id) and the payload (read only when the record
/// is not final).
#[derive(Debug, Clone)]
pub struct Taken {
    pub lease: Lease,
    pub record: Option<WorkloadRecord>,
    pub payload: Option<(Bytes, String)>,
}

/// Optional, for a store that implements all three traits on one transactional engine: each
/// of [`Backend`](crate::Backend)'s multi-step sequences as one atomic write. Same outcome as
/// the steps in order (the conformance suite holds both paths to it), one commit instead of
/// three, and no half-done sequence to repair after a crash.
#[async_trait]
pub trait AtomicSteps: Send + Sync + Debug {
    /// `BlobStore::put` of the payload, `StateStore::create`, `Queue::push`.
    async fn enqueue(
        &self,
        record: &WorkloadRecord,
        payload_key: &str,
        payload: Bytes,
    ) -> Result<(), JobsError>;

    /// `Queue::pop`, `StateStore::mark_in_progress` and `BlobStore::get` of its payload.
    async fn take(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
        now: Timestamp,
    ) -> Result<Popped<Taken>, JobsError>;

    /// `StateStore::finish`, `BlobStore::delete` of the payload, `Queue::ack`. Returns
    /// whether this call set the final status. `record` is the record as `take` handed it
    /// out (a store may compare against it instead of reading the stored one).
    async fn settle(
        &self,
        record: &WorkloadRecord,
        lease: &Lease,
        payload_key: &str,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, JobsError>;
}
