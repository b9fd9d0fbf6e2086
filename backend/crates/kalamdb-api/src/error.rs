//! The one error type of the HTTP layer and its JSON body.

use std::any::Any;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalamdb_commons::{ErrorCode, KalamError};
use kalamdb_core::StatementResult;
use serde::Serialize;

/// `{"status":"error","results":[...],"error":{...},"took_ms":...}`, fields in this order.
#[derive(Serialize)]
struct ErrorBody {
    status: &'static str,
    results: Vec<StatementResult>,
    error: ErrorDetail,
    took_ms: f64,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    statement_index: Option<usize>,
}

/// An error answered with `{"status":"error", ...}` and the code's HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub error: KalamError,
    pub statement_index: Option<usize>,
    /// Results of the statements that completed before the error.
    pub results: Vec<StatementResult>,
    pub took_ms: f64,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            error: KalamError::new(code, message),
            statement_index: None,
            results: Vec::new(),
            took_ms: 0.0,
        }
    }
}

impl From<KalamError> for ApiError {
    fn from(error: KalamError) -> Self {
        ApiError {
            error,
            statement_index: None,
            results: Vec::new(),
            took_ms: 0.0,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code;
        let message = if code == ErrorCode::InternalError {
            let request_id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(%request_id, error = %self.error.message, "internal error");
            format!("internal error (request {request_id}); the server log has the details")
        } else {
            self.error.message
        };
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            status: "error",
            results: self.results,
            error: ErrorDetail {
                code: code.as_str(),
                message,
                statement_index: self.statement_index,
            },
            took_ms: self.took_ms,
        };
        (status, Json(body)).into_response()
    }
}

/// A panic while handling a request: logged, answered as that request's 500.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::new(ErrorCode::InternalError, format!("panic: {detail}")).into_response()
}
