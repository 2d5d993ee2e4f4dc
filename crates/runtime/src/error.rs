use soma_core::ErrorKind;
use soma_core::json::InputError;
use soma_core::runner::RunError;

/// Why a prediction or a model load failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The request names a model, version or signature that is not loaded.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed: missing or unknown inputs, wrong dtype or shape.
    #[error("{0}")]
    InvalidInput(String),
    /// The model has no usable signature, or cannot run here.
    #[error("{0}")]
    Model(String),
    /// The operation is not supported by this server (e.g. reloading a fixed model list).
    #[error("{0}")]
    Unsupported(String),
    /// A bounded queue (server-side batching) is full; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request's deadline passed before it ran.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Something the server needs is unreachable for now (a model's storage); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The server is not in a state to run this (TF Serving's INTERNAL), e.g. a signature
    /// whose method is not one the API serves.
    #[error("{0}")]
    Internal(String),
    /// The engine failed while running the model.
    #[error("{context}: {source}")]
    Engine {
        context: String,
        #[source]
        source: RunError,
    },
}

impl RuntimeError {
    /// The message TF Serving's front ends answer with: an engine failure's own text
    /// (TensorFlow's, which TF Serving passes on as it is) without the model, version and
    /// signature soma puts before it for its logs and its async APIs; any other error as
    /// displayed.
    pub fn client_message(&self) -> String {
        match self {
            RuntimeError::Engine { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::NotFound(_) => ErrorKind::NotFound,
            RuntimeError::InvalidInput(_) => ErrorKind::InvalidArgument,
            RuntimeError::Model(_) => ErrorKind::FailedPrecondition,
            RuntimeError::Unsupported(_) => ErrorKind::Unimplemented,
            RuntimeError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            RuntimeError::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            RuntimeError::Unavailable(_) => ErrorKind::Unavailable,
            RuntimeError::Internal(_) => ErrorKind::Internal,
            RuntimeError::Engine { source, .. } => source.kind,
        }
    }
}

impl From<InputError> for RuntimeError {
    fn from(e: InputError) -> RuntimeError {
        RuntimeError::InvalidInput(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_the_engines_own_message_and_logs_the_context() {
        let error = RuntimeError::Engine {
            context: "model 'iris' version 1 signature 'serving_default'".into(),
            source: RunError::new(ErrorKind::OutOfRange, "indices[0] = 5 is not in [0, 3)"),
        };
        assert_eq!(error.client_message(), "indices[0] = 5 is not in [0, 3)");
        assert_eq!(
            error.to_string(),
            "model 'iris' version 1 signature 'serving_default': indices[0] = 5 is not in [0, 3)"
        );
        assert_eq!(error.kind(), ErrorKind::OutOfRange);
        let other = RuntimeError::InvalidInput("input 'x': expected dtype float32".into());
        assert_eq!(other.client_message(), other.to_string());
    }
}
