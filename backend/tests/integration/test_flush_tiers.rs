//! Hot and cold tiers as one table: versions across flushes, writes during a flush,
//! failing and cancelled flushes, policies, roles, schema changes, restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Rng, TestServer};

const PW: &str = "pw";

/// `(id, v)` rows as the test expects them.
type Model = BTreeMap<i64, String>;

async fn visible(server: &TestServer, user: &str, table: &str) -> Model {
    let response = server
        .execute_sql_as(user, PW, &format!("SELECT id, v FROM {table} ORDER BY id"))
        .await;
    response.expect_success();
    response
        .rows()
        .into_iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect()
}

#[track_caller]
fn assert_model(actual: &Model, expected: &Model, step: &str) {
    assert_eq!(actual.len(), expected.len(), "{step}: row count");
    assert_eq!(actual, expected, "{step}");
}

async fn kv_server(adjust: impl FnOnce(&mut kalamdb_server::Settings)) -> TestServer {
    let server = TestServer::start_configured(adjust).await;
    server
        .execute_sql("CREATE NAMESPACE app; CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT)")
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    server.create_user("bob", PW, "user").await;
    server
}

async fn run(server: &TestServer, user: &str, sql: &str) -> u64 {
    let response = server.execute_sql_as(user, PW, sql).await;
    response.expect_success();
    response.row_count(0)
}

#[tokio::test]
async fn versions_across_tiers_match_a_model() {
    let mut server = kv_server(|_| {}).await;
    let mut model = Model::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let values: Vec<String> = (1..=60).map(|i| format!("({i}, 'v{i}')")).collect();
    run(
        &server,
        "alice",
        &format!("INSERT INTO app.kv VALUES {}", values.join(",")),
    )
    .await;
    for i in 1..=60 {
        model.insert(i, format!("v{i}"));
    }
    // bob's rows share alice's keys and must never mix with them.
    run(&server, "bob", "INSERT INTO app.kv VALUES (1, 'bob'), (2, 'bob')").await;
    assert_model(&visible(&server, "alice", "app.kv").await, &model, "insert");
    server.flush_and_wait("app.kv").await;
    assert_model(&visible(&server, "alice", "app.kv").await, &model, "flush 1");

    for round in 1..=4 {
        for op in 0..25 {
            let id = 1 + rng.below(80) as i64;
            match rng.below(4) {
                0 => {
                    let v = format!("r{round}o{op}");
                    let n = run(
                        &server,
                        "alice",
                        &format!("UPDATE app.kv SET v = '{v}' WHERE id = {id}"),
                    )
                    .await;
                    assert_eq!(n, model.contains_key(&id) as u64, "update {id}");
                    if let Some(slot) = model.get_mut(&id) {
                        *slot = v;
                    }
                }
                1 => {
                    let n = run(&server, "alice", &format!("DELETE FROM app.kv WHERE id = {id}")).await;
                    assert_eq!(n, model.remove(&id).is_some() as u64, "delete {id}");
                }
                2 => {
                    let v = format!("i{round}o{op}");
                    let response = server
                        .execute_sql_as("alice", PW, &format!("INSERT INTO app.kv VALUES ({id}, '{v}')"))
                        .await;
                    match model.entry(id) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            response.expect_error(409, "DUPLICATE_KEY");
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            response.expect_success();
                            slot.insert(v);
                        }
                    }
                }
                _ => {
                    let v = format!("u{round}o{op}");
                    run(
                        &server,
                        "alice",
                        &format!("INSERT INTO app.kv VALUES ({id}, '{v}') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v"),
                    )
                    .await;
                    model.insert(id, v);
                }
            }
        }
        // A predicate update over many keys, hot and cold alike.
        let n = run(
            &server,
            "alice",
            &format!("UPDATE app.kv SET v = v || '+' WHERE id % 9 = {round}"),
        )
        .await;
        let mut touched = 0;
        for (id, v) in model.iter_mut() {
            if id % 9 == round {
                v.push('+');
                touched += 1;
            }
        }
        assert_eq!(n, touched, "round {round}: predicate update");
        assert_model(
            &visible(&server, "alice", "app.kv").await,
            &model,
            &format!("round {round}"),
        );
        server.flush_and_wait("app.kv").await;
        assert_model(
            &visible(&server, "alice", "app.kv").await,
            &model,
            &format!("round {round} after flush"),
        );
        for (id, v) in model.iter().take(3) {
            let point = server
                .execute_sql_as("alice", PW, &format!("SELECT v FROM app.kv WHERE id = {id}"))
                .await;
            assert_eq!(point.rows(), vec![vec![json!(v)]], "pk lookup {id}");
        }
    }
    let bob = visible(&server, "bob", "app.kv").await;
    assert_eq!(bob.len(), 2);
    assert!(bob.values().all(|v| v == "bob"));
    server.restart().await;
    assert_model(
        &visible(&server, "alice", "app.kv").await,
        &model,
        "after restart",
    );
    // Stale markers and watermarks survive a restart: updating a cold row now
    // does not bring the old version back.
    let (id, _) = model.iter().next().map(|(k, v)| (*k, v.clone())).unwrap();
    run(
        &server,
        "alice",
        &format!("UPDATE app.kv SET v = 'final' WHERE id = {id}"),
    )
    .await;
    model.insert(id, "final".into());
    assert_model(
        &visible(&server, "alice", "app.kv").await,
        &model,
        "update after restart",
    );
    server.flush_and_wait("app.kv").await;
    assert_model(&visible(&server, "alice", "app.kv").await, &model, "final flush");
}

