//! Point reads without a query planner: `SELECT <columns | *> FROM t WHERE pk = v`
//! and `... WHERE pk IN (v1, v2, ...)`; the same with an indexed column in place of
//! the primary key on a SHARED table (never flushed: the index names every row).
//!
//! Such a statement needs no plan: its rows are the primary keys' rows in either
//! tier. Recognising its shape on the syntax tree and reading the keys directly
//! skips DataFusion's session and planning pass, which cost about a millisecond a
//! statement — a hundred times the reads themselves. Anything that is not exactly
//! this shape (joins, expressions, hidden columns, ORDER BY, a literal whose type
//! differs from the key's...) returns `None` and takes the general path, which
//! answers the same rows.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{
    self, Expr, GroupByExpr, Query, Select, SelectItem, SetExpr, Statement, TableFactor,
};
use kalamdb_commons::hidden::is_hidden;
use kalamdb_commons::{KalamError, KalamResult, KalamType, Literal, TableType, Value};

use crate::access::Caller;
use crate::catalog::SYSTEM_NAMESPACE;
use crate::index::IndexProbe;
use crate::query::QueryEngine;
use crate::query::{QueryOutput, resolve_name};
use crate::scoped::ScopedTable;

/// Longest `IN` list read this way.
const MAX_KEYS: usize = 64;

/// Answers `statement` if it is a point read; `None` when it takes the general path.
pub(crate) async fn try_point_read(
    db: &Arc<QueryEngine>,
    caller: &Caller,
    namespace: &str,
    statement: &Statement,
    params: &[Literal],
) -> Option<KalamResult<QueryOutput>> {
    let plan = PointRead::recognize(db, caller, namespace, statement, params)?;
    db.point_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(plan.run().await)
}

struct PointRead {
    scoped: Arc<ScopedTable>,
    /// `(table column index, output name)`.
    output: Vec<(usize, String)>,
    lookup: Lookup,
}

enum Lookup {
    /// Primary keys, read in either tier.
    Keys(Vec<Value>),
    /// Hot rows an index names (SHARED tables only: they have no cold tier).
    Index(IndexProbe),
}

impl PointRead {
    fn recognize(
        db: &Arc<QueryEngine>,
        caller: &Caller,
        namespace: &str,
        statement: &Statement,
        params: &[Literal],
    ) -> Option<PointRead> {
        let Statement::Query(query) = statement else {
            return None;
        };
        let select = plain_select(query)?;
        let [from] = select.from.as_slice() else {
            return None;
        };
        if !from.joins.is_empty() {
            return None;
        }
        let TableFactor::Table {
            name,
            alias: None,
            args: None,
            with_hints,
            version: None,
            partitions,
            with_ordinality: false,
            json_path: None,
            sample: None,
            index_hints,
        } = &from.relation
        else {
            return None;
        };
        if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
            return None;
        }
        let (ns, table_name) = resolve_name(namespace, name)?;
        if ns == SYSTEM_NAMESPACE {
            return None;
        }
        let table = db.catalog.table(&ns, &table_name)?;
        if table.table_type == TableType::Stream
            || !crate::access::allows(caller, crate::access::Action::Read(&table))
        {
            return None;
        }
        let mut output = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(options) if is_plain_wildcard(options) => {
                    output.extend(table.columns.iter().enumerate().map(|(i, c)| (i, c.name.clone())));
                }
                SelectItem::UnnamedExpr(Expr::Identifier(ident)) => {
                    let name = kalamdb_sql::ident_name(ident);
                    output.push((column_index(&table.columns, &name)?, name));
                }
                SelectItem::ExprWithAlias {
                    expr: Expr::Identifier(ident),
                    alias,
                } => {
                    let name = kalamdb_sql::ident_name(ident);
                    output.push((
                        column_index(&table.columns, &name)?,
                        kalamdb_sql::ident_name(alias),
                    ));
                }
                _ => return None,
            }
        }
        // Repeated output names are the planner's to refuse.
        let mut names: Vec<&str> = output.iter().map(|(_, name)| name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return None;
        }
        let selection = select.selection.as_ref()?;
        let keys = table
            .pk_column()
            .filter(|pk| plain_key_type(&pk.data_type))
            .and_then(|pk| key_values(selection, &pk.name, &pk.data_type, params));
        let scoped = ScopedTable::new(db.tiers.clone(), table.clone(), caller, false);
        let lookup = match keys {
            Some(keys) => Lookup::Keys(keys),
            None => {
                // `indexed = v` / `indexed IN (...)` on a SHARED table: never flushed,
                // so the index holds every row. (A USER table's scope may gain
                // Parquet segments between this check and the read: general path.)
                if table.table_type != TableType::Shared {
                    return None;
                }
                // A transaction's own rows are not in the index: general path.
                if scoped.has_own_writes() {
                    return None;
                }
                let probe = table.indexes.iter().find_map(|index| {
                    let column = table
                        .columns
                        .iter()
                        .find(|c| Some(&c.id) == index.columns.first())?;
                    if !plain_key_type(&column.data_type) {
                        return None;
                    }
                    let values = key_values(selection, &column.name, &column.data_type, params)?;
                    Some(crate::index::probe(
                        &table,
                        index,
                        scoped.scope(),
                        &crate::index::FirstColumn::Values(values),
                    ))
                })?;
                Lookup::Index(probe)
            }
        };
        Some(PointRead {
            scoped: Arc::new(scoped),
            output,
            lookup,
        })
    }

    async fn run(self) -> KalamResult<QueryOutput> {
        let projection: Vec<usize> = self.output.iter().map(|(i, _)| *i).collect();
        let scoped = self.scoped.clone();
        let lookup = self.lookup;
        // Hot rows are RocksDB gets (microseconds) read in place; a scope with
        // Parquet segments may need a segment read: on the blocking pool.
        let read = move || {
            let crate::scoped::Moment { view, manifest, own } = scoped.moment()?;
            match &lookup {
                Lookup::Keys(keys) => {
                    scoped.rows_by_pk(&view, manifest.as_deref(), own.as_deref(), keys, &projection)
                }
                Lookup::Index(probe) => scoped.rows_by_index(&view, probe, &projection),
            }
        };
        let batch = if self.scoped.def().table_type == TableType::User && self.scoped.has_cold_rows()? {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| KalamError::internal(format!("point read failed: {e}")))??
        } else {
            read()?
        };
        // The columns under the names the statement wrote (when they differ from
        // the table's).
        let renamed =
            (self.output.iter().zip(batch.schema().fields())).any(|((_, name), f)| f.name() != name);
        let batch = if renamed {
            let fields: Vec<Field> = (self.output.iter().zip(batch.schema().fields()))
                .map(|((_, name), field)| field.as_ref().clone().with_name(name))
                .collect();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec())
                .map_err(|e| KalamError::internal(format!("point read result: {e}")))?
        } else {
            batch
        };
        let schema = batch.schema();
        Ok(QueryOutput {
            schema,
            batches: vec![batch],
        })
    }
}

