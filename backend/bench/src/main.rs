//! `kalamdb-bench`: starts the `kalamdb-server` binary as a child process on a
//! temporary data directory and measures it over HTTP on loopback. The server's
//! memory is read from its own process, apart from the client's.
//!
//! Run it in release: `cargo build --release -p kalamdb-server -p kalamdb-bench &&
//! target/release/kalamdb-bench --help`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "KalamDB benchmarks over HTTP")]
struct Args {
    /// Rows per batched INSERT
    #[arg(long, default_value_t = 1000)]
    batch_rows: usize,
    /// Batched INSERT requests per client
    #[arg(long, default_value_t = 100)]
    batches_per_client: usize,
    /// Concurrent ingest clients
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Single-row INSERTs and point SELECTs to time
    #[arg(long, default_value_t = 5000)]
    samples: usize,
    /// Users owning the rows of the flush benchmark
    #[arg(long, default_value_t = 100)]
    flush_users: usize,
    /// Rows per user in the flush benchmark (default: 1M rows in all)
    #[arg(long, default_value_t = 10_000)]
    flush_rows_per_user: usize,
    /// `STORAGE FLUSH TABLE` replies to time (each job is killed right away)
    #[arg(long, default_value_t = 30)]
    flush_reply_samples: usize,
    /// Rows of one user's table for the GROUP BY over cold rows
    #[arg(long, default_value_t = 1_000_000)]
    cold_rows: usize,
    /// Skip the flush benchmarks
    #[arg(long)]
    skip_flush: bool,
    /// Only run the flush benchmarks (flush reply and drain, GROUP BY over cold rows,
    /// point SELECT of a cold row)
    #[arg(long)]
    only_flush: bool,
    /// A statement run before the flush benchmarks' tables are created, e.g.
    /// `CREATE STORAGE s3 TYPE s3 BUCKET 'b' ENDPOINT 'http://127.0.0.1:9000' ...`
    #[arg(long)]
    storage_sql: Option<String>,
    /// The storage of the flush benchmarks' tables (`WITH (STORAGE = '<name>')`)
    #[arg(long)]
    table_storage: Option<String>,
    /// Rows of the SHARED table for the GROUP BY over hot rows
    #[arg(long, default_value_t = 1_000_000)]
    shared_rows: usize,
    /// Rows of the wide SHARED table scanned by a selective filter (server memory)
    #[arg(long, default_value_t = 10_000_000)]
    filter_rows: usize,
    /// Rows of the table a runaway three-way cross join reads
    #[arg(long, default_value_t = 6_000)]
    cross_rows: usize,
    /// Skip the read benchmarks (SELECT 1, SHARED GROUP BY, filter memory, runaway query)
    #[arg(long)]
    skip_read: bool,
    /// Rows the slow UPDATE's WHERE counts (sets how long it runs)
    #[arg(long, default_value_t = 1_800_000_000)]
    slow_update_rows: u64,
    /// Clients of the mixed-load scenario
    #[arg(long, default_value_t = 64)]
    mixed_clients: usize,
    /// Duration of the mixed-load scenario, seconds
    #[arg(long, default_value_t = 300)]
    mixed_seconds: u64,
    /// Rows of each bulk load (`POST /ingest`, NDJSON and CSV)
    #[arg(long, default_value_t = 1_000_000)]
    bulk_rows: usize,
    /// Rows per bulk-load request
    #[arg(long, default_value_t = 100_000)]
    bulk_request_rows: usize,
    /// Only measure the server's RSS after ingesting `rss-rows` rows into a fresh server
    #[arg(long)]
    only_rss: bool,
    /// Rows ingested by `--only-rss`
    #[arg(long, default_value_t = 10_000_000)]
    rss_rows: usize,
    /// Skip the write-path scenarios (SHARED ingest, bulk load, INSERT during a slow UPDATE, mixed load)
    #[arg(long)]
    skip_write: bool,
    /// Only stream a large result in each output format (server RSS while streaming)
    #[arg(long)]
    only_formats: bool,
    /// Rows of the result streamed by `--only-formats`
    #[arg(long, default_value_t = 10_000_000)]
    format_rows: usize,
    /// The formats `--only-formats` measures (`json` is the envelope of a tenth of the rows)
    #[arg(long, value_delimiter = ',', default_value = "csv,ndjson,arrow,parquet,json")]
    formats: Vec<String>,
    /// Only time an indexed equality filter over `index-rows` hot rows of a SHARED table
    #[arg(long)]
    only_index: bool,
    /// Rows of `--only-index`
    #[arg(long, default_value_t = 1_000_000)]
    index_rows: usize,
    /// Only time correlated subqueries run as joins and row by row
    #[arg(long)]
    only_subqueries: bool,
    /// Rows of the larger table of `--only-subqueries` (the smaller has a third)
    #[arg(long, default_value_t = 3000)]
    subquery_rows: usize,
    /// Only measure live queries (delivery latency, fan-out, idle subscriptions)
    #[arg(long)]
    only_live: bool,
    /// Only run the resource-budget scenarios (each on a fresh server): decoded
    /// ingest size, stalled readers, unread WebSocket frames, DELETE of flushed rows,
    /// subquery memory, INSERT ... SELECT rows, expensive live filters
    #[arg(long)]
    only_budgets: bool,
    /// Only measure compaction: a USER table of `compact-rows` rows after
    /// `compact-rounds` rounds of updating a tenth of it and flushing
    #[arg(long)]
    only_compaction: bool,
    /// Rows of `--only-compaction`
    #[arg(long, default_value_t = 1_000_000)]
    compact_rows: usize,
    /// Update-and-flush rounds of `--only-compaction`
    #[arg(long, default_value_t = 50)]
    compact_rounds: usize,
    /// Only measure transactions: 3-statement transfers by `transfer-clients`
    /// concurrent clients over `transfer-accounts` SHARED rows for `transfer-seconds`
    #[arg(long)]
    only_transactions: bool,
    #[arg(long, default_value_t = 8)]
    transfer_clients: usize,
    #[arg(long, default_value_t = 10_000)]
    transfer_accounts: u64,
    #[arg(long, default_value_t = 20)]
    transfer_seconds: u64,
    /// The server binary (default: `kalamdb-server` next to this binary)
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// The server binary: `--server-bin`, or `kalamdb-server` next to this binary.
fn server_binary(args: &Args) -> PathBuf {
    args.server_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("this binary's path")
            .with_file_name("kalamdb-server")
    })
}

