//! Resource budgets: requests that try to make the server hold more memory,
//! threads or time than their budget allows, each on a fresh server (its own
//! temporary data directory) with users `alice` and `bob` (role `user`, password
//! `pw`) and the USER table `app.t (id BIGINT PRIMARY KEY, body TEXT)`. Each
//! scenario prints one line of figures: what the server answered and what it
//! cost (the server's RSS and threads are read from its own process).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Client, ServerProcess, live::basic, with_peak_rss};

/// alice's and bob's password.
const PW: &str = "pw";
/// How long the bench waits for an answer it means to time (not a budget).
const LONG: Duration = Duration::from_secs(300);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// A server on its own temporary data directory, with `app.t`, alice and bob.
/// Dropping it stops the server, then removes the directory.
struct Fresh {
    server: ServerProcess,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Fresh {
    async fn start(binary: &Path, flags: &[&str]) -> Fresh {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = ServerProcess::spawn_with(binary, dir.path(), flags);
        let fresh = Fresh {
            client: Client {
                http: reqwest::Client::new(),
                url: server.url.clone(),
            },
            server,
            _dir: dir,
        };
        fresh
            .client
            .sql(
                "CREATE NAMESPACE app; \
                 CREATE USER TABLE app.t (id BIGINT PRIMARY KEY, body TEXT); \
                 CREATE USER 'alice' WITH PASSWORD 'pw' ROLE user; \
                 CREATE USER 'bob' WITH PASSWORD 'pw' ROLE user"
                    .into(),
            )
            .await;
        fresh
    }

    /// Another client of the same server (for a spawned task).
    fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: self.client.url.clone(),
        }
    }

    fn pid(&self) -> u32 {
        self.server.child.id()
    }
}

/// What an answer says: `HTTP <status> success, row_count <n>`, `HTTP <status>
/// <error code>`, or `timeout`.
async fn outcome(answer: Result<reqwest::Response, reqwest::Error>) -> String {
    let response = match answer {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return "timeout".into(),
        Err(e) => return format!("no answer ({e})"),
    };
    let status = response.status().as_u16();
    match response.json::<Value>().await {
        Ok(body) if body["status"] == "success" => {
            format!(
                "HTTP {status} success, row_count {}",
                body["results"][0]["row_count"]
            )
        }
        Ok(body) => format!(
            "HTTP {status} {}",
            body["error"]["code"].as_str().unwrap_or("(no code)")
        ),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(e) => format!("HTTP {status}, unreadable body ({e})"),
    }
}

/// One statement as `user`: its outcome and how long the answer took, ms.
async fn timed(client: &Client, user: &str, sql: &str, timeout: Duration) -> (String, f64) {
    let started = Instant::now();
    let answer = client
        .http
        .post(&client.url)
        .basic_auth(user, Some(PW))
        .body(sql.to_string())
        .timeout(timeout)
        .send()
        .await;
    let outcome = outcome(answer).await;
    (outcome, started.elapsed().as_secs_f64() * 1000.0)
}

/// INSERTs ids `1..=rows` into `app.t` as `user`, 10,000 per `INSERT ... SELECT`
/// from `generate_series`; `body` is the SQL of each row's text (over `value`).
async fn fill_series(client: &Client, user: &str, rows: u64, body: &str) {
    for first in (1..=rows).step_by(10_000) {
        let last = (first + 9_999).min(rows);
        client
            .sql_as(
                user,
                PW,
                format!("INSERT INTO app.t SELECT value, {body} FROM generate_series({first}, {last})"),
            )
            .await;
    }
}

/// Threads of process `pid` (entries of /proc/<pid>/task); 0 once it is gone.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| tasks.count())
        .unwrap_or(0)
}

/// The threads of `pid` at 1, 2, ..., `seconds` s from now.
async fn thread_counts(pid: u32, seconds: u64) -> Vec<usize> {
    let start = tokio::time::Instant::now();
    let mut counts = Vec::new();
    for s in 1..=seconds {
        tokio::time::sleep_until(start + Duration::from_secs(s)).await;
        counts.push(threads(pid));
    }
    counts
}

/// A Parquet file (ArrowWriter, default properties) of `rows` rows `(id BIGINT,
/// body TEXT)`, ids from 1, `text` in every row. Written 1,000 rows at a time, so
/// the bench never holds the decoded rows; the dictionary encoding keeps the file
/// small.
fn parquet_body(rows: usize, text: &str) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("body", DataType::Utf8, true),
    ]));
    let chunk = 1_000;
    let bodies: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(text, chunk)));
    let mut file: Vec<u8> = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut file, schema.clone(), None).expect("a Parquet writer");
    for first in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - first);
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (first..first + n).map(|i| i as i64 + 1),
        ));
        let batch = RecordBatch::try_new(schema.clone(), vec![ids, bodies.slice(0, n)]).expect("a batch");
        writer.write(&batch).expect("a batch written");
    }
    writer.close().expect("the Parquet footer");
    file
}

