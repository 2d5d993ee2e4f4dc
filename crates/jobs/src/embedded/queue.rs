use std::time::Duration;

use async_trait::async_trait;
use redb::{ReadableTable, WriteTransaction};

use super::writer::Tx;

use super::tables::{DEADLINES, LEASES, QUEUED, READY};
use super::{Commit, EmbeddedBackend, TxError, millis, now_millis};
use crate::error::JobsError;
use crate::model::{ApiName, Deliveries, Lease, Popped, QueueStats, WorkloadId};
use crate::traits::Queue;

#[async_trait]
impl Queue for EmbeddedBackend {
    async fn push(&self, api: &ApiName, id: &WorkloadId) -> Result<(), JobsError> {
        let (api, id) = (api.clone(), id.clone());
        self.write(move |txn| push(txn, &api, &id)).await
    }

    async fn pop(
        &self,
        api: &ApiName,
        lease: Duration,
        deliveries: Deliveries,
    ) -> Result<Popped<Lease>, JobsError> {
        if !self.maybe_visible(api)? {
            return Ok(Popped::Empty);
        }
        let api = api.clone();
        self.write_lazy(move |txn| pop(txn, &api, lease, deliveries))
            .await
    }

    async fn extend(&self, lease: &Lease, by: Duration) -> Result<(), JobsError> {
        let lease = lease.clone();
        self.write_lazy(move |txn| {
            let Some((_, old_deadline, attempt)) = held(txn, &lease)? else {
                return Err(JobsError::LeaseLost {
                    api: lease.api.clone(),
                    id: lease.id.clone(),
                }
                .into());
            };
            let deadline = now_millis().saturating_add(millis(by));
            let (api, id) = (lease.api.as_str(), lease.id.as_str());
            move_deadline(
                txn,
                api,
                id,
                (old_deadline, deadline),
                &lease.token,
                attempt,
            )?;
            Ok(Commit::Yes(()))
        })
        .await
    }

