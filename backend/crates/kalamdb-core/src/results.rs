//! Results: what a statement returns and how it is written at the edge.
//!
//! A [`StatementResult`] is the same for every statement: the schema and Arrow
//! batches of its rows (a query, SHOW, DESCRIBE, FLUSH, `... RETURNING`, a point
//! read), its row count and its message. Nothing is encoded until a protocol asks:
//! the JSON envelope of `/sql` ([`JsonResults`], written batch by batch as the body
//! is sent), NDJSON ([`write_json_objects`]) and the rows of live-query messages
//! ([`write_json_object_array`]) are written here, from the batches, once, and so
//! are the streamed formats ([`RowEncoder`]: NDJSON, CSV, Arrow IPC, Parquet). The one
//! int64 rule, for clients whose numbers are doubles, is [`write_int64`]: with the
//! option, a `BigInt` value is a JSON string.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use kalamdb_commons::value::{format_date, format_decimal, format_timestamp, hex};
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};

use crate::arrow_conv::RowStream;
use crate::arrow_conv::TYPE_METADATA_KEY;
use crate::base::df_error;

/// The result of one statement: its rows as Arrow batches (none for a statement
/// that returns no rows: its schema has no columns), the rows it returned or
/// changed, and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub row_count: usize,
    pub message: Option<String>,
}

impl StatementResult {
    pub(crate) fn message(message: impl Into<String>) -> Self {
        StatementResult {
            schema: Arc::new(Schema::empty()),
            batches: Vec::new(),
            row_count: 0,
            message: Some(message.into()),
        }
    }

    pub(crate) fn affected(row_count: usize, message: impl Into<String>) -> Self {
        StatementResult {
            row_count,
            ..Self::message(message)
        }
    }

    /// A result of rows, refused (`RESOURCES_EXHAUSTED`) when its batches hold
    /// more than `limit` bytes (`max_result_bytes`).
    pub(crate) fn rows(schema: SchemaRef, batches: Vec<RecordBatch>, limit: usize) -> KalamResult<Self> {
        let mut held = HeldRows::new(schema, limit);
        for batch in batches {
            held.push(batch)?;
        }
        Ok(held.finish())
    }

    /// The rows of `stream`, read to the end (see [`StatementResult::rows`]).
    pub(crate) async fn collect(stream: RowStream, limit: usize) -> KalamResult<Self> {
        let RowStream { schema, mut batches } = stream;
        let mut held = HeldRows::new(schema, limit);
        while let Some(batch) = batches.next().await {
            held.push(batch.map_err(df_error)?)?;
        }
        Ok(held.finish())
    }

    /// The rows as a stream (the streamed formats of statements that do not run as
    /// a query: SHOW, FLUSH, `... RETURNING`).
    pub(crate) fn into_stream(self) -> RowStream {
        let schema = self.schema;
        let batches = futures::stream::iter(self.batches.into_iter().map(Ok));
        RowStream {
            schema: schema.clone(),
            batches: Box::pin(RecordBatchStreamAdapter::new(schema, batches)),
        }
    }
}

/// A batch holding more than this (or more than the limit leaves) is checked for
/// buffers much larger than its rows.
const SPARSE_BATCH_BYTES: usize = 64 << 10;

/// The batches of a result as they arrive, with the bytes they hold counted
/// against `max_result_bytes`.
struct HeldRows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    limit: usize,
}

impl HeldRows {
    fn new(schema: SchemaRef, limit: usize) -> Self {
        HeldRows {
            schema,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            limit,
        }
    }

    fn push(&mut self, batch: RecordBatch) -> KalamResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // What the batch holds is what counts. A batch whose buffers are much larger
        // than its rows (a LIMIT's slice of a larger batch, a scan's few rows in
        // buffers sized for thousands) is copied into buffers of its own first, so
        // that what is held is what is counted.
        let mut batch = batch;
        let mut held = batch.get_array_memory_size();
        if held > SPARSE_BATCH_BYTES || self.bytes + held > self.limit {
            let needed: usize = (batch.columns().iter())
                .map(|c| {
                    c.to_data()
                        .get_slice_memory_size()
                        .unwrap_or_else(|_| c.get_array_memory_size())
                })
                .sum();
            if held > 2 * needed
                && let Ok(compact) =
                    take_record_batch(&batch, &UInt32Array::from_iter_values(0..batch.num_rows() as u32))
            {
                batch = compact;
                held = batch.get_array_memory_size();
            }
        }
        self.bytes += held;
        if self.bytes > self.limit {
            return Err(KalamError::new(
                ErrorCode::ResourcesExhausted,
                format!(
                    "the result is larger than max_result_bytes ({} bytes); select fewer rows or columns",
                    self.limit
                ),
            ));
        }
        self.rows += batch.num_rows();
        self.batches.push(batch);
        Ok(())
    }

    fn finish(self) -> StatementResult {
        StatementResult {
            schema: self.schema,
            batches: self.batches,
            row_count: self.rows,
            message: None,
        }
    }
}