/// The server under test, in its own process.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn spawn(binary: &std::path::Path, data_dir: &std::path::Path) -> ServerProcess {
        ServerProcess::spawn_with(binary, data_dir, &[])
    }

    /// Like `spawn`, with more server flags (e.g. `["--statement-timeout-ms", "3000"]`).
    fn spawn_with(binary: &std::path::Path, data_dir: &std::path::Path, flags: &[&str]) -> ServerProcess {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the server's first line");
        let address = line
            .trim()
            .strip_prefix("KalamDB listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        ServerProcess {
            url: format!("{address}/sql"),
            child,
        }
    }

    /// Resident set size of the server process, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server process is alive");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS in /proc/<pid>/status");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in kB");
        kb * 1024
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn sql(&self, sql: String) -> Value {
        self.sql_as("root", "", sql).await
    }

    async fn sql_as(&self, user: &str, password: &str, sql: String) -> Value {
        let body = self.answer_as(user, password, sql).await.expect("a JSON answer");
        assert_eq!(body["status"], "success", "{body}");
        body
    }

    /// The JSON answer to a statement, whatever its status.
    async fn answer_as(&self, user: &str, password: &str, sql: String) -> Result<Value, reqwest::Error> {
        self.http
            .post(&self.url)
            .basic_auth(user, Some(password))
            .body(sql)
            .send()
            .await?
            .json()
            .await
    }

    /// The HTTP status and body of a statement that may fail; status 0 when no
    /// answer came within `timeout` (the request is then abandoned).
    async fn sql_answer(&self, sql: String, timeout: Duration) -> (u16, Value) {
        let response = self
            .http
            .post(&self.url)
            .basic_auth("root", Some(""))
            .body(sql)
            .timeout(timeout)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.json().await {
                    Ok(body) => (status, body),
                    Err(_) => (0, Value::Null),
                }
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// `POST /ingest/<ns>/<table>` of an NDJSON body as root; panics unless it loads.
    async fn ingest_ndjson(&self, namespace: &str, table: &str, body: String) {
        let response = self
            .http
            .post(self.url.replace("/sql", &format!("/ingest/{namespace}/{table}")))
            .basic_auth("root", Some(""))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200);
    }

    /// Polls `system.jobs` until the job finished; returns its row as
    /// `[status, rows_flushed, duration_ms, bytes_written, files_written]`.
    async fn wait_job(&self, job_id: &str) -> Vec<Value> {
        loop {
            let body = self
                .sql(format!(
                    "SELECT status, rows_flushed, duration_ms, bytes_written, files_written \
                     FROM system.jobs WHERE job_id = '{job_id}'"
                ))
                .await;
            let row = body["results"][0]["rows"][0]
                .as_array()
                .cloned()
                .expect("job row");
            if matches!(row[0].as_str(), Some("completed" | "failed" | "cancelled")) {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// INSERTs `rows` rows `(id, kind, payload)` into `table` as `user`, 1000 per statement.
async fn fill(client: &Client, user: &str, table: &str, first_id: usize, rows: usize) {
    let mut start = 0;
    while start < rows {
        let end = (start + 1000).min(rows);
        let values: Vec<String> = (start..end)
            .map(|i| {
                let id = first_id + i;
                format!("({id}, {}, 'payload of row {id} for {user}')", id % 10)
            })
            .collect();
        client
            .sql_as(
                user,
                "pw",
                format!("INSERT INTO {table} VALUES {}", values.join(",")),
            )
            .await;
        start = end;
    }
}

/// INSERTs rows `first..first + rows` (each written by `row`) into `table` as root,
/// 1000 per statement, from 4 concurrent clients.
async fn fill_as_root(client: &impl Fn() -> Client, table: &str, rows: usize, row: fn(usize) -> String) {
    let per_task = rows.div_ceil(4);
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (c, table) = (client(), table.to_string());
        let first = worker * per_task;
        let end = (first + per_task).min(rows);
        tasks.push(tokio::spawn(async move {
            let mut start = first;
            while start < end {
                let stop = (start + 1000).min(end);
                let values: Vec<String> = (start..stop).map(row).collect();
                c.sql(format!("INSERT INTO {table} VALUES {}", values.join(",")))
                    .await;
                start = stop;
            }
        }));
    }
    for task in tasks {
        task.await.expect("fill task");
    }
}

/// Samples the server's RSS every 10 ms while `work` runs; returns its output and
/// the peak growth over the RSS before it.
async fn with_peak_rss<T>(server: &ServerProcess, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = server.rss_bytes();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let pid = server.child.id();
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(rss) = proc_rss(pid) {
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let output = work.await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.expect("sampler");
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    (output, growth)
}

fn proc_rss(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Read benchmarks: `SELECT 1`, a GROUP BY over a hot SHARED table, the server's
/// memory during a selective filter over a wide table, and a runaway query.
async fn read_benchmarks(args: &Args, server: &ServerProcess, client: impl Fn() -> Client) -> Value {
    let setup = client();
    let mut select_one = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let t = Instant::now();
        setup.sql("SELECT 1".into()).await;
        select_one.push(t.elapsed());
    }
    let select_one = report_latency("SELECT 1", select_one);
    // The floor under every statement: one HTTP exchange with the smallest handler.
    let health_url = setup.url.replace("/sql", "/health");
    let mut health = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let t = Instant::now();
        let response = setup.http.get(&health_url).send().await.expect("health answer");
        response.bytes().await.expect("health body");
        health.push(t.elapsed());
    }
    let health = report_latency("GET /health (HTTP floor)", health);

    setup
        .sql("CREATE SHARED TABLE bench.shared (id BIGINT PRIMARY KEY, kind INT, payload TEXT)".into())
        .await;
    let t = Instant::now();
    fill_as_root(&client, "bench.shared", args.shared_rows, |id| {
        format!("({id}, {}, 'payload of shared row {id}')", id % 10)
    })
    .await;
    println!(
        "shared table setup           {} rows in {:.1} s",
        args.shared_rows,
        t.elapsed().as_secs_f64()
    );
    let mut group_by = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let body = setup
            .sql("SELECT kind, count(*), sum(id), max(length(payload)) FROM bench.shared GROUP BY kind ORDER BY kind".into())
            .await;
        group_by.push(t.elapsed());
        assert_eq!(body["results"][0]["row_count"], 10);
        assert_eq!(
            body["results"][0]["rows"][0][1].as_u64(),
            Some(args.shared_rows.div_ceil(10) as u64)
        );
    }
    let shared_group_by = report_latency("GROUP BY over hot SHARED", group_by);
    // A primary-key range of 1,000 rows out of the hot SHARED table.
    let mut pk_range = Vec::new();
    let span = args.shared_rows.saturating_sub(1000).max(1);
    for i in 0..args.samples.min(500) {
        let low = (i * 7919) % span;
        let t = Instant::now();
        let body = setup
            .sql(format!(
                "SELECT count(*), sum(kind) FROM bench.shared WHERE id BETWEEN {low} AND {}",
                low + 999
            ))
            .await;
        pk_range.push(t.elapsed());
        assert_eq!(
            body["results"][0]["rows"][0][0].as_u64(),
            Some(1000.min(args.shared_rows) as u64)
        );
    }
    let pk_range = report_latency("pk range of 1,000 hot SHARED rows", pk_range);

    // A selective filter over a wide table: the server's memory must not follow
    // the table's size.
    setup
        .sql("CREATE SHARED TABLE bench.wide (id BIGINT PRIMARY KEY, k BIGINT, pad TEXT)".into())
        .await;
    let t = Instant::now();
    fill_as_root(&client, "bench.wide", args.filter_rows, |id| {
        format!("({id}, {}, '{:0>200}')", id % 100_000, id)
    })
    .await;
    println!(
        "wide table setup             {} rows of ~220 bytes in {:.1} s",
        args.filter_rows,
        t.elapsed().as_secs_f64()
    );
    let mut filter_growth = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let (body, growth) = with_peak_rss(
            server,
            setup.sql("SELECT id, pad FROM bench.wide WHERE k = 7".into()),
        )
        .await;
        let elapsed = t.elapsed();
        assert_eq!(
            body["results"][0]["row_count"].as_u64(),
            Some(args.filter_rows.div_ceil(100_000) as u64)
        );
        println!(
            "selective filter             {:.1} MB server RSS growth, {:.0} ms ({} rows scanned)",
            growth as f64 / 1e6,
            elapsed.as_secs_f64() * 1000.0,
            args.filter_rows
        );
        filter_growth.push(json!({"rss_growth_bytes": growth, "ms": elapsed.as_secs_f64() * 1000.0}));
    }

    // A runaway query: a three-way cross join of `cross_rows` rows.
    setup
        .sql("CREATE SHARED TABLE bench.cross (id BIGINT PRIMARY KEY, v TEXT)".into())
        .await;
    fill_as_root(&client, "bench.cross", args.cross_rows, |id| {
        format!("({id}, 'v{id}')")
    })
    .await;
    let rss_before = server.rss_bytes();
    let t = Instant::now();
    let ((status, body), growth) = with_peak_rss(
        server,
        setup.sql_answer(
            "SELECT * FROM bench.cross a, bench.cross b, bench.cross c".into(),
            Duration::from_secs(15),
        ),
    )
    .await;
    let elapsed = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_bytes();
    println!(
        "runaway cross join           HTTP {status} {} after {:.1} s, server RSS growth {:.1} MB, {:.1} MB above the start 2 s later",
        body["error"]["code"],
        elapsed.as_secs_f64(),
        growth as f64 / 1e6,
        (rss_after as f64 - rss_before as f64) / 1e6
    );
    json!({
        "select_1": select_one,
        "health": health,
        "shared_group_by_rows": args.shared_rows,
        "shared_group_by": shared_group_by,
        "pk_range_1000": pk_range,
        "filter_rows": args.filter_rows,
        "filter": filter_growth,
        "runaway": {"status": status, "code": body["error"]["code"], "seconds": elapsed.as_secs_f64(),
                    "rss_growth_bytes": growth, "rss_after_minus_before_bytes": rss_after as i64 - rss_before as i64},
    })
}

