//! DataFusion catalog, schema and table providers over KalamDB tables.
//!
//! A [`KalamCatalog`] is built per statement for one caller: USER tables resolve to
//! that caller's scope, so no plan can name another user's rows. Hidden columns
//! (`_seq`, `_deleted`, `_id`) are in a table's schema only when the statement names
//! them (see `hidden.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_commons::{KalamError, KalamResult, KalamType, Literal, TableType as KalamTableType, Value};
use kalamdb_store::{StoreError, StoreView, row_codec::decode_row};

use crate::arrow_conv::{field, values_to_array};
use crate::catalog::{
    ColumnDef, DELETED_COLUMN, ID_COLUMN, ID_COLUMN_ID, SEQ_COLUMN, SYSTEM_NAMESPACE, TableDef,
};
use crate::system_tables;
use crate::tiered_scan::{TieredScanExec, cold_parts};
use crate::{Caller, DbShared, store_error};

/// Rows per Arrow batch built from hot rows.
const SCAN_BATCH_ROWS: usize = 8192;

/// What a statement may see: whose rows, and whether hidden columns are in schemas.
#[derive(Clone)]
pub(crate) struct ScanScope {
    pub caller: Caller,
    pub expose_hidden: bool,
}

pub(crate) struct KalamCatalog {
    db: Arc<DbShared>,
    scope: ScanScope,
}

impl KalamCatalog {
    pub fn new(db: Arc<DbShared>, scope: ScanScope) -> Self {
        KalamCatalog { db, scope }
    }
}

impl fmt::Debug for KalamCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KalamCatalog")
    }
}

impl CatalogProvider for KalamCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.db.catalog.namespaces().into_iter().map(|n| n.name).collect();
        names.push(SYSTEM_NAMESPACE.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_NAMESPACE {
            return Some(Arc::new(SystemSchema {
                db: self.db.clone(),
                caller: self.scope.caller.clone(),
            }));
        }
        if !self.db.catalog.namespace_exists(name) {
            return None;
        }
        Some(Arc::new(NamespaceSchema {
            db: self.db.clone(),
            namespace: name.to_string(),
            scope: self.scope.clone(),
        }))
    }
}

struct NamespaceSchema {
    db: Arc<DbShared>,
    namespace: String,
    scope: ScanScope,
}

impl fmt::Debug for NamespaceSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamespaceSchema({})", self.namespace)
    }
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn table_names(&self) -> Vec<String> {
        self.db
            .catalog
            .tables_in(&self.namespace)
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.db.catalog.table(&self.namespace, name) else {
            return Ok(None);
        };
        check_read_access(&table, &self.scope.caller).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let scope = match table.table_type {
            KalamTableType::User => self.scope.caller.user_id.as_str().to_string(),
            KalamTableType::Shared | KalamTableType::Stream => String::new(),
        };
        Ok(Some(Arc::new(KalamTable::new(
            self.db.clone(),
            table,
            scope,
            self.scope.expose_hidden,
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.catalog.table(&self.namespace, name).is_some()
    }
}

struct SystemSchema {
    db: Arc<DbShared>,
    caller: Caller,
}

impl fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemSchema")
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        system_tables::NAMES.iter().map(|n| n.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(batch) = system_tables::build(&self.db, &self.caller, name)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        system_tables::NAMES.contains(&name)
    }
}

/// One column of a [`KalamTable`]'s schema and where its values come from.
#[derive(Clone)]
pub(crate) enum ScanColumn {
    Column(ColumnDef),
    Seq,
    Deleted,
    Id,
}

impl ScanColumn {
    fn kalam_type(&self) -> KalamType {
        match self {
            ScanColumn::Column(c) => c.data_type,
            ScanColumn::Seq | ScanColumn::Id => KalamType::BigInt,
            ScanColumn::Deleted => KalamType::Boolean,
        }
    }
}

/// A USER or SHARED table seen by one scope: its hot rows (latest version per key,
/// tombstones dropped) and, for USER tables, its cold Parquet segments
/// (`tiered_scan.rs`).
#[derive(Clone)]
pub(crate) struct KalamTable {
    db: Arc<DbShared>,
    table: Arc<TableDef>,
    scope: String,
    columns: Vec<ScanColumn>,
    schema: SchemaRef,
}

impl fmt::Debug for KalamTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KalamTable({})", self.table.qualified_name())
    }
}

