//! Live queries over `/ws` against the real server: subscribe, initial data,
//! changes with filter transitions, scoping, exactness under concurrent writers,
//! resume with `from_seq` (hot, cold, after a restart), bad input, limits and
//! back-pressure, `system.live`, `KILL LIVE QUERY` and the ways a subscription ends.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::live::{Ended, LiveClient, basic};
use crate::common::{Rng, TestServer};

/// A subscriber's view of its rows, built from initial data and changes, checking
/// each change against what it had.
#[derive(Default, Debug)]
struct Model {
    rows: BTreeMap<String, Value>,
    last_seq: u64,
}

fn seq_of(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().expect("a u64 seq"),
        Value::String(s) => s.parse().expect("a numeric seq"),
        other => panic!("not a seq: {other}"),
    }
}

impl Model {
    fn key(row: &Value) -> String {
        row["id"].to_string()
    }

    fn load(&mut self, rows: &[Value]) {
        for row in rows {
            assert!(
                self.rows.insert(Self::key(row), row.clone()).is_none(),
                "twice: {row}"
            );
        }
    }

    /// Applies a `change` message; panics where it contradicts the model.
    fn apply(&mut self, message: &Value) {
        assert_eq!(message["type"], "change", "{message}");
        let seq = seq_of(&message["seq"]);
        assert!(
            seq > self.last_seq,
            "seq {seq} after {}: {message}",
            self.last_seq
        );
        self.last_seq = seq;
        let rows = message["rows"].as_array().expect("rows");
        let empty = Vec::new();
        let old_rows = message
            .get("old_rows")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        match message["op"].as_str().expect("an op") {
            "insert" => {
                assert!(old_rows.is_empty());
                for row in rows {
                    assert!(
                        self.rows.insert(Self::key(row), row.clone()).is_none(),
                        "insert of a row the subscriber has: {message}"
                    );
                }
            }
            "update" => {
                assert_eq!(rows.len(), old_rows.len(), "{message}");
                for (row, old) in rows.iter().zip(old_rows) {
                    let had = self.rows.insert(Self::key(row), row.clone());
                    assert_eq!(had.as_ref(), Some(old), "update's old row differs: {message}");
                }
            }
            "delete" => {
                assert!(rows.is_empty(), "{message}");
                for old in old_rows {
                    let had = self.rows.remove(&Self::key(old));
                    assert_eq!(
                        had.as_ref(),
                        Some(old),
                        "delete of a row the subscriber lacks: {message}"
                    );
                }
            }
            other => panic!("unknown op {other}"),
        }
    }

    /// The rows without `_seq`, comparable with a SELECT of the same columns.
    fn values(&self) -> BTreeMap<String, Value> {
        self.rows
            .iter()
            .map(|(k, row)| {
                let mut row = row.clone();
                row.as_object_mut().expect("an object").remove("_seq");
                (k.clone(), row)
            })
            .collect()
    }
}

/// `SELECT <columns> ... ORDER BY id` as `user`, as id → row object.
async fn selected(server: &TestServer, user: &str, sql: &str) -> BTreeMap<String, Value> {
    let response = server.execute_sql_as(user, "pw", sql).await;
    response.expect_success();
    let columns = response.column_names();
    response
        .rows()
        .into_iter()
        .map(|row| {
            let object: serde_json::Map<String, Value> = columns.iter().cloned().zip(row).collect();
            (object["id"].to_string(), Value::Object(object))
        })
        .collect()
}

/// Reads change messages until the model holds `expected` (or fails after the wait).
async fn catch_up(client: &mut LiveClient, model: &mut Model, expected: &BTreeMap<String, Value>) {
    let deadline = tokio::time::Instant::now() + crate::common::live::WAIT;
    while &model.values() != expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next(left).await {
            Some(Ok(message)) => model.apply(&message),
            Some(Err(ended)) => panic!("socket ended: {ended:?}"),
            None => panic!(
                "the subscriber never reached the table's rows:\nmodel {:?}\nexpected {expected:?}",
                model.values()
            ),
        }
    }
}

async fn setup(server: &TestServer) {
    setup_with(server, "").await;
}

