//! Queue and state store on Redis ([`RedisStore`]).
//!
//! # Why sorted sets + Lua, not Streams
//!
//! Streams with consumer groups give leases through the pending-entries list and
//! `XAUTOCLAIM`, but the [`Queue`](crate::Queue) contract needs three things they do not
//! offer directly: `push` must be a no-op while the id is queued *or* leased (streams append
//! duplicates), `remove` must delete one never-delivered entry by workload id (cancel), and
//! `ack`/`extend` must fail for a stale delivery (streams have no per-delivery token;
//! `XCLAIM` only checks idle time). Each would need a side index kept consistent with the
//! stream by a script anyway. Plain sorted sets plus a few short Lua scripts express the
//! contract one to one and keep every conditional change atomic:
//!
//! | key (below the key prefix `P`)  | type | content |
//! |---|---|---|
//! | `P:q:<api>:ready`  | ZSET | never-popped ids, score = push sequence (FIFO) |
//! | `P:q:<api>:since`  | HASH | id → push time (ms, Redis clock), for the oldest-age metric |
//! | `P:q:<api>:leases` | ZSET | popped ids, score = lease deadline (ms, Redis clock) |
//! | `P:q:<api>:lease`  | HASH | id → `<token>:<attempt>` of the current delivery |
//! | `P:q:<api>:wake`   | LIST | wake tokens (at most 32) pushed with each item, see below |
//! | `P:seq`            | STRING | counter for push order and lease tokens |
//! | `P:rec:<api>:<id>` | STRING | the [`WorkloadRecord`](crate::WorkloadRecord) as JSON |
//! | `P:res:<api>:<id>` | STRING | result bytes of a completed workload |
//! | `P:counts:<api>`   | HASH | status → number of records |
//! | `P:finished`       | ZSET | `<api>/<status>/<id>`, score = finish time (µs), for expiry |
//! | `P:blob:<key>`     | HASH | `ct`, `body`: small payloads (see [`TieredBlobStore`](crate::TieredBlobStore)) |
//!
//! A lease of a dead consumer needs no reaper: `pop` hands out expired leases first (the
//! deadline is checked against Redis' own clock inside the script), with the attempt counted.
//!
//! # Waking idle workers
//!
//! Every push also pushes a token to the API's wake list. An idle worker, after an empty
//! pop, blocks in `BLPOP` on that list (on a connection of its own: a blocking command would
//! stall every other call multiplexed on the shared one) for at most its poll interval, so a
//! workload submitted by any gateway is picked up within a round trip instead of at the next
//! poll. Tokens carry no data: a stale one (left while all workers were busy) only causes one
//! empty pop, and a lost one (a waiter that gave up) only falls back to the poll. Queue
//! contents, leases and redelivery never depend on the wake list.
//!
//! # Round trips
//!
//! The trait methods are one script or command each, so a workload costs 5 round trips to
//! submit, 4 to claim and 5 to settle step by step. [`RedisSteps`] (what `connect_remote`
//! uses) runs the three sequences as 1, 2 and 1 scripts for payloads kept in Redis; see its
//! module.
//!
//! Record updates are compare-and-set: read the JSON, apply the shared Rust transition
//! (`WorkloadRecord::start`/`finish`, the same code the other backends run), and write it
//! back with a script that only succeeds if the stored bytes are still the ones read; on a
//! conflict the update is retried on the fresh record. So the first final status wins and
//! status counts stay exact.
//!
//! # Durability
//!
//! Redis acknowledges writes from memory. Run it with `appendonly yes` (and
//! `appendfsync everysec` or `always`) so that accepted workloads survive a Redis restart;
//! `docs/deploy.md` shows the settings.
//!
//! # Outages
//!
//! The connection is a [`ConnectionManager`]: while Redis is down every call fails at once
//! with [`JobsError::Unavailable`] (HTTP 503 at the gateway) and the manager reconnects in
//! the background, so service resumes by itself when Redis is back.