impl KalamTable {
    pub fn new(db: Arc<DbShared>, table: Arc<TableDef>, scope: String, expose_hidden: bool) -> Self {
        let mut columns: Vec<ScanColumn> = table.columns.iter().cloned().map(ScanColumn::Column).collect();
        if expose_hidden {
            columns.push(ScanColumn::Seq);
            columns.push(ScanColumn::Deleted);
            if table.primary_key.is_none() {
                columns.push(ScanColumn::Id);
            }
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| match c {
                ScanColumn::Column(def) => field(&def.name, &def.data_type, def.nullable),
                ScanColumn::Seq => Field::new(SEQ_COLUMN, DataType::Int64, false),
                ScanColumn::Deleted => Field::new(DELETED_COLUMN, DataType::Boolean, false),
                ScanColumn::Id => Field::new(ID_COLUMN, DataType::Int64, false),
            })
            .collect();
        KalamTable {
            db,
            table,
            scope,
            columns,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// The pk value of a `pk = literal` filter, when `expr` is one.
    fn pk_equality(&self, expr: &Expr) -> Option<Value> {
        let pk = self.table.pk_column()?;
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = expr
        else {
            return None;
        };
        let (column, literal) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
            _ => return None,
        };
        if column.name != pk.name {
            return None;
        }
        scalar_to_literal(literal)?.to_value(&pk.data_type).ok()
    }

    /// The projected live rows of the scope's hot tier (`pk`: of that key only, in
    /// either tier), all read from `view`. Call with the cold tier's commit lock held
    /// for reading, `view` taken under it.
    fn read_rows(
        &self,
        view: &StoreView<'_>,
        projection: &[usize],
        pk: Option<&Value>,
        limit: Option<usize>,
    ) -> KalamResult<Vec<RecordBatch>> {
        let projected: Vec<&ScanColumn> = projection.iter().map(|&i| &self.columns[i]).collect();
        let slot_of: HashMap<u32, usize> = projected
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| match c {
                ScanColumn::Column(def) => Some((def.id, slot)),
                ScanColumn::Id => Some((ID_COLUMN_ID, slot)),
                _ => None,
            })
            .collect();
        let mut builder = BatchBuilder::new(&projected);
        let mut batches = Vec::new();
        let limit = limit.unwrap_or(usize::MAX);
        let mut emitted = 0usize;
        let schema = self
            .projected_schema(projection)
            .map_err(|e| KalamError::internal(e.to_string()))?;
        let mut failure = None;
        let mut visit = |seq: u64, bytes: &[u8]| -> Result<bool, StoreError> {
            let row = decode_row(bytes)?;
            if row.deleted {
                return Ok(true);
            }
            builder.push_row(seq, row.cells, &slot_of);
            emitted += 1;
            if builder.rows == SCAN_BATCH_ROWS {
                match builder.finish(schema.clone()) {
                    Ok(batch) => batches.push(batch),
                    Err(e) => {
                        failure = Some(e);
                        return Ok(false);
                    }
                }
            }
            Ok(emitted < limit)
        };
        match pk {
            Some(pk) => {
                if let Some(entry) = view
                    .pk_get(self.table.table_id, &self.scope, pk)
                    .map_err(store_error)?
                    && !entry.deleted
                {
                    let row = crate::cold::read_version(&self.db, view, &self.table, &self.scope, entry.seq)?;
                    if let Some(row) = row
                        && !row.deleted
                    {
                        builder.push_row(entry.seq, row.cells, &slot_of);
                    }
                }
            }
            None => view
                .hot_scan(self.table.table_id, Some(&self.scope), |row| {
                    visit(row.seq, &row.value)
                })
                .map_err(store_error)?,
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if builder.rows > 0 || batches.is_empty() {
            batches.push(builder.finish(schema)?);
        }
        Ok(batches)
    }

    /// What a scan reads of the hot tier, from one view of both tiers: a flush
    /// cannot commit between reading the manifest, the hot rows and the stale
    /// markers (the commit lock), and a write cannot land between reading the hot
    /// rows and the stale markers (one snapshot). Blocking.
    fn read_view(
        &self,
        projection: &[usize],
        pk: Option<Value>,
        limit: Option<usize>,
    ) -> KalamResult<TierView> {
        let _tiers = self.db.cold.commit_lock.read_recursive();
        let view = self.db.store.view();
        if let Some(pk) = pk {
            return Ok(TierView::Pk(self.read_rows(
                &view,
                projection,
                Some(&pk),
                limit,
            )?));
        }
        let manifest = match self.table.table_type {
            KalamTableType::User => Some(self.db.cold.manifest(&self.table, &self.scope)?),
            _ => None,
        }
        .filter(|m| !m.segments.is_empty());
        let hot_limit = if manifest.is_some() { None } else { limit };
        let hot = self.read_rows(&view, projection, None, hot_limit)?;
        let stale = match &manifest {
            Some(_) => view
                .stale_seqs(self.table.table_id, &self.scope)
                .map_err(store_error)?,
            None => Vec::new(),
        };
        Ok(TierView::Tiers { hot, manifest, stale })
    }

    fn projected_schema(&self, projection: &[usize]) -> DfResult<SchemaRef> {
        Ok(Arc::new(self.schema.project(projection)?))
    }
}

/// What [`KalamTable::read_view`] read: the row of a primary key (either tier), or
/// the hot rows with the manifest and stale markers of the same moment.
enum TierView {
    Pk(Vec<RecordBatch>),
    Tiers {
        hot: Vec<RecordBatch>,
        manifest: Option<Arc<kalamdb_cold::Manifest>>,
        stale: Vec<u64>,
    },
}

/// Accumulates projected values of hot rows and turns them into a batch.
struct BatchBuilder<'a> {
    columns: &'a [&'a ScanColumn],
    values: Vec<Vec<Value>>,
    rows: usize,
}

