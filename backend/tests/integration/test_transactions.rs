//! Transactions over `/sql`: `BEGIN ... COMMIT` as one atomic commit over one
//! snapshot (docs/SQL_SYNTAX.md, "Transactions").

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::live::LiveClient;
use crate::common::{Rng, ServerProcess, SqlResponse, TestServer};

async fn setup(server: &TestServer) {
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE SHARED TABLE app.bank (id BIGINT PRIMARY KEY, bal BIGINT NOT NULL); \
             CREATE USER TABLE app.wallet (id BIGINT PRIMARY KEY, bal BIGINT NOT NULL); \
             CREATE SHARED TABLE app.log (id TEXT PRIMARY KEY, amount BIGINT); \
             INSERT INTO app.bank VALUES (1, 100), (2, 100), (3, 100)",
        )
        .await
        .expect_success();
}

fn ints(response: &SqlResponse, statement: usize) -> Vec<Vec<i64>> {
    let rows: Vec<Vec<Value>> = serde_json::from_value(response.body["results"][statement]["rows"].clone())
        .unwrap_or_else(|e| panic!("rows of statement {statement} ({e}): {}", response.body));
    rows.iter()
        .map(|r| r.iter().map(|v| v.as_i64().expect("an integer")).collect())
        .collect()
}

async fn bank(server: &TestServer) -> Vec<Vec<i64>> {
    let answer = server
        .execute_sql("SELECT id, bal FROM app.bank ORDER BY id")
        .await;
    answer.expect_success();
    ints(&answer, 0)
}