/// Slow flushes (batches of 100 rows, 20 ms pause after each) so a test can act
/// while one runs.
fn slow_flush(settings: &mut kalamdb_server::Settings) {
    settings.flush_batch_rows = 100;
    settings.flush_batch_pause_ms = 20;
}

async fn insert_range(server: &TestServer, user: &str, table: &str, from: i64, to: i64) {
    let mut start = from;
    while start <= to {
        let end = (start + 999).min(to);
        let values: Vec<String> = (start..=end).map(|i| format!("({i}, 'v{i}')")).collect();
        run(
            server,
            user,
            &format!("INSERT INTO {table} VALUES {}", values.join(",")),
        )
        .await;
        start = end + 1;
    }
}

async fn wait_status(server: &TestServer, job_id: &str, status: &str) {
    for _ in 0..500 {
        if server.job(job_id).await["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "job {job_id} never reached {status}: {}",
        server.job(job_id).await
    );
}

#[tokio::test]
async fn writes_during_a_running_flush_are_all_kept_once() {
    // The flush stops after its first batch (a held pause point) until the writes
    // below are done: it is running while they happen, however loaded the machine.
    let server = kv_server(|s| {
        s.flush_batch_rows = 100;
    })
    .await;
    insert_range(&server, "alice", "app.kv", 1, 3000).await;
    let mut model: Model = (1..=3000).map(|i| (i, format!("v{i}"))).collect();
    server.db().holds().hold("flush_batch");
    let job_id = server.flush_table("app.kv").await;
    server.wait_at_hold("flush_batch").await;
    assert_eq!(server.job(&job_id).await["status"], "running");
    // While the flush runs: new rows, updates and deletes of rows it is moving.
    insert_range(&server, "alice", "app.kv", 3001, 3500).await;
    for i in 3001..=3500 {
        model.insert(i, format!("v{i}"));
    }
    assert_eq!(
        run(&server, "alice", "UPDATE app.kv SET v = 'during' WHERE id <= 100").await,
        100
    );
    for i in 1..=100 {
        model.insert(i, "during".into());
    }
    assert_eq!(
        run(
            &server,
            "alice",
            "DELETE FROM app.kv WHERE id > 2900 AND id <= 3000"
        )
        .await,
        100
    );
    for i in 2901..=3000 {
        model.remove(&i);
    }
    assert_eq!(
        server.job(&job_id).await["status"],
        "running",
        "the flush outlived the writes"
    );
    assert_model(
        &visible(&server, "alice", "app.kv").await,
        &model,
        "during the flush",
    );
    server.db().holds().release("flush_batch");
    let job = server.wait_for_job(&job_id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["rows_flushed"], 3000, "the rows that existed when it started");
    assert_model(
        &visible(&server, "alice", "app.kv").await,
        &model,
        "after the flush",
    );
    let distinct = server
        .execute_sql_as("alice", PW, "SELECT count(*), count(DISTINCT id) FROM app.kv")
        .await;
    assert_eq!(
        distinct.rows(),
        vec![vec![json!(model.len()), json!(model.len())]]
    );
    server.flush_and_wait("app.kv").await;
    assert_model(&visible(&server, "alice", "app.kv").await, &model, "second flush");
}

#[tokio::test]
async fn a_failing_flush_keeps_every_row_and_a_later_flush_succeeds() {
    let server = kv_server(|_| {}).await;
    insert_range(&server, "alice", "app.kv", 1, 50).await;
    // A regular file where the table's cold directory must go: not writable,
    // whatever the user the tests run as.
    let blocked = server.data_dir().join("storage/app/kv");
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"in the way").unwrap();
    let job_id = server.flush_table("app.kv").await;
    let job = server.wait_for_job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job}");
    let message = job["error_message"].as_str().unwrap();
    assert!(message.contains("storage/app/kv"), "says where: {message}");
    let stats = server
        .execute_sql_as("alice", PW, "SHOW STATS FOR TABLE app.kv")
        .await;
    assert_eq!(stats.rows()[0][1], 50, "rows stay hot");
    // Writes do not stall.
    insert_range(&server, "alice", "app.kv", 51, 60).await;
    std::fs::remove_file(&blocked).unwrap();
    let job = server.flush_and_wait("app.kv").await;
    assert_eq!(job["rows_flushed"], 60);
    let model: Model = (1..=60).map(|i| (i, format!("v{i}"))).collect();
    assert_model(&visible(&server, "alice", "app.kv").await, &model, "after retry");
}

