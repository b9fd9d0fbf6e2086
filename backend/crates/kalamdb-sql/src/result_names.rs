//! Result columns with the same name (`SELECT 1 AS a, 2 AS a`, `SELECT x, x FROM t`,
//! `SELECT count(*), count(*) FROM t`), which SQL allows and DataFusion's planner
//! refuses ("Projections require unique expression names").
//!
//! When the outermost select list repeats a name, every item of it is planned under
//! a unique internal alias, and the result's schema is renamed back to the names the
//! client expects: an item's alias, an expression's text as written (`- + c`), or a
//! column's name. Names that only clash once planned count as repeated: DataFusion
//! drops unary plus and parentheses and names every scalar subquery alike. ORDER BY and GROUP BY items that name a
//! select-list alias follow the rename. In a select list with one wildcard, every
//! other item is aliased so (a name it may share with a column the wildcard brings);
//! the wildcard's columns keep their names.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast::{
    self as ast, GroupByExpr, Ident, OrderByKind, SelectItem, SetExpr, Statement,
};
use kalamdb_commons::{KalamError, KalamResult};

const INTERNAL_PREFIX: &str = "__kalam_col_";

/// What [`disambiguate`] changed: per output column, the alias the client wrote
/// (`None`: the expression's own name, read from the plan).
#[derive(Debug)]
pub struct Renamed(Vec<Option<String>>);

/// Gives every item of the outermost select list an internal alias when two items
/// would have the same output name. `None` when nothing needs it.
pub fn disambiguate(statement: &mut Statement) -> KalamResult<Option<Renamed>> {
    let Statement::Query(query) = statement else {
        return Ok(None);
    };
    let Some(select) = outermost_select(&mut query.body) else {
        return Ok(None);
    };
    let wildcards = select.projection.iter().filter(|item| !is_named(item)).count();
    let needs_it = match wildcards {
        0 => repeats_a_name(&select.projection),
        // A name may repeat one the wildcard brings (`SELECT *, x FROM t`): the
        // named items are aliased whatever their names.
        1 => select.projection.len() > 1,
        _ => false,
    };
    if !needs_it {
        return Ok(None);
    }
    // Unaliased expressions whose planned names clash are named by their text.
    let mut planned: HashMap<String, usize> = HashMap::new();
    for item in &select.projection {
        if let SelectItem::UnnamedExpr(expr) = item {
            *planned.entry(planned_name(expr)).or_default() += 1;
        }
    }
    let clashing: std::collections::HashSet<String> = planned
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name)
        .collect();
    let mut written = Vec::with_capacity(select.projection.len());
    let mut renames: HashMap<String, Option<Ident>> = HashMap::new();
    for (i, item) in select.projection.iter_mut().enumerate() {
        let internal = Ident::new(format!("{INTERNAL_PREFIX}{i}"));
        if !is_named(item) {
            written.push(None);
            continue;
        }
        let (expr, alias) =
            match std::mem::replace(item, SelectItem::UnnamedExpr(ast::Expr::value(ast::Value::Null))) {
                SelectItem::UnnamedExpr(expr) => (expr, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
                other => {
                    return Err(KalamError::internal(format!(
                        "unexpected select item {other} in a list with repeated names"
                    )));
                }
            };
        if let Some(alias) = &alias {
            // A name used twice cannot be referred to: it stays ambiguous.
            renames
                .entry(normalized(alias))
                .and_modify(|r| *r = None)
                .or_insert_with(|| Some(internal.clone()));
        }
        // The name as written: the alias, or an expression's text (a column keeps
        // the name DataFusion gives it, read from the plan).
        written.push(match (&alias, &expr) {
            (Some(alias), _) => Some(normalized(alias)),
            (None, ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_)) => None,
            (None, expr) if clashing.contains(&planned_name(expr)) => Some(expr.to_string()),
            (None, _) => None,
        });
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: internal,
        };
    }
    let rename = |expr: &mut ast::Expr| {
        if let ast::Expr::Identifier(ident) = expr
            && let Some(Some(internal)) = renames.get(&normalized(ident))
        {
            *ident = internal.clone();
        }
    };
    if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        exprs.iter_mut().for_each(rename);
    }
    if let Some(order_by) = &mut query.order_by
        && let OrderByKind::Expressions(exprs) = &mut order_by.kind
    {
        // ORDER BY names the result's columns first (as PostgreSQL does): a name two
        // of them carry is ambiguous.
        for e in exprs.iter() {
            if let ast::Expr::Identifier(ident) = &e.expr
                && let Some(None) = renames.get(&normalized(ident))
            {
                return Err(KalamError::invalid_sql(format!(
                    "ORDER BY {ident} is ambiguous: two result columns are named {}; order by position (ORDER BY 1) or give them different names",
                    normalized(ident)
                )));
            }
        }
        exprs.iter_mut().for_each(|e| rename(&mut e.expr));
    }
    Ok(Some(Renamed(written)))
}

