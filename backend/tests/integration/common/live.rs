//! A WebSocket client of `/ws` for the live-query tests (tokio-tungstenite).

use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestServer;

/// How long a test waits for a message it expects.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct LiveClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// `last_seq` of the last initial data read by [`LiveClient::subscribe`].
    pub last_seq: u64,
}

/// What a socket ended with.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Close(u16, String),
    /// The stream ended without a close frame.
    Gone,
}

pub fn ws_url(server: &TestServer) -> String {
    server.url("/ws").replacen("http://", "ws://", 1)
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl LiveClient {
    /// Connects with an `Authorization` header and reads `auth_success`.
    pub async fn connect(server: &TestServer, user: &str, password: &str) -> LiveClient {
        let mut client = Self::connect_with(server, Some(&basic(user, password)))
            .await
            .expect("the upgrade is accepted");
        let hello = client.recv().await;
        assert_eq!(hello["type"], "auth_success", "{hello}");
        assert_eq!(hello["user"], user);
        client
    }

    /// Connects, with this `Authorization` header if any; the error is the HTTP
    /// status of a refused upgrade.
    pub async fn connect_with(server: &TestServer, authorization: Option<&str>) -> Result<LiveClient, u16> {
        let mut request = ws_url(server).into_client_request().expect("a ws url");
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert("authorization", value.parse().expect("a header value"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(LiveClient { ws, last_seq: 0 }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("cannot connect: {e}"),
        }
    }

    /// A client over a socket the test connected itself.
    pub fn from_socket(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> LiveClient {
        LiveClient { ws, last_seq: 0 }
    }

    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("the message is sent");
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::Text(text.into())).await.expect("sent");
    }

    /// The next JSON message (within [`WAIT`]); panics on a close.
    pub async fn recv(&mut self) -> Value {
        match self.next(WAIT).await {
            Some(Ok(value)) => value,
            Some(Err(ended)) => panic!("the socket ended: {ended:?}"),
            None => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next JSON message or how the socket ended; `None` when nothing came
    /// within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Result<Value, Ended>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(message) => message,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(Ok(serde_json::from_str(text.as_str()).expect("a JSON message")));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Err(match frame {
                        Some(CloseFrame { code, reason }) => Ended::Close(code.into(), reason.to_string()),
                        None => Ended::Close(1005, String::new()),
                    }));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Err(Ended::Gone)),
            }
        }
    }

    /// Reads until the socket closes (skipping messages); its close code.
    pub async fn closed(&mut self) -> Ended {
        loop {
            match self.next(WAIT).await {
                Some(Ok(_)) => continue,
                Some(Err(ended)) => return ended,
                None => panic!("the socket did not close within {WAIT:?}"),
            }
        }
    }

    /// No message arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(message) = self.next(wait).await {
            panic!("expected no message, got {message:?}");
        }
    }

    /// Subscribes and reads `subscribed` and every `initial_data` message: the
    /// schema's column names and the initial rows.
    pub async fn subscribe(&mut self, id: &str, sql: &str, options: Value) -> (Vec<String>, Vec<Value>) {
        self.send(json!({"type": "subscribe", "id": id, "sql": sql, "options": options}))
            .await;
        let subscribed = self.recv().await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        assert_eq!(subscribed["id"], id);
        let columns = subscribed["schema"]
            .as_array()
            .expect("a schema")
            .iter()
            .map(|c| c["name"].as_str().expect("a name").to_string())
            .collect();
        if options.get("from_seq").is_some() {
            return (columns, Vec::new());
        }
        let mut rows = Vec::new();
        for batch in 0.. {
            let message = self.recv().await;
            assert_eq!(message["type"], "initial_data", "{message}");
            assert_eq!(message["id"], id);
            assert_eq!(message["batch"], batch);
            rows.extend(message["rows"].as_array().expect("rows").iter().cloned());
            self.last_seq = match &message["last_seq"] {
                Value::String(s) => s.parse().expect("a seq"),
                other => other.as_u64().expect("a seq"),
            };
            if message["has_more"] == false {
                break;
            }
        }
        (columns, rows)
    }

    /// The next message, which must be an `error` for `id` with `code`.
    pub async fn expect_error(&mut self, id: Option<&str>, code: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(message["code"], code, "{message}");
        if let Some(id) = id {
            assert_eq!(message["id"], id, "{message}");
        }
        message
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