#[tokio::test]
async fn commit_writes_everything_rollback_and_an_unfinished_request_nothing() {
    let server = TestServer::start().await;
    setup(&server).await;
    server.create_user("alice", "pw", "service").await;

    // Own writes are visible inside, in every read path; all commit together.
    let answer = server
        .execute_sql_as(
            "alice",
            "pw",
            "BEGIN; \
             UPDATE app.bank SET bal = bal - 30 WHERE id = 1; \
             UPDATE app.bank SET bal = bal + 30 WHERE id = 2; \
             INSERT INTO app.bank VALUES (4, 7); \
             INSERT INTO app.wallet VALUES (1, 50), (2, 60); \
             UPDATE app.wallet SET bal = bal + 1 WHERE id = 1; \
             DELETE FROM app.wallet WHERE id = 2; \
             SELECT id, bal FROM app.bank ORDER BY id; \
             SELECT bal FROM app.bank WHERE id = 4; \
             SELECT id, bal FROM app.wallet ORDER BY id; \
             SELECT count(*) FROM app.bank WHERE bal > 50; \
             INSERT INTO app.bank SELECT id + 10, bal FROM app.bank WHERE id <= 2; \
             INSERT INTO app.bank VALUES (4, 8) ON CONFLICT (id) DO UPDATE SET bal = bal + EXCLUDED.bal; \
             SELECT id, bal FROM app.bank WHERE id IN (4, 11, 12) ORDER BY id; \
             COMMIT",
        )
        .await;
    answer.expect_success();
    assert_eq!(
        ints(&answer, 7),
        vec![vec![1, 70], vec![2, 130], vec![3, 100], vec![4, 7]]
    );
    assert_eq!(ints(&answer, 8), vec![vec![7]]);
    assert_eq!(ints(&answer, 9), vec![vec![1, 51]]);
    assert_eq!(ints(&answer, 10), vec![vec![3]]);
    assert_eq!(ints(&answer, 13), vec![vec![4, 15], vec![11, 70], vec![12, 130]]);
    assert_eq!(answer.body["results"][14]["message"], "COMMIT");
    assert_eq!(
        bank(&server).await,
        vec![
            vec![1, 70],
            vec![2, 130],
            vec![3, 100],
            vec![4, 15],
            vec![11, 70],
            vec![12, 130]
        ]
    );
    let wallet = server
        .execute_sql_as("alice", "pw", "SELECT id, bal FROM app.wallet")
        .await;
    assert_eq!(ints(&wallet, 0), vec![vec![1, 51]]);
    // One `_seq` range, in commit order.
    let seqs = server
        .execute_sql("SELECT _seq FROM app.bank WHERE id IN (1, 2, 4, 11, 12) ORDER BY _seq")
        .await;
    let seqs: Vec<i64> = seqs.rows().iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert!(seqs.iter().all(|s| *s < (1i64 << 62)), "{seqs:?}");

    // ROLLBACK, a request that ends inside a transaction, and one that fails in it
    // write nothing.
    let before = bank(&server).await;
    server
        .execute_sql_as(
            "alice",
            "pw",
            "BEGIN; UPDATE app.bank SET bal = 0; DELETE FROM app.bank WHERE id = 3; ROLLBACK",
        )
        .await
        .expect_success();
    server
        .execute_sql_as("alice", "pw", "BEGIN; UPDATE app.bank SET bal = 0")
        .await
        .expect_success();
    server
        .execute_sql_as(
            "alice",
            "pw",
            "START TRANSACTION; UPDATE app.bank SET bal = 1; INSERT INTO app.bank VALUES (1, 1); COMMIT",
        )
        .await
        .expect_error(409, "DUPLICATE_KEY");
    assert_eq!(bank(&server).await, before);
    // A plain INSERT of a key the transaction already wrote is a duplicate at once.
    let duplicate = server
        .execute_sql_as(
            "alice",
            "pw",
            "BEGIN; INSERT INTO app.bank VALUES (20, 1); INSERT INTO app.bank VALUES (20, 2); COMMIT",
        )
        .await;
    duplicate.expect_error(409, "DUPLICATE_KEY");
    assert_eq!(duplicate.body["error"]["statement_index"], 2);
    assert_eq!(bank(&server).await, before);

    // One transaction across two users' scopes of one table (EXECUTE AS) and a
    // SHARED table commits as one.
    server.create_user("bob", "pw", "user").await;
    let answer = server
        .execute_sql(
            "BEGIN; EXECUTE AS USER 'alice' (INSERT INTO app.wallet VALUES (7, 70)); \
             EXECUTE AS USER 'bob' (INSERT INTO app.wallet VALUES (7, 71)); \
             EXECUTE AS USER 'bob' (SELECT bal FROM app.wallet WHERE id = 7); \
             UPDATE app.bank SET bal = bal - 141 WHERE id = 3; COMMIT",
        )
        .await;
    answer.expect_success();
    assert_eq!(ints(&answer, 3), vec![vec![71]]);
    let bob = server
        .execute_sql_as("bob", "pw", "SELECT id, bal FROM app.wallet")
        .await;
    assert_eq!(ints(&bob, 0), vec![vec![7, 71]]);
    let alice = server
        .execute_sql_as("alice", "pw", "SELECT bal FROM app.wallet WHERE id = 7")
        .await;
    assert_eq!(ints(&alice, 0), vec![vec![70]]);
    assert_eq!(bank(&server).await[2], vec![3, -41]);

    // COMMIT and ROLLBACK outside a transaction change nothing; BEGIN inside one
    // goes on with it.
    let answer = server
        .execute_sql("COMMIT; ROLLBACK; BEGIN; BEGIN; INSERT INTO app.bank VALUES (30, 1); COMMIT")
        .await;
    answer.expect_success();
    assert!(
        answer.body["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no transaction")
    );
    assert!(
        answer.body["results"][3]["message"]
            .as_str()
            .unwrap()
            .contains("already")
    );
    assert_eq!(
        server
            .execute_sql("SELECT bal FROM app.bank WHERE id = 30")
            .await
            .rows(),
        vec![vec![json!(1)]]
    );
}