impl Renamed {
    /// The result schema under the names the client expects.
    pub fn schema(&self, plan: &LogicalPlan, schema: &SchemaRef) -> SchemaRef {
        let exprs = projection_of(plan);
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                // Columns a wildcard brought keep their names; an aliased item takes
                // the alias written, or its expression's name.
                let Some(item) = field
                    .name()
                    .strip_prefix(INTERNAL_PREFIX)
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    return field.as_ref().clone();
                };
                let name = self.0.get(item).cloned().flatten().or_else(|| {
                    let inner = exprs.and_then(|exprs| exprs.get(i))?;
                    Some(expression_name(inner))
                });
                match name {
                    Some(name) => field.as_ref().clone().with_name(name),
                    None => field.as_ref().clone(),
                }
            })
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }
}

/// The name DataFusion gives an unaliased select item.
fn expression_name(expr: &Expr) -> String {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    match inner {
        Expr::Column(column) => column.name.clone(),
        other => other.schema_name().to_string(),
    }
}

/// The expressions of the projection that carries the internal aliases.
fn projection_of(plan: &LogicalPlan) -> Option<&Vec<Expr>> {
    match plan {
        LogicalPlan::Projection(projection)
            if projection
                .schema
                .fields()
                .iter()
                .any(|f| f.name().starts_with(INTERNAL_PREFIX)) =>
        {
            Some(&projection.expr)
        }
        other => other.inputs().first().and_then(|input| projection_of(input)),
    }
}

/// The SELECT whose items name the result: the query's own, or the first of a set
/// operation (UNION takes its names from its left side).
fn outermost_select(body: &mut SetExpr) -> Option<&mut ast::Select> {
    match body {
        SetExpr::Select(select) => Some(select),
        SetExpr::SetOperation { left, .. } => outermost_select(left),
        SetExpr::Query(query) => outermost_select(&mut query.body),
        _ => None,
    }
}

/// An item that names one column (not a wildcard).
fn is_named(item: &SelectItem) -> bool {
    matches!(
        item,
        SelectItem::ExprWithAlias { .. } | SelectItem::UnnamedExpr(_)
    )
}

/// Whether two named items would have the same output name.
fn repeats_a_name(items: &[SelectItem]) -> bool {
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let name = match item {
            SelectItem::ExprWithAlias { alias, .. } => normalized(alias),
            SelectItem::UnnamedExpr(ast::Expr::Identifier(ident)) => normalized(ident),
            SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(parts)) => match parts.last() {
                Some(last) => normalized(last),
                None => return false,
            },
            SelectItem::UnnamedExpr(expr) => planned_name(expr),
            _ => return false,
        };
        if !seen.insert(name) {
            return true;
        }
    }
    false
}

