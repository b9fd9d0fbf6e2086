//! Crash safety of flushing: the real binary is aborted at each step of a flush
//! (the `KALAMDB_FAILPOINT` hook, as `kill -9` would stop it there), restarted, and
//! the visible rows must be exactly the acknowledged ones, none twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::common::ServerProcess;
use crate::common::s3::{Moto, assert_only_listed_objects};

const PW: &str = "pw";
const STEPS: &[&str] = &[
    "flush_started",
    "segment_partial",
    "segment_written",
    "manifest_saved",
    "scope_committed",
    "before_completed",
];

/// A power loss that takes back the unsynced tail of the WAL, including the record
/// of the flush's start (its watermark), while the fsynced segments and manifests
/// stay: recovery must work from the manifests alone.
const LOST_START_STEPS: &[&str] = &[
    "lose_flush_start,manifest_saved",
    "lose_flush_start,scope_committed",
    "lose_flush_start,before_completed",
];

type Model = BTreeMap<i64, String>;

async fn visible(server: &ServerProcess, user: &str) -> Model {
    let response = server
        .sql_as(user, PW, "SELECT id, v FROM app.kv ORDER BY id")
        .await;
    response.expect_success();
    response
        .rows()
        .into_iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect()
}

async fn check(server: &ServerProcess, models: &[(&str, &Model)], step: &str) {
    for (user, model) in models {
        assert_eq!(&visible(server, user).await, *model, "{step}: {user}'s rows");
        let counts = server
            .sql_as(user, PW, "SELECT count(*), count(DISTINCT id) FROM app.kv")
            .await;
        assert_eq!(
            counts.rows(),
            vec![vec![json!(model.len()), json!(model.len())]],
            "{step}: {user} sees no row twice"
        );
    }
}

/// Waits until the job has finished; returns its status and error message.
pub(crate) async fn wait_finished(server: &ServerProcess, job_id: &str) -> (String, String) {
    for _ in 0..1000 {
        let job = server
            .sql(&format!(
                "SELECT status, error_message FROM system.jobs WHERE job_id = '{job_id}'"
            ))
            .await;
        let row = &job.rows()[0];
        let status = row[0].as_str().unwrap_or("").to_string();
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            return (status, row[1].as_str().unwrap_or("").to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {job_id} did not finish");
}

pub(crate) async fn wait_completed(server: &ServerProcess, job_id: &str) {
    let (status, message) = wait_finished(server, job_id).await;
    assert_eq!(status, "completed", "job {job_id} ended: {message}");
}

/// `app.kv (id BIGINT PRIMARY KEY, v TEXT)` and the users alice and bob.
pub(crate) async fn create_kv(server: &ServerProcess) {
    create_kv_with(server, "").await;
}

/// [`create_kv`] with `options` after the table's columns (`WITH (STORAGE = …)`).
async fn create_kv_with(server: &ServerProcess, options: &str) {
    server
        .sql(&format!(
            "CREATE NAMESPACE app; CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT) {options}; \
             CREATE USER alice WITH PASSWORD '{PW}' ROLE user; CREATE USER bob WITH PASSWORD '{PW}' ROLE user"
        ))
        .await
        .expect_success();
}

/// Inserts `(i, '<user><i>')` for every i of `ids` as `user`, and into its model.
async fn insert_rows(
    server: &ServerProcess,
    user: &str,
    ids: std::ops::RangeInclusive<i64>,
    model: &mut Model,
) {
    let values: Vec<String> = ids.clone().map(|i| format!("({i}, '{user}{i}')")).collect();
    server
        .sql_as(
            user,
            PW,
            &format!("INSERT INTO app.kv VALUES {}", values.join(",")),
        )
        .await
        .expect_success();
    model.extend(ids.map(|i| (i, format!("{user}{i}"))));
}

pub(crate) async fn flush(server: &ServerProcess) -> String {
    let response = server.sql("STORAGE FLUSH TABLE app.kv").await;
    response.expect_success();
    response.rows()[0][0].as_str().unwrap().to_string()
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_with_suffix(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path.display().to_string());
        }
    }
    out
}

