//! Group commit: one thread applies the write operations of all callers, several per redb
//! transaction, and answers each caller only after that transaction is durably committed.
//!
//! Every redb commit is an fsync (about 0.3 ms on the development VM), and redb has a single
//! writer, so committing each operation on its own caps the store at a few thousand
//! operations per second however many workers and clients there are. Here, operations that
//! arrive while a commit is under way are applied together in the next transaction, one
//! after the other, exactly as if they had run in order, and share its fsync.
//!
//! Some operations need not be durable on their own (`Commitment::Lazy`): renewing or
//! acknowledging a lease, and the queue's and the state's single steps of a delivery (taking
//! a lease, marking a workload `in_progress`). Losing them in a crash leaves the workload
//! queued again, which is what an expired lease does anyway. A batch of only such operations
//! commits without fsync; redb makes it durable with the next durable commit, and the writer
//! forces one when it has been idle for [`FLUSH_AFTER`]. The delivery that hands a payload to
//! a handler (`AtomicSteps::take`) is durable: its attempt count is what stops a payload that
//! crashes the process, and a handler can crash sooner than any flush.
//!
//! If any operation of a batch fails, the transaction is aborted (nothing of it is visible)
//! and the operations are run again one per transaction, so one caller's error never becomes
//! another's. Operations are therefore `FnMut`: they may run twice, the first run discarded.
//!
//! Two small tables are written only by durable commits: the status counts (COUNTS) and the
//! sequence counter (META). The writer keeps their current values in memory ([`Counters`]);
//! operations change them through [`Tx`], and a durable commit (or the idle flush) writes
//! every value changed since the previous durable commit. A lazy commit therefore touches two
//! tables fewer (each is a page rewritten, plus the table tree's entry). On disk, the counters
//! always match the last durable commit: a crash loses the lazy commits and their counter
//! changes together.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::TxError;
use super::tables::{COUNTS, META};
use crate::error::JobsError;
use crate::model::{Status, StatusCounts};

/// META key of the sequence counter.
const NEXT_SEQ: &str = "next_seq";

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

/// The committed values of COUNTS and META, shared with readers (`counts`).
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// The last value handed out by [`Tx::next_seq`] in a committed transaction.
    seq: u64,
    counts: HashMap<(String, Status), u64>,
}

impl Counters {
    /// Loads both tables (a few entries per API).
    pub(super) fn load(db: &Database) -> Result<Counters, TxError> {
        let txn = db.begin_read()?;
        let seq = txn
            .open_table(META)?
            .get(NEXT_SEQ)?
            .map_or(0, |v| v.value());
        let mut counts = HashMap::new();
        for entry in txn.open_table(COUNTS)?.iter()? {
            let (key, value) = entry?;
            let (api, status) = key.value();
            if let Some(status) = Status::ALL.into_iter().find(|s| s.as_str() == status) {
                counts.insert((api.to_string(), status), value.value());
            }
        }
        Ok(Counters { seq, counts })
    }

    pub(super) fn status_counts(&self, api: &str) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for status in Status::ALL {
            if let Some(n) = self.counts.get(&(api.to_string(), status)) {
                *counts.get_mut(status) = *n;
            }
        }
        counts
    }
}

/// Changes of one transaction to the [`Counters`], applied to them once it commits.
#[derive(Debug, Default)]
struct Changes {
    seq: Option<u64>,
    counts: HashMap<(String, Status), u64>,
}

/// A write transaction with the writer's in-memory counters; derefs to the transaction.
pub(super) struct Tx<'a> {
    txn: &'a WriteTransaction,
    counters: &'a Mutex<Counters>,
    changes: RefCell<Changes>,
}

impl Deref for Tx<'_> {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        self.txn
    }
}

