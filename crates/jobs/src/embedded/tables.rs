//! Table layout. Keys are tuples so that one API's entries are contiguous and ordered.

use redb::{TableDefinition, WriteTransaction};

use super::TxError;

/// (api, id) -> JSON `WorkloadRecord`
pub(super) const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// (api, id) -> result bytes of completed workloads
pub(super) const RESULTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("results");
/// (finished_at ms, api, id): index of final records for `expire`
pub(super) const FINISHED: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("finished");
/// (api, status) -> number of records, so `counts` does not scan; written by durable
/// commits only, in step with RECORDS as of that commit (see `writer.rs`)
pub(super) const COUNTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counts");
/// key -> (content type, body)
pub(super) const BLOBS: TableDefinition<&str, (&str, &[u8])> = TableDefinition::new("blobs");
/// (api, seq) -> (id, queued since ms): never-popped items in FIFO order
pub(super) const READY: TableDefinition<(&str, u64), (&str, u64)> = TableDefinition::new("ready");
/// (api, id) -> seq in READY, for `remove` and duplicate pushes
pub(super) const QUEUED: TableDefinition<(&str, &str), u64> = TableDefinition::new("queued");
/// (api, id) -> (token, deadline ms, attempt): popped items
pub(super) const LEASES: TableDefinition<(&str, &str), (&str, u64, u32)> =
    TableDefinition::new("leases");
/// (api, deadline ms, id): LEASES ordered by deadline, to find expired ones first
pub(super) const DEADLINES: TableDefinition<(&str, u64, &str), ()> =
    TableDefinition::new("deadlines");
/// name -> counter; holds `next_seq`, the monotonic source of queue order and lease tokens;
/// written by durable commits only (see `writer.rs`)
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) fn create_all(txn: &WriteTransaction) -> Result<(), TxError> {
    txn.open_table(RECORDS)?;
    txn.open_table(RESULTS)?;
    txn.open_table(FINISHED)?;
    txn.open_table(COUNTS)?;
    txn.open_table(BLOBS)?;
    txn.open_table(READY)?;
    txn.open_table(QUEUED)?;
    txn.open_table(LEASES)?;
    txn.open_table(DEADLINES)?;
    txn.open_table(META)?;
    Ok(())
}
