//! Acknowledged writes survive `kill -9` of the real `kalamdb-server` binary.

use serde_json::json;

use crate::common::ServerProcess;

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
