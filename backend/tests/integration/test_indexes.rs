//! Secondary indexes against the scan they replace: random writes by two users of a
//! USER table (inserts, updates that move rows between indexed values, deletes,
//! flushes that move rows to Parquet, an index created over existing rows, a
//! restart), each user's indexed queries compared with the same filters written so
//! that no index can answer them.

use serde_json::{Value, json};

use crate::common::{Rng, TestServer};

const KEYS: [&str; 5] = ["'a'", "'b'", "'c'", "'a b'", "NULL"];

fn number(rng: &mut Rng) -> String {
    if rng.below(6) == 0 {
        "NULL".into()
    } else {
        rng.below(20).to_string()
    }
}

fn random_write(rng: &mut Rng) -> String {
    let id = rng.below(40);
    match rng.below(5) {
        0 | 1 => format!(
            "INSERT INTO ix.t VALUES ({id}, {}, {}, {}.5) ON CONFLICT (id) DO UPDATE SET k = EXCLUDED.k, n = EXCLUDED.n",
            *rng.pick(&KEYS),
            number(rng),
            rng.below(9)
        ),
        2 => format!("UPDATE ix.t SET k = {} WHERE id = {id}", *rng.pick(&KEYS)),
        3 => format!("UPDATE ix.t SET n = n + 1 WHERE n < {}", rng.below(20)),
        _ => format!("DELETE FROM ix.t WHERE id = {id}"),
    }
}

/// An indexed filter, the same filter in a form no index answers, and whether its
/// first column is `k` (answered by `t_k`) rather than `n` (by `t_n`, once it exists).
fn random_filter(rng: &mut Rng) -> (String, String, bool) {
    let a = rng.below(20);
    let b = a + rng.below(8);
    let k = *rng.pick(&KEYS[..4]);
    let k2 = *rng.pick(&KEYS[..4]);
    match rng.below(7) {
        0 => (format!("k = {k}"), format!("k || '' = {k}"), true),
        1 => (
            format!("k IN ({k}, {k2})"),
            format!("k || '' IN ({k}, {k2})"),
            true,
        ),
        2 => (format!("n > {a}"), format!("n + 0 > {a}"), false),
        3 => (
            format!("n BETWEEN {a} AND {b}"),
            format!("n + 0 BETWEEN {a} AND {b}"),
            false,
        ),
        4 => (
            format!("n <= {a} AND n > {}", a / 2),
            format!("n + 0 <= {a} AND n + 0 > {}", a / 2),
            false,
        ),
        // Equality on `k` is preferred to a range on `n`.
        5 => (
            format!("k = {k} AND n >= {a}"),
            format!("k || '' = {k} AND n + 0 >= {a}"),
            true,
        ),
        _ => (
            format!("k >= {k} AND k < {k2}"),
            format!("k || '' >= {k} AND k || '' < {k2}"),
            true,
        ),
    }
}

