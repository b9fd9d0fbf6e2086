//! Compaction of USER tables' Parquet segments: fewer files, the same answers, exact
//! UNIQUE indexes, policies, exclusion with flushes, and crashes at every step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{ServerProcess, TestServer};
use crate::test_flush_crash::{assert_only_listed_segments, create_kv, flush as crash_flush, wait_completed};

const PW: &str = "pw";

/// `(id, v, tag)` rows by id.
type Model = BTreeMap<i64, (String, String)>;

async fn visible(server: &TestServer, user: &str) -> Model {
    let response = server
        .execute_sql_as(user, PW, "SELECT id, v, tag FROM app.kv ORDER BY id")
        .await;
    response.expect_success();
    (response.rows().into_iter())
        .map(|r| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_string();
            (r[0].as_i64().unwrap(), (text(&r[1]), text(&r[2])))
        })
        .collect()
}

async fn run(server: &TestServer, user: &str, sql: &str) {
    server.execute_sql_as(user, PW, sql).await.expect_success();
}

/// The Parquet files in `user`'s directory of `app.kv`.
async fn segment_files(server: &TestServer, user: &str) -> Vec<PathBuf> {
    segment_files_of(server, "kv", user).await
}

/// The Parquet files in `user`'s directory of `app.<table>`.
async fn segment_files_of(server: &TestServer, table: &str, user: &str) -> Vec<PathBuf> {
    let id = server
        .execute_sql(&format!(
            "SELECT user_id FROM system.users WHERE username = '{user}'"
        ))
        .await;
    let dir = (server.data_dir().join("storage/app").join(table)).join(id.rows()[0][0].as_str().unwrap());
    let mut files: Vec<PathBuf> = (std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

/// Waits (up to 10 s) until `user` has `count` segment files: replaced segments are
/// deleted once no reader holds them, shortly after the compaction.
async fn expect_segment_files(server: &TestServer, user: &str, count: usize) -> Vec<PathBuf> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let files = segment_files(server, user).await;
        if files.len() == count || std::time::Instant::now() > deadline {
            assert_eq!(files.len(), count, "{user}'s segment files: {files:?}");
            return files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a job of `app.kv` by `sql`, waiting while another job of the table (a
/// policy's) is queued or running; returns the job id.
async fn start_job(server: &TestServer, sql: &str) -> String {
    loop {
        let response = server.execute_sql(sql).await;
        if response.error_code() == Some("FLUSH_IN_PROGRESS") {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        response.expect_success();
        return response.rows()[0][0].as_str().unwrap().to_string();
    }
}

async fn flush(server: &TestServer) {
    let job_id = start_job(server, "STORAGE FLUSH TABLE app.kv").await;
    assert_eq!(server.wait_for_job(&job_id).await["status"], "completed");
}

async fn compact(server: &TestServer) -> Value {
    let job_id = start_job(server, "STORAGE COMPACT TABLE app.kv").await;
    let job = server.wait_for_job(&job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["job_type"], "compact", "{job}");
    job
}

/// 1 KiB of random hex (it compresses to about half).
fn kilobyte(rng: &mut crate::common::Rng) -> String {
    (0..64).map(|_| format!("{:016x}", rng.next())).collect()
}

/// The `result` column of a job's row (JSON).
fn result_of(job: &Value) -> Value {
    match &job["result"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    }
}

async fn kv_server() -> TestServer {
    kv_server_with(|_| {}).await
}

async fn kv_server_with(adjust: impl FnOnce(&mut kalamdb_server::Settings)) -> TestServer {
    let server = TestServer::start_configured(adjust).await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT, tag TEXT); \
             CREATE UNIQUE INDEX kv_tag ON app.kv (tag)",
        )
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    server.create_user("bob", PW, "user").await;
    server
}

/// Rounds of inserts, updates (of values and of UNIQUE tags) and deletes, each
/// ending with a flush: every user's scope gets one segment per round.
async fn churn(server: &TestServer, models: &mut [(&str, Model)], rounds: i64) {
    for (user, model) in models.iter_mut() {
        let values: Vec<String> = (1..=200)
            .map(|i| format!("({i}, 'v{i}', '{user}-t{i}')"))
            .collect();
        run(
            server,
            user,
            &format!("INSERT INTO app.kv VALUES {}", values.join(",")),
        )
        .await;
        model.extend((1..=200).map(|i| (i, (format!("v{i}"), format!("{user}-t{i}")))));
    }
    flush(server).await;
    for round in 1..=rounds {
        for (user, model) in models.iter_mut() {
            let user = *user;
            run(
                server,
                user,
                &format!("UPDATE app.kv SET v = 'r{round}' WHERE id % 5 = {round}"),
            )
            .await;
            run(
                server,
                user,
                &format!("UPDATE app.kv SET tag = '{user}-x{round}-' || id WHERE id % 11 = {round}"),
            )
            .await;
            run(
                server,
                user,
                &format!("DELETE FROM app.kv WHERE id % 7 = {round}"),
            )
            .await;
            let new: Vec<i64> = (1..=10).map(|i| 200 + round * 10 + i).collect();
            let values: Vec<String> = new
                .iter()
                .map(|i| format!("({i}, 'n{i}', '{user}-t{i}')"))
                .collect();
            run(
                server,
                user,
                &format!("INSERT INTO app.kv VALUES {}", values.join(",")),
            )
            .await;
            for (id, (v, tag)) in model.iter_mut() {
                if id % 5 == round {
                    *v = format!("r{round}");
                }
                if id % 11 == round {
                    *tag = format!("{user}-x{round}-{id}");
                }
            }
            model.retain(|id, _| id % 7 != round);
            model.extend(
                new.iter()
                    .map(|&i| (i, (format!("n{i}"), format!("{user}-t{i}")))),
            );
        }
        flush(server).await;
    }
}

async fn check(server: &TestServer, models: &[(&str, Model)], step: &str) {
    for (user, model) in models {
        assert_eq!(&visible(server, user).await, model, "{step}: {user}'s rows");
        for id in [1i64, 5, 7, 11, 215] {
            let point = server
                .execute_sql_as(user, PW, &format!("SELECT v, tag FROM app.kv WHERE id = {id}"))
                .await;
            let expected: Vec<Vec<Value>> = (model.get(&id).into_iter())
                .map(|(v, tag)| vec![json!(v), json!(tag)])
                .collect();
            assert_eq!(point.rows(), expected, "{step}: {user}'s row {id} by key");
        }
    }
}

#[tokio::test]
async fn compaction_leaves_one_segment_per_user_and_every_answer_unchanged() {
    let mut server = kv_server().await;
    let mut models = vec![("alice", Model::new()), ("bob", Model::new())];
    churn(&server, &mut models, 3).await;
    check(&server, &models, "before compaction").await;
    assert_eq!(segment_files(&server, "alice").await.len(), 4);

    let job = compact(&server).await;
    let result = result_of(&job);
    assert_eq!(result["users_compacted"], 2, "{result}");
    assert_eq!(result["segments_in"], 8, "{result}");
    assert_eq!(result["segments_out"], 2, "{result}");
    let kept: u64 = models.iter().map(|(_, m)| m.len() as u64).sum();
    assert_eq!(result["rows_kept"], kept, "{result}");
    assert!(result["rows_dropped"].as_u64().unwrap() > 100, "{result}");
    assert!(
        result["bytes_out"].as_u64().unwrap() < result["bytes_in"].as_u64().unwrap(),
        "{result}"
    );
    for user in ["alice", "bob"] {
        expect_segment_files(&server, user, 1).await;
    }
    check(&server, &models, "after compaction").await;
    let stats = server
        .execute_sql_as("alice", PW, "SHOW STATS FOR TABLE app.kv")
        .await;
    stats.expect_success();
    let columns = stats.column_names();
    let at = |name: &str| stats.rows()[0][columns.iter().position(|c| c == name).unwrap()].clone();
    assert_eq!(at("cold_files"), json!(1));
    assert_eq!(at("cold_rows"), json!(models[0].1.len()));

    // UNIQUE stays exact: a tag only a dropped version held is free, a live one is not.
    run(
        &server,
        "alice",
        "INSERT INTO app.kv VALUES (900, 'free', 'alice-t12')",
    )
    .await;
    models[0].1.insert(900, ("free".into(), "alice-t12".into()));
    let taken = models[0].1[&6].1.clone();
    server
        .execute_sql_as(
            "alice",
            PW,
            &format!("INSERT INTO app.kv VALUES (901, 'x', '{taken}')"),
        )
        .await
        .expect_error(409, "DUPLICATE_KEY");

    // Compacted rows change and go like any others, and never come back.
    run(&server, "alice", "UPDATE app.kv SET v = 'late' WHERE id = 5").await;
    run(&server, "alice", "DELETE FROM app.kv WHERE id = 11").await;
    models[0].1.get_mut(&5).unwrap().0 = "late".into();
    models[0].1.remove(&11);
    check(&server, &models, "written after compaction").await;
    flush(&server).await;
    compact(&server).await;
    expect_segment_files(&server, "alice", 1).await;
    check(&server, &models, "compacted again").await;
    server.restart().await;
    check(&server, &models, "after a restart").await;

    // A table with nothing to compact is left as it is.
    let again = compact(&server).await;
    let result = result_of(&again);
    assert_eq!(result["users_compacted"], 0, "{result}");
}

#[tokio::test]
async fn a_compact_policy_compacts_by_itself_and_jobs_of_a_table_exclude_each_other() {
    let server = kv_server().await;
    server
        .execute_sql(
            "CREATE USER TABLE app.p (id BIGINT PRIMARY KEY, v TEXT) WITH (COMPACT_POLICY = 'segments:2')",
        )
        .await
        .expect_success();
    let policy = server
        .execute_sql("SELECT compact_policy FROM system.tables WHERE table_name = 'p'")
        .await;
    assert_eq!(policy.rows(), vec![vec![json!("segments:2")]]);
    for bad in ["'segments:0'", "'rows:5'", "'segments'"] {
        server
            .execute_sql(&format!(
                "CREATE USER TABLE app.bad (id INT PRIMARY KEY) WITH (COMPACT_POLICY = {bad})"
            ))
            .await
            .expect_error(400, "INVALID_SQL");
    }
    server
        .execute_sql("CREATE SHARED TABLE app.s (id INT PRIMARY KEY) WITH (COMPACT_POLICY = 'segments:2')")
        .await
        .expect_error(400, "INVALID_SQL");

    for round in 0..3 {
        let values: Vec<String> = (1..=20).map(|i| format!("({}, 'v')", round * 100 + i)).collect();
        run(
            &server,
            "alice",
            &format!("INSERT INTO app.p VALUES {}", values.join(",")),
        )
        .await;
        server.flush_and_wait("app.p").await;
    }
    // Three segments, more than the policy's two: the ticker starts a compaction.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let job = loop {
        let jobs = server
            .execute_sql(
                "SELECT job_id, status, trigger, result FROM system.jobs \
                 WHERE job_type = 'compact' AND table_name = 'p' AND status = 'completed'",
            )
            .await;
        if let Some(row) = jobs.rows().first() {
            break row.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no policy compaction");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job[2], "policy");
    let result = result_of(&json!({ "result": job[3] }));
    assert_eq!(result["segments_in"], 3, "{result}");
    assert_eq!(result["segments_out"], 1, "{result}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while segment_files_of(&server, "p", "alice").await.len() != 1 {
        assert!(std::time::Instant::now() < deadline, "alice's files of app.p");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = server
        .execute_sql_as("alice", PW, "SELECT count(*) FROM app.p")
        .await;
    assert_eq!(count.rows(), vec![vec![json!(60)]]);

    // A compaction waits for no flush of its table: it is refused while one runs.
    run(&server, "alice", "INSERT INTO app.kv VALUES (1, 'a', 'a')").await;
    server.db().holds().hold("flush_start");
    let flush = server.flush_table("app.kv").await;
    server.wait_at_hold("flush_start").await;
    server
        .execute_sql("STORAGE COMPACT TABLE app.kv")
        .await
        .expect_error(409, "FLUSH_IN_PROGRESS");
    let all = server.execute_sql("STORAGE COMPACT ALL IN app").await;
    all.expect_success();
    assert!(all.body.to_string().contains("app.kv"), "{}", all.body);
    server.db().holds().release("flush_start");
    assert_eq!(server.wait_for_job(&flush).await["status"], "completed");
    server
        .execute_sql("STORAGE COMPACT TABLE app.nope")
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    server
        .execute_sql_as("alice", PW, "STORAGE COMPACT TABLE app.kv")
        .await
        .expect_error(403, "PERMISSION_DENIED");
}

async fn rows_of(server: &ServerProcess) -> Vec<Vec<Value>> {
    let response = server
        .sql_as("alice", PW, "SELECT id, v FROM app.kv ORDER BY id")
        .await;
    response.expect_success();
    response.rows()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_compaction_loses_duplicates_and_resurrects_nothing() {
    for step in [
        "compact_segment_written",
        "compact_manifest_saved",
        "compact_committed",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::spawn(dir.path());
        create_kv(&server).await;
        for round in 0..3 {
            let values: Vec<String> = (1..=100).map(|i| format!("({i}, 'r{round}')")).collect();
            let sql = format!(
                "INSERT INTO app.kv VALUES {} ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
                values.join(",")
            );
            server.sql_as("alice", PW, &sql).await.expect_success();
            server
                .sql_as(
                    "alice",
                    PW,
                    &format!("DELETE FROM app.kv WHERE id % 10 = {round}"),
                )
                .await
                .expect_success();
            wait_completed(&server, &crash_flush(&server).await).await;
        }
        let before = rows_of(&server).await;
        assert_eq!(
            before.len(),
            90,
            "{step}: rows 1..=100 but for the last round's tenth"
        );
        server.kill_9();

        let server = ServerProcess::spawn_with_env(dir.path(), &[("KALAMDB_FAILPOINT", step)]);
        server.sql("STORAGE COMPACT TABLE app.kv").await.expect_success();
        let status = server.wait_for_exit(Duration::from_secs(60)).await;
        assert!(!status.success(), "{step}: the process aborted");

        let server = ServerProcess::spawn(dir.path());
        assert_eq!(rows_of(&server).await, before, "{step}: rows after the crash");
        assert_only_listed_segments(&dir.path().join("storage"));
        // Deleted rows stay deleted when written again around them, and a compaction
        // after the crash completes.
        server
            .sql_as("alice", PW, "UPDATE app.kv SET v = 'after' WHERE id = 1")
            .await
            .expect_success();
        wait_completed(&server, &job_of(&server, "STORAGE COMPACT TABLE app.kv").await).await;
        let mut expected = before.clone();
        for row in expected.iter_mut().filter(|r| r[0] == 1) {
            row[1] = json!("after");
        }
        assert_eq!(
            rows_of(&server).await,
            expected,
            "{step}: rows after a second compaction"
        );
        server.kill_9();
    }
}

/// Rounds of random writes by three users (inserts, updates of values and of UNIQUE
/// tags, deletes, upserts), random flushes, compactions (by statement and by a
/// `segments:3` policy) and restarts; after every round each user's rows, counts and
/// lookups by tag equal a model's. The seed comes from `KALAMDB_TEST_SEED` (default
/// fixed) and is in every failure message.
#[tokio::test]
async fn random_writes_flushes_compactions_and_restarts_match_a_model() {
    let seed: u64 = std::env::var("KALAMDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_5eed);
    let mut rng = crate::common::Rng(seed | 1);
    let mut server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT, tag TEXT) WITH (COMPACT_POLICY = 'segments:3'); \
             CREATE UNIQUE INDEX kv_tag ON app.kv (tag)",
        )
        .await
        .expect_success();
    let users = ["alice", "bob", "carol"];
    for user in users {
        server.create_user(user, PW, "user").await;
    }
    let mut models: Vec<(&str, Model)> = users.iter().map(|u| (*u, Model::new())).collect();
    for round in 0..8 {
        for (user, model) in models.iter_mut() {
            for op in 0..20 {
                let id = 1 + rng.below(40) as i64;
                let tag_taken = |model: &Model, tag: &str, except: i64| {
                    model.iter().any(|(other, (_, t))| *other != except && t == tag)
                };
                match rng.below(5) {
                    0 => {
                        let (v, tag) = (format!("i{round}.{op}"), format!("k{}", rng.below(60)));
                        let response = server
                            .execute_sql_as(
                                user,
                                PW,
                                &format!("INSERT INTO app.kv VALUES ({id}, '{v}', '{tag}')"),
                            )
                            .await;
                        if model.contains_key(&id) || tag_taken(model, &tag, id) {
                            response.expect_error(409, "DUPLICATE_KEY");
                        } else {
                            response.expect_success();
                            model.insert(id, (v, tag));
                        }
                    }
                    1 => {
                        let v = format!("u{round}.{op}");
                        run(
                            &server,
                            user,
                            &format!("UPDATE app.kv SET v = '{v}' WHERE id = {id}"),
                        )
                        .await;
                        if let Some(row) = model.get_mut(&id) {
                            row.0 = v;
                        }
                    }
                    2 => {
                        let tag = format!("k{}", rng.below(60));
                        let response = server
                            .execute_sql_as(
                                user,
                                PW,
                                &format!("UPDATE app.kv SET tag = '{tag}' WHERE id = {id}"),
                            )
                            .await;
                        if model.contains_key(&id) && tag_taken(model, &tag, id) {
                            response.expect_error(409, "DUPLICATE_KEY");
                        } else {
                            response.expect_success();
                            if let Some(row) = model.get_mut(&id) {
                                row.1 = tag;
                            }
                        }
                    }
                    3 => {
                        run(&server, user, &format!("DELETE FROM app.kv WHERE id = {id}")).await;
                        model.remove(&id);
                    }
                    _ => {
                        let v = format!("o{round}.{op}");
                        let tag = model.get(&id).map_or(format!("n{round}.{op}"), |r| r.1.clone());
                        run(
                            &server,
                            user,
                            &format!(
                                "INSERT INTO app.kv VALUES ({id}, '{v}', '{tag}') \
                                 ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v"
                            ),
                        )
                        .await;
                        model.entry(id).or_insert((String::new(), tag)).0 = v;
                    }
                }
            }
        }
        let action = rng.below(4);
        flush(&server).await;
        match action {
            0 => {
                compact(&server).await;
            }
            1 => server.restart().await,
            _ => {}
        }
        let step = format!("seed {seed}, round {round}, action {action}");
        for (user, model) in &models {
            assert_eq!(&visible(&server, user).await, model, "{step}: {user}'s rows");
            let count = server
                .execute_sql_as(user, PW, "SELECT count(*) FROM app.kv")
                .await;
            assert_eq!(
                count.rows(),
                vec![vec![json!(model.len())]],
                "{step}: {user}'s count"
            );
            for n in [0, 7, 13, 42] {
                let tag = format!("k{n}");
                let found = server
                    .execute_sql_as(user, PW, &format!("SELECT id FROM app.kv WHERE tag = '{tag}'"))
                    .await;
                let expected: Vec<Vec<Value>> = (model.iter())
                    .filter(|(_, (_, t))| *t == tag)
                    .map(|(id, _)| vec![json!(id)])
                    .collect();
                assert_eq!(found.rows(), expected, "{step}: {user}'s rows tagged {tag}");
            }
        }
    }
    // Flushes until alice's scope is over the policy's three segments: the ticker
    // compacts it, and every answer stays the same.
    for n in 0..4 {
        run(
            &server,
            "alice",
            &format!("INSERT INTO app.kv VALUES ({}, 'p', 'p{n}')", 1000 + n),
        )
        .await;
        models[0].1.insert(1000 + n, ("p".into(), format!("p{n}")));
        flush(&server).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let by_policy = server
            .execute_sql(
                "SELECT count(*) FROM system.jobs \
                 WHERE job_type = 'compact' AND trigger = 'policy' AND status = 'completed'",
            )
            .await;
        if by_policy.rows()[0][0].as_u64().unwrap() > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seed {seed}: no policy compaction"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (user, model) in &models {
        assert_eq!(
            &visible(&server, user).await,
            model,
            "seed {seed}, after the policy: {user}'s rows"
        );
    }
}

#[tokio::test]
async fn writes_during_a_compaction_count_and_kill_job_stops_one() {
    let server = kv_server().await;
    let mut models = vec![("alice", Model::new()), ("bob", Model::new())];
    churn(&server, &mut models, 2).await;
    // Held after its first batch, the compaction has read the snapshot it keeps rows
    // from; rows it is copying change meanwhile.
    server.db().holds().hold("compact_batch");
    let response = server.execute_sql("STORAGE COMPACT TABLE app.kv").await;
    response.expect_success();
    let job_id = response.rows()[0][0].as_str().unwrap().to_string();
    server.wait_at_hold("compact_batch").await;
    run(
        &server,
        "alice",
        "UPDATE app.kv SET v = 'during' WHERE id IN (4, 6)",
    )
    .await;
    run(&server, "alice", "DELETE FROM app.kv WHERE id IN (5, 13)").await;
    run(
        &server,
        "alice",
        "INSERT INTO app.kv VALUES (5, 'back', 'alice-back')",
    )
    .await;
    for id in [4, 6] {
        models[0].1.get_mut(&id).unwrap().0 = "during".into();
    }
    models[0].1.remove(&13);
    models[0].1.insert(5, ("back".into(), "alice-back".into()));
    check(&server, &models, "during the compaction").await;
    server.db().holds().release("compact_batch");
    assert_eq!(server.wait_for_job(&job_id).await["status"], "completed");
    check(&server, &models, "after the compaction").await;
    flush(&server).await;
    compact(&server).await;
    check(&server, &models, "flushed and compacted again").await;

    // KILL JOB stops a compaction between batches: nothing changes, no file is left.
    run(&server, "bob", "UPDATE app.kv SET v = 'k' WHERE id = 4").await;
    models[1].1.get_mut(&4).unwrap().0 = "k".into();
    flush(&server).await;
    let before = segment_files(&server, "bob").await;
    server.db().holds().hold("compact_batch");
    let response = server.execute_sql("STORAGE COMPACT TABLE app.kv").await;
    let job_id = response.rows()[0][0].as_str().unwrap().to_string();
    server.wait_at_hold("compact_batch").await;
    let kill = format!("KILL JOB '{job_id}'");
    let killed = server.execute_sql(&kill);
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.db().holds().release("compact_batch");
    };
    let (killed, ()) = tokio::join!(killed, release);
    killed.expect_success();
    assert_eq!(server.wait_for_job(&job_id).await["status"], "cancelled");
    check(&server, &models, "after a killed compaction").await;
    assert_eq!(
        segment_files(&server, "bob").await,
        before,
        "bob's files unchanged"
    );
}

#[tokio::test]
async fn a_compaction_writes_segments_of_its_target_size() {
    let server = TestServer::start_configured(|s| {
        s.compaction_target_mb = 1;
        s.flush_batch_rows = 200;
    })
    .await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT, tag TEXT)",
        )
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    let mut rng = crate::common::Rng(0x1234_5678_9abc_def1);
    let mut model = Model::new();
    for round in 0..3 {
        let values: Vec<String> = (1..=1000)
            .map(|i| {
                let id = round * 1000 + i;
                let v = kilobyte(&mut rng);
                model.insert(id, (v.clone(), String::new()));
                format!("({id}, '{v}', NULL)")
            })
            .collect();
        run(
            &server,
            "alice",
            &format!("INSERT INTO app.kv VALUES {}", values.join(",")),
        )
        .await;
        flush(&server).await;
    }
    let job = compact(&server).await;
    let result = result_of(&job);
    let segments_out = result["segments_out"].as_u64().unwrap();
    assert!((2..6).contains(&segments_out), "{result}");
    let files = expect_segment_files(&server, "alice", segments_out as usize).await;
    for file in &files {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size < 3 << 20, "{}: {size} bytes", file.display());
    }
    assert_eq!(
        visible(&server, "alice").await,
        model,
        "rows over several segments"
    );
    // Rows of every output segment by key, then a flush after it (the next batch number
    // must be free) and another compaction.
    for id in [1i64, 999, 1500, 2001, 3000] {
        let point = server
            .execute_sql_as("alice", PW, &format!("SELECT v FROM app.kv WHERE id = {id}"))
            .await;
        assert_eq!(point.rows(), vec![vec![json!(model[&id].0)]], "row {id} by key");
    }
    run(
        &server,
        "alice",
        "UPDATE app.kv SET v = 'late' WHERE id IN (2, 2500)",
    )
    .await;
    run(&server, "alice", "INSERT INTO app.kv VALUES (5000, 'new', NULL)").await;
    for id in [2, 2500] {
        model.get_mut(&id).unwrap().0 = "late".into();
    }
    model.insert(5000, ("new".into(), String::new()));
    flush(&server).await;
    assert_eq!(
        visible(&server, "alice").await,
        model,
        "flushed after the compaction"
    );
    compact(&server).await;
    assert_eq!(visible(&server, "alice").await, model, "compacted again");
    for id in [2i64, 2500, 5000] {
        let point = server
            .execute_sql_as("alice", PW, &format!("SELECT v FROM app.kv WHERE id = {id}"))
            .await;
        assert_eq!(
            point.rows(),
            vec![vec![json!(model[&id].0)]],
            "row {id} by key, again"
        );
    }
}

#[tokio::test]
async fn a_scan_reading_across_a_compaction_reads_every_row_and_its_files_outlive_it() {
    let server = TestServer::start_configured(|s| s.flush_batch_rows = 500).await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT, tag TEXT)",
        )
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    let mut rng = crate::common::Rng(0x0dd_ba11_5eed_1234);
    for round in 0..4 {
        for part in 0..4 {
            let values: Vec<String> = (1..=1000)
                .map(|i| {
                    let v = kilobyte(&mut rng);
                    format!("({}, '{v}', NULL)", round * 4000 + part * 1000 + i)
                })
                .collect();
            run(
                &server,
                "alice",
                &format!("INSERT INTO app.kv VALUES {}", values.join(",")),
            )
            .await;
        }
        flush(&server).await;
    }
    // A streamed scan of 16 MB read one chunk at a time: it holds the manifest it
    // reads until it ends, across the compaction.
    let mut response = server
        .client()
        .post(server.url("/sql?format=ndjson"))
        .basic_auth("alice", Some(PW))
        .body("SELECT id, v FROM app.kv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    compact(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        segment_files(&server, "alice").await.len(),
        5,
        "the replaced files stay while the scan reads"
    );
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let ids: std::collections::BTreeSet<i64> = (String::from_utf8(body).unwrap().lines())
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 16_000, "every row, once");
    expect_segment_files(&server, "alice", 1).await;
    let count = server
        .execute_sql_as("alice", PW, "SELECT count(*) FROM app.kv")
        .await;
    assert_eq!(count.rows(), vec![vec![json!(16_000)]]);
}

