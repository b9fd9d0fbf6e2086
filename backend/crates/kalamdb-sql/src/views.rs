//! Views as syntax: `CREATE [OR REPLACE] VIEW` and `DROP VIEW` parsing, the
//! qualification of a view's query when it is created (so its names mean the same
//! from any namespace), and the expansion of view references in a statement into
//! derived tables (`FROM ns.v` → `FROM (<its query>) AS v`), planned as the caller:
//! a view over a USER table shows each caller their own rows.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Query, Statement, TableAlias, TableAliasColumnDef, TableFactor, Visit,
    VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::tokenizer::Token;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};

use crate::ident_name;
use crate::statement::{Cursor, KalamStatement, parser_error};

/// Views a statement may expand (nested ones included): beyond, views nest too
/// deeply or refer to each other in a cycle.
pub const MAX_VIEW_EXPANSIONS: usize = 64;

/// A view's stored query and column names, as expansion needs them.
pub struct ViewBody {
    pub query: Query,
    /// `CREATE VIEW v (a, b)`'s names (empty: the query's own).
    pub columns: Vec<String>,
}

/// `CREATE [OR REPLACE] VIEW [IF NOT EXISTS] ns.v [(a, ...)] AS query` (after `CREATE`).
pub(crate) fn parse_create_view(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    let or_replace = c.eat_words(&["OR", "REPLACE"]);
    c.expect_word("VIEW")?;
    let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
    if or_replace && if_not_exists {
        return Err(KalamError::invalid_sql(
            "CREATE OR REPLACE VIEW and IF NOT EXISTS cannot be combined",
        ));
    }
    let view = c.table_ref()?;
    let mut columns = Vec::new();
    if c.parser.consume_token(&Token::LParen) {
        loop {
            columns.push(c.identifier()?);
            if !c.parser.consume_token(&Token::Comma) {
                break;
            }
        }
        c.parser.expect_token(&Token::RParen).map_err(parser_error)?;
    }
    c.expect_word("AS")?;
    let query = c.parser.parse_query().map_err(parser_error)?;
    crate::check_depth(&Statement::Query(query.clone()))?;
    Ok(KalamStatement::CreateView {
        view,
        columns,
        query,
        or_replace,
        if_not_exists,
    })
}

/// `DROP VIEW [IF EXISTS] ns.v` (after `DROP`).
pub(crate) fn parse_drop_view(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("VIEW")?;
    let if_exists = c.eat_words(&["IF", "EXISTS"]);
    Ok(KalamStatement::DropView {
        view: c.table_ref()?,
        if_exists,
    })
}

/// The names of the common table expressions anywhere in `node` (a one-part name
/// that is one of them is not a table).
fn cte_names<V: Visit>(node: &V) -> HashSet<String> {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.0.insert(ident_name(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut ctes = Ctes(HashSet::new());
    let _ = Visit::visit(node, &mut ctes);
    ctes.0
}

/// The catalog every namespace lives in (`kalam.ns.t` names `ns.t`).
pub const CATALOG_NAME: &str = "kalam";

/// The (namespace, name) a relation name means, `namespace` being the default one;
/// `None` for a name that is no table's (more parts, or not identifiers).
pub fn resolve_relation(namespace: &str, name: &ObjectName) -> Option<(String, String)> {
    let parts: Vec<String> = (name.0.iter())
        .map(|p| p.as_ident().map(ident_name))
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [table] => Some((namespace.to_string(), table.clone())),
        [ns, table] => Some((ns.clone(), table.clone())),
        [catalog, ns, table] if catalog == CATALOG_NAME => Some((ns.clone(), table.clone())),
        _ => None,
    }
}

/// [`resolve_relation`], except for a common table expression's one-part name.
fn resolve(name: &ObjectName, namespace: &str, ctes: &HashSet<String>) -> Option<(String, String)> {
    match name.0.as_slice() {
        [part] if part.as_ident().is_some_and(|i| ctes.contains(&ident_name(i))) => None,
        _ => resolve_relation(namespace, name),
    }
}

/// Qualifies every one-part table name of a view's query with `namespace` (names of
/// common table expressions and table functions aside), so the stored query means
/// the same whatever namespace it is read from; returns the relations it reads, once
/// each.
pub fn qualify_view_query(query: &mut Query, namespace: &str) -> Vec<(String, String)> {
    struct Qualifier<'a> {
        namespace: &'a str,
        ctes: HashSet<String>,
        reads: Vec<(String, String)>,
    }
    impl VisitorMut for Qualifier<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, args: None, .. } = factor
                && let Some((ns, table)) = resolve(name, self.namespace, &self.ctes)
            {
                if name.0.len() == 1 {
                    name.0
                        .insert(0, ObjectNamePart::Identifier(Ident::with_quote('"', ns.clone())));
                }
                if !self.reads.contains(&(ns.clone(), table.clone())) {
                    self.reads.push((ns, table));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut qualifier = Qualifier {
        namespace,
        ctes: cte_names(&*query),
        reads: Vec::new(),
    };
    let _ = VisitMut::visit(query, &mut qualifier);
    qualifier.reads
}

/// Replaces every reference to a view in `statement` (names resolved in
/// `namespace`; `view` tells which are views) by the view's query as a derived
/// table under the view's name (or the reference's alias). Views inside views are
/// expanded too. Returns whether anything was expanded.
pub fn expand_views(
    statement: &mut Statement,
    namespace: &str,
    view: &dyn Fn(&str, &str) -> Option<ViewBody>,
) -> KalamResult<bool> {
    struct Expander<'a> {
        namespace: &'a str,
        ctes: HashSet<String>,
        view: &'a dyn Fn(&str, &str) -> Option<ViewBody>,
        expanded: usize,
    }
    impl VisitorMut for Expander<'_> {
        type Break = KalamError;
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<KalamError> {
            let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let Some((namespace, table)) = resolve(name, self.namespace, &self.ctes) else {
                return ControlFlow::Continue(());
            };
            let Some(body) = (self.view)(&namespace, &table) else {
                return ControlFlow::Continue(());
            };
            self.expanded += 1;
            if self.expanded > MAX_VIEW_EXPANSIONS {
                return ControlFlow::Break(KalamError::new(
                    ErrorCode::InvalidSql,
                    format!(
                        "the statement expands more than {MAX_VIEW_EXPANSIONS} views: views nest too deeply or refer to each other"
                    ),
                ));
            }
            let alias = match alias.take() {
                Some(mut alias) => {
                    if alias.columns.is_empty() {
                        alias.columns = alias_columns(&body.columns);
                    }
                    alias
                }
                None => TableAlias {
                    explicit: true,
                    name: Ident::with_quote('"', table),
                    columns: alias_columns(&body.columns),
                    at: None,
                },
            };
            // The view's own common table expressions are its business.
            self.ctes.extend(cte_names(&body.query));
            *factor = TableFactor::Derived {
                lateral: false,
                subquery: Box::new(body.query),
                alias: Some(alias),
                sample: None,
            };
            ControlFlow::Continue(())
        }
    }
    let mut expander = Expander {
        namespace,
        ctes: cte_names(&*statement),
        view,
        expanded: 0,
    };
    if let ControlFlow::Break(e) = VisitMut::visit(statement, &mut expander) {
        return Err(e);
    }
    Ok(expander.expanded > 0)
}

fn alias_columns(columns: &[String]) -> Vec<TableAliasColumnDef> {
    columns
        .iter()
        .map(|c| TableAliasColumnDef {
            name: Ident::with_quote('"', c.clone()),
            data_type: None,
        })
        .collect()
}
