//! INSERT, UPDATE and DELETE. Each statement reads and computes its writes without
//! a lock and commits them as one atomic `WriteBatch` (`write.rs`).
//!
//! A write appends a new row version under a fresh `_seq` and removes the previous
//! hot version of the same key, so the hot store holds one version per key; DELETE
//! writes a tombstone (`_deleted`), which shadows older copies of the row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::Field;
use datafusion::catalog::{
    CatalogProvider, MemTable, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, Expr, FromTable, Ident, Insert, ObjectName, OnConflictAction, OnInsert,
    SelectItem, SetExpr, Statement, TableFactor, TableObject, TableWithJoins, UpdateTableFromKind, VisitMut,
    VisitorMut,
};
use futures::StreamExt;
use kalamdb_commons::hidden::is_hidden;
use kalamdb_commons::value::format_timestamp;
use kalamdb_commons::{
    DefaultValue, ErrorCode, KalamError, KalamResult, KalamType, Literal, TableType, Value,
};
use kalamdb_store::row_codec::{encode_row, encode_value};

use crate::access::{Action, require};
use crate::arrow_conv::{column_values, field, materialized_bytes, values_to_array};
use crate::base::{df_error, now_micros};
use crate::budget::{Charge, within_budget};
use crate::catalog::{ColumnDef, ID_COLUMN, ID_COLUMN_ID, SEQ_COLUMN, TableDef};
use crate::query::{StatementSession, resolve_name, run_query_batches, run_statement, stream_query};
use crate::results::StatementResult;
use crate::statements::{Engine, StatementContext};
use crate::write::{self, Expect, OnLive, Outcome, PendingWrite, duplicate_key};
use kalamdb_sql::dml_query;
use kalamdb_sql::ident_name;

/// Attempts whose commit found their rows changed before a statement claims the
/// keys it writes (`write.rs`, "Claims").
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// One attempt of a statement: the claim it holds, and why it must run again.
struct Attempt<'a> {
    claim: Option<&'a crate::locks::ClaimGuard>,
    lost: parking_lot::Mutex<Lost>,
}

/// Why an attempt wrote nothing.
#[derive(Default)]
struct Lost {
    /// Rows it read changed: its table, scope and the keys it would have written.
    changed: Option<(u32, String, Vec<Vec<u8>>)>,
    /// Another statement claims a key it writes.
    claimed: Option<Arc<crate::locks::Claim>>,
}

pub(crate) async fn execute(
    ctx: &StatementContext<'_>,
    statement: Statement,
) -> KalamResult<StatementResult> {
    // A statement runs without locks and commits if the rows it read are unchanged
    // (`write.rs`). When other writers keep changing them, it claims the keys it
    // writes, so that their writers wait for it (holding nothing) and it finishes;
    // no query ever runs under a lock.
    let mut claim: Option<crate::locks::ClaimGuard> = None;
    let mut claimed_rounds = 0;
    for number in 1.. {
        let attempt = Attempt {
            claim: claim.as_ref(),
            lost: Default::default(),
        };
        if let Some(result) = execute_once(ctx, &statement, &attempt).await? {
            return Ok(result);
        }
        let lost = attempt.lost.into_inner();
        if let Some(other) = lost.claimed {
            // Waiting for another statement counts against this one's deadline.
            within_budget(async {
                other.released().await;
                Ok(())
            })
            .await?;
            continue;
        }
        if let Some((table_id, scope, keys)) = lost.changed
            && number >= OPTIMISTIC_ATTEMPTS
        {
            match &claim {
                Some(own) if own.covers_scope(table_id, &scope) => {
                    claimed_rounds += 1;
                    own.extend(keys, claimed_rounds >= crate::locks::WIDE_CLAIM_ROUNDS);
                }
                _ => {
                    ctx.db
                        .holds
                        .wait_async(|| format!("dml_claim:{}", ctx.caller.username))
                        .await;
                    let claimed = ctx.db.claims.claim(table_id, &scope, keys);
                    claim = Some(within_budget(async { Ok(claimed.await) }).await?);
                }
            }
        }
        tokio::task::yield_now().await;
    }
    unreachable!("attempts go on until one commits or fails")
}

/// One attempt; `None` when it wrote nothing and must run again (`attempt.lost`
/// says why).
async fn execute_once(
    ctx: &StatementContext<'_>,
    statement: &Statement,
    attempt: &Attempt<'_>,
) -> KalamResult<Option<StatementResult>> {
    match statement {
        Statement::Insert(insert) => insert_rows(ctx, insert, attempt).await,
        Statement::Update(update) => {
            if update.limit.is_some() || !update.order_by.is_empty() || update.or.is_some() {
                return Err(KalamError::unsupported(
                    "UPDATE supports SET ... [FROM ...] [WHERE ...] [RETURNING ...]",
                ));
            }
            let (table, _) = single_table(ctx, &update.table)?;
            update_rows(ctx, table, update, attempt).await
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            if tables.len() != 1
                || !delete.tables.is_empty()
                || delete.limit.is_some()
                || !delete.order_by.is_empty()
            {
                return Err(KalamError::unsupported(
                    "DELETE supports FROM one table [USING ...] [WHERE ...] [RETURNING ...]",
                ));
            }
            let (table, _) = single_table(ctx, &tables[0])?;
            delete_rows(ctx, table, &tables[0], delete, attempt).await
        }
        other => Err(KalamError::unsupported(format!("not a DML statement: {other}"))),
    }
}

