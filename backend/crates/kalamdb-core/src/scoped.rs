//! [`ScopedTable`]: the one owner of a table's two-tier view for one scope.
//!
//! A scope is the rows one statement may see of one table: a user's rows of a USER
//! table, or every row of a SHARED table. `ScopedTable` knows the table's Arrow
//! schema (with the hidden columns when the statement names them), takes
//! [`TableSnapshot`]s (one RocksDB snapshot and the manifest of the same moment),
//! reads rows by primary key in either tier, streams hot rows as bounded Arrow
//! batches, and turns stored cells into Arrow columns (with the backfill of columns
//! added later). Queries read rows only through it (the table provider and
//! `point_read.rs`; `tiered_scan.rs` adds the cold segments of a scan), and so do
//! UPDATE, DELETE and `INSERT ... SELECT`, whose targets are queries. The flush
//! (`jobs/flush.rs`), `SHOW STATS` and `CREATE INDEX` read a scope's stored
//! versions, tombstones included, through [`ScopedTable::visit_versions`]. Still
//! outside it: DML's version lookups for stale markers (`cold::read_version`) and
//! `CREATE UNIQUE INDEX`'s pass over Parquet rows (`cold::for_each_live_row`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use kalamdb_cold::Manifest;
use kalamdb_commons::{KalamError, KalamResult, KalamType, TableType, Value};
use kalamdb_store::row_codec::{CellRef, is_tombstone, visit_cells};
use kalamdb_store::{StoreError, StoreView};

use crate::arrow_conv::{ColumnBuilder, field};
use crate::catalog::{ColumnDef, DELETED_COLUMN, ID_COLUMN, ID_COLUMN_ID, SEQ_COLUMN, TableDef};
use crate::index::IndexProbe;
use crate::{Caller, DbShared, store_error};

/// Rows per Arrow batch built from hot rows: a scan holds at most a few of these.
pub(crate) const SCAN_BATCH_ROWS: usize = 8192;

/// Batches a hot scan may have read ahead of its consumer.
const READ_AHEAD_BATCHES: usize = 2;

/// A full hot scan read by `n` partitions splits the scope's `_seq` range into
/// `n` times this many slices of equal width, partition `p` reading slices `p`,
/// `p + n`, ...: rows written at an even pace spread evenly, and a burst spans
/// several slices.
const HOT_SLICES_PER_PARTITION: usize = 16;

/// One column of a [`ScopedTable`]'s schema and where its values come from.
#[derive(Clone, Debug)]
pub(crate) enum ScanColumn {
    Column(ColumnDef),
    Seq,
    Deleted,
    Id,
}

impl ScanColumn {
    pub fn kalam_type(&self) -> KalamType {
        match self {
            ScanColumn::Column(c) => c.data_type,
            ScanColumn::Seq | ScanColumn::Id => KalamType::BigInt,
            ScanColumn::Deleted => KalamType::Boolean,
        }
    }

    fn field(&self) -> Field {
        match self {
            ScanColumn::Column(def) => field(&def.name, &def.data_type, def.nullable),
            ScanColumn::Seq => Field::new(SEQ_COLUMN, DataType::Int64, false),
            ScanColumn::Deleted => Field::new(DELETED_COLUMN, DataType::Boolean, false),
            ScanColumn::Id => Field::new(ID_COLUMN, DataType::Int64, false),
        }
    }

    /// The stored cell this column reads (`None`: computed from the version).
    fn cell_id(&self) -> Option<u32> {
        match self {
            ScanColumn::Column(def) => Some(def.id),
            ScanColumn::Id => Some(ID_COLUMN_ID),
            ScanColumn::Seq | ScanColumn::Deleted => None,
        }
    }
}

/// A table as one scope sees it.
pub(crate) struct ScopedTable {
    db: Arc<DbShared>,
    table: Arc<TableDef>,
    scope: String,
    columns: Vec<ScanColumn>,
    schema: SchemaRef,
}

impl std::fmt::Debug for ScopedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ScopedTable({}, scope '{}')",
            self.table.qualified_name(),
            self.scope
        )
    }
}

