//! Write-path scenarios: batched ingest into a SHARED table, another user's INSERT
//! while a slow UPDATE runs, and a mixed load of many clients with flushing on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Args, Client, ServerProcess, report_latency};

/// `clients` tasks, each sending `batches` INSERTs of `rows` rows into `table`;
/// returns rows per second.
pub async fn batched_ingest(
    client: &impl Fn() -> Client,
    table: &str,
    clients: usize,
    batches: usize,
    rows: usize,
) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client();
        let table = table.to_string();
        tasks.push(tokio::spawn(async move {
            for b in 0..batches {
                let base = (c * batches + b) * rows;
                let values: Vec<String> = (0..rows)
                    .map(|i| {
                        format!(
                            "({}, 'user{}', {}, 'payload of event {}')",
                            base + i,
                            i % 100,
                            i % 7,
                            base + i
                        )
                    })
                    .collect();
                client
                    .sql(format!("INSERT INTO {table} VALUES {}", values.join(",")))
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("ingest task");
    }
    (clients * batches * rows) as f64 / started.elapsed().as_secs_f64()
}

/// A tiny deterministic generator (xorshift): the bench needs spread, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

impl Client {
    /// Whether the statement succeeded (any failure, HTTP or SQL, is `false`).
    async fn try_sql_as(&self, user: &str, password: &str, sql: String) -> bool {
        match self.answer_as(user, password, sql).await {
            Ok(body) => body["status"] == "success",
            Err(_) => false,
        }
    }
}

/// User `a` runs an UPDATE whose WHERE takes seconds (a count over
/// `slow_update_rows` generated rows); meanwhile user `b` sends single-row INSERTs
/// into the same USER table, one after another. Reports the UPDATE's duration and
/// the INSERTs' latencies while it ran.
pub async fn insert_during_slow_update(args: &Args, client: &impl Fn() -> Client) -> Value {
    let setup = client();
    setup
        .sql(
            "CREATE USER TABLE bench.notes (id BIGINT PRIMARY KEY, v BIGINT); \
             CREATE USER 'bench_a' WITH PASSWORD 'bench-a-pw' ROLE user; \
             CREATE USER 'bench_b' WITH PASSWORD 'bench-b-pw' ROLE user"
                .into(),
        )
        .await;
    setup
        .sql_as(
            "bench_a",
            "bench-a-pw",
            "INSERT INTO bench.notes VALUES (1, 0)".into(),
        )
        .await;
    let running = Arc::new(AtomicBool::new(true));
    let update = {
        let client = client();
        let running = running.clone();
        let rows = args.slow_update_rows;
        tokio::spawn(async move {
            let started = Instant::now();
            client
                .sql_as(
                    "bench_a",
                    "bench-a-pw",
                    format!(
                        "UPDATE bench.notes SET v = v + 1 WHERE v < (SELECT count(*) FROM generate_series(1, {rows}))"
                    ),
                )
                .await;
            running.store(false, Ordering::SeqCst);
            started.elapsed()
        })
    };
    // Let the UPDATE start reading before timing the other user's INSERTs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = client();
    let mut latencies = Vec::new();
    let mut id = 0;
    while running.load(Ordering::SeqCst) {
        id += 1;
        let started = Instant::now();
        other
            .sql_as(
                "bench_b",
                "bench-b-pw",
                format!("INSERT INTO bench.notes VALUES ({id}, {id})"),
            )
            .await;
        latencies.push(started.elapsed());
    }
    let update_s = update.await.expect("update task").as_secs_f64();
    println!("slow UPDATE                  {update_s:.2} s");
    let max_ms = latencies
        .iter()
        .max()
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    let report = if latencies.is_empty() {
        json!({"samples": 0})
    } else {
        report_latency("other user's INSERT meanwhile", latencies)
    };
    println!("  its slowest                {max_ms:.3} ms");
    json!({"update_s": update_s, "other_insert": report, "other_insert_max_ms": max_ms})
}

const MIXED_USERS: usize = 8;
const MIXED_PRELOAD: u64 = 10_000;

/// `mixed_clients` clients for `mixed_seconds`: 50 % point reads, 35 % single-row
/// INSERTs, 10 % UPDATEs by key, 5 % 1000-row INSERTs, into a USER table whose
/// flush policy (`rows:200000`) flushes it as the load runs. Server RSS is sampled
/// every second.
pub async fn mixed_load(args: &Args, server: &ServerProcess, client: &impl Fn() -> Client) -> Value {
    let setup = client();
    setup
        .sql("CREATE USER TABLE bench.mixed (id BIGINT PRIMARY KEY, v BIGINT, body TEXT) WITH (FLUSH_POLICY = 'rows:200000')".into())
        .await;
    for u in 0..MIXED_USERS {
        setup
            .sql(format!(
                "CREATE USER 'mixed{u}' WITH PASSWORD 'mixed-pw' ROLE user"
            ))
            .await;
        for chunk in 0..MIXED_PRELOAD / 1000 {
            let values: Vec<String> = (chunk * 1000..(chunk + 1) * 1000)
                .map(|id| format!("({id}, 0, 'preloaded row {id}')"))
                .collect();
            setup
                .sql_as(
                    &format!("mixed{u}"),
                    "mixed-pw",
                    format!("INSERT INTO bench.mixed VALUES {}", values.join(",")),
                )
                .await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.mixed_seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.mixed_clients {
        let client = client();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("mixed{}", c % MIXED_USERS);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
            let mut next_id = 1_000_000_000u64 * (c as u64 + 1);
            let mut samples: [Vec<Duration>; 4] = Default::default();
            while Instant::now() < deadline {
                let roll = rng.below(100);
                let (kind, sql) = match roll {
                    0..50 => (
                        0,
                        format!(
                            "SELECT id, v, body FROM bench.mixed WHERE id = {}",
                            rng.below(MIXED_PRELOAD)
                        ),
                    ),
                    50..85 => {
                        next_id += 1;
                        (
                            1,
                            format!("INSERT INTO bench.mixed VALUES ({next_id}, 1, 'row {next_id}')"),
                        )
                    }
                    85..95 => (
                        2,
                        format!(
                            "UPDATE bench.mixed SET v = v + 1 WHERE id = {}",
                            rng.below(MIXED_PRELOAD)
                        ),
                    ),
                    _ => {
                        let values: Vec<String> = (0..1000)
                            .map(|i| format!("({}, 2, 'batch row {i}')", next_id + 1 + i))
                            .collect();
                        next_id += 1000;
                        (3, format!("INSERT INTO bench.mixed VALUES {}", values.join(",")))
                    }
                };
                let started = Instant::now();
                if !client.try_sql_as(&user, "mixed-pw", sql).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                samples[kind].push(started.elapsed());
            }
            samples
        }));
    }
    let started = Instant::now();
    let mut rss = Vec::new();
    while Instant::now() < deadline {
        rss.push(server.rss_bytes());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut all: [Vec<Duration>; 4] = Default::default();
    for task in tasks {
        for (into, from) in all.iter_mut().zip(task.await.expect("mixed client")) {
            into.extend(from);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let operations: usize = all.iter().map(Vec::len).sum();
    let names = [
        "mixed: point SELECT",
        "mixed: single-row INSERT",
        "mixed: UPDATE by key",
        "mixed: 1000-row INSERT",
    ];
    let reports: Vec<Value> = names
        .iter()
        .zip(all)
        .map(|(name, samples)| report_latency(name, samples))
        .collect();
    let errors = errors.load(Ordering::Relaxed);
    let mb = |bytes: u64| bytes as f64 / 1e6;
    // RSS at each tenth of the run: a plateau shows as flat late figures.
    let tenths: Vec<f64> = (1..=10)
        .map(|t| mb(rss[(rss.len() * t / 10).saturating_sub(1).min(rss.len() - 1)]))
        .collect();
    let flushes = setup
        .sql("SELECT count(*) FROM system.jobs WHERE table_name = 'mixed' AND status = 'completed'".into())
        .await["results"][0]["rows"][0][0]
        .clone();
    println!(
        "mixed load                   {:.0} ops/s ({operations} ops, {} clients, {elapsed:.0} s), {errors} errors, {flushes} flushes",
        operations as f64 / elapsed,
        args.mixed_clients
    );
    println!("  server RSS by tenth of the run (MB): {tenths:.0?}");
    json!({
        "clients": args.mixed_clients,
        "seconds": elapsed,
        "operations": operations,
        "ops_per_s": operations as f64 / elapsed,
        "errors": errors,
        "flushes_completed": flushes,
        "point_select": reports[0],
        "single_insert": reports[1],
        "update": reports[2],
        "batch_insert": reports[3],
        "rss_mb_by_tenth": tenths,
    })
}

/// Bulk load over `POST /ingest`: `bulk_rows` rows into a SHARED table, NDJSON then
/// CSV, in requests of `bulk_request_rows` rows sent by two clients at once. `null`
/// when the server has no `/ingest` (an older build).
pub async fn bulk_load(args: &Args, client: &impl Fn() -> Client) -> Value {
    let setup = client();
    // An older server has no /ingest: it answers 404 before reading a body.
    let probe = setup
        .http
        .post(setup.url.replace("/sql", "/ingest/bench/none"))
        .basic_auth("root", Some(""))
        .header("content-type", "application/x-ndjson")
        .send()
        .await
        .expect("server answers");
    let probe: Value = probe.json().await.unwrap_or(Value::Null);
    if probe["error"]["code"] != "TABLE_NOT_FOUND" {
        println!("bulk load                    (no /ingest on this server)");
        return Value::Null;
    }
    setup
        .sql("CREATE SHARED TABLE bench.bulk_ndjson (id BIGINT PRIMARY KEY, user_name TEXT, kind INT, payload TEXT); \
              CREATE SHARED TABLE bench.bulk_csv (id BIGINT PRIMARY KEY, user_name TEXT, kind INT, payload TEXT)".into())
        .await;
    let mut figures = serde_json::Map::new();
    for (format, content_type, table) in [
        ("ndjson", "application/x-ndjson", "bench/bulk_ndjson"),
        ("csv", "text/csv", "bench/bulk_csv"),
    ] {
        let requests = args.bulk_rows.div_ceil(args.bulk_request_rows);
        let bodies: Vec<Vec<u8>> = (0..requests)
            .map(|r| {
                let first = r * args.bulk_request_rows;
                let last = (first + args.bulk_request_rows).min(args.bulk_rows);
                let mut body = String::new();
                if format == "csv" {
                    body.push_str("id,user_name,kind,payload\n");
                }
                for id in first..last {
                    let (user, kind) = (id % 100, id % 7);
                    if format == "csv" {
                        body.push_str(&format!("{id},user{user},{kind},payload of event {id}\n"));
                    } else {
                        body.push_str(&format!(
                            "{{\"id\":{id},\"user_name\":\"user{user}\",\"kind\":{kind},\"payload\":\"payload of event {id}\"}}\n"
                        ));
                    }
                }
                body.into_bytes()
            })
            .collect();
        let bodies = Arc::new(std::sync::Mutex::new(bodies));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let client = client();
            let bodies = bodies.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(body) = bodies.lock().expect("bodies").pop() else {
                        return;
                    };
                    let response = client
                        .http
                        .post(client.url.replace("/sql", &format!("/ingest/{table}")))
                        .basic_auth("root", Some(""))
                        .header("content-type", content_type)
                        .body(body)
                        .send()
                        .await
                        .expect("server answers");
                    let answer: Value = response.json().await.expect("JSON answer");
                    assert_eq!(answer["status"], "success", "{answer}");
                }
            }));
        }
        for task in tasks {
            task.await.expect("bulk load task");
        }
        let rows_per_s = args.bulk_rows as f64 / started.elapsed().as_secs_f64();
        println!(
            "bulk load, {format:<6}            {rows_per_s:.0} rows/s   ({} rows, {}-row requests, 2 clients)",
            args.bulk_rows, args.bulk_request_rows
        );
        figures.insert(format.to_string(), json!(rows_per_s));
    }
    Value::Object(figures)
}