/// The lines of `EXPLAIN <sql>` as `user`.
async fn explain_as(server: &TestServer, user: &str, password: &str, sql: &str) -> String {
    let explain = server
        .execute_sql_as(user, password, &format!("EXPLAIN {sql}"))
        .await;
    let rows = explain.rows();
    rows.iter()
        .map(|r| r[1].to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn check_users(server: &TestServer, rng: &mut Rng, phase: &str, has_t_n: bool) {
    for user in ["alice", "bob"] {
        let password = format!("{user}-pw");
        for i in 0..25 {
            let (indexed, plain, on_k) = random_filter(rng);
            let query = |filter: &str| format!("SELECT id, k, n FROM ix.t WHERE {filter} ORDER BY id");
            let got = server.execute_sql_as(user, &password, &query(&indexed)).await;
            got.expect_success();
            let expected = server.execute_sql_as(user, &password, &query(&plain)).await;
            expected.expect_success();
            assert_eq!(got.rows(), expected.rows(), "{phase}, {user}: {indexed}");
            if i >= 10 {
                continue;
            }
            // The indexed form is read through the index that leads with its column;
            // the plain form through none.
            let wanted = match (on_k, has_t_n) {
                (true, _) => "hot=index t_k ",
                (false, true) => "hot=index t_n ",
                (false, false) => "hot=stream",
            };
            let plan = explain_as(server, user, &password, &query(&indexed)).await;
            assert!(
                plan.contains(wanted),
                "{phase}, {user}: {indexed} wants {wanted}: {plan}"
            );
            let plan = explain_as(server, user, &password, &query(&plain)).await;
            assert!(
                plan.contains("hot=stream"),
                "{phase}, {user}: {plain} must scan: {plan}"
            );
        }
    }
}

#[tokio::test]
async fn indexed_reads_match_scans_through_writes_flushes_and_restarts() {
    let seed: u64 = std::env::var("KALAMDB_INDEX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1d_e5ed);
    let mut rng = Rng(seed);
    let mut server = TestServer::start().await;
    server.create_user("alice", "alice-pw", "user").await;
    server.create_user("bob", "bob-pw", "user").await;
    server
        .execute_sql(
            "CREATE NAMESPACE ix; \
             CREATE USER TABLE ix.t (id INT PRIMARY KEY, k TEXT, n INT, d DOUBLE); \
             CREATE INDEX t_k ON ix.t (k)",
        )
        .await
        .expect_success();
    for round in 0..6 {
        for user in ["alice", "bob"] {
            for _ in 0..30 {
                let sql = random_write(&mut rng);
                server
                    .execute_sql_as(user, &format!("{user}-pw"), &sql)
                    .await
                    .expect_success();
            }
        }
        match round {
            // An index over rows that exist, hot and (after round 1) cold.
            2 => {
                server
                    .execute_sql("CREATE INDEX t_n ON ix.t (n, k)")
                    .await
                    .expect_success();
            }
            1 | 3 => {
                server.flush_and_wait("ix.t").await;
            }
            4 => server.restart().await,
            _ => {}
        }
        check_users(
            &server,
            &mut rng,
            &format!("round {round} (seed {seed})"),
            round >= 2,
        )
        .await;
    }
    // Each user's rows only: bob's index entries never answer alice.
    let alice = server
        .execute_sql_as(
            "alice",
            "alice-pw",
            "SELECT count(*) FROM ix.t WHERE k IN ('a', 'b', 'c', 'a b')",
        )
        .await;
    let alice_plain = server
        .execute_sql_as(
            "alice",
            "alice-pw",
            "SELECT count(*) FROM ix.t WHERE k || '' IN ('a', 'b', 'c', 'a b')",
        )
        .await;
    assert_eq!(alice.rows(), alice_plain.rows());
    assert_ne!(
        alice.rows(),
        vec![vec![Value::from(0)]],
        "the test wrote no rows for alice"
    );
}

#[tokio::test]
async fn indexed_equality_on_a_shared_table_is_a_point_read() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE ix; \
             CREATE SHARED TABLE ix.s (id BIGINT PRIMARY KEY, k TEXT, n INT) WITH (ACCESS_LEVEL = 'PUBLIC'); \
             INSERT INTO ix.s VALUES (1, 'a', 1), (2, 'b', 2), (3, 'a', 3); \
             CREATE INDEX s_k ON ix.s (k); \
             CREATE INDEX s_n ON ix.s (n)",
        )
        .await
        .expect_success();
    let before = crate::test_read_path::point_reads(&server).await;
    let rows = |sql: &'static str| {
        let server = &server;
        async move {
            let response = server.execute_sql(sql).await;
            response.expect_success();
            let mut rows = response.rows();
            rows.sort_by_key(|r| r[0].as_i64());
            rows
        }
    };
    let ids = |rows: Vec<Vec<Value>>| rows.iter().map(|r| r[0].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(rows("SELECT id, k FROM ix.s WHERE k = 'a'").await), [1, 3]);
    assert_eq!(ids(rows("SELECT * FROM ix.s WHERE k IN ('b', 'zz')").await), [2]);
    assert_eq!(ids(rows("SELECT id FROM ix.s WHERE n = 3").await), [3]);
    assert_eq!(
        ids(rows("SELECT id FROM ix.s WHERE k = 'none'").await),
        Vec::<i64>::new()
    );
    server
        .execute_sql("UPDATE ix.s SET k = 'b' WHERE id = 1; DELETE FROM ix.s WHERE id = 3")
        .await
        .expect_success();
    assert_eq!(
        ids(rows("SELECT id FROM ix.s WHERE k = 'a'").await),
        Vec::<i64>::new()
    );
    assert_eq!(ids(rows("SELECT id, n FROM ix.s WHERE k = 'b'").await), [1, 2]);
    // Six statements answered without planning; a user sees the same rows.
    assert_eq!(crate::test_read_path::point_reads(&server).await - before, 6);
    server.create_user("carol", "carol-pw", "user").await;
    let carol = server
        .execute_sql_as("carol", "carol-pw", "SELECT id FROM ix.s WHERE k = 'b'")
        .await;
    carol.expect_success();
    assert_eq!(carol.rows().len(), 2);
}