/// Commits the statement's writes: `None` when it must run again (`attempt.lost`
/// says why).
async fn commit_writes(
    ctx: &StatementContext<'_>,
    attempt: &Attempt<'_>,
    table: &Arc<TableDef>,
    scope: &str,
    writes: &[PendingWrite],
) -> KalamResult<Option<Vec<bool>>> {
    ctx.db
        .holds
        .wait_async(|| format!("dml_commit:{}", ctx.caller.username))
        .await;
    let outcome = match crate::txn::current() {
        // In a transaction the writes wait in it for its COMMIT.
        Some(txn) => txn.stage(table, scope, writes)?,
        None => write::commit(&ctx.db.tiers, table, scope, writes, attempt.claim).await?,
    };
    match outcome {
        Outcome::Done { written } => Ok(Some(written)),
        Outcome::Retry => {
            let keys = writes.iter().map(|w| crate::locks::key_cell(&w.key)).collect();
            attempt.lost.lock().changed = Some((table.table_id, scope.to_string(), keys));
            Ok(None)
        }
        Outcome::Claimed(other) => {
            attempt.lost.lock().claimed = Some(other);
            Ok(None)
        }
        Outcome::Duplicate { index } => Err(duplicate_key(table, &writes[index].key)),
    }
}

/// The target table of a DML statement, checked for the caller's rights.
fn target_table(ctx: &StatementContext<'_>, name: &ObjectName) -> KalamResult<Arc<TableDef>> {
    let (namespace, table) = resolve_name(ctx.namespace, name)
        .ok_or_else(|| KalamError::invalid_sql(format!("invalid table name {name}")))?;
    writable_table(ctx, &namespace, &table)
}

/// The table `namespace.name`, if the caller may write it (SHARED tables need the
/// `service` role; system tables are read-only).
pub(crate) fn writable_table(
    ctx: &StatementContext<'_>,
    namespace: &str,
    name: &str,
) -> KalamResult<Arc<TableDef>> {
    if namespace == crate::catalog::SYSTEM_NAMESPACE {
        return Err(KalamError::new(
            ErrorCode::PermissionDenied,
            "system tables are read-only",
        ));
    }
    if ctx.db.catalog.view(namespace, name).is_some() {
        return Err(KalamError::unsupported(format!(
            "'{namespace}.{name}' is a view: views are read-only; write to the tables it reads"
        )));
    }
    let table = ctx.db.catalog.require_table(namespace, name)?;
    if table.table_type == TableType::Shared {
        require(ctx.caller, Action::Write(&table))?;
    }
    Ok(table)
}

fn single_table(
    ctx: &StatementContext<'_>,
    twj: &TableWithJoins,
) -> KalamResult<(Arc<TableDef>, Option<Ident>)> {
    match &twj.relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } if twj.joins.is_empty() => Ok((target_table(ctx, name)?, alias.as_ref().map(|a| a.name.clone()))),
        _ => Err(KalamError::unsupported(
            "DML statements target one table, without joins",
        )),
    }
}

pub(crate) fn scope_of(ctx: &StatementContext<'_>, table: &TableDef) -> String {
    crate::scoped::scope_of(table, ctx.caller)
}

/// STREAM tables are insert-only.
fn refuse_stream_update(table: &TableDef) -> KalamResult<()> {
    if table.table_type == TableType::Stream {
        return Err(KalamError::unsupported(format!(
            "'{}' is a STREAM table: its rows are insert-only (DELETE works; UPDATE and ON CONFLICT DO UPDATE do not)",
            table.qualified_name()
        )));
    }
    Ok(())
}

/// A new row version of `table` in the row codec; `values` follow `table.columns`.
pub(crate) fn encode_new_row(table: &TableDef, key: &Value, values: &[Value]) -> Vec<u8> {
    let mut row = Vec::with_capacity(64);
    let id_cell = table.primary_key.is_none().then_some((ID_COLUMN_ID, key));
    let cells: Vec<(u32, &Value)> = id_cell
        .into_iter()
        .chain(table.columns.iter().map(|c| c.id).zip(values.iter()))
        .collect();
    encode_row(false, cells.into_iter(), &mut row);
    row
}

/// A tombstone of `key`: only the key cell, flagged deleted.
fn encode_tombstone(table: &TableDef, key: &Value) -> Vec<u8> {
    let mut row = Vec::with_capacity(16);
    let key_column = table.primary_key.unwrap_or(ID_COLUMN_ID);
    encode_row(true, [(key_column, key)].into_iter(), &mut row);
    row
}

/// The checks of a new row's values that the column definitions make: NOT NULL, and
/// the length of a `VARCHAR(n)` value.
pub(crate) fn check_values(table: &TableDef, values: &[Value]) -> KalamResult<()> {
    for (column, value) in table.columns.iter().zip(values) {
        if value.is_null() && !column.nullable {
            return Err(KalamError::new(
                ErrorCode::NotNullViolation,
                format!(
                    "column '{}' of '{}' cannot be NULL",
                    column.name,
                    table.qualified_name()
                ),
            ));
        }
        // VARCHAR(n): at most n characters (PostgreSQL's "value too long").
        if let (Some(max), Value::Text(text)) = (column.max_chars, value)
            && text.len() > max as usize
            && text.chars().count() > max as usize
        {
            return Err(KalamError::new(
                ErrorCode::TypeMismatch,
                format!(
                    "value too long for column '{}' of '{}': VARCHAR({max}), the value has {} characters",
                    column.name,
                    table.qualified_name(),
                    text.chars().count()
                ),
            ));
        }
    }
    Ok(())
}