    async fn ack(&self, lease: &Lease) -> Result<bool, JobsError> {
        let lease = lease.clone();
        self.write_lazy(move |txn| ack(txn, &lease)).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, JobsError> {
        let lease = lease.clone();
        self.write(move |txn| {
            let Some((_, deadline, attempt)) = held(txn, &lease)? else {
                return Ok(Commit::No(false));
            };
            let now = now_millis().min(deadline);
            let (api, id) = (lease.api.as_str(), lease.id.as_str());
            // Held by nobody: tokens are never empty.
            move_deadline(txn, api, id, (deadline, now), "", attempt)?;
            Ok(Commit::Yes(true))
        })
        .await
    }

    async fn remove(&self, api: &ApiName, id: &WorkloadId) -> Result<bool, JobsError> {
        let (api, id) = (api.clone(), id.clone());
        self.write(move |txn| {
            let seq = txn
                .open_table(QUEUED)?
                .remove((api.as_str(), id.as_str()))?
                .map(|v| v.value());
            let Some(seq) = seq else {
                return Ok(Commit::No(false));
            };
            txn.open_table(READY)?.remove((api.as_str(), seq))?;
            Ok(Commit::Yes(true))
        })
        .await
    }

    async fn stats(&self, api: &ApiName) -> Result<QueueStats, JobsError> {
        // Readiness reads these: a file that takes no more writes is not ready.
        self.writer.check()?;
        let api = api.clone();
        self.read(move |txn| {
            let now = now_millis();
            let mut stats = QueueStats::default();
            let mut oldest: Option<u64> = None;
            let ready = txn.open_table(READY)?;
            for entry in ready.range((api.as_str(), 0)..=(api.as_str(), u64::MAX))? {
                let (_, value) = entry?;
                let (_, since) = value.value();
                stats.queued += 1;
                oldest = Some(oldest.map_or(since, |o| o.min(since)));
            }
            let deadlines = txn.open_table(DEADLINES)?;
            for entry in deadlines.range((api.as_str(), 0, "")..=(api.as_str(), u64::MAX, ""))? {
                let (key, _) = entry?;
                let (_, deadline, _) = key.value();
                if deadline <= now {
                    // Expired: visible again, waiting since its deadline.
                    stats.queued += 1;
                    oldest = Some(oldest.map_or(deadline, |o| o.min(deadline)));
                } else {
                    stats.in_flight += 1;
                }
            }
            stats.oldest_queued_age =
                oldest.map(|since| Duration::from_millis(now.saturating_sub(since)));
            Ok(stats)
        })
        .await
    }
}

impl EmbeddedBackend {
    /// Whether `api` has a visible item, as of a read transaction: a pop finding nothing
    /// (an idle worker polling) is answered from it, without a write transaction. An item
    /// pushed meanwhile is found by the next poll, as if the pop had come a moment earlier.
    pub(super) fn maybe_visible(&self, api: &ApiName) -> Result<bool, JobsError> {
        self.lookup(|txn| {
            let api = api.as_str();
            if txn
                .open_table(READY)?
                .range((api, 0)..=(api, u64::MAX))?
                .next()
                .is_some()
            {
                return Ok(true);
            }
            let now = now_millis();
            let expired = txn
                .open_table(DEADLINES)?
                .range((api, 0, "")..(api, now.saturating_add(1), ""))?
                .next()
                .is_some();
            Ok(expired)
        })
    }
}

/// [`Queue::push`] inside `txn`.
pub(super) fn push(txn: &Tx<'_>, api: &ApiName, id: &WorkloadId) -> Result<Commit<()>, TxError> {
    let key = (api.as_str(), id.as_str());
    let mut queued = txn.open_table(QUEUED)?;
    if queued.get(key)?.is_some() || txn.open_table(LEASES)?.get(key)?.is_some() {
        return Ok(Commit::No(()));
    }
    let seq = txn.next_seq();
    txn.open_table(READY)?
        .insert((api.as_str(), seq), (id.as_str(), now_millis()))?;
    queued.insert(key, seq)?;
    Ok(Commit::Yes(()))
}

/// [`Queue::pop`] inside `txn`.
pub(super) fn pop(
    txn: &Tx<'_>,
    api: &ApiName,
    lease: Duration,
    deliveries: Deliveries,
) -> Result<Commit<Popped<Lease>>, TxError> {
    let now = now_millis();
    let expired = match first_expired(txn, api, now)? {
        Some(_) if deliveries == Deliveries::FirstOnly => {
            return Ok(Commit::No(Popped::RedeliveryWaiting));
        }
        Some((deadline, id)) => Some(take_expired(txn, api, deadline, id)?),
        None => None,
    };
    let taken = match expired {
        Some(taken) => Some(taken),
        None => take_ready(txn, api)?,
    };
    let Some((id, attempt)) = taken else {
        // Nothing changed: abort instead of paying an fsync per empty poll.
        return Ok(Commit::No(Popped::Empty));
    };
    let token = txn.next_seq().to_string();
    let deadline = now.saturating_add(millis(lease));
    txn.open_table(LEASES)?.insert(
        (api.as_str(), id.as_str()),
        (token.as_str(), deadline, attempt),
    )?;
    txn.open_table(DEADLINES)?
        .insert((api.as_str(), deadline, id.as_str()), ())?;
    let id = parse_id(&id)?;
    Ok(Commit::Yes(Popped::Item(Lease {
        api: api.clone(),
        id,
        token,
        attempt,
    })))
}

/// [`Queue::ack`] inside `txn`.
pub(super) fn ack(txn: &Tx<'_>, lease: &Lease) -> Result<Commit<bool>, TxError> {
    let Some((_, deadline, _)) = held(txn, lease)? else {
        return Ok(Commit::No(false));
    };
    let (api, id) = (lease.api.as_str(), lease.id.as_str());
    txn.open_table(LEASES)?.remove((api, id))?;
    txn.open_table(DEADLINES)?.remove((api, deadline, id))?;
    Ok(Commit::Yes(true))
}

/// The earliest expired lease of `api`: (deadline, id).
fn first_expired(txn: &Tx<'_>, api: &ApiName, now: u64) -> Result<Option<(u64, String)>, TxError> {
    let deadlines = txn.open_table(DEADLINES)?;
    let first = deadlines
        .range((api.as_str(), 0, "")..(api.as_str(), now.saturating_add(1), ""))?
        .next()
        .transpose()?
        .map(|(key, _)| {
            let (_, deadline, id) = key.value();
            (deadline, id.to_string())
        });
    Ok(first)
}

/// Removes the expired lease of `id` (from [`first_expired`]), returning (id, next attempt).
fn take_expired(
    txn: &Tx<'_>,
    api: &ApiName,
    deadline: u64,
    id: String,
) -> Result<(String, u32), TxError> {
    txn.open_table(DEADLINES)?
        .remove((api.as_str(), deadline, id.as_str()))?;
    let attempt = txn
        .open_table(LEASES)?
        .get((api.as_str(), id.as_str()))?
        .map(|v| v.value().2);
    let Some(attempt) = attempt else {
        return Err(corrupt(format!("deadline without lease for {api}/{id}")));
    };
    Ok((id, attempt.saturating_add(1)))
}

/// Removes the first never-popped item of `api`, returning (id, attempt 1).
fn take_ready(txn: &Tx<'_>, api: &ApiName) -> Result<Option<(String, u32)>, TxError> {
    let mut ready = txn.open_table(READY)?;
    let first = ready
        .range((api.as_str(), 0)..=(api.as_str(), u64::MAX))?
        .next()
        .transpose()?
        .map(|(key, value)| {
            let (_, seq) = key.value();
            (seq, value.value().0.to_string())
        });
    let Some((seq, id)) = first else {
        return Ok(None);
    };
    ready.remove((api.as_str(), seq))?;
    txn.open_table(QUEUED)?
        .remove((api.as_str(), id.as_str()))?;
    Ok(Some((id, 1)))
}

/// Makes every lease that has not run out yet run out `now`, and returns how many: for
/// [`EmbeddedBackend::open_store`](super::EmbeddedBackend::open_store), where all of them
/// belong to a process that is gone (redb lets one process at a time open the file), so
/// what it held is delivered again at once instead of when its leases would have run out.
pub(super) fn expire_all_leases(txn: &WriteTransaction, now: u64) -> Result<usize, TxError> {
    let mut held = Vec::new();
    for entry in txn.open_table(DEADLINES)?.iter()? {
        let (key, _) = entry?;
        let (api, deadline, id) = key.value();
        if deadline > now {
            held.push((api.to_string(), deadline, id.to_string()));
        }
    }
    for (api, deadline, id) in &held {
        let (api, id) = (api.as_str(), id.as_str());
        let lease = txn.open_table(LEASES)?.get((api, id))?.map(|v| {
            let (token, _, attempt) = v.value();
            (token.to_string(), attempt)
        });
        let Some((token, attempt)) = lease else {
            return Err(corrupt(format!("deadline without lease for {api}/{id}")));
        };
        // Ties (all of them, now) are taken in id order: UUID v7 ids, submission order.
        move_deadline(txn, api, id, (*deadline, now), &token, attempt)?;
    }
    Ok(held.len())
}

/// Moves the lease of `api`/`id` from deadline `from` to `to`, held by `token` (`""`: by
/// nobody), keeping LEASES and DEADLINES in step.
fn move_deadline(
    txn: &WriteTransaction,
    api: &str,
    id: &str,
    (from, to): (u64, u64),
    token: &str,
    attempt: u32,
) -> Result<(), TxError> {
    let mut deadlines = txn.open_table(DEADLINES)?;
    deadlines.remove((api, from, id))?;
    deadlines.insert((api, to, id), ())?;
    txn.open_table(LEASES)?
        .insert((api, id), (token, to, attempt))?;
    Ok(())
}

/// The stored lease (token, deadline, attempt) if `lease` is still the current holder.
fn held(txn: &Tx<'_>, lease: &Lease) -> Result<Option<(String, u64, u32)>, TxError> {
    let leases = txn.open_table(LEASES)?;
    let stored = leases
        .get((lease.api.as_str(), lease.id.as_str()))?
        .map(|v| {
            let (token, deadline, attempt) = v.value();
            (token.to_string(), deadline, attempt)
        });
    Ok(stored.filter(|(token, _, _)| *token == lease.token))
}

fn parse_id(id: &str) -> Result<WorkloadId, TxError> {
    WorkloadId::parse(id).map_err(|e| corrupt(format!("queued id: {e}")))
}

pub(super) fn corrupt(what: String) -> TxError {
    TxError::Jobs(JobsError::Corrupt { what })
}
