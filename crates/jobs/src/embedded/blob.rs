use async_trait::async_trait;
use bytes::Bytes;

use super::tables::BLOBS;
use super::{Commit, EmbeddedBackend};
use crate::error::JobsError;
use crate::traits::BlobStore;

// Payloads live in the same file as the queue and records: one fsync domain, one thing to
// back up. redb values may be up to several GiB, far beyond what the gateway accepts.
#[async_trait]
impl BlobStore for EmbeddedBackend {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), JobsError> {
        let (key, content_type) = (key.to_string(), content_type.to_string());
        self.write(move |txn| {
            txn.open_table(BLOBS)?
                .insert(key.as_str(), (content_type.as_str(), body.as_ref()))?;
            Ok(Commit::Yes(()))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, JobsError> {
        let key = key.to_string();
        self.read(move |txn| {
            let blobs = txn.open_table(BLOBS)?;
            let stored = blobs.get(key.as_str())?;
            Ok(stored.map(|v| {
                let (content_type, body) = v.value();
                (Bytes::copy_from_slice(body), content_type.to_string())
            }))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), JobsError> {
        let key = key.to_string();
        self.write(move |txn| {
            let removed = txn.open_table(BLOBS)?.remove(key.as_str())?.is_some();
            Ok(if removed {
                Commit::Yes(())
            } else {
                Commit::No(())
            })
        })
        .await
    }
}
