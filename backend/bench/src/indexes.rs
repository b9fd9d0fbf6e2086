//! Secondary indexes: an equality filter on an indexed column of a SHARED table of
//! `index_rows` hot rows, against a point read by primary key and against the same
//! filter on a column without an index; and the time CREATE INDEX takes over the
//! existing rows. The server is a child process: its RSS is its own.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Args, Client, ServerProcess, report_latency, with_peak_rss};

pub async fn indexes(args: &Args, server: &ServerProcess, client: &impl Fn() -> Client) -> Value {
    let client = client();
    let rows = args.index_rows;
    client
        .sql("CREATE SHARED TABLE bench.ix (id BIGINT PRIMARY KEY, k BIGINT, u BIGINT, v TEXT)".into())
        .await;
    // k and u are the same values (unique, scattered): k gets the index, u not.
    let started = Instant::now();
    let per_request = 100_000;
    for first in (0..rows).step_by(per_request) {
        let mut body = String::new();
        for id in first..(first + per_request).min(rows) {
            let k = (id * 7919) % rows;
            body.push_str(&format!(
                "{{\"id\":{id},\"k\":{k},\"u\":{k},\"v\":\"value {id}\"}}\n"
            ));
        }
        client.ingest_ndjson("bench", "ix", body).await;
    }
    println!("loaded {rows} rows in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let (_, growth) = with_peak_rss(server, client.sql("CREATE INDEX ix_k ON bench.ix (k)".into())).await;
    let build = started.elapsed().as_secs_f64();
    println!(
        "CREATE INDEX over {rows} hot rows: {build:.2} s, server RSS +{:.0} MB",
        growth as f64 / 1e6
    );
    let plan = client
        .sql("EXPLAIN SELECT id, k, v FROM bench.ix WHERE k = 42".into())
        .await;
    assert!(plan.to_string().contains("hot=index ix_k"), "{plan}");

    let samples = args.samples;
    let timed = |sql: String| {
        let client = &client;
        async move {
            let started = Instant::now();
            let body = client.sql(sql).await;
            let elapsed = started.elapsed();
            assert_eq!(body["results"][0]["row_count"], 1);
            elapsed
        }
    };
    let mut indexed: Vec<Duration> = Vec::with_capacity(samples);
    let mut point: Vec<Duration> = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = (i * 104_729) % rows;
        let k = (id * 7919) % rows;
        indexed.push(timed(format!("SELECT id, k, v FROM bench.ix WHERE k = {k}")).await);
        point.push(timed(format!("SELECT id, k, v FROM bench.ix WHERE id = {id}")).await);
    }
    let mut scanned: Vec<Duration> = Vec::new();
    for i in 0..5 {
        let u = (i * 7919 * 13) % rows;
        scanned.push(timed(format!("SELECT id, k, v FROM bench.ix WHERE u = {u}")).await);
    }
    let indexed = report_latency("indexed equality (k = v)", indexed);
    let point = report_latency("point read by PK (id = v)", point);
    let scanned = report_latency("unindexed equality (u = v)", scanned);
    json!({
        "rows": rows,
        "create_index_seconds": build,
        "create_index_rss_growth_mb": growth as f64 / 1e6,
        "indexed_equality": indexed,
        "point_read": point,
        "unindexed_equality": scanned,
    })
}
