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
//!
//! A load runs under its statement's budget (`budget.rs`), charged before memory is
//! held: the body's rows are counted against `max_ingest_rows` before anything is
//! decoded where the format says how many it holds (Parquet metadata, Arrow IPC
//! message headers; a compressed IPC buffer's decompressed length is read from its
//! header), a record batch's values are charged before they are materialized
//! (Parquet text columns are read as dictionaries, so a value repeated by a
//! dictionary page is not expanded before it is charged), and each pending write is
//! charged as it is made, with the copies its commit makes. The deadline is checked
//! between rows and batches.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult, Literal, Value};
use kalamdb_store::row_codec::encode_value;

use crate::arrow_conv::{column_values, materialized_bytes};
use crate::base::now_micros;
use crate::budget::{Budget, Charge, within_budget};
use crate::catalog::TableDef;
use crate::dml::{check_values, column_index, default_value, encode_new_row, scope_of, writable_table};
use crate::results::StatementResult;
use crate::statements::StatementContext;
use crate::write::{self, Expect, OnLive, Outcome, PendingWrite};

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

/// The most bytes of values converted from a record batch at once.
const CONVERT_BYTES: usize = 8 << 20;

/// Rows decoded between two checks of the deadline.
const ROWS_PER_DEADLINE_CHECK: usize = 1024;

