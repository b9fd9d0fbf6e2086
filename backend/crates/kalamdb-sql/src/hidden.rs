//! Hidden columns: `_seq`, `_deleted` and `_id` appear only when a statement names them.
//!
//! Table schemas normally leave them out, so `SELECT *` cannot show them. When a
//! statement names one, the statement's tables expose them, and every wildcard over
//! those tables is rewritten to exclude them again (`t.* EXCLUDE (_seq, _deleted)`), so
//! `SELECT *, _seq FROM t` shows the table's columns and `_seq` once.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    ExcludeSelectItem, Expr, Ident, ObjectName, Query, Select, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, Statement, TableFactor, VisitMut, VisitorMut, WildcardAdditionalOptions, visit_expressions,
};

use kalamdb_commons::hidden::is_hidden;

use crate::ident_name;

/// True when the statement names a hidden column anywhere.
pub fn references_hidden(statement: &Statement) -> bool {
    visit_expressions(statement, |expr| {
        let named = match expr {
            Expr::Identifier(ident) => is_hidden(&ident_name(ident)),
            Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|p| is_hidden(&ident_name(p))),
            _ => false,
        };
        if named {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Rewrites the wildcards of every SELECT in `statement`. `hidden_of` tells, for a
/// table name as written, which hidden columns its schema exposes (`None`: not a
/// KalamDB table, e.g. a system table).
pub fn exclude_hidden_from_wildcards(
    statement: &mut Statement,
    hidden_of: &dyn Fn(&ObjectName) -> Option<Vec<&'static str>>,
) {
    let mut rewriter = WildcardRewriter {
        hidden_of,
        cte_names: HashSet::new(),
    };
    let _ = statement.visit(&mut rewriter);
}

struct WildcardRewriter<'a> {
    hidden_of: &'a dyn Fn(&ObjectName) -> Option<Vec<&'static str>>,
    cte_names: HashSet<String>,
}

impl VisitorMut for WildcardRewriter<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.cte_names.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.rewrite_set_expr(&mut query.body);
        ControlFlow::Continue(())
    }
}

/// One FROM relation that a wildcard covers: how to qualify it and what to exclude.
struct Relation {
    qualifier: ObjectName,
    hidden: Vec<&'static str>,
}

impl WildcardRewriter<'_> {
    fn rewrite_set_expr(&self, body: &mut SetExpr) {
        match body {
            SetExpr::Select(select) => self.rewrite_select(select),
            SetExpr::SetOperation { left, right, .. } => {
                self.rewrite_set_expr(left);
                self.rewrite_set_expr(right);
            }
            _ => {}
        }
    }

    fn relation(&self, factor: &TableFactor) -> Option<Relation> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let is_cte = name.0.len() == 1
                    && name.0[0]
                        .as_ident()
                        .is_some_and(|i| self.cte_names.contains(&i.value.to_ascii_lowercase()));
                let hidden = if is_cte {
                    Vec::new()
                } else {
                    (self.hidden_of)(name).unwrap_or_default()
                };
                let qualifier = match alias {
                    Some(alias) => ObjectName::from(vec![alias.name.clone()]),
                    None => name.clone(),
                };
                Some(Relation { qualifier, hidden })
            }
            TableFactor::Derived {
                alias: Some(alias), ..
            } => Some(Relation {
                qualifier: ObjectName::from(vec![alias.name.clone()]),
                hidden: Vec::new(),
            }),
            _ => None,
        }
    }

    fn rewrite_select(&self, select: &mut Select) {
        let relations: Option<Vec<Relation>> = select
            .from
            .iter()
            .flat_map(|twj| std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)))
            .map(|factor| self.relation(factor))
            .collect();
        let Some(relations) = relations else {
            return;
        };
        if relations.iter().all(|r| r.hidden.is_empty()) {
            return;
        }
        let mut projection = Vec::with_capacity(select.projection.len());
        for item in select.projection.drain(..) {
            match item {
                SelectItem::Wildcard(options) if is_plain(&options) => {
                    for relation in &relations {
                        projection.push(SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(relation.qualifier.clone()),
                            with_exclude(options.clone(), &relation.hidden),
                        ));
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), options)
                    if is_plain(&options) =>
                {
                    let hidden = relations
                        .iter()
                        .find(|r| same_name(&r.qualifier, &name))
                        .map(|r| r.hidden.as_slice())
                        .unwrap_or(&[]);
                    projection.push(SelectItem::QualifiedWildcard(
                        SelectItemQualifiedWildcardKind::ObjectName(name),
                        with_exclude(options, hidden),
                    ));
                }
                other => projection.push(other),
            }
        }
        select.projection = projection;
    }
}

fn is_plain(options: &WildcardAdditionalOptions) -> bool {
    options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_ilike.is_none()
        && options.opt_rename.is_none()
        && options.opt_replace.is_none()
}

fn with_exclude(
    mut options: WildcardAdditionalOptions,
    hidden: &[&'static str],
) -> WildcardAdditionalOptions {
    if !hidden.is_empty() {
        options.opt_exclude = Some(ExcludeSelectItem::Multiple(
            hidden
                .iter()
                .map(|h| ObjectName::from(vec![Ident::new(*h)]))
                .collect(),
        ));
    }
    options
}

fn same_name(a: &ObjectName, b: &ObjectName) -> bool {
    a.to_string().eq_ignore_ascii_case(&b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        crate::parse_sql_text(sql).unwrap().remove(0)
    }

    #[track_caller]
    fn check(sql: &str, expected: &str) {
        let mut statement = parse(sql);
        let hidden_of = |name: &ObjectName| -> Option<Vec<&'static str>> {
            match name.to_string().as_str() {
                "app.t" | "t" => Some(vec!["_seq", "_deleted"]),
                "app.k" => Some(vec!["_seq", "_deleted", "_id"]),
                _ => None,
            }
        };
        exclude_hidden_from_wildcards(&mut statement, &hidden_of);
        assert_eq!(statement.to_string(), expected);
    }

    #[test]
    fn detects_hidden_names() {
        assert!(references_hidden(&parse("SELECT _seq FROM t")));
        assert!(references_hidden(&parse(
            "SELECT a FROM t WHERE t._DELETED = false"
        )));
        assert!(references_hidden(&parse("SELECT a FROM t ORDER BY _id")));
        assert!(!references_hidden(&parse("SELECT * FROM t WHERE a = '_seq'")));
    }

    #[test]
    fn wildcards_exclude_hidden_columns() {
        check(
            "SELECT *, _seq FROM app.t",
            "SELECT app.t.* EXCLUDE (_seq, _deleted), _seq FROM app.t",
        );
        check(
            "SELECT x.*, y._id FROM app.t AS x JOIN app.k AS y ON x.a = y.a",
            "SELECT x.* EXCLUDE (_seq, _deleted), y._id FROM app.t AS x JOIN app.k AS y ON x.a = y.a",
        );
        check(
            "SELECT * FROM (SELECT *, _seq FROM t) AS d",
            "SELECT * FROM (SELECT t.* EXCLUDE (_seq, _deleted), _seq FROM t) AS d",
        );
        check("SELECT * FROM system.users", "SELECT * FROM system.users");
    }
}
