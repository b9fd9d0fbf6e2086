//! The HTTP API of KalamDB: `POST /sql`, `POST /ingest/<ns>/<table>`, `GET /ws` (live
//! queries), `GET /health`, with authentication,
//! body limits and the JSON shapes of `docs/API.md`.
//!
//! Architecture invariant: handlers are thin. They authenticate, decode the body
//! and hand SQL to `kalamdb-core`; every error leaves through [`ApiError`] with the
//! code's HTTP status, and a panic in a handler becomes that request's 500.

mod auth;
mod error;
mod formats;
mod ingest;
mod metrics;
mod origin;
mod sql;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use kalamdb_core::KalamDb;
use tower_http::catch_panic::CatchPanicLayer;

pub use auth::{LoginLimits, LoginThrottle};
pub use error::ApiError;
pub use metrics::Metrics;
pub use origin::RequestPolicy;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub db: KalamDb,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest accepted bulk-load body (`/ingest`).
    pub max_ingest_bytes: usize,
    pub metrics: Arc<Metrics>,
    /// Failed logins per client address (Basic, bearer and `/auth/login` alike).
    pub login_throttle: Arc<LoginThrottle>,
    /// Largest WebSocket message a client may send (`/ws`; larger: close 1009).
    pub live_max_message_bytes: usize,
    /// A live-query socket silent this long (no message, no pong) is closed.
    pub live_idle_timeout: std::time::Duration,
    /// The Origin and Host rules (`origin.rs`).
    pub policy: Arc<RequestPolicy>,
}

impl AppState {
    pub fn new(db: KalamDb, max_body_bytes: usize, login_limits: LoginLimits) -> Self {
        AppState {
            db,
            max_body_bytes,
            max_ingest_bytes: DEFAULT_MAX_INGEST_BYTES,
            metrics: Arc::new(Metrics::default()),
            login_throttle: Arc::new(LoginThrottle::new(login_limits)),
            live_max_message_bytes: DEFAULT_LIVE_MAX_MESSAGE_BYTES,
            live_idle_timeout: std::time::Duration::from_secs(90),
            policy: Arc::new(RequestPolicy::default()),
        }
    }
}

/// Default of [`AppState::max_ingest_bytes`]: 64 MiB.
pub const DEFAULT_MAX_INGEST_BYTES: usize = 64 << 20;

/// Default of [`AppState::live_max_message_bytes`]: 1 MiB.
pub const DEFAULT_LIVE_MAX_MESSAGE_BYTES: usize = 1 << 20;

impl AppState {
    pub fn with_live_max_message_bytes(mut self, bytes: usize) -> Self {
        self.live_max_message_bytes = bytes.max(256);
        self
    }

    pub fn with_live_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.live_idle_timeout = timeout.max(std::time::Duration::from_secs(1));
        self
    }

    pub fn with_request_policy(mut self, policy: RequestPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    pub fn with_max_ingest_bytes(mut self, bytes: usize) -> Self {
        self.max_ingest_bytes = bytes;
        self
    }
}

/// The whole API. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// the loopback rule for a password-less `root` needs the peer address.
pub fn router(state: AppState) -> Router {
    // Browser origins outside `allowed_origins` reach none of the routes that act.
    let acting = Router::new()
        .route("/sql", post(sql::execute_sql))
        .route("/ingest/{namespace}/{table}", post(ingest::ingest))
        .route("/auth/login", post(auth::login))
        .route("/ws", get(ws::upgrade))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            origin::check_origin,
        ));
    Router::new()
        .merge(acting)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.db.uptime().as_secs(),
    }))
}

async fn metrics(State(state): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    // Storage figures read files and RocksDB: off the async workers.
    let db = state.db.clone();
    let storage = match tokio::task::spawn_blocking(move || db.storage_metrics()).await {
        Ok(Ok(storage)) => Some(storage),
        Ok(Err(e)) => {
            tracing::warn!("storage metrics unavailable: {}", e.message);
            None
        }
        Err(e) => {
            tracing::warn!("storage metrics task failed: {e}");
            None
        }
    };
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.db.uptime(), storage.as_ref()),
    )
}

/// One line per request at debug level, and the request metrics.
async fn log_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let response = next.run(request).await;
    state
        .metrics
        .record(&path, response.status().as_u16(), started.elapsed());
    // Formatted only when debug logging is on.
    tracing::debug!(
        %method,
        %path,
        peer = ?peer,
        status = response.status().as_u16(),
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