#[tokio::test]
async fn compaction_keeps_rows_of_every_schema_the_table_had() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE NAMESPACE app; CREATE USER TABLE app.s (id BIGINT PRIMARY KEY, a TEXT, b INT)")
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    let flush_s = || async {
        let job_id = start_job(&server, "STORAGE FLUSH TABLE app.s").await;
        assert_eq!(server.wait_for_job(&job_id).await["status"], "completed");
    };
    run(
        &server,
        "alice",
        "INSERT INTO app.s VALUES (1, 'one', 10), (2, 'two', 20)",
    )
    .await;
    flush_s().await;
    server
        .execute_sql("ALTER TABLE app.s ADD COLUMN c TEXT DEFAULT 'c0'")
        .await
        .expect_success();
    run(
        &server,
        "alice",
        "INSERT INTO app.s (id, a, b, c) VALUES (3, 'three', 30, 'c3')",
    )
    .await;
    run(&server, "alice", "UPDATE app.s SET b = 11 WHERE id = 1").await;
    flush_s().await;
    server
        .execute_sql("ALTER TABLE app.s DROP COLUMN a")
        .await
        .expect_success();
    run(
        &server,
        "alice",
        "INSERT INTO app.s (id, b, c) VALUES (4, 40, 'c4')",
    )
    .await;
    flush_s().await;
    let query = "SELECT id, b, c FROM app.s ORDER BY id";
    let before = server.execute_sql_as("alice", PW, query).await.rows();
    assert_eq!(
        before,
        vec![
            vec![json!(1), json!(11), json!("c0")],
            vec![json!(2), json!(20), json!("c0")],
            vec![json!(3), json!(30), json!("c3")],
            vec![json!(4), json!(40), json!("c4")],
        ]
    );
    let job_id = start_job(&server, "STORAGE COMPACT TABLE app.s").await;
    let job = server.wait_for_job(&job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(result_of(&job)["segments_in"], 3);
    assert_eq!(server.execute_sql_as("alice", PW, query).await.rows(), before);
    server
        .execute_sql("ALTER TABLE app.s ADD COLUMN a TEXT")
        .await
        .expect_success();
    let readded = server
        .execute_sql_as("alice", PW, "SELECT count(a) FROM app.s")
        .await;
    assert_eq!(
        readded.rows(),
        vec![vec![json!(0)]],
        "a re-added column is a new column"
    );
}