impl<'a> BatchBuilder<'a> {
    fn new(columns: &'a [&'a ScanColumn]) -> Self {
        BatchBuilder {
            columns,
            values: vec![Vec::new(); columns.len()],
            rows: 0,
        }
    }

    fn push_row(&mut self, seq: u64, cells: Vec<(u32, Value)>, slot_of: &HashMap<u32, usize>) {
        let mut row: Vec<Option<Value>> = vec![None; self.columns.len()];
        for (id, value) in cells {
            if let Some(&slot) = slot_of.get(&id) {
                row[slot] = Some(value);
            }
        }
        for (slot, (column, value)) in self.columns.iter().zip(row).enumerate() {
            let value = match (column, value) {
                (_, Some(v)) => v,
                (ScanColumn::Seq, None) => Value::BigInt(crate::seq_as_i64(seq)),
                (ScanColumn::Deleted, None) => Value::Boolean(false),
                (ScanColumn::Column(def), None) => backfill_value(def),
                (ScanColumn::Id, None) => Value::Null,
            };
            self.values[slot].push(value);
        }
        self.rows += 1;
    }

    /// The rows pushed so far as a batch. A stored value the schema cannot hold
    /// (a NULL in a NOT NULL column) is an error, never a panic.
    fn finish(&mut self, schema: SchemaRef) -> KalamResult<RecordBatch> {
        let arrays = self
            .columns
            .iter()
            .zip(self.values.iter_mut())
            .map(|(column, values)| {
                let array = values_to_array(&column.kalam_type(), values);
                values.clear();
                array
            })
            .collect();
        let rows = std::mem::take(&mut self.rows);
        RecordBatch::try_new_with_options(
            schema,
            arrays,
            &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| KalamError::internal(format!("stored rows do not fit the table's schema: {e}")))
    }
}

