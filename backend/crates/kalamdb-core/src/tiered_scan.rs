//! Planning a scan of a [`ScopedTable`] across both tiers.
//!
//! [`plan_scan`] turns one [`TableSnapshot`] into a [`TieredScanExec`]: the first
//! partitions stream the hot rows (filters applied as rows are read; a full scan
//! split across DataFusion's target partitions by `_seq` slices; point reads of the
//! primary keys a filter names, or the ranges of the pk index or of a secondary
//! index the filters bound, in one partition), the other partitions stream the cold segments
//! through DataFusion's Parquet reader (projection, row-group and page pruning with
//! the pushed-down filters). Segments are first pruned with the manifest's
//! per-column min/max (DataFusion's `PruningPredicate` over [`ManifestStats`]). A
//! cold batch loses its tombstones and the versions a later write superseded (stale
//! markers) — unless the manifest and the markers prove the segment has neither —
//! and is mapped to the table's current columns by column id: a column added after
//! the segment was written reads as its backfill value. No row is read before
//! `execute`.
//!
//! The hot tier holds at most one version per key and only the latest one, and
//! every older version in Parquet carries a stale marker, so the union needs no
//! de-duplication: a row is in exactly one place.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, DFSchema, DataFusionError, Result as DfResult};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use kalamdb_cold::{Manifest, ScopeDir, Segment};
use kalamdb_commons::value::parse_text;
use kalamdb_commons::{KalamType, Value};

use crate::arrow_conv::values_to_array;
use crate::assemble::ScanColumn;
use crate::catalog::{DELETED_COLUMN, ID_COLUMN, ID_COLUMN_ID, SEQ_COLUMN, TableDef};
use crate::scoped::{HotScan, ScopedTable, TableSnapshot};
use crate::segment::{read_schema, segment_schema};

/// Where one output column of a cold part comes from.
#[derive(Clone)]
enum ColdOutput {
    /// A column of the Parquet reader's output.
    Input(usize),
    /// Not in these segments (added later): its backfill value.
    Constant(KalamType, Value),
}

/// The segments of one column layout, read by one `DataSourceExec`.
struct ColdPart {
    exec: Arc<dyn ExecutionPlan>,
    outputs: Vec<ColdOutput>,
    /// Where `_seq` and `_deleted` are, for segments that may hold tombstones or
    /// superseded versions (`None`: the segments are clean, every row is live).
    merge: Option<(usize, usize)>,
    segments: usize,
    /// The storage the segments are read from (named when reading them fails).
    storage: String,
}

/// Plans the scan of one snapshot of a scope: hot rows (streamed, or point reads
/// of `keys`) and, unless `keys` is given, the cold segments.
/// How a scan finds its hot rows: these primary keys (then no cold segment is
/// scanned: point reads cover both tiers), the rows an index names, or (neither)
/// every hot row of the scope.
pub(crate) struct HotLookup {
    pub keys: Option<Vec<Value>>,
    pub index: Option<crate::index::IndexProbe>,
}

pub(crate) fn plan_scan(
    state: &dyn Session,
    scoped: &Arc<ScopedTable>,
    snapshot: TableSnapshot,
    projection: &[usize],
    filters: &[Expr],
    lookup: HotLookup,
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let HotLookup { keys, index } = lookup;
    let schema = scoped.projected_schema(projection)?;
    // The hot scan decodes the projected columns and those the filters name.
    let table_schema = scoped.schema();
    // Volatile filters (`random() < 0.5`) stay with DataFusion alone: applied here
    // too, they would be drawn twice per row.
    let usable: Vec<Expr> = filters
        .iter()
        .filter(|f| {
            !f.is_volatile()
                && f.column_refs()
                    .iter()
                    .all(|c| table_schema.index_of(&c.name).is_ok())
        })
        .cloned()
        .collect();
    let mut read = projection.to_vec();
    for expr in &usable {
        for column in expr.column_refs() {
            let index = table_schema.index_of(&column.name)?;
            if !read.contains(&index) {
                read.push(index);
            }
        }
    }
    let read_schema = Arc::new(table_schema.project(&read)?);
    let hot = HotScan {
        predicate: physical_predicate(state, &read_schema, &usable),
        read,
        output: (0..projection.len()).collect(),
        output_schema: schema.clone(),
        limit,
        index: if keys.is_some() { None } else { index },
        keys,
    };
    let cold = match (&snapshot.manifest, &hot.keys) {
        (Some(manifest), None) => {
            let columns: Vec<&ScanColumn> = projection.iter().map(|&i| &scoped.columns()[i]).collect();
            let scope_dir = (scoped.db().cold.scope_dir(scoped.def(), scoped.scope()))
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            cold_parts(
                state,
                scoped.def(),
                &scope_dir,
                manifest,
                &snapshot.stale,
                &columns,
                filters,
            )?
        }
        _ => Vec::new(),
    };
    let target_partitions = state.config().target_partitions();
    Ok(Arc::new(TieredScanExec::new(
        scoped.clone(),
        snapshot,
        hot,
        cold,
        target_partitions,
    )))
}