/// The value of a column's DEFAULT for one new row.
/// `now` is the statement's moment; `username` the caller's.
/// `table_id`: the column's table (an identity column draws from its sequence).
pub(crate) fn default_value(
    db: &Engine,
    username: &str,
    table_id: u32,
    column: &ColumnDef,
    now: i64,
) -> KalamResult<Value> {
    let ty = column.data_type;
    Ok(match &column.default {
        None => Value::Null,
        Some(DefaultValue::Literal { value }) => value.to_value(&ty)?,
        Some(DefaultValue::Now) => match ty {
            KalamType::Date => Value::Date(now.div_euclid(86_400_000_000) as i32),
            KalamType::Text => Value::Text(format_timestamp(now)),
            _ => Value::Timestamp(now),
        },
        Some(DefaultValue::SnowflakeId) => match ty {
            KalamType::Text => Value::Text(db.seq.next()?.to_string()),
            _ => Value::BigInt(crate::seq::seq_as_i64(db.seq.next()?)),
        },
        Some(DefaultValue::UuidV7) => {
            let id = uuid::Uuid::now_v7();
            match ty {
                KalamType::Text => Value::Text(id.hyphenated().to_string()),
                _ => Value::Uuid(*id.as_bytes()),
            }
        }
        Some(DefaultValue::CurrentUser) => Value::Text(username.to_string()),
        Some(DefaultValue::Identity { .. }) => {
            let next = db.identities.next(&db.store, table_id, column.id, ty)?;
            match ty {
                KalamType::SmallInt => Value::SmallInt(next as i16),
                KalamType::Int => Value::Int(next as i32),
                _ => Value::BigInt(next),
            }
        }
    })
}

/// A `GENERATED ALWAYS AS IDENTITY` column takes no value from a statement
/// (PostgreSQL's `cannot insert a non-DEFAULT value`).
pub(crate) fn refuse_always_identity(table: &TableDef, named: &[usize]) -> KalamResult<()> {
    for &i in named {
        let column = &table.columns[i];
        if column.default == Some(DefaultValue::Identity { always: true }) {
            return Err(KalamError::invalid_sql(format!(
                "column '{}' is GENERATED ALWAYS AS IDENTITY: an INSERT cannot give it a value",
                column.name
            )));
        }
    }
    Ok(())
}

/// The columns an INSERT names, as indexes into `table.columns`.
fn insert_columns(table: &TableDef, names: &[ObjectName]) -> KalamResult<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..table.columns.len()).collect());
    }
    let mut seen = HashSet::new();
    names
        .iter()
        .map(|name| {
            let ident = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .ok_or_else(|| KalamError::invalid_sql(format!("invalid column name {name}")))?;
            let column = ident_name(ident);
            let index = column_index(table, &column)?;
            if !seen.insert(index) {
                return Err(KalamError::invalid_sql(format!(
                    "column '{column}' is named twice"
                )));
            }
            Ok(index)
        })
        .collect()
}

/// Position of `column` in `table.columns`, or `COLUMN_NOT_FOUND`.
pub(crate) fn column_index(table: &TableDef, column: &str) -> KalamResult<usize> {
    table
        .columns
        .iter()
        .position(|c| c.name == column)
        .ok_or_else(|| {
            KalamError::new(
                ErrorCode::ColumnNotFound,
                format!("column '{column}' does not exist in '{}'", table.qualified_name()),
            )
        })
}

/// Source rows of an INSERT: converted values, in the order of the named columns,
/// and what they hold, charged to the statement's budget (kept until its commit).
async fn insert_source(
    ctx: &StatementContext<'_>,
    table: &TableDef,
    columns: &[usize],
    source: &ast::Query,
) -> KalamResult<(Vec<Vec<Value>>, Option<Charge>)> {
    if let SetExpr::Values(values) = source.body.as_ref()
        && source.order_by.is_none()
        && source.limit_clause.is_none()
        && let Some(rows) = literal_rows(ctx, table, columns, &values.rows)?
    {
        // Bounded by the statement's text (max_sql_bytes).
        return Ok((rows, None));
    }
    // Anything else (expressions, INSERT ... SELECT): DataFusion evaluates the source
    // as the client wrote it; each column is converted to its column's type. The
    // rows are counted and charged batch by batch as they arrive: a source of more
    // than `max_insert_rows` rows stops at the first batch past it.
    let statement = Statement::Query(Box::new(source.clone()));
    let mut output = Box::pin(stream_query(
        &ctx.db.query,
        ctx.caller,
        ctx.namespace,
        statement,
        ctx.params,
    ))
    .await?;
    if output.schema.fields().len() != columns.len() {
        return Err(KalamError::invalid_sql(format!(
            "INSERT has {} columns but its source has {}",
            columns.len(),
            output.schema.fields().len()
        )));
    }
    let targets: Vec<&ColumnDef> = columns.iter().map(|&c| &table.columns[c]).collect();
    let charge = crate::budget::charge_current(&ctx.db.query_runtime, "the rows of this INSERT")?;
    let rows = within_budget(async {
        let mut rows = Vec::new();
        while let Some(batch) = output.batches.next().await {
            let batch = batch.map_err(df_error)?;
            check_insert_size(ctx, rows.len() + batch.num_rows())?;
            // The values, and about as much again for the rows they are encoded into.
            let bytes: usize = batch
                .columns()
                .iter()
                .map(|a| materialized_bytes(a.as_ref()))
                .sum();
            charge.grow(2 * bytes)?;
            rows.extend(batch_rows(&batch, 0, &targets)?);
        }
        Ok(rows)
    })
    .await?;
    Ok((rows, Some(charge)))
}

