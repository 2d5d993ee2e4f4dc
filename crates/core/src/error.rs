/// Canonical error classes: TensorFlow's status codes (`tensorflow/core/protobuf/error_codes.proto`,
/// the same numbers as gRPC's), all of them but `OK`.
///
/// Library errors expose a `kind()` so that the HTTP and gRPC layers can map every error
/// to a status code in one exhaustive `match`, without knowing the library's own enum.
/// TensorFlow's own failures keep their code ([`ErrorKind::from_code`]), so a model that
/// fails with `OUT_OF_RANGE` is reported as TF Serving reports it, not as a nearby class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The operation was cancelled, typically by its caller.
    Cancelled,
    /// An error TensorFlow could not classify.
    Unknown,
    /// The caller sent something malformed (bad dtype, shape, JSON, ...).
    InvalidArgument,
    /// A deadline passed before the work finished.
    DeadlineExceeded,
    /// A named model, version, signature or workload does not exist.
    NotFound,
    /// Something the caller tried to create already exists.
    AlreadyExists,
    /// The caller may not do this (e.g. a file TensorFlow may not read).
    PermissionDenied,
    /// A queue or limit is full; retry later.
    ResourceExhausted,
    /// The system is not in a state to do this (e.g. a model that cannot run).
    FailedPrecondition,
    /// The operation was aborted, e.g. by a concurrency conflict.
    Aborted,
    /// An index or read went past a valid range (e.g. a truncated variables file).
    OutOfRange,
    /// The feature is not supported (e.g. Inferentia models without Neuron).
    Unimplemented,
    /// A bug or an unexpected failure inside soma or TensorFlow.
    Internal,
    /// A dependency (TensorFlow library, storage) is missing or unreachable.
    Unavailable,
    /// Unrecoverable data loss or corruption.
    DataLoss,
    /// The caller's credentials are missing or invalid.
    Unauthenticated,
}

impl ErrorKind {
    /// The class of a TensorFlow (or gRPC) status code; `None` for `OK` (0). Codes outside
    /// the canonical set are `Unknown`, as TensorFlow and gRPC treat them.
    pub fn from_code(code: i32) -> Option<ErrorKind> {
        Some(match code {
            0 => return None,
            1 => ErrorKind::Cancelled,
            3 => ErrorKind::InvalidArgument,
            4 => ErrorKind::DeadlineExceeded,
            5 => ErrorKind::NotFound,
            6 => ErrorKind::AlreadyExists,
            7 => ErrorKind::PermissionDenied,
            8 => ErrorKind::ResourceExhausted,
            9 => ErrorKind::FailedPrecondition,
            10 => ErrorKind::Aborted,
            11 => ErrorKind::OutOfRange,
            12 => ErrorKind::Unimplemented,
            13 => ErrorKind::Internal,
            14 => ErrorKind::Unavailable,
            15 => ErrorKind::DataLoss,
            16 => ErrorKind::Unauthenticated,
            _ => ErrorKind::Unknown,
        })
    }

    /// TensorFlow's (and gRPC's) number for the code.
    pub fn code(self) -> i32 {
        match self {
            ErrorKind::Cancelled => 1,
            ErrorKind::Unknown => 2,
            ErrorKind::InvalidArgument => 3,
            ErrorKind::DeadlineExceeded => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::AlreadyExists => 6,
            ErrorKind::PermissionDenied => 7,
            ErrorKind::ResourceExhausted => 8,
            ErrorKind::FailedPrecondition => 9,
            ErrorKind::Aborted => 10,
            ErrorKind::OutOfRange => 11,
            ErrorKind::Unimplemented => 12,
            ErrorKind::Internal => 13,
            ErrorKind::Unavailable => 14,
            ErrorKind::DataLoss => 15,
            ErrorKind::Unauthenticated => 16,
        }
    }

    /// The HTTP status for this class: TF Serving's `ToHTTPStatusCode` (`http_server.cc`),
    /// used by every HTTP front end (the async gateway and the TF Serving REST API) so that
    /// the mapping lives in one place.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Cancelled => 499,
            ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition | ErrorKind::OutOfRange => {
                400
            }
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists | ErrorKind::Aborted => 409,
            ErrorKind::ResourceExhausted => 429,
            ErrorKind::Unimplemented => 501,
            ErrorKind::Unavailable => 503,
            ErrorKind::DeadlineExceeded => 504,
            ErrorKind::Unknown | ErrorKind::Internal | ErrorKind::DataLoss => 500,
        }
    }

    /// TensorFlow's name for the code, e.g. `INVALID_ARGUMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Cancelled => "CANCELLED",
            ErrorKind::Unknown => "UNKNOWN",
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::AlreadyExists => "ALREADY_EXISTS",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorKind::Aborted => "ABORTED",
            ErrorKind::OutOfRange => "OUT_OF_RANGE",
            ErrorKind::Unimplemented => "UNIMPLEMENTED",
            ErrorKind::Internal => "INTERNAL",
            ErrorKind::Unavailable => "UNAVAILABLE",
            ErrorKind::DataLoss => "DATA_LOSS",
            ErrorKind::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_unknown() {
        for code in 1..=16 {
            let kind = ErrorKind::from_code(code).unwrap();
            assert_eq!(kind.code(), code, "{kind}");
        }
        assert_eq!(ErrorKind::from_code(0), None);
        assert_eq!(ErrorKind::from_code(17), Some(ErrorKind::Unknown));
        assert_eq!(ErrorKind::from_code(-1), Some(ErrorKind::Unknown));
    }

    #[test]
    fn http_statuses_are_tf_servings() {
        // ToHTTPStatusCode in tensorflow_serving/model_servers/http_server.cc.
        let expected = [
            (1, 499),
            (2, 500),
            (3, 400),
            (4, 504),
            (5, 404),
            (6, 409),
            (7, 403),
            (8, 429),
            (9, 400),
            (10, 409),
            (11, 400),
            (12, 501),
            (13, 500),
            (14, 503),
            (15, 500),
            (16, 401),
        ];
        for (code, http) in expected {
            let kind = ErrorKind::from_code(code).unwrap();
            assert_eq!(kind.http_status(), http, "{kind}");
        }
    }
}