/// Builds the cold parts of a scan: prunes the manifest's segments with `filters`,
/// groups them by column layout and plans a Parquet read for each group.
fn cold_parts(
    state: &dyn Session,
    table: &TableDef,
    scope_dir: &ScopeDir,
    manifest: &Manifest,
    stale: &[u64],
    columns: &[&ScanColumn],
    filters: &[Expr],
) -> DfResult<Vec<ColdPart>> {
    let segments = prune_segments(state, table, &manifest.segments, filters);
    let current_ids: HashSet<u32> = table.columns.iter().map(|c| c.id).collect();
    // Segments grouped by column layout and by whether they need the merge.
    let mut groups: BTreeMap<(Vec<u32>, bool), Vec<&Segment>> = BTreeMap::new();
    for segment in segments {
        let ids: Vec<u32> = segment
            .columns
            .iter()
            .map(|c| c.id)
            .filter(|id| *id == ID_COLUMN_ID || current_ids.contains(id))
            .collect();
        groups
            .entry((ids, needs_merge(segment, stale)))
            .or_default()
            .push(segment);
    }
    let target_partitions = state.config().target_partitions().max(1);
    let mut parts = Vec::new();
    for ((ids, merge), segments) in groups {
        parts.push(plan_group(
            state,
            table,
            scope_dir,
            &ids,
            merge,
            &segments,
            columns,
            filters,
            target_partitions,
        )?);
    }
    Ok(parts)
}

/// Whether a segment may hold rows a scan must drop: tombstones (the manifest
/// counts them) or versions a later write superseded (a stale marker within the
/// segment's `_seq` range; `stale` is ascending).
fn needs_merge(segment: &Segment, stale: &[u64]) -> bool {
    if segment.deleted_count > 0 {
        return true;
    }
    let first = stale.partition_point(|&seq| seq < segment.min_seq);
    stale.get(first).is_some_and(|&seq| seq <= segment.max_seq)
}

#[allow(clippy::too_many_arguments)]
fn plan_group(
    state: &dyn Session,
    table: &TableDef,
    scope_dir: &ScopeDir,
    ids: &[u32],
    merge: bool,
    segments: &[&Segment],
    columns: &[&ScanColumn],
    filters: &[Expr],
    target_partitions: usize,
) -> DfResult<ColdPart> {
    // The reader's schema: the current columns these segments have, then the
    // hidden ones.
    let read_schema = read_schema(table, ids);
    let index_of = |name: &str| read_schema.index_of(name).expect("field built above");

    let mut needed: Vec<usize> = Vec::new();
    let mut slot = |index: usize| match needed.iter().position(|&i| i == index) {
        Some(p) => p,
        None => {
            needed.push(index);
            needed.len() - 1
        }
    };
    let mut outputs = Vec::with_capacity(columns.len());
    for column in columns {
        outputs.push(match column {
            ScanColumn::Column(def) if ids.contains(&def.id) => ColdOutput::Input(slot(index_of(&def.name))),
            ScanColumn::Column(def) => ColdOutput::Constant(def.data_type, def.backfill_value()),
            ScanColumn::Seq => ColdOutput::Input(slot(index_of(SEQ_COLUMN))),
            ScanColumn::Deleted => ColdOutput::Input(slot(index_of(DELETED_COLUMN))),
            ScanColumn::Id => ColdOutput::Input(slot(index_of(ID_COLUMN))),
        });
    }
    let merge = merge.then(|| (slot(index_of(SEQ_COLUMN)), slot(index_of(DELETED_COLUMN))));

    let mut source = ParquetSource::new(read_schema.clone());
    if let Some(predicate) = physical_predicate(state, &read_schema, filters) {
        source = source.with_predicate(predicate);
    }
    let files: Vec<PartitionedFile> = segments
        .iter()
        .map(|s| {
            let mut file = PartitionedFile::new(scope_dir.file(&s.file).to_string(), s.size_bytes);
            // DataFusion caches a file's Parquet metadata by path, size and this
            // time: a segment's creation time tells a re-created table's file
            // (same path, maybe the same size) from the one it replaced.
            if let Some(created) = chrono::DateTime::from_timestamp_micros(s.created_at) {
                file.object_meta.last_modified = created;
            }
            file
        })
        .collect();
    let groups = target_partitions.min(files.len()).max(1);
    let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
    for (i, file) in files.into_iter().enumerate() {
        file_groups[i % groups].push(file);
    }
    // The storage's store is registered under its URL (`ColdTier`'s storages are
    // registered as they are opened).
    let store = ObjectStoreUrl::parse(scope_dir.storage.url())?;
    let config = FileScanConfigBuilder::new(store, Arc::new(source))
        .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(Some(needed))?
        .build();
    Ok(ColdPart {
        exec: DataSourceExec::from_data_source(config),
        outputs,
        merge,
        segments: segments.len(),
        storage: scope_dir.storage.name().to_string(),
    })
}