/// The rows of `batch`, its columns from `first` on converted to the types of
/// `columns` (one array per column).
fn batch_rows(batch: &RecordBatch, first: usize, columns: &[&ColumnDef]) -> KalamResult<Vec<Vec<Value>>> {
    let mut rows: Vec<Vec<Value>> = (0..batch.num_rows())
        .map(|_| Vec::with_capacity(columns.len()))
        .collect();
    for (i, column) in columns.iter().enumerate() {
        let values = column_values(batch.column(first + i), &column.data_type, &column.name)?;
        for (row, value) in rows.iter_mut().zip(values) {
            row.push(value);
        }
    }
    Ok(rows)
}

/// What a pending write holds until its commit: its encoded row and, for
/// RETURNING, its values (a DELETE's row is its key alone, its values are the old
/// row's).
fn pending_bytes(write: &PendingWrite) -> usize {
    let values: usize = write
        .values
        .iter()
        .map(|value| {
            std::mem::size_of::<Value>()
                + match value {
                    Value::Text(text) | Value::Json(text) => text.len(),
                    Value::Bytes(bytes) => bytes.len(),
                    _ => 0,
                }
        })
        .sum();
    std::mem::size_of::<PendingWrite>() + write.row.len() + values
}

fn check_insert_size(ctx: &StatementContext<'_>, rows: usize) -> KalamResult<()> {
    let max = ctx.db.options.max_insert_rows;
    if rows > max {
        return Err(KalamError::new(
            ErrorCode::InvalidParameter,
            format!("an INSERT carries at most {max} rows; split it"),
        ));
    }
    Ok(())
}

/// The fast path: `VALUES` rows of literals and `$n` parameters, converted without
/// planning. `None` when some value needs evaluation.
fn literal_rows(
    ctx: &StatementContext<'_>,
    table: &TableDef,
    columns: &[usize],
    rows: &[ast::Parens<Vec<Expr>>],
) -> KalamResult<Option<Vec<Vec<Value>>>> {
    check_insert_size(ctx, rows.len())?;
    let mut out = Vec::with_capacity(rows.len());
    for (row_index, row) in rows.iter().enumerate() {
        let row = &row.content;
        if row.len() != columns.len() {
            return Err(KalamError::invalid_sql(format!(
                "row {} of the INSERT has {} values for {} columns",
                row_index + 1,
                row.len(),
                columns.len()
            )));
        }
        let mut values = Vec::with_capacity(row.len());
        for (expr, &c) in row.iter().zip(columns) {
            let Some(literal) = expr_literal(ctx, expr)? else {
                return Ok(None);
            };
            let column = &table.columns[c];
            values.push(
                literal.to_value(&column.data_type).map_err(|e| {
                    KalamError::new(e.code, format!("column '{}': {}", column.name, e.message))
                })?,
            );
        }
        out.push(values);
    }
    Ok(Some(out))
}

fn expr_literal(ctx: &StatementContext<'_>, expr: &Expr) -> KalamResult<Option<Literal>> {
    if let Expr::Value(v) = expr
        && let ast::Value::Placeholder(name) = &v.value
    {
        let index: usize = name.trim_start_matches('$').parse().map_err(|_| {
            KalamError::new(
                ErrorCode::InvalidParameter,
                format!("unsupported placeholder {name}"),
            )
        })?;
        return ctx
            .params
            .get(index.wrapping_sub(1))
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                KalamError::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "no value for parameter {name}: the request has {} params",
                        ctx.params.len()
                    ),
                )
            });
    }
    Ok(kalamdb_sql::literal(expr))
}

/// A proposed row that hit an existing key under `ON CONFLICT DO UPDATE`.
struct Conflict {
    key: Value,
    /// The `_seq` of the existing row the update is computed from.
    seq: u64,
    existing: Vec<Value>,
    proposed: Vec<Value>,
}

