//! The write path without a global lock: a statement's query work blocks no other
//! writer, a row changed under a statement is re-read (no lost update), keys stay
//! unique and `_seq` grows in commit order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::{SqlResponse, TestServer};

/// Runs `work`, failing the test if it does not finish within 20 s: a statement
/// that waits for another one's lock would hang here.
async fn must_finish<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for a statement that is still reading"))
}

/// Runs `sql` as `user` (password `<user>-pw`) in its own task.
fn spawn_as(
    server: &Arc<TestServer>,
    user: &'static str,
    sql: &'static str,
) -> tokio::task::JoinHandle<SqlResponse> {
    let server = server.clone();
    tokio::spawn(async move { server.execute_sql_as(user, &format!("{user}-pw"), sql).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_about_to_commit_blocks_no_other_writer_or_flush() {
    let server = Arc::new(TestServer::start().await);
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, v INT); \
             CREATE SHARED TABLE app.config (k TEXT PRIMARY KEY, v INT)",
        )
        .await
        .expect_success();
    server.create_user("alice", "alice-pw", "user").await;
    server.create_user("bob", "bob-pw", "user").await;
    for user in ["alice", "bob"] {
        server
            .execute_sql_as(
                user,
                &format!("{user}-pw"),
                "INSERT INTO app.notes VALUES (1, 1), (2, 2), (3, 3)",
            )
            .await
            .expect_success();
    }

    // alice's UPDATE has read its rows and waits before its commit.
    server.db().holds().hold("dml_commit:alice");
    let update = spawn_as(&server, "alice", "UPDATE app.notes SET v = v + 10 WHERE id <= 3");
    server.wait_at_hold("dml_commit:alice").await;

    let bob = |sql: &'static str| server.execute_sql_as("bob", "bob-pw", sql);
    must_finish("bob's INSERT", bob("INSERT INTO app.notes VALUES (4, 4)"))
        .await
        .expect_success();
    must_finish("bob's UPDATE", bob("UPDATE app.notes SET v = 0 WHERE id = 1"))
        .await
        .expect_success();
    must_finish(
        "root's INSERT into another table",
        server.execute_sql("INSERT INTO app.config VALUES ('a', 1)"),
    )
    .await
    .expect_success();
    // A flush of the very table alice is updating starts and completes: her rows
    // move to Parquet under her.
    let job = must_finish("the flush", server.flush_and_wait("app.notes")).await;
    assert_eq!(job["rows_flushed"], json!(7), "{job}");
    assert!(!update.is_finished(), "alice's UPDATE is still waiting");

    server.db().holds().release("dml_commit:alice");
    let answer = update.await.unwrap();
    answer.expect_success();
    assert_eq!(answer.row_count(0), 3);
    // Her new versions replace the flushed ones: no row appears twice.
    assert_eq!(
        server
            .execute_sql_as("alice", "alice-pw", "SELECT id, v FROM app.notes ORDER BY id")
            .await
            .rows(),
        vec![
            vec![json!(1), json!(11)],
            vec![json!(2), json!(12)],
            vec![json!(3), json!(13)]
        ]
    );
    assert_eq!(
        bob("SELECT id, v FROM app.notes ORDER BY id").await.rows(),
        vec![
            vec![json!(1), json!(0)],
            vec![json!(2), json!(2)],
            vec![json!(3), json!(3)],
            vec![json!(4), json!(4)]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_before_the_commit_is_read_again() {
    let server = Arc::new(TestServer::start().await);
    server
        .execute_sql("CREATE SHARED TABLE notes (id BIGINT PRIMARY KEY, v INT); INSERT INTO notes VALUES (1, 1), (2, 2)")
        .await
        .expect_success();
    server.create_user("svc", "svc-pw", "service").await;
    // svc's UPDATE has read rows 1 and 2 (both v < 5) and waits before its commit.
    server.db().holds().hold("dml_commit:svc");
    let update = spawn_as(&server, "svc", "UPDATE notes SET v = v * 10 WHERE v < 5");
    server.wait_at_hold("dml_commit:svc").await;
    // root (not held) changes row 1 and commits first: the order is fixed.
    must_finish(
        "root's UPDATE",
        server.execute_sql("UPDATE notes SET v = 7 WHERE id = 1"),
    )
    .await
    .expect_success();
    server.db().holds().release("dml_commit:svc");
    let answer = update.await.unwrap();
    answer.expect_success();
    // Read again, row 1 (now 7) no longer matches `v < 5`. Overwriting it with what
    // the statement computed from the old row would give {1: 10, 2: 20}.
    assert_eq!(answer.row_count(0), 1, "{}", answer.body);
    assert_eq!(
        server
            .execute_sql("SELECT id, v FROM notes ORDER BY id")
            .await
            .rows(),
        vec![vec![json!(1), json!(7)], vec![json!(2), json!(20)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_no_update() {
    let server = Arc::new(TestServer::start().await);
    server
        .execute_sql(
            "CREATE SHARED TABLE counter (id INT PRIMARY KEY, n BIGINT); INSERT INTO counter VALUES (1, 0)",
        )
        .await
        .expect_success();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let sql = if writer % 2 == 0 {
                    "UPDATE counter SET n = n + 1 WHERE id = 1"
                } else {
                    "INSERT INTO counter VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + EXCLUDED.n"
                };
                server.execute_sql(sql).await.expect_success();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        server.execute_sql("SELECT n FROM counter").await.rows(),
        vec![vec![json!(100)]]
    );
}

/// `(id, _seq)` of every row of `table`.
fn seqs(response: &SqlResponse) -> HashMap<i64, i64> {
    response.expect_success();
    response
        .rows()
        .iter()
        .map(|row| (row[0].as_i64().unwrap(), row[1].as_i64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_grows_in_commit_order_under_concurrent_writers() {
    let server = Arc::new(TestServer::start().await);
    server
        .execute_sql(
            "CREATE SHARED TABLE events (id BIGINT PRIMARY KEY, writer INT); \
             CREATE SHARED TABLE other (id BIGINT PRIMARY KEY)",
        )
        .await
        .expect_success();
    let mut writers = Vec::new();
    for writer in 0..4i64 {
        let server = server.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..60i64 {
                let id = writer * 1000 + i;
                let sql = match i % 3 {
                    0 => format!(
                        "INSERT INTO events VALUES ({id}, {writer}), ({}, {writer})",
                        id + 500
                    ),
                    1 => format!("INSERT INTO other VALUES ({id})"),
                    _ => format!("INSERT INTO events VALUES ({id}, {writer})"),
                };
                server.execute_sql(&sql).await.expect_success();
            }
        }));
    }
    // A reader that resumes from the largest `_seq` it has seen must never find a
    // row below it that it did not see before.
    let mut seen: HashMap<i64, i64> = HashMap::new();
    let (mut polls, mut mid_way) = (0, 0);
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let now = seqs(&server.execute_sql("SELECT id, _seq FROM events").await);
        let resume_from = seen.values().copied().max().unwrap_or(0);
        for (id, seq) in &now {
            if *seq <= resume_from {
                assert_eq!(
                    seen.get(id),
                    Some(seq),
                    "row {id} (_seq {seq}) appeared after a row with _seq {resume_from}"
                );
            }
        }
        seen = now;
        polls += 1;
        if !done && !seen.is_empty() && seen.len() < 4 * (20 * 2 + 20) {
            mid_way += 1;
        }
        if done {
            break;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Per writer: 20 two-row INSERTs and 20 one-row INSERTs into `events`.
    assert_eq!(
        seen.len(),
        4 * (20 * 2 + 20),
        "every row is there ({polls} polls)"
    );
    // The check above means something only if the reader saw the table while the
    // writers were still writing.
    assert!(
        mid_way >= 3,
        "the reader saw the table mid-way only {mid_way} times ({polls} polls)"
    );
    let distinct: std::collections::HashSet<i64> = seen.values().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "every version has its own _seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_planned_before_a_schema_change_runs_again_on_the_new_schema() {
    let server = Arc::new(TestServer::start().await);
    server
        .execute_sql("CREATE USER TABLE docs (id INT PRIMARY KEY, title TEXT)")
        .await
        .expect_success();
    server.create_user("dave", "dave-pw", "user").await;
    server.db().holds().hold("dml_commit:dave");
    let insert = spawn_as(&server, "dave", "INSERT INTO docs (id, title) VALUES (1, 'one')");
    server.wait_at_hold("dml_commit:dave").await;
    // `title` is dropped and added again: the new column has a new id. A row
    // written by the stale plan would hold the old id's cell, which the new column
    // does not read: `title` would read as its default 'none'.
    for sql in [
        "ALTER TABLE docs DROP COLUMN title",
        "ALTER TABLE docs ADD COLUMN title TEXT DEFAULT 'none'",
    ] {
        must_finish("ALTER TABLE", server.execute_sql(sql))
            .await
            .expect_success();
    }
    server.db().holds().release("dml_commit:dave");
    insert.await.unwrap().expect_success();
    assert_eq!(
        server
            .execute_sql_as("dave", "dave-pw", "SELECT id, title FROM docs")
            .await
            .rows(),
        vec![vec![json!(1), json!("one")]]
    );

    // A column the statement names is dropped: planned again, it is an error, and
    // nothing is written.
    server.create_user("erin", "erin-pw", "user").await;
    server.db().holds().hold("dml_commit:erin");
    let insert = spawn_as(&server, "erin", "INSERT INTO docs (id, title) VALUES (2, 'two')");
    server.wait_at_hold("dml_commit:erin").await;
    must_finish(
        "DROP COLUMN",
        server.execute_sql("ALTER TABLE docs DROP COLUMN title"),
    )
    .await
    .expect_success();
    server.db().holds().release("dml_commit:erin");
    insert.await.unwrap().expect_error(400, "COLUMN_NOT_FOUND");
    assert_eq!(
        server
            .execute_sql_as("erin", "erin-pw", "SELECT count(*) FROM docs")
            .await
            .rows(),
        vec![vec![json!(0)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_max_write_rows_is_refused_and_writes_nothing() {
    let server = TestServer::start_configured(|s| s.max_write_rows = 50).await;
    let values: Vec<String> = (1..=100).map(|i| format!("({i}, 0)")).collect();
    server
        .execute_sql(&format!(
            "CREATE SHARED TABLE big (id INT PRIMARY KEY, v INT); INSERT INTO big VALUES {}",
            values.join(", ")
        ))
        .await
        .expect_success();
    server
        .execute_sql("UPDATE big SET v = 1")
        .await
        .expect_error(400, "RESOURCES_EXHAUSTED");
    server
        .execute_sql("DELETE FROM big WHERE id > 10")
        .await
        .expect_error(400, "RESOURCES_EXHAUSTED");
    assert_eq!(
        server
            .execute_sql("SELECT count(*), sum(v) FROM big")
            .await
            .rows(),
        vec![vec![json!(100), json!(0)]],
        "nothing was written"
    );
    let answer = server.execute_sql("UPDATE big SET v = 1 WHERE id <= 50").await;
    answer.expect_success();
    assert_eq!(answer.row_count(0), 50);
}

/// A DELETE of many flushed rows reads their old versions (for the change log)
/// before its commit lock, from each segment in one pass: other users' writes to
/// the same table go on meanwhile (another user's one-row INSERT waited 57 s behind
/// a 100,000-row DELETE that read them one by one under the lock), and a resume
/// still replays every deleted row with its values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_flushed_rows_holds_no_other_writer() {
    use crate::common::live::LiveClient;
    let server = Arc::new(TestServer::start().await);
    server.create_user("alice", "alice-pw", "user").await;
    server.create_user("bob", "bob-pw", "user").await;
    server
        .execute_sql("CREATE NAMESPACE app; CREATE USER TABLE app.big (id BIGINT PRIMARY KEY, v TEXT)")
        .await
        .expect_success();
    server
        .execute_sql_as(
            "alice",
            "alice-pw",
            "INSERT INTO app.big SELECT value, concat('v', value) FROM generate_series(1, 3000)",
        )
        .await
        .expect_success();
    server.flush_and_wait("app.big").await;
    let sql = "SELECT id, v FROM app.big";
    let mut client = LiveClient::connect(&server, "alice", "alice-pw").await;
    let (_, rows) = client.subscribe("s", sql, json!({})).await;
    assert_eq!(rows.len(), 3000);
    let from = client.last_seq;
    client.close().await;

    server.db().holds().hold("replaced_rows:big");
    let delete = spawn_as(&server, "alice", "DELETE FROM app.big WHERE id > 0");
    server.wait_at_hold("replaced_rows:big").await;
    for sql in [
        "INSERT INTO app.big VALUES (1, 'bob')",
        "INSERT INTO app.big VALUES (2, 'b') ON CONFLICT (id) DO NOTHING",
    ] {
        must_finish("bob's write", server.execute_sql_as("bob", "bob-pw", sql))
            .await
            .expect_success();
    }
    assert!(!delete.is_finished(), "the DELETE is still reading its old rows");
    server.db().holds().release("replaced_rows:big");
    let answer = delete.await.unwrap();
    answer.expect_success();
    assert_eq!(answer.row_count(0), 3000);

    // The change log holds every deleted row as it was.
    let mut client = LiveClient::connect(&server, "alice", "alice-pw").await;
    client
        .subscribe("s", sql, json!({"from_seq": from.to_string()}))
        .await;
    let mut deleted = std::collections::BTreeMap::new();
    while deleted.len() < 3000 {
        let change = client.recv().await;
        assert_eq!(change["op"], "delete", "{change}");
        for row in change["old_rows"].as_array().unwrap() {
            deleted.insert(
                row["id"].as_i64().unwrap(),
                row["v"].as_str().unwrap().to_string(),
            );
        }
    }
    assert_eq!(deleted.len(), 3000);
    assert!(
        deleted.iter().all(|(id, v)| *v == format!("v{id}")),
        "old rows as they were"
    );
    client.expect_silence(Duration::from_millis(200)).await;
}

/// A statement that keeps losing to other writers of its rows claims the keys it
/// writes instead of running its query under the table's commit lock: another
/// user's write to another row goes through while it runs (it waited 5.9 s behind
/// the old pessimistic attempt), the writers of the claimed row wait for it, and no
/// update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_keeps_losing_claims_its_rows_not_the_table() {
    let server = Arc::new(TestServer::start().await);
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE SHARED TABLE app.kv (k TEXT PRIMARY KEY, v INT); \
             INSERT INTO app.kv VALUES ('a', 1), ('b', 1)",
        )
        .await
        .expect_success();
    for user in ["svc", "svc2"] {
        server.create_user(user, &format!("{user}-pw"), "service").await;
    }
    server.db().holds().hold("dml_commit:svc");
    let update = spawn_as(&server, "svc", "UPDATE app.kv SET v = v + 1 WHERE k = 'a'");
    // Three attempts lose: before each commit, root changes the row it read.
    let arrived = |n: u64| {
        let server = server.clone();
        must_finish("an attempt of svc's UPDATE", async move {
            while server.db().holds().arrivals("dml_commit:svc") < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for round in 1..=3u64 {
        arrived(round).await;
        must_finish(
            "root's UPDATE",
            server.execute_sql("UPDATE app.kv SET v = v + 100 WHERE k = 'a'"),
        )
        .await
        .expect_success();
        server.db().holds().pass("dml_commit:svc");
    }
    // The fourth attempt runs holding its claim of 'a', and waits before its commit.
    arrived(4).await;
    must_finish(
        "another user's write of another row",
        server.execute_sql_as(
            "svc2",
            "svc2-pw",
            "INSERT INTO app.kv VALUES ('b', 5) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
        ),
    )
    .await
    .expect_success();
    // A writer of the claimed row waits for the claim.
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .execute_sql("UPDATE app.kv SET v = v + 1000 WHERE k = 'a'")
                .await
        })
    };
    server.db().holds().release("dml_commit:svc");
    update.await.unwrap().expect_success();
    waiting.await.unwrap().expect_success();
    assert_eq!(
        server
            .execute_sql("SELECT k, v FROM app.kv ORDER BY k")
            .await
            .rows(),
        vec![
            vec![json!("a"), json!(1 + 300 + 1 + 1000)],
            vec![json!("b"), json!(5)]
        ]
    );
}

/// Identity columns as ORMs declare them: `SERIAL`, `BIGSERIAL`, `SMALLSERIAL`,
/// `GENERATED BY DEFAULT | ALWAYS AS IDENTITY`. Values 1, 2, 3, … per table, given
/// back by RETURNING, never twice across restarts (a restart skips ahead), ALWAYS
/// refusing a value from the statement, `/ingest` drawing them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_columns_number_rows_and_never_repeat_a_value() {
    let mut server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE SHARED TABLE app.s (id SERIAL PRIMARY KEY, name VARCHAR(50) NOT NULL); \
             CREATE SHARED TABLE app.b (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, t TIMESTAMPTZ, r REAL, d NUMERIC(10,2)); \
             CREATE SHARED TABLE app.m (n SMALLSERIAL, k BIGINT GENERATED BY DEFAULT AS IDENTITY, v TEXT)",
        )
        .await
        .expect_success();
    let inserted = server
        .execute_sql("INSERT INTO app.s (name) VALUES ('a'), ('b'), ('c') RETURNING id")
        .await;
    assert_eq!(
        inserted.rows(),
        vec![vec![json!(1)], vec![json!(2)], vec![json!(3)]]
    );
    server
        .execute_sql("INSERT INTO app.b (t, r, d) VALUES (NOW(), 1.5, 2.25), (NOW(), 2.5, 3.5)")
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO app.b (id, r) VALUES (10, 1.0)")
        .await
        .expect_error(400, "INVALID_SQL");
    // BY DEFAULT takes a given value (the sequence does not move), as in PostgreSQL.
    server
        .execute_sql("INSERT INTO app.m (v) VALUES ('x'); INSERT INTO app.m (k, v) VALUES (100, 'y'); INSERT INTO app.m (v) VALUES ('z')")
        .await
        .expect_success();
    assert_eq!(
        server
            .execute_sql("SELECT n, k, v FROM app.m ORDER BY v")
            .await
            .rows(),
        vec![
            vec![json!(1), json!(1), json!("x")],
            vec![json!(2), json!(100), json!("y")],
            vec![json!(3), json!(2), json!("z")],
        ]
    );
    server
        .execute_sql("UPDATE app.b SET id = 7 WHERE id = 1")
        .await
        .expect_error(400, "INVALID_SQL");
    // VARCHAR(n) holds at most n characters, in every write path.
    let long = "é".repeat(51);
    for sql in [
        format!("INSERT INTO app.s (name) VALUES ('{long}')"),
        format!("UPDATE app.s SET name = '{long}' WHERE id = 1"),
        format!(
            "INSERT INTO app.s (id, name) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET name = '{long}'"
        ),
        format!("INSERT INTO app.s (name) SELECT '{long}'"),
    ] {
        let refused = server.execute_sql(&sql).await;
        refused.expect_error(400, "TYPE_MISMATCH");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("VARCHAR(50)"),
            "{}",
            refused.body
        );
    }
    let fifty = "é".repeat(50);
    server
        .execute_sql(&format!("UPDATE app.s SET name = '{fifty}' WHERE id = 1"))
        .await
        .expect_success();
    let ingested = server
        .ingest_as(
            "root",
            "",
            "app/s",
            "application/x-ndjson",
            format!("{{\"name\": \"{long}\"}}\n").into_bytes(),
        )
        .await;
    ingested.expect_error(400, "TYPE_MISMATCH");
    server
        .execute_sql("ALTER TABLE app.s ADD COLUMN code VARCHAR(3) DEFAULT 'abcdef'")
        .await
        .expect_error(400, "TYPE_MISMATCH");
    let types = server
        .execute_sql("SELECT data_type FROM system.columns WHERE table_name = 's' AND column_name = 'name'")
        .await;
    assert_eq!(types.rows(), vec![vec![json!("VARCHAR(50)")]]);
    let described = server.execute_sql("DESCRIBE TABLE app.b").await;
    assert!(
        described
            .body
            .to_string()
            .contains("GENERATED ALWAYS AS IDENTITY"),
        "{}",
        described.body
    );
    // Comments on a table and a column, kept across the restart below.
    server
        .execute_sql(
            "COMMENT ON TABLE app.s IS 'people'; COMMENT ON COLUMN app.s.name IS 'full name'; \
             COMMENT ON TABLE app.b IS 'gone'; COMMENT ON TABLE app.b IS NULL",
        )
        .await
        .expect_success();
    server
        .execute_sql("COMMENT ON COLUMN app.s.nope IS 'x'")
        .await
        .expect_error(400, "COLUMN_NOT_FOUND");
    server
        .execute_sql("COMMENT ON INDEX app.i IS 'x'")
        .await
        .expect_error(400, "UNSUPPORTED");
    // A restart continues above every value handed out (skipping the rest of the
    // reserved block, as PostgreSQL's cached sequences do).
    server.restart().await;
    let comments = server
        .execute_sql(
            "SELECT table_name, comment FROM system.tables WHERE namespace = 'app' AND table_name IN ('s', 'b') ORDER BY table_name; \
             SELECT comment FROM system.columns WHERE table_name = 's' AND column_name = 'name'",
        )
        .await;
    comments.expect_success();
    assert_eq!(
        comments.body["results"][0]["rows"],
        json!([["b", null], ["s", "people"]])
    );
    assert_eq!(comments.rows(), vec![vec![json!("full name")]]);
    let after = server
        .execute_sql("INSERT INTO app.s (name) VALUES ('d') RETURNING id")
        .await
        .rows();
    let id = after[0][0].as_i64().unwrap();
    assert!(id > 3, "no value twice: {id}");
    assert_eq!(
        server
            .execute_sql("SELECT count(*), count(DISTINCT id) FROM app.s")
            .await
            .rows(),
        vec![vec![json!(4), json!(4)]]
    );
    // A bulk load draws from the same sequence; ALWAYS refuses a given value there too.
    server
        .ingest_as(
            "root",
            "",
            "app/s",
            "application/x-ndjson",
            b"{\"name\": \"e\"}\n{\"name\": \"f\"}\n".to_vec(),
        )
        .await
        .expect_success();
    assert_eq!(
        server
            .execute_sql("SELECT count(*), count(DISTINCT id) FROM app.s")
            .await
            .rows(),
        vec![vec![json!(6), json!(6)]]
    );
    server
        .ingest_as(
            "root",
            "",
            "app/b",
            "application/x-ndjson",
            b"{\"id\": 5, \"r\": 1.0}\n".to_vec(),
        )
        .await
        .expect_error(400, "INVALID_SQL");
    server
        .execute_sql("ALTER TABLE app.s ADD COLUMN n2 SERIAL")
        .await
        .expect_error(400, "UNSUPPORTED");
    server
        .execute_sql("CREATE SHARED TABLE app.bad (id TEXT GENERATED ALWAYS AS IDENTITY)")
        .await
        .expect_error(400, "TYPE_MISMATCH");
}

/// kill -9 while clients insert into a SERIAL table: after the restart no value was
/// given twice, and every acknowledged row is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_values_are_never_repeated_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::common::ServerProcess::spawn(dir.path());
    server
        .sql("CREATE NAMESPACE app; CREATE SHARED TABLE app.s (id BIGSERIAL PRIMARY KEY, v INT)")
        .await
        .expect_success();
    let mut acknowledged = 0u64;
    for i in 0..30 {
        let values: Vec<String> = (0..50).map(|j| format!("({})", i * 50 + j)).collect();
        let response = server
            .sql(&format!("INSERT INTO app.s (v) VALUES {}", values.join(",")))
            .await;
        response.expect_success();
        acknowledged += 50;
    }
    server.kill_9();
    let server = crate::common::ServerProcess::spawn(dir.path());
    for _ in 0..40 {
        server
            .sql("INSERT INTO app.s (v) VALUES (-1), (-2), (-3)")
            .await
            .expect_success();
        acknowledged += 3;
    }
    let counts = server
        .sql("SELECT count(*), count(DISTINCT id), min(id) FROM app.s")
        .await;
    assert_eq!(
        counts.rows(),
        vec![vec![json!(acknowledged), json!(acknowledged), json!(1)]]
    );
    server.kill_9();
}
