//! The KalamDB engine: catalog, statement execution, DataFusion integration and
//! authentication, over the hot store.
//!
//! Who it is for: the HTTP layer (`kalamdb-api`) and tests. It takes SQL text from an
//! authenticated [`Caller`] and returns typed results:
//!
//! ```ignore
//! let db = KalamDb::open(DbOptions::new("./data"))?;
//! let root = db.authenticate("root", "", true)?;
//! let outcome = db.execute(&root, SqlRequest::new("SELECT 1")).await;
//! ```
//!
//! Architecture: [`KalamDb::execute`] splits and parses statements (`kalamdb-sql`), then
//! `executor` runs DDL against the [`catalog`], `dml` turns INSERT/UPDATE/DELETE into
//! one atomic `kalamdb-store` batch each, and `query` plans SELECTs in DataFusion
//! over per-caller table providers (`provider`).
//!
//! Architecture invariant: nothing here knows about HTTP. Every error that leaves
//! this crate is a [`KalamError`] with a stable code.

mod arrow_conv;
mod auth;
pub mod catalog;
mod cold;
mod dml;
mod executor;
mod failpoint;
mod hidden;
pub mod jobs;
mod provider;
mod query;
mod system_tables;
mod tiered_scan;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::execution::context::SessionState;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult, Literal, Role, UserId};
use kalamdb_store::{FORMAT_VERSION, Store, StoreError, StoreOptions};
use serde::Serialize;

use crate::auth::{Authenticator, TokenService};
use crate::catalog::{Catalog, DEFAULT_NAMESPACE, NamespaceDef, UserRecord};
use crate::cold::ColdTier;
use crate::jobs::{JobManager, JobOptions};

/// Where and how the database keeps its data.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub data_dir: PathBuf,
    pub store: StoreOptions,
    /// How long a verified password is remembered.
    pub credential_cache_ttl: Duration,
    /// `root`'s password. When `None`, `root` has no password and is accepted only
    /// from loopback clients.
    pub root_password: Option<String>,
    /// Rows one INSERT may carry.
    pub max_insert_rows: usize,
    /// Longest SQL text of one request, bytes.
    pub max_sql_bytes: usize,
    /// Most statements in one request.
    pub max_statements: usize,
    /// Secret that signs bearer tokens. When `None`, one is generated at first
    /// start and kept in the data directory (`system` key `meta/token_secret`).
    pub token_secret: Option<String>,
    /// How long a bearer token from `login` is valid.
    pub token_ttl: Duration,
    /// The job manager's settings (flush jobs).
    pub jobs: JobOptions,
}

impl DbOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DbOptions {
            data_dir: data_dir.into(),
            store: StoreOptions::default(),
            credential_cache_ttl: Duration::from_secs(300),
            root_password: None,
            max_insert_rows: 100_000,
            max_sql_bytes: 1 << 20,
            max_statements: 1000,
            token_secret: None,
            token_ttl: Duration::from_secs(3600),
            jobs: JobOptions::default(),
        }
    }
}

/// An authenticated user, as statements see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub username: String,
    pub role: Role,
}

impl From<&UserRecord> for Caller {
    fn from(user: &UserRecord) -> Self {
        Caller {
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            role: user.role,
        }
    }
}

/// One `/sql` request.
#[derive(Debug, Clone, Default)]
pub struct SqlRequest {
    pub sql: String,
    /// Values of `$1, $2, ...`.
    pub params: Vec<Literal>,
    /// Namespace for unqualified table names (`default` when absent).
    pub namespace: Option<String>,
}

impl SqlRequest {
    pub fn new(sql: impl Into<String>) -> Self {
        SqlRequest {
            sql: sql.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub data_type: String,
}

/// The result of one statement.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatementResult {
    pub columns: Vec<ColumnInfo>,
    pub rows: Vec<Vec<serde_json::Value>>,
    pub row_count: usize,
    pub message: Option<String>,
}

impl StatementResult {
    pub(crate) fn message(message: impl Into<String>) -> Self {
        StatementResult {
            columns: Vec::new(),
            rows: Vec::new(),
            row_count: 0,
            message: Some(message.into()),
        }
    }

    pub(crate) fn affected(row_count: usize, message: impl Into<String>) -> Self {
        StatementResult {
            row_count,
            ..Self::message(message)
        }
    }
}

/// The error that stopped a request, and which statement raised it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementError {
    pub error: KalamError,
    pub statement_index: usize,
}

