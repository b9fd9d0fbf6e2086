//! `POST /sql`.

use std::time::Instant;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kalamdb_commons::{ErrorCode, Literal};
use kalamdb_core::SqlRequest;
use kalamdb_core::{JsonResults, StatementResult};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::formats::{self, Format};
use crate::{ApiError, AppState};

/// A body up to this size is sent whole (with its length); a larger one is
/// written while it is sent, a batch of rows at a time.
const WHOLE_BODY_BYTES: usize = 64 << 10;

/// The JSON envelope `{"status":…,"results":[…]` followed by `rest` (the fields
/// after the results, and the closing brace). The results' rows are encoded from
/// their batches as the body is sent (`JsonResults`): a large result is never held
/// as JSON.
pub(crate) fn envelope(
    status: StatusCode,
    outcome: &'static str,
    results: Vec<StatementResult>,
    int64_as_string: bool,
    rest: Vec<u8>,
) -> Response {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(br#"{"status":""#);
    head.extend_from_slice(outcome.as_bytes());
    head.extend_from_slice(br#"","results":"#);
    let mut parts = JsonResults::new(results, int64_as_string);
    let mut whole = false;
    while head.len() <= WHOLE_BODY_BYTES {
        if !parts.write_next(&mut head) {
            whole = true;
            break;
        }
    }
    let body = if whole {
        head.extend_from_slice(&rest);
        Body::from(head)
    } else {
        let mut rest = Some(rest);
        let chunks = std::iter::from_fn(move || {
            let mut chunk = Vec::with_capacity(2 * WHOLE_BODY_BYTES);
            while chunk.len() < WHOLE_BODY_BYTES {
                if !parts.write_next(&mut chunk) {
                    chunk.extend_from_slice(&rest.take().unwrap_or_default());
                    break;
                }
            }
            (!chunk.is_empty()).then(|| Ok::<Bytes, std::convert::Infallible>(Bytes::from(chunk)))
        });
        Body::from_stream(futures::stream::iter(
            std::iter::once(Ok(Bytes::from(head))).chain(chunks),
        ))
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `,"took_ms":…}`: the end of a success envelope.
pub(crate) fn took_ms_tail(took_ms: f64) -> Vec<u8> {
    let mut tail = br#","took_ms":"#.to_vec();
    serde_json::to_writer(&mut tail, &took_ms).expect("a number serializes");
    tail.push(b'}');
    tail
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
    let (request, int64_in_body) = read_request(&headers, body, state.max_body_bytes).await?;
    let int64_as_string = options.int64_as_string || int64_in_body;
    if format != Format::Json {
        let rows = state.db.execute_rows(&caller, request).await?;
        return formats::stream_response(format, rows, int64_as_string).await;
    }
    let outcome = state.db.execute(&caller, request).await;
    let results = outcome.results;
    let took_ms = took_ms(started);
    match outcome.error {
        None => Ok(envelope(
            StatusCode::OK,
            "success",
            results,
            int64_as_string,
            took_ms_tail(took_ms),
        )),
        Some(failure) => Err(ApiError {
            error: failure.error,
            statement_index: Some(failure.statement_index),
            results,
            int64_as_string,
            took_ms,
        }),
    }
}

/// The request, and whether its JSON body asks for 64-bit integers as strings.
async fn read_request(headers: &HeaderMap, body: Body, limit: usize) -> Result<(SqlRequest, bool), ApiError> {
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
        return Ok((SqlRequest::new(sql), false));
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
    let request = SqlRequest {
        sql: body.sql,
        params: body.params.into_iter().map(Literal::from_json).collect(),
        namespace: body.namespace,
    };
    Ok((request, body.int64_as_string))
}
