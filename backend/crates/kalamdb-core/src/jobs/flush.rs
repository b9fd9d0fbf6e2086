//! The flush job: move one USER table's hot rows up to a watermark into Parquet.
//!
//! For each user (scope) with hot rows (several scopes at once, on up to
//! `flush_parallelism` threads):
//! 1. stream the scope's hot rows with `_seq <= watermark` (one RocksDB iterator, in
//!    `_seq` order) into Arrow batches of `flush_batch_rows` rows, each written to
//!    `batch-<n>.parquet.tmp` as it fills: memory is bounded by one batch and one
//!    Parquet row group, whatever the table's size;
//! 2. fsync and rename the file into place (`segment_partial` is a crash point after
//!    the first batch, `segment_written` after the rename);
//! 3. write the scope's new `manifest.json` (tmp, fsync, rename: `manifest_saved`);
//! 4. under the cold tier's commit lock, publish the manifest to readers and delete
//!    the scope's hot rows `<= watermark` in one RocksDB batch (`scope_committed`). If
//!    that batch fails, the previous manifest is saved again and the segment removed.
//!
//! Rows written during the flush get `_seq`s above the watermark and stay hot. A row
//! at or below the watermark that a write replaces while the flush runs is marked
//! stale by that write (see `write.rs`), so its Parquet copy is never read. A crash
//! between 3 and 4 is rolled forward at start-up (`jobs::recover`). Cancellation is
//! checked between batches: an unfinished segment is removed, committed scopes stay.

use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::Mutex;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use kalamdb_cold::{ColumnStats, Segment, SegmentWriter};
use kalamdb_commons::{KalamError, KalamResult, KalamType, Value};
use kalamdb_store::row_codec::{CellRef, RowCodecError, visit_cells};

use super::ActiveJob;
use super::record::FlushMetrics;
use crate::arrow_conv::{ColumnBuilder, field};
use crate::base::{now_micros, store_error};
use crate::catalog::{DELETED_COLUMN, ID_COLUMN, ID_COLUMN_ID, SEQ_COLUMN, TableDef};
use crate::cold::{ColdTier, cold_error};
use crate::scoped::ScopedTable;
use crate::{DbShared, failpoint};

/// Longest text kept as a min/max statistic; longer values leave the bound unknown.
const MAX_STAT_TEXT: usize = 256;

pub(crate) enum FlushEnd {
    Completed,
    Cancelled,
}

