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
//! versions, tombstones included, through [`ScopedTable::visit_versions`]. `ON
//! CONFLICT`'s version lookups read with [`ScopedTable::live_versions`], and a
//! commit the versions it replaces with [`read_versions`]. In a transaction, every
//! read is of the transaction's moment with its own writes over it (`txn.rs`). Still
//! outside it: `CREATE UNIQUE INDEX`'s pass over Parquet rows
//! (`cold::for_each_live_row`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use kalamdb_cold::Manifest;
use kalamdb_commons::{KalamError, KalamResult, TableType, Value};
use kalamdb_store::row_codec::is_tombstone;
use kalamdb_store::{StoreError, StoreView};

use crate::access::Caller;
use crate::assemble::{RowAssembler, ScanColumn, scan_columns};
use crate::base::store_error;
use crate::catalog::TableDef;
use crate::index::IndexProbe;
use crate::tiers::Tiers;
use crate::txn::{OwnRows, Transaction};

/// Rows per Arrow batch built from hot rows: a scan holds at most a few of these.
pub(crate) const SCAN_BATCH_ROWS: usize = 8192;

/// Batches a hot scan may have read ahead of its consumer.
const READ_AHEAD_BATCHES: usize = 2;

/// A full hot scan read by `n` partitions splits the scope's `_seq` range into
/// `n` times this many slices of equal width, partition `p` reading slices `p`,
/// `p + n`, ...: rows written at an even pace spread evenly, and a burst spans
/// several slices.
const HOT_SLICES_PER_PARTITION: usize = 16;

/// A table as one scope sees it.
pub(crate) struct ScopedTable {
    db: Arc<Tiers>,
    table: Arc<TableDef>,
    scope: String,
    columns: Vec<ScanColumn>,
    schema: SchemaRef,
    /// The transaction of the statement that made it: its reads are of the
    /// transaction's moment and show its own writes (`txn.rs`).
    txn: Option<Arc<Transaction>>,
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
    pub fn new(db: Arc<Tiers>, table: Arc<TableDef>, caller: &Caller, expose_hidden: bool) -> Self {
        let scope = scope_of(&table, caller);
        Self::with_scope(db, table, scope, expose_hidden)
    }