#[tokio::test]
async fn unique_indexes_hold_across_tiers_scopes_and_restarts() {
    let mut server = TestServer::start().await;
    server.create_user("alice", "alice-pw", "user").await;
    server.create_user("bob", "bob-pw", "user").await;
    server
        .execute_sql("CREATE NAMESPACE ux; CREATE USER TABLE ux.t (id INT PRIMARY KEY, email TEXT, n INT)")
        .await
        .expect_success();
    async fn as_alice(server: &TestServer, sql: &str) -> crate::common::SqlResponse {
        server.execute_sql_as("alice", "alice-pw", sql).await
    }
    let alice = |sql: &'static str| {
        let server = &server;
        async move { as_alice(server, sql).await }
    };
    alice("INSERT INTO ux.t VALUES (1, 'a', 1), (2, 'b', 1), (3, NULL, 2)")
        .await
        .expect_success();
    server.flush_and_wait("ux.t").await;
    // Built over the rows in Parquet; a duplicate there refuses the index.
    server
        .execute_sql("CREATE UNIQUE INDEX t_n ON ux.t (n)")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    server
        .execute_sql("CREATE UNIQUE INDEX t_email ON ux.t (email)")
        .await
        .expect_success();
    let count = server.execute_sql("SELECT count(*) FROM system.indexes").await;
    assert_eq!(count.rows(), vec![vec![Value::from(1)]]);
    // A value held by a flushed row is taken.
    alice("INSERT INTO ux.t VALUES (4, 'a', 4)")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    // Until that row changes or goes.
    alice("UPDATE ux.t SET email = 'z' WHERE id = 1")
        .await
        .expect_success();
    alice("INSERT INTO ux.t VALUES (4, 'a', 4)")
        .await
        .expect_success();
    alice("DELETE FROM ux.t WHERE id = 2").await.expect_success();
    alice("INSERT INTO ux.t VALUES (5, 'b', 5)")
        .await
        .expect_success();
    // Rows flushed after the index was built keep holding their values.
    server.flush_and_wait("ux.t").await;
    for sql in [
        "INSERT INTO ux.t VALUES (6, 'a', 6)",
        "INSERT INTO ux.t VALUES (6, 'z', 6)",
        "UPDATE ux.t SET email = 'b' WHERE id = 3",
    ] {
        alice(sql).await.expect_error(409, "DUPLICATE_KEY");
    }
    // Another user's rows are another scope.
    server
        .execute_sql_as(
            "bob",
            "bob-pw",
            "INSERT INTO ux.t VALUES (1, 'a', 1), (2, 'z', 2)",
        )
        .await
        .expect_success();
    // After a restart, the same.
    server.restart().await;
    as_alice(&server, "INSERT INTO ux.t VALUES (7, 'b', 7)")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    as_alice(
        &server,
        "INSERT INTO ux.t VALUES (7, NULL, 7), (8, NULL, 8), (9, 'new', 9)",
    )
    .await
    .expect_success();
    let rows = as_alice(&server, "SELECT id, email FROM ux.t ORDER BY id").await;
    rows.expect_success();
    assert_eq!(
        rows.body["results"][0]["rows"],
        serde_json::json!([
            [1, "z"],
            [3, null],
            [4, "a"],
            [5, "b"],
            [7, null],
            [8, null],
            [9, "new"]
        ])
    );
}

/// Runs `work`, failing the test if it does not finish within 20 s.
async fn must_finish<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), work)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for the index build"))
}

