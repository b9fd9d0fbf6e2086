//! Roles, bearer tokens, EXECUTE AS, limits, login throttling, and a randomized
//! isolation suite over hot and cold rows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Rng, SqlResponse, TestServer, decode};

const PW: &str = "pw";

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value) {
    let response = server
        .client()
        .post(server.url("/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn sql_bearer(server: &TestServer, token: &str, sql: &str) -> SqlResponse {
    let response = server
        .client()
        .post(server.url("/sql"))
        .bearer_auth(token)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    decode(response).await
}

/// `(role, statement, allowed)`: the contract's role table, statement family by family.
#[tokio::test]
async fn every_role_gets_exactly_what_the_contract_gives_it() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.notes (id INT PRIMARY KEY, body TEXT); \
             CREATE SHARED TABLE app.pub (id INT PRIMARY KEY) WITH (ACCESS_LEVEL = 'PUBLIC'); \
             CREATE SHARED TABLE app.priv (id INT PRIMARY KEY); \
             INSERT INTO app.pub VALUES (1); INSERT INTO app.priv VALUES (1)",
        )
        .await
        .expect_success();
    for (name, role) in [("u", "user"), ("s", "service"), ("d", "dba")] {
        server.create_user(name, PW, role).await;
    }
    let cases: &[(&str, [bool; 3])] = &[
        // statement                                   user   service dba
        ("CREATE NAMESPACE ns_{r}", [false, false, true]),
        (
            "CREATE USER TABLE app.t_{r} (id INT PRIMARY KEY)",
            [false, false, true],
        ),
        (
            "ALTER TABLE app.notes ADD COLUMN IF NOT EXISTS c_{r} INT",
            [false, false, true],
        ),
        (
            "CREATE USER 'x_{r}' WITH PASSWORD 'p' ROLE user",
            [false, false, true],
        ),
        (
            "INSERT INTO app.notes (id, body) VALUES (1, '{r}')",
            [true, true, true],
        ),
        ("UPDATE app.notes SET body = 'x' WHERE id = 1", [true, true, true]),
        ("SELECT count(*) FROM app.notes", [true, true, true]),
        ("SELECT count(*) FROM app.pub", [true, true, true]),
        ("SELECT count(*) FROM app.priv", [false, true, true]),
        ("SHOW STATS FOR TABLE app.priv", [false, true, true]),
        (
            "INSERT INTO app.pub VALUES (10 + length('{r}'))",
            [false, true, true],
        ),
        ("DELETE FROM app.priv WHERE id = 999", [false, true, true]),
        ("SELECT count(*) FROM system.tables", [true, true, true]),
        ("SELECT count(*) FROM system.jobs", [false, true, true]),
        ("STORAGE FLUSH ALL IN app", [false, true, true]),
        (
            "EXECUTE AS USER 'u' (SELECT count(*) FROM app.notes)",
            [false, true, true],
        ),
        ("INSERT INTO system.users VALUES ('a')", [false, false, false]),
    ];
    for (template, allowed) in cases {
        for ((user, role), allowed) in [("u", "user"), ("s", "service"), ("d", "dba")]
            .iter()
            .zip(allowed)
        {
            let sql = template.replace("{r}", role);
            let response = server.execute_sql_as(user, PW, &sql).await;
            if *allowed {
                response.expect_success();
            } else {
                response.expect_error(403, "PERMISSION_DENIED");
            }
        }
        // Jobs started by FLUSH ALL must end before the next FLUSH ALL.
        for row in server.execute_sql("SELECT job_id FROM system.jobs").await.rows() {
            server.wait_for_job(row[0].as_str().unwrap()).await;
        }
    }
    // KILL JOB: dba and above (an unknown id tells the allowed apart).
    for (user, code) in [
        ("u", "PERMISSION_DENIED"),
        ("s", "PERMISSION_DENIED"),
        ("d", "JOB_NOT_FOUND"),
    ] {
        let response = server.execute_sql_as(user, PW, "KILL JOB 'nope'").await;
        assert_eq!(response.error_code(), Some(code), "{user}");
    }
    // Refused statements changed nothing.
    let pub_rows = server
        .execute_sql("SELECT id FROM app.pub ORDER BY id")
        .await
        .rows();
    assert_eq!(
        pub_rows,
        vec![vec![json!(1)], vec![json!(13)], vec![json!(17)]],
        "only service and dba wrote"
    );
    let namespaces = server
        .execute_sql("SELECT name FROM system.namespaces ORDER BY name")
        .await
        .rows();
    assert_eq!(
        namespaces,
        vec![vec![json!("app")], vec![json!("default")], vec![json!("ns_dba")]]
    );
    let users = server
        .execute_sql_as("u", PW, "SELECT username FROM system.users")
        .await;
    assert_eq!(
        users.rows(),
        vec![vec![json!("u")]],
        "a user sees its own row only"
    );
    let users = server
        .execute_sql_as("s", PW, "SELECT count(*) FROM system.users")
        .await;
    assert!(users.rows()[0][0].as_i64().unwrap() >= 4);
}

