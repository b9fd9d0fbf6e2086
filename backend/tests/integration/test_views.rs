//! Views: `CREATE [OR REPLACE] VIEW`, `DROP VIEW`, `system.views`; a view is
//! expanded under its reader's rights and scope (docs/SQL_SYNTAX.md, "Views").

use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn views_read_as_their_caller_nest_and_survive_a_restart() {
    let mut server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE NAMESPACE other; \
             CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT); \
             CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY, kind TEXT, n INT); \
             INSERT INTO app.s VALUES (1, 'a', 1), (2, 'a', 2), (3, 'b', 5)",
        )
        .await
        .expect_success();
    for (user, rows) in [
        ("alice", "(1, 'a1'), (2, 'hidden')"),
        ("bob", "(1, 'b1'), (3, 'b3')"),
    ] {
        server.create_user(user, "pw", "user").await;
        server
            .execute_sql_as(user, "pw", &format!("INSERT INTO app.notes VALUES {rows}"))
            .await
            .expect_success();
    }
    // Unqualified names in a view mean its own namespace, whoever reads it from where.
    server
        .execute_sql(
            "CREATE VIEW app.visible AS SELECT id, body FROM notes WHERE body <> 'hidden'; \
             CREATE VIEW app.totals (k, total) AS SELECT kind, sum(n) FROM s GROUP BY kind; \
             CREATE VIEW app.big AS SELECT k FROM totals WHERE total > 2",
        )
        .await
        .expect_success();
    // A view over a USER table shows each caller their own rows.
    let alice = server
        .execute_sql_as("alice", "pw", "SELECT id, body FROM app.visible ORDER BY id")
        .await;
    assert_eq!(alice.rows(), vec![vec![json!(1), json!("a1")]]);
    let bob = server
        .execute_sql_as("bob", "pw", "SELECT * FROM app.visible ORDER BY id")
        .await;
    assert_eq!(
        bob.rows(),
        vec![vec![json!(1), json!("b1")], vec![json!(3), json!("b3")]]
    );
    assert_eq!(bob.column_names(), vec!["id", "body"]);
    // Column names, views of views, aliases, joins and subqueries, from another
    // default namespace.
    let totals = server
        .post_json_as(
            "root",
            "",
            json!({"sql": "SELECT t.k, t.total FROM app.totals t ORDER BY t.k", "namespace": "other"}),
        )
        .await;
    assert_eq!(
        totals.rows(),
        vec![vec![json!("a"), json!(3)], vec![json!("b"), json!(5)]]
    );
    assert_eq!(totals.column_names(), vec!["k", "total"]);
    let nested = server
        .execute_sql(
            "SELECT s.id FROM app.s JOIN app.big ON s.kind = big.k \
             WHERE s.id IN (SELECT id FROM app.s WHERE kind IN (SELECT k FROM app.big)) ORDER BY s.id",
        )
        .await;
    assert_eq!(
        nested.rows(),
        vec![vec![json!(1)], vec![json!(2)], vec![json!(3)]]
    );
    // A CTE named like a view is the CTE.
    let cte = server
        .execute_sql("WITH totals AS (SELECT 42 AS k) SELECT k FROM totals")
        .await;
    assert_eq!(cte.rows(), vec![vec![json!(42)]]);

    // Listed, with the stored (qualified) definition.
    let listed = server
        .execute_sql("SELECT namespace, view_name, definition FROM system.views ORDER BY view_name")
        .await;
    let rows = listed.rows();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2][1], "visible");
    assert!(rows[2][2].as_str().unwrap().contains("\"app\".notes"), "{rows:?}");

    // Replacing, refusing duplicates, and what cannot be written or dropped.
    server
        .execute_sql("CREATE OR REPLACE VIEW app.big AS SELECT k FROM app.totals WHERE total > 4")
        .await
        .expect_success();
    assert_eq!(
        server.execute_sql("SELECT k FROM app.big").await.rows(),
        vec![vec![json!("b")]]
    );
    server
        .execute_sql("CREATE VIEW app.big AS SELECT 1")
        .await
        .expect_error(409, "ALREADY_EXISTS");
    server
        .execute_sql("CREATE VIEW IF NOT EXISTS app.big AS SELECT 1")
        .await
        .expect_success();
    server
        .execute_sql("CREATE VIEW app.s AS SELECT 1")
        .await
        .expect_error(409, "ALREADY_EXISTS");
    server
        .execute_sql("CREATE OR REPLACE VIEW app.totals AS SELECT k AS kind, 1 AS total FROM app.big")
        .await
        .expect_error(400, "INVALID_SQL");
    server
        .execute_sql("CREATE VIEW app.broken AS SELECT nope FROM app.s")
        .await
        .expect_error(400, "COLUMN_NOT_FOUND");
    server
        .execute_sql("CREATE VIEW app.missing AS SELECT * FROM app.nothing")
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    server
        .execute_sql("INSERT INTO app.visible VALUES (9, 'x')")
        .await
        .expect_error(400, "UNSUPPORTED");
    server
        .execute_sql("DROP TABLE app.s")
        .await
        .expect_error(409, "DEPENDENT_OBJECTS");
    server
        .execute_sql("DROP VIEW app.totals")
        .await
        .expect_error(409, "DEPENDENT_OBJECTS");
    server
        .execute_sql("DROP TABLE app.visible")
        .await
        .expect_error(400, "INVALID_SQL");
    server
        .execute_sql_as("alice", "pw", "CREATE VIEW app.mine AS SELECT 1")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .execute_sql("DROP NAMESPACE app")
        .await
        .expect_error(409, "NAMESPACE_NOT_EMPTY");

    // Table functions stay functions; a select list that repeats a name could not be
    // read as a table, so it is refused at CREATE; three-part names still work.
    server
        .execute_sql("CREATE VIEW app.series AS SELECT value FROM generate_series(1, 3)")
        .await
        .expect_success();
    assert_eq!(
        server
            .execute_sql("SELECT sum(value) FROM app.series")
            .await
            .rows(),
        vec![vec![json!(6)]]
    );
    let twice = server
        .execute_sql("CREATE VIEW app.twice AS SELECT id, id FROM app.s")
        .await;
    twice.expect_error(400, "INVALID_SQL");
    assert!(
        twice.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("two columns")
    );
    server
        .execute_sql("CREATE VIEW app.twice (a, b) AS SELECT id, n AS id FROM app.s")
        .await
        .expect_error(400, "INVALID_SQL");
    assert_eq!(
        server
            .execute_sql("SELECT count(*) FROM kalam.app.s")
            .await
            .rows(),
        vec![vec![json!(3)]]
    );
    // A view in another namespace keeps this namespace's views from being dropped.
    server
        .execute_sql("CREATE VIEW other.outside AS SELECT k FROM app.totals")
        .await
        .expect_success();
    server
        .execute_sql("DROP NAMESPACE app CASCADE")
        .await
        .expect_error(409, "DEPENDENT_OBJECTS");
    server
        .execute_sql("DROP VIEW other.outside; DROP VIEW app.series")
        .await
        .expect_success();

    // After a restart the views are there and mean the same.
    server.restart().await;
    let alice = server
        .execute_sql_as("alice", "pw", "SELECT id FROM app.visible")
        .await;
    assert_eq!(alice.rows(), vec![vec![json!(1)]]);
    server
        .execute_sql("DROP VIEW app.big; DROP VIEW app.totals; DROP TABLE app.s; DROP VIEW IF EXISTS app.big")
        .await
        .expect_success();
    server
        .execute_sql("SELECT * FROM app.big")
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    // CASCADE takes a namespace's views with it.
    server
        .execute_sql("DROP NAMESPACE app CASCADE")
        .await
        .expect_success();
    assert!(
        server
            .execute_sql("SELECT * FROM system.views")
            .await
            .rows()
            .is_empty()
    );
}

