use std::time::Duration;

use async_trait::async_trait;

use super::RedisStore;
use super::scripts::{ACK, EXTEND, POP, PUSH, REMOVE, STATS};
use crate::error::JobsError;
use crate::model::{ApiName, Lease, QueueStats, WorkloadId};
use crate::traits::Queue;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Queue for RedisStore {
    async fn push(&self, api: &ApiName, id: &WorkloadId) -> Result<(), JobsError> {
        let _: i64 = PUSH
            .key(self.queue_key(api, "ready"))
            .key(self.queue_key(api, "leases"))
            .key(self.queue_key(api, "since"))
            .key(self.seq_key())
            .arg(id.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn pop(&self, api: &ApiName, lease: Duration) -> Result<Option<Lease>, JobsError> {
        let popped: Option<(String, String, u32)> = POP
            .key(self.queue_key(api, "ready"))
            .key(self.queue_key(api, "leases"))
            .key(self.queue_key(api, "since"))
            .key(self.seq_key())
            .key(self.queue_key(api, "lease"))
            .arg(millis(lease))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        let Some((id, token, attempt)) = popped else {
            return Ok(None);
        };
        let id = WorkloadId::parse(&id).map_err(|e| JobsError::Corrupt {
            what: format!("queue entry of api {api}: {e}"),
        })?;
        Ok(Some(Lease {
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

    async fn ack(&self, lease: &Lease) -> Result<bool, JobsError> {
        let held: i64 = ACK
            .key(self.queue_key(&lease.api, "leases"))
            .key(self.queue_key(&lease.api, "lease"))
            .arg(lease.id.as_str())
            .arg(&lease.token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(held == 1)
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
}
