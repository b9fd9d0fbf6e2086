//! Statement dispatch and the DDL statements: namespaces, tables, users, SHOW/DESCRIBE.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::Field;
use datafusion::sql::sqlparser::ast::Statement;
use kalamdb_commons::hidden::is_hidden;
use kalamdb_commons::{
    DefaultValue, ErrorCode, FlushPolicy, KalamError, KalamResult, KalamType, Literal, Role, TableType,
    UserId,
};
use kalamdb_sql::{ColumnSpec, CreateTable, KalamStatement, TableRef, UserChange, parse_statement};

use crate::access::{Action, Caller, allows, require};
use crate::arrow_conv::RowStream;
use crate::arrow_conv::field;
use crate::base::df_error;
use crate::base::{now_micros, store_error};
use crate::budget::within_budget;
use crate::catalog::{AccessLevel, Catalog, ColumnDef, NamespaceDef, SYSTEM_NAMESPACE, TableDef, UserRecord};
use crate::cold::ColdTier;
use crate::job_record::{JobKind, JobRecord, JobStatus, JobTrigger};
use crate::query::stream_query;
use crate::results::StatementResult;
use crate::scoped::ScopedTable;
use crate::statements::{StatementContext, check_name, sentence_case, tolerated};
use crate::system_tables::{self, text};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The longest TTL of a STREAM table: ten years.
const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

