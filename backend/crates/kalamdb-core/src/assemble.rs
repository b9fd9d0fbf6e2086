//! The one row assembler: stored row versions → Arrow batches.
//!
//! Every place that turns stored rows into Arrow columns goes through
//! [`RowAssembler`]: hot scans and point reads (`scoped.rs`), live-query rows
//! (`live/feed.rs`) and the batches of a Parquet segment (`jobs/flush.rs`, with the
//! segment schema of `segment.rs` and statistics). Cells go from the stored row bytes
//! (or decoded cells) straight into typed Arrow builders, no `Value` per cell. A
//! column a row does not carry reads as the column's backfill value (a row written
//! before the column was added), or NULL in a tombstone, which carries only its key.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use kalamdb_cold::ColumnStats;
use kalamdb_commons::{KalamError, KalamResult, KalamType, Value};
use kalamdb_store::row_codec::{CellRef, RowCodecError, visit_cells};

use crate::arrow_conv::{ColumnBuilder, field};
use crate::catalog::{ColumnDef, DELETED_COLUMN, ID_COLUMN, ID_COLUMN_ID, SEQ_COLUMN, TableDef};

/// Longest text kept as a min/max statistic; longer values leave the bound unknown.
const MAX_STAT_TEXT: usize = 256;

/// One column of an assembled batch and where its values come from: a table
/// column's cell, or the version's `_seq`, tombstone flag or row id.
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

    /// The column of a scan's schema (`ScopedTable::schema`).
    pub fn field(&self) -> Field {
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

/// The columns of `table`'s schema: its own, then (with `expose_hidden`) `_seq`,
/// `_deleted` and, without a primary key, `_id`.
pub(crate) fn scan_columns(table: &TableDef, expose_hidden: bool) -> Vec<ScanColumn> {
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

/// Accumulates stored row versions straight into Arrow builders and turns them into
/// batches (see the module's description).
pub(crate) struct RowAssembler {
    columns: Vec<ScanColumn>,
    schema: SchemaRef,
    /// Cell id → slot in `columns` (cell ids are small and dense).
    slot_of: Vec<Option<usize>>,
    builders: Vec<ColumnBuilder>,
    /// What a slot reads when a live row has no cell for it.
    defaults: Vec<Value>,
    filled: Vec<bool>,
    /// Rows in the batch being built.
    pub rows: usize,
    statistics: Option<Statistics>,
}

/// What a segment's manifest records of the rows assembled (every batch so far).
pub(crate) struct Statistics {
    pub rows: u64,
    pub deleted: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    /// Per slot; `None` for `_seq` and `_deleted`.
    columns: Vec<Option<ColumnStatistics>>,
}

struct ColumnStatistics {
    min: Option<Value>,
    max: Option<Value>,
    null_count: u64,
    /// False once a value was seen that statistics cannot order (NaN, long text).
    valid: bool,
}

impl RowAssembler {
    /// An assembler of `columns` under the scan schema they make
    /// ([`ScanColumn::field`]), sized for `capacity` rows (a point read's few keys
    /// should not pay for a scan's 8,192-row buffers).
    pub fn new(columns: Vec<ScanColumn>, capacity: usize) -> Self {
        let schema = Arc::new(Schema::new(
            columns.iter().map(ScanColumn::field).collect::<Vec<_>>(),
        ));
        Self::with_schema(columns, schema, capacity)
    }

    /// An assembler of `columns` under `schema` (one field per column, in order).
    pub fn with_schema(columns: Vec<ScanColumn>, schema: SchemaRef, capacity: usize) -> Self {
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
                ScanColumn::Column(def) => def.backfill_value(),
                ScanColumn::Deleted | ScanColumn::Seq | ScanColumn::Id => Value::Null,
            })
            .collect();
        RowAssembler {
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
            statistics: None,
        }
    }

    /// The same, also keeping [`Statistics`] of every row assembled.
    pub fn with_statistics(mut self) -> Self {
        let columns = (self.columns.iter())
            .map(|c| {
                let valid = match c {
                    ScanColumn::Column(def) => !matches!(def.data_type, KalamType::Bytes | KalamType::Json),
                    ScanColumn::Id => true,
                    ScanColumn::Seq | ScanColumn::Deleted => return None,
                };
                Some(ColumnStatistics {
                    min: None,
                    max: None,
                    null_count: 0,
                    valid,
                })
            })
            .collect();
        self.statistics = Some(Statistics {
            rows: 0,
            deleted: 0,
            min_seq: u64::MAX,
            max_seq: 0,
            columns,
        });
        self
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn slot(&self, id: u32) -> Option<usize> {
        self.slot_of.get(id as usize).copied().flatten()
    }

    /// Adds a row version from its stored bytes; a tombstone's columns other than
    /// its key are NULL (scans skip tombstones before they get here; a segment keeps
    /// them). A corrupt row is an error after which the assembler must be dropped
    /// (its columns may differ in length).
    pub fn push_encoded(&mut self, seq: u64, bytes: &[u8]) -> Result<(), RowCodecError> {
        let deleted = visit_cells(bytes, |id, cell| self.put(id, cell))?;
        self.end_row(seq, deleted);
        Ok(())
    }

    /// Adds a live row version from decoded cells.
    pub fn push(&mut self, seq: u64, cells: Vec<(u32, Value)>) {
        for (id, value) in &cells {
            self.put(*id, CellRef::of(value));
        }
        self.end_row(seq, false);
    }

    fn put(&mut self, id: u32, cell: CellRef<'_>) {
        if let Some(slot) = self.slot(id)
            && !self.filled[slot]
        {
            self.append(slot, cell);
            self.filled[slot] = true;
        }
    }

    fn append(&mut self, slot: usize, cell: CellRef<'_>) {
        if let Some(Some(statistics)) = self.statistics.as_mut().map(|s| &mut s.columns[slot]) {
            statistics.observe(cell);
        }
        self.builders[slot].append(cell);
    }

    fn end_row(&mut self, seq: u64, deleted: bool) {
        for slot in 0..self.columns.len() {
            if std::mem::take(&mut self.filled[slot]) {
                continue;
            }
            match &self.columns[slot] {
                ScanColumn::Seq => self.append(slot, CellRef::BigInt(crate::seq::seq_as_i64(seq))),
                ScanColumn::Deleted => self.append(slot, CellRef::Boolean(deleted)),
                _ if deleted => self.append(slot, CellRef::Null),
                _ => {
                    let default = std::mem::replace(&mut self.defaults[slot], Value::Null);
                    self.append(slot, CellRef::of(&default));
                    self.defaults[slot] = default;
                }
            }
        }
        if let Some(statistics) = &mut self.statistics {
            statistics.rows += 1;
            statistics.deleted += deleted as u64;
            statistics.min_seq = statistics.min_seq.min(seq);
            statistics.max_seq = statistics.max_seq.max(seq);
        }
        self.rows += 1;
    }

    /// The rows pushed since the last batch as a batch. A stored value the schema
    /// cannot hold (a NULL in a NOT NULL column) is an error, never a panic.
    pub fn finish(&mut self) -> KalamResult<RecordBatch> {
        let arrays = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        let rows = std::mem::take(&mut self.rows);
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| KalamError::internal(format!("stored rows do not fit the schema: {e}")))
    }

    /// The statistics of every row assembled ([`RowAssembler::with_statistics`]).
    pub fn statistics(&self) -> Option<&Statistics> {
        self.statistics.as_ref()
    }

    /// Each table column's and `_id`'s bounds and NULL count, as a manifest keeps them.
    pub fn column_stats(&self) -> Vec<ColumnStats> {
        let Some(statistics) = &self.statistics else {
            return Vec::new();
        };
        (self.columns.iter().zip(&statistics.columns))
            .filter_map(|(column, s)| {
                let s = s.as_ref()?;
                let (id, name, ty) = match column {
                    ScanColumn::Column(def) => (def.id, def.name.clone(), def.data_type),
                    ScanColumn::Id => (ID_COLUMN_ID, ID_COLUMN.to_string(), KalamType::BigInt),
                    ScanColumn::Seq | ScanColumn::Deleted => return None,
                };
                let bound = |v: &Option<Value>| match v {
                    Some(v) if s.valid => Some(v.display()),
                    _ => None,
                };
                Some(ColumnStats {
                    id,
                    name,
                    data_type: ty.sql_name(),
                    min: bound(&s.min),
                    max: bound(&s.max),
                    null_count: s.null_count,
                })
            })
            .collect()
    }
}

impl ColumnStatistics {
    fn observe(&mut self, cell: CellRef<'_>) {
        if matches!(cell, CellRef::Null) {
            self.null_count += 1;
            return;
        }
        if !self.valid {
            return;
        }
        let unordered = match cell {
            CellRef::Text(s) => s.len() > MAX_STAT_TEXT,
            CellRef::Float(f) => f.is_nan(),
            CellRef::Double(f) => f.is_nan(),
            _ => false,
        };
        if unordered {
            self.valid = false;
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
                    None => self.valid = false,
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