/// What an unaliased expression is named once planned, as far as names can clash:
/// DataFusion drops unary plus and parentheses (`+ c` is the column `c`, `- + c` is
/// `- c`) and names every scalar subquery alike.
fn planned_name(expr: &ast::Expr) -> String {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{UnaryOperator, VisitMut, VisitorMut};
    /// Unary plus and parentheses go wherever they are (DataFusion's names have
    /// neither), and every scalar subquery reads alike.
    struct Plain;
    impl VisitorMut for Plain {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
            loop {
                match expr {
                    ast::Expr::UnaryOp {
                        op: UnaryOperator::Plus,
                        expr: inner,
                    }
                    | ast::Expr::Nested(inner) => {
                        let inner = std::mem::replace(inner.as_mut(), ast::Expr::value(ast::Value::Null));
                        *expr = inner;
                    }
                    ast::Expr::Subquery(_) => {
                        *expr = ast::Expr::Identifier(Ident::new("(<subquery>)"));
                        return ControlFlow::Continue(());
                    }
                    _ => return ControlFlow::Continue(()),
                }
            }
        }
    }
    let mut plain = expr.clone();
    let _ = plain.visit(&mut Plain);
    match &plain {
        ast::Expr::Identifier(ident) => normalized(ident),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(normalized).unwrap_or_default(),
        // Names and functions are case-insensitive; a literal's case is not, and two
        // items that differ only there (or only in their parentheses' grouping) are
        // renamed without need, which changes nothing but their names' spelling.
        other => other.to_string().to_lowercase(),
    }
}

/// An identifier as the planner resolves it: unquoted ones in lower case.
fn normalized(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Whether `name` is one of the internal aliases (never shown to a client).
#[cfg(test)]
fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> Option<String> {
        let mut statement = crate::parse_sql_text(sql).unwrap().remove(0);
        disambiguate(&mut statement)
            .unwrap()
            .map(|_| statement.to_string())
    }

    #[test]
    fn names_that_clash_once_planned_are_rewritten() {
        assert!(rewritten("SELECT - + c, - c FROM t").is_some());
        assert!(rewritten("SELECT DISTINCT + c, 94 AS c FROM t").is_some());
        assert!(rewritten("SELECT (c), c FROM t").is_some());
        assert!(rewritten("SELECT (a + b) * c, a + b * c FROM t").is_some());
        assert!(rewritten("SELECT (SELECT a FROM t) + 1, (SELECT b FROM t) + 1 FROM t").is_some());
        assert!(rewritten("SELECT (SELECT a FROM t), (SELECT b FROM t) FROM t").is_some());
        assert_eq!(rewritten("SELECT - c, + c FROM t"), None);
        assert_eq!(rewritten("SELECT (SELECT a FROM t), b FROM t"), None);
    }

    #[test]
    fn only_repeated_names_are_rewritten() {
        assert_eq!(rewritten("SELECT 1 AS a, 2 AS b"), None);
        assert_eq!(rewritten("SELECT * FROM t"), None);
        assert_eq!(rewritten("SELECT *, * FROM t"), None);
        assert_eq!(
            rewritten("SELECT *, x FROM t").unwrap(),
            "SELECT *, x AS __kalam_col_1 FROM t"
        );
        assert_eq!(
            rewritten("SELECT x, x, t.* FROM t").unwrap(),
            "SELECT x AS __kalam_col_0, x AS __kalam_col_1, t.* FROM t"
        );
        assert_eq!(
            rewritten("SELECT 1 AS a, 2 AS a").unwrap(),
            "SELECT 1 AS __kalam_col_0, 2 AS __kalam_col_1"
        );
        assert_eq!(
            rewritten("SELECT t.x, x, y AS b FROM t ORDER BY b, x").unwrap(),
            "SELECT t.x AS __kalam_col_0, x AS __kalam_col_1, y AS __kalam_col_2 FROM t ORDER BY __kalam_col_2, x"
        );
        assert!(rewritten("SELECT count(*), COUNT(*) FROM t").is_some());
        let mut ambiguous = crate::parse_sql_text("SELECT x AS a, y AS a FROM t ORDER BY a")
            .unwrap()
            .remove(0);
        assert!(
            disambiguate(&mut ambiguous)
                .unwrap_err()
                .message
                .contains("ambiguous")
        );
        assert!(is_internal("__kalam_col_3"));
    }
}
