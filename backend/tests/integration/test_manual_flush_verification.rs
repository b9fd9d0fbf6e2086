//! Manual flushing, through the HTTP API of the real server (the seed's acceptance
//! list: tests 01–15). Every test asserts the outcome: statuses, values, row counts,
//! files on disk.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::TestServer;

const PW: &str = "pw";

async fn user_id(server: &TestServer, name: &str) -> String {
    let response = server
        .execute_sql(&format!(
            "SELECT user_id FROM system.users WHERE username = '{name}'"
        ))
        .await;
    response.rows()[0][0].as_str().unwrap().to_string()
}

fn scope_dir(server: &TestServer, ns: &str, table: &str, user_id: &str) -> PathBuf {
    server
        .data_dir()
        .join("storage")
        .join(ns)
        .join(table)
        .join(user_id)
}

fn manifest(server: &TestServer, ns: &str, table: &str, user_id: &str) -> Value {
    crate::common::read_manifest(&scope_dir(server, ns, table, user_id))
}

/// A namespace `app` with USER table `app.msgs(id BIGINT PK, body TEXT, n INT)`,
/// users alice and bob (role user), `rows` rows each: ids 1..=rows.
async fn setup(rows: usize) -> TestServer {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.msgs (id BIGINT PRIMARY KEY, body TEXT NOT NULL, n INT)",
        )
        .await
        .expect_success();
    for name in ["alice", "bob"] {
        server.create_user(name, PW, "user").await;
        insert_rows(&server, name, 1, rows).await;
    }
    server
}

async fn insert_rows(server: &TestServer, user: &str, from: usize, to: usize) {
    for chunk_start in (from..=to).step_by(1000) {
        let chunk_end = (chunk_start + 999).min(to);
        let values: Vec<String> = (chunk_start..=chunk_end)
            .map(|i| format!("({i}, '{user}-{i}', {})", i % 7))
            .collect();
        server
            .execute_sql_as(
                user,
                PW,
                &format!("INSERT INTO app.msgs VALUES {}", values.join(",")),
            )
            .await
            .expect_success();
    }
}

async fn select_all(server: &TestServer, user: &str) -> Vec<Vec<Value>> {
    let response = server
        .execute_sql_as(user, PW, "SELECT id, body, n FROM app.msgs ORDER BY id")
        .await;
    response.expect_success();
    response.rows()
}

async fn stats(server: &TestServer, user: &str) -> Vec<Value> {
    let response = server
        .execute_sql_as(user, PW, "SHOW STATS FOR TABLE app.msgs")
        .await;
    response.expect_success();
    response.rows()[0].clone()
}

#[tokio::test]
async fn test_01_flush_writes_one_parquet_file_per_user() {
    let server = setup(50).await;
    server.flush_and_wait("app.msgs").await;
    for name in ["alice", "bob"] {
        let dir = scope_dir(&server, "app", "msgs", &user_id(&server, name).await);
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            vec!["batch-1.parquet", "manifest-00000000000000000001.json"],
            "{}",
            dir.display()
        );
        let bytes = std::fs::read(dir.join("batch-1.parquet")).unwrap();
        assert_eq!(&bytes[..4], b"PAR1", "a Parquet file");
    }
}