/// Runs the flush of `table` up to `watermark`. Blocking: call from a blocking thread.
///
/// Scopes are flushed by up to `flush_parallelism` threads at once, each taking the
/// next scope not yet started; each scope is committed on its own, as before, so
/// the order in which they finish does not matter. Memory is one batch and one row
/// group per thread.
pub(crate) fn flush_table(
    db: &Arc<DbShared>,
    table: &Arc<TableDef>,
    watermark: u64,
    job: &ActiveJob,
) -> KalamResult<(FlushEnd, FlushMetrics)> {
    let _pin = db.cold.pin_while_flushing(table.table_id);
    db.holds.wait("flush_start", || job.cancel.is_cancelled());
    let scopes = ScopedTable::hot_scopes(db, table)?;
    let batch_rows = db.options.jobs.flush_batch_rows.max(1);
    let threads = db.options.jobs.flush_parallelism.clamp(1, scopes.len().max(1));
    let next = AtomicUsize::new(0);
    let progress = Mutex::new(Progress::default());
    let worker = || {
        loop {
            let index = next.fetch_add(1, AtomicOrdering::Relaxed);
            if index >= scopes.len() || progress.lock().end.is_some() {
                return;
            }
            if job.cancel.is_cancelled() {
                progress.lock().end.get_or_insert(Ok(FlushEnd::Cancelled));
                return;
            }
            let outcome = flush_scope(&scopes[index], watermark, batch_rows, job);
            let mut p = progress.lock();
            match outcome {
                Ok(ScopeOutcome::Empty) => {}
                Ok(ScopeOutcome::Flushed { rows, bytes }) => {
                    p.metrics.rows_flushed += rows;
                    p.metrics.users_flushed += 1;
                    p.metrics.files_written += 1;
                    p.metrics.bytes_written += bytes;
                    if p.metrics.files_written == 1 {
                        failpoint::hit("scope_committed");
                    }
                }
                Ok(ScopeOutcome::Cancelled) => {
                    p.end.get_or_insert(Ok(FlushEnd::Cancelled));
                    return;
                }
                Err(e) => {
                    p.end.get_or_insert(Err(e));
                    return;
                }
            }
            p.done += 1;
            // Under the lock: progress records are persisted in order.
            job.progress(db, p.metrics, p.done as f64 / scopes.len() as f64);
        }
    };
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::Builder::new()
                        .name("kalamdb-flush".into())
                        .spawn_scoped(s, worker)
                })
                .collect();
            for handle in handles {
                match handle {
                    Ok(handle) => {
                        if handle.join().is_err() {
                            progress
                                .lock()
                                .end
                                .get_or_insert(Err(KalamError::internal("a flush thread panicked")));
                        }
                    }
                    Err(e) => {
                        // Fewer threads than asked for: the others take the scopes.
                        tracing::warn!(table = %table.qualified_name(), "could not start a flush thread: {e}");
                    }
                }
            }
        });
        // Scopes no thread took (none could be started) are flushed here.
        worker();
    }
    let Progress { metrics, end, .. } = progress.into_inner();
    match end {
        Some(Ok(end)) => Ok((end, metrics)),
        Some(Err(e)) => Err(e),
        None => {
            failpoint::hit("before_completed");
            Ok((FlushEnd::Completed, metrics))
        }
    }
}

/// What the threads of one flush share.
#[derive(Default)]
struct Progress {
    metrics: FlushMetrics,
    /// Scopes finished.
    done: usize,
    /// Set by the first thread that stops the flush (cancelled, or failed).
    end: Option<KalamResult<FlushEnd>>,
}

enum ScopeOutcome {
    Empty,
    Flushed { rows: u64, bytes: u64 },
    Cancelled,
}

