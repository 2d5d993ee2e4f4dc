//! [`MemoryBackend`]: everything in one mutex-guarded map. **For tests only** (of this crate
//! and of gateway/worker crates): nothing survives the process, and scans are linear.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::Backend;
use crate::error::JobsError;
use crate::model::{
    ApiName, Deliveries, Lease, Outcome, Popped, QueueStats, StatusCounts, Timestamp, WorkloadId,
    WorkloadRecord,
};
use crate::traits::{BlobStore, Queue, StateStore};

type Key = (ApiName, WorkloadId);

/// In-memory queue, state store and blob store, with the same semantics as the embedded one.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// (api, seq) -> (id, queued since): never-popped items in FIFO order
    ready: BTreeMap<(ApiName, u64), (WorkloadId, SystemTime)>,
    queued: HashMap<Key, u64>,
    leases: HashMap<Key, MemLease>,
    records: HashMap<Key, WorkloadRecord>,
    results: HashMap<Key, Bytes>,
    blobs: HashMap<String, (Bytes, String)>,
}

#[derive(Debug)]
struct MemLease {
    token: String,
    deadline: SystemTime,
    attempt: u32,
}

impl MemoryBackend {
    /// A fresh, empty [`Backend`].
    pub fn backend() -> Backend {
        Backend::from_store(Arc::new(MemoryBackend::default()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not poison the store for the other tests' assertions.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

fn key(api: &ApiName, id: &WorkloadId) -> Key {
    (api.clone(), id.clone())
}

#[async_trait]
impl Queue for MemoryBackend {
    async fn push(&self, api: &ApiName, id: &WorkloadId) -> Result<(), JobsError> {
        let mut s = self.lock();
        let k = key(api, id);
        if s.queued.contains_key(&k) || s.leases.contains_key(&k) {
            return Ok(());
        }
        let seq = s.next_seq();
        s.ready
            .insert((api.clone(), seq), (id.clone(), SystemTime::now()));
        s.queued.insert(k, seq);
        Ok(())
    }

    async fn pop(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
    ) -> Result<Popped<Lease>, JobsError> {
        let mut s = self.lock();
        let now = SystemTime::now();
        let expired = s
            .leases
            .iter()
            .filter(|((a, _), l)| a == api && l.deadline <= now)
            .min_by_key(|(_, l)| l.deadline)
            .map(|((_, id), l)| (id.clone(), l.attempt));
        let (id, attempt) = match expired {
            Some(_) if deliveries == Deliveries::FirstOnly => {
                return Ok(Popped::RedeliveryWaiting);
            }
            Some((id, attempt)) => (id, attempt + 1),
            None => {
                let first = s
                    .ready
                    .range((api.clone(), 0)..=(api.clone(), u64::MAX))
                    .next()
                    .map(|((_, seq), (id, _))| (*seq, id.clone()));
                let Some((seq, id)) = first else {
                    return Ok(Popped::Empty);
                };
                s.ready.remove(&(api.clone(), seq));
                s.queued.remove(&key(api, &id));
                (id, 1)
            }
        };
        let token = s.next_seq().to_string();
        s.leases.insert(
            key(api, &id),
            MemLease {
                token: token.clone(),
                deadline: now + lease,
                attempt,
            },
        );
        Ok(Popped::Item(Lease {
            api: api.clone(),
            id,
            token,
            attempt,
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<bool, JobsError> {
        let mut s = self.lock();
        match s.leases.get_mut(&key(&lease.api, &lease.id)) {
            Some(held) if held.token == lease.token => {
                held.deadline = SystemTime::now();
                // Held by nobody: tokens are never empty.
                held.token = String::new();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn extend(&self, lease: &Lease, by: Duration) -> Result<(), JobsError> {
        let mut s = self.lock();
        match s.leases.get_mut(&key(&lease.api, &lease.id)) {
            Some(held) if held.token == lease.token => {
                held.deadline = SystemTime::now() + by;
                Ok(())
            }
            _ => Err(JobsError::LeaseLost {
                api: lease.api.clone(),
                id: lease.id.clone(),
            }),
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<bool, JobsError> {
        let mut s = self.lock();
        let k = key(&lease.api, &lease.id);
        if s.leases
            .get(&k)
            .is_some_and(|held| held.token == lease.token)
        {
            s.leases.remove(&k);
            return Ok(true);
        }
        Ok(false)
    }

    async fn remove(&self, api: &ApiName, id: &WorkloadId) -> Result<bool, JobsError> {
        let mut s = self.lock();
        let Some(seq) = s.queued.remove(&key(api, id)) else {
            return Ok(false);
        };
        s.ready.remove(&(api.clone(), seq));
        Ok(true)
    }

    async fn stats(&self, api: &ApiName) -> Result<QueueStats, JobsError> {
        let s = self.lock();
        let now = SystemTime::now();
        let mut stats = QueueStats::default();
        let mut oldest: Option<SystemTime> = None;
        for (_, since) in s
            .ready
            .range((api.clone(), 0)..=(api.clone(), u64::MAX))
            .map(|(_, v)| v)
        {
            stats.queued += 1;
            oldest = Some(oldest.map_or(*since, |o| o.min(*since)));
        }
        for ((a, _), l) in &s.leases {
            if a != api {
                continue;
            }
            if l.deadline <= now {
                stats.queued += 1;
                oldest = Some(oldest.map_or(l.deadline, |o| o.min(l.deadline)));
            } else {
                stats.in_flight += 1;
            }
        }
        stats.oldest_queued_age = oldest.map(|o| now.duration_since(o).unwrap_or_default());
        Ok(stats)
    }
}

#[async_trait]
impl StateStore for MemoryBackend {
    async fn create(&self, record: &WorkloadRecord) -> Result<(), JobsError> {
        let mut s = self.lock();
        let k = key(&record.api, &record.id);
        if s.records.contains_key(&k) {
            return Err(JobsError::AlreadyExists {
                api: record.api.clone(),
                id: record.id.clone(),
            });
        }
        s.records.insert(k, record.clone());
        Ok(())
    }

    async fn get(
        &self,
        api: &ApiName,
        id: &WorkloadId,
    ) -> Result<Option<WorkloadRecord>, JobsError> {
        Ok(self.lock().records.get(&key(api, id)).cloned())
    }

    async fn mark_in_progress(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        now: Timestamp,
    ) -> Result<Option<WorkloadRecord>, JobsError> {
        let mut s = self.lock();
        let Some(record) = s.records.get_mut(&key(api, id)) else {
            return Ok(None);
        };
        if !record.status.is_final() {
            record.start(now);
        }
        Ok(Some(record.clone()))
    }

    async fn finish(
        &self,
        api: &ApiName,
        id: &WorkloadId,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, JobsError> {
        let mut s = self.lock();
        let k = key(api, id);
        let Some(record) = s.records.get_mut(&k) else {
            return Ok(false);
        };
        if record.status.is_final() {
            return Ok(false);
        }
        record.finish(&outcome, now);
        if let Outcome::Completed { result } = outcome {
            s.results.insert(k, result);
        }
        Ok(true)
    }

    async fn result(&self, api: &ApiName, id: &WorkloadId) -> Result<Option<Bytes>, JobsError> {
        Ok(self.lock().results.get(&key(api, id)).cloned())
    }

    async fn expire(
        &self,
        older_than: SystemTime,
    ) -> Result<Vec<(ApiName, WorkloadId)>, JobsError> {
        let mut s = self.lock();
        let expired: Vec<Key> = s
            .records
            .iter()
            .filter(|(_, r)| r.finished_at.is_some_and(|t| t.system_time() < older_than))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            s.records.remove(k);
            s.results.remove(k);
        }
        Ok(expired)
    }

    async fn counts(&self, api: &ApiName) -> Result<StatusCounts, JobsError> {
        let s = self.lock();
        let mut counts = StatusCounts::default();
        for record in s.records.values().filter(|r| &r.api == api) {
            *counts.get_mut(record.status) += 1;
        }
        Ok(counts)
    }
}

#[async_trait]
impl BlobStore for MemoryBackend {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), JobsError> {
        self.lock()
            .blobs
            .insert(key.to_string(), (body, content_type.to_string()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, JobsError> {
        Ok(self.lock().blobs.get(key).cloned())
    }

    async fn delete(&self, key: &str) -> Result<(), JobsError> {
        self.lock().blobs.remove(key);
        Ok(())
    }
}