impl StatementContext<'_> {
    pub async fn execute(&self, sql: &str) -> KalamResult<StatementResult> {
        self.execute_statement(parse_statement(sql)?).await
    }

    /// Runs one statement that returns rows and hands them out as record batches:
    /// queries stream from DataFusion as they are read; the other statements that
    /// return rows (SHOW, DESCRIBE, FLUSH, `... RETURNING`) run as usual and their
    /// result becomes one batch. A statement that returns no rows is refused before
    /// it runs.
    pub async fn execute_rows(&self, sql: &str) -> KalamResult<RowStream> {
        match parse_statement(sql)? {
            KalamStatement::Query(statement) => {
                crate::query::stream_query(
                    &self.db.query,
                    self.caller,
                    self.namespace,
                    *statement,
                    self.params,
                )
                .await
            }
            KalamStatement::ExecuteAs { user, sql } => {
                let caller = self.impersonate(&user, &sql)?;
                let ctx = StatementContext {
                    caller: &caller,
                    ..*self
                };
                Box::pin(ctx.execute_rows(&sql)).await
            }
            statement if returns_rows(&statement) => {
                Ok(self.execute_statement(statement).await?.into_stream())
            }
            _ => Err(KalamError::new(
                ErrorCode::InvalidParameter,
                "this statement returns no rows; the streamed formats (ndjson, csv, arrow, parquet) \
                 take one that does (SELECT, VALUES, SHOW, DESCRIBE, FLUSH, ... RETURNING): \
                 send it with format=json",
            )),
        }
    }

    pub(crate) async fn execute_statement(&self, statement: KalamStatement) -> KalamResult<StatementResult> {
        match statement {
            KalamStatement::Query(statement) => {
                let point = crate::point_read::try_point_read(
                    &self.db.query,
                    self.caller,
                    self.namespace,
                    &statement,
                    self.params,
                );
                if let Some(output) = point.await {
                    let output = output?;
                    return StatementResult::rows(
                        output.schema,
                        output.batches,
                        self.db.options.max_result_bytes,
                    );
                }
                self.run_query(*statement, self.params).await
            }
            KalamStatement::Dml(statement) => crate::dml::execute(self, *statement).await,
            KalamStatement::ShowNamespaces => {
                self.query_sql("SELECT name, table_count FROM system.namespaces ORDER BY name")
                    .await
            }
            KalamStatement::ShowTables { namespace } => self.show_tables(namespace).await,
            KalamStatement::ShowStorages => {
                self.query_sql(
                    "SELECT storage_name, storage_type, location, has_credentials, table_count FROM system.storages ORDER BY storage_name",
                )
                .await
            }
            KalamStatement::DescribeTable(table) => self.describe_table(&table).await,
            KalamStatement::ShowStats(table) => self.show_stats(&table).await,
            KalamStatement::FlushTable(table) => self.flush_table(&table, JobKind::Flush),
            KalamStatement::FlushAll { namespace } => self.flush_all(namespace.as_deref(), JobKind::Flush),
            KalamStatement::CompactTable(table) => self.flush_table(&table, JobKind::Compact),
            KalamStatement::CompactAll { namespace } => {
                self.flush_all(namespace.as_deref(), JobKind::Compact)
            }
            KalamStatement::KillJob { job_id } => self.kill_job(&job_id).await,
            KalamStatement::KillLiveQuery { id } => {
                self.db.live.kill(self.caller, &id)?;
                Ok(StatementResult::message(format!("Live query '{id}' killed")))
            }
            KalamStatement::ExecuteAs { user, sql } => self.execute_as(&user, &sql).await,
            KalamStatement::Transaction(_) => Err(KalamError::unsupported(
                "BEGIN, COMMIT and ROLLBACK are statements of a request or session of their own, not of EXECUTE AS",
            )),
            ddl => {
                require(self.caller, Action::ChangeSchema)?;
                // argon2 runs before the lock, off the async workers.
                let password_hash = match &ddl {
                    KalamStatement::CreateUser { password, .. }
                    | KalamStatement::AlterUser {
                        change: UserChange::Password(password),
                        ..
                    } if !password.is_empty() => {
                        Some(crate::auth::hash_password_off_workers(password.clone()).await?)
                    }
                    _ => None,
                };
                let _guard = self.db.ddl_lock.lock().await;
                match ddl {
                    KalamStatement::CreateStorage {
                        name,
                        spec,
                        if_not_exists,
                    } => {
                        let done = crate::storages::create(self.db, &name, spec, if_not_exists).await;
                        return done.map(StatementResult::message);
                    }
                    KalamStatement::DropStorage { name, if_exists } => {
                        return crate::storages::drop(self.db, &name, if_exists).map(StatementResult::message);
                    }
                    KalamStatement::CreateView {
                        view,
                        columns,
                        query,
                        or_replace,
                        if_not_exists,
                    } => return crate::views::create(self, &view, columns, *query, or_replace, if_not_exists).await,
                    KalamStatement::DropView { view, if_exists } => return crate::views::drop(self, &view, if_exists),
                    KalamStatement::Comment { table, column, comment } => {
                        return self.comment(&table, column.as_deref(), comment).await;
                    }
                    _ => {}
                }
                // A table or view a view reads stays until the view goes.
                for table in self.tables_dropped_by(&ddl) {
                    crate::views::refuse_dependents(self.db, &table.namespace, &table.name, &ddl)?;
                }
                if let KalamStatement::DropNamespace { name, .. } = &ddl {
                    for view in self.db.catalog.views().iter().filter(|v| &v.def.namespace == name) {
                        crate::views::refuse_dependents(self.db, name, &view.def.name, &ddl)?;
                    }
                }
                if let KalamStatement::CreateIndex {
                    name,
                    table,
                    columns,
                    descending,
                    unique,
                    if_not_exists,
                } = &ddl
                {
                    return self
                        .create_index(name, table, columns, descending, *unique, *if_not_exists)
                        .await;
                }
                // Jobs of tables about to be dropped stop first (at a batch boundary),
                // so no flush writes into a directory the drop removes.
                for table in self.tables_dropped_by(&ddl) {
                    self.db.jobs.cancel_table_jobs(table.table_id).await;
                }
                // Writers of the tables the statement changes wait for it (and a
                // statement planned against the old definition runs again).
                let mut changed: Vec<u32> = self.tables_changed_by(&ddl).iter().map(|t| t.table_id).collect();
                changed.sort_unstable();
                changed.dedup();
                let mut commit_guards = Vec::with_capacity(changed.len());
                for &table_id in &changed {
                    commit_guards.push(self.db.commit_locks.lock_table(table_id).await);
                }
                let result = self.execute_ddl(ddl, password_hash);
                drop(commit_guards);
                if result.is_ok() {
                    for table_id in changed {
                        if !self.db.catalog.tables().iter().any(|t| t.table_id == table_id) {
                            self.db.commit_locks.forget(table_id);
                        }
                    }
                }
                result
            }
        }
    }

    /// `password_hash`: the hash of the password a CREATE/ALTER USER sets.
    fn execute_ddl(
        &self,
        statement: KalamStatement,
        password_hash: Option<String>,
    ) -> KalamResult<StatementResult> {
        match statement {
            KalamStatement::CreateNamespace { name, if_not_exists } => {
                self.create_namespace(&name, if_not_exists)
            }
            KalamStatement::DropNamespace {
                name,
                if_exists,
                cascade,
            } => self.drop_namespace(&name, if_exists, cascade),
            KalamStatement::CreateTable(create) => self.create_table(create),
            KalamStatement::DropTable {
                table,
                table_type,
                if_exists,
            } => self.drop_table(&table, table_type, if_exists),
            KalamStatement::AddColumn {
                table,
                column,
                if_not_exists,
            } => self.add_column(&table, column, if_not_exists),
            KalamStatement::DropColumn {
                table,
                column,
                if_exists,
            } => self.drop_column(&table, &column, if_exists),
            KalamStatement::CreateIndex { .. } => Err(KalamError::internal(
                "CREATE INDEX runs without the commit lock (create_index)",
            )),
            KalamStatement::DropIndex { index, if_exists } => self.drop_index(&index, if_exists),
            KalamStatement::CreateUser {
                name,
                password,
                role,
                if_not_exists,
            } => self.create_user(&name, &password, password_hash, role, if_not_exists),
            KalamStatement::AlterUser { name, change } => self.alter_user(&name, change, password_hash),
            KalamStatement::DropUser { name, if_exists } => self.drop_user(&name, if_exists),
            KalamStatement::Query(_)
            | KalamStatement::Dml(_)
            | KalamStatement::ShowNamespaces
            | KalamStatement::CreateStorage { .. }
            | KalamStatement::DropStorage { .. }
            | KalamStatement::CreateView { .. }
            | KalamStatement::DropView { .. }
            | KalamStatement::Comment { .. }
            | KalamStatement::ShowStorages
            | KalamStatement::ShowTables { .. }
            | KalamStatement::DescribeTable(_)
            | KalamStatement::ShowStats(_)
            | KalamStatement::FlushTable(_)
            | KalamStatement::FlushAll { .. }
            | KalamStatement::CompactTable(_)
            | KalamStatement::CompactAll { .. }
            | KalamStatement::KillJob { .. }
            | KalamStatement::KillLiveQuery { .. }
            | KalamStatement::ExecuteAs { .. }
            | KalamStatement::Transaction(_) => unreachable!("dispatched in execute"),
        }
    }

    /// `(namespace, name)` of a table reference, defaulting the namespace.
    pub fn resolve(&self, table: &TableRef) -> (String, String) {
        let namespace = table
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.to_string());
        (namespace, table.name.clone())
    }

    async fn query_sql(&self, sql: &str) -> KalamResult<StatementResult> {
        let statement = kalamdb_sql::parse_sql_text(sql)
            .map_err(|e| KalamError::internal(format!("generated SQL does not parse: {e}")))?
            .remove(0);
        self.run_query(statement, &[]).await
    }

    /// Runs a read-only statement and holds its rows (at most `max_result_bytes`).
    async fn run_query(&self, statement: Statement, params: &[Literal]) -> KalamResult<StatementResult> {
        // Planning has its own budget inside `stream_query`; nesting that future in
        // this one would copy it whole each time the outer one is boxed (a tenth of
        // a `SELECT 1`'s instructions were such copies).
        let rows = stream_query(&self.db.query, self.caller, self.namespace, statement, params).await?;
        within_budget(StatementResult::collect(rows, self.db.options.max_result_bytes)).await
    }

    fn create_namespace(&self, name: &str, if_not_exists: bool) -> KalamResult<StatementResult> {
        check_name("namespace", name)?;
        if name == SYSTEM_NAMESPACE {
            return Err(KalamError::invalid_sql("the namespace 'system' is reserved"));
        }
        if self.db.catalog.namespace_exists(name) {
            let error = KalamError::new(
                ErrorCode::AlreadyExists,
                format!("namespace '{name}' already exists"),
            );
            return tolerated(if_not_exists, error);
        }
        let ns = NamespaceDef {
            name: name.to_string(),
            created_at: now_micros(),
        };
        let mut batch = self.db.store.batch();
        Catalog::stage_namespace(&mut batch, &ns);
        self.db.store.commit(batch).map_err(store_error)?;
        self.db.catalog.apply_namespace(ns);
        Ok(StatementResult::message(format!("Namespace '{name}' created")))
    }

    fn drop_namespace(&self, name: &str, if_exists: bool, cascade: bool) -> KalamResult<StatementResult> {
        if name == SYSTEM_NAMESPACE {
            return Err(KalamError::invalid_sql(
                "the namespace 'system' cannot be dropped",
            ));
        }
        if !self.db.catalog.namespace_exists(name) {
            let error = KalamError::new(
                ErrorCode::NamespaceNotFound,
                format!("namespace '{name}' does not exist"),
            );
            return tolerated(if_exists, error);
        }
        let tables = self.db.catalog.tables_in(name);
        let views: Vec<_> = (self.db.catalog.views().into_iter())
            .filter(|v| v.def.namespace == name)
            .collect();
        if (!tables.is_empty() || !views.is_empty()) && !cascade {
            return Err(KalamError::new(
                ErrorCode::NamespaceNotEmpty,
                format!(
                    "namespace '{name}' has {} table(s) and {} view(s); use DROP NAMESPACE {name} CASCADE",
                    tables.len(),
                    views.len()
                ),
            ));
        }
        let mut batch = self.db.store.batch();
        for view in &views {
            Catalog::stage_drop_view(&mut batch, name, &view.def.name);
        }
        for table in &tables {
            Catalog::stage_drop_table(&mut batch, table);
            ColdTier::stage_drop(&mut batch, table.table_id);
            self.db.identities.stage_drop(&mut batch, table);
        }
        Catalog::stage_drop_namespace(&mut batch, name);
        self.db.store.commit(batch).map_err(store_error)?;
        for view in &views {
            self.db.catalog.apply_drop_view(name, &view.def.name);
        }
        for table in &tables {
            self.db.catalog.apply_drop_table(&table.namespace, &table.name);
            self.db.cold.forget_table(table)?;
            self.db.hot_rows.forget(table.table_id);
            self.db.live.table_dropped(table);
        }
        // Each table's objects went with it; a local storage's emptied directory too.
        for storage in self.db.cold.storages() {
            storage.remove_empty_dir(&object_store::path::Path::from(name));
        }
        self.db.catalog.apply_drop_namespace(name);
        Ok(StatementResult::message(format!(
            "Namespace '{name}' dropped ({} table(s))",
            tables.len()
        )))
    }

    fn create_table(&self, create: CreateTable) -> KalamResult<StatementResult> {
        let (namespace, name) = self.resolve(&create.table);
        check_name("table", &name)?;
        if namespace == SYSTEM_NAMESPACE {
            return Err(KalamError::invalid_sql(
                "tables cannot be created in the 'system' namespace",
            ));
        }
        if !self.db.catalog.namespace_exists(&namespace) {
            return Err(KalamError::new(
                ErrorCode::NamespaceNotFound,
                format!("namespace '{namespace}' does not exist"),
            ));
        }
        if self.db.catalog.view(&namespace, &name).is_some() {
            return Err(KalamError::new(
                ErrorCode::AlreadyExists,
                format!("a view '{namespace}.{name}' already exists"),
            ));
        }
        if self.db.catalog.table(&namespace, &name).is_some() {
            if create.if_not_exists {
                return Ok(StatementResult::message(format!(
                    "Table '{namespace}.{name}' already exists"
                )));
            }
            return Err(KalamError::new(
                ErrorCode::AlreadyExists,
                format!("table '{namespace}.{name}' already exists"),
            ));
        }
        let options = &create.options;
        let flush_policy = options
            .flush_policy
            .as_deref()
            .map(FlushPolicy::parse)
            .transpose()
            .map_err(KalamError::invalid_sql)?;
        let ttl_seconds = match (create.table_type, options.ttl_seconds) {
            (TableType::Stream, Some(0)) => {
                return Err(KalamError::invalid_sql("TTL_SECONDS is at least 1"));
            }
            (TableType::Stream, Some(ttl)) if ttl > MAX_TTL_SECONDS => {
                return Err(KalamError::invalid_sql(format!(
                    "TTL_SECONDS is at most {MAX_TTL_SECONDS} (10 years)"
                )));
            }
            (TableType::Stream, Some(ttl)) => Some(ttl),
            (TableType::Stream, None) => {
                return Err(KalamError::invalid_sql(
                    "a STREAM table needs WITH (TTL_SECONDS = n): its rows vanish n seconds after their insert",
                ));
            }
            (_, Some(_)) => {
                return Err(KalamError::invalid_sql(
                    "TTL_SECONDS applies to STREAM tables only",
                ));
            }
            (_, None) => None,
        };
        let compact_segments = options
            .compact_policy
            .as_deref()
            .map(parse_compact_policy)
            .transpose()?;
        if compact_segments.is_some() && create.table_type != TableType::User {
            return Err(KalamError::invalid_sql(
                "COMPACT_POLICY applies to USER tables only (only they have Parquet segments)",
            ));
        }
        if options.storage.is_some() && create.table_type != TableType::User {
            return Err(KalamError::invalid_sql(
                "STORAGE applies to USER tables only (only they have Parquet segments)",
            ));
        }
        let storage = crate::storages::for_new_table(self.db, options.storage.as_deref())?;
        if create.table_type == TableType::Stream && flush_policy.is_some() {
            return Err(KalamError::invalid_sql(
                "STREAM tables are never flushed: FLUSH_POLICY does not apply",
            ));
        }
        let access_level = match options.access_level.as_deref() {
            None => None,
            Some(_) if create.table_type != TableType::Shared => {
                return Err(KalamError::invalid_sql(
                    "ACCESS_LEVEL applies to SHARED tables only",
                ));
            }
            Some("PUBLIC") => Some(AccessLevel::Public),
            Some("PRIVATE") => Some(AccessLevel::Private),
            Some(other) => {
                return Err(KalamError::invalid_sql(format!(
                    "ACCESS_LEVEL is 'PUBLIC' or 'PRIVATE', not '{other}'"
                )));
            }
        };
        let mut columns = Vec::with_capacity(create.columns.len());
        for (i, spec) in create.columns.into_iter().enumerate() {
            columns.push(column_def(i as u32 + 1, spec, None)?);
        }
        let primary_key = create
            .primary_key
            .as_ref()
            .and_then(|pk| columns.iter().find(|c| &c.name == pk))
            .map(|c| c.id);
        let indexes = self.unique_constraints(
            &namespace,
            &name,
            create.table_type,
            &columns,
            primary_key,
            create.unique,
        )?;
        let mut batch = self.db.store.batch();
        let table = TableDef {
            table_id: self.db.catalog.allocate_table_id(&mut batch),
            namespace: namespace.clone(),
            name: name.clone(),
            table_type: create.table_type,
            next_column_id: columns.len() as u32 + 1,
            columns,
            primary_key,
            flush_policy,
            compact_segments,
            storage,
            ttl_seconds,
            access_level,
            created_at: now_micros(),
            schema_version: 1,
            next_index_id: indexes.len() as u32 + 1,
            indexes,
            comment: None,
        };
        Catalog::stage_table(&mut batch, &table);
        self.db.store.commit(batch).map_err(store_error)?;
        let message = format!(
            "{} table '{namespace}.{name}' created",
            capitalized(table.table_type)
        );
        self.db.catalog.apply_table(table);
        Ok(StatementResult::message(message))
    }

    fn existing_table(&self, table: &TableRef, if_exists: bool) -> KalamResult<Option<Arc<TableDef>>> {
        let (namespace, name) = self.resolve(table);
        match self.db.catalog.require_table(&namespace, &name) {
            Ok(t) => Ok(Some(t)),
            Err(_) if if_exists => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `COMMENT ON TABLE | COLUMN`: a new definition with the comment (the table's
    /// writers wait for it, as for any definition change).
    async fn comment(
        &self,
        table: &TableRef,
        column: Option<&str>,
        comment: Option<String>,
    ) -> KalamResult<StatementResult> {
        let def = self
            .existing_table(table, false)?
            .expect("require_table succeeded");
        let _writers = self.db.commit_locks.lock_table(def.table_id).await;
        let mut updated = (*def).clone();
        let what = match column {
            None => {
                updated.comment = comment;
                format!("table '{}'", def.qualified_name())
            }
            Some(name) => {
                let Some(column) = updated.columns.iter_mut().find(|c| c.name == name) else {
                    return Err(KalamError::new(
                        ErrorCode::ColumnNotFound,
                        format!("column '{name}' does not exist in '{}'", def.qualified_name()),
                    ));
                };
                column.comment = comment;
                format!("column '{}.{name}'", def.qualified_name())
            }
        };
        let mut batch = self.db.store.batch();
        Catalog::stage_table(&mut batch, &updated);
        self.db.store.commit(batch).map_err(store_error)?;
        self.db.catalog.apply_table(updated);
        Ok(StatementResult::message(format!("Comment set on {what}")))
    }

    fn drop_table(
        &self,
        table: &TableRef,
        table_type: Option<TableType>,
        if_exists: bool,
    ) -> KalamResult<StatementResult> {
        let (namespace, name) = self.resolve(table);
        if self.db.catalog.view(&namespace, &name).is_some() {
            return Err(KalamError::invalid_sql(format!(
                "'{namespace}.{name}' is a view: use DROP VIEW"
            )));
        }
        let Some(def) = self.existing_table(table, if_exists)? else {
            return Ok(StatementResult::message(format!(
                "Table '{}' does not exist",
                table.name
            )));
        };
        if let Some(expected) = table_type
            && expected != def.table_type
        {
            return Err(KalamError::invalid_sql(format!(
                "'{}' is a {} table, not a {} table",
                def.qualified_name(),
                def.table_type.as_str().to_ascii_uppercase(),
                expected.as_str().to_ascii_uppercase()
            )));
        }
        let mut batch = self.db.store.batch();
        Catalog::stage_drop_table(&mut batch, &def);
        ColdTier::stage_drop(&mut batch, def.table_id);
        self.db.identities.stage_drop(&mut batch, &def);
        self.db.store.commit(batch).map_err(store_error)?;
        self.db.catalog.apply_drop_table(&def.namespace, &def.name);
        self.db.cold.forget_table(&def)?;
        self.db.hot_rows.forget(def.table_id);
        self.db.live.table_dropped(&def);
        Ok(StatementResult::message(format!(
            "Table '{}' dropped",
            def.qualified_name()
        )))
    }

    fn add_column(
        &self,
        table: &TableRef,
        spec: ColumnSpec,
        if_not_exists: bool,
    ) -> KalamResult<StatementResult> {
        let def = self
            .existing_table(table, false)?
            .expect("require_table succeeded");
        if def.column(&spec.name).is_some() {
            let error = KalamError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "column '{}' already exists in '{}'",
                    spec.name,
                    def.qualified_name()
                ),
            );
            return tolerated(if_not_exists, error);
        }
        // What rows written before the column existed read: a constant fixed now,
        // spelled so that the column's own type parses it (checked in column_def).
        if matches!(spec.default, Some(DefaultValue::Identity { .. })) {
            return Err(KalamError::unsupported(
                "ALTER TABLE ADD COLUMN cannot add an identity column (existing rows would need values)",
            ));
        }
        let backfill = match &spec.default {
            Some(DefaultValue::Literal { value }) => Some(value.clone()),
            Some(DefaultValue::Now) => {
                let now = now_micros();
                Some(Literal::String(match spec.data_type {
                    KalamType::Date => {
                        kalamdb_commons::value::format_date(now.div_euclid(MICROS_PER_DAY) as i32)
                    }
                    _ => kalamdb_commons::value::format_timestamp(now),
                }))
            }
            _ => None,
        };
        if spec.not_null && backfill.as_ref().is_none_or(|b| *b == Literal::Null) {
            return Err(KalamError::invalid_sql(format!(
                "column '{}' is NOT NULL: existing rows need a constant DEFAULT",
                spec.name
            )));
        }
        let name = spec.name.clone();
        let mut updated = (*def).clone();
        updated
            .columns
            .push(column_def(def.next_column_id, spec, backfill)?);
        updated.next_column_id += 1;
        updated.schema_version += 1;
        self.save_table(updated)?;
        Ok(StatementResult::message(format!(
            "Column '{name}' added to '{}'",
            def.qualified_name()
        )))
    }

    fn drop_column(&self, table: &TableRef, column: &str, if_exists: bool) -> KalamResult<StatementResult> {
        let def = self
            .existing_table(table, false)?
            .expect("require_table succeeded");
        let Some(target) = def.column(column) else {
            let error = KalamError::new(
                ErrorCode::ColumnNotFound,
                format!("column '{column}' does not exist in '{}'", def.qualified_name()),
            );
            return tolerated(if_exists, error);
        };
        if def.primary_key == Some(target.id) {
            return Err(KalamError::unsupported(
                "the PRIMARY KEY column cannot be dropped",
            ));
        }
        if def.columns.len() == 1 {
            return Err(KalamError::invalid_sql("a table keeps at least one column"));
        }
        if let Some(index) = def.indexes.iter().find(|i| i.columns.contains(&target.id)) {
            return Err(KalamError::invalid_sql(format!(
                "column '{column}' is indexed by '{}': DROP INDEX {} first",
                index.name, index.name
            )));
        }
        let mut updated = (*def).clone();
        updated.columns.retain(|c| c.name != column);
        updated.schema_version += 1;
        self.save_table(updated)?;
        Ok(StatementResult::message(format!(
            "Column '{column}' dropped from '{}'",
            def.qualified_name()
        )))
    }

    /// The UNIQUE indexes a new table's `UNIQUE` constraints declare (the table is
    /// empty: nothing to build). Named as PostgreSQL names them, `<table>_<cols>_key`,
    /// unless the constraint is named; a constraint on the primary key alone adds
    /// nothing (the key is unique), and a repeated column set adds one index.
    fn unique_constraints(
        &self,
        namespace: &str,
        table: &str,
        table_type: TableType,
        columns: &[ColumnDef],
        primary_key: Option<u32>,
        constraints: Vec<kalamdb_sql::UniqueSpec>,
    ) -> KalamResult<Vec<crate::catalog::IndexDef>> {
        let mut indexes: Vec<crate::catalog::IndexDef> = Vec::new();
        let taken = |name: &str, indexes: &[crate::catalog::IndexDef]| {
            self.table_with_index(namespace, name).is_some() || indexes.iter().any(|i| i.name == name)
        };
        for constraint in constraints {
            let mut ids = Vec::with_capacity(constraint.columns.len());
            for column in &constraint.columns {
                let c = columns
                    .iter()
                    .find(|c| &c.name == column)
                    .expect("checked by the parser");
                if matches!(c.data_type, KalamType::Bytes | KalamType::Json) {
                    return Err(KalamError::unsupported(format!(
                        "column '{column}' is {}: BYTES and JSON columns cannot be UNIQUE",
                        c.type_name()
                    )));
                }
                ids.push(c.id);
            }
            let on_primary_key = ids.len() == 1 && Some(ids[0]) == primary_key;
            if on_primary_key || indexes.iter().any(|i| i.columns == ids) {
                continue;
            }
            if table_type == TableType::Stream {
                return Err(KalamError::unsupported(
                    "a STREAM table has no secondary indexes: UNIQUE applies to USER and SHARED tables",
                ));
            }
            let index_name = match constraint.name {
                Some(name) => {
                    check_name("index", &name)?;
                    if taken(&name, &indexes) {
                        return Err(KalamError::new(
                            ErrorCode::AlreadyExists,
                            format!("an index named '{name}' already exists in namespace '{namespace}'"),
                        ));
                    }
                    name
                }
                // As PostgreSQL does: `<table>_<columns>_key`, the stem cut so the name
                // fits (64 characters), then `_key1`, `_key2`, … until it is free.
                None => {
                    let mut stem = format!("{table}_{}", constraint.columns.join("_"));
                    stem.truncate(64 - "_key".len() - 3);
                    (0..1000)
                        .map(|n| match n {
                            0 => format!("{stem}_key"),
                            n => format!("{stem}_key{n}"),
                        })
                        .find(|name| !taken(name, &indexes))
                        .ok_or_else(|| KalamError::invalid_sql("no free name for a UNIQUE index"))?
                }
            };
            indexes.push(crate::catalog::IndexDef {
                id: indexes.len() as u32 + 1,
                name: index_name,
                columns: ids,
                unique: true,
                descending: Vec::new(),
                created_at: now_micros(),
            });
        }
        Ok(indexes)
    }

    /// The table in `namespace` that has an index called `name`.
    fn table_with_index(&self, namespace: &str, name: &str) -> Option<Arc<TableDef>> {
        self.db
            .catalog
            .tables_in(namespace)
            .into_iter()
            .find(|t| t.indexes.iter().any(|i| i.name == name))
    }

    /// `CREATE INDEX`: the definition and an entry for every hot row of every scope
    /// (and every Parquet row, for a UNIQUE index), built while the table's writers
    /// go on (`index_build.rs`). Runs under the DDL lock, not the commit lock.
    async fn create_index(
        &self,
        name: &str,
        table: &TableRef,
        columns: &[String],
        descending: &[bool],
        unique: bool,
        if_not_exists: bool,
    ) -> KalamResult<StatementResult> {
        let def = self
            .existing_table(table, false)?
            .expect("require_table succeeded");
        if def.table_type == TableType::Stream {
            return Err(KalamError::unsupported(format!(
                "'{}' is a STREAM table: its rows expire, and it has no secondary indexes",
                def.qualified_name()
            )));
        }
        if self.table_with_index(&def.namespace, name).is_some() {
            let error = KalamError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "an index named '{name}' already exists in namespace '{}'",
                    def.namespace
                ),
            );
            return tolerated(if_not_exists, error);
        }
        let mut ids = Vec::with_capacity(columns.len());
        for column in columns {
            let Some(c) = def.column(column) else {
                return Err(KalamError::new(
                    ErrorCode::ColumnNotFound,
                    format!("column '{column}' does not exist in '{}'", def.qualified_name()),
                ));
            };
            if matches!(c.data_type, KalamType::Bytes | KalamType::Json) {
                return Err(KalamError::unsupported(format!(
                    "column '{column}' is {}: BYTES and JSON columns cannot be indexed",
                    c.type_name()
                )));
            }
            ids.push(c.id);
        }
        let index = crate::catalog::IndexDef {
            id: def.next_index_id,
            name: name.to_string(),
            columns: ids,
            unique,
            descending: if descending.contains(&true) {
                descending.to_vec()
            } else {
                Vec::new()
            },
            created_at: now_micros(),
        };
        let mut updated = (*def).clone();
        updated.indexes.push(index.clone());
        updated.next_index_id += 1;
        let entries = crate::index_build::build(self.db, &def, updated, index).await?;
        Ok(StatementResult::message(format!(
            "Index '{name}' created on '{}' ({entries} rows indexed)",
            def.qualified_name()
        )))
    }

    /// `DROP INDEX`: the definition and every entry, in one batch.
    fn drop_index(&self, index: &TableRef, if_exists: bool) -> KalamResult<StatementResult> {
        let (namespace, name) = self.resolve(index);
        let Some(def) = self.table_with_index(&namespace, &name) else {
            let error = KalamError::new(
                ErrorCode::IndexNotFound,
                format!("index '{name}' does not exist in namespace '{namespace}'"),
            );
            return tolerated(if_exists, error);
        };
        let mut updated = (*def).clone();
        let position = updated
            .indexes
            .iter()
            .position(|i| i.name == name)
            .expect("found above");
        let dropped = updated.indexes.remove(position);
        let mut batch = self.db.store.batch();
        batch.delete_index(def.table_id, dropped.id);
        Catalog::stage_table(&mut batch, &updated);
        self.db.store.commit(batch).map_err(store_error)?;
        self.db.catalog.apply_table(updated);
        Ok(StatementResult::message(format!(
            "Index '{name}' dropped from '{}'",
            def.qualified_name()
        )))
    }

    /// Saves an altered definition (the caller holds the table's commit lock).
    fn save_table(&self, table: TableDef) -> KalamResult<()> {
        let mut batch = self.db.store.batch();
        Catalog::stage_table(&mut batch, &table);
        self.db.store.commit(batch).map_err(store_error)?;
        self.db.live.table_altered(&table);
        self.db.catalog.apply_table(table);
        Ok(())
    }

    async fn show_tables(&self, namespace: Option<String>) -> KalamResult<StatementResult> {
        let filter = match &namespace {
            Some(ns) => {
                if !self.db.catalog.namespace_exists(ns) {
                    return Err(KalamError::new(
                        ErrorCode::NamespaceNotFound,
                        format!("namespace '{ns}' does not exist"),
                    ));
                }
                format!("WHERE namespace = '{}'", ns.replace('\'', "''"))
            }
            None => String::new(),
        };
        self.query_sql(&format!(
            "SELECT namespace, table_name, table_type, primary_key, flush_policy FROM system.tables {filter} ORDER BY namespace, table_name"
        ))
        .await
    }

    async fn describe_table(&self, table: &TableRef) -> KalamResult<StatementResult> {
        let def = self
            .existing_table(table, false)?
            .expect("require_table succeeded");
        self.query_sql(&format!(
            "SELECT column_name, data_type, is_nullable, is_primary_key, column_default, indexes FROM system.columns WHERE namespace = '{}' AND table_name = '{}' ORDER BY ordinal_position",
            def.namespace.replace('\'', "''"),
            def.name.replace('\'', "''")
        ))
        .await
    }

    /// Hot-row counts of the caller's scope (USER tables) or of the table (SHARED).
    async fn show_stats(&self, table: &TableRef) -> KalamResult<StatementResult> {
        let def = self
            .existing_table(table, false)?
            .expect("require_table succeeded");
        require(self.caller, Action::Read(&def))?;
        // A USER table's statistics are the caller's own rows, except for service
        // and above, who see the whole table (every user's rows).
        let scope = match def.table_type {
            TableType::User if allows(self.caller, Action::SeeEveryUser) => None,
            _ => Some(crate::scoped::scope_of(&def, self.caller)),
        };
        // Hot rows are counted on tokio's blocking pool (a pass over RocksDB keys
        // and row headers, in one view).
        let (db, table) = (self.db.clone(), def.clone());
        let (hot_rows, hot_versions, manifests) = tokio::task::spawn_blocking(move || {
            let (mut hot_rows, mut hot_versions) = (0i64, 0i64);
            let view = db.store.view();
            let hot = match &scope {
                Some(scope) => vec![ScopedTable::with_scope(
                    db.tiers.clone(),
                    table.clone(),
                    scope.clone(),
                    false,
                )],
                None => ScopedTable::hot_scopes(&db.tiers, &table)?,
            };
            for scoped in hot {
                scoped.visit_versions(&view, u64::MAX, |_, bytes| {
                    hot_versions += 1;
                    if !kalamdb_store::row_codec::is_tombstone(bytes)? {
                        hot_rows += 1;
                    }
                    Ok(true)
                })?;
            }
            let scopes = match scope {
                Some(scope) => vec![scope],
                None => db.cold.scopes_on_disk(&table)?,
            };
            let manifests = scopes
                .iter()
                .map(|scope| db.cold.manifest(&table, scope))
                .collect::<KalamResult<Vec<_>>>()?;
            Ok::<_, KalamError>((hot_rows, hot_versions, manifests))
        })
        .await
        .map_err(|e| KalamError::internal(format!("SHOW STATS task failed: {e}")))??;
        let segments = || manifests.iter().flat_map(|m| m.segments.iter());
        let last_flush = segments().map(|s| s.created_at).max();
        let cold_rows: u64 = manifests.iter().map(|m| m.row_count()).sum();
        let cold_bytes: u64 = manifests.iter().map(|m| m.size_bytes()).sum();
        let cold_files = segments().count();
        let big = |name: &str, value: i64| {
            let values: ArrayRef = Arc::new(Int64Array::from(vec![value]));
            (field(name, &KalamType::BigInt, false), values)
        };
        let columns = vec![
            (
                field("table", &KalamType::Text, false),
                text(vec![def.qualified_name()]),
            ),
            big("hot_rows", hot_rows),
            big("hot_versions", hot_versions),
            big("cold_rows", cold_rows as i64),
            big("cold_files", cold_files as i64),
            big("cold_bytes", cold_bytes as i64),
            (
                field("last_flush", &KalamType::Timestamp, true),
                Arc::new(TimestampMicrosecondArray::from(vec![last_flush])) as ArrayRef,
            ),
        ];
        one_batch(columns, None)
    }

    /// `EXECUTE AS USER 'name' (statement)`: runs the statement in that user's scope
    /// of USER tables, with the lower of the two roles: impersonation never grants
    /// what the caller could not do alone. Service and above only.
    async fn execute_as(&self, user: &str, sql: &str) -> KalamResult<StatementResult> {
        let caller = self.impersonate(user, sql)?;
        let ctx = StatementContext {
            caller: &caller,
            ..*self
        };
        Box::pin(ctx.execute(sql)).await
    }

    /// The caller `EXECUTE AS USER 'user' (sql)` runs `sql` as.
    fn impersonate(&self, user: &str, sql: &str) -> KalamResult<Caller> {
        require(self.caller, Action::ExecuteAs)?;
        if matches!(parse_statement(sql)?, KalamStatement::ExecuteAs { .. }) {
            return Err(KalamError::invalid_sql("EXECUTE AS USER cannot be nested"));
        }
        let target = self.db.catalog.user(user).ok_or_else(|| user_not_found(user))?;
        Ok(self.caller.impersonating(&target))
    }

    /// Tables whose definition or rows `statement` changes: the dropped ones and
    /// the ones it alters.
    fn tables_changed_by(&self, statement: &KalamStatement) -> Vec<Arc<TableDef>> {
        match statement {
            KalamStatement::AddColumn { table, .. }
            | KalamStatement::DropColumn { table, .. }
            | KalamStatement::CreateIndex { table, .. } => {
                let (namespace, name) = self.resolve(table);
                self.db.catalog.table(&namespace, &name).into_iter().collect()
            }
            KalamStatement::DropIndex { index, .. } => {
                let (namespace, name) = self.resolve(index);
                self.table_with_index(&namespace, &name).into_iter().collect()
            }
            other => self.tables_dropped_by(other),
        }
    }

    /// The tables a DDL statement would drop (none for other statements).
    fn tables_dropped_by(&self, statement: &KalamStatement) -> Vec<Arc<TableDef>> {
        match statement {
            KalamStatement::DropTable { table, .. } => {
                let (namespace, name) = self.resolve(table);
                self.db.catalog.table(&namespace, &name).into_iter().collect()
            }
            KalamStatement::DropNamespace { name, .. } => self.db.catalog.tables_in(name),
            _ => Vec::new(),
        }
    }

    /// `STORAGE FLUSH|COMPACT TABLE`: registers the job and returns it at once.
    fn flush_table(&self, table: &TableRef, kind: JobKind) -> KalamResult<StatementResult> {
        require(self.caller, Action::Flush)?;
        let def = self
            .existing_table(table, false)?
            .expect("require_table succeeded");
        let job = self.db.jobs.submit(&def, kind, JobTrigger::Manual)?;
        let message = format!(
            "{} job {} started for '{}'",
            sentence_case(kind.as_str()),
            job.job_id,
            def.qualified_name()
        );
        jobs_result(&[job], message)
    }

    /// `STORAGE FLUSH|COMPACT ALL [IN ns]`: one job per USER table; tables with a job
    /// already are skipped and named in the message.
    fn flush_all(&self, namespace: Option<&str>, kind: JobKind) -> KalamResult<StatementResult> {
        require(self.caller, Action::Flush)?;
        let tables = match namespace {
            Some(ns) => {
                if !self.db.catalog.namespace_exists(ns) {
                    return Err(KalamError::new(
                        ErrorCode::NamespaceNotFound,
                        format!("namespace '{ns}' does not exist"),
                    ));
                }
                self.db.catalog.tables_in(ns)
            }
            None => self.db.catalog.tables(),
        };
        let mut started = Vec::new();
        let mut skipped = Vec::new();
        for table in tables.iter().filter(|t| t.table_type == TableType::User) {
            match self.db.jobs.submit(table, kind, JobTrigger::Manual) {
                Ok(job) => started.push(job),
                Err(e) if e.code == ErrorCode::FlushInProgress => skipped.push(table.qualified_name()),
                Err(e) => return Err(e),
            }
        }
        let mut message = format!("Started {} {} job(s)", started.len(), kind.as_str());
        if !skipped.is_empty() {
            message.push_str(&format!(
                "; skipped (a job already queued or running): {}",
                skipped.join(", ")
            ));
        }
        jobs_result(&started, message)
    }

    /// `KILL JOB 'id'`: cancels a queued job or stops a running one at its next
    /// batch boundary, waiting briefly for it to stop.
    async fn kill_job(&self, job_id: &str) -> KalamResult<StatementResult> {
        require(self.caller, Action::KillJob)?;
        let (job, was_active) = self
            .db
            .jobs
            .kill(job_id, std::time::Duration::from_secs(10))
            .await?;
        let message = match (was_active, job.status) {
            (false, status) => format!("Job {job_id} had already finished ({})", status.as_str()),
            (true, JobStatus::Queued | JobStatus::Running) => {
                format!("Job {job_id} is stopping at its next batch boundary")
            }
            (true, status) => format!("Job {job_id} {}", status.as_str()),
        };
        jobs_result(&[job], message)
    }

    fn create_user(
        &self,
        name: &str,
        password: &str,
        password_hash: Option<String>,
        role: Role,
        if_not_exists: bool,
    ) -> KalamResult<StatementResult> {
        check_name("user", name)?;
        if self.db.catalog.user(name).is_some() {
            let error = KalamError::new(ErrorCode::AlreadyExists, format!("user '{name}' already exists"));
            return tolerated(if_not_exists, error);
        }
        let Some(password_hash) = password_hash.filter(|_| !password.is_empty()) else {
            return Err(KalamError::invalid_sql("a password cannot be empty"));
        };
        let now = now_micros();
        let user = UserRecord {
            user_id: UserId::new(uuid::Uuid::now_v7().simple().to_string()),
            username: name.to_string(),
            password_hash,
            role,
            created_at: now,
            updated_at: now,
        };
        self.save_user(user)?;
        Ok(StatementResult::message(format!(
            "User '{name}' created with role {}",
            role.as_str()
        )))
    }

    fn alter_user(
        &self,
        name: &str,
        change: UserChange,
        password_hash: Option<String>,
    ) -> KalamResult<StatementResult> {
        let mut user = self.db.catalog.user(name).ok_or_else(|| user_not_found(name))?;
        match change {
            UserChange::Password(_) => {
                user.password_hash =
                    password_hash.ok_or_else(|| KalamError::invalid_sql("a password cannot be empty"))?
            }
            UserChange::Role(role) => user.role = role,
        }
        user.updated_at = now_micros();
        let user_id = user.user_id.clone();
        self.save_user(user)?;
        // Its live connections were authenticated with what no longer stands.
        self.db.live.user_changed(
            user_id.as_str(),
            &format!("the credentials or role of user '{name}' changed; authenticate again"),
        );
        Ok(StatementResult::message(format!("User '{name}' altered")))
    }

    fn drop_user(&self, name: &str, if_exists: bool) -> KalamResult<StatementResult> {
        if self.db.catalog.user(name).is_none() {
            return tolerated(if_exists, user_not_found(name));
        }
        if name == "root" || name == self.caller.username {
            return Err(KalamError::invalid_sql(format!(
                "user '{name}' cannot be dropped by this session"
            )));
        }
        let mut batch = self.db.store.batch();
        Catalog::stage_drop_user(&mut batch, name);
        self.db.store.commit(batch).map_err(store_error)?;
        let dropped = self.db.catalog.user(name);
        self.db.catalog.apply_drop_user(name);
        self.db.auth.invalidate();
        if let Some(user) = dropped {
            self.db
                .live
                .user_changed(user.user_id.as_str(), &format!("user '{name}' was dropped"));
        }
        Ok(StatementResult::message(format!("User '{name}' dropped")))
    }

    fn save_user(&self, user: UserRecord) -> KalamResult<()> {
        let mut batch = self.db.store.batch();
        Catalog::stage_user(&mut batch, &user);
        self.db.store.commit(batch).map_err(store_error)?;
        self.db.catalog.apply_user(user);
        self.db.auth.invalidate();
        Ok(())
    }
}