/// The filters that only name columns of `schema` (and are not volatile), as one
/// physical predicate.
fn physical_predicate(
    state: &dyn Session,
    schema: &SchemaRef,
    filters: &[Expr],
) -> Option<Arc<dyn PhysicalExpr>> {
    let usable: Vec<Expr> = filters
        .iter()
        .filter(|f| !f.is_volatile() && f.column_refs().iter().all(|c| schema.index_of(&c.name).is_ok()))
        .cloned()
        .collect();
    let predicate = conjunction(usable)?;
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
    state.create_physical_expr(predicate, &df_schema).ok()
}

/// The segments whose manifest statistics do not rule out `filters`.
fn prune_segments<'a>(
    state: &dyn Session,
    table: &TableDef,
    segments: &'a [Segment],
    filters: &[Expr],
) -> Vec<&'a Segment> {
    // Statistics are kept of the table's columns and `_seq` (see `ManifestStats`).
    let schema = segment_schema(table);
    let keep = physical_predicate(state, &schema, filters)
        .and_then(|predicate| {
            PruningPredicateBuilder::new()
                .with_file_schema(schema)
                .build(predicate)
        })
        .and_then(|pruning| pruning.prune(&ManifestStats { table, segments }).ok());
    match keep {
        Some(keep) => segments
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(s, _)| s)
            .collect(),
        None => segments.iter().collect(),
    }
}

/// The manifest's statistics, one container per segment.
struct ManifestStats<'a> {
    table: &'a TableDef,
    segments: &'a [Segment],
}

impl ManifestStats<'_> {
    fn bounds(&self, column: &Column, min: bool) -> Option<ArrayRef> {
        if column.name == SEQ_COLUMN {
            let values: Vec<Value> = self
                .segments
                .iter()
                .map(|s| Value::BigInt(crate::seq::seq_as_i64(if min { s.min_seq } else { s.max_seq })))
                .collect();
            return Some(values_to_array(&KalamType::BigInt, &values));
        }
        let def = self.table.column(&column.name)?;
        let values: Vec<Value> = self
            .segments
            .iter()
            .map(|s| {
                s.columns
                    .iter()
                    .find(|c| c.id == def.id)
                    .and_then(|c| if min { c.min.as_deref() } else { c.max.as_deref() })
                    .and_then(|text| parse_text(text, &def.data_type).ok())
                    .unwrap_or(Value::Null)
            })
            .collect();
        Some(values_to_array(&def.data_type, &values))
    }
}

