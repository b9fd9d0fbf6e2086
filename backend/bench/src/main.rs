//! `kalamdb-bench`: starts a KalamDB server (the same start-up code as the binary) on a
//! temporary data directory and measures it over HTTP on loopback.
//!
//! Run it in release: `cargo run --release -p kalamdb-bench -- --help`.

use std::time::{Duration, Instant};

use clap::Parser;
use kalamdb_server::{Settings, start};
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
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn sql(&self, sql: String) -> Value {
        let response = self
            .http
            .post(&self.url)
            .basic_auth("root", Some(""))
            .body(sql)
            .send()
            .await
            .expect("server answers");
        let body: Value = response.json().await.expect("JSON answer");
        assert_eq!(body["status"], "success", "{body}");
        body
    }
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    let server = start(&settings).await.expect("server starts");
    let url = format!("http://{}/sql", server.local_addr());
    let client = || Client {
        http: reqwest::Client::new(),
        url: url.clone(),
    };
    let setup = client();
    setup
        .sql("CREATE NAMESPACE bench; CREATE USER TABLE bench.events (id BIGINT PRIMARY KEY, user_name TEXT, kind INT, payload TEXT); CREATE USER TABLE bench.single (id BIGINT PRIMARY KEY, v TEXT)".into())
        .await;

    // 1. Batched ingest: `clients` tasks, each sending `batches_per_client` INSERTs.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = client();
        let (batches, rows) = (args.batches_per_client, args.batch_rows);
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
                    .sql(format!("INSERT INTO bench.events VALUES {}", values.join(",")))
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("ingest task");
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let total_rows = args.clients * args.batches_per_client * args.batch_rows;
    let rows_per_s = total_rows as f64 / ingest_s;
    println!(
        "batched ingest               {rows_per_s:.0} rows/s   ({total_rows} rows in {ingest_s:.2} s, {} clients x {}-row INSERTs)",
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

    let summary = json!({
        "batched_ingest": {"rows_per_s": rows_per_s, "rows": total_rows, "clients": args.clients, "batch_rows": args.batch_rows},
        "single_row_insert": insert,
        "point_select_by_pk": select,
    });
    println!("{}", serde_json::to_string(&summary).expect("JSON"));
    server.shutdown().await;
}
