//! Output formats of `POST /sql` (`?format=` / `Accept`): NDJSON, CSV, Arrow IPC and
//! Parquet streamed from the statement's record batches, read back here with real
//! readers; 64-bit integers as strings for JavaScript clients.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type, TimeUnit};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::common::{TestServer, decode};

/// 2^62 + 1: a snowflake-sized id a JavaScript number cannot hold.
const BIG_ID: i64 = (1 << 62) + 1;

/// A table with a column of every type, and three rows: ordinary values, text that
/// needs quoting and unicode, and NULL in every nullable column.
async fn typed_table(server: &TestServer) {
    server
        .execute_sql(
            "CREATE NAMESPACE fmt; \
             CREATE SHARED TABLE fmt.all_types (id BIGINT PRIMARY KEY, flag BOOLEAN, small SMALLINT, \
               num INT, real_v REAL, dbl DOUBLE, price DECIMAL(10,2), note TEXT, raw BYTES, day DATE, \
               at TIMESTAMP, doc JSON, uid UUID)",
        )
        .await
        .expect_success();
    server
        .execute_sql(&format!(
            "INSERT INTO fmt.all_types VALUES \
             (1, true, -3, 42, 1.5, -2.25, 1234.50, 'plain', '\\x00ff10', '2024-02-29', '2024-05-01T10:00:00.123456Z', \
              '{{\"a\": [1, 2], \"b\": \"x\"}}', '0190a0b0-c0d0-7e0f-8a1b-2c3d4e5f6a7b'), \
             (2, false, 7, -1, 0.25, 1e300, -0.01, 'comma, \"quote\"\nnew line — ünïcødé 🎉', '', '1970-01-01', '1999-12-31 23:59:59', \
              '\"just a string\"', NULL), \
             ({BIG_ID}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ))
        .await
        .expect_success();
}

const QUERY: &str = "SELECT * FROM fmt.all_types ORDER BY id";

/// `POST /sql?{query}` as root with `sql` as the body; the raw response.
async fn fetch(server: &TestServer, query: &str, sql: &str) -> reqwest::Response {
    server
        .client()
        .post(server.url(&format!("/sql?{query}")))
        .basic_auth("root", Some(""))
        .body(sql.to_string())
        .send()
        .await
        .expect("request is answered")
}

/// The body of a streamed format: status 200, its content type, and chunked (no
/// length known in advance).
async fn streamed(server: &TestServer, query: &str, sql: &str, content_type: &str) -> Vec<u8> {
    let response = fetch(server, query, sql).await;
    assert_eq!(response.status(), 200, "{query}: {sql}");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        content_type,
        "{query}"
    );
    assert!(
        response.headers().get("content-length").is_none(),
        "{query}: a streamed body has no length"
    );
    response.bytes().await.expect("the whole body arrives").to_vec()
}

fn arrow_batches(bytes: &[u8]) -> Vec<RecordBatch> {
    StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
        .expect("an Arrow IPC stream")
        .collect::<Result<Vec<_>, _>>()
        .expect("every batch reads")
}

fn parquet_batches(bytes: Vec<u8>) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .expect("a Parquet file")
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .expect("every batch reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_carries_every_type() {
    let server = TestServer::start().await;
    typed_table(&server).await;
    let json = server.execute_sql(QUERY).await;
    json.expect_success();
    let columns = json.column_names();
    let rows = json.rows();
    assert_eq!(rows.len(), 3);

    // NDJSON: one object per line, the same values as the JSON envelope's rows.
    let ndjson = streamed(&server, "format=ndjson", QUERY, "application/x-ndjson").await;
    let text = String::from_utf8(ndjson).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, row) in lines.iter().zip(&rows) {
        let object: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let keys: Vec<&String> = object.keys().collect();
        assert_eq!(keys.len(), columns.len());
        for (name, value) in columns.iter().zip(row) {
            assert_eq!(&object[name], value, "column {name}");
        }
    }
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        first["doc"],
        json!({"a": [1, 2], "b": "x"}),
        "JSON columns stay JSON"
    );
    assert_eq!(first["at"], "2024-05-01T10:00:00.123456Z");
    assert_eq!(first["price"], "1234.50");

    // CSV: a header line, RFC 4180 quoting, NULL as an empty field.
    let csv_bytes = streamed(&server, "format=csv", QUERY, "text/csv; charset=utf-8").await;
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, columns);
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 3);
    let field =
        |row: usize, name: &str| records[row][columns.iter().position(|c| c == name).unwrap()].to_string();
    assert_eq!(field(0, "id"), "1");
    assert_eq!(field(0, "flag"), "true");
    assert_eq!(field(0, "price"), "1234.50");
    assert_eq!(field(0, "day"), "2024-02-29");
    assert_eq!(field(0, "at"), "2024-05-01T10:00:00.123456Z");
    assert_eq!(field(1, "at"), "1999-12-31T23:59:59Z");
    assert_eq!(
        field(0, "doc"),
        r#"{"a": [1, 2], "b": "x"}"#,
        "JSON text as stored"
    );
    assert_eq!(field(0, "uid"), "0190a0b0-c0d0-7e0f-8a1b-2c3d4e5f6a7b");
    assert_eq!(field(1, "note"), "comma, \"quote\"\nnew line — ünïcødé 🎉");
    assert_eq!(field(1, "dbl"), "1e300");
    assert_eq!(field(2, "id"), BIG_ID.to_string());
    for name in &columns[1..] {
        assert_eq!(field(2, name), "", "NULL {name} is an empty field");
    }

    // Arrow IPC: the result's own column types, values and NULLs.
    let arrow = arrow_batches(
        &streamed(
            &server,
            "format=arrow",
            QUERY,
            "application/vnd.apache.arrow.stream",
        )
        .await,
    );
    let arrow = concat_batches(&arrow[0].schema(), &arrow).unwrap();
    assert_eq!(arrow.num_rows(), 3);
    let schema = arrow.schema();
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    assert_eq!(names, columns.iter().collect::<Vec<_>>());
    let column = |name: &str| arrow.column(schema.index_of(name).unwrap()).clone();
    assert_eq!(
        column("id").as_primitive::<Int64Type>().values().to_vec(),
        vec![1, 2, BIG_ID]
    );
    assert!(column("flag").as_boolean().value(0));
    assert_eq!(column("small").data_type(), &DataType::Int16);
    assert_eq!(column("num").data_type(), &DataType::Int32);
    assert_eq!(column("real_v").data_type(), &DataType::Float32);
    assert_eq!(column("dbl").data_type(), &DataType::Float64);
    assert_eq!(column("price").data_type(), &DataType::Decimal128(10, 2));
    assert_eq!(column("price").as_primitive::<Decimal128Type>().value(1), -1);
    assert_eq!(column("raw").as_binary::<i32>().value(0), &[0x00, 0xff, 0x10]);
    assert_eq!(column("raw").as_binary::<i32>().value(1), b"");
    assert_eq!(column("day").data_type(), &DataType::Date32);
    assert_eq!(
        column("at").data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(
        column("note").as_string::<i32>().value(1),
        "comma, \"quote\"\nnew line — ünïcødé 🎉"
    );
    assert_eq!(column("doc").as_string::<i32>().value(1), "\"just a string\"");
    for (name, array) in names.iter().zip(arrow.columns()).skip(1) {
        assert!(array.is_null(2), "{name} is NULL in the third row");
    }

    // Parquet: one file holding the same batch.
    let parquet =
        parquet_batches(streamed(&server, "format=parquet", QUERY, "application/vnd.apache.parquet").await);
    let parquet = concat_batches(&parquet[0].schema(), &parquet).unwrap();
    assert_eq!(parquet.num_rows(), 3);
    for ((name, read), sent) in names.iter().zip(parquet.columns()).zip(arrow.columns()) {
        assert_eq!(read.as_ref(), sent.as_ref(), "column {name}");
    }

    // The Accept header chooses too; ?format= wins over it.
    let response = server
        .client()
        .post(server.url("/sql"))
        .basic_auth("root", Some(""))
        .header("accept", "text/csv, application/json;q=0.5")
        .body("SELECT 1 AS one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(response.text().await.unwrap(), "one\n1\n");
    let response = server
        .client()
        .post(server.url("/sql?format=ndjson"))
        .basic_auth("root", Some(""))
        .header("accept", "text/csv")
        .body("SELECT 1 AS one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "{\"one\":1}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_formats_take_one_statement_that_returns_rows() {
    let server = TestServer::start().await;
    typed_table(&server).await;
    server.create_user("ivy", "ivy-pw", "user").await;
    server
        .execute_sql("CREATE USER TABLE fmt.notes (id INT PRIMARY KEY, body TEXT)")
        .await
        .expect_success();

    // Refused before anything runs: JSON error envelopes with their status.
    let refused = |query: &'static str, sql: &'static str, status: u16, code: &'static str| {
        let server = &server;
        async move {
            let answer = decode(fetch(server, query, sql).await).await;
            answer.expect_error(status, code);
        }
    };
    refused("format=xml", "SELECT 1", 400, "INVALID_PARAMETER").await;
    refused("format=csv&int64=bits", "SELECT 1", 400, "INVALID_PARAMETER").await;
    refused("format=csv", "SELECT 1; SELECT 2", 400, "INVALID_PARAMETER").await;
    refused("format=csv", "  ", 400, "EMPTY_SQL").await;
    refused("format=csv", "SELECT * FROM fmt.missing", 404, "TABLE_NOT_FOUND").await;
    refused("format=arrow", "SELEKT 1", 400, "INVALID_SQL").await;
    // An error of the first batch (at run time, not planning) is still an envelope.
    refused(
        "format=ndjson",
        "SELECT CAST(note AS INT) FROM fmt.all_types",
        400,
        "TYPE_MISMATCH",
    )
    .await;
    // Statements that return no rows are refused, not run.
    refused(
        "format=csv",
        "INSERT INTO fmt.all_types (id) VALUES (99)",
        400,
        "INVALID_PARAMETER",
    )
    .await;
    refused(
        "format=parquet",
        "CREATE NAMESPACE never",
        400,
        "INVALID_PARAMETER",
    )
    .await;
    let count = server
        .execute_sql("SELECT count(*) FROM fmt.all_types WHERE id = 99")
        .await;
    assert_eq!(count.rows(), vec![vec![json!(0)]]);
    let namespaces = server.execute_sql("SHOW NAMESPACES").await;
    assert!(!namespaces.rows().iter().any(|r| r[0] == "never"));

    // Statements other than queries that return rows: SHOW, DESCRIBE, RETURNING,
    // EXECUTE AS (scoped as the impersonated user).
    let tables = String::from_utf8(
        streamed(
            &server,
            "format=csv",
            "SHOW TABLES IN fmt",
            "text/csv; charset=utf-8",
        )
        .await,
    )
    .unwrap();
    assert!(tables.starts_with("namespace,table_name,"), "{tables}");
    assert!(
        tables.contains("fmt,all_types,") && tables.contains("fmt,notes,"),
        "{tables}"
    );
    let describe = String::from_utf8(
        streamed(
            &server,
            "format=ndjson",
            "DESCRIBE TABLE fmt.all_types",
            "application/x-ndjson",
        )
        .await,
    )
    .unwrap();
    assert_eq!(describe.lines().count(), 13, "{describe}");
    let returned = arrow_batches(
        &streamed(
            &server,
            "format=arrow",
            "INSERT INTO fmt.all_types (id, price, day) VALUES (7, 3.5, '2020-01-02') RETURNING id, price, day",
            "application/vnd.apache.arrow.stream",
        )
        .await,
    );
    let returned = &returned[0];
    assert_eq!(returned.column(0).as_primitive::<Int64Type>().value(0), 7);
    assert_eq!(returned.column(1).data_type(), &DataType::Decimal128(10, 2));
    assert_eq!(returned.column(1).as_primitive::<Decimal128Type>().value(0), 350);
    assert_eq!(returned.column(2).data_type(), &DataType::Date32);
    let stored = server
        .execute_sql("SELECT price FROM fmt.all_types WHERE id = 7")
        .await;
    assert_eq!(stored.rows(), vec![vec![json!("3.50")]]);
    server
        .execute_sql_as("ivy", "ivy-pw", "INSERT INTO fmt.notes VALUES (1, 'ivy''s')")
        .await
        .expect_success();
    let as_ivy = String::from_utf8(
        streamed(
            &server,
            "format=csv",
            "EXECUTE AS USER 'ivy' (SELECT id, body FROM fmt.notes)",
            "text/csv; charset=utf-8",
        )
        .await,
    )
    .unwrap();
    assert_eq!(as_ivy, "id,body\n1,ivy's\n");
    // A result of no rows: the header alone, an IPC stream of no batches.
    let empty = String::from_utf8(
        streamed(
            &server,
            "format=csv",
            "SELECT id, note FROM fmt.all_types WHERE id < 0",
            "text/csv; charset=utf-8",
        )
        .await,
    )
    .unwrap();
    assert_eq!(empty, "id,note\n");
    let none = arrow_batches(
        &streamed(
            &server,
            "format=arrow",
            "SELECT id FROM fmt.all_types WHERE id < 0",
            "application/vnd.apache.arrow.stream",
        )
        .await,
    );
    assert!(none.iter().all(|b| b.num_rows() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_stream_in_many_chunks() {
    let server = TestServer::start().await;
    let rows = 300_000;
    let sql = format!("SELECT value, value * 2 AS twice FROM generate_series(1, {rows})");
    let mut response = fetch(&server, "format=csv", &sql).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "a streamed body has no length known in advance"
    );
    let (mut chunks, mut lines, mut sum) = (0, 0u64, 0u64);
    let mut partial = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        chunks += 1;
        partial.extend_from_slice(&chunk);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            lines += 1;
            if lines > 1 {
                let text = std::str::from_utf8(&line).unwrap().trim_end();
                let (value, twice) = text.split_once(',').unwrap();
                assert_eq!(twice.parse::<u64>().unwrap(), 2 * value.parse::<u64>().unwrap());
                sum += value.parse::<u64>().unwrap();
            }
        }
    }
    assert_eq!(lines, rows + 1, "a header line and every row");
    assert_eq!(sum, rows * (rows + 1) / 2);
    assert!(chunks > 10, "the result arrived in {chunks} chunk(s)");

    // What proves streaming: a result of 10^10 rows (about 100 GB of CSV) cannot be
    // built before it is sent, yet its first 100,000 rows arrive within seconds.
    // Dropping the response ends the statement.
    let endless = "SELECT value FROM generate_series(1, 10000000000)";
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut response = fetch(&server, "format=csv", endless).await;
        assert_eq!(response.status(), 200);
        let (mut text, mut lines) = (Vec::new(), 0);
        while lines <= 100_000 {
            let chunk = response.chunk().await.unwrap().expect("the stream goes on");
            lines += chunk.iter().filter(|b| **b == b'\n').count();
            text.extend_from_slice(&chunk);
        }
        text
    })
    .await
    .expect("the first 100,000 rows of an endless result arrive");
    let text = String::from_utf8(first).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("value"));
    for (expected, line) in (1..=100_000u64).zip(lines) {
        assert_eq!(line.parse::<u64>().ok(), Some(expected));
    }

    let parquet =
        parquet_batches(streamed(&server, "format=parquet", &sql, "application/vnd.apache.parquet").await);
    assert_eq!(parquet.iter().map(|b| b.num_rows()).sum::<usize>(), rows as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_early_at_the_statement_timeout() {
    let server = TestServer::start_configured(|s| s.statement_timeout_ms = 500).await;
    // A client of its own, without the shared client's 60 s request timeout (which
    // would also cut the body short).
    let mut response = reqwest::Client::new()
        .post(server.url("/sql?format=ndjson"))
        .basic_auth("root", Some(""))
        .body("SELECT value, repeat('x', 200) AS pad FROM generate_series(1, 100000000)")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the first batch arrives in time");
    // A client that reads slowly: the server's stream waits on the socket and
    // meets its deadline there.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let mut received = 0usize;
    let read = async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received += chunk.len(),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
    };
    // The whole result would take minutes to produce; the deadline ends it at once.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the stream ends at the statement's deadline");
    assert!(
        ended.is_err(),
        "the body is cut short, not ended as if whole ({received} bytes)"
    );
    assert!(received < 100_000_000 * 200, "{received} bytes");
    // The server goes on answering.
    server.execute_sql("SELECT 1").await.expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int64_as_string_for_javascript_clients() {
    let server = TestServer::start().await;
    typed_table(&server).await;
    let sql = format!("SELECT id, num, price FROM fmt.all_types WHERE id IN (1, {BIG_ID}) ORDER BY id");
    // Default: numbers.
    let plain = server.execute_sql(&sql).await;
    assert_eq!(plain.rows()[1][0], json!(BIG_ID));
    // ?int64=string: BIGINT columns as strings, other columns unchanged.
    let answer = decode(fetch(&server, "int64=string", &sql).await).await;
    assert_eq!(
        answer.rows(),
        vec![
            vec![json!("1"), json!(42), json!("1234.50")],
            vec![json!(BIG_ID.to_string()), Value::Null, Value::Null],
        ]
    );
    // The JSON body's "int64_as_string", for every statement of the request
    // (a point read, a command result, RETURNING).
    let answer = server
        .post_json_as(
            "root",
            "",
            json!({
                "sql": format!("SELECT id FROM fmt.all_types WHERE id = {BIG_ID}; \
                                SELECT count(*) AS n FROM fmt.all_types; \
                                INSERT INTO fmt.all_types (id) VALUES (9) RETURNING id, num"),
                "int64_as_string": true
            }),
        )
        .await;
    answer.expect_success();
    assert_eq!(answer.body["results"][0]["rows"], json!([[BIG_ID.to_string()]]));
    assert_eq!(answer.body["results"][1]["rows"], json!([["3"]]));
    assert_eq!(answer.body["results"][2]["rows"], json!([["9", null]]));
    // NDJSON too.
    let ndjson = String::from_utf8(
        streamed(
            &server,
            "format=ndjson&int64=string",
            &sql,
            "application/x-ndjson",
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        ndjson,
        format!(
            "{{\"id\":\"1\",\"num\":42,\"price\":\"1234.50\"}}\n{{\"id\":\"{BIG_ID}\",\"num\":null,\"price\":null}}\n"
        )
    );
}

/// `?int64=string` encodes 64-bit integers as strings while the rows are written:
/// a JSON value nested as deep as the server stores (127 levels) comes through
/// whole, in every kind of result (a query, a point read, SHOW STATS, RETURNING,
/// a streamed RETURNING), never as a blank result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int64_as_string_keeps_deeply_nested_json() {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        results: Vec<Answer<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        row_count: u64,
        #[serde(borrow)]
        rows: Vec<Vec<&'a serde_json::value::RawValue>>,
    }
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE SHARED TABLE deep (id BIGINT PRIMARY KEY, j JSON)")
        .await
        .expect_success();
    for (id, depth) in [(1, 1), (2, 126), (3, 127)] {
        server
            .execute_sql(&format!("INSERT INTO deep VALUES ({id}, '{}')", nested(depth)))
            .await
            .expect_success();
    }
    let sql = "SELECT id, j FROM deep ORDER BY id; SELECT id, j FROM deep WHERE id = 3; \
               SHOW STATS FOR TABLE deep; \
               INSERT INTO deep VALUES (4, '[[4]]') RETURNING id, j";
    for query in ["int64=string", "int64=number"] {
        let response = fetch(&server, query, sql).await;
        assert_eq!(response.status(), 200, "{query}");
        let text = response.text().await.unwrap();
        let body: Body = serde_json::from_str(&text).expect("the envelope parses");
        let quoted = query == "int64=string";
        let id = |n: i64| if quoted { format!("\"{n}\"") } else { n.to_string() };
        let rows = |answer: &Answer| -> Vec<Vec<String>> {
            (answer.rows.iter())
                .map(|row| row.iter().map(|c| c.get().to_string()).collect())
                .collect()
        };
        assert_eq!(body.results[0].row_count, 3);
        assert_eq!(
            rows(&body.results[0]),
            vec![
                vec![id(1), nested(1)],
                vec![id(2), nested(126)],
                vec![id(3), nested(127)],
            ],
            "{query}"
        );
        assert_eq!(rows(&body.results[1]), vec![vec![id(3), nested(127)]], "{query}");
        // SHOW STATS: table, then six BIGINT figures (3 hot rows).
        assert_eq!(rows(&body.results[2])[0][1], id(3), "{query}");
        assert_eq!(
            rows(&body.results[3]),
            vec![vec![id(4), nested(2).replace('1', "4")]],
            "{query}"
        );
        server
            .execute_sql("DELETE FROM deep WHERE id = 4")
            .await
            .expect_success();
    }
    // A streamed RETURNING (its result turned into a record batch) keeps the
    // document too.
    let ndjson = String::from_utf8(
        streamed(
            &server,
            "format=ndjson&int64=string",
            "UPDATE deep SET j = j WHERE id = 3 RETURNING id, j",
            "application/x-ndjson",
        )
        .await,
    )
    .unwrap();
    assert_eq!(ndjson, format!("{{\"id\":\"3\",\"j\":{}}}\n", nested(127)));
}

