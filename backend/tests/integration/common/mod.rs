//! `TestServer`: the real server (the binary's own start-up code, real RocksDB, real
//! HTTP on 127.0.0.1:0) on a temporary data directory, and helpers to talk to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kalamdb_server::{RunningServer, Settings, start};
use serde_json::{Value, json};

pub mod live;
pub mod s3;

pub struct TestServer {
    server: Option<RunningServer>,
    settings: Settings,
    base_url: String,
    client: reqwest::Client,
    _data_dir: Option<tempfile::TempDir>,
}

/// A decoded `/sql` answer.
#[derive(Debug, Clone)]
pub struct SqlResponse {
    pub http_status: u16,
    pub body: Value,
}

impl SqlResponse {
    pub fn is_success(&self) -> bool {
        self.http_status == 200 && self.body["status"] == "success"
    }

    /// Panics with the whole answer unless it is a success.
    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        assert!(
            self.is_success(),
            "expected success, got {} {}",
            self.http_status,
            self.body
        );
        self
    }

    /// The error code, or `None` for a success.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// Panics unless the answer is the error `code` with HTTP `status`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.http_status, self.error_code()),
            (status, Some(code)),
            "unexpected answer: {}",
            self.body
        );
        self
    }

    /// Rows of the last statement's result. Panics on an error answer: an error has
    /// no rows, and an empty list must never pass for a result.
    #[track_caller]
    pub fn rows(&self) -> Vec<Vec<Value>> {
        self.expect_success();
        let results = (self.body["results"].as_array())
            .unwrap_or_else(|| panic!("an answer without a results array: {}", self.body));
        let last = (results.last()).unwrap_or_else(|| panic!("an answer without results: {}", self.body));
        serde_json::from_value(last["rows"].clone())
            .unwrap_or_else(|e| panic!("malformed rows ({e}): {}", self.body))
    }

    pub fn row_count(&self, statement: usize) -> u64 {
        self.body["results"][statement]["row_count"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }

    /// Column names of the last statement's result.
    pub fn column_names(&self) -> Vec<String> {
        let results = self.body["results"].as_array().cloned().unwrap_or_default();
        let last = results.last().cloned().unwrap_or(Value::Null);
        last["columns"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| c["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn test_settings(data_dir: &Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        shutdown_timeout_seconds: 10,
        rocksdb_write_buffer_mb: 8,
        ..Settings::default()
    }
}

impl TestServer {
    /// Starts a server on a fresh temporary data directory.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = test_settings(dir.path());
        let mut server = Self::start_with(settings).await;
        server._data_dir = Some(dir);
        server
    }

    /// Starts a server on a fresh temporary data directory with adjusted settings.
    pub async fn start_configured(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(dir.path());
        adjust(&mut settings);
        let mut server = Self::start_with(settings).await;
        server._data_dir = Some(dir);
        server
    }

    /// Starts a server with these settings (the data directory is the caller's).
    pub async fn start_with(settings: Settings) -> TestServer {
        let server = start(&settings).await.expect("server starts");
        let base_url = format!("http://{}", server.local_addr());
        TestServer {
            server: Some(server),
            settings,
            base_url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            _data_dir: None,
        }
    }

    /// The running server's database (its pause points, `holds()`).
    pub fn db(&self) -> &kalamdb_core::KalamDb {
        self.server.as_ref().expect("the server is running").db()
    }

    /// Waits (up to 60 s) until background work has stopped at the held `step`.
    pub async fn wait_at_hold(&self, step: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.db().holds().arrivals(step) == 0 {
            assert!(std::time::Instant::now() < deadline, "nothing reached {step}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await;
        response
            .expect("/metrics answers")
            .text()
            .await
            .expect("a text body")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Stops the server and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let server = start(&self.settings).await.expect("server restarts");
        self.base_url = format!("http://{}", server.local_addr());
        self.server = Some(server);
    }

    /// Stops the server and starts it again on the same data directory with
    /// adjusted settings (kept for later restarts).
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Settings)) {
        adjust(&mut self.settings);
        self.restart().await;
    }

    /// Runs SQL as `root` (empty password, accepted from loopback).
    pub async fn execute_sql(&self, sql: &str) -> SqlResponse {
        self.execute_sql_as("root", "", sql).await
    }

    pub async fn execute_sql_as(&self, user: &str, password: &str, sql: &str) -> SqlResponse {
        self.post_json_as(user, password, json!({ "sql": sql })).await
    }

    /// The body of `POST /sql?<query>` with `sql` as text (a streamed format).
    pub async fn sql_text_as(&self, user: &str, password: &str, query: &str, sql: &str) -> String {
        self.client
            .post(self.url(&format!("/sql?{query}")))
            .basic_auth(user, Some(password))
            .body(sql.to_string())
            .send()
            .await
            .expect("an answer")
            .text()
            .await
            .expect("a text body")
    }

    pub async fn post_json_as(&self, user: &str, password: &str, body: Value) -> SqlResponse {
        let response = self
            .client
            .post(self.url("/sql"))
            .basic_auth(user, Some(password))
            .json(&body)
            .send()
            .await
            .expect("request is answered");
        decode(response).await
    }

    /// `POST /ingest/<table path>` (`ns/table`) with a body of `content_type`.
    pub async fn ingest_as(
        &self,
        user: &str,
        password: &str,
        table: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> SqlResponse {
        post_body(
            &self.client,
            &self.url(&format!("/ingest/{table}")),
            (user, password),
            content_type,
            body,
        )
        .await
    }

    /// Sends raw bytes with a content type, as root.
    pub async fn post_raw(&self, content_type: Option<&str>, body: Vec<u8>) -> SqlResponse {
        let mut request = self
            .client
            .post(self.url("/sql"))
            .basic_auth("root", Some(""))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        decode(request.send().await.expect("request is answered")).await
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }

    /// `STORAGE FLUSH TABLE` as root; returns the job id (panics on an error).
    pub async fn flush_table(&self, table: &str) -> String {
        let response = self.execute_sql(&format!("STORAGE FLUSH TABLE {table}")).await;
        response.expect_success();
        response.rows()[0][0].as_str().expect("job_id").to_string()
    }

    /// The job's row of `system.jobs` as a JSON object (column name → value).
    pub async fn job(&self, job_id: &str) -> Value {
        let response = self
            .execute_sql(&format!("SELECT * FROM system.jobs WHERE job_id = '{job_id}'"))
            .await;
        response.expect_success();
        let rows = response.rows();
        assert_eq!(
            rows.len(),
            1,
            "job {job_id} not in system.jobs: {}",
            response.body
        );
        let object: serde_json::Map<String, Value> = response
            .column_names()
            .into_iter()
            .zip(rows[0].iter().cloned())
            .collect();
        Value::Object(object)
    }

    /// Waits (up to 60 s) until the job is `completed`, `failed` or `cancelled`;
    /// returns its row.
    pub async fn wait_for_job(&self, job_id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(job_id).await;
            if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {job_id} did not finish: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Flushes and waits; panics unless the job completed. Returns its row.
    pub async fn flush_and_wait(&self, table: &str) -> Value {
        let job_id = self.flush_table(table).await;
        let job = self.wait_for_job(&job_id).await;
        assert_eq!(
            job["status"], "completed",
            "flush of {table} did not complete: {job}"
        );
        job
    }

    pub async fn create_user(&self, name: &str, password: &str, role: &str) {
        self.execute_sql(&format!(
            "CREATE USER '{name}' WITH PASSWORD '{password}' ROLE {role}"
        ))
        .await
        .expect_success();
    }
}

/// `POST url` with a body of `content_type`, as `(user, password)`.
async fn post_body(
    client: &reqwest::Client,
    url: &str,
    (user, password): (&str, &str),
    content_type: &str,
    body: Vec<u8>,
) -> SqlResponse {
    let response = client
        .post(url)
        .basic_auth(user, Some(password))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request is answered");
    decode(response).await
}

pub async fn decode(response: reqwest::Response) -> SqlResponse {
    let http_status = response.status().as_u16();
    let text = response.text().await.expect("body is readable");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({http_status}): {text}"));
    SqlResponse { http_status, body }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A server that was not shut down is dropped with the runtime; its RocksDB lock
        // goes with the process of the test.
        self.server.take();
    }
}

/// The real `kalamdb-server` binary in its own process (for crash tests).
pub struct ServerProcess {
    child: Child,
    base_url: String,
}

impl ServerProcess {
    /// Starts the binary on `data_dir` and waits for its "listening on" line.
    pub fn spawn(data_dir: &Path) -> ServerProcess {
        Self::spawn_with_env(data_dir, &[])
    }

    /// Starts the binary with extra environment variables.
    pub fn spawn_with_env(data_dir: &Path, env: &[(&str, &str)]) -> ServerProcess {
        Self::spawn_with(data_dir, &[], env)
    }

    /// Starts the binary with extra flags and environment variables.
    pub fn spawn_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kalamdb-server"));
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the server binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("a first line");
        let base_url = line
            .trim()
            .strip_prefix("KalamDB listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        ServerProcess { child, base_url }
    }

    pub async fn sql(&self, sql: &str) -> SqlResponse {
        self.sql_as("root", "", sql).await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub async fn sql_as(&self, user: &str, password: &str, sql: &str) -> SqlResponse {
        let response = reqwest::Client::new()
            .post(format!("{}/sql", self.base_url))
            .basic_auth(user, Some(password))
            .body(sql.to_string())
            .send()
            .await
            .expect("request is answered");
        decode(response).await
    }

    /// The process id (for `/proc/<pid>`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's memory now and at its peak since [`ServerProcess::reset_peak`].
    pub fn memory(&self) -> Memory {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/<pid>/status");
        let kib = |name: &str| -> u64 {
            (status.lines())
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
        };
        Memory {
            rss_mib: kib("VmRSS:") / 1024,
            peak_mib: kib("VmHWM:") / 1024,
        }
    }

    /// Starts measuring the peak anew (the kernel's high-water mark).
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("clear_refs");
    }

    /// Threads of the server process.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("/proc/<pid>/task")
            .count()
    }

    /// `POST <path>` with a body of `content_type` as `user`.
    pub async fn post_as(
        &self,
        path: &str,
        user: &str,
        password: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> SqlResponse {
        let url = format!("{}{path}", self.base_url);
        post_body(
            &reqwest::Client::new(),
            &url,
            (user, password),
            content_type,
            body,
        )
        .await
    }

    /// SIGTERM: asks for a graceful shutdown.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Waits (up to `timeout`) for the process to exit on its own; panics (and
    /// kills it) if it does not.
    pub async fn wait_for_exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("process status") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    /// A test that fails half-way must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server process's resident memory, MiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_mib: u64,
    pub peak_mib: u64,
}

/// A tiny deterministic generator (xorshift), so randomized tests reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`, uniformly.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[test]
#[should_panic(expected = "malformed rows")]
fn rows_refuses_a_malformed_rows_field() {
    let answer = SqlResponse {
        http_status: 200,
        body: json!({"status": "success", "results": [{"rows": {"a": 1}}]}),
    };
    answer.rows();
}

/// The current manifest of a scope's directory in a local storage: the highest
/// `manifest-<v>.json` there (docs/storage-format.md, "Object layout").
pub fn current_manifest(scope_dir: &Path) -> Option<std::path::PathBuf> {
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir(scope_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("manifest-") && name.ends_with(".json")
        })
        .collect();
    versions.sort();
    versions.pop()
}

/// The current manifest of a scope's directory, parsed.
pub fn read_manifest(scope_dir: &Path) -> serde_json::Value {
    let path =
        current_manifest(scope_dir).unwrap_or_else(|| panic!("no manifest in {}", scope_dir.display()));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}
