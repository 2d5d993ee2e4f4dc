//! Every error leaves soma's gRPC front end through [`grpc_code`]: soma's error classes
//! are TensorFlow's status codes, whose numbers are gRPC's.

use soma_core::ErrorKind;
use soma_runtime::RuntimeError;
use tonic::{Code, Status};

/// The gRPC code for an error class: soma's classes are TensorFlow's codes, whose numbers
/// are gRPC's, so the number carries over (`StatusProto.error_code` is `kind.code()`).
pub fn grpc_code(kind: ErrorKind) -> Code {
    Code::from(kind.code())
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
