//! A subscription's SQL, compiled once: the table and the caller's scope of it, the
//! WHERE as a DataFusion expression over one stored row (logical, for the initial
//! scan's pushdown; physical, for every change), and the columns its rows carry.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ExprWithAlias, GroupByExpr, SelectItem, SetExpr, Statement, TableFactor,
};
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use kalamdb_sql::{KalamStatement, parse_statement};

use super::SubscribeOptions;
use crate::access::Caller;
use crate::access::{Action, require};
use crate::base::df_error;
use crate::catalog::{DEFAULT_NAMESPACE, ID_COLUMN, SEQ_COLUMN, SYSTEM_NAMESPACE, TableDef};
use crate::provider::ScanScope;
use crate::query::QueryEngine;
use crate::scoped::ScopedTable;

/// What a change is checked against and how its rows are written.
pub(crate) struct LivePlan {
    /// The WHERE over the table's schema with hidden columns (`None`: every row).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub logical_filter: Option<Expr>,
    /// Columns (into that schema) of the rows sent: the selected ones, then `_seq`
    /// (and `_id` for a table without a primary key).
    pub output: Vec<usize>,
    pub fields: Vec<FieldRef>,
    pub int64_as_string: bool,
    /// Whether the filter may cost more than the rows it reads ([`cheap_filter`]):
    /// it is then evaluated off the table's dispatcher, on the blocking pool, under
    /// the subscription's own time budget (`feed.rs`).
    pub costly: bool,
}

pub(crate) struct Compiled {
    pub table: Arc<TableDef>,
    pub scoped: Arc<ScopedTable>,
    pub plan: LivePlan,
}

fn unsupported(what: &str) -> KalamError {
    KalamError::unsupported(format!(
        "a live query is one SELECT of columns (or *) from one table with an optional WHERE; {what} is not supported"
    ))
}

pub(crate) fn compile(
    db: &Arc<QueryEngine>,
    caller: &Caller,
    sql: &str,
    options: &SubscribeOptions,
) -> KalamResult<Compiled> {
    let statement = match parse_statement(sql)? {
        KalamStatement::Query(statement) => *statement,
        _ => return Err(unsupported("a statement other than SELECT")),
    };
    let Statement::Query(query) = statement else {
        return Err(unsupported("EXPLAIN"));
    };
    if query.with.is_some() {
        return Err(unsupported("WITH"));
    }
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(unsupported("ORDER BY / LIMIT (use the last_rows option)"));
    }
    let SetExpr::Select(select) = *query.body else {
        return Err(unsupported("a set operation or VALUES"));
    };
    if select.distinct.is_some() || select.top.is_some() || select.into.is_some() {
        return Err(unsupported("DISTINCT / TOP / INTO"));
    }
    if !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
        || select.having.is_some()
        || select.qualify.is_some()
        || !select.named_window.is_empty()
    {
        return Err(unsupported("GROUP BY / HAVING / QUALIFY / WINDOW"));
    }
    let [from] = select.from.as_slice() else {
        return Err(unsupported("a FROM without exactly one table"));
    };
    if !from.joins.is_empty() {
        return Err(unsupported("JOIN"));
    }
    let TableFactor::Table {
        name, alias, args, ..
    } = &from.relation
    else {
        return Err(unsupported("a derived table or table function"));
    };
    if args.is_some() {
        return Err(unsupported("a table function"));
    }
    let (namespace, table_name) = crate::query::resolve_name(DEFAULT_NAMESPACE, name)
        .ok_or_else(|| KalamError::invalid_sql(format!("invalid table name '{name}'")))?;
    if namespace == SYSTEM_NAMESPACE {
        // Whoever may read a system table (docs/SECURITY.md) reads it with SELECT;
        // none of them can be subscribed to.
        return Err(unsupported("a system table"));
    }
    let table = db.catalog.table(&namespace, &table_name).ok_or_else(|| {
        KalamError::new(
            ErrorCode::TableNotFound,
            format!("table '{namespace}.{table_name}' does not exist"),
        )
    })?;
    require(caller, Action::Read(&table))?;
    let scoped = Arc::new(ScopedTable::new(db.tiers.clone(), table.clone(), caller, true));
    let schema = scoped.schema().clone();
    let column = |name: &str| {
        schema.index_of(name).map_err(|_| {
            KalamError::new(
                ErrorCode::ColumnNotFound,
                format!("column '{name}' does not exist in '{}'", table.qualified_name()),
            )
        })
    };
    let mut output = Vec::new();
    for item in &select.projection {
        let names: Vec<String> = match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                table.columns.iter().map(|c| c.name.clone()).collect()
            }
            SelectItem::UnnamedExpr(SqlExpr::Identifier(ident)) => vec![kalamdb_sql::ident_name(ident)],
            SelectItem::UnnamedExpr(SqlExpr::CompoundIdentifier(parts)) => {
                vec![kalamdb_sql::ident_name(
                    parts.last().expect("a compound identifier has parts"),
                )]
            }
            _ => return Err(unsupported("a select item other than a column or *")),
        };
        for name in names {
            let index = column(&name)?;
            if !output.contains(&index) {
                output.push(index);
            }
        }
    }
    let mut hidden = vec![SEQ_COLUMN];
    if table.primary_key.is_none() {
        hidden.push(ID_COLUMN);
    }
    for name in hidden {
        let index = column(name)?;
        if !output.contains(&index) {
            output.push(index);
        }
    }
    let (filter, logical_filter) = match &select.selection {
        None => (None, None),
        Some(selection) => {
            let nested = datafusion::sql::sqlparser::ast::visit_expressions(selection, |e| match e {
                SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. } => {
                    std::ops::ControlFlow::Break(())
                }
                _ => std::ops::ControlFlow::Continue(()),
            });
            if nested.is_break() {
                return Err(unsupported("a subquery in WHERE"));
            }
            let qualifier = match alias {
                Some(alias) => kalamdb_sql::ident_name(&alias.name),
                None => table.name.clone(),
            };
            let df_schema =
                DFSchema::try_from_qualified_schema(qualifier.as_str(), &schema).map_err(df_error)?;
            let scope = ScanScope {
                caller: caller.clone(),
                expose_hidden: true,
            };
            let session = crate::query::session(db, scope, &namespace, true)?;
            let state = session.state();
            let expr = state
                .create_logical_expr_from_sql_expr(
                    ExprWithAlias {
                        expr: selection.clone(),
                        alias: None,
                    },
                    &df_schema,
                )
                .map_err(df_error)?;
            let mut subquery = false;
            let _ = expr.apply(|e| {
                subquery |= matches!(
                    e,
                    Expr::ScalarSubquery(_)
                        | Expr::Exists(_)
                        | Expr::InSubquery(_)
                        | Expr::AggregateFunction(_)
                        | Expr::WindowFunction(_)
                );
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            });
            if subquery {
                return Err(unsupported("a subquery, aggregate or window function in WHERE"));
            }
            match expr.get_type(&df_schema).map_err(df_error)? {
                DataType::Boolean | DataType::Null => {}
                other => {
                    return Err(KalamError::new(
                        ErrorCode::TypeMismatch,
                        format!("WHERE must be a boolean condition, not {other}"),
                    ));
                }
            }
            let physical = state
                .create_physical_expr(expr.clone(), &df_schema)
                .map_err(df_error)?;
            // The physical expression addresses columns by position in `schema`;
            // the logical one is stripped of its qualifier for the scan's pushdown.
            let logical = expr.unalias_nested().data;
            (Some(physical), Some(strip_qualifiers(logical)?))
        }
    };
    let fields = output.iter().map(|&i| schema.fields()[i].clone()).collect();
    let costly = filter.as_ref().is_some_and(|f| !cheap_filter(f));
    Ok(Compiled {
        table,
        scoped,
        plan: LivePlan {
            filter,
            logical_filter,
            output,
            fields,
            int64_as_string: options.int64_as_string,
            costly,
        },
    })
}

