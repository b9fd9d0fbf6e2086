//! The output formats of `POST /sql` (`?format=` or `Accept`): the JSON envelope,
//! and the streamed formats that write one statement's record batches to the
//! socket as they are produced (docs/API.md, "Output formats").

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use kalamdb_core::{RowStream, df_error, write_json_objects};

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

/// The most rows and bytes of one Parquet row group: what the encoder holds in
/// memory before it writes.
const PARQUET_ROW_GROUP_ROWS: usize = 128 * 1024;
const PARQUET_ROW_GROUP_BYTES: usize = 16 << 20;

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
    let mut encoder = Encoder::new(format, &schema, int64_as_string)?;
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
                None => Some((encoder.finish().map_err(stream_failure), (None, batches))),
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

/// Encodes record batches in one format, handing out the bytes written so far.
enum Encoder {
    Ndjson {
        schema: SchemaRef,
        int64_as_string: bool,
    },
    Csv {
        schema: SchemaRef,
        /// Whether the header line is still to be written.
        header: bool,
    },
    Arrow(StreamWriter<Vec<u8>>),
    Parquet(ArrowWriter<Vec<u8>>),
}

impl Encoder {
    fn new(format: Format, schema: &SchemaRef, int64_as_string: bool) -> KalamResult<Encoder> {
        let failed = |e: &dyn std::fmt::Display| {
            KalamError::internal(format!("cannot start the {} writer: {e}", format.name()))
        };
        Ok(match format {
            Format::Json => return Err(KalamError::internal("JSON results are not streamed")),
            Format::Ndjson => Encoder::Ndjson {
                schema: schema.clone(),
                int64_as_string,
            },
            Format::Csv => Encoder::Csv {
                schema: schema.clone(),
                header: true,
            },
            Format::Arrow => {
                Encoder::Arrow(StreamWriter::try_new(Vec::new(), schema).map_err(|e| failed(&e))?)
            }
            Format::Parquet => {
                let properties = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    .set_max_row_group_bytes(Some(PARQUET_ROW_GROUP_BYTES))
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Encoder::Parquet(
                    ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(properties))
                        .map_err(|e| failed(&e))?,
                )
            }
        })
    }

    /// The bytes the writer has produced and not yet handed out.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Encoder::Ndjson { .. } | Encoder::Csv { .. } => Vec::new(),
            Encoder::Arrow(writer) => std::mem::take(writer.get_mut()),
            Encoder::Parquet(writer) => std::mem::take(writer.inner_mut()),
        }
    }

    fn encode(&mut self, batch: &RecordBatch) -> KalamResult<Vec<u8>> {
        let failed =
            |e: &dyn std::fmt::Display| KalamError::internal(format!("cannot encode the result: {e}"));
        match self {
            Encoder::Ndjson {
                schema,
                int64_as_string,
            } => {
                let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2 + 64);
                write_json_objects(schema.fields(), batch, *int64_as_string, &mut out);
                Ok(out)
            }
            Encoder::Csv { header, .. } => {
                let mut writer = CsvWriterBuilder::new()
                    .with_header(std::mem::take(header))
                    .with_date_format("%Y-%m-%d".into())
                    // RFC 3339 in UTC, as in JSON results.
                    .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.fZ".into())
                    .build(Vec::new());
                writer.write(batch).map_err(|e| failed(&e))?;
                Ok(writer.into_inner())
            }
            Encoder::Arrow(writer) => {
                writer.write(batch).map_err(|e| failed(&e))?;
                Ok(self.take())
            }
            Encoder::Parquet(writer) => {
                writer.write(batch).map_err(|e| failed(&e))?;
                Ok(self.take())
            }
        }
    }

    /// What ends the stream (the IPC end marker, the Parquet footer).
    fn finish(mut self) -> KalamResult<Bytes> {
        let failed =
            |e: &dyn std::fmt::Display| KalamError::internal(format!("cannot finish the result: {e}"));
        Ok(Bytes::from(match self {
            Encoder::Ndjson { .. } => Vec::new(),
            // A result of no rows still has its header line.
            Encoder::Csv {
                header: true,
                ref schema,
            } => {
                let empty = RecordBatch::new_empty(schema.clone());
                self.encode(&empty)?
            }
            Encoder::Csv { .. } => Vec::new(),
            Encoder::Arrow(mut writer) => {
                writer.finish().map_err(|e| failed(&e))?;
                writer.into_inner().map_err(|e| failed(&e))?
            }
            Encoder::Parquet(writer) => writer.into_inner().map_err(|e| failed(&e))?,
        }))
    }
}
