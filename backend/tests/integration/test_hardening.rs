//! The code review's defects, each provoked through the HTTP API: impersonation,
//! deep SQL, keys written twice, dates and timestamps through every write path, the
//! login throttle, malformed JSON bodies.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::common::{Rng, ServerProcess, TestServer};

const PW: &str = "pw";

const ROLES: [&str; 4] = ["user", "service", "dba", "system"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("a role")
}

/// D1: `EXECUTE AS USER` runs with the lower of the caller's and the target's roles.
/// Every caller role × every target role × every privileged statement family; a
/// refused statement changes nothing, an allowed one does what it says.
#[tokio::test]
async fn execute_as_never_raises_the_callers_role() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE SHARED TABLE app.priv (id INT PRIMARY KEY); \
             CREATE USER TABLE app.notes (id INT PRIMARY KEY)",
        )
        .await
        .expect_success();
    for role in ROLES {
        server.create_user(&format!("c_{role}"), PW, role).await;
        server.create_user(&format!("t_{role}"), PW, role).await;
    }
    // (statement, the role it needs); `{k}` makes names unique per combination.
    let statements: &[(&str, &str)] = &[
        ("ALTER USER 'v_{k}' SET ROLE system", "dba"),
        ("CREATE NAMESPACE ns_{k}", "dba"),
        ("DROP NAMESPACE drop_{k}", "dba"),
        ("DROP TABLE app.tbl_{k}", "dba"),
        ("CREATE USER 'new_{k}' WITH PASSWORD 'p' ROLE system", "dba"),
        ("KILL JOB 'no_such_job'", "dba"),
        ("STORAGE FLUSH TABLE app.notes", "service"),
        ("SELECT count(*) FROM system.jobs", "service"),
        ("SELECT count(*) FROM app.priv", "service"),
        ("INSERT INTO app.priv VALUES ({n})", "service"),
        ("INSERT INTO app.notes VALUES ({n})", "user"),
    ];
    let mut n = 0;
    for caller in ROLES {
        for target in ROLES {
            let k = format!("{caller}_{target}");
            // What the statements act on, made by root beforehand.
            server
                .execute_sql(&format!(
                    "CREATE USER 'v_{k}' WITH PASSWORD 'p' ROLE user; \
                     CREATE NAMESPACE drop_{k}; \
                     CREATE TABLE app.tbl_{k} (a INT)"
                ))
                .await
                .expect_success();
            let effective = rank(caller).min(rank(target));
            for (template, needs) in statements {
                n += 1;
                let inner = template.replace("{k}", &k).replace("{n}", &n.to_string());
                let sql = format!("EXECUTE AS USER 't_{target}' ({inner})");
                let response = server.execute_sql_as(&format!("c_{caller}"), PW, &sql).await;
                let context = format!("{caller} as {target}: {inner}");
                if rank(caller) < rank("service") {
                    response.expect_error(403, "PERMISSION_DENIED");
                } else if effective >= rank(needs) {
                    match response.error_code() {
                        None => {
                            response.expect_success();
                        }
                        // The allowed KILL of an unknown job.
                        Some("JOB_NOT_FOUND") => assert!(inner.starts_with("KILL"), "{context}"),
                        Some(_) => panic!("{context}: {}", response.body),
                    }
                } else {
                    assert_eq!(
                        (response.http_status, response.error_code()),
                        (403, Some("PERMISSION_DENIED")),
                        "{context}: {}",
                        response.body
                    );
                }
                // Wait for a flush this statement started, so the next one may start.
                if inner.starts_with("STORAGE") && response.is_success() {
                    server.wait_for_job(response.rows()[0][0].as_str().unwrap()).await;
                }
            }
            // What a refused statement would have changed is unchanged.
            let allowed_dba = rank(caller) >= rank("service") && effective >= rank("dba");
            let victim = server
                .execute_sql(&format!("SELECT role FROM system.users WHERE username = 'v_{k}'"))
                .await;
            let expected_role = if allowed_dba { "system" } else { "user" };
            assert_eq!(victim.rows(), vec![vec![json!(expected_role)]], "{k}");
            let namespaces = server
                .execute_sql(&format!(
                    "SELECT name FROM system.namespaces WHERE name IN ('ns_{k}', 'drop_{k}') ORDER BY name"
                ))
                .await;
            let expected: Vec<Vec<serde_json::Value>> = if allowed_dba {
                vec![vec![json!(format!("ns_{k}"))]]
            } else {
                vec![vec![json!(format!("drop_{k}"))]]
            };
            assert_eq!(namespaces.rows(), expected, "{k}");
            let tables = server
                .execute_sql(&format!(
                    "SELECT count(*) FROM system.tables WHERE table_name = 'tbl_{k}'"
                ))
                .await;
            assert_eq!(
                tables.rows(),
                vec![vec![json!(if allowed_dba { 0 } else { 1 })]],
                "{k}"
            );
            let created = server
                .execute_sql(&format!(
                    "SELECT count(*) FROM system.users WHERE username = 'new_{k}'"
                ))
                .await;
            assert_eq!(
                created.rows(),
                vec![vec![json!(if allowed_dba { 1 } else { 0 })]],
                "{k}"
            );
        }
    }
    // The callers' own roles never changed.
    for role in ROLES {
        let row = server
            .execute_sql(&format!(
                "SELECT role FROM system.users WHERE username = 'c_{role}'"
            ))
            .await;
        assert_eq!(row.rows(), vec![vec![json!(role)]]);
    }
}