/// The `results` array of `/sql`'s JSON envelope, written part by part when the
/// body asks for it ([`JsonResults::write_next`]): each batch is encoded when its turn
/// comes and dropped after, so a large result is never held twice. A result is
/// `{"columns":[{"name":…,"data_type":…}],"rows":[[…],…],"row_count":n,"message":…}`.
pub struct JsonResults {
    results: std::vec::IntoIter<StatementResult>,
    /// The result being written: its rows still to come.
    current: Option<(StatementResult, std::vec::IntoIter<RecordBatch>, bool)>,
    int64_as_string: bool,
    opened: bool,
    wrote_result: bool,
    closed: bool,
}

impl JsonResults {
    pub fn new(results: Vec<StatementResult>, int64_as_string: bool) -> Self {
        JsonResults {
            results: results.into_iter(),
            current: None,
            int64_as_string,
            opened: false,
            wrote_result: false,
            closed: false,
        }
    }

    /// Appends the next part to `out` — the opening bracket, a result's columns, one
    /// batch of its rows, a result's end, the closing bracket —; `false` when every
    /// part has been written.
    pub fn write_next(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.opened {
            self.opened = true;
            out.push(b'[');
            return true;
        }
        if let Some((result, batches, written)) = &mut self.current {
            if let Some(batch) = batches.next() {
                write_json_rows(
                    result.schema.fields(),
                    &batch,
                    self.int64_as_string,
                    *written,
                    out,
                );
                *written |= batch.num_rows() > 0;
                return true;
            }
            out.extend_from_slice(br#"],"row_count":"#);
            write_int64(result.row_count, false, out);
            out.extend_from_slice(br#","message":"#);
            serde_json::to_writer(&mut *out, &result.message).expect("a message serializes");
            out.push(b'}');
            self.current = None;
            return true;
        }
        if let Some(mut result) = self.results.next() {
            if std::mem::replace(&mut self.wrote_result, true) {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"columns":["#);
            for (i, f) in result.schema.fields().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"name":"#);
                serde_json::to_writer(&mut *out, f.name()).expect("a name serializes");
                out.extend_from_slice(br#","data_type":"#);
                serde_json::to_writer(&mut *out, &api_type_name(f)).expect("a name serializes");
                out.push(b'}');
            }
            out.extend_from_slice(br#"],"rows":["#);
            let batches = std::mem::take(&mut result.batches).into_iter();
            self.current = Some((result, batches, false));
            return true;
        }
        if !self.closed {
            self.closed = true;
            out.push(b']');
            return true;
        }
        false
    }
}

/// The one int64 rule: a 64-bit integer as a JSON number, or with `as_string` as a
/// JSON string (for readers whose numbers are doubles: JavaScript).
pub fn write_int64<T: serde::Serialize>(value: T, as_string: bool, out: &mut Vec<u8>) {
    if as_string {
        out.push(b'"');
    }
    // An integer serializes to its digits (itoa); writing to a Vec<u8> cannot fail.
    let _ = serde_json::to_writer(&mut *out, &value);
    if as_string {
        out.push(b'"');
    }
}

/// The API's name for a result column's type.
pub fn api_type_name(field: &Field) -> String {
    if let Some(name) = field.metadata().get(TYPE_METADATA_KEY) {
        return name.clone();
    }
    match field.data_type() {
        DataType::Null => "Null".into(),
        DataType::Boolean => "Boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SmallInt".into(),
        DataType::Int32 | DataType::UInt16 => "Int".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "BigInt".into(),
        DataType::Float16 | DataType::Float32 => "Float".into(),
        DataType::Float64 => "Double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("Decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "Text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "Bytes".into(),
        DataType::Date32 | DataType::Date64 => "Date".into(),
        DataType::Timestamp(_, _) => "Timestamp".into(),
        other => other.to_string(),
    }
}

/// The JSON values of a result column whose type [`JsonColumn`] does not write
/// directly (decimals, bytes, dates, timestamps, anything else as Arrow displays it),
/// formatted once per batch.
fn formatted_values(array: &ArrayRef) -> Vec<serde_json::Value> {
    use serde_json::Value as J;
    let n = array.len();
    let each = |f: &dyn Fn(usize) -> J| -> Vec<J> {
        (0..n)
            .map(|i| if array.is_null(i) { J::Null } else { f(i) })
            .collect()
    };
    match array.data_type() {
        DataType::Decimal128(_, scale) => {
            let a = array.as_primitive::<Decimal128Type>();
            let scale = (*scale).max(0) as u8;
            each(&|i| J::String(format_decimal(a.value(i), scale)))
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            each(&|i| J::String(format!("\\x{}", hex(a.value(i)))))
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            each(&|i| J::String(format!("\\x{}", hex(a.value(i)))))
        }
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            each(&|i| J::String(format_date(a.value(i))))
        }
        DataType::Timestamp(unit, _) => {
            let micros = |i: usize| -> i64 {
                match unit {
                    TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(i) * 1_000_000,
                    TimeUnit::Millisecond => {
                        array.as_primitive::<TimestampMillisecondType>().value(i) * 1_000
                    }
                    TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(i),
                    TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(i) / 1_000,
                }
            };
            each(&|i| J::String(format_timestamp(micros(i))))
        }
        _ => {
            let options = FormatOptions::default();
            match ArrayFormatter::try_new(array.as_ref(), &options) {
                Ok(formatter) => each(&|i| J::String(formatter.value(i).to_string())),
                Err(_) => vec![J::Null; n],
            }
        }
    }
}

/// Appends one batch's rows to a JSON array under construction, each row as an
/// array of its values, written directly from the Arrow columns; `after_rows`: rows
/// were written before (a comma comes first). With `int64_as_string`, 64-bit
/// integers (`BigInt` columns) are JSON strings.
fn write_json_rows(
    fields: &[Arc<Field>],
    batch: &RecordBatch,
    int64_as_string: bool,
    after_rows: bool,
    out: &mut Vec<u8>,
) {
    let writers: Vec<JsonColumn> = fields
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| JsonColumn::new(field, array, int64_as_string))
        .collect();
    for row in 0..batch.num_rows() {
        if after_rows || row > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (i, writer) in writers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            writer.write(row, out);
        }
        out.push(b']');
    }
}

/// Writes one batch's rows as JSON objects (`{"column": value, ...}`), one per line
/// (NDJSON), with the values [`write_json_rows`] writes. With `int64_as_string`,
/// 64-bit integers (`BigInt` columns) are written as strings, for readers whose
/// numbers are doubles (JavaScript).
pub fn write_json_objects(
    fields: &[Arc<Field>],
    batch: &RecordBatch,
    int64_as_string: bool,
    out: &mut Vec<u8>,
) {
    write_objects(fields, batch, int64_as_string, out, |out, _| out.push(b'\n'));
}

/// Writes one batch's rows as a JSON array of objects (`[{...},{...}]`), with the
/// values of [`write_json_objects`] (the rows of live-query messages).
pub(crate) fn write_json_object_array(
    fields: &[Arc<Field>],
    batch: &RecordBatch,
    int64_as_string: bool,
    out: &mut Vec<u8>,
) {
    out.push(b'[');
    let last = batch.num_rows().saturating_sub(1);
    write_objects(fields, batch, int64_as_string, out, |out, row| {
        if row < last {
            out.push(b',');
        }
    });
    out.push(b']');
}

fn write_objects(
    fields: &[Arc<Field>],
    batch: &RecordBatch,
    int64_as_string: bool,
    out: &mut Vec<u8>,
    after_row: impl Fn(&mut Vec<u8>, usize),
) {
    let writers: Vec<JsonColumn> = fields
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| JsonColumn::new(field, array, int64_as_string))
        .collect();
    let keys: Vec<String> = fields
        .iter()
        .map(|f| serde_json::to_string(f.name()).expect("a string serializes"))
        .collect();
    for row in 0..batch.num_rows() {
        out.push(b'{');
        for (i, writer) in writers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(keys[i].as_bytes());
            out.push(b':');
            writer.write(row, out);
        }
        out.push(b'}');
        after_row(out, row);
    }
}

