//! The `kalamdb-server` binary's start-up code, shared with the integration tests'
//! `TestServer` so that tests run exactly what the binary runs.

pub mod config;

use std::net::SocketAddr;
use std::time::Duration;

use kalamdb_core::jobs::JobOptions;
use kalamdb_core::{DbOptions, KalamDb};
use kalamdb_store::StoreOptions;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Cli, Settings};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database: {0}")]
    Database(#[from] kalamdb_commons::KalamError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Stack of each async worker thread. Planning and executing a statement recurse
/// once per level of its nesting (up to `kalamdb_sql::MAX_NESTING_DEPTH`), in
/// DataFusion code that no stack guard covers (cloning and evaluating expression
/// trees): 16 MiB holds the deepest statement the limit admits with room to spare,
/// also in debug builds. It is address space; only the pages a deep statement
/// touches are ever committed.
pub const WORKER_STACK_BYTES: usize = 16 << 20;

/// The multi-threaded tokio runtime the server runs on (the binary's `main` uses it).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()
}

/// A started server: its address, and the way to stop it.
pub struct RunningServer {
    local_addr: SocketAddr,
    db: KalamDb,
    stop: Option<oneshot::Sender<()>>,
    serve: JoinHandle<std::io::Result<()>>,
    shutdown_timeout: Duration,
}

/// Opens the database and starts serving HTTP on `settings.listen` (port 0 picks a
/// free port; see [`RunningServer::local_addr`]).
pub async fn start(settings: &Settings) -> Result<RunningServer, StartError> {
    let db = KalamDb::open(db_options(settings))?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: settings.listen,
        source,
    })?;
    let login_limits = kalamdb_api::LoginLimits {
        max_failures: settings.login_max_failures.max(1),
        lockout: Duration::from_secs(settings.login_lockout_seconds),
    };
    let app = kalamdb_api::router(
        kalamdb_api::AppState::new(db.clone(), settings.max_body_bytes, login_limits)
            .with_max_ingest_bytes(settings.max_ingest_bytes)
            .with_live_max_message_bytes(settings.live_max_message_bytes)
            .with_live_idle_timeout(Duration::from_secs(settings.live_idle_timeout_seconds))
            .with_request_policy(kalamdb_api::RequestPolicy::new(
                local_addr,
                &settings.allowed_hosts,
                &settings.allowed_origins,
            )),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let serve = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%local_addr, data_dir = %settings.data_dir.display(), "KalamDB started");
    Ok(RunningServer {
        local_addr,
        db,
        stop: Some(stop),
        serve,
        shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_seconds),
    })
}

fn db_options(settings: &Settings) -> DbOptions {
    DbOptions {
        data_dir: settings.data_dir.clone(),
        store: StoreOptions {
            sync_writes: settings.sync_writes,
            write_buffer_bytes: settings.rocksdb_write_buffer_mb << 20,
            ..StoreOptions::default()
        },
        credential_cache_ttl: Duration::from_secs(settings.credential_cache_seconds),
        root_password: settings.root_password.clone(),
        max_insert_rows: settings.max_insert_rows,
        max_ingest_rows: settings.max_ingest_rows.max(1),
        max_write_rows: settings.max_write_rows.max(1),
        max_transaction_rows: settings.max_transaction_rows.max(1),
        transaction_timeout: (settings.transaction_timeout_ms > 0)
            .then(|| Duration::from_millis(settings.transaction_timeout_ms)),
        max_subquery_rows: settings.max_subquery_rows.max(1),
        max_sql_bytes: settings.max_sql_bytes,
        max_statements: settings.max_statements,
        query_memory_bytes: settings.query_memory_mb.max(1) << 20,
        statement_timeout: (settings.statement_timeout_ms > 0)
            .then(|| Duration::from_millis(settings.statement_timeout_ms)),
        max_result_bytes: settings.max_result_bytes,
        token_secret: settings.token_secret.clone(),
        token_ttl: Duration::from_secs(settings.token_ttl_seconds),
        jobs: JobOptions {
            max_concurrent_jobs: settings.max_concurrent_jobs.max(1),
            flush_batch_rows: settings.flush_batch_rows.max(1),
            flush_parallelism: settings.flush_parallelism.max(1),
            compaction_target_bytes: settings.compaction_target_mb.max(1) << 20,
            shutdown_timeout: Duration::from_secs(settings.job_shutdown_timeout_seconds),
            job_retention: Duration::from_secs(settings.job_retention_seconds),
            flush_batch_pause: Duration::from_millis(settings.flush_batch_pause_ms),
            ..JobOptions::default()
        },
        live: kalamdb_core::LiveOptions {
            max_connections: settings.live_max_connections,
            max_subscriptions_per_connection: settings.live_max_subscriptions_per_connection,
            max_subscriptions_per_user: settings.live_max_subscriptions_per_user,
            queue_messages: settings.live_queue_messages.max(1),
            history: Duration::from_secs(settings.live_history_seconds),
            filter_budget: Duration::from_millis(settings.live_filter_budget_ms.max(1)),
            ..kalamdb_core::LiveOptions::default()
        },
    }
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The database this server serves (tests use its pause points).
    pub fn db(&self) -> &KalamDb {
        &self.db
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the
    /// shutdown timeout), then stops background jobs: queued ones are cancelled,
    /// running ones get the job shutdown timeout to finish.
    pub async fn shutdown(mut self) {
        // Live-query sockets are upgraded connections, which the HTTP server's
        // graceful shutdown does not wait for: they get their close frame first.
        self.db.close_live_connections(Duration::from_secs(2)).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let db = self.db.clone();
        match tokio::time::timeout(self.shutdown_timeout, &mut self.serve).await {
            Ok(Ok(Ok(()))) => tracing::info!("KalamDB stopped"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server stopped with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!("shutdown timeout reached; aborting in-flight requests");
                self.serve.abort();
                let _ = (&mut self.serve).await;
            }
        }
        db.shutdown().await;
    }
}