/// Every Parquet file on disk is listed by its directory's manifest.
pub(crate) fn assert_only_listed_segments(storage: &Path) {
    for file in files_with_suffix(storage, ".parquet") {
        let path = Path::new(&file);
        let manifest = crate::common::read_manifest(path.parent().unwrap());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            manifest["segments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["file"] == name),
            "{file} is not in its manifest"
        );
    }
}

async fn crash_at(step: &str, s3: Option<&Moto>) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path());
    match s3 {
        Some(moto) => {
            server
                .sql(&moto.create_storage_sql("s3", step))
                .await
                .expect_success();
            create_kv_with(&server, "WITH (STORAGE = 's3')").await;
        }
        None => create_kv(&server).await,
    }
    let mut alice = Model::new();
    let mut bob = Model::new();
    for (user, model) in [("alice", &mut alice), ("bob", &mut bob)] {
        insert_rows(&server, user, 1..=300, model).await;
    }
    // A first, complete flush; then changes to cold rows and new hot rows.
    let first = flush(&server).await;
    wait_completed(&server, &first).await;
    for (user, model) in [("alice", &mut alice), ("bob", &mut bob)] {
        server
            .sql_as(user, PW, "UPDATE app.kv SET v = 'upd' WHERE id <= 20")
            .await
            .expect_success();
        server
            .sql_as(user, PW, "DELETE FROM app.kv WHERE id > 280")
            .await
            .expect_success();
        insert_rows(&server, user, 301..=400, model).await;
        for i in 1..=20 {
            model.insert(i, "upd".into());
        }
        for i in 281..=300 {
            model.remove(&i);
        }
    }
    check(&server, &[("alice", &alice), ("bob", &bob)], "before the crash").await;
    server.kill_9();

    // The flush that crashes; small batches, so a segment is written in several
    // steps (`segment_partial` stops after the first).
    let server = ServerProcess::spawn_with(
        dir.path(),
        &["--flush-batch-rows", "64"],
        &[("KALAMDB_FAILPOINT", step)],
    );
    let crashing = flush(&server).await;
    let status = server.wait_for_exit(Duration::from_secs(60)).await;
    assert!(!status.success(), "{step}: the process aborted");

    let server = ServerProcess::spawn(dir.path());
    check(&server, &[("alice", &alice), ("bob", &bob)], step).await;
    let job = server
        .sql(&format!(
            "SELECT status, error_message FROM system.jobs WHERE job_id = '{crashing}'"
        ))
        .await;
    job.expect_success();
    if step.starts_with("lose_flush_start") {
        // The record of the start was lost: the store knew the job as `queued`
        // (cancelled at start-up), or as `running` from a later progress record.
        let status = job.rows()[0][0].clone();
        assert!(status == "cancelled" || status == "failed", "{step}: {status}");
    } else {
        assert_eq!(job.rows()[0][0], "failed", "{step}");
        assert!(
            job.rows()[0][1].as_str().unwrap().contains("interrupted"),
            "{step}"
        );
    }
    let storage = dir.path().join("storage");
    assert!(
        files_with_suffix(&storage, ".tmp").is_empty(),
        "{step}: temporary files removed"
    );
    assert_only_listed_segments(&storage);
    if let Some(moto) = s3 {
        assert!(
            !storage.join("app/kv").exists(),
            "{step}: nothing on the local disk"
        );
        assert_only_listed_objects(moto, &format!("{step}/")).await;
    }
    // Writes work and a new flush completes; the rows are still exact. Updating and
    // deleting rows the crashed flush moved to Parquet must hide their old versions
    // (the watermark recovery restored makes these writes leave stale markers).
    for (user, model) in [("alice", &mut alice), ("bob", &mut bob)] {
        server
            .sql_as(user, PW, "UPDATE app.kv SET v = 'after' WHERE id IN (1, 350)")
            .await
            .expect_success();
        server
            .sql_as(user, PW, "DELETE FROM app.kv WHERE id IN (2, 351)")
            .await
            .expect_success();
        model.insert(1, "after".into());
        model.insert(350, "after".into());
        model.remove(&2);
        model.remove(&351);
    }
    check(
        &server,
        &[("alice", &alice), ("bob", &bob)],
        &format!("{step}, written after recovery"),
    )
    .await;
    let again = flush(&server).await;
    wait_completed(&server, &again).await;
    check(
        &server,
        &[("alice", &alice), ("bob", &bob)],
        &format!("{step}, flushed again"),
    )
    .await;
    server.kill_9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_flush_loses_and_duplicates_nothing() {
    for step in STEPS {
        crash_at(step, None).await;
    }
}

