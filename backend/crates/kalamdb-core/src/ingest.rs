//! Bulk load (`POST /ingest/<namespace>/<table>`): rows from an NDJSON, CSV, Arrow IPC
//! or Parquet body, written as one atomic batch with the scoping, rights, defaults,
//! NOT NULL and key checks of an INSERT.
//!
//! The body is decoded on the blocking pool, row by row (NDJSON, CSV) or in record
//! batches (Arrow IPC, Parquet), each row encoded straight into its pending write; the
//! commit is `write.rs`'s, like any INSERT's. A bad row — malformed, an unknown
//! column, a value its column cannot hold, a NULL in a NOT NULL column, a key given
//! twice or already stored — refuses the whole request with the row's line (NDJSON,
//! CSV) or row number (Arrow, Parquet) in the message; nothing is written.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult, Literal, Value};
use kalamdb_store::row_codec::encode_value;

use crate::arrow_conv::column_values;
use crate::catalog::TableDef;
use crate::dml::{check_not_null, column_index, default_value, encode_new_row, scope_of, writable_table};
use crate::executor::StatementContext;
use crate::write::{self, Expect, OnLive, Outcome, PendingWrite};
use crate::{StatementResult, now_micros};

/// The formats a bulk load accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFormat {
    /// `application/x-ndjson`: one JSON object per line, keys are column names.
    Ndjson,
    /// `text/csv`: a header line naming the columns, then one row per line.
    Csv,
    /// `application/vnd.apache.arrow.stream`: an Arrow IPC stream.
    ArrowIpc,
    /// `application/vnd.apache.parquet`: a Parquet file.
    Parquet,
}

impl IngestFormat {
    /// The format a `Content-Type` names (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<IngestFormat> {
        let media = content_type.split(';').next()?.trim().to_ascii_lowercase();
        match media.as_str() {
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Some(IngestFormat::Ndjson),
            "text/csv" => Some(IngestFormat::Csv),
            "application/vnd.apache.arrow.stream" => Some(IngestFormat::ArrowIpc),
            "application/vnd.apache.parquet" | "application/x-parquet" => Some(IngestFormat::Parquet),
            _ => None,
        }
    }
}

/// Rows per record batch when reading Parquet.
const BATCH_ROWS: usize = 8192;

/// Loads `body` into `namespace.table` as the caller (see the module documentation).
pub(crate) async fn ingest(
    ctx: &StatementContext<'_>,
    table_name: &str,
    format: IngestFormat,
    body: Bytes,
) -> KalamResult<StatementResult> {
    // A load races with schema changes only: it runs again on the new definition.
    for _ in 0..3 {
        let table = writable_table(ctx, ctx.namespace, table_name)?;
        let rows = {
            let (table, body) = (table.clone(), body.clone());
            let defaults = Defaults::new(ctx, &table)?;
            tokio::task::spawn_blocking(move || decode(&table, format, &body, &defaults))
                .await
                .map_err(|e| KalamError::internal(format!("the decoding task failed: {e}")))??
        };
        let scope = scope_of(ctx, &table);
        let count = rows.writes.len();
        match write::commit(ctx.db, &table, &scope, &rows.writes, None).await? {
            Outcome::Done { .. } => {
                return Ok(StatementResult::affected(count, format!("Loaded {count} row(s)")));
            }
            Outcome::Retry => continue,
            Outcome::Duplicate { index } => {
                return Err(KalamError::new(
                    ErrorCode::DuplicateKey,
                    format!(
                        "{}: duplicate key {} in '{}'; nothing was loaded",
                        rows.places[index],
                        rows.writes[index].key.display(),
                        table.qualified_name()
                    ),
                ));
            }
        }
    }
    Err(KalamError::new(
        ErrorCode::InvalidRequest,
        "the table's definition kept changing during the load; try again",
    ))
}

/// The values of columns a row does not give, computed once per request (a
/// `NOW()` default is the request's moment; generated ids are drawn per row).
struct Defaults {
    /// `None`: drawn per row (SNOWFLAKE_ID, UUID_V7).
    values: Vec<Option<Value>>,
    /// Ids for rows of a table without a primary key, and per-row defaults.
    db: Arc<crate::DbShared>,
    username: String,
}