impl PruningStatistics for ManifestStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, true)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, false)
    }

    fn num_containers(&self) -> usize {
        self.segments.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        if column.name == SEQ_COLUMN {
            return Some(Arc::new(UInt64Array::from(vec![0u64; self.segments.len()])));
        }
        let def = self.table.column(&column.name)?;
        let counts: Vec<Option<u64>> = self
            .segments
            .iter()
            .map(|s| s.columns.iter().find(|c| c.id == def.id).map(|c| c.null_count))
            .collect();
        Some(Arc::new(UInt64Array::from(counts)))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: Vec<u64> = self.segments.iter().map(|s| s.row_count).collect();
        Some(Arc::new(UInt64Array::from(counts)))
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &HashSet<datafusion::common::ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// Hot row versions of a table (all scopes) from which a full hot scan is split
/// across partitions: below, a second reader costs more than it saves.
const SPLIT_HOT_ROWS: u64 = 4 * crate::scoped::SCAN_BATCH_ROWS as u64;

/// Hot rows ∪ cold parts of one snapshot, as one scan of the table. The first
/// `hot_partitions` partitions stream the hot rows; the others stream the cold
/// parts' partitions.
pub(crate) struct TieredScanExec {
    scoped: Arc<ScopedTable>,
    snapshot: TableSnapshot,
    hot: Arc<HotScan>,
    /// Partitions `0..hot_partitions` read the hot rows.
    hot_partitions: usize,
    cold: Vec<Arc<ColdPart>>,
    /// Partition `hot_partitions + i` → (cold part, its partition).
    partitions: Vec<(usize, usize)>,
    /// The stale markers as a set, when a cold part merges.
    stale: Arc<HashSet<i64>>,
    properties: Arc<PlanProperties>,
}

impl TieredScanExec {
    fn new(
        scoped: Arc<ScopedTable>,
        snapshot: TableSnapshot,
        hot: HotScan,
        cold: Vec<ColdPart>,
        target_partitions: usize,
    ) -> Self {
        // A full hot scan of a large table is read by as many partitions as
        // DataFusion runs; point and index reads, and small tables, by one.
        let large = scoped.db().hot_rows.get(scoped.def().table_id) >= SPLIT_HOT_ROWS;
        let hot_partitions = if hot.keys.is_none() && hot.index.is_none() && large {
            target_partitions.max(1)
        } else {
            1
        };
        let cold: Vec<Arc<ColdPart>> = cold.into_iter().map(Arc::new).collect();
        let mut partitions = Vec::new();
        for (i, part) in cold.iter().enumerate() {
            for p in 0..part.exec.properties().partitioning.partition_count() {
                partitions.push((i, p));
            }
        }
        let stale = if cold.iter().any(|p| p.merge.is_some()) {
            snapshot
                .stale
                .iter()
                .map(|&s| crate::seq::seq_as_i64(s))
                .collect()
        } else {
            HashSet::new()
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(hot.output_schema.clone()),
            Partitioning::UnknownPartitioning(hot_partitions + partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        TieredScanExec {
            scoped,
            snapshot,
            hot: Arc::new(hot),
            hot_partitions,
            cold,
            partitions,
            stale: Arc::new(stale),
            properties,
        }
    }
}

impl fmt::Debug for TieredScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TieredScanExec")
    }
}

impl DisplayAs for TieredScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let segments: usize = self.cold.iter().map(|p| p.segments).sum();
        let merged: usize = self
            .cold
            .iter()
            .filter(|p| p.merge.is_some())
            .map(|p| p.segments)
            .sum();
        match (&self.hot.keys, &self.hot.index) {
            (Some(keys), _) => write!(f, "TieredScanExec: point reads={}", keys.len()),
            (None, Some(probe)) => write!(
                f,
                "TieredScanExec: hot={} ({} range(s)){}, segments={segments} (merged={merged}), stale={}",
                probe.describe(),
                probe.ranges.len(),
                if self.hot.predicate.is_some() {
                    " (filtered)"
                } else {
                    ""
                },
                self.snapshot.stale.len()
            ),
            (None, None) => write!(
                f,
                "TieredScanExec: hot=stream{}, segments={segments} (merged={merged}), stale={}{}",
                if self.hot.predicate.is_some() {
                    " (filtered)"
                } else {
                    ""
                },
                self.snapshot.stale.len(),
                if self.hot_partitions > 1 {
                    format!(", hot partitions={}", self.hot_partitions)
                } else {
                    String::new()
                }
            ),
        }
    }
}

impl ExecutionPlan for TieredScanExec {
    fn name(&self) -> &str {
        "TieredScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal("TieredScanExec has no children".into()))
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition < self.hot_partitions {
            let part = (partition, self.hot_partitions);
            return Ok(self.scoped.hot_stream(&self.snapshot, self.hot.clone(), part));
        }
        let cold_partition = partition - self.hot_partitions;
        let &(part_index, inner) = self.partitions.get(cold_partition).ok_or_else(|| {
            DataFusionError::Internal(format!("TieredScanExec has no partition {partition}"))
        })?;
        let part = self.cold[part_index].clone();
        let stream = part.exec.execute(inner, context)?;
        let schema = self.hot.output_schema.clone();
        let stale = self.stale.clone();
        // The stream holds the manifest it reads: a compaction deletes the files it
        // replaced only once no reader holds their manifest (`ColdTier::retire`).
        let manifest = self.snapshot.manifest.clone();
        let mapped = stream.map(move |batch| {
            let _reading = &manifest;
            let batch = batch.map_err(|e| crate::cold::scan_error(&part.storage, e))?;
            map_cold_batch(batch, &part, &stale, &schema)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.hot.output_schema.clone(),
            mapped,
        )))
    }
}

