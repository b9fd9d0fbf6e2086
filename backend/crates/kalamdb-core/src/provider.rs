//! DataFusion catalog, schema and table providers over KalamDB tables.
//!
//! A [`KalamCatalog`] is built per statement for one caller: USER tables resolve to
//! that caller's scope, so no plan can name another user's rows. Hidden columns
//! (`_seq`, `_deleted`, `_id`) are in a table's schema only when the statement names
//! them (see `kalamdb_sql::hidden`).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::{Between, InList};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use std::cmp::Ordering;
use std::ops::Bound;

use kalamdb_commons::{KalamError, KalamType, Literal, Value};

use crate::access::Caller;
use crate::access::{Action, require};
use crate::catalog::SYSTEM_NAMESPACE;
use crate::index::{FirstColumn, IndexProbe};
use crate::scoped::ScopedTable;
use crate::system_tables::SystemTables;
use crate::tiers::Tiers;

/// What a statement may see: whose rows, and whether hidden columns are in schemas.
#[derive(Clone)]
pub(crate) struct ScanScope {
    pub caller: Caller,
    pub expose_hidden: bool,
}

pub(crate) struct KalamCatalog {
    db: Arc<Tiers>,
    system_tables: Arc<SystemTables>,
    scope: ScanScope,
}

impl KalamCatalog {
    pub fn new(db: Arc<Tiers>, system_tables: Arc<SystemTables>, scope: ScanScope) -> Self {
        KalamCatalog {
            db,
            system_tables,
            scope,
        }
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
                tables: self.system_tables.clone(),
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
    db: Arc<Tiers>,
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
        require(&self.scope.caller, Action::Read(&table))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(Arc::new(KalamTable::new(ScopedTable::new(
            self.db.clone(),
            table,
            &self.scope.caller,
            self.scope.expose_hidden,
        )))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.catalog.table(&self.namespace, name).is_some()
    }
}

struct SystemSchema {
    db: Arc<Tiers>,
    tables: Arc<SystemTables>,
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
        self.tables.names().map(str::to_string).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(batch) = self.tables.build(&self.db, &self.caller, name)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains(name)
    }
}

/// A USER or SHARED table seen by one scope, as a DataFusion table: plans scans of
/// a [`ScopedTable`] (hot rows streamed from a snapshot, cold Parquet segments for
/// USER tables, `pk = v` / `pk IN (...)` as point reads in either tier).
#[derive(Clone)]
pub(crate) struct KalamTable {
    scoped: Arc<ScopedTable>,
}

impl fmt::Debug for KalamTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KalamTable({})", self.scoped.def().qualified_name())
    }
}

/// Longest `pk IN (...)` list read as point reads rather than by a scan.
const MAX_POINT_KEYS: usize = 64;

impl KalamTable {
    pub fn new(scoped: ScopedTable) -> Self {
        KalamTable {
            scoped: Arc::new(scoped),
        }
    }

    /// The pk values of a `pk = literal` or `pk IN (literals)` filter, when `expr`
    /// is one.
    fn pk_keys(&self, expr: &Expr) -> Option<Vec<Value>> {
        let pk = self.scoped.def().pk_column()?;
        let is_pk = |e: &Expr| matches!(e, Expr::Column(c) if c.name == pk.name);
        let value = |e: &Expr| match e {
            Expr::Literal(v, _) => scalar_to_literal(v)?.to_value(&pk.data_type).ok(),
            _ => None,
        };
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => {
                if is_pk(left) {
                    Some(vec![value(right)?])
                } else if is_pk(right) {
                    Some(vec![value(left)?])
                } else {
                    None
                }
            }
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) if is_pk(expr) && list.len() <= MAX_POINT_KEYS => {
                let mut keys: Vec<Value> = Vec::with_capacity(list.len());
                for key in list.iter().map(value) {
                    let key = key?;
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                Some(keys)
            }
            _ => None,
        }
    }
}

impl KalamTable {
    /// The key ranges to read instead of every hot row: of a secondary index whose
    /// first column the filters restrict (`=`, `IN`, comparisons, `BETWEEN` with
    /// literals), or of the primary key. Equality on an index is preferred to a
    /// primary-key range, and that to a range of an index.
    fn index_probe(&self, filters: &[Expr]) -> Option<IndexProbe> {
        let table = self.scoped.def();
        let mut best: Option<(bool, IndexProbe)> = table.pk_column().and_then(|pk| {
            let condition = first_column_condition(&pk.name, &pk.data_type, filters)?;
            let exact = matches!(condition, FirstColumn::Values(_));
            Some((
                exact,
                crate::index::pk_probe(table, self.scoped.scope(), &condition),
            ))
        });
        for index in &table.indexes {
            let column = table
                .columns
                .iter()
                .find(|c| Some(&c.id) == index.columns.first())?;
            let Some(condition) = first_column_condition(&column.name, &column.data_type, filters) else {
                continue;
            };
            let exact = matches!(condition, FirstColumn::Values(_));
            if best.as_ref().is_none_or(|(best_exact, _)| exact && !best_exact) {
                let probe = crate::index::probe(table, index, self.scoped.scope(), &condition);
                best = Some((exact, probe));
            }
        }
        best.map(|(_, probe)| probe)
    }
}