    pub fn with_scope(db: Arc<Tiers>, table: Arc<TableDef>, scope: String, expose_hidden: bool) -> Self {
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
            txn: crate::txn::current(),
        }
    }

    pub fn def(&self) -> &Arc<TableDef> {
        &self.table
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn db(&self) -> &Arc<Tiers> {
        &self.db
    }

    /// An assembler of the columns `projection` of [`ScopedTable::schema`], sized
    /// for `capacity` rows.
    pub fn assembler(&self, projection: &[usize], capacity: usize) -> RowAssembler {
        RowAssembler::new(
            projection.iter().map(|&i| self.columns[i].clone()).collect(),
            capacity,
        )
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

    /// The scope's view of both tiers as of now — or, in a transaction, as of its
    /// moment with its own writes over it: a RocksDB snapshot, and the manifest and
    /// stale markers of the same moment (taken under the cold tier's commit lock, so
    /// a flush is wholly before or wholly after it). Reads no rows. Blocking
    /// (RocksDB, and a manifest file when it is not cached).
    pub fn snapshot(&self) -> KalamResult<TableSnapshot> {
        let Moment { view, manifest, own } = self.moment()?;
        let manifest = manifest.filter(|m| !m.segments.is_empty());
        let mut stale = match &manifest {
            Some(_) => view
                .stale_seqs(self.table.table_id, &self.scope)
                .map_err(store_error)?,
            None => Vec::new(),
        };
        // The snapshot's versions the transaction replaced read as superseded.
        if let Some(own) = &own
            && manifest.is_some()
        {
            stale.extend_from_slice(own.hidden());
            stale.sort_unstable();
            stale.dedup();
        }
        Ok(TableSnapshot {
            view,
            manifest,
            stale: Arc::new(stale),
            own,
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

    /// The store and the scope's manifest of one moment (taken under the cold tier's
    /// commit lock, as a snapshot's are), for reads by key; in a transaction, its
    /// moment and its own writes to the scope.
    pub fn moment(&self) -> KalamResult<Moment> {
        if let Some(txn) = &self.txn {
            return Ok(Moment {
                view: txn.moment().view.clone(),
                manifest: txn.manifest(&self.table, &self.scope)?,
                own: txn.own_rows(self.table.table_id, &self.scope),
            });
        }
        let manifest = match self.table.table_type {
            TableType::User => {
                let _tiers = self.db.cold.commit_lock.read_recursive();
                let manifest = self.db.cold.manifest(&self.table, &self.scope)?;
                return Ok(Moment {
                    view: Arc::new(self.db.store.view()),
                    manifest: Some(manifest),
                    own: None,
                });
            }
            _ => None,
        };
        Ok(Moment {
            view: Arc::new(self.db.store.view()),
            manifest,
            own: None,
        })
    }

    /// The live version of each key as the statement sees it (in a transaction: its
    /// own write of the key, else its moment's), with its cells. Blocking.
    pub fn live_versions(
        &self,
        keys: &[Value],
    ) -> KalamResult<Vec<Option<(u64, kalamdb_store::DecodedRow)>>> {
        let Moment { view, manifest, own } = self.moment()?;
        let horizon = crate::stream::horizon(&self.table);
        let entries =
            (view.pk_multi_get(self.table.table_id, &self.scope, keys.iter())).map_err(store_error)?;
        let decode = |bytes: &[u8]| kalamdb_store::row_codec::decode_row(bytes).map_err(corrupt);
        let mut versions = Vec::with_capacity(keys.len());
        for (key, entry) in keys.iter().zip(entries) {
            if let Some(written) = own.as_ref().and_then(|own| own.row(key)) {
                versions.push(
                    written
                        .map(|(seq, bytes)| decode(bytes).map(|row| (seq, row)))
                        .transpose()?,
                );
                continue;
            }
            let Some(entry) = entry.filter(|e| e.is_live(horizon)) else {
                versions.push(None);
                continue;
            };
            let row = match view
                .hot_get(self.table.table_id, &self.scope, entry.seq)
                .map_err(store_error)?
            {
                Some(bytes) => Some(decode(&bytes)?),
                None => match &manifest {
                    Some(manifest) => {
                        (self.db.cold).read_version(&self.table, &self.scope, manifest, entry.seq)?
                    }
                    None => None,
                },
            };
            let row = row.ok_or_else(|| {
                KalamError::internal(format!("pk index names a missing row version {}", entry.seq))
            })?;
            versions.push((!row.deleted).then_some((entry.seq, row)));
        }
        Ok(versions)
    }

    /// Whether the statement runs in a transaction that wrote to this scope.
    pub fn has_own_writes(&self) -> bool {
        (self.txn.as_ref()).is_some_and(|txn| txn.own_rows(self.table.table_id, &self.scope).is_some())
    }

    /// The live rows of the given primary keys, in either tier, projected (at most
    /// one row per key; keys without a live row are skipped). Blocking.
    /// `manifest` is the scope's manifest of the moment `view` was taken (a
    /// compaction publishing meanwhile may drop versions `view` names).
    pub fn rows_by_pk(
        &self,
        view: &StoreView,
        manifest: Option<&Manifest>,
        own: Option<&OwnRows>,
        keys: &[Value],
        projection: &[usize],
    ) -> KalamResult<RecordBatch> {
        let mut builder = self.assembler(projection, keys.len());
        for key in keys {
            // A key the transaction wrote reads as it wrote it.
            if let Some(written) = own.and_then(|own| own.row(key)) {
                if let Some((seq, bytes)) = written {
                    builder.push_encoded(seq, bytes).map_err(corrupt)?;
                }
                continue;
            }
            let Some(entry) = view
                .pk_get(self.table.table_id, &self.scope, key)
                .map_err(store_error)?
            else {
                continue;
            };
            if !entry.is_live(crate::stream::horizon(&self.table)) {
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
            if let Some(manifest) = manifest
                && let Some(row) =
                    (self.db.cold).read_version(&self.table, &self.scope, manifest, entry.seq)?
                && !row.deleted
            {
                builder.push(entry.seq, row.cells);
            }
        }
        builder.finish()
    }

    /// Streams the scope's live hot rows in `_seq` order as batches of at most
    /// [`SCAN_BATCH_ROWS`] rows. Each batch is read on tokio's blocking pool by a
    /// bounded piece of work ([`HotReader::next_batch`]) started only when the
    /// consumer has room for it, at most [`READ_AHEAD_BATCHES`] batches ahead: a
    /// consumer that stops reading holds a parked task, never a thread. Dropping the
    /// stream stops the read. `read` is the columns decoded, `predicate` (over
    /// `read`'s schema) keeps rows, `output` picks the result's columns out of
    /// `read`, and the scan stops after `limit` rows. `part = (p, n)`: this stream
    /// is partition `p` of `n` reading a full scan (see
    /// [`HOT_SLICES_PER_PARTITION`]); point and index reads have one partition.
    pub fn hot_stream(
        self: &Arc<Self>,
        snapshot: &TableSnapshot,
        scan: Arc<HotScan>,
        part: (usize, usize),
    ) -> SendableRecordBatchStream {
        let output_schema = scan.output_schema.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(READ_AHEAD_BATCHES);
        let mut reader = HotReader {
            table: self.clone(),
            view: snapshot.view.clone(),
            manifest: snapshot.manifest.clone(),
            // The transaction's own rows come with the first partition's last batch.
            own: snapshot.own.clone().map(|own| (own, part.0 == 0)),
            cursor: HotCursor::start(&scan, part),
            scan,
            emitted: 0,
        };
        tokio::spawn(async move {
            loop {
                // Room first: the read starts only when its batch can be handed over.
                let Ok(permit) = tx.reserve().await else {
                    return; // the consumer is gone
                };
                let read = tokio::task::spawn_blocking(move || {
                    let batch = reader.next_batch();
                    (reader, batch)
                })
                .await;
                let batch = match read {
                    Ok((back, batch)) => {
                        reader = back;
                        batch
                    }
                    Err(e) => {
                        let failed = DataFusionError::Internal(format!("a hot scan task failed: {e}"));
                        return permit.send(Err(failed));
                    }
                };
                match batch {
                    Ok(Some(batch)) if batch.num_rows() == 0 => {}
                    Ok(Some(batch)) => permit.send(Ok(batch)),
                    Ok(None) => return,
                    Err(e) => return permit.send(Err(e)),
                }
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(output_schema, stream))
    }
}

/// Where a hot scan goes on from.
enum HotCursor {
    /// Primary keys, read in one batch.
    Keys,
    /// `_seq` ranges (`from..=through`) read in order: one for a full scan, a
    /// partition's slices for a split one (computed on the first read); the
    /// position is the range and the next `_seq` in it.
    Seqs {
        part: (usize, usize),
        ranges: Option<Vec<(u64, u64)>>,
        range: usize,
        from: u64,
    },
    /// The `_seq`s a secondary index names (collected on the first read), and how
    /// many were read.
    Indexed {
        seqs: Option<Vec<u64>>,
        at: usize,
    },
    /// Primary-key ranges in key order: the range, and the key to go on from.
    PkRanges {
        range: usize,
        from: Option<Vec<u8>>,
    },
    Done,
}

impl HotCursor {
    fn start(scan: &HotScan, part: (usize, usize)) -> HotCursor {
        match (&scan.keys, &scan.index) {
            (Some(_), _) => HotCursor::Keys,
            (None, Some(probe)) if probe.primary_key => HotCursor::PkRanges { range: 0, from: None },
            (None, Some(_)) => HotCursor::Indexed { seqs: None, at: 0 },
            (None, None) => HotCursor::Seqs {
                part,
                ranges: None,
                range: 0,
                from: 0,
            },
        }
    }
}

/// A hot scan read a batch at a time, each a bounded piece of blocking work that
/// can go on later from where it stopped (on the same snapshot).
struct HotReader {
    table: Arc<ScopedTable>,
    view: Arc<StoreView>,
    /// The manifest of the view's moment (point reads by key read flushed versions).
    manifest: Option<Arc<Manifest>>,
    /// A transaction's own writes to the scope, and whether this reader adds its
    /// rows (one partition of a scan does).
    own: Option<(Arc<OwnRows>, bool)>,
    scan: Arc<HotScan>,
    cursor: HotCursor,
    /// Rows handed out so far (the scan's LIMIT).
    emitted: usize,
}

/// Takes one stored version `(_seq, encoded row)` into a batch; `false` to stop.
type TakeRow<'a> = dyn FnMut(u64, &[u8], &mut RowAssembler) -> Result<bool, StoreError> + 'a;

/// Stored versions one read visits at most (tombstones and filtered rows count).
const VISITS_PER_READ: usize = 4 * SCAN_BATCH_ROWS;

impl HotReader {
    /// The next batch (filtered and projected; it may be empty), or `None` when the
    /// scan is over. Blocking.
    fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        let limit = self.scan.limit.unwrap_or(usize::MAX);
        if self.emitted >= limit || matches!(self.cursor, HotCursor::Done) {
            return Ok(None);
        }
        let (table, view) = (self.table.clone(), self.view.clone());
        let external = |e: KalamError| DataFusionError::External(Box::new(e));
        let read = if let HotCursor::Keys = self.cursor {
            self.cursor = HotCursor::Done;
            let keys = self.scan.keys.as_deref().unwrap_or_default();
            let own = self.own.as_ref().map(|(own, _)| own.as_ref());
            (table.rows_by_pk(&view, self.manifest.as_deref(), own, keys, &self.scan.read))
                .map_err(external)?
        } else {
            let mut builder = table.assembler(&self.scan.read, SCAN_BATCH_ROWS);
            let mut visits = 0usize;
            let own = self.own.clone();
            let hidden = |seq: u64| own.as_ref().is_some_and(|(own, _)| own.hides(seq));
            let mut take = |seq: u64, bytes: &[u8], builder: &mut RowAssembler| -> Result<bool, StoreError> {
                visits += 1;
                if !hidden(seq) && !is_tombstone(bytes)? {
                    builder.push_encoded(seq, bytes)?;
                }
                Ok(builder.rows < SCAN_BATCH_ROWS && visits < VISITS_PER_READ)
            };
            let done = self
                .read_some(&table, &view, &mut builder, &mut take)
                .map_err(|e| external(store_error(e)))?;
            if done {
                self.cursor = HotCursor::Done;
                // A transaction's own rows, after the snapshot's (the scan's filters
                // apply to them as to any row).
                if let Some((own, true)) = &own {
                    for (seq, bytes) in own.rows() {
                        builder
                            .push_encoded(seq, bytes)
                            .map_err(|e| external(corrupt(e)))?;
                    }
                }
            }
            builder.finish().map_err(external)?
        };
        let batch = self.scan.apply(read, limit - self.emitted)?;
        self.emitted += batch.num_rows();
        Ok(Some(batch))
    }

    /// Visits versions from the cursor into `builder` until `take` says stop;
    /// moves the cursor past them. `true` when the scan has nothing more.
    fn read_some(
        &mut self,
        table: &ScopedTable,
        view: &StoreView,
        builder: &mut RowAssembler,
        take: &mut TakeRow<'_>,
    ) -> Result<bool, StoreError> {
        let (table_id, scope) = (table.table.table_id, table.scope.as_str());
        match &mut self.cursor {
            HotCursor::Keys | HotCursor::Done => Ok(true),
            HotCursor::Seqs {
                part,
                ranges,
                range,
                from,
            } => {
                let ranges = match ranges {
                    Some(ranges) => ranges,
                    None => ranges.insert(table.seq_ranges(view, *part)?),
                };
                while let Some(&(start, through)) = ranges.get(*range) {
                    let mut stopped_at = None;
                    view.hot_visit_between(table_id, scope, (*from).max(start), through, |seq, bytes| {
                        let going = take(seq, bytes, builder)?;
                        if !going {
                            stopped_at = Some(seq);
                        }
                        Ok(going)
                    })?;
                    match stopped_at {
                        Some(seq) if seq < through => {
                            *from = seq + 1;
                            return Ok(false);
                        }
                        _ => {
                            *range += 1;
                            *from = 0;
                            if stopped_at.is_some() {
                                return Ok(ranges.get(*range).is_none());
                            }
                        }
                    }
                }
                Ok(true)
            }
            HotCursor::Indexed { seqs, at } => {
                let seqs = match seqs {
                    Some(seqs) => seqs,
                    None => {
                        let Some(probe) = &self.scan.index else {
                            return Ok(true);
                        };
                        seqs.insert(index_seqs(view, probe)?)
                    }
                };
                while *at < seqs.len() {
                    let chunk = &seqs[*at..(*at + SCAN_BATCH_ROWS).min(seqs.len())];
                    let rows = view.hot_multi_get(table_id, scope, chunk)?;
                    *at += chunk.len();
                    let mut going = true;
                    for (&seq, row) in chunk.iter().zip(rows) {
                        if let Some(bytes) = row {
                            going &= take(seq, &bytes, builder)?;
                        }
                    }
                    if !going {
                        break;
                    }
                }
                Ok(*at >= seqs.len())
            }
            HotCursor::PkRanges { range, from } => {
                let Some(probe) = &self.scan.index else {
                    return Ok(true);
                };
                let horizon = crate::stream::horizon(&table.table);
                while let Some((start, to)) = probe.ranges.get(*range) {
                    // The versions of up to a batch of keys, then one multi-get.
                    let mut seqs = Vec::with_capacity(SCAN_BATCH_ROWS);
                    let mut last_key: Option<Vec<u8>> = None;
                    view.pk_visit(from.as_deref().unwrap_or(start), to, |key, entry| {
                        if entry.is_live(horizon) {
                            seqs.push(entry.seq);
                        }
                        if seqs.len() < SCAN_BATCH_ROWS {
                            return true;
                        }
                        last_key = Some(key.to_vec());
                        false
                    })?;
                    let rows = view.hot_multi_get(table_id, scope, &seqs)?;
                    for (seq, row) in seqs.into_iter().zip(rows) {
                        if let Some(bytes) = row {
                            // A batch of keys is read whole: it fits a batch.
                            take(seq, &bytes, builder)?;
                        }
                    }
                    match last_key {
                        // The range goes on after the last key read.
                        Some(mut key) => {
                            key.push(0);
                            *from = Some(key);
                            return Ok(false);
                        }
                        None => {
                            *range += 1;
                            *from = None;
                            if builder.rows >= SCAN_BATCH_ROWS {
                                return Ok(probe.ranges.get(*range).is_none());
                            }
                        }
                    }
                }
                Ok(true)
            }
        }
    }
}

impl ScopedTable {
    /// The `_seq` ranges partition `(p, n)` of a full scan reads, in order: from the
    /// STREAM horizon on for `n = 1`, else the partition's slices of the scope's
    /// `_seq` range (see [`HOT_SLICES_PER_PARTITION`]).
    fn seq_ranges(&self, view: &StoreView, (p, n): (usize, usize)) -> Result<Vec<(u64, u64)>, StoreError> {
        let (table_id, horizon) = (self.table.table_id, crate::stream::horizon(&self.table));
        if n <= 1 {
            return Ok(vec![(horizon, u64::MAX)]);
        }
        let Some((first, last)) = view.hot_seq_bounds(table_id, &self.scope, horizon)? else {
            return Ok(Vec::new());
        };
        let slices = (n * HOT_SLICES_PER_PARTITION) as u64;
        let width = (last - first) / slices + 1;
        let mut ranges = Vec::new();
        let mut slice = p as u64;
        while slice < slices {
            let from = first + slice * width;
            if from > last {
                break;
            }
            ranges.push((from, (from + width - 1).min(last)));
            slice += n as u64;
        }
        Ok(ranges)
    }
}

/// The `_seq`s a secondary index's probe names, ascending, once each.
fn index_seqs(view: &StoreView, probe: &IndexProbe) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    for (from, to) in &probe.ranges {
        view.index_visit(from, to, |_, seq| {
            seqs.push(seq);
            true
        })?;
    }
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

/// Gets each hot row as `(_seq, encoded row)`; returns `false` to stop.
type RowVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, StoreError> + 'a;

impl ScopedTable {
    /// The scopes of `table` that have hot rows, as [`ScopedTable`]s without hidden
    /// columns (one seek per scope). Blocking.
    pub fn hot_scopes(db: &Arc<Tiers>, table: &Arc<TableDef>) -> KalamResult<Vec<ScopedTable>> {
        let scopes = db
            .store
            .latest()
            .hot_scopes(table.table_id)
            .map_err(store_error)?;
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
    /// The hot rows an index probe names, as a batch of `projection` (the point-read
    /// path: every row in the probe's ranges has the value the query asked for).
    pub fn rows_by_index(
        &self,
        view: &StoreView,
        probe: &IndexProbe,
        projection: &[usize],
    ) -> KalamResult<RecordBatch> {
        let mut builder = self.assembler(projection, SCAN_BATCH_ROWS);
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
        let seqs = index_seqs(view, probe)?;
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
            view.pk_visit(from, to, |_, entry| {
                if entry.is_live(horizon) {
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

/// What reads by key read (see [`ScopedTable::moment`]).
pub(crate) struct Moment {
    pub view: Arc<StoreView>,
    /// The scope's manifest of the view's moment (`None`: a table without segments).
    pub manifest: Option<Arc<Manifest>>,
    /// In a transaction: its own writes to the scope.
    pub own: Option<Arc<OwnRows>>,
}

/// One moment of a scope's two tiers (see [`ScopedTable::snapshot`]).
pub(crate) struct TableSnapshot {
    pub view: Arc<StoreView>,
    /// The scope's Parquet segments (`None`: none).
    pub manifest: Option<Arc<Manifest>>,
    /// `_seq`s of Parquet row versions superseded by a later write, ascending.
    pub stale: Arc<Vec<u64>>,
    /// In a transaction: its own writes to the scope (the versions they replace are
    /// in `stale` too).
    pub own: Option<Arc<OwnRows>>,
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

fn corrupt(e: kalamdb_store::row_codec::RowCodecError) -> KalamError {
    KalamError::internal(format!("corrupt row: {e}"))
}

/// The stored bytes of the row versions `seqs` of a scope, in either tier, read from
/// one moment of both (a flush moving a version between a hot and a cold read would
/// hide it): hot ones by one multi-get, flushed ones in one pass per segment.
/// `charge` is told the size of each version read. Blocking.
pub(crate) fn read_versions(
    db: &Tiers,
    table: &TableDef,
    scope: &str,
    seqs: Vec<u64>,
    mut charge: impl FnMut(usize) -> KalamResult<()>,
) -> KalamResult<HashMap<u64, Vec<u8>>> {
    let (view, manifest) = {
        let _tiers = db.cold.commit_lock.read_recursive();
        let manifest = match table.table_type {
            TableType::User => Some(db.cold.manifest(table, scope)?),
            _ => None,
        };
        (db.store.view(), manifest)
    };
    let hot = view
        .hot_multi_get(table.table_id, scope, &seqs)
        .map_err(store_error)?;
    let mut rows = HashMap::with_capacity(seqs.len());
    let mut cold = Vec::new();
    for (seq, row) in seqs.into_iter().zip(hot) {
        match row {
            Some(bytes) => {
                charge(bytes.len())?;
                rows.insert(seq, bytes);
            }
            None => cold.push(seq),
        }
    }
    if let Some(manifest) = manifest.filter(|_| !cold.is_empty()) {
        for (seq, row) in db.cold.read_versions(table, scope, &manifest, &cold)? {
            let mut bytes = Vec::new();
            kalamdb_store::row_codec::encode_row(false, row.cells.iter().map(|(id, v)| (*id, v)), &mut bytes);
            charge(bytes.len())?;
            rows.insert(seq, bytes);
        }
    }
    Ok(rows)
}
