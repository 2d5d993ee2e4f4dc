//! Durable storage for async workloads (Cortex AsyncAPI semantics): clients submit a
//! payload and get an id at once; workers claim it, run it and record the outcome; clients
//! poll the status and result.
//!
//! # Layers
//!
//! * [`Queue`], [`StateStore`], [`BlobStore`]: three small object-safe async traits, so a
//!   backend is picked at run time. A later Redis (queue + states) and S3 (payloads, via
//!   object_store) implementation fits them unchanged.
//! * [`Backend`]: the three stores bundled with the helpers gateway and worker code call
//!   ([`submit`](Backend::submit), [`status`](Backend::status), [`claim`](Backend::claim),
//!   [`complete`](Backend::complete), [`cancel`](Backend::cancel),
//!   [`expire`](Backend::expire)). The ordering rules that make crashes harmless live there,
//!   once, for every backend.
//! * [`AtomicSteps`]: optional; a store that holds all three on one transactional engine
//!   runs each of `Backend`'s sequences (submit, claim, complete) as one write. The Redis +
//!   S3 backend implements it too (Lua scripts: 1, 2 and 1 round trips) for payloads kept in
//!   Redis.
//! * [`EmbeddedBackend`]: the default, one redb file `<data_dir>/soma.redb`.
//! * [`MemoryBackend`]: in-memory, **for tests of other crates only**.
//! * [`connect_remote`]: [`RedisStore`] (queue + states, sorted sets and Lua scripts; see
//!   its module docs for the key layout and why not Streams) with [`S3BlobStore`] payloads
//!   (`<prefix>/workloads/<api>/<id>/payload`, Cortex's layout), for N gateways and M
//!   workers on several machines. Configured by [`RemoteSettings`] (a file section and
//!   `SOMA_REDIS_URL`, `SOMA_S3_URL`, ... variables, see the `config` module).
//! * `conformance` (feature `conformance`): the behaviour suite every backend must pass.
//!
//! # Guarantees
//!
//! * Delivery is at-least-once: a claimed workload is leased; if the worker dies, the lease
//!   expires and the workload is handed out again, up to [`Backend::max_attempts`].
//! * Exactly one final status per workload: [`StateStore::finish`] is conditional, the first
//!   of `completed`, `failed`, `cancelled` wins and later ones change nothing.
//! * Retention is the caller's choice: [`Backend::expire`] / [`run_retention`] take the
//!   period (Cortex kept workloads 7 days, [`DEFAULT_RETENTION`]).
//!
//! # Why redb for the embedded backend
//!
//! redb is a pure-Rust embedded key-value store with ACID transactions: a commit with the
//! default durability is fsynced before it returns and a crash at any point leaves the last
//! committed state (copy-on-write B-trees with checksummed commit slots), all in a single
//! file. That gives crash safety without a home-made log format, a C toolchain (SQLite,
//! RocksDB) or a server process.
//!
//! A workload costs the embedded backend three transactions: submit (fsync before the id is
//! returned), claim (committed without waiting for an fsync: losing it in a crash only makes
//! the workload visible again; the writer makes it durable within milliseconds of idleness)
//! and complete (fsync). Concurrent callers share transactions (group commit). What a
//! transaction costs is mostly the B-tree pages it rewrites, so:
//! * workload ids are UUID v7 (time-ordered): the workloads of one group commit share leaf
//!   pages of the tables keyed by id instead of each dirtying its own;
//! * the status counts and the sequence counter are kept in memory by the writer and
//!   written by durable commits only (on disk they always match the last durable commit);
//! * an idle worker's empty poll is answered from a read transaction, without the writer.
//!
//! The file layout is unchanged by these (no schema version so far): data directories of
//! earlier versions open as they are, with their v4 ids.

mod backend;
mod config;
mod embedded;
mod error;
mod memory;
mod model;
mod redis_store;
mod remote;
mod s3;
mod tiered;
mod traits;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use backend::{Backend, CancelResult, Claimed, DEFAULT_MAX_ATTEMPTS, run_retention};
pub use config::{RedactedUrl, RemoteConfig, RemoteConfigError, RemoteSettings};
pub use embedded::{DB_FILE, EmbeddedBackend};
pub use error::{BoxError, JobsError};
pub use memory::MemoryBackend;
pub use model::{
    ApiName, Deliveries, Lease, Outcome, Popped, QueueStats, Status, StatusCounts, Timestamp,
    WorkloadId, WorkloadRecord, payload_key,
};
pub use redis_store::RedisStore;
pub use remote::connect_remote;
pub use s3::S3BlobStore;
pub use tiered::{DEFAULT_INLINE_LIMIT, IN_LARGE_STORE, TieredBlobStore};
pub use traits::{AtomicSteps, BlobStore, Queue, StateStore, Taken};

/// Cortex's retention of finished workloads (its S3 lifecycle rule), for callers that want
/// the same default.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