/// Functions whose cost grows with their input and no faster, whose output is no
/// larger than their input: a filter made of them (and of columns, literals,
/// comparisons, boolean logic, `IN` lists, `LIKE`, `CASE` and casts) costs about
/// what reading the changed rows costs. Anything else (`repeat`, regular
/// expressions, `lpad`, ...) may cost any amount.
const CHEAP_FUNCTIONS: &[&str] = &[
    "abs",
    "btrim",
    "ceil",
    "char_length",
    "character_length",
    "coalesce",
    "date_part",
    "date_trunc",
    "ends_with",
    "floor",
    "isnan",
    "iszero",
    "left",
    "length",
    "lower",
    "ltrim",
    "nullif",
    "octet_length",
    "right",
    "round",
    "rtrim",
    "signum",
    "starts_with",
    "substr",
    "substring",
    "trim",
    "trunc",
    "upper",
    "current_user",
];

/// Whether `expr` costs about what reading its input costs (see [`CHEAP_FUNCTIONS`]).
fn cheap_filter(expr: &Arc<dyn PhysicalExpr>) -> bool {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::ScalarFunctionExpr;
    use datafusion::physical_expr::expressions::{
        BinaryExpr, CaseExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal,
        NegativeExpr, NotExpr, TryCastExpr,
    };
    let own = if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        !matches!(
            binary.op(),
            Operator::RegexMatch
                | Operator::RegexIMatch
                | Operator::RegexNotMatch
                | Operator::RegexNotIMatch
                | Operator::LikeMatch
                | Operator::ILikeMatch
                | Operator::NotLikeMatch
                | Operator::NotILikeMatch
        )
    } else if let Some(function) = expr.downcast_ref::<ScalarFunctionExpr>() {
        CHEAP_FUNCTIONS.contains(&function.name())
    } else {
        expr.is::<Column>()
            || expr.is::<Literal>()
            || expr.is::<IsNullExpr>()
            || expr.is::<IsNotNullExpr>()
            || expr.is::<NotExpr>()
            || expr.is::<NegativeExpr>()
            || expr.is::<InListExpr>()
            || expr.is::<LikeExpr>()
            || expr.is::<CaseExpr>()
            || expr.is::<CastExpr>()
            || expr.is::<TryCastExpr>()
    };
    own && expr.children().into_iter().all(cheap_filter)
}

/// `t.c` → `c`: the scan's filters name the table's columns unqualified.
fn strip_qualifiers(expr: Expr) -> KalamResult<Expr> {
    use datafusion::common::tree_node::Transformed;
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            datafusion::common::Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .map_err(df_error)
}
