use kalamdb_server::{Cli, Settings, start};
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc's malloc, for Rust and (its `malloc` unprefixed) for
/// RocksDB's C++ too: with glibc, memory freed after bursts of short-lived
/// allocations on many threads (a subscription's initial scan, a query's batches)
/// stayed in per-thread arenas (docs/benchmarks.md, "Live queries").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    match kalamdb_server::runtime() {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            eprintln!("kalamdb-server: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> std::process::ExitCode {
    // Logs go to stderr; stdout carries only the "listening on" line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let settings = match Settings::load(Cli::parse_with_defaults()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("kalamdb-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = match start(&settings).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("kalamdb-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Scripts and tests read this line to learn the address (the port may be 0 → picked).
    println!("KalamDB listening on http://{}", server.local_addr());
    wait_for_signal().await;
    tracing::info!("shutdown requested");
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