impl Defaults {
    fn new(ctx: &StatementContext<'_>, table: &TableDef) -> KalamResult<Defaults> {
        use kalamdb_commons::DefaultValue;
        let now = now_micros();
        let mut values = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            match column.default {
                Some(DefaultValue::SnowflakeId | DefaultValue::UuidV7) => values.push(None),
                _ => values.push(Some(default_value(ctx.db, &ctx.caller.username, column, now)?)),
            }
        }
        Ok(Defaults {
            values,
            db: ctx.db.clone(),
            username: ctx.caller.username.clone(),
        })
    }

    /// The default of column `i` for one row.
    fn value(&self, table: &TableDef, i: usize) -> KalamResult<Value> {
        match &self.values[i] {
            Some(value) => Ok(value.clone()),
            None => default_value(&self.db, &self.username, &table.columns[i], now_micros()),
        }
    }
}

/// The decoded request: one pending write per row, and where each row came from.
struct Decoded {
    writes: Vec<PendingWrite>,
    /// "line 3" / "row 7", per write.
    places: Vec<String>,
}

/// Collects rows, checking each (NOT NULL, duplicate keys within the request).
struct Collector<'a> {
    table: &'a TableDef,
    defaults: &'a Defaults,
    pk_index: Option<usize>,
    out: Decoded,
    seen: HashMap<Vec<u8>, usize>,
}

impl<'a> Collector<'a> {
    fn new(table: &'a TableDef, defaults: &'a Defaults) -> Self {
        Collector {
            table,
            defaults,
            pk_index: table
                .primary_key
                .and_then(|pk| table.columns.iter().position(|c| c.id == pk)),
            out: Decoded {
                writes: Vec::new(),
                places: Vec::new(),
            },
            seen: HashMap::new(),
        }
    }

    /// Adds one row; `given[i]` is column `i`'s value when the row gives one.
    fn push(&mut self, place: String, given: Vec<Option<Value>>) -> KalamResult<()> {
        let at = |e: KalamError| KalamError::new(e.code, format!("{place}: {}", e.message));
        let values: Vec<Value> = given
            .into_iter()
            .enumerate()
            .map(|(i, value)| match value {
                Some(value) => Ok(value),
                None => self.defaults.value(self.table, i),
            })
            .collect::<KalamResult<_>>()
            .map_err(at)?;
        check_not_null(self.table, &values).map_err(at)?;
        let key = match self.pk_index {
            Some(i) => values[i].clone(),
            None => Value::BigInt(crate::seq_as_i64(self.defaults.db.seq.next()?)),
        };
        let mut encoded = Vec::new();
        encode_value(&key, &mut encoded);
        if let Some(&first) = self.seen.get(&encoded) {
            return Err(KalamError::new(
                ErrorCode::DuplicateKey,
                format!(
                    "{place}: key {} is also on {}; nothing was loaded",
                    key.display(),
                    self.out.places[first]
                ),
            ));
        }
        self.seen.insert(encoded, self.out.writes.len());
        self.out.writes.push(PendingWrite {
            row: encode_new_row(self.table, &key, &values),
            key,
            expect: Expect::Absent(OnLive::Fail),
            deleted: false,
            values: Vec::new(),
        });
        self.out.places.push(place);
        Ok(())
    }
}

fn bad_body(message: String) -> KalamError {
    KalamError::new(ErrorCode::InvalidRequest, message)
}

fn decode(table: &TableDef, format: IngestFormat, body: &Bytes, defaults: &Defaults) -> KalamResult<Decoded> {
    let mut rows = Collector::new(table, defaults);
    match format {
        IngestFormat::Ndjson => decode_ndjson(&mut rows, body)?,
        IngestFormat::Csv => decode_csv(&mut rows, body)?,
        IngestFormat::ArrowIpc => {
            let reader = StreamReader::try_new(std::io::Cursor::new(body.clone()), None)
                .map_err(|e| bad_body(format!("not an Arrow IPC stream: {e}")))?;
            decode_batches(&mut rows, reader.map(|b| b.map_err(|e| e.to_string())))?;
        }
        IngestFormat::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(body.clone())
                .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
                .map_err(|e| bad_body(format!("not a Parquet file: {e}")))?;
            decode_batches(&mut rows, reader.map(|b| b.map_err(|e| e.to_string())))?;
        }
    }
    Ok(rows.out)
}