/// What a request did: the results of the statements that completed, and the error
/// that stopped it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlOutcome {
    pub results: Vec<StatementResult>,
    pub error: Option<StatementError>,
}

/// Storage and job figures (see [`KalamDb::storage_metrics`]).
#[derive(Debug, Clone, Default)]
pub struct StorageMetrics {
    /// Hot row versions in RocksDB, all tables.
    pub hot_rows: u64,
    /// Parquet segments, their bytes and row versions, over all USER tables.
    pub cold_files: u64,
    pub cold_bytes: u64,
    pub cold_rows: u64,
    /// Jobs in `system.jobs` by status.
    pub jobs_by_status: std::collections::BTreeMap<&'static str, u64>,
    /// Written by flush jobs since the server started.
    pub flushed_rows_total: u64,
    pub flushed_bytes_total: u64,
    pub flushed_files_total: u64,
}

/// Allocates `_seq` values: unique, growing with every write, milliseconds since the
/// epoch in the high bits (snowflake-style: `unix_ms << 22 | counter`).
pub(crate) struct SeqGenerator {
    last: AtomicU64,
}

const SEQ_COUNTER_BITS: u32 = 22;
pub(crate) const LAST_SEQ_KEY: &str = "meta/last_seq";

impl SeqGenerator {
    fn new(last_persisted: u64) -> Self {
        SeqGenerator {
            last: AtomicU64::new(last_persisted),
        }
    }

