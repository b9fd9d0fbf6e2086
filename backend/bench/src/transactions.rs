//! Transactions: a 3-statement transfer (`BEGIN; UPDATE ...; UPDATE ...; INSERT
//! INTO log ...; COMMIT`) sent by `clients` concurrent clients over a SHARED table of
//! `accounts` rows for `seconds` seconds: committed transfers per second, conflicts
//! (SERIALIZATION_FAILURE, retried), and the latency of a committed transfer. The
//! server is a child process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Client, report_latency};

pub async fn transfers(client: &Client, url: &str, clients: usize, accounts: u64, seconds: u64) -> Value {
    let values: Vec<String> = (1..=accounts).map(|i| format!("({i}, 1000)")).collect();
    client
        .sql(format!(
            "CREATE SHARED TABLE bench.accounts (id BIGINT PRIMARY KEY, bal BIGINT NOT NULL); \
             CREATE SHARED TABLE bench.transfers (id TEXT PRIMARY KEY, amount BIGINT); \
             INSERT INTO bench.accounts VALUES {}",
            values.join(", ")
        ))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for n in 0..clients {
        let (stop, conflicts) = (stop.clone(), conflicts.clone());
        let http = reqwest::Client::new();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut state = (n as u64 + 1) * 0x9E37_79B9_7F4A_7C15;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = (1 + next() % accounts, 1 + next() % accounts);
                let amount = 1 + next() % 10;
                let sql = format!(
                    "BEGIN; UPDATE bench.accounts SET bal = bal - {amount} WHERE id = {from}; \
                     UPDATE bench.accounts SET bal = bal + {amount} WHERE id = {to}; \
                     INSERT INTO bench.transfers VALUES ('{n}-{i}', {amount}); COMMIT"
                );
                i += 1;
                let started = Instant::now();
                loop {
                    let response = http
                        .post(&url)
                        .basic_auth("root", Some(""))
                        .body(sql.clone())
                        .send()
                        .await
                        .expect("answered");
                    let body: Value = response.json().await.expect("a JSON answer");
                    if body["status"] == "success" {
                        break;
                    }
                    assert_eq!(body["error"]["code"], "SERIALIZATION_FAILURE", "{body}");
                    conflicts.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let committed = latencies.len();
    let total = client.sql("SELECT sum(bal) FROM bench.accounts".into()).await;
    assert_eq!(
        total["results"][0]["rows"][0][0],
        json!(1000 * accounts),
        "the total moved"
    );
    let per_second = committed as f64 / elapsed;
    let conflicts = conflicts.load(Ordering::Relaxed);
    println!(
        "transfers: {clients} clients, {accounts} accounts: {per_second:.0} committed/s, {conflicts} conflicts retried"
    );
    let latency = report_latency("committed transfer", latencies);
    json!({
        "clients": clients,
        "accounts": accounts,
        "committed": committed,
        "per_second": per_second,
        "conflicts_retried": conflicts,
        "latency_ms": latency,
    })
}