/// The columns of `table`'s schema: its own, then (with `expose_hidden`) `_seq`,
/// `_deleted` and, without a primary key, `_id`.
fn scan_columns(table: &TableDef, expose_hidden: bool) -> Vec<ScanColumn> {
    let mut columns: Vec<ScanColumn> = table.columns.iter().cloned().map(ScanColumn::Column).collect();
    if expose_hidden {
        columns.push(ScanColumn::Seq);
        columns.push(ScanColumn::Deleted);
        if table.primary_key.is_none() {
            columns.push(ScanColumn::Id);
        }
    }
    columns
}

/// The scope of `table` for `caller`: the caller's rows of a USER or STREAM table,
/// every row of a SHARED one.
pub(crate) fn scope_of(table: &TableDef, caller: &Caller) -> String {
    match table.table_type {
        TableType::User | TableType::Stream => caller.user_id.as_str().to_string(),
        TableType::Shared => String::new(),
    }
}

impl ScopedTable {
    /// `table` as `caller` sees it; `expose_hidden` adds `_seq`, `_deleted` (and
    /// `_id` for tables without a primary key) to the schema.
    pub fn new(db: Arc<DbShared>, table: Arc<TableDef>, caller: &Caller, expose_hidden: bool) -> Self {
        let scope = scope_of(&table, caller);
        Self::with_scope(db, table, scope, expose_hidden)
    }

    pub fn with_scope(db: Arc<DbShared>, table: Arc<TableDef>, scope: String, expose_hidden: bool) -> Self {
        let columns = scan_columns(&table, expose_hidden);
        let schema = Arc::new(Schema::new(
            columns.iter().map(ScanColumn::field).collect::<Vec<_>>(),
        ));
        ScopedTable {
            db,
            table,
            scope,
            columns,
            schema,
        }
    }

