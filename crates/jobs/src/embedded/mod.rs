//! [`EmbeddedBackend`]: queue, states and payloads in one redb file, `<data_dir>/soma.redb`.
//!
//! Every write that creates or finishes a workload runs in a redb write transaction committed
//! with `Durability::Immediate` (fsync before `commit` returns) before its caller is
//! answered. Steps whose loss in a crash only makes a workload visible again (pop, extend,
//! ack, mark `in_progress`) are committed lazily and reach the disk within milliseconds.
//! Concurrent operations share transactions (group commit, see `writer.rs`); they are applied
//! one after the other, which is what makes the conditional updates (`finish`, `ack`, `pop`)
//! atomic without any locking of our own. Reads run on tokio's blocking pool. Lease deadlines are wall-clock
//! milliseconds stored in the file. Only one process can open the file, so the leases a
//! process finds when it opens it are all of one that is gone: they are made to run out
//! then, and what a killed process held is delivered again at once.

mod atomic;
mod blob;
mod queue;
mod state;
mod tables;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadTransaction, ReadableDatabase};

use crate::backend::Backend;
use crate::error::JobsError;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "soma.redb";

/// Memory redb may keep of the file (read cache and write buffer together). Its default,
/// 1 GiB, let a busy server's RSS climb by that much as the file grew (an audit: +80 MB in
/// 3 minutes of async load, still rising); the pages a queue touches often (its head, the
/// newest records, the indexes) are far fewer, and redb writes past the buffer straight
/// to the file.
const CACHE_BYTES: usize = 128 << 20;

/// The embedded store; implements [`Queue`](crate::Queue), [`StateStore`](crate::StateStore)
/// and [`BlobStore`](crate::BlobStore) on one database.
#[derive(Clone)]
pub struct EmbeddedBackend {
    db: Arc<Database>,
    writer: Arc<writer::Writer>,
    counters: Arc<Mutex<writer::Counters>>,
    path: PathBuf,
}

impl fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBackend {
    /// Opens (or creates) `<data_dir>/soma.redb` and returns a [`Backend`] on it.
    ///
    /// After an unclean shutdown redb repairs the file here, which can take a while for a
    /// large file. Fails with `Unavailable` if another process has the file open.
    pub async fn open(data_dir: &Path) -> Result<Backend, JobsError> {
        Ok(Backend::from_atomic_store(Arc::new(
            EmbeddedBackend::open_store(data_dir).await?,
        )))
    }

    /// Like [`open`](Self::open), returning the concrete store.
    pub async fn open_store(data_dir: &Path) -> Result<EmbeddedBackend, JobsError> {
        let dir = data_dir.to_path_buf();
        run_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| TxError::Io(dir.clone(), e))?;
            let path = dir.join(DB_FILE);
            let db = redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&path)?;
            // Create every table once so read transactions never meet a missing table.
            let txn = db.begin_write()?;
            tables::create_all(&txn)?;
            let redelivered = queue::expire_all_leases(&txn, now_millis())?;
            txn.commit()?;
            if redelivered > 0 {
                tracing::info!(
                    workloads = redelivered,
                    "the workloads the previous process held are delivered again"
                );
            }
            let counters = Arc::new(Mutex::new(writer::Counters::load(&db)?));
            let db = Arc::new(db);
            let writer = Arc::new(writer::Writer::start(
                Arc::clone(&db),
                Arc::clone(&counters),
            )?);
            Ok(EmbeddedBackend {
                db,
                writer,
                counters,
                path,
            })
        })
        .await
    }

    /// The committed status counts and sequence counter, kept by the writer.
    fn counters(&self) -> MutexGuard<'_, writer::Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a group write transaction (see `writer.rs`) and returns its value once
    /// committed. `Commit::No` says it changed nothing. `f` may run twice (the first run
    /// discarded) if another operation of its batch fails.
    async fn write<T, F>(&self, f: F) -> Result<T, JobsError>
    where
        T: Send + 'static,
        F: Fn(&writer::Tx<'_>) -> Result<Commit<T>, TxError> + Send + 'static,
    {
        self.writer
            .write(writer::Commitment::Durable, move |txn| {
                Ok(f(txn)?.into_parts())
            })
            .await
    }

    /// Like [`write`](Self::write), answered before the commit is on disk (see `writer.rs`):
    /// for steps whose loss in a crash only makes a workload visible again.
    async fn write_lazy<T, F>(&self, f: F) -> Result<T, JobsError>
    where
        T: Send + 'static,
        F: Fn(&writer::Tx<'_>) -> Result<Commit<T>, TxError> + Send + 'static,
    {
        self.writer
            .write(
                writer::Commitment::Lazy,
                move |txn| Ok(f(txn)?.into_parts()),
            )
            .await
    }

    /// A point lookup (a few B-tree pages, usually cached), run in place: a hop to the
    /// blocking pool would cost more than the read.
    fn lookup<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, TxError>,
    ) -> Result<T, JobsError> {
        Ok(f(&self.db.begin_read().map_err(TxError::from)?)?)
    }

    /// A read that may scan many entries, on tokio's blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, JobsError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, TxError> + Send + 'static,
    {
        let db = self.db.clone();
        run_blocking(move || f(&db.begin_read()?)).await
    }
}

