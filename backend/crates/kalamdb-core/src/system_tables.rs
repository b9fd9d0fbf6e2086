//! The read-only `system.*` tables, built from the catalog when a statement names them.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result as DfResult;
use kalamdb_commons::{Role, TableType};

use crate::{Caller, DbShared};

pub const NAMES: &[&str] = &[
    "namespaces",
    "tables",
    "columns",
    "indexes",
    "users",
    "jobs",
    "live",
];

/// The batch of `system.<name>` as `caller` may see it; `None` for an unknown name.
pub(crate) fn build(db: &DbShared, caller: &Caller, name: &str) -> DfResult<Option<RecordBatch>> {
    Ok(Some(match name {
        "namespaces" => namespaces(db)?,
        "tables" => tables(db)?,
        "columns" => columns(db)?,
        "indexes" => indexes(db)?,
        "users" => users(db, caller)?,
        "jobs" => jobs(db, caller)?,
        "live" => live(db, caller)?,
        _ => return Ok(None),
    }))
}

fn text(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn opt_text(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn timestamps(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values))
}

fn timestamp_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), false)
}

fn batch(fields: Vec<Field>, arrays: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

fn namespaces(db: &DbShared) -> DfResult<RecordBatch> {
    let namespaces = db.catalog.namespaces();
    let tables = db.catalog.tables();
    let counts: Vec<i64> = namespaces
        .iter()
        .map(|ns| tables.iter().filter(|t| t.namespace == ns.name).count() as i64)
        .collect();
    batch(
        vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("table_count", DataType::Int64, false),
            timestamp_field("created_at"),
        ],
        vec![
            text(namespaces.iter().map(|n| n.name.clone()).collect()),
            Arc::new(Int64Array::from(counts)),
            timestamps(namespaces.iter().map(|n| n.created_at).collect()),
        ],
    )
}