/// With one job slot: `kv_rows` rows in app.kv and 10 in app.other; a flush of
/// app.kv is running and one of app.other queued behind it. Returns both job ids.
/// The app.kv job is held after its first batch (`flush_batch`): the caller releases it.
async fn running_and_queued(server: &TestServer, kv_rows: i64) -> (String, String) {
    server
        .execute_sql("CREATE USER TABLE app.other (id BIGINT PRIMARY KEY, v TEXT)")
        .await
        .expect_success();
    insert_range(server, "alice", "app.kv", 1, kv_rows).await;
    insert_range(server, "alice", "app.other", 1, 10).await;
    server.db().holds().hold("flush_batch");
    let running = server.flush_table("app.kv").await;
    server.wait_at_hold("flush_batch").await;
    wait_status(server, &running, "running").await;
    let queued = server.flush_table("app.other").await;
    assert_eq!(server.job(&queued).await["status"], "queued");
    (running, queued)
}

/// A file of a write that did not complete: a local storage's staging file
/// (`<name>#<n>`) or a `.tmp` file.
fn is_staging(name: &str) -> bool {
    name.ends_with(".tmp")
        || name
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn tmp_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(tmp_files(&path));
        } else if is_staging(&path.file_name().unwrap().to_string_lossy()) {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn kill_job_cancels_queued_and_running_jobs() {
    // The first job is held after its first batch until it is killed.
    let server = kv_server(|s| {
        s.flush_batch_rows = 100;
        s.max_concurrent_jobs = 1;
    })
    .await;
    let (running, queued) = running_and_queued(&server, 3000).await;
    assert_eq!(server.job(&queued).await["status"], "queued", "one job slot");

    // Only dba and above may kill jobs.
    server.create_user("svc", PW, "service").await;
    server
        .execute_sql_as("svc", PW, &format!("KILL JOB '{queued}'"))
        .await
        .expect_error(403, "PERMISSION_DENIED");

    let killed = server.execute_sql(&format!("KILL JOB '{queued}'")).await;
    killed.expect_success();
    assert_eq!(killed.rows()[0][3], "cancelled");
    let job = server.job(&queued).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["started_at"], Value::Null);

    let killed = server.execute_sql(&format!("KILL JOB '{running}'")).await;
    killed.expect_success();
    assert_eq!(killed.rows()[0][3], "cancelled");
    let job = server.wait_for_job(&running).await;
    assert_eq!(job["status"], "cancelled");
    server.db().holds().release("flush_batch");
    assert!(tmp_files(&server.data_dir().join("storage")).is_empty());
    let model: Model = (1..=3000).map(|i| (i, format!("v{i}"))).collect();
    assert_model(&visible(&server, "alice", "app.kv").await, &model, "after kill");

    let again = server.execute_sql(&format!("KILL JOB '{running}'")).await;
    again.expect_success();
    assert!(
        again.body["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already finished")
    );
    server
        .execute_sql("KILL JOB 'no-such-job'")
        .await
        .expect_error(404, "JOB_NOT_FOUND");
    // The table flushes normally afterwards.
    let job = server.flush_and_wait("app.kv").await;
    assert_eq!(job["rows_flushed"], 3000);
    assert_model(
        &visible(&server, "alice", "app.kv").await,
        &model,
        "flushed after kill",
    );
}