    pub fn next(&self) -> u64 {
        let now = (now_micros() as u64 / 1000) << SEQ_COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(crate) fn store_error(e: StoreError) -> KalamError {
    KalamError::internal(format!("storage failure: {e}"))
}

/// State shared by every request and by DataFusion providers.
pub(crate) struct DbShared {
    pub store: Store,
    pub catalog: Catalog,
    pub seq: SeqGenerator,
    pub auth: Authenticator,
    pub tokens: TokenService,
    pub options: DbOptions,
    pub base_state: SessionState,
    /// Serializes every statement that writes: each one reads, checks and commits
    /// one batch without interleaving with another. A flush takes its watermark
    /// under it.
    pub write_lock: tokio::sync::Mutex<()>,
    /// Parquet segments: manifests, watermarks, the tier commit lock.
    pub cold: ColdTier,
    /// Background jobs. Always present: there is no database without one.
    pub jobs: JobManager,
}

/// The database. Cheap to clone; all clones share one instance.
#[derive(Clone)]
pub struct KalamDb {
    shared: Arc<DbShared>,
    started_at: Instant,
}

const FORMAT_VERSION_KEY: &str = "meta/format_version";
const ROOT_USER: &str = "root";

impl KalamDb {
    /// Opens the data directory (creating it on first start, with the `default`
    /// namespace and the `root` user), recovers jobs a crash interrupted and starts
    /// the job manager's background tasks. Must be called inside a tokio runtime.
    pub fn open(options: DbOptions) -> KalamResult<KalamDb> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(KalamError::internal(
                "KalamDb::open must run inside a tokio runtime (it starts the job manager)",
            ));
        }
        let rocksdb_dir = options.data_dir.join("rocksdb");
        std::fs::create_dir_all(&rocksdb_dir)
            .map_err(|e| KalamError::internal(format!("cannot create {}: {e}", rocksdb_dir.display())))?;
        let store = Store::open(&rocksdb_dir, &options.store).map_err(store_error)?;
        check_format_version(&store)?;
        let catalog = Catalog::load(&store)?;
        let last_seq = match store.system_get(LAST_SEQ_KEY).map_err(store_error)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| KalamError::internal("corrupt meta/last_seq"))?,
            ),
            None => 0,
        };
        let storage_dir = std::path::absolute(options.data_dir.join("storage"))
            .map_err(|e| KalamError::internal(format!("invalid data directory: {e}")))?;
        std::fs::create_dir_all(&storage_dir)
            .map_err(|e| KalamError::internal(format!("cannot create {}: {e}", storage_dir.display())))?;
        let cold = ColdTier::open(storage_dir, &store)?;
        let jobs = JobManager::new(options.jobs.clone());
        let tokens = TokenService::new(&token_secret(&store, &options)?, options.token_ttl);
        let shared = Arc::new(DbShared {
            store,
            catalog,
            cold,
            jobs,
            seq: SeqGenerator::new(last_seq),
            auth: Authenticator::new(options.credential_cache_ttl),
            tokens,
            base_state: query::base_session_state(),
            write_lock: tokio::sync::Mutex::new(()),
            options,
        });
        bootstrap(&shared)?;
        jobs::recover(&shared)?;
        shared.jobs.start_background(&shared)?;
        Ok(KalamDb {
            shared,
            started_at: Instant::now(),
        })
    }

    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// Checks credentials; see [`auth`](crate::auth) for the cache and the loopback rule.
    pub fn authenticate(&self, username: &str, password: &str, from_loopback: bool) -> KalamResult<Caller> {
        self.shared
            .auth
            .authenticate(&self.shared.catalog, username, password, from_loopback)
    }

    /// `POST /auth/login`: checks the password (as [`KalamDb::authenticate`]) and
    /// returns a signed bearer token and its expiry (seconds since the epoch). A user
    /// without a password (a password-less `root`) gets no token: the loopback rule
    /// could not follow it.
    pub fn login(&self, username: &str, password: &str, from_loopback: bool) -> KalamResult<(String, i64)> {
        self.authenticate(username, password, from_loopback)?;
        let user = self
            .shared
            .catalog
            .user(username)
            .ok_or_else(|| KalamError::new(ErrorCode::Unauthorized, "invalid username or password"))?;
        if user.password_hash.is_empty() {
            return Err(KalamError::new(
                ErrorCode::Unauthorized,
                "a user without a password cannot get a token; set a password first",
            ));
        }
        self.shared.tokens.issue(&user)
    }

    /// The caller a bearer token stands for (`UNAUTHORIZED` when it is expired,
    /// forged, or its user was dropped or changed password).
    pub fn authenticate_token(&self, token: &str) -> KalamResult<Caller> {
        self.shared.tokens.verify(&self.shared.catalog, token)
    }

    /// Runs every statement of the request in order, stopping at the first error.
    pub async fn execute(&self, caller: &Caller, request: SqlRequest) -> SqlOutcome {
        let refuse = |error: KalamError| SqlOutcome {
            results: Vec::new(),
            error: Some(StatementError {
                error,
                statement_index: 0,
            }),
        };
        let options = &self.shared.options;
        if request.sql.len() > options.max_sql_bytes {
            return refuse(KalamError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the SQL text is {} bytes; the limit is {} (max_sql_bytes)",
                    request.sql.len(),
                    options.max_sql_bytes
                ),
            ));
        }
        let statements = kalamdb_sql::split_statements(&request.sql);
        if statements.len() > options.max_statements {
            return refuse(KalamError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the request has {} statements; the limit is {} (max_statements)",
                    statements.len(),
                    options.max_statements
                ),
            ));
        }
        if statements.is_empty() {
            return SqlOutcome {
                results: Vec::new(),
                error: Some(StatementError {
                    error: KalamError::new(ErrorCode::EmptySql, "the request contains no SQL statement"),
                    statement_index: 0,
                }),
            };
        }
        let namespace = request
            .namespace
            .as_deref()
            .map(|n| n.to_ascii_lowercase())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let mut results = Vec::with_capacity(statements.len());
        for (index, sql) in statements.iter().enumerate() {
            let ctx = executor::StatementContext {
                db: &self.shared,
                caller,
                namespace: &namespace,
                params: &request.params,
            };
            match ctx.execute(sql).await {
                Ok(result) => results.push(result),
                Err(error) => {
                    return SqlOutcome {
                        results,
                        error: Some(StatementError {
                            error,
                            statement_index: index,
                        }),
                    };
                }
            }
        }
        SqlOutcome { results, error: None }
    }

    /// Graceful shutdown of background work: queued jobs are cancelled, running
    /// ones get the configured timeout to finish (see [`JobOptions`]).
    pub async fn shutdown(&self) {
        self.shared.jobs.shutdown().await;
    }

    /// Storage and job figures for `/metrics`. Counts hot row keys (the cost grows
    /// with the hot tier, which flushing keeps small), reads every USER table's
    /// manifests (one small file per user directory) and the job records.
    pub fn storage_metrics(&self) -> KalamResult<StorageMetrics> {
        let db = &self.shared;
        let mut metrics = StorageMetrics::default();
        for table in db.catalog.tables() {
            metrics.hot_rows += db.store.hot_count(table.table_id).map_err(store_error)?;
            if table.table_type != kalamdb_commons::TableType::User {
                continue;
            }
            for scope in db.cold.scopes_on_disk(&table)? {
                let manifest = db.cold.manifest(&table, &scope)?;
                metrics.cold_files += manifest.segments.len() as u64;
                metrics.cold_bytes += manifest.size_bytes();
                metrics.cold_rows += manifest.row_count();
            }
        }
        for record in jobs::all_records(db)? {
            *metrics.jobs_by_status.entry(record.status.as_str()).or_default() += 1;
        }
        (
            metrics.flushed_rows_total,
            metrics.flushed_bytes_total,
            metrics.flushed_files_total,
        ) = db.jobs.flush_totals();
        Ok(metrics)
    }

    /// The data directory this database was opened on.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.shared.options.data_dir
    }
}