/// The SELECT of a query that has nothing but one SELECT (no WITH, ORDER BY,
/// LIMIT, DISTINCT, GROUP BY, ...).
fn plain_select(query: &Query) -> Option<&Select> {
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || !query.locks.is_empty()
        || query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain = select.distinct.is_none()
        && select.top.is_none()
        && select.into.is_none()
        && select.lateral_views.is_empty()
        && select.prewhere.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty()
        && select.having.is_none()
        && select.named_window.is_empty()
        && select.qualify.is_none()
        && select.connect_by.is_empty();
    plain.then_some(select.as_ref())
}

fn is_plain_wildcard(options: &ast::WildcardAdditionalOptions) -> bool {
    options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
}

/// The index of a (visible) column; hidden columns take the general path.
fn column_index(columns: &[crate::catalog::ColumnDef], name: &str) -> Option<usize> {
    if is_hidden(name) {
        return None;
    }
    columns.iter().position(|c| c.name == name)
}

/// Key types whose literals are read here (others take the general path).
fn plain_key_type(ty: &KalamType) -> bool {
    matches!(
        ty,
        KalamType::SmallInt | KalamType::Int | KalamType::BigInt | KalamType::Text
    )
}

/// The keys of `pk = v`, `v = pk` or `pk IN (v, ...)`, each of the key's type.
fn key_values(selection: &Expr, pk: &str, ty: &KalamType, params: &[Literal]) -> Option<Vec<Value>> {
    let is_pk = |e: &Expr| matches!(e, Expr::Identifier(ident) if kalamdb_sql::ident_name(ident) == pk);
    let key = |e: &Expr| key_value(e, ty, params);
    match selection {
        Expr::Nested(inner) => key_values(inner, pk, ty, params),
        Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Eq,
            right,
        } => {
            if is_pk(left) {
                Some(vec![key(right)?])
            } else if is_pk(right) {
                Some(vec![key(left)?])
            } else {
                None
            }
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if is_pk(expr) && !list.is_empty() && list.len() <= MAX_KEYS => {
            let mut keys: Vec<Value> = Vec::with_capacity(list.len());
            for item in list {
                let value = key(item)?;
                if !keys.contains(&value) {
                    keys.push(value);
                }
            }
            Some(keys)
        }
        _ => None,
    }
}

/// A literal or parameter as a key: integers for integer keys, strings for text
/// keys. Any other pairing (which SQL would coerce) takes the general path.
fn key_value(expr: &Expr, ty: &KalamType, params: &[Literal]) -> Option<Value> {
    let Expr::Value(v) = expr else {
        return None;
    };
    let literal = match &v.value {
        ast::Value::Number(n, false) => Literal::Number(n.clone()),
        ast::Value::SingleQuotedString(s) => Literal::String(s.clone()),
        ast::Value::Placeholder(name) => {
            let index: usize = name.strip_prefix('$')?.parse().ok()?;
            params.get(index.checked_sub(1)?)?.clone()
        }
        _ => return None,
    };
    match (&literal, ty) {
        (Literal::Number(n), KalamType::SmallInt | KalamType::Int | KalamType::BigInt) => {
            n.bytes().all(|b| b.is_ascii_digit() || b == b'-').then_some(())?;
            literal.to_value(ty).ok()
        }
        (Literal::String(_), KalamType::Text) => literal.to_value(ty).ok(),
        _ => None,
    }
}
