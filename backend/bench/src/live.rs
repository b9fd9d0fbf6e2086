//! Live queries over `/ws`: change delivery latency (INSERT reply → change
//! received) with 1,000 and with 10,000 subscriptions open, fan-out of one SHARED
//! insert to 1,000 subscriptions (time until the last one has it), and what
//! 10,000 idle subscriptions cost: server RSS and single-row INSERT latency. The
//! server is a child process: its RSS is its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Args, Client, ServerProcess, report_latency};

/// Arrival times of changes (row id, when), shared by the socket reader tasks.
#[derive(Default)]
struct Arrivals(std::sync::Mutex<Vec<(String, Instant)>>);

impl Arrivals {
    fn push(&self, key: String) {
        self.0.lock().expect("not poisoned").push((key, Instant::now()));
    }

    fn take(&self) -> Vec<(String, Instant)> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

/// Users the subscriptions belong to (the per-user limit is 1,000).
const USERS: usize = 21;

/// The `Authorization` header of `user` (password `pw`).
pub(crate) fn basic(user: &str) -> String {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
    format!("Basic {credentials}")
}

/// Opens a socket as `user`, subscribes `sqls` (one subscription each, ids `s0..`),
/// waits for their initial data, then drains the socket in a task that records
/// each change's `id` with its arrival time.
async fn open(ws_url: &str, user: &str, sqls: &[String], arrivals: Arc<Arrivals>) {
    let mut request = ws_url.into_client_request().expect("a ws url");
    request
        .headers_mut()
        .insert("authorization", basic(user).parse().expect("a header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connects");
    for (i, sql) in sqls.iter().enumerate() {
        let subscribe = json!({"type": "subscribe", "id": format!("s{i}"), "sql": sql});
        ws.send(Message::Text(subscribe.to_string().into()))
            .await
            .expect("sent");
    }
    let mut loaded = 0;
    while loaded < sqls.len() {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("the socket ended while subscribing");
        };
        let message: Value = serde_json::from_str(text.as_str()).expect("JSON");
        match message["type"].as_str() {
            Some("initial_data") if message["has_more"] == false => loaded += 1,
            Some("error") => panic!("{message}"),
            _ => {}
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message {
                let message: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if message["type"] == "change" {
                    for row in message["rows"].as_array().into_iter().flatten() {
                        arrivals.push(row["id"].to_string());
                    }
                }
            }
        }
    });
}

async fn insert_latency(client: &Client, samples: usize, first_id: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        client
            .sql_as(
                "u0",
                "pw",
                format!("INSERT INTO bench.chat VALUES ({}, 1, 'x')", first_id + i),
            )
            .await;
        times.push(started.elapsed());
    }
    times
}

/// INSERTs as `u0` into room 1 (which one subscription of u0 listens to): the time
/// from each reply to the change's arrival (zero when it came first), and from
/// sending the INSERT to the change's arrival.
async fn delivery(
    client: &Client,
    arrivals: &Arrivals,
    samples: usize,
    first_id: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut after_reply = Vec::with_capacity(samples);
    let mut after_send = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = first_id + i;
        let sent = Instant::now();
        client
            .sql_as(
                "u0",
                "pw",
                format!("INSERT INTO bench.chat VALUES ({id}, 1, 'x')"),
            )
            .await;
        let replied = Instant::now();
        let key = id.to_string();
        let deadline = replied + Duration::from_secs(10);
        let arrived = loop {
            if let Some((_, at)) = arrivals.take().into_iter().find(|(k, _)| *k == key) {
                break at;
            }
            assert!(Instant::now() < deadline, "change {id} never arrived");
            tokio::task::yield_now().await;
        };
        after_reply.push(arrived.saturating_duration_since(replied));
        after_send.push(arrived - sent);
    }
    (after_reply, after_send)
}

/// Reports both delivery figures; the JSON has the one from the reply (the target's
/// definition) with the one from sending beside it.
fn report_delivery(label: &str, (after_reply, after_send): (Vec<Duration>, Vec<Duration>)) -> Value {
    let from_send = report_latency(&format!("{label}, from send"), after_send);
    let mut figures = report_latency(label, after_reply);
    figures["from_send"] = from_send;
    figures
}

