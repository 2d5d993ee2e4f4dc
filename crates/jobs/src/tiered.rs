//! [`TieredBlobStore`]: small payloads in a fast store (Redis), large ones in a big one (S3).
//!
//! Most async payloads are a few KiB of JSON. Keeping them next to the queue saves three S3
//! requests per workload (put, get, delete), which dominate the cost of a workload on a
//! shared backend; large payloads still go to S3, where they belong. A key lives in exactly
//! one tier: a large payload leaves a marker in the small store (an entry with the reserved
//! content type [`IN_LARGE_STORE`], which no HTTP client can send because it contains a NUL),
//! so `get` and `delete` know where to look without asking S3 about small payloads.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::JobsError;
use crate::traits::BlobStore;

/// Content type of the marker left in the small store for a payload kept in the large one.
pub const IN_LARGE_STORE: &str = "\0soma/in-large-store";

/// Payloads up to this size stay in the small store by default.
pub const DEFAULT_INLINE_LIMIT: usize = 64 * 1024;

/// Two [`BlobStore`]s split by payload size.
pub struct TieredBlobStore {
    small: Arc<dyn BlobStore>,
    large: Arc<dyn BlobStore>,
    inline_limit: usize,
}

impl fmt::Debug for TieredBlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredBlobStore")
            .field("small", &self.small)
            .field("large", &self.large)
            .field("inline_limit", &self.inline_limit)
            .finish()
    }
}

impl TieredBlobStore {
    /// Payloads of at most `inline_limit` bytes go to `small`, larger ones to `large`.
    pub fn new(
        small: Arc<dyn BlobStore>,
        large: Arc<dyn BlobStore>,
        inline_limit: usize,
    ) -> TieredBlobStore {
        TieredBlobStore {
            small,
            large,
            inline_limit,
        }
    }

    async fn in_large_store(&self, key: &str) -> Result<bool, JobsError> {
        Ok(matches!(
            self.small.get(key).await?,
            Some((_, content_type)) if content_type == IN_LARGE_STORE
        ))
    }
}

#[async_trait]
impl BlobStore for TieredBlobStore {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), JobsError> {
        if body.len() <= self.inline_limit {
            // Replacing a large payload: remove its S3 copy so nothing is left behind.
            if self.in_large_store(key).await? {
                self.large.delete(key).await?;
            }
            return self.small.put(key, body, content_type).await;
        }
        // The object first, then the marker: a crash in between leaves an unreferenced
        // object (removed with the workload by retention), never a marker without object.
        self.large.put(key, body, content_type).await?;
        self.small.put(key, Bytes::new(), IN_LARGE_STORE).await
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, JobsError> {
        match self.small.get(key).await? {
            Some((_, content_type)) if content_type == IN_LARGE_STORE => self.large.get(key).await,
            found => Ok(found),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), JobsError> {
        if self.in_large_store(key).await? {
            self.large.delete(key).await?;
        }
        self.small.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    fn tiered() -> (TieredBlobStore, Arc<MemoryBackend>, Arc<MemoryBackend>) {
        let (small, large) = (
            Arc::new(MemoryBackend::default()),
            Arc::new(MemoryBackend::default()),
        );
        (
            TieredBlobStore::new(small.clone(), large.clone(), 4),
            small,
            large,
        )
    }

    #[tokio::test]
    async fn small_payloads_stay_small_and_large_ones_go_large() {
        let (store, small, large) = tiered();
        store
            .put("a", Bytes::from_static(b"abc"), "text/plain")
            .await
            .unwrap();
        store
            .put(
                "b",
                Bytes::from_static(b"abcdef"),
                "application/octet-stream",
            )
            .await
            .unwrap();
        assert_eq!(BlobStore::get(&*large, "a").await.unwrap(), None);
        assert_eq!(
            BlobStore::get(&*large, "b").await.unwrap().unwrap().0,
            Bytes::from_static(b"abcdef")
        );
        assert_eq!(
            BlobStore::get(&*small, "b").await.unwrap().unwrap().1,
            IN_LARGE_STORE
        );
        assert_eq!(store.get("a").await.unwrap().unwrap().1, "text/plain");
        assert_eq!(
            store.get("b").await.unwrap().unwrap().1,
            "application/octet-stream"
        );
        store.delete("b").await.unwrap();
        assert_eq!(BlobStore::get(&*large, "b").await.unwrap(), None);
        assert_eq!(store.get("b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn replacing_across_tiers_leaves_nothing_behind() {
        let (store, _, large) = tiered();
        store
            .put("k", Bytes::from_static(b"large!"), "x/large")
            .await
            .unwrap();
        store
            .put("k", Bytes::from_static(b"s"), "x/small")
            .await
            .unwrap();
        assert_eq!(BlobStore::get(&*large, "k").await.unwrap(), None);
        assert_eq!(store.get("k").await.unwrap().unwrap().1, "x/small");
        store
            .put("k", Bytes::from_static(b"large again"), "x/large")
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().1, "x/large");
        store.delete("k").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(BlobStore::get(&*large, "k").await.unwrap(), None);
    }
}
