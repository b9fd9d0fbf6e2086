//! Correlated subqueries: the same question answered by a join (equality
//! correlation, decorrelated by DataFusion) and row by row (non-equality
//! correlation, `CorrelatedApply`), over a SHARED table of `subquery_rows` rows;
//! the row-by-row cost is (distinct outer values) × (rows the subquery reads).

use std::time::Instant;

use serde_json::{Value, json};

use super::{Args, Client, ServerProcess, with_peak_rss};

/// The fastest of three runs of `sql`, seconds, with the server's peak RSS growth
/// over the three.
async fn best_of_three(server: &ServerProcess, client: &Client, sql: &str, rows: usize) -> (f64, u64) {
    let (best, growth) = with_peak_rss(server, async {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let body = client.sql(sql.to_string()).await;
            best = best.min(started.elapsed().as_secs_f64());
            assert_eq!(body["results"][0]["row_count"], rows, "{sql}");
        }
        best
    })
    .await;
    (best, growth)
}

pub async fn subqueries(args: &Args, server: &ServerProcess, client: &impl Fn() -> Client) -> Value {
    let client = client();
    let mut figures = serde_json::Map::new();
    for rows in [args.subquery_rows / 3, args.subquery_rows] {
        let table = format!("bench.sq_{rows}");
        client
            .sql(format!(
                "CREATE SHARED TABLE {table} (a INT PRIMARY KEY, c INT, d INT)"
            ))
            .await;
        for start in (0..rows).step_by(1000) {
            let values: Vec<String> = (start..(start + 1000).min(rows))
                .map(|a| format!("({a}, {a}, {})", a % 10))
                .collect();
            client
                .sql(format!("INSERT INTO {table} VALUES {}", values.join(", ")))
                .await;
        }
        let cases = [
            (
                "join: x.d = t.d",
                format!("SELECT a, (SELECT count(*) FROM {table} x WHERE x.d = t.d) FROM {table} t"),
                1,
            ),
            (
                "per row, 10 distinct outer values: x.c > t.d",
                format!("SELECT a, (SELECT count(*) FROM {table} x WHERE x.c > t.d) FROM {table} t"),
                10,
            ),
            (
                "per row, every outer row distinct: x.c > t.c",
                format!("SELECT a, (SELECT count(*) FROM {table} x WHERE x.c > t.c) FROM {table} t"),
                rows,
            ),
        ];
        for (name, sql, distinct) in cases {
            let (seconds, growth) = best_of_three(server, &client, &sql, rows).await;
            let row_reads = if distinct == 1 { rows } else { distinct * rows };
            println!(
                "{rows:>6} rows  {name:<46} {:>9.1} ms  ({row_reads} inner rows read, {:.1} ns each), server RSS +{:.0} MB",
                seconds * 1e3,
                seconds * 1e9 / row_reads as f64,
                growth as f64 / 1e6
            );
            figures.insert(
                format!("{rows} rows, {name}"),
                json!({"ms": seconds * 1e3, "inner_rows_read": row_reads, "rss_growth_mb": growth as f64 / 1e6}),
            );
        }
    }
    Value::Object(figures)
}