pub async fn live(args: &Args, server: &ServerProcess, client: &impl Fn() -> Client) -> Value {
    let client = client();
    let ws_url = client.url.replace("http://", "ws://").replace("/sql", "/ws");
    client
        .sql(
            "CREATE USER TABLE bench.chat (id BIGINT PRIMARY KEY, room INT, body TEXT); \
             CREATE SHARED TABLE bench.feed (id BIGINT PRIMARY KEY, v TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')"
                .into(),
        )
        .await;
    for u in 0..USERS {
        client
            .sql(format!("CREATE USER 'u{u}' WITH PASSWORD 'pw' ROLE user"))
            .await;
    }
    let samples = args.samples.min(2000);
    let mut next_id = 1_000_000;
    // Warm-up, then the INSERT latency with no subscription.
    insert_latency(&client, 200, next_id).await;
    next_id += 200;
    let baseline_insert = report_latency(
        "INSERT, no subscriptions",
        insert_latency(&client, samples, next_id).await,
    );
    next_id += samples;
    let rss_before = server.rss_bytes();

    // u0's own subscription (room 1), then 1,000 others: 10 sockets x 100 of u1.
    let arrivals = Arc::new(Arrivals::default());
    open(
        &ws_url,
        "u0",
        &["SELECT id FROM bench.chat WHERE room = 1".to_string()],
        arrivals.clone(),
    )
    .await;
    let idle_sqls: Vec<String> = (0..100)
        .map(|i| format!("SELECT * FROM bench.chat WHERE room = {i}"))
        .collect();
    let sink = Arc::new(Arrivals::default());
    for _ in 0..10 {
        open(&ws_url, "u1", &idle_sqls, sink.clone()).await;
    }
    let latency_1k = report_delivery(
        "delivery, 1,000 subs open",
        delivery(&client, &arrivals, samples, next_id).await,
    );
    next_id += samples;

    // 9,000 more: 90 sockets x 100, users u2..u10 (the per-user limit is 1,000).
    let started = Instant::now();
    for s in 0..90 {
        open(&ws_url, &format!("u{}", 2 + s / 10), &idle_sqls, sink.clone()).await;
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_10k = server.rss_bytes();
    println!(
        "10,000 idle subscriptions   opened in {:.1} s, server RSS +{:.1} MB",
        opened.as_secs_f64(),
        (rss_10k as f64 - rss_before as f64) / 1e6
    );
    let insert_10k = report_latency(
        "INSERT, 10,000 idle subs",
        insert_latency(&client, samples, next_id).await,
    );
    next_id += samples;
    let latency_10k = report_delivery(
        "delivery, 10,000 subs open",
        delivery(&client, &arrivals, samples, next_id).await,
    );
    assert!(sink.take().is_empty(), "idle subscriptions received changes");

    // Fan-out: 1,000 subscriptions of a SHARED table (100 sockets x 10, users
    // u11..u20); the time from sending one INSERT until the last has the change.
    let fan = Arc::new(Arrivals::default());
    let feed_sqls: Vec<String> = (0..10).map(|_| "SELECT * FROM bench.feed".to_string()).collect();
    for s in 0..100 {
        open(&ws_url, &format!("u{}", 11 + s / 10), &feed_sqls, fan.clone()).await;
    }
    let mut fanout = Vec::new();
    for i in 0..50 {
        let started = Instant::now();
        client
            .sql(format!("INSERT INTO bench.feed VALUES ({i}, 'news')"))
            .await;
        let key = i.to_string();
        let mut seen = 0;
        let mut last = started;
        let deadline = started + Duration::from_secs(30);
        while seen < 1000 {
            for (k, at) in fan.take() {
                assert_eq!(k, key, "a change of another insert");
                seen += 1;
                last = last.max(at);
            }
            assert!(Instant::now() < deadline, "fan-out {i}: {seen} of 1,000 arrived");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        fanout.push(last - started);
    }
    let fanout = report_latency("fan-out to 1,000 (last)", fanout);
    json!({
        "insert_no_subscriptions": baseline_insert,
        "insert_10k_idle_subscriptions": insert_10k,
        "delivery_1k_subscriptions": latency_1k,
        "delivery_10k_subscriptions": latency_10k,
        "idle_10k_rss_growth_mb": (rss_10k as f64 - rss_before as f64) / 1e6,
        "fanout_1k_last_ms": fanout,
    })
}
