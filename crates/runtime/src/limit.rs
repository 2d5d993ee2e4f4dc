//! A limit on how many inference requests a server processes at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `size` inference requests are processed at once (TF Serving's
/// `--rest_api_num_threads`, `--grpc_max_threads`); the others wait for a permit. Clones share
/// the permits, so one limit given to several servers (a gRPC port and a Unix socket) is one
/// limit for all of them.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
    size: usize,
}

impl ConcurrencyLimit {
    /// A limit of `size` requests at once (at least one).
    pub fn new(size: usize) -> ConcurrencyLimit {
        let size = size.max(1);
        ConcurrencyLimit {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits for a permit; the request holds it until the permit is dropped.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

/// A permit of `limit` if there is one (waiting for it), else none: "no limit" for the
/// `Option<ConcurrencyLimit>` options.
pub async fn permit(limit: Option<&ConcurrencyLimit>) -> Option<OwnedSemaphorePermit> {
    match limit {
        Some(limit) => Some(limit.acquire().await),
        None => None,
    }
}
