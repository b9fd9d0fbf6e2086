//! The KalamDB engine: catalog, statement execution, DataFusion integration and
//! authentication, over the hot store.
//!
//! Who it is for: the HTTP layer (`kalamdb-api`) and tests. It takes SQL text from an
//! authenticated [`Caller`] and returns typed results:
//!
//! ```ignore
//! let db = KalamDb::open(DbOptions::new("./data"))?;
//! let root = db.authenticate("root", "", true).await?;
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

mod access;
mod arrow_conv;
mod assemble;
mod auth;
mod base;
mod budget;
pub mod catalog;
mod cold;
mod defaults;
mod dml;
mod executor;
pub mod failpoint;
mod hot_rows;
mod identity;
mod index;
mod index_build;
mod ingest;
mod job_record;
pub mod jobs;
#[cfg(test)]
mod layers;
mod live;
mod locks;
mod maintenance;
mod observers;
mod pending;
mod point_read;
mod provider;
mod query;
mod results;
mod scoped;
mod segment;
mod seq;
mod session;
mod statements;
mod storages;
mod stream;
mod system_tables;
mod tiered_scan;
mod tiers;
mod txn;
mod views;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kalamdb_commons::{ErrorCode, KalamError, KalamResult, Literal, Role, UserId};
use kalamdb_store::{Store, StoreOptions};

pub use crate::access::Caller;
pub use crate::arrow_conv::RowStream;
use crate::auth::{Authenticator, TokenService};
pub use crate::base::df_error;
pub use crate::base::public_message;
use crate::base::{now_micros, store_error};
use crate::catalog::{Catalog, DEFAULT_NAMESPACE, NamespaceDef, UserRecord};
use crate::cold::ColdTier;
pub use crate::defaults::DbOptions;
pub use crate::ingest::IngestFormat;
use crate::jobs::JobManager;
use crate::live::LiveHub;
pub use crate::live::{LiveConnection, LiveMessage, LiveOptions, LiveReceiver, SubscribeOptions, live_error};
use crate::query::QueryEngine;
pub use crate::results::{JsonResults, RowEncoder, RowFormat, StatementResult};
use crate::seq::{LAST_SEQ_KEY, MAX_SEQ, SeqGenerator};
use crate::statements::Engine;
use crate::tiers::Tiers;

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

/// Runs the work of the statement `sql` within `budget`, on a large stack of its
/// own when the SQL is long (see [`LARGE_STATEMENT_BYTES`]).
///
/// The work comes boxed: a statement's future is large (DataFusion planning and
/// execution live in it), and the request's future is moved several times on its way
/// through the HTTP stack; carrying it inline cost a third of a single-row INSERT's
/// instructions in memcpy.
async fn run_statement<T>(
    sql: &str,
    budget: Arc<budget::Budget>,
    work: std::pin::Pin<Box<impl std::future::Future<Output = KalamResult<T>>>>,
) -> KalamResult<T> {
    let run = budget::with_budget(budget, work);
    if sql.len() > LARGE_STATEMENT_BYTES {
        OnLargeStack::new(run).await
    } else {
        run.await
    }
}

/// The namespace unqualified names of `request` resolve in.
fn request_namespace(request: &SqlRequest) -> String {
    request
        .namespace
        .as_deref()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// A statement longer than this may nest deeper than a thread's stack allows when
/// its syntax tree is dropped (no limit or walker protects `Drop`): it runs on its
/// own large stack. Shorter ones cannot nest that deep (each level costs at least
/// one byte of SQL) and run where they are.
const LARGE_STATEMENT_BYTES: usize = 4096;

/// The stack of a long statement: address space reserved per poll, committed only
/// as far as it is used. It holds the deepest tree `max_sql_bytes` (1 MiB) of SQL
/// can build (about 500,000 levels).
const LARGE_STATEMENT_STACK: usize = 1 << 30;

/// Polls (and drops) a future on a large stack of its own (see
/// `kalamdb_sql::check_depth` for why deep syntax trees need one).
struct OnLargeStack<F: std::future::Future> {
    future: Option<std::pin::Pin<Box<F>>>,
}

impl<F: std::future::Future> OnLargeStack<F> {
    fn new(future: F) -> Self {
        OnLargeStack {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F: std::future::Future> std::future::Future for OnLargeStack<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        let Some(future) = this.future.as_mut() else {
            return std::task::Poll::Pending;
        };
        let poll = stacker::grow(LARGE_STATEMENT_STACK, || future.as_mut().poll(cx));
        if poll.is_ready() {
            // Whatever the finished future still owns is dropped on the large stack.
            let finished = this.future.take();
            stacker::grow(LARGE_STATEMENT_STACK, move || drop(finished));
        }
        poll
    }
}

impl<F: std::future::Future> Drop for OnLargeStack<F> {
    /// A statement abandoned half-way (the client went away) is dropped on the large
    /// stack too.
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            stacker::grow(LARGE_STATEMENT_STACK, move || drop(future));
        }
    }
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
    /// SELECTs by primary key answered without query planning.
    pub point_reads_total: u64,
    /// Statements that ran a plan kept from an earlier run (`SELECT 1`).
    pub reused_plans_total: u64,
}

