//! The `kalam` binary as a process against a real server: scripts (`-c`, `-f`,
//! stdin) with every output format and exit status, `kalam login`, and the
//! interactive shell through a pseudo-terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::common::TestServer;

/// The `kalam` binary of this build (`cargo test --workspace` builds it: the
/// `kalam-cli` crate has tests of its own).
fn kalam_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/integration-… → target/<profile>/kalam
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("the profile directory")
        .join("kalam");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p kalam-cli` (or run `cargo test --workspace`)",
        binary.display()
    );
    binary
}

/// `kalam` pointed at `server`, with a home directory of its own.
fn kalam(server: &TestServer, home: &Path) -> Command {
    let mut command = Command::new(kalam_binary());
    command
        .env("KALAM_URL", server.url(""))
        .env("KALAM_HOME", home)
        .env_remove("KALAM_USER")
        .env_remove("KALAM_PASSWORD")
        .env_remove("KALAM_TOKEN")
        .stdin(Stdio::null());
    command
}

/// Runs the command off the async workers (the server runs on them).
async fn output(mut command: Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("kalam runs");
    (
        status.code().expect("kalam exits with a status"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// Runs `kalam` with `input` on its stdin.
async fn with_stdin(mut command: Command, input: &str) -> (i32, String, String) {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = input.to_string();
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command.spawn().expect("kalam starts");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

async fn setup(server: &TestServer) {
    server
        .execute_sql(
            "CREATE NAMESPACE zoo; \
             CREATE SHARED TABLE zoo.animals (id INT PRIMARY KEY, name TEXT, legs INT, note TEXT); \
             INSERT INTO zoo.animals VALUES (1, 'ant', 6, 'small, \"busy\"'), (2, 'émeu', 2, NULL)",
        )
        .await
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_print_every_format_and_report_through_exit_status() {
    let server = TestServer::start().await;
    setup(&server).await;
    let home = tempfile::tempdir().unwrap();
    let query = "SELECT id, name, legs, note FROM zoo.animals ORDER BY id";

    // -c with the default table format: aligned, NULL shown, row count and time.
    let mut command = kalam(&server, home.path());
    command.args(["-c", query]);
    let (code, out, err) = output(command).await;
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let ant_line = out.lines().find(|l| l.contains("ant")).expect("a row line");
    assert!(ant_line.contains("small, \"busy\""), "{out}");
    let emu_line = out.lines().find(|l| l.contains("émeu")).expect("a row line");
    assert!(emu_line.contains("NULL"), "{out}");
    assert!(out.contains("(2 rows, "), "{out}");

    // Formats for programs: stdout holds the rows only.
    let run_format = |format: &'static str| {
        let mut command = kalam(&server, home.path());
        command.args(["--format", format, "-c", query]);
        output(command)
    };
    let (code, out, _) = run_format("json").await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!([
            {"id": 1, "name": "ant", "legs": 6, "note": "small, \"busy\""},
            {"id": 2, "name": "émeu", "legs": 2, "note": null}
        ])
    );
    let (_, out, _) = run_format("ndjson").await;
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["name"], "émeu");
    let (_, out, _) = run_format("csv").await;
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(reader.headers().unwrap(), vec!["id", "name", "legs", "note"]);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        records[0].iter().collect::<Vec<_>>(),
        vec!["1", "ant", "6", "small, \"busy\""]
    );
    assert_eq!(records[1].iter().collect::<Vec<_>>(), vec!["2", "émeu", "2", ""]);

    // -f: several statements over several lines, a backslash command, a comment;
    // a statement's message goes to stderr in the program formats.
    let script = home.path().join("script.sql");
    std::fs::write(
        &script,
        "-- add a row\nINSERT INTO zoo.animals\n  VALUES (3, 'cat', 4, 'a; b');\n\\dt zoo\nSELECT count(*) AS n\n  FROM zoo.animals",
    )
    .unwrap();
    let mut command = kalam(&server, home.path());
    command.args(["--format", "csv", "-f"]).arg(&script);
    let (code, out, err) = output(command).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Inserted 1 row(s)"), "{err}");
    assert!(out.contains("zoo,animals,shared"), "{out}");
    assert!(out.ends_with("n\n3\n"), "{out}");

    // stdin (not a terminal): the same as a file. The first error stops the run:
    // exit status 1, the error with its code on stderr, later statements not run.
    let (code, out, err) = with_stdin(
        kalam(&server, home.path()),
        "SELECT 1 AS one;\nSELECT * FROM zoo.missing;\nINSERT INTO zoo.animals VALUES (4, 'dog', 4, NULL);\n",
    )
    .await;
    assert_eq!(code, 1);
    assert!(out.contains("one"), "{out}");
    assert!(err.contains("ERROR TABLE_NOT_FOUND"), "{err}");
    let count = server.execute_sql("SELECT count(*) FROM zoo.animals").await;
    assert_eq!(count.rows(), vec![vec![json!(3)]], "the run stopped at the error");

    // Failures a user meets: one line each, no stack trace, and exit status 2.
    let mut command = kalam(&server, home.path());
    command.args(["--url", "http://127.0.0.1:9", "-c", "SELECT 1"]);
    let (code, _, err) = output(command).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    server.create_user("lena", "lena-pw", "user").await;
    let mut command = kalam(&server, home.path());
    command.args(["-u", "lena", "--password", "wrong", "-c", "SELECT 1"]);
    let (code, _, err) = output(command).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("ERROR UNAUTHORIZED") && err.contains("--password"),
        "{err}"
    );
    // A password on the command line is visible to other users: a warning. The
    // same password from KALAM_PASSWORD gets none.
    assert!(err.contains("warning: a password on the command line"), "{err}");
    let mut command = kalam(&server, home.path());
    command
        .env("KALAM_PASSWORD", "lena-pw")
        .args(["-u", "lena", "-c", "SELECT 1"]);
    let (code, _, err) = output(command).await;
    assert_eq!((code, err.as_str()), (0, ""));
    // A user without a password and no terminal to ask at.
    let mut command = kalam(&server, home.path());
    command.args(["-u", "lena", "-c", "SELECT 1"]);
    let (code, _, err) = output(command).await;
    assert_eq!(code, 2);
    assert!(err.contains("no password for 'lena'"), "{err}");
    let mut command = kalam(&server, home.path());
    command.args(["-c", "\\nonsense"]);
    let (code, _, err) = output(command).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown command \\nonsense"), "{err}");
    let mut command = kalam(&server, home.path());
    command.args(["--format", "xml", "-c", "SELECT 1"]);
    let (code, _, err) = output(command).await;
    assert_eq!(code, 2);
    assert!(err.contains("unknown format 'xml'"), "{err}");

    // The listing commands, and \format / \timing changing how later results print.
    let script = home.path().join("commands.sql");
    std::fs::write(
        &script,
        "\\dn\n\\du\n\\timing off\nSELECT 7 AS seven;\n\\format ndjson\nSELECT 8 AS eight;\n\\help\n",
    )
    .unwrap();
    let mut command = kalam(&server, home.path());
    command.arg("-f").arg(&script);
    let (code, out, err) = output(command).await;
    assert_eq!(code, 0, "{err}");
    let namespaces = out.lines().find(|l| l.contains("zoo")).expect("\\dn lists zoo");
    let cells: Vec<&str> = (namespaces.split(['│', '┆', '|']))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells, ["zoo", "1"], "one table in zoo: {namespaces}");
    assert!(
        out.contains("lena") && out.contains("root"),
        "\\du lists the users: {out}"
    );
    assert!(
        out.contains("timing is off") && out.contains("(1 row)\n"),
        "{out}"
    );
    assert!(out.contains("{\"eight\":8}\n"), "{out}");
    assert!(
        out.contains("\\flush NS.TABLE|all"),
        "\\help lists the commands: {out}"
    );

    // \as runs a statement as another user (EXECUTE AS USER).
    let mut command = kalam(&server, home.path());
    command.args(["--format", "csv", "-c", "\\as lena SELECT CURRENT_USER() AS me"]);
    let (code, out, err) = output(command).await;
    assert_eq!((code, out.as_str()), (0, "me\nlena\n"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_saves_a_token_that_only_its_owner_can_read() {
    let server = TestServer::start_configured(|s| s.token_ttl_seconds = 2).await;
    server.create_user("omar", "omar-secret", "user").await;
    let home = tempfile::tempdir().unwrap();
    let mut command = kalam(&server, home.path());
    command.args(["login", "-u", "omar", "--password", "omar-secret"]);
    let (code, out, err) = output(command).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Logged in"), "{out}");
    let path = home.path().join("credentials.toml");
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(!saved.contains("omar-secret"), "the password is never saved");
    assert!(saved.contains("token"), "{saved}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Later runs use the token: no password needed.
    let mut command = kalam(&server, home.path());
    command.args(["--format", "csv", "-c", "SELECT CURRENT_USER() AS me"]);
    let (code, out, err) = output(command).await;
    assert_eq!((code, out.as_str()), (0, "me\nomar\n"), "{err}");
    // Once it expires, the message says what to do.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let mut command = kalam(&server, home.path());
    command.args(["-c", "SELECT 1"]);
    let (code, _, err) = output(command).await;
    assert_eq!(code, 2);
    assert!(err.contains("expired") && err.contains("kalam login"), "{err}");
    // A wrong password saves nothing.
    let mut command = kalam(&server, home.path());
    command.args(["login", "-u", "omar", "--password", "nope"]);
    let (code, _, err) = output(command).await;
    assert_eq!(code, 2);
    assert!(err.contains("UNAUTHORIZED"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), saved);
}

/// The shell in a pseudo-terminal. Input is sent only once the shell shows its
/// prompt: keys typed while the terminal changes mode may be dropped (a person
/// waits for the prompt too).
struct Shell(rexpect::session::PtySession);

impl Shell {
    fn at_prompt(&mut self) -> &mut rexpect::session::PtySession {
        self.0.exp_string("kalam> ").expect("the prompt");
        &mut self.0
    }

    /// Types `line` and Enter at the next prompt.
    fn run(&mut self, line: &str) -> &mut rexpect::session::PtySession {
        self.at_prompt().send_line(line).unwrap();
        &mut self.0
    }

    fn expect(&mut self, text: &str) {
        self.0
            .exp_string(text)
            .unwrap_or_else(|e| panic!("expected {text:?}: {e}"));
    }
}

/// Drives the shell (blocking: run off the async workers).
fn shell_session(url: String, home: PathBuf) {
    // A terminal 150 columns wide; then the shell itself.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "stty cols 150 rows 40; exec '{}'",
            kalam_binary().display()
        ))
        .env("KALAM_URL", url)
        .env("KALAM_HOME", &home)
        .env("TERM", "xterm")
        .env_remove("KALAM_USER")
        .env_remove("KALAM_PASSWORD")
        .env_remove("KALAM_TOKEN");
    let session = rexpect::session::spawn_command(command, Some(30_000)).expect("kalam starts in a terminal");
    let mut shell = Shell(session);
    shell.expect("\\help for help");

    // Backslash commands.
    shell.run("\\dt");
    shell.expect("animals");
    shell.expect("(2 rows, ");
    shell.run("\\d zoo.animals");
    shell.expect("legs");
    shell.expect("(4 rows, ");

    // A statement with a password runs, and is not kept in the history.
    // (Each waits for the statement's answer, not its echo: a line typed while a
    // statement runs may be lost by the terminal.)
    shell.run("CREATE USER 'hist' WITH PASSWORD 'hist-secret-42' ROLE user;");
    shell.expect("User 'hist' created");
    shell.run("ALTER USER 'hist'");
    shell.0.send_line("  SET PASSWORD 'hist-secret-43';").unwrap();
    shell.expect("User 'hist' altered");

    // A statement over several lines runs at its ';'.
    shell.run("SELECT 40 + 2");
    shell.0.send_line("  AS answer;").unwrap();
    shell.expect("answer");
    shell.expect("42");
    shell.expect("(1 row, ");

    // Tab completion of a column, a namespace, a table in it: the statement runs
    // only if each word was completed ("leg", "zo" and "ani" name nothing).
    let p = shell.at_prompt();
    for keys in [
        "SELECT id, leg",
        "\t",
        " FROM zo",
        "\t",
        "ani",
        "\t",
        " WHERE leg",
        "\t",
        " > 4;",
    ] {
        p.send(keys).unwrap();
        p.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    p.send_line("").unwrap();
    shell.expect("legs");
    shell.expect("(1 row, ");

    // Ctrl-C drops the input being typed; the shell stays.
    let p = shell.at_prompt();
    p.send("SELECT 'never sent'").unwrap();
    p.flush().unwrap();
    p.exp_string("'never sent'").unwrap();
    p.send_control('c').unwrap();
    shell.run("SELECT 'after' AS state;");
    shell.expect("after");
    shell.expect("(1 row, ");

    // Ctrl-C cancels a running statement; the shell stays.
    shell.run("SELECT count(*) FROM generate_series(1, 100000000000);");
    std::thread::sleep(std::time::Duration::from_millis(700));
    shell.0.send_control('c').unwrap();
    // The shell's own answer on a line of its own ("^C" echoed before it), not the
    // server's "ERROR STATEMENT_TIMEOUT: ... was cancelled".
    let (before, _) = (shell.0.exp_regex(r"(^|\n)(\^C)?cancelled\r?\n"))
        .unwrap_or_else(|e| panic!("no answer to Ctrl-C: {e}"));
    assert!(!before.contains("ERROR"), "{before}");
    shell.run("SELECT 'still here' AS state;");
    shell.expect("still here");

    // An error keeps the shell open.
    shell.run("SELECT * FROM zoo.nothing;");
    shell.expect("ERROR TABLE_NOT_FOUND");
    shell.run("\\bogus");
    shell.expect("unknown command \\bogus");

    // \flush follows the job to its end.
    shell.run("\\flush zoo.visits");
    shell.expect("zoo.visits: completed, 2 rows, 1 file(s)");
    shell.run("\\jobs");
    shell.expect("completed");

    shell.run("\\q");
    shell.0.exp_eof().unwrap();
    let status = shell.0.process_mut().wait().unwrap();
    assert!(format!("{status:?}").ends_with(", 0)"), "{status:?}");
    let history = std::fs::read_to_string(home.join("history")).expect("the history file is written");
    assert!(history.contains("AS answer;"), "{history}");
    assert!(history.contains("SELECT 'kept from before'"), "{history}");
    for secret in ["hist-secret-42", "hist-secret-43", "old-secret"] {
        assert!(!history.contains(secret), "{secret} in the history: {history}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_edits_completes_cancels_and_flushes() {
    // The statement timeout is longer than the whole session: only Ctrl-C can end
    // the statement the shell cancels.
    let server = TestServer::start_configured(|s| s.statement_timeout_ms = 120_000).await;
    server
        .execute_sql(
            "CREATE NAMESPACE zoo; \
             CREATE SHARED TABLE zoo.animals (id INT PRIMARY KEY, name TEXT, legs INT, note TEXT); \
             INSERT INTO zoo.animals VALUES (1, 'ant', 6, NULL), (2, 'emu', 2, NULL); \
             CREATE USER TABLE zoo.visits (id INT PRIMARY KEY, who TEXT); \
             INSERT INTO zoo.visits VALUES (1, 'ana'), (2, 'ben')",
        )
        .await
        .expect_success();
    let home = tempfile::tempdir().unwrap();
    // A history an older kalam wrote, with a password in it.
    std::fs::write(
        home.path().join("history"),
        "#V2\nALTER USER 'x' SET PASSWORD 'old-secret'\nSELECT 'kept from before'\n",
    )
    .unwrap();
    let (url, home_path) = (server.url(""), home.path().to_path_buf());
    tokio::task::spawn_blocking(move || shell_session(url, home_path))
        .await
        .expect("the shell session went as expected");
}

/// `\watch`: the rows, then a line per change as it commits, until the server ends
/// the live query (here: the table is dropped, so the error and status 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_prints_rows_then_changes() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    server.create_user("alice", "pw", "user").await;
    server
        .execute_sql("CREATE NAMESPACE w; CREATE USER TABLE w.m (id BIGINT PRIMARY KEY, room INT, body TEXT)")
        .await
        .expect_success();
    server
        .execute_sql_as(
            "alice",
            "pw",
            "INSERT INTO w.m VALUES (1, 1, 'first'), (2, 2, 'other room')",
        )
        .await
        .expect_success();
    let mut command = kalam(&server, home.path());
    command
        .args(["-u", "alice", "--password", "pw", "-c"])
        .arg("\\watch SELECT id, body FROM w.m WHERE room = 1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("kalam starts");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_line = |wanted: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return (seen, line),
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {wanted:?}; got {seen:?}"),
            }
        }
    };
    let (table, _) = next_line("watching for changes");
    let table = table.join("\n");
    assert!(
        table.contains("first") && !table.contains("other room"),
        "{table}"
    );
    server
        .execute_sql_as("alice", "pw", "INSERT INTO w.m VALUES (3, 1, 'hello')")
        .await
        .expect_success();
    let (_, insert) = next_line("hello");
    assert!(
        insert.starts_with("+ ") && insert.contains("\"id\":3"),
        "{insert}"
    );
    server
        .execute_sql_as("alice", "pw", "UPDATE w.m SET body = 'edited' WHERE id = 1")
        .await
        .expect_success();
    let (_, update) = next_line("edited");
    assert!(update.starts_with("~ ") && update.contains("first"), "{update}");
    server
        .execute_sql_as("alice", "pw", "UPDATE w.m SET room = 9 WHERE id = 3")
        .await
        .expect_success();
    let (_, delete) = next_line("hello");
    assert!(delete.starts_with("- "), "{delete}");
    server.execute_sql("DROP TABLE w.m").await.expect_success();
    let status = tokio::task::spawn_blocking(move || {
        let output = child.wait_with_output().expect("kalam exits");
        (output.status.code(), String::from_utf8(output.stderr).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status.0, Some(1), "{status:?}");
    assert!(status.1.contains("TABLE_NOT_FOUND"), "{status:?}");
}
