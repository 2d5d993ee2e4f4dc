use std::time::Duration;

use async_trait::async_trait;

use super::RedisStore;
use super::scripts::{ACK, EXTEND, POP, PUSH, RELEASE, REMOVE, STATS};
use crate::error::JobsError;
use redis::{FromRedisValue, ParsingError, Script, Value};

use crate::model::{ApiName, Deliveries, Lease, Popped, QueueStats, WorkloadId};
use crate::traits::Queue;

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `first only` argument of the pop scripts.
pub(super) fn first_only_arg(deliveries: Deliveries) -> &'static str {
    match deliveries {
        Deliveries::Any => "0",
        Deliveries::FirstOnly => "1",
    }
}

/// The reply of a pop script: nil when nothing is visible, 0 when a redelivery was left
/// (first deliveries only), else the script's item.
pub(super) struct PopReply<T>(pub(super) Popped<T>);

impl<T: FromRedisValue> FromRedisValue for PopReply<T> {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(PopReply(match v {
            Value::Nil | Value::Boolean(false) => Popped::Empty,
            Value::Int(0) => Popped::RedeliveryWaiting,
            item => Popped::Item(T::from_redis_value(item)?),
        }))
    }
}

impl RedisStore {
    /// Runs `script` (KEYS: leases, lease info; ARGV: id, token) on `lease`: whether the
    /// lease was still held, and so changed.
    async fn on_held_lease(&self, script: &Script, lease: &Lease) -> Result<bool, JobsError> {
        let held: i64 = script
            .key(self.queue_key(&lease.api, "leases"))
            .key(self.queue_key(&lease.api, "lease"))
            .arg(lease.id.as_str())
            .arg(&lease.token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(held == 1)
    }
}

#[async_trait]
impl Queue for RedisStore {
    async fn push(&self, api: &ApiName, id: &WorkloadId) -> Result<(), JobsError> {
        let _: i64 = PUSH
            .key(self.queue_key(api, "ready"))
            .key(self.queue_key(api, "leases"))
            .key(self.queue_key(api, "since"))
            .key(self.seq_key())
            .key(self.queue_key(api, "wake"))
            .arg(id.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn pop(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
    ) -> Result<Popped<Lease>, JobsError> {
        let PopReply(popped) = POP
            .key(self.queue_key(api, "ready"))
            .key(self.queue_key(api, "leases"))
            .key(self.queue_key(api, "since"))
            .key(self.seq_key())
            .key(self.queue_key(api, "lease"))
            .arg(millis(lease))
            .arg(first_only_arg(deliveries))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        let (id, token, attempt): (String, String, u32) = match popped.item() {
            Ok(item) => item,
            Err(none) => return Ok(none),
        };
        let id = WorkloadId::parse(&id).map_err(|e| JobsError::Corrupt {
            what: format!("queue entry of api {api}: {e}"),
        })?;
        Ok(Popped::Item(Lease {
            api: api.clone(),
            id,
            token,
            attempt,
        }))
    }

    async fn extend(&self, lease: &Lease, by: Duration) -> Result<(), JobsError> {
        let held: i64 = EXTEND
            .key(self.queue_key(&lease.api, "leases"))
            .key(self.queue_key(&lease.api, "lease"))
            .arg(lease.id.as_str())
            .arg(&lease.token)
            .arg(millis(by))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        if held == 1 {
            Ok(())
        } else {
            Err(JobsError::LeaseLost {
                api: lease.api.clone(),
                id: lease.id.clone(),
            })
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, JobsError> {
        self.on_held_lease(&RELEASE, lease).await
    }

    async fn ack(&self, lease: &Lease) -> Result<bool, JobsError> {
        self.on_held_lease(&ACK, lease).await
    }

    async fn remove(&self, api: &ApiName, id: &WorkloadId) -> Result<bool, JobsError> {
        let removed: i64 = REMOVE
            .key(self.queue_key(api, "ready"))
            .key(self.queue_key(api, "since"))
            .arg(id.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed == 1)
    }

    async fn stats(&self, api: &ApiName) -> Result<QueueStats, JobsError> {
        let (queued, in_flight, age): (i64, i64, i64) = STATS
            .key(self.queue_key(api, "ready"))
            .key(self.queue_key(api, "leases"))
            .key(self.queue_key(api, "since"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(QueueStats {
            queued: u64::try_from(queued).unwrap_or(0),
            in_flight: u64::try_from(in_flight).unwrap_or(0),
            oldest_queued_age: u64::try_from(age).ok().map(Duration::from_millis),
        })
    }

    async fn wait_for_push(&self, api: &ApiName, timeout: Duration) -> Result<(), JobsError> {
        let mut conn = self.waiter(timeout).await?;
        let store = self.clone();
        let key = self.queue_key(api, "wake");
        // On a task of its own: if the caller stops waiting (woken in-process, shutdown),
        // the command still completes and the connection is reused rather than left with a
        // reply pending. Its token, if any, is then lost, which only delays another waiter
        // until its poll.
        let wait = tokio::spawn(async move {
            let popped: Result<Option<(String, String)>, _> = redis::cmd("BLPOP")
                .arg(&key)
                .arg(timeout.as_secs_f64().max(0.001))
                .query_async(&mut conn)
                .await;
            match popped {
                Ok(_) => {
                    store.return_waiter(conn);
                    Ok(())
                }
                Err(e) => Err(store.err(e)),
            }
        });
        wait.await.map_err(|e| JobsError::Internal {
            message: format!("waiting for a push: {e}"),
        })?
    }
}