    pub fn def(&self) -> &Arc<TableDef> {
        &self.table
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn db(&self) -> &Arc<DbShared> {
        &self.db
    }

    pub fn columns(&self) -> &[ScanColumn] {
        &self.columns
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn projected_schema(&self, projection: &[usize]) -> DfResult<SchemaRef> {
        Ok(Arc::new(self.schema.project(projection)?))
    }

    /// The scope's view of both tiers as of now: a RocksDB snapshot, and the
    /// manifest and stale markers of the same moment (taken under the cold tier's
    /// commit lock, so a flush is wholly before or wholly after it). Reads no rows.
    /// Blocking (RocksDB, and a manifest file when it is not cached).
    pub fn snapshot(&self) -> KalamResult<TableSnapshot> {
        let _tiers = self.db.cold.commit_lock.read_recursive();
        let view = self.db.store.view();
        let manifest = match self.table.table_type {
            TableType::User => Some(self.db.cold.manifest(&self.table, &self.scope)?),
            _ => None,
        }
        .filter(|m| !m.segments.is_empty());
        let stale = match &manifest {
            Some(_) => view
                .stale_seqs(self.table.table_id, &self.scope)
                .map_err(store_error)?,
            None => Vec::new(),
        };
        Ok(TableSnapshot {
            view: Arc::new(view),
            manifest,
            stale: Arc::new(stale),
        })
    }

    /// Whether the scope has Parquet segments (reads a manifest file when it is
    /// not cached).
    pub fn has_cold_rows(&self) -> KalamResult<bool> {
        Ok(self.table.table_type == TableType::User
            && !self
                .db
                .cold
                .manifest(&self.table, &self.scope)?
                .segments
                .is_empty())
    }

    /// The live rows of the given primary keys, in either tier, projected (at most
    /// one row per key; keys without a live row are skipped). Blocking.
    pub fn rows_by_pk(
        &self,
        view: &StoreView,
        keys: &[Value],
        projection: &[usize],
    ) -> KalamResult<RecordBatch> {
        let mut builder = BatchBuilder::with_capacity(self, projection, keys.len());
        for key in keys {
            let Some(entry) = view
                .pk_get(self.table.table_id, &self.scope, key)
                .map_err(store_error)?
            else {
                continue;
            };
            if entry.deleted || entry.seq < crate::stream::horizon(&self.table) {
                continue;
            }
            // A hot version goes from its bytes straight into the batch.
            if let Some(bytes) = view
                .hot_get(self.table.table_id, &self.scope, entry.seq)
                .map_err(store_error)?
            {
                if !is_tombstone(&bytes).map_err(corrupt)? {
                    builder.push_encoded(entry.seq, &bytes).map_err(corrupt)?;
                }
                continue;
            }
            if let Some(row) = self.db.cold.read_version(&self.table, &self.scope, entry.seq)?
                && !row.deleted
            {
                builder.push(entry.seq, row.cells);
            }
        }
        builder.finish()
    }

    /// Streams the scope's live hot rows in `_seq` order as batches of at most
    /// [`SCAN_BATCH_ROWS`] rows. RocksDB is read on tokio's blocking pool, at most
    /// [`READ_AHEAD_BATCHES`] batches ahead of the consumer; dropping the stream
    /// stops the read. `read` is the columns decoded, `predicate` (over `read`'s
    /// schema) keeps rows, `output` picks the result's columns out of `read`, and
    /// the scan stops after `limit` rows. `part = (p, n)`: this stream is partition
    /// `p` of `n` reading a full scan (see [`HOT_SLICES_PER_PARTITION`]); point and
    /// index reads have one partition.
    pub fn hot_stream(
        self: &Arc<Self>,
        snapshot: &TableSnapshot,
        scan: Arc<HotScan>,
        part: (usize, usize),
    ) -> SendableRecordBatchStream {
        let output_schema = scan.output_schema.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(READ_AHEAD_BATCHES);
        let this = self.clone();
        let view = snapshot.view.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.produce_hot(&view, &scan, part, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(output_schema, stream))
    }

    fn produce_hot(
        &self,
        view: &StoreView,
        scan: &HotScan,
        part: (usize, usize),
        tx: &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
    ) -> DfResult<()> {
        let limit = scan.limit.unwrap_or(usize::MAX);
        if let Some(keys) = &scan.keys {
            let batch = self
                .rows_by_pk(view, keys, &scan.read)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let _ = tx.blocking_send(Ok(scan.apply(batch, limit)?));
            return Ok(());
        }
        let mut builder = BatchBuilder::new(self, &scan.read);
        let mut emitted = 0usize;
        let mut failure: Option<DataFusionError> = None;
        // Sends a full batch; `false` when the scan is over (limit reached, the
        // consumer gone, or an error to report).
        let mut flush = |builder: &mut BatchBuilder, emitted: &mut usize| -> bool {
            let batch = match builder
                .finish()
                .map_err(|e| DataFusionError::External(Box::new(e)))
            {
                Ok(batch) => batch,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            let batch = match scan.apply(batch, limit - *emitted) {
                Ok(batch) => batch,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            *emitted += batch.num_rows();
            // A consumer that went away (LIMIT met above, timeout, client gone)
            // ends the scan, also while the filter keeps nothing.
            if tx.is_closed() || (batch.num_rows() > 0 && tx.blocking_send(Ok(batch)).is_err()) {
                return false;
            }
            *emitted < limit
        };
        let mut going = true;
        let mut visit = |seq: u64, bytes: &[u8]| -> Result<bool, StoreError> {
            if is_tombstone(bytes)? {
                return Ok(true);
            }
            builder.push_encoded(seq, bytes)?;
            if builder.rows == SCAN_BATCH_ROWS {
                going = flush(&mut builder, &mut emitted);
            }
            Ok(going)
        };
        let visited = match &scan.index {
            None => self.visit_slices(view, part, &mut visit),
            Some(probe) => self.visit_indexed(view, probe, &mut visit),
        };
        visited.map_err(|e| DataFusionError::External(Box::new(store_error(e))))?;
        if going && builder.rows > 0 {
            flush(&mut builder, &mut emitted);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Gets each hot row as `(_seq, encoded row)`; returns `false` to stop.
type RowVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, StoreError> + 'a;

impl ScopedTable {
    /// The scopes of `table` that have hot rows, as [`ScopedTable`]s without hidden
    /// columns (one seek per scope). Blocking.
    pub fn hot_scopes(db: &Arc<DbShared>, table: &Arc<TableDef>) -> KalamResult<Vec<ScopedTable>> {
        let scopes = db.store.hot_scopes(table.table_id).map_err(store_error)?;
        Ok(scopes
            .into_iter()
            .map(|scope| ScopedTable::with_scope(db.clone(), table.clone(), scope, false))
            .collect())
    }

    /// Visits every stored hot version of the scope with `_seq <= through`,
    /// tombstones included, in `_seq` order, without copying: what a flush moves
    /// to Parquet, what `SHOW STATS` counts and what `CREATE INDEX` indexes.
    /// `visit` gets `(_seq, encoded version)` and returns `false` to stop. Blocking.
    pub fn visit_versions(
        &self,
        view: &StoreView,
        through: u64,
        visit: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> KalamResult<()> {
        view.hot_visit_between(self.table.table_id, &self.scope, 0, through, visit)
            .map_err(store_error)
    }
}

impl ScopedTable {
    /// Visits partition `p` of `n` of the scope's hot rows (all of them for `n =
    /// 1`), in `_seq` order within each slice. Rows of a STREAM table older than
    /// its TTL are skipped with one seek.
    fn visit_slices(
        &self,
        view: &StoreView,
        (p, n): (usize, usize),
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), StoreError> {
        let (table_id, horizon) = (self.table.table_id, crate::stream::horizon(&self.table));
        if n <= 1 {
            return view.hot_visit_from(table_id, &self.scope, horizon, visit);
        }
        let Some((first, last)) = view.hot_seq_bounds(table_id, &self.scope, horizon)? else {
            return Ok(());
        };
        let slices = (n * HOT_SLICES_PER_PARTITION) as u64;
        let width = (last - first) / slices + 1;
        let mut stopped = false;
        let mut slice = p as u64;
        while slice < slices && !stopped {
            let from = first + slice * width;
            if from > last {
                break;
            }
            let through = (from + width - 1).min(last);
            view.hot_visit_between(table_id, &self.scope, from, through, |seq, bytes| {
                let going = visit(seq, bytes)?;
                stopped = !going;
                Ok(going)
            })?;
            slice += n as u64;
        }
        Ok(())
    }

    /// The hot rows an index probe names, as a batch of `projection` (the point-read
    /// path: every row in the probe's ranges has the value the query asked for).
    pub fn rows_by_index(
        &self,
        view: &StoreView,
        probe: &IndexProbe,
        projection: &[usize],
    ) -> KalamResult<RecordBatch> {
        let mut builder = BatchBuilder::new(self, projection);
        self.visit_indexed(view, probe, &mut |seq, bytes| {
            if !is_tombstone(bytes)? {
                builder.push_encoded(seq, bytes)?;
            }
            Ok(true)
        })
        .map_err(store_error)?;
        builder.finish()
    }

    /// Visits the hot rows an index probe names: the entries in its ranges, then
    /// their versions (a version no longer hot — flushed, or replaced — is not a row
    /// of this scan). Rows of a secondary index come in `_seq` order, rows of a
    /// primary-key range in key order.
    fn visit_indexed(
        &self,
        view: &StoreView,
        probe: &IndexProbe,
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), StoreError> {
        if probe.primary_key {
            return self.visit_pk_ranges(view, probe, visit);
        }
        let mut seqs = Vec::new();
        for (from, to) in &probe.ranges {
            view.index_visit(from, to, |_, seq| {
                seqs.push(seq);
                true
            })?;
        }
        seqs.sort_unstable();
        seqs.dedup();
        for chunk in seqs.chunks(SCAN_BATCH_ROWS) {
            let rows = view.hot_multi_get(self.table.table_id, &self.scope, chunk)?;
            for (&seq, row) in chunk.iter().zip(rows) {
                if let Some(bytes) = row
                    && !visit(seq, &bytes)?
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl ScopedTable {
    /// Visits the hot rows of primary-key ranges in key order, reading the versions
    /// of [`SCAN_BATCH_ROWS`] keys at a time (one multi-get each), so a range holds
    /// no more than that in memory and a LIMIT stops it early. Keys whose latest
    /// version is a tombstone, older than a STREAM table's TTL, or no longer hot
    /// (flushed: the cold part of the scan reads it) yield nothing.
    fn visit_pk_ranges(
        &self,
        view: &StoreView,
        probe: &IndexProbe,
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), StoreError> {
        let horizon = crate::stream::horizon(&self.table);
        let mut seqs: Vec<u64> = Vec::with_capacity(SCAN_BATCH_ROWS);
        // Reads the versions of `seqs`; `false` once `visit` asked to stop.
        let mut drain = |seqs: &mut Vec<u64>| -> Result<bool, StoreError> {
            let rows = view.hot_multi_get(self.table.table_id, &self.scope, seqs)?;
            let pairs: Vec<(u64, Option<Vec<u8>>)> = seqs.drain(..).zip(rows).collect();
            for (seq, row) in pairs {
                if let Some(bytes) = row
                    && !visit(seq, &bytes)?
                {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        for (from, to) in &probe.ranges {
            let mut outcome: Result<bool, StoreError> = Ok(true);
            view.pk_visit(from, to, |entry| {
                if !entry.deleted && entry.seq >= horizon {
                    seqs.push(entry.seq);
                }
                if seqs.len() < SCAN_BATCH_ROWS {
                    return true;
                }
                outcome = drain(&mut seqs);
                matches!(outcome, Ok(true))
            })?;
            if !outcome? {
                return Ok(());
            }
        }
        drain(&mut seqs)?;
        Ok(())
    }
}

/// One moment of a scope's two tiers (see [`ScopedTable::snapshot`]).
pub(crate) struct TableSnapshot {
    pub view: Arc<StoreView>,
    /// The scope's Parquet segments (`None`: none).
    pub manifest: Option<Arc<Manifest>>,
    /// `_seq`s of Parquet row versions superseded by a later write, ascending.
    pub stale: Arc<Vec<u64>>,
}

/// What a hot scan reads and returns (see [`ScopedTable::hot_stream`]).
pub(crate) struct HotScan {
    /// Indices (into the table's columns) decoded from each row.
    pub read: Vec<usize>,
    /// Keeps the rows for which it is true; over the schema of `read`.
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
    /// Positions (into `read`) of the output columns.
    pub output: Vec<usize>,
    pub output_schema: SchemaRef,
    pub limit: Option<usize>,
    /// Read these primary keys (point reads in either tier) instead of scanning.
    pub keys: Option<Vec<Value>>,
    /// Read the hot rows a secondary index names instead of every hot row.
    pub index: Option<IndexProbe>,
}

impl HotScan {
    /// Filters a batch of `read` columns, keeps at most `remaining` rows, projects.
    fn apply(&self, batch: RecordBatch, remaining: usize) -> DfResult<RecordBatch> {
        let batch = match &self.predicate {
            Some(predicate) => {
                let keep = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                let keep = keep
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Internal("a filter did not yield booleans".into()))?;
                filter_record_batch(&batch, keep)?
            }
            None => batch,
        };
        let batch = if batch.num_rows() > remaining {
            batch.slice(0, remaining)
        } else {
            batch
        };
        let columns = self.output.iter().map(|&i| batch.column(i).clone()).collect();
        Ok(RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }
}

/// Accumulates the projected columns of stored row versions straight into Arrow
/// builders and turns them into a batch: the one place stored cells become Arrow
/// columns.
pub(crate) struct BatchBuilder {
    columns: Vec<ScanColumn>,
    schema: SchemaRef,
    /// Cell id → slot in `columns` (cell ids are small and dense).
    slot_of: Vec<Option<usize>>,
    builders: Vec<ColumnBuilder>,
    /// What a slot reads when the row has no cell for it.
    defaults: Vec<Value>,
    filled: Vec<bool>,
    pub rows: usize,
}

impl BatchBuilder {
    pub fn new(table: &ScopedTable, projection: &[usize]) -> Self {
        Self::with_capacity(table, projection, SCAN_BATCH_ROWS)
    }

    /// [`BatchBuilder::new`] sized for `rows` rows (a point read's few keys: a
    /// scan's 8,192-row buffers would cost more than the read).
    pub fn with_capacity(table: &ScopedTable, projection: &[usize], rows: usize) -> Self {
        Self::of_columns(
            projection.iter().map(|&i| table.columns[i].clone()).collect(),
            rows,
        )
    }

    /// A builder of every column of `table` (and the hidden ones, with
    /// `expose_hidden`), as [`ScopedTable::schema`] lists them.
    pub fn for_table(table: &TableDef, expose_hidden: bool) -> Self {
        Self::of_columns(scan_columns(table, expose_hidden), SCAN_BATCH_ROWS)
    }

    fn of_columns(columns: Vec<ScanColumn>, capacity: usize) -> Self {
        let schema = Arc::new(Schema::new(
            columns.iter().map(ScanColumn::field).collect::<Vec<_>>(),
        ));
        let mut slot_of = Vec::new();
        for (slot, column) in columns.iter().enumerate() {
            if let Some(id) = column.cell_id() {
                let id = id as usize;
                if slot_of.len() <= id {
                    slot_of.resize(id + 1, None);
                }
                slot_of[id] = Some(slot);
            }
        }
        let defaults = columns
            .iter()
            .map(|c| match c {
                ScanColumn::Column(def) => backfill_value(def),
                ScanColumn::Deleted => Value::Boolean(false),
                ScanColumn::Seq | ScanColumn::Id => Value::Null,
            })
            .collect();
        BatchBuilder {
            builders: columns
                .iter()
                .map(|c| ColumnBuilder::new(&c.kalam_type(), capacity))
                .collect(),
            filled: vec![false; columns.len()],
            defaults,
            columns,
            schema,
            slot_of,
            rows: 0,
        }
    }

    fn slot(&self, id: u32) -> Option<usize> {
        self.slot_of.get(id as usize).copied().flatten()
    }

    /// Adds a live row version from its stored bytes (the caller skips tombstones).
    /// A corrupt row is an error after which the builder must be dropped (its
    /// columns may differ in length).
    pub fn push_encoded(
        &mut self,
        seq: u64,
        bytes: &[u8],
    ) -> Result<(), kalamdb_store::row_codec::RowCodecError> {
        visit_cells(bytes, |id, cell| self.put(id, cell))?;
        self.end_row(seq);
        Ok(())
    }

    /// Adds a live row version from decoded cells.
    pub fn push(&mut self, seq: u64, cells: Vec<(u32, Value)>) {
        for (id, value) in &cells {
            self.put(*id, CellRef::of(value));
        }
        self.end_row(seq);
    }

    fn put(&mut self, id: u32, cell: CellRef<'_>) {
        if let Some(slot) = self.slot(id)
            && !self.filled[slot]
        {
            self.builders[slot].append(cell);
            self.filled[slot] = true;
        }
    }

    fn end_row(&mut self, seq: u64) {
        for slot in 0..self.columns.len() {
            if std::mem::take(&mut self.filled[slot]) {
                continue;
            }
            match &self.columns[slot] {
                ScanColumn::Seq => self.builders[slot].append(CellRef::BigInt(crate::seq_as_i64(seq))),
                _ => self.builders[slot].append(CellRef::of(&self.defaults[slot])),
            }
        }
        self.rows += 1;
    }

    /// The rows pushed so far as a batch. A stored value the schema cannot hold
    /// (a NULL in a NOT NULL column) is an error, never a panic.
    pub fn finish(&mut self) -> KalamResult<RecordBatch> {
        let arrays = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        let rows = std::mem::take(&mut self.rows);
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| KalamError::internal(format!("stored rows do not fit the table's schema: {e}")))
    }
}

fn corrupt(e: kalamdb_store::row_codec::RowCodecError) -> KalamError {
    KalamError::internal(format!("corrupt row: {e}"))
}

/// What a row written before `column` existed reads as.
pub(crate) fn backfill_value(column: &ColumnDef) -> Value {
    column
        .backfill
        .as_ref()
        .and_then(|literal| literal.to_value(&column.data_type).ok())
        .unwrap_or(Value::Null)
}
