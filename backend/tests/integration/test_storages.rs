//! Storages: USER tables whose Parquet segments live in an S3-compatible bucket (a
//! real `moto_server`, started per test) or in another directory, through the real
//! server and HTTP — flush, reads across tiers, point reads, updates and deletes of
//! flushed rows, UNIQUE indexes, compaction, restart, DROP TABLE clean-up, faults.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::TestServer;
use crate::common::s3::{Moto, SECRET, assert_only_listed_objects};

const PW: &str = "pw";

/// `app.kv (id BIGINT PRIMARY KEY, v TEXT, email TEXT)` on storage `s3` with a UNIQUE
/// index on `email`; users alice and bob.
async fn setup(moto: &Moto) -> TestServer {
    let server = TestServer::start().await;
    server
        .execute_sql(&moto.create_storage_sql("s3", "kdb"))
        .await
        .expect_success();
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT, email TEXT) WITH (STORAGE = 's3'); \
             CREATE UNIQUE INDEX kv_email ON app.kv (email)",
        )
        .await
        .expect_success();
    for user in ["alice", "bob"] {
        server.create_user(user, PW, "user").await;
    }
    server
}

async fn insert(server: &TestServer, user: &str, ids: std::ops::RangeInclusive<i64>) {
    let values: Vec<String> = ids
        .map(|i| format!("({i}, '{user}{i}', '{user}{i}@x')"))
        .collect();
    server
        .execute_sql_as(
            user,
            PW,
            &format!("INSERT INTO app.kv VALUES {}", values.join(",")),
        )
        .await
        .expect_success();
}

async fn rows(server: &TestServer, user: &str, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let response = server.execute_sql_as(user, PW, sql).await;
    response.expect_success();
    response.rows()
}

