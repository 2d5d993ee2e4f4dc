//! Every error leaves soma's gRPC front end through [`grpc_code`], the one mapping from
//! soma's error classes to gRPC (and TensorFlow, whose numbers are gRPC's) status codes.

use soma_core::ErrorKind;
use soma_runtime::RuntimeError;
use tonic::{Code, Status};

/// The gRPC code for an error class. `tensorflow.error.Code` uses the same numbers, so
/// `StatusProto.error_code` is `grpc_code(kind) as i32`.
pub fn grpc_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Unknown => Code::Unknown,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
    }
}

/// The name of a gRPC code as TF Serving's metrics and logs spell it (`NOT_FOUND`).
pub(crate) fn code_name(code: Code) -> &'static str {
    ErrorKind::from_code(code as i32).map_or("OK", ErrorKind::as_str)
}

pub(crate) fn status(kind: ErrorKind, message: impl Into<String>) -> Status {
    Status::new(grpc_code(kind), message)
}

pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(ErrorKind::InvalidArgument, message)
}

pub(crate) fn from_runtime(error: &RuntimeError) -> Status {
    status(error.kind(), error.client_message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_keeps_its_number_and_name() {
        for number in 1..=16 {
            let kind = ErrorKind::from_code(number).unwrap();
            let code = grpc_code(kind);
            assert_eq!(code as i32, number, "{kind}");
            assert_eq!(code_name(code), kind.as_str());
        }
        assert_eq!(code_name(Code::Ok), "OK");
    }
}
