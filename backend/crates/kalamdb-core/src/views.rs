//! `CREATE [OR REPLACE] VIEW` and `DROP VIEW`. A view is a stored query with its
//! table names qualified (`kalamdb_sql::views`); the query layer expands every
//! reference to it into a derived table planned as the caller — a view over a USER
//! table shows each caller their own rows, and grants nothing: reading it takes the
//! rights to read what it reads.

use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use kalamdb_sql::sqlparser::ast::Query;
use kalamdb_sql::{KalamStatement, TableRef};

use crate::access::{Action, require};
use crate::base::{now_micros, store_error};
use crate::catalog::{Catalog, SYSTEM_NAMESPACE, View, ViewDef};
use crate::results::StatementResult;
use crate::statements::{Engine, StatementContext, check_name, tolerated};

pub(crate) async fn create(
    ctx: &StatementContext<'_>,
    view: &TableRef,
    columns: Vec<String>,
    mut query: Query,
    or_replace: bool,
    if_not_exists: bool,
) -> KalamResult<StatementResult> {
    require(ctx.caller, Action::ChangeSchema)?;
    let (namespace, name) = ctx.resolve(view);
    check_name("view", &name)?;
    if namespace == SYSTEM_NAMESPACE {
        return Err(KalamError::invalid_sql(
            "views cannot be created in the 'system' namespace",
        ));
    }
    let catalog = &ctx.db.catalog;
    if !catalog.namespace_exists(&namespace) {
        return Err(KalamError::new(
            ErrorCode::NamespaceNotFound,
            format!("namespace '{namespace}' does not exist"),
        ));
    }
    if catalog.table(&namespace, &name).is_some() {
        return Err(KalamError::new(
            ErrorCode::AlreadyExists,
            format!("a table '{namespace}.{name}' already exists"),
        ));
    }
    if catalog.view(&namespace, &name).is_some() && !or_replace {
        let error = KalamError::new(
            ErrorCode::AlreadyExists,
            format!("view '{namespace}.{name}' already exists"),
        );
        return tolerated(if_not_exists, error);
    }
    let reads = kalamdb_sql::views::qualify_view_query(&mut query, &namespace);
    for (ns, table) in &reads {
        if (ns, table) == (&namespace, &name) || reaches(catalog, ns, table, (&namespace, &name)) {
            return Err(KalamError::invalid_sql(format!(
                "view '{namespace}.{name}' would read itself"
            )));
        }
    }
    let def = ViewDef {
        namespace: namespace.clone(),
        name: name.clone(),
        query: query.to_string(),
        columns,
        reads,
        created_at: now_micros(),
    };
    // The stored text parses back to the query, before anything is stored.
    let view = View::parse(def)?;
    // Planned once as its creator, as readers will read it — a derived table under
    // its column names: the names exist, the query is valid, and its columns can be
    // referred to (a select list that repeats a name cannot).
    let mut read_as = kalamdb_sql::parse_sql_text(&format!("SELECT * FROM \"{namespace}\".\"{name}\""))
        .map_err(|e| KalamError::internal(format!("view probe: {e}")))?
        .remove(0);
    // This view as it will be, the others as they are.
    kalamdb_sql::views::expand_views(&mut read_as, &namespace, &|ns, table| {
        let (query, columns) = match (ns == namespace && table == name, catalog.view(ns, table)) {
            (true, _) => (view.query.clone(), view.def.columns.clone()),
            (false, Some(other)) => (other.query.clone(), other.def.columns.clone()),
            (false, None) => return None,
        };
        Some(kalamdb_sql::views::ViewBody { query, columns })
    })?;
    // What readers will plan is held to the nesting limits before it is planned.
    kalamdb_sql::check_depth(&read_as)?;
    let schema = crate::query::query_schema(&ctx.db.query, ctx.caller, &namespace, read_as).await;
    let schema = schema.map_err(|e| match e.message.contains("unique expression names") {
        true => KalamError::invalid_sql(format!(
            "the query of view '{namespace}.{name}' returns two columns of one name: give them different aliases"
        )),
        false => e,
    })?;
    if !view.def.columns.is_empty() && view.def.columns.len() != schema.fields().len() {
        return Err(KalamError::invalid_sql(format!(
            "view '{namespace}.{name}' names {} column(s) but its query returns {}",
            view.def.columns.len(),
            schema.fields().len()
        )));
    }
    let mut batch = ctx.db.store.batch();
    Catalog::stage_view(&mut batch, &view.def);
    ctx.db.store.commit(batch).map_err(store_error)?;
    catalog.apply_view(view);
    Ok(StatementResult::message(format!(
        "View '{namespace}.{name}' created"
    )))
}

/// Whether `view` (namespace, name) reads `target`, directly or through views.
fn reaches(catalog: &Catalog, namespace: &str, name: &str, target: (&String, &String)) -> bool {
    let mut pending = vec![(namespace.to_string(), name.to_string())];
    let mut seen = std::collections::HashSet::new();
    while let Some(next) = pending.pop() {
        if (&next.0, &next.1) == target {
            return true;
        }
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(view) = catalog.view(&next.0, &next.1) {
            pending.extend(view.def.reads.iter().cloned());
        }
    }
    false
}

pub(crate) fn drop(
    ctx: &StatementContext<'_>,
    view: &TableRef,
    if_exists: bool,
) -> KalamResult<StatementResult> {
    require(ctx.caller, Action::ChangeSchema)?;
    let (namespace, name) = ctx.resolve(view);
    if ctx.db.catalog.view(&namespace, &name).is_none() {
        if ctx.db.catalog.table(&namespace, &name).is_some() {
            return Err(KalamError::invalid_sql(format!(
                "'{namespace}.{name}' is a table: use DROP TABLE"
            )));
        }
        let error = KalamError::new(
            ErrorCode::TableNotFound,
            format!("view '{namespace}.{name}' does not exist"),
        );
        return tolerated(if_exists, error);
    }
    refuse_dependents(ctx.db, &namespace, &name, &KalamStatement::ShowNamespaces)?;
    let mut batch = ctx.db.store.batch();
    Catalog::stage_drop_view(&mut batch, &namespace, &name);
    ctx.db.store.commit(batch).map_err(store_error)?;
    ctx.db.catalog.apply_drop_view(&namespace, &name);
    Ok(StatementResult::message(format!(
        "View '{namespace}.{name}' dropped"
    )))
}

/// `DEPENDENT_OBJECTS` when a view reads `namespace.name` (a table or view that
/// `statement` drops), unless the statement drops that view too (`DROP NAMESPACE
/// ... CASCADE` of the view's namespace).
pub(crate) fn refuse_dependents(
    db: &Engine,
    namespace: &str,
    name: &str,
    statement: &KalamStatement,
) -> KalamResult<()> {
    // A namespace that still holds anything is refused as not empty.
    if matches!(statement, KalamStatement::DropNamespace { cascade: false, .. }) {
        return Ok(());
    }
    let dropped_too = |view_namespace: &str| matches!(statement, KalamStatement::DropNamespace { name, cascade: true, .. } if name == view_namespace);
    let dependents: Vec<String> = (db.catalog.views_reading(namespace, name).iter())
        .filter(|v| !dropped_too(&v.def.namespace))
        .map(|v| format!("{}.{}", v.def.namespace, v.def.name))
        .collect();
    if dependents.is_empty() {
        return Ok(());
    }
    Err(KalamError::new(
        ErrorCode::DependentObjects,
        format!(
            "'{namespace}.{name}' is read by view(s) {}: drop them first",
            dependents.join(", ")
        ),
    ))
}
