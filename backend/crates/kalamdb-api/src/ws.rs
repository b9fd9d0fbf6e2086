//! `GET /ws`: live queries over a WebSocket (protocol in `docs/API.md`, "Live
//! queries"). The socket is authenticated by the upgrade's `Authorization` header
//! or by an `authenticate` first message; then its text frames are JSON messages,
//! each answered through the connection's queue (`kalamdb_core::LiveConnection`),
//! which one writer task drains into the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use kalamdb_commons::{ErrorCode, KalamError};
use kalamdb_core::{Caller, LiveConnection, LiveMessage, SubscribeOptions};
use serde_json::{Value, json};

use crate::auth::Peer;
use crate::{ApiError, AppState};

/// How long an unauthenticated socket may take to send `authenticate`.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Close codes (RFC 6455).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_TRY_LATER: u16 = 1013;
const CLOSE_GOING_AWAY: u16 = 1001;

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Credentials in the upgrade request are checked before upgrading: wrong ones
    // are a 401 like `/sql`'s, and never a socket. The upgrade's headers (a
    // browser's Origin) decide for the first-message authentication too.
    let peer = Peer::of(&state, &headers, Some(client));
    let caller = match headers.get(AUTHORIZATION) {
        None => None,
        Some(header) => {
            let Ok(header) = header.to_str() else {
                return ApiError::new(ErrorCode::Unauthorized, "malformed Authorization header")
                    .into_response();
            };
            match crate::auth::authenticate_header(&state, header, peer).await {
                Ok(caller) => Some(caller),
                Err(e) => return e.into_response(),
            }
        }
    };
    let limit = state.live_max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run(state, socket, caller, peer))
}

