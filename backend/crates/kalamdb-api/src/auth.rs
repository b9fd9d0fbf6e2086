//! The authentication extractor: HTTP Basic against `system.users`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use kalamdb_commons::ErrorCode;
use kalamdb_core::Caller;

use crate::{ApiError, AppState};

/// The authenticated caller of a request.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |message: &str| ApiError::new(ErrorCode::Unauthorized, message);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("authentication required: use HTTP Basic (-u user:password)"))?
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header"))?;
        let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(unauthorized("unsupported authorization scheme: use HTTP Basic"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        let (username, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        let from_loopback = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| c.0.ip().is_loopback());
        let caller = state.db.authenticate(username, password, from_loopback)?;
        Ok(Authenticated(caller))
    }
}
