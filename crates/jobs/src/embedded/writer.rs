//! Group commit: one thread applies the write operations of all callers, several per redb
//! transaction, and answers each caller only after that transaction is durably committed.
//!
//! Every redb commit is an fsync (about 0.3 ms on the development VM), and redb has a single
//! writer, so committing each operation on its own caps the store at a few thousand
//! operations per second however many workers and clients there are. Here, operations that
//! arrive while a commit is under way are applied together in the next transaction, one
//! after the other, exactly as if they had run in order, and share its fsync.
//!
//! Some operations need not be durable on their own (`Commitment::Lazy`): taking a lease, marking
//! a workload `in_progress`, renewing or acknowledging a lease. Losing them in a crash
//! leaves the workload queued again, which is what an expired lease does anyway. A batch of
//! only such operations commits without fsync; redb makes it durable with the next durable
//! commit, and the writer forces one when it has been idle for [`FLUSH_AFTER`], so a
//! delivery is recorded on disk within milliseconds (the attempt count that stops a payload
//! that crashes the process depends on it).
//!
//! If any operation of a batch fails, the transaction is aborted (nothing of it is visible)
//! and the operations are run again one per transaction, so one caller's error never becomes
//! another's. Operations are therefore `FnMut`: they may run twice, the first run discarded.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::time::Duration;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::TxError;
use crate::error::JobsError;

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 256;

/// Idle time after a lazy commit before the writer makes it durable.
const FLUSH_AFTER: Duration = Duration::from_millis(2);

/// Whether the caller must wait for the operation to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Commitment {
    /// Answered after the fsync.
    Durable,
    /// Answered once committed in memory; on disk with the next durable commit, at most
    /// [`FLUSH_AFTER`] of idleness later.
    Lazy,
}

/// A write operation: applies itself and says whether it changed anything.
type Operation = Box<dyn FnMut(&WriteTransaction) -> Result<bool, TxError> + Send>;

struct Pending {
    operation: Operation,
    commitment: Commitment,
    done: oneshot::Sender<Result<(), JobsError>>,
}

/// The writer thread and the channel to it. Dropping it stops and joins the thread, so the
/// database file is closed when the last handle to the store goes.
pub(super) struct Writer {
    sender: Option<mpsc::Sender<Pending>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> Result<Writer, TxError> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("soma-redb-writer".into())
            .spawn(move || run(&db, &receiver))
            .map_err(|e| TxError::Io("soma-redb-writer thread".into(), e))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Runs `operation` in the next group transaction; returns its value once committed.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        commitment: Commitment,
        mut operation: impl FnMut(&WriteTransaction) -> Result<(bool, T), TxError> + Send + 'static,
    ) -> Result<T, JobsError> {
        let slot: Arc<Mutex<Option<T>>> = Arc::default();
        let out = Arc::clone(&slot);
        let operation: Operation = Box::new(move |txn| {
            let (changed, value) = operation(txn)?;
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
            Ok(changed)
        });
        let (done, wait) = oneshot::channel();
        let stopped = || JobsError::Internal {
            message: "the redb writer thread stopped".into(),
        };
        let sender = self.sender.as_ref().ok_or_else(stopped)?;
        sender
            .send(Pending {
                operation,
                commitment,
                done,
            })
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())??;
        let value = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        value.ok_or_else(stopped)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, receiver: &mpsc::Receiver<Pending>) {
    // True while lazy commits are not yet on disk.
    let mut unsynced = false;
    loop {
        let first = if unsynced {
            match receiver.recv_timeout(FLUSH_AFTER) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    unsynced = !flush(db);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match receiver.recv() {
                Ok(first) => first,
                Err(_) => break,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // Everything in a batch is concurrent (no caller has been answered), so any order is
        // a valid one: lazy operations go first, in their own transaction, so that taking a
        // workload never waits behind another caller's fsync.
        let (lazy, durable): (Vec<Pending>, Vec<Pending>) = batch
            .into_iter()
            .partition(|p| p.commitment == Commitment::Lazy);
        for group in [lazy, durable] {
            if !group.is_empty() {
                unsynced = commit_group(db, group, unsynced);
            }
        }
    }
    if unsynced {
        flush(db);
    }
}

/// Commits `group` in one transaction and answers its callers; returns the new `unsynced`.
fn commit_group(db: &Database, mut group: Vec<Pending>, mut unsynced: bool) -> bool {
    if group.len() > 1
        && let Ok(outcome) = commit(db, &mut group)
    {
        group.into_iter().for_each(|p| drop(p.done.send(Ok(()))));
        return outcome.unsynced(unsynced);
    }
    // A single operation, or a group that failed: one transaction each.
    for mut pending in group {
        let result = commit(db, std::slice::from_mut(&mut pending));
        if let Ok(outcome) = &result {
            unsynced = outcome.unsynced(unsynced);
        }
        let _ = pending.done.send(result.map(drop).map_err(JobsError::from));
    }
    unsynced
}

/// What a transaction did, for the writer's bookkeeping.
#[derive(Debug, Clone, Copy)]
enum Committed {
    Nothing,
    Lazily,
    Durably,
}

impl Committed {
    /// Whether lazy commits are pending on disk after this one.
    fn unsynced(self, before: bool) -> bool {
        match self {
            Committed::Nothing => before,
            Committed::Lazily => true,
            Committed::Durably => false,
        }
    }
}

/// Makes every lazy commit so far durable; `true` on success.
fn flush(db: &Database) -> bool {
    let flushed = db
        .begin_write()
        .map_err(TxError::from)
        .and_then(|txn| txn.commit().map_err(TxError::from));
    if let Err(error) = &flushed {
        tracing::warn!(?error, "flushing lazy commits failed; retrying");
    }
    flushed.is_ok()
}

/// Applies `batch` in one transaction, committing only if something changed (an unchanged
/// transaction is aborted: no fsync for, say, polling an empty queue).
/// The transaction is durable if any of its operations is.
fn commit(db: &Database, batch: &mut [Pending]) -> Result<Committed, TxError> {
    let applied = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<Committed, TxError> {
        let mut txn = db.begin_write()?;
        let mut changed = false;
        for pending in batch.iter_mut() {
            changed |= (pending.operation)(&txn)?;
        }
        if !changed {
            txn.abort()?;
            return Ok(Committed::Nothing);
        }
        if batch.iter().any(|p| p.commitment == Commitment::Durable) {
            txn.commit()?;
            return Ok(Committed::Durably);
        }
        txn.set_durability(Durability::None)
            .map_err(|e| TxError::Db(redb::Error::from(e)))?;
        txn.commit()?;
        Ok(Committed::Lazily)
    }));
    applied.unwrap_or_else(|_| {
        Err(TxError::Jobs(JobsError::Internal {
            message: "a storage operation panicked".into(),
        }))
    })
}