/// Loads `body` into `namespace.table` as the caller (see the module documentation).
pub(crate) async fn ingest(
    ctx: &StatementContext<'_>,
    table_name: &str,
    format: IngestFormat,
    body: Bytes,
    budget: Arc<Budget>,
) -> KalamResult<StatementResult> {
    // A load races with schema changes (it runs again on the new definition) and
    // with claims of its keys (it waits for them, then runs again).
    let mut redefined = 0;
    while redefined < 3 {
        let table = writable_table(ctx, ctx.namespace, table_name)?;
        let rows = {
            let (table, body, budget) = (table.clone(), body.clone(), budget.clone());
            let defaults = Defaults::new(ctx, &table)?;
            let limits = Limits {
                max_rows: ctx.db.options.max_ingest_rows,
                // The pending write, the commit's batch, and the change log's copy.
                copies: 2 + usize::from(!ctx.db.options.live.history.is_zero()),
            };
            let decoding = tokio::task::spawn_blocking(move || {
                decode(&table, format, &body, &defaults, &budget, limits)
            });
            // At the deadline the answer goes; the decoding stops at its next check.
            within_budget(async {
                decoding
                    .await
                    .map_err(|e| KalamError::internal(format!("the decoding task failed: {e}")))?
            })
            .await?
        };
        let scope = scope_of(ctx, &table);
        let count = rows.writes.len();
        match write::commit(&ctx.db.tiers, &table, &scope, &rows.writes, None).await? {
            Outcome::Done { .. } => {
                return Ok(StatementResult::affected(count, format!("Loaded {count} row(s)")));
            }
            Outcome::Retry => redefined += 1,
            Outcome::Claimed(other) => {
                within_budget(async {
                    other.released().await;
                    Ok(())
                })
                .await?
            }
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
    /// `None`: drawn per row (SNOWFLAKE_ID, UUID_V7, identity).
    values: Vec<Option<Value>>,
    /// Ids for rows of a table without a primary key, and per-row defaults.
    db: Arc<crate::statements::Engine>,
    username: String,
}

impl Defaults {
    fn new(ctx: &StatementContext<'_>, table: &TableDef) -> KalamResult<Defaults> {
        use kalamdb_commons::DefaultValue;
        let now = now_micros();
        let mut values = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            match column.default {
                Some(DefaultValue::SnowflakeId | DefaultValue::UuidV7 | DefaultValue::Identity { .. }) => {
                    values.push(None)
                }
                _ => values.push(Some(default_value(
                    ctx.db,
                    &ctx.caller.username,
                    table.table_id,
                    column,
                    now,
                )?)),
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
            None => default_value(
                &self.db,
                &self.username,
                table.table_id,
                &table.columns[i],
                now_micros(),
            ),
        }
    }
}

/// The limits of one load.
#[derive(Clone, Copy)]
struct Limits {
    /// Rows one load may carry (`max_ingest_rows`).
    max_rows: usize,
    /// How many copies of a row the load holds until its commit is written.
    copies: usize,
}

/// Where a row came from, for messages.
#[derive(Clone, Copy)]
enum Place {
    /// A line of NDJSON or CSV text.
    Line(usize),
    /// A row of a record batch stream (1-based, across batches).
    Row(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// The decoded request: one pending write per row, where each row came from, and
/// the memory they hold (charged to the statement's budget until they are dropped).
struct Decoded {
    writes: Vec<PendingWrite>,
    places: Vec<Place>,
    _charge: Charge,
}

/// Collects rows, checking each (NOT NULL, duplicate keys within the request,
/// the row cap, the memory budget).
struct Collector<'a> {
    table: &'a TableDef,
    defaults: &'a Defaults,
    budget: &'a Arc<Budget>,
    limits: Limits,
    pk_index: Option<usize>,
    writes: Vec<PendingWrite>,
    places: Vec<Place>,
    /// What the pending writes hold.
    charge: Charge,
    seen: HashMap<Vec<u8>, usize>,
}

/// Bytes a pending write holds beyond its row's copies (its struct, its key twice,
/// its place, its entry in the duplicate check).
const WRITE_OVERHEAD_BYTES: usize = 160;

impl<'a> Collector<'a> {
    fn new(
        table: &'a TableDef,
        defaults: &'a Defaults,
        budget: &'a Arc<Budget>,
        limits: Limits,
    ) -> KalamResult<Self> {
        Ok(Collector {
            table,
            defaults,
            budget,
            limits,
            pk_index: table
                .primary_key
                .and_then(|pk| table.columns.iter().position(|c| c.id == pk)),
            writes: Vec::new(),
            places: Vec::new(),
            charge: budget.charge("the rows of this load")?,
            seen: HashMap::new(),
        })
    }

    /// Refuses a load of more than `max_ingest_rows` rows (`rows` so far or in all).
    fn check_rows(&self, rows: usize) -> KalamResult<()> {
        if rows > self.limits.max_rows {
            return Err(KalamError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the load has more than {} rows (max_ingest_rows); split it",
                    self.limits.max_rows
                ),
            ));
        }
        Ok(())
    }

    fn finish(self) -> Decoded {
        Decoded {
            writes: self.writes,
            places: self.places,
            _charge: self.charge,
        }
    }

    /// Adds one row; `given[i]` is column `i`'s value when the row gives one.
    fn push(&mut self, place: Place, given: Vec<Option<Value>>) -> KalamResult<()> {
        let count = self.writes.len() + 1;
        self.check_rows(count)?;
        if count.is_multiple_of(ROWS_PER_DEADLINE_CHECK) {
            self.budget.check_deadline()?;
        }
        let at = |e: KalamError| KalamError::new(e.code, format!("{place}: {}", e.message));
        let values: Vec<Value> = given
            .into_iter()
            .enumerate()
            .map(|(i, value)| match value {
                Some(value) => crate::dml::refuse_always_identity(self.table, &[i]).map(|()| value),
                None => self.defaults.value(self.table, i),
            })
            .collect::<KalamResult<_>>()
            .map_err(at)?;
        check_values(self.table, &values).map_err(at)?;
        let key = match self.pk_index {
            Some(i) => values[i].clone(),
            None => Value::BigInt(crate::seq::seq_as_i64(self.defaults.db.seq.next()?)),
        };
        let mut encoded = Vec::new();
        encode_value(&key, &mut encoded);
        if let Some(&first) = self.seen.get(&encoded) {
            return Err(KalamError::new(
                ErrorCode::DuplicateKey,
                format!(
                    "{place}: key {} is also on {}; nothing was loaded",
                    key.display(),
                    self.places[first]
                ),
            ));
        }
        let row = encode_new_row(self.table, &key, &values);
        drop(values);
        // Charged before it is kept.
        self.charge
            .grow(row.len() * self.limits.copies + 2 * encoded.len() + WRITE_OVERHEAD_BYTES)?;
        self.seen.insert(encoded, self.writes.len());
        self.writes.push(PendingWrite {
            row,
            key,
            expect: Expect::Absent(OnLive::Fail),
            deleted: false,
            values: Vec::new(),
        });
        self.places.push(place);
        Ok(())
    }
}

fn bad_body(message: String) -> KalamError {
    KalamError::new(ErrorCode::InvalidRequest, message)
}

fn decode(
    table: &TableDef,
    format: IngestFormat,
    body: &Bytes,
    defaults: &Defaults,
    budget: &Arc<Budget>,
    limits: Limits,
) -> KalamResult<Decoded> {
    let mut rows = Collector::new(table, defaults, budget, limits)?;
    // What a record batch holds while it is decoded, charged before it is read.
    let decoding = budget.charge("the record batches of this load")?;
    match format {
        IngestFormat::Ndjson => decode_ndjson(&mut rows, body)?,
        IngestFormat::Csv => decode_csv(&mut rows, body)?,
        IngestFormat::ArrowIpc => {
            let figures = ipc_figures(body).map_err(|e| bad_body(format!("not an Arrow IPC stream: {e}")))?;
            rows.check_rows(figures.rows)?;
            decoding.grow(figures.largest_batch_bytes)?;
            let reader = StreamReader::try_new(std::io::Cursor::new(body.clone()), None)
                .map_err(|e| bad_body(format!("not an Arrow IPC stream: {e}")))?;
            decode_batches(&mut rows, reader.map(|b| b.map_err(|e| e.to_string())))?;
        }
        IngestFormat::Parquet => {
            let reader = parquet_reader(body, &rows, &decoding)?;
            decode_batches(&mut rows, reader.map(|b| b.map_err(|e| e.to_string())))?;
        }
    }
    Ok(rows.finish())
}

/// A Parquet body's reader, once its metadata has shown the load fits: its row
/// count within `max_ingest_rows`, its largest row group's decoded size charged.
/// Text and binary columns are read as dictionaries: a value a dictionary page
/// repeats stays one value until each row's copy is charged.
fn parquet_reader(
    body: &Bytes,
    rows: &Collector<'_>,
    decoding: &Charge,
) -> KalamResult<datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
    let not_parquet = |e: &dyn std::fmt::Display| bad_body(format!("not a Parquet file: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(body.clone()).map_err(|e| not_parquet(&e))?;
    let metadata = builder.metadata().clone();
    let total_rows: i64 = metadata.row_groups().iter().map(|rg| rg.num_rows()).sum();
    rows.check_rows(usize::try_from(total_rows).unwrap_or(usize::MAX))?;
    let largest_row_group = (metadata.row_groups().iter())
        .map(|rg| {
            rg.columns()
                .iter()
                .map(|c| c.uncompressed_size().max(0) as usize)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    decoding.grow(largest_row_group)?;
    let dictionary = |field: &Arc<Field>| -> Arc<Field> {
        match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
                Arc::new(field.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(field.data_type().clone()),
                )))
            }
            _ => field.clone(),
        }
    };
    let schema = Schema::new(
        builder
            .schema()
            .fields()
            .iter()
            .map(dictionary)
            .collect::<Vec<_>>(),
    );
    let options = ArrowReaderOptions::new().with_schema(Arc::new(schema));
    ParquetRecordBatchReaderBuilder::try_new_with_options(body.clone(), options)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .map_err(|e| not_parquet(&e))
}