/// Who a statement inside `EXECUTE AS USER` runs as: the target's identity and
/// scope, with the lower of the caller's and the target's roles.
/// Whether `statement` answers with rows (rather than only a message or a count).
fn returns_rows(statement: &KalamStatement) -> bool {
    use datafusion::sql::sqlparser::ast::Statement;
    match statement {
        KalamStatement::Query(_)
        | KalamStatement::ShowNamespaces
        | KalamStatement::ShowTables { .. }
        | KalamStatement::DescribeTable(_)
        | KalamStatement::ShowStats(_)
        | KalamStatement::FlushTable(_)
        | KalamStatement::FlushAll { .. }
        | KalamStatement::CompactTable(_)
        | KalamStatement::CompactAll { .. }
        | KalamStatement::ExecuteAs { .. } => true,
        KalamStatement::Dml(statement) => match statement.as_ref() {
            Statement::Insert(insert) => insert.returning.is_some(),
            Statement::Update(update) => update.returning.is_some(),
            Statement::Delete(delete) => delete.returning.is_some(),
            _ => false,
        },
        _ => false,
    }
}

fn user_not_found(name: &str) -> KalamError {
    KalamError::new(ErrorCode::UserNotFound, format!("user '{name}' does not exist"))
}

fn capitalized(table_type: TableType) -> &'static str {
    match table_type {
        TableType::User => "User",
        TableType::Shared => "Shared",
        TableType::Stream => "Stream",
    }
}