/// Whether a write transaction changed anything worth committing.
enum Commit<T> {
    Yes(T),
    No(T),
}

impl<T> Commit<T> {
    fn new(changed: bool, value: T) -> Commit<T> {
        if changed {
            Commit::Yes(value)
        } else {
            Commit::No(value)
        }
    }

    fn into_parts(self) -> (bool, T) {
        match self {
            Commit::Yes(value) => (true, value),
            Commit::No(value) => (false, value),
        }
    }

    fn into_value(self) -> T {
        self.into_parts().1
    }
}

/// Errors inside a transaction closure; converted to [`JobsError`] at the async boundary so
/// redb's types stay out of the public API.
#[derive(Debug)]
enum TxError {
    Db(redb::Error),
    Io(PathBuf, std::io::Error),
    Jobs(JobsError),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for TxError {
            fn from(e: $t) -> TxError {
                TxError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<JobsError> for TxError {
    fn from(e: JobsError) -> TxError {
        TxError::Jobs(e)
    }
}

impl From<TxError> for JobsError {
    fn from(e: TxError) -> JobsError {
        match e {
            TxError::Db(source) => JobsError::Unavailable {
                backend: "redb",
                source: Box::new(source),
            },
            TxError::Io(path, source) => JobsError::Unavailable {
                backend: "redb",
                source: format!("{}: {source}", path.display()).into(),
            },
            TxError::Jobs(e) => e,
        }
    }
}

async fn run_blocking<T, F>(f: F) -> Result<T, JobsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, TxError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(JobsError::from),
        Err(join) => Err(JobsError::Internal {
            message: format!("redb task failed: {join}"),
        }),
    }
}

fn now_millis() -> u64 {
    crate::model::Timestamp::now().unix_millis()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Queue as _;
    use crate::model::ApiName;

    /// A write the file refuses (a full disk) makes the store report itself unavailable to
    /// readiness, which reads alone would not notice: redb then refuses every write until
    /// the file is opened again. A write that succeeds clears it.
    #[tokio::test]
    async fn a_failed_write_of_the_file_makes_the_store_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedBackend::open_store(dir.path()).await.unwrap();
        let api = ApiName::parse("iris").unwrap();
        assert!(store.stats(&api).await.is_ok());
        let full = || {
            TxError::Db(redb::Error::Io(std::io::Error::other(
                "No space left on device",
            )))
        };
        store
            .write(move |_| -> Result<Commit<()>, TxError> { Err(full()) })
            .await
            .unwrap_err();
        let err = store.stats(&api).await.unwrap_err().to_string();
        assert!(err.contains("No space left on device"), "{err}");
        assert!(err.contains("restart soma to open the file again"), "{err}");
        store.write(|_| Ok(Commit::No(()))).await.unwrap();
        assert!(store.stats(&api).await.is_ok());
    }
}
