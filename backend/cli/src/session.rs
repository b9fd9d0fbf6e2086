//! Running what the user typed: SQL statements (one request each) and backslash
//! commands, in the shell and in scripts alike.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kalamdb_commons::split::{is_blank, split_terminated};
use serde_json::Value;

use crate::client::{Client, Failure, StatementResult};
use crate::render::{self, OutputFormat};

/// How a run of input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every statement and command succeeded.
    Done,
    /// `\q`.
    Quit,
    /// A statement or command failed (exit status 1).
    Failed,
    /// The server cannot be reached or refused the credentials (exit status 2).
    Disconnected,
}

/// Names the shell completes, read from `system.*`.
#[derive(Debug, Default)]
pub struct Names {
    pub namespaces: BTreeSet<String>,
    /// `(namespace, table)`.
    pub tables: BTreeSet<(String, String)>,
    /// `(namespace, table, column)`.
    pub columns: BTreeSet<(String, String, String)>,
}

/// One connection's state: the client, how results print, the names to complete.
pub struct Session {
    pub client: Client,
    pub format: OutputFormat,
    pub timing: bool,
    /// Ctrl-C cancels the running request (instead of ending the program).
    pub interactive: bool,
    pub names: Arc<Mutex<Names>>,
}

const HELP: &str = "\
SQL statements end with ';' and may span lines. Backslash commands:
  \\dn                  list namespaces
  \\dt [NAMESPACE]      list tables
  \\d NAMESPACE.TABLE   describe a table
  \\du                  list users
  \\jobs                recent jobs (flushes)
  \\flush NS.TABLE|all  flush to Parquet and follow the jobs to the end
  \\as USER STATEMENT   run a statement as another user (EXECUTE AS USER)
  \\watch SELECT ...    print a query's rows, then each change as it commits
  \\format table|json|ndjson|csv
  \\timing [on|off]     show how long each statement took
  \\help                this text
  \\q                   quit (or Ctrl-D)
Ctrl-C cancels the input being typed or the statement running.";

impl Session {
    pub fn new(client: Client, format: OutputFormat, interactive: bool) -> Session {
        Session {
            client,
            format,
            timing: true,
            interactive,
            names: Arc::default(),
        }
    }

    /// Runs a script: statements ended by `;` (the last may omit it) and
    /// backslash commands on lines of their own, stopping at the first failure.
    pub async fn run_script(&mut self, text: &str) -> Outcome {
        let mut pending = String::new();
        for line in text.lines() {
            if is_blank(&pending) && line.trim_start().starts_with('\\') {
                pending.clear();
                match self.command(line.trim()).await {
                    Outcome::Done => continue,
                    other => return other,
                }
            }
            pending.push_str(line);
            pending.push('\n');
            let (statements, rest) = split_terminated(&pending);
            let statements: Vec<String> = statements.into_iter().map(String::from).collect();
            pending = rest.to_string();
            for statement in statements {
                match self.statement(&statement).await {
                    Outcome::Done => {}
                    other => return other,
                }
            }
        }
        if is_blank(&pending) {
            Outcome::Done
        } else {
            self.statement(pending.trim()).await
        }
    }

    /// Runs one SQL statement and prints its result or its error.
    pub async fn statement(&mut self, sql: &str) -> Outcome {
        let started = Instant::now();
        match self.request(sql).await {
            Ok(results) => {
                let elapsed = self.timing.then(|| started.elapsed());
                self.print(&results, elapsed);
                if self.interactive && changes_names(sql) {
                    let _ = self.load_names().await;
                }
                Outcome::Done
            }
            Err(failure) => self.failed(&failure),
        }
    }

    fn print(&self, results: &[StatementResult], elapsed: Option<Duration>) {
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        let (mut out, mut notes) = (stdout.lock(), stderr.lock());
        for result in results {
            // A closed stdout (`kalam ... | head`) is not an error worth a message.
            let _ = render::print_result(result, self.format, elapsed, &mut out, &mut notes);
        }
        let _ = out.flush();
    }

    /// Prints the failure on stderr and says how the run goes on.
    fn failed(&self, failure: &Failure) -> Outcome {
        eprintln!("{}", failure.describe(self.client.auth()));
        if failure.is_connection_failure() {
            Outcome::Disconnected
        } else {
            Outcome::Failed
        }
    }

    /// `POST /sql`; in the shell, Ctrl-C stops waiting for the answer.
    async fn request(&self, sql: &str) -> Result<Vec<StatementResult>, Failure> {
        if !self.interactive {
            return self.client.sql(sql).await;
        }
        tokio::select! {
            answer = self.client.sql(sql) => answer,
            _ = tokio::signal::ctrl_c() => Err(Failure::Cancelled),
        }
    }

    /// Reads namespaces, tables and columns for completion.
    pub async fn load_names(&self) -> Result<(), Failure> {
        let results = self
            .client
            .sql("SELECT name FROM system.namespaces; SELECT namespace, table_name, column_name FROM system.columns")
            .await?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut names = Names::default();
        if let [namespaces, columns] = results.as_slice() {
            names.namespaces = namespaces.rows.iter().map(|r| text(&r[0])).collect();
            for row in &columns.rows {
                let (ns, table, column) = (text(&row[0]), text(&row[1]), text(&row[2]));
                names.tables.insert((ns.clone(), table.clone()));
                names.columns.insert((ns, table, column));
            }
        }
        *self.names.lock().expect("names lock") = names;
        Ok(())
    }