/// Validates a declared column and its default against its type.
fn column_def(id: u32, spec: ColumnSpec, backfill: Option<Literal>) -> KalamResult<ColumnDef> {
    check_name("column", &spec.name)?;
    if is_hidden(&spec.name) {
        return Err(KalamError::invalid_sql(format!(
            "column name '{}' is reserved",
            spec.name
        )));
    }
    let ty = spec.data_type;
    // A literal default or backfill longer than VARCHAR(n) allows is refused here,
    // not at each row that would carry it.
    if let Some(max) = spec.max_chars {
        let literals = [
            backfill.as_ref(),
            match &spec.default {
                Some(DefaultValue::Literal { value }) => Some(value),
                _ => None,
            },
        ];
        for literal in literals.into_iter().flatten() {
            if let Ok(kalamdb_commons::Value::Text(text)) = literal.to_value(&ty)
                && text.chars().count() > max as usize
            {
                return Err(KalamError::new(
                    ErrorCode::TypeMismatch,
                    format!("DEFAULT of column '{}' is longer than VARCHAR({max})", spec.name),
                ));
            }
        }
    }
    if let Some(backfill) = &backfill {
        backfill.to_value(&ty).map_err(|e| {
            KalamError::new(
                e.code,
                format!("value for existing rows of column '{}': {}", spec.name, e.message),
            )
        })?;
    }
    let fits = match &spec.default {
        None => true,
        Some(DefaultValue::Literal { value }) => {
            value.to_value(&ty).map_err(|e| {
                KalamError::new(
                    e.code,
                    format!("DEFAULT of column '{}': {}", spec.name, e.message),
                )
            })?;
            true
        }
        Some(DefaultValue::Now) => matches!(ty, KalamType::Timestamp | KalamType::Date | KalamType::Text),
        Some(DefaultValue::SnowflakeId) => matches!(ty, KalamType::BigInt | KalamType::Text),
        Some(DefaultValue::UuidV7) => matches!(ty, KalamType::Uuid | KalamType::Text),
        Some(DefaultValue::CurrentUser) => matches!(ty, KalamType::Text),
        Some(DefaultValue::Identity { .. }) => {
            matches!(ty, KalamType::SmallInt | KalamType::Int | KalamType::BigInt)
        }
    };
    if !fits {
        return Err(KalamError::type_mismatch(format!(
            "DEFAULT {} cannot fill column '{}' of type {ty}",
            spec.default.as_ref().map(|d| d.sql()).unwrap_or_default(),
            spec.name
        )));
    }
    Ok(ColumnDef {
        id,
        name: spec.name,
        data_type: ty,
        nullable: !spec.not_null,
        default: spec.default,
        backfill,
        max_chars: spec.max_chars.filter(|_| ty == KalamType::Text),
        comment: None,
    })
}

