//! The queries DML statements run, built as syntax trees from the statement's own
//! parts (its table, SET expressions, WHERE, FROM/USING, RETURNING): nothing is
//! printed back to SQL text and parsed again, so what DataFusion plans is exactly
//! what the client wrote.

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, ObjectName, ObjectNamePart, Query, Select, SelectFlavor, SelectItem, SetExpr,
    Statement, TableAlias, TableFactor, TableWithJoins,
};
use datafusion::sql::sqlparser::tokenizer::Span;

/// `SELECT <projection> FROM <from> [WHERE <selection>]`.
pub fn select(projection: Vec<SelectItem>, from: Vec<TableWithJoins>, selection: Option<Expr>) -> Statement {
    let select = Select {
        select_token: AttachedToken::empty(),
        optimizer_hints: Vec::new(),
        distinct: None,
        select_modifiers: None,
        top: None,
        top_before_distinct: false,
        projection,
        exclude: None,
        into: None,
        from,
        lateral_views: Vec::new(),
        prewhere: None,
        selection,
        connect_by: Vec::new(),
        group_by: GroupByExpr::Expressions(Vec::new(), Vec::new()),
        cluster_by: Vec::new(),
        distribute_by: Vec::new(),
        sort_by: Vec::new(),
        having: None,
        named_window: Vec::new(),
        qualify: None,
        window_before_qualify: false,
        value_table_mode: None,
        flavor: SelectFlavor::Standard,
    };
    Statement::Query(Box::new(Query {
        with: None,
        body: Box::new(SetExpr::Select(Box::new(select))),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: Vec::new(),
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: Vec::new(),
    }))
}

/// A quoted identifier: the name exactly as stored.
pub fn ident(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// `<qualifier>.<column>` (or `<column>` for an empty qualifier).
pub fn column(qualifier: &[Ident], name: &str) -> Expr {
    match qualifier {
        [] => Expr::Identifier(ident(name)),
        _ => Expr::CompoundIdentifier(qualifier.iter().cloned().chain([ident(name)]).collect()),
    }
}

/// `<expr> AS <alias>`.
pub fn aliased(expr: Expr, alias: &str) -> SelectItem {
    SelectItem::ExprWithAlias {
        expr,
        alias: Ident::new(alias),
    }
}

/// The table `name` (parts as given) with an optional alias, as a FROM item.
pub fn table(name: &[&str], alias: Option<&Ident>) -> TableWithJoins {
    TableWithJoins {
        relation: TableFactor::Table {
            name: ObjectName(
                name.iter()
                    .map(|part| ObjectNamePart::Identifier(ident(part)))
                    .collect(),
            ),
            alias: alias.map(|name| TableAlias {
                explicit: true,
                name: name.clone(),
                columns: Vec::new(),
                at: None,
            }),
            args: None,
            with_hints: Vec::new(),
            version: None,
            with_ordinality: false,
            partitions: Vec::new(),
            json_path: None,
            sample: None,
            index_hints: Vec::new(),
        },
        joins: Vec::new(),
    }
}

/// The name columns of a DML target are qualified with: its alias, or its name
/// as the statement wrote it.
pub fn qualifier_of(relation: &TableFactor) -> Vec<Ident> {
    match relation {
        TableFactor::Table {
            alias: Some(alias), ..
        } => vec![alias.name.clone()],
        TableFactor::Table { name, .. } => name
            .0
            .iter()
            .filter_map(|part| part.as_ident().cloned())
            .map(|mut ident| {
                ident.span = Span::empty();
                ident
            })
            .collect(),
        _ => Vec::new(),
    }
}
