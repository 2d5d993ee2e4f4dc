//! [`RedisSteps`]: [`Backend`](crate::Backend)'s sequences on Redis (+ S3 for large
//! payloads) in as few round trips as the Rust record transitions allow.
//!
//! Step by step, a workload costs 5 Redis round trips to submit, 4 to claim and 5 to settle;
//! on two shared cores that command traffic, not the handler, bounded a worker process. Here:
//!
//! * submit ([`ENQUEUE`]): payload, record and queue entry in one script;
//! * claim ([`TAKE`]): pop with record and payload in one script, then the compare-and-set
//!   to `in_progress` (the transition itself stays the shared Rust code);
//! * settle ([`SETTLE`]): the compare-and-set to the final status against the record the
//!   claim stored (no read), the payload delete and the ack in one script.
//!
//! Each script does what the steps did, in the same order, atomically; whenever its
//! precondition does not hold (a record changed by someone else, a payload in S3, a leftover
//! payload under a reused id) nothing is written and the step-by-step sequence runs instead,
//! so outcomes are those of the steps (the conformance suite runs on this path).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::RedisStore;
use super::queue::{PopReply, first_only_arg};
use super::scripts::{ENQUEUE, SETTLE, TAKE};
use super::state::{decode, encode, transition_args};
use crate::error::JobsError;
use crate::model::{
    ApiName, Deliveries, Lease, Outcome, Popped, Timestamp, WorkloadId, WorkloadRecord, payload_key,
};
use crate::tiered::IN_LARGE_STORE;
use crate::traits::{AtomicSteps, BlobStore, Queue, StateStore, Taken};

/// The Redis store with the tiered payload store built on it.
#[derive(Debug)]
pub(crate) struct RedisSteps {
    pub(crate) redis: Arc<RedisStore>,
    /// Small payloads in `redis`, large ones in S3 ([`TieredBlobStore`](crate::TieredBlobStore)).
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// The large store alone.
    pub(crate) large: Arc<dyn BlobStore>,
    pub(crate) inline_limit: usize,
}