/// What the headers of an Arrow IPC stream say of its record batches.
struct IpcFigures {
    rows: usize,
    /// What decoding holds at most: a record batch with the dictionaries current
    /// when it is read, their buffers decompressed (the largest such sum).
    largest_batch_bytes: usize,
}

/// Reads the message headers of an Arrow IPC stream (not its bodies): how many
/// rows it holds and how large its largest batch decodes, before any is decoded.
fn ipc_figures(body: &[u8]) -> Result<IpcFigures, String> {
    use datafusion::arrow::ipc::{MessageHeader, root_as_message};
    // A slice of the body by untrusted offsets.
    let part = |from: usize, len: usize| -> Result<&[u8], String> {
        let to = from.checked_add(len).ok_or("a length past the body")?;
        body.get(from..to).ok_or_else(|| "truncated message".to_string())
    };
    let read_i32 = |at: usize| -> Result<i32, String> {
        Ok(i32::from_le_bytes(part(at, 4)?.try_into().expect("4 bytes")))
    };
    let (mut rows, mut largest) = (0usize, 0usize);
    let mut dictionaries: HashMap<i64, usize> = HashMap::new();
    let mut at = 0usize;
    while at < body.len() {
        let mut length = read_i32(at)?;
        at += 4;
        if length == -1 {
            // The continuation marker of the current format.
            length = read_i32(at)?;
            at += 4;
        }
        if length == 0 {
            break;
        }
        let length = usize::try_from(length).map_err(|_| "a negative message length")?;
        let message = root_as_message(part(at, length)?).map_err(|e| format!("unreadable message: {e}"))?;
        at += length;
        let body_length = usize::try_from(message.bodyLength()).map_err(|_| "a negative body length")?;
        let message_body = part(at, body_length)?;
        at += body_length;
        // A dictionary batch: its id and whether it adds to that dictionary.
        let mut dictionary = None;
        let batch = match message.header_type() {
            MessageHeader::RecordBatch => message.header_as_record_batch(),
            MessageHeader::DictionaryBatch => message.header_as_dictionary_batch().and_then(|d| {
                dictionary = Some((d.id(), d.isDelta()));
                d.data()
            }),
            _ => None,
        };
        let is_dictionary = dictionary.is_some();
        let Some(batch) = batch else {
            continue;
        };
        if !is_dictionary {
            let count = usize::try_from(batch.length()).map_err(|_| "a negative row count")?;
            rows = rows.saturating_add(count);
        }
        let compressed = batch.compression().is_some();
        let mut decoded = 0usize;
        for buffer in batch.buffers().into_iter().flatten() {
            let offset = usize::try_from(buffer.offset()).map_err(|_| "a negative buffer offset")?;
            let length = usize::try_from(buffer.length()).map_err(|_| "a negative buffer length")?;
            let size = match offset
                .checked_add(8)
                .and_then(|end| message_body.get(offset..end))
            {
                // A compressed buffer starts with its decompressed length (-1: stored
                // as is).
                Some(prefix) if compressed && length >= 8 => {
                    match i64::from_le_bytes(prefix.try_into().expect("8 bytes")) {
                        -1 => length - 8,
                        n => usize::try_from(n).map_err(|_| "a negative buffer length")?,
                    }
                }
                _ => length,
            };
            decoded = decoded.saturating_add(size);
        }
        // The reader keeps the current dictionary of each id (a delta is appended
        // to it, another replaces it) and decodes one record batch at a time.
        match dictionary {
            Some((id, true)) => {
                let held = dictionaries.entry(id).or_insert(0);
                *held = held.saturating_add(decoded);
            }
            Some((id, false)) => {
                dictionaries.insert(id, decoded);
            }
            None => {
                let held = dictionaries
                    .values()
                    .fold(0usize, |sum, d| sum.saturating_add(*d));
                largest = largest.max(held.saturating_add(decoded));
            }
        }
    }
    Ok(IpcFigures {
        rows,
        largest_batch_bytes: largest,
    })
}