/// Each view's query is within the nesting limits alone; a view whose expansion
/// goes beyond them is refused like the statement it expands to.
#[tokio::test]
async fn expanded_views_are_held_to_the_nesting_limits() {
    let server = TestServer::start().await;
    let parens = |inner: &str, levels: usize| format!("{}{inner}{}", "(".repeat(levels), ")".repeat(levels));
    server
        .execute_sql(&format!(
            "CREATE NAMESPACE app; CREATE VIEW app.v1 AS SELECT {} AS x",
            parens("1", 200)
        ))
        .await
        .expect_success();
    assert_eq!(
        server.execute_sql("SELECT x FROM app.v1").await.rows(),
        vec![vec![json!(1)]]
    );
    // 100 more levels around it: within the limit as written, beyond it expanded.
    let outer = format!("SELECT {} AS y", parens("(SELECT x FROM app.v1)", 100));
    let deep = server
        .execute_sql(&format!("CREATE VIEW app.v2 AS {outer}"))
        .await;
    deep.expect_error(400, "INVALID_SQL");
    assert!(
        deep.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too deeply nested"),
        "{}",
        deep.body
    );
    let direct = server.execute_sql(&outer).await;
    direct.expect_error(400, "INVALID_SQL");
}

#[tokio::test]
async fn a_view_read_in_a_transaction_sees_its_snapshot_and_own_writes() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY, n INT); \
             INSERT INTO app.s VALUES (1, 1); CREATE VIEW app.v AS SELECT count(*) AS c, sum(n) AS t FROM app.s",
        )
        .await
        .expect_success();
    let answer = server
        .execute_sql("BEGIN; INSERT INTO app.s VALUES (2, 10); SELECT c, t FROM app.v; ROLLBACK; SELECT c, t FROM app.v")
        .await;
    answer.expect_success();
    assert_eq!(answer.body["results"][2]["rows"], json!([[2, 11]]));
    assert_eq!(answer.body["results"][4]["rows"], json!([[1, 1]]));
}