    /// A backslash command (`line` starts with `\`).
    pub async fn command(&mut self, line: &str) -> Outcome {
        let (name, arg) = match line.split_once(char::is_whitespace) {
            Some((name, arg)) => (name, arg.trim()),
            None => (line, ""),
        };
        let arg = arg.trim_end_matches(';').trim();
        match name {
            "\\q" | "\\quit" => Outcome::Quit,
            "\\?" | "\\h" | "\\help" => {
                println!("{HELP}");
                Outcome::Done
            }
            "\\dn" => self.statement("SHOW NAMESPACES").await,
            "\\dt" if arg.is_empty() => self.statement("SHOW TABLES").await,
            "\\dt" => self.statement(&format!("SHOW TABLES IN {arg}")).await,
            "\\d" if arg.is_empty() => usage("\\d needs a table: \\d namespace.table"),
            "\\d" => self.statement(&format!("DESCRIBE TABLE {arg}")).await,
            "\\du" => {
                self.statement("SELECT username, role, created_at FROM system.users ORDER BY username")
                    .await
            }
            "\\jobs" => {
                self.statement(
                    "SELECT job_id, job_type, status, namespace, table_name, rows_flushed, files_written, \
                     bytes_written, duration_ms, created_at FROM system.jobs ORDER BY created_at DESC LIMIT 20",
                )
                .await
            }
            "\\flush" => self.flush(arg).await,
            "\\as" => match arg.split_once(char::is_whitespace) {
                Some((user, statement)) if !statement.trim().is_empty() => {
                    let user = user.trim_matches('\'').replace('\'', "''");
                    let statement = statement.trim().trim_end_matches(';');
                    self.statement(&format!("EXECUTE AS USER '{user}' ({statement})"))
                        .await
                }
                _ => usage("\\as needs a user and a statement: \\as alice SELECT * FROM app.notes"),
            },
            "\\watch" if arg.is_empty() => usage("\\watch needs a query: \\watch SELECT * FROM app.messages"),
            "\\watch" => self.watch(arg).await,
            "\\format" if arg.is_empty() => {
                println!("format: {}", self.format.name());
                Outcome::Done
            }
            "\\format" => match OutputFormat::parse(arg) {
                Ok(format) => {
                    self.format = format;
                    println!("format: {}", format.name());
                    Outcome::Done
                }
                Err(message) => usage(&message),
            },
            "\\timing" => {
                self.timing = match arg.to_ascii_lowercase().as_str() {
                    "" => !self.timing,
                    "on" => true,
                    "off" => false,
                    _ => return usage("\\timing takes on or off"),
                };
                println!("timing is {}", if self.timing { "on" } else { "off" });
                Outcome::Done
            }
            other => usage(&format!("unknown command {other}: \\help lists the commands")),
        }
    }

    /// `\watch SELECT ...`: a live query. Prints the rows, then one line per changed
    /// row (`+` insert, `-` delete, `~` update with the old row), until Ctrl-C or the
    /// server ends it.
    async fn watch(&mut self, sql: &str) -> Outcome {
        let mut watch = match self.client.watch(sql).await {
            Ok(watch) => watch,
            Err(failure) => return self.failed(&failure),
        };
        let mut initial = StatementResult::default();
        let mut out = std::io::stdout();
        loop {
            let message = tokio::select! {
                message = watch.next() => message,
                _ = tokio::signal::ctrl_c() => return Outcome::Done,
            };
            let Some(message) = message else {
                eprintln!("the server closed the live query");
                return Outcome::Failed;
            };
            let text = |key: &str| message[key].as_str().unwrap_or_default().to_string();
            match text("type").as_str() {
                "subscribed" => {
                    initial.columns = serde_json::from_value(message["schema"].clone()).unwrap_or_default();
                }
                "initial_data" => {
                    let names: Vec<String> = initial.columns.iter().map(|c| c.name.clone()).collect();
                    for row in message["rows"].as_array().into_iter().flatten() {
                        initial.rows.push(names.iter().map(|n| row[n].clone()).collect());
                    }
                    if message["has_more"] == false {
                        self.print(std::slice::from_ref(&initial), None);
                        println!("watching for changes (Ctrl-C stops)");
                    }
                }
                "change" => {
                    let rows = |key: &str| message[key].as_array().cloned().unwrap_or_default();
                    let (new, old) = (rows("rows"), rows("old_rows"));
                    let lines: Vec<String> = match text("op").as_str() {
                        "insert" => new.iter().map(|r| format!("+ {r}")).collect(),
                        "delete" => old.iter().map(|r| format!("- {r}")).collect(),
                        _ => new
                            .iter()
                            .zip(&old)
                            .map(|(n, o)| format!("~ {o} -> {n}"))
                            .collect(),
                    };
                    for line in lines {
                        let _ = writeln!(out, "{line}");
                    }
                    let _ = out.flush();
                }
                "error" => {
                    eprintln!("ERROR {}: {}", text("code"), text("message"));
                    return Outcome::Failed;
                }
                _ => {}
            }
        }
    }