#[tokio::test]
async fn ddl_alone_runs_and_other_statements_inside_are_refused() {
    let server = TestServer::start().await;
    setup(&server).await;
    // DDL as the transaction's only statement takes effect (as outside one).
    server
        .execute_sql("BEGIN; CREATE SHARED TABLE app.t (id INT PRIMARY KEY); COMMIT")
        .await
        .expect_success();
    server.execute_sql("SELECT * FROM app.t").await.expect_success();
    // Anywhere else it is refused, and the transaction writes nothing.
    let refused = server
        .execute_sql("BEGIN; INSERT INTO app.bank VALUES (9, 9); CREATE SHARED TABLE app.u (id INT PRIMARY KEY); COMMIT")
        .await;
    refused.expect_error(400, "UNSUPPORTED");
    assert_eq!(refused.body["error"]["statement_index"], 2);
    assert!(
        server
            .execute_sql("SELECT * FROM app.bank WHERE id = 9")
            .await
            .rows()
            .is_empty()
    );
    server
        .execute_sql("BEGIN; STORAGE FLUSH TABLE app.wallet; SELECT 1")
        .await
        .expect_error(400, "UNSUPPORTED");
    // Savepoints and SERIALIZABLE are refused by name.
    server
        .execute_sql("BEGIN; SAVEPOINT a")
        .await
        .expect_error(400, "UNSUPPORTED");
    server
        .execute_sql("BEGIN ISOLATION LEVEL SERIALIZABLE")
        .await
        .expect_error(400, "UNSUPPORTED");
    // READ ONLY refuses writes; REPEATABLE READ is what every transaction gets.
    server
        .execute_sql("BEGIN READ ONLY; SELECT count(*) FROM app.bank; UPDATE app.bank SET bal = 0")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .execute_sql("BEGIN READ ONLY; CREATE SHARED TABLE app.w (id INT PRIMARY KEY)")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .execute_sql(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; UPDATE app.bank SET bal = 5 WHERE id = 3; COMMIT",
        )
        .await
        .expect_success();
    assert_eq!(bank(&server).await[2], vec![3, 5]);
}

#[tokio::test]
async fn max_transaction_rows_bounds_what_a_transaction_holds() {
    let server = TestServer::start_configured(|s| s.max_transaction_rows = 5).await;
    setup(&server).await;
    let refused = server
        .execute_sql(
            "BEGIN; INSERT INTO app.bank VALUES (10, 1), (11, 1), (12, 1); \
             UPDATE app.bank SET bal = 2 WHERE id = 10; \
             INSERT INTO app.bank VALUES (13, 1), (14, 1), (15, 1); COMMIT",
        )
        .await;
    refused.expect_error(400, "RESOURCES_EXHAUSTED");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_transaction_rows")
    );
    assert_eq!(refused.body["error"]["statement_index"], 3);
    assert_eq!(bank(&server).await.len(), 3);
    // Rewriting keys it holds costs nothing more.
    server
        .execute_sql(
            "BEGIN; INSERT INTO app.bank VALUES (10, 1), (11, 1); \
             UPDATE app.bank SET bal = bal + 1; UPDATE app.bank SET bal = bal + 1; COMMIT",
        )
        .await
        .expect_success();
    assert_eq!(bank(&server).await.len(), 5);
}

#[tokio::test]
async fn a_transaction_idle_longer_than_its_timeout_is_rolled_back() {
    let server = TestServer::start_configured(|s| s.transaction_timeout_ms = 200).await;
    setup(&server).await;
    server.create_user("alice", "pw", "service").await;
    let holds = server.db().holds();
    holds.hold("txn_statement:alice:1");
    let alice = spawn_txn(
        &server,
        "alice",
        "BEGIN; UPDATE app.bank SET bal = 0 WHERE id = 1; UPDATE app.bank SET bal = 0 WHERE id = 2; COMMIT",
    );
    server.wait_at_hold("txn_statement:alice:1").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    holds.release("txn_statement:alice:1");
    let answer = alice.await.unwrap();
    answer.expect_error(400, "TRANSACTION_TIMEOUT");
    assert_eq!(answer.body["error"]["statement_index"], 2);
    assert_eq!(bank(&server).await[0], vec![1, 100]);
}

/// A transaction's request, started in the background; the test holds it before
/// its statement `n` (counted from the first after BEGIN).
fn spawn_txn(
    server: &TestServer,
    user: &'static str,
    sql: &'static str,
) -> tokio::task::JoinHandle<SqlResponse> {
    let (client, url) = (server.client().clone(), server.url("/sql"));
    tokio::spawn(async move {
        let response = client
            .post(url)
            .basic_auth(user, Some("pw"))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .expect("answered");
        crate::common::decode(response).await
    })
}