#[tokio::test]
async fn flush_policies_start_policy_jobs() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.by_rows (id BIGINT PRIMARY KEY, v TEXT) WITH (FLUSH_POLICY = 'rows:100'); \
             CREATE USER TABLE app.by_time (id BIGINT PRIMARY KEY, v TEXT) WITH (FLUSH_POLICY = 'interval:1')",
        )
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    insert_range(&server, "alice", "app.by_rows", 1, 50).await;
    insert_range(&server, "alice", "app.by_time", 1, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let jobs = server
        .execute_sql("SELECT table_name FROM system.jobs WHERE table_name = 'by_rows'")
        .await;
    assert!(jobs.rows().is_empty(), "50 rows are below rows:100");
    insert_range(&server, "alice", "app.by_rows", 51, 150).await;
    let mut seen = Vec::new();
    for _ in 0..300 {
        let jobs = server
            .execute_sql(
                "SELECT table_name, trigger, rows_flushed FROM system.jobs \
                 WHERE status = 'completed' ORDER BY table_name",
            )
            .await;
        seen = jobs.rows();
        let tables: std::collections::HashSet<&str> = seen.iter().map(|r| r[0].as_str().unwrap()).collect();
        if tables.contains("by_rows") && tables.contains("by_time") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.iter()
            .any(|r| r[0] == "by_rows" && r[1] == "policy" && r[2] == 150),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r[0] == "by_time" && r[1] == "policy" && r[2] == 5),
        "{seen:?}"
    );
    let stats = server
        .execute_sql_as("alice", PW, "SHOW STATS FOR TABLE app.by_rows")
        .await;
    assert_eq!(stats.rows()[0][3], 150, "cold rows");
}

#[tokio::test]
async fn only_service_and_above_flush_and_read_jobs() {
    let server = kv_server(|_| {}).await;
    server
        .execute_sql_as("alice", PW, "STORAGE FLUSH TABLE app.kv")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .execute_sql_as("alice", PW, "STORAGE FLUSH ALL")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .execute_sql_as("alice", PW, "SELECT * FROM system.jobs")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server.create_user("svc", PW, "service").await;
    let response = server
        .execute_sql_as("svc", PW, "STORAGE FLUSH TABLE app.kv")
        .await;
    response.expect_success();
    let job_id = response.rows()[0][0].as_str().unwrap().to_string();
    server.wait_for_job(&job_id).await;
    let jobs = server
        .execute_sql_as("svc", PW, "SELECT status FROM system.jobs")
        .await;
    assert_eq!(jobs.rows(), vec![vec![json!("completed")]]);
}

#[tokio::test]
async fn schema_changes_keep_cold_rows_readable() {
    let server = kv_server(|_| {}).await;
    insert_range(&server, "alice", "app.kv", 1, 20).await;
    server.flush_and_wait("app.kv").await;
    server
        .execute_sql("ALTER TABLE app.kv ADD COLUMN score INT DEFAULT 5")
        .await
        .expect_success();
    run(
        &server,
        "alice",
        "INSERT INTO app.kv (id, v, score) VALUES (21, 'v21', 9)",
    )
    .await;
    let rows = server
        .execute_sql_as(
            "alice",
            PW,
            "SELECT id, score FROM app.kv WHERE id IN (1, 20, 21) ORDER BY id",
        )
        .await;
    assert_eq!(
        rows.rows(),
        vec![
            vec![json!(1), json!(5)],
            vec![json!(20), json!(5)],
            vec![json!(21), json!(9)]
        ]
    );
    let filtered = server
        .execute_sql_as("alice", PW, "SELECT count(*) FROM app.kv WHERE score = 5")
        .await;
    assert_eq!(filtered.rows(), vec![vec![json!(20)]]);
    server.flush_and_wait("app.kv").await;
    server
        .execute_sql("ALTER TABLE app.kv DROP COLUMN v")
        .await
        .expect_success();
    let rows = server
        .execute_sql_as("alice", PW, "SELECT * FROM app.kv ORDER BY id")
        .await;
    rows.expect_success();
    assert_eq!(rows.column_names(), vec!["id", "score"]);
    assert_eq!(rows.rows().len(), 21);
    assert_eq!(rows.rows()[20], vec![json!(21), json!(9)]);
    server
        .execute_sql("ALTER TABLE app.kv ADD COLUMN v BIGINT")
        .await
        .expect_success();
    let rows = server
        .execute_sql_as("alice", PW, "SELECT count(*), count(v) FROM app.kv")
        .await;
    assert_eq!(
        rows.rows(),
        vec![vec![json!(21), json!(0)]],
        "a re-added name is a new column"
    );
}

