/// Canonical error classes, named after TensorFlow's status codes.
///
/// Library errors expose a `kind()` so that the HTTP and gRPC layers can map every error
/// to a status code in one exhaustive `match`, without knowing the library's own enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller sent something malformed (bad dtype, shape, JSON, ...).
    InvalidArgument,
    /// A named model, version, signature or workload does not exist.
    NotFound,
    /// The system is not in a state to do this (e.g. a model that cannot run).
    FailedPrecondition,
    /// A queue or limit is full; retry later.
    ResourceExhausted,
    /// A dependency (TensorFlow library, storage) is missing or unreachable.
    Unavailable,
    /// The feature is not supported (e.g. Inferentia models without Neuron).
    Unimplemented,
    /// A deadline passed before the work finished.
    DeadlineExceeded,
    /// A bug or an unexpected failure inside soma or TensorFlow.
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this class: TF Serving's `ToHTTPStatusCode` (`http_server.cc`),
    /// used by every HTTP front end (the async gateway and the TF Serving REST API) so that
    /// the mapping lives in one place.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::ResourceExhausted => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Unimplemented => 501,
            ErrorKind::DeadlineExceeded => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// TensorFlow's name for the code, e.g. `INVALID_ARGUMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorKind::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorKind::Unavailable => "UNAVAILABLE",
            ErrorKind::Unimplemented => "UNIMPLEMENTED",
            ErrorKind::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorKind::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
