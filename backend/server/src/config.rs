//! Settings: defaults, overridden by an optional TOML file, overridden by `KALAMDB_*`
//! environment variables, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser};
use kalamdb_core::DbOptions;
use serde::{Deserialize, Serialize};

/// Every setting with its default. `docs/CONFIG.md` documents each one (a test checks
/// that its defaults are these), and `--help` shows these.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub max_ingest_bytes: usize,
    pub sync_writes: bool,
    pub rocksdb_write_buffer_mb: usize,
    pub credential_cache_seconds: u64,
    pub max_insert_rows: usize,
    pub max_ingest_rows: usize,
    pub max_write_rows: usize,
    pub max_transaction_rows: usize,
    pub transaction_timeout_ms: u64,
    pub max_subquery_rows: u64,
    pub shutdown_timeout_seconds: u64,
    pub max_concurrent_jobs: usize,
    pub flush_batch_rows: usize,
    pub flush_parallelism: usize,
    pub compaction_target_mb: u64,
    pub job_shutdown_timeout_seconds: u64,
    pub job_retention_seconds: u64,
    pub flush_batch_pause_ms: u64,
    pub max_sql_bytes: usize,
    pub max_statements: usize,
    pub token_ttl_seconds: u64,
    pub login_max_failures: u32,
    pub login_lockout_seconds: u64,
    pub query_memory_mb: usize,
    pub statement_timeout_ms: u64,
    pub max_result_bytes: usize,
    pub live_max_connections: usize,
    pub live_max_subscriptions_per_connection: usize,
    pub live_max_subscriptions_per_user: usize,
    pub live_queue_messages: usize,
    pub live_history_seconds: u64,
    pub live_max_message_bytes: usize,
    pub live_idle_timeout_seconds: u64,
    pub live_filter_budget_ms: u64,
    /// Host names (besides the listen address and `localhost`) under which a
    /// loopback client may use the password-less root (`*`: any).
    pub allowed_hosts: Vec<String>,
    /// Browser origins that may use `/sql`, `/ingest`, `/auth/login` and `/ws`
    /// (`*`: any).
    pub allowed_origins: Vec<String>,
    /// Signs bearer tokens. From `KALAMDB_TOKEN_SECRET` or the TOML file, never a
    /// flag; generated and kept in the data directory when unset.
    pub token_secret: Option<String>,
    /// From `KALAMDB_ROOT_PASSWORD` only (never a flag: argv is visible to every user).
    #[serde(skip)]
    pub root_password: Option<String>,
}

impl Default for Settings {
    /// The engine's settings default to the engine's own defaults (`DbOptions` and
    /// its parts, where each is written once); the server's own — listening, request
    /// bodies, logins, sockets, origins — are set here.
    fn default() -> Self {
        let db = DbOptions::new("./data");
        let (jobs, live) = (&db.jobs, &db.live);
        Settings {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            max_body_bytes: 10 * 1024 * 1024,
            max_ingest_bytes: 64 * 1024 * 1024,
            sync_writes: db.store.sync_writes,
            rocksdb_write_buffer_mb: db.store.write_buffer_bytes >> 20,
            credential_cache_seconds: db.credential_cache_ttl.as_secs(),
            max_insert_rows: db.max_insert_rows,
            max_ingest_rows: db.max_ingest_rows,
            max_write_rows: db.max_write_rows,
            max_transaction_rows: db.max_transaction_rows,
            transaction_timeout_ms: db.transaction_timeout.map_or(0, |t| t.as_millis() as u64),
            max_subquery_rows: db.max_subquery_rows,
            shutdown_timeout_seconds: 30,
            max_concurrent_jobs: jobs.max_concurrent_jobs,
            flush_batch_rows: jobs.flush_batch_rows,
            flush_parallelism: jobs.flush_parallelism,
            compaction_target_mb: jobs.compaction_target_bytes >> 20,
            job_shutdown_timeout_seconds: jobs.shutdown_timeout.as_secs(),
            job_retention_seconds: jobs.job_retention.as_secs(),
            flush_batch_pause_ms: jobs.flush_batch_pause.as_millis() as u64,
            max_sql_bytes: db.max_sql_bytes,
            max_statements: db.max_statements,
            token_ttl_seconds: db.token_ttl.as_secs(),
            login_max_failures: 10,
            login_lockout_seconds: 60,
            query_memory_mb: db.query_memory_bytes >> 20,
            statement_timeout_ms: db.statement_timeout.map_or(0, |t| t.as_millis() as u64),
            max_result_bytes: db.max_result_bytes,
            live_max_connections: live.max_connections,
            live_max_subscriptions_per_connection: live.max_subscriptions_per_connection,
            live_max_subscriptions_per_user: live.max_subscriptions_per_user,
            live_queue_messages: live.queue_messages,
            live_history_seconds: live.history.as_secs(),
            live_max_message_bytes: 1 << 20,
            live_idle_timeout_seconds: 90,
            live_filter_budget_ms: live.filter_budget.as_millis() as u64,
            allowed_hosts: Vec::new(),
            allowed_origins: vec!["*".to_string()],
            token_secret: db.token_secret,
            root_password: db.root_password,
            data_dir: db.data_dir,
        }
    }
}

