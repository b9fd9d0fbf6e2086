//! The one error type of the HTTP layer and its JSON body.

use std::any::Any;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalamdb_commons::{ErrorCode, KalamError};
use kalamdb_core::StatementResult;
use serde::Serialize;

/// `{"status":"error","results":[...],"error":{...},"took_ms":...}`, fields in this order:
/// the part after the results.
#[derive(Serialize)]
struct ErrorTail {
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
    /// Whether the results carry 64-bit integers as strings.
    pub int64_as_string: bool,
    pub took_ms: f64,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            error: KalamError::new(code, message),
            statement_index: None,
            results: Vec::new(),
            int64_as_string: false,
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
            int64_as_string: false,
            took_ms: 0.0,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code;
        let message = kalamdb_core::public_message(&self.error);
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let tail = ErrorTail {
            error: ErrorDetail {
                code: code.as_str(),
                message,
                statement_index: self.statement_index,
            },
            took_ms: self.took_ms,
        };
        // The tail's fields follow the results: its opening brace becomes a comma.
        let mut rest = serde_json::to_vec(&tail).expect("the error serializes");
        rest[0] = b',';
        crate::sql::envelope(status, "error", self.results, self.int64_as_string, rest)
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(error: ApiError) -> (u16, serde_json::Value) {
        let response = error.into_response();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_errors_hide_their_details() {
        let (status, body) = body_of(ApiError::new(
            ErrorCode::InternalError,
            "storage failure: /secret/path/000123.sst corrupt",
        ))
        .await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("internal error (request "), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(body["error"].get("statement_index").is_none());
    }

    #[tokio::test]
    async fn user_errors_keep_code_status_and_message() {
        let mut error = ApiError::new(ErrorCode::DuplicateKey, "duplicate key id = 1 in 'app.t'");
        error.statement_index = Some(2);
        let (status, body) = body_of(error).await;
        assert_eq!(status, 409);
        assert_eq!(
            body["error"],
            serde_json::json!({"code": "DUPLICATE_KEY", "message": "duplicate key id = 1 in 'app.t'", "statement_index": 2})
        );
        assert_eq!(body["status"], "error");
    }

    #[tokio::test]
    async fn a_panic_is_a_500_with_the_error_shape() {
        let response = panic_response(Box::new("boom"));
        assert_eq!(response.status().as_u16(), 500);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        assert!(!body.to_string().contains("boom"));
    }
}
