//! Streamed output formats: a 10M-row result read over HTTP in each format, with
//! the server's peak RSS growth while it streams (the server is a child process,
//! so the figure is the server's alone).

use std::time::Instant;

use serde_json::{Value, json};

use super::{Args, Client, ServerProcess, with_peak_rss};

/// The query whose result is streamed: `rows` rows of an id, a number and a label.
fn query(rows: usize) -> String {
    format!(
        "SELECT value AS id, value * 3 AS n, concat('row number ', value) AS label FROM generate_series(1, {rows})"
    )
}

/// Reads the whole body of `POST /sql?format=...` chunk by chunk (nothing kept):
/// bytes received and newlines seen.
async fn stream(client: &Client, format: &str, sql: &str) -> (u64, u64) {
    let mut response = client
        .http
        .post(format!("{}?format={format}", client.url))
        .basic_auth("root", Some(""))
        .body(sql.to_string())
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200, "{format}");
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await.expect("the whole body") {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    (bytes, lines)
}

pub async fn streamed_formats(args: &Args, server: &ServerProcess, client: &impl Fn() -> Client) -> Value {
    let rows = args.format_rows;
    let sql = query(rows);
    let mut figures = serde_json::Map::new();
    // A small stream first: the server's first query sets up thread pools and
    // allocator arenas, which are not the cost of streaming.
    stream(&client(), "csv", &query(10_000)).await;
    let measured = |format: &str| args.formats.iter().any(|f| f == format);
    for format in ["csv", "ndjson", "arrow", "parquet"]
        .into_iter()
        .filter(|f| measured(f))
    {
        let client = client();
        let started = Instant::now();
        let ((bytes, lines), growth) = with_peak_rss(server, stream(&client, format, &sql)).await;
        let seconds = started.elapsed().as_secs_f64();
        match format {
            "csv" => assert_eq!(lines, rows as u64 + 1, "a header and every row"),
            "ndjson" => assert_eq!(lines, rows as u64, "every row"),
            _ => {}
        }
        println!(
            "stream {rows} rows as {format:<8} {:>7.0} MB in {seconds:.1} s ({:.0} rows/s), server RSS +{:.0} MB",
            bytes as f64 / 1e6,
            rows as f64 / seconds,
            growth as f64 / 1e6
        );
        figures.insert(
            format.to_string(),
            json!({"rows": rows, "bytes": bytes, "seconds": seconds, "rss_growth_mb": growth as f64 / 1e6}),
        );
    }
    if !measured("json") {
        return Value::Object(figures);
    }
    // The JSON envelope of a tenth of the rows, for comparison.
    let tenth = rows / 10;
    let client = client();
    let started = Instant::now();
    let (body, growth) = with_peak_rss(server, client.sql(query(tenth))).await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(body["results"][0]["row_count"], tenth);
    println!(
        "JSON envelope of {tenth} rows        in {seconds:.1} s, server RSS +{:.0} MB",
        growth as f64 / 1e6
    );
    figures.insert(
        "json".into(),
        json!({"rows": tenth, "seconds": seconds, "rss_growth_mb": growth as f64 / 1e6}),
    );
    Value::Object(figures)
}