mod blob;
mod queue;
mod scripts;
mod server;
mod state;
mod steps;

pub(crate) use steps::RedisSteps;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

use crate::config::RedactedUrl;
use crate::error::JobsError;
use crate::model::{ApiName, WorkloadId};

/// How long one Redis command may take before the call fails as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis-backed [`Queue`](crate::Queue) and [`StateStore`](crate::StateStore), and a
/// [`BlobStore`](crate::BlobStore) for small payloads.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    client: redis::Client,
    /// Idle connections for blocking waits ([`Queue::wait_for_push`](crate::Queue)), one
    /// per concurrent waiter, reused.
    waiters: Arc<Mutex<Vec<MultiplexedConnection>>>,
    /// Key prefix including the trailing `:`.
    prefix: String,
    url: RedactedUrl,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects (failing fast if Redis cannot be reached) and checks it answers `PING`.
    /// Every key starts with `<key_prefix>:`.
    pub async fn connect(url: &RedactedUrl, key_prefix: &str) -> Result<RedisStore, JobsError> {
        let client = redis::Client::open(url.expose()).map_err(|e| unavailable(url, e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Reconnect attempts happen in the background; a call during an outage fails at
            // once instead of waiting through a long retry series.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| unavailable(url, e))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(url, e))?;
        // A server that cannot run INFO (a proxy, a restricted account) is not checked.
        let info: Result<String, _> = redis::cmd("INFO").query_async(&mut conn).await;
        match info {
            Ok(info) => {
                let warnings = server::check(&info).map_err(|reason| JobsError::Unsupported {
                    backend: "redis",
                    reason: format!("{url}: {reason}"),
                })?;
                for warning in warnings {
                    tracing::warn!(redis = %url, "{warning}");
                }
            }
            Err(e) => tracing::debug!(error = %e, "INFO failed; the Redis server is not checked"),
        }
        Ok(RedisStore {
            conn,
            client,
            waiters: Arc::default(),
            prefix: format!("{}:", key_prefix.trim_end_matches(':')),
            url: url.clone(),
        })
    }

    pub(super) fn conn(&self) -> ConnectionManager {
        // Cheap clone of a multiplexed handle.
        self.conn.clone()
    }

    /// A connection of its own for one blocking command that may take `longest`.
    async fn waiter(&self, longest: Duration) -> Result<MultiplexedConnection, JobsError> {
        let idle = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(longest + RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.err(e))
    }

    /// Returns a waiter connection whose command completed, for reuse.
    fn return_waiter(&self, conn: MultiplexedConnection) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    pub(super) fn queue_key(&self, api: &ApiName, part: &str) -> String {
        format!("{}q:{api}:{part}", self.prefix)
    }

    pub(super) fn seq_key(&self) -> String {
        format!("{}seq", self.prefix)
    }

    pub(super) fn record_key(&self, api: &ApiName, id: &WorkloadId) -> String {
        format!("{}rec:{api}:{id}", self.prefix)
    }

    pub(super) fn record_key_prefix(&self, api: &ApiName) -> String {
        format!("{}rec:{api}:", self.prefix)
    }

    pub(super) fn result_key(&self, api: &ApiName, id: &WorkloadId) -> String {
        format!("{}res:{api}:{id}", self.prefix)
    }

    pub(super) fn counts_key(&self, api: &ApiName) -> String {
        format!("{}counts:{api}", self.prefix)
    }

    pub(super) fn finished_key(&self) -> String {
        format!("{}finished", self.prefix)
    }

    pub(super) fn blob_key(&self, key: &str) -> String {
        format!("{}blob:{key}", self.prefix)
    }

    pub(super) fn err(&self, e: redis::RedisError) -> JobsError {
        unavailable(&self.url, e)
    }
}

fn unavailable(url: &RedactedUrl, e: redis::RedisError) -> JobsError {
    JobsError::Unavailable {
        backend: "redis",
        source: format!("{url}: {e}").into(),
    }
}
