//! `POST /ingest/<namespace>/<table>`: bulk load of an NDJSON, CSV, Arrow IPC or
//! Parquet body (chosen by `Content-Type`), answered like one `/sql` statement.

use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kalamdb_commons::ErrorCode;
use kalamdb_core::IngestFormat;

use crate::auth::Authenticated;
use crate::sql::{envelope, took_ms, took_ms_tail};
use crate::{ApiError, AppState};

pub(crate) async fn ingest(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((namespace, table)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = IngestFormat::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "Content-Type '{content_type}' is not a bulk-load format; use application/x-ndjson, \
                 text/csv, application/vnd.apache.arrow.stream or application/vnd.apache.parquet"
            ),
        )
    })?;
    let limit = state.max_ingest_bytes;
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes (max_ingest_bytes); split the load"),
        )
    })?;
    match state.db.ingest(&caller, &namespace, &table, format, bytes).await {
        Ok(result) => Ok(envelope(
            StatusCode::OK,
            "success",
            vec![result],
            false,
            took_ms_tail(took_ms(started)),
        )),
        Err(error) => Err(ApiError {
            took_ms: took_ms(started),
            ..ApiError::from(error)
        }),
    }
}