#[tokio::test]
async fn snapshot_isolation_lost_update_refused_read_skew_impossible_write_skew_allowed() {
    let server = TestServer::start().await;
    setup(&server).await;
    for user in ["alice", "bob"] {
        server.create_user(user, "pw", "service").await;
    }
    let holds = server.db().holds();

    // Lost update: alice reads, root commits a change of the same row, alice's
    // update of it loses at COMMIT and writes nothing.
    holds.hold("txn_statement:alice:1");
    let alice = spawn_txn(
        &server,
        "alice",
        "BEGIN; SELECT bal FROM app.bank WHERE id = 1; SELECT count(*), sum(bal) FROM app.bank; \
         SELECT bal FROM app.bank WHERE id = 1; UPDATE app.bank SET bal = bal + 10 WHERE id = 1; \
         INSERT INTO app.log VALUES ('alice', 10); COMMIT",
    );
    server.wait_at_hold("txn_statement:alice:1").await;
    server
        .execute_sql("UPDATE app.bank SET bal = 500 WHERE id = 1; INSERT INTO app.bank VALUES (9, 9)")
        .await
        .expect_success();
    holds.release("txn_statement:alice:1");
    let answer = alice.await.unwrap();
    answer.expect_error(409, "SERIALIZATION_FAILURE");
    assert_eq!(answer.body["error"]["statement_index"], 6);
    // Every read of the transaction saw its snapshot: not root's update, not its row.
    assert_eq!(ints(&answer, 1), vec![vec![100]]);
    assert_eq!(ints(&answer, 2), vec![vec![3, 300]]);
    assert_eq!(ints(&answer, 3), vec![vec![100]]);
    assert_eq!(bank(&server).await[0], vec![1, 500]);
    assert!(
        server
            .execute_sql("SELECT * FROM app.log")
            .await
            .rows()
            .is_empty()
    );

    // UNIQUE is checked at COMMIT against everything committed: a value another
    // commit took after the snapshot fails the transaction.
    server
        .execute_sql("CREATE SHARED TABLE app.people (id BIGINT PRIMARY KEY, email TEXT UNIQUE)")
        .await
        .expect_success();
    holds.hold("txn_commit:alice");
    let alice = spawn_txn(
        &server,
        "alice",
        "BEGIN; INSERT INTO app.people VALUES (1, 'a@x'); INSERT INTO app.log VALUES ('people', 1); COMMIT",
    );
    server.wait_at_hold("txn_commit:alice").await;
    server
        .execute_sql("INSERT INTO app.people VALUES (2, 'a@x')")
        .await
        .expect_success();
    holds.release("txn_commit:alice");
    let answer = alice.await.unwrap();
    assert_eq!(answer.http_status, 409, "{}", answer.body);
    assert_eq!(answer.body["error"]["statement_index"], 3);
    assert!(
        server
            .execute_sql("SELECT * FROM app.log")
            .await
            .rows()
            .is_empty()
    );
    assert_eq!(
        server.execute_sql("SELECT id FROM app.people").await.rows(),
        vec![vec![json!(2)]]
    );

    // Read skew: alice reads row 2, root moves 50 from 2 to 3 in a transaction,
    // alice reads row 3: her total is the total.
    holds.hold("txn_statement:alice:1");
    let alice = spawn_txn(
        &server,
        "alice",
        "BEGIN; SELECT bal FROM app.bank WHERE id = 2; SELECT bal FROM app.bank WHERE id = 3; COMMIT",
    );
    server.wait_at_hold("txn_statement:alice:1").await;
    server
        .execute_sql(
            "BEGIN; UPDATE app.bank SET bal = bal - 50 WHERE id = 2; UPDATE app.bank SET bal = bal + 50 WHERE id = 3; COMMIT",
        )
        .await
        .expect_success();
    holds.release("txn_statement:alice:1");
    let answer = alice.await.unwrap();
    answer.expect_success();
    assert_eq!(ints(&answer, 1)[0][0] + ints(&answer, 2)[0][0], 200);
    assert_eq!(&bank(&server).await[1..3], &[vec![2, 50], vec![3, 150]]);

    // Write skew is allowed (snapshot isolation): both read rows 2 and 3 and each
    // writes a different one; both commit.
    holds.hold("txn_statement:alice:1");
    holds.hold("txn_statement:bob:1");
    let alice = spawn_txn(
        &server,
        "alice",
        "BEGIN; SELECT sum(bal) FROM app.bank WHERE id IN (2, 3); UPDATE app.bank SET bal = bal - 150 WHERE id = 2; COMMIT",
    );
    let bob = spawn_txn(
        &server,
        "bob",
        "BEGIN; SELECT sum(bal) FROM app.bank WHERE id IN (2, 3); UPDATE app.bank SET bal = bal - 150 WHERE id = 3; COMMIT",
    );
    server.wait_at_hold("txn_statement:alice:1").await;
    server.wait_at_hold("txn_statement:bob:1").await;
    holds.release("txn_statement:alice:1");
    holds.release("txn_statement:bob:1");
    alice.await.unwrap().expect_success();
    bob.await.unwrap().expect_success();
    assert_eq!(&bank(&server).await[1..3], &[vec![2, -100], vec![3, 0]]);
}