/// Writes the values of one result column as JSON text.
enum JsonColumn<'a> {
    Null,
    Bool(&'a datafusion::arrow::array::BooleanArray),
    /// The bool: written as a string (`int64_as_string`).
    Int(&'a ArrayRef, fn(&ArrayRef, usize) -> i64, bool),
    UInt(&'a datafusion::arrow::array::UInt64Array, bool),
    Float(&'a ArrayRef, fn(&ArrayRef, usize) -> f64),
    Text(&'a ArrayRef, bool),
    /// Formatted once per batch (decimals, dates, timestamps, bytes, the rest).
    Values(Vec<serde_json::Value>),
}

impl<'a> JsonColumn<'a> {
    fn new(field: &Field, array: &'a ArrayRef, int64_as_string: bool) -> JsonColumn<'a> {
        let quoted = int64_as_string && api_type_name(field) == "BigInt";
        macro_rules! int {
            ($t:ty) => {
                JsonColumn::Int(array, |a, i| a.as_primitive::<$t>().value(i) as i64, quoted)
            };
        }
        match array.data_type() {
            DataType::Null => JsonColumn::Null,
            DataType::Boolean => JsonColumn::Bool(array.as_boolean()),
            DataType::Int8 => int!(Int8Type),
            DataType::Int16 => int!(Int16Type),
            DataType::Int32 => int!(Int32Type),
            DataType::Int64 => int!(Int64Type),
            DataType::UInt8 => int!(UInt8Type),
            DataType::UInt16 => int!(UInt16Type),
            DataType::UInt32 => int!(UInt32Type),
            DataType::UInt64 => JsonColumn::UInt(array.as_primitive::<UInt64Type>(), quoted),
            DataType::Float32 => {
                JsonColumn::Float(array, |a, i| a.as_primitive::<Float32Type>().value(i) as f64)
            }
            DataType::Float64 => JsonColumn::Float(array, |a, i| a.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let is_json = field.metadata().get(TYPE_METADATA_KEY).map(String::as_str) == Some("Json");
                JsonColumn::Text(array, is_json)
            }
            _ => JsonColumn::Values(formatted_values(array)),
        }
    }

    fn write(&self, i: usize, out: &mut Vec<u8>) {
        let array = match self {
            JsonColumn::Null => None,
            JsonColumn::Bool(a) => Some(*a as &dyn Array),
            JsonColumn::Int(a, _, _) | JsonColumn::Float(a, _) | JsonColumn::Text(a, _) => Some(a.as_ref()),
            JsonColumn::UInt(a, _) => Some(*a as &dyn Array),
            JsonColumn::Values(_) => None,
        };
        if array.is_none_or(|a| a.is_null(i)) && !matches!(self, JsonColumn::Values(_)) {
            out.extend_from_slice(b"null");
            return;
        }
        // Writing to a Vec<u8> cannot fail.
        let _ = match self {
            JsonColumn::Null => Ok(()),
            JsonColumn::Bool(a) => {
                out.extend_from_slice(if a.value(i) { b"true" } else { b"false" });
                Ok(())
            }
            JsonColumn::Int(a, get, quoted) => {
                write_int64(get(a, i), *quoted, out);
                Ok(())
            }
            JsonColumn::UInt(a, quoted) => {
                write_int64(a.value(i), *quoted, out);
                Ok(())
            }
            JsonColumn::Float(a, get) => {
                let v = get(a, i);
                if v.is_finite() {
                    serde_json::to_writer(&mut *out, &v)
                } else {
                    out.extend_from_slice(b"null");
                    Ok(())
                }
            }
            JsonColumn::Text(a, is_json) => {
                let s = match a.data_type() {
                    DataType::Utf8 => a.as_string::<i32>().value(i),
                    DataType::LargeUtf8 => a.as_string::<i64>().value(i),
                    _ => a.as_string_view().value(i),
                };
                match is_json.then(|| serde_json::from_str::<&serde_json::value::RawValue>(s)) {
                    Some(Ok(raw)) => {
                        out.extend_from_slice(raw.get().trim().as_bytes());
                        Ok(())
                    }
                    _ => serde_json::to_writer(&mut *out, s),
                }
            }
            JsonColumn::Values(values) => serde_json::to_writer(&mut *out, &values[i]),
        };
    }
}

/// The streamed row formats (`/sql?format=…`; pgwire's COPY later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

/// The most rows and bytes of one Parquet row group: what the encoder holds in
/// memory before it writes.
const PARQUET_ROW_GROUP_ROWS: usize = 128 * 1024;
const PARQUET_ROW_GROUP_BYTES: usize = 16 << 20;

/// Encodes a statement's record batches in one [`RowFormat`] as they arrive, handing
/// out the bytes written so far: NDJSON and CSV a batch at a time, Arrow IPC per
/// message, Parquet per row group (at most 128 Ki rows or 16 MiB held).
pub enum RowEncoder {
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

impl RowEncoder {
    pub fn new(format: RowFormat, schema: &SchemaRef, int64_as_string: bool) -> KalamResult<RowEncoder> {
        let failed = |e: &dyn std::fmt::Display| {
            KalamError::internal(format!("cannot start the {format:?} writer: {e}"))
        };
        Ok(match format {
            RowFormat::Ndjson => RowEncoder::Ndjson {
                schema: schema.clone(),
                int64_as_string,
            },
            RowFormat::Csv => RowEncoder::Csv {
                schema: schema.clone(),
                header: true,
            },
            RowFormat::Arrow => {
                RowEncoder::Arrow(StreamWriter::try_new(Vec::new(), schema).map_err(|e| failed(&e))?)
            }
            RowFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    .set_max_row_group_bytes(Some(PARQUET_ROW_GROUP_BYTES))
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                RowEncoder::Parquet(
                    ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(properties))
                        .map_err(|e| failed(&e))?,
                )
            }
        })
    }

    /// The bytes the writer has produced and not yet handed out.
    pub fn take(&mut self) -> Vec<u8> {
        match self {
            RowEncoder::Ndjson { .. } | RowEncoder::Csv { .. } => Vec::new(),
            RowEncoder::Arrow(writer) => std::mem::take(writer.get_mut()),
            RowEncoder::Parquet(writer) => std::mem::take(writer.inner_mut()),
        }
    }

    /// Encodes one batch; returns the bytes ready to send.
    pub fn encode(&mut self, batch: &RecordBatch) -> KalamResult<Vec<u8>> {
        let failed =
            |e: &dyn std::fmt::Display| KalamError::internal(format!("cannot encode the result: {e}"));
        match self {
            RowEncoder::Ndjson {
                schema,
                int64_as_string,
            } => {
                let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2 + 64);
                write_json_objects(schema.fields(), batch, *int64_as_string, &mut out);
                Ok(out)
            }
            RowEncoder::Csv { header, .. } => {
                let mut writer = CsvWriterBuilder::new()
                    .with_header(std::mem::take(header))
                    .with_date_format("%Y-%m-%d".into())
                    // RFC 3339 in UTC, as in JSON results.
                    .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.fZ".into())
                    .build(Vec::new());
                writer.write(batch).map_err(|e| failed(&e))?;
                Ok(writer.into_inner())
            }
            RowEncoder::Arrow(writer) => {
                writer.write(batch).map_err(|e| failed(&e))?;
                Ok(self.take())
            }
            RowEncoder::Parquet(writer) => {
                writer.write(batch).map_err(|e| failed(&e))?;
                Ok(self.take())
            }
        }
    }

    /// What ends the stream (the IPC end marker, the Parquet footer; a CSV of no
    /// rows still has its header line).
    pub fn finish(mut self) -> KalamResult<Vec<u8>> {
        let failed =
            |e: &dyn std::fmt::Display| KalamError::internal(format!("cannot finish the result: {e}"));
        Ok(match self {
            RowEncoder::Ndjson { .. } => Vec::new(),
            RowEncoder::Csv {
                header: true,
                ref schema,
            } => {
                let empty = RecordBatch::new_empty(schema.clone());
                self.encode(&empty)?
            }
            RowEncoder::Csv { .. } => Vec::new(),
            RowEncoder::Arrow(mut writer) => {
                writer.finish().map_err(|e| failed(&e))?;
                writer.into_inner().map_err(|e| failed(&e))?
            }
            RowEncoder::Parquet(writer) => writer.into_inner().map_err(|e| failed(&e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrow_conv::{field, values_to_array};
    use kalamdb_commons::{KalamType, Value};

    #[test]
    fn json_output() {
        let decimal = KalamType::Decimal {
            precision: 9,
            scale: 2,
        };
        let schema = Arc::new(Schema::new(vec![
            field("d", &decimal, true),
            field("j", &KalamType::Json, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                values_to_array(
                    &decimal,
                    &[Value::Decimal {
                        unscaled: -5,
                        precision: 9,
                        scale: 2,
                    }],
                ),
                values_to_array(&KalamType::Json, &[Value::Json("{\"a\":1}".into())]),
            ],
        )
        .unwrap();
        let result = StatementResult::rows(schema.clone(), vec![batch], 1 << 20).unwrap();
        assert!(body(vec![result], false).contains(r#""rows":[["-0.05",{"a":1}]]"#));
        assert_eq!(api_type_name(schema.field(1)), "Json");
    }

    fn body(results: Vec<StatementResult>, int64_as_string: bool) -> String {
        let mut parts = JsonResults::new(results, int64_as_string);
        let mut out = Vec::new();
        while parts.write_next(&mut out) {}
        String::from_utf8(out).unwrap()
    }

    fn ids(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![field("id", &KalamType::BigInt, false)]));
        RecordBatch::try_new(
            schema,
            vec![values_to_array(
                &KalamType::BigInt,
                &values.iter().map(|v| Value::BigInt(*v)).collect::<Vec<_>>(),
            )],
        )
        .unwrap()
    }

    #[test]
    fn the_json_envelope_is_written_from_the_batches() {
        let (a, b) = (ids(&[1, 2]), ids(&[9_007_199_254_740_993]));
        let rows = StatementResult::rows(a.schema(), vec![a, ids(&[]), b], 1 << 20).unwrap();
        assert_eq!(rows.row_count, 3);
        let results = vec![rows, StatementResult::affected(2, "Deleted 2 row(s)")];
        assert_eq!(
            body(results.clone(), false),
            r#"[{"columns":[{"name":"id","data_type":"BigInt"}],"rows":[[1],[2],[9007199254740993]],"row_count":3,"message":null},{"columns":[],"rows":[],"row_count":2,"message":"Deleted 2 row(s)"}]"#
        );
        // The one int64 rule: BigInt values as strings.
        assert!(body(results, true).contains(r#""rows":[["1"],["2"],["9007199254740993"]]"#));
        assert_eq!(body(Vec::new(), false), "[]");
    }

    #[test]
    fn a_json_document_of_any_depth_is_written_as_it_is() {
        // 126 levels, with the envelope's own four around it.
        let document = format!("{}{}", "[".repeat(126), "]".repeat(126));
        let schema = Arc::new(Schema::new(vec![field("doc", &KalamType::Json, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![values_to_array(
                &KalamType::Json,
                &[Value::Json(document.clone())],
            )],
        )
        .unwrap();
        let result = StatementResult::rows(schema, vec![batch], 1 << 20).unwrap();
        assert!(body(vec![result], true).contains(&format!(r#""rows":[[{document}]]"#)));
    }

    #[test]
    fn a_result_holding_more_than_its_limit_is_refused() {
        let batch = ids(&(0..1000).collect::<Vec<_>>());
        let error = StatementResult::rows(batch.schema(), vec![batch.clone()], 4000).unwrap_err();
        assert_eq!(error.code, ErrorCode::ResourcesExhausted);
        assert!(error.message.contains("max_result_bytes"), "{}", error.message);
        // A slice counts its own rows, not its parent's: it is held in buffers of its
        // own.
        let slice = batch.slice(0, 10);
        let held = StatementResult::rows(slice.schema(), vec![slice], 4000).unwrap();
        assert_eq!(held.row_count, 10);
        assert!(held.batches[0].get_array_memory_size() < 1000);
        // Few rows in large buffers (a scan's sparse batch) are copied out too.
        let big = ids(&(0..20_000).collect::<Vec<_>>()).slice(5, 3);
        let held = StatementResult::rows(big.schema(), vec![big], 1 << 20).unwrap();
        assert_eq!(held.batches[0].num_rows(), 3);
        assert!(held.batches[0].get_array_memory_size() < 1000);
    }

    #[test]
    fn rows_stream_out_as_they_were_held() {
        let batch = ids(&[5, 6]);
        let result = StatementResult::rows(batch.schema(), vec![batch.clone()], 1 << 20).unwrap();
        let stream = result.into_stream();
        let batches: Vec<RecordBatch> =
            futures::executor::block_on(stream.batches.map(|b| b.unwrap()).collect());
        assert_eq!(batches, vec![batch]);
    }
}
