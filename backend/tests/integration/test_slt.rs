//! sqllogictest files (`backend/tests/slt/*.slt`), each run over HTTP against its own
//! fresh TestServer as `root`.
//!
//! Errors read `CODE: message`, so `statement error TABLE_NOT_FOUND` matches a code.
//! Values print as: NULL, true/false, numbers as JSON prints them, text as is
//! (`(empty)` for ''), JSON documents compactly. Values of a `job_id` column print
//! as `<job_id>` (ids differ on every run).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Value, json};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

use crate::common::TestServer;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqlError(String);

struct HttpDb {
    client: reqwest::Client,
    url: String,
}

#[async_trait]
impl AsyncDB for HttpDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let response = self
            .client
            .post(&self.url)
            .basic_auth("root", Some(""))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .map_err(|e| SqlError(format!("HTTP: {e}")))?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .map_err(|e| SqlError(format!("body: {e}")))?;
        if body["status"] != "success" {
            let code = body["error"]["code"].as_str().unwrap_or("?");
            // The HTTP status must follow the code (docs/API.md), whatever the file
            // expects of the code itself.
            if Some(status) != http_status_of(code) {
                return Err(SqlError(format!(
                    "HTTP status {status} does not match the error code {code}: {body}"
                )));
            }
            return Err(SqlError(format!(
                "{}: {}",
                body["error"]["code"].as_str().unwrap_or("?"),
                body["error"]["message"].as_str().unwrap_or("?")
            )));
        }
        let result = body["results"]
            .as_array()
            .and_then(|r| r.last())
            .cloned()
            .unwrap_or(Value::Null);
        let columns = result["columns"].as_array().cloned().unwrap_or_default();
        if columns.is_empty() {
            return Ok(DBOutput::StatementComplete(
                result["row_count"].as_u64().unwrap_or(0),
            ));
        }
        let types = columns
            .iter()
            .map(|c| column_type(c["data_type"].as_str().unwrap_or("")))
            .collect();
        let masked: Vec<bool> = columns.iter().map(|c| c["name"] == "job_id").collect();
        let rows = result["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|row| {
                row.as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .zip(&masked)
                    .map(|(value, masked)| match (value, masked) {
                        (Value::String(_), true) => "<job_id>".to_string(),
                        _ => cell(value),
                    })
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "kalamdb"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The contract's HTTP status of each error code.
fn http_status_of(code: &str) -> Option<u16> {
    Some(match code {
        "INVALID_SQL"
        | "INVALID_PARAMETER"
        | "INVALID_REQUEST"
        | "TYPE_MISMATCH"
        | "NOT_NULL_VIOLATION"
        | "UNSUPPORTED"
        | "COLUMN_NOT_FOUND"
        | "EMPTY_SQL"
        | "RESOURCES_EXHAUSTED"
        | "STATEMENT_TIMEOUT" => 400,
        "UNAUTHORIZED" => 401,
        "PERMISSION_DENIED" => 403,
        "NAMESPACE_NOT_FOUND"
        | "TABLE_NOT_FOUND"
        | "INDEX_NOT_FOUND"
        | "JOB_NOT_FOUND"
        | "USER_NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "DUPLICATE_KEY" | "NAMESPACE_NOT_EMPTY" | "FLUSH_IN_PROGRESS" => 409,
        "PAYLOAD_TOO_LARGE" => 413,
        "TOO_MANY_REQUESTS" => 429,
        "INTERNAL_ERROR" => 500,
        _ => return None,
    })
}

fn column_type(data_type: &str) -> DefaultColumnType {
    match data_type {
        "SmallInt" | "Int" | "BigInt" => DefaultColumnType::Integer,
        t if t == "Float" || t == "Double" || t.starts_with("Decimal") => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_pass() {
    let files = slt_files();
    assert!(files.len() >= 5, "expected the slt files, found {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let server = TestServer::start().await;
        let url = server.url("/sql");
        let mut runner = Runner::new(move || {
            let url = url.clone();
            async move {
                Ok(HttpDb {
                    client: reqwest::Client::new(),
                    url,
                })
            }
        });
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{}", file.display(), e.display(true)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