fn tables(db: &DbShared) -> DfResult<RecordBatch> {
    let tables = db.catalog.tables();
    batch(
        vec![
            Field::new("namespace", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("table_type", DataType::Utf8, false),
            Field::new("table_id", DataType::Int64, false),
            Field::new("primary_key", DataType::Utf8, true),
            Field::new("flush_policy", DataType::Utf8, true),
            Field::new("ttl_seconds", DataType::Int64, true),
            Field::new("access_level", DataType::Utf8, true),
            Field::new("schema_version", DataType::Int32, false),
            timestamp_field("created_at"),
        ],
        vec![
            text(tables.iter().map(|t| t.namespace.clone()).collect()),
            text(tables.iter().map(|t| t.name.clone()).collect()),
            text(tables.iter().map(|t| t.table_type.as_str().to_string()).collect()),
            Arc::new(Int64Array::from(
                tables.iter().map(|t| t.table_id as i64).collect::<Vec<_>>(),
            )),
            opt_text(
                tables
                    .iter()
                    .map(|t| t.pk_column().map(|c| c.name.clone()))
                    .collect(),
            ),
            opt_text(
                tables
                    .iter()
                    .map(|t| t.flush_policy.map(|p| p.to_string()))
                    .collect(),
            ),
            Arc::new(Int64Array::from(
                tables
                    .iter()
                    .map(|t| t.ttl_seconds.map(|s| s as i64))
                    .collect::<Vec<_>>(),
            )),
            opt_text(
                tables
                    .iter()
                    .map(|t| match t.table_type {
                        TableType::Shared => Some(
                            match t.access_level {
                                Some(crate::catalog::AccessLevel::Public) => "public",
                                _ => "private",
                            }
                            .to_string(),
                        ),
                        _ => None,
                    })
                    .collect(),
            ),
            Arc::new(Int32Array::from(
                tables.iter().map(|t| t.schema_version as i32).collect::<Vec<_>>(),
            )),
            timestamps(tables.iter().map(|t| t.created_at).collect()),
        ],
    )
}

fn columns(db: &DbShared) -> DfResult<RecordBatch> {
    let mut ns = Vec::new();
    let mut table_names = Vec::new();
    let mut names = Vec::new();
    let mut positions = Vec::new();
    let mut types = Vec::new();
    let mut nullable = Vec::new();
    let mut pk = Vec::new();
    let mut defaults = Vec::new();
    let mut indexed_by = Vec::new();
    for table in db.catalog.tables() {
        for (i, column) in table.columns.iter().enumerate() {
            let covering: Vec<&str> = table
                .indexes
                .iter()
                .filter(|index| index.columns.contains(&column.id))
                .map(|index| index.name.as_str())
                .collect();
            indexed_by.push((!covering.is_empty()).then(|| covering.join(", ")));
            ns.push(table.namespace.clone());
            table_names.push(table.name.clone());
            names.push(column.name.clone());
            positions.push(i as i32 + 1);
            types.push(column.data_type.sql_name());
            nullable.push(column.nullable);
            pk.push(table.primary_key == Some(column.id));
            defaults.push(column.default.as_ref().map(|d| d.sql()));
        }
    }
    batch(
        vec![
            Field::new("namespace", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("column_name", DataType::Utf8, false),
            Field::new("ordinal_position", DataType::Int32, false),
            Field::new("data_type", DataType::Utf8, false),
            Field::new("is_nullable", DataType::Boolean, false),
            Field::new("is_primary_key", DataType::Boolean, false),
            Field::new("column_default", DataType::Utf8, true),
            Field::new("indexes", DataType::Utf8, true),
        ],
        vec![
            text(ns),
            text(table_names),
            text(names),
            Arc::new(Int32Array::from(positions)),
            text(types),
            Arc::new(BooleanArray::from(nullable)),
            Arc::new(BooleanArray::from(pk)),
            opt_text(defaults),
            opt_text(indexed_by),
        ],
    )
}

/// One row per secondary index.
fn indexes(db: &DbShared) -> DfResult<RecordBatch> {
    let (mut ns, mut tables, mut names, mut columns, mut unique, mut created) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for table in db.catalog.tables() {
        for index in &table.indexes {
            ns.push(table.namespace.clone());
            tables.push(table.name.clone());
            names.push(index.name.clone());
            let column_names: Vec<&str> = index
                .columns
                .iter()
                .filter_map(|id| table.columns.iter().find(|c| c.id == *id))
                .map(|c| c.name.as_str())
                .collect();
            columns.push(column_names.join(", "));
            unique.push(index.unique);
            created.push(index.created_at);
        }
    }
    batch(
        vec![
            Field::new("namespace", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("index_name", DataType::Utf8, false),
            Field::new("columns", DataType::Utf8, false),
            Field::new("is_unique", DataType::Boolean, false),
            timestamp_field("created_at"),
        ],
        vec![
            text(ns),
            text(tables),
            text(names),
            text(columns),
            Arc::new(BooleanArray::from(unique)),
            timestamps(created),
        ],
    )
}

/// Never shows password hashes; a `user` sees only its own row.
fn users(db: &DbShared, caller: &Caller) -> DfResult<RecordBatch> {
    let users: Vec<_> = db
        .catalog
        .users()
        .into_iter()
        .filter(|u| caller.role >= Role::Service || u.user_id == caller.user_id)
        .collect();
    batch(
        vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("username", DataType::Utf8, false),
            Field::new("role", DataType::Utf8, false),
            timestamp_field("created_at"),
            timestamp_field("updated_at"),
        ],
        vec![
            text(users.iter().map(|u| u.user_id.to_string()).collect()),
            text(users.iter().map(|u| u.username.clone()).collect()),
            text(users.iter().map(|u| u.role.as_str().to_string()).collect()),
            timestamps(users.iter().map(|u| u.created_at).collect()),
            timestamps(users.iter().map(|u| u.updated_at).collect()),
        ],
    )
}

/// `system.jobs`, for role `service` and above (job metrics count every user's rows).
/// Active live-query subscriptions: a user's own, every one for dba and above.
fn live(db: &DbShared, caller: &Caller) -> DfResult<RecordBatch> {
    let rows = db.live.list(caller);
    batch(
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("subscription", DataType::Utf8, false),
            Field::new("connection", DataType::Int64, false),
            Field::new("username", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("sql", DataType::Utf8, false),
            timestamp_field("created_at"),
            Field::new("changes_sent", DataType::Int64, false),
        ],
        vec![
            text(rows.iter().map(|r| r.id.clone()).collect()),
            text(rows.iter().map(|r| r.subscription.clone()).collect()),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.connection))),
            text(rows.iter().map(|r| r.user.clone()).collect()),
            text(rows.iter().map(|r| r.table.clone()).collect()),
            text(rows.iter().map(|r| r.sql.clone()).collect()),
            timestamps(rows.iter().map(|r| r.created_at).collect()),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.changes_sent))),
        ],
    )
}