impl Tx<'_> {
    /// Increments and returns the database-wide sequence number (queue order, lease tokens).
    pub(super) fn next_seq(&self) -> u64 {
        let mut changes = self.changes.borrow_mut();
        let current = changes.seq.unwrap_or_else(|| lock(self.counters).seq);
        let next = current + 1;
        changes.seq = Some(next);
        next
    }

    /// Adds `delta` to the number of records of `api` with `status`.
    pub(super) fn bump(&self, api: &str, status: Status, delta: i64) {
        let mut changes = self.changes.borrow_mut();
        let key = (api.to_string(), status);
        let current = match changes.counts.get(&key) {
            Some(n) => *n,
            None => lock(self.counters).counts.get(&key).copied().unwrap_or(0),
        };
        changes
            .counts
            .insert(key, current.saturating_add_signed(delta));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A write operation: applies itself and says whether it changed anything.
type Operation = Box<dyn FnMut(&Tx<'_>) -> Result<bool, TxError> + Send>;

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
    /// Why the file cannot be written, since a commit failed on it (see [`Writer::check`]).
    failure: Arc<Mutex<Option<String>>>,
}

impl Writer {
    pub(super) fn start(
        db: Arc<Database>,
        counters: Arc<Mutex<Counters>>,
    ) -> Result<Writer, TxError> {
        let (sender, receiver) = mpsc::channel();
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let failed = Arc::clone(&failure);
        let thread = std::thread::Builder::new()
            .name("soma-redb-writer".into())
            .spawn(move || {
                let mut writer = State {
                    db: &db,
                    counters: &counters,
                    failure: &failed,
                    unsynced: false,
                    dirty: HashSet::new(),
                    seq_dirty: false,
                };
                writer.run(&receiver);
            })
            .map_err(|e| TxError::Io("soma-redb-writer thread".into(), e))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
            failure,
        })
    }

    /// `Unavailable` while the database file cannot be written. redb refuses every write
    /// after one failed on the file (a full disk): "Previous I/O error occurred. Please
    /// close and re-open the database", even once space is back. Reads still work, so
    /// readiness asks this, and the server reports itself not ready (for a supervisor to
    /// restart it) instead of ready while every submission fails.
    pub(super) fn check(&self) -> Result<(), JobsError> {
        match lock(&self.failure).as_ref() {
            None => Ok(()),
            Some(failure) => Err(JobsError::Unavailable {
                backend: "redb",
                source: format!(
                    "{failure}; restart soma to open the file again (accepted workloads are \
                     kept in it)"
                )
                .into(),
            }),
        }
    }

    /// Runs `operation` in the next group transaction; returns its value once committed.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        commitment: Commitment,
        mut operation: impl FnMut(&Tx<'_>) -> Result<(bool, T), TxError> + Send + 'static,
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

/// The writer thread's state.
struct State<'a> {
    db: &'a Database,
    counters: &'a Mutex<Counters>,
    failure: &'a Mutex<Option<String>>,
    /// True while lazy commits are not yet on disk.
    unsynced: bool,
    /// Counts changed by lazy commits since the last durable one.
    dirty: HashSet<(String, Status)>,
    /// Whether the sequence counter changed in lazy commits since the last durable one.
    seq_dirty: bool,
}