/// D2: no SQL text can stop the process. Deep shapes of every statement family, up
/// to the request limits, sent to the real binary: each gets an answer (a result or
/// `INVALID_SQL` "too deeply nested", HTTP 400), and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sql_text_crashes_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path());
    server
        .sql(&format!(
            "CREATE NAMESPACE app; CREATE USER TABLE app.t (id INT PRIMARY KEY, v INT); \
             CREATE USER 'alice' WITH PASSWORD '{PW}' ROLE user; INSERT INTO app.t VALUES (1, 1)"
        ))
        .await
        .expect_success();
    let plus = |n: usize| vec!["1"; n].join("+");
    let parens = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
    let ands = |n: usize| vec!["v = 1"; n].join(" AND ");
    let subquery = |n: usize| format!("{}SELECT 1{}", "(SELECT ".repeat(n), ")".repeat(n));
    let derived = |n: usize| {
        format!(
            "SELECT 1 FROM {}app.t{}",
            "(SELECT 1 FROM ".repeat(n),
            ") AS x".repeat(n)
        )
    };
    let shapes: Vec<(String, String)> = vec![
        ("100,000 terms".into(), format!("SELECT {}", plus(100_000))),
        ("20,000 parentheses".into(), format!("SELECT {}", parens(20_000))),
        (
            "30,000 ANDs".into(),
            format!("SELECT id FROM app.t WHERE {}", ands(30_000)),
        ),
        (
            "10,000 scalar subqueries".into(),
            format!("SELECT {}", subquery(10_000)),
        ),
        ("10,000 derived tables".into(), derived(10_000)),
        (
            "UNION chain".into(),
            format!("SELECT 1 {}", "UNION ALL SELECT 1 ".repeat(40_000)),
        ),
        (
            "INSERT".into(),
            format!("INSERT INTO app.t VALUES (2, {})", plus(100_000)),
        ),
        (
            "INSERT ... SELECT".into(),
            format!("INSERT INTO app.t SELECT 3, {}", parens(20_000)),
        ),
        (
            "UPDATE SET".into(),
            format!("UPDATE app.t SET v = {} WHERE id = 1", plus(100_000)),
        ),
        (
            "UPDATE WHERE".into(),
            format!("UPDATE app.t SET v = 2 WHERE {}", ands(30_000)),
        ),
        (
            "DELETE".into(),
            format!("DELETE FROM app.t WHERE id = {}", subquery(10_000)),
        ),
        (
            "EXECUTE AS".into(),
            format!("EXECUTE AS USER 'alice' (SELECT {})", plus(100_000)),
        ),
        (
            "EXECUTE AS UPDATE".into(),
            format!(
                "EXECUTE AS USER 'alice' (UPDATE app.t SET v = 1 WHERE {})",
                ands(30_000)
            ),
        ),
        (
            "array type".into(),
            format!("SELECT CAST(NULL AS INT{})", "[]".repeat(200_000)),
        ),
        (
            "unary minus chain".into(),
            format!("SELECT {}1", "- ".repeat(200_000)),
        ),
        (
            "nested coalesce".into(),
            format!("SELECT {}1{}", "coalesce(".repeat(40), ", 2)".repeat(40)),
        ),
        (
            "nested EXISTS".into(),
            format!(
                "SELECT 1 FROM app.t WHERE {}v = 1{}",
                "EXISTS (SELECT 1 FROM app.t WHERE ".repeat(30),
                ")".repeat(30)
            ),
        ),
        (
            "NOT chain".into(),
            format!("SELECT {}true", "NOT ".repeat(100_000)),
        ),
    ];
    for (name, sql) in &shapes {
        assert!(sql.len() < 1 << 20, "{name}: within max_sql_bytes");
        let response = server.sql(sql).await;
        match response.error_code() {
            None => {
                response.expect_success();
            }
            Some(_) => {
                assert_eq!(response.http_status, 400, "{name}: {}", response.body);
                assert_eq!(
                    response.error_code(),
                    Some("INVALID_SQL"),
                    "{name}: {}",
                    response.body
                );
            }
        }
        // Still serving.
        let alive = server.sql("SELECT 41 + 1").await;
        assert_eq!(alive.rows(), vec![vec![json!(42)]], "after {name}");
    }
    // Nesting within the limit still works, and nothing was written by the refusals.
    let ok = server.sql(&format!("SELECT {} AS n", plus(200))).await;
    assert_eq!(ok.rows(), vec![vec![json!(200)]]);
    let ok = server
        .sql(&format!("SELECT {} FROM app.t", vec!["v"; 200].join("+")))
        .await;
    assert_eq!(ok.rows(), vec![vec![json!(200)]]);
    let rows = server.sql("SELECT id, v FROM app.t ORDER BY id").await;
    assert_eq!(rows.rows(), vec![vec![json!(1), json!(1)]]);
    let deep = server.sql(&format!("SELECT {}", plus(5_000))).await;
    deep.expect_error(400, "INVALID_SQL");
    assert!(
        deep.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too deeply nested"),
        "{}",
        deep.body
    );
    server.kill_9();
}

