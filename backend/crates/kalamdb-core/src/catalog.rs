//! The catalog: namespaces, tables and users, persisted in the `system` column family
//! and mirrored in memory for lookups without I/O.
//!
//! Every change is written to RocksDB first (inside the statement's batch) and applied
//! to the in-memory copy only after the batch committed, by the holder of the
//! DDL lock (and of the commit locks of the tables the change touches).

use std::collections::BTreeMap;
use std::sync::Arc;

use kalamdb_commons::{
    DefaultValue, ErrorCode, FlushPolicy, KalamError, KalamResult, KalamType, Literal, Role, TableType,
    UserId, Value,
};
use kalamdb_store::{Store, StoreBatch};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::base::store_error;

/// Column id 0 is the hidden `_id` of a table without a primary key.
pub const ID_COLUMN_ID: u32 = 0;
pub use kalamdb_commons::hidden::{DELETED_COLUMN, ID_COLUMN, SEQ_COLUMN};

/// The namespace that unqualified table names resolve to when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";
pub const SYSTEM_NAMESPACE: &str = "system";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceDef {
    pub name: String,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Stable id: the row codec's column id; never reused after DROP COLUMN.
    pub id: u32,
    pub name: String,
    pub data_type: KalamType,
    pub nullable: bool,
    pub default: Option<DefaultValue>,
    /// What rows written before this column existed read as (ADD COLUMN ... DEFAULT).
    pub backfill: Option<Literal>,
    /// `VARCHAR(n)` / `CHAR(n)`: the most characters a TEXT value may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<u32>,
    /// `COMMENT ON COLUMN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl ColumnDef {
    /// The column's type as SQL shows it (`VARCHAR(50)` for a TEXT column with a
    /// length).
    pub fn type_name(&self) -> String {
        match self.max_chars {
            Some(n) => format!("VARCHAR({n})"),
            None => self.data_type.sql_name().to_string(),
        }
    }

    /// What a row written before this column existed reads as.
    pub fn backfill_value(&self) -> Value {
        self.backfill
            .as_ref()
            .and_then(|literal| literal.to_value(&self.data_type).ok())
            .unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    Public,
    Private,
}

/// The name of the storage every table uses unless it names another: the data
/// directory's `storage/`.
pub const LOCAL_STORAGE: &str = "local";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableDef {
    pub table_id: u32,
    pub namespace: String,
    pub name: String,
    pub table_type: TableType,
    pub columns: Vec<ColumnDef>,
    /// Id of the primary-key column; `None`: rows are keyed by the hidden `_id`.
    pub primary_key: Option<u32>,
    pub next_column_id: u32,
    pub flush_policy: Option<FlushPolicy>,
    /// `COMPACT_POLICY = 'segments:N'`: a scope with more than N Parquet segments is
    /// compacted by the maintenance ticker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_segments: Option<u32>,
    /// `STORAGE = 'name'`: where the table's Parquet segments live (absent: `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub access_level: Option<AccessLevel>,
    pub created_at: i64,
    /// Grows with every ALTER TABLE.
    pub schema_version: u32,
    /// Secondary indexes (`CREATE INDEX`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexDef>,
    /// The id the next index gets (ids are never reused within a table).
    #[serde(default = "first_index_id")]
    pub next_index_id: u32,
    /// `COMMENT ON TABLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn first_index_id() -> u32 {
    1
}

/// A secondary index over hot rows (`docs/storage-format.md`, "Secondary indexes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    pub id: u32,
    /// Unique within the table's namespace.
    pub name: String,
    /// Column ids, in index order.
    pub columns: Vec<u32>,
    pub unique: bool,
    /// Per column, whether `CREATE INDEX` named it `DESC` (empty: all ascending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descending: Vec<bool>,
    pub created_at: i64,
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn pk_column(&self) -> Option<&ColumnDef> {
        let id = self.primary_key?;
        self.columns.iter().find(|c| c.id == id)
    }

    /// The storage of the table's Parquet segments.
    pub fn storage_name(&self) -> &str {
        self.storage.as_deref().unwrap_or(LOCAL_STORAGE)
    }

    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// `"ns"."table"`, quoted for generated SQL.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.namespace), quote_ident(&self.name))
    }
}

/// Double-quotes an identifier for generated SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: UserId,
    pub username: String,
    /// PHC string (argon2id); empty for a `root` without a password (loopback only).
    pub password_hash: String,
    pub role: Role,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A view (`CREATE VIEW`): a query, stored with every table name qualified, that