#[tokio::test]
async fn bearer_tokens_work_like_basic_and_die_with_their_user() {
    let server = TestServer::start_configured(|s| s.token_ttl_seconds = 4).await;
    server.create_user("alice", PW, "user").await;
    server
        .execute_sql("CREATE USER TABLE default.t (id INT PRIMARY KEY)")
        .await
        .expect_success();
    let (status, body) = login(&server, "alice", PW).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() <= 4);
    let token = body["token"].as_str().unwrap().to_string();
    sql_bearer(&server, &token, "INSERT INTO default.t VALUES (1)")
        .await
        .expect_success();
    let basic = server
        .execute_sql_as("alice", PW, "SELECT id FROM default.t")
        .await;
    assert_eq!(basic.rows(), vec![vec![json!(1)]], "the token is alice");

    // Wrong password, unknown user, password-less root: no token.
    assert_eq!(login(&server, "alice", "wrong").await.0, 401);
    assert_eq!(login(&server, "nobody", PW).await.0, 401);
    assert_eq!(login(&server, "root", "").await.0, 401);
    // A forged signature.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    sql_bearer(&server, &forged, "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
    sql_bearer(&server, "not.a.token", "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");

    // A role change applies to the same token at once.
    server
        .execute_sql("ALTER USER 'alice' SET ROLE service")
        .await
        .expect_success();
    sql_bearer(&server, &token, "SELECT count(*) FROM system.jobs")
        .await
        .expect_success();
    // A password change ends it.
    server
        .execute_sql("ALTER USER 'alice' SET PASSWORD 'new'")
        .await
        .expect_success();
    sql_bearer(&server, &token, "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
    let (_, body) = login(&server, "alice", "new").await;
    let token = body["token"].as_str().unwrap().to_string();
    sql_bearer(&server, &token, "SELECT 1").await.expect_success();
    // Expiry (whole seconds: wait one more than the lifetime).
    tokio::time::sleep(Duration::from_millis(5100)).await;
    let expired = sql_bearer(&server, &token, "SELECT 1").await;
    expired.expect_error(401, "UNAUTHORIZED");
    assert!(
        expired.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // A dropped user's token, and one of a re-created user of the same name.
    let (_, body) = login(&server, "alice", "new").await;
    let token = body["token"].as_str().unwrap().to_string();
    server.execute_sql("DROP USER 'alice'").await.expect_success();
    sql_bearer(&server, &token, "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
    server.create_user("alice", "new", "user").await;
    sql_bearer(&server, &token, "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
    // Tokens survive a restart (the secret is kept in the data directory).
    let mut server = server;
    let (_, body) = login(&server, "alice", "new").await;
    let token = body["token"].as_str().unwrap().to_string();
    server.restart().await;
    sql_bearer(&server, &token, "SELECT 1").await.expect_success();
}

#[tokio::test]
async fn execute_as_runs_in_the_named_users_scope() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE USER TABLE default.t (id INT PRIMARY KEY, v TEXT)")
        .await
        .expect_success();
    server.create_user("alice", PW, "user").await;
    server.create_user("bob", PW, "user").await;
    server.create_user("svc", PW, "service").await;
    server
        .execute_sql_as(
            "svc",
            PW,
            "EXECUTE AS USER 'alice' (INSERT INTO default.t VALUES (1, 'for alice'))",
        )
        .await
        .expect_success();
    let alice = server
        .execute_sql_as("alice", PW, "SELECT v FROM default.t")
        .await;
    assert_eq!(alice.rows(), vec![vec![json!("for alice")]]);
    for user in ["bob", "svc"] {
        let rows = server
            .execute_sql_as(user, PW, "SELECT count(*) FROM default.t")
            .await;
        assert_eq!(rows.rows(), vec![vec![json!(0)]], "{user}");
    }
    let read = server
        .execute_sql_as("svc", PW, "EXECUTE AS USER 'alice' (SELECT id, v FROM default.t)")
        .await;
    assert_eq!(read.rows(), vec![vec![json!(1), json!("for alice")]]);
    server
        .execute_sql_as("alice", PW, "EXECUTE AS USER 'bob' (SELECT * FROM default.t)")
        .await
        .expect_error(403, "PERMISSION_DENIED");
    server
        .execute_sql_as("svc", PW, "EXECUTE AS USER 'nobody' (SELECT 1)")
        .await
        .expect_error(404, "USER_NOT_FOUND");
    server
        .execute_sql_as(
            "svc",
            PW,
            "EXECUTE AS USER 'alice' (EXECUTE AS USER 'bob' (SELECT 1))",
        )
        .await
        .expect_error(400, "INVALID_SQL");
    // The statement runs with alice's role too: no DDL through a user.
    server
        .execute_sql("EXECUTE AS USER 'alice' (CREATE NAMESPACE sneaky)")
        .await
        .expect_error(403, "PERMISSION_DENIED");
}

#[tokio::test]
async fn request_limits_answer_clear_errors() {
    let server = TestServer::start_configured(|s| {
        s.max_sql_bytes = 200;
        s.max_statements = 3;
        s.max_insert_rows = 5;
    })
    .await;
    let long = format!("SELECT '{}'", "x".repeat(300));
    server
        .execute_sql(&long)
        .await
        .expect_error(413, "PAYLOAD_TOO_LARGE");
    server
        .execute_sql("SELECT 1; SELECT 2; SELECT 3; SELECT 4")
        .await
        .expect_error(400, "INVALID_REQUEST");
    server
        .execute_sql("SELECT 1; SELECT 2; SELECT 3")
        .await
        .expect_success();
    server
        .execute_sql("CREATE TABLE default.t (a INT)")
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO default.t VALUES (1),(2),(3),(4),(5),(6)")
        .await
        .expect_error(400, "INVALID_PARAMETER");
    let count = server.execute_sql("SELECT count(*) FROM default.t").await;
    assert_eq!(count.rows(), vec![vec![json!(0)]]);
}

#[tokio::test]
async fn repeated_failed_logins_are_refused_for_a_while() {
    let server = TestServer::start_configured(|s| {
        s.login_max_failures = 3;
        s.login_lockout_seconds = 2;
    })
    .await;
    server.create_user("alice", PW, "user").await;
    for _ in 0..3 {
        server
            .execute_sql_as("alice", "wrong", "SELECT 1")
            .await
            .expect_error(401, "UNAUTHORIZED");
    }
    // Locked out: even the right password, and /auth/login, wait.
    server
        .execute_sql_as("alice", PW, "SELECT 1")
        .await
        .expect_error(429, "TOO_MANY_REQUESTS");
    assert_eq!(login(&server, "alice", PW).await.0, 429);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    server
        .execute_sql_as("alice", PW, "SELECT 1")
        .await
        .expect_success();
}

#[tokio::test]
async fn a_configured_root_password_refuses_the_empty_one() {
    let server = TestServer::start_configured(|s| s.root_password = Some("rootpw".into())).await;
    server
        .execute_sql_as("root", "", "SELECT 1")
        .await
        .expect_error(401, "UNAUTHORIZED");
    server
        .execute_sql_as("root", "rootpw", "SELECT 1")
        .await
        .expect_success();
}

/// Three users share one USER table and one key space; random statements of every
/// form run as random users, flushes move rows to Parquet between rounds, and each
/// user's view always equals that user's own model, whatever the others did.
#[tokio::test]
async fn randomized_isolation_over_hot_and_cold_rows() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.items (id INT PRIMARY KEY, owner TEXT, n INT); \
             CREATE SHARED TABLE app.labels (n INT PRIMARY KEY, label TEXT) WITH (ACCESS_LEVEL = 'PUBLIC'); \
             INSERT INTO app.labels VALUES (0, 'zero'), (1, 'one'), (2, 'two')",
        )
        .await
        .expect_success();
    let users = ["alice", "bob", "carol"];
    for user in users {
        server.create_user(user, PW, "user").await;
    }
    let mut models: BTreeMap<&str, BTreeMap<i64, i64>> =
        users.iter().map(|u| (*u, BTreeMap::new())).collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..6 {
        for _ in 0..40 {
            let user = users[rng.below(3) as usize];
            let model = models.get_mut(user).unwrap();
            let id = rng.below(30) as i64;
            let n = rng.below(3) as i64;
            match rng.below(6) {
                0 | 1 => {
                    let response = server
                        .execute_sql_as(
                            user,
                            PW,
                            &format!("INSERT INTO app.items VALUES ({id}, '{user}', {n})"),
                        )
                        .await;
                    match model.entry(id) {
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            response.expect_success();
                            slot.insert(n);
                        }
                        std::collections::btree_map::Entry::Occupied(_) => {
                            response.expect_error(409, "DUPLICATE_KEY");
                            let message = response.body["error"]["message"].as_str().unwrap().to_string();
                            for other in users.iter().filter(|o| **o != user) {
                                assert!(
                                    !message.contains(other),
                                    "an error names no other user: {message}"
                                );
                            }
                        }
                    }
                }
                2 => {
                    let response = server
                        .execute_sql_as(
                            user,
                            PW,
                            &format!("UPDATE app.items SET n = {n} WHERE id >= {id}"),
                        )
                        .await;
                    response.expect_success();
                    let mut changed = 0;
                    for (_, value) in model.range_mut(id..) {
                        *value = n;
                        changed += 1;
                    }
                    assert_eq!(response.row_count(0), changed, "{user} updates only its own rows");
                }
                3 => {
                    let response = server
                        .execute_sql_as(
                            user,
                            PW,
                            &format!("DELETE FROM app.items WHERE id = {id} OR n = {n}"),
                        )
                        .await;
                    response.expect_success();
                    let before = model.len();
                    model.retain(|k, v| *k != id && *v != n);
                    assert_eq!(
                        response.row_count(0),
                        (before - model.len()) as u64,
                        "{user} deletes only its own rows"
                    );
                }
                4 => {
                    let response = server
                        .execute_sql_as(
                            user,
                            PW,
                            &format!("INSERT INTO app.items VALUES ({id}, '{user}', {n}) ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n"),
                        )
                        .await;
                    response.expect_success();
                    model.insert(id, n);
                }
                _ => {
                    let response = server
                        .execute_sql_as(
                            user,
                            PW,
                            "SELECT i.id, l.label, i._seq > 0, i._deleted FROM app.items i JOIN app.labels l ON i.n = l.n \
                             WHERE i.id IN (SELECT id FROM app.items WHERE owner = CURRENT_USER()) ORDER BY i.id",
                        )
                        .await;
                    let expected: Vec<Vec<Value>> = model
                        .iter()
                        .map(|(id, n)| {
                            vec![
                                json!(id),
                                json!(["zero", "one", "two"][*n as usize]),
                                json!(true),
                                json!(false),
                            ]
                        })
                        .collect();
                    assert_eq!(
                        response.rows(),
                        expected,
                        "{user}: join, subquery, hidden columns"
                    );
                }
            }
        }
        for user in users {
            let model = &models[user];
            let response = server
                .execute_sql_as(user, PW, "SELECT id, owner, n FROM app.items ORDER BY id")
                .await;
            let expected: Vec<Vec<Value>> = model
                .iter()
                .map(|(id, n)| vec![json!(id), json!(user), json!(n)])
                .collect();
            assert_eq!(
                response.rows(),
                expected,
                "round {round}: {user} sees exactly its rows"
            );
            let stats = server
                .execute_sql_as(
                    user,
                    PW,
                    "SELECT count(*), count(DISTINCT owner), coalesce(sum(n), 0) FROM app.items",
                )
                .await;
            let owners = if model.is_empty() { 0 } else { 1 };
            assert_eq!(
                stats.rows(),
                vec![vec![
                    json!(model.len()),
                    json!(owners),
                    json!(model.values().sum::<i64>())
                ]],
                "round {round}: {user}'s aggregates"
            );
        }
        if round % 2 == 1 {
            server.flush_and_wait("app.items").await;
        }
    }
}