#[tokio::test]
async fn flushes_and_compactions_meanwhile_change_nothing_a_transaction_sees() {
    let server = TestServer::start().await;
    setup(&server).await;
    server.create_user("alice", "pw", "user").await;
    let values: Vec<String> = (1..=200).map(|i| format!("({i}, {i})")).collect();
    server
        .execute_sql_as(
            "alice",
            "pw",
            &format!("INSERT INTO app.wallet VALUES {}", values.join(", ")),
        )
        .await
        .expect_success();
    server.flush_and_wait("app.wallet").await;
    server
        .execute_sql_as(
            "alice",
            "pw",
            "UPDATE app.wallet SET bal = bal + 1000 WHERE id <= 100",
        )
        .await
        .expect_success();

    let holds = server.db().holds();
    holds.hold("txn_statement:alice:2");
    let alice = spawn_txn(
        &server,
        "alice",
        "BEGIN; SELECT count(*), sum(bal) FROM app.wallet; UPDATE app.wallet SET bal = 0 WHERE id = 150; \
         SELECT count(*), sum(bal) FROM app.wallet; SELECT bal FROM app.wallet WHERE id IN (1, 150, 200) ORDER BY id; COMMIT",
    );
    server.wait_at_hold("txn_statement:alice:2").await;
    // Meanwhile: the hot updates are flushed, rows change and are flushed again,
    // the scope is compacted, and more rows arrive.
    server.flush_and_wait("app.wallet").await;
    server
        .execute_sql_as(
            "alice",
            "pw",
            "UPDATE app.wallet SET bal = -1 WHERE id > 180; DELETE FROM app.wallet WHERE id = 1",
        )
        .await
        .expect_success();
    server.flush_and_wait("app.wallet").await;
    let compact = server.execute_sql("STORAGE COMPACT TABLE app.wallet").await;
    let job = compact.rows()[0][0].as_str().unwrap().to_string();
    assert_eq!(server.wait_for_job(&job).await["status"], "completed");
    server
        .execute_sql_as("alice", "pw", "INSERT INTO app.wallet VALUES (500, 5)")
        .await
        .expect_success();
    holds.release("txn_statement:alice:2");
    let answer = alice.await.unwrap();
    let total: i64 = (1..=200).sum::<i64>() + 100 * 1000;
    assert_eq!(ints(&answer, 1), vec![vec![200, total]], "{}", answer.body);
    assert_eq!(ints(&answer, 3), vec![vec![200, total - 150]]);
    assert_eq!(ints(&answer, 4), vec![vec![1001], vec![0], vec![200]]);
    // Row 150 was not touched by the others: the commit succeeds.
    answer.expect_success();
    let now = server
        .execute_sql_as(
            "alice",
            "pw",
            "SELECT bal FROM app.wallet WHERE id IN (150, 200, 500) ORDER BY id",
        )
        .await;
    assert_eq!(ints(&now, 0), vec![vec![0], vec![-1], vec![5]]);
}