/// CREATE INDEX builds while writers go on: between its bulk pass and its catch-up
/// (held there) other users insert and update rows, and the index it commits
/// answers for them too. A build waits for a running flush instead of racing it
/// (a flush committing between the two passes of the old build made a UNIQUE
/// index see the same rows twice: a spurious DUPLICATE_KEY), and a duplicate
/// written during the build fails it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_builds_while_writers_go_on() {
    let server = std::sync::Arc::new(TestServer::start().await);
    for user in ["alice", "bob"] {
        server.create_user(user, "pw", "user").await;
    }
    server
        .execute_sql("CREATE NAMESPACE ix; CREATE USER TABLE ix.t (id INT PRIMARY KEY, k TEXT, n INT)")
        .await
        .expect_success();
    for user in ["alice", "bob"] {
        let values: Vec<String> = (1..=200).map(|i| format!("({i}, '{user}{i}', {i})")).collect();
        server
            .execute_sql_as(
                user,
                "pw",
                &format!("INSERT INTO ix.t VALUES {}", values.join(", ")),
            )
            .await
            .expect_success();
    }
    // A flush runs (held after its first batch): the build waits for it.
    server.db().holds().hold("flush_start");
    let flush = server.flush_table("ix.t").await;
    server.wait_at_hold("flush_start").await;
    server.db().holds().hold("index_build:t");
    let build = {
        let server = server.clone();
        tokio::spawn(async move { server.execute_sql("CREATE UNIQUE INDEX t_k ON ix.t (k)").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        server.db().holds().arrivals("index_build:t"),
        0,
        "the build waits for the flush"
    );
    server.db().holds().release("flush_start");
    assert_eq!(server.wait_for_job(&flush).await["status"], "completed");
    server.wait_at_hold("index_build:t").await;
    // Writers go on while the build is held.
    for (user, sql) in [
        ("bob", "INSERT INTO ix.t VALUES (500, 'new', 1000)"),
        ("alice", "UPDATE ix.t SET k = 'renamed' WHERE id = 7"),
        ("alice", "DELETE FROM ix.t WHERE id = 8"),
    ] {
        must_finish(sql, server.execute_sql_as(user, "pw", sql))
            .await
            .expect_success();
    }
    assert!(!build.is_finished());
    server.db().holds().release("index_build:t");
    build.await.unwrap().expect_success();
    // The index answers for rows of both tiers and for the writes made meanwhile.
    for (user, k, id) in [
        ("bob", "new", Some(500)),
        ("alice", "renamed", Some(7)),
        ("alice", "alice7", None),
        ("alice", "alice8", None),
        ("alice", "alice9", Some(9)),
    ] {
        let sql = format!("SELECT id FROM ix.t WHERE k = '{k}'");
        let plan = server
            .execute_sql_as(user, "pw", &format!("EXPLAIN {sql}"))
            .await
            .rows();
        let plan: String = plan.iter().map(|r| r[1].to_string()).collect();
        assert!(plan.contains("hot=index t_k"), "{plan}");
        let rows = server.execute_sql_as(user, "pw", &sql).await.rows();
        let expected: Vec<Vec<serde_json::Value>> =
            id.into_iter().map(|i| vec![serde_json::json!(i)]).collect();
        assert_eq!(rows, expected, "{user}: {sql}");
    }
    // UNIQUE holds across both tiers for every row, old and new.
    for (user, k) in [
        ("alice", "alice9"),
        ("alice", "renamed"),
        ("bob", "new"),
        ("bob", "bob1"),
    ] {
        server
            .execute_sql_as(user, "pw", &format!("INSERT INTO ix.t VALUES (900, '{k}', 0)"))
            .await
            .expect_error(409, "DUPLICATE_KEY");
    }
    // A duplicate written while a build is held makes that build fail, leaving no
    // index; once it is gone, the index builds.
    server.db().holds().hold("index_build:t");
    let build = {
        let server = server.clone();
        tokio::spawn(async move { server.execute_sql("CREATE UNIQUE INDEX t_n ON ix.t (n)").await })
    };
    server.wait_at_hold("index_build:t").await;
    must_finish(
        "a duplicate n",
        server.execute_sql_as("bob", "pw", "INSERT INTO ix.t VALUES (501, 'dup', 3)"),
    )
    .await
    .expect_success();
    server.db().holds().release("index_build:t");
    build.await.unwrap().expect_error(409, "DUPLICATE_KEY");
    let indexes = server
        .execute_sql("SELECT index_name FROM system.indexes WHERE table_name = 't' ORDER BY index_name")
        .await;
    assert_eq!(indexes.rows(), vec![vec![serde_json::json!("t_k")]]);
    server
        .execute_sql_as("bob", "pw", "DELETE FROM ix.t WHERE id = 501")
        .await
        .expect_success();
    server
        .execute_sql("CREATE UNIQUE INDEX t_n ON ix.t (n)")
        .await
        .expect_success();
}

/// `UNIQUE` in CREATE TABLE, as ORMs write it: inline, as a table constraint (one or
/// more columns), named with CONSTRAINT; each is a UNIQUE index named as PostgreSQL
/// names it, listed in `system.indexes`, and enforced like `CREATE UNIQUE INDEX`.
#[tokio::test]
async fn unique_constraints_of_create_table_are_unique_indexes() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE SHARED TABLE app.a (id INTEGER UNIQUE, x INT); \
             CREATE SHARED TABLE app.b (id BIGINT PRIMARY KEY UNIQUE, email TEXT, org INT, name TEXT, \
                 UNIQUE (email), CONSTRAINT b_org_name UNIQUE (org, name), UNIQUE (org, name)); \
             CREATE USER TABLE app.u (id BIGINT PRIMARY KEY, handle TEXT UNIQUE)",
        )
        .await
        .expect_success();
    let indexes = server
        .execute_sql(
            "SELECT table_name, index_name, columns, is_unique FROM system.indexes \
             WHERE namespace = 'app' ORDER BY table_name, index_name",
        )
        .await;
    assert_eq!(
        indexes.rows(),
        vec![
            vec![json!("a"), json!("a_id_key"), json!("id"), json!(true)],
            vec![json!("b"), json!("b_email_key"), json!("email"), json!(true)],
            vec![json!("b"), json!("b_org_name"), json!("org, name"), json!(true)],
            vec![json!("u"), json!("u_handle_key"), json!("handle"), json!(true)],
        ],
        "the primary key and a repeated column set add no index"
    );
    // Enforced: a duplicate is refused, NULLs never conflict (as in SQL).
    server
        .execute_sql("INSERT INTO app.a VALUES (1, 1), (NULL, 2), (NULL, 3)")
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO app.a VALUES (1, 4)")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    server
        .execute_sql("INSERT INTO app.b VALUES (1, 'x@y', 1, 'n'), (2, 'z@y', 1, 'm')")
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO app.b VALUES (3, 'w@y', 1, 'n')")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    server
        .execute_sql("UPDATE app.b SET email = 'x@y' WHERE id = 2")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    // In a USER table, per user (each user's rows are their own).
    server.create_user("alice", "pw", "user").await;
    server.create_user("bob", "pw", "user").await;
    for user in ["alice", "bob"] {
        server
            .execute_sql_as(user, "pw", "INSERT INTO app.u VALUES (1, 'me')")
            .await
            .expect_success();
    }
    server
        .execute_sql_as("alice", "pw", "INSERT INTO app.u VALUES (2, 'me')")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    // Refused: UNIQUE on a STREAM table, on JSON, through ADD COLUMN; a name taken.
    for (sql, status, code) in [
        (
            "CREATE STREAM TABLE app.s (id BIGINT PRIMARY KEY, k TEXT UNIQUE) WITH (TTL_SECONDS = 60)",
            400,
            "UNSUPPORTED",
        ),
        (
            "CREATE SHARED TABLE app.j (id BIGINT PRIMARY KEY, doc JSON UNIQUE)",
            400,
            "UNSUPPORTED",
        ),
        ("ALTER TABLE app.a ADD COLUMN k TEXT UNIQUE", 400, "UNSUPPORTED"),
        (
            "CREATE SHARED TABLE app.c (id BIGINT, CONSTRAINT a_id_key UNIQUE (id))",
            409,
            "ALREADY_EXISTS",
        ),
        (
            "CREATE SHARED TABLE app.d (id BIGINT, UNIQUE (nope))",
            400,
            "INVALID_SQL",
        ),
    ] {
        server.execute_sql(sql).await.expect_error(status, code);
    }
    // A generated name that is taken gets a number, as in PostgreSQL: `user (org_id)`
    // and `user_org (id)` both make `user_org_id_key`.
    server
        .execute_sql(
            "CREATE SHARED TABLE app.user (org_id BIGINT UNIQUE); \
             CREATE SHARED TABLE app.user_org (id BIGINT UNIQUE, a_b INT, a INT, b INT, UNIQUE (a_b), UNIQUE (a, b)); \
             CREATE STREAM TABLE app.st (id BIGINT PRIMARY KEY UNIQUE) WITH (TTL_SECONDS = 60)",
        )
        .await
        .expect_success();
    let names = server
        .execute_sql(
            "SELECT table_name, index_name FROM system.indexes \
             WHERE namespace = 'app' AND table_name IN ('user', 'user_org') ORDER BY index_name",
        )
        .await;
    assert_eq!(
        names.rows(),
        vec![
            vec![json!("user_org"), json!("user_org_a_b_key")],
            vec![json!("user_org"), json!("user_org_a_b_key1")],
            vec![json!("user"), json!("user_org_id_key")],
            vec![json!("user_org"), json!("user_org_id_key1")],
        ]
    );
    server
        .execute_sql("CREATE SHARED TABLE app.e (id BIGINT, UNIQUE NULLS NOT DISTINCT (id))")
        .await
        .expect_error(400, "UNSUPPORTED");
    assert_eq!(
        server
            .execute_sql("SELECT count(*) FROM system.tables WHERE table_name IN ('s', 'j', 'c', 'd', 'e')")
            .await
            .rows(),
        vec![vec![json!(0)]],
        "nothing was created"
    );
}