/// `POST /sql` as the password-less root with extra headers (`Host`, `Origin`).
async fn root_with_headers(server: &TestServer, headers: &[(&str, &str)]) -> u16 {
    let mut request = server
        .client()
        .post(server.url("/sql"))
        .basic_auth("root", Some(""))
        .body("SELECT 1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("an answer").status().as_u16()
}

/// No ambient authority for web pages: the password-less loopback root is refused
/// to a request a browser sent (an `Origin` header, on `/sql`, `/ingest` and the
/// `/ws` upgrade and first message) and to one whose `Host` does not name this
/// server (DNS rebinding); `allowed_origins` shuts other origins out entirely.
/// Users with passwords, and clients that send no Origin, are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_never_get_the_passwordless_root() {
    use crate::common::live::{Ended, LiveClient, basic};
    let server = TestServer::start().await;
    server.create_user("alice", "alice-pw", "user").await;
    let port = server.url("").rsplit(':').next().unwrap().to_string();
    let own = format!("127.0.0.1:{port}");
    let local = format!("localhost:{port}");
    let rebound = format!("evil.example:{port}");
    assert_eq!(root_with_headers(&server, &[]).await, 200);
    assert_eq!(root_with_headers(&server, &[("host", &own)]).await, 200);
    assert_eq!(root_with_headers(&server, &[("host", &local)]).await, 200);
    assert_eq!(root_with_headers(&server, &[("host", &rebound)]).await, 401);
    assert_eq!(
        root_with_headers(&server, &[("origin", "http://evil.example")]).await,
        401
    );
    let ingest = server
        .client()
        .post(server.url("/ingest/default/nothing"))
        .basic_auth("root", Some(""))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-ndjson")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status().as_u16(), 401);
    // A browser app that logs in with its own credentials keeps working.
    let alice = server
        .client()
        .post(server.url("/sql"))
        .basic_auth("alice", Some("alice-pw"))
        .header("origin", "http://evil.example")
        .body("SELECT CURRENT_USER()")
        .send()
        .await
        .unwrap();
    assert_eq!(alice.status().as_u16(), 200);

    // /ws: a page's socket carries its Origin on the upgrade.
    let ws = |auth: Option<String>| {
        let url = crate::common::live::ws_url(&server);
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("origin", "http://evil.example".parse().unwrap());
            if let Some(auth) = auth {
                request
                    .headers_mut()
                    .insert("authorization", auth.parse().unwrap());
            }
            tokio_tungstenite::connect_async(request).await
        }
    };
    match ws(Some(basic("root", ""))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401)
        }
        other => panic!(
            "the upgrade as root from a page was not refused: {:?}",
            other.is_ok()
        ),
    }
    let (socket, _) = ws(None).await.expect("an unauthenticated upgrade");
    let mut client = LiveClient::from_socket(socket);
    client
        .send(json!({"type": "authenticate", "username": "root", "password": ""}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["type"], "auth_error", "{answer}");
    assert!(matches!(client.closed().await, Ended::Close(1008, _)));
    let (socket, _) = ws(Some(basic("alice", "alice-pw")))
        .await
        .expect("alice's upgrade");
    let mut client = LiveClient::from_socket(socket);
    assert_eq!(client.recv().await["type"], "auth_success");

    // allowed_hosts and allowed_origins.
    let server = TestServer::start_configured(|s| {
        s.allowed_hosts = vec!["db.internal".into()];
        s.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    server.create_user("alice", "alice-pw", "user").await;
    assert_eq!(root_with_headers(&server, &[("host", "db.internal")]).await, 200);
    let from = |origin: &'static str| {
        server
            .client()
            .post(server.url("/sql"))
            .basic_auth("alice", Some("alice-pw"))
            .header("origin", origin)
            .body("SELECT 1")
            .send()
    };
    let refused = decode(from("http://evil.example").await.unwrap()).await;
    refused.expect_error(403, "PERMISSION_DENIED");
    assert_eq!(from("https://app.example").await.unwrap().status().as_u16(), 200);
    let mut request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        crate::common::live::ws_url(&server)
            .into_client_request()
            .unwrap()
    };
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403)
        }
        other => panic!("a page of another origin got a socket: {:?}", other.is_ok()),
    }
}

/// A password check in flight while the user's password changes (or the user is
/// dropped) must not put the old credentials back into the cache: after the change
/// the old password is refused at once, not `credential_cache_seconds` later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_change_is_never_undone_by_a_check_in_flight() {
    let server = std::sync::Arc::new(TestServer::start().await);
    for (user, change) in [
        ("bob", "ALTER USER 'bob' SET PASSWORD 'new'"),
        ("carl", "DROP USER 'carl'"),
    ] {
        server.create_user(user, "old", "user").await;
        server.db().holds().hold(&format!("credential_cache:{user}"));
        let check = {
            let server = server.clone();
            tokio::spawn(async move { server.execute_sql_as(user, "old", "SELECT 1").await })
        };
        server.wait_at_hold(&format!("credential_cache:{user}")).await;
        server.execute_sql(change).await.expect_success();
        server.db().holds().release(&format!("credential_cache:{user}"));
        // The check began before the change: it may succeed.
        check.await.unwrap();
        server
            .execute_sql_as(user, "old", "SELECT 1")
            .await
            .expect_error(401, "UNAUTHORIZED");
    }
    server
        .execute_sql_as("bob", "new", "SELECT 1")
        .await
        .expect_success();
}