/// A JSON answer larger than what is sent whole is written from the results'
/// batches while it is sent (chunked, no length): every row arrives in order, with
/// the results after it, the `int64` option, and an error envelope after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_json_answer_is_written_while_it_is_sent() {
    let server = TestServer::start().await;
    let sql = "SELECT value FROM generate_series(1, 100000); SELECT 'x' AS s";
    let response = fetch(&server, "int64=string", sql).await;
    assert_eq!(response.status(), 200);
    assert!(response.content_length().is_none(), "chunked, not sent whole");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "success");
    let rows = body["results"][0]["rows"].as_array().unwrap();
    assert_eq!(body["results"][0]["row_count"], 100_000);
    let values: Vec<String> = rows.iter().map(|r| r[0].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = (1..=100_000).map(|v| v.to_string()).collect();
    assert_eq!(values, expected);
    assert_eq!(body["results"][1]["rows"], json!([["x"]]));
    assert!(body["took_ms"].as_f64().unwrap() >= 0.0);
    // A small answer is sent whole.
    let small = fetch(&server, "", "SELECT 1").await;
    assert!(small.content_length().is_some());
    // The error of a later statement follows the large result.
    let answer = server
        .execute_sql("SELECT value FROM generate_series(1, 50000); SELECT * FROM no_such_table")
        .await;
    answer.expect_error(404, "TABLE_NOT_FOUND");
    assert_eq!(answer.body["error"]["statement_index"], 1);
    assert_eq!(answer.row_count(0), 50_000);
    assert_eq!(answer.body["results"][0]["rows"][49_999], json!([50_000]));
}
