use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use soma_core::ErrorKind;

/// [`ErrorKind::http_status`] as an axum status code.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error answer: `{"error": message}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn from_kind(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError::new(status_for(kind), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<soma_jobs::JobsError> for ApiError {
    fn from(e: soma_jobs::JobsError) -> ApiError {
        ApiError::from_kind(e.kind(), e.to_string())
    }
}