fn decode_ndjson(rows: &mut Collector<'_>, body: &[u8]) -> KalamResult<()> {
    let table = rows.table;
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        let place = Place::Line(n + 1);
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
        let place = Place::Line(usize::try_from(line).unwrap_or(usize::MAX));
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
/// type as a whole array (strict casts), a slice of at most [`CONVERT_BYTES`] of
/// values at a time, charged before it is converted.
fn decode_batches(
    rows: &mut Collector<'_>,
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
) -> KalamResult<()> {
    let table = rows.table;
    let converting = rows.budget.charge("the values of this load")?;
    let mut first_row = 1usize;
    for batch in batches {
        let batch = batch.map_err(|e| bad_body(format!("unreadable batch from row {first_row}: {e}")))?;
        rows.budget.check_deadline()?;
        let columns: Vec<usize> = (batch.schema().fields().iter())
            .map(|field| column_index(table, field.name()))
            .collect::<KalamResult<_>>()?;
        let total: usize = batch
            .columns()
            .iter()
            .map(|a| materialized_bytes(a.as_ref()))
            .sum();
        let per_row = total / batch.num_rows().max(1) + 1;
        let step = (CONVERT_BYTES / per_row).clamp(1, batch.num_rows().max(1));
        let mut offset = 0;
        while offset < batch.num_rows() {
            let slice = batch.slice(offset, step.min(batch.num_rows() - offset));
            // The values, and the cast copy a conversion may make first.
            let bytes = 2 * slice
                .columns()
                .iter()
                .map(|a| materialized_bytes(a.as_ref()))
                .sum::<usize>();
            converting.grow(bytes)?;
            let at = first_row + offset;
            let mut values: Vec<(usize, std::vec::IntoIter<Value>)> = Vec::with_capacity(columns.len());
            for (&i, array) in columns.iter().zip(slice.columns()) {
                let column = &table.columns[i];
                let converted = column_values(array, &column.data_type, &column.name)
                    .map_err(|e| KalamError::new(e.code, format!("rows {at}..: {}", e.message)))?;
                values.push((i, converted.into_iter()));
            }
            for r in 0..slice.num_rows() {
                let mut given: Vec<Option<Value>> = vec![None; table.columns.len()];
                for (i, column) in values.iter_mut() {
                    given[*i] = column.next();
                }
                rows.push(Place::Row(at + r), given)?;
            }
            drop(values);
            converting.shrink(bytes);
            offset += slice.num_rows();
        }
        first_row += batch.num_rows();
    }
    Ok(())
}