const TOKEN_SECRET_KEY: &str = "meta/token_secret";

/// The token signing secret: configured, or generated once and kept in `system`.
fn token_secret(store: &Store, options: &DbOptions) -> KalamResult<Vec<u8>> {
    if let Some(secret) = options.token_secret.as_ref().filter(|s| !s.is_empty()) {
        return Ok(secret.as_bytes().to_vec());
    }
    if let Some(secret) = store.system_get(TOKEN_SECRET_KEY).map_err(store_error)? {
        return Ok(secret);
    }
    let mut secret = Vec::with_capacity(32);
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let mut batch = store.batch();
    batch.put_system(TOKEN_SECRET_KEY, &secret);
    store.commit(batch).map_err(store_error)?;
    Ok(secret)
}

fn check_format_version(store: &Store) -> KalamResult<()> {
    match store.system_get(FORMAT_VERSION_KEY).map_err(store_error)? {
        Some(bytes) => {
            let version = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| KalamError::internal("corrupt meta/format_version"))?;
            if version > FORMAT_VERSION {
                return Err(KalamError::internal(format!(
                    "the data directory has format version {version}; this server reads up to {FORMAT_VERSION}"
                )));
            }
            Ok(())
        }
        None => {
            let mut batch = store.batch();
            batch.put_system(FORMAT_VERSION_KEY, FORMAT_VERSION.to_string().as_bytes());
            store.commit(batch).map_err(store_error)
        }
    }
}

/// First start: the `default` namespace and `root`. Every start: `root` gets the
/// configured password if it has none yet.
fn bootstrap(db: &DbShared) -> KalamResult<()> {
    let now = now_micros();
    let mut batch = db.store.batch();
    let mut namespace = None;
    if !db.catalog.namespace_exists(DEFAULT_NAMESPACE) && db.catalog.user(ROOT_USER).is_none() {
        let ns = NamespaceDef {
            name: DEFAULT_NAMESPACE.to_string(),
            created_at: now,
        };
        Catalog::stage_namespace(&mut batch, &ns);
        namespace = Some(ns);
    }
    let root = match db.catalog.user(ROOT_USER) {
        None => Some(UserRecord {
            user_id: UserId::new(ROOT_USER.to_string()),
            username: ROOT_USER.to_string(),
            password_hash: match &db.options.root_password {
                Some(pw) if !pw.is_empty() => auth::hash_password(pw)?,
                _ => String::new(),
            },
            role: Role::System,
            created_at: now,
            updated_at: now,
        }),
        Some(mut root) if root.password_hash.is_empty() => match &db.options.root_password {
            Some(pw) if !pw.is_empty() => {
                root.password_hash = auth::hash_password(pw)?;
                root.updated_at = now;
                Some(root)
            }
            _ => None,
        },
        Some(_) => None,
    };
    if let Some(root) = &root {
        Catalog::stage_user(&mut batch, root);
    }
    if batch.is_empty() {
        return Ok(());
    }
    db.store.commit(batch).map_err(store_error)?;
    if let Some(ns) = namespace {
        db.catalog.apply_namespace(ns);
    }
    if let Some(root) = root {
        db.catalog.apply_user(root);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_grow_and_start_above_the_persisted_one() {
        let far_future = u64::MAX / 2;
        let seq = SeqGenerator::new(far_future);
        let a = seq.next();
        let b = seq.next();
        assert_eq!(a, far_future + 1);
        assert_eq!(b, a + 1);
        let fresh = SeqGenerator::new(0);
        let first = fresh.next();
        assert!(first > 1 << 40, "time in the high bits");
        assert!(fresh.next() > first);
    }
}
