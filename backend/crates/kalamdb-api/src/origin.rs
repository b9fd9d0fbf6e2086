//! What a request says about where it comes from, for the two rules that keep web
//! pages from borrowing the server's trust (docs/SECURITY.md, "Browsers"):
//!
//! - The password-less `root` of a loopback client is accepted only from a request
//!   that carries no `Origin` header (no browser sent it) and whose `Host` names
//!   this server: a listen address, `localhost`, or a name in `allowed_hosts` (a page
//!   of `evil.example` whose name was re-pointed at 127.0.0.1 sends
//!   `Host: evil.example`).
//! - `allowed_origins` (default `*`) limits which browser origins may use `/sql`,
//!   `/ingest`, `/auth/login` and `/ws` at all: others get 403.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kalamdb_commons::ErrorCode;

use crate::{ApiError, AppState};

/// The settings of both rules.
#[derive(Debug, Clone)]
pub struct RequestPolicy {
    /// The address the server listens on.
    listen: SocketAddr,
    /// Further names `Host` may carry (lower case; `*`: any).
    allowed_hosts: Vec<String>,
    /// Browser origins allowed (`None`: any).
    allowed_origins: Option<Vec<String>>,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        RequestPolicy::new(SocketAddr::from(([127, 0, 0, 1], 0)), &[], &["*".to_string()])
    }
}

impl RequestPolicy {
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        let normalize = |list: &[String]| -> Vec<String> {
            (list.iter())
                .map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let origins = normalize(allowed_origins);
        RequestPolicy {
            listen,
            allowed_hosts: normalize(allowed_hosts),
            allowed_origins: (!origins.iter().any(|o| o == "*")).then_some(origins),
        }
    }

    /// Whether the request's `Host` names this server. A request without one
    /// (HTTP/1.0) comes from no browser.
    fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(HOST) else {
            return true;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let name = host_name(host);
        if name == "localhost" || self.allowed_hosts.iter().any(|h| h == "*" || *h == name) {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => ip.is_loopback() || ip == self.listen.ip() || self.listen.ip().is_unspecified(),
            Err(_) => false,
        }
    }

    /// Whether a browser of `origin` may use the API.
    fn origin_allowed(&self, origin: &str) -> bool {
        match &self.allowed_origins {
            None => true,
            Some(allowed) => {
                let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
                allowed.contains(&origin)
            }
        }
    }

    /// Whether the password-less `root` may be accepted for this request (from a
    /// loopback `client`).
    pub(crate) fn passwordless_ok(&self, headers: &HeaderMap, client: Option<SocketAddr>) -> bool {
        if !client.is_some_and(|c| c.ip().is_loopback()) {
            return false;
        }
        let refusal = if headers.contains_key(ORIGIN) {
            Some("the request carries an Origin header (a browser sent it)")
        } else if !self.host_ok(headers) {
            Some("its Host is not a listen address, localhost or in allowed_hosts")
        } else {
            None
        };
        if let Some(reason) = refusal {
            tracing::debug!(
                reason,
                "a user without a password is not accepted for this request"
            );
        }
        refusal.is_none()
    }
}

/// The host part of a `Host` value: lower case, without the port and a trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Middleware: a browser origin outside `allowed_origins` is refused (403).
pub(crate) async fn check_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !state.policy.origin_allowed(origin) {
            return ApiError::new(
                ErrorCode::PermissionDenied,
                format!("requests from the origin '{origin}' are not allowed (allowed_origins)"),
            )
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_requests_that_name_this_server_and_no_origin_get_the_passwordless_root() {
        let policy = RequestPolicy::new("127.0.0.1:8080".parse().unwrap(), &["db.internal".into()], &[]);
        let loopback = Some("127.0.0.1:5000".parse().unwrap());
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "db.internal",
            "db.internal.:8080",
        ] {
            assert!(
                policy.passwordless_ok(&headers(&[("host", host)]), loopback),
                "{host}"
            );
        }
        assert!(policy.passwordless_ok(&HeaderMap::new(), loopback));
        for host in ["evil.example:8080", "10.0.0.1:8080", "localhost.evil.example"] {
            assert!(
                !policy.passwordless_ok(&headers(&[("host", host)]), loopback),
                "{host}"
            );
        }
        let from_page = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(!policy.passwordless_ok(&from_page, loopback));
        let remote = Some("10.1.2.3:5000".parse().unwrap());
        assert!(!policy.passwordless_ok(&headers(&[("host", "localhost")]), remote));
        // Listening on every address: any IP literal names this server.
        let any = RequestPolicy::new("0.0.0.0:8080".parse().unwrap(), &[], &[]);
        assert!(any.passwordless_ok(&headers(&[("host", "10.0.0.1:8080")]), loopback));
    }

    #[test]
    fn allowed_origins_match_exactly() {
        let open = RequestPolicy::default();
        assert!(open.origin_allowed("http://evil.example"));
        let policy = RequestPolicy::new(
            "127.0.0.1:8080".parse().unwrap(),
            &[],
            &["https://app.example/".into()],
        );
        assert!(policy.origin_allowed("https://APP.example"));
        assert!(!policy.origin_allowed("https://app.example.evil"));
        assert!(!policy.origin_allowed("http://app.example"));
        assert!(!policy.origin_allowed("null"));
    }
}