    /// `\flush ns.table | all`: starts the flush and follows its jobs to the end.
    async fn flush(&mut self, arg: &str) -> Outcome {
        let sql = match arg {
            "" => return usage("\\flush needs a table or all: \\flush app.messages"),
            all if all.eq_ignore_ascii_case("all") => "STORAGE FLUSH ALL".to_string(),
            table => format!("STORAGE FLUSH TABLE {table}"),
        };
        let results = match self.request(&sql).await {
            Ok(results) => results,
            Err(failure) => return self.failed(&failure),
        };
        let Some(started) = results.first() else {
            return Outcome::Done;
        };
        if let Some(message) = &started.message {
            println!("{message}");
        }
        let jobs: Vec<(String, String)> = started
            .rows
            .iter()
            .map(|row| {
                let text = |i: usize| row.get(i).and_then(Value::as_str).unwrap_or_default().to_string();
                (text(0), format!("{}.{}", text(1), text(2)))
            })
            .collect();
        if jobs.is_empty() {
            return Outcome::Done;
        }
        self.follow_jobs(&jobs).await
    }

    /// Progress bars for `jobs` (`(job_id, table)`) until each has ended; then one
    /// line per job with what it wrote.
    async fn follow_jobs(&mut self, jobs: &[(String, String)]) -> Outcome {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        let bar_of: Vec<ProgressBar> = jobs
            .iter()
            .map(|(_, table)| {
                let bar = bars.add(ProgressBar::new(1000));
                bar.set_style(style.clone());
                bar.set_prefix(table.clone());
                bar
            })
            .collect();
        let ids = jobs
            .iter()
            .map(|(id, _)| format!("'{}'", id.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT job_id, status, progress, rows_flushed, files_written, bytes_written, duration_ms, \
             error_message FROM system.jobs WHERE job_id IN ({ids})"
        );
        let mut finished: Vec<Option<Vec<Value>>> = vec![None; jobs.len()];
        while finished.iter().any(Option::is_none) {
            let rows = match self.request(&sql).await {
                Ok(results) => results.into_iter().next().unwrap_or_default().rows,
                Err(Failure::Cancelled) => {
                    bars.clear().ok();
                    println!("{STOPPED_FOLLOWING}");
                    return Outcome::Done;
                }
                Err(failure) => {
                    bars.clear().ok();
                    return self.failed(&failure);
                }
            };
            for row in rows {
                let Some(i) = jobs
                    .iter()
                    .position(|(id, _)| Some(id.as_str()) == row[0].as_str())
                else {
                    continue;
                };
                let status = row[1].as_str().unwrap_or_default();
                let progress = row[2].as_f64().unwrap_or(0.0);
                bar_of[i].set_position((progress.clamp(0.0, 1.0) * 1000.0) as u64);
                bar_of[i].set_message(format!("{status}, {} rows", row[3].as_u64().unwrap_or(0)));
                if matches!(status, "completed" | "failed" | "cancelled") && finished[i].is_none() {
                    bar_of[i].finish();
                    finished[i] = Some(row);
                }
            }
            if finished.iter().any(Option::is_none) {
                let pause = tokio::time::sleep(Duration::from_millis(200));
                if self.interactive {
                    tokio::select! {
                        _ = pause => {}
                        _ = tokio::signal::ctrl_c() => {
                            bars.clear().ok();
                            println!("{STOPPED_FOLLOWING}");
                            return Outcome::Done;
                        }
                    }
                } else {
                    pause.await;
                }
            }
        }
        bars.clear().ok();
        let mut outcome = Outcome::Done;
        for ((_, table), row) in jobs.iter().zip(finished.into_iter().flatten()) {
            let status = row[1].as_str().unwrap_or_default();
            let number = |i: usize| row[i].as_u64().unwrap_or(0);
            if status == "completed" {
                println!(
                    "{table}: completed, {} rows, {} file(s), {} in {}",
                    number(3),
                    number(4),
                    render::bytes(number(5)),
                    render::duration(Duration::from_millis(number(6)))
                );
            } else {
                outcome = Outcome::Failed;
                let error = row[7].as_str().unwrap_or("no error message");
                eprintln!("{table}: {status}: {error}");
            }
        }
        outcome
    }
}

/// What `\flush` says when Ctrl-C stops it following the jobs.
const STOPPED_FOLLOWING: &str = "stopped following; the jobs go on (\\jobs shows them)";

/// A usage mistake in a backslash command: a message, and the run counts as failed.
fn usage(message: &str) -> Outcome {
    eprintln!("{message}");
    Outcome::Failed
}

/// Whether a statement may change the names the shell completes.
fn changes_names(sql: &str) -> bool {
    let first = sql.split_whitespace().next().unwrap_or_default();
    ["CREATE", "DROP", "ALTER"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
}