/// D5: a statement that would write one primary key twice is refused and writes
/// nothing, on hot and cold rows alike.
#[tokio::test]
async fn a_statement_never_writes_one_key_twice() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE USER TABLE app.t (id INT PRIMARY KEY, v TEXT); \
             INSERT INTO app.t VALUES (1, 'one'), (2, 'two')",
        )
        .await
        .expect_success();
    let unchanged = vec![vec![json!(1), json!("one")], vec![json!(2), json!("two")]];
    for flushed in [false, true] {
        if flushed {
            server.flush_and_wait("app.t").await;
        }
        for sql in [
            "UPDATE app.t SET v = unnest(make_array('a', 'b')) WHERE id = 1",
            "INSERT INTO app.t VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = unnest(make_array('a', 'b'))",
            "INSERT INTO app.t SELECT 5, 'x' UNION ALL SELECT 5, 'y'",
            "INSERT INTO app.t SELECT 1, 'x' UNION ALL SELECT 1, 'y' ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
        ] {
            let response = server.execute_sql(sql).await;
            assert!(
                !response.is_success() && response.http_status < 500,
                "flushed={flushed}: {sql}: {}",
                response.body
            );
            let rows = server.execute_sql("SELECT id, v FROM app.t ORDER BY id").await;
            assert_eq!(rows.rows(), unchanged, "flushed={flushed}: {sql} wrote nothing");
            let counts = server
                .execute_sql("SELECT count(*), count(DISTINCT id) FROM app.t")
                .await;
            assert_eq!(counts.rows(), vec![vec![json!(2), json!(2)]], "{sql}");
        }
        let response = server
            .execute_sql("UPDATE app.t SET v = unnest(make_array('a', 'b')) WHERE id = 1")
            .await;
        response.expect_error(409, "DUPLICATE_KEY");
    }
}