fn jobs(db: &DbShared, caller: &Caller) -> DfResult<RecordBatch> {
    if caller.role < Role::Service {
        return Err(datafusion::error::DataFusionError::External(Box::new(
            kalamdb_commons::KalamError::new(
                kalamdb_commons::ErrorCode::PermissionDenied,
                format!(
                    "role '{}' may not read system.jobs; it needs role 'service' or higher",
                    caller.role.as_str()
                ),
            ),
        )));
    }
    let jobs = crate::jobs::all_records(db)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let ts = |name: &str| Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), true);
    let int = |values: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(values)) };
    let opt_ts = |values: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(values)) };
    batch(
        vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("job_type", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("namespace", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("trigger", DataType::Utf8, false),
            timestamp_field("created_at"),
            ts("started_at"),
            ts("finished_at"),
            Field::new("duration_ms", DataType::Int64, true),
            Field::new("rows_flushed", DataType::Int64, false),
            Field::new("users_flushed", DataType::Int64, false),
            Field::new("files_written", DataType::Int64, false),
            Field::new("bytes_written", DataType::Int64, false),
            Field::new("progress", DataType::Float64, false),
            crate::arrow_conv::field("result", &kalamdb_commons::KalamType::Json, true),
            Field::new("error_message", DataType::Utf8, true),
        ],
        vec![
            text(jobs.iter().map(|j| j.job_id.clone()).collect()),
            text(jobs.iter().map(|j| j.job_type.clone()).collect()),
            text(jobs.iter().map(|j| j.status.as_str().to_string()).collect()),
            text(jobs.iter().map(|j| j.namespace.clone()).collect()),
            text(jobs.iter().map(|j| j.table_name.clone()).collect()),
            text(jobs.iter().map(|j| j.trigger.as_str().to_string()).collect()),
            timestamps(jobs.iter().map(|j| j.created_at).collect()),
            opt_ts(jobs.iter().map(|j| j.started_at).collect()),
            opt_ts(jobs.iter().map(|j| j.finished_at).collect()),
            int(jobs.iter().map(|j| j.duration_ms()).collect()),
            int(jobs.iter().map(|j| Some(j.metrics.rows_flushed as i64)).collect()),
            int(jobs
                .iter()
                .map(|j| Some(j.metrics.users_flushed as i64))
                .collect()),
            int(jobs
                .iter()
                .map(|j| Some(j.metrics.files_written as i64))
                .collect()),
            int(jobs
                .iter()
                .map(|j| Some(j.metrics.bytes_written as i64))
                .collect()),
            Arc::new(Float64Array::from(
                jobs.iter().map(|j| j.progress).collect::<Vec<_>>(),
            )),
            opt_text(jobs.iter().map(|j| j.result_json()).collect()),
            opt_text(jobs.iter().map(|j| j.error_message.clone()).collect()),
        ],
    )
}
