//! [`AtomicSteps`] for the embedded store: each multi-step sequence of `Backend` in one redb
//! transaction, built from the same per-step functions the single-step trait methods use.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Commit, EmbeddedBackend, blob, queue, state};
use crate::error::JobsError;
use crate::model::{ApiName, Deliveries, Lease, Outcome, Popped, Timestamp, WorkloadRecord};
use crate::traits::{AtomicSteps, Taken};

#[async_trait]
impl AtomicSteps for EmbeddedBackend {
    async fn enqueue(
        &self,
        record: &WorkloadRecord,
        payload_key: &str,
        payload: Bytes,
    ) -> Result<(), JobsError> {
        let (record, key) = (record.clone(), payload_key.to_string());
        self.write(move |txn| {
            // `create` first: a duplicate id fails before the original's payload is touched.
            state::create(txn, &record)?;
            blob::put(txn, &key, &payload, &record.content_type)?;
            queue::push(txn, &record.api, &record.id)?;
            Ok(Commit::Yes(()))
        })
        .await
    }

    async fn take(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
        now: Timestamp,
    ) -> Result<Popped<Taken>, JobsError> {
        if !self.maybe_visible(api)? {
            return Ok(Popped::Empty);
        }
        let api = api.clone();
        // Durable before the payload is handed out: the delivery's attempt count is what
        // fails a payload that kills the process, and a lazy commit is lost with it (an
        // audit's handler that exited at once was delivered as attempt 1 on every restart).
        self.write(move |txn| {
            let lease = match queue::pop(txn, &api, lease, deliveries)?
                .into_value()
                .item()
            {
                Ok(lease) => lease,
                Err(none) => return Ok(Commit::No(none)),
            };
            let record = state::mark_in_progress(txn, &api, &lease.id, now)?.into_value();
            let payload = match &record {
                Some(r) if !r.status.is_final() => {
                    blob::get_in(txn, &crate::model::payload_key(&api, &lease.id))?
                }
                _ => None,
            };
            Ok(Commit::Yes(Popped::Item(Taken {
                lease,
                record,
                payload,
            })))
        })
        .await
    }

    async fn settle(
        &self,
        _record: &WorkloadRecord,
        lease: &Lease,
        payload_key: &str,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, JobsError> {
        let (lease, key) = (lease.clone(), payload_key.to_string());
        self.write(move |txn| {
            let (changed, won) =
                state::finish(txn, &lease.api, &lease.id, &outcome, now)?.into_parts();
            let (deleted, ()) = blob::delete(txn, &key)?.into_parts();
            let (acked, _) = queue::ack(txn, &lease)?.into_parts();
            Ok(Commit::new(changed || deleted || acked, won))
        })
        .await
    }
}
