//! One budget per request, whatever the entry point (`../shared/spec/product.md`
//! section 7): a plain `user` doing what a hostile or careless one would, against
//! the real binary in its own process, whose memory and threads are read from
//! `/proc/<pid>`. Each test states what it did to a server without the budget.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::ServerProcess;

const PW: &str = "pw";

/// A server with `alice` (role user) and her table `app.t (id, body)`.
async fn server_with(dir: &std::path::Path, args: &[&str]) -> ServerProcess {
    let server = ServerProcess::spawn_with(dir, args, &[]);
    server
        .sql(&format!(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.t (id BIGINT PRIMARY KEY, body TEXT); \
             CREATE USER 'alice' WITH PASSWORD '{PW}' ROLE user; \
             CREATE USER 'bob' WITH PASSWORD '{PW}' ROLE user"
        ))
        .await
        .expect_success();
    server
}

/// `rows` rows `(id, a 10 KB string)`, the same string in every row.
fn wide_rows(rows: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("body", DataType::Utf8, false),
    ]));
    let body = "x".repeat(10_240);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from((0..rows).collect::<Vec<_>>())),
        Arc::new(StringArray::from(vec![body.as_str(); rows as usize])),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn parquet(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    out
}

fn arrow_zstd(batch: &RecordBatch) -> Vec<u8> {
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(datafusion::arrow::ipc::CompressionType::ZSTD))
        .unwrap();
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    out
}

/// Row 1: a small body that decodes to gigabytes. A 0.5 MB Parquet file (150,000
/// rows of one 10 KB string, dictionary-encoded) grew a server without a decode
/// budget by 1.5 GB; a zstd-compressed Arrow IPC body is the same in another
/// format. Both are refused with RESOURCES_EXHAUSTED within the memory budget, a
/// body over `max_ingest_rows` before anything is decoded, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_decodes_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["--query-memory-mb", "128"]).await;
    let batch = wide_rows(150_000);
    let bodies = [
        ("application/vnd.apache.parquet", parquet(&batch)),
        ("application/vnd.apache.arrow.stream", arrow_zstd(&batch)),
    ];
    for (content_type, body) in bodies {
        assert!(body.len() < 2 << 20, "{content_type}: {} bytes", body.len());
        let before = server.memory();
        server.reset_peak();
        let answer = server
            .post_as("/ingest/app/t", "alice", PW, content_type, body)
            .await;
        answer.expect_error(400, "RESOURCES_EXHAUSTED");
        let grew = server.memory().peak_mib.saturating_sub(before.rss_mib);
        assert!(grew < 400, "{content_type}: the server grew by {grew} MiB");
    }
    // Rows are counted before they are decoded.
    let server = {
        drop(server);
        server_with(
            tempfile::tempdir().unwrap().path(),
            &["--max-ingest-rows", "1000"],
        )
        .await
    };
    let narrow = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from((0..1001).collect::<Vec<i64>>())) as ArrayRef],
    )
    .unwrap();
    for (content_type, body) in [
        ("application/vnd.apache.parquet", parquet(&narrow)),
        ("application/vnd.apache.arrow.stream", arrow_zstd(&narrow)),
    ] {
        let answer = server
            .post_as("/ingest/app/t", "alice", PW, content_type, body)
            .await;
        answer.expect_error(413, "PAYLOAD_TOO_LARGE");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_ingest_rows"),
            "{}",
            answer.body
        );
    }
    let ndjson: String = (0..1001).map(|i| format!("{{\"id\": {i}}}\n")).collect();
    server
        .post_as(
            "/ingest/app/t",
            "alice",
            PW,
            "application/x-ndjson",
            ndjson.into(),
        )
        .await
        .expect_error(413, "PAYLOAD_TOO_LARGE");
    let count = server.sql_as("alice", PW, "SELECT count(*) FROM app.t").await;
    assert_eq!(count.rows(), vec![vec![json!(0)]], "nothing was written");
}