/// `POST /ingest/app/t` of a Parquet `body` as alice: the outcome.
async fn post_parquet(client: &Client, body: Vec<u8>) -> String {
    let answer = client
        .http
        .post(client.url.replace("/sql", "/ingest/app/t"))
        .basic_auth("alice", Some(PW))
        .header("content-type", "application/vnd.apache.parquet")
        .body(body)
        .timeout(LONG)
        .send()
        .await;
    outcome(answer).await
}

/// A ~0.5 MB Parquet body whose 150,000 rows decode to 1.5 GB of text (the same
/// 10 KB value in every row, one dictionary entry): shows whether `/ingest` charges
/// the decoded size before it holds it (an error code, small peak RSS) or
/// materializes it.
async fn ingest_decoded(binary: &Path) -> Value {
    let fresh = Fresh::start(binary, &[]).await;
    let body = parquet_body(150_000, &"x".repeat(10_240));
    let bytes = body.len();
    let before = fresh.server.rss_bytes();
    let started = Instant::now();
    let (answer, growth) = with_peak_rss(&fresh.server, post_parquet(&fresh.client, body)).await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "ingest_decoded               {:.2} MB Parquet body (150,000 x 10 KB rows): {answer}, server RSS {:.0} MB before, peak {:.0} MB, {seconds:.1} s",
        bytes as f64 / 1e6,
        mb(before),
        mb(before + growth)
    );
    json!({"body_bytes": bytes, "answer": answer, "rss_before_mb": mb(before),
           "rss_peak_mb": mb(before + growth), "seconds": seconds})
}

/// Opens `n` connections with a 4 KiB receive buffer, each sending alice's
/// `POST /sql?format=csv` of the whole of `app.t` and never reading the answer.
async fn stalled_connections(url: &str, n: usize) -> Vec<TcpStream> {
    let address = url.trim_start_matches("http://").trim_end_matches("/sql");
    let addr: SocketAddr = address.parse().expect("the server's host:port");
    let sql = "SELECT * FROM app.t";
    let request = format!(
        "POST /sql?format=csv HTTP/1.1\r\nHost: {address}\r\nAuthorization: {}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{sql}",
        basic("alice"),
        sql.len()
    );
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("request sent");
        streams.push(stream);
    }
    streams
}

/// 300 clients stream a 100,000-row CSV result and never read it (statement
/// timeout 3 s): shows whether stalled streams pin server threads (counts before,
/// at 1, 5 and 15 s; a stream stopped by the timeout frees its thread) and whether
/// another user's query still gets through.
async fn stalled_readers(binary: &Path) -> Value {
    let fresh = Fresh::start(binary, &["--statement-timeout-ms", "3000"]).await;
    fill_series(&fresh.client, "alice", 100_000, "repeat('r', 50)").await;
    let pid = fresh.pid();
    let before = threads(pid);
    let readers = stalled_connections(&fresh.client.url, 300).await;
    let sampler = tokio::spawn(thread_counts(pid, 15));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (count, count_ms) = timed(
        &fresh.client,
        "bob",
        "SELECT count(*) FROM app.t",
        Duration::from_secs(30),
    )
    .await;
    let counts = sampler.await.expect("thread sampler");
    drop(readers);
    let bob = if count == "timeout" {
        "timeout".to_string()
    } else {
        format!("{count_ms:.0} ms ({count})")
    };
    println!(
        "stalled_readers              300 unread CSV streams: server threads {before} before, {} at 1 s, {} at 5 s, {} at 15 s; bob's count(*) {bob}",
        counts[0], counts[4], counts[14]
    );
    json!({"threads_before": before, "threads_1s": counts[0], "threads_5s": counts[4],
           "threads_15s": counts[14], "bob_count": count, "bob_count_ms": count_ms})
}

/// A WebSocket to `/ws` as `user`, authenticated by its upgrade's header.
async fn connect(url: &str, user: &str) -> Socket {
    let ws_url = url.replace("http://", "ws://").replace("/sql", "/ws");
    let mut request = ws_url.into_client_request().expect("a ws url");
    request
        .headers_mut()
        .insert("authorization", basic(user).parse().expect("a header"));
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("connects");
    ws
}

/// Sends `count` copies of `frame` without reading, until one fails or 120 s
/// passed: the frames sent.
async fn send_unread(ws: &mut Socket, frame: Message, count: usize) -> usize {
    let mut sent = 0;
    let sending = async {
        for _ in 0..count {
            if ws.send(frame.clone()).await.is_err() {
                break;
            }
            sent += 1;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), sending).await;
    sent
}

