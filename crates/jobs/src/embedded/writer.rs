//! Group commit: one thread applies the write operations of all callers, several per redb
//! transaction, and answers each caller only after that transaction is durably committed.
//!
//! Every redb commit is an fsync (about 0.3 ms on the development VM), and redb has a single
//! writer, so committing each operation on its own caps the store at a few thousand
//! operations per second however many workers and clients there are. Here, operations that
//! arrive while a commit is under way are applied together in the next transaction, one
//! after the other, exactly as if they had run in order, and share its fsync.
//!
//! If any operation of a batch fails, the transaction is aborted (nothing of it is visible)
//! and the operations are run again one per transaction, so one caller's error never becomes
//! another's. Operations are therefore `FnMut`: they may run twice, the first run discarded.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use super::TxError;
use crate::error::JobsError;

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 256;

/// A write operation: applies itself and says whether it changed anything.
type Operation = Box<dyn FnMut(&WriteTransaction) -> Result<bool, TxError> + Send>;

struct Pending {
    operation: Operation,
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
            .send(Pending { operation, done })
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
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if batch.len() > 1 && commit(db, &mut batch).is_ok() {
            batch.into_iter().for_each(|p| drop(p.done.send(Ok(()))));
            continue;
        }
        // A single operation, or a batch that failed: one transaction each.
        for mut pending in batch {
            let result = commit(db, std::slice::from_mut(&mut pending)).map_err(JobsError::from);
            let _ = pending.done.send(result);
        }
    }
}

/// Applies `batch` in one transaction, committing only if something changed (an unchanged
/// transaction is aborted: no fsync for, say, polling an empty queue).
fn commit(db: &Database, batch: &mut [Pending]) -> Result<(), TxError> {
    let applied = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), TxError> {
        let txn = db.begin_write()?;
        let mut changed = false;
        for pending in batch.iter_mut() {
            changed |= (pending.operation)(&txn)?;
        }
        if changed {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(())
    }));
    applied.unwrap_or_else(|_| {
        Err(TxError::Jobs(JobsError::Internal {
            message: "a storage operation panicked".into(),
        }))
    })
}