fn flush_scope(
    scoped: &ScopedTable,
    watermark: u64,
    batch_rows: usize,
    job: &ActiveJob,
) -> KalamResult<ScopeOutcome> {
    let (db, table, scope) = (scoped.db(), scoped.def().as_ref(), scoped.scope());
    let cold: &ColdTier = &db.cold;
    let manifest = cold.manifest(table, scope)?;
    let dir = cold.scope_dir(table, scope);
    let batch_no = manifest.next_batch;
    let mut builder = SegmentBuilder::new(table, batch_rows);
    let mut writer: Option<SegmentWriter> = None;
    let mut cancelled = false;
    let mut failure: Option<KalamError> = None;
    // The index entries of the rows moved to Parquet, removed with the hot rows.
    let mut index_entries: Vec<(Vec<u8>, u64)> = Vec::new();
    // UNIQUE indexes keep their entries: they must see the rows in Parquet too.
    let mut cleaned = table.clone();
    cleaned.indexes.retain(|i| !i.unique);
    scoped.visit_versions(&db.store.view(), watermark, |seq, bytes| {
        builder.push_encoded(seq, bytes)?;
        if !cleaned.indexes.is_empty() {
            let decoded = kalamdb_store::row_codec::decode_row(bytes)?;
            if !decoded.deleted {
                for key in crate::index::entry_keys(&cleaned, scope, &decoded) {
                    index_entries.push((key, seq));
                }
            }
        }
        if builder.len() >= batch_rows {
            if let Err(e) = write_batch(&mut writer, &mut builder, &dir, batch_no, batch_rows) {
                failure = Some(e);
                return Ok(false);
            }
            failpoint::hit("segment_partial");
            db.holds.wait("flush_batch", || job.cancel.is_cancelled());
            if pause_unless_cancelled(job, db.options.jobs.flush_batch_pause) {
                cancelled = true;
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    if let Some(e) = failure {
        if let Some(w) = writer {
            w.abort();
        }
        return Err(e);
    }
    if cancelled {
        if let Some(w) = writer {
            w.abort();
        }
        return Ok(ScopeOutcome::Cancelled);
    }
    if builder.len() > 0 {
        write_batch(&mut writer, &mut builder, &dir, batch_no, batch_rows)?;
    }
    let Some(writer) = writer else {
        return Ok(ScopeOutcome::Empty);
    };
    let written = writer.finish().map_err(cold_error)?;
    failpoint::hit("segment_written");

    let segment = Segment {
        file: written.file,
        batch: batch_no,
        job_id: job.id().to_string(),
        row_count: builder.total_rows,
        deleted_count: builder.total_deleted,
        size_bytes: written.size_bytes,
        min_seq: builder.min_seq,
        max_seq: builder.max_seq,
        watermark,
        created_at: now_micros(),
        columns: builder.column_stats(),
    };
    let segment_file = segment.file.clone();
    let mut next = (*manifest).clone();
    next.next_batch = batch_no + 1;
    next.segments.push(segment);
    next.save(&dir).map_err(cold_error)?;
    failpoint::hit("manifest_saved");

    {
        // An entry goes only if it still names the flushed version: a write that
        // replaced the row meanwhile wrote the same key for its own version. The
        // table's commit lock keeps writers out between the check and the delete
        // (taken before the cold tier's lock, as writers do).
        let _writers =
            (!index_entries.is_empty()).then(|| db.commit_locks.lock_blocking(table.table_id, scope));
        let _commit = cold.commit_lock.write();
        let mut batch = db.store.batch();
        batch.delete_hot_through(table.table_id, scope, watermark);
        if !index_entries.is_empty() {
            let keys: Vec<&[u8]> = index_entries.iter().map(|(k, _)| k.as_slice()).collect();
            let current = db.store.index_multi_get(&keys).map_err(store_error)?;
            for ((key, seq), current) in index_entries.iter().zip(current) {
                if current == Some(*seq) {
                    batch.delete_index_entry(key);
                }
            }
        }
        let committed = if failpoint::armed("fail_hot_delete") {
            Err(KalamError::internal("KALAMDB_FAILPOINT: the hot delete failed"))
        } else {
            db.store.commit(batch).map_err(store_error)
        };
        if let Err(e) = committed {
            // The rows are still hot: the saved manifest must not list their segment,
            // or a restart would roll it forward while readers see the rows hot.
            // Put the previous manifest back and remove the segment; if that fails
            // too, start-up recovery rolls the saved manifest forward instead.
            let restored = manifest.save(&dir).map_err(cold_error).and_then(|()| {
                kalamdb_cold::remove_file_if_exists(&dir.join(&segment_file)).map_err(cold_error)
            });
            if let Err(undo) = restored {
                tracing::error!(table = %table.qualified_name(), scope, "could not undo a flush step: {}", undo.message);
            }
            return Err(e);
        }
        cold.publish(table.table_id, scope, next);
    }
    Ok(ScopeOutcome::Flushed {
        rows: builder.total_rows,
        bytes: written.size_bytes,
    })
}

/// Sleeps for `pause` (in short slices, so a cancellation is seen promptly);
/// returns whether the job was cancelled.
fn pause_unless_cancelled(job: &ActiveJob, pause: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + pause;
    loop {
        if job.cancel.is_cancelled() {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(10)));
    }
}

fn write_batch(
    writer: &mut Option<SegmentWriter>,
    builder: &mut SegmentBuilder,
    dir: &std::path::Path,
    batch_no: u64,
    batch_rows: usize,
) -> KalamResult<()> {
    if writer.is_none() {
        *writer = Some(
            SegmentWriter::create(dir, batch_no, builder.schema.clone(), batch_rows).map_err(cold_error)?,
        );
    }
    let batch = builder.finish_batch()?;
    writer
        .as_mut()
        .expect("created above")
        .write(&batch)
        .map_err(cold_error)
}

/// The Arrow schema of a table's segments: its columns (all nullable: tombstones
/// carry only the key), `_id` for tables without a primary key, `_seq`, `_deleted`.
pub(crate) fn segment_schema(table: &TableDef) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .columns
        .iter()
        .map(|c| field(&c.name, &c.data_type, true))
        .collect();
    if table.primary_key.is_none() {
        fields.push(Field::new(ID_COLUMN, DataType::Int64, true));
    }
    fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
    fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

struct ColumnState {
    id: u32,
    name: String,
    ty: KalamType,
    backfill: Value,
    /// The current batch's values, straight from the stored cells.
    builder: ColumnBuilder,
    min: Option<Value>,
    max: Option<Value>,
    null_count: u64,
    /// False once a value was seen that statistics cannot order (NaN, long text).
    stats_valid: bool,
}

/// Hot rows of one scope → Arrow batches of the segment schema, with statistics.
/// Cells go from the stored row bytes into typed Arrow builders (no `Value` per
/// cell; only a new min or max is copied out).
struct SegmentBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnState>,
    /// Column id → index in `columns`.
    slot_by_id: Vec<Option<usize>>,
    /// Which columns the row being added has given so far.
    filled: Vec<bool>,
    seqs: Vec<i64>,
    deleted: Vec<bool>,
    total_rows: u64,
    total_deleted: u64,
    min_seq: u64,
    max_seq: u64,
}

impl SegmentBuilder {
    fn new(table: &TableDef, batch_rows: usize) -> Self {
        let column = |id: u32, name: &str, ty: KalamType, backfill: Value| ColumnState {
            id,
            name: name.to_string(),
            ty,
            backfill,
            builder: ColumnBuilder::new(&ty, batch_rows),
            min: None,
            max: None,
            null_count: 0,
            stats_valid: !matches!(ty, KalamType::Bytes | KalamType::Json),
        };
        let mut columns: Vec<ColumnState> = table
            .columns
            .iter()
            .map(|c| column(c.id, &c.name, c.data_type, c.backfill_value()))
            .collect();
        if table.primary_key.is_none() {
            columns.push(column(ID_COLUMN_ID, ID_COLUMN, KalamType::BigInt, Value::Null));
        }
        let max_id = columns.iter().map(|c| c.id).max().unwrap_or(0) as usize;
        let mut slot_by_id = vec![None; max_id + 1];
        for (i, c) in columns.iter().enumerate() {
            slot_by_id[c.id as usize] = Some(i);
        }
        SegmentBuilder {
            schema: segment_schema(table),
            filled: vec![false; columns.len()],
            columns,
            slot_by_id,
            seqs: Vec::new(),
            deleted: Vec::new(),
            total_rows: 0,
            total_deleted: 0,
            min_seq: u64::MAX,
            max_seq: 0,
        }
    }

    fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Adds one stored row version. A column the row does not carry reads as its
    /// backfill value (a live row written before the column existed) or NULL (a
    /// tombstone carries only its key).
    fn push_encoded(&mut self, seq: u64, bytes: &[u8]) -> Result<(), RowCodecError> {
        let (columns, filled, slot_by_id) = (&mut self.columns, &mut self.filled, &self.slot_by_id);
        let deleted = visit_cells(bytes, |id, cell| {
            if let Some(Some(slot)) = slot_by_id.get(id as usize)
                && !filled[*slot]
            {
                filled[*slot] = true;
                columns[*slot].append(cell);
            }
        })?;
        for (column, filled) in self.columns.iter_mut().zip(self.filled.iter_mut()) {
            if std::mem::take(filled) {
                continue;
            }
            if deleted {
                column.append(CellRef::Null);
            } else {
                let backfill = std::mem::replace(&mut column.backfill, Value::Null);
                column.append(CellRef::of(&backfill));
                column.backfill = backfill;
            }
        }
        self.seqs.push(crate::seq::seq_as_i64(seq));
        self.deleted.push(deleted);
        self.total_rows += 1;
        self.total_deleted += deleted as u64;
        self.min_seq = self.min_seq.min(seq);
        self.max_seq = self.max_seq.max(seq);
        Ok(())
    }

    fn finish_batch(&mut self) -> KalamResult<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.builder.finish()).collect();
        arrays.push(Arc::new(Int64Array::from(std::mem::take(&mut self.seqs))));
        arrays.push(Arc::new(BooleanArray::from(std::mem::take(&mut self.deleted))));
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| KalamError::internal(format!("stored rows do not fit the segment schema: {e}")))
    }

    fn column_stats(&self) -> Vec<ColumnStats> {
        self.columns
            .iter()
            .map(|c| {
                let bound = |v: &Option<Value>| match v {
                    Some(v) if c.stats_valid => Some(v.display()),
                    _ => None,
                };
                ColumnStats {
                    id: c.id,
                    name: c.name.clone(),
                    data_type: c.ty.sql_name(),
                    min: bound(&c.min),
                    max: bound(&c.max),
                    null_count: c.null_count,
                }
            })
            .collect()
    }
}