impl State<'_> {
    fn run(&mut self, receiver: &mpsc::Receiver<Pending>) {
        loop {
            let first = if self.unsynced {
                match receiver.recv_timeout(FLUSH_AFTER) {
                    Ok(first) => first,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.flush();
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
            // Everything in a batch is concurrent (no caller has been answered), so any order
            // is a valid one: lazy operations go first, in their own transaction, so that taking
            // a workload never waits behind another caller's fsync.
            let (lazy, durable): (Vec<Pending>, Vec<Pending>) = batch
                .into_iter()
                .partition(|p| p.commitment == Commitment::Lazy);
            for group in [lazy, durable] {
                if !group.is_empty() {
                    self.commit_group(group);
                }
            }
        }
        if self.unsynced {
            self.flush();
        }
    }

    /// Commits `group` in one transaction and answers its callers.
    fn commit_group(&mut self, mut group: Vec<Pending>) {
        if group.len() > 1 && self.commit(&mut group).is_ok() {
            group.into_iter().for_each(|p| drop(p.done.send(Ok(()))));
            return;
        }
        // A single operation, or a group that failed: one transaction each.
        for mut pending in group {
            let result = self.commit(std::slice::from_mut(&mut pending));
            let _ = pending.done.send(result.map_err(JobsError::from));
        }
    }

    /// Makes every lazy commit so far durable (with the counters they changed).
    fn flush(&mut self) {
        if let Err(error) = self.commit(&mut []) {
            tracing::warn!(?error, "flushing lazy commits failed; retrying");
        }
    }

    /// Applies `batch` in one transaction, committing only if something changed (an unchanged
    /// transaction is aborted: no fsync for, say, polling an empty queue). The transaction is
    /// durable if any of its operations is; an empty batch is a flush, durable if anything
    /// is unsynced.
    fn commit(&mut self, batch: &mut [Pending]) -> Result<(), TxError> {
        let result = self.try_commit(batch);
        let failure = match &result {
            Ok(()) => None,
            Err(TxError::Db(redb::Error::Io(e))) => {
                Some(format!("writing the database file failed: {e}"))
            }
            Err(TxError::Db(redb::Error::PreviousIo)) => Some(
                "an earlier write of the database file failed, and redb takes no more writes"
                    .to_string(),
            ),
            Err(_) => return result,
        };
        let mut recorded = lock(self.failure);
        if failure.is_some() && recorded.is_none() {
            tracing::error!(
                failure = failure.as_deref(),
                "the job storage cannot be written"
            );
        }
        *recorded = failure;
        result
    }

    fn try_commit(&mut self, batch: &mut [Pending]) -> Result<(), TxError> {
        let counters = self.counters;
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut txn = self.db.begin_write()?;
            let tx = Tx {
                txn: &txn,
                counters,
                changes: RefCell::default(),
            };
            let mut changed = batch.is_empty() && self.unsynced;
            for pending in batch.iter_mut() {
                changed |= (pending.operation)(&tx)?;
            }
            let changes = tx.changes.into_inner();
            if !changed {
                txn.abort()?;
                return Ok(None);
            }
            let durable =
                batch.is_empty() || batch.iter().any(|p| p.commitment == Commitment::Durable);
            if durable {
                self.write_counters(&txn, &changes)?;
            } else {
                txn.set_durability(Durability::None)
                    .map_err(|e| TxError::Db(redb::Error::from(e)))?;
            }
            txn.commit()?;
            Ok(Some((durable, changes)))
        }));
        let applied = applied.unwrap_or_else(|_| {
            Err(TxError::Jobs(JobsError::Internal {
                message: "a storage operation panicked".into(),
            }))
        })?;
        let Some((durable, changes)) = applied else {
            return Ok(());
        };
        let mut counters = lock(self.counters);
        if let Some(seq) = changes.seq {
            counters.seq = seq;
        }
        if durable {
            self.dirty.clear();
            self.seq_dirty = false;
        } else {
            self.dirty.extend(changes.counts.keys().cloned());
            self.seq_dirty |= changes.seq.is_some();
        }
        counters.counts.extend(changes.counts);
        self.unsynced = !durable;
        Ok(())
    }

    /// Writes the counters changed since the last durable commit, and by `changes`.
    fn write_counters(&self, txn: &WriteTransaction, changes: &Changes) -> Result<(), TxError> {
        let counters = lock(self.counters);
        if let Some(seq) = changes.seq.or(self.seq_dirty.then_some(counters.seq)) {
            txn.open_table(META)?.insert(NEXT_SEQ, seq)?;
        }
        if self.dirty.is_empty() && changes.counts.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(COUNTS)?;
        for key in self.dirty.iter().chain(changes.counts.keys()) {
            let value = changes
                .counts
                .get(key)
                .or_else(|| counters.counts.get(key))
                .copied()
                .unwrap_or(0);
            table.insert((key.0.as_str(), key.1.as_str()), value)?;
        }
        Ok(())
    }
}