/// Flush benchmarks: reply latency with a large hot table, drain rate and memory of
/// a full flush, and a GROUP BY over cold rows.
async fn flush_benchmarks(args: &Args, server: &ServerProcess, client: impl Fn() -> Client) -> Value {
    let setup = client();
    if let Some(sql) = &args.storage_sql {
        let body = setup.sql(sql.clone()).await;
        assert_eq!(body["status"], "success", "{body}");
    }
    let with = match &args.table_storage {
        Some(name) => format!("WITH (STORAGE = '{name}')"),
        None => String::new(),
    };
    let body = setup
        .sql(format!(
            "CREATE USER TABLE bench.fl (id BIGINT PRIMARY KEY, kind INT, payload TEXT) {with}; \
              CREATE USER TABLE bench.agg (id BIGINT PRIMARY KEY, kind INT, payload TEXT) {with}"
        ))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    for u in 0..args.flush_users {
        setup
            .sql(format!("CREATE USER 'u{u}' WITH PASSWORD 'pw' ROLE user"))
            .await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let c = client();
        let (users, per_user) = (args.flush_users, args.flush_rows_per_user);
        tasks.push(tokio::spawn(async move {
            for u in (worker..users).step_by(4) {
                fill(&c, &format!("u{u}"), "bench.fl", 0, per_user).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("fill task");
    }
    let hot_rows = args.flush_users * args.flush_rows_per_user;
    println!(
        "flush setup                  {hot_rows} hot rows over {} users in {:.1} s",
        args.flush_users,
        started.elapsed().as_secs_f64()
    );

    // Reply latency of STORAGE FLUSH TABLE with the table hot; each job is killed at
    // once (at its first batch boundary), so the table stays (nearly) all hot.
    let mut replies = Vec::new();
    for _ in 0..args.flush_reply_samples {
        let t = Instant::now();
        let body = setup.sql("STORAGE FLUSH TABLE bench.fl".into()).await;
        replies.push(t.elapsed());
        let job_id = body["results"][0]["rows"][0][0]
            .as_str()
            .expect("job id")
            .to_string();
        setup.sql(format!("KILL JOB '{job_id}'")).await;
        setup.wait_job(&job_id).await;
    }
    let reply = report_latency("STORAGE FLUSH TABLE reply", replies);

    // A full flush: drain rate and the server's memory growth (its RSS sampled every
    // 20 ms).
    let rss_before = server.rss_bytes();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let pid = server.child.id();
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(rss) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|v| v.parse::<u64>().ok())
                    })
                {
                    peak.fetch_max(rss * 1024, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let body = setup.sql("STORAGE FLUSH TABLE bench.fl".into()).await;
    let job_id = body["results"][0]["rows"][0][0]
        .as_str()
        .expect("job id")
        .to_string();
    let job = setup.wait_job(&job_id).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.expect("sampler");
    assert_eq!(job[0], "completed", "{job:?}");
    let rows_flushed = job[1].as_u64().expect("rows_flushed of a completed job");
    assert_eq!(rows_flushed as usize, hot_rows, "the flush moved every hot row");
    let duration_ms = job[2].as_u64().expect("duration_ms of a completed job");
    // A flush shorter than the clock's millisecond is reported as 1 ms (a lower bound
    // on the rate, never an inflated one).
    let duration_ms = duration_ms.max(1);
    let drain = rows_flushed as f64 / (duration_ms as f64 / 1000.0);
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(rss_before);
    println!(
        "flush drain                  {drain:.0} rows/s   ({rows_flushed} rows, {} files, {:.1} MB Parquet in {duration_ms} ms)",
        job[4],
        job[3].as_f64().expect("bytes_written") / 1e6
    );
    println!(
        "flush memory (server)        RSS {:.1} MB before, peak growth {:.1} MB during the flush",
        rss_before as f64 / 1e6,
        growth as f64 / 1e6
    );

    // GROUP BY over one user's cold rows.
    setup
        .sql("CREATE USER 'agg' WITH PASSWORD 'pw' ROLE user".into())
        .await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    let per_task = args.cold_rows.div_ceil(4);
    for worker in 0..4 {
        let c = client();
        let first = worker * per_task;
        let rows = per_task.min(args.cold_rows.saturating_sub(first));
        tasks.push(tokio::spawn(async move {
            fill(&c, "agg", "bench.agg", first, rows).await
        }));
    }
    for task in tasks {
        task.await.expect("fill task");
    }
    let body = setup.sql("STORAGE FLUSH TABLE bench.agg".into()).await;
    let job_id = body["results"][0]["rows"][0][0]
        .as_str()
        .expect("job id")
        .to_string();
    let agg_job = setup.wait_job(&job_id).await;
    assert_eq!(agg_job[0], "completed", "the cold table was flushed: {agg_job:?}");
    assert_eq!(
        agg_job[1].as_u64(),
        Some(args.cold_rows as u64),
        "every row of the GROUP BY table is cold"
    );
    println!(
        "cold table setup             {} rows of one user inserted and flushed in {:.1} s ({} files)",
        agg_job[1],
        t.elapsed().as_secs_f64(),
        agg_job[4]
    );
    let mut group_by = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let body = setup
            .sql_as(
                "agg",
                "pw",
                "SELECT kind, count(*), sum(id), max(length(payload)) FROM bench.agg GROUP BY kind ORDER BY kind".into(),
            )
            .await;
        group_by.push(t.elapsed());
        assert_eq!(body["results"][0]["row_count"], 10);
    }
    let group_by = report_latency("GROUP BY over cold rows", group_by);
    let mut cold_point = Vec::with_capacity(args.samples);
    for i in 0..args.samples {
        let id = (i * 7919) % args.cold_rows;
        let t = Instant::now();
        let body = setup
            .sql_as(
                "agg",
                "pw",
                format!("SELECT id, kind, payload FROM bench.agg WHERE id = {id}"),
            )
            .await;
        cold_point.push(t.elapsed());
        assert_eq!(body["results"][0]["row_count"], 1);
    }
    let cold_point = report_latency("point SELECT of a cold row", cold_point);
    json!({
        "cold_point_select": cold_point,
        "hot_rows": hot_rows,
        "users": args.flush_users,
        "flush_reply": reply,
        "drain_rows_per_s": drain,
        "rows_flushed": rows_flushed,
        "flush_duration_ms": duration_ms,
        "rss_before_bytes": rss_before,
        "rss_peak_growth_bytes": growth,
        "group_by_cold_rows": args.cold_rows,
        "group_by": group_by,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn report_latency(name: &str, mut samples: Vec<Duration>) -> Value {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{name:<28} p50 {p50:.3} ms   p99 {p99:.3} ms   ({} samples)",
        samples.len()
    );
    json!({"p50_ms": p50, "p99_ms": p99, "samples": samples.len()})
}

mod budgets;
mod compaction;
mod formats;
mod indexes;
mod live;
mod subqueries;
mod transactions;
mod write_path;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let binary = server_binary(&args);
    if args.only_budgets {
        let figures = budgets::budgets(&binary).await;
        println!("{}", json!({ "budgets": figures }));
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::spawn(&binary, dir.path());
    let url = server.url.clone();
    let client = || Client {
        http: reqwest::Client::new(),
        url: url.clone(),
    };
    let setup = client();
    setup
        .sql("CREATE NAMESPACE bench; CREATE USER TABLE bench.events (id BIGINT PRIMARY KEY, user_name TEXT, kind INT, payload TEXT); CREATE USER TABLE bench.single (id BIGINT PRIMARY KEY, v TEXT)".into())
        .await;

    if args.only_formats {
        let figures = formats::streamed_formats(&args, &server, &client).await;
        println!("{}", json!({ "streamed_formats": figures }));
        return;
    }

    if args.only_flush {
        let figures = flush_benchmarks(&args, &server, client).await;
        println!("{}", json!({ "flush": figures }));
        return;
    }

    if args.only_transactions {
        let figures = transactions::transfers(
            &setup,
            &server.url,
            args.transfer_clients,
            args.transfer_accounts,
            args.transfer_seconds,
        )
        .await;
        println!("{}", json!({ "transactions": figures }));
        return;
    }

    if args.only_compaction {
        let figures = compaction::compaction(&args, &server, &client).await;
        println!("{}", json!({ "compaction": figures }));
        return;
    }

    if args.only_index {
        let figures = indexes::indexes(&args, &server, &client).await;
        println!("{}", json!({ "index": figures }));
        return;
    }

    if args.only_live {
        let figures = live::live(&args, &server, &client).await;
        println!("{}", json!({ "live": figures }));
        return;
    }

    if args.only_subqueries {
        let figures = subqueries::subqueries(&args, &server, &client).await;
        println!("{}", json!({ "subqueries": figures }));
        return;
    }

    if args.only_rss {
        let volume = write_path::rss_after_ingest(&args, &server, &client).await;
        println!("{}", json!({ "rss_after_ingest": volume }));
        return;
    }

    // 1. Batched ingest: `clients` tasks, each sending `batches_per_client` INSERTs.
    let rows_per_s = write_path::batched_ingest(
        &client,
        "bench.events",
        args.clients,
        args.batches_per_client,
        args.batch_rows,
    )
    .await;
    let total_rows = args.clients * args.batches_per_client * args.batch_rows;
    println!(
        "batched ingest               {rows_per_s:.0} rows/s   ({total_rows} rows, {} clients x {}-row INSERTs)",
        args.clients, args.batch_rows
    );

    // 2. Single-row INSERT latency, one client.
    let single = client();
    let mut insert_latency = Vec::with_capacity(args.samples);
    for i in 0..args.samples {
        let sql = format!("INSERT INTO bench.single VALUES ({i}, 'value {i}')");
        let t = Instant::now();
        single.sql(sql).await;
        insert_latency.push(t.elapsed());
    }
    let insert = report_latency("single-row INSERT", insert_latency);

    // 3. Point SELECT by primary key over the ingested table.
    let mut select_latency = Vec::with_capacity(args.samples);
    for i in 0..args.samples {
        let id = (i * 7919) % total_rows;
        let sql = format!("SELECT id, user_name, kind, payload FROM bench.events WHERE id = {id}");
        let t = Instant::now();
        let body = single.sql(sql).await;
        select_latency.push(t.elapsed());
        assert_eq!(body["results"][0]["row_count"], 1);
    }
    let select = report_latency("point SELECT by PK", select_latency);

    let read = if args.skip_read {
        Value::Null
    } else {
        read_benchmarks(&args, &server, client).await
    };
    let write = if args.skip_write {
        Value::Null
    } else {
        setup
            .sql("CREATE SHARED TABLE bench.shared_events (id BIGINT PRIMARY KEY, user_name TEXT, kind INT, payload TEXT)".into())
            .await;
        let shared = write_path::batched_ingest(
            &client,
            "bench.shared_events",
            args.clients,
            args.batches_per_client,
            args.batch_rows,
        )
        .await;
        println!("batched ingest, SHARED table {shared:.0} rows/s");
        let bulk = write_path::bulk_load(&args, &client).await;
        let during_update = write_path::insert_during_slow_update(&args, &client).await;
        let mixed = write_path::mixed_load(&args, &server, &client).await;
        json!({"shared_ingest_rows_per_s": shared, "bulk_load_rows_per_s": bulk, "insert_during_slow_update": during_update, "mixed": mixed})
    };
    let flush = if args.skip_flush {
        Value::Null
    } else {
        flush_benchmarks(&args, &server, client).await
    };

    let summary = json!({
        "batched_ingest": {"rows_per_s": rows_per_s, "rows": total_rows, "clients": args.clients, "batch_rows": args.batch_rows},
        "single_row_insert": insert,
        "point_select_by_pk": select,
        "read": read,
        "write": write,
        "flush": flush,
    });
    println!("{}", serde_json::to_string(&summary).expect("JSON"));
    drop(server);
}
