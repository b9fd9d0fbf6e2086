//! Bulk load over `POST /ingest/<ns>/<table>`: NDJSON, CSV, Arrow IPC and Parquet
//! bodies, scoped and checked like INSERT, atomic per request.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use serde_json::json;

use crate::common::TestServer;

const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";
const ARROW: &str = "application/vnd.apache.arrow.stream";
const PARQUET: &str = "application/vnd.apache.parquet";

/// Rows `(id, qty, note)` for ids `from..to`, as one record batch; `qty` is INT64 so
/// that loading it into an INT column exercises the conversion.
fn batch(from: i64, to: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int64, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let ids: Vec<i64> = (from..to).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int64Array::from(ids.iter().map(|i| i * 2).collect::<Vec<_>>())),
        Arc::new(StringArray::from(
            ids.iter().map(|i| format!("arrow {i}")).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Rows `(id, qty)` as one record batch (`qty` NULL where `None`).
fn id_qty(rows: &[(i64, Option<i64>)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn arrow_ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    out
}

fn parquet(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batches[0].schema(), None).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_loads_into_the_callers_scope() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE shop; \
             CREATE USER TABLE shop.items (id BIGINT PRIMARY KEY, qty INT NOT NULL, note TEXT DEFAULT 'none', owner TEXT DEFAULT CURRENT_USER())",
        )
        .await
        .expect_success();
    server.create_user("erin", "erin-pw", "user").await;
    server.create_user("finn", "finn-pw", "user").await;
    let load = |content_type: &'static str, body: Vec<u8>| {
        server.ingest_as("erin", "erin-pw", "shop/items", content_type, body)
    };

    let ndjson = "{\"id\": 1, \"qty\": 5, \"note\": \"first\"}\n\n{\"id\": 2, \"qty\": \"6\"}\n";
    let answer = load(NDJSON, ndjson.into()).await;
    answer.expect_success();
    assert_eq!(answer.row_count(0), 2);
    // CSV: columns in any order, a byte-order mark before the header, CRLF lines.
    let answer = load(CSV, "\u{feff}qty,id,note\r\n7,3,third\r\n8,4,\r\n".into()).await;
    answer.expect_success();
    assert_eq!(answer.row_count(0), 2);
    // Two batches per body: the row numbers continue across them.
    load(ARROW, arrow_ipc(&[batch(100, 150), batch(150, 200)]))
        .await
        .expect_success();
    load(PARQUET, parquet(&[batch(200, 230), batch(230, 300)]))
        .await
        .expect_success();

    // A bad row of a Parquet body is named by its number in the file: the reader's
    // second batch starts at row 8,193.
    let rows: Vec<(i64, Option<i64>)> = (1000..11000).map(|i| (i, (i != 9999).then_some(1))).collect();
    let answer = load(PARQUET, parquet(&[id_qty(&rows)])).await;
    answer.expect_error(400, "NOT_NULL_VIOLATION");
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("row 9000: "), "{message}");

    let erin = |sql: &'static str| server.execute_sql_as("erin", "erin-pw", sql);
    assert_eq!(
        erin("SELECT count(*), sum(qty) FROM shop.items").await.rows(),
        vec![vec![
            json!(204),
            json!(5 + 6 + 7 + 8 + (100..300).map(|i| i * 2).sum::<i64>())
        ]]
    );
    assert_eq!(
        erin("SELECT id, qty, note, owner FROM shop.items WHERE id <= 4 OR id IN (100, 299) ORDER BY id")
            .await
            .rows(),
        vec![
            vec![json!(1), json!(5), json!("first"), json!("erin")],
            vec![json!(2), json!(6), json!("none"), json!("erin")],
            vec![json!(3), json!(7), json!("third"), json!("erin")],
            // An empty CSV field is NULL, not the default.
            vec![json!(4), json!(8), json!(null), json!("erin")],
            vec![json!(100), json!(200), json!("arrow 100"), json!("erin")],
            vec![json!(299), json!(598), json!("arrow 299"), json!("erin")],
        ]
    );
    // Loaded rows are erin's alone; finn's scope is empty and his keys are free.
    assert_eq!(
        server
            .execute_sql_as("finn", "finn-pw", "SELECT count(*) FROM shop.items")
            .await
            .rows(),
        vec![vec![json!(0)]]
    );
    server
        .ingest_as(
            "finn",
            "finn-pw",
            "shop/items",
            NDJSON,
            b"{\"id\": 1, \"qty\": 1}".to_vec(),
        )
        .await
        .expect_success();
    // Loaded rows flush like inserted ones.
    let job = server.flush_and_wait("shop.items").await;
    assert_eq!(job["rows_flushed"], json!(205), "{job}");
    assert_eq!(
        erin("SELECT count(*) FROM shop.items").await.rows(),
        vec![vec![json!(204)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_row_refuses_the_whole_load_and_names_its_line() {
    let server = TestServer::start_configured(|s| s.max_ingest_bytes = 4096).await;
    server
        .execute_sql(
            "CREATE SHARED TABLE stock (id INT PRIMARY KEY, qty INT NOT NULL); \
             INSERT INTO stock VALUES (1, 1)",
        )
        .await
        .expect_success();
    let load = |content_type: &'static str, body: &str| {
        server.ingest_as(
            "root",
            "",
            "default/stock",
            content_type,
            body.as_bytes().to_vec(),
        )
    };
    let cases: Vec<(&str, &str, u16, &str, &str)> = vec![
        (
            NDJSON,
            "{\"id\": 5, \"qty\": 1}\n{\"id\": 1, \"qty\": 2}\n",
            409,
            "DUPLICATE_KEY",
            "line 2",
        ),
        (
            NDJSON,
            "{\"id\": 5, \"qty\": 1}\n{\"id\": 5, \"qty\": 2}\n",
            409,
            "DUPLICATE_KEY",
            "also on line 1",
        ),
        (
            NDJSON,
            "{\"id\": 5, \"qty\": 1}\n{\"id\": 6, \"qty\": \"lots\"}\n",
            400,
            "TYPE_MISMATCH",
            "line 2",
        ),
        (
            NDJSON,
            "{\"id\": 5, \"qty\": 1}\n{\"id\": 6, \"qty\": 1\n",
            400,
            "INVALID_REQUEST",
            "line 2",
        ),
        (
            NDJSON,
            "{\"id\": 5, \"qty\": 1}\n\n{\"id\": 6}\n",
            400,
            "NOT_NULL_VIOLATION",
            "line 3",
        ),
        (
            NDJSON,
            "{\"id\": 5, \"qty\": 1, \"color\": \"red\"}\n",
            400,
            "COLUMN_NOT_FOUND",
            "line 1",
        ),
        (CSV, "id,qty\n5,1\n6,3000000000\n", 400, "TYPE_MISMATCH", "line 3"),
        (CSV, "id,qty\n5,1\n6\n", 400, "INVALID_REQUEST", "line 3"),
        (CSV, "id,colour\n5,1\n", 400, "COLUMN_NOT_FOUND", "line 1"),
        (
            "application/json",
            "{\"id\": 5, \"qty\": 1}",
            400,
            "INVALID_REQUEST",
            "Content-Type",
        ),
        (ARROW, "not arrow", 400, "INVALID_REQUEST", "Arrow IPC"),
        (PARQUET, "not parquet", 400, "INVALID_REQUEST", "Parquet"),
    ];
    for (content_type, body, status, code, place) in cases {
        let answer = load(content_type, body).await;
        answer.expect_error(status, code);
        let message = answer.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(place), "{body:?}: {message}");
    }
    // Row numbers continue across record batches: the bad row is the third of the
    // second batch of 50 + 3 rows.
    let first: Vec<(i64, Option<i64>)> = (101..=150).map(|i| (i, Some(1))).collect();
    for (last, status, code, start) in [
        (
            (110, Some(1)),
            409,
            "DUPLICATE_KEY",
            "row 53: key 110 is also on row 10;",
        ),
        ((1, Some(1)), 409, "DUPLICATE_KEY", "row 53: duplicate key 1 in"),
        ((152, None), 400, "NOT_NULL_VIOLATION", "row 53: "),
    ] {
        let second = id_qty(&[(160, Some(1)), (161, Some(1)), last]);
        let body = arrow_ipc(&[id_qty(&first), second]);
        let answer = server.ingest_as("root", "", "default/stock", ARROW, body).await;
        answer.expect_error(status, code);
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(start), "{message}");
    }
    let big = "{\"id\": 9, \"qty\": 1}\n".repeat(400);
    load(NDJSON, &big).await.expect_error(413, "PAYLOAD_TOO_LARGE");
    // None of the refused loads wrote anything.
    assert_eq!(
        server.execute_sql("SELECT id, qty FROM stock").await.rows(),
        vec![vec![json!(1), json!(1)]]
    );

    // Rights are INSERT's: a `user` cannot load a SHARED table, nobody a system table.
    server.create_user("gus", "gus-pw", "user").await;
    server
        .ingest_as(
            "gus",
            "gus-pw",
            "default/stock",
            NDJSON,
            b"{\"id\": 7, \"qty\": 1}".to_vec(),
        )
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .ingest_as("root", "", "system/users", NDJSON, b"{}".to_vec())
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .ingest_as("root", "", "default/missing", NDJSON, b"{}".to_vec())
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    server
        .ingest_as("gus", "wrong", "default/stock", NDJSON, b"{}".to_vec())
        .await
        .expect_error(401, "UNAUTHORIZED");
}