/// statements read as a derived table under their caller's rights and scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewDef {
    pub namespace: String,
    pub name: String,
    /// The query's SQL text.
    pub query: String,
    /// `CREATE VIEW v (a, b)`'s column names (empty: the query's own).
    #[serde(default)]
    pub columns: Vec<String>,
    /// The tables and views the query reads, (namespace, name).
    #[serde(default)]
    pub reads: Vec<(String, String)>,
    pub created_at: i64,
}

/// A view with its query parsed once.
pub struct View {
    pub def: ViewDef,
    pub query: kalamdb_sql::sqlparser::ast::Query,
}

impl View {
    /// The view with its stored query parsed (`INTERNAL_ERROR` when it does not parse).
    pub fn parse(def: ViewDef) -> KalamResult<View> {
        let parsed = kalamdb_sql::parse_sql_text(&def.query)
            .map_err(|e| KalamError::internal(format!("corrupt view {}.{}: {e}", def.namespace, def.name)))?;
        match parsed.into_iter().next() {
            Some(kalamdb_sql::sqlparser::ast::Statement::Query(query)) => Ok(View { def, query: *query }),
            _ => Err(KalamError::internal(format!(
                "corrupt view {}.{}: not a query",
                def.namespace, def.name
            ))),
        }
    }
}

#[derive(Default)]
struct CatalogState {
    views: BTreeMap<(String, String), Arc<View>>,
    namespaces: BTreeMap<String, NamespaceDef>,
    tables: BTreeMap<(String, String), Arc<TableDef>>,
    users: BTreeMap<String, UserRecord>,
    next_table_id: u32,
}

pub struct Catalog {
    state: RwLock<CatalogState>,
}

const NEXT_TABLE_ID_KEY: &str = "meta/next_table_id";

fn namespace_key(name: &str) -> String {
    format!("ns/{name}")
}

fn table_key(namespace: &str, name: &str) -> String {
    format!("table/{namespace}/{name}")
}

fn view_key(namespace: &str, name: &str) -> String {
    format!("view/{namespace}/{name}")
}

fn user_key(name: &str) -> String {
    format!("user/{name}")
}

fn load<T: for<'de> Deserialize<'de>>(store: &Store, prefix: &str) -> KalamResult<Vec<T>> {
    store
        .latest()
        .system_scan(prefix)
        .map_err(store_error)?
        .into_iter()
        .map(|(key, bytes)| {
            serde_json::from_slice(&bytes)
                .map_err(|e| KalamError::internal(format!("corrupt catalog record {key}: {e}")))
        })
        .collect()
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("catalog records serialize")
}

