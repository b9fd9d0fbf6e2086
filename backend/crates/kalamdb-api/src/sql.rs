//! `POST /sql`.

use std::time::Instant;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use kalamdb_commons::{ErrorCode, Literal};
use kalamdb_core::SqlRequest;
use kalamdb_core::StatementResult;
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::formats::{self, Format};
use crate::{ApiError, AppState};

/// `{"status":"success","results":[...],"took_ms":...}`, fields in this order.
#[derive(Serialize)]
pub(crate) struct SuccessBody {
    pub status: &'static str,
    pub results: Vec<StatementResult>,
    pub took_ms: f64,
}

/// Milliseconds since `started`, to the microsecond.
pub(crate) fn took_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// The JSON body. Unknown fields are ignored.
#[derive(Deserialize)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    int64_as_string: bool,
}

/// What the query string of `/sql` may say (anything else is ignored).
#[derive(Default)]
struct SqlOptions {
    format: Option<String>,
    int64_as_string: bool,
}

impl SqlOptions {
    fn parse(query: Option<&str>) -> Result<SqlOptions, ApiError> {
        let mut options = SqlOptions::default();
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "format" => options.format = Some(value.to_string()),
                "int64" => {
                    options.int64_as_string = match value {
                        "string" => true,
                        "number" => false,
                        other => {
                            return Err(ApiError::new(
                                ErrorCode::InvalidParameter,
                                format!("unknown int64 encoding '{other}'; use int64=string or int64=number"),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

pub(crate) async fn execute_sql(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let options = SqlOptions::parse(query.as_deref())?;
    let format = Format::of_request(options.format.as_deref(), &headers)?;
    let mut request = read_request(&headers, body, state.max_body_bytes).await?;
    request.int64_as_string |= options.int64_as_string;
    if format != Format::Json {
        let int64_as_string = request.int64_as_string;
        let rows = state.db.execute_rows(&caller, request).await?;
        return formats::stream_response(format, rows, int64_as_string).await;
    }
    let outcome = state.db.execute(&caller, request).await;
    let results = outcome.results;
    let took_ms = took_ms(started);
    match outcome.error {
        None => Ok(Json(SuccessBody {
            status: "success",
            results,
            took_ms,
        })
        .into_response()),
        Some(failure) => Err(ApiError {
            error: failure.error,
            statement_index: Some(failure.statement_index),
            results,
            took_ms,
        }),
    }
}

/// The request (its JSON body may ask for 64-bit integers as strings).
async fn read_request(headers: &HeaderMap, body: Body, limit: usize) -> Result<SqlRequest, ApiError> {
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    })?;
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        let sql = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "the SQL text is not valid UTF-8"))?;
        return Ok(SqlRequest::new(sql));
    }
    const EXPECTED: &str = r#"expected {"sql": "...", "params": [...], "namespace": "..."}"#;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid JSON body: {e}; {EXPECTED}"),
        )
    })?;
    // Only an object is a request: serde would also read `["SELECT 1"]` as one.
    let kind = match &value {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Array(_) => Some("an array"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Null => Some("null"),
    };
    if let Some(kind) = kind {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("the JSON body is {kind}, not an object; {EXPECTED}"),
        ));
    }
    let body: SqlBody = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid JSON body: {e}; {EXPECTED}"),
        )
    })?;
    Ok(SqlRequest {
        sql: body.sql,
        params: body.params.into_iter().map(Literal::from_json).collect(),
        namespace: body.namespace,
        int64_as_string: body.int64_as_string,
    })
}