impl ColumnState {
    fn append(&mut self, cell: CellRef<'_>) {
        self.observe(cell);
        self.builder.append(cell);
    }

    fn observe(&mut self, cell: CellRef<'_>) {
        if matches!(cell, CellRef::Null) {
            self.null_count += 1;
            return;
        }
        if !self.stats_valid {
            return;
        }
        let unordered = match cell {
            CellRef::Text(s) => s.len() > MAX_STAT_TEXT,
            CellRef::Float(f) => f.is_nan(),
            CellRef::Double(f) => f.is_nan(),
            _ => false,
        };
        if unordered {
            self.stats_valid = false;
            return;
        }
        for (bound, replace_when) in [
            (&mut self.min, Ordering::Greater),
            (&mut self.max, Ordering::Less),
        ] {
            match bound {
                None => *bound = Some(cell.to_value()),
                Some(current) => match compare_cells(CellRef::of(current), cell) {
                    Some(order) if order == replace_when => *bound = Some(cell.to_value()),
                    Some(_) => {}
                    None => self.stats_valid = false,
                },
            }
        }
    }
}

/// Orders two cells of the same column type.
fn compare_cells(a: CellRef<'_>, b: CellRef<'_>) -> Option<Ordering> {
    match (a, b) {
        (CellRef::Boolean(a), CellRef::Boolean(b)) => Some(a.cmp(&b)),
        (CellRef::SmallInt(a), CellRef::SmallInt(b)) => Some(a.cmp(&b)),
        (CellRef::Int(a), CellRef::Int(b)) => Some(a.cmp(&b)),
        (CellRef::BigInt(a), CellRef::BigInt(b)) => Some(a.cmp(&b)),
        // The total order (-0.0 < +0.0) is the one DataFusion prunes and compares
        // with; IEEE's `partial_cmp` calls ±0 equal, so a segment holding both could
        // record `max = -0.0` and be skipped by `x >= 0`.
        (CellRef::Float(a), CellRef::Float(b)) => Some(a.total_cmp(&b)),
        (CellRef::Double(a), CellRef::Double(b)) => Some(a.total_cmp(&b)),
        (CellRef::Decimal { unscaled: a, .. }, CellRef::Decimal { unscaled: b, .. }) => Some(a.cmp(&b)),
        (CellRef::Text(a), CellRef::Text(b)) => Some(a.cmp(b)),
        (CellRef::Date(a), CellRef::Date(b)) => Some(a.cmp(&b)),
        (CellRef::Timestamp(a), CellRef::Timestamp(b)) => Some(a.cmp(&b)),
        (CellRef::Uuid(a), CellRef::Uuid(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}