/// The same crashes with the table's segments in an S3 bucket: an upload that never
/// completed is no object, a manifest version is the only commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_flush_to_s3_loses_and_duplicates_nothing() {
    let moto = Moto::start().await;
    for step in STEPS {
        crash_at(step, Some(&moto)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_that_drops_the_flush_start_loses_and_duplicates_nothing() {
    for step in LOST_START_STEPS {
        crash_at(step, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_running_jobs_and_cancels_queued_ones() {
    let dir = tempfile::tempdir().unwrap();
    let slow = [
        "--flush-batch-rows",
        "100",
        "--flush-batch-pause-ms",
        "100",
        "--max-concurrent-jobs",
        "1",
    ];
    let server = ServerProcess::spawn_with(dir.path(), &slow, &[]);
    server
        .sql(&format!(
            "CREATE NAMESPACE app; CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT); \
             CREATE USER TABLE app.other (id BIGINT PRIMARY KEY, v TEXT); \
             CREATE USER alice WITH PASSWORD '{PW}' ROLE user"
        ))
        .await
        .expect_success();
    let values: Vec<String> = (1..=1000).map(|i| format!("({i}, 'alice{i}')")).collect();
    for table in ["app.kv", "app.other"] {
        server
            .sql_as(
                "alice",
                PW,
                &format!("INSERT INTO {table} VALUES {}", values.join(",")),
            )
            .await
            .expect_success();
    }
    let running = flush(&server).await;
    let mut seen_running = false;
    for _ in 0..500 {
        let job = server
            .sql(&format!(
                "SELECT status FROM system.jobs WHERE job_id = '{running}'"
            ))
            .await;
        if job.rows()[0][0] == "running" {
            seen_running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_running, "the flush started before the SIGTERM");
    let queued = server.sql("STORAGE FLUSH TABLE app.other").await;
    queued.expect_success();
    let queued = queued.rows()[0][0].as_str().unwrap().to_string();
    server.terminate();
    let status = server.wait_for_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "graceful exit: {status}");

    let server = ServerProcess::spawn(dir.path());
    let jobs = server
        .sql(&format!(
            "SELECT job_id = '{running}', status, rows_flushed FROM system.jobs ORDER BY created_at"
        ))
        .await;
    assert_eq!(
        jobs.rows(),
        vec![
            vec![json!(true), json!("completed"), json!(1000)],
            vec![json!(false), json!("cancelled"), json!(0)],
        ],
        "queued job {queued}"
    );
    let alice: Model = (1..=1000).map(|i| (i, format!("alice{i}"))).collect();
    check(&server, &[("alice", &alice)], "after SIGTERM").await;
    server.kill_9();
}

/// A RocksDB failure between saving a scope's manifest and deleting its hot rows
/// (at runtime, no crash): the job fails, the rows stay hot and exact, the saved
/// manifest is put back, and later flushes and restarts find nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hot_delete_after_the_manifest_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn_with_env(dir.path(), &[("KALAMDB_FAILPOINT", "fail_hot_delete")]);
    create_kv(&server).await;
    let mut alice = Model::new();
    let mut bob = Model::new();
    for (user, model) in [("alice", &mut alice), ("bob", &mut bob)] {
        insert_rows(&server, user, 1..=100, model).await;
    }
    let job_id = flush(&server).await;
    let (status, message) = wait_finished(&server, &job_id).await;
    assert_eq!(status, "failed");
    assert!(message.contains("hot delete failed"), "{message}");
    check(
        &server,
        &[("alice", &alice), ("bob", &bob)],
        "after the failed delete",
    )
    .await;
    let storage = dir.path().join("storage");
    assert!(
        files_with_suffix(&storage, ".parquet").is_empty(),
        "the segment was removed with its manifest entry"
    );
    // Writes after the failure, then a restart without the failure.
    for (user, model) in [("alice", &mut alice), ("bob", &mut bob)] {
        server
            .sql_as(user, PW, "UPDATE app.kv SET v = 'upd' WHERE id <= 10")
            .await
            .expect_success();
        for i in 1..=10 {
            model.insert(i, "upd".into());
        }
    }
    server.kill_9();
    let server = ServerProcess::spawn(dir.path());
    check(&server, &[("alice", &alice), ("bob", &bob)], "after the restart").await;
    assert_only_listed_segments(&storage);
    let again = flush(&server).await;
    wait_completed(&server, &again).await;
    check(&server, &[("alice", &alice), ("bob", &bob)], "flushed").await;
    server.kill_9();
}

/// A crash while writes arrive during a slow flush: every acknowledged write is
/// there after the restart, once; the write in flight at the crash is there or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_writes_arrive_during_a_flush_loses_no_acknowledged_write() {
    for step in ["segment_written", "scope_committed"] {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::spawn(dir.path());
        create_kv(&server).await;
        let mut alice = Model::new();
        let mut bob = Model::new();
        for (user, model) in [("alice", &mut alice), ("bob", &mut bob)] {
            insert_rows(&server, user, 1..=400, model).await;
        }
        server.kill_9();
        // Slow flush: 40-row batches, 30 ms apart; it aborts at `step`.
        let server = ServerProcess::spawn_with(
            dir.path(),
            &["--flush-batch-rows", "40", "--flush-batch-pause-ms", "30"],
            &[("KALAMDB_FAILPOINT", step)],
        );
        flush(&server).await;
        let mut next_id = 1000;
        let in_flight = loop {
            let user = if next_id % 2 == 0 { "alice" } else { "bob" };
            let sql = if next_id % 3 == 0 {
                format!(
                    "UPDATE app.kv SET v = 'w{next_id}' WHERE id = {}",
                    next_id % 400 + 1
                )
            } else {
                format!("INSERT INTO app.kv VALUES ({next_id}, 'n{next_id}')")
            };
            let sent = reqwest::Client::new()
                .post(format!("{}/sql", server.base_url()))
                .basic_auth(user, Some(PW))
                .body(sql)
                .send()
                .await;
            let model = if user == "alice" { &mut alice } else { &mut bob };
            let (key, value) = if next_id % 3 == 0 {
                (next_id % 400 + 1, format!("w{next_id}"))
            } else {
                (next_id, format!("n{next_id}"))
            };
            match sent {
                Ok(response) if response.status().is_success() => {
                    model.insert(key, value);
                }
                Ok(response) => panic!("{step}: write answered {}", response.status()),
                Err(_) => break (user, key, value),
            }
            next_id += 1;
            assert!(next_id < 100_000, "{step}: the flush never reached its failpoint");
        };
        let status = server.wait_for_exit(Duration::from_secs(60)).await;
        assert!(!status.success(), "{step}: the process aborted");
        let server = ServerProcess::spawn(dir.path());
        // The write in flight may or may not have landed: take what the server shows
        // for that one key, and require everything else to be exact.
        let (user, key, value) = in_flight;
        let seen = visible(&server, user).await;
        let model = if user == "alice" { &mut alice } else { &mut bob };
        if seen.get(&key) == Some(&value) {
            model.insert(key, value);
        }
        check(&server, &[("alice", &alice), ("bob", &bob)], step).await;
        assert!(
            next_id > 1000,
            "{step}: writes were acknowledged while the flush ran"
        );
        let again = flush(&server).await;
        wait_completed(&server, &again).await;
        check(
            &server,
            &[("alice", &alice), ("bob", &bob)],
            &format!("{step}, flushed again"),
        )
        .await;
        server.kill_9();
    }
}
