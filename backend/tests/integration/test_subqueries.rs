//! Correlated subqueries against an oracle: random queries of every shape the
//! server decorrelates or runs row by row, answered by the server over a USER table
//! (one user's rows, hot and flushed, beside another user's) and by SQLite (through
//! `rusqlite`) over the same rows; plus the plan choice in EXPLAIN and the bound on
//! row-by-row work.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::common::{Rng, TestServer};

const OPS: [&str; 6] = ["<", "<=", ">", ">=", "=", "<>"];
const COLUMNS: [&str; 4] = ["a", "b", "c", "d"];
const AGGREGATES: [&str; 5] = ["count(*)", "count(x.b)", "sum(x.c)", "max(x.d)", "min(x.b)"];

/// A small value, NULL one time in five.
fn value(rng: &mut Rng) -> String {
    if rng.below(5) == 0 {
        "NULL".into()
    } else {
        rng.below(7).to_string()
    }
}

fn rows_sql(rng: &mut Rng, keys: std::ops::Range<u64>) -> String {
    let rows: Vec<String> = keys
        .map(|k| format!("({k}, {}, {}, {})", value(rng), value(rng), value(rng)))
        .collect();
    format!("INSERT INTO d.t VALUES {}", rows.join(", "))
}

/// One random query over `d.t AS t` (the caller's rows) and `d.u`.
fn random_query(rng: &mut Rng) -> String {
    let c = |rng: &mut Rng| *rng.pick(&COLUMNS);
    let op = |rng: &mut Rng| *rng.pick(&OPS);
    let not = |rng: &mut Rng| if rng.below(2) == 0 { "" } else { "NOT " };
    match rng.below(10) {
        0 => format!(
            "SELECT a, (SELECT {} FROM d.t AS x WHERE x.{} {} t.{}) FROM d.t AS t ORDER BY a",
            *rng.pick(&AGGREGATES),
            c(rng),
            op(rng),
            c(rng)
        ),
        1 => format!(
            "SELECT a, (SELECT {} FROM d.t AS x WHERE x.{} {} t.{} AND x.{} {} t.{}) FROM d.t AS t ORDER BY a",
            *rng.pick(&AGGREGATES),
            c(rng),
            op(rng),
            c(rng),
            c(rng),
            op(rng),
            c(rng)
        ),
        2 => format!(
            "SELECT a FROM d.t AS t WHERE {}EXISTS (SELECT 1 FROM d.t AS x WHERE x.{} {} t.{} AND x.a <> t.a) ORDER BY a",
            not(rng),
            c(rng),
            op(rng),
            c(rng)
        ),
        3 => format!(
            "SELECT a FROM d.t AS t WHERE t.{} {}IN (SELECT x.{} FROM d.t AS x WHERE x.{} {} t.{}) ORDER BY a",
            c(rng),
            not(rng),
            c(rng),
            c(rng),
            op(rng),
            c(rng)
        ),
        4 => format!(
            "SELECT a, t.{} {}IN (SELECT v FROM d.u WHERE u.v {} t.{}) FROM d.t AS t ORDER BY a",
            c(rng),
            not(rng),
            op(rng),
            c(rng)
        ),
        5 => format!(
            "SELECT a FROM d.t AS t WHERE t.{} {} (SELECT {} FROM d.u AS x WHERE x.k {} t.a) ORDER BY a",
            c(rng),
            op(rng),
            *rng.pick(&["count(*)", "max(x.v)", "min(x.v)", "sum(x.v)"]),
            op(rng)
        ),
        6 => format!(
            "SELECT a, (SELECT {} FROM d.t AS x WHERE x.{} {} t.{} AND EXISTS \
             (SELECT 1 FROM d.u WHERE u.v {} x.{} AND u.k <> t.a)) FROM d.t AS t ORDER BY a",
            *rng.pick(&AGGREGATES),
            c(rng),
            op(rng),
            c(rng),
            op(rng),
            c(rng)
        ),
        7 => format!(
            "SELECT a FROM d.t AS t ORDER BY (SELECT {} FROM d.t AS x WHERE x.{} {} t.{}) NULLS FIRST, a",
            *rng.pick(&AGGREGATES),
            c(rng),
            op(rng),
            c(rng)
        ),
        8 => format!(
            "SELECT a, {}EXISTS (SELECT 1 FROM d.t AS x WHERE x.{} {} t.{} AND x.a <> t.a) FROM d.t AS t ORDER BY a",
            not(rng),
            c(rng),
            op(rng),
            c(rng)
        ),
        _ => format!(
            "SELECT a, CASE WHEN (SELECT count(*) FROM d.t AS x WHERE x.{} {} t.{}) > {} THEN 1 ELSE 0 END \
             FROM d.t AS t WHERE t.{} IS NOT NULL ORDER BY a",
            c(rng),
            op(rng),
            c(rng),
            rng.below(4),
            c(rng)
        ),
    }
}

