use soma_core::ErrorKind;

use crate::model::{ApiName, WorkloadId};

/// Boxed source error of a storage backend (redb, Redis, S3, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the job storage layer.
///
/// Variants carry meaning, not the backend: callers branch on "already exists" or "lease
/// lost", never on a redb or Redis error type (the object_store pattern).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// A workload id that is not a canonical UUID v4 or v7.
    #[error("invalid workload id '{value}': {reason}")]
    InvalidId { value: String, reason: String },
    /// An API name that cannot be used as a storage key.
    #[error("invalid api name '{value}': {reason}")]
    InvalidApiName { value: String, reason: String },
    /// `create` or `submit_with_id` for an id that already has a record.
    #[error("workload {id} of api {api} already exists")]
    AlreadyExists { api: ApiName, id: WorkloadId },
    /// The lease was acknowledged already or expired and went to another consumer.
    #[error("lease on workload {id} of api {api} is no longer held")]
    LeaseLost { api: ApiName, id: WorkloadId },
    /// The storage backend could not be reached or failed to read or commit.
    #[error("job storage ({backend}) unavailable: {source}")]
    Unavailable {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
    /// A storage server soma cannot work with (e.g. a Redis Cluster, a read-only replica),
    /// found at start-up: a configuration to change, not an outage to wait out.
    #[error("job storage ({backend}) cannot be used: {reason}")]
    Unsupported {
        backend: &'static str,
        reason: String,
    },
    /// Stored data that cannot be decoded: a bug or a damaged store.
    #[error("corrupt job storage data: {what}")]
    Corrupt { what: String },
    /// A bug, e.g. a storage task that panicked.
    #[error("internal error in job storage: {message}")]
    Internal { message: String },
}

impl JobsError {
    /// The canonical class of this error, for the HTTP and gRPC status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            JobsError::InvalidId { .. } | JobsError::InvalidApiName { .. } => {
                ErrorKind::InvalidArgument
            }
            JobsError::AlreadyExists { .. }
            | JobsError::LeaseLost { .. }
            | JobsError::Unsupported { .. } => ErrorKind::FailedPrecondition,
            JobsError::Unavailable { .. } => ErrorKind::Unavailable,
            JobsError::Corrupt { .. } | JobsError::Internal { .. } => ErrorKind::Internal,
        }
    }
}
