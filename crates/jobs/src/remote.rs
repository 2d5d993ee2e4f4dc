//! Opening the Redis + S3 backend from a [`RemoteConfig`].

use std::sync::Arc;

use soma_repository::S3Settings;

use crate::backend::Backend;
use crate::config::RemoteConfig;
use crate::error::JobsError;
use crate::redis_store::{RedisSteps, RedisStore};
use crate::s3::S3BlobStore;
use crate::tiered::TieredBlobStore;

/// How long a payload's S3 operation may take, retries included. Payloads are at most
/// the body limit (32 MiB by default): seconds on any working link.
const S3_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Connects to Redis (queue, states and payloads up to `inline_payload_limit`) and S3
/// (larger payloads). Fails fast, with the reason, when
/// Redis does not answer, the bucket is missing or S3 cannot be reached.
pub async fn connect_remote(config: &RemoteConfig) -> Result<Backend, JobsError> {
    let redis = Arc::new(RedisStore::connect(&config.redis_url, &config.redis_key_prefix).await?);
    let settings = S3Settings {
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        access_key_id: config.s3_credentials.as_ref().map(|(id, _)| id.clone()),
        secret_access_key: config.s3_credentials.as_ref().map(|(_, key)| key.clone()),
        // A submission (or a worker's read) waits on this: an S3 that does not answer
        // gets a 503 within seconds, as a Redis that does not (audit: 180 s by default).
        operation_timeout: Some(S3_OPERATION_TIMEOUT),
        ..S3Settings::default()
    };
    let s3 = S3BlobStore::open(&config.bucket, &config.s3_prefix, &settings).await?;
    let large: Arc<dyn crate::BlobStore> = Arc::new(s3);
    let blobs: Arc<dyn crate::BlobStore> = Arc::new(TieredBlobStore::new(
        redis.clone(),
        large.clone(),
        config.inline_payload_limit,
    ));
    // Submit, claim and settle in one or two round trips each (see `RedisSteps`).
    let steps = RedisSteps {
        redis: redis.clone(),
        blobs: blobs.clone(),
        large,
        inline_limit: config.inline_payload_limit,
    };
    Ok(Backend::with_atomic_steps(
        redis.clone(),
        redis,
        blobs,
        Arc::new(steps),
    ))
}