async fn insert_rows(
    ctx: &StatementContext<'_>,
    insert: &Insert,
    attempt: &Attempt<'_>,
) -> KalamResult<Option<StatementResult>> {
    let TableObject::TableName(name) = &insert.table else {
        return Err(KalamError::unsupported(
            "INSERT INTO a table function is not supported",
        ));
    };
    let table = target_table(ctx, name)?;
    let alias = insert.table_alias.as_ref().map(|a| &a.alias);
    let on_conflict = match &insert.on {
        None => None,
        Some(OnInsert::OnConflict(c)) => {
            if let Some(target) = &c.conflict_target {
                check_conflict_target(&table, target)?;
            }
            Some(&c.action)
        }
        Some(other) => {
            return Err(KalamError::unsupported(format!(
                "{other} is not supported; use ON CONFLICT"
            )));
        }
    };
    let source = insert
        .source
        .as_ref()
        .ok_or_else(|| KalamError::invalid_sql("INSERT needs VALUES or a query"))?;
    let columns = insert_columns(&table, &insert.columns)?;
    refuse_always_identity(&table, &columns)?;
    let (source_rows, _charge) = insert_source(ctx, &table, &columns, source).await?;
    let scope = scope_of(ctx, &table);
    let now = now_micros();
    let pk_index = table
        .primary_key
        .and_then(|pk| table.columns.iter().position(|c| c.id == pk));
    // Where each column's value is in a source row (in the order the INSERT names
    // the columns); columns it does not name take their defaults.
    let mut source_of: Vec<Option<usize>> = vec![None; table.columns.len()];
    for (position, &c) in columns.iter().enumerate() {
        source_of[c] = Some(position);
    }
    let mut seen = HashSet::with_capacity(source_rows.len());
    let mut rows: Vec<(Value, Vec<Value>)> = Vec::with_capacity(source_rows.len());
    for source_row in source_rows {
        let mut source_row: Vec<Option<Value>> = source_row.into_iter().map(Some).collect();
        let values: Vec<Value> = source_of
            .iter()
            .zip(&table.columns)
            .map(|(named, column)| match named {
                Some(position) => Ok(source_row[*position].take().unwrap_or(Value::Null)),
                None => default_value(ctx.db, &ctx.caller.username, table.table_id, column, now),
            })
            .collect::<KalamResult<_>>()?;
        check_values(&table, &values)?;
        let key = match pk_index {
            Some(i) => values[i].clone(),
            None => Value::BigInt(crate::seq::seq_as_i64(ctx.db.seq.next()?)),
        };
        let mut encoded = Vec::new();
        encode_value(&key, &mut encoded);
        if !seen.insert(encoded) {
            match on_conflict {
                None => return Err(duplicate_key(&table, &key)),
                Some(OnConflictAction::DoNothing) => continue,
                Some(OnConflictAction::DoUpdate(_)) => {
                    return Err(KalamError::new(
                        ErrorCode::DuplicateKey,
                        format!(
                            "ON CONFLICT DO UPDATE cannot change the row with key {} twice in one statement",
                            key.display()
                        ),
                    ));
                }
            }
        }
        rows.push((key, values));
    }
    let mut writes = Vec::with_capacity(rows.len());
    let mut updates = 0;
    if let Some(OnConflictAction::DoUpdate(update)) = on_conflict {
        refuse_stream_update(&table)?;
        // The keys that hold a row now are updated from it; the commit checks that
        // neither those rows nor the absence of the others changed meanwhile.
        // Entries and the versions they name are read from one view (under the
        // tiers' lock, so a flush cannot move a version out from under it): a write
        // committed in between could otherwise replace a version after its entry
        // was read.
        let scoped =
            crate::scoped::ScopedTable::with_scope(ctx.db.tiers.clone(), table.clone(), scope.clone(), false);
        let keys: Vec<Value> = rows.iter().map(|(k, _)| k.clone()).collect();
        let latest = scoped.live_versions(&keys)?;
        let mut conflicts = Vec::new();
        for ((key, values), latest) in rows.into_iter().zip(latest) {
            match latest {
                Some((seq, existing)) => conflicts.push(Conflict {
                    existing: row_values(&table, existing),
                    seq,
                    key,
                    proposed: values,
                }),
                None => writes.push(PendingWrite {
                    row: encode_new_row(&table, &key, &values),
                    key,
                    expect: Expect::Absent(OnLive::Retry),
                    deleted: false,
                    values,
                }),
            }
        }
        if !conflicts.is_empty() {
            let updated = upsert(ctx, &table, alias, conflicts, update).await?;
            updates = updated.len();
            writes.extend(updated);
        }
    } else {
        let on_live = match on_conflict {
            None => OnLive::Fail,
            Some(_) => OnLive::Skip,
        };
        writes.extend(rows.into_iter().map(|(key, values)| PendingWrite {
            row: encode_new_row(&table, &key, &values),
            key,
            expect: Expect::Absent(on_live),
            deleted: false,
            values,
        }));
    }
    if insert.returning.is_none() {
        // Only RETURNING reads the values back: the encoded rows are what commits.
        for write in &mut writes {
            write.values = Vec::new();
        }
    }
    let Some(written) = commit_writes(ctx, attempt, &table, &scope, &writes).await? else {
        return Ok(None);
    };
    let applied = written.iter().filter(|w| **w).count();
    let (inserted, updated) = (applied - updates, updates);
    let message = match updated {
        0 => format!("Inserted {inserted} row(s)"),
        n => format!("Inserted {inserted} row(s), updated {n} row(s)"),
    };
    let returned = writes
        .into_iter()
        .zip(written)
        .filter_map(|(write, applied)| applied.then_some(write.values));
    finish(ctx, &table, alias, insert.returning.as_deref(), returned, message)
        .await
        .map(Some)
}

/// The statement's answer: `message` and the number of rows it wrote, or with
/// `RETURNING`, its items evaluated over `rows` (the new rows of INSERT and UPDATE,
/// the deleted rows of DELETE).
async fn finish(
    ctx: &StatementContext<'_>,
    table: &TableDef,
    alias: Option<&Ident>,
    returning: Option<&[SelectItem]>,
    rows: impl Iterator<Item = Vec<Value>>,
    message: String,
) -> KalamResult<StatementResult> {
    let Some(items) = returning else {
        return Ok(StatementResult::affected(rows.count(), message));
    };
    let rows: Vec<Vec<Value>> = rows.collect();
    let state = scratch_session(ctx.db, table, table_batch(table, &rows, Vec::new())?)?;
    let query = dml_query::select(
        items.to_vec(),
        vec![dml_query::table(&[&table.name], alias)],
        None,
    );
    let output = Box::pin(run_statement(&state, query, ctx.params)).await?;
    let mut result = StatementResult::rows(output.schema, output.batches, ctx.db.options.max_result_bytes)?;
    result.message = Some(message);
    Ok(result)
}

/// `rows` (values in `table.columns` order) as one batch whose columns carry the
/// table's column names, followed by `extra` columns.
fn table_batch(
    table: &TableDef,
    rows: &[Vec<Value>],
    extra: Vec<(Field, ArrayRef)>,
) -> KalamResult<RecordBatch> {
    let mut fields = Vec::with_capacity(table.columns.len() + extra.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
    for (i, column) in table.columns.iter().enumerate() {
        let values: Vec<Value> = rows.iter().map(|row| row[i].clone()).collect();
        fields.push(field(&column.name, &column.data_type, true));
        arrays.push(values_to_array(&column.data_type, &values));
    }
    for (f, array) in extra {
        fields.push(f);
        arrays.push(array);
    }
    RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        arrays,
    )
    .map_err(|e| KalamError::internal(format!("DML batch: {e}")))
}