/// D10: failed logins count per client address and per user name; a success for
/// one name clears nothing for another, nor for the address.
#[tokio::test]
async fn a_login_of_ones_own_does_not_reset_the_count_of_guesses() {
    let server = TestServer::start_configured(|s| {
        s.login_max_failures = 3;
        s.login_lockout_seconds = 60;
    })
    .await;
    server.create_user("alice", PW, "user").await;
    server.create_user("bob", PW, "user").await;
    server.create_user("carol", PW, "user").await;
    server.create_user("dave", PW, "user").await;
    // Two guesses at bob's password, a valid login as alice, a third guess.
    for _ in 0..2 {
        server
            .execute_sql_as("bob", "guess", "SELECT 1")
            .await
            .expect_error(401, "UNAUTHORIZED");
    }
    server
        .execute_sql_as("alice", PW, "SELECT 1")
        .await
        .expect_success();
    server
        .execute_sql_as("bob", "guess", "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
    // The address has made three failed attempts: it waits, whoever it claims to be.
    server
        .execute_sql_as("alice", PW, "SELECT 1")
        .await
        .expect_error(429, "TOO_MANY_REQUESTS");

    // Per name: guesses at carol's password from three addresses lock carol out
    // everywhere, and nobody else.
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let post = |client: reqwest::Client, user: &'static str, password: &'static str| {
        let url = server.url("/sql");
        async move {
            client
                .post(url)
                .basic_auth(user, Some(password))
                .body("SELECT 1")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for last in 2..=4 {
        assert_eq!(post(from(last), "carol", "guess").await, 401);
    }
    assert_eq!(post(from(5), "carol", PW).await, 429, "carol is locked out");
    assert_eq!(post(from(5), "dave", PW).await, 200, "dave is not");
    // bob's name has three failures of its own (from the first address).
    assert_eq!(post(from(6), "bob", PW).await, 429, "bob is locked out by name");
    assert_eq!(post(from(6), "alice", PW).await, 200, "nor alice");
}

/// D14: segments holding both -0.0 and +0.0 are not pruned away: a filter answers
/// the same before and after the rows move to Parquet.
#[tokio::test]
async fn signed_zeros_survive_segment_pruning() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE USER TABLE default.z (id INT PRIMARY KEY, x DOUBLE, f FLOAT)")
        .await
        .expect_success();
    // -0.0 first, so that an IEEE comparison keeps it as the maximum.
    for (id, x) in [(1, "-0.0"), (2, "0.0")] {
        server
            .execute_sql(&format!("INSERT INTO default.z VALUES ({id}, {x}, {x})"))
            .await
            .expect_success();
    }
    // -0.0 and +0.0 are equal, as IEEE 754 and PostgreSQL have it (row 1 holds
    // -0.0, row 2 +0.0), in both tiers.
    let cases: [(&str, &[i64]); 9] = [
        ("x >= 0", &[1, 2]),
        ("x <= 0", &[1, 2]),
        ("x > -1 AND x < 1", &[1, 2]),
        ("x < 0", &[]),
        ("x = 0", &[1, 2]),
        ("x > -1", &[1, 2]),
        ("f >= 0", &[1, 2]),
        ("f < 0", &[]),
        ("f > 0", &[]),
    ];
    for flushed in [false, true] {
        if flushed {
            server.flush_and_wait("default.z").await;
        }
        for (filter, ids) in cases {
            let rows = server
                .execute_sql(&format!("SELECT id FROM default.z WHERE {filter} ORDER BY id"))
                .await
                .rows();
            let expected: Vec<Vec<serde_json::Value>> = ids.iter().map(|i| vec![json!(i)]).collect();
            assert_eq!(rows, expected, "flushed: {flushed}, {filter}");
        }
        // The sign survives in both tiers.
        let signs = server
            .execute_sql("SELECT id, CAST(x AS TEXT) AS x, CAST(f AS TEXT) AS f FROM default.z ORDER BY id")
            .await
            .rows();
        assert_eq!(
            signs,
            vec![
                vec![json!(1), json!("-0.0"), json!("-0.0")],
                vec![json!(2), json!("0.0"), json!("0.0")]
            ],
            "flushed: {flushed}"
        );
    }
}

/// D11: /metrics figures follow writes, flushes and drops (kept as counters, not
/// counted per scrape).
#[tokio::test]
async fn metrics_follow_writes_flushes_and_drops() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE USER TABLE default.m (id INT PRIMARY KEY, v TEXT); \
             CREATE SHARED TABLE default.s (id INT PRIMARY KEY)",
        )
        .await
        .expect_success();
    let values: Vec<String> = (1..=10).map(|i| format!("({i}, 'v')")).collect();
    server
        .execute_sql(&format!("INSERT INTO default.m VALUES {}", values.join(",")))
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO default.s VALUES (1), (2), (3)")
        .await
        .expect_success();
    assert_eq!(metric(&server, "kalamdb_hot_rows").await, 13);
    // An update replaces versions, a delete writes tombstones in their place.
    server
        .execute_sql("UPDATE default.m SET v = 'w' WHERE id <= 3; DELETE FROM default.m WHERE id > 8")
        .await
        .expect_success();
    assert_eq!(metric(&server, "kalamdb_hot_rows").await, 13);
    let job = server.flush_and_wait("default.m").await;
    assert_eq!(job["rows_flushed"], 10);
    assert_eq!(metric(&server, "kalamdb_hot_rows").await, 3);
    assert_eq!(metric(&server, "kalamdb_cold_files").await, 1);
    assert_eq!(metric(&server, "kalamdb_cold_rows").await, 10);
    // Replacing a flushed row: one new hot version, the old stays in Parquet.
    server
        .execute_sql("UPDATE default.m SET v = 'x' WHERE id = 1")
        .await
        .expect_success();
    assert_eq!(metric(&server, "kalamdb_hot_rows").await, 4);
    server.execute_sql("DROP TABLE default.m").await.expect_success();
    assert_eq!(metric(&server, "kalamdb_hot_rows").await, 3);
    assert_eq!(metric(&server, "kalamdb_cold_files").await, 0);
    assert_eq!(metric(&server, "kalamdb_cold_bytes").await, 0);
    // After a restart the counters start from what is stored.
    let mut server = server;
    server.restart().await;
    let text = server.metrics().await;
    assert!(text.lines().any(|l| l == "kalamdb_hot_rows 3"), "{text}");
    assert!(
        text.lines().any(|l| l == "kalamdb_jobs{status=\"completed\"} 1"),
        "{text}"
    );
}

