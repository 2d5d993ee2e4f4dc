//! `{"error": "..."}` bodies with TF Serving's status → HTTP code mapping.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use soma_core::ErrorKind;
use soma_runtime::RuntimeError;

/// A failed request: the canonical code and TF Serving's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// Set for failures that have no TF Serving status (e.g. body too large).
    pub(crate) http: Option<StatusCode>,
}

impl RestError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> RestError {
        RestError {
            kind,
            message: message.into(),
            http: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> RestError {
        RestError::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.http.unwrap_or_else(|| http_status(self.kind))
    }
}

impl From<RuntimeError> for RestError {
    fn from(e: RuntimeError) -> RestError {
        RestError::new(e.kind(), e.client_message())
    }
}

/// [`ErrorKind::http_status`] as an axum status code.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A JSON body with `Content-Type: application/json`.
pub(crate) fn json_response(code: StatusCode, body: String) -> Response {
    let mut response = (code, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// TF Serving's `FillJsonErrorMsg` layout, `{ "error": "..." }`. TF Serving escapes the
/// message with `CEscape` (which turns `'` into the invalid JSON escape `\'`); soma uses
/// JSON string escaping so that every client can parse the body.
pub(crate) fn error_body(message: &str) -> String {
    let quoted = serde_json::to_string(message).unwrap_or_default();
    format!("{{ \"error\": {quoted} }}")
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        json_response(self.status(), error_body(&self.message))
    }
}
