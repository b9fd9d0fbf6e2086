//! Settings: defaults, overridden by an optional TOML file, overridden by `KALAMDB_*`
//! environment variables, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Every setting with its default. `docs/CONFIG.md` documents each one.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub sync_writes: bool,
    pub rocksdb_write_buffer_mb: usize,
    pub credential_cache_seconds: u64,
    pub max_insert_rows: usize,
    pub shutdown_timeout_seconds: u64,
    pub max_concurrent_jobs: usize,
    pub flush_batch_rows: usize,
    pub job_shutdown_timeout_seconds: u64,
    pub job_retention_seconds: u64,
    pub flush_batch_pause_ms: u64,
    /// From `KALAMDB_ROOT_PASSWORD` only (never a flag: argv is visible to every user).
    pub root_password: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("./data"),
            max_body_bytes: 10 * 1024 * 1024,
            sync_writes: false,
            rocksdb_write_buffer_mb: 64,
            credential_cache_seconds: 300,
            max_insert_rows: 100_000,
            shutdown_timeout_seconds: 30,
            max_concurrent_jobs: 2,
            flush_batch_rows: 10_000,
            job_shutdown_timeout_seconds: 30,
            job_retention_seconds: 7 * 24 * 3600,
            flush_batch_pause_ms: 0,
            root_password: None,
        }
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
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "KALAMDB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for RocksDB and Parquet files [default: ./data]
    #[arg(long, env = "KALAMDB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest accepted request body in bytes [default: 10485760]
    #[arg(long, env = "KALAMDB_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// fsync the WAL before acknowledging a write (survives power loss) [default: false]
    #[arg(long, env = "KALAMDB_SYNC_WRITES")]
    pub sync_writes: Option<bool>,
    /// RocksDB memtable size per column family, MiB [default: 64]
    #[arg(long, env = "KALAMDB_ROCKSDB_WRITE_BUFFER_MB")]
    pub rocksdb_write_buffer_mb: Option<usize>,
    /// How long a verified password is remembered, seconds [default: 300]
    #[arg(long, env = "KALAMDB_CREDENTIAL_CACHE_SECONDS")]
    pub credential_cache_seconds: Option<u64>,
    /// Most rows one INSERT may carry [default: 100000]
    #[arg(long, env = "KALAMDB_MAX_INSERT_ROWS")]
    pub max_insert_rows: Option<usize>,
    /// How long shutdown waits for in-flight requests, seconds [default: 30]
    #[arg(long, env = "KALAMDB_SHUTDOWN_TIMEOUT_SECONDS")]
    pub shutdown_timeout_seconds: Option<u64>,
    /// Flush jobs that may run at the same time [default: 2]
    #[arg(long, env = "KALAMDB_MAX_CONCURRENT_JOBS")]
    pub max_concurrent_jobs: Option<usize>,
    /// Rows per batch (and Parquet row group) while flushing; bounds flush memory [default: 10000]
    #[arg(long, env = "KALAMDB_FLUSH_BATCH_ROWS")]
    pub flush_batch_rows: Option<usize>,
    /// How long shutdown waits for running jobs before stopping them, seconds [default: 30]
    #[arg(long, env = "KALAMDB_JOB_SHUTDOWN_TIMEOUT_SECONDS")]
    pub job_shutdown_timeout_seconds: Option<u64>,
    /// Finished jobs older than this leave system.jobs, seconds [default: 604800]
    #[arg(long, env = "KALAMDB_JOB_RETENTION_SECONDS")]
    pub job_retention_seconds: Option<u64>,
    /// Pause after each flushed batch, limiting a flush's I/O, milliseconds [default: 0]
    #[arg(long, env = "KALAMDB_FLUSH_BATCH_PAUSE_MS")]
    pub flush_batch_pause_ms: Option<u64>,
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
        Ok(settings)
    }

    fn apply(&mut self, overrides: Overrides) {
        let Overrides {
            listen,
            data_dir,
            max_body_bytes,
            sync_writes,
            rocksdb_write_buffer_mb,
            credential_cache_seconds,
            max_insert_rows,
            shutdown_timeout_seconds,
            max_concurrent_jobs,
            flush_batch_rows,
            job_shutdown_timeout_seconds,
            job_retention_seconds,
            flush_batch_pause_ms,
        } = overrides;
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = $field { self.$field = v; } )* };
        }
        set!(
            listen,
            data_dir,
            max_body_bytes,
            sync_writes,
            rocksdb_write_buffer_mb,
            credential_cache_seconds,
            max_insert_rows,
            shutdown_timeout_seconds,
            max_concurrent_jobs,
            flush_batch_rows,
            job_shutdown_timeout_seconds,
            job_retention_seconds,
            flush_batch_pause_ms
        );
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
}