/// Rows `job_id, namespace, table_name, status` for the jobs a command touched.
fn jobs_result(jobs: &[JobRecord], message: String) -> KalamResult<StatementResult> {
    let column = |name: &str, value: &dyn Fn(&JobRecord) -> String| {
        (
            field(name, &KalamType::Text, false),
            text(jobs.iter().map(value).collect()),
        )
    };
    one_batch(
        vec![
            column("job_id", &|j| j.job_id.clone()),
            column("namespace", &|j| j.namespace.clone()),
            column("table_name", &|j| j.table_name.clone()),
            column("status", &|j| j.status.as_str().to_string()),
        ],
        Some(message),
    )
}

/// A result of one batch of `columns` (a command's own rows: SHOW STATS, FLUSH).
fn one_batch(columns: Vec<(Field, ArrayRef)>, message: Option<String>) -> KalamResult<StatementResult> {
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    let batch = system_tables::batch(fields, arrays).map_err(df_error)?;
    Ok(StatementResult {
        schema: batch.schema(),
        row_count: batch.num_rows(),
        batches: vec![batch],
        message,
    })
}

/// `COMPACT_POLICY = 'segments:N'` (N ≥ 1): the most segments a scope keeps before the
/// maintenance ticker compacts it.
fn parse_compact_policy(text: &str) -> KalamResult<u32> {
    text.trim()
        .split_once(':')
        .filter(|(key, _)| key.trim().eq_ignore_ascii_case("segments"))
        .and_then(|(_, n)| n.trim().parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            KalamError::invalid_sql(format!(
                "COMPACT_POLICY is 'segments:N' with N a whole number >= 1, not '{text}'"
            ))
        })
}