async fn job_of(server: &ServerProcess, sql: &str) -> String {
    let response = server.sql(sql).await;
    response.expect_success();
    response.rows()[0][0].as_str().unwrap().to_string()
}

/// The randomized rounds with the real binary: random writes by two users and a flush,
/// then — in a random order — a compaction killed at each of its steps
/// (`KALAMDB_FAILPOINT`), compactions, and `kill -9`s; after every round each user's rows
/// equal the model's and every segment on disk is listed. The seed comes from
/// `KALAMDB_TEST_SEED` (default fixed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_rounds_with_crashes_at_every_compaction_step_match_a_model() {
    const STEPS: [&str; 3] = [
        "compact_segment_written",
        "compact_manifest_saved",
        "compact_committed",
    ];
    let seed: u64 = std::env::var("KALAMDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_5eed);
    let mut rng = crate::common::Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(dir.path());
    create_kv(&server).await;
    let mut models: Vec<(&str, BTreeMap<i64, String>)> =
        vec![("alice", BTreeMap::new()), ("bob", BTreeMap::new())];
    // What ends each round, in a random order: a crash at each compaction step, two
    // compactions, two kill -9s.
    let mut plan: Vec<Option<&str>> = STEPS.iter().map(|s| Some(*s)).collect();
    plan.extend([None, None, None, None]);
    let mut kills = [false, false, false, false, false, true, true];
    for i in (1..plan.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        plan.swap(i, j);
        kills.swap(i, j);
    }
    for (round, (crash_at, kill)) in plan.into_iter().zip(kills).enumerate() {
        for (user, model) in models.iter_mut() {
            for op in 0..15 {
                let id = 1 + rng.below(30) as i64;
                let v = format!("{round}.{op}");
                let sql = match (op, rng.below(3)) {
                    (0, _) | (_, 0) => {
                        model.insert(id, v.clone());
                        format!(
                            "INSERT INTO app.kv VALUES ({id}, '{v}') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v"
                        )
                    }
                    (_, 1) => {
                        if let Some(slot) = model.get_mut(&id) {
                            *slot = v.clone();
                        }
                        format!("UPDATE app.kv SET v = '{v}' WHERE id = {id}")
                    }
                    _ => {
                        model.remove(&id);
                        format!("DELETE FROM app.kv WHERE id = {id}")
                    }
                };
                server.sql_as(user, PW, &sql).await.expect_success();
            }
        }
        wait_completed(&server, &crash_flush(&server).await).await;
        let action = format!("{crash_at:?}, kill {kill}");
        match (crash_at, kill) {
            (Some(step), _) => {
                server.kill_9();
                let crashing = ServerProcess::spawn_with_env(dir.path(), &[("KALAMDB_FAILPOINT", step)]);
                crashing
                    .sql("STORAGE COMPACT TABLE app.kv")
                    .await
                    .expect_success();
                let status = crashing.wait_for_exit(Duration::from_secs(60)).await;
                assert!(!status.success(), "seed {seed}, round {round}: aborted at {step}");
                server = ServerProcess::spawn(dir.path());
            }
            (None, false) => {
                wait_completed(&server, &job_of(&server, "STORAGE COMPACT TABLE app.kv").await).await;
            }
            (None, true) => {
                server.kill_9();
                server = ServerProcess::spawn(dir.path());
            }
        }
        for (user, model) in &models {
            let rows = server
                .sql_as(user, PW, "SELECT id, v FROM app.kv ORDER BY id")
                .await
                .rows();
            let expected: Vec<Vec<Value>> = model.iter().map(|(id, v)| vec![json!(id), json!(v)]).collect();
            assert_eq!(
                rows, expected,
                "seed {seed}, round {round}, action {action}: {user}'s rows"
            );
        }
        assert_only_listed_segments(&dir.path().join("storage"));
    }
    server.kill_9();
}