async fn run(state: AppState, socket: WebSocket, caller: Option<Caller>, peer: Peer) {
    let (mut sink, mut stream) = socket.split();
    let caller = match caller {
        Some(caller) => caller,
        None => match first_message_auth(&state, &mut stream, peer).await {
            Ok(caller) => caller,
            Err(message) => {
                let _ = sink
                    .send(Message::Text(
                        json!({"type": "auth_error", "message": message})
                            .to_string()
                            .into(),
                    ))
                    .await;
                let _ = sink.send(close(CLOSE_POLICY, "authentication failed")).await;
                return;
            }
        },
    };
    let (conn, mut outgoing) = match state.db.live_connect(caller.clone()) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = sink
                .send(Message::Text(kalamdb_core::live_error(None, &e).into()))
                .await;
            let _ = sink.send(close(CLOSE_TRY_LATER, "too many connections")).await;
            return;
        }
    };
    let conn = Arc::new(conn);
    conn.reply(
        json!({"type": "auth_success", "user": caller.username, "role": caller.role.as_str()}).to_string(),
    )
    .await;
    // The server pings three times per idle timeout, and closes a connection it has
    // heard nothing from (no message, no pong) for the whole timeout.
    let idle = state.live_idle_timeout;
    let ping_every = idle / 3;
    let (db, writer_step) = (state.db.clone(), format!("ws_writer:{}", caller.username));
    let mut writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let message = tokio::select! {
                message = outgoing.recv() => match message {
                    Some(LiveMessage::Text(text)) => Message::Text(text.into()),
                    Some(LiveMessage::Close(code, reason)) => {
                        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(close(code, &reason))).await;
                        return;
                    }
                    None => return,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
            };
            // A send waits for the socket; a connection closed at once (its client
            // does not read) stops waiting, sends its close frame if it can, and
            // drops what is queued.
            tokio::select! {
                biased;
                (code, reason) = outgoing.aborted() => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(close(code, &reason))).await;
                    return;
                }
                sent = async {
                    // A pause point for tests: a socket that cannot be written to.
                    db.holds().wait_async(|| writer_step.clone()).await;
                    sink.send(message).await
                } => if sent.is_err() {
                    return;
                },
            }
        }
    });
    // Subscribes being set up (each holds its SQL until it has its initial data).
    let pending = Pending {
        count: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        limit: state.db.live_options().max_subscriptions_per_connection,
    };
    let mut writer_done = false;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, stream.next()) => next,
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        match next {
            Err(_) => {
                conn.close(
                    CLOSE_GOING_AWAY,
                    &format!("idle: nothing received for {} s", idle.as_secs()),
                );
                break;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Err(e))) => {
                if too_big(e) {
                    conn.close(
                        CLOSE_TOO_BIG,
                        &format!(
                            "message larger than {} bytes (live_max_message_bytes)",
                            state.live_max_message_bytes
                        ),
                    );
                }
                break;
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                if !handle(&conn, text.as_str(), &pending).await {
                    break;
                }
            }
            Ok(Some(Ok(Message::Binary(_)))) => {
                if !conn
                    .reply(error(None, "binary frames are not supported; send JSON text"))
                    .await
                {
                    break;
                }
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
        }
    }
    conn.close(1000, "");
    if !writer_done {
        // The close frame (or whatever was queued before it) goes out; a writer
        // still stuck on a socket nobody reads is stopped, and the socket and its
        // queue go with it.
        if tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// How long the close frame may wait for the socket.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

fn too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

fn error(id: Option<&str>, message: &str) -> String {
    kalamdb_core::live_error(id.map(clip), &KalamError::new(ErrorCode::InvalidRequest, message))
}

/// What an answer repeats of a client's string: at most 128 characters (a reply
/// never grows with what the client sent).
fn clip(text: &str) -> &str {
    match text.char_indices().nth(128) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Waits for `{"type":"authenticate", ...}` with a token or a user name and password.
async fn first_message_auth(
    state: &AppState,
    stream: &mut futures::stream::SplitStream<WebSocket>,
    peer: Peer,
) -> Result<Caller, String> {
    let message = loop {
        match tokio::time::timeout(AUTH_TIMEOUT, stream.next()).await {
            Err(_) => return Err("authenticate within 5 seconds of connecting".into()),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                return Err("connection closed".into());
            }
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Binary(_)))) => return Err("send JSON text".into()),
        }
    };
    let message: Value = serde_json::from_str(message.as_str()).map_err(|e| format!("invalid JSON: {e}"))?;
    if message.get("type").and_then(Value::as_str) != Some("authenticate") {
        return Err(
            "the first message must be {\"type\":\"authenticate\", ...} (or send an Authorization header when connecting)"
                .into(),
        );
    }
    let text = |key: &str| message.get(key).and_then(Value::as_str);
    let result = match (text("token"), text("username")) {
        (Some(token), _) => crate::auth::authenticate_token(state, token, peer).await,
        (None, Some(username)) => {
            crate::auth::authenticate_password(state, username, text("password").unwrap_or(""), peer).await
        }
        (None, None) => return Err("authenticate needs a token, or a username and password".into()),
    };
    result.map_err(|e| kalamdb_core::public_message(&e.error))
}

/// The subscribes of one connection still being set up, and how many may be.
struct Pending {
    count: Arc<std::sync::atomic::AtomicUsize>,
    limit: usize,
}

