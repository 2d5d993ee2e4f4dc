use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use soma_jobs::WorkloadId;

/// One workload as a handler sees it.
#[derive(Debug, Clone)]
pub struct Workload {
    pub id: WorkloadId,
    pub payload: Bytes,
    pub content_type: String,
}

/// Why a handler could not produce a result. The message is stored with the workload and
/// shown to the client; the traceback goes only to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerFailure {
    pub message: String,
    pub traceback: Option<String>,
}

impl HandlerFailure {
    pub fn new(message: impl Into<String>) -> HandlerFailure {
        HandlerFailure {
            message: message.into(),
            traceback: None,
        }
    }
}

/// Runs workloads. The Python handler host implements it; tests use small Rust handlers.
#[async_trait]
pub trait WorkloadHandler: Send + Sync + Debug {
    /// Produces the JSON result of one workload.
    async fn handle(&self, workload: Workload) -> Result<serde_json::Value, HandlerFailure>;
}