/// Rows 5 and 6: what a statement materializes outside DataFusion's operators is
/// charged before it is held. A correlated subquery over 500,000,000 generated
/// rows took 4 GB before the pool refused it; an `INSERT ... SELECT` of 300,000,000
/// rows took 2.4 GB before `max_insert_rows` did (the rows are now counted as they
/// arrive); an `INSERT ... SELECT` of 100 MB of rows (fewer than
/// `max_insert_rows`) is refused by the 64 MiB budget rather than held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_and_insert_select_hold_no_more_than_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["--query-memory-mb", "64"]).await;
    let cases = [
        (
            "SELECT x, (SELECT count(*) FROM generate_series(1, 500000000) g WHERE g.value > t.x) \
             FROM (VALUES (1), (2)) t(x)",
            "RESOURCES_EXHAUSTED",
        ),
        (
            "INSERT INTO app.t (id) SELECT value FROM generate_series(1, 300000000)",
            "INVALID_PARAMETER",
        ),
        (
            "INSERT INTO app.t SELECT value, repeat('x', 2000) FROM generate_series(1, 50000)",
            "RESOURCES_EXHAUSTED",
        ),
    ];
    for (sql, code) in cases {
        let before = server.memory();
        server.reset_peak();
        server.sql_as("alice", PW, sql).await.expect_error(400, code);
        let grew = server.memory().peak_mib.saturating_sub(before.rss_mib);
        assert!(grew < 300, "{sql}: the server grew by {grew} MiB");
    }
    let count = server.sql_as("alice", PW, "SELECT count(*) FROM app.t").await;
    assert_eq!(count.rows(), vec![vec![json!(0)]], "nothing was written");
}

/// A `POST /sql?format=csv` of `sql` as alice that never reads its answer: a small
/// receive buffer, so the server's writes stall after a few kilobytes.
async fn stalled_request(base_url: &str, sql: &str) -> tokio::net::TcpStream {
    let addr: std::net::SocketAddr = base_url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let auth = crate::common::live::basic("alice", PW);
    let request = format!(
        "POST /sql?format=csv HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Row 2: clients that stop reading a streamed result. Each stalled reader pinned
/// two threads of the blocking pool, for good when statements had no time limit:
/// their hot scans waited on a blocking thread for a reader that never came (300
/// of them: 518 threads, and another user's `SELECT count(*)` timed out). Now a
/// scan reads a batch only when there is room for it, so a stalled reader holds a
/// parked task, no thread: the pool's threads retire once idle while the readers
/// still read nothing. (That the deadline is a timer is `query.rs`'s unit test
/// `a_detached_stream_stops_at_its_deadline_unread`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_hold_no_threads() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["--statement-timeout-ms", "0"]).await;
    // 100,000 rows: a full scan splits across partitions; 6 MB of CSV each.
    for from in (0..100_000).step_by(10_000) {
        let sql = format!(
            "INSERT INTO app.t SELECT value, repeat('r', 50) FROM generate_series({}, {})",
            from + 1,
            from + 10_000
        );
        server.sql_as("alice", PW, &sql).await.expect_success();
    }
    let threads_before = server.threads();
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(stalled_request(server.base_url(), "SELECT * FROM app.t").await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Another user is served meanwhile (while the stalled requests' first batches,
    // read ahead, still take the CPU of a debug build).
    let bob = tokio::time::timeout(
        Duration::from_secs(60),
        server.sql_as("bob", PW, "SELECT count(*) FROM app.t"),
    )
    .await
    .expect("bob's query is answered while the readers stall");
    assert_eq!(bob.rows(), vec![vec![json!(0)]]);
    // The blocking pool's threads that served the bounded reads retire once idle
    // (after 10 s), while the readers still read nothing.
    let retired = tokio::time::timeout(Duration::from_secs(60), async {
        while server.threads() > threads_before + 16 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        retired.is_ok(),
        "{} threads with 50 stalled readers, {threads_before} before",
        server.threads()
    );
    // The readers were stalled all along: one, read now, still gets its result.
    let mut head = [0u8; 12];
    stalled[0].read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// Row 3: a WebSocket client that sends large messages and reads nothing. Each
/// error reply repeated the client's 1 MB message type and was queued without a
/// bound: the server grew by 800 MB. Replies now repeat at most 128 characters of
/// the client's text and count against the connection's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_reads_nothing_costs_a_bounded_queue() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &[]).await;
    let url = format!("{}/ws", server.base_url().replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        crate::common::live::basic("alice", PW).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let before = server.memory();
    server.reset_peak();
    let frame = json!({"type": "x".repeat(1_000_000), "id": "y".repeat(10_000)}).to_string();
    for _ in 0..400 {
        if ws.send(Message::Text(frame.clone().into())).await.is_err() {
            break;
        }
    }
    // Give the server time to read and answer every frame.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grew = server.memory().peak_mib.saturating_sub(before.rss_mib);
    assert!(
        grew < 100,
        "400 unread 1 MB messages grew the server by {grew} MiB"
    );
    server.sql("SELECT 1").await.expect_success();
}
