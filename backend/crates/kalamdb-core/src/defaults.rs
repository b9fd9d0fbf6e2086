//! Settings of the database and their defaults, owned here once: the server's flags
//! and `docs/CONFIG.md` are derived from (and tested against) these values.

use std::path::PathBuf;
use std::time::Duration;

use kalamdb_store::StoreOptions;

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
    /// Rows one bulk load (`/ingest`) may carry.
    pub max_ingest_rows: usize,
    /// Most rows one UPDATE or DELETE may write (its writes are held in memory until
    /// its one atomic commit).
    pub max_write_rows: usize,
    /// Most rows one transaction may write (its writes are held in memory until
    /// its COMMIT).
    pub max_transaction_rows: usize,
    /// How long a transaction may stay idle between two statements before it is
    /// rolled back (`None`: no limit).
    pub transaction_timeout: Option<Duration>,
    /// Most work of a correlated subquery evaluated row by row (rows it reads,
    /// summed over the outer rows).
    pub max_subquery_rows: u64,
    /// Longest SQL text of one request, bytes.
    pub max_sql_bytes: usize,
    /// Most statements in one request.
    pub max_statements: usize,
    /// Memory one statement's query may use (DataFusion's memory pool; sorts,
    /// joins and aggregates spill to `<data_dir>/tmp` beyond it).
    pub query_memory_bytes: usize,
    /// How long a statement may run (`None`: no limit).
    pub statement_timeout: Option<Duration>,
    /// Most bytes the rows of one statement's result may hold (as Arrow batches)
    /// before they are sent as JSON.
    pub max_result_bytes: usize,
    /// Secret that signs bearer tokens. When `None`, one is generated at first
    /// start and kept in the data directory (`system` key `meta/token_secret`).
    pub token_secret: Option<String>,
    /// How long a bearer token from `login` is valid.
    pub token_ttl: Duration,
    /// The job manager's settings (flush jobs).
    pub jobs: JobOptions,
    /// Live queries: limits, queues and the change history.
    pub live: LiveOptions,
}

impl DbOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DbOptions {
            data_dir: data_dir.into(),
            store: StoreOptions::default(),
            credential_cache_ttl: Duration::from_secs(300),
            root_password: None,
            max_insert_rows: 100_000,
            max_ingest_rows: 1_000_000,
            max_write_rows: 1_000_000,
            max_transaction_rows: 1_000_000,
            transaction_timeout: Some(Duration::from_secs(60)),
            max_subquery_rows: 100_000_000,
            max_sql_bytes: 1 << 20,
            max_statements: 1000,
            query_memory_bytes: 512 << 20,
            statement_timeout: Some(Duration::from_secs(60)),
            max_result_bytes: 256 << 20,
            token_secret: None,
            token_ttl: Duration::from_secs(3600),
            jobs: JobOptions::default(),
            live: LiveOptions::default(),
        }
    }
}

/// Settings of the job manager.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Jobs that may run at the same time; more wait in `queued`.
    pub max_concurrent_jobs: usize,
    /// Rows per Arrow batch (and per Parquet row group) while flushing; bounds memory.
    pub flush_batch_rows: usize,
    /// How long shutdown waits for running jobs before stopping them.
    pub shutdown_timeout: Duration,
    /// Finished jobs older than this are removed from `system.jobs`.
    pub job_retention: Duration,
    /// How often flush policies are checked.
    pub policy_check_interval: Duration,
    /// Pause after each flushed batch, to bound the I/O a flush takes from
    /// foreground traffic (zero: no pause).
    pub flush_batch_pause: Duration,
    /// Threads one flush job uses to flush a table's users at once.
    pub flush_parallelism: usize,
    /// A compaction starts a new segment once the one it writes reaches this size.
    pub compaction_target_bytes: u64,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            max_concurrent_jobs: 2,
            flush_batch_rows: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            job_retention: Duration::from_secs(7 * 24 * 3600),
            policy_check_interval: Duration::from_secs(1),
            flush_batch_pause: Duration::ZERO,
            flush_parallelism: 2,
            compaction_target_bytes: 512 << 20,
        }
    }
}

/// Limits and queue sizes of live queries (settings, `docs/CONFIG.md`).
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Open WebSocket connections, all users.
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_subscriptions_per_user: usize,
    /// Messages one connection may have queued for its socket.
    pub queue_messages: usize,
    /// Bytes one connection may have queued for its socket.
    pub queue_bytes: usize,
    /// How long the change log keeps changes for `from_seq` resumes (zero: no log;
    /// every resume is `RESUME_UNAVAILABLE`).
    pub history: Duration,
    /// Longest a costly filter may take over one commit's changes before its
    /// subscription ends with `FILTER_TOO_SLOW`.
    pub filter_budget: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            max_connections: 10_000,
            max_subscriptions_per_connection: 100,
            max_subscriptions_per_user: 1000,
            queue_messages: 1024,
            queue_bytes: 16 << 20,
            history: Duration::from_secs(24 * 3600),
            filter_budget: Duration::from_secs(1),
        }
    }
}
