//! Bad input gets its error code, and the server keeps serving.

use serde_json::json;

use crate::common::{SqlResponse, TestServer, decode};

#[track_caller]
fn check(response: &SqlResponse, status: u16, code: &str) {
    response.expect_error(status, code);
    assert!(
        !response.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_code_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    server
        .execute_sql("CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY, n SMALLINT, at TIMESTAMP, doc JSON)")
        .await
        .expect_success();

    check(
        &server
            .post_raw(Some("application/json"), b"{not json".to_vec())
            .await,
        400,
        "INVALID_REQUEST",
    );
    check(
        &server
            .post_raw(Some("application/json"), br#"{"sql": 42}"#.to_vec())
            .await,
        400,
        "INVALID_REQUEST",
    );
    check(
        &server
            .post_raw(Some("application/json"), br#"{"params": []}"#.to_vec())
            .await,
        400,
        "INVALID_REQUEST",
    );
    // Valid JSON that is not an object is no request (serde alone would read an
    // array as the fields in order and run it).
    for body in [r#"["SELECT 1"]"#, r#""SELECT 1""#, "42", "true", "null"] {
        check(
            &server
                .post_raw(Some("application/json"), body.as_bytes().to_vec())
                .await,
            400,
            "INVALID_PARAMETER",
        );
    }
    check(
        &server.post_raw(Some("text/plain"), vec![0xff, 0xfe]).await,
        400,
        "INVALID_REQUEST",
    );
    check(&server.execute_sql("").await, 400, "EMPTY_SQL");
    check(
        &server.execute_sql(" ;; -- only a comment").await,
        400,
        "EMPTY_SQL",
    );
    check(
        &server.execute_sql("SELEC * FROM nowhere").await,
        400,
        "INVALID_SQL",
    );
    check(
        &server.execute_sql("💥 DROP EVERYTHING '").await,
        400,
        "INVALID_SQL",
    );
    check(
        &server.execute_sql("SELECT * FROM app.nope").await,
        404,
        "TABLE_NOT_FOUND",
    );
    check(
        &server.execute_sql("SELECT * FROM nope.t").await,
        404,
        "NAMESPACE_NOT_FOUND",
    );
    check(
        &server.execute_sql("INSERT INTO nope.t VALUES (1)").await,
        404,
        "NAMESPACE_NOT_FOUND",
    );
    check(
        &server.execute_sql("DROP TABLE app.nope").await,
        404,
        "TABLE_NOT_FOUND",
    );
    check(
        &server
            .execute_sql("INSERT INTO app.t (id, n) VALUES (1, 'abc')")
            .await,
        400,
        "TYPE_MISMATCH",
    );
    check(
        &server
            .execute_sql("INSERT INTO app.t (id, n) VALUES (1, 70000)")
            .await,
        400,
        "TYPE_MISMATCH",
    );
    check(
        &server
            .execute_sql("INSERT INTO app.t (id, at) VALUES (1, 'not a time')")
            .await,
        400,
        "TYPE_MISMATCH",
    );
    check(
        &server
            .execute_sql("INSERT INTO app.t (id, doc) VALUES (1, '{broken')")
            .await,
        400,
        "TYPE_MISMATCH",
    );
    check(
        &server
            .execute_sql("INSERT INTO app.t (id, nope) VALUES (1, 2)")
            .await,
        400,
        "COLUMN_NOT_FOUND",
    );
    check(
        &server.execute_sql("SELECT nope FROM app.t").await,
        400,
        "COLUMN_NOT_FOUND",
    );
    check(
        &server
            .execute_sql("INSERT INTO app.t VALUES (1, 2, 3, 4, 5)")
            .await,
        400,
        "INVALID_SQL",
    );
    check(
        &server.execute_sql("CREATE NAMESPACE app").await,
        409,
        "ALREADY_EXISTS",
    );
    check(
        &server.execute_sql("CREATE NAMESPACE system").await,
        400,
        "INVALID_SQL",
    );
    check(
        &server.execute_sql("CREATE NAMESPACE \"bad-name\"").await,
        400,
        "INVALID_SQL",
    );
    check(
        &server.execute_sql("DROP NAMESPACE app").await,
        409,
        "NAMESPACE_NOT_EMPTY",
    );
    check(
        &server.execute_sql("CREATE MATERIALIZED VIEW v AS SELECT 1").await,
        400,
        "UNSUPPORTED",
    );
    check(
        &server.execute_sql("INSERT INTO system.users VALUES (1)").await,
        403,
        "PERMISSION_DENIED",
    );
    check(&server.execute_sql("SELECT 1/0").await, 400, "INVALID_SQL");

    // Oversized body: above the 10 MiB default.
    // Its own client: the server answers before reading the whole body and closes that
    // connection, which must not be reused by the requests that follow.
    let huge = format!("SELECT '{}'", "x".repeat(11 * 1024 * 1024));
    let oversized = reqwest::Client::new()
        .post(server.url("/sql"))
        .basic_auth("root", Some(""))
        .header("content-type", "text/plain")
        .body(huge)
        .send()
        .await
        .unwrap();
    check(&decode(oversized).await, 413, "PAYLOAD_TOO_LARGE");

    // Authentication failures.
    let no_auth = server
        .client()
        .post(server.url("/sql"))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    check(&decode(no_auth).await, 401, "UNAUTHORIZED");
    check(
        &server.execute_sql_as("root", "wrong", "SELECT 1").await,
        401,
        "UNAUTHORIZED",
    );
    check(
        &server.execute_sql_as("nobody", "x", "SELECT 1").await,
        401,
        "UNAUTHORIZED",
    );

    // Unknown JSON fields are ignored.
    server
        .post_json_as("root", "", json!({"sql": "SELECT 1", "colour": "blue"}))
        .await
        .expect_success();
    // Still serving, nothing was written by the failures.
    let count = server.execute_sql("SELECT count(*) FROM app.t").await;
    assert_eq!(count.rows(), vec![vec![json!(0)]]);
}