impl Catalog {
    pub fn load(store: &Store) -> KalamResult<Catalog> {
        let mut state = CatalogState {
            next_table_id: 1,
            ..Default::default()
        };
        for ns in load::<NamespaceDef>(store, "ns/")? {
            state.namespaces.insert(ns.name.clone(), ns);
        }
        for table in load::<TableDef>(store, "table/")? {
            state.next_table_id = state.next_table_id.max(table.table_id + 1);
            state
                .tables
                .insert((table.namespace.clone(), table.name.clone()), Arc::new(table));
        }
        for view in load::<ViewDef>(store, "view/")? {
            let key = (view.namespace.clone(), view.name.clone());
            // One view that no longer parses must not keep the server from starting:
            // it is left out (reads of it answer TABLE_NOT_FOUND) and logged.
            match View::parse(view) {
                Ok(view) => {
                    state.views.insert(key, Arc::new(view));
                }
                Err(e) => {
                    tracing::error!(view = %format!("{}.{}", key.0, key.1), "view left out: {}", e.message)
                }
            }
        }
        for user in load::<UserRecord>(store, "user/")? {
            state.users.insert(user.username.clone(), user);
        }
        if let Some(bytes) = store
            .latest()
            .system_get(NEXT_TABLE_ID_KEY)
            .map_err(store_error)?
        {
            let stored = bytes
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| KalamError::internal("corrupt meta/next_table_id"))?;
            state.next_table_id = state.next_table_id.max(stored);
        }
        Ok(Catalog {
            state: RwLock::new(state),
        })
    }

    pub fn namespace_exists(&self, name: &str) -> bool {
        self.state.read().namespaces.contains_key(name)
    }

    pub fn namespaces(&self) -> Vec<NamespaceDef> {
        self.state.read().namespaces.values().cloned().collect()
    }

    pub fn table(&self, namespace: &str, name: &str) -> Option<Arc<TableDef>> {
        self.state
            .read()
            .tables
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The table, or `NAMESPACE_NOT_FOUND` / `TABLE_NOT_FOUND`.
    pub fn require_table(&self, namespace: &str, name: &str) -> KalamResult<Arc<TableDef>> {
        if let Some(table) = self.table(namespace, name) {
            return Ok(table);
        }
        if !self.namespace_exists(namespace) {
            return Err(KalamError::new(
                ErrorCode::NamespaceNotFound,
                format!("namespace '{namespace}' does not exist"),
            ));
        }
        Err(KalamError::new(
            ErrorCode::TableNotFound,
            format!("table '{namespace}.{name}' does not exist"),
        ))
    }

    pub fn tables(&self) -> Vec<Arc<TableDef>> {
        self.state.read().tables.values().cloned().collect()
    }

    pub fn tables_in(&self, namespace: &str) -> Vec<Arc<TableDef>> {
        self.state
            .read()
            .tables
            .values()
            .filter(|t| t.namespace == namespace)
            .cloned()
            .collect()
    }

    pub fn view(&self, namespace: &str, name: &str) -> Option<Arc<View>> {
        self.state
            .read()
            .views
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn views(&self) -> Vec<Arc<View>> {
        self.state.read().views.values().cloned().collect()
    }

    /// The views whose query reads `namespace.name` (a table or a view).
    pub fn views_reading(&self, namespace: &str, name: &str) -> Vec<Arc<View>> {
        let read = (namespace.to_string(), name.to_string());
        (self.state.read().views.values())
            .filter(|v| v.def.reads.contains(&read))
            .cloned()
            .collect()
    }

    pub fn user(&self, name: &str) -> Option<UserRecord> {
        self.state.read().users.get(name).cloned()
    }

    pub fn users(&self) -> Vec<UserRecord> {
        self.state.read().users.values().cloned().collect()
    }

    /// Reserves a table id: written in `batch`, so an id is never reused.
    pub fn allocate_table_id(&self, batch: &mut StoreBatch<'_>) -> u32 {
        let mut state = self.state.write();
        let id = state.next_table_id;
        state.next_table_id += 1;
        batch.put_system(NEXT_TABLE_ID_KEY, &state.next_table_id.to_be_bytes());
        id
    }

    // Writers: `stage_*` adds the change to the statement's batch; `apply_*` updates
    // memory after the batch committed.

    pub fn stage_namespace(batch: &mut StoreBatch<'_>, ns: &NamespaceDef) {
        batch.put_system(&namespace_key(&ns.name), &to_json(ns));
    }

    pub fn apply_namespace(&self, ns: NamespaceDef) {
        self.state.write().namespaces.insert(ns.name.clone(), ns);
    }

    pub fn stage_drop_namespace(batch: &mut StoreBatch<'_>, name: &str) {
        batch.delete_system(&namespace_key(name));
    }

    pub fn apply_drop_namespace(&self, name: &str) {
        self.state.write().namespaces.remove(name);
    }

    pub fn stage_table(batch: &mut StoreBatch<'_>, table: &TableDef) {
        batch.put_system(&table_key(&table.namespace, &table.name), &to_json(table));
    }

    pub fn apply_table(&self, table: TableDef) {
        self.state
            .write()
            .tables
            .insert((table.namespace.clone(), table.name.clone()), Arc::new(table));
    }

    /// Removes the table's catalog entry and all that the store holds of it.
    pub fn stage_drop_table(batch: &mut StoreBatch<'_>, table: &TableDef) {
        batch.delete_system(&table_key(&table.namespace, &table.name));
        batch.delete_table(table.table_id);
    }

    pub fn apply_drop_table(&self, namespace: &str, name: &str) {
        self.state
            .write()
            .tables
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn stage_view(batch: &mut StoreBatch<'_>, view: &ViewDef) {
        batch.put_system(&view_key(&view.namespace, &view.name), &to_json(view));
    }

    pub fn apply_view(&self, view: View) {
        let key = (view.def.namespace.clone(), view.def.name.clone());
        self.state.write().views.insert(key, Arc::new(view));
    }

    pub fn stage_drop_view(batch: &mut StoreBatch<'_>, namespace: &str, name: &str) {
        batch.delete_system(&view_key(namespace, name));
    }

    pub fn apply_drop_view(&self, namespace: &str, name: &str) {
        (self.state.write().views).remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn stage_user(batch: &mut StoreBatch<'_>, user: &UserRecord) {
        batch.put_system(&user_key(&user.username), &to_json(user));
    }

    pub fn apply_user(&self, user: UserRecord) {
        self.state.write().users.insert(user.username.clone(), user);
    }

    pub fn stage_drop_user(batch: &mut StoreBatch<'_>, name: &str) {
        batch.delete_system(&user_key(name));
    }

    pub fn apply_drop_user(&self, name: &str) {
        self.state.write().users.remove(name);
    }
}
