//! The `/sql` contract: response shapes, multi-statement batches, DDL/DML outcomes.

use serde_json::json;

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_one_answers_the_documented_shape() {
    let server = TestServer::start().await;
    let response = server.execute_sql("SELECT 1 AS id");
    let response = response.await;
    response.expect_success();
    assert_eq!(
        response.body["results"][0]["columns"],
        json!([{"name": "id", "data_type": "BigInt"}])
    );
    assert_eq!(response.body["results"][0]["rows"], json!([[1]]));
    assert_eq!(response.body["results"][0]["row_count"], json!(1));
    assert!(response.body["results"][0]["message"].is_null());
    assert!(response.body["took_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_plain_and_form_bodies_are_sql() {
    let server = TestServer::start().await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let response = server.post_raw(content_type, b"SELECT 40 + 2".to_vec()).await;
        response.expect_success();
        assert_eq!(response.rows(), vec![vec![json!(42)]], "{content_type:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_auth() {
    let server = TestServer::start().await;
    let response = server.client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(body["version"].is_string());
    assert!(body["uptime_s"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_stops_the_batch_and_reports_its_index() {
    let server = TestServer::start().await;
    let response = server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY); SELECT * FROM app.missing; CREATE NAMESPACE never",
        )
        .await;
    response.expect_error(404, "TABLE_NOT_FOUND");
    assert_eq!(response.body["error"]["statement_index"], json!(2));
    assert_eq!(
        response.body["results"].as_array().unwrap().len(),
        2,
        "completed statements are reported"
    );
    let namespaces = server
        .execute_sql("SELECT name FROM system.namespaces ORDER BY name")
        .await;
    assert_eq!(
        namespaces.rows(),
        vec![vec![json!("app")], vec![json!("default")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_atomic() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE TABLE t (id INT PRIMARY KEY, v TEXT NOT NULL); INSERT INTO t VALUES (1, 'a')")
        .await
        .expect_success();
    // Row 2 is fine, row 1 is a duplicate: nothing of the statement is applied.
    server
        .execute_sql("INSERT INTO t VALUES (2, 'b'), (1, 'again')")
        .await
        .expect_error(409, "DUPLICATE_KEY");
    // Row 3 is fine, row 4 breaks NOT NULL.
    server
        .execute_sql("INSERT INTO t VALUES (3, 'c'), (4, NULL)")
        .await
        .expect_error(400, "NOT_NULL_VIOLATION");
    // An UPDATE whose last row breaks NOT NULL changes no row.
    server
        .execute_sql("INSERT INTO t VALUES (5, '5'), (6, 'six')")
        .await
        .expect_success();
    server
        .execute_sql("UPDATE t SET v = CASE WHEN id = 6 THEN NULL ELSE 'changed' END")
        .await
        .expect_error(400, "NOT_NULL_VIOLATION");
    let rows = server.execute_sql("SELECT id, v FROM t ORDER BY id").await;
    assert_eq!(
        rows.rows(),
        vec![
            vec![json!(1), json!("a")],
            vec![json!(5), json!("5")],
            vec![json!(6), json!("six")]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_bind_in_inserts_queries_updates_and_deletes() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE NAMESPACE app; CREATE USER TABLE app.items (id BIGINT PRIMARY KEY, name TEXT, price DOUBLE)")
        .await
        .expect_success();
    let post = |sql: &str, params: serde_json::Value| {
        server.post_json_as(
            "root",
            "",
            json!({"sql": sql, "params": params, "namespace": "app"}),
        )
    };
    post(
        "INSERT INTO items VALUES ($1, $2, $3), ($4, $5, $6)",
        json!([1, "pen", 1.5, 2, "ink", 7]),
    )
    .await
    .expect_success();
    post("UPDATE items SET price = price * $1 WHERE id = $2", json!([2, 2]))
        .await
        .expect_success();
    let rows = post(
        "SELECT name, price FROM items WHERE id >= $1 ORDER BY id",
        json!([1]),
    )
    .await;
    assert_eq!(
        rows.rows(),
        vec![vec![json!("pen"), json!(1.5)], vec![json!("ink"), json!(14.0)]]
    );
    let deleted = post("DELETE FROM items WHERE name = $1", json!(["pen"])).await;
    assert_eq!(deleted.row_count(0), 1);
    post("SELECT * FROM items WHERE id = $1", json!([]))
        .await
        .expect_error(400, "INVALID_PARAMETER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dml_reports_rows_affected() {
    let server = TestServer::start().await;
    let response = server
        .execute_sql(
            "CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y'), (3, 'z'); UPDATE t SET b = 'w' WHERE a >= 2; DELETE FROM t WHERE b = 'w'; SELECT count(*) AS n FROM t",
        )
        .await;
    response.expect_success();
    assert_eq!(response.row_count(1), 3);
    assert_eq!(response.row_count(2), 2);
    assert_eq!(response.row_count(3), 2);
    assert_eq!(response.rows(), vec![vec![json!(1)]]);
    assert!(
        response.body["results"][1]["message"]
            .as_str()
            .unwrap()
            .contains("3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_columns_appear_only_when_named() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x')")
        .await
        .expect_success();
    let star = server.execute_sql("SELECT * FROM t").await;
    assert_eq!(star.column_names(), vec!["a", "b"]);
    let named = server.execute_sql("SELECT *, _seq, _deleted, _id FROM t").await;
    assert_eq!(named.column_names(), vec!["a", "b", "_seq", "_deleted", "_id"]);
    let row = &named.rows()[0];
    assert!(row[2].as_i64().unwrap() > 0);
    assert_eq!(row[3], json!(false));
    // _seq grows with every write.
    server.execute_sql("UPDATE t SET b = 'y'").await.expect_success();
    let after = server.execute_sql("SELECT _seq, _id FROM t").await;
    assert!(after.rows()[0][0].as_i64().unwrap() > row[2].as_i64().unwrap());
    assert_eq!(after.rows()[0][1], row[4], "_id is stable across updates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_rows_survive_a_restart() {
    let mut server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id INT PRIMARY KEY, body TEXT) WITH (FLUSH_POLICY='rows:100'); \
             INSERT INTO app.notes VALUES (1, 'one'), (2, 'two'); ALTER TABLE app.notes ADD COLUMN tag TEXT DEFAULT 'none'; \
             CREATE USER 'alice' WITH PASSWORD 'pw' ROLE user",
        )
        .await
        .expect_success();
    server.restart().await;
    let rows = server
        .execute_sql("SELECT id, body, tag FROM app.notes ORDER BY id")
        .await;
    assert_eq!(
        rows.rows(),
        vec![
            vec![json!(1), json!("one"), json!("none")],
            vec![json!(2), json!("two"), json!("none")]
        ]
    );
    let policy = server
        .execute_sql("SELECT flush_policy FROM system.tables WHERE table_name = 'notes'")
        .await;
    assert_eq!(policy.rows(), vec![vec![json!("rows:100")]]);
    server
        .execute_sql_as("alice", "pw", "SELECT 1")
        .await
        .expect_success();
    // New writes after a restart get larger _seq values than the old ones.
    server
        .execute_sql("INSERT INTO app.notes (id, body) VALUES (3, 'three')")
        .await
        .expect_success();
    let seqs = server
        .execute_sql("SELECT id, _seq FROM app.notes ORDER BY _seq")
        .await;
    let ids: Vec<_> = seqs.rows().iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids.last(), Some(&json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_status() {
    let server = TestServer::start().await;
    server.execute_sql("SELECT 1").await.expect_success();
    server
        .execute_sql("SELECT * FROM nope")
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    let text = server
        .client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("kalamdb_http_requests_total{path=\"/sql\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kalamdb_http_requests_total{path=\"/sql\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kalamdb_http_request_duration_seconds_count 2"),
        "{text}"
    );
}

/// Result columns may share a name, as SQL allows; the client sees the names as
/// written (an alias, or a column's name), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_columns_may_repeat_a_name() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE SHARED TABLE app.t (x INT PRIMARY KEY, y TEXT); \
             INSERT INTO app.t VALUES (1, 'b'), (2, 'a'), (3, 'a')",
        )
        .await
        .expect_success();
    let check = |sql: &'static str, names: &'static [&'static str], rows: serde_json::Value| {
        let server = &server;
        async move {
            let answer = server.execute_sql(sql).await;
            answer.expect_success();
            assert_eq!(answer.column_names(), names, "{sql}");
            assert_eq!(answer.body["results"][0]["rows"], rows, "{sql}");
        }
    };
    check("SELECT 1 AS a, 2 AS a", &["a", "a"], json!([[1, 2]])).await;
    check("SELECT x, x FROM app.t WHERE x = 1", &["x", "x"], json!([[1, 1]])).await;
    check(
        "SELECT t.x, x FROM app.t AS t WHERE x < 3 ORDER BY x",
        &["x", "x"],
        json!([[1, 1], [2, 2]]),
    )
    .await;
    check(
        "SELECT count(*), count(*) FROM app.t",
        &["count(*)", "count(*)"],
        json!([[3, 3]]),
    )
    .await;
    // ORDER BY and GROUP BY still reach a select-list alias that is not repeated.
    check(
        "SELECT x AS a, x * 10 AS a, y AS b FROM app.t ORDER BY b, 1",
        &["a", "a", "b"],
        json!([[2, 20, "a"], [3, 30, "a"], [1, 10, "b"]]),
    )
    .await;
    check(
        "SELECT y AS k, count(*) AS n, count(*) AS n FROM app.t GROUP BY k ORDER BY k",
        &["k", "n", "n"],
        json!([["a", 2, 2], ["b", 1, 1]]),
    )
    .await;
    // A set operation takes its names from its first SELECT.
    check(
        "SELECT 1 AS a, 2 AS a UNION ALL SELECT 3, 4 ORDER BY 1",
        &["a", "a"],
        json!([[1, 2], [3, 4]]),
    )
    .await;
    // Beside a wildcard, a name the wildcard brings may be repeated; its columns keep
    // their names (and stay hidden-column-free).
    check(
        "SELECT *, x FROM app.t WHERE x = 1",
        &["x", "y", "x"],
        json!([[1, "b", 1]]),
    )
    .await;
    check(
        "SELECT x * 2 AS y, t.*, upper(y) AS y FROM app.t AS t ORDER BY x LIMIT 1",
        &["y", "x", "y", "y"],
        json!([[2, 1, "b", "B"]]),
    )
    .await;
    check(
        "SELECT t.*, u.* FROM app.t AS t JOIN app.t AS u ON u.x = t.x + 1 ORDER BY t.x",
        &["x", "y", "x", "y"],
        json!([[1, "b", 2, "a"], [2, "a", 3, "a"]]),
    )
    .await;
    // A repeated alias cannot be referred to: ambiguous, an error rather than a guess.
    let answer = server
        .execute_sql("SELECT x AS a, y AS a FROM app.t ORDER BY a")
        .await;
    answer.expect_error(400, "INVALID_SQL");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ambiguous"), "{message}");
    // The streamed formats show the same names.
    let csv = server
        .sql_text_as(
            "root",
            "",
            "format=csv",
            "SELECT x, x AS x FROM app.t WHERE x = 2",
        )
        .await;
    assert_eq!(csv, "x,x\n2,2\n");
}

/// Statements reuse DataFusion session states: nothing of one statement (its
/// namespace, its caller's scope, CURRENT_USER, its clock) reaches the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_share_nothing_through_reused_sessions() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE a; CREATE NAMESPACE b; \
             CREATE SHARED TABLE a.t (id INT PRIMARY KEY, v TEXT) WITH (ACCESS_LEVEL = 'PUBLIC'); \
             CREATE SHARED TABLE b.t (id INT PRIMARY KEY, v TEXT) WITH (ACCESS_LEVEL = 'PUBLIC'); \
             INSERT INTO a.t VALUES (1, 'in a'); INSERT INTO b.t VALUES (1, 'in b'); \
             CREATE USER TABLE a.mine (id INT PRIMARY KEY, owner TEXT DEFAULT CURRENT_USER())",
        )
        .await
        .expect_success();
    server.create_user("una", "una-pw", "user").await;
    server.create_user("vic", "vic-pw", "user").await;
    for (user, password) in [("una", "una-pw"), ("vic", "vic-pw")] {
        server
            .execute_sql_as(user, password, "INSERT INTO a.mine (id) VALUES (1)")
            .await
            .expect_success();
    }
    let mut last_now = String::new();
    for _ in 0..10 {
        for (namespace, expected) in [("a", "in a"), ("b", "in b")] {
            let answer = server
                .post_json_as(
                    "root",
                    "",
                    json!({"sql": "SELECT v FROM t", "namespace": namespace}),
                )
                .await;
            assert_eq!(answer.rows(), vec![vec![json!(expected)]]);
        }
        let answer = server.execute_sql("SELECT v FROM t").await;
        answer.expect_error(404, "TABLE_NOT_FOUND");
        for (user, password) in [("una", "una-pw"), ("vic", "vic-pw")] {
            let mine = server
                .execute_sql_as(user, password, "SELECT owner FROM a.mine")
                .await;
            assert_eq!(mine.rows(), vec![vec![json!(user)]]);
            let me = server
                .execute_sql_as(user, password, "SELECT CURRENT_USER()")
                .await;
            assert_eq!(me.rows(), vec![vec![json!(user)]]);
        }
        let now = server.execute_sql("SELECT CAST(now() AS VARCHAR)").await.rows()[0][0]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            now > last_now,
            "each statement has its own clock: {last_now} then {now}"
        );
        last_now = now;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