impl Settings {
    /// Each setting's default as `--help` and docs/CONFIG.md show it (`None` for one
    /// without a value: generated or unset).
    pub fn default_texts() -> Vec<(String, Option<String>)> {
        let serde_json::Value::Object(fields) =
            serde_json::to_value(Settings::default()).expect("settings serialize")
        else {
            unreachable!("settings serialize to an object")
        };
        (fields.into_iter())
            .map(|(key, value)| {
                let text = match value {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Array(items) if items.is_empty() => Some("none".to_string()),
                    serde_json::Value::Array(items) => Some(
                        (items.iter())
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    other => Some(other.to_string()),
                };
                (key, text)
            })
            .collect()
    }
}

impl Cli {
    /// The command line as parsed, each flag's help ending in its default.
    pub fn parse_with_defaults() -> Cli {
        let matches = Cli::command_with_defaults().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The flags, each one's help ending in its default ([`Settings::default_texts`]).
    pub fn command_with_defaults() -> clap::Command {
        let mut command = Cli::command();
        for (key, text) in Settings::default_texts() {
            let Some(text) = text else { continue };
            if command.get_arguments().any(|a| a.get_id() == key.as_str()) {
                command = command.mut_arg(key, |arg| {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    arg.help(format!("{help} [default: {text}]"))
                });
            }
        }
        command
    }
}

/// The command line: `--config` and every setting as an override.
#[derive(Debug, Parser, Default)]
#[command(
    name = "kalamdb-server",
    version,
    about = "KalamDB: a SQL database server with RocksDB hot storage",
    after_help = "Precedence: flag > KALAMDB_* environment variable > --config file > default.\n\
                  KALAMDB_ROOT_PASSWORD sets root's password (environment only); without it, root has an \
                  empty password accepted only from loopback clients.\n\
                  Logging: RUST_LOG (e.g. RUST_LOG=debug for one line per request)."
)]
pub struct Cli {
    /// TOML file with any of the settings below (snake_case keys)
    #[arg(long, env = "KALAMDB_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Settings that override the defaults: parsed from the TOML file (every key optional,
/// unknown keys are errors) and from flags / environment variables.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Address to listen on
    #[arg(long, env = "KALAMDB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for RocksDB and Parquet files
    #[arg(long, env = "KALAMDB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest accepted request body in bytes
    #[arg(long, env = "KALAMDB_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest accepted bulk-load body (POST /ingest) in bytes
    #[arg(long, env = "KALAMDB_MAX_INGEST_BYTES")]
    pub max_ingest_bytes: Option<usize>,
    /// fsync the WAL before acknowledging a write (survives power loss)
    #[arg(long, env = "KALAMDB_SYNC_WRITES")]
    pub sync_writes: Option<bool>,
    /// RocksDB memtable size per column family, MiB
    #[arg(long, env = "KALAMDB_ROCKSDB_WRITE_BUFFER_MB")]
    pub rocksdb_write_buffer_mb: Option<usize>,
    /// How long a verified password is remembered, seconds
    #[arg(long, env = "KALAMDB_CREDENTIAL_CACHE_SECONDS")]
    pub credential_cache_seconds: Option<u64>,
    /// Most rows one INSERT may carry
    #[arg(long, env = "KALAMDB_MAX_INSERT_ROWS")]
    pub max_insert_rows: Option<usize>,
    /// Most rows one bulk load (POST /ingest) may carry
    #[arg(long, env = "KALAMDB_MAX_INGEST_ROWS")]
    pub max_ingest_rows: Option<usize>,
    /// Most rows one UPDATE or DELETE may write
    #[arg(long, env = "KALAMDB_MAX_WRITE_ROWS")]
    pub max_write_rows: Option<usize>,
    /// Most rows one transaction may write
    #[arg(long, env = "KALAMDB_MAX_TRANSACTION_ROWS")]
    pub max_transaction_rows: Option<usize>,
    /// How long a transaction may stay idle between statements before it is rolled back, milliseconds (0: no limit)
    #[arg(long, env = "KALAMDB_TRANSACTION_TIMEOUT_MS")]
    pub transaction_timeout_ms: Option<u64>,
    /// Most rows a correlated subquery evaluated row by row may read, summed over its outer rows
    #[arg(long, env = "KALAMDB_MAX_SUBQUERY_ROWS")]
    pub max_subquery_rows: Option<u64>,
    /// How long shutdown waits for in-flight requests, seconds
    #[arg(long, env = "KALAMDB_SHUTDOWN_TIMEOUT_SECONDS")]
    pub shutdown_timeout_seconds: Option<u64>,
    /// Flush jobs that may run at the same time
    #[arg(long, env = "KALAMDB_MAX_CONCURRENT_JOBS")]
    pub max_concurrent_jobs: Option<usize>,
    /// Rows per batch (and Parquet row group) while flushing; bounds flush memory
    #[arg(long, env = "KALAMDB_FLUSH_BATCH_ROWS")]
    pub flush_batch_rows: Option<usize>,
    /// Threads one flush job uses to flush a table's users at once
    #[arg(long, env = "KALAMDB_FLUSH_PARALLELISM")]
    pub flush_parallelism: Option<usize>,
    /// Size at which a compaction starts a new segment, MiB
    #[arg(long, env = "KALAMDB_COMPACTION_TARGET_MB")]
    pub compaction_target_mb: Option<u64>,
    /// How long shutdown waits for running jobs before stopping them, seconds
    #[arg(long, env = "KALAMDB_JOB_SHUTDOWN_TIMEOUT_SECONDS")]
    pub job_shutdown_timeout_seconds: Option<u64>,
    /// Finished jobs older than this leave system.jobs, seconds
    #[arg(long, env = "KALAMDB_JOB_RETENTION_SECONDS")]
    pub job_retention_seconds: Option<u64>,
    /// Pause after each flushed batch, limiting a flush's I/O, milliseconds
    #[arg(long, env = "KALAMDB_FLUSH_BATCH_PAUSE_MS")]
    pub flush_batch_pause_ms: Option<u64>,
    /// Longest SQL text of one request, bytes
    #[arg(long, env = "KALAMDB_MAX_SQL_BYTES")]
    pub max_sql_bytes: Option<usize>,
    /// Most statements in one request
    #[arg(long, env = "KALAMDB_MAX_STATEMENTS")]
    pub max_statements: Option<usize>,
    /// How long a bearer token from POST /auth/login is valid, seconds
    #[arg(long, env = "KALAMDB_TOKEN_TTL_SECONDS")]
    pub token_ttl_seconds: Option<u64>,
    /// Failed logins one client address may make before it is refused for a while
    #[arg(long, env = "KALAMDB_LOGIN_MAX_FAILURES")]
    pub login_max_failures: Option<u32>,
    /// How long failed logins count and a locked-out address waits, seconds
    #[arg(long, env = "KALAMDB_LOGIN_LOCKOUT_SECONDS")]
    pub login_lockout_seconds: Option<u64>,
    /// Memory one statement's query may use (sorts, joins, aggregates spill beyond it), MiB
    #[arg(long, env = "KALAMDB_QUERY_MEMORY_MB")]
    pub query_memory_mb: Option<usize>,
    /// Longest a statement may run before it is cancelled, milliseconds (0: no limit)
    #[arg(long, env = "KALAMDB_STATEMENT_TIMEOUT_MS")]
    pub statement_timeout_ms: Option<u64>,
    /// Most bytes the rows of one statement's JSON result may hold in memory
    #[arg(long, env = "KALAMDB_MAX_RESULT_BYTES")]
    pub max_result_bytes: Option<usize>,
    /// Open live-query WebSocket connections, all users
    #[arg(long, env = "KALAMDB_LIVE_MAX_CONNECTIONS")]
    pub live_max_connections: Option<usize>,
    /// Live-query subscriptions of one connection
    #[arg(long, env = "KALAMDB_LIVE_MAX_SUBSCRIPTIONS_PER_CONNECTION")]
    pub live_max_subscriptions_per_connection: Option<usize>,
    /// Live-query subscriptions of one user, all connections
    #[arg(long, env = "KALAMDB_LIVE_MAX_SUBSCRIPTIONS_PER_USER")]
    pub live_max_subscriptions_per_user: Option<usize>,
    /// Messages one live connection may have queued before its slowest subscription lags
    #[arg(long, env = "KALAMDB_LIVE_QUEUE_MESSAGES")]
    pub live_queue_messages: Option<usize>,
    /// How long changes are kept for from_seq resumes, seconds (0: none)
    #[arg(long, env = "KALAMDB_LIVE_HISTORY_SECONDS")]
    pub live_history_seconds: Option<u64>,
    /// Largest WebSocket message a client may send, bytes
    #[arg(long, env = "KALAMDB_LIVE_MAX_MESSAGE_BYTES")]
    pub live_max_message_bytes: Option<usize>,
    /// A live-query socket silent this long (no message, no pong to the server's pings) is closed, seconds
    #[arg(long, env = "KALAMDB_LIVE_IDLE_TIMEOUT_SECONDS")]
    pub live_idle_timeout_seconds: Option<u64>,
    /// Longest an expensive live-query filter may take over one commit's changes before its subscription ends (FILTER_TOO_SLOW), milliseconds
    #[arg(long, env = "KALAMDB_LIVE_FILTER_BUDGET_MS")]
    pub live_filter_budget_ms: Option<u64>,
    /// Host names besides the listen address and localhost under which a loopback client may use a password-less root, comma-separated ('*': any)
    #[arg(long, env = "KALAMDB_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Browser origins (scheme://host[:port]) that may use the API, comma-separated
    #[arg(long, env = "KALAMDB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Secret that signs bearer tokens (environment or file only) [default: generated once, kept in the data directory]
    #[arg(skip)]
    pub token_secret: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

impl Settings {
    /// Applies the file (if `cli.config` names one), then the flags/environment
    /// (clap has already let flags win over environment variables).
    pub fn load(cli: Cli) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        if let Some(path) = &cli.config {
            settings.apply(read_file(path)?);
        }
        settings.apply(cli.overrides);
        settings.root_password = std::env::var("KALAMDB_ROOT_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        if let Ok(secret) = std::env::var("KALAMDB_TOKEN_SECRET")
            && !secret.is_empty()
        {
            settings.token_secret = Some(secret);
        }
        Ok(settings)
    }