#[tokio::test]
async fn live_subscribers_get_a_transaction_after_its_commit_whole() {
    let server = TestServer::start().await;
    setup(&server).await;
    server.create_user("alice", "pw", "user").await;
    server
        .execute_sql_as("alice", "pw", "INSERT INTO app.wallet VALUES (1, 10)")
        .await
        .expect_success();
    let mut client = LiveClient::connect(&server, "alice", "pw").await;
    client
        .subscribe("w", "SELECT id, bal FROM app.wallet", json!({}))
        .await;
    let holds = server.db().holds();
    holds.hold("txn_commit:alice");
    let alice = spawn_txn(
        &server,
        "alice",
        "BEGIN; INSERT INTO app.wallet VALUES (2, 20), (3, 30); UPDATE app.wallet SET bal = 11 WHERE id = 1; \
         INSERT INTO app.wallet VALUES (4, 40); COMMIT",
    );
    server.wait_at_hold("txn_commit:alice").await;
    client.expect_silence(Duration::from_millis(300)).await;
    holds.release("txn_commit:alice");
    alice.await.unwrap().expect_success();
    // Every change of the transaction, in `_seq` order, one run per operation.
    let mut inserted = Vec::new();
    let mut updated = Vec::new();
    let mut seqs = Vec::new();
    while inserted.len() + updated.len() < 4 {
        let change = client.recv().await;
        assert_eq!(change["type"], "change", "{change}");
        seqs.push(change["seq"].to_string());
        for row in change["rows"].as_array().unwrap() {
            match change["op"].as_str().unwrap() {
                "insert" => inserted.push(row["id"].as_i64().unwrap()),
                "update" => updated.push((row["id"].as_i64().unwrap(), row["bal"].as_i64().unwrap())),
                op => panic!("unexpected {op}: {change}"),
            }
        }
    }
    inserted.sort_unstable();
    assert_eq!((inserted, updated), (vec![2, 3, 4], vec![(1, 11)]));
    client.expect_silence(Duration::from_millis(200)).await;
}

/// Transfers between SHARED rows and each user's USER-table rows, by several
/// clients at once, with conflicts, rollbacks, flushes and a restart: the total
/// never changes and every committed transfer is logged exactly once.
#[tokio::test]
async fn randomized_bank_transfers_keep_the_total() {
    let seed: u64 = std::env::var("KALAMDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261208);
    let mut server = TestServer::start().await;
    setup(&server).await;
    let users = ["u1", "u2", "u3", "u4"];
    for user in users {
        server.create_user(user, "pw", "service").await;
        server
            .execute_sql_as(user, "pw", "INSERT INTO app.wallet VALUES (1, 100), (2, 100)")
            .await
            .expect_success();
    }
    let total = 300 + 4 * 200;
    let mut committed = Vec::new();
    for round in 0..3u64 {
        let mut tasks = Vec::new();
        for (n, user) in users.iter().enumerate() {
            let (client, url) = (server.client().clone(), server.url("/sql"));
            let user = user.to_string();
            let mut rng = Rng(seed ^ ((round * 131 + n as u64 + 1) * 0x9E37_79B9));
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                let mut conflicts = 0;
                for i in 0..15 {
                    let id = format!("{user}-{round}-{i}");
                    let amount = 1 + rng.below(20) as i64;
                    let shared = 1 + rng.below(3);
                    let own = 1 + rng.below(2);
                    let (from, to) = if rng.below(2) == 0 {
                        (
                            format!("app.bank WHERE id = {shared}"),
                            format!("app.wallet WHERE id = {own}"),
                        )
                    } else {
                        (
                            format!("app.wallet WHERE id = {own}"),
                            format!("app.bank WHERE id = {shared}"),
                        )
                    };
                    let (from_table, from_where) = from.split_once(" WHERE ").unwrap();
                    let (to_table, to_where) = to.split_once(" WHERE ").unwrap();
                    let end = if rng.below(5) == 0 { "ROLLBACK" } else { "COMMIT" };
                    let sql = format!(
                        "BEGIN; UPDATE {from_table} SET bal = bal - {amount} WHERE {from_where}; \
                         UPDATE {to_table} SET bal = bal + {amount} WHERE {to_where}; \
                         INSERT INTO app.log VALUES ('{id}', {amount}); {end}"
                    );
                    loop {
                        let response = client
                            .post(&url)
                            .basic_auth(&user, Some("pw"))
                            .json(&json!({ "sql": sql }))
                            .send()
                            .await
                            .expect("answered");
                        let answer = crate::common::decode(response).await;
                        if answer.is_success() {
                            if end == "COMMIT" {
                                done.push((id.clone(), amount));
                            }
                            break;
                        }
                        answer.expect_error(409, "SERIALIZATION_FAILURE");
                        conflicts += 1;
                    }
                }
                (done, conflicts)
            }));
        }
        for task in tasks {
            let (done, _conflicts) = task.await.unwrap();
            committed.extend(done);
        }
        check_total(&server, &users, total, &committed).await;
        match round {
            0 => {
                server.flush_and_wait("app.wallet").await;
            }
            1 => server.restart().await,
            _ => {}
        }
        check_total(&server, &users, total, &committed).await;
    }
}

