use async_trait::async_trait;
use bytes::Bytes;

use super::tables::BLOBS;
use redb::ReadableTable;

use super::writer::Tx;

use super::{Commit, EmbeddedBackend, TxError};
use crate::error::JobsError;
use crate::traits::BlobStore;

// Payloads live in the same file as the queue and records: one fsync domain, one thing to
// back up. redb values may be up to several GiB, far beyond what the gateway accepts.
#[async_trait]
impl BlobStore for EmbeddedBackend {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), JobsError> {
        let (key, content_type) = (key.to_string(), content_type.to_string());
        self.write(move |txn| put(txn, &key, &body, &content_type))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, JobsError> {
        self.lookup(|txn| {
            let blobs = txn.open_table(BLOBS)?;
            let stored = blobs.get(key)?;
            Ok(stored.map(|v| {
                let (content_type, body) = v.value();
                (Bytes::copy_from_slice(body), content_type.to_string())
            }))
        })
    }

    async fn delete(&self, key: &str) -> Result<(), JobsError> {
        let key = key.to_string();
        self.write(move |txn| delete(txn, &key)).await
    }
}

/// [`BlobStore::put`] inside `txn`.
pub(super) fn put(
    txn: &Tx<'_>,
    key: &str,
    body: &[u8],
    content_type: &str,
) -> Result<Commit<()>, TxError> {
    txn.open_table(BLOBS)?.insert(key, (content_type, body))?;
    Ok(Commit::Yes(()))
}

/// [`BlobStore::get`] inside a write transaction (reads what the transaction sees).
pub(super) fn get_in(txn: &Tx<'_>, key: &str) -> Result<Option<(Bytes, String)>, TxError> {
    let blobs = txn.open_table(BLOBS)?;
    let stored = blobs.get(key)?;
    Ok(stored.map(|v| {
        let (content_type, body) = v.value();
        (Bytes::copy_from_slice(body), content_type.to_string())
    }))
}

/// [`BlobStore::delete`] inside `txn`.
pub(super) fn delete(txn: &Tx<'_>, key: &str) -> Result<Commit<()>, TxError> {
    let removed = txn.open_table(BLOBS)?.remove(key)?.is_some();
    Ok(if removed {
        Commit::Yes(())
    } else {
        Commit::No(())
    })
}
