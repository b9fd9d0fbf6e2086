//! Secondary indexes against the scan they replace: random writes by two users of a
//! USER table (inserts, updates that move rows between indexed values, deletes,
//! flushes that move rows to Parquet, an index created over existing rows, a
//! restart), each user's indexed queries compared with the same filters written so
//! that no index can answer them.

use serde_json::Value;

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