fn decode_ndjson(rows: &mut Collector<'_>, body: &[u8]) -> KalamResult<()> {
    let table = rows.table;
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        let place = format!("line {}", n + 1);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).map_err(|e| bad_body(format!("{place}: not a JSON object: {e}")))?;
        let mut given: Vec<Option<Value>> = vec![None; table.columns.len()];
        for (name, value) in object {
            let at = |e: KalamError| KalamError::new(e.code, format!("{place}: {}", e.message));
            let i = column_index(table, &name).map_err(at)?;
            let value = Literal::from_json(value)
                .to_value(&table.columns[i].data_type)
                .map_err(|e| at(KalamError::new(e.code, format!("column '{name}': {}", e.message))))?;
            given[i] = Some(value);
        }
        rows.push(place, given)?;
    }
    Ok(())
}

/// CSV with a header line. An empty field is NULL (so a TEXT column's empty
/// string needs another format); values are read as SQL text literals are.
fn decode_csv(rows: &mut Collector<'_>, body: &[u8]) -> KalamResult<()> {
    let table = rows.table;
    // Flexible: a row with the wrong number of fields is reported below, by line.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| bad_body(format!("line 1: unreadable CSV header: {e}")))?
        .clone();
    let columns: Vec<usize> = headers
        .iter()
        .map(|name| {
            // A spreadsheet's export may start with a byte-order mark.
            column_index(table, name.trim_start_matches('\u{feff}').trim())
                .map_err(|e| KalamError::new(e.code, format!("line 1 (header): {}", e.message)))
        })
        .collect::<KalamResult<_>>()?;
    let mut record = csv::ByteRecord::new();
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| bad_body(format!("unreadable CSV: {e}")))?;
        if !more {
            return Ok(());
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let place = format!("line {line}");
        if record.len() != columns.len() {
            return Err(bad_body(format!(
                "{place}: {} fields for {} columns in the header",
                record.len(),
                columns.len()
            )));
        }
        let mut given: Vec<Option<Value>> = vec![None; table.columns.len()];
        for (field, &i) in record.iter().zip(&columns) {
            let column = &table.columns[i];
            let value = if field.is_empty() {
                Value::Null
            } else {
                let text = std::str::from_utf8(field)
                    .map_err(|_| bad_body(format!("{place}: column '{}' is not UTF-8", column.name)))?;
                kalamdb_commons::value::parse_text(text, &column.data_type).map_err(|e| {
                    KalamError::new(
                        e.code,
                        format!("{place}: column '{}': {}", column.name, e.message),
                    )
                })?
            };
            given[i] = Some(value);
        }
        rows.push(place, given)?;
    }
}

/// Arrow record batches: columns matched by name, each converted to its column's
/// type as a whole array (strict casts).
fn decode_batches(
    rows: &mut Collector<'_>,
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
) -> KalamResult<()> {
    let table = rows.table;
    let mut first_row = 1usize;
    for batch in batches {
        let batch = batch.map_err(|e| bad_body(format!("unreadable batch from row {first_row}: {e}")))?;
        let mut columns: Vec<(usize, Vec<Value>)> = Vec::with_capacity(batch.num_columns());
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let i = column_index(table, field.name())?;
            let column = &table.columns[i];
            let values = column_values(array, &column.data_type, &column.name)
                .map_err(|e| KalamError::new(e.code, format!("rows {first_row}..: {}", e.message)))?;
            columns.push((i, values));
        }
        let mut iters: Vec<(usize, std::vec::IntoIter<Value>)> =
            columns.into_iter().map(|(i, v)| (i, v.into_iter())).collect();
        for r in 0..batch.num_rows() {
            let mut given: Vec<Option<Value>> = vec![None; table.columns.len()];
            for (i, values) in iters.iter_mut() {
                given[*i] = values.next();
            }
            rows.push(format!("row {}", first_row + r), given)?;
        }
        first_row += batch.num_rows();
    }
    Ok(())
}
