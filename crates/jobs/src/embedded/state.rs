use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use redb::ReadableTable;

use super::writer::Tx;

use super::queue::corrupt;
use super::tables::{FINISHED, RECORDS, RESULTS};
use super::{Commit, EmbeddedBackend, TxError};
use crate::error::JobsError;
use crate::model::{ApiName, Outcome, StatusCounts, Timestamp, WorkloadId, WorkloadRecord};
use crate::traits::StateStore;

/// Final records removed per transaction by `expire`, so one retention pass over a large
/// backlog does not hold the single writer for long.
const EXPIRE_BATCH: usize = 1000;

#[async_trait]
impl StateStore for EmbeddedBackend {
    async fn create(&self, record: &WorkloadRecord) -> Result<(), JobsError> {
        let record = record.clone();
        self.write(move |txn| create(txn, &record)).await
    }

    async fn get(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<WorkloadRecord>, JobsError> {
        self.lookup(|txn| {
            let records = txn.open_table(RECORDS)?;
            let stored = records.get((api.as_str(), id.as_str()))?;
            stored.map(|v| decode(v.value())).transpose()
        })
    }

    async fn mark_in_progress(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        now: Timestamp,
    ) -> Result<Option<WorkloadRecord>, JobsError> {
        let (api, id) = (api.clone(), id.clone());
        self.write_lazy(move |txn| mark_in_progress(txn, &api, &id, now))
            .await
    }

    async fn finish(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, JobsError> {
        let (api, id) = (api.clone(), id.clone());
        self.write(move |txn| finish(txn, &api, &id, &outcome, now))
            .await
    }

    async fn result(&self, api: &ApiName, id: &WorkloadId) -> Result<Option<Bytes>, JobsError> {
        self.lookup(|txn| {
            let results = txn.open_table(RESULTS)?;
            let stored = results.get((api.as_str(), id.as_str()))?;
            Ok(stored.map(|v| Bytes::copy_from_slice(v.value())))
        })
    }

    async fn expire(
        &self,
        older_than: SystemTime,
    ) -> Result<Vec<(ApiName, WorkloadId)>, JobsError> {
        let cutoff = Timestamp::from_system_time(older_than).unix_millis();
        let mut expired = Vec::new();
        loop {
            let batch = self
                .write(move |txn| {
                    let batch = expire_batch(txn, cutoff)?;
                    Ok(if batch.is_empty() {
                        Commit::No(batch)
                    } else {
                        Commit::Yes(batch)
                    })
                })
                .await?;
            let done = batch.len() < EXPIRE_BATCH;
            expired.extend(batch);
            if done {
                return Ok(expired);
            }
        }
    }

    async fn counts(&self, api: &ApiName) -> Result<StatusCounts, JobsError> {
        // Kept in memory by the writer (see `writer.rs`): no disk read.
        Ok(self.counters().status_counts(api.as_str()))
    }
}

/// [`StateStore::create`] inside `txn`.
pub(super) fn create(txn: &Tx<'_>, record: &WorkloadRecord) -> Result<Commit<()>, TxError> {
    let key = (record.api.as_str(), record.id.as_str());
    let mut records = txn.open_table(RECORDS)?;
    if records.get(key)?.is_some() {
        return Err(JobsError::AlreadyExists {
            api: record.api.clone(),
            id: record.id.clone(),
        }
        .into());
    }
    records.insert(key, encode(record)?.as_slice())?;
    txn.bump(record.api.as_str(), record.status, 1);
    Ok(Commit::Yes(()))
}

/// [`StateStore::mark_in_progress`] inside `txn`.
pub(super) fn mark_in_progress(
    txn: &Tx<'_>,
    api: &ApiName,
    id: &WorkloadId,
    now: Timestamp,
) -> Result<Commit<Option<WorkloadRecord>>, TxError> {
    let Some(mut record) = load(txn, api, id)? else {
        return Ok(Commit::No(None));
    };
    if record.status.is_final() {
        return Ok(Commit::No(Some(record)));
    }
    let before = record.status;
    record.start(now);
    store(txn, &record)?;
    if before != record.status {
        txn.bump(api.as_str(), before, -1);
        txn.bump(api.as_str(), record.status, 1);
    }
    Ok(Commit::Yes(Some(record)))
}

/// [`StateStore::finish`] inside `txn`.
pub(super) fn finish(
    txn: &Tx<'_>,
    api: &ApiName,
    id: &WorkloadId,
    outcome: &Outcome,
    now: Timestamp,
) -> Result<Commit<bool>, TxError> {
    let Some(mut record) = load(txn, api, id)? else {
        return Ok(Commit::No(false));
    };
    if record.status.is_final() {
        return Ok(Commit::No(false));
    }
    let before = record.status;
    record.finish(outcome, now);
    store(txn, &record)?;
    txn.bump(api.as_str(), before, -1);
    txn.bump(api.as_str(), record.status, 1);
    if let Outcome::Completed { result } = outcome {
        txn.open_table(RESULTS)?
            .insert((api.as_str(), id.as_str()), result.as_ref())?;
    }
    txn.open_table(FINISHED)?
        .insert((now.unix_millis(), api.as_str(), id.as_str()), ())?;
    Ok(Commit::Yes(true))
}

fn expire_batch(txn: &Tx<'_>, cutoff: u64) -> Result<Vec<(ApiName, WorkloadId)>, TxError> {
    let mut finished = txn.open_table(FINISHED)?;
    let mut keys = Vec::new();
    for entry in finished
        .range((0, "", "")..(cutoff, "", ""))?
        .take(EXPIRE_BATCH)
    {
        let (key, _) = entry?;
        let (at, api, id) = key.value();
        keys.push((at, api.to_string(), id.to_string()));
    }
    let mut records = txn.open_table(RECORDS)?;
    let mut results = txn.open_table(RESULTS)?;
    let mut expired = Vec::with_capacity(keys.len());
    for (at, api, id) in keys {
        finished.remove((at, api.as_str(), id.as_str()))?;
        let removed = records
            .remove((api.as_str(), id.as_str()))?
            .map(|v| decode(v.value()))
            .transpose()?;
        results.remove((api.as_str(), id.as_str()))?;
        if let Some(record) = removed {
            txn.bump(record.api.as_str(), record.status, -1);
            expired.push((record.api, record.id));
        }
    }
    Ok(expired)
}

fn load(txn: &Tx<'_>, api: &ApiName, id: &WorkloadId) -> Result<Option<WorkloadRecord>, TxError> {
    let records = txn.open_table(RECORDS)?;
    let stored = records.get((api.as_str(), id.as_str()))?;
    stored.map(|v| decode(v.value())).transpose()
}

fn store(txn: &Tx<'_>, record: &WorkloadRecord) -> Result<(), TxError> {
    txn.open_table(RECORDS)?.insert(
        (record.api.as_str(), record.id.as_str()),
        encode(record)?.as_slice(),
    )?;
    Ok(())
}

fn encode(record: &WorkloadRecord) -> Result<Vec<u8>, TxError> {
    serde_json::to_vec(record).map_err(|e| corrupt(format!("encoding record {}: {e}", record.id)))
}

fn decode(bytes: &[u8]) -> Result<WorkloadRecord, TxError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(format!("stored workload record: {e}")))
}
