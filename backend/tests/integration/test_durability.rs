//! Acknowledged writes survive `kill -9` of the real `kalamdb-server` binary, and a
//! data directory of an older format opens with its rows.

use serde_json::json;

use crate::common::{ServerProcess, TestServer, test_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rows_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path());
    server
        .sql("CREATE NAMESPACE app; CREATE TABLE app.events (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .expect_success();
    let mut acknowledged = 0;
    for batch in 0..20 {
        let values: Vec<String> = (0..50)
            .map(|i| format!("({}, 'event {}')", batch * 50 + i, batch * 50 + i))
            .collect();
        server
            .sql(&format!("INSERT INTO app.events VALUES {}", values.join(", ")))
            .await
            .expect_success();
        acknowledged += 50;
    }
    server
        .sql("UPDATE app.events SET body = 'edited' WHERE id < 10")
        .await
        .expect_success();
    server
        .sql("DELETE FROM app.events WHERE id >= 990")
        .await
        .expect_success();
    server.kill_9();

    let server = ServerProcess::spawn(dir.path());
    let count = server
        .sql("SELECT count(*), count(DISTINCT id) FROM app.events")
        .await;
    assert_eq!(
        count.rows(),
        vec![vec![json!(acknowledged - 10), json!(acknowledged - 10)]]
    );
    let edited = server
        .sql("SELECT count(*) FROM app.events WHERE body = 'edited'")
        .await;
    assert_eq!(edited.rows(), vec![vec![json!(10)]]);
    // The catalog survived too, and the key index: a re-insert of a live key is a duplicate.
    server
        .sql("INSERT INTO app.events VALUES (5, 'dup')")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    server
        .sql("INSERT INTO app.events VALUES (995, 'back')")
        .await
        .expect_success();
    server.kill_9();
}

/// `fixtures/format-v1.tar.gz` is a data directory written by the format-version-1
/// server (commit 27231ac): alice's rows of the USER table `app.items` — four
/// flushed to a Parquet segment, then two more inserted, one flushed row updated
/// and one deleted — and the SHARED table `app.words` with TEXT keys and the index
/// `words_n`. Opened by this server, its pk index is moved to the ordered keys of
/// format version 2; rows, key checks, ranges and the index answer as before, and
/// again after a restart.
#[tokio::test]
async fn a_format_version_1_directory_opens_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/integration/fixtures/format-v1.tar.gz"
    );
    let unpacked = std::process::Command::new("tar")
        .args(["xzf", fixture, "-C"])
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(unpacked.success());
    let mut server = TestServer::start_with(test_settings(&dir.path().join("data"))).await;
    for round in 0..2 {
        let alice = |sql: &'static str| {
            let server = &server;
            async move { server.execute_sql_as("alice", "pw", sql).await }
        };
        let rows = alice("SELECT id, name FROM app.items ORDER BY id").await.rows();
        let mut expected = vec![
            json!([-300, "a"]),
            json!([0, "c2"]),
            json!([4, "d"]),
            json!([300, "e"]),
            json!([70000, "f"]),
        ];
        if round == 1 {
            expected[3] = json!([300, "e2"]);
        }
        let rows: Vec<serde_json::Value> = rows.into_iter().map(serde_json::Value::from).collect();
        assert_eq!(rows, expected, "round {round}");
        let ranged = alice("SELECT id FROM app.items WHERE id BETWEEN -5 AND 300 ORDER BY id")
            .await
            .rows();
        assert_eq!(ranged, vec![vec![json!(0)], vec![json!(4)], vec![json!(300)]]);
        let plan = alice("EXPLAIN SELECT id FROM app.items WHERE id BETWEEN -5 AND 300").await;
        assert!(format!("{:?}", plan.rows()).contains("hot=pk range"));
        // Point reads of a flushed row, an updated one and a deleted one.
        let points = alice("SELECT id, name FROM app.items WHERE id IN (4, 0, -3) ORDER BY id")
            .await
            .rows();
        assert_eq!(
            points,
            vec![vec![json!(0), json!("c2")], vec![json!(4), json!("d")]]
        );
        // The moved entries still guard the keys, hot and flushed.
        alice("INSERT INTO app.items VALUES (4, 'again', 0)")
            .await
            .expect_error(409, "DUPLICATE_KEY");
        alice("INSERT INTO app.items VALUES (70000, 'again', 0)")
            .await
            .expect_error(409, "DUPLICATE_KEY");
        let words = server
            .execute_sql("SELECT w FROM app.words WHERE w >= 'b' AND w < 'c'")
            .await
            .rows();
        assert_eq!(words, vec![vec![json!("b")], vec![json!("ba")]]);
        let indexed = server
            .execute_sql("SELECT w FROM app.words WHERE n = 4")
            .await
            .rows();
        assert_eq!(indexed, vec![vec![json!("ba")]]);
        if round == 0 {
            alice("UPDATE app.items SET name = 'e2' WHERE id = 300")
                .await
                .expect_success();
            server.restart().await;
        }
    }
}