#[tokio::test]
async fn tables_without_a_primary_key_flush_and_update() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE USER TABLE default.log (msg TEXT, n INT)")
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    let values: Vec<String> = (1..=30).map(|i| format!("('m{i}', {i})")).collect();
    run(
        &server,
        "alice",
        &format!("INSERT INTO default.log VALUES {}", values.join(",")),
    )
    .await;
    server.flush_and_wait("default.log").await;
    assert_eq!(
        run(&server, "alice", "UPDATE default.log SET msg = 'x' WHERE n <= 5").await,
        5
    );
    assert_eq!(
        run(&server, "alice", "DELETE FROM default.log WHERE n > 25").await,
        5
    );
    server.flush_and_wait("default.log").await;
    let rows = server
        .execute_sql_as(
            "alice",
            PW,
            "SELECT count(*), count(DISTINCT _id), sum(n) FROM default.log",
        )
        .await;
    assert_eq!(rows.rows(), vec![vec![json!(25), json!(25), json!(325)]]);
    let x = server
        .execute_sql_as("alice", PW, "SELECT count(*) FROM default.log WHERE msg = 'x'")
        .await;
    assert_eq!(x.rows(), vec![vec![json!(5)]]);
}

#[tokio::test]
async fn dropping_a_table_removes_its_cold_files() {
    let server = kv_server(|_| {}).await;
    insert_range(&server, "alice", "app.kv", 1, 10).await;
    server.flush_and_wait("app.kv").await;
    let dir = server.data_dir().join("storage/app/kv");
    assert!(dir.exists());
    server.execute_sql("DROP TABLE app.kv").await.expect_success();
    assert!(!dir.exists());
    server
        .execute_sql("CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT)")
        .await
        .expect_success();
    assert!(
        visible(&server, "alice", "app.kv").await.is_empty(),
        "a new table starts empty"
    );
    insert_range(&server, "alice", "app.kv", 5, 6).await;
    server.flush_and_wait("app.kv").await;
    let model: Model = (5..=6).map(|i| (i, format!("v{i}"))).collect();
    assert_model(&visible(&server, "alice", "app.kv").await, &model, "recreated");
    server
        .execute_sql("DROP NAMESPACE app CASCADE")
        .await
        .expect_success();
    assert!(!server.data_dir().join("storage/app").exists());
}

#[tokio::test]
async fn filters_over_many_segments_return_exact_rows() {
    let server = kv_server(|_| {}).await;
    for round in 0..3 {
        insert_range(&server, "alice", "app.kv", round * 100 + 1, round * 100 + 100).await;
        server.flush_and_wait("app.kv").await;
    }
    insert_range(&server, "alice", "app.kv", 301, 310).await;
    let cases = [
        ("id = 150", 1),
        ("id > 250", 60),
        ("id BETWEEN 95 AND 105", 11),
        ("id < 0", 0),
        ("v = 'v205'", 1),
        ("v > 'v99'", 0),
        ("id >= 300", 11),
    ];
    for (predicate, expected) in cases {
        let response = server
            .execute_sql_as(
                "alice",
                PW,
                &format!("SELECT count(*) FROM app.kv WHERE {predicate}"),
            )
            .await;
        assert_eq!(response.rows(), vec![vec![json!(expected)]], "{predicate}");
    }
}

#[tokio::test]
async fn finished_jobs_leave_after_the_retention() {
    let server = kv_server(|s| s.job_retention_seconds = 1).await;
    insert_range(&server, "alice", "app.kv", 1, 5).await;
    let job_id = server.flush_table("app.kv").await;
    server.wait_for_job(&job_id).await;
    for _ in 0..100 {
        let jobs = server.execute_sql("SELECT count(*) FROM system.jobs").await;
        if jobs.rows() == vec![vec![json!(0)]] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} was not removed after the retention");
}

#[tokio::test]
async fn shutdown_cancels_queued_jobs_and_waits_for_running_ones() {
    let mut server = kv_server(|s| {
        slow_flush(s);
        s.max_concurrent_jobs = 1;
    })
    .await;
    let (running, queued) = running_and_queued(&server, 1000).await;
    // Released now, the job still has nine batches with 20 ms pauses to go: shutdown
    // must wait for it.
    server.db().holds().release("flush_batch");
    server.restart().await;
    let running = server.job(&running).await;
    assert_eq!(
        running["status"], "completed",
        "shutdown waited for it: {running}"
    );
    assert_eq!(running["rows_flushed"], 1000);
    assert_eq!(server.job(&queued).await["status"], "cancelled");
    let model: Model = (1..=1000).map(|i| (i, format!("v{i}"))).collect();
    assert_model(
        &visible(&server, "alice", "app.kv").await,
        &model,
        "after restart",
    );
    assert_eq!(visible(&server, "alice", "app.other").await.len(), 10);
}