/// A value's index encoding, whose byte order is the value order.
fn ordered(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    kalamdb_store::index_key::encode_ordered(value, &mut out);
    out
}

/// `candidate` when it bounds more tightly than `current`: when `current`'s value
/// compares to `candidate`'s as `wins` (`Less` for lower bounds, `Greater` for upper).
/// (Of equal values either is kept: the filter itself is applied to the rows.)
fn tighter(current: Bound<Value>, candidate: Bound<Value>, wins: Ordering) -> Bound<Value> {
    match (&current, &candidate) {
        (Bound::Unbounded, _) => candidate,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b))
            if ordered(a).cmp(&ordered(b)) == wins =>
        {
            candidate
        }
        _ => current,
    }
}

/// What the conjunction `filters` says of column `name` that an index can answer.
fn first_column_condition(name: &str, ty: &KalamType, filters: &[Expr]) -> Option<FirstColumn> {
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == name);
    let value = |e: &Expr| match e {
        Expr::Literal(v, _) if !v.is_null() => scalar_to_literal(v)?.to_value(ty).ok(),
        _ => None,
    };
    let mut values: Option<Vec<Value>> = None;
    let (mut lower, mut upper): (Bound<Value>, Bound<Value>) = (Bound::Unbounded, Bound::Unbounded);
    // `col = a OR col = b` (DataFusion's form of a short IN list): the values.
    fn disjuncts<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => {
                disjuncts(left, out);
                disjuncts(right, out);
            }
            other => out.push(other),
        }
    }
    let equality = |e: &Expr| match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) if is_column(left) => value(right),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) if is_column(right) => value(left),
        _ => None,
    };
    for filter in filters {
        match filter {
            Expr::BinaryExpr(BinaryExpr { op: Operator::Or, .. }) if values.is_none() => {
                let mut alternatives = Vec::new();
                disjuncts(filter, &mut alternatives);
                let listed: Option<Vec<Value>> = alternatives.into_iter().map(equality).collect();
                if let Some(mut listed) = listed {
                    listed.dedup();
                    values = Some(listed);
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, v) = if is_column(left) {
                    (*op, value(right))
                } else if is_column(right) {
                    let flipped = match op {
                        Operator::Lt => Operator::Gt,
                        Operator::LtEq => Operator::GtEq,
                        Operator::Gt => Operator::Lt,
                        Operator::GtEq => Operator::LtEq,
                        other => *other,
                    };
                    (flipped, value(left))
                } else {
                    continue;
                };
                let Some(v) = v else { continue };
                match op {
                    Operator::Eq => values = Some(vec![v]),
                    Operator::Gt => lower = tighter(lower, Bound::Excluded(v), Ordering::Less),
                    Operator::GtEq => lower = tighter(lower, Bound::Included(v), Ordering::Less),
                    Operator::Lt => upper = tighter(upper, Bound::Excluded(v), Ordering::Greater),
                    Operator::LtEq => upper = tighter(upper, Bound::Included(v), Ordering::Greater),
                    _ => {}
                }
            }
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) if is_column(expr) && values.is_none() => {
                let listed: Option<Vec<Value>> = list.iter().map(value).collect();
                if let Some(mut listed) = listed {
                    listed.dedup();
                    values = Some(listed);
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_column(expr) => {
                if let (Some(lo), Some(hi)) = (value(low), value(high)) {
                    lower = tighter(lower, Bound::Included(lo), Ordering::Less);
                    upper = tighter(upper, Bound::Included(hi), Ordering::Greater);
                }
            }
            _ => {}
        }
    }
    if let Some(values) = values {
        return Some(FirstColumn::Values(values));
    }
    if matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
        return None;
    }
    Some(FirstColumn::Range(lower, upper))
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
        self.scoped.schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Every filter is applied inside the scan (hot rows as they are read, cold
        // segments by manifest statistics and Parquet's row groups and pages);
        // DataFusion applies them once more afterwards.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
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
            None => (0..self.scoped.columns().len()).collect(),
        };
        let keys = filters.iter().find_map(|f| self.pk_keys(f));
        let index = if keys.is_none() {
            self.index_probe(filters)
        } else {
            None
        };
        // A snapshot reads RocksDB and maybe a manifest file: on tokio's blocking
        // pool, not on the async workers that serve requests. No rows are read here.
        let scoped = self.scoped.clone();
        let snapshot = tokio::task::spawn_blocking(move || scoped.snapshot())
            .await
            .map_err(|e| {
                DataFusionError::External(Box::new(KalamError::internal(format!("scan task failed: {e}"))))
            })?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let lookup = crate::tiered_scan::HotLookup { keys, index };
        crate::tiered_scan::plan_scan(state, &self.scoped, snapshot, &projection, filters, lookup, limit)
    }
}