#[tokio::test]
async fn test_02_manifest_lists_segment_statistics() {
    let server = setup(40).await;
    let alice = user_id(&server, "alice").await;
    let seqs = server
        .execute_sql_as("alice", PW, "SELECT min(_seq), max(_seq) FROM app.msgs")
        .await
        .rows();
    server.flush_and_wait("app.msgs").await;
    let m = manifest(&server, "app", "msgs", &alice);
    let segments = m["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1);
    let s = &segments[0];
    assert_eq!(s["file"], "batch-1.parquet");
    assert_eq!(s["row_count"], 40);
    assert_eq!(s["deleted_count"], 0);
    let size = std::fs::metadata(scope_dir(&server, "app", "msgs", &alice).join("batch-1.parquet"))
        .unwrap()
        .len();
    assert_eq!(s["size_bytes"], size);
    assert_eq!(s["min_seq"], seqs[0][0]);
    assert_eq!(s["max_seq"], seqs[0][1]);
    assert_eq!(m["next_batch"], 2);
    let column = |name: &str| {
        s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(column("id")["min"], "1");
    assert_eq!(column("id")["max"], "40");
    assert_eq!(column("n")["min"], "0");
    assert_eq!(column("n")["max"], "6");
    assert_eq!(column("body")["min"], "alice-1");
    assert_eq!(column("body")["max"], "alice-9");
    assert_eq!(column("id")["null_count"], 0);
}

#[tokio::test]
async fn test_03_flushed_rows_leave_rocksdb() {
    let server = setup(30).await;
    let before = stats(&server, "alice").await;
    assert_eq!((before[1].clone(), before[3].clone()), (json!(30), json!(0)));
    server.flush_and_wait("app.msgs").await;
    let after = stats(&server, "alice").await;
    // table, hot_rows, hot_versions, cold_rows, cold_files, cold_bytes, last_flush
    assert_eq!(after[1], 0, "{after:?}");
    assert_eq!(after[2], 0);
    assert_eq!(after[3], 30);
    assert_eq!(after[4], 1);
    assert!(after[5].as_u64().unwrap() > 0);
    assert!(after[6].is_string());
}

#[tokio::test]
async fn test_04_reads_are_unchanged_after_a_flush() {
    let server = setup(120).await;
    let queries = [
        "SELECT id, body, n FROM app.msgs ORDER BY id",
        "SELECT count(*), sum(id), min(body), max(n) FROM app.msgs",
        "SELECT n, count(*) FROM app.msgs GROUP BY n ORDER BY n",
        "SELECT body FROM app.msgs WHERE id = 77",
        "SELECT id FROM app.msgs WHERE id > 100 AND n = 3 ORDER BY id",
        "SELECT id, _seq FROM app.msgs ORDER BY id LIMIT 5",
        "SELECT * FROM app.msgs WHERE body LIKE 'alice-11%' ORDER BY id",
    ];
    let mut before = Vec::new();
    for q in queries {
        let r = server.execute_sql_as("alice", PW, q).await;
        r.expect_success();
        before.push(r.body["results"].clone());
    }
    server.flush_and_wait("app.msgs").await;
    for (q, expected) in queries.iter().zip(before) {
        let r = server.execute_sql_as("alice", PW, q).await;
        r.expect_success();
        assert_eq!(r.body["results"], expected, "{q}");
    }
}

#[tokio::test]
async fn test_05_users_stay_apart_in_cold_storage() {
    let server = setup(20).await;
    server.flush_and_wait("app.msgs").await;
    let alice = select_all(&server, "alice").await;
    assert_eq!(alice.len(), 20);
    assert!(alice.iter().all(|r| r[1].as_str().unwrap().starts_with("alice-")));
    let bob = server
        .execute_sql_as("bob", PW, "SELECT body FROM app.msgs WHERE id = 3")
        .await;
    assert_eq!(bob.rows(), vec![vec![json!("bob-3")]]);
    // bob's DML cannot reach alice's cold rows.
    server
        .execute_sql_as("bob", PW, "DELETE FROM app.msgs WHERE id <= 10")
        .await
        .expect_success();
    assert_eq!(select_all(&server, "alice").await.len(), 20);
    assert_eq!(select_all(&server, "bob").await.len(), 10);
}

#[tokio::test]
async fn test_06_each_flush_adds_a_batch_file() {
    let server = setup(10).await;
    server.flush_and_wait("app.msgs").await;
    insert_rows(&server, "alice", 11, 25).await;
    let job = server.flush_and_wait("app.msgs").await;
    assert_eq!(job["rows_flushed"], 15);
    assert_eq!(job["users_flushed"], 1, "bob had nothing new");
    let alice = user_id(&server, "alice").await;
    let m = manifest(&server, "app", "msgs", &alice);
    let files: Vec<&str> = m["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, vec!["batch-1.parquet", "batch-2.parquet"]);
    assert!(
        scope_dir(&server, "app", "msgs", &alice)
            .join("batch-2.parquet")
            .exists()
    );
    let rows = select_all(&server, "alice").await;
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[24], vec![json!(25), json!("alice-25"), json!(4)]);
}

#[tokio::test]
async fn test_07_updates_and_deletes_of_flushed_rows() {
    let server = setup(10).await;
    server.flush_and_wait("app.msgs").await;
    let run = |sql: &'static str| {
        let server = &server;
        async move {
            server
                .execute_sql_as("alice", PW, sql)
                .await
                .expect_success()
                .clone()
        }
    };
    assert_eq!(
        run("UPDATE app.msgs SET body = 'changed' WHERE id IN (2, 3)")
            .await
            .row_count(0),
        2
    );
    assert_eq!(run("DELETE FROM app.msgs WHERE id = 4").await.row_count(0), 1);
    let check = |rows: Vec<Vec<Value>>| {
        assert_eq!(rows.len(), 9);
        assert_eq!(rows[1], vec![json!(2), json!("changed"), json!(2)]);
        assert!(rows.iter().all(|r| r[0] != 4));
    };
    check(select_all(&server, "alice").await);
    server.flush_and_wait("app.msgs").await;
    check(select_all(&server, "alice").await);
    // A deleted key can be inserted again; an existing cold key is a duplicate.
    run("INSERT INTO app.msgs VALUES (4, 'again', 0)").await;
    server
        .execute_sql_as("alice", PW, "INSERT INTO app.msgs VALUES (5, 'dup', 0)")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    let upsert =
        run("INSERT INTO app.msgs VALUES (6, 'x', 0) ON CONFLICT (id) DO UPDATE SET n = app.msgs.n + 100")
            .await;
    assert_eq!(upsert.row_count(0), 1);
    let six = server
        .execute_sql_as("alice", PW, "SELECT body, n FROM app.msgs WHERE id = 6")
        .await;
    assert_eq!(six.rows(), vec![vec![json!("alice-6"), json!(106)]]);
    server.flush_and_wait("app.msgs").await;
    let rows = select_all(&server, "alice").await;
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[3], vec![json!(4), json!("again"), json!(0)]);
    assert_eq!(rows[5], vec![json!(6), json!("alice-6"), json!(106)]);
}