fn check_conflict_target(table: &TableDef, target: &ast::ConflictTarget) -> KalamResult<()> {
    let ast::ConflictTarget::Columns(columns) = target else {
        return Err(KalamError::unsupported(
            "ON CONFLICT ON CONSTRAINT is not supported; name the key column",
        ));
    };
    let pk = table.pk_column().map(|c| c.name.as_str());
    match columns.as_slice() {
        [column] if Some(ident_name(column).as_str()) == pk => Ok(()),
        _ => Err(KalamError::invalid_sql(format!(
            "ON CONFLICT must name the primary key column of '{}'{}",
            table.qualified_name(),
            pk.map(|p| format!(" ({p})")).unwrap_or_default()
        ))),
    }
}

/// A statement that would write two new versions of one row (its SET or its
/// source yields several rows for one key): refused, nothing written.
fn written_twice(table: &TableDef, key: &Value, statement: &str) -> KalamError {
    let name = table.pk_column().map(|c| c.name.as_str()).unwrap_or(ID_COLUMN);
    KalamError::new(
        ErrorCode::DuplicateKey,
        format!(
            "{statement} would write the row {name} = {} of '{}' twice (a set-returning expression, or a FROM that matches it more than once, yields several rows for it); nothing was written",
            key.display(),
            table.qualified_name()
        ),
    )
}

/// The values of a stored row version in `table.columns` order (a column the
/// version lacks reads as its backfill).
fn row_values(table: &TableDef, row: kalamdb_store::DecodedRow) -> Vec<Value> {
    let cells: HashMap<u32, Value> = row.cells.into_iter().collect();
    table
        .columns
        .iter()
        .map(|c| cells.get(&c.id).cloned().unwrap_or_else(|| c.backfill_value()))
        .collect()
}

/// Evaluates `ON CONFLICT DO UPDATE SET ... [WHERE ...]` for every conflicting row
/// in one DataFusion query over a temporary table: the table's columns hold the
/// existing values, `__excluded_<col>` the proposed ones (`EXCLUDED.col` is rewritten
/// to it). Returns the updates, each expecting the row version it was computed from.
async fn upsert(
    ctx: &StatementContext<'_>,
    table: &TableDef,
    alias: Option<&Ident>,
    conflicts: Vec<Conflict>,
    update: &ast::DoUpdate,
) -> KalamResult<Vec<PendingWrite>> {
    let assignments = assignments(table, &update.assignments)?;
    let existing: Vec<Vec<Value>> = conflicts.iter().map(|c| c.existing.clone()).collect();
    let mut extra = Vec::with_capacity(table.columns.len() + 1);
    for (i, column) in table.columns.iter().enumerate() {
        let proposed: Vec<Value> = conflicts.iter().map(|c| c.proposed[i].clone()).collect();
        extra.push((
            field(&format!("__excluded_{}", column.name), &column.data_type, true),
            values_to_array(&column.data_type, &proposed),
        ));
    }
    let row_ids: Vec<Value> = (0..conflicts.len()).map(|i| Value::BigInt(i as i64)).collect();
    extra.push((
        field("__kalam_row", &KalamType::BigInt, false),
        values_to_array(&KalamType::BigInt, &row_ids),
    ));
    let state = scratch_session(ctx.db, table, table_batch(table, &existing, extra)?)?;

    let mut projection = vec![dml_query::aliased(
        dml_query::column(&[], "__kalam_row"),
        "__kalam_row",
    )];
    for (i, column) in table.columns.iter().enumerate() {
        let expr = match assignments.get(&i) {
            Some(expr) => {
                let mut expr = expr.clone();
                let _ = expr.visit(&mut ExcludedRewriter);
                expr
            }
            None => dml_query::column(&[], &column.name),
        };
        projection.push(dml_query::aliased(expr, &format!("__kalam_c{i}")));
    }
    let selection = update.selection.clone().map(|mut selection| {
        let _ = selection.visit(&mut ExcludedRewriter);
        selection
    });
    let query = dml_query::select(
        projection,
        vec![dml_query::table(&[&table.name], alias)],
        selection,
    );
    let output = Box::pin(run_statement(&state, query, ctx.params)).await?;
    let targets: Vec<&ColumnDef> = table.columns.iter().collect();
    let mut updates = Vec::new();
    let mut written = HashSet::new();
    for batch in &output.batches {
        let indexes = column_values(batch.column(0), &KalamType::BigInt, "__kalam_row")?;
        for (index, values) in indexes.into_iter().zip(batch_rows(batch, 1, &targets)?) {
            let Value::BigInt(index) = index else {
                return Err(KalamError::internal("upsert row index is NULL"));
            };
            let conflict = conflicts
                .get(index as usize)
                .ok_or_else(|| KalamError::internal("upsert row index out of range"))?;
            if !written.insert(index) {
                return Err(written_twice(table, &conflict.key, "ON CONFLICT DO UPDATE"));
            }
            check_values(table, &values)?;
            updates.push(PendingWrite {
                row: encode_new_row(table, &conflict.key, &values),
                key: conflict.key.clone(),
                expect: Expect::Version(conflict.seq),
                deleted: false,
                values,
            });
        }
    }
    Ok(updates)
}