/// The database. Cheap to clone (one reference count); all clones share one instance.
#[derive(Clone)]
pub struct KalamDb(Arc<Opened>);

/// What an open database is made of.
struct Opened {
    /// The statements layer, over the query layer, over the tiers.
    engine: Arc<Engine>,
    jobs: Arc<JobManager>,
    live: Arc<LiveHub>,
    started_at: Instant,
    ticker: maintenance::Ticker,
}

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
        let store_options = StoreOptions {
            unsynced_writes_skip_wal: failpoint::armed("lose_unsynced_writes"),
            ..options.store.clone()
        };
        let store = Store::open(&rocksdb_dir, &store_options).map_err(store_error)?;
        let catalog = Catalog::load(&store)?;
        let last_seq = match store.latest().system_get(LAST_SEQ_KEY).map_err(store_error)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| KalamError::internal("corrupt meta/last_seq"))?,
            )
            .min(MAX_SEQ),
            None => 0,
        };
        let storages = storages::open_all(&store, &options.data_dir.join("storage"))?;
        let cold = ColdTier::open(storages, &store, options.jobs.compaction_target_bytes)?;
        let table_ids: Vec<u32> = catalog.tables().iter().map(|t| t.table_id).collect();
        live::open_log(&store, !options.live.history.is_zero(), last_seq, &table_ids)?;
        let holds = Arc::new(failpoint::Holds::default());
        let live = LiveHub::new(options.live.clone(), holds.clone());
        let policy = jobs::PolicyCounter::default();
        let commit_observers = observers::CommitObservers::new(vec![
            Box::new(live::LiveCommits(live.clone())),
            Box::new(policy.clone()),
        ]);
        let tokens = TokenService::new(&token_secret(&store, &options)?, options.token_ttl);
        let query_runtime =
            budget::QueryRuntime::open(&options.data_dir.join("tmp"), options.query_memory_bytes)?;
        for storage in cold.storages() {
            storages::register(&query_runtime, &storage)?;
        }
        let tiers = Arc::new(Tiers {
            store,
            catalog,
            cold,
            seq: SeqGenerator::new(last_seq),
            query_runtime,
            commit_locks: Default::default(),
            claims: Default::default(),
            hot_rows: hot_rows::HotRows::default(),
            identities: Default::default(),
            holds,
            commit_observers,
            options,
        });
        let jobs = JobManager::new(tiers.options.jobs.clone(), tiers.clone(), policy);
        let query = Arc::new(QueryEngine {
            sessions: query::SessionPool::new(query::base_session_state(tiers.options.max_subquery_rows)),
            constant_plans: Default::default(),
            system_tables: Arc::new(system_tables::SystemTables::new(vec![
                Box::new(jobs::JobsTable(jobs.clone())),
                Box::new(live::LiveTable(live.clone())),
            ])),
            point_reads: Default::default(),
            tiers,
        });
        let engine = Arc::new(Engine {
            auth: Authenticator::new(query.options.credential_cache_ttl),
            tokens,
            ddl_lock: tokio::sync::Mutex::new(()),
            jobs: jobs.clone(),
            live: live.clone(),
            query,
        });
        bootstrap(&engine)?;
        if engine
            .catalog
            .user(ROOT_USER)
            .is_some_and(|root| root.password_hash.is_empty())
        {
            tracing::warn!(
                "user 'root' has no password: any client connecting from this host's loopback \
                 address is root, including a reverse proxy on this host that forwards remote \
                 requests; set KALAMDB_ROOT_PASSWORD (or ALTER USER 'root' SET PASSWORD) before \
                 exposing the server (docs/SECURITY.md)"
            );
        }
        jobs::recover(&jobs)?;
        jobs.count_at_start()?;
        let ticker = maintenance::Ticker::start(&jobs, &live, engine.options.jobs.policy_check_interval);
        Ok(KalamDb(Arc::new(Opened {
            engine,
            jobs,
            live,
            started_at: Instant::now(),
            ticker,
        })))
    }

    pub fn uptime(&self) -> Duration {
        self.0.started_at.elapsed()
    }

    /// Checks credentials; see [`auth`](crate::auth) for the cache and the loopback rule.
    /// A cache miss verifies the argon2 hash on tokio's blocking pool, never on an
    /// async worker.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
        passwordless_ok: bool,
    ) -> KalamResult<Caller> {
        // Argon2 takes tens of milliseconds: on the blocking pool, and only when a
        // hash must be verified.
        let quick =
            self.0
                .engine
                .auth
                .without_hashing(&self.0.engine.catalog, username, password, passwordless_ok);
        if let Some(answer) = quick {
            return answer;
        }
        let engine = self.0.engine.clone();
        let (username, password) = (username.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            let verified = engine.auth.verify(&engine.catalog, &username, &password)?;
            engine.holds.wait_named(|| format!("credential_cache:{username}"));
            engine.auth.remember(&username, &verified);
            Ok(verified.caller)
        })
        .await
        .map_err(|e| KalamError::internal(format!("authentication task failed: {e}")))?
    }

    /// `POST /auth/login`: checks the password (as [`KalamDb::authenticate`]) and
    /// returns a signed bearer token and its expiry (seconds since the epoch). A user
    /// without a password (a password-less `root`) gets no token: the loopback rule
    /// could not follow it.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        passwordless_ok: bool,
    ) -> KalamResult<(String, i64)> {
        self.authenticate(username, password, passwordless_ok).await?;
        let user = self
            .0
            .engine
            .catalog
            .user(username)
            .ok_or_else(|| KalamError::new(ErrorCode::Unauthorized, "invalid username or password"))?;
        if user.password_hash.is_empty() {
            return Err(KalamError::new(
                ErrorCode::Unauthorized,
                "a user without a password cannot get a token; set a password first",
            ));
        }
        self.0.engine.tokens.issue(&user)
    }

    /// The caller a bearer token stands for (`UNAUTHORIZED` when it is expired,
    /// forged, or its user was dropped or changed password).
    pub fn authenticate_token(&self, token: &str) -> KalamResult<Caller> {
        self.0.engine.tokens.verify(&self.0.engine.catalog, token)
    }

    /// The statements of `request` (at least one, at most `max_statements`).
    fn split_request<'r>(&self, request: &'r SqlRequest) -> KalamResult<Vec<&'r str>> {
        let options = &self.0.engine.options;
        if request.sql.len() > options.max_sql_bytes {
            return Err(KalamError::new(
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
            return Err(KalamError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the request has {} statements; the limit is {} (max_statements)",
                    statements.len(),
                    options.max_statements
                ),
            ));
        }
        if statements.is_empty() {
            return Err(KalamError::new(
                ErrorCode::EmptySql,
                "the request contains no SQL statement",
            ));
        }
        Ok(statements)
    }

    /// The budget of a statement starting now (`budget.rs`).
    fn statement_budget(&self) -> Arc<budget::Budget> {
        budget::Budget::new(
            &self.0.engine.query_runtime,
            self.0.engine.options.statement_timeout,
        )
    }

    /// Runs every statement of the request in order, stopping at the first error.
    pub async fn execute(&self, caller: &Caller, request: SqlRequest) -> SqlOutcome {
        let statements = match self.split_request(&request) {
            Ok(statements) => statements,
            Err(error) => {
                return SqlOutcome {
                    results: Vec::new(),
                    error: Some(StatementError {
                        error,
                        statement_index: 0,
                    }),
                };
            }
        };
        let namespace = request_namespace(&request);
        let mut results = Vec::with_capacity(statements.len());
        // The request's transaction state: statements between BEGIN and COMMIT are
        // one transaction; one left open when the request ends is rolled back.
        let mut session = session::Session::default();
        for (index, sql) in statements.iter().enumerate() {
            let ctx = statements::StatementContext {
                db: &self.0.engine,
                caller,
                namespace: &namespace,
                params: &request.params,
            };
            let done = if session.takes(sql) {
                run_statement(sql, self.statement_budget(), Box::pin(session.execute(&ctx, sql))).await
            } else {
                run_statement(sql, self.statement_budget(), Box::pin(ctx.execute(sql))).await
            };
            match done {
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

    /// Runs the one statement of `request`, which must return rows, and hands its
    /// rows out as record batches produced as the stream is polled (the streamed
    /// output formats of `/sql`). The statement's time budget covers the whole
    /// stream: at `statement_timeout_ms` the stream ends with `STATEMENT_TIMEOUT`.
    pub async fn execute_rows(&self, caller: &Caller, request: SqlRequest) -> KalamResult<RowStream> {
        let statements = self.split_request(&request)?;
        let [sql] = statements.as_slice() else {
            return Err(KalamError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "the streamed formats (ndjson, csv, arrow, parquet) take one statement; the request has {}",
                    statements.len()
                ),
            ));
        };
        let namespace = request_namespace(&request);
        let ctx = statements::StatementContext {
            db: &self.0.engine,
            caller,
            namespace: &namespace,
            params: &request.params,
        };
        let budget = self.statement_budget();
        let rows = run_statement(sql, budget.clone(), Box::pin(ctx.execute_rows(sql))).await?;
        Ok(rows.detached(&budget))
    }

    /// Bulk load of `body` (in `format`) into `namespace.table` as `caller`: one
    /// atomic write, with an INSERT's rights, scoping and checks (`ingest.rs`).
    pub async fn ingest(
        &self,
        caller: &Caller,
        namespace: &str,
        table: &str,
        format: IngestFormat,
        body: bytes::Bytes,
    ) -> KalamResult<StatementResult> {
        let namespace = namespace.to_ascii_lowercase();
        let ctx = statements::StatementContext {
            db: &self.0.engine,
            caller,
            namespace: &namespace,
            params: &[],
        };
        let budget = self.statement_budget();
        let table = table.to_ascii_lowercase();
        let work = Box::pin(ingest::ingest(&ctx, &table, format, body, budget.clone()));
        run_statement("", budget, work).await
    }

    /// Graceful shutdown of background work: live-query connections get a close
    /// frame (1001), queued jobs are cancelled, running ones get the configured
    /// timeout to finish (see [`jobs::JobOptions`]).
    pub async fn shutdown(&self) {
        self.0
            .ticker
            .stop(self.0.engine.options.jobs.shutdown_timeout)
            .await;
        self.0.live.shutdown();
        self.0.jobs.shutdown().await;
    }

    /// Opens a live-query connection (one WebSocket) for `caller`; its messages
    /// arrive on the receiver. `SUBSCRIPTION_LIMIT` when the server has
    /// `max_connections` already.
    pub fn live_connect(&self, caller: Caller) -> KalamResult<(LiveConnection, LiveReceiver)> {
        LiveConnection::open(&self.0.live, &self.0.engine.query, caller)
    }

    /// Sends every live-query connection its close frame (1001) and waits up to
    /// `wait` for their sockets to finish; new ones are refused from now on.
    pub async fn close_live_connections(&self, wait: Duration) {
        self.0.live.shutdown();
        let deadline = tokio::time::Instant::now() + wait;
        while self.0.live.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The live-query settings.
    pub fn live_options(&self) -> &LiveOptions {
        &self.0.engine.options.live
    }

    /// Storage and job figures for `/metrics`, from counters kept as writes, flushes
    /// and jobs happen: the cost grows with the number of tables, not of rows, files
    /// or jobs.
    pub fn storage_metrics(&self) -> KalamResult<StorageMetrics> {
        let db = &self.0.engine;
        let cold = db.cold.figures();
        let mut metrics = StorageMetrics {
            hot_rows: db.hot_rows.total(),
            cold_files: cold.files,
            cold_bytes: cold.bytes,
            cold_rows: cold.rows,
            jobs_by_status: self.0.jobs.status_counts(),
            point_reads_total: db.point_reads.load(std::sync::atomic::Ordering::Relaxed),
            reused_plans_total: db.constant_plans.reused(),
            ..StorageMetrics::default()
        };
        (
            metrics.flushed_rows_total,
            metrics.flushed_bytes_total,
            metrics.flushed_files_total,
        ) = self.0.jobs.flush_totals();
        Ok(metrics)
    }

    /// This database's pause points, for tests that must stop background work at a
    /// known step ([`failpoint::Holds`]).
    pub fn holds(&self) -> &failpoint::Holds {
        &self.0.engine.holds
    }

    /// The data directory this database was opened on.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.0.engine.options.data_dir
    }
}

const TOKEN_SECRET_KEY: &str = "meta/token_secret";

/// The token signing secret: configured, or generated once and kept in `system`.
fn token_secret(store: &Store, options: &DbOptions) -> KalamResult<Vec<u8>> {
    if let Some(secret) = options.token_secret.as_ref().filter(|s| !s.is_empty()) {
        return Ok(secret.as_bytes().to_vec());
    }
    if let Some(secret) = store.latest().system_get(TOKEN_SECRET_KEY).map_err(store_error)? {
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

/// First start: the `default` namespace and `root`. Every start: `root` gets the
/// configured password if it has none yet.
fn bootstrap(db: &Tiers) -> KalamResult<()> {
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
