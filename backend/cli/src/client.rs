//! The HTTP side of `kalam`: `POST /sql` and `POST /auth/login`, and the one-line
//! messages for what goes wrong on the way.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// How requests prove who sends them.
#[derive(Debug, Clone)]
pub enum Auth {
    Basic {
        user: String,
        password: String,
    },
    /// A token from `kalam login` or `--token`.
    Bearer(String),
}

/// One column of a result.
#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    pub name: String,
    pub data_type: String,
}

/// The result of one statement, as `/sql` answers it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatementResult {
    #[serde(default)]
    pub columns: Vec<Column>,
    #[serde(default)]
    pub rows: Vec<Vec<Value>>,
    #[serde(default)]
    pub message: Option<String>,
}

impl StatementResult {
    /// Whether the statement answered with rows (a query) rather than a message.
    pub fn has_rows(&self) -> bool {
        !self.columns.is_empty()
    }
}

/// What went wrong with a request.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No answer: the server is down, the address wrong, the network cut.
    Unreachable { url: String, reason: String },
    /// The server answered with an error.
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The user pressed Ctrl-C while waiting.
    Cancelled,
}

impl Failure {
    /// One line that says what happened and what to do.
    pub fn describe(&self, auth: &Auth) -> String {
        match self {
            Failure::Unreachable { url, reason } => format!(
                "cannot reach the server at {url}: {reason}. Is kalamdb-server running there? (--url or KALAM_URL sets the address)"
            ),
            Failure::Server { code, message, .. } if code == "UNAUTHORIZED" => {
                let hint = match auth {
                    Auth::Bearer(_) if message.contains("expired") => "run `kalam login` again",
                    Auth::Bearer(_) => "run `kalam login` again, or give --user and --password",
                    Auth::Basic { .. } => "check --user and --password (or KALAM_PASSWORD)",
                };
                format!("ERROR UNAUTHORIZED: {message} — {hint}")
            }
            Failure::Server { code, message, .. } => format!("ERROR {code}: {message}"),
            Failure::Cancelled => "cancelled".to_string(),
        }
    }

    /// Whether no statement can succeed after this one (so a script stops and the
    /// shell says so): an unreachable server or refused credentials.
    pub fn is_connection_failure(&self) -> bool {
        match self {
            Failure::Unreachable { .. } => true,
            Failure::Server { status, .. } => *status == 401,
            Failure::Cancelled => false,
        }
    }
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub expires_at: Option<String>,
}

/// Talks to one server as one user.
pub struct Client {
    http: reqwest::Client,
    url: String,
    auth: Auth,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl Client {
    pub fn new(url: &str, auth: Auth, namespace: Option<String>) -> Client {
        Client {
            http: http_client(),
            url: url.trim_end_matches('/').to_string(),
            auth,
            namespace,
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Runs `sql` (one or more statements) and returns each statement's result.
    pub async fn sql(&self, sql: &str) -> Result<Vec<StatementResult>, Failure> {
        let mut body = json!({ "sql": sql });
        if let Some(namespace) = &self.namespace {
            body["namespace"] = json!(namespace);
        }
        let request = self.http.post(format!("{}/sql", self.url)).json(&body);
        let request = match &self.auth {
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        let response = request.send().await.map_err(|e| unreachable(&self.url, &e))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| unreachable(&self.url, &e))?;
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|_| Failure::Server {
            status,
            code: "UNEXPECTED_RESPONSE".into(),
            message: format!(
                "HTTP {status} with a body that is not KalamDB's JSON: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        })?;
        match envelope.error {
            None if status == 200 => Ok(envelope.results),
            None => Err(Failure::Server {
                status,
                code: "UNEXPECTED_RESPONSE".into(),
                message: format!("HTTP {status} without an error"),
            }),
            Some(error) => Err(Failure::Server {
                status,
                code: error.code,
                message: error.message,
            }),
        }
    }
}

/// The socket of a live query (`\watch`).
pub struct Watch {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Watch {
    /// The server's next message; `None` when the socket ended.
    pub async fn next(&mut self) -> Option<Value> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }
}

impl Client {
    /// Opens `/ws` with this client's credentials and subscribes to `sql`.
    pub async fn watch(&self, sql: &str) -> Result<Watch, Failure> {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = match self.url.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}/ws"),
            Some((_, rest)) => format!("ws://{rest}/ws"),
            None => format!("ws://{}/ws", self.url),
        };
        let invalid = |reason: String| Failure::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| invalid(e.to_string()))?;
        let authorization = match &self.auth {
            Auth::Basic { user, password } => {
                use base64::Engine;
                let credentials =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Basic {credentials}")
            }
            Auth::Bearer(token) => format!("Bearer {token}"),
        };
        request.headers_mut().insert(
            "authorization",
            authorization
                .parse()
                .map_err(|_| invalid("credentials that are not a valid header".into()))?,
        );
        let (mut socket, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let (code, message) = match status {
                    401 => ("UNAUTHORIZED", "invalid username or password"),
                    _ => ("UNEXPECTED_RESPONSE", "the server refused the live-query socket"),
                };
                return Err(Failure::Server {
                    status,
                    code: code.into(),
                    message: message.into(),
                });
            }
            Err(e) => return Err(invalid(e.to_string())),
        };
        let subscribe = json!({"type": "subscribe", "id": "watch", "sql": sql});
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                subscribe.to_string().into(),
            ))
            .await
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Watch { socket })
    }
}

/// `POST /auth/login`: a token for `user`.
pub async fn login(url: &str, user: &str, password: &str) -> Result<Login, Failure> {
    let url = url.trim_end_matches('/');
    let response = http_client()
        .post(format!("{url}/auth/login"))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .map_err(|e| unreachable(url, &e))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|e| unreachable(url, &e))?;
    match body["token"].as_str() {
        Some(token) if status == 200 => Ok(Login {
            token: token.to_string(),
            expires_at: body["expires_at"].as_str().map(String::from),
        }),
        _ => Err(Failure::Server {
            status,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or("UNEXPECTED_RESPONSE")
                .to_string(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("the server did not answer with a token")
                .to_string(),
        }),
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client without TLS builds")
}

fn unreachable(url: &str, error: &reqwest::Error) -> Failure {
    let reason = if error.is_connect() {
        "connection refused or no route".to_string()
    } else if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_builder() {
        format!("'{url}' is not a valid http:// address")
    } else {
        // The innermost cause says most (reqwest wraps hyper wraps io).
        let mut source: &dyn std::error::Error = error;
        while let Some(inner) = source.source() {
            source = inner;
        }
        source.to_string()
    };
    Failure::Unreachable {
        url: url.to_string(),
        reason,
    }
}