/// Role `user` reads SHARED tables only when they are `ACCESS_LEVEL = 'PUBLIC'`
/// (the default is PRIVATE); USER tables are always readable (the caller's rows).
pub(crate) fn check_read_access(table: &TableDef, caller: &Caller) -> KalamResult<()> {
    let private = table.table_type == KalamTableType::Shared
        && table.access_level != Some(crate::catalog::AccessLevel::Public);
    if private && caller.role < kalamdb_commons::Role::Service {
        return Err(KalamError::new(
            kalamdb_commons::ErrorCode::PermissionDenied,
            format!(
                "'{}' is a PRIVATE shared table: role '{}' may not read it (ACCESS_LEVEL = 'PUBLIC' opens it to every user)",
                table.qualified_name(),
                caller.role.as_str()
            ),
        ));
    }
    Ok(())
}

/// What a row written before `column` existed reads as.
pub(crate) fn backfill_value(column: &ColumnDef) -> Value {
    column
        .backfill
        .as_ref()
        .and_then(|literal| literal.to_value(&column.data_type).ok())
        .unwrap_or(Value::Null)
}

/// A DataFusion literal as a KalamDB literal (for pk lookups and parameters).
pub(crate) fn scalar_to_literal(value: &ScalarValue) -> Option<Literal> {
    if value.is_null() {
        return Some(Literal::Null);
    }
    Some(match value {
        ScalarValue::Boolean(Some(b)) => Literal::Boolean(*b),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_)
        | ScalarValue::Decimal128(_, _, _) => Literal::Number(value.to_string()),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Literal::String(s.clone())
        }
        _ => return None,
    })
}

#[async_trait]
impl TableProvider for KalamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // USER tables use every filter to prune cold segments (manifest statistics,
        // Parquet row groups and pages); DataFusion still applies them afterwards.
        let cold_capable = self.table.table_type == KalamTableType::User;
        Ok(filters
            .iter()
            .map(|f| match self.pk_equality(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None if cold_capable => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.columns.len()).collect(),
        };
        let schema = self.projected_schema(&projection)?;
        let external = |e: KalamError| DataFusionError::External(Box::new(e));
        // RocksDB and manifest reads run on tokio's blocking pool, not on the async
        // workers that serve requests.
        let this = self.clone();
        let pk = filters.iter().find_map(|f| self.pk_equality(f));
        let read_projection = projection.clone();
        let view = tokio::task::spawn_blocking(move || this.read_view(&read_projection, pk, limit))
            .await
            .map_err(|e| {
                DataFusionError::External(Box::new(KalamError::internal(format!("scan task failed: {e}"))))
            })?
            .map_err(external)?;
        let (hot, manifest, stale) = match view {
            TierView::Pk(batches) => return Ok(MemorySourceConfig::try_new_exec(&[batches], schema, None)?),
            TierView::Tiers { hot, manifest, stale } => (hot, manifest, stale),
        };
        let Some(manifest) = manifest else {
            return Ok(MemorySourceConfig::try_new_exec(&[hot], schema, None)?);
        };
        let columns: Vec<&ScanColumn> = projection.iter().map(|&i| &self.columns[i]).collect();
        let scope_dir = self.db.cold.scope_dir(&self.table, &self.scope);
        let parts = cold_parts(state, &self.table, &scope_dir, &manifest, &columns, filters)?;
        Ok(Arc::new(TieredScanExec::new(
            schema,
            hot,
            parts,
            stale.into_iter().map(crate::seq_as_i64).collect(),
        )))
    }
}
