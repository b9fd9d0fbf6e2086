//! Compaction: a USER table of `compact_rows` rows, flushed, then `compact_rounds`
//! rounds of updating a tenth of its rows and flushing. Before and after `STORAGE
//! COMPACT TABLE`: the table's files and bytes (SHOW STATS), a full-scan GROUP BY and
//! point reads of flushed rows; the compaction's own time and rows/s, and the latency of
//! single-row INSERTs into another table while it runs. The server is a child process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Args, Client, ServerProcess, report_latency};

async fn flush(client: &Client, table: &str) {
    let body = client.sql(format!("STORAGE FLUSH TABLE {table}")).await;
    let job = body["results"][0]["rows"][0][0]
        .as_str()
        .expect("job id")
        .to_string();
    assert_eq!(client.wait_job(&job).await[0], "completed");
}

/// Files, bytes, a GROUP BY (median of three) and point reads of the table now.
async fn measure(client: &Client, rows: usize, samples: usize, label: &str) -> Value {
    let stats = client.sql("SHOW STATS FOR TABLE bench.c".into()).await;
    let names: Vec<String> = (stats["results"][0]["columns"].as_array().expect("columns").iter())
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    let stat = |name: &str| {
        stats["results"][0]["rows"][0][names.iter().position(|n| n == name).expect(name)].clone()
    };
    let mut group_by = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let body = client
            .sql("SELECT kind, count(*), sum(n) FROM bench.c GROUP BY kind".into())
            .await;
        group_by.push(started.elapsed());
        assert_eq!(body["results"][0]["row_count"], 10);
    }
    group_by.sort();
    let mut point = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = 1 + (i * 104_729) % rows;
        let started = Instant::now();
        let body = client
            .sql(format!("SELECT id, n FROM bench.c WHERE id = {id}"))
            .await;
        point.push(started.elapsed());
        assert_eq!(body["results"][0]["row_count"], 1);
    }
    let group_by_ms = group_by[1].as_secs_f64() * 1000.0;
    println!(
        "{label}: {} files, {:.1} MB in Parquet, {} row versions; GROUP BY {group_by_ms:.0} ms",
        stat("cold_files"),
        stat("cold_bytes").as_f64().unwrap_or(0.0) / 1e6,
        stat("cold_rows"),
    );
    let point = report_latency(&format!("{label}: cold point read"), point);
    json!({
        "cold_files": stat("cold_files"),
        "cold_bytes": stat("cold_bytes"),
        "cold_row_versions": stat("cold_rows"),
        "group_by_ms": group_by_ms,
        "point_read": point,
    })
}

pub async fn compaction(args: &Args, _server: &ServerProcess, client: &impl Fn() -> Client) -> Value {
    let setup = client();
    let rows = args.compact_rows;
    setup
        .sql("CREATE USER TABLE bench.c (id BIGINT PRIMARY KEY, kind INT, n BIGINT, payload TEXT)".into())
        .await;
    let started = Instant::now();
    for first in (1..=rows).step_by(100_000) {
        let mut body = String::new();
        for id in first..(first + 100_000).min(rows + 1) {
            body.push_str(&format!(
                "{{\"id\":{id},\"kind\":{},\"n\":{id},\"payload\":\"payload of row {id}\"}}\n",
                id % 10
            ));
        }
        setup.ingest_ndjson("bench", "c", body).await;
    }
    flush(&setup, "bench.c").await;
    for round in 0..args.compact_rounds {
        setup
            .sql(format!(
                "UPDATE bench.c SET n = n + 1 WHERE id % 10 = {}",
                round % 10
            ))
            .await;
        flush(&setup, "bench.c").await;
    }
    println!(
        "loaded {rows} rows, {} rounds of updating a tenth and flushing: {:.0} s",
        args.compact_rounds,
        started.elapsed().as_secs_f64()
    );
    let before = measure(&setup, rows, args.samples.min(2000), "before compaction").await;

    // Single-row INSERTs into another table, timed: alone for as long as the
    // compaction will take, then while it runs.
    let insert_alone = {
        let client = client();
        let mut latencies = Vec::new();
        let until = Instant::now() + Duration::from_secs(20);
        let mut id = 10_000_000u64;
        while Instant::now() < until {
            id += 1;
            let started = Instant::now();
            client
                .sql(format!("INSERT INTO bench.single VALUES ({id}, 'alone')"))
                .await;
            latencies.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        report_latency("single-row INSERT alone", latencies)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (stop, client) = (stop.clone(), client());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let started = Instant::now();
                client
                    .sql(format!(
                        "INSERT INTO bench.single VALUES ({id}, 'during compaction')"
                    ))
                    .await;
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let body = setup.sql("STORAGE COMPACT TABLE bench.c".into()).await;
    let job = body["results"][0]["rows"][0][0]
        .as_str()
        .expect("job id")
        .to_string();
    assert_eq!(setup.wait_job(&job).await[0], "completed");
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let latencies = inserter.await.expect("the inserter");
    let result = setup
        .sql(format!("SELECT result FROM system.jobs WHERE job_id = '{job}'"))
        .await["results"][0]["rows"][0][0]
        .clone();
    let result: Value = match result {
        Value::String(text) => serde_json::from_str(&text).expect("a JSON result"),
        other => other,
    };
    let versions_in =
        result["rows_kept"].as_f64().unwrap_or(0.0) + result["rows_dropped"].as_f64().unwrap_or(0.0);
    println!(
        "compaction: {seconds:.1} s, {:.0} row versions/s read, {result}",
        versions_in / seconds
    );
    let inserts = report_latency("single-row INSERT meanwhile", latencies);
    let after = measure(&setup, rows, args.samples.min(2000), "after compaction").await;
    json!({
        "rows": rows,
        "rounds": args.compact_rounds,
        "before": before,
        "compaction_seconds": seconds,
        "compaction_row_versions_per_s": versions_in / seconds,
        "compaction_result": result,
        "insert_alone": insert_alone,
        "insert_during_compaction": inserts,
        "after": after,
    })
}