async fn check_total(server: &TestServer, users: &[&str], total: i64, committed: &[(String, i64)]) {
    let mut sum = bank(server).await.iter().map(|r| r[1]).sum::<i64>();
    for user in users {
        let wallet = server
            .execute_sql_as(user, "pw", "SELECT coalesce(sum(bal), 0) FROM app.wallet")
            .await;
        sum += ints(&wallet, 0)[0][0];
    }
    assert_eq!(sum, total);
    let log = server
        .execute_sql("SELECT id, amount FROM app.log ORDER BY id")
        .await;
    let mut logged: Vec<(String, i64)> = log
        .rows()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect();
    let mut expected = committed.to_vec();
    logged.sort();
    expected.sort();
    assert_eq!(logged, expected);
}

/// kill -9 of the real binary while transactions commit: after the restart each
/// transaction is all there or not at all (the total holds, and a transfer is
/// logged exactly when its money moved).
#[tokio::test]
async fn a_crash_during_commits_leaves_each_transaction_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path());
    server
        .sql(
            "CREATE NAMESPACE app; \
             CREATE SHARED TABLE app.bank (id BIGINT PRIMARY KEY, bal BIGINT NOT NULL); \
             CREATE SHARED TABLE app.log (id TEXT PRIMARY KEY, amount BIGINT); \
             INSERT INTO app.bank VALUES (1, 1000), (2, 1000), (3, 1000), (4, 1000)",
        )
        .await
        .expect_success();
    let base = server.base_url().to_string();
    let mut tasks = Vec::new();
    for n in 0..4u64 {
        let url = format!("{base}/sql");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rng = Rng(n * 7919 + 17);
            for i in 0.. {
                let (from, to) = (1 + rng.below(4), 1 + rng.below(4));
                let amount = 1 + rng.below(9);
                // Each transfer also moves the amount onto the log row, so the sum
                // of bank and log is fixed whatever commits.
                let sql = format!(
                    "BEGIN; UPDATE app.bank SET bal = bal - {amount} WHERE id = {from}; \
                     UPDATE app.bank SET bal = bal + {amount} WHERE id = {to}; \
                     UPDATE app.bank SET bal = bal - {amount} WHERE id = 1; \
                     INSERT INTO app.log VALUES ('{n}-{i}', {amount}); COMMIT"
                );
                let sent = client
                    .post(&url)
                    .basic_auth("root", Some(""))
                    .json(&json!({ "sql": sql }))
                    .send()
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill_9();
    for task in tasks {
        let _ = task.await;
    }
    let server = ServerProcess::spawn(dir.path());
    let bank = server.sql("SELECT coalesce(sum(bal), 0) FROM app.bank").await;
    let log = server
        .sql("SELECT count(*), coalesce(sum(amount), 0) FROM app.log")
        .await;
    let (bank, log) = (bank.rows(), log.rows());
    let (logged, moved) = (log[0][0].as_i64().unwrap(), log[0][1].as_i64().unwrap());
    assert!(logged > 0, "no transfer committed before the crash");
    assert_eq!(bank[0][0].as_i64().unwrap() + moved, 4000);
}
