//! Two users in one USER table: reads, counts, updates, deletes and key checks never cross.

use serde_json::json;

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_never_see_or_touch_each_others_rows() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE NAMESPACE chat; CREATE USER TABLE chat.messages (id INT PRIMARY KEY, body TEXT, likes INT DEFAULT 0)")
        .await
        .expect_success();
    server.create_user("alice", "alice-pw", "user").await;
    server.create_user("bob", "bob-pw", "user").await;
    let alice = |sql: &'static str| server.execute_sql_as("alice", "alice-pw", sql);
    let bob = |sql: &'static str| server.execute_sql_as("bob", "bob-pw", sql);

    alice("INSERT INTO chat.messages (id, body) VALUES (1, 'a1'), (2, 'a2'), (3, 'a3')")
        .await
        .expect_success();
    // The same primary keys are free in bob's scope.
    bob("INSERT INTO chat.messages (id, body) VALUES (1, 'b1'), (2, 'b2')")
        .await
        .expect_success();

    assert_eq!(
        alice("SELECT count(*) FROM chat.messages").await.rows(),
        vec![vec![json!(3)]]
    );
    assert_eq!(
        bob("SELECT count(*) FROM chat.messages").await.rows(),
        vec![vec![json!(2)]]
    );
    assert_eq!(
        bob("SELECT body FROM chat.messages ORDER BY id").await.rows(),
        vec![vec![json!("b1")], vec![json!("b2")]]
    );
    // A point lookup by primary key reads only the caller's row.
    assert_eq!(
        bob("SELECT body FROM chat.messages WHERE id = 1").await.rows(),
        vec![vec![json!("b1")]]
    );
    assert!(
        bob("SELECT body FROM chat.messages WHERE id = 3")
            .await
            .rows()
            .is_empty()
    );

    // UPDATE and DELETE with predicates matching alice's keys touch only bob's rows.
    let updated = bob("UPDATE chat.messages SET likes = likes + 10 WHERE id IN (1, 2, 3)").await;
    assert_eq!(updated.row_count(0), 2);
    let deleted = bob("DELETE FROM chat.messages WHERE id = 3 OR body = 'a1'").await;
    assert_eq!(deleted.row_count(0), 0);
    assert_eq!(
        alice("SELECT id, body, likes FROM chat.messages ORDER BY id")
            .await
            .rows(),
        vec![
            vec![json!(1), json!("a1"), json!(0)],
            vec![json!(2), json!("a2"), json!(0)],
            vec![json!(3), json!("a3"), json!(0)]
        ]
    );

    // A duplicate key is only a duplicate inside one's own scope; the error names only the caller's key.
    let duplicate = bob("INSERT INTO chat.messages (id, body) VALUES (2, 'again')").await;
    duplicate.expect_error(409, "DUPLICATE_KEY");
    assert!(!duplicate.body.to_string().contains("a2"));
    bob(
        "INSERT INTO chat.messages (id, body) VALUES (3, 'b3') ON CONFLICT (id) DO UPDATE SET body = 'never'",
    )
    .await
    .expect_success();
    assert_eq!(
        alice("SELECT body FROM chat.messages WHERE id = 3").await.rows(),
        vec![vec![json!("a3")]]
    );

    // Hidden columns, aggregates, joins and subqueries stay inside the scope too.
    assert_eq!(
        alice("SELECT count(*), sum(likes), max(_seq) > 0 FROM chat.messages")
            .await
            .rows(),
        vec![vec![json!(3), json!(0), json!(true)]]
    );
    assert_eq!(
        bob("SELECT count(*) FROM chat.messages m JOIN chat.messages n ON m.id = n.id WHERE m.id IN (SELECT id FROM chat.messages)")
            .await
            .rows(),
        vec![vec![json!(3)]]
    );

    // Even root sees only its own (empty) scope.
    assert_eq!(
        server
            .execute_sql("SELECT count(*) FROM chat.messages")
            .await
            .rows(),
        vec![vec![json!(0)]]
    );

    // A user cannot change the schema or create users (dba and above can).
    alice("DROP TABLE chat.messages")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    alice("CREATE USER 'mallory' WITH PASSWORD 'x' ROLE system")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    // system.users shows a user only its own row, and never a hash.
    let users = alice("SELECT * FROM system.users").await;
    assert_eq!(users.rows().len(), 1);
    assert_eq!(users.rows()[0][1], json!("alice"));
    assert!(!users.body.to_string().contains("argon2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_tables_are_one_set_of_rows() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE SHARED TABLE config (k TEXT PRIMARY KEY, v TEXT); INSERT INTO config VALUES ('mode', 'fast')")
        .await
        .expect_success();
    server.create_user("svc", "svc-pw", "service").await;
    server.create_user("alice", "alice-pw", "user").await;
    let rows = server
        .execute_sql_as("svc", "svc-pw", "SELECT v FROM config WHERE k = 'mode'")
        .await;
    assert_eq!(rows.rows(), vec![vec![json!("fast")]]);
    server
        .execute_sql_as("alice", "alice-pw", "UPDATE config SET v = 'slow'")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .execute_sql_as("svc", "svc-pw", "UPDATE config SET v = 'slow'")
        .await
        .expect_success();
    assert_eq!(
        server.execute_sql("SELECT v FROM config").await.rows(),
        vec![vec![json!("slow")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_take_effect_on_the_next_request() {
    let server = TestServer::start().await;
    server.create_user("carol", "old-pw", "user").await;
    server
        .execute_sql_as("carol", "old-pw", "SELECT 1")
        .await
        .expect_success();
    server
        .execute_sql("ALTER USER 'carol' SET PASSWORD 'new-pw'")
        .await
        .expect_success();
    server
        .execute_sql_as("carol", "old-pw", "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
    server
        .execute_sql_as("carol", "new-pw", "SELECT 1")
        .await
        .expect_success();
    server.execute_sql("DROP USER 'carol'").await.expect_success();
    server
        .execute_sql_as("carol", "new-pw", "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
}