/// [`setup`] with `options` after `chat.messages`' columns (`WITH (STORAGE = …)`).
async fn setup_with(server: &TestServer, options: &str) {
    server.create_user("alice", "pw", "user").await;
    server.create_user("bob", "pw", "user").await;
    server
        .execute_sql(&format!(
            "CREATE NAMESPACE chat; \
             CREATE USER TABLE chat.messages (id BIGINT PRIMARY KEY, room INT, body TEXT) {options}; \
             CREATE SHARED TABLE chat.rooms (id BIGINT PRIMARY KEY, name TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')"
        ))
        .await
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_initial_data_then_changes_with_filter_transitions() {
    let server = TestServer::start().await;
    setup(&server).await;
    server
        .execute_sql_as(
            "alice",
            "pw",
            "INSERT INTO chat.messages VALUES (1, 7, 'a'), (2, 7, 'b'), (3, 8, 'c'), (4, 7, 'd')",
        )
        .await
        .expect_success();
    // One of the rows is in Parquet: initial data reads both tiers.
    server.flush_and_wait("chat.messages").await;
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (5, 7, 'e')")
        .await
        .expect_success();
    let mut alice = LiveClient::connect(&server, "alice", "pw").await;
    let (columns, rows) = alice
        .subscribe(
            "s1",
            "SELECT id, body FROM chat.messages WHERE room = 7",
            json!({"batch_size": 2}),
        )
        .await;
    assert_eq!(columns, ["id", "body", "_seq"]);
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 4, 5]);
    assert!(
        rows.iter()
            .all(|r| r["_seq"].as_u64().is_some() && r.get("room").is_none())
    );

    // An insert outside the filter says nothing; one inside is an insert.
    let write = |sql: &'static str| {
        let server = &server;
        async move {
            server.execute_sql_as("alice", "pw", sql).await.expect_success();
        }
    };
    write("INSERT INTO chat.messages VALUES (6, 9, 'x')").await;
    write("INSERT INTO chat.messages VALUES (7, 7, 'y')").await;
    let insert = alice.recv().await;
    assert_eq!(insert["op"], "insert", "{insert}");
    assert_eq!(
        insert["rows"],
        json!([{"id": 7, "body": "y", "_seq": insert["seq"]}])
    );
    assert!(insert.get("old_rows").is_none());
    // Update inside the filter (of a flushed row): old and new rows.
    write("UPDATE chat.messages SET body = 'A' WHERE id = 1").await;
    let update = alice.recv().await;
    assert_eq!(update["op"], "update", "{update}");
    assert_eq!(update["rows"][0]["body"], "A");
    assert_eq!(update["old_rows"][0]["body"], "a");
    assert!(seq_of(&update["seq"]) > seq_of(&insert["seq"]));
    // Moving out of the filter is a delete, into it an insert.
    write("UPDATE chat.messages SET room = 8 WHERE id = 2").await;
    let out = alice.recv().await;
    assert_eq!(out["op"], "delete", "{out}");
    assert_eq!(out["rows"], json!([]));
    assert_eq!(out["old_rows"][0]["id"], 2);
    write("UPDATE chat.messages SET room = 7 WHERE id = 3").await;
    let into = alice.recv().await;
    assert_eq!(into["op"], "insert", "{into}");
    assert_eq!(into["rows"][0]["id"], 3);
    // A delete; a multi-row statement is one message per run of one operation.
    write("DELETE FROM chat.messages WHERE id = 4").await;
    let delete = alice.recv().await;
    assert_eq!(
        (delete["op"].as_str(), delete["old_rows"][0]["id"].as_i64()),
        (Some("delete"), Some(4))
    );
    write("INSERT INTO chat.messages VALUES (10, 7, 'p'), (11, 7, 'q'), (12, 1, 'r')").await;
    let many = alice.recv().await;
    assert_eq!(many["op"], "insert");
    assert_eq!(many["rows"].as_array().unwrap().len(), 2, "{many}");

    // Bob's writes to the same table never reach alice, not even as an empty event;
    // a flush and an unrelated table say nothing either.
    server
        .execute_sql_as("bob", "pw", "INSERT INTO chat.messages VALUES (1, 7, 'bob')")
        .await
        .expect_success();
    server.flush_and_wait("chat.messages").await;
    server
        .execute_sql("INSERT INTO chat.rooms VALUES (7, 'general')")
        .await
        .expect_success();
    alice.expect_silence(Duration::from_millis(500)).await;

    // Ping, unsubscribe, and nothing after it.
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(alice.recv().await, json!({"type": "pong"}));
    alice.send(json!({"type": "unsubscribe", "id": "s1"})).await;
    assert_eq!(alice.recv().await, json!({"type": "unsubscribed", "id": "s1"}));
    write("INSERT INTO chat.messages VALUES (13, 7, 'late')").await;
    alice.expect_silence(Duration::from_millis(300)).await;
    alice.send(json!({"type": "unsubscribe", "id": "s1"})).await;
    alice.expect_error(Some("s1"), "LIVE_QUERY_NOT_FOUND").await;

    // last_rows: the newest rows, oldest first; CURRENT_USER() in the filter.
    let (_, rows) = alice
        .subscribe(
            "last",
            "SELECT * FROM chat.messages m WHERE m.room = 7 AND CURRENT_USER() = 'alice'",
            json!({"last_rows": 2}),
        )
        .await;
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [11, 13], "{rows:?}");
    assert_eq!(rows[0]["room"], 7);
    // int64_as_string: ids and seqs as strings.
    let (_, rows) = alice
        .subscribe(
            "strings",
            "SELECT id FROM chat.messages WHERE id = 13",
            json!({"int64_as_string": true}),
        )
        .await;
    assert_eq!(rows[0]["id"], "13");
    assert!(rows[0]["_seq"].is_string());

    // A SHARED table: every subscriber sees every row (role user: PUBLIC only).
    let mut bob = LiveClient::connect(&server, "bob", "pw").await;
    let (_, rows) = bob
        .subscribe("rooms", "SELECT * FROM chat.rooms", json!({}))
        .await;
    assert_eq!(
        rows,
        [json!({"id": 7, "name": "general", "_seq": rows[0]["_seq"]})]
    );
    server
        .execute_sql("INSERT INTO chat.rooms VALUES (8, 'random')")
        .await
        .expect_success();
    let change = bob.recv().await;
    assert_eq!(
        (change["id"].as_str(), change["rows"][0]["name"].as_str()),
        (Some("rooms"), Some("random"))
    );
    bob.close().await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authentication_by_header_or_first_message() {
    let server = TestServer::start().await;
    server.create_user("alice", "pw", "user").await;
    // Wrong credentials in the upgrade: a 401, never a socket.
    assert_eq!(
        LiveClient::connect_with(&server, Some(&basic("alice", "wrong")))
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        LiveClient::connect_with(&server, Some("Bearer not-a-token"))
            .await
            .err(),
        Some(401)
    );
    // No header: an authenticate message with a password...
    let mut client = LiveClient::connect_with(&server, None).await.expect("upgrade");
    client
        .send(json!({"type": "authenticate", "username": "alice", "password": "pw"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "auth_success", "user": "alice", "role": "user"})
    );
    client.close().await;
    // ...or a token from /auth/login.
    let login: Value = server
        .client()
        .post(server.url("/auth/login"))
        .json(&json!({"username": "alice", "password": "pw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let mut client = LiveClient::connect_with(&server, None).await.expect("upgrade");
    client.send(json!({"type": "authenticate", "token": token})).await;
    assert_eq!(client.recv().await["type"], "auth_success");
    client.close().await;
    let mut client = LiveClient::connect_with(&server, Some(&format!("Bearer {token}")))
        .await
        .expect("upgrade");
    assert_eq!(client.recv().await["type"], "auth_success");
    client.close().await;
    // A wrong password, or anything else first: auth_error and a close, no data.
    let mut client = LiveClient::connect_with(&server, None).await.expect("upgrade");
    client
        .send(json!({"type": "authenticate", "username": "alice", "password": "nope"}))
        .await;
    assert_eq!(client.recv().await["type"], "auth_error");
    assert_eq!(
        client.closed().await,
        Ended::Close(1008, "authentication failed".into())
    );
    let mut client = LiveClient::connect_with(&server, None).await.expect("upgrade");
    client
        .send(json!({"type": "subscribe", "id": "s", "sql": "SELECT * FROM system.users"}))
        .await;
    assert_eq!(client.recv().await["type"], "auth_error");
    assert!(matches!(client.closed().await, Ended::Close(1008, _)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_errors_and_never_affects_other_subscriptions() {
    let server = TestServer::start_configured(|s| {
        s.live_max_message_bytes = 4096;
        s.live_max_subscriptions_per_connection = 3;
        s.live_max_subscriptions_per_user = 4;
        s.live_max_connections = 3;
    })
    .await;
    setup(&server).await;
    let mut alice = LiveClient::connect(&server, "alice", "pw").await;
    alice
        .subscribe("ok", "SELECT * FROM chat.messages", json!({}))
        .await;
    alice.send_text("{not json".into()).await;
    alice.expect_error(None, "INVALID_REQUEST").await;
    alice.send_text("[1,2]".into()).await;
    alice.expect_error(None, "INVALID_REQUEST").await;
    alice.send(json!({"type": "launch", "id": "x"})).await;
    let unknown = alice.expect_error(Some("x"), "INVALID_REQUEST").await;
    assert!(unknown["message"].as_str().unwrap().contains("launch"));
    alice.send(json!({"id": "x"})).await;
    alice.expect_error(Some("x"), "INVALID_REQUEST").await;
    alice
        .send(json!({"type": "subscribe", "id": "ok", "sql": "SELECT * FROM chat.messages"}))
        .await;
    alice.expect_error(Some("ok"), "INVALID_REQUEST").await;
    for (sql, code) in [
        ("SELEC nonsense", "INVALID_SQL"),
        ("SELECT count(*) FROM chat.messages", "UNSUPPORTED"),
        ("SELECT * FROM chat.messages ORDER BY id", "UNSUPPORTED"),
        (
            "SELECT * FROM chat.messages a JOIN chat.rooms b ON a.id = b.id",
            "UNSUPPORTED",
        ),
        ("INSERT INTO chat.messages VALUES (1, 1, 'x')", "UNSUPPORTED"),
        ("SELECT * FROM chat.nope", "TABLE_NOT_FOUND"),
        ("SELECT nope FROM chat.messages", "COLUMN_NOT_FOUND"),
        ("SELECT * FROM chat.messages WHERE nope = 1", "COLUMN_NOT_FOUND"),
        ("SELECT * FROM chat.messages WHERE room", "TYPE_MISMATCH"),
        (
            "SELECT * FROM chat.messages WHERE id IN (SELECT id FROM chat.rooms)",
            "UNSUPPORTED",
        ),
        // System tables cannot be subscribed to, whoever may read them
        // (docs/API.md): the same answer for one a user reads and one she may not.
        ("SELECT * FROM system.users", "UNSUPPORTED"),
        ("SELECT * FROM system.jobs", "UNSUPPORTED"),
    ] {
        alice
            .send(json!({"type": "subscribe", "id": "bad", "sql": sql}))
            .await;
        let error = alice.expect_error(Some("bad"), code).await;
        assert!(!error["message"].as_str().unwrap().is_empty(), "{sql}: {error}");
    }
    for options in [
        json!({"batch_size": 0}),
        json!({"last_rows": -1}),
        json!({"bogus": 1}),
        json!(5),
    ] {
        alice
            .send(json!({"type": "subscribe", "id": "opt", "sql": "SELECT * FROM chat.messages", "options": options}))
            .await;
        alice.expect_error(Some("opt"), "INVALID_REQUEST").await;
    }
    // The per-connection limit (3): two more fit, the third is refused.
    alice
        .subscribe("two", "SELECT * FROM chat.messages", json!({}))
        .await;
    alice
        .subscribe("three", "SELECT * FROM chat.messages", json!({}))
        .await;
    alice
        .send(json!({"type": "subscribe", "id": "four", "sql": "SELECT * FROM chat.messages"}))
        .await;
    alice.expect_error(Some("four"), "SUBSCRIPTION_LIMIT").await;
    // The per-user limit (4) counts every connection of the user.
    let mut alice2 = LiveClient::connect(&server, "alice", "pw").await;
    alice2
        .subscribe("four", "SELECT * FROM chat.messages", json!({}))
        .await;
    alice2
        .send(json!({"type": "subscribe", "id": "five", "sql": "SELECT * FROM chat.messages"}))
        .await;
    let limit = alice2.expect_error(Some("five"), "SUBSCRIPTION_LIMIT").await;
    assert!(
        limit["message"]
            .as_str()
            .unwrap()
            .contains("live_max_subscriptions_per_user")
    );
    // Unsubscribing frees a slot.
    alice2.send(json!({"type": "unsubscribe", "id": "four"})).await;
    alice2.recv().await;
    alice2
        .subscribe("five", "SELECT * FROM chat.messages", json!({}))
        .await;

    // Another connection is unaffected by an oversized message, which closes this one.
    let mut bob = LiveClient::connect(&server, "bob", "pw").await;
    // A fourth connection is over live_max_connections (3): an error, then 1013.
    let mut over = LiveClient::connect_with(&server, Some(&basic("bob", "pw")))
        .await
        .expect("upgrade");
    over.expect_error(None, "SUBSCRIPTION_LIMIT").await;
    assert!(matches!(over.closed().await, Ended::Close(1013, _)));
    alice2.close().await;
    bob.subscribe("b", "SELECT * FROM chat.messages", json!({})).await;
    alice
        .send_text(format!(
            "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
            "x".repeat(10_000)
        ))
        .await;
    assert!(matches!(alice.closed().await, Ended::Close(1009, _)));
    server
        .execute_sql_as(
            "bob",
            "pw",
            "INSERT INTO chat.messages VALUES (1, 1, 'still here')",
        )
        .await
        .expect_success();
    let change = bob.recv().await;
    assert_eq!(change["rows"][0]["body"], "still here");
    // The subscription of a closed connection is gone from system.live.
    let live = server
        .execute_sql("SELECT username, subscription FROM system.live")
        .await;
    assert_eq!(live.rows(), [vec![json!("bob"), json!("b")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_live_kill_and_the_ways_a_subscription_ends() {
    let mut server = TestServer::start().await;
    setup(&server).await;
    let mut alice = LiveClient::connect(&server, "alice", "pw").await;
    alice
        .subscribe("s1", "SELECT * FROM chat.messages", json!({}))
        .await;
    alice
        .subscribe("rooms", "SELECT * FROM chat.rooms", json!({}))
        .await;
    let mut bob = LiveClient::connect(&server, "bob", "pw").await;
    bob.subscribe("s1", "SELECT id FROM chat.messages WHERE room = 1", json!({}))
        .await;
    server
        .execute_sql_as("bob", "pw", "INSERT INTO chat.messages VALUES (1, 1, 'x')")
        .await
        .expect_success();
    assert_eq!(bob.recv().await["op"], "insert");

    // A user sees its own subscriptions; dba and above see all.
    let all = server
        .execute_sql("SELECT username, subscription, table_name, sql, changes_sent FROM system.live ORDER BY username, subscription")
        .await;
    assert_eq!(
        all.rows(),
        [
            vec![
                json!("alice"),
                json!("rooms"),
                json!("chat.rooms"),
                json!("SELECT * FROM chat.rooms"),
                json!(0)
            ],
            vec![
                json!("alice"),
                json!("s1"),
                json!("chat.messages"),
                json!("SELECT * FROM chat.messages"),
                json!(0)
            ],
            vec![
                json!("bob"),
                json!("s1"),
                json!("chat.messages"),
                json!("SELECT id FROM chat.messages WHERE room = 1"),
                json!(1)
            ],
        ]
    );
    let own = server
        .execute_sql_as("bob", "pw", "SELECT id, username FROM system.live")
        .await;
    let rows = own.rows();
    assert_eq!(rows.len(), 1);
    let bob_id = rows[0][0].as_str().unwrap().to_string();
    // KILL LIVE QUERY: alice may not kill bob's, root may; the owner gets KILLED.
    server
        .execute_sql_as("alice", "pw", &format!("KILL LIVE QUERY '{bob_id}'"))
        .await
        .expect_error(404, "LIVE_QUERY_NOT_FOUND");
    server
        .execute_sql(&format!("KILL LIVE QUERY '{bob_id}'"))
        .await
        .expect_success();
    bob.expect_error(Some("s1"), "KILLED").await;
    server
        .execute_sql(&format!("KILL LIVE QUERY '{bob_id}'"))
        .await
        .expect_error(404, "LIVE_QUERY_NOT_FOUND");

    // DROP TABLE ends its subscriptions with TABLE_NOT_FOUND; others go on.
    server.execute_sql("DROP TABLE chat.rooms").await.expect_success();
    alice.expect_error(Some("rooms"), "TABLE_NOT_FOUND").await;
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (2, 1, 'y')")
        .await
        .expect_success();
    let change = alice.recv().await;
    assert_eq!(change["op"], "insert");
    let seen = seq_of(&change["seq"]);

    // ALTER TABLE ends the subscriptions of the old columns with SCHEMA_CHANGED;
    // subscribing again from the last seq seen loses nothing and has the new column.
    server
        .execute_sql("ALTER TABLE chat.messages ADD COLUMN mood TEXT")
        .await
        .expect_success();
    alice.expect_error(Some("s1"), "SCHEMA_CHANGED").await;
    server
        .execute_sql_as(
            "alice",
            "pw",
            "INSERT INTO chat.messages VALUES (3, 1, 'z', 'glad')",
        )
        .await
        .expect_success();
    let (columns, _) = alice
        .subscribe("s1", "SELECT * FROM chat.messages", json!({"from_seq": seen}))
        .await;
    assert_eq!(columns, ["id", "room", "body", "mood", "_seq"]);
    let change = alice.recv().await;
    assert_eq!(change["op"], "insert");
    assert_eq!(change["rows"][0]["id"], 3);
    assert_eq!(change["rows"][0]["mood"], "glad");
    // A DROP COLUMN likewise; a subscription compiled after it is not ended.
    server
        .execute_sql("ALTER TABLE chat.messages DROP COLUMN mood")
        .await
        .expect_success();
    alice.expect_error(Some("s1"), "SCHEMA_CHANGED").await;
    alice
        .subscribe("s1", "SELECT * FROM chat.messages WHERE id > 3", json!({}))
        .await;
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (4, 1, 'w')")
        .await
        .expect_success();
    let change = alice.recv().await;
    assert_eq!(
        (change["op"].clone(), change["rows"][0]["id"].clone()),
        (json!("insert"), json!(4))
    );
    assert!(change["rows"][0].get("mood").is_none(), "{change}");

    // A password change closes the user's connections (1008) after an error.
    server
        .execute_sql("ALTER USER 'alice' SET PASSWORD 'pw2'")
        .await
        .expect_success();
    alice.expect_error(Some("s1"), "UNAUTHORIZED").await;
    assert!(matches!(alice.closed().await, Ended::Close(1008, _)));
    // DROP USER likewise.
    let mut bob = LiveClient::connect(&server, "bob", "pw").await;
    bob.subscribe("again", "SELECT * FROM chat.messages", json!({}))
        .await;
    server.execute_sql("DROP USER 'bob'").await.expect_success();
    bob.expect_error(Some("again"), "UNAUTHORIZED").await;
    assert!(matches!(bob.closed().await, Ended::Close(1008, _)));

    // Shutdown: close frame 1001.
    let mut alice = LiveClient::connect(&server, "alice", "pw2").await;
    alice
        .subscribe("s", "SELECT * FROM chat.messages", json!({}))
        .await;
    server.restart().await;
    assert!(matches!(alice.closed().await, Ended::Close(1001, _)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_stops_reading_lags_without_slowing_writers() {
    let server = TestServer::start_configured(|s| s.live_queue_messages = 64).await;
    setup(&server).await;
    let mut slow = LiveClient::connect(&server, "alice", "pw").await;
    slow.subscribe("slow", "SELECT * FROM chat.messages", json!({}))
        .await;
    let mut fast = LiveClient::connect(&server, "alice", "pw").await;
    fast.subscribe("fast", "SELECT * FROM chat.messages", json!({}))
        .await;
    // The fast one reads all the time and gets every change; the writer waits for
    // it every 16 inserts, so it never has more queued than its queue (64) holds,
    // however late a loaded machine runs its socket's writer.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            let mut ids = std::collections::BTreeSet::new();
            while ids.len() < 2000 {
                let message = fast.recv().await;
                assert_eq!(message["op"], "insert", "{message}");
                for row in message["rows"].as_array().unwrap() {
                    ids.insert(row["id"].as_i64().unwrap());
                }
                received.store(ids.len(), std::sync::atomic::Ordering::Release);
            }
            (ids.len(), fast)
        }
    });
    // The slow one reads nothing while 2,000 inserts of 20 KB rows commit (40 MB):
    // far more than its socket buffers and its queue (64 messages) hold.
    // Every eighth insert is matched by one of bob's into his own rows, which no
    // one subscribes to: the writers' own pace, to compare alice's against.
    let pad = "p".repeat(20_000);
    let (mut alice_took, mut bob_took) = (Vec::new(), Vec::new());
    for i in 0..2000 {
        let started = std::time::Instant::now();
        server
            .execute_sql_as(
                "alice",
                "pw",
                &format!("INSERT INTO chat.messages VALUES ({i}, 1, '{pad}')"),
            )
            .await
            .expect_success();
        alice_took.push((i, started.elapsed()));
        if i % 8 == 0 {
            let started = std::time::Instant::now();
            server
                .execute_sql_as(
                    "bob",
                    "pw",
                    &format!("INSERT INTO chat.messages VALUES ({i}, 1, '{pad}')"),
                )
                .await
                .expect_success();
            bob_took.push((i, started.elapsed()));
        }
        if i % 16 == 15 {
            let deadline = tokio::time::Instant::now() + crate::common::live::WAIT;
            while received.load(std::sync::atomic::Ordering::Acquire) <= i {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the fast subscriber fell behind"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    let (received, _fast) = reader.await.unwrap();
    assert_eq!(received, 2000);
    // The slow one then finds the changes that were queued and SUBSCRIPTION_LAGGED.
    let mut inserts = 0;
    let lagged = loop {
        let message = slow.recv().await;
        match message["type"].as_str() {
            Some("change") => inserts += 1,
            Some("error") => break message,
            _ => panic!("{message}"),
        }
    };
    assert_eq!(lagged["code"], "SUBSCRIPTION_LAGGED", "{lagged}");
    assert_eq!(lagged["id"], "slow");
    assert!(inserts < 2000, "{inserts}");
    // While the slow subscription was there (until its queue overflowed), alice's
    // inserts went at the pace of bob's: the commit does not wait for a reader. A
    // relative measure with a wide margin (both run on the same loaded machine).
    let window = (inserts + 64 + 16).min(2000);
    let median = |took: &[(usize, Duration)]| {
        let mut within: Vec<Duration> = (took.iter())
            .filter(|(i, _)| *i < window)
            .map(|(_, d)| *d)
            .collect();
        within.sort();
        within[within.len() / 2]
    };
    let (alice_median, bob_median) = (median(&alice_took), median(&bob_took));
    assert!(
        alice_median <= bob_median * 3 + Duration::from_millis(2),
        "alice's inserts (median {alice_median:?}) were slowed down next to bob's ({bob_median:?})"
    );
    slow.expect_silence(Duration::from_millis(200)).await;
    let live = server.execute_sql("SELECT subscription FROM system.live").await;
    assert_eq!(live.rows(), [vec![json!("fast")]]);
}

/// Writers run while subscribers subscribe: for each subscriber, initial rows
/// plus changes equal exactly the committed rows (nothing missed, nothing twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_data_and_changes_meet_exactly_under_concurrent_writers() {
    let server = std::sync::Arc::new(TestServer::start().await);
    setup(&server).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (server, stop) = (server.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(w + 1);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = rng.below(60);
                let room = rng.below(3);
                let sql = match rng.below(4) {
                    0 => format!("DELETE FROM chat.messages WHERE id = {id}"),
                    1 => format!("UPDATE chat.messages SET room = {room}, body = 'u{n}' WHERE id = {id}"),
                    _ => format!(
                        "INSERT INTO chat.messages VALUES ({id}, {room}, 'w{n}') ON CONFLICT (id) DO UPDATE SET room = {room}, body = 'w{n}'"
                    ),
                };
                server.execute_sql_as("alice", "pw", &sql).await.expect_success();
                n += 1;
            }
        }));
    }
    let mut subscribers = Vec::new();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let mut client = LiveClient::connect(&server, "alice", "pw").await;
        let filter = if i % 2 == 0 { "" } else { " WHERE room = 1" };
        let (_, rows) = client
            .subscribe(
                "s",
                &format!("SELECT id, room, body FROM chat.messages{filter}"),
                json!({"batch_size": 7}),
            )
            .await;
        let mut model = Model::default();
        model.load(&rows);
        subscribers.push((client, model, filter));
        if i == 3 {
            server.flush_and_wait("chat.messages").await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    for (client, model, filter) in &mut subscribers {
        let expected = selected(
            &server,
            "alice",
            &format!("SELECT id, room, body FROM chat.messages{filter}"),
        )
        .await;
        catch_up(client, model, &expected).await;
        client.expect_silence(Duration::from_millis(200)).await;
        assert_eq!(&model.values(), &expected);
    }
}

/// `from_seq` after a disconnect: every change since, deletes included, from hot
/// and flushed rows, and after a restart; a seq older than the history is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_from_seq_replays_every_change_since() {
    let mut server = TestServer::start().await;
    setup(&server).await;
    let sql = "SELECT id, room, body FROM chat.messages WHERE room < 5";
    for statement in [
        "INSERT INTO chat.messages VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 9, 'c')",
        "UPDATE chat.messages SET body = 'a2' WHERE id = 1",
    ] {
        server
            .execute_sql_as("alice", "pw", statement)
            .await
            .expect_success();
    }
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    let (_, rows) = client.subscribe("s", sql, json!({})).await;
    let mut model = Model::default();
    model.load(&rows);
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (4, 1, 'd')")
        .await
        .expect_success();
    model.apply(&client.recv().await);
    client.close().await;
    // While away: updates (one of a flushed row), moves in and out, deletes, a flush.
    let mut rng = Rng(7);
    for round in 0..4 {
        for _ in 0..15 {
            let id = rng.below(12);
            let room = rng.below(10);
            let statement = match rng.below(3) {
                0 => format!("DELETE FROM chat.messages WHERE id = {id}"),
                _ => format!(
                    "INSERT INTO chat.messages VALUES ({id}, {room}, 'r{round}') ON CONFLICT (id) DO UPDATE SET room = {room}, body = 'r{round}'"
                ),
            };
            server
                .execute_sql_as("alice", "pw", &statement)
                .await
                .expect_success();
        }
        if round == 1 {
            server.flush_and_wait("chat.messages").await;
        }
        // Bob's changes are in the log too, and never reach alice.
        server
            .execute_sql_as(
                "bob",
                "pw",
                &format!("INSERT INTO chat.messages VALUES ({round}, 1, 'bob')"),
            )
            .await
            .expect_success();
    }
    server.restart().await;
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client
        .subscribe("s", sql, json!({"from_seq": model.last_seq.to_string()}))
        .await;
    let expected = selected(&server, "alice", sql).await;
    catch_up(&mut client, &mut model, &expected).await;
    // Live changes follow the replay.
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (100, 1, 'live')")
        .await
        .expect_success();
    let live = client.recv().await;
    model.apply(&live);
    assert_eq!(live["rows"][0]["id"], 100);
    client.expect_silence(Duration::from_millis(200)).await;
    client.close().await;
    // A seq from before the log began: the server ran without a change history
    // meanwhile (and changes were committed then), so nothing proves the log holds
    // every change after it.
    server.restart_with(|s| s.live_history_seconds = 0).await;
    server
        .execute_sql_as(
            "alice",
            "pw",
            "INSERT INTO chat.messages VALUES (101, 1, 'unlogged')",
        )
        .await
        .expect_success();
    server.restart_with(|s| s.live_history_seconds = 86_400).await;
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client
        .send(json!({"type": "subscribe", "id": "old", "sql": sql, "options": {"from_seq": model.last_seq.to_string()}}))
        .await;
    client.expect_error(Some("old"), "RESUME_UNAVAILABLE").await;
}

/// The `last_seq` of a subscription's initial data can always be resumed from:
/// on a fresh server (it is not 0) and on a table nobody wrote to for longer than
/// the history is kept — the log has forgotten nothing after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_seq_is_always_resumable() {
    let server = TestServer::start_configured(|s| s.live_history_seconds = 2).await;
    setup(&server).await;
    let sql = "SELECT id, body FROM chat.messages";
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client.subscribe("s", sql, json!({})).await;
    let fresh = client.last_seq;
    assert!(fresh > 0, "a fresh server's last_seq names now, not 0");
    client.close().await;
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client
        .subscribe("s", sql, json!({"from_seq": fresh.to_string()}))
        .await;
    client.expect_silence(Duration::from_millis(200)).await;
    client.close().await;
    // A change, then longer than the history is kept without one.
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (1, 1, 'a')")
        .await
        .expect_success();
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    let (_, rows) = client.subscribe("s", sql, json!({})).await;
    assert_eq!(rows.len(), 1);
    let idle = client.last_seq;
    client.close().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client
        .subscribe("s", sql, json!({"from_seq": idle.to_string()}))
        .await;
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (2, 1, 'b')")
        .await
        .expect_success();
    let change = client.recv().await;
    assert_eq!(change["rows"][0]["id"], 2, "{change}");
    client.expect_silence(Duration::from_millis(200)).await;
}

/// A resume of a STREAM table replays no row that has expired, nor its delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_replay_skips_expired_rows() {
    let server = TestServer::start().await;
    server.create_user("alice", "pw", "user").await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; CREATE STREAM TABLE app.s (id BIGINT PRIMARY KEY) WITH (TTL_SECONDS = 1)",
        )
        .await
        .expect_success();
    server
        .execute_sql_as("alice", "pw", "INSERT INTO app.s VALUES (0)")
        .await
        .expect_success();
    let sql = "SELECT id FROM app.s";
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    let (_, rows) = client.subscribe("s", sql, json!({})).await;
    assert_eq!(
        rows.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
        [json!(0)]
    );
    let from = client.last_seq;
    client.close().await;
    for statement in [
        "INSERT INTO app.s VALUES (1)",
        "INSERT INTO app.s VALUES (3)",
        "DELETE FROM app.s WHERE id = 3",
    ] {
        server
            .execute_sql_as("alice", "pw", statement)
            .await
            .expect_success();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server
        .execute_sql_as("alice", "pw", "INSERT INTO app.s VALUES (2)")
        .await
        .expect_success();
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client
        .subscribe("s", sql, json!({"from_seq": from.to_string()}))
        .await;
    let change = client.recv().await;
    assert_eq!(change["op"], "insert", "{change}");
    let ids: Vec<Value> = (change["rows"].as_array().unwrap().iter())
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!(2)], "{change}");
    client.expect_silence(Duration::from_millis(300)).await;
}

/// The number after `name` in the `/metrics` text.
fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_tables_expire_rows_and_feed_live_queries() {
    let mut server = TestServer::start().await;
    server.create_user("alice", "pw", "user").await;
    server.create_user("bob", "pw", "user").await;
    server.execute_sql("CREATE NAMESPACE app").await.expect_success();
    for (sql, code) in [
        ("CREATE STREAM TABLE app.t (id BIGINT PRIMARY KEY)", "INVALID_SQL"),
        (
            "CREATE STREAM TABLE app.t (id BIGINT PRIMARY KEY) WITH (TTL_SECONDS = 0)",
            "INVALID_SQL",
        ),
        (
            "CREATE STREAM TABLE app.t (id BIGINT PRIMARY KEY) WITH (TTL_SECONDS = 5, FLUSH_POLICY = 'rows:10')",
            "INVALID_SQL",
        ),
        (
            "CREATE USER TABLE app.t (id BIGINT PRIMARY KEY) WITH (TTL_SECONDS = 5)",
            "INVALID_SQL",
        ),
    ] {
        server.execute_sql(sql).await.expect_error(400, code);
    }
    server
        .execute_sql("CREATE STREAM TABLE app.typing (id BIGINT PRIMARY KEY, room INT, state TEXT) WITH (TTL_SECONDS = 3)")
        .await
        .expect_success();
    let describe = server
        .execute_sql("SELECT table_type FROM system.tables WHERE table_name = 'typing'")
        .await;
    assert_eq!(describe.rows(), [vec![json!("stream")]]);

    let mut alice_live = LiveClient::connect(&server, "alice", "pw").await;
    alice_live
        .subscribe(
            "typing",
            "SELECT id, state FROM app.typing WHERE room = 1",
            json!({}),
        )
        .await;
    async fn as_user(server: &TestServer, user: &str, sql: String) -> crate::common::SqlResponse {
        server.execute_sql_as(user, "pw", &sql).await
    }
    as_user(
        &server,
        "alice",
        "INSERT INTO app.typing VALUES (1, 1, 'typing'), (2, 2, 'idle')".into(),
    )
    .await
    .expect_success();
    as_user(
        &server,
        "bob",
        "INSERT INTO app.typing VALUES (1, 1, 'bob typing')".into(),
    )
    .await
    .expect_success();
    let insert = alice_live.recv().await;
    assert_eq!(
        insert["rows"],
        json!([{"id": 1, "state": "typing", "_seq": insert["seq"]}])
    );
    // Per-user scope; insert-only; DELETE works; never flushed; no indexes.
    let rows = as_user(
        &server,
        "alice",
        "SELECT id, state FROM app.typing ORDER BY id".into(),
    )
    .await;
    assert_eq!(
        rows.rows(),
        [vec![json!(1), json!("typing")], vec![json!(2), json!("idle")]]
    );
    let rows = as_user(
        &server,
        "bob",
        "SELECT id, state, _seq > 0 FROM app.typing".into(),
    )
    .await;
    assert_eq!(rows.rows(), [vec![json!(1), json!("bob typing"), json!(true)]]);
    as_user(
        &server,
        "alice",
        "UPDATE app.typing SET state = 'x' WHERE id = 1".into(),
    )
    .await
    .expect_error(400, "UNSUPPORTED");
    as_user(
        &server,
        "alice",
        "INSERT INTO app.typing VALUES (1, 1, 'x') ON CONFLICT (id) DO UPDATE SET state = 'x'".into(),
    )
    .await
    .expect_error(400, "UNSUPPORTED");
    as_user(
        &server,
        "alice",
        "INSERT INTO app.typing VALUES (1, 1, 'again')".into(),
    )
    .await
    .expect_error(409, "DUPLICATE_KEY");
    server
        .execute_sql("STORAGE FLUSH TABLE app.typing")
        .await
        .expect_error(400, "UNSUPPORTED");
    server
        .execute_sql("CREATE INDEX typing_room ON app.typing (room)")
        .await
        .expect_error(400, "UNSUPPORTED");
    as_user(&server, "alice", "DELETE FROM app.typing WHERE id = 2".into())
        .await
        .expect_success();
    as_user(&server, "alice", "DELETE FROM app.typing WHERE id = 1".into())
        .await
        .expect_success();
    let delete = alice_live.recv().await;
    assert_eq!(
        (delete["op"].as_str(), delete["old_rows"][0]["id"].as_i64()),
        (Some("delete"), Some(1))
    );
    as_user(
        &server,
        "alice",
        "INSERT INTO app.typing VALUES (3, 1, 'fresh')".into(),
    )
    .await
    .expect_success();
    assert_eq!(alice_live.recv().await["rows"][0]["id"], 3);
    alice_live.close().await;

    // A restart within the TTL keeps the rows.
    server.restart().await;
    let rows = as_user(&server, "alice", "SELECT id FROM app.typing".into()).await;
    assert_eq!(rows.rows(), [vec![json!(3)]]);
    // After the TTL they are gone from reads at once, their keys are free, and the
    // sweep frees their storage (the hot-row gauge falls to the live rows).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        as_user(&server, "alice", "SELECT id FROM app.typing".into())
            .await
            .rows()
            .is_empty()
    );
    assert!(
        as_user(&server, "bob", "SELECT * FROM app.typing WHERE id = 1".into())
            .await
            .rows()
            .is_empty()
    );
    as_user(
        &server,
        "bob",
        "INSERT INTO app.typing VALUES (1, 1, 'back')".into(),
    )
    .await
    .expect_success();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if gauge(&server.metrics().await, "kalamdb_hot_rows") == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep did not free the expired rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = as_user(&server, "bob", "SELECT id, state FROM app.typing".into()).await;
    assert_eq!(rows.rows(), [vec![json!(1), json!("back")]]);
}

/// One subscriber of the randomized test: its socket (none while away), its SQL,
/// and the model its messages build.
struct Subscriber {
    user: &'static str,
    sql: String,
    client: Option<LiveClient>,
    model: Model,
}

impl Subscriber {
    async fn connect(&mut self, server: &TestServer) {
        let mut client = LiveClient::connect(server, self.user, "pw").await;
        if self.model.last_seq == 0 && self.model.rows.is_empty() {
            let (_, rows) = client.subscribe("s", &self.sql, json!({"batch_size": 5})).await;
            self.model.load(&rows);
            self.model.last_seq = client.last_seq;
        } else {
            client
                .subscribe("s", &self.sql, json!({"from_seq": self.model.last_seq}))
                .await;
        }
        self.client = Some(client);
    }

    async fn check(&mut self, server: &TestServer) {
        let expected = selected(server, self.user, &self.sql).await;
        let client = self.client.as_mut().expect("connected");
        catch_up(client, &mut self.model, &expected).await;
    }
}

async fn random_writes(server: &TestServer, user: &'static str, table: &str, seed: u64, ops: usize) {
    let mut rng = Rng(seed);
    for n in 0..ops {
        let id = rng.below(25);
        let g = rng.below(4);
        let sql = match rng.below(6) {
            0 => format!("DELETE FROM {table} WHERE id = {id}"),
            1 => format!("DELETE FROM {table} WHERE g = {g} AND id > {}", 20 + rng.below(5)),
            2 => format!("UPDATE {table} SET g = {g}, v = 'u{seed}-{n}' WHERE id = {id}"),
            3 => format!("UPDATE {table} SET v = v || '+' WHERE g = {g}"),
            _ => format!(
                "INSERT INTO {table} VALUES ({id}, {g}, 'i{seed}-{n}'), ({}, {g}, 'j{seed}-{n}') \
                 ON CONFLICT (id) DO UPDATE SET g = EXCLUDED.g, v = EXCLUDED.v",
                (id + 1) % 25
            ),
        };
        server.execute_sql_as(user, "pw", &sql).await.expect_success();
    }
}

/// Several users write concurrently; subscribers with filters disconnect and
/// resume (while writes go on, after a flush, across a restart); each one's
/// initial rows and changes are checked against what it held, and end equal to
/// the rows the same SELECT returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_subscribers_match_the_table_through_resumes_flushes_and_a_restart() {
    let seed: u64 = std::env::var("KALAMDB_LIVE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut server = TestServer::start().await;
    let users = ["u1", "u2", "u3"];
    for user in users {
        server.create_user(user, "pw", "user").await;
    }
    server
        .execute_sql(
            "CREATE NAMESPACE r; \
             CREATE USER TABLE r.items (id BIGINT PRIMARY KEY, g INT, v TEXT); \
             CREATE SHARED TABLE r.board (id BIGINT PRIMARY KEY, g INT, v TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')",
        )
        .await
        .expect_success();
    server.create_user("writer", "pw", "service").await;
    let mut rng = Rng(seed);
    let mut subscribers = Vec::new();
    for user in users {
        for sql in [
            "SELECT id, g, v FROM r.items".to_string(),
            format!("SELECT id, g, v FROM r.items WHERE g < {}", 1 + rng.below(3)),
            format!(
                "SELECT id, g, v FROM r.board WHERE g = {} OR v LIKE 'i%'",
                rng.below(4)
            ),
        ] {
            subscribers.push(Subscriber {
                user,
                sql,
                client: None,
                model: Model::default(),
            });
        }
    }
    for round in 0..5u64 {
        // Some subscribers go away for this round; the others (and the first
        // connections) subscribe while the writers run.
        let away: Vec<usize> = (0..subscribers.len()).filter(|_| rng.below(3) == 0).collect();
        for &i in &away {
            if let Some(client) = subscribers[i].client.take() {
                client.close().await;
            }
        }
        let writers = futures::future::join_all(
            users
                .iter()
                .enumerate()
                .map(|(u, user)| {
                    random_writes(&server, user, "r.items", seed * 100 + round * 10 + u as u64, 40)
                })
                .chain([random_writes(
                    &server,
                    "writer",
                    "r.board",
                    seed * 1000 + round,
                    40,
                )]),
        );
        let connecting = futures::future::join_all(
            subscribers
                .iter_mut()
                .enumerate()
                .filter(|(i, s)| s.client.is_none() && !away.contains(i))
                .map(|(_, s)| s.connect(&server)),
        );
        futures::join!(writers, connecting);
        if round == 2 {
            server.flush_and_wait("r.items").await;
        }
        for &i in &away {
            subscribers[i].connect(&server).await;
        }
        for subscriber in &mut subscribers {
            subscriber.check(&server).await;
        }
        if round == 3 {
            // A restart closes every socket (1001); all resume with from_seq.
            server.restart().await;
            for subscriber in &mut subscribers {
                let mut client = subscriber.client.take().expect("connected");
                assert!(matches!(client.closed().await, Ended::Close(1001, _)));
            }
            for subscriber in &mut subscribers {
                subscriber.connect(&server).await;
            }
        }
    }
    for subscriber in &mut subscribers {
        subscriber.check(&server).await;
        let client = subscriber.client.as_mut().expect("connected");
        client.expect_silence(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_sockets_are_reaped_and_private_tables_refused() {
    let server = TestServer::start_configured(|s| s.live_idle_timeout_seconds = 2).await;
    setup(&server).await;
    server
        .execute_sql("CREATE SHARED TABLE chat.private (id BIGINT PRIMARY KEY)")
        .await
        .expect_success();
    let mut alice = LiveClient::connect(&server, "alice", "pw").await;
    alice
        .send(json!({"type": "subscribe", "id": "p", "sql": "SELECT * FROM chat.private"}))
        .await;
    alice.expect_error(Some("p"), "PERMISSION_DENIED").await;
    alice
        .subscribe("s", "SELECT * FROM chat.messages", json!({}))
        .await;
    // Bob reads all the time (his client answers the server's pings) and stays;
    // alice reads nothing for 3.5 s and is closed as idle.
    let mut bob = LiveClient::connect(&server, "bob", "pw").await;
    bob.subscribe("s", "SELECT * FROM chat.messages", json!({})).await;
    bob.expect_silence(Duration::from_millis(3500)).await;
    // The server sent a close frame (1001, "idle ...") and dropped the socket; the
    // client, which queued pongs to the server's pings meanwhile, may meet the
    // dropped socket before it reads the frame.
    let ended = alice.closed().await;
    assert!(
        matches!(&ended, Ended::Close(1001, reason) if reason.contains("idle")) || ended == Ended::Gone,
        "{ended:?}"
    );
    bob.send(json!({"type": "ping"})).await;
    assert_eq!(bob.recv().await, json!({"type": "pong"}));
    let live = server.execute_sql("SELECT username FROM system.live").await;
    assert_eq!(live.rows(), [vec![json!("bob")]]);
}

/// A client that sends messages and leaves the replies unread: every reply counts
/// against its connection's queue (`live_queue_messages`), and when one finds no
/// room for `REPLY_WAIT` the connection is closed with 1008 — the queue is not
/// grown. (Without the bound, pongs and errors were queued without limit: 800 MB
/// for 800 unread 1 MB messages.) Its socket is held unwritable by a pause point;
/// other connections are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_replies_is_closed() {
    let server = TestServer::start_configured(|s| s.live_queue_messages = 64).await;
    setup(&server).await;
    let mut alice = LiveClient::connect(&server, "alice", "pw").await;
    server.db().holds().hold("ws_writer:alice");
    for _ in 0..200 {
        alice.send(json!({"type": "ping"})).await;
    }
    let mut bob = LiveClient::connect(&server, "bob", "pw").await;
    bob.send(json!({"type": "ping"})).await;
    assert_eq!(bob.recv().await["type"], "pong");
    // 64 replies queue, the 65th waits two seconds for room and closes the socket.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.db().holds().release("ws_writer:alice");
    match alice.closed().await {
        Ended::Close(code, reason) => {
            assert_eq!(code, 1008, "{reason}");
            assert!(reason.contains("does not read"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// One user's expensive live filter delays only its own subscriptions: bob's
/// change reaches him while alice's 50 filters of `repeat(body, 2000000)` are
/// still being evaluated (held at a pause point mid-way); without the separate
/// lane, one dispatcher per table evaluated every filter in turn and bob waited
/// for all of them (5 ms → 14 s). A costly filter slower than its budget ends its
/// own subscription with FILTER_TOO_SLOW.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expensive_filter_delays_only_its_own_subscription() {
    let server = TestServer::start_configured(|s| s.live_filter_budget_ms = 500).await;
    setup(&server).await;
    let costly = "SELECT * FROM chat.messages WHERE length(repeat(body, 2000000)) < 0";
    let mut alice = LiveClient::connect(&server, "alice", "pw").await;
    for i in 0..50 {
        alice.subscribe(&format!("s{i}"), costly, json!({})).await;
    }
    let mut bob = LiveClient::connect(&server, "bob", "pw").await;
    bob.subscribe("b", "SELECT id, body FROM chat.messages", json!({}))
        .await;
    server.db().holds().hold("live_filter:alice");
    for i in 0..20 {
        server
            .execute_sql_as(
                "alice",
                "pw",
                &format!("INSERT INTO chat.messages VALUES ({i}, 1, 'abcdefghij')"),
            )
            .await
            .expect_success();
    }
    server.wait_at_hold("live_filter:alice").await;
    server
        .execute_sql_as("bob", "pw", "INSERT INTO chat.messages VALUES (1, 1, 'bob')")
        .await
        .expect_success();
    let change = tokio::time::timeout(Duration::from_secs(5), bob.recv())
        .await
        .expect("bob's change arrives while alice's filters are evaluated");
    assert_eq!(change["rows"][0]["body"], "bob", "{change}");
    // Closing ends her subscriptions, and their queued evaluations with them.
    alice.close().await;
    server.db().holds().release("live_filter:alice");

    // Over the budget: that subscription ends, the others stay.
    let mut alice = LiveClient::connect(&server, "alice", "pw").await;
    for i in 0..3 {
        alice.subscribe(&format!("s{i}"), costly, json!({})).await;
    }
    server.db().holds().hold("live_filter:alice");
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (100, 1, 'x')")
        .await
        .expect_success();
    server.wait_at_hold("live_filter:alice").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.db().holds().release("live_filter:alice");
    let ended = alice.recv().await;
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["code"], "FILTER_TOO_SLOW", "{ended}");
    let live = server
        .execute_sql("SELECT count(*) FROM system.live WHERE username = 'alice'")
        .await;
    assert_eq!(live.rows(), vec![vec![json!(2)]]);
    server
        .execute_sql_as(
            "bob",
            "pw",
            "INSERT INTO chat.messages VALUES (2, 1, 'bob again')",
        )
        .await
        .expect_success();
    assert_eq!(bob.recv().await["rows"][0]["body"], "bob again");
}

/// alice's messages `(i, i % rooms, 'b<i>')` for i in 1..=count, flushed; then a
/// subscriber of `sql` and its model (as of the initial data's `last_seq`).
async fn flushed_then_subscribed(
    server: &TestServer,
    count: i64,
    rooms: i64,
    sql: &str,
) -> (LiveClient, Model) {
    for first in (0..count).step_by(1000) {
        let values: Vec<String> = (first + 1..=(first + 1000).min(count))
            .map(|i| format!("({i}, {}, 'b{i}')", i % rooms))
            .collect();
        server
            .execute_sql_as(
                "alice",
                "pw",
                &format!("INSERT INTO chat.messages VALUES {}", values.join(",")),
            )
            .await
            .expect_success();
    }
    server.flush_and_wait("chat.messages").await;
    let mut client = LiveClient::connect(server, "alice", "pw").await;
    let (_, rows) = client.subscribe("s", sql, json!({})).await;
    let mut model = Model::default();
    model.load(&rows);
    model.last_seq = client.last_seq;
    (client, model)
}

/// A resume across a compaction replays the same changes, old rows exact: compaction
/// drops replaced versions from Parquet, never the change log's copies, and keeps
/// every `_seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_from_seq_replays_changes_across_a_compaction() {
    let server = TestServer::start().await;
    setup(&server).await;
    let sql = "SELECT id, room, body FROM chat.messages WHERE room < 5";
    let (mut client, mut model) = flushed_then_subscribed(&server, 40, 8, sql).await;
    server
        .execute_sql_as("alice", "pw", "INSERT INTO chat.messages VALUES (100, 1, 'live')")
        .await
        .expect_success();
    model.apply(&client.recv().await);
    client.close().await;
    // While away: updates (moves in and out of the filter) and deletes of flushed rows,
    // flushes, then a compaction that drops every replaced version.
    for round in 0..3 {
        for statement in [
            format!(
                "UPDATE chat.messages SET body = 'r{round}', room = (room + 3) % 8 WHERE id % 3 = {round}"
            ),
            format!("DELETE FROM chat.messages WHERE id % 11 = {round}"),
        ] {
            server
                .execute_sql_as("alice", "pw", &statement)
                .await
                .expect_success();
        }
        server.flush_and_wait("chat.messages").await;
    }
    let compact = server.execute_sql("STORAGE COMPACT TABLE chat.messages").await;
    compact.expect_success();
    let job_id = compact.rows()[0][0].as_str().unwrap().to_string();
    assert_eq!(server.wait_for_job(&job_id).await["status"], "completed");
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client
        .subscribe("s", sql, json!({"from_seq": model.last_seq.to_string()}))
        .await;
    let expected = selected(&server, "alice", sql).await;
    catch_up(&mut client, &mut model, &expected).await;
    client.expect_silence(Duration::from_millis(200)).await;
    client.close().await;
}

/// One UPDATE and one DELETE of thousands of flushed rows: a subscriber gets every
/// change with its old row exactly as it was, and a resume from before them replays
/// the same from the change log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_flushed_rows_changed_at_once_reach_subscribers_and_the_log_exactly() {
    let server = TestServer::start().await;
    setup(&server).await;
    flushed_rows_changed_at_once(&server).await;
}

/// The same with the segments in an S3 bucket: the old rows subscribers and the change
/// log get are read from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flushed_rows_on_s3_changed_at_once_reach_subscribers_and_the_log_exactly() {
    let moto = crate::common::s3::Moto::start().await;
    let server = TestServer::start().await;
    server
        .execute_sql(&moto.create_storage_sql("s3", "live"))
        .await
        .expect_success();
    setup_with(&server, "WITH (STORAGE = 's3')").await;
    flushed_rows_changed_at_once(&server).await;
    assert_eq!(
        crate::common::s3::assert_only_listed_objects(&moto, "live/").await,
        1
    );
}

async fn flushed_rows_changed_at_once(server: &TestServer) {
    let sql = "SELECT id, room, body FROM chat.messages";
    let (mut client, mut model) = flushed_then_subscribed(server, 3000, 7, sql).await;
    let before = Model {
        rows: model.rows.clone(),
        last_seq: model.last_seq,
    };
    let updated = server
        .execute_sql_as(
            "alice",
            "pw",
            "UPDATE chat.messages SET body = body || '+', room = room + 1",
        )
        .await;
    updated.expect_success();
    assert_eq!(updated.row_count(0), 3000);
    let deleted = server
        .execute_sql_as("alice", "pw", "DELETE FROM chat.messages WHERE id % 2 = 0")
        .await;
    deleted.expect_success();
    assert_eq!(deleted.row_count(0), 1500);
    let expected = selected(server, "alice", sql).await;
    assert_eq!(expected.len(), 1500);
    catch_up(&mut client, &mut model, &expected).await;
    client.close().await;
    // The change log holds the same changes: a resume from before them replays them,
    // old rows checked against the rows as they were.
    let mut resumed = before;
    let mut client = LiveClient::connect(server, "alice", "pw").await;
    client
        .subscribe("r", sql, json!({"from_seq": resumed.last_seq.to_string()}))
        .await;
    catch_up(&mut client, &mut resumed, &expected).await;
    client.expect_silence(Duration::from_millis(200)).await;
    client.close().await;
}
