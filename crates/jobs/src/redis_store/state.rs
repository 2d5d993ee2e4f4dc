use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;

use super::RedisStore;
use super::scripts::{CREATE, EXPIRE, TRANSITION};
use crate::error::JobsError;
use crate::model::{ApiName, Outcome, Status, StatusCounts, Timestamp, WorkloadId, WorkloadRecord};
use crate::traits::StateStore;

/// Records expired per script call, so one call never blocks Redis for long.
const EXPIRE_BATCH: usize = 500;

fn micros(t: SystemTime) -> u64 {
    let micros = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    u64::try_from(micros).unwrap_or(u64::MAX)
}

pub(super) fn encode(record: &WorkloadRecord) -> Result<Vec<u8>, JobsError> {
    serde_json::to_vec(record).map_err(|e| JobsError::Internal {
        message: format!("encoding record {}: {e}", record.id),
    })
}

pub(super) fn decode(bytes: &[u8]) -> Result<WorkloadRecord, JobsError> {
    serde_json::from_slice(bytes).map_err(|e| JobsError::Corrupt {
        what: format!("stored workload record: {e}"),
    })
}

/// ARGV 1 to 8 of the `TRANSITION` script (and of `SETTLE`, which starts with it).
pub(super) fn transition_args(
    old_raw: &[u8],
    old: &WorkloadRecord,
    new: &WorkloadRecord,
    result: Option<&Bytes>,
) -> Result<Vec<Vec<u8>>, JobsError> {
    let finished_score = new
        .finished_at
        .filter(|_| new.status.is_final())
        .map(|t| micros(t.system_time()).to_string())
        .unwrap_or_default();
    let member = format!("{}/{}/{}", new.api, new.status, new.id);
    let (has_result, result) = match result {
        Some(bytes) => (b"1".to_vec(), bytes.to_vec()),
        None => (b"0".to_vec(), Vec::new()),
    };
    Ok(vec![
        old_raw.to_vec(),
        encode(new)?,
        old.status.as_str().as_bytes().to_vec(),
        new.status.as_str().as_bytes().to_vec(),
        finished_score.into_bytes(),
        member.into_bytes(),
        has_result,
        result,
    ])
}

impl RedisStore {
    /// The stored JSON bytes (compared byte for byte by the transition script) and the record.
    pub(super) async fn load(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<(Vec<u8>, WorkloadRecord)>, JobsError> {
        let raw: Option<Vec<u8>> = self
            .conn()
            .get(self.record_key(api, id))
            .await
            .map_err(|e| self.err(e))?;
        raw.map(|raw| decode(&raw).map(|record| (raw, record)))
            .transpose()
    }

    /// Replaces `old` by `new` if the stored bytes are still `old`; `false` on a conflict.
    pub(super) async fn transition(
        &self,
        old_raw: &[u8],
        old: &WorkloadRecord,
        new: &WorkloadRecord,
        result: Option<&Bytes>,
    ) -> Result<bool, JobsError> {
        let (api, id) = (&new.api, &new.id);
        let mut invocation = TRANSITION.prepare_invoke();
        invocation
            .key(self.record_key(api, id))
            .key(self.counts_key(api))
            .key(self.result_key(api, id))
            .key(self.finished_key());
        for arg in transition_args(old_raw, old, new, result)? {
            invocation.arg(arg);
        }
        let applied: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(applied == 1)
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn create(&self, record: &WorkloadRecord) -> Result<(), JobsError> {
        let created: i64 = CREATE
            .key(self.record_key(&record.api, &record.id))
            .key(self.counts_key(&record.api))
            .arg(encode(record)?)
            .arg(record.status.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        if created == 1 {
            Ok(())
        } else {
            Err(JobsError::AlreadyExists {
                api: record.api.clone(),
                id: record.id.clone(),
            })
        }
    }

    async fn get(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<WorkloadRecord>, JobsError> {
        Ok(self.load(api, id).await?.map(|(_, record)| record))
    }

    async fn mark_in_progress(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        now: Timestamp,
    ) -> Result<Option<WorkloadRecord>, JobsError> {
        loop {
            let Some((raw, record)) = self.load(api, id).await? else {
                return Ok(None);
            };
            if record.status.is_final() {
                return Ok(Some(record));
            }
            let mut started = record.clone();
            started.start(now);
            if self.transition(&raw, &record, &started, None).await? {
                return Ok(Some(started));
            }
        }
    }

    async fn finish(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, JobsError> {
        loop {
            let Some((raw, record)) = self.load(api, id).await? else {
                return Ok(false);
            };
            if record.status.is_final() {
                return Ok(false);
            }
            let mut finished = record.clone();
            finished.finish(&outcome, now);
            let result = match &outcome {
                Outcome::Completed { result } => Some(result),
                _ => None,
            };
            if self.transition(&raw, &record, &finished, result).await? {
                return Ok(true);
            }
        }
    }

    async fn result(&self, api: &ApiName, id: &WorkloadId) -> Result<Option<Bytes>, JobsError> {
        let raw: Option<Vec<u8>> = self
            .conn()
            .get(self.result_key(api, id))
            .await
            .map_err(|e| self.err(e))?;
        Ok(raw.map(Bytes::from))
    }

    async fn get_with_result(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<(WorkloadRecord, Option<Bytes>)>, JobsError> {
        // Both keys in one round trip. The result is written in the same script that makes
        // the record `completed`, so a completed record read here comes with its result.
        let (raw, result): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("MGET")
            .arg(self.record_key(api, id))
            .arg(self.result_key(api, id))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let record = decode(&raw)?;
        let result = result
            .filter(|_| record.status == Status::Completed)
            .map(Bytes::from);
        Ok(Some((record, result)))
    }

    async fn expire(
        &self,
        older_than: SystemTime,
    ) -> Result<Vec<(ApiName, WorkloadId)>, JobsError> {
        let mut expired = Vec::new();
        loop {
            let members: Vec<String> = EXPIRE
                .key(self.finished_key())
                .arg(micros(older_than))
                .arg(&self.prefix)
                .arg(EXPIRE_BATCH)
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| self.err(e))?;
            let done = members.len() < EXPIRE_BATCH;
            for member in members {
                let mut parts = member.split('/');
                let (Some(api), Some(_), Some(id)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if let (Ok(api), Ok(id)) = (ApiName::parse(api), WorkloadId::parse(id)) {
                    expired.push((api, id));
                }
            }
            if done {
                return Ok(expired);
            }
        }
    }

    async fn counts(&self, api: &ApiName) -> Result<StatusCounts, JobsError> {
        let stored: HashMap<String, i64> = self
            .conn()
            .hgetall(self.counts_key(api))
            .await
            .map_err(|e| self.err(e))?;
        let mut counts = StatusCounts::default();
        for status in Status::ALL {
            let n = stored.get(status.as_str()).copied().unwrap_or(0);
            *counts.get_mut(status) = u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }
}