#[tokio::test]
async fn test_08_flush_table_returns_a_job_at_once() {
    let server = setup(5).await;
    let response = server.execute_sql("STORAGE FLUSH TABLE app.msgs").await;
    response.expect_success();
    assert_eq!(
        response.column_names(),
        vec!["job_id", "namespace", "table_name", "status"]
    );
    let row = &response.rows()[0];
    let job_id = row[0].as_str().unwrap();
    assert_eq!(job_id.len(), 36, "a UUID: {job_id}");
    assert_eq!((row[1].clone(), row[2].clone()), (json!("app"), json!("msgs")));
    assert_eq!(row[3], "queued");
    assert!(
        response.body["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains(job_id)
    );
    assert_eq!(server.wait_for_job(job_id).await["status"], "completed");
}

#[tokio::test]
async fn test_09_flush_job_completes_asynchronously() {
    let server = setup(200).await;
    // The job is held as it starts: the reply must come back while it cannot have
    // finished, and the statements after it run while it is running.
    server.db().holds().hold("flush_start");
    let job_id = server.flush_table("app.msgs").await;
    server.wait_at_hold("flush_start").await;
    assert_eq!(server.job(&job_id).await["status"], "running");
    let count = server
        .execute_sql("SELECT count(*) FROM system.jobs WHERE status = 'completed'")
        .await;
    assert_eq!(count.rows(), vec![vec![json!(0)]], "nothing completed yet");
    server.db().holds().release("flush_start");
    let job = server.wait_for_job(&job_id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["job_type"], "flush");
    assert_eq!(job["trigger"], "manual");
    assert_eq!(
        (job["namespace"].clone(), job["table_name"].clone()),
        (json!("app"), json!("msgs"))
    );
    assert!(job["created_at"].is_string() && job["started_at"].is_string() && job["finished_at"].is_string());
    assert!(job["duration_ms"].as_i64().unwrap() >= 0);
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["error_message"], Value::Null);
}