type TakeReply = (
    String,
    String,
    u32,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

impl RedisSteps {
    /// The Redis key of a payload is `<prefix><id><suffix>`.
    fn blob_prefix_suffix(&self, api: &ApiName) -> (String, String) {
        let probe = WorkloadId::random();
        let key = payload_key(api, &probe);
        let (before, after) = key
            .split_once(probe.as_str())
            .expect("a payload key contains the id");
        (self.redis.blob_key(before), after.to_string())
    }
}

#[async_trait]
impl AtomicSteps for RedisSteps {
    async fn enqueue(
        &self,
        record: &WorkloadRecord,
        payload_key: &str,
        payload: Bytes,
    ) -> Result<(), JobsError> {
        let redis = &self.redis;
        let (api, id) = (&record.api, &record.id);
        if payload.len() <= self.inline_limit {
            let created: i64 = ENQUEUE
                .key(redis.record_key(api, id))
                .key(redis.counts_key(api))
                .key(redis.blob_key(payload_key))
                .key(redis.queue_key(api, "ready"))
                .key(redis.queue_key(api, "leases"))
                .key(redis.queue_key(api, "since"))
                .key(redis.seq_key())
                .key(redis.queue_key(api, "wake"))
                .arg(encode(record)?)
                .arg(record.status.as_str())
                .arg(record.content_type.as_str())
                .arg(payload.as_ref())
                .arg(id.as_str())
                .invoke_async(&mut redis.conn())
                .await
                .map_err(|e| redis.err(e))?;
            match created {
                1 => return Ok(()),
                0 => {
                    return Err(JobsError::AlreadyExists {
                        api: api.clone(),
                        id: id.clone(),
                    });
                }
                _ => {}
            }
        }
        // A large payload, or one left under this key: the steps of `Backend::submit_with_id`.
        if redis.load(api, id).await?.is_some() {
            return Err(JobsError::AlreadyExists {
                api: api.clone(),
                id: id.clone(),
            });
        }
        self.blobs
            .put(payload_key, payload, &record.content_type)
            .await?;
        redis.create(record).await?;
        redis.push(api, id).await
    }

    async fn take(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
        now: Timestamp,
    ) -> Result<Popped<Taken>, JobsError> {
        let redis = &self.redis;
        let (blob_prefix, blob_suffix) = self.blob_prefix_suffix(api);
        let PopReply(popped) = TAKE
            .key(redis.queue_key(api, "ready"))
            .key(redis.queue_key(api, "leases"))
            .key(redis.queue_key(api, "since"))
            .key(redis.seq_key())
            .key(redis.queue_key(api, "lease"))
            .arg(super::queue::millis(lease))
            .arg(redis.record_key_prefix(api))
            .arg(blob_prefix)
            .arg(blob_suffix)
            .arg(first_only_arg(deliveries))
            .invoke_async(&mut redis.conn())
            .await
            .map_err(|e| redis.err(e))?;
        let (id, token, attempt, raw, content_type, body): TakeReply = match popped.item() {
            Ok(item) => item,
            Err(none) => return Ok(none),
        };
        let id = WorkloadId::parse(&id).map_err(|e| JobsError::Corrupt {
            what: format!("queue entry of api {api}: {e}"),
        })?;
        let lease = Lease {
            api: api.clone(),
            id,
            token,
            attempt,
        };
        let Some(raw) = raw else {
            return Ok(Popped::Item(Taken {
                lease,
                record: None,
                payload: None,
            }));
        };
        let record = decode(&raw)?;
        if record.status.is_final() {
            return Ok(Popped::Item(Taken {
                lease,
                record: Some(record),
                payload: None,
            }));
        }
        let mut started = record.clone();
        started.start(now);
        let record = if redis.transition(&raw, &record, &started, None).await? {
            Some(started)
        } else {
            // Changed since the pop (e.g. cancelled): the step, which re-reads.
            redis.mark_in_progress(api, &lease.id, now).await?
        };
        let key = payload_key(api, &lease.id);
        let payload = match (&record, content_type, body) {
            (Some(r), _, _) if r.status.is_final() => None,
            (None, _, _) => None,
            (Some(_), Some(ct), _) if ct == IN_LARGE_STORE.as_bytes() => {
                self.large.get(&key).await?
            }
            (Some(_), Some(ct), Some(body)) => {
                Some((Bytes::from(body), String::from_utf8_lossy(&ct).into_owned()))
            }
            (Some(_), _, _) => None,
        };
        Ok(Popped::Item(Taken {
            lease,
            record,
            payload,
        }))
    }

    async fn settle(
        &self,
        record: &WorkloadRecord,
        lease: &Lease,
        payload_key: &str,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, JobsError> {
        let redis = &self.redis;
        let (api, id) = (&lease.api, &lease.id);
        if !record.status.is_final() && record.api == *api && record.id == *id {
            let mut finished = record.clone();
            finished.finish(&outcome, now);
            let result = match &outcome {
                Outcome::Completed { result } => Some(result),
                _ => None,
            };
            let mut invocation = SETTLE.prepare_invoke();
            invocation
                .key(redis.record_key(api, id))
                .key(redis.counts_key(api))
                .key(redis.result_key(api, id))
                .key(redis.finished_key())
                .key(redis.blob_key(payload_key))
                .key(redis.queue_key(api, "leases"))
                .key(redis.queue_key(api, "lease"));
            for arg in transition_args(&encode(record)?, record, &finished, result)? {
                invocation.arg(arg);
            }
            invocation
                .arg(id.as_str())
                .arg(&lease.token)
                .arg(IN_LARGE_STORE);
            let settled: i64 = invocation
                .invoke_async(&mut redis.conn())
                .await
                .map_err(|e| redis.err(e))?;
            match settled {
                1 => return Ok(true),
                2 => {
                    self.blobs.delete(payload_key).await?;
                    redis.ack(lease).await?;
                    return Ok(true);
                }
                _ => {}
            }
        }
        // The record is not the one the claim stored: the steps of `Backend::complete`.
        let won = redis.finish(api, id, outcome, now).await?;
        self.blobs.delete(payload_key).await?;
        redis.ack(lease).await?;
        Ok(won)
    }
}