/// Drops tombstones and superseded versions (of segments that may have them), then
/// lays the batch out as the scan's schema.
fn map_cold_batch(
    batch: RecordBatch,
    part: &ColdPart,
    stale: &HashSet<i64>,
    schema: &SchemaRef,
) -> DfResult<RecordBatch> {
    let batch = match part.merge {
        Some((seq_index, deleted_index)) => {
            let seqs = batch.column(seq_index).as_primitive::<Int64Type>();
            let deleted = batch.column(deleted_index).as_boolean();
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|i| {
                    let tombstone = deleted.is_valid(i) && deleted.value(i);
                    let superseded = stale.contains(&seqs.value(i));
                    Some(!tombstone && !superseded)
                })
                .collect();
            filter_record_batch(&batch, &keep)?
        }
        None => batch,
    };
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = part
        .outputs
        .iter()
        .map(|output| match output {
            ColdOutput::Input(i) => batch.column(*i).clone(),
            ColdOutput::Constant(ty, value) => values_to_array(ty, &vec![value.clone(); rows]),
        })
        .collect();
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};
    use datafusion::prelude::SessionContext;
    use kalamdb_cold::ColumnStats;
    use kalamdb_commons::TableType;

    use super::*;
    use crate::catalog::ColumnDef;

    fn table() -> TableDef {
        let column = |id: u32, name: &str, data_type: KalamType| ColumnDef {
            id,
            name: name.into(),
            data_type,
            nullable: true,
            default: None,
            backfill: None,
            max_chars: None,
            comment: None,
        };
        TableDef {
            table_id: 1,
            namespace: "app".into(),
            name: "t".into(),
            table_type: TableType::User,
            columns: vec![
                column(1, "id", KalamType::BigInt),
                column(2, "name", KalamType::Text),
            ],
            primary_key: Some(1),
            next_column_id: 3,
            flush_policy: None,
            compact_segments: None,
            storage: None,
            ttl_seconds: None,
            access_level: None,
            created_at: 0,
            schema_version: 1,
            indexes: Vec::new(),
            next_index_id: 1,
            comment: None,
        }
    }

    fn segment(batch: u64, ids: (i64, i64), names: (&str, &str), seqs: (u64, u64)) -> Segment {
        let stats = |id: u32, name: &str, data_type: &str, min: String, max: String| ColumnStats {
            id,
            name: name.into(),
            data_type: data_type.into(),
            min: Some(min),
            max: Some(max),
            null_count: 0,
        };
        Segment {
            file: kalamdb_cold::layout::segment_file_name(batch),
            batch,
            job_id: "j".into(),
            row_count: 10,
            deleted_count: 0,
            size_bytes: 100,
            min_seq: seqs.0,
            max_seq: seqs.1,
            watermark: seqs.1,
            created_at: 0,
            columns: vec![
                stats(1, "id", "BIGINT", ids.0.to_string(), ids.1.to_string()),
                stats(2, "name", "TEXT", names.0.into(), names.1.into()),
            ],
        }
    }

    #[test]
    fn manifest_statistics_skip_segments_that_cannot_match() {
        let table = table();
        let segments = vec![
            segment(1, (1, 100), ("a", "m"), (10, 20)),
            segment(2, (101, 200), ("k", "z"), (30, 40)),
        ];
        let ctx = SessionContext::new();
        let state = ctx.state();
        let kept = |filter: Expr| -> Vec<u64> {
            prune_segments(&state, &table, &segments, &[filter])
                .iter()
                .map(|s| s.batch)
                .collect()
        };
        assert_eq!(kept(col("id").eq(lit(150i64))), vec![2]);
        assert_eq!(kept(col("id").lt(lit(50i64))), vec![1]);
        assert_eq!(kept(col("id").gt(lit(500i64))), Vec::<u64>::new());
        assert_eq!(kept(col("name").eq(lit("b"))), vec![1]);
        assert_eq!(kept(col("name").eq(lit("l"))), vec![1, 2]);
        assert_eq!(kept(col(SEQ_COLUMN).gt(lit(25i64))), vec![2]);
        // Filters the statistics cannot judge keep every segment.
        assert_eq!(kept(col("name").like(lit("%x%"))), vec![1, 2]);
        assert_eq!(kept(col("missing").eq(lit(1i64))), vec![1, 2]);
    }
}