/// One figure of `/metrics`.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let text = server.metrics().await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .map(|v| v.parse::<u64>().unwrap())
        })
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// D12: a flush policy whose flushes fail retries with a growing delay, and says so
/// in `system.jobs`; once the cause is gone the policy flushes again.
#[tokio::test]
async fn a_failing_policy_flush_backs_off() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.p (id INT PRIMARY KEY) WITH (FLUSH_POLICY = 'rows:1')",
        )
        .await
        .expect_success();
    let blocked = server.data_dir().join("storage/app/p");
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"in the way").unwrap();
    server
        .execute_sql("INSERT INTO app.p VALUES (1), (2)")
        .await
        .expect_success();
    let failed = |server: &TestServer| {
        let server_url = server.url("/sql");
        let client = server.client().clone();
        async move {
            let response = crate::common::decode(
                client
                    .post(server_url)
                    .basic_auth("root", Some(""))
                    .body(
                        "SELECT error_message, CAST(created_at AS BIGINT) AS created_us FROM system.jobs \
                         WHERE status = 'failed' ORDER BY created_at",
                    )
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            response
                .expect_success()
                .rows()
                .into_iter()
                .map(|r| {
                    let created_at_us = r[1].as_i64().expect("created_at in microseconds");
                    (r[0].as_str().unwrap_or("").to_string(), created_at_us)
                })
                .collect::<Vec<_>>()
        }
    };
    let mut messages = Vec::new();
    for _ in 0..300 {
        messages = failed(&server).await;
        if messages.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(messages.len() >= 3, "{messages:?}");
    for ((message, _), wait) in messages.iter().zip(["1 s", "2 s", "4 s"]) {
        assert!(message.contains(&format!("retries in {wait}")), "{message}");
    }
    // The next attempt is made only once the wait has passed: the scheduler looks
    // every second, so without the backoff the failed jobs are a second apart.
    let gap_us = |i: usize| messages[i + 1].1 - messages[i].1;
    assert!(gap_us(0) >= 950_000, "the 1 s backoff: {messages:?}");
    assert!(gap_us(1) >= 1_950_000, "the 2 s backoff: {messages:?}");
    std::fs::remove_file(&blocked).unwrap();
    for _ in 0..600 {
        let done = server
            .execute_sql("SELECT count(*) FROM system.jobs WHERE status = 'completed'")
            .await;
        if done.rows() == vec![vec![json!(1)]] {
            let stats = server.execute_sql("SHOW STATS FOR TABLE app.p").await;
            assert_eq!(stats.rows()[0][3], 2, "cold rows");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the policy never flushed again: {:?}", failed(&server).await);
}

/// D9 (and T1): one statement reads one snapshot. Readers of several users check
/// invariants while writers update rows that are in Parquet and flushes commit one
/// user after another: every row is seen exactly once, by scans (full, ordered row
/// lists and `count(*) = count(DISTINCT id)`) and by pk lookups alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_reads_one_snapshot_while_flushed_rows_change() {
    const ROWS: i64 = 150;
    const USERS: [&str; 3] = ["u1", "u2", "u3"];
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE USER TABLE default.kv (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .expect_success();
    let values: Vec<String> = (1..=ROWS).map(|i| format!("({i}, 0)")).collect();
    for user in USERS {
        server.create_user(user, PW, "user").await;
        server
            .execute_sql_as(
                user,
                PW,
                &format!("INSERT INTO default.kv VALUES {}", values.join(",")),
            )
            .await
            .expect_success();
    }
    server.flush_and_wait("default.kv").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, url, stop) = (server.client().clone(), server.url("/sql"), stop.clone());
        tokio::spawn(async move {
            let mut rng = Rng(0x5eed);
            let mut writes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && writes < 3000 {
                let (user, password, sql) = if writes % 40 == 39 {
                    ("root", "", "STORAGE FLUSH TABLE default.kv".to_string())
                } else {
                    let user = USERS[rng.below(USERS.len() as u64) as usize];
                    let id = 1 + rng.below(ROWS as u64) as i64;
                    let sql = format!(
                        "UPDATE default.kv SET v = v + 1 WHERE id IN ({id}, {})",
                        ROWS + 1 - id
                    );
                    (user, PW, sql)
                };
                let response = client
                    .post(&url)
                    .basic_auth(user, Some(password))
                    .body(sql)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                assert!(status == 200 || status == 409, "write answered {status}");
                writes += 1;
            }
            writes
        })
    };
    let all_ids: Vec<Vec<serde_json::Value>> = (1..=ROWS).map(|i| vec![json!(i)]).collect();
    // The writer changes rows `id` and `ROWS + 1 - id` together: a reader of one
    // snapshot sees both values equal, a torn read sees them differ.
    let pairs_agree = |rows: &[Vec<serde_json::Value>], what: &str| {
        let v: HashMap<i64, i64> = (rows.iter())
            .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
            .collect();
        for (id, value) in &v {
            if let Some(other) = v.get(&(ROWS + 1 - id)) {
                assert_eq!(value, other, "{what}: rows {id} and {} disagree", ROWS + 1 - id);
            }
        }
    };
    let point_reads_before = crate::test_read_path::point_reads(&server).await;
    let mut rng = Rng(0xfeed);
    for round in 0..120 {
        let user = USERS[round % USERS.len()];
        let counts = server
            .execute_sql_as(user, PW, "SELECT count(*), count(DISTINCT id) FROM default.kv")
            .await;
        assert_eq!(
            counts.rows(),
            vec![vec![json!(ROWS), json!(ROWS)]],
            "round {round}, {user}: every row once"
        );
        let all = server
            .execute_sql_as(user, PW, "SELECT id, v FROM default.kv ORDER BY id")
            .await
            .rows();
        let ids: Vec<Vec<serde_json::Value>> = all.iter().map(|r| vec![r[0].clone()]).collect();
        assert_eq!(ids, all_ids, "round {round}, {user}: the full row list");
        pairs_agree(&all, &format!("round {round}, {user}, scan"));
        // 32 pairs by primary key (64 keys: a point read), the first of every pair
        // before the second of any: a read that took a new view per key would see a
        // pair changed between its two reads.
        let start = 1 + rng.below(44) as i64;
        let keys: Vec<String> = ((start..start + 32).chain((start..start + 32).map(|k| ROWS + 1 - k)))
            .map(|k| k.to_string())
            .collect();
        let points = server
            .execute_sql_as(
                user,
                PW,
                &format!("SELECT id, v FROM default.kv WHERE id IN ({})", keys.join(", ")),
            )
            .await
            .rows();
        assert_eq!(points.len(), 64, "round {round}, {user}");
        pairs_agree(&points, &format!("round {round}, {user}, point read"));
        let id = 1 + rng.below(ROWS as u64);
        let point = server
            .execute_sql_as(user, PW, &format!("SELECT id FROM default.kv WHERE id = {id}"))
            .await;
        assert_eq!(
            point.rows(),
            vec![vec![json!(id)]],
            "round {round}, {user}: pk lookup of {id}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 0);
    assert!(
        crate::test_read_path::point_reads(&server).await - point_reads_before >= 240,
        "the IN lists were answered as point reads"
    );
    for user in USERS {
        let total = server
            .execute_sql_as(user, PW, "SELECT count(*), count(DISTINCT id) FROM default.kv")
            .await;
        assert_eq!(total.rows(), vec![vec![json!(ROWS), json!(ROWS)]]);
    }
}

/// With `sync_writes` every commit fsyncs the WAL and runs on the blocking pool:
/// statements of every kind commit, and their rows survive a power loss. The loss is
/// simulated (`lose_unsynced_writes`: writes that are not fsynced skip the WAL) and
/// the process killed with SIGKILL; the same run without `sync_writes` is the
/// control that shows the simulation does lose unsynced writes.
#[tokio::test]
async fn synced_commits_survive_a_power_loss() {
    const SQL: &str = "CREATE USER TABLE default.s (id INT PRIMARY KEY, v TEXT); \
        INSERT INTO default.s VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
        UPDATE default.s SET v = 'B' WHERE id = 2; DELETE FROM default.s WHERE id = 3; \
        INSERT INTO default.s VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = 'A'";
    for synced in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = vec![("KALAMDB_FAILPOINT", "lose_unsynced_writes")];
        if synced {
            env.push(("KALAMDB_SYNC_WRITES", "true"));
        }
        let server = ServerProcess::spawn_with_env(dir.path(), &env);
        server.sql(SQL).await.expect_success();
        server.kill_9();
        let server = ServerProcess::spawn(dir.path());
        let answer = server.sql("SELECT id, v FROM default.s ORDER BY id").await;
        if synced {
            assert_eq!(
                answer.rows(),
                vec![vec![json!(1), json!("A")], vec![json!(2), json!("B")]]
            );
        } else {
            answer.expect_error(404, "TABLE_NOT_FOUND");
        }
        server.kill_9();
    }
}
