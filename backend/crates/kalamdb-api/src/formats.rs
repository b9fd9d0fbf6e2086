//! The output formats of `POST /sql` (`?format=` or `Accept`): the JSON envelope,
//! and the streamed formats that write one statement's record batches to the
//! socket as they are produced (docs/API.md, "Output formats").

use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use kalamdb_core::{RowEncoder, RowFormat, RowStream, df_error};

use crate::ApiError;

/// How `/sql` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    const ALL: [Format; 5] = [
        Format::Json,
        Format::Ndjson,
        Format::Csv,
        Format::Arrow,
        Format::Parquet,
    ];

    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
            Format::Parquet => "parquet",
        }
    }

    /// The streamed encoding (JSON is the envelope, written by `sql.rs`).
    fn row_format(self) -> Option<RowFormat> {
        match self {
            Format::Json => None,
            Format::Ndjson => Some(RowFormat::Ndjson),
            Format::Csv => Some(RowFormat::Csv),
            Format::Arrow => Some(RowFormat::Arrow),
            Format::Parquet => Some(RowFormat::Parquet),
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The format a request asks for: `?format=` first, then the first media type of
    /// `Accept` that names one (anything else, `*/*` included, is JSON).
    pub(crate) fn of_request(query: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
        if let Some(name) = query {
            return Format::ALL
                .into_iter()
                .find(|f| f.name().eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("unknown format '{name}'; use json, ndjson, csv, arrow or parquet"),
                    )
                });
        }
        let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let named = accept.split(',').find_map(|item| {
            let media = item.split(';').next().unwrap_or("").trim();
            Format::ALL.into_iter().find(|f| {
                let own = f.media_type().split(';').next().unwrap_or("");
                *f != Format::Json && own.eq_ignore_ascii_case(media)
            })
        });
        Ok(named.unwrap_or(Format::Json))
    }
}

/// The response of a streamed format: the first batch is read before the status is
/// sent, so an error found by then is the JSON error envelope; a later one ends the
/// body early (the client sees a truncated chunked body) and is logged.
pub(crate) async fn stream_response(
    format: Format,
    rows: RowStream,
    int64_as_string: bool,
) -> Result<Response, ApiError> {
    let RowStream { schema, mut batches } = rows;
    let row_format = format
        .row_format()
        .ok_or_else(|| KalamError::internal("JSON results are not streamed"))?;
    let mut encoder = RowEncoder::new(row_format, &schema, int64_as_string)?;
    let first = match batches.next().await {
        Some(batch) => Some(batch.map_err(df_error)?),
        None => None,
    };
    let mut head = encoder.take();
    if let Some(batch) = first {
        head.extend_from_slice(&encoder.encode(&same_schema(&schema, batch)?)?);
    }
    let schema_for_rest = schema.clone();
    let rest = futures::stream::unfold((Some(encoder), batches), move |(encoder, mut batches)| {
        let schema = schema_for_rest.clone();
        async move {
            let mut encoder = encoder?;
            match batches.next().await {
                Some(Ok(batch)) => match same_schema(&schema, batch).and_then(|b| encoder.encode(&b)) {
                    Ok(chunk) => Some((Ok(Bytes::from(chunk)), (Some(encoder), batches))),
                    // Nothing follows a failure.
                    Err(e) => Some((Err(stream_failure(e)), (None, batches))),
                },
                Some(Err(e)) => Some((Err(stream_failure(df_error(e))), (None, batches))),
                None => Some((
                    encoder.finish().map(Bytes::from).map_err(stream_failure),
                    (None, batches),
                )),
            }
        }
    })
    .filter(|chunk| std::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty())));
    let body =
        futures::stream::once(std::future::ready(Ok::<Bytes, std::io::Error>(Bytes::from(head)))).chain(rest);
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(format.media_type()));
    Ok(response)
}

/// A failure after the response started: logged, and the body ends there.
fn stream_failure(error: KalamError) -> std::io::Error {
    tracing::warn!(code = error.code.as_str(), message = %error.message, "streamed result ended early");
    std::io::Error::other(error.message)
}

/// `batch` under the stream's schema (the same columns; DataFusion's batches may
/// carry less field metadata), as the IPC and Parquet writers want.
fn same_schema(schema: &SchemaRef, batch: RecordBatch) -> KalamResult<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
        .map_err(|e| KalamError::internal(format!("result batch does not match its schema: {e}")))
}