/// A session whose only table is `batch`, registered as `table` (in a schema named
/// after its namespace, the default one, so `t.col` and `ns.t.col` both resolve).
fn scratch_session<'a>(
    db: &'a Engine,
    table: &TableDef,
    batch: RecordBatch,
) -> KalamResult<StatementSession<'a>> {
    let internal = |e: datafusion::error::DataFusionError| KalamError::internal(e.to_string());
    let schema = Arc::new(MemorySchemaProvider::new());
    let mem = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(internal)?;
    schema
        .register_table(table.name.clone(), Arc::new(mem))
        .map_err(internal)?;
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog
        .register_schema(&table.namespace, schema)
        .map_err(internal)?;
    let catalogs = Arc::new(MemoryCatalogProviderList::new());
    catalogs.register_catalog("scratch".to_string(), catalog);
    StatementSession::new(db, catalogs, "scratch", &table.namespace)
}

/// `EXCLUDED.col` → `__excluded_col`.
struct ExcludedRewriter;

impl VisitorMut for ExcludedRewriter {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> std::ops::ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = expr
            && parts.len() == 2
            && parts[0].value.eq_ignore_ascii_case("excluded")
        {
            *expr = Expr::Identifier(Ident::with_quote(
                '"',
                format!("__excluded_{}", ident_name(&parts[1])),
            ));
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// `SET` targets as column index → expression; the key column cannot change.
fn assignments(table: &TableDef, list: &[ast::Assignment]) -> KalamResult<HashMap<usize, Expr>> {
    let mut out = HashMap::new();
    for assignment in list {
        let AssignmentTarget::ColumnName(name) = &assignment.target else {
            return Err(KalamError::unsupported(
                "SET (a, b) = ... is not supported; assign each column",
            ));
        };
        let ident = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .ok_or_else(|| KalamError::invalid_sql(format!("invalid column {name}")))?;
        let column = ident_name(ident);
        if is_hidden(&column) {
            return Err(KalamError::invalid_sql(format!(
                "hidden column '{column}' cannot be assigned"
            )));
        }
        let index = column_index(table, &column)?;
        if table.columns[index].default == Some(DefaultValue::Identity { always: true }) {
            return Err(KalamError::invalid_sql(format!(
                "column '{column}' is GENERATED ALWAYS AS IDENTITY: an UPDATE cannot change it"
            )));
        }
        if table.primary_key == Some(table.columns[index].id) {
            return Err(KalamError::unsupported(format!(
                "the primary key column '{column}' cannot be updated; delete and insert instead"
            )));
        }
        if out.insert(index, assignment.value.clone()).is_some() {
            return Err(KalamError::invalid_sql(format!(
                "column '{column}' is assigned twice"
            )));
        }
    }
    Ok(out)
}

/// The name of the key column (`_id` for a table without a primary key).
fn key_name(table: &TableDef) -> &str {
    table.pk_column().map(|c| c.name.as_str()).unwrap_or(ID_COLUMN)
}

fn key_type(table: &TableDef) -> KalamType {
    table
        .pk_column()
        .map(|c| c.data_type)
        .unwrap_or(KalamType::BigInt)
}

/// Runs the query that finds the rows a DML statement touches, with the `_seq`
/// of each (the commit checks that they are still the latest versions), handing
/// its batches to `each` as they stream: a statement holds its pending writes, not
/// the query's result.
async fn affected_rows(
    ctx: &StatementContext<'_>,
    query: Statement,
    each: impl FnMut(&RecordBatch) -> KalamResult<()>,
) -> KalamResult<()> {
    Box::pin(run_query_batches(
        &ctx.db.query,
        ctx.caller,
        ctx.namespace,
        query,
        ctx.params,
        each,
    ))
    .await
}

/// A statement writes at most `max_write_rows` rows (its writes are held in memory
/// until its one atomic commit).
fn check_write_size(ctx: &StatementContext<'_>, rows: usize, statement: &str) -> KalamResult<()> {
    let max = ctx.db.options.max_write_rows;
    if rows > max {
        return Err(KalamError::new(
            ErrorCode::ResourcesExhausted,
            format!(
                "{statement} would write more than max_write_rows ({max}) rows in one atomic statement; narrow its WHERE or split it"
            ),
        ));
    }
    Ok(())
}

/// `_seq` and key of each row of an affected-rows batch (its first two columns).
fn seqs_and_keys(table: &TableDef, batch: &RecordBatch) -> KalamResult<Vec<(u64, Value)>> {
    let seqs = column_values(batch.column(0), &KalamType::BigInt, SEQ_COLUMN)?;
    let keys = column_values(batch.column(1), &key_type(table), key_name(table))?;
    seqs.into_iter()
        .zip(keys)
        .map(|(seq, key)| match seq {
            Value::BigInt(seq) => u64::try_from(seq)
                .map(|seq| (seq, key))
                .map_err(|_| KalamError::internal(format!("negative _seq {seq}"))),
            _ => Err(KalamError::internal("_seq is NULL")),
        })
        .collect()
}

/// The SELECT list that reads the affected rows' `_seq` and key, qualified with
/// the target's alias or name.
fn seq_and_key(table: &TableDef, qualifier: &[Ident]) -> Vec<SelectItem> {
    vec![
        dml_query::aliased(dml_query::column(qualifier, SEQ_COLUMN), "__kalam_seq"),
        dml_query::aliased(dml_query::column(qualifier, key_name(table)), "__kalam_key"),
    ]
}

/// `UPDATE t [AS a] SET ... [FROM ...] [WHERE ...] [RETURNING ...]`: one query
/// reads each affected row's `_seq`, key and new values.
async fn update_rows(
    ctx: &StatementContext<'_>,
    table: Arc<TableDef>,
    update: &ast::Update,
    attempt: &Attempt<'_>,
) -> KalamResult<Option<StatementResult>> {
    refuse_stream_update(&table)?;
    let assigned = assignments(&table, &update.assignments)?;
    let qualifier = dml_query::qualifier_of(&update.table.relation);
    let mut projection = seq_and_key(&table, &qualifier);
    for (i, column) in table.columns.iter().enumerate() {
        let expr = match assigned.get(&i) {
            Some(expr) => expr.clone(),
            None => dml_query::column(&qualifier, &column.name),
        };
        projection.push(dml_query::aliased(expr, &format!("__kalam_c{i}")));
    }
    let mut from = vec![update.table.clone()];
    match &update.from {
        Some(UpdateTableFromKind::AfterSet(tables) | UpdateTableFromKind::BeforeSet(tables)) => {
            from.extend(tables.iter().cloned())
        }
        None => {}
    }
    let query = dml_query::select(projection, from, update.selection.clone());
    let targets: Vec<&ColumnDef> = table.columns.iter().collect();
    let returning = update.returning.is_some();
    let mut writes = Vec::new();
    let mut written = HashSet::new();
    let charge = crate::budget::charge_current(&ctx.db.query_runtime, "the rows this UPDATE writes")?;
    affected_rows(ctx, query, |batch| {
        for ((seq, key), values) in seqs_and_keys(&table, batch)?
            .into_iter()
            .zip(batch_rows(batch, 2, &targets)?)
        {
            // A set-returning SET (`v = unnest(...)`) or a FROM that joins one row
            // several times yields several new rows for one row: refused.
            if !written.insert(seq) {
                return Err(written_twice(&table, &key, "UPDATE"));
            }
            check_values(&table, &values)?;
            let write = PendingWrite {
                row: encode_new_row(&table, &key, &values),
                key,
                expect: Expect::Version(seq),
                deleted: false,
                values: if returning { values } else { Vec::new() },
            };
            charge.grow(pending_bytes(&write))?;
            writes.push(write);
            check_write_size(ctx, writes.len(), "UPDATE")?;
        }
        Ok(())
    })
    .await?;
    let returning = update.returning.as_deref();
    commit_and_answer(
        ctx,
        &table,
        &update.table.relation,
        returning,
        writes,
        attempt,
        "Updated",
    )
    .await
}

/// Commits an UPDATE's or DELETE's writes and answers: `None` when the statement
/// must run again.
async fn commit_and_answer(
    ctx: &StatementContext<'_>,
    table: &Arc<TableDef>,
    target: &TableFactor,
    returning: Option<&[SelectItem]>,
    writes: Vec<PendingWrite>,
    attempt: &Attempt<'_>,
    done: &str,
) -> KalamResult<Option<StatementResult>> {
    let scope = scope_of(ctx, table);
    if commit_writes(ctx, attempt, table, &scope, &writes)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let message = format!("{done} {} row(s)", writes.len());
    let rows = writes.into_iter().map(|w| w.values);
    finish(ctx, table, table_alias(target), returning, rows, message)
        .await
        .map(Some)
}

/// `DELETE FROM t [AS a] [USING ...] [WHERE ...] [RETURNING ...]`.
async fn delete_rows(
    ctx: &StatementContext<'_>,
    table: Arc<TableDef>,
    target: &TableWithJoins,
    delete: &ast::Delete,
    attempt: &Attempt<'_>,
) -> KalamResult<Option<StatementResult>> {
    let qualifier = dml_query::qualifier_of(&target.relation);
    let mut projection = seq_and_key(&table, &qualifier);
    // RETURNING answers with the deleted rows: read them too.
    if delete.returning.is_some() {
        for (i, column) in table.columns.iter().enumerate() {
            projection.push(dml_query::aliased(
                dml_query::column(&qualifier, &column.name),
                &format!("__kalam_c{i}"),
            ));
        }
    }
    let mut from = vec![target.clone()];
    from.extend(delete.using.iter().flatten().cloned());
    let query = dml_query::select(projection, from, delete.selection.clone());
    let targets: Vec<&ColumnDef> = match delete.returning {
        Some(_) => table.columns.iter().collect(),
        None => Vec::new(),
    };
    let mut writes = Vec::new();
    let mut written = HashSet::new();
    let charge = crate::budget::charge_current(&ctx.db.query_runtime, "the rows this DELETE writes")?;
    affected_rows(ctx, query, |batch| {
        for ((seq, key), values) in seqs_and_keys(&table, batch)?
            .into_iter()
            .zip(batch_rows(batch, 2, &targets)?)
        {
            // USING may match one row several times: it is deleted once.
            if !written.insert(seq) {
                continue;
            }
            let write = PendingWrite {
                row: encode_tombstone(&table, &key),
                key,
                expect: Expect::Version(seq),
                deleted: true,
                values,
            };
            charge.grow(pending_bytes(&write))?;
            writes.push(write);
            check_write_size(ctx, writes.len(), "DELETE")?;
        }
        Ok(())
    })
    .await?;
    let returning = delete.returning.as_deref();
    commit_and_answer(
        ctx,
        &table,
        &target.relation,
        returning,
        writes,
        attempt,
        "Deleted",
    )
    .await
}

fn table_alias(relation: &TableFactor) -> Option<&Ident> {
    match relation {
        TableFactor::Table { alias, .. } => alias.as_ref().map(|a| &a.name),
        _ => None,
    }
}
