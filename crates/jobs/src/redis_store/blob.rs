//! [`BlobStore`] on Redis, for small payloads (see [`TieredBlobStore`](crate::TieredBlobStore)):
//! one hash `P:blob:<key>` with fields `ct` (content type) and `body`.

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;

use super::RedisStore;
use crate::error::JobsError;
use crate::traits::BlobStore;

#[async_trait]
impl BlobStore for RedisStore {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), JobsError> {
        let _: () = redis::pipe()
            .atomic()
            .del(self.blob_key(key))
            .hset_multiple(
                self.blob_key(key),
                &[("ct", content_type.as_bytes()), ("body", body.as_ref())],
            )
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, JobsError> {
        let (ct, body): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.blob_key(key))
            .arg("ct")
            .arg("body")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(match (ct, body) {
            (Some(ct), Some(body)) => {
                Some((Bytes::from(body), String::from_utf8_lossy(&ct).into_owned()))
            }
            _ => None,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), JobsError> {
        let _: () = self
            .conn()
            .del(self.blob_key(key))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
