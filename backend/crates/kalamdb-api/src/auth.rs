//! Authentication: HTTP Basic against `system.users`, or a bearer token from
//! `POST /auth/login`; and the throttle on repeated failures from one client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use kalamdb_commons::{ErrorCode, KalamError};
use kalamdb_core::Caller;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::{ApiError, AppState};

/// The authenticated caller of a request.
pub struct Authenticated(pub Caller);

/// How many failed logins one client address, or one user name, may make before
/// it must wait.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failures allowed within `lockout`; the next attempt is refused until the
    /// oldest failure is `lockout` old.
    pub max_failures: u32,
    pub lockout: Duration,
}

/// What failures are counted against: the client's address, and the user name
/// tried. Both are checked before an attempt, so neither rotating names from one
/// address nor rotating addresses against one name gets more guesses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    Client(IpAddr),
    User(String),
}

/// Failed logins per client address and per user name.
///
/// A success clears only the failures of the name that just proved its password:
/// never the address's (else a valid login of one's own would reset the count of
/// guesses at someone else's password), and never another name's.
pub struct LoginThrottle {
    limits: LoginLimits,
    failures: Mutex<HashMap<ThrottleKey, Vec<Instant>>>,
}

/// Keys tracked at most; beyond, the oldest entries are forgotten.
const MAX_TRACKED_KEYS: usize = 100_000;

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        LoginThrottle {
            limits,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(client: Option<IpAddr>, username: Option<&str>) -> Vec<ThrottleKey> {
        client
            .map(ThrottleKey::Client)
            .into_iter()
            .chain(username.map(|u| ThrottleKey::User(u.to_string())))
            .collect()
    }

    /// `TOO_MANY_REQUESTS` while any of `keys` is locked out.
    fn check(&self, keys: &[ThrottleKey]) -> Result<(), ApiError> {
        let mut failures = self.failures.lock();
        for key in keys {
            let Some(times) = failures.get_mut(key) else {
                continue;
            };
            times.retain(|t| t.elapsed() < self.limits.lockout);
            if times.len() as u32 >= self.limits.max_failures {
                let wait = self.limits.lockout.saturating_sub(times[0].elapsed());
                let whom = match key {
                    ThrottleKey::Client(_) => "from this address",
                    ThrottleKey::User(_) => "for this user",
                };
                return Err(ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!(
                        "too many failed logins {whom}; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn record<T>(&self, keys: &[ThrottleKey], result: &Result<T, KalamError>) {
        let mut failures = self.failures.lock();
        match result {
            Ok(_) => {
                for key in keys.iter().filter(|k| matches!(k, ThrottleKey::User(_))) {
                    failures.remove(key);
                }
            }
            Err(e) if e.code == ErrorCode::Unauthorized => {
                if failures.len() + keys.len() > MAX_TRACKED_KEYS {
                    let lockout = self.limits.lockout;
                    failures.retain(|_, times| times.last().is_some_and(|t| t.elapsed() < lockout));
                    if failures.len() + keys.len() > MAX_TRACKED_KEYS {
                        failures.clear();
                    }
                }
                for key in keys {
                    failures.entry(key.clone()).or_default().push(Instant::now());
                }
            }
            Err(_) => {}
        }
    }

    /// Runs one authentication attempt by `client` for `username` (none for a
    /// bearer token) under the throttle.
    pub(crate) async fn attempt<T>(
        &self,
        client: Option<IpAddr>,
        username: Option<&str>,
        authenticate: impl Future<Output = Result<T, KalamError>>,
    ) -> Result<T, ApiError> {
        let keys = Self::keys(client, username);
        self.check(&keys)?;
        let result = authenticate.await;
        self.record(&keys, &result);
        Ok(result?)
    }
}

fn client_addr(parts: &Parts) -> Option<SocketAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Where a request comes from, as authentication needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub addr: Option<SocketAddr>,
    /// Whether a user without a password (`root` before one is set) may be accepted:
    /// a loopback client whose request no browser sent (`origin.rs`).
    pub passwordless_ok: bool,
}

impl Peer {
    pub(crate) fn of(state: &AppState, headers: &HeaderMap, addr: Option<SocketAddr>) -> Peer {
        Peer {
            addr,
            passwordless_ok: state.policy.passwordless_ok(headers, addr),
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        self.addr.map(|a| a.ip())
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            unauthorized("authentication required: use HTTP Basic (-u user:password) or a bearer token")
        })?;
        let header = header
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header"))?;
        let peer = Peer::of(state, &parts.headers, client_addr(parts));
        authenticate_header(state, header, peer).await.map(Authenticated)
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The caller an `Authorization` header value (Basic or Bearer) stands for, from
/// `peer`, under the login throttle.
pub(crate) async fn authenticate_header(
    state: &AppState,
    header: &str,
    peer: Peer,
) -> Result<Caller, ApiError> {
    let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return authenticate_token(state, credentials.trim(), peer).await;
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unauthorized(
            "unsupported authorization scheme: use HTTP Basic or Bearer",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let (username, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    authenticate_password(state, username, password, peer).await
}

/// The caller of a bearer token, under the login throttle.
pub(crate) async fn authenticate_token(
    state: &AppState,
    token: &str,
    peer: Peer,
) -> Result<Caller, ApiError> {
    state
        .login_throttle
        .attempt(peer.ip(), None, async { state.db.authenticate_token(token) })
        .await
}

/// The caller of a user name and password, under the login throttle (a user
/// without a password only when `peer.passwordless_ok`).
pub(crate) async fn authenticate_password(
    state: &AppState,
    username: &str,
    password: &str,
    peer: Peer,
) -> Result<Caller, ApiError> {
    state
        .login_throttle
        .attempt(
            peer.ip(),
            Some(username),
            state.db.authenticate(username, password, peer.passwordless_ok),
        )
        .await
}

#[derive(Deserialize)]
pub(crate) struct LoginBody {
    username: String,
    password: String,
}

/// `POST /auth/login {"username","password"}` → a bearer token.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peer = Peer::of(&state, &headers, Some(client));
    let body: LoginBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid JSON body: {e}; expected {{\"username\": \"...\", \"password\": \"...\"}}"),
        )
    })?;
    let (token, expires_at) = state
        .login_throttle
        .attempt(
            Some(client.ip()),
            Some(&body.username),
            state
                .db
                .login(&body.username, &body.password, peer.passwordless_ok),
        )
        .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Json(serde_json::json!({
        "status": "success",
        "token": token,
        "token_type": "Bearer",
        "expires_in": (expires_at - now).max(0),
        "expires_at": chrono::DateTime::from_timestamp(expires_at, 0).map(|t| t.to_rfc3339()),
    })))
}