/// Server RSS after `rss_rows` rows went in by 1000-row INSERTs (4 clients, one
/// USER table, no flush), and after one flush of them: the memory a long ingest
/// leaves behind.
pub async fn rss_after_ingest(args: &Args, server: &ServerProcess, client: &impl Fn() -> Client) -> Value {
    client()
        .sql(
            "CREATE USER TABLE bench.volume (id BIGINT PRIMARY KEY, user_name TEXT, kind INT, payload TEXT)"
                .into(),
        )
        .await;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let before = mb(server.rss_bytes());
    let batches = args.rss_rows.div_ceil(4 * 1000);
    let rows_per_s = batched_ingest(client, "bench.volume", 4, batches, 1000).await;
    let after_ingest = mb(server.rss_bytes());
    let job = client().sql("STORAGE FLUSH TABLE bench.volume".into()).await["results"][0]["rows"][0][0]
        .as_str()
        .expect("job id")
        .to_string();
    let row = client().wait_job(&job).await;
    assert_eq!(row[0], "completed", "{row:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_flush = mb(server.rss_bytes());
    println!(
        "server RSS, {} rows ingested  {before:.0} MB before, {after_ingest:.0} MB after ({rows_per_s:.0} rows/s), {after_flush:.0} MB after flushing them",
        4 * batches * 1000
    );
    json!({"rows": 4 * batches * 1000, "rss_mb_before": before, "rss_mb_after_ingest": after_ingest, "rss_mb_after_flush": after_flush, "ingest_rows_per_s": rows_per_s})
}