#[tokio::test]
async fn test_10_flush_all_returns_one_job_per_user_table() {
    let server = setup(5).await;
    server
        .execute_sql(
            "CREATE USER TABLE app.t2 (id INT PRIMARY KEY); \
             CREATE USER TABLE app.t3 (id INT PRIMARY KEY); \
             CREATE SHARED TABLE app.s1 (id INT PRIMARY KEY); \
             CREATE NAMESPACE other; CREATE USER TABLE other.t4 (id INT PRIMARY KEY); \
             INSERT INTO app.s1 VALUES (1)",
        )
        .await
        .expect_success();
    let response = server.execute_sql("STORAGE FLUSH ALL IN NAMESPACE app").await;
    response.expect_success();
    let rows = response.rows();
    let mut tables: Vec<&str> = rows.iter().map(|r| r[2].as_str().unwrap()).collect();
    tables.sort();
    assert_eq!(tables, vec!["msgs", "t2", "t3"]);
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    for id in ids {
        assert_eq!(server.wait_for_job(id).await["status"], "completed");
    }
    let everywhere = server.execute_sql("STORAGE FLUSH ALL").await;
    everywhere.expect_success();
    assert_eq!(everywhere.rows().len(), 4, "msgs, t2, t3 and other.t4");
    for row in everywhere.rows() {
        let job = server.wait_for_job(row[0].as_str().unwrap()).await;
        assert_eq!(job["status"], "completed", "{job}");
    }
    let shared = server.execute_sql("SELECT count(*) FROM app.s1").await;
    assert_eq!(shared.rows(), vec![vec![json!(1)]]);
    server
        .execute_sql("STORAGE FLUSH ALL IN nowhere")
        .await
        .expect_error(404, "NAMESPACE_NOT_FOUND");
}

