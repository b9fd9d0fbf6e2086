//! Concurrent writers: no lost rows, and a key taken by two writers at once is taken once.

use std::sync::Arc;

use serde_json::json;

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_lose_nothing_and_duplicates_lose_cleanly() {
    let server = Arc::new(TestServer::start().await);
    server
        .execute_sql("CREATE TABLE counters (id INT PRIMARY KEY, writer INT)")
        .await
        .expect_success();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for round in 0..25 {
                // A unique row per writer and round, and one contested key per round.
                let unique = 1000 + writer * 100 + round;
                server
                    .execute_sql(&format!("INSERT INTO counters VALUES ({unique}, {writer})"))
                    .await
                    .expect_success();
                let contested = server
                    .execute_sql(&format!("INSERT INTO counters VALUES ({round}, {writer})"))
                    .await;
                if contested.is_success() {
                    won += 1;
                } else {
                    contested.expect_error(409, "DUPLICATE_KEY");
                }
            }
            won
        }));
    }
    let mut total_won = 0;
    for task in tasks {
        total_won += task.await.unwrap();
    }
    assert_eq!(total_won, 25, "each contested key is inserted exactly once");
    let counts = server
        .execute_sql("SELECT count(*), count(DISTINCT id) FROM counters")
        .await;
    assert_eq!(counts.rows(), vec![vec![json!(125), json!(125)]]);
}
