//! The read-only `system.*` tables, built from the catalog when a statement names them.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result as DfResult;
use kalamdb_commons::TableType;

use crate::access::{Action, Caller, allows};
use crate::tiers::Tiers;

/// A `system.*` table: its rows as a caller may see them, built when a statement
/// names it.
pub(crate) trait SystemTable: Send + Sync {
    fn name(&self) -> &'static str;
    fn batch(&self, db: &Tiers, caller: &Caller) -> DfResult<RecordBatch>;
}

/// How a catalog table's batch is built.
type BuildFn = fn(&Tiers, &Caller) -> DfResult<RecordBatch>;

/// A system table of the catalog's.
struct CatalogTable(&'static str, BuildFn);

impl SystemTable for CatalogTable {
    fn name(&self) -> &'static str {
        self.0
    }

    fn batch(&self, db: &Tiers, caller: &Caller) -> DfResult<RecordBatch> {
        (self.1)(db, caller)
    }
}

/// The system tables, made at open: the catalog's, then the ones other parts
/// register (`system.jobs` by the job manager, `system.live` by the live-query hub).
pub(crate) struct SystemTables(Vec<Box<dyn SystemTable>>);

impl SystemTables {
    pub fn new(registered: Vec<Box<dyn SystemTable>>) -> Self {
        let catalog: [(&'static str, BuildFn); 7] = [
            ("namespaces", |db, _| namespaces(db)),
            ("tables", |db, _| tables(db)),
            ("columns", |db, _| columns(db)),
            ("indexes", |db, _| indexes(db)),
            ("users", users),
            ("storages", |db, _| crate::storages::system_table(db)),
            ("views", |db, _| views(db)),
        ];
        let mut tables: Vec<Box<dyn SystemTable>> = (catalog.into_iter())
            .map(|(name, build)| Box::new(CatalogTable(name, build)) as Box<dyn SystemTable>)
            .collect();
        tables.extend(registered);
        SystemTables(tables)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|t| t.name())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }

    /// The batch of `system.<name>` as `caller` may see it; `None` for an unknown name.
    pub fn build(&self, db: &Tiers, caller: &Caller, name: &str) -> DfResult<Option<RecordBatch>> {
        match self.0.iter().find(|t| t.name() == name) {
            Some(table) => table.batch(db, caller).map(Some),
            None => Ok(None),
        }
    }
}

pub(crate) fn text(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

pub(crate) fn opt_text(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

pub(crate) fn timestamps(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values))
}

pub(crate) fn timestamp_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), false)
}

pub(crate) fn batch(fields: Vec<Field>, arrays: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

fn namespaces(db: &Tiers) -> DfResult<RecordBatch> {
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

fn views(db: &Tiers) -> DfResult<RecordBatch> {
    let views = db.catalog.views();
    batch(
        vec![
            Field::new("namespace", DataType::Utf8, false),
            Field::new("view_name", DataType::Utf8, false),
            Field::new("definition", DataType::Utf8, false),
            timestamp_field("created_at"),
        ],
        vec![
            text(views.iter().map(|v| v.def.namespace.clone()).collect()),
            text(views.iter().map(|v| v.def.name.clone()).collect()),
            text(views.iter().map(|v| v.def.query.clone()).collect()),
            timestamps(views.iter().map(|v| v.def.created_at).collect()),
        ],
    )
}

fn tables(db: &Tiers) -> DfResult<RecordBatch> {
    let tables = db.catalog.tables();
    batch(
        vec![
            Field::new("namespace", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("table_type", DataType::Utf8, false),
            Field::new("table_id", DataType::Int64, false),
            Field::new("primary_key", DataType::Utf8, true),
            Field::new("flush_policy", DataType::Utf8, true),
            Field::new("compact_policy", DataType::Utf8, true),
            Field::new("storage", DataType::Utf8, true),
            Field::new("ttl_seconds", DataType::Int64, true),
            Field::new("access_level", DataType::Utf8, true),
            Field::new("schema_version", DataType::Int32, false),
            timestamp_field("created_at"),
            Field::new("comment", DataType::Utf8, true),
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
            opt_text(
                tables
                    .iter()
                    .map(|t| t.compact_segments.map(|n| format!("segments:{n}")))
                    .collect(),
            ),
            // Where a USER table's Parquet segments are; the others have none.
            opt_text(
                (tables.iter())
                    .map(|t| (t.table_type == TableType::User).then(|| t.storage_name().to_string()))
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
            opt_text(tables.iter().map(|t| t.comment.clone()).collect()),
        ],
    )
}

fn columns(db: &Tiers) -> DfResult<RecordBatch> {
    let mut ns = Vec::new();
    let mut table_names = Vec::new();
    let mut names = Vec::new();
    let mut positions = Vec::new();
    let mut types = Vec::new();
    let mut nullable = Vec::new();
    let mut pk = Vec::new();
    let mut defaults = Vec::new();
    let mut indexed_by = Vec::new();
    let mut comments = Vec::new();
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
            types.push(column.type_name());
            nullable.push(column.nullable);
            pk.push(table.primary_key == Some(column.id));
            defaults.push(column.default.as_ref().map(|d| d.sql()));
            comments.push(column.comment.clone());
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
            Field::new("comment", DataType::Utf8, true),
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
            opt_text(comments),
        ],
    )
}

/// One row per secondary index.
fn indexes(db: &Tiers) -> DfResult<RecordBatch> {
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
            let column_names: Vec<String> = (index.columns.iter().enumerate())
                .filter_map(|(i, id)| {
                    let column = table.columns.iter().find(|c| c.id == *id)?;
                    Some(match index.descending.get(i) {
                        Some(true) => format!("{} DESC", column.name),
                        _ => column.name.clone(),
                    })
                })
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
fn users(db: &Tiers, caller: &Caller) -> DfResult<RecordBatch> {
    let users: Vec<_> = db
        .catalog
        .users()
        .into_iter()
        .filter(|u| u.user_id == caller.user_id || allows(caller, Action::SeeEveryUser))
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