async fn user_id(server: &TestServer, name: &str) -> String {
    let response = server
        .execute_sql(&format!(
            "SELECT user_id FROM system.users WHERE username = '{name}'"
        ))
        .await;
    response.rows()[0][0].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_table_on_s3_flushes_reads_changes_compacts_and_restarts() {
    let moto = Moto::start().await;
    let mut server = setup(&moto).await;
    for user in ["alice", "bob"] {
        insert(&server, user, 1..=300).await;
    }
    server.flush_and_wait("app.kv").await;
    // Each user's segment and manifest are objects in the bucket, under the prefix;
    // nothing of the table is on the local disk.
    let alice = user_id(&server, "alice").await;
    let keys = moto.keys(&format!("kdb/app/kv/{alice}/")).await;
    assert_eq!(
        keys,
        [
            format!("kdb/app/kv/{alice}/batch-1.parquet"),
            format!("kdb/app/kv/{alice}/manifest-00000000000000000001.json"),
        ]
    );
    assert!(!server.data_dir().join("storage/app/kv").exists());
    assert_eq!(assert_only_listed_objects(&moto, "kdb/").await, 2);

    // Reads of cold rows: a scan, a filtered scan, a point read by key, an index read.
    assert_eq!(
        rows(&server, "alice", "SELECT count(*), min(id), max(id) FROM app.kv").await,
        vec![vec![json!(300), json!(1), json!(300)]]
    );
    assert_eq!(
        rows(&server, "alice", "SELECT v FROM app.kv WHERE id = 123").await,
        vec![vec![json!("alice123")]]
    );
    assert_eq!(
        rows(
            &server,
            "bob",
            "SELECT id FROM app.kv WHERE v >= 'bob298' AND v < 'bob3' ORDER BY id"
        )
        .await,
        vec![vec![json!(298)], vec![json!(299)]]
    );
    assert_eq!(
        rows(&server, "bob", "SELECT id, v FROM app.kv WHERE email = 'bob42@x'").await,
        vec![vec![json!(42), json!("bob42")]]
    );
    // UNIQUE sees the flushed rows: bob's flushed email cannot be taken again.
    server
        .execute_sql_as("bob", PW, "INSERT INTO app.kv VALUES (999, 'x', 'bob7@x')")
        .await
        .expect_error(409, "DUPLICATE_KEY");

    // Updates and deletes of flushed rows, then new rows; flush again.
    server
        .execute_sql_as("alice", PW, "UPDATE app.kv SET v = 'upd' WHERE id <= 50")
        .await
        .expect_success();
    server
        .execute_sql_as("alice", PW, "DELETE FROM app.kv WHERE id > 250")
        .await
        .expect_success();
    insert(&server, "alice", 301..=320).await;
    let expect_alice = |rows: Vec<Vec<serde_json::Value>>| {
        assert_eq!(
            rows,
            vec![vec![json!(270), json!(50), json!("upd"), json!("alice51")]],
            "alice's rows"
        );
    };
    let summary = "SELECT count(*), count(*) FILTER (WHERE v = 'upd'), max(v), \
                   (SELECT v FROM app.kv WHERE id = 51) FROM app.kv";
    expect_alice(rows(&server, "alice", summary).await);
    server.flush_and_wait("app.kv").await;
    expect_alice(rows(&server, "alice", summary).await);
    // The deleted email is free again; the updated rows keep theirs.
    server
        .execute_sql_as("bob", PW, "INSERT INTO app.kv VALUES (998, 'x', 'alice260@x')")
        .await
        .expect_success();

    // Compaction rewrites alice's two segments into one and deletes the replaced ones.
    let job = server.execute_sql("STORAGE COMPACT TABLE app.kv").await;
    job.expect_success();
    let job_id = job.rows()[0][0].as_str().unwrap().to_string();
    assert_eq!(server.wait_for_job(&job_id).await["status"], "completed");
    expect_alice(rows(&server, "alice", summary).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let segments = (moto.keys(&format!("kdb/app/kv/{alice}/")).await.into_iter())
            .filter(|k| k.ends_with(".parquet"))
            .count();
        if segments == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "replaced segments deleted: {segments}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_only_listed_objects(&moto, "kdb/").await;

    // A restart reads the storage record and the manifests from the bucket.
    server.restart().await;
    expect_alice(rows(&server, "alice", summary).await);
    assert_eq!(
        rows(&server, "bob", "SELECT count(*) FROM app.kv").await,
        vec![vec![json!(301)]]
    );
    let storages = server
        .execute_sql(
            "SELECT storage_name, storage_type, location, has_credentials, table_count FROM system.storages",
        )
        .await;
    assert_eq!(
        storages.rows(),
        vec![
            vec![
                json!("local"),
                json!("local"),
                json!(server.data_dir().join("storage").display().to_string()),
                json!(false),
                json!(0)
            ],
            vec![
                json!("s3"),
                json!("s3"),
                json!("s3://kalamdb-test/kdb"),
                json!(true),
                json!(1)
            ],
        ]
    );
    assert!(!storages.body.to_string().contains(SECRET));
    let show = server.execute_sql("SHOW STORAGES").await;
    show.expect_success();
    assert!(!show.body.to_string().contains(SECRET));
    assert!(!server.metrics().await.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_table_removes_its_objects_and_a_used_storage_cannot_be_dropped() {
    let moto = Moto::start().await;
    let server = setup(&moto).await;
    insert(&server, "alice", 1..=10).await;
    server.flush_and_wait("app.kv").await;
    assert!(!moto.keys("kdb/app/kv/").await.is_empty());
    server
        .execute_sql("DROP STORAGE s3")
        .await
        .expect_error(409, "STORAGE_IN_USE");
    server.execute_sql("DROP TABLE app.kv").await.expect_success();
    assert_eq!(
        moto.keys("kdb/").await,
        Vec::<String>::new(),
        "every object of the table went"
    );
    server.execute_sql("DROP STORAGE s3").await.expect_success();
    server
        .execute_sql("CREATE USER TABLE app.t (id BIGINT PRIMARY KEY) WITH (STORAGE = 's3')")
        .await
        .expect_error(404, "STORAGE_NOT_FOUND");
    server
        .execute_sql("DROP STORAGE local")
        .await
        .expect_error(400, "INVALID_SQL");
    server
        .execute_sql("CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY) WITH (STORAGE = 'local')")
        .await
        .expect_error(400, "INVALID_SQL");
    // A user may not manage storages.
    server
        .execute_sql_as("alice", PW, &moto.create_storage_sql("mine", "m"))
        .await
        .expect_error(403, "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_storage_keeps_segments_in_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let path = dir.path().join("cold");
    server
        .execute_sql(&format!(
            "CREATE STORAGE archive TYPE filesystem PATH '{}'; CREATE NAMESPACE app; \
             CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT) WITH (STORAGE = 'Archive')",
            path.display()
        ))
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO app.kv VALUES (1, 'a'), (2, 'b')")
        .await
        .expect_success();
    server.flush_and_wait("app.kv").await;
    let scope = path.join("app/kv/root");
    assert!(scope.join("batch-1.parquet").exists());
    assert!(crate::common::current_manifest(&scope).is_some());
    assert_eq!(
        server
            .execute_sql("SELECT v FROM app.kv WHERE id = 2")
            .await
            .rows(),
        vec![vec![json!("b")]]
    );
    server
        .execute_sql("CREATE STORAGE rel TYPE filesystem PATH 'relative/dir'")
        .await
        .expect_error(400, "INVALID_SQL");
    for overlapping in [
        server.data_dir().join("more"),
        server.data_dir().parent().unwrap().to_path_buf(),
    ] {
        server
            .execute_sql(&format!(
                "CREATE STORAGE o TYPE filesystem PATH '{}'",
                overlapping.display()
            ))
            .await
            .expect_error(400, "INVALID_SQL");
    }
    server
        .execute_sql(&format!(
            "CREATE STORAGE archive TYPE filesystem PATH '{}'",
            path.display()
        ))
        .await
        .expect_error(409, "ALREADY_EXISTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_failing_endpoint_is_a_clear_error_and_the_data_stays() {
    // Small batches: the flush below stops (held) after its first one.
    let server = TestServer::start_configured(|s| s.flush_batch_rows = 100).await;
    // Nothing listens there: CREATE STORAGE fails its probe, quickly, and names the
    // storage but not the secret.
    let port = crate::common::s3::free_port();
    let started = Instant::now();
    let refused = server
        .execute_sql(&format!(
            "CREATE STORAGE gone TYPE s3 BUCKET 'b' ENDPOINT 'http://127.0.0.1:{port}' \
             ACCESS_KEY_ID 'k' SECRET_ACCESS_KEY '{SECRET}'"
        ))
        .await;
    refused.expect_error(503, "STORAGE_UNAVAILABLE");
    let message = refused.body["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("storage 'gone'"), "{message}");
    assert!(!message.contains(SECRET), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "bounded retries");
    assert_eq!(
        server
            .execute_sql("SELECT count(*) FROM system.storages")
            .await
            .rows(),
        vec![vec![json!(1)]],
        "nothing saved"
    );

    // A storage that fails in the middle of a flush: the job fails with the error, the
    // rows stay hot and readable, tables on other storages are unaffected, and once
    // the endpoint is back the next flush works.
    let mut moto = Moto::start().await;
    server
        .execute_sql(&moto.create_storage_sql("s3", "kdb"))
        .await
        .expect_success();
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT) WITH (STORAGE = 's3'); \
             CREATE USER TABLE app.local (id BIGINT PRIMARY KEY, v TEXT)",
        )
        .await
        .expect_success();
    let values: Vec<String> = (1..=250).map(|i| format!("({i}, 'v{i}')")).collect();
    server
        .execute_sql(&format!(
            "INSERT INTO app.kv VALUES {}; INSERT INTO app.local VALUES (1, 'x')",
            values.join(",")
        ))
        .await
        .expect_success();
    server.flush_and_wait("app.local").await;
    // The scope's (empty) manifest is read while the endpoint answers.
    let all = "SELECT count(*), min(v), max(id) FROM app.kv";
    let expected = vec![vec![json!(250), json!("v1"), json!(250)]];
    assert_eq!(server.execute_sql(all).await.rows(), expected);
    server.db().holds().hold("flush_batch");
    let job_id = server.flush_table("app.kv").await;
    server.wait_at_hold("flush_batch").await;
    let port = moto.port;
    moto.kill();
    server.db().holds().release("flush_batch");
    let job = server.wait_for_job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error_message"].as_str().unwrap();
    assert!(error.contains("storage 's3'"), "{error}");
    assert!(!error.contains(SECRET), "{error}");
    assert_eq!(
        server.execute_sql(all).await.rows(),
        expected,
        "the rows stay hot"
    );
    assert_eq!(
        server
            .execute_sql("SELECT v FROM app.local WHERE id = 1")
            .await
            .rows(),
        vec![vec![json!("x")]],
        "other storages unaffected"
    );
    server
        .execute_sql("INSERT INTO app.kv VALUES (251, 'v251')")
        .await
        .expect_success();

    // Back (an empty server on the same port, as after an outage that lost nothing
    // of ours: nothing was committed there).
    let moto = Moto::start_on(port).await;
    moto.create_bucket(crate::common::s3::BUCKET).await;
    server.flush_and_wait("app.kv").await;
    let expected = vec![vec![json!(251), json!("v1"), json!(251)]];
    assert_eq!(server.execute_sql(all).await.rows(), expected);
    assert_eq!(assert_only_listed_objects(&moto, "kdb/").await, 1);

    // Cold rows whose storage is down: a clear 503 naming it, not a hang.
    let mut moto = moto;
    moto.kill();
    let failed = server.execute_sql("SELECT count(*) FROM app.kv").await;
    failed.expect_error(503, "STORAGE_UNAVAILABLE");
    let message = failed.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'s3'") && !message.contains(SECRET), "{message}");
}

/// A data directory of the previous format: each scope's `manifest.json` (format 1,
/// replaced in place). It reads as manifest version 0; the next flush creates version 1
/// and removes `manifest.json`; a restart in between changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_manifest_is_read_and_replaced_by_the_next_flush() {
    let mut server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE USER TABLE app.kv (id BIGINT PRIMARY KEY, v TEXT); \
             INSERT INTO app.kv VALUES (1, 'a'), (2, 'b')",
        )
        .await
        .expect_success();
    server.flush_and_wait("app.kv").await;
    // Turn the scope into what the previous format wrote.
    let scope = server.data_dir().join("storage/app/kv/root");
    let current = crate::common::current_manifest(&scope).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&current).unwrap()).unwrap();
    manifest["format_version"] = json!(1);
    let object = manifest.as_object_mut().unwrap();
    object.remove("version");
    object.remove("commit_id");
    std::fs::write(
        scope.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(&current).unwrap();
    server.restart().await;
    let all = "SELECT id, v FROM app.kv ORDER BY id";
    assert_eq!(
        server.execute_sql(all).await.rows(),
        vec![vec![json!(1), json!("a")], vec![json!(2), json!("b")]]
    );
    server
        .execute_sql("UPDATE app.kv SET v = 'B' WHERE id = 2; INSERT INTO app.kv VALUES (3, 'c')")
        .await
        .expect_success();
    server.flush_and_wait("app.kv").await;
    let mut names: Vec<String> = std::fs::read_dir(&scope)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "batch-1.parquet",
            "batch-2.parquet",
            "manifest-00000000000000000001.json"
        ]
    );
    server.restart().await;
    assert_eq!(
        server.execute_sql(all).await.rows(),
        vec![
            vec![json!(1), json!("a")],
            vec![json!(2), json!("B")],
            vec![json!(3), json!("c")]
        ]
    );
}