#[tokio::test]
async fn test_11_job_result_includes_metrics() {
    let server = setup(25).await;
    let job = server.flush_and_wait("app.msgs").await;
    assert_eq!(job["rows_flushed"], 50);
    assert_eq!(job["users_flushed"], 2);
    assert_eq!(job["files_written"], 2);
    let mut bytes = 0;
    for name in ["alice", "bob"] {
        let dir = scope_dir(&server, "app", "msgs", &user_id(&server, name).await);
        bytes += std::fs::metadata(dir.join("batch-1.parquet")).unwrap().len();
    }
    assert_eq!(job["bytes_written"], bytes);
    // `result` is a JSON column: the API returns it as a JSON object.
    let result = &job["result"];
    assert!(result.is_object(), "{result}");
    assert_eq!(result["rows_flushed"], 50);
    assert_eq!(result["users_flushed"], 2);
    assert_eq!(result["files_written"], 2);
    assert_eq!(result["bytes_written"], bytes);
    assert_eq!(result["status"], "completed");
    assert_eq!(result["duration_ms"], job["duration_ms"]);
    // The same figures reach /metrics.
    let metrics = server.metrics().await;
    for line in [
        "kalamdb_hot_rows 0".to_string(),
        "kalamdb_cold_files 2".to_string(),
        format!("kalamdb_cold_bytes {bytes}"),
        "kalamdb_cold_rows 50".to_string(),
        "kalamdb_jobs{status=\"completed\"} 1".to_string(),
        "kalamdb_flush_rows_total 50".to_string(),
        format!("kalamdb_flush_bytes_total {bytes}"),
        "kalamdb_flush_files_total 2".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn test_12_flushing_an_empty_table_completes_with_nothing_written() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE NAMESPACE app; CREATE USER TABLE app.empty (id INT PRIMARY KEY)")
        .await
        .expect_success();
    let job = server.flush_and_wait("app.empty").await;
    assert_eq!(job["rows_flushed"], 0);
    assert_eq!(job["users_flushed"], 0);
    assert_eq!(job["files_written"], 0);
    assert_eq!(job["bytes_written"], 0);
    assert!(!server.data_dir().join("storage/app/empty").exists());
}

#[tokio::test]
async fn test_13_concurrent_flush_of_a_table_is_refused() {
    // Enough rows that the first job is still queued or running when the second
    // statement of the same request runs, microseconds later.
    let server = setup(20_000).await;
    let response = server
        .execute_sql("STORAGE FLUSH TABLE app.msgs; STORAGE FLUSH TABLE app.msgs")
        .await;
    response.expect_error(409, "FLUSH_IN_PROGRESS");
    assert_eq!(response.body["error"]["statement_index"], 1);
    let first = response.body["results"][0]["rows"][0][0]
        .as_str()
        .unwrap()
        .to_string();
    let message = response.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&first), "{message} names {first}");
    assert_eq!(server.wait_for_job(&first).await["rows_flushed"], 40_000);
    // Once it finished, the table flushes again.
    let again = server.flush_and_wait("app.msgs").await;
    assert_eq!(again["rows_flushed"], 0);
}

#[tokio::test]
async fn test_14_flushing_a_missing_table_is_table_not_found() {
    let server = TestServer::start().await;
    server
        .execute_sql("STORAGE FLUSH TABLE default.nope")
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    server
        .execute_sql("STORAGE FLUSH TABLE nons.nope")
        .await
        .expect_error(404, "NAMESPACE_NOT_FOUND");
    let jobs = server.execute_sql("SELECT count(*) FROM system.jobs").await;
    assert_eq!(jobs.rows(), vec![vec![json!(0)]]);
}

#[tokio::test]
async fn test_15_shared_and_stream_tables_do_not_flush() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE SHARED TABLE default.s (id INT PRIMARY KEY); INSERT INTO default.s VALUES (1)")
        .await
        .expect_success();
    let response = server.execute_sql("STORAGE FLUSH TABLE default.s").await;
    response.expect_error(400, "UNSUPPORTED");
    let message = response.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("USER tables only"), "{message}");
    let jobs = server.execute_sql("SELECT count(*) FROM system.jobs").await;
    assert_eq!(jobs.rows(), vec![vec![json!(0)]]);
    assert_eq!(
        server.execute_sql("SELECT id FROM default.s").await.rows(),
        vec![vec![json!(1)]]
    );
    // STREAM tables are never flushed: their rows expire in RocksDB.
    server
        .execute_sql("CREATE STREAM TABLE default.st (id INT PRIMARY KEY) WITH (TTL_SECONDS = 60); INSERT INTO default.st VALUES (1)")
        .await
        .expect_success();
    let response = server.execute_sql("STORAGE FLUSH TABLE default.st").await;
    response.expect_error(400, "UNSUPPORTED");
    // FLUSH ALL skips them.
    server.execute_sql("STORAGE FLUSH ALL").await.expect_success();
    let jobs = server.execute_sql("SELECT count(*) FROM system.jobs").await;
    assert_eq!(jobs.rows(), vec![vec![json!(0)]]);
    assert_eq!(
        server.execute_sql("SELECT id FROM default.st").await.rows(),
        vec![vec![json!(1)]]
    );
}
