//! [`S3BlobStore`]: payloads as S3 objects through `object_store`, in Cortex's layout
//! `s3://<bucket>/<prefix>/workloads/<api>/<id>/payload`, with the payload's Content-Type
//! stored as the object's Content-Type.
//!
//! Credentials, region and endpoint are read like every other S3 access of soma
//! ([`soma_repository::open_object_store`]: the AWS variables, overridden by the explicit
//! settings), so MinIO, moto or localstack work through an endpoint URL.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use soma_core::ModelLocation;
use soma_repository::S3Settings;

use crate::error::JobsError;
use crate::traits::BlobStore;

/// Payload objects in one S3 bucket below `<prefix>/workloads/`.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/workloads`, without a trailing `/`.
    root: String,
    bucket: String,
}

impl S3BlobStore {
    /// Opens the bucket and checks that it exists and answers (a listing below the root), so a
    /// missing bucket or wrong endpoint fails at start-up, not on the first submit.
    pub async fn open(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
    ) -> Result<S3BlobStore, JobsError> {
        let location = ModelLocation::S3 {
            bucket: bucket.to_string(),
            prefix: String::new(),
        };
        let (store, _) = soma_repository::open_object_store(&location, settings)
            .await
            .map_err(|e| JobsError::Unavailable {
                backend: "s3",
                source: Box::new(e),
            })?;
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            "workloads".to_string()
        } else {
            format!("{prefix}/workloads")
        };
        let blobs = S3BlobStore {
            store,
            root,
            bucket: bucket.to_string(),
        };
        blobs
            .store
            .list_with_delimiter(Some(&Path::from(blobs.root.as_str())))
            .await
            .map_err(|e| blobs.unavailable(e))?;
        Ok(blobs)
    }

    fn path(&self, key: &str) -> Result<Path, JobsError> {
        Path::parse(format!("{}/{key}", self.root)).map_err(|e| JobsError::Internal {
            message: format!("blob key '{key}': {e}"),
        })
    }

    fn unavailable(&self, e: object_store::Error) -> JobsError {
        JobsError::Unavailable {
            backend: "s3",
            source: format!("bucket {}: {e}", self.bucket).into(),
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), JobsError> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.to_string().into());
        let options = PutOptions {
            attributes,
            ..Default::default()
        };
        self.store
            .put_opts(&self.path(key)?, PutPayload::from(body), options)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, String)>, JobsError> {
        let result = match self.store.get(&self.path(key)?).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.unavailable(e)),
        };
        let content_type = result
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "application/octet-stream".to_string());
        let body = result.bytes().await.map_err(|e| self.unavailable(e))?;
        Ok(Some((body, content_type)))
    }

    async fn delete(&self, key: &str) -> Result<(), JobsError> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.unavailable(e)),
        }
    }
}