/// SQLite's answer, as the server's JSON values (booleans are 0/1 in both).
fn oracle(db: &rusqlite::Connection, sql: &str) -> Vec<Vec<Value>> {
    let sql = sql.replace("d.t", "t").replace("d.u", "u");
    let mut statement = db
        .prepare(&sql)
        .unwrap_or_else(|e| panic!("SQLite refused {sql}: {e}"));
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            (0..columns)
                .map(|i| {
                    Ok(match row.get::<_, SqlValue>(i)? {
                        SqlValue::Null => Value::Null,
                        SqlValue::Integer(n) => Value::from(n),
                        other => panic!("unexpected SQLite value {other:?}"),
                    })
                })
                .collect()
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn as_numbers(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| match v {
                    Value::Bool(b) => Value::from(b as i64),
                    other => other,
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn correlated_subqueries_match_sqlite() {
    let seed: u64 = std::env::var("KALAMDB_SUBQUERY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let mut rng = Rng(seed);
    let server = TestServer::start().await;
    server.create_user("alice", "alice-pw", "user").await;
    server.create_user("bob", "bob-pw", "user").await;
    server
        .execute_sql(
            "CREATE NAMESPACE d; \
             CREATE USER TABLE d.t (a INT PRIMARY KEY, b INT, c INT, d INT); \
             CREATE SHARED TABLE d.u (k INT PRIMARY KEY, v INT) WITH (ACCESS_LEVEL = 'PUBLIC')",
        )
        .await
        .expect_success();
    let oracle_db = rusqlite::Connection::open_in_memory().expect("sqlite");
    oracle_db
        .execute_batch("CREATE TABLE t (a INT PRIMARY KEY, b INT, c INT, d INT); CREATE TABLE u (k INT PRIMARY KEY, v INT)")
        .expect("sqlite tables");
    let alice = |sql: String| {
        let server = &server;
        async move {
            server
                .execute_sql_as("alice", "alice-pw", &sql)
                .await
                .expect_success();
        }
    };

    // Alice's first rows go to Parquet; bob's rows share the table and must never
    // show up in her answers.
    let first = rows_sql(&mut rng, 0..12);
    alice(first.clone()).await;
    oracle_db
        .execute_batch(&first.replace("d.t", "t"))
        .expect("sqlite");
    let bobs = rows_sql(&mut rng, 0..20);
    server
        .execute_sql_as("bob", "bob-pw", &bobs)
        .await
        .expect_success();
    server.flush_and_wait("d.t").await;
    let second = rows_sql(&mut rng, 12..20);
    alice(second.clone()).await;
    oracle_db
        .execute_batch(&second.replace("d.t", "t"))
        .expect("sqlite");
    let update = format!("UPDATE d.t SET b = {} WHERE a % 3 = 0", value(&mut rng));
    alice(update.clone()).await;
    oracle_db
        .execute_batch(&update.replace("d.t", "t"))
        .expect("sqlite");
    alice("DELETE FROM d.t WHERE a = 5".into()).await;
    oracle_db
        .execute_batch("DELETE FROM t WHERE a = 5")
        .expect("sqlite");
    let shared: Vec<String> = (0..8).map(|k| format!("({k}, {})", value(&mut rng))).collect();
    let shared = format!("INSERT INTO d.u VALUES {}", shared.join(", "));
    server.execute_sql(&shared).await.expect_success();
    oracle_db
        .execute_batch(&shared.replace("d.u", "u"))
        .expect("sqlite");

    let queries = 160;
    for i in 0..queries {
        let sql = random_query(&mut rng);
        let response = server.execute_sql_as("alice", "alice-pw", &sql).await;
        let expected = oracle(&oracle_db, &sql);
        if !response.is_success() {
            panic!("query {i} (seed {seed}) failed: {sql}\n{}", response.body);
        }
        assert_eq!(
            as_numbers(response.rows()),
            expected,
            "query {i} (seed {seed}): {sql}"
        );
    }
}

#[tokio::test]
async fn explain_shows_whether_a_subquery_runs_per_row() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE TABLE default.t (a INT PRIMARY KEY, c INT); \
             INSERT INTO default.t VALUES (1, 1), (2, 5), (3, 3)",
        )
        .await
        .expect_success();
    let plan = |rows: Vec<Vec<Value>>| -> String {
        rows.iter()
            .map(|r| r[1].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Equality correlation: a join, nothing row by row.
    let response = server
        .execute_sql("EXPLAIN SELECT a, (SELECT count(*) FROM t AS x WHERE x.c = t.c) FROM t")
        .await;
    response.expect_success();
    let joined = plan(response.rows());
    assert!(joined.contains("Join"), "{joined}");
    assert!(!joined.contains("CorrelatedApply"), "{joined}");
    // Non-equality correlation: the apply operator, with its outer columns.
    let response = server
        .execute_sql("EXPLAIN SELECT a, (SELECT count(*) FROM t AS x WHERE x.c > t.c) FROM t")
        .await;
    response.expect_success();
    let applied = plan(response.rows());
    assert!(
        applied
            .contains("CorrelatedApply: scalar subquery evaluated per input row (nested loop), outer=[t.c]"),
        "{applied}"
    );
    assert!(applied.contains("CorrelatedApplyExec"), "{applied}");
    // And it answers.
    let response = server
        .execute_sql("SELECT a, (SELECT count(*) FROM t AS x WHERE x.c > t.c) FROM t ORDER BY a")
        .await;
    response.expect_success();
    assert_eq!(
        response.rows(),
        vec![
            vec![Value::from(1), Value::from(2)],
            vec![Value::from(2), Value::from(0)],
            vec![Value::from(3), Value::from(1)]
        ]
    );
}

#[tokio::test]
async fn row_by_row_work_is_bounded() {
    let server = TestServer::start_configured(|s| s.max_subquery_rows = 1_000).await;
    let values: Vec<String> = (0..40).map(|i| format!("({i}, {})", i % 7)).collect();
    server
        .execute_sql(&format!(
            "CREATE TABLE default.t (a INT PRIMARY KEY, c INT); INSERT INTO default.t VALUES {}",
            values.join(", ")
        ))
        .await
        .expect_success();
    // 7 distinct outer values × 40 inner rows: within the bound (answers are
    // remembered per distinct outer value).
    let response = server
        .execute_sql("SELECT sum((SELECT count(*) FROM t AS x WHERE x.c > t.c)) FROM t")
        .await;
    response.expect_success();
    // c = k has (6 - k) values above it, each held by 5 or 6 rows.
    let expected: i64 = (0..40)
        .map(|i| (0..40).filter(|j| j % 7 > i % 7).count() as i64)
        .sum();
    assert_eq!(response.rows(), vec![vec![Value::from(expected)]]);
    // 40 distinct outer values × 40 rows: past it.
    let response = server
        .execute_sql("SELECT a, (SELECT count(*) FROM t AS x WHERE x.a > t.a) FROM t")
        .await;
    response.expect_error(400, "RESOURCES_EXHAUSTED");
    assert!(
        response.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_subquery_rows (1000)"),
        "{}",
        response.body
    );
    // The server goes on answering.
    server
        .execute_sql("SELECT count(*) FROM t")
        .await
        .expect_success();
}