    fn apply(&mut self, overrides: Overrides) {
        // Every field of `Overrides` is named here (the destructuring is exhaustive),
        // so one that is not applied does not compile.
        macro_rules! apply {
            ($($field:ident),*; $rest:ident) => {
                let Overrides { $($field,)* $rest } = overrides;
                $( if let Some(v) = $field { self.$field = v; } )*
            };
        }
        apply!(
            listen,
            data_dir,
            max_body_bytes,
            max_ingest_bytes,
            sync_writes,
            rocksdb_write_buffer_mb,
            credential_cache_seconds,
            max_insert_rows,
            max_ingest_rows,
            max_write_rows,
            max_transaction_rows,
            transaction_timeout_ms,
            max_subquery_rows,
            shutdown_timeout_seconds,
            max_concurrent_jobs,
            flush_batch_rows,
            flush_parallelism,
            compaction_target_mb,
            job_shutdown_timeout_seconds,
            job_retention_seconds,
            flush_batch_pause_ms,
            max_sql_bytes,
            max_statements,
            token_ttl_seconds,
            login_max_failures,
            login_lockout_seconds,
            query_memory_mb,
            statement_timeout_ms,
            max_result_bytes,
            live_max_connections,
            live_max_subscriptions_per_connection,
            live_max_subscriptions_per_user,
            live_queue_messages,
            live_history_seconds,
            live_max_message_bytes,
            live_idle_timeout_seconds,
            live_filter_budget_ms,
            allowed_hosts,
            allowed_origins;
            token_secret
        );
        if token_secret.is_some() {
            self.token_secret = token_secret;
        }
    }
}

fn read_file(path: &Path) -> Result<Overrides, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 1000\n").unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            overrides: Overrides {
                max_body_bytes: Some(2000),
                ..Default::default()
            },
        };
        let settings = Settings::load(cli).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.max_body_bytes, 2000);
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        std::fs::write(&path, "colour = 1\n").unwrap();
        let cli = Cli {
            config: Some(path),
            ..Default::default()
        };
        assert!(matches!(Settings::load(cli), Err(ConfigError::Parse { .. })));
    }

    /// docs/CONFIG.md lists every setting with the default the server has.
    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/CONFIG.md")).unwrap();
        let documented: std::collections::BTreeMap<String, String> = (doc.lines())
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((key.to_string(), cells.get(4)?.trim_matches('`').to_string()))
            })
            .collect();
        let defaults = Settings::default_texts();
        assert_eq!(defaults.len(), documented.len(), "{documented:?}");
        for (key, text) in defaults {
            let shown = documented
                .get(&key)
                .unwrap_or_else(|| panic!("{key} is not in docs/CONFIG.md"));
            match text {
                Some(text) => assert_eq!(shown, &text, "the default of {key}"),
                None => assert!(["generated", "unset"].contains(&shown.as_str()), "{key}: {shown}"),
            }
        }
    }

    /// `--help` shows each flag's default, taken from the settings.
    #[test]
    fn help_shows_the_defaults() {
        let plain = Cli::command().render_long_help().to_string();
        assert!(
            !plain.contains("[default: 10485760]"),
            "no default is written by hand"
        );
        let command = Cli::command_with_defaults();
        let mut shown = Vec::new();
        for (key, text) in Settings::default_texts() {
            let (Some(text), Some(arg)) =
                (text, command.get_arguments().find(|a| a.get_id() == key.as_str()))
            else {
                continue;
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.ends_with(&format!("[default: {text}]")), "{key}: {help}");
            shown.push(key);
        }
        // Every flag but --config and the secret (no default value) shows one.
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if !["config", "token_secret", "help", "version"].contains(&id) {
                assert!(shown.iter().any(|k| k == id), "--{id} shows no default");
            }
        }
    }
}