/// One pending subscribe's place in [`Pending`], given back however its task ends.
struct PendingSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One client message; `false` when the connection is closed.
async fn handle(conn: &Arc<LiveConnection>, text: &str, pending: &Pending) -> bool {
    let message: Value = match serde_json::from_str(text) {
        Ok(Value::Object(message)) => Value::Object(message),
        Ok(_) => {
            return conn
                .reply(error(None, "a message is a JSON object with a \"type\""))
                .await;
        }
        Err(e) => return conn.reply(error(None, &format!("invalid JSON: {e}"))).await,
    };
    let id = message.get("id").and_then(Value::as_str);
    match message.get("type").and_then(Value::as_str) {
        Some("ping") => conn.reply(json!({"type": "pong"}).to_string()).await,
        Some("subscribe") => {
            let Some(id) = id else {
                return conn.reply(error(None, "subscribe needs a string \"id\"")).await;
            };
            let Some(sql) = message.get("sql").and_then(Value::as_str) else {
                return conn
                    .reply(error(Some(id), "subscribe needs a string \"sql\""))
                    .await;
            };
            let options = match subscribe_options(message.get("options")) {
                Ok(options) => options,
                Err(e) => return conn.reply(error(Some(id), &e)).await,
            };
            use std::sync::atomic::Ordering;
            if pending.count.fetch_add(1, Ordering::AcqRel) >= pending.limit {
                pending.count.fetch_sub(1, Ordering::AcqRel);
                let busy = KalamError::new(
                    ErrorCode::SubscriptionLimit,
                    format!(
                        "{} subscribes of this connection are still being set up \
                         (live_max_subscriptions_per_connection)",
                        pending.limit
                    ),
                );
                return conn.reply(kalamdb_core::live_error(Some(clip(id)), &busy)).await;
            }
            let (conn, id, sql) = (conn.clone(), id.to_string(), sql.to_string());
            let slot = PendingSlot(pending.count.clone());
            // Initial data may take a while: the socket keeps reading meanwhile.
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = conn.subscribe(&id, &sql, options).await {
                    conn.reply(kalamdb_core::live_error(Some(clip(&id)), &e)).await;
                }
            });
            true
        }
        Some("unsubscribe") => {
            let Some(id) = id else {
                return conn.reply(error(None, "unsubscribe needs a string \"id\"")).await;
            };
            if conn.unsubscribe(id).await {
                return true;
            }
            conn.reply(kalamdb_core::live_error(
                Some(clip(id)),
                &KalamError::new(
                    ErrorCode::LiveQueryNotFound,
                    format!("no subscription '{}' on this connection", clip(id)),
                ),
            ))
            .await
        }
        Some("authenticate") => {
            conn.reply(error(None, "this connection is already authenticated"))
                .await
        }
        Some(other) => {
            conn.reply(error(
                id,
                &format!(
                    "unknown message type '{}' (subscribe, unsubscribe, ping)",
                    clip(other)
                ),
            ))
            .await
        }
        None => conn.reply(error(id, "a message needs a string \"type\"")).await,
    }
}

fn subscribe_options(options: Option<&Value>) -> Result<SubscribeOptions, String> {
    let mut out = SubscribeOptions::default();
    let Some(options) = options else {
        return Ok(out);
    };
    let Value::Object(options) = options else {
        return Err("\"options\" is an object".into());
    };
    // Counts are JSON numbers; `from_seq` may also be a string (a `_seq` exceeds
    // what a JavaScript number holds exactly).
    let count = |key: &str| -> Result<Option<u64>, String> {
        match options.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("\"{key}\" is a non-negative integer")),
            Some(Value::String(s)) if key == "from_seq" => s
                .parse()
                .map(Some)
                .map_err(|_| format!("\"{key}\" is a non-negative integer")),
            Some(_) => Err(format!("\"{key}\" is a non-negative integer")),
        }
    };
    for key in options.keys() {
        if !matches!(
            key.as_str(),
            "last_rows" | "batch_size" | "from_seq" | "int64_as_string"
        ) {
            return Err(format!(
                "unknown option '{key}' (last_rows, batch_size, from_seq, int64_as_string)"
            ));
        }
    }
    out.last_rows = count("last_rows")?.map(|n| n as usize);
    out.batch_size = count("batch_size")?.map(|n| n as usize);
    if out.batch_size == Some(0) {
        return Err("\"batch_size\" is at least 1".into());
    }
    out.from_seq = count("from_seq")?;
    if out.from_seq.is_some() && out.last_rows.is_some() {
        return Err("from_seq replays changes; it does not combine with last_rows".into());
    }
    out.int64_as_string = match options.get("int64_as_string") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("\"int64_as_string\" is true or false".into()),
    };
    Ok(out)
}