#[tokio::test]
async fn a_compact_policy_leaves_a_scope_of_full_segments_alone() {
    let server = TestServer::start_configured(|s| {
        s.compaction_target_mb = 1;
        s.flush_batch_rows = 100;
    })
    .await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.big (id BIGINT PRIMARY KEY, v TEXT) WITH (COMPACT_POLICY = 'segments:1')",
        )
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    let mut rng = crate::common::Rng(0x0005_eed0_fb16);
    for round in 0..6 {
        let values: Vec<String> = (1..=500)
            .map(|i| {
                let v = kilobyte(&mut rng);
                format!("({}, '{v}')", round * 500 + i)
            })
            .collect();
        run(
            &server,
            "alice",
            &format!("INSERT INTO app.big VALUES {}", values.join(",")),
        )
        .await;
        let job_id = start_job(&server, "STORAGE FLUSH TABLE app.big").await;
        assert_eq!(server.wait_for_job(&job_id).await["status"], "completed");
    }
    let compactions = || async {
        let response = server
            .execute_sql("SELECT count(*) FROM system.jobs WHERE job_type = 'compact'")
            .await;
        response.rows()[0][0].as_u64().unwrap()
    };
    // The policy compacts while small segments pile up, then stops: what it wrote is
    // full, and rewriting it again would leave as many files.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut settled = compactions().await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = compactions().await;
        if now == settled && now > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the policy never settles: {now} compactions"
        );
        settled = now;
    }
    let count = server
        .execute_sql_as("alice", PW, "SELECT count(*) FROM app.big")
        .await;
    assert_eq!(count.rows(), vec![vec![json!(3000)]]);
}

/// With `sync_writes`, a commit writes on a blocking task and records what a running
/// compaction must keep there: the same writes during a held compaction count.
#[tokio::test]
async fn writes_during_a_compaction_count_with_synced_writes() {
    let server = kv_server_with(|s| s.sync_writes = true).await;
    let mut models = vec![("alice", Model::new()), ("bob", Model::new())];
    churn(&server, &mut models, 2).await;
    server.db().holds().hold("compact_batch");
    let job_id = start_job(&server, "STORAGE COMPACT TABLE app.kv").await;
    server.wait_at_hold("compact_batch").await;
    run(
        &server,
        "alice",
        "UPDATE app.kv SET v = 'during' WHERE id IN (4, 6)",
    )
    .await;
    run(&server, "alice", "DELETE FROM app.kv WHERE id = 13").await;
    for id in [4, 6] {
        models[0].1.get_mut(&id).unwrap().0 = "during".into();
    }
    models[0].1.remove(&13);
    server.db().holds().release("compact_batch");
    assert_eq!(server.wait_for_job(&job_id).await["status"], "completed");
    check(&server, &models, "after the compaction, synced writes").await;
}