/// alice sends 800 frames of ~1 MB (each an unknown message type, so each gets
/// an error answer) and never reads: shows whether the server's memory follows
/// what the client sends and leaves unread, and whether it is returned after.
async fn websocket_unread(binary: &Path) -> Value {
    let fresh = Fresh::start(binary, &[]).await;
    let mut ws = connect(&fresh.client.url, "alice").await;
    let frame = Message::Text(json!({"type": "x".repeat(1_000_000)}).to_string().into());
    let before = fresh.server.rss_bytes();
    let (sent, growth) = with_peak_rss(&fresh.server, send_unread(&mut ws, frame, 800)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = fresh.server.rss_bytes();
    drop(ws);
    println!(
        "websocket_unread             {sent} of 800 1 MB frames sent: server RSS {:.0} MB before, peak {:.0} MB, {:.0} MB 3 s after",
        mb(before),
        mb(before + growth),
        mb(after)
    );
    json!({"frames_sent": sent, "rss_before_mb": mb(before), "rss_peak_mb": mb(before + growth),
           "rss_3s_after_mb": mb(after)})
}

/// alice DELETEs her 100,000 flushed rows; 200 ms in, bob INSERTs one row and
/// `/health` is asked: shows whether a large DELETE of cold rows holds up other
/// users' writes and the server (with `flags`, e.g. no live history).
async fn delete_flushed(binary: &Path, flags: &[&str]) -> Value {
    let fresh = Fresh::start(binary, flags).await;
    fill_series(&fresh.client, "alice", 100_000, "'v' || value").await;
    let job = fresh.client.sql("STORAGE FLUSH TABLE app.t".into()).await["results"][0]["rows"][0][0]
        .as_str()
        .expect("job id")
        .to_string();
    let row = fresh.client.wait_job(&job).await;
    assert_eq!(row[0], "completed", "{row:?}");
    let delete = {
        let client = fresh.client();
        tokio::spawn(async move { timed(&client, "alice", "DELETE FROM app.t WHERE id > 0", LONG).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (insert, insert_ms) = timed(&fresh.client, "bob", "INSERT INTO app.t VALUES (1, 'bob')", LONG).await;
    let started = Instant::now();
    let health = fresh
        .client
        .http
        .get(fresh.client.url.replace("/sql", "/health"))
        .timeout(LONG)
        .send()
        .await
        .map_or_else(
            |e| format!("no answer ({e})"),
            |r| format!("HTTP {}", r.status().as_u16()),
        );
    let health_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (deleted, delete_ms) = delete.await.expect("delete task");
    let settings = if flags.is_empty() {
        "default settings".to_string()
    } else {
        flags.join(" ")
    };
    println!(
        "delete_flushed               {settings}: DELETE of 100,000 flushed rows {delete_ms:.0} ms ({deleted}); meanwhile bob's INSERT {insert_ms:.1} ms ({insert}), /health {health_ms:.1} ms ({health})"
    );
    json!({"flags": flags, "delete": deleted, "delete_ms": delete_ms, "bob_insert": insert,
           "bob_insert_ms": insert_ms, "health": health, "health_ms": health_ms})
}

/// One statement of alice on a fresh server started with `flags`: its answer, the
/// server's peak RSS growth while it ran and its duration.
async fn one_statement(binary: &Path, name: &str, flags: &[&str], sql: &str) -> Value {
    let fresh = Fresh::start(binary, flags).await;
    let ((answer, ms), growth) = with_peak_rss(&fresh.server, timed(&fresh.client, "alice", sql, LONG)).await;
    println!(
        "{name:<28} {answer}, server RSS +{:.0} MB peak, {:.1} s",
        mb(growth),
        ms / 1000.0
    );
    json!({"flags": flags, "answer": answer, "rss_growth_mb": mb(growth), "ms": ms})
}

/// The next text message of `ws` as JSON; `None` once the socket ended.
async fn next_json(ws: &mut Socket) -> Option<Value> {
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message {
            return Some(serde_json::from_str(text.as_str()).expect("a JSON message"));
        }
    }
    None
}

/// Subscribes `sqls` on `ws` (ids `s0..`) and reads until each has its last
/// `initial_data` or an `error`: the errors.
async fn subscribe(ws: &mut Socket, sqls: &[&str]) -> Vec<Value> {
    for (i, sql) in sqls.iter().enumerate() {
        let message = json!({"type": "subscribe", "id": format!("s{i}"), "sql": sql, "options": {}});
        ws.send(Message::Text(message.to_string().into()))
            .await
            .expect("sent");
    }
    let (mut settled, mut errors) = (0, Vec::new());
    while settled < sqls.len() {
        let message = next_json(ws)
            .await
            .expect("the socket stays open while subscribing");
        match message["type"].as_str() {
            Some("initial_data") if message["has_more"] == false => settled += 1,
            Some("error") => {
                settled += 1;
                errors.push(message);
            }
            _ => {}
        }
    }
    errors
}

/// Reads `ws` to its end in a task, counting its messages by `type`.
fn drain(mut ws: Socket) -> Arc<Mutex<BTreeMap<String, usize>>> {
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let tally = counts.clone();
    tokio::spawn(async move {
        while let Some(message) = next_json(&mut ws).await {
            let kind = message["type"].as_str().unwrap_or("?").to_string();
            *tally.lock().expect("not poisoned").entry(kind).or_insert(0) += 1;
        }
    });
    counts
}

/// Whether a `change` message arrives on `ws` within `limit`.
async fn next_change(ws: &mut Socket, limit: Duration) -> bool {
    let waiting = async {
        while let Some(message) = next_json(&mut *ws).await {
            if message["type"] == "change" {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(limit, waiting).await.unwrap_or(false)
}

/// alice's 50 subscriptions filter each change with a 20 MB string per row; she
/// inserts 20 rows, then bob inserts one into his own subscription: shows whether
/// one user's expensive filters delay another user's change delivery.
async fn live_filter(binary: &Path) -> Value {
    let fresh = Fresh::start(binary, &[]).await;
    fresh
        .client
        .sql("CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, room INT, body TEXT)".into())
        .await;
    let mut alice = connect(&fresh.client.url, "alice").await;
    let filter = "SELECT * FROM app.notes WHERE length(repeat(body, 2000000)) < 0";
    let refused = subscribe(&mut alice, &[filter; 50]).await.len();
    let alice_messages = drain(alice);
    let mut bob = connect(&fresh.client.url, "bob").await;
    subscribe(&mut bob, &["SELECT id, body FROM app.notes"]).await;
    let started = Instant::now();
    for i in 1..=20 {
        fresh
            .client
            .sql_as(
                "alice",
                PW,
                format!("INSERT INTO app.notes VALUES ({i}, 1, 'abcdefghij')"),
            )
            .await;
    }
    let alice_ms = started.elapsed().as_secs_f64() * 1000.0;
    let sent = Instant::now();
    let insert = {
        let client = fresh.client();
        tokio::spawn(async move {
            timed(&client, "bob", "INSERT INTO app.notes VALUES (1, 1, 'bob')", LONG).await
        })
    };
    let arrived = next_change(&mut bob, Duration::from_secs(60)).await;
    let delivery_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let (bob_insert, bob_insert_ms) = insert.await.expect("insert task");
    let delivery = if arrived {
        format!("{delivery_ms:.0} ms")
    } else {
        "no change within 60 s".into()
    };
    let messages = alice_messages.lock().expect("not poisoned").clone();
    println!(
        "live_filter                  bob's change {delivery} after his INSERT ({bob_insert}, {bob_insert_ms:.0} ms); alice's 20 INSERTs {alice_ms:.0} ms, {refused} of 50 subscriptions refused, her messages since: {messages:?}"
    );
    json!({"bob_delivery_ms": arrived.then_some(delivery_ms), "bob_insert": bob_insert,
           "bob_insert_ms": bob_insert_ms, "alice_inserts_ms": alice_ms,
           "alice_subscriptions_refused": refused, "alice_messages": messages})
}

/// Every scenario, each on its own fresh server.
pub async fn budgets(binary: &Path) -> Value {
    let mut figures = serde_json::Map::new();
    figures.insert("ingest_decoded".into(), ingest_decoded(binary).await);
    figures.insert("stalled_readers".into(), stalled_readers(binary).await);
    figures.insert("websocket_unread".into(), websocket_unread(binary).await);
    figures.insert("delete_flushed".into(), delete_flushed(binary, &[]).await);
    figures.insert(
        "delete_flushed_no_history".into(),
        delete_flushed(binary, &["--live-history-seconds", "0"]).await,
    );
    figures.insert(
        "subquery_memory".into(),
        one_statement(
            binary,
            "subquery_memory",
            &["--query-memory-mb", "64"],
            "SELECT x, (SELECT count(*) FROM generate_series(1, 500000000) g WHERE g.value > t.x) \
             FROM (VALUES (1),(2)) t(x)",
        )
        .await,
    );
    figures.insert(
        "insert_select_rows".into(),
        one_statement(
            binary,
            "insert_select_rows",
            &[],
            "INSERT INTO app.t (id) SELECT value FROM generate_series(1, 300000000)",
        )
        .await,
    );
    figures.insert("live_filter".into(), live_filter(binary).await);
    Value::Object(figures)
}
